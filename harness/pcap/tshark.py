"""Everything that talks to the tshark binary: locate it, build its options, run it, explain its errors.

Why one module: tshark's failure modes are easy to misread (an invalid `-e` field aborts the run with
no rows and the reason on stderr; a truncated file still prints rows and exits 2), so every call goes
through `run()` which turns stderr into a typed, readable exception.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# Field and record separators for `-T fields`. Control characters, because Info columns, expert
# messages and file names contain commas and tabs.
SEP = "\x1f"
AGG = "\x1e"
DEFAULT_TIMEOUT = 300.0
_NOISE = re.compile(r'^Running as user "[^"]*" and group "[^"]*"\. This could be dangerous\.\s*$')


class PcapError(Exception):
    """Base class of every error the pcap library raises about its input or environment."""


class TsharkNotFound(PcapError):
    pass


class BadCapture(PcapError):
    """The capture file is missing, not a pcap/pcapng, or damaged (e.g. truncated)."""


class UnknownField(PcapError):
    def __init__(self, fields: Iterable[str], where: str = ""):
        self.fields = sorted(set(fields))
        super().__init__(f"{where}unknown tshark field(s): {', '.join(self.fields)}"
                         f" (not in `tshark -G fields` of tshark {version_string()})")


class BadFilter(PcapError):
    def __init__(self, flt: str, reason: str, where: str = ""):
        self.filter = flt
        self.reason = reason
        super().__init__(f"{where}invalid display filter {flt!r}: {reason}")


class TsharkFailed(PcapError):
    pass


def find_tshark() -> str:
    """The tshark to use: $WIRECHECK_TSHARK, else the first on PATH."""
    exe = os.environ.get("WIRECHECK_TSHARK") or shutil.which("tshark")
    if not exe or not os.access(exe, os.X_OK):
        raise TsharkNotFound("tshark not found: install it (Debian: apt-get install tshark) "
                             "or set WIRECHECK_TSHARK=/path/to/tshark")
    return exe


def find_tool(name: str) -> str:
    """A sibling tool of tshark (editcap, capinfos)."""
    here = Path(find_tshark()).with_name(name)
    exe = str(here) if here.exists() else shutil.which(name)
    if not exe:
        raise TsharkNotFound(f"{name} not found (it ships with tshark: apt-get install tshark)")
    return exe


def clean_stderr(text: str) -> str:
    return "\n".join(ln for ln in text.splitlines() if ln.strip() and not _NOISE.match(ln)).strip()


@functools.cache
def version_string() -> str:
    try:
        exe = find_tshark()
    except PcapError:
        return "?"
    memo = _version_memo(exe)
    if memo is not None:
        try:
            known = memo.read_text().strip()
            if known:
                return known
        except OSError:
            pass
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"TShark \(Wireshark\) (\S+)", out)
    ver = m.group(1) if m else "?"
    if memo is not None and ver != "?":
        _write_atomically(memo, lambda tmp: tmp.write_text(ver + "\n"))
    return ver


def _version_memo(exe: str) -> Path | None:
    """Where the version of this tshark binary is remembered: `tshark --version` costs ~0.2 s (it
    initialises libwireshark) and its answer is compiled into the binary, so it is keyed by the
    binary file itself (path, inode, size, mtime). None for a script: a wrapper may run any tshark."""
    try:
        real = os.path.realpath(exe)
        st = os.stat(real)
        with open(real, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
    except OSError:
        return None
    key = hashlib.sha256(f"{real}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    return _cache_dir() / f"tshark-version-{key[:24]}.txt"


def _write_atomically(path: Path, write: Callable[[Path], object]) -> bool:
    """Write a cache file through a temporary sibling and a rename (concurrent writers each finish
    theirs; a reader never sees half a file). False when the cache cannot be written."""
    # one temporary file per writer, thread included: two threads sharing one would write into the
    # file the other has already renamed into place
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        write(tmp)
        tmp.replace(path)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False  # a read-only home only costs a re-run next time


@dataclass(frozen=True)
class FieldInfo:
    abbrev: str
    ftype: str  # FT_UINT16, FT_STRING, ... or "PROTOCOL"
    base: str = ""  # BASE_DEC, BASE_HEX, ... (how Wireshark shows the value; used in messages)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wirecheck"


# column pseudo-fields work with -e but are not listed by -G fields (tshark 4.0)
_COLUMN_FIELDS = frozenset({"_ws.col.Info", "_ws.col.Protocol", "_ws.col.Source", "_ws.col.Destination",
                            "_ws.col.No.", "_ws.col.Time", "_ws.col.Length"})


class FieldCatalogue(Mapping[str, FieldInfo]):
    """Every field and protocol name of one tshark build (`tshark -G fields`), read-only, by name.

    Why not a dict: 236k names cost ~0.5 s to load into one in every process (more than a small
    capture's tshark pass), and a run asks about a few dozen. So the names live in an SQLite index
    on disk, each looked up when first asked (then remembered). Without the index (no sqlite3, a
    cache that cannot be written, an unknown version) the catalogue is a dict as before."""

    def __init__(self, db: Any = None, entries: dict[str, FieldInfo] | None = None):
        self._conn, self._entries = db, entries
        self._memo: dict[str, FieldInfo | None] = {}
        self._lock = threading.Lock()

    def _find(self, name: str) -> FieldInfo | None:
        if name in _COLUMN_FIELDS:
            return FieldInfo(name, "FT_STRING")
        if self._entries is not None:
            return self._entries.get(name)
        try:
            return self._memo[name]
        except KeyError:
            pass
        with self._lock:
            row = self._conn.execute("SELECT ftype, base FROM fields WHERE name = ?", (name,)).fetchone()
        info = FieldInfo(name, row[0], row[1]) if row else None
        self._memo[name] = info
        return info

    def __getitem__(self, name: str) -> FieldInfo:
        info = self._find(name) if isinstance(name, str) else None
        if info is None:
            raise KeyError(name)
        return info

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        info = self._find(name) if isinstance(name, str) else None
        return default if info is None else info

    def _all(self) -> dict[str, FieldInfo]:
        if self._entries is None:
            with self._lock:
                rows = self._conn.execute("SELECT name, ftype, base FROM fields").fetchall()
            self._entries = {n: FieldInfo(n, f, b) for n, f, b in rows}
        return {**self._entries, **{c: FieldInfo(c, "FT_STRING") for c in _COLUMN_FIELDS}}

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def _g_fields() -> dict[str, FieldInfo]:
    """`tshark -G fields`: name -> FieldInfo, the first entry of a name kept (names repeat)."""
    res = subprocess.run([find_tshark(), "-G", "fields"], capture_output=True, text=True, timeout=120)
    out: dict[str, FieldInfo] = {}
    for ln in res.stdout.splitlines():
        parts = ln.split("\t")
        if parts[0] == "F" and len(parts) > 3:
            out.setdefault(parts[2], FieldInfo(parts[2], parts[3], parts[5] if len(parts) > 5 else ""))
        elif parts[0] == "P" and len(parts) > 2:
            out.setdefault(parts[2], FieldInfo(parts[2], "PROTOCOL"))
    return out


def _open_index(path: Path) -> Any:
    """A read-only connection to a catalogue index, or None when it is missing or unreadable."""
    if not path.exists():
        return None
    try:
        import sqlite3

        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        conn.execute("SELECT ftype, base FROM fields LIMIT 1").fetchall()
        return conn
    except Exception:  # no sqlite3, a damaged or foreign file: built again
        return None


def _write_index(tmp: Path, entries: dict[str, FieldInfo]) -> None:
    import sqlite3

    conn = sqlite3.connect(tmp)
    try:
        conn.execute("CREATE TABLE fields (name TEXT PRIMARY KEY, ftype TEXT NOT NULL, base TEXT NOT NULL) "
                     "WITHOUT ROWID")
        conn.executemany("INSERT INTO fields VALUES (?, ?, ?)", ((i.abbrev, i.ftype, i.base) for i in entries.values()))
        conn.commit()
    except sqlite3.Error as e:
        raise OSError(f"cannot write {tmp}: {e}") from e
    finally:
        conn.close()


@functools.cache
def field_catalogue() -> Mapping[str, FieldInfo]:
    """All field and protocol names of this tshark (`tshark -G fields`), indexed on disk per version
    because it is 236k lines and the same for every run of one tshark build."""
    ver = version_string()
    index = _cache_dir() / f"tshark-{ver}-fields-v4.sqlite"
    if ver != "?" and (conn := _open_index(index)) is not None:
        return FieldCatalogue(db=conn)
    entries = _g_fields()
    if ver != "?":
        try:
            import sqlite3  # noqa: F401  (an interpreter without it keeps the dict)
        except ImportError:
            return FieldCatalogue(entries=entries)
        if _write_atomically(index, lambda tmp: _write_index(tmp, entries)):
            conn = _open_index(index)
            if conn is not None:
                return FieldCatalogue(db=conn)
    return FieldCatalogue(entries=entries)


def unknown_fields(names: Iterable[str]) -> list[str]:
    cat = field_catalogue()
    return sorted({n for n in names if n not in cat})


# --------------------------------------------------------------------------- options

#: QUIC has no port of its own outside 443: tshark finds it by heuristics, which run only after the
#: UDP port table. 79 ports in the ephemeral range 10000-60000 belong to other dissectors (quake3,
#: eobi, ...), so a QUIC flow on one of them is not QUIC to tshark unless heuristics go first. Used
#: for passes that ask about QUIC and for captures with a TLS key log; not always, because on plain
#: UDP the ~70 enabled heuristics (dns, json, tftp, ...) would then win over the port table.
QUIC_FIRST = ("-o", "udp.try_heuristic_first:TRUE")


def mentions_quic(*texts: str | None) -> bool:
    return any(t and "quic" in t for t in texts)


@dataclass
class Options:
    """The -o / -d options that every run on one capture shares (decryption, decode-as)."""

    keylog: str | None = None
    smb_keys: Sequence[str] = ()  # uat:smb2_seskey_list rows, already formatted
    decode_as: Sequence[str] = ()  # "tcp.port==8445,nbss"
    prefs: dict[str, str] = field(default_factory=dict)
    extra: Sequence[str] = ()

    def args(self, quic: bool = False) -> list[str]:
        a: list[str] = []
        if self.keylog:
            a += ["-o", f"tls.keylog_file:{self.keylog}"]
        if (quic or self.keylog) and "udp.try_heuristic_first" not in self.prefs:
            a += list(QUIC_FIRST)
        for row in self.smb_keys:
            a += ["-o", f"uat:smb2_seskey_list:{row}"]
        for d in self.decode_as:
            a += ["-d", d]
        for k, v in self.prefs.items():
            a += ["-o", f"{k}:{v}"]
        return a + list(self.extra)


# --------------------------------------------------------------------------- running

_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"}


def check_capture_file(path: str | os.PathLike) -> None:
    """Reject what is not a pcap/pcapng before tshark sees it: tshark happily 'reads' a text file
    as some other format and returns a nonsense frame with exit status 0."""
    p = Path(path)
    if not p.exists():
        raise BadCapture(f"{p}: no such capture file")
    if p.is_dir():
        raise BadCapture(f"{p}: is a directory, not a capture file")
    with open(p, "rb") as f:
        head = f.read(4)
    if len(head) == 0:
        raise BadCapture(f"{p}: empty file (not a pcap or pcapng)")
    if head not in _MAGICS:
        raise BadCapture(f"{p}: not a pcap or pcapng file (starts with {head.hex()})")


def explain(stderr: str, path: str | os.PathLike = "") -> PcapError | None:
    """Map tshark's stderr to the exception it means, or None when stderr is only noise."""
    msg = clean_stderr(stderr)
    if not msg:
        return None
    if "Some fields aren't valid" in msg:
        names = [ln.strip() for ln in msg.splitlines()[1:] if ln.startswith(("\t", " "))]
        return UnknownField(names)
    if "cut short in the middle of a packet" in msg:
        return BadCapture(f"{path}: the capture is truncated (its last packet is cut short): {msg}")
    if "isn't a capture file" in msg or "unknown or unsupported" in msg or "appears to be damaged" in msg:
        return BadCapture(f"{path}: tshark cannot read it: {msg}")
    if "doesn't exist" in msg:
        return BadCapture(f"{path}: no such capture file")
    return TsharkFailed(msg)


def run(args: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, path: str | os.PathLike = "",
        tool: str = "tshark") -> str:
    """Run tshark (or a sibling tool) and return stdout; raise a typed error on any failure."""
    exe = find_tshark() if tool == "tshark" else find_tool(tool)
    try:
        res = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout,
                             errors="replace")
    except subprocess.TimeoutExpired as e:
        raise TsharkFailed(f"{tool} did not finish within {timeout:.0f} s on {path}") from e
    err = explain(res.stderr, path)
    if res.returncode != 0 or isinstance(err, BadCapture | UnknownField):
        if err is None:
            err = TsharkFailed(f"{tool} exited with status {res.returncode} and no message")
        raise err
    return res.stdout


