"""Server side: how a new connection arrives at a listener, per carrier.

A listener answers by itself only to a client Initial (quic.ko's accept() returns on the first
Initial, before any TLS): anything else arriving on a new path (garbage, truncated or short-header
packets) is dropped and counted in the listener's ``dropped``, and the listener lives on. An Initial
creates the server-side ``Link`` (its core buffers the datagrams until server_handshake), queues it
on the listener and writes an ACCEPT item to the listener's app fd, which makes it readable.

A path whose first packet is not an Initial but carries a destination connection ID the engine
already issued is a new path of that connection (the client migrated), not a new connection: it is
attached to the connection and aioquic validates it. Which listener of an address:port gets a new
connection is ``routing.Router.pick``'s choice (ALPN routing); an Initial it matches to no listener is
dropped and the path stays unrouted (the client's retransmission is looked at again).
"""

from __future__ import annotations

import _socket
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic.packet import encode_quic_version_negotiation, pull_quic_header

from .. import dualstack
from . import carriers as CR
from . import routing
from .core import Connection
from .loop import Engine, Link, Listener, _endpoints, make_pair


def is_initial(data: bytes) -> tuple[bytes, bytes] | None:
    """(DCID, SCID) of a client Initial, None for anything else (garbage, short header, other types)."""
    if len(data) < 1200 or not data[0] & 0x80:
        return None
    try:
        h = pull_quic_header(Buffer(data=data), host_cid_length=8)
    except Exception:
        return None
    if h.packet_type is None or h.packet_type.name != "INITIAL":
        return None
    return h.destination_cid, h.source_cid


KNOWN_VERSIONS = (0x00000001, 0x6B3343CF)


def version_negotiation(data: bytes) -> bytes | None:
    """The listener's Version Negotiation packet for a client Initial of a version it does not know
    (quic.ko answers by itself, without a connection), None for anything else."""
    if len(data) < 1200 or not data[0] & 0x80 or len(data) < 7:
        return None
    version = int.from_bytes(data[1:5], "big")
    if version == 0 or version in KNOWN_VERSIONS:
        return None
    try:
        h = pull_quic_header(Buffer(data=data), host_cid_length=8)
    except Exception:
        return None
    return encode_quic_version_negotiation(source_cid=h.destination_cid, destination_cid=h.source_cid,
                                           supported_versions=list(KNOWN_VERSIONS))


def _new_server_link(eng: Engine, lst: Listener, path: Any, peer: tuple, first: bytes, cids: tuple[bytes, bytes]) -> Link:
    conn = Connection(False, lst.opts.copy())
    conn.addr = peer
    app, eng_end = make_pair()
    link = Link(conn, eng_end, path, peer)
    link.app_end = app
    link.odcid = cids[0]
    conn.receive(first, peer, time.monotonic())
    return link


def accept_seqpacket(eng: Engine, router: Any, addressing: CR.Addressing) -> None:
    while True:
        try:
            fd, addr = router.carrier._accept()
        except (BlockingIOError, OSError):
            return
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, fd)
        s.setblocking(False)
        CR.big_buffers(s)
        peer = addressing.addr_of(addr) if isinstance(addr, str) and addr else None
        if peer is None:
            peer = router.local
        wire = CR.Wire(router.cfg, router.local, peer, eng.schedule)
        path = CR.SeqpacketPath(s, wire)
        state: dict[str, Link] = {}

        def readable(path: CR.SeqpacketPath = path, peer: tuple = peer, state: dict[str, Link] = state) -> None:
            link = state.get("link")
            if link is not None:
                eng.path_readable(link, path)
                return
            for d in path.read():
                if not d:
                    eng.unwatch(path.fileno())
                    path.close()
                    return
                link = state.get("link")
                if link is not None:
                    eng.deliver(link, d, path)
                    continue
                vn = version_negotiation(d)
                if vn is not None:
                    path.send(vn, time.monotonic())
                    continue
                cids = is_initial(d)
                if cids is None:
                    link = _known_connection(eng, d)
                    if link is None:
                        router.dropped += 1
                        continue
                    # a new path of a connection we know: the client migrated
                    state["link"] = link
                    link.paths[peer] = path
                    eng.watch(path.fileno(), _reader(eng, link, path))
                    eng.deliver(link, d, path)
                    continue
                lst = routing.pick_with_foreign(router, d)
                if lst is None:  # no listener for the client's ALPNs: dropped silently
                    continue
                if isinstance(lst, str):  # another process's listener: hand the path over
                    eng.unwatch(path.fileno())
                    handoff(lst, path, peer, d)
                    path.close()
                    return
                link = _new_server_link(eng, lst, path, peer, d, cids)
                state["link"] = link
                eng.offer(lst, link)
                eng.watch(path.fileno(), _reader(eng, link, path))

        eng.watch(s.fileno(), readable)


