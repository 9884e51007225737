"""`wirecheck check` end to end on small scenario trees: console, results tree, exit status, knownfail,
hangs, -j isolation, sections, bad input, Ctrl-C."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tsharkutil
from lxml import etree

from .scen import FAIL, NOTRUN, PASS, tree, write

XSD = etree.XMLSchema(etree.parse(str(Path(__file__).with_name("xunit.xsd"))))
ROOT = Path(__file__).resolve().parents[2]
WIRECHECK = [sys.executable, "-c", "from harness.cli import main; main()"]


def check(tmp_path: Path, *args: str, timeout: float = 120, ci: bool = False) -> subprocess.CompletedProcess:
    cmd = [*WIRECHECK, "check", "--plain", "--scenarios", str(tmp_path / "sc"),
           "--results", str(tmp_path / "results"), *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))


def sc(tmp_path: Path, **scenarios: str) -> Path:
    return tree(tmp_path / "sc", **scenarios)


def test_pass_fail_notrun_console_tree_xunit_and_exit_status(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS, "tcp/002": FAIL, "udp/001": NOTRUN})
    res = check(tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout.splitlines()
    assert out[0].startswith("PLATFORM      -- Linux/")
    assert re.fullmatch(r"tcp/001        \d+s", out[2])
    bad = tmp_path / "results/tcp/002.out.bad"
    assert out[3] == f"tcp/002       - output mismatch (see {bad})"
    assert out[4].startswith("    step 0 host.run (002.yaml:5): run1 exited with status 3, expected 0")
    assert out[5] == "udp/001       [not run] requires program no-such-program-wirecheck (not found in PATH)"
    assert out[6:9] == ["Ran: tcp/001 tcp/002", "Not run: udp/001", "Failures: tcp/002"]
    assert out[9] == "Failed 1 of 2 tests"
    assert f"Xunit report: {tmp_path / 'results/result.xml'}" in out
    r = tmp_path / "results"
    assert sorted(p.name for p in (r / "tcp").iterdir()) == ["001.full", "001.json", "002.full", "002.json", "002.out.bad"]
    assert (r / "udp/001.notrun").read_text() == "requires program no-such-program-wirecheck (not found in PATH)\n"
    assert "started run1" in (r / "tcp/002.full").read_text()
    assert re.fullmatch(r"tcp/001 \d+\n", (r / "check.time").read_text())
    assert "Failed 1 of 2 tests" in (r / "check.log").read_text()
    doc = etree.parse(str(r / "result.xml"))
    assert XSD.validate(doc), XSD.error_log
    matrix = json.loads((r / "matrix.json").read_text())
    assert {t["area"] for t in matrix["tables"]} == {"tcp", "udp"}
    assert "✕(002)" in (r / "matrix.md").read_text()
    # the second run shows the previous time of the passing test
    res2 = check(tmp_path, "tcp/001")
    assert re.fullmatch(r"tcp/001 \d+s \.\.\.  \d+s", res2.stdout.splitlines()[2])
    assert res2.returncode == 0 and "Passed all 1 tests" in res2.stdout


SECTION_ONLY = """
id: {id}
description: meant for another section only
groups: [{groups}]
requires:
  sections: [elsewhere]
steps:
  - sleep: {{seconds: 0}}
