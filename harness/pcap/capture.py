"""`Capture`: one capture file, read by tshark once per batch, asserted on from the frame table.

Why this shape: tshark costs ~0.4 s to start and seconds to dissect a big capture, and pyshark's
per-packet path is 50-70x slower (measured on 20,000-packet files: about 1 s for one
`-T fields` pass, 73 s for pyshark's default loop). So assertions are collected (`expect`), their
fields unioned, the capture read in ONE `-T fields` pass, and all of them answered from the table
(`verify`). Immediate helpers (`count`, `first`, ...) read on demand and keep the table; a later
question that needs new fields reads only those. pyshark stays available for deep per-packet
looks (`pyshark()`), with the same decryption options.
"""
from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from . import rawscan
from . import tshark as ts
from .assertions import Assertion, Context, Count, Result, excerpt_frames, format_failure
from .keys import SmbKey, embedded_secrets, keylog_randoms, load_smb_keys
from .query import Query, as_query, group_field, groups
from .table import BASE_FIELDS, Frame, Table

# Read in every pass: they tell whether traffic stayed encrypted, so a failure can say which keys
# are missing instead of looking like "no SMB2 traffic".
DIAG_FIELDS = ("quic.remaining_payload", "quic.connection.number", "quic.long.packet_type", "tls.handshake.type",
               "tls.handshake.random",
               "smb2.header.transform.msg_size", "smb2.sesid", "smb2.cmd")


# Named checks about the capture as a whole: they read smb2/quic fields only to explain what they find,
# and hold (or fail) on a capture of any protocol.
GENERIC_CHECKS = frozenset({"no_malformed", "decrypted", "tcp.no_retransmission"})

NBSS_TYPES = {0x00, 0x81, 0x82, 0x83, 0x84, 0x85}  # RFC 1002 4.3.1: anything else is mis-framed data

# Captures holding assertions collected by expect() and not yet evaluated, by a token per instance
# (not id(), which a later Capture may reuse): {token: "path (N assertions)"}. A forgotten verify()
# turns every expect() into a check that cannot fail, and such a test looks green; the pytest
# plugin and the project's own tests fail a test that leaves an entry here (unverified()).
_UNVERIFIED: dict[int, str] = {}
_TOKENS = iter(range(1, 1 << 62))


def unverified(clear: bool = True) -> list[str]:
    """Captures whose expect()ed assertions were never evaluated (verify/results), oldest first."""
    left = list(_UNVERIFIED.values())
    if clear:
        _UNVERIFIED.clear()
    return left


