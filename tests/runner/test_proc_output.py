"""A cell follows each peer's stdout through a pipe: waiters wake on the line, not by polling a file."""
import subprocess
import sys

from harness.scenario.context import Proc
from harness.scenario.ops.smb import first_json


def start(tmp_path, code: str) -> Proc:
    popen = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc = Proc("p", popen, [], None, tmp_path / "p.stdout", tmp_path / "p.stderr")
    (tmp_path / "p.stdout").write_bytes(b"")
    proc.follow(popen.stdout)
    return proc


def test_waits_for_a_complete_json_line_and_keeps_the_file(tmp_path):
    proc = start(tmp_path, "import sys,time; sys.stdout.write('noise\\n{\"state\": '); sys.stdout.flush(); "
                           "time.sleep(0.3); print('\"up\"}', flush=True); sys.stdin.readline()")
    assert proc.wait_output(first_json, 30) == {"state": "up"}
    proc.tell("bye")
    assert proc.popen.wait(30) == 0
    assert proc.stdout() == 'noise\n{"state": "up"}\n'
    assert (tmp_path / "p.stdout").read_text() == proc.stdout()
    assert proc.stdout_closed


def test_exit_without_the_line_and_timeout(tmp_path):
    proc = start(tmp_path, "print('no json here')")
    assert proc.wait_output(first_json, 30) is None and proc.stdout_closed
    quiet = start(tmp_path, "import sys; sys.stdin.readline()")
    assert quiet.wait_output(first_json, 0.2) is None and not quiet.stdout_closed
    quiet.tell("")
    assert quiet.popen.wait(30) == 0