"""


def test_missing_requirement_is_a_failure_under_ci_that_knownfail_cannot_excuse(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS, "udp/001": NOTRUN, "udp/002": SECTION_ONLY})
    (tmp_path / "sc/sections.conf").write_text("[here]\nAREAS=tcp udp\n")
    (tmp_path / "sc/knownfail").write_text("^udp/001  # listed, but a missing peer is not a known failure\n")
    res = check(tmp_path, ci=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "requires program no-such-program-wirecheck (not found in PATH) (a failure under CI)" in res.stdout
    assert "Failures: udp/001\nFailed 1 of 2 tests" in res.stdout
    # a cell that is not for this section stays "not run", CI or not
    assert "Not run: udp/002" in res.stdout and "Ran: tcp/001 udp/001" in res.stdout
    assert (tmp_path / "results/here/udp/001.out.bad").exists()
    # outside CI the same tree passes with udp/001 not run
    res = check(tmp_path)
    assert res.returncode == 0, res.stdout
    assert "Not run: udp/001 udp/002" in res.stdout and "Passed all 1 tests" in res.stdout


def test_a_run_of_nothing_passes_nothing(tmp_path):
    sc(tmp_path, **{"udp/002": SECTION_ONLY})
    (tmp_path / "sc/sections.conf").write_text("[here]\nAREAS=udp\n")
    res = check(tmp_path, ci=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No tests ran (1 not run)" in res.stdout
    assert "Passed all" not in res.stdout and "Ran:" not in res.stdout


def test_knownfail_xfail_and_unexpected_success(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS, "tcp/002": FAIL})
    (tmp_path / "sc/knownfail").write_text("^tcp/002\\(  # bug 12\n")
    res = check(tmp_path)
    assert res.returncode == 0, res.stdout
    assert "tcp/002       [known failure] step 0 host.run" in res.stdout
    assert "Known failures: tcp/002\nPassed all 2 tests" in res.stdout
    (tmp_path / "sc/knownfail").write_text("^tcp/00[12]  # bug 12\n")
    res = check(tmp_path)
    assert res.returncode == 1
    assert re.search(rf"^tcp/001 \d+s \.\.\. \[unexpected success\] bug 12 \({tmp_path / 'sc/knownfail'}:1\)$",
                     res.stdout, re.M)
    assert "Failures: tcp/001\nFailed 1 of 2 tests" in res.stdout
    (tmp_path / "sc/knownfail").unlink()
    (tmp_path / "sc/flapping.d").mkdir()
    (tmp_path / "sc/flapping.d/x").write_text("^tcp/00[12]\n")
    res = check(tmp_path)
    assert res.returncode == 0 and "tcp/002       [flapping]" in res.stdout


HANG = """
id: {id}
description: a step that never returns
groups: [{groups}]
steps:
  - proc.start: {{argv: [python, -c, "import os,time; open('pid','w').write(str(os.getpid())); time.sleep(600)"], as: bg}}
  - sleep: {{seconds: 600, timeout: 1}}
"""

CELL_TIMEOUT = """
id: {id}
description: the cell outlives its own timeout
groups: [{groups}]
timeout: 1
steps:
  - sleep: {{seconds: 600, timeout: 900}}
"""


def test_hanging_step_and_cell_are_killed_and_named(tmp_path):
    sc(tmp_path, **{"tcp/001": HANG, "tcp/002": CELL_TIMEOUT})
    t0 = time.monotonic()
    res = check(tmp_path)
    assert time.monotonic() - t0 < 40
    assert res.returncode == 1
    bad1 = (tmp_path / "results/tcp/001.out.bad").read_text()
    assert bad1.startswith("step 1 sleep (001.yaml:6): timed out after 1s")
    bad2 = (tmp_path / "results/tcp/002.out.bad").read_text()
    assert bad2.startswith("step 0 sleep (002.yaml:6): timed out after 1s (cell killed)")
    full = (tmp_path / "results/tcp/001.full").read_text()
    pid = int(re.search(r"started bg \(pid (\d+)", full).group(1))
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    sockdir = re.search(r"socket directory (\S+),", full).group(1)
    assert not os.path.exists(sockdir)


SHOW_DIR = """
id: {id}
description: reports its socket directory, takes a second
groups: [{groups}]
steps:
  - host.run: {{argv: [python, -c, "import os,time,json; time.sleep(1.5); print(json.dumps(dict(dir=os.environ['SOCKET_WRAPPER_DIR'])))"], as: r}}