def _fields_args(path: str | os.PathLike, fields: Sequence[str], options: Options,
                 display_filter: str | None) -> list[str]:
    args = ["-r", str(path), "-n", *options.args(mentions_quic(display_filter, *fields)), "-T", "fields",
            "-E", f"separator={SEP}", "-E", f"aggregator={AGG}", "-E", "occurrence=a", "-E", "quote=n"]
    if display_filter:
        args += ["-Y", display_filter]
    for f in fields:
        args += ["-e", f]
    return args


def _split_rows(lines: list[str], n: int) -> list[list[str]]:
    """`-T fields` lines (no newline) -> rows of n strings; empty lines skipped."""
    rows = [ln.split(SEP) for ln in lines if ln]
    for i, parts in enumerate(rows):
        if len(parts) != n:  # a value holding a newline: rejoin conservatively
            rows[i] = (parts + [""] * n)[:n]
    return rows


def _start(args: Sequence[str], stdout: Any, stderr: Any, timeout: float) -> tuple[subprocess.Popen, list[bool],
                                                                                  threading.Timer]:
    proc = subprocess.Popen([find_tshark(), *args], stdout=stdout, stderr=stderr, text=True, errors="replace",
                            bufsize=1 << 20)
    fired: list[bool] = []

    def on_timeout() -> None:
        fired.append(True)
        proc.kill()
    timer = threading.Timer(timeout, on_timeout)
    timer.start()
    return proc, fired, timer