class Capture:
    """A pcap/pcapng file plus the keys that decrypt it.

    keylog:     NSS key log for QUIC/TLS (or use a pcapng with embedded secrets).
    smb_keys:   SMB3 keys: a file (see keys.load_smb_keys) or SmbKey objects.
    smb_ports:  TCP ports other than 445/139 that carry SMB2 (decode-as NBSS; tshark 4.0 reads
                17-bit NBSS lengths there, so messages of 128 KiB or more are mis-framed).
    detect_smb: find such ports by themselves (tshark.smb_tcp_ports: the SMB magic after the 4-byte
                transport header), once, before the first question about SMB; on by default, since
                otherwise SMB on port 27445 is bare "TCP data" and every SMB count is 0.
    decode_as:  raw tshark `-d` specs; prefs: extra `-o` preferences.

    A check about smb2, quic or smb_direct on a capture in which no frame was dissected as that
    protocol fails with that reason (it could not have failed otherwise: "no CREATE" holds on a
    capture whose SMB tshark never saw); `Assertion.absent_protocol_ok = True` opts out.
    """

    def __init__(self, path: str | os.PathLike, keylog: str | os.PathLike | None = None, smb_keys: Any = None,
                 *, smb_ports: Iterable[int] = (), decode_as: Sequence[str] = (), prefs: dict | None = None,
                 timeout: float = ts.DEFAULT_TIMEOUT, detect_smb: bool = True):
        self.path = Path(path)
        ts.check_capture_file(self.path)
        self.keylog = Path(keylog) if keylog else None
        self._keylog_randoms = keylog_randoms(self.keylog) if self.keylog else {}
        self.smb_keys: list[SmbKey] = load_smb_keys(smb_keys)
        self.timeout = timeout
        self.options = ts.Options(
            keylog=str(self.keylog) if self.keylog else None,
            smb_keys=[k.uat_row() for k in self.smb_keys],
            decode_as=[*decode_as, *(f"tcp.port=={int(p)},nbss" for p in smb_ports)],
            prefs=dict(prefs or {}))
        self.smb_ports = [int(p) for p in smb_ports]
        self._diag = DIAG_FIELDS + (("nbss.continuation_data", "nbss.type", "tcp.srcport", "tcp.dstport")
                                    if self.smb_ports else ())
        self._table: Table | None = None
        self._seen: tuple[Table, frozenset[str]] | None = None  # protocols_seen() of that table
        self._tshark_frames: dict[str, set[int]] = {}
        self._valid_filters: set[str] = set()
        self._pending: list[Assertion] = []
        self._token = next(_TOKENS)
        self.passes = 0  # tshark field passes run so far (the one-pass promise is tested)
        self.discarded_passes = 0  # passes read while the SMB port search ran, dropped as it found ports
        self.detect_smb = detect_smb
        self.detected_smb_ports: list[int] | None = None  # None: not searched yet

    def __repr__(self) -> str:
        return f"Capture({str(self.path)!r})"

    # ------------------------------------------------------------------ reading

    def _check_names(self, queries: Iterable[Query], fields: Iterable[str]) -> None:
        unknown = set(ts.unknown_fields(fields))
        for q in queries:
            unknown |= q.unknown_fields()
        if unknown:
            raise ts.UnknownField(unknown)

    def load(self, fields: Iterable[str] = (), queries: Iterable[Query] = ()) -> Table:
        """Make sure the table holds `fields` and every field the queries use; read only what is
        missing, in one pass. Filters are validated by tshark, folded into that pass when there is one."""
        queries = list(queries)
        fields = set(fields)
        for q in queries:
            fields |= q.fields()
        self._check_names(queries, fields)
        if self._wants_smb_search(fields, queries):
            table = self._read_while_searching(fields, queries)
            if table is not None:
                return table
        return self._read(fields, queries)

    def _missing(self, fields: Iterable[str]) -> list[str]:
        have = set(self._table.columns) if self._table else set()
        return [f for f in dict.fromkeys([*BASE_FIELDS, *self._diag, *sorted(fields)]) if f not in have]

    def _read(self, fields: set[str], queries: list[Query], on_start: Callable[[], object] | None = None) -> Table:
        """The pass `load` needs (if any) with the current options, and tshark's own frame sets;
        `on_start` is called once that pass's tshark runs."""
        filters = {q.filter for q in queries if q.filter and q.filter not in self._valid_filters}
        missing = self._missing(fields)
        if missing:
            if "frame.number" not in missing:
                missing.insert(0, "frame.number")
            flt = ("frame or " + " or ".join(f"({f})" for f in sorted(filters))) if filters else None
            try:  # rows stream from tshark: its errors surface while the table is being built
                table = Table.from_rows(missing, ts.fields_pass(self.path, missing, self.options,
                                                                display_filter=flt, timeout=self.timeout,
                                                                on_start=on_start))
            except ts.TsharkFailed:
                self._diagnose_filters(filters)
                raise
            self.passes += 1
            if self._table is None:
                self._table = table
            else:
                self._table.merge(table)
            self._valid_filters |= filters
        elif filters:
            self._diagnose_filters(filters)
            self._valid_filters |= filters
        for q in queries:
            if q.needs_tshark and q.filter not in self._tshark_frames:
                assert q.filter is not None  # only a query with a filter needs tshark
                rows = ts.fields_pass(self.path, ["frame.number"], self.options, display_filter=q.filter,
                                      timeout=self.timeout)
                self._tshark_frames[q.filter] = {int(r[0]) for r in rows}
        assert self._table is not None
        return self._table

    def _wants_smb_search(self, fields: Iterable[str], queries: Iterable[Query]) -> bool:
        """Before the first question about SMB: look for SMB on TCP ports other than 139/445."""
        if not self.detect_smb or self.detected_smb_ports is not None:
            return False
        texts = [*fields, *(q.filter or "" for q in queries)]
        return any("smb" in t or "nbss" in t for t in texts)

    def _read_while_searching(self, fields: set[str], queries: list[Query]) -> Table | None:
        """Search for SMB ports (tshark.smb_tcp_ports) and decode SMB on what it finds, as before the
        first SMB question; meanwhile read the pass this load needs with the current options.

        Why at the same time: the search is a tshark run of its own (~0.7 s on 20,000 frames, as
        long as the pass), and on most captures it finds nothing (SMB on 445), in which case the
        pass read meanwhile is exactly the one that would have been read after it. When it does
        find ports, that pass was dissected without them: it is dropped (not counted in `passes`,
        counted in `discarded_passes`) and None returned, for `load` to read again. When a glance at
        the file says SMB runs on another port (tshark.smb_elsewhere_likely), the pass waits instead.
        Errors keep their order: the search's own failure first, then the pass's (which a found port
        makes moot, as it would have been read with other options).

        The search runs only when the file's own bytes do not prove that it finds nothing
        (rawscan.no_smb_elsewhere, ~2 us a frame, read once tshark runs the pass: tshark takes
        longer to start than that takes on 20,000 frames): on a proven file it would only have cost
        as much CPU as the pass, for the same answer."""
        want_pass = bool(self._missing(fields)) and not ts.smb_elsewhere_likely(self.path)
        search = SearchUnlessProven(self.path, timeout=self.timeout, beside=want_pass)
        table: Table | None = None
        failure: Exception | None = None
        before = (set(self._valid_filters), self.passes)
        try:
            if want_pass:
                try:
                    table = self._read(fields, queries, on_start=search.start)
                except Exception as e:  # surfaced after the search's outcome, as if read after it
                    failure = e
            found = [p for p in search.result() if p not in self.smb_ports]
        finally:
            search.close()
        self.detected_smb_ports = found
        if found:
            self.options.decode_as = [*self.options.decode_as, *(f"tcp.port=={p},nbss" for p in found)]
            self.smb_ports += found
            self._diag = DIAG_FIELDS + ("nbss.continuation_data", "nbss.type", "tcp.srcport", "tcp.dstport")
            self._table = None  # anything read before was dissected without those ports
            self._tshark_frames = {}
            if self.passes != before[1]:
                self.discarded_passes += self.passes - before[1]
                self._valid_filters, self.passes = before
            return None
        if failure is not None:
            raise failure
        return table

    def protocols_seen(self) -> set[str]:
        """Which of smb2 / quic / smb_direct at least one frame was dissected as."""
        t = self.load()
        if self._seen is not None and self._seen[0] is t:
            return set(self._seen[1])
        seen: set[str] = set()
        col = t.columns["frame.protocols"] if len(t) else ()
        for cell in set(col) if isinstance(col, list) else (col[r] for r in range(len(t))):
            for stack in cell:  # each distinct cell once: frames share their protocol chain
                seen |= set(str(stack).split(":")) & set(ts.CHECKED_PROTOCOLS)
        self._seen = (t, frozenset(seen))
        return seen

    def _vacuous(self, a: Assertion, result: Result) -> Result:
        """A failed Result when `a` is about a protocol no frame of the capture shows."""
        if getattr(a, "absent_protocol_ok", False) or a.name in GENERIC_CHECKS:
            return result
        filters = [q.filter or "" for q in a.queries()]
        about = ts.protocols_mentioned(*a.fields(), *filters)
        if not about or ts.protocols_named(*filters):
            return result  # about no protocol's fields, or about a protocol's presence itself
        if about & self.protocols_seen():
            return result  # about one of them at least (a check over "SMB2 over TCP or QUIC")
        absent = sorted(about)
        return Result(a, False, expected=f"a capture in which tshark dissects {' or '.join(absent)}",
                      actual=f"no frame was dissected as {' or '.join(absent)} at all, so this check cannot "
                             f"tell anything (was: {'passed' if result.ok else 'failed'}: {result.actual})")

    def _diagnose_filters(self, filters: Iterable[str]) -> None:
        filters = sorted(filters)
        if not filters:
            return
        if len(filters) > 1 and ts.filter_error(" or ".join(f"({f})" for f in filters)) is None:
            return
        for f in filters:
            err = ts.filter_error(f)
            if err:
                raise ts.BadFilter(f, err)

    @property
    def table(self) -> Table:
        return self.load()

    def _ctx(self) -> Context:
        return Context(self.table, self._tshark_frames)

    # ------------------------------------------------------------------ immediate questions

    def frames(self, q: Any = None, fields: Iterable[str] = ()) -> list[Frame]:
        """Frames matching a display filter string, a {field: spec} dict, or a Query."""
        q = as_query(q)
        t = self.load(fields, [q])
        return [t.frame(r) for r in q.rows(t, self._tshark_frames)]

    def count(self, q: Any = None) -> int:
        return len(self.frames(q))

    def first(self, q: Any = None, fields: Iterable[str] = ()) -> Frame | None:
        f = self.frames(q, fields)
        return f[0] if f else None

    def last(self, q: Any = None, fields: Iterable[str] = ()) -> Frame | None:
        f = self.frames(q, fields)
        return f[-1] if f else None

    def values(self, field: str, q: Any = None) -> list:
        """All occurrences of `field` in the frames matching `q`, in frame order."""
        return [v for fr in self.frames(q, [field]) for v in fr.all(field)]

    def groups(self, key: str, q: Any = None) -> dict[Any, list[Frame]]:
        """Frames matching `q` per TCP stream / QUIC connection / SMB session / tree (or any field)."""
        q = as_query(q)
        t = self.load([group_field(key)], [q])
        return {k: [t.frame(r) for r in rows]
                for k, rows in groups(t, key, q.rows(t, self._tshark_frames)).items()}

    def check(self, *assertions: Assertion) -> None:
        """Evaluate now and raise AssertionError on failure (pytest style)."""
        for a in assertions:
            self.expect(a)
        self.verify()

    def assert_count(self, q: Any, eq: int | None = None, min: int | None = None, max: int | None = None) -> None:
        self.check(Count(q, eq=eq, min=min, max=max))

    # ------------------------------------------------------------------ batch

    def expect(self, *assertions: Assertion) -> Capture:
        """Collect assertions for `verify()` (chainable)."""
        for a in assertions:
            if not isinstance(a, Assertion):
                raise TypeError(f"expect() takes assertion objects, got {a!r}")
            self._pending.append(a)
        if self._pending:
            _UNVERIFIED[self._token] = f"{self.path} ({len(self._pending)} assertion(s) never verified)"
        return self

    def results(self, assertions: Sequence[Assertion] | None = None) -> list[Result]:
        """Evaluate (pending or given) assertions after one pass; no raising on failure."""
        todo = list(self._pending if assertions is None else assertions)
        if assertions is None:
            self._pending = []
            _UNVERIFIED.pop(self._token, None)
        fields: set[str] = set()
        queries: list[Query] = []
        for a in todo:
            fields |= a.fields()
            queries += a.queries()
        self.load(fields, queries)
        ctx = self._ctx()
        return [self._vacuous(a, a.evaluate(ctx)) for a in todo]

    def verify(self) -> None:
        """Run every collected assertion in one pass; raise one AssertionError listing all failures."""
        results = self.results()
        failed = [r for r in results if not r.ok]
        if failed:
            raise AssertionError(self.report(failed, total=len(results)))

    def report(self, failed: Sequence[Result], total: int | None = None) -> str:
        """Failure text: each failure with expected/actual, frames and a decoded excerpt, then notices."""
        t = self.table
        want: set[int] = set()
        for r in failed:
            want |= set(excerpt_frames(r, t))
        try:
            summaries = ts.summary_lines(self.path, want, self.options, timeout=self.timeout)
        except ts.PcapError:
            summaries = {}
        head = f"{len(failed)} of {total if total is not None else len(failed)} pcap assertion(s) failed on {self.path}"
        blocks = [f"{i}) " + format_failure(r, summaries, t) for i, r in enumerate(failed, 1)]
        notes = self.notices()
        tail = ["notice: " + n for n in notes]
        return "\n\n".join([head, *blocks, *tail])

    # ------------------------------------------------------------------ encryption notices

    def notices(self) -> list[str]:
        """What stayed encrypted and which keys would decrypt it (empty when everything decrypted)."""
        t = self.load()
        out = []
        enc_quic = [r for r in range(len(t)) if t.values("quic.remaining_payload", r)]
        if enc_quic:
            conns = sorted({c for r in enc_quic for c in t.values("quic.connection.number", r)})
            hello = [r for r in range(len(t)) if 1 in t.values("tls.handshake.type", r)]
            randoms = []
            for r in hello:
                types, rnds = t.values("tls.handshake.type", r), t.values("tls.handshake.random", r)
                randoms += [str(x).lower() for ty, x in zip(types, rnds, strict=False) if ty == 1]
            missing = [x for x in dict.fromkeys(randoms) if x not in self._keylog_randoms]
            source = (f"the key log {self.keylog} has no secrets for them" if self.keylog
                      else "no key log was given" + ("" if not embedded_secrets(self.path)
                                                     else " (the secrets embedded in the file do not match)"))
            need = ("needed: an NSS key log (keylog= / --keylog, or a pcapng from `editcap --inject-secrets "
                    "tls,KEYLOG`) with CLIENT_HANDSHAKE_TRAFFIC_SECRET, SERVER_HANDSHAKE_TRAFFIC_SECRET, "
                    "CLIENT_TRAFFIC_SECRET_0 and SERVER_TRAFFIC_SECRET_0")
            if any(1 in t.values("quic.long.packet_type", r) for r in enc_quic):
                need += " (and CLIENT_EARLY_TRAFFIC_SECRET for the 0-RTT packets)"
            if missing:
                need += " for client random " + ", ".join(missing)
            out.append(f"QUIC traffic stayed encrypted: {len(enc_quic)} packet(s) in connection(s) "
                       f"{', '.join(map(str, conns)) or '?'} could not be decrypted ({frame_span(t, enc_quic)}); "
                       f"{source}; {need}")
        enc_smb = [r for r in range(len(t))
                   if t.values("smb2.header.transform.msg_size", r) and not t.values("smb2.cmd", r)]
        if enc_smb:
            sids = sorted({s for r in enc_smb for s in t.values("smb2.sesid", r)})
            have = {k.session_id for k in self.smb_keys}
            lacking = [s for s in sids if s not in have]
            why = ("no SMB keys were given" if not self.smb_keys else
                   "keys were given for " + ", ".join(f"0x{s:016x}" for s in sorted(have))
                   + ("" if lacking else " but they do not decrypt it (wrong keys, or NEGOTIATE missing with CCM)"))
            out.append(f"SMB3 traffic stayed encrypted: {len(enc_smb)} message(s) ({frame_span(t, enc_smb)}) of "
                       f"session(s) {', '.join(f'0x{s:016x}' for s in sids)}; {why}; needed: the S2C and C2S keys "
                       f"of session(s) {', '.join(f'0x{s:016x}' for s in (lacking or sids))} "
                       "(smb_keys= / --smb-keys, lines `SESID S2C C2S`)")
        if self.smb_ports:
            ports = set(self.smb_ports)
            lost = [r for r in range(len(t))
                    if (t.values("nbss.continuation_data", r) or set(t.values("nbss.type", r)) - NBSS_TYPES)
                    and ports & {*t.values("tcp.srcport", r), *t.values("tcp.dstport", r)}]
            if lost:
                out.append(f"SMB2 on TCP port(s) {', '.join(map(str, sorted(ports)))} was mis-framed: {len(lost)} "
                           f"frame(s) show NBSS continuation data or bogus NBSS types ({frame_span(t, lost)}). Off port 445, tshark 4.0 "
                           "reads 17-bit NBSS lengths, so an SMB2 message of 128 KiB or more breaks the framing and "
                           "the PDUs after it are lost; capture SMB on port 445 for big messages")
        return out

    # ------------------------------------------------------------------ deep access

    def pyshark(self, display_filter: str | None = None, **kwargs):
        """A pyshark FileCapture over the same file with the same decryption and decode-as options."""
        import pyshark

        prefs = dict(self.options.prefs)
        if self.options.keylog:
            prefs["tls.keylog_file"] = self.options.keylog
        if self.options.smb_keys:
            prefs["uat:smb2_seskey_list"] = self.options.smb_keys[0]
            if len(self.options.smb_keys) > 1:
                extra = [x for row in self.options.smb_keys[1:] for x in ("-o", f"uat:smb2_seskey_list:{row}")]
                kwargs["custom_parameters"] = [*kwargs.get("custom_parameters", []), *extra]
        decode = {}
        for d in self.options.decode_as:
            k, _, v = d.rpartition(",")
            decode[k] = v
        pyshark_event_loop()
        cap = pyshark.FileCapture(str(self.path), display_filter=display_filter, override_prefs=prefs or None,
                                  decode_as=decode or None, **kwargs)
        quiet_child_signals()
        return cap


