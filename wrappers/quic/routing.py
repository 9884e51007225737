"""ALPN routing of incoming connections, as quic.ko does it since its 2026-01 design (a static key
that is on while any listener has QUIC_SOCKOPT_ALPN set).

Several listeners may share one address and port when their ALPN lists (set with QUIC_SOCKOPT_ALPN
before listen()) do not overlap: identical lists (both empty included) or lists sharing one ALPN give
EADDRINUSE at listen(). The listeners of one address:port form a :class:`Router`, which owns the
carrier (the SEQPACKET listening socket or the shared datagram endpoint); the first listener creates
it, the last one to stop listening closes it.

When an Initial arrives that belongs to no connection, ``Router.pick`` chooses the listener:

* quic.ko's demux key is on while any listener of the engine (this process) has ALPN set. When it is
  off, routing is by address only (the first listener).
* With the key on, the Initial is decrypted with the keys derived from its DCID (v1 or v2 salts),
  the CRYPTO data at offset 0 is read and the ClientHello's ALPN extension (16) parsed:
  - the client offered ALPNs: tried in the *client's* order; the first listener whose list contains
    one wins;
  - a ClientHello without an ALPN extension: only a listener with no ALPN qualifies;
  - nothing parseable (not an Initial we can decrypt, ClientHello longer than the first packet):
    any listener qualifies;
  - no listener qualifies: the datagram is dropped silently (no Version Negotiation, no close), and
    the client retransmits until it gives up, as with quic.ko.

Across processes (SEQPACKET carrier only): see "across processes" below; the first process to listen
owns the port and hands connections for other processes' listeners over by SCM_RIGHTS.
"""

from __future__ import annotations

import errno
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicProtocolVersion, pull_quic_header

from .core import err

_routers: dict[tuple, Router] = {}
_alpn_listeners = 0  # listeners with ALPN set in this process: quic.ko's static key


class Router:
    """The listeners sharing one address:port, and the carrier they share."""

    def __init__(self, key: tuple, cfg: Any):
        self.key = key
        self.cfg = cfg
        self.listeners: list[Any] = []
        self.carrier: Any = None
        self.local: Any = None  # the emulated address the carrier is bound to
        self.dropped = 0  # Initials no listener matched
        self.base: str | None = None  # SEQPACKET owner: the carrier's name (see publish)

    def check(self, alpn: list[str], reuseport: bool = False) -> None:
        """listen()'s conflict check against the listeners already here: identical ALPN lists (both empty
        included) or lists sharing an ALPN are EADDRINUSE, as at quic.ko's listen() (its SO_REUSEPORT groups
        are not emulated here)."""
        mine = set(alpn)
        for other in self.listeners:
            theirs = set(other.opts.alpn)
            if mine == theirs or mine & theirs:
                raise err(errno.EADDRINUSE, "a listener with an overlapping ALPN list uses this address")

    def add(self, lst: Any) -> None:
        global _alpn_listeners
        self.listeners.append(lst)
        lst.router = self
        if lst.opts.alpn:
            _alpn_listeners += 1

    def remove(self, lst: Any) -> bool:
        """Forget ``lst``; True when it was the last listener (the carrier is to be closed)."""
        global _alpn_listeners
        if lst in self.listeners:
            self.listeners.remove(lst)
            if lst.opts.alpn:
                _alpn_listeners -= 1
        if not self.listeners:
            if _routers.get(self.key) is self:
                del _routers[self.key]
            return True
        return False

    def pick(self, initial: bytes) -> Any:
        if not self.listeners:
            return None
        if _alpn_listeners <= 0:
            return self.listeners[0]
        offered = client_alpns(initial)
        if offered is None:  # nothing parsed: by address only
            return self.listeners[0]
        if not offered:
            choice = next((lst for lst in self.listeners if not lst.opts.alpn), None)
        else:
            choice = None
            for a in offered:
                choice = next((lst for lst in self.listeners if a in lst.opts.alpn), None)
                if choice is not None:
                    break
        if choice is None:
            self.dropped += 1
        return choice


def router_for(key: tuple) -> Router | None:
    return _routers.get(key)


def new_router(key: tuple, cfg: Any) -> Router:
    r = Router(key, cfg)
    if key[-2]:  # a fixed port: later listeners on it join this router
        _routers[key] = r
    return r


def reset() -> None:
    """A forked child starts with no listeners (its engine is new)."""
    global _alpn_listeners
    _routers.clear()
    _alpn_listeners = 0


# -- reading the client's ALPN list from its first Initial -------------------------------------------------
def client_alpns(datagram: bytes) -> list[str] | None:
    """The ALPNs of the ClientHello in ``datagram``'s first Initial, in the client's order: [] for a
    ClientHello without the ALPN extension, None when nothing could be parsed."""
    try:
        hello = _first_crypto(datagram)
        return None if hello is None else _alpn_of_client_hello(hello)
    except Exception:
        return None