def _reader(eng: Engine, link: Link, path: Any) -> Callable[[], None]:
    return lambda: eng.path_readable(link, path)


def dcid_of(data: bytes, cid_length: int = 8) -> bytes | None:
    """Destination connection ID of any QUIC packet (short headers carry our 8-byte CIDs)."""
    if not data:
        return None
    if not data[0] & 0x80:
        return bytes(data[1:1 + cid_length]) if len(data) > cid_length else None
    try:
        return bytes(pull_quic_header(Buffer(data=data), host_cid_length=cid_length).destination_cid)
    except Exception:
        return None


def _known_connection(eng: Engine, data: bytes) -> Link | None:
    dcid = dcid_of(data)
    return eng.find_by_cid(dcid) if dcid else None


def endpoint_for(eng: Engine, carrier: str, family: int, cfg: Any, host: str, port: int, *,
                 v6only: bool = True, view: int | None = None) -> CR.DatagramEndpoint:
    """The shared datagram endpoint for (family, host, port): emulated DGRAM or real UDP. Several QUIC
    sockets on one address and port share it, as quic.ko's sockets share one UDP tunnel socket.

    Emulated: an AF_INET6 endpoint on ``::`` without ``v6only`` is dual-stack (dualstack.py); ``view``
    is the family of the sockets using an IPv4 endpoint (AF_INET6 for a v4-mapped peer's client)."""
    key = (carrier, family, host, port, cfg.socket_dir if cfg else None, v6only, view)
    ep = _endpoints.get(key) if port else None
    if ep is not None:
        return ep
    if carrier == "udp":
        fam, name_host, reach = dualstack.bind_plan(cfg.network, family, host, v6only)
        addressing = CR.Addressing(cfg, view or family, reach)
        s = CR._unix(_socket.SOCK_DGRAM)
        try:
            port = CR.bind_unix(s, addressing, fam, name_host, port, twin=len(reach) == 2)
        except OSError:
            s.close()
            raise
        local = addressing.addr_of(s.getsockname()) or ((host, port) if family == socket.AF_INET else (host, port, 0, 0))
        ep = CR.DatagramEndpoint(s, local, addressing)
        if len(reach) == 2:
            ep.twin = dualstack.twin_name(s.getsockname())
    else:
        s = _socket.socket(family, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC, 0)
        s.setblocking(False)
        CR.big_buffers(s)
        s.bind((host, port) if family == socket.AF_INET else (host, port, 0, 0))
        local = s.getsockname()
        ep = CR.DatagramEndpoint(s, local, None)
    _endpoints[(carrier, family, host, local[1], cfg.socket_dir if cfg else None, v6only, view)] = ep
    reader = lambda: _endpoint_readable(eng, ep)  # noqa: E731
    ep.watch_fd = lambda fd: eng.watch(fd, reader)
    ep.unwatch_fd = eng.unwatch
    eng.watch(ep.fileno(), reader)
    return ep