"""


def test_parallel_cells_have_their_own_socket_directories(tmp_path):
    sc(tmp_path, **{f"tcp/00{i}": SHOW_DIR for i in range(1, 5)})
    t0 = time.monotonic()
    res = check(tmp_path, "-j", "4")
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    dirs = {json.loads((tmp_path / f"results/tcp/00{i}.json").read_text())["results"]["r"]["dir"] for i in range(1, 5)}
    assert len(dirs) == 4 and not any(os.path.exists(d) for d in dirs)
    serial = sum(json.loads((tmp_path / f"results/tcp/00{i}.json").read_text()).get("duration", 1.5) for i in range(1, 5))
    assert took < 6 * 1.5 + 10 and "Passed all 4 tests" in res.stdout
    del serial


def test_sections_areas_and_repeated_summaries(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS, "udp/001": PASS})
    (tmp_path / "sc/sections.conf").write_text("[one]\nAREAS=tcp\nK=v\n[two]\nAREAS=udp\n")
    res = check(tmp_path)
    assert res.returncode == 0, res.stdout
    assert "SECTION       -- one\n" in res.stdout and "K             -- v" in res.stdout
    assert res.stdout.count("SECTION       -- two\n=========================\nRan: udp/001\nPassed all 1 tests") == 1
    assert (tmp_path / "results/one/tcp/001.full").exists() and (tmp_path / "results/two/udp/001.full").exists()
    assert (tmp_path / "results/one/result.xml").exists() and (tmp_path / "results/check.log").exists()
    res = check(tmp_path, "-s", "two")
    assert "SECTION       -- one" not in res.stdout and "Ran: udp/001" in res.stdout
    res = check(tmp_path, "-s", "three")
    assert res.returncode == 2 and "section 'three' is not in the config" in res.stderr


def test_bad_input_exits_2_before_anything_runs(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS})
    write(tmp_path / "sc", "tcp/002.yaml", "id: tcp/002\ndescription: x\ngroups: [quick]\nsteps:\n  - tcp.exchang: {}\n")
    res = check(tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith(f"{tmp_path / 'sc/tcp/002.yaml'}:5:5: unknown operation 'tcp.exchang'")
    assert res.stdout == "" and not (tmp_path / "results").exists()
    (tmp_path / "sc/tcp/002.yaml").unlink()
    (tmp_path / "sc/knownfail").write_text("^tcp/(\n")
    res = check(tmp_path)
    assert res.returncode == 2 and f"{tmp_path / 'sc/knownfail'}:1:" in res.stderr
    res = check(tmp_path, "-E", str(tmp_path / "nonexistent"))
    assert res.returncode == 2


def test_unknown_tests_are_reported_and_ignored(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS})
    res = check(tmp_path, "tcp/001", "tcp/999")
    assert res.stdout.splitlines()[0] == "tcp/999 - unknown test, ignored"
    assert res.returncode == 0


SLOW = """
id: {id}
description: long enough to be interrupted
groups: [{groups}]
steps:
  - proc.start: {{argv: [python, -c, "import time; time.sleep(600)"], as: bg}}
  - sleep: {{seconds: 600, timeout: 900}}