class SearchUnlessProven:
    """The SMB port search (tshark.SmbPortSearch), started only when the capture's bytes do not prove
    that it finds no port (rawscan.no_smb_elsewhere); `result()` and `close()` as SmbPortSearch's.

    `start()` begins: with `beside`, the proof is read in a thread of its own, for the caller to read
    a pass meanwhile (a search the proof cannot spare then starts as soon as that is known). The
    caller starts it once that pass's tshark runs, so that the thread does not hold the
    interpreter while the pass is being started; `result()` starts it if nobody did."""

    def __init__(self, path: str | os.PathLike, *, timeout: float, beside: bool = False):
        self.path, self.timeout, self.beside = path, timeout, beside
        self._search: ts.SmbPortSearch | None = None
        self._error: BaseException | None = None
        self._started = self._closed = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._started or self._closed:
                return
            if self.beside:
                thread = threading.Thread(target=self._decide, name="smb-port-proof", daemon=True)
                thread.start()  # if it cannot start, result() tries again (and raises), never skips
                self._thread, self._started = thread, True
                return
            self._started = True
        self._decide()

    def _decide(self) -> None:
        try:
            if rawscan.no_smb_elsewhere(self.path):
                return
            with self._lock:
                if not self._closed:
                    self._search = ts.SmbPortSearch(self.path, timeout=self.timeout)
        except BaseException as e:  # raised by result(), in the caller's thread
            self._error = e

    def _wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def result(self) -> list[int]:
        self.start()
        self._wait()
        if self._error is not None:
            raise self._error
        return [] if self._search is None else self._search.result()

    def close(self) -> None:
        with self._lock:
            self._closed = True  # no search starts after this
        self._wait()
        if self._search is not None:
            self._search.close()