def _endpoint_readable(eng: Engine, ep: Any) -> None:
    """Datagrams on a shared endpoint, by source address; each connection flushes once per batch."""
    now = time.monotonic()
    touched: dict[int, Link] = {}
    for d, src in ep.read():
        link = ep.links.get(src)
        if link is not None:
            eng.arrived(link, ep.paths.get(src) or link.path, d, now)
            touched[link.id] = link
            continue
        router = ep.listener
        vn = version_negotiation(d) if router is not None else None
        if vn is not None:
            CR.DatagramPath(ep, src, CR.Wire(router.cfg, ep.local, src, eng.schedule)).send(vn, now)
            continue
        cids = is_initial(d) if router is not None else None
        if router is not None and cids is None:
            known = _known_connection(eng, d)
            if known is not None:  # the client moved to a new address
                path = CR.DatagramPath(ep, src, CR.Wire(router.cfg, ep.local, src, eng.schedule))
                known.paths[src] = path
                ep.links[src] = known
                ep.paths[src] = path
                eng.arrived(known, path, d, now)
                touched[known.id] = known
                continue
        lst = router.pick(d) if router is not None and cids is not None else None
        if lst is None or router is None or cids is None:
            ep.dropped += 1
            continue
        wire = CR.Wire(router.cfg, ep.local, src, eng.schedule)
        path = CR.DatagramPath(ep, src, wire)
        link = _new_server_link(eng, lst, path, src, d, cids)
        link.endpoint = ep
        ep.refs += 1
        ep.links[src] = link
        ep.paths[src] = path
        eng.offer(lst, link)
    for link in touched.values():
        eng.flush(link, now)


def handoff(listener_file: str, path: CR.SeqpacketPath, peer: tuple, first: bytes) -> None:
    """Pass the client's path to another process's listener file: SCM_RIGHTS + (peer, Initial)."""
    import array
    import json

    h = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC, 0)
    try:
        h.settimeout(1.0)
        h.connect(listener_file)
        head = json.dumps(list(peer)).encode()
        h.sendmsg([len(head).to_bytes(2, "big") + head + first],
                  [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", [path.fileno()]))])
    except OSError:
        pass  # the listener went away: the client retransmits its Initial and times out
    finally:
        h.close()


def accept_handoff(eng: Engine, router: Any) -> None:
    """A listener file: the port owner passes a client's path with its first Initial."""
    import array
    import json

    while True:
        try:
            fd, _ = router.carrier._accept()
        except (BlockingIOError, OSError):
            return
        h = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, fd)
        try:
            h.settimeout(1.0)
            msg, anc, _, _ = h.recvmsg(65536, _socket.CMSG_SPACE(4))
        except OSError:
            h.close()
            continue
        h.close()
        fds = array.array("i")
        for level, ctype, data in anc:
            if level == _socket.SOL_SOCKET and ctype == _socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        if not fds or len(msg) < 2:
            continue
        n = int.from_bytes(msg[:2], "big")
        peer = tuple(json.loads(msg[2:2 + n]))
        first = msg[2 + n:]
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, fds[0])
        for extra in fds[1:]:
            os.close(extra)
        s.setblocking(False)
        cids = is_initial(first)
        lst = router.listeners[0] if router.listeners else None
        if cids is None or lst is None:
            s.close()
            continue
        path = CR.SeqpacketPath(s, CR.Wire(router.cfg, router.local, peer, eng.schedule))
        link = _new_server_link(eng, lst, path, peer, first, cids)
        eng.offer(lst, link)
        eng.watch(path.fileno(), _reader(eng, link, path))


def accept_moved_peer(eng: Engine, link: Link, home: CR.SeqpacketPath) -> None:
    if home.rendezvous is not None and home.addressing is not None:
        accept_paths(eng, link, home.rendezvous, home.addressing)


def accept_paths(eng: Engine, link: Link, r: Any, addressing: CR.Addressing, local: tuple | None = None) -> None:
    """Seqpacket carrier: the peer opened a new path to this connection's own listener ``r``: a
    migrated quic.ko server to the client's rendezvous (``name~m``), a client migrating again towards
    a server that moved (the server listens on its new name), or a client moving to the server's
    preferred address (``local``: that address). The path belongs to ``link``; aioquic decides
    whether the packets on it are ours and validates the path."""
    while True:
        try:
            fd, addr = r._accept()
        except (BlockingIOError, OSError):
            return
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, fd)
        s.setblocking(False)
        CR.big_buffers(s)
        peer = addressing.addr_of(CR.peer_name(addr)) if isinstance(addr, str) and addr else None
        if peer is None or link.gone or link.path is None:
            s.close()
            continue
        cur = link.path
        path = CR.SeqpacketPath(s, CR.Wire(cur.wire.cfg, local or cur.wire.local, peer, eng.schedule))
        path.switch_local = local  # a server's preferred address: getsockname() once packets come here
        old = link.paths.get(peer)
        if old is not None:
            link.old_paths.append(old)
        link.paths[peer] = path
        eng.watch(path.fileno(), _reader(eng, link, path))