def _stop(proc: subprocess.Popen, timer: threading.Timer) -> None:
    timer.cancel()
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _outcome(rc: int, fired: list[bool], err: IO[str], path: str | os.PathLike, timeout: float) -> None:
    """Raise what a finished pass's status and stderr mean (nothing when it succeeded)."""
    if fired:
        raise TsharkFailed(f"tshark did not finish within {timeout:.0f} s on {path}")
    err.seek(0)
    problem = explain(err.read(), path)
    if rc != 0 or isinstance(problem, BadCapture | UnknownField):
        raise problem or TsharkFailed(f"tshark exited with status {rc} and no message")


#: characters of tshark output parsed at a time (rows are split and handed out a chunk at a time)
_CHUNK = 1 << 18


def _rows_of(out: IO[str], n: int) -> Iterator[list[str]]:
    """The rows of `-T fields` text read from `out` a chunk at a time (text mode: newlines are
    translated as iterating its lines would)."""
    carry = ""
    while True:
        text = out.read(_CHUNK)
        if not text:
            break
        lines = (carry + text).split("\n")
        carry = lines.pop()
        yield from _split_rows(lines, n)
    yield from _split_rows([carry], n)


def fields_pass(path: str | os.PathLike, fields: Sequence[str], options: Options, *,
                display_filter: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                on_start: Callable[[], object] | None = None) -> Iterator[list[str]]:
    """One `-T fields` pass: rows, one string per requested field (multi-values joined by AGG).

    A generator that reads tshark's stdout a chunk at a time (split into lines and fields in bulk,
    not a line per call): a million-frame capture is ~100 MB of text, and holding it (plus one list
    per row) would cost more memory than the table itself.
    Errors (bad field, damaged file) are raised once tshark has finished, like `run()` does.
    `on_start()` is called once tshark runs (work the caller does while tshark starts up)."""
    args = _fields_args(path, fields, options, display_filter)
    n = len(fields)
    with tempfile.TemporaryFile("w+", errors="replace") as err:
        proc, fired, timer = _start(args, subprocess.PIPE, err, timeout)
        try:
            assert proc.stdout is not None
            if on_start is not None:
                on_start()
            yield from _rows_of(proc.stdout, n)
            rc = proc.wait()
        finally:
            _stop(proc, timer)
        _outcome(rc, fired, err, path, timeout)


