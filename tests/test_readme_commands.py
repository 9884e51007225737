"""Every command in the README's code blocks runs here, so a renamed flag or a stale example fails.

How each kind of line is run (with this venv's programs, small inputs, and `-n`/`--collect-only`
where a real run would take minutes):
* `make T`: `make -n T` (the target exists and its recipe expands);
* a synopsis (`[--opt X]`, `a|b`, `...`): `--help` of that command names every option and action it
  shows; for `wirecheck pcap`, the synopsis without its optional parts also runs on a reference capture;
* `wirecheck check ...`: the same arguments plus `-n` (selection and options parsed, cells listed);
* `pytest ...`: the same arguments plus `--collect-only -q` (plugin and options load, cells collected);
* `WIRECHECK_IMPAIR='...'`: the spec parses;
* `wirecheck exec OPTIONS -- PROGRAM ...`: the same options run /bin/true in a fresh socket directory
  (the options parse and the preload chain, cwrap and the native QUIC library, loads into a C program);
* ```python blocks run as they are, with their paths pointed into a temporary directory.
A line no rule covers fails the test: a new command needs a way to be run here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wrappers import impair

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WIRECHECK = str(BIN / "wirecheck") if (BIN / "wirecheck").exists() else shutil.which("wirecheck") or "wirecheck"
CAPTURES = ROOT / "captures"


def blocks(lang: str, text: str | None = None) -> list[str]:
    text = (ROOT / "README.md").read_text() if text is None else text
    return [m.group(1) for m in re.finditer(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)]


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments dropped (also comment-only lines)."""
    out: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and line.lstrip().startswith("#"):
            continue  # a comment continued on its own line
        line = re.sub(r"\s{2,}#.*$", "", line)
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            out.append(full)
    return out


def shell_commands() -> list[str]:
    cmds = []
    for block in blocks("sh"):
        if "WIRECHECK_IMPAIR=" in block:
            cmds += [t for t in shlex.split(block) if t.startswith("WIRECHECK_IMPAIR=")]
        else:
            cmds += commands(block)
    return cmds


def run(argv: list[str], cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SOCKET_WRAPPER_DIR", "LD_PRELOAD")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def is_synopsis(cmd: str) -> bool:
    """Optional parts, alternatives or "..." outside quotes ('tcp/001[ipv6]' is a cell pattern)."""
    return bool(re.search(r"\[|\||\.\.\.", re.sub(r"'[^']*'|\"[^\"]*\"", "", cmd)))


def synopsis_parts(cmd: str) -> tuple[list[str], list[str], list[str]]:
    """(the command words, the options it shows, the actions it lists as a|b|c)."""
    words = cmd.split()
    head = []
    for w in words:
        if w.startswith(("-", "[", "/")) or w.isupper() or "=" in w or "." in w:
            break
        head.append(w)
    options = sorted(set(re.findall(r"(?<![\w-])(--[a-z][\w-]*|-[a-zA-Z])\b", cmd)))
    actions = [a for group in re.findall(r"(?<![\w\[-])([a-z]+(?:\|[a-z]+)+)(?![\w\]])", cmd)
               for a in group.split("|")]
    return head, options, actions


def _program(word: str) -> list[str]:
    if word == "wirecheck":
        return [WIRECHECK]
    if word == "pytest":
        return [sys.executable, "-m", "pytest"]
    raise AssertionError(f"README command with a program this test does not know: {word}")


def check_synopsis(cmd: str, tmp_path: Path) -> None:
    head, options, actions = synopsis_parts(cmd)
    res = run([*_program(head[0]), *head[1:], "--help"])
    assert res.returncode == 0, f"{cmd}\n{res.stdout}{res.stderr}"
    missing = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", res.stdout)]
    missing += [a for a in actions if not re.search(rf"\b{re.escape(a)}\b", res.stdout)]
    assert not missing, f"README synopsis `{cmd}` shows {missing}, which `{' '.join(head)} --help` does not"
    if head[:2] == ["wirecheck", "pcap"]:
        plain = re.sub(r"\s*\[[^\[\]]*(\[[^\[\]]*\][^\[\]]*)*\]", "", cmd)
        run_pcap(plain, tmp_path)


def run_pcap(cmd: str, tmp_path: Path) -> None:
    shutil.copy(CAPTURES / "smb3-tcp-signed.pcap", tmp_path / "run.pcap")
    (tmp_path / "checks.yaml").write_text("checks:\n  - smb2.dialect: {eq: 0x311}\n  - count: {filter: \"smb2.cmd == 5\"}\n")
    argv = shlex.split(cmd)
    res = run([WIRECHECK, *argv[1:]], cwd=tmp_path)
    assert res.returncode == 0, f"{cmd}\n{res.stdout}{res.stderr}"
    assert res.stdout.strip(), cmd


def run_example(cmd: str, tmp_path: Path) -> None:
    argv = shlex.split(cmd)
    if argv[0] == "make":
        res = run(["make", "-n", *argv[1:]])
        assert res.returncode == 0, f"{cmd}\n{res.stdout}{res.stderr}"
        return
    if argv[:2] == ["wirecheck", "check"]:
        (tmp_path / "FILE").write_text("")  # -E FILE: an exclusion list, empty
        extra = [] if "--operations" in argv else ["-n"]
        res = run([WIRECHECK, *argv[1:], *extra, "--scenarios", str(ROOT / "scenarios"),
                   "--results", str(tmp_path / "results")], cwd=tmp_path)
        assert res.returncode == 0, f"{cmd}\n{res.stdout}{res.stderr}"
        assert res.stdout.strip(), f"{cmd} printed nothing"
        return
    if argv[0] == "pytest":
        res = run([*_program("pytest"), *argv[1:], "--collect-only", "-q", "-p", "no:cacheprovider"], timeout=300)
        assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}{res.stderr[-3000:]}"
        assert re.search(r"\d+ tests? collected", res.stdout), res.stdout[-2000:]
        return
    if argv[0].startswith("WIRECHECK_IMPAIR="):
        assert impair.parse(argv[0].partition("=")[2]) is not None, cmd
        return
    if argv[:2] == ["wirecheck", "exec"] and "--" in argv:
        options = argv[2:argv.index("--")]
        sockdir = tmp_path / "sw"
        sockdir.mkdir(mode=0o700)
        res = run([WIRECHECK, "exec", "--dir", str(sockdir), *options, "--", "/bin/true"], cwd=tmp_path)
        assert res.returncode == 0, f"{cmd}\n{res.stdout}{res.stderr}"
        return
    raise AssertionError(f"no rule runs this README command: {cmd}")


