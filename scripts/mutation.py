"""Mutation testing of the modules everything else rests on (``make mutation``; not part of ``make test``).

Why: a green suite only says the tests did not notice a difference; mutmut changes the code under
test one small edit at a time (a ``<`` into ``<=``, a constant, a dropped call) and counts the edits
that some test notices ("killed").  A surviving mutant is a regression the suite would let through,
or an equivalent edit (listed with its reason in the README's mutation section).

Each module is mutated alone, with the narrow test selection that covers it (the whole suite per
mutant would take days on two cores), in a scratch copy of the repository: mutmut reads its settings
from ``pyproject.toml`` in the directory it runs in and writes ``mutants/`` there, so one copy per
module keeps the runs independent and the work tree clean.

    python scripts/mutation.py                      # every module in MODULES
    python scripts/mutation.py harness/smb/keys.py  # only these
    python scripts/mutation.py --list               # the modules and their test selections

Prints one line per module: killed / total and the score; exit status 1 when a module is below
``--floor`` (default 0.9).  Survivors are printed with ``mutmut show`` so they can be read.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: module -> the tests that cover it (pytest arguments, relative to the repository root).
MODULES: dict[str, list[str]] = {
    "harness/smb/keys.py": ["tests/smb/test_smb_keys.py"],
    "harness/smb/framing.py": ["tests/smb/test_smb_framing.py", "tests/smb/test_smb_pitfalls.py"],
    "harness/smb/header.py": ["tests/smb/test_smb_header.py", "tests/smb/test_smb_roundtrip.py", "tests/smb/test_smb_malformed.py",
                              "tests/smb/test_smb_pitfalls.py", "tests/smb/test_smb_known_answer.py"],
    "harness/smb/crypto.py": ["tests/smb/test_smb_crypto_edges.py", "tests/smb/test_smb_known_answer.py", "tests/smb/test_smb_crypto_interop.py",
                              "tests/smb/test_smb_malformed.py", "tests/smb/test_smb_pitfalls.py"],
    "wrappers/addressing.py": ["tests/test_addressing.py"],
    "wrappers/pcapfile.py": ["tests/test_pcapfile_edges.py", "tests/test_pcapfile.py", "tests/test_packets.py", "tests/test_pcap_lock.py"],
    "wrappers/smbdirect/messages.py": ["tests/smbdirect/test_messages.py", "tests/smbdirect/test_core.py"],
    # the func_test port (quicfunc) shares one connection across cases in order: a subset run per
    # mutant would fail for that reason alone, so it is not in the selection.
    "wrappers/quic/uapi.py": ["tests/quic/test_uapi_layout.py", "tests/quic/test_badinput.py",
                              "tests/quic/test_basic.py"],
}

#: what a scratch copy needs: the packages, the tests, the project files.
COPY = ["harness", "wrappers", "tests", "scenarios", "captures", "pyproject.toml", "setup.py"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "mutants", ".hypothesis", ".pytest_cache")


def _scratch(module: str, base: Path) -> Path:
    where = base / re.sub(r"[^A-Za-z0-9]+", "_", module)
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, where / name, ignore=IGNORE)
        elif src.exists():
            shutil.copy2(src, where / name)
    tests = MODULES[module]
    missing = [t for t in tests if not (ROOT / t).exists()]
    if missing:
        raise SystemExit(f"{module}: test files missing: {missing}")
    package_dirs = sorted({module.split("/")[0]} | {"harness", "wrappers"})
    with open(where / "pyproject.toml", "a", encoding="utf-8") as f:
        f.write("\n[tool.mutmut]\n")
        f.write(f"source_paths = {json.dumps(package_dirs)}\n")
        f.write(f"only_mutate = {json.dumps([module])}\n")
        f.write(f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n")
        # -p no:randomly: a mutant's verdict must not depend on the order; no xdist inside mutmut.
        f.write('pytest_add_cli_args = ["-p", "no:randomly", "-p", "no:xdist", "-q", "-x", '
                '"-m", "not slow and not quicfunc"]\n')
    return where


def _results(where: Path, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=where, env=env,
                         capture_output=True, text=True, timeout=600)
    status: dict[str, str] = {}
    for line in out.stdout.splitlines():
        name, sep, verdict = line.strip().rpartition(": ")
        if sep and name:
            status[name] = verdict
    return status


def run_module(module: str, base: Path, children: int) -> tuple[int, int, dict[str, str], Path]:
    where = _scratch(module, base)
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(children)], cwd=where, env=env,
                   check=False, timeout=6 * 3600)
    status = _results(where, env)
    counted = {k: v for k, v in status.items() if v not in ("not checked",)}
    killed = sum(1 for v in counted.values() if v in ("killed", "timeout", "segfault"))
    return killed, len(counted), status, where


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help="modules to mutate (default: all of MODULES)")
    ap.add_argument("--list", action="store_true", help="print the modules and their test selections")
    ap.add_argument("--children", type=int, default=1, help="mutants tested at once (default 1)")
    ap.add_argument("--floor", type=float, default=0.9, help="minimum killed fraction per module")
    ap.add_argument("--workdir", default=None, help="where the scratch copies go (default: a temp dir)")
    ap.add_argument("--show-survivors", action="store_true", help="print the diff of every surviving mutant")
    args = ap.parse_args(argv)
    if args.list:
        for module, tests in MODULES.items():
            print(f"{module}: {' '.join(tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        ap.error(f"not in MODULES: {unknown}")
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="wc-mutation-"))
    failed = False
    for module in args.modules or list(MODULES):
        killed, total, status, where = run_module(module, base, args.children)
        score = killed / total if total else 0.0
        print(f"mutation: {module}: {killed}/{total} killed ({score:.1%})", flush=True)
        survivors = sorted(k for k, v in status.items() if v == "survived")
        for name in survivors:
            print(f"  survived: {name}")
            if args.show_survivors:
                subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=where, check=False, timeout=60)
        if not total or score < args.floor:
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