"""


def _kill_group_of(pid: int) -> None:
    """SIGKILL the process group of `pid` (a cell's: the cell and its children), unless it is ours."""
    try:
        group = os.getpgid(pid)
        if group != os.getpgrp():
            os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _interrupt_during_slow_cell(tmp_path: Path, launcher: list[str], grace: float) -> tuple[str, int, str]:
    """Run `wirecheck check` (started by ``launcher``) on tcp/001 (passes), tcp/002 (a 600 s cell) and
    tcp/003, send SIGINT once tcp/002 runs its sleep, and return (stdout, the cell's pid, its socket
    directory) after asserting the run ended with status 1 within ``grace`` seconds. A run still going
    then is aborted with every thread's stack (faulthandler) in the failure; the cell is always killed."""
    sc(tmp_path, **{"tcp/001": PASS, "tcp/002": SLOW, "tcp/003": PASS})
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen([*launcher, "check", "--plain", "--scenarios", str(tmp_path / "sc"),
                             "--results", str(tmp_path / "results")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    full = tmp_path / "results/tcp/002.full"
    pid = None
    try:
        deadline = time.monotonic() + 60
        while not (full.exists() and "step 1 sleep" in full.read_text()):
            assert time.monotonic() < deadline, "the slow cell never started"
            time.sleep(0.1)
        text = full.read_text()
        pid = int(re.search(r"started bg \(pid (\d+)", text).group(1))
        sockdir = re.search(r"socket directory (\S+),", text).group(1)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            # the cell holds the fork server's "alive" pipe, and the fork server (like the resource
            # tracker) holds our stdout and stderr: no end of output while the cell lives
            _kill_group_of(pid)
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"wirecheck check still running {grace:.0f} s after SIGINT\n{out}\n{err}") from None
        assert proc.returncode == 1, out + err
        return out, pid, sockdir
    finally:
        if pid is not None:
            _kill_group_of(pid)
        if proc.returncode is None:
            proc.kill()
            proc.communicate(timeout=30)


def _assert_cell_gone(pid: int, sockdir: str) -> None:
    assert not os.path.exists(sockdir)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_ctrl_c_stops_children_removes_socket_dirs_and_prints_partial_summary(tmp_path):
    out, pid, sockdir = _interrupt_during_slow_cell(tmp_path, WIRECHECK, grace=60)
    lines = out.splitlines()
    assert "Interrupted!" in lines
    assert "Ran: tcp/001" in lines and "Passed all 1 tests" in lines
    assert "tcp/003" not in out
    _assert_cell_gone(pid, sockdir)
    assert "Interrupted!" in (tmp_path / "results/check.log").read_text()


# Holds the cell tcp/002 between its fork and its registration in cellproc._ACTIVE until the runner's
# stop_all() has run: the interleaving a Ctrl-C meets when it lands while the worker thread that
# started the cell has not run again yet (a forked cell runs its steps at once, in parallel).
CTRL_C_BEFORE_REGISTRATION = """
import threading
from harness.runner import run
from harness.scenario import cellproc
stopped = threading.Event()
start_cell, stop_all = cellproc._start_cell, run.stop_all
def held_start(args, full):
    popen = start_cell(args, full)
    if args["stem"] == "002":
        stopped.wait(60)
    return popen
def noted_stop():
    stop_all()
    stopped.set()
cellproc._start_cell, run.stop_all = held_start, noted_stop
from harness.cli import main
main()
"""


def test_ctrl_c_between_a_cells_start_and_its_registration_still_stops_it(tmp_path):
    """stop_all() kills the cells it knows; a cell forked before it but registered after it must die
    too, or it runs on (here a 600 s sleep), its socket directory stays, and `wirecheck check`,
    having printed its partial summary, never exits: it waits for the cell's worker thread."""
    out, pid, sockdir = _interrupt_during_slow_cell(tmp_path, [sys.executable, "-c", CTRL_C_BEFORE_REGISTRATION],
                                                    grace=30)
    lines = out.splitlines()
    assert "Interrupted!" in lines and "Ran: tcp/001" in lines and "tcp/003" not in out
    _assert_cell_gone(pid, sockdir)


@pytest.mark.peer
def test_shipped_quick_cells_on_the_emulated_network(tmp_path):
    tsharkutil.tshark_path()  # skips on a laptop without tshark, fails under CI
    (tmp_path / "sc").symlink_to(ROOT / "scenarios")
    res = check(tmp_path, "-s", "tcp", "-j", "2", "tcp/001[ipv6]", "tcp/003[ipv4]", "udp/003", timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Passed all 3 tests" in res.stdout
    r = tmp_path / "results/tcp"
    assert (r / "tcp/001.ipv6.ladder").stat().st_size > 0
    # The kept captures hold what their cells ran (decoded, not only non-empty): TCP over IPv6, UDP.
    assert tsharkutil.count_frames(r / "tcp/001.ipv6.pcap", display_filter="ipv6 && tcp.len > 0") > 0
    assert tsharkutil.count_frames(r / "tcp/001.ipv6.pcap", display_filter="ip") == 0
    assert tsharkutil.count_frames(r / "udp/003.pcap", display_filter="udp && udp.length > 8") > 0
    assert "RST" in (r / "tcp/003.ipv4.ladder").read_text()


PCAP_FAIL = """
id: {id}
description: a pcap check that cannot hold
groups: [{groups}]
steps:
  - tcp.echo_server: {{host: 10, port: 7500, as: srv}}
  - tcp.exchange: {{host: 11, to: 10, port: 7500, size: 1000, as: c}}
expect:
  - pcap:
      - absent: {{filter: "tcp.flags.syn == 1"}}
"""


@pytest.mark.peer
def test_pcap_failure_names_the_check_and_its_frames(tmp_path):
    tsharkutil.tshark_path()
    sc(tmp_path, **{"tcp/001": PCAP_FAIL})
    res = check(tmp_path)
    assert res.returncode == 1
    bad = (tmp_path / "results/tcp/001.out.bad").read_text()
    assert bad.startswith("pcap: 1 of 1 pcap assertion(s) failed on ")
    assert f"{tmp_path / 'sc/tcp/001.yaml'}:9:9: absent 'tcp.flags.syn == 1'" in bad
    assert "actual:   2 (frames 1, 2)" in bad
    assert (tmp_path / "results/tcp/001.ladder").read_text().count("TCP SYN") >= 1
    # the failure's pictures (text, SVG, HTML) are named at the end of .out.bad and .full
    r = tmp_path / "results/tcp"
    named = f"ladder diagram: {r / '001.ladder'} {r / '001.ladder.svg'} {r / '001.ladder.html'}"
    assert bad.splitlines()[-1] == named
    assert named in (r / "001.full").read_text()
    assert (r / "001.ladder.svg").read_text().lstrip().startswith(("<svg", "<?xml"))
    assert "    pcap: 1 of 1 pcap assertion(s) failed" in res.stdout


def test_operations_listing(tmp_path):
    sc(tmp_path, **{"tcp/001": PASS})
    res = check(tmp_path, "--operations")
    assert res.returncode == 0
    names = [line.split()[0] for line in res.stdout.splitlines() if not line.startswith("(")]
    assert {"host.run", "tcp.exchange", "udp.exchange", "impair", "cut", "blackhole", "wait", "parallel"} <= set(names)


@pytest.mark.peer
def test_shipped_matrices_pass_and_a_wrong_expectation_fails(tmp_path):
    """One cell of each new matrix passes end to end; the same cells with a wrong expectation fail,
    naming the step or the check (the expectations are not vacuous)."""
    import shutil

    tsharkutil.tshark_path()
    shutil.copytree(ROOT / "scenarios", tmp_path / "sc")
    cells = ["quic/003[alpn-mismatch-ipv4]", "stream/001[uni-client-reset-dontwait]",
             "encryption/001[quic-noenc-required-aes-256-gcm-no-offer-no-accept]"]
    res = check(tmp_path, "-j", "2", "-s", "quic", "-s", "mixed", *cells, timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("Passed all 2 tests") + res.stdout.count("Passed all 1 tests") >= 2
    # break each expectation: another errno, another reset code, SMB said to be in clear
    q3 = tmp_path / "sc/quic/003.yaml"
    q3.write_text(q3.read_text().replace("errno: ETIMEDOUT, alert: none", "errno: ECONNREFUSED, alert: none"))
    s1 = tmp_path / "sc/stream/001.yaml"
    s1.write_text(s1.read_text().replace("quic.rsts.application_error_code == 7", "quic.rsts.application_error_code == 8"))
    e1 = tmp_path / "sc/encryption/001.yaml"
    e1.write_text(e1.read_text().replace("quic.1rtt_in_clear: {marker: fd534d42}  ",
                                         "quic.1rtt_in_clear: {marker: fd534d42, absent: true}  "))
    res = check(tmp_path, "-j", "2", "-s", "quic", "-s", "mixed", *cells, timeout=400)
    assert res.returncode == 1
    r = tmp_path / "results"
    assert "smb.connect (003.yaml:" in (r / "quic/quic/003.alpn-mismatch-ipv4.out.bad").read_text().splitlines()[0]
    assert "expected errno ECONNREFUSED, got ETIMEDOUT" in (r / "quic/quic/003.alpn-mismatch-ipv4.out.bad").read_text()
    bad = (r / "quic/stream/001.uni-client-reset-dontwait.out.bad").read_text()
    assert "quic.rsts.application_error_code == 8" in bad
    bad = (r / "mixed/encryption/001.quic-noenc-required-aes-256-gcm-no-offer-no-accept.out.bad").read_text()
    assert "quic.1rtt_in_clear" in bad and "in clear (frames" in bad


SHOW_ENV = """
id: {id}
description: reports a variable of the environment it was started with
groups: [{groups}]
steps:
  - host.run: {{argv: [python, -c, "import os,json; print(json.dumps(dict(mark=os.environ.get('WIRECHECK_T_MARK'))))"], as: r}}
"""


def test_cells_fork_from_a_preloaded_server_with_the_callers_environment(tmp_path, monkeypatch):
    """A cell process is forked from multiprocessing's fork server (the cell's modules imported
    once) yet sees the environment of the moment it is started, as a fresh interpreter would;
    WIRECHECK_CELL_SPAWN=1 starts a fresh interpreter instead."""
    from harness.scenario import cellproc
    from harness.scenario.loader import load_file

    sc(tmp_path, **{"tcp/001": SHOW_ENV})
    scen = load_file(str(tmp_path / "sc/tcp/001.yaml"), check_pcap=False)
    cell = next(iter(scen.cells()))
    assert cellproc._forkserver() is not None
    for value in ("one", "two", "spawned"):
        monkeypatch.setenv("WIRECHECK_T_MARK", value)
        if value == "spawned":
            monkeypatch.setenv("WIRECHECK_CELL_SPAWN", "1")
        result = cellproc.run_isolated(cell, tmp_path / value, ladder=False)
        full = (tmp_path / value / f"{cell.file_stem}.full").read_text()
        assert result["status"] == "pass", full
        record = json.loads((tmp_path / value / f"{cell.file_stem}.json").read_text())
        assert record["results"]["r"]["mark"] == value
        assert "cell process ready after" in full
