"""Paths of a QuicSocket: connection migration, the server's preferred address, new paths.

Part of QuicSocket (sock.py), split off so that each file holds one concern: how a connected socket
moves to a new local address (setsockopt CONNECTION_MIGRATION), how a server offers and moves to its
preferred address, and how a client opens its path to a peer on each carrier.
"""

from __future__ import annotations

import _socket
import errno
import socket
from typing import Any

from .. import dualstack
from . import carriers as CR
from .arrivals import accept_moved_peer, accept_paths, endpoint_for
from .core import (
    err,
)
from .loop import Link
from .sockparts import QuicSocketParts

SOL_SOCKET = socket.SOL_SOCKET


class QuicPathsMixin(QuicSocketParts):
    """The path calls of QuicSocket; self is the socket."""

    def _watch_path(self, link: Link, path: Any, ep: Any) -> None:
        eng = self._engine
        if isinstance(path, CR.SeqpacketPath):
            reader = lambda: eng.path_readable(link, path)  # noqa: E731
            path.watch_fd = lambda fd: eng.watch(fd, reader)
            path.unwatch_fd = eng.unwatch
            eng.watch(path.fileno(), reader)
            if path.rendezvous is not None:
                eng.watch(path.rendezvous.fileno(), lambda: accept_moved_peer(eng, link, path))
        elif ep is not None:
            ep.links[path.peer] = link
            ep.paths[path.peer] = path

    def _migrate(self, new_local: tuple) -> None:
        """Client: bind a second path at ``new_local`` and move the connection onto it (the first
        packet back on it completes the migration: event, getsockname, old path closed)."""
        link, c = self._link, self._conn
        if link is None or c is None or self._peer is None:
            raise err(errno.EPIPE)
        if not self._is_client:
            self._migrate_server(link, c, new_local)
            return
        eng = self._engine
        with eng.lock:
            if c.migrating is not None:
                raise err(errno.EAGAIN, "a migration is in progress")
            path, local, ep = self._client_path(c.addr or self._peer, new_local)
            try:
                c.start_local_migration(local)
            except OSError:
                path.close()
                raise
            link.old_paths += [link.path, *link.paths.values()]  # everything goes on the new path now
            link.paths = {}
            link.path = path
            self._watch_path(link, path, ep)
            eng.flush(link)

    def _set_preferred(self, addr: tuple) -> None:
        """Server, before the handshake: quic.ko's preferred_address. The address is bound now (a
        listener for the client's new path, seqpacket carrier only) and announced in the transport
        parameters; aioquic's client validates it after the handshake and moves there."""
        if self._carrier != "seqpacket":
            raise err(errno.EOPNOTSUPP, f"a preferred address needs the seqpacket carrier, not {self._carrier}")
        link, c = self._link, self._conn
        from . import raw

        # raw mode: the engine may have started (the ClientHello arrived); the address goes into the
        # transport parameters the application's TLS fetches with TRANSPORT_PARAM_EXT later
        started = c is not None and c.quic is not None and not (raw.is_raw(self) and not c.handshake_done)
        if link is None or c is None or started:
            raise err(errno.EINVAL, "set the preferred address after accept() and before the handshake")
        if c.preferred_address is not None:
            raise err(errno.EAGAIN, "a preferred address is already set")
        import socket as so

        family = so.AF_INET6 if ":" in addr[0] else so.AF_INET
        addressing = CR.Addressing(self._cfg)
        lst = CR._unix(_socket.SOCK_SEQPACKET)
        try:
            port = CR.bind_unix(lst, addressing, family, addr[0], addr[1])
            lst.listen(8)
        except OSError:
            lst.close()
            raise
        local = addressing.addr_of(lst.getsockname()) or (addr[0], port)
        eng = self._engine
        with eng.lock:
            c.preferred_address = (local[0], local[1])
            if c.quic is not None:
                c.quic.preferred_address = c.preferred_address
            holder = CR.SeqpacketPath(lst, CR.Wire(self._cfg, local, c.addr, eng.schedule), addressing=addressing)
            holder.rendezvous = lst  # closed (and its name removed) with the connection
            link.old_paths.append(holder)
            eng.watch(lst.fileno(), lambda: accept_paths(eng, link, lst, addressing, local))

    def _open_path_to(self, link: Link, addr: tuple) -> Any:
        """Client, seqpacket carrier: a path from our current address to a new server address (its
        preferred address). Our UDP name is taken by the connected path, so the new socket is bound
        to ``name~p``, which the server reads back as our address (carriers.peer_name)."""
        cur = link.path
        if not isinstance(cur, CR.SeqpacketPath) or cur.addressing is None:
            return None
        eng = self._engine
        s = CR._unix(_socket.SOCK_SEQPACKET)
        try:
            name = cur.sock.getsockname() + CR.OUTBOUND
            CR._claim(name, _socket.SOCK_DGRAM)
            s.bind(name)
            import socket as so

            family = so.AF_INET6 if len(addr) == 4 or ":" in str(addr[0]) else so.AF_INET
            s.connect(cur.addressing.path(family, addr[0], addr[1], local=False))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            s.close()
            return None
        path = CR.SeqpacketPath(s, CR.Wire(self._cfg, cur.wire.local, tuple(addr), eng.schedule))
        eng.watch(path.fileno(), lambda: eng.path_readable(link, path))
        return path

    def _migrate_server(self, link: Link, c: Any, new_local: tuple) -> None:
        """A quic.ko server moves to ``new_local`` after the handshake: a new path from that name to
        the client's rendezvous listener (carriers.open_rendezvous), a fresh destination CID, and the
        old paths kept until the first packet arrives on the new one (those at the listener's
        address for good: a client that gives the new address up comes back there) (the client validates the new
        server address with PATH_CHALLENGE, aio/connection.py). Only the seqpacket carrier can open a path
        from the server's side; on the others this is EOPNOTSUPP."""
        if self._carrier != "seqpacket":
            raise err(errno.EOPNOTSUPP, f"server migration needs the seqpacket carrier, not {self._carrier}")
        eng = self._engine
        with eng.lock:
            if c.migrating is not None:
                raise err(errno.EAGAIN, "a migration is in progress")
            if c.closed or not c.handshake_done:
                raise err(errno.EPIPE)
            addressing = CR.Addressing(self._cfg)
            lst = CR._unix(_socket.SOCK_SEQPACKET)
            s = CR._unix(_socket.SOCK_SEQPACKET)
            try:
                port = CR.bind_unix(lst, addressing, self._qfamily, new_local[0], new_local[1])
                lst.listen(8)
                name = lst.getsockname()
                local = addressing.addr_of(name) or self._tuple(new_local[0], port)
                CR._claim(name + CR.OUTBOUND, _socket.SOCK_DGRAM)
                s.bind(name + CR.OUTBOUND)
                s.connect(addressing.path(self._qfamily, c.addr[0], c.addr[1], local=False) + CR.RENDEZVOUS)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                s.close()
                lst.close()
                raise err(e.errno or errno.EADDRNOTAVAIL, "cannot open a path from the new address to the peer") from e
            local = self._tuple(local[0], local[1])
            try:
                c.start_local_migration(local)
            except OSError:
                s.close()
                lst.close()
                raise
            path = CR.SeqpacketPath(s, CR.Wire(self._cfg, local, c.addr, eng.schedule), addressing=addressing)
            path.rendezvous = lst
            # the paths at the address the listener holds stay (Link.home_paths); those at an address
            # of an earlier move go when this one completes, as quic.ko releases that UDP socket
            home = link.home_paths[0].wire.local if link.home_paths else link.path.wire.local
            for p in (link.path, *link.paths.values()):
                (link.home_paths if p.wire.local == home else link.old_paths).append(p)
            link.paths = {}
            link.path = path
            self._watch_path(link, path, None)
            eng.flush(link)

    def _client_path(self, peer: tuple, local_addr: tuple | None = None) -> tuple[Any, tuple, Any]:
        eng = self._engine
        host = self._local[0] if self._local and not self._wildcard(self._local) else self._local_host()
        port = self._local[1] if self._local else 0
        if local_addr is not None:
            host, port = local_addr[0], local_addr[1]
        fam = self._qfamily
        if self._cfg is not None:
            # a v4-mapped peer: the path is IPv4, from this interface's IPv4 name (dualstack.py)
            try:
                fam, _ = dualstack.remote_plan(fam, peer[0], self._v6only,
                                               self._names(self._local[0])[2] if self._local else frozenset())
            except OSError as e:
                raise err(e.errno or errno.ENETUNREACH, e.strerror or "") from None
            if fam != self._qfamily:
                host = dualstack.v4_of_mapped(host) or self._cfg.network.my_address(fam)
        if self._carrier == "seqpacket":
            addressing = CR.Addressing(self._cfg, self._qfamily, frozenset({fam}))
            s = CR._unix(_socket.SOCK_SEQPACKET)
            try:
                port = CR.bind_unix(s, addressing, fam, host, port)
                local = addressing.addr_of(s.getsockname()) or self._tuple(host, port)
                remote_path = addressing.path(self._qfamily, peer[0], peer[1], local=False)
            except OSError:
                s.close()
                raise
            try:
                s.connect(remote_path)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass  # no listener: the handshake times out, as an unanswered Initial does
            wire = CR.Wire(self._cfg, local, peer, eng.schedule)
            path = CR.SeqpacketPath(s, wire, remote_path, addressing)
            path.rendezvous = CR.open_rendezvous(s.getsockname())
            return path, self._tuple(local[0], local[1]), None
        ep = endpoint_for(eng, self._carrier, fam, self._cfg, host, port, view=self._qfamily)
        ep.refs += 1
        wire = CR.Wire(self._cfg, ep.local, peer, eng.schedule)
        return CR.DatagramPath(ep, peer, wire), ep.local, ep
