"""Subprocess and capture helpers for the multi-process tests (test_exec, test_interop_cwrap, test_fdpass).

Nothing may hang: every process runs in its own session with stdout read by a thread, every wait
has a timeout, and the ``procs`` fixture kills each process group it started at teardown.

The peers (tests/peers.py) print one JSON object per line; ``Proc.expect(event)`` waits for one.

Two kinds of peers share one socket directory:

* ours: ``wirecheck exec [...] -- python peers.py ...`` through the real CLI (``wirecheck_exec``);
* native: CPython under ``LD_PRELOAD=libsocket_wrapper.so`` started with ``-I`` and without
  PYTHONPATH, so our sitecustomize cannot load and cwrap alone emulates its sockets
  (``native_python``). peers.py reports which wrapper it runs under and the tests check it.

``pcaps`` (fixture) hands out capture paths and checks them with tshark (checksum validation on);
a test that writes a capture and does not check it errors at teardown.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import tsharkutil
from threadutil import joined

from wrappers.launch import find_libsocket_wrapper

TESTS = Path(__file__).resolve().parent
PEERS = str(TESTS / "peers.py")
PYTHON = sys.executable
NATIVE_PYTHON = os.path.realpath(sys.executable)  # the real ELF binary, not a venv symlink or shim
WIRECHECK = str(Path(sys.executable).with_name("wirecheck"))
if not os.path.exists(WIRECHECK):  # pragma: no cover - a venv without the console script
    WIRECHECK = shutil.which("wirecheck") or WIRECHECK

DEFAULT_TIMEOUT = 20.0

# -- required components: skip on a laptop, fail under CI --------------------------------------


def _missing(what: str, apt: str) -> None:
    message = f"{what} is not installed (apt-get install -y {apt})"
    if os.environ.get("CI"):
        pytest.fail(message + "; required under CI")
    pytest.skip(message)


def need_tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        _missing("tshark", "tshark")
    return path  # type: ignore[return-value]


def need_libsocket_wrapper() -> str:
    lib = find_libsocket_wrapper()
    if lib is None:
        _missing("libsocket_wrapper.so (cwrap socket_wrapper)", "libsocket-wrapper")
    return lib  # type: ignore[return-value]


def need_program(name: str, apt: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing(name, apt)
    return path  # type: ignore[return-value]


# -- processes ----------------------------------------------------------------------------------


class Proc:
    """A child process whose stdout lines are collected by a thread (so reads never block forever)."""

    def __init__(self, name: str, cmd: Sequence[str], env: dict[str, str] | None, cwd: str | None,
                 stderr_path: Path):
        self.name = name
        self.cmd = list(cmd)
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed in finish()/kill()
        self.popen = subprocess.Popen(self.cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=self._stderr, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.events: list[dict] = []

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    @property
    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return (f"[{self.name}] {' '.join(self.cmd)}\n  rc={self.popen.poll()}\n  stdout: "
                + "\n          ".join(self.lines) + "\n  stderr: " + self.stderr.strip().replace("\n", "\n          "))

    def expect(self, event: str, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """The next JSON line with this event; fail (with the process's output) on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out after {timeout}s waiting for {event!r}\n{self.describe()}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)
                self.popen.wait(timeout=5)
                pytest.fail(f"{self.name} ended before {event!r}\n{self.describe()}")
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            self.events.append(obj)
            if obj.get("event") == event:
                return obj

    def finish(self, timeout: float = DEFAULT_TIMEOUT, rc: int | None = 0) -> int:
        """Wait for the exit; kill and fail on timeout; check the status unless rc is None."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not exit within {timeout}s\n{self.describe()}")
        joined(self._reader, 5)
        if rc is not None and code != rc:
            pytest.fail(f"{self.name} exited {code}, expected {rc}\n{self.describe()}")
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        # Children of a `wirecheck exec` that outlived it are in the same process group.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._stderr.close()


class Procs:
    """Starts processes for one test and kills them all at teardown."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list[Proc] = []

    def start(self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None,
              cwd: str | None = None) -> Proc:
        p = Proc(name, cmd, env, cwd, self.tmp_path / f"{name}.{len(self.started)}.stderr")
        self.started.append(p)
        return p

    def run(self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None,
            timeout: float = DEFAULT_TIMEOUT, rc: int | None = 0) -> Proc:
        p = self.start(name, cmd, env, cwd)
        p.finish(timeout=timeout, rc=rc)
        return p

    def close(self) -> None:
        for p in self.started:
            p.kill()


@pytest.fixture
def procs(tmp_path: Path) -> Iterable[Procs]:
    ps = Procs(tmp_path)
    yield ps
    ps.close()


@pytest.fixture
def sockdir(tmp_path: Path) -> Path:
    """A private (0700) socket directory with a short path."""
    d = tmp_path / "w"
    d.mkdir(mode=0o700)
    assert len(str(d)) <= 99
    return d


def wirecheck_exec(sockdir: Path | str, *cmd: str, iface: int | None = None, pcap: Path | None = None,
                   network: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The argv of `wirecheck exec --dir D [...] -- CMD...`."""
    argv = [WIRECHECK, "exec", "--dir", str(sockdir)]
    if iface is not None:
        argv += ["--iface", str(iface)]
    if pcap is not None:
        argv += ["--pcap", str(pcap)]
    if network is not None:
        argv += ["--network", network]
    return [*argv, *extra, "--", *cmd]


def py_peer(*args: str) -> list[str]:
    """Our Python peer (wrapped by the sitecustomize that `wirecheck exec` injects)."""
    return [PYTHON, PEERS, *args]


def clean_env() -> dict[str, str]:
    """The test's environment without anything that would wrap a child by accident."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SOCKET_WRAPPER_") and k not in ("LD_PRELOAD", "PYTHONPATH", "PYTHONSTARTUP")}
    return env


def native_env(sockdir: Path | str, *, iface: int, pcap: Path | None = None,
               network: str | None = None) -> dict[str, str]:
    """Environment for a process under cwrap only: LD_PRELOAD + SOCKET_WRAPPER_*, no PYTHONPATH."""
    env = clean_env()
    env["LD_PRELOAD"] = need_libsocket_wrapper()
    env["SOCKET_WRAPPER_DIR"] = str(sockdir)
    env["SOCKET_WRAPPER_DEFAULT_IFACE"] = str(iface)
    if pcap is not None:
        env["SOCKET_WRAPPER_PCAP_FILE"] = str(pcap)
    if network is not None:
        env["SOCKET_WRAPPER_IPV4_NETWORK"] = network
    return env


def native_peer(*args: str) -> list[str]:
    """CPython as a native cwrap program: -I ignores PYTHONPATH/user site, so no sitecustomize of ours."""
    return [NATIVE_PYTHON, "-I", PEERS, *args]


def wait_for_path(path: Path, proc: Proc | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.lexists(path):
        if proc is not None and proc.popen.poll() is not None:
            pytest.fail(f"{proc.name} exited before {path} appeared\n{proc.describe()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {timeout}s" + (f"\n{proc.describe()}" if proc else ""))
        time.sleep(0.02)


def listing(sockdir: Path | str) -> list[str]:
    return sorted(n for n in os.listdir(sockdir) if not n.startswith("."))


def tuples(obj: object) -> object:
    """JSON lists back to tuples (addresses), recursively."""
    if isinstance(obj, list):
        return tuple(tuples(x) for x in obj)
    if isinstance(obj, dict):
        return {k: tuples(v) for k, v in obj.items()}
    return obj


# -- captures -------------------------------------------------------------------------------------

#: Wrong-checksum and "this checksum is zero" frames, as tshark reports them with validation on.
BAD_CHECKSUM = "ip.checksum.status == 0 || tcp.checksum.status == 0 || udp.checksum.status == 0"
ZERO_CHECKSUM = "tcp.checksum == 0 || udp.checksum == 0 || (ip.version == 4 && ip.checksum == 0)"

_NOTE = 0x00400000  # PI_NOTE (retransmission, window update); PI_WARN 0x00600000, PI_ERROR 0x00800000


def _split_messages(expert: str, n: int) -> list[str]:
    """Best effort when a message itself contains a comma: merge from the left until n remain."""
    parts = expert.split(",")
    while len(parts) > max(n, 1):
        parts[0:2] = [parts[0] + "," + parts[1]]
    return parts + [""] * (n - len(parts))


_FLOW_FIELDS = ["frame.number", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport", "tcp.dstport",
                "udp.srcport", "udp.dstport", "tcp.len", "tcp.payload", "udp.payload", "tcp.flags.str"]


class PcapCheck:
    """Hands out capture paths, and checks them; teardown errors for a capture nobody checked."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.created: list[Path] = []
        self.checked: set[Path] = set()

    def new(self, name: str = "run.pcap") -> Path:
        path = self.tmp_path / name
        self.created.append(path)
        return path

    def assert_clean(self, path: Path) -> None:
        """No malformed packet, no bad checksum, no TCP analysis flag (retransmission, ACKed unseen, ...)."""
        need_tshark()
        assert path.exists() and path.stat().st_size > 24, f"{path}: no packets were captured"
        self.checked.add(path)
        found = tsharkutil.problems(path)
        bad = tsharkutil.fields(path, ["frame.number", "_ws.col.Info"], display_filter=BAD_CHECKSUM,
                                options=tsharkutil.CHECKSUM_OPTS)
        assert not found and not bad, (
            f"tshark flags frames in {path}:\n" + "\n".join("\t".join(r) for r in found + bad)
            + "\n--- whole capture ---\n" + listing_of(path))

    def assert_tolerant(self, path: Path, *, tolerate: set[str]) -> dict[str, list[str]]:
        """For captures the C library also writes to: only the listed kinds of complaint are allowed.

        Kinds: "zero-checksum" (cwrap writes 0 in every TCP/UDP/IPv4 checksum), "duplicate"
        (tshark's retransmission / out-of-order / dup-ack / keep-alive / window-update flags that
        come from the same packet logged by both ends, or cut differently by cwrap's recv),
        "ipv6-length" (cwrap's IPv6 payload length counts the IPv6 header: "exceeds framing length",
        malformed), "cwrap-eof-rst" (cwrap shows a recv() of EOF as a RST from the peer; only on
        frames with a zero checksum), "missing" (ACKed unseen segment / previous segment not
        captured: a packet nobody logged), "late" (an ACK of a segment that the other writer logs
        after it: cwrap writes without our lock). Anything else fails. Returns the frames per kind, for reporting.
        """
        need_tshark()
        self.checked.add(path)
        rows = tsharkutil.fields(
            path,
            ["frame.number", "_ws.col.Info", "_ws.expert.message", "_ws.malformed", "_ws.expert.severity",
             "tcp.checksum", "udp.checksum", "ip.checksum", "ipv6.plen"],
            display_filter=tsharkutil.PROBLEM_FILTER + " || " + BAD_CHECKSUM,
            options=tsharkutil.CHECKSUM_OPTS)
        kinds: dict[str, list[str]] = defaultdict(list)
        unexplained: list = []
        pending_late: list[tuple[int, set[str]]] = []
        for num, info, expert, malformed, severity, tcsum, ucsum, ipcsum, _plen in rows:
            reasons = set()
            # Notes, warnings and errors count, not chat ( "Connection establish request (SYN)", ...).
            # Expert messages may contain commas; severities never do: pair them from the end.
            sev = [int(x, 0) for x in severity.split(",") if x]
            msgs = expert.split(",")
            if len(msgs) != len(sev):
                msgs = _split_messages(expert, len(sev))
            messages = [m for m, v in zip(msgs, sev, strict=True) if v >= _NOTE]
            rest = []
            if "[TCP Window Update]" in info:
                reasons.add("duplicate")  # chat level: no message to classify
            for m in messages:
                low = m.lower()
                if "connection closing" in low:
                    continue  # note-level narration of a FIN, not a complaint
                if "checksum" in low and ("0x0000" in low or "incorrect" in low or "illegal" in low
                                          or "bad" in low) and "0x0000" in f"{tcsum}{ucsum}{ipcsum}":
                    reasons.add("zero-checksum")
                elif any(w in low for w in ("retransmission", "out-of-order", "duplicate ack", "keep-alive",
                                            "window update")):
                    reasons.add("duplicate")
                elif "segment that wasn't captured" in low or "previous segment" in low:
                    reasons.add("missing")
                elif "connection reset" in low and "0x0000" in tcsum:
                    reasons.add("cwrap-eof-rst")
                elif "exceeds framing length" in low or "payload length" in low:
                    reasons.add("ipv6-length")
                elif "reassembl" in low or "unreassembled" in low or "continuation" in low:
                    # Follow-on damage of a bad checksum: Wireshark refuses to reassemble the segment.
                    reasons.add("zero-checksum")
                else:
                    rest.append(m)
            if malformed and not reasons & {"ipv6-length", "zero-checksum"}:
                rest.append("malformed")
            if "missing" in reasons and ("TCP ACKed unseen segment" in info
                                         or "TCP Previous segment not captured" in info):
                pending_late.append((int(num), reasons))  # decided once the later frames are known
            for r in reasons:
                kinds[r].append(num)
            if rest or not reasons or not reasons <= tolerate:
                unexplained.append((int(num), reasons, f"{num}\t{info}\t{expert}\t{sorted(reasons)}\t{rest}"))
        # "late": an ACK of a segment that does appear, logged later by the other writer (cwrap writes
        # without our pcap lock, so the order between the two writers is not causal). Only when the
        # very bytes that were ACKed (same connection, other direction, the sequence range between
        # what that direction had shown and the ACK) appear after it; a segment nobody logged stays
        # "missing", whatever else is retransmitted elsewhere. The same for a segment that follows a
        # gap in its own direction ("previous segment not captured": our writer logged the peer's ACK
        # of our FIN before cwrap logged the peer's request): late only if the gap's bytes come later.
        if pending_late:
            segments = tcp_segments(path)
            for n, reasons in pending_late:
                if not (acked_range_logged_later(segments, n) or gap_logged_later(segments, n)):
                    continue
                reasons.discard("missing")
                reasons.add("late")
                kinds["missing"].remove(str(n))
                if not kinds["missing"]:
                    del kinds["missing"]
                kinds["late"].append(str(n))
        unexplained = [text for _n, reasons, text in unexplained
                       if not (reasons and reasons <= tolerate and text.split("\t")[-1] == "[]")]
        assert not unexplained, (f"tshark flags frames in {path} beyond what is tolerated ({sorted(tolerate)}):\n"
                                 + "\n".join(unexplained) + "\n--- whole capture ---\n" + listing_of(path))
        return dict(kinds)

    def verify_all_checked(self) -> None:
        unchecked = [p for p in self.created if p.exists() and p not in self.checked]
        if unchecked:
            pytest.fail(f"captures written but never checked with tshark: {unchecked}")


@pytest.fixture
def pcaps(tmp_path: Path, request: pytest.FixtureRequest) -> Iterable[PcapCheck]:
    pc = PcapCheck(tmp_path)
    failed_before = request.session.testsfailed
    yield pc
    if request.session.testsfailed == failed_before:  # a failed test has said enough
        pc.verify_all_checked()


def listing_of(path: Path) -> str:
    try:
        return tsharkutil.run_tshark(["-r", str(path), "-n", *tsharkutil.CHECKSUM_OPTS])
    except tsharkutil.TsharkError as e:
        return str(e)


def flows(path: Path) -> dict[tuple[str, str, str], list[bytes]]:
    """(proto, "src:port", "dst:port") -> payloads of the data-carrying TCP segments / UDP datagrams."""
    out: dict[tuple[str, str, str], list[bytes]] = defaultdict(list)
    for row in tsharkutil.fields(path, _FLOW_FIELDS, options=["-o", "tcp.desegment_tcp_streams:FALSE"]):
        (_num, src4, src6, dst4, dst6, tsport, tdport, usport, udport, tlen, tpay, upay, _flags) = row
        src, dst = src4 or src6, dst4 or dst6
        if tsport:
            if tlen and int(tlen) > 0:
                out[("tcp", f"{src}:{tsport}", f"{dst}:{tdport}")].append(bytes.fromhex(tpay.replace(":", "")))
        elif usport:
            out[("udp", f"{src}:{usport}", f"{dst}:{udport}")].append(bytes.fromhex(upay.replace(":", "")))
    return dict(out)


def tcp_flags(path: Path) -> list[tuple[str, str, str]]:
    """(src:port, dst:port, flags) of every TCP segment, in file order."""
    rows = tsharkutil.fields(path, ["ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport",
                                    "tcp.flags.str"], display_filter="tcp")
    return [(f"{r[0] or r[1]}:{r[2]}", f"{r[3] or r[4]}:{r[5]}", r[6]) for r in rows]


_SEQ_MOD = 1 << 32


@dataclass(frozen=True)
class Segment:
    """One TCP frame, with raw sequence numbers (ISNs differ per writer; raw numbers match across them)."""

    frame: int
    stream: int
    src: str        # "addr:port"
    dst: str
    seq: int        # raw
    end: int        # raw sequence number after this segment (SYN and FIN count one), mod 2**32
    ack: int | None  # raw, None without the ACK flag


def tcp_segments(path: Path) -> list[Segment]:
    """Every TCP frame of the capture, in file order."""
    rows = tsharkutil.fields(path, ["frame.number", "tcp.stream", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst",
                                    "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.len",
                                    "tcp.flags.syn", "tcp.flags.fin", "tcp.flags.ack"], display_filter="tcp")
    out = []
    for num, stream, s4, s6, d4, d6, sport, dport, seq, ack, length, syn, fin, has_ack in rows:
        seq_raw = int(seq)
        size = int(length or 0) + (syn in ("1", "True")) + (fin in ("1", "True"))
        out.append(Segment(int(num), int(stream), f"{s4 or s6}:{sport}", f"{d4 or d6}:{dport}", seq_raw,
                           (seq_raw + size) % _SEQ_MOD, int(ack) if has_ack in ("1", "True") and ack else None))
    return out


def _ahead(a: int, b: int) -> int:
    """How far sequence number a is past b (mod 2**32, as a signed distance)."""
    d = (a - b) % _SEQ_MOD
    return d - _SEQ_MOD if d >= _SEQ_MOD // 2 else d


def _logged_later(flow: list[Segment], frame: int, upto: int) -> bool:
    """Whether segments of `flow` after `frame` cover [what `flow` had shown before `frame`, upto)."""
    before = [s.end for s in flow if s.frame < frame]
    if not before:
        return False
    start = before[0]
    for end in before[1:]:
        if _ahead(end, start) > 0:
            start = end
    want = _ahead(upto, start)
    if want <= 0:
        return False
    # cover [start, start + want) with the later segments (cwrap may cut the bytes into several records)
    covered = 0
    later = sorted((s for s in flow if s.frame > frame), key=lambda s: _ahead(s.seq, start))
    for s in later:
        lo, hi = _ahead(s.seq, start), _ahead(s.end, start)
        if lo > covered:
            break
        covered = max(covered, hi)
        if covered >= want:
            return True
    return False


def acked_range_logged_later(segments: list[Segment], frame: int) -> bool:
    """Whether the bytes frame ACKs without having been seen appear after it, in the same connection.

    The ACKed-unseen range is [what the other direction had shown before `frame`, the ACK number). It
    counts as logged late only when segments of that direction, after `frame`, cover all of it.
    """
    acker = next((s for s in segments if s.frame == frame), None)
    if acker is None or acker.ack is None:
        return False
    back = [s for s in segments if s.stream == acker.stream and s.src == acker.dst and s.dst == acker.src]
    return _logged_later(back, frame, acker.ack)


def gap_logged_later(segments: list[Segment], frame: int) -> bool:
    """Whether the bytes missing before `frame` in its own direction appear after it, same connection.

    The gap is [what that direction had shown before `frame`, frame's sequence number); it counts as
    logged late only when segments of that direction, after `frame`, cover all of it.
    """
    seg = next((s for s in segments if s.frame == frame), None)
    if seg is None:
        return False
    same = [s for s in segments if s.stream == seg.stream and s.src == seg.src and s.dst == seg.dst]
    return _logged_later(same, frame, seg.seq)