def pyshark_event_loop() -> asyncio.AbstractEventLoop:
    """Make sure the thread has a usable current event loop before pyshark looks for one (and return it).

    pyshark asks asyncio for the current loop, and in the main thread that raises "There is no current
    event loop" once anything in the process has run asyncio.run() (which leaves no loop set), or gives
    a closed loop if someone closed it: whether pyshark worked then depended on what ran before it.
    The loop is not handed to pyshark (``eventloop=``): pyshark installs its SafeChildWatcher on the
    loop only when it picks the loop itself, and with asyncio's default ThreadedChildWatcher a tshark
    that exits can be reported as "crashed (retcode: 255)"."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop


def quiet_child_signals() -> None:
    """Call after making a pyshark capture: keep the process's other children from flooding stderr.

    In the main thread pyshark attaches a SafeChildWatcher to the current loop, which leaves a SIGCHLD
    handler there, and asyncio's handler writes one byte to the loop's wakeup socket per signal. While
    the loop is not running nobody reads it: after about 280 child exits (the socket's buffer) every
    further exit of any child of the process printed "Exception ignored when trying to write to the
    signal wakeup fd: BlockingIOError" (130 such warnings in one CI run of the test suite). Nothing is
    lost by not warning: the bytes already queued wake the watcher when the loop next runs, and it then
    checks all of its children."""
    if threading.current_thread() is not threading.main_thread():
        return
    fd = signal.set_wakeup_fd(-1)
    if fd != -1:
        signal.set_wakeup_fd(fd, warn_on_full_buffer=False)


def frame_span(t: Table, rows: Sequence[int]) -> str:
    nums = [t.numbers[r] for r in rows]
    if len(nums) <= 6:
        return "frames " + ", ".join(map(str, nums))
    return f"frames {nums[0]}–{nums[-1]}"