class BackgroundPass:
    """A `-T fields` pass running while the caller does something else (its output goes to a
    temporary file, so tshark never waits for a reader); `rows()` waits for it and returns what
    `fields_pass` would have yielded, or raises what it would have raised."""

    def __init__(self, path: str | os.PathLike, fields: Sequence[str], options: Options, *,
                 display_filter: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.path, self.n, self.timeout = path, len(fields), timeout
        args = _fields_args(path, fields, options, display_filter)
        self._out = tempfile.TemporaryFile("w+", errors="replace")
        self._err = tempfile.TemporaryFile("w+", errors="replace")
        try:
            self._proc, self._fired, self._timer = _start(args, self._out, self._err, timeout)
        except BaseException:
            self.close()
            raise

    def rows(self) -> Iterator[list[str]]:
        """Wait for tshark, raise its failure, then the rows (read from the file a chunk at a time)."""
        try:
            rc = self._proc.wait()
        finally:
            _stop(self._proc, self._timer)
        _outcome(rc, self._fired, self._err, self.path, self.timeout)
        self._out.seek(0)
        return _rows_of(self._out, self.n)

    def close(self) -> None:
        """Stop tshark if it still runs and drop its output."""
        if hasattr(self, "_proc"):
            _stop(self._proc, self._timer)
        self._out.close()
        self._err.close()


@functools.lru_cache(maxsize=512)
def filter_error(flt: str) -> str | None:
    """Why tshark rejects display filter `flt`, or None if it compiles. Uses `dftest` when present,
    otherwise a run on an empty capture (cheap: no packets to dissect)."""
    dftest = shutil.which("dftest")
    if dftest:
        res = subprocess.run([dftest, flt], capture_output=True, text=True, timeout=60)
        return None if res.returncode == 0 else (clean_stderr(res.stderr) or "rejected by dftest")
    with tempfile.NamedTemporaryFile(suffix=".pcap") as f:
        # an empty Raw-IP pcap: global header only
        f.write(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000065000000"))
        f.flush()
        res = subprocess.run([find_tshark(), "-r", f.name, "-Y", flt], capture_output=True, text=True,
                             timeout=60)
    if res.returncode == 0:
        return None
    return clean_stderr(res.stderr).removeprefix("tshark: ") or f"exit status {res.returncode}"


def summary_lines(path: str | os.PathLike, frames: Iterable[int], options: Options,
                  timeout: float = DEFAULT_TIMEOUT) -> dict[int, str]:
    """One-line summaries of the given frames (for failure excerpts), decrypted like the main pass."""
    frames = sorted(set(frames))
    if not frames:
        return {}
    flt = "frame.number in {" + ",".join(map(str, frames)) + "}"  # 4.0 wants commas
    out = run(["-r", str(path), "-n", *options.args(), "-Y", flt, "-T", "fields", "-E", f"separator={SEP}",
               "-e", "frame.number", "-e", "frame.time_relative", "-e", "_ws.col.Source", "-e",
               "_ws.col.Destination", "-e", "_ws.col.Protocol", "-e", "_ws.col.Info"], timeout=timeout, path=path)
    lines = {}
    for ln in out.splitlines():
        p = ln.split(SEP)
        if len(p) >= 6 and p[0].isdigit():
            lines[int(p[0])] = f"{int(p[0]):>6} {float(p[1] or 0):10.6f} {p[2]} → {p[3]} {p[4]} {p[5]}"
    return lines


# --------------------------------------------------------------------------- SMB on any TCP port

#: Ports tshark dissects as NBSS (and so SMB/SMB2) without being told: 139 and 445.
SMB_DEFAULT_PORTS = frozenset({139, 445})
# An SMB message over TCP: a 4-byte header (Direct TCP, MS-SMB2 2.1: a zero byte and a 24-bit length;
# NBSS session message, RFC 1002 4.3.6: type 0x00, flags, 16-bit length) followed by the protocol
# id: 0xFE 'SMB' (SMB2), 0xFD 'SMB' (SMB3 transform header), 0xFC 'SMB' (compression transform)
# or 0xFF 'SMB' (an SMB1 NEGOTIATE that a client may still start with).
SMB_MAGIC_FILTER = ("tcp.len > 8 && tcp.payload[0] == 00 && (tcp.payload[4:4] == fe:53:4d:42 || "
                    "tcp.payload[4:4] == fd:53:4d:42 || tcp.payload[4:4] == fc:53:4d:42 || "
                    "tcp.payload[4:4] == ff:53:4d:42)")
_SYN_FILTER = "tcp.flags.syn == 1 && tcp.flags.ack == 0"
# Only TCP matters for the search: leave the expensive dissectors out of that pass.
_DETECT_DISABLED = ("nbss", "smb", "smb2", "tls", "quic", "http", "infiniband", "dcerpc")


_DETECT_FIELDS = ("tcp.stream", "tcp.srcport", "tcp.dstport", "tcp.flags.syn", "tcp.flags.ack")
_DETECT_FILTER = f"({_SYN_FILTER}) || ({SMB_MAGIC_FILTER})"


def _detect_options() -> Options:
    args = []
    for proto in _DETECT_DISABLED:
        args += ["--disable-protocol", proto]
    return Options(prefs={"tcp.desegment_tcp_streams": "FALSE"}, extra=args)


def smb_tcp_ports(path: str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT) -> list[int]:
    """The server ports of TCP connections that carry SMB, found by the SMB magic after the 4-byte
    transport header, whatever the port; 139 and 445 excluded (tshark reads those already).

    tshark 4.0 has no heuristic that finds SMB2 over TCP: off its well-known ports the bytes show
    as bare TCP data, so every SMB question would be answered "none" on such a capture. The server
    port is the one the connection's SYN went to; without a captured SYN, the port the first SMB
    message went to (a client speaks first in SMB: NEGOTIATE)."""
    return _smb_ports_of(fields_pass(path, list(_DETECT_FIELDS), _detect_options(), display_filter=_DETECT_FILTER,
                                     timeout=timeout))


class SmbPortSearch:
    """`smb_tcp_ports` in a tshark of its own, started now: `result()` waits for it (and raises
    what smb_tcp_ports would); `close()` stops it. Lets a caller read another pass meanwhile."""

    def __init__(self, path: str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT):
        self._pass = BackgroundPass(path, list(_DETECT_FIELDS), _detect_options(), display_filter=_DETECT_FILTER,
                                    timeout=timeout)

    def result(self) -> list[int]:
        return _smb_ports_of(self._pass.rows())

    def close(self) -> None:
        self._pass.close()


def _smb_ports_of(rows: Iterable[list[str]]) -> list[int]:
    syn_port: dict[str, int] = {}
    first_smb: dict[str, int] = {}
    for stream, _sport, dport, syn, ack in rows:
        if syn in ("1", "True") and ack not in ("1", "True"):
            syn_port.setdefault(stream, int(dport))
        else:
            first_smb.setdefault(stream, int(dport))
    ports = {syn_port.get(stream, port) for stream, port in first_smb.items()}
    return sorted(ports - SMB_DEFAULT_PORTS)


_SMB_MAGICS = (b"\xfeSMB", b"\xfdSMB", b"\xfcSMB", b"\xffSMB")


def smb_elsewhere_likely(path: str | os.PathLike, limit: int = 1 << 20, hits: int = 64) -> bool:
    """A guess from the first `limit` bytes of the file: does SMB run on a TCP port other than 139
    and 445 (so that `smb_tcp_ports` will probably find one)? True when an SMB magic sits 4 bytes into
    a TCP payload whose header (found backwards by its data offset) names neither port.

    Only a guess, and used only as one: it decides whether a pass is worth reading while the port
    search runs (a wrong guess costs that pass or the overlap), never what a check answers."""
    try:
        with open(path, "rb") as f:
            buf = f.read(limit)
    except OSError:
        return False  # tshark will say what is wrong with the file
    seen = 0
    for magic in _SMB_MAGICS:
        i = buf.find(magic, 28)
        while i != -1 and seen < hits:
            p = i - 4  # the start of the TCP payload: a 4-byte Direct TCP / NBSS header, first byte 0
            if buf[p] == 0:
                for hl in range(20, 64, 4):
                    h = p - hl
                    if h < 0:
                        break
                    if buf[h + 12] >> 4 == hl // 4:
                        seen += 1
                        ports = {int.from_bytes(buf[h:h + 2], "big"), int.from_bytes(buf[h + 2:h + 4], "big")}
                        if ports.isdisjoint(SMB_DEFAULT_PORTS):
                            return True
                        break
            i = buf.find(magic, i + 1)
    return False


#: The protocols a check can be about, as tshark names them in frame.protocols.
CHECKED_PROTOCOLS = ("smb2", "quic", "smb_direct")
_PROTO_FIELD = re.compile(r"(?<![\w.])(smb2|quic|smb_direct)\.\w")
_PROTO_BARE = re.compile(r"(?<![\w.])(smb2|quic|smb_direct)(?![\w.])")


def protocols_mentioned(*texts: str | None) -> set[str]:
    """Which of smb2 / quic / smb_direct the fields of a filter or field list belong to
    ("smb2.cmd == 5" -> smb2)."""
    out: set[str] = set()
    for t in texts:
        if t:
            out |= set(_PROTO_FIELD.findall(t))
    return out


def protocols_named(*texts: str | None) -> set[str]:
    """Protocols a filter names on their own ("smb2", "quic && udp.srcport == 443"): such a check is
    about whether the protocol is there at all, which is never vacuous."""
    out: set[str] = set()
    for t in texts:
        if t:
            out |= set(_PROTO_BARE.findall(t))
    return out