def _first_crypto(datagram: bytes) -> bytes | None:
    buf = Buffer(data=datagram)
    header = pull_quic_header(buf, host_cid_length=8)
    if header.version not in (QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2):
        return None
    if header.packet_type is None or header.packet_type.name != "INITIAL":
        return None
    end = header.packet_length
    pair = CryptoPair()
    pair.setup_initial(cid=header.destination_cid, is_client=False, version=header.version)
    _, payload, _ = pair.decrypt_packet(datagram[: end], buf.tell(), 0)
    pieces: dict[int, bytes] = {}
    p = Buffer(data=payload)
    while not p.eof():
        ftype = p.pull_uint_var()
        if ftype in (0x00, 0x01):  # PADDING, PING
            continue
        if ftype in (0x02, 0x03):  # ACK
            p.pull_uint_var()
            p.pull_uint_var()
            ranges = p.pull_uint_var()
            p.pull_uint_var()
            for _ in range(ranges):
                p.pull_uint_var()
                p.pull_uint_var()
            if ftype == 0x03:
                for _ in range(3):
                    p.pull_uint_var()
            continue
        if ftype == 0x06:  # CRYPTO
            off = p.pull_uint_var()
            n = p.pull_uint_var()
            pieces[off] = p.pull_bytes(n)
            continue
        if ftype == 0x1C:  # CONNECTION_CLOSE
            break
        return None
    data = b""
    while len(data) in pieces:
        data += pieces[len(data)]
    if len(data) < 4 or data[0] != 1:
        return None
    length = int.from_bytes(data[1:4], "big")
    if len(data) < 4 + length:
        return None  # the ClientHello does not fit in the first packet
    return data[4:4 + length]


def _alpn_of_client_hello(body: bytes) -> list[str]:
    b = Buffer(data=body)
    b.pull_uint16()  # legacy_version
    b.pull_bytes(32)  # random
    b.pull_bytes(b.pull_uint8())  # legacy_session_id
    b.pull_bytes(b.pull_uint16())  # cipher_suites
    b.pull_bytes(b.pull_uint8())  # compression methods
    if b.eof():
        return []
    ext_end = b.pull_uint16() + b.tell()
    while b.tell() < ext_end:
        etype = b.pull_uint16()
        elen = b.pull_uint16()
        edata = b.pull_bytes(elen)
        if etype == 16:
            e = Buffer(data=edata)
            n = e.pull_uint16()
            out = []
            stop = e.tell() + n
            while e.tell() < stop:
                out.append(e.pull_bytes(e.pull_uint8()).decode(errors="replace"))
            return out
    return []


# -- across processes (SEQPACKET carrier): the port owner hands connections to listener files -----------
#
# The first process to listen on an address:port owns the carrier name (cwrap's "U<iface><port>") and
# publishes its listeners' ALPN lists in "<name>.alpn". A listener in another process whose list does
# not overlap any published list binds a *listener file* "<name>~<hash>" (a SEQPACKET listening socket)
# next to it, with its list in "<name>~<hash>.alpn". The owner's router reads those lists when an
# Initial arrives, chooses in the client's ALPN order among its own and the foreign listeners, and for
# a foreign one passes the client's path (the accepted SEQPACKET connection) with SCM_RIGHTS, together
# with the Initial and the client's address; from then on the datagrams go straight between the client
# and that process. New connections need the owner process alive (it owns the name).


def _lists_in(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8") as f:
            return [[a for a in line.strip().split(",") if a] for line in f if line.strip()]
    except OSError:
        return []


def publish(router: Router, base: str) -> None:
    """The owner's listeners' ALPN lists, for other processes' listen() conflict checks."""
    router.base = base
    tmp = base + ".alpn.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for lst in router.listeners:
            f.write(",".join(lst.opts.alpn) + "\n")
    import os

    os.replace(tmp, base + ".alpn")


def unpublish(base: str) -> None:
    import os

    for p in (base + ".alpn",):
        try:
            os.unlink(p)
        except OSError:
            pass


def foreign_listeners(base: str) -> list[tuple[list[str], str]]:
    """(ALPN list, listener-file path) of the live listeners other processes put next to ``base``."""
    import glob
    import os

    from .carriers import seqpacket_listening

    out = []
    for meta in sorted(glob.glob(glob.escape(base) + "~*.alpn")):
        sock = meta[: -len(".alpn")]
        if os.path.lexists(sock) and seqpacket_listening(sock):
            for lst in _lists_in(meta):
                out.append((lst, sock))
    return out


def check_foreign(base: str, alpn: list[str]) -> None:
    """listen() in a process that does not own ``base``: EADDRINUSE unless ``alpn`` is set and overlaps no
    list published by the owner or by another process's listener file."""
    if not alpn:
        raise err(errno.EADDRINUSE, "address in use (a second process needs an ALPN list to share it)")
    mine = set(alpn)
    lists = _lists_in(base + ".alpn") + [lst for lst, _ in foreign_listeners(base)]
    for theirs in lists:
        if mine == set(theirs) or mine & set(theirs):
            raise err(errno.EADDRINUSE, "a listener with an overlapping ALPN list uses this address")


def listener_file(base: str, alpn: list[str]) -> str:
    import hashlib

    return base + "~" + hashlib.sha1(",".join(alpn).encode()).hexdigest()[:10]


def pick_with_foreign(router: Router, initial: bytes) -> Any:
    """Like ``Router.pick``, with the listener files of other processes: a Listener, a listener-file
    path (str), or None (drop)."""
    base = getattr(router, "base", None)
    foreign = foreign_listeners(base) if base else []
    if not foreign:
        return router.pick(initial)
    offered = client_alpns(initial)
    if offered is None:
        return router.listeners[0] if router.listeners else foreign[0][1]
    if not offered:
        choice = next((lst for lst in router.listeners if not lst.opts.alpn), None)
        if choice is None:
            router.dropped += 1
        return choice
    for a in offered:
        local = next((lst for lst in router.listeners if a in lst.opts.alpn), None)
        if local is not None:
            return local
        far = next((path for alpns, path in foreign if a in alpns), None)
        if far is not None:
            return far
    router.dropped += 1
    return None