CMDS = shell_commands()


def test_readme_has_the_commands_this_test_expects():
    assert len(CMDS) >= 15 and any(c.startswith("pytest ") for c in CMDS), CMDS
    assert not is_synopsis("wirecheck check -d 'stream/001[uni-*]' tcp/001") and is_synopsis("a [--b C]")


@pytest.mark.parametrize("cmd", CMDS, ids=[c[:60] for c in CMDS])
def test_readme_command(cmd, tmp_path):
    if is_synopsis(cmd) and not cmd.startswith("WIRECHECK_IMPAIR="):
        check_synopsis(cmd, tmp_path)
    else:
        run_example(cmd, tmp_path)


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_readme_python_block(index, tmp_path):
    code = blocks("python")[index]
    sockdir = tmp_path / "sw"
    sockdir.mkdir(mode=0o700)
    code = code.replace('"/tmp/sw"', repr(str(sockdir))).replace('"/tmp/run.pcap"', repr(str(tmp_path / "r.pcap")))
    shutil.copy(CAPTURES / "smb3-tcp-encrypted.pcap", tmp_path / "run.pcap")
    shutil.copy(CAPTURES / "smb3-tcp-encrypted.smbkeys", tmp_path / "run.smbkeys")
    (tmp_path / "run.pcap.keys").write_text("")
    res = run([sys.executable, "-c", code], cwd=tmp_path)
    assert res.returncode == 0, f"{code}\n{res.stdout}{res.stderr}"


def test_the_parsing_catches_a_stale_flag(tmp_path):
    """The checks above can fail: a renamed option in a synopsis or an example is caught."""
    with pytest.raises(AssertionError, match="--no-such-flag"):
        check_synopsis("wirecheck exec [--dir D] [--no-such-flag N] -- CMD ARGS...", tmp_path)
    with pytest.raises(AssertionError):
        run_example("wirecheck check --no-such-flag", tmp_path)
    with pytest.raises(AssertionError):
        run_example("make no-such-target", tmp_path)
    assert commands("a \\\n  b  # c\n    # more\nd\n") == ["a    b", "d"]
