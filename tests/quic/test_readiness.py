"""Readiness: select/selectors/poll and asyncio see real readiness on QUIC sockets."""

from __future__ import annotations

import asyncio
import errno
import select
import selectors
import threading

import pytest
from threadutil import joined

from wrappers.quic import MSG_STREAM_FIN, MSG_STREAM_NEW, quic_recvmsg, quic_sendmsg

from .conftest import close_all, open_pair, quic_socket


def test_selectors_data_and_partial_reads(net, pki):
    c, s, ls = open_pair("psk", pki)
    sel = selectors.DefaultSelector()
    try:
        sel.register(c, selectors.EVENT_READ)
        assert sel.select(0.1) == []
        quic_sendmsg(c, b"ping", -1, MSG_STREAM_NEW)
        assert quic_recvmsg(s, 100)[0] == b"ping"
        quic_sendmsg(s, b"0123456789", 0, 0)
        assert sel.select(2), "data queued but the fd is not readable"
        assert c.recv(4) == b"0123"
        # the rest is kept at the head of the queue: the fd must stay readable
        assert sel.select(2), "partial read left data but the fd is not readable"
        assert c.recv(100) == b"456789"
        assert sel.select(0.1) == []
    finally:
        sel.close()
        close_all(c, s, ls)


def test_poll_listener_readable_on_new_connection(net, pki):
    ls = quic_socket()
    ls.bind(("127.0.0.11", 0))
    ls.listen(4)
    p = select.poll()
    p.register(ls, select.POLLIN)
    assert p.poll(100) == []
    c = quic_socket()
    c.connect(ls.getsockname())
    box = {}
    from wrappers.quic import client_handshake

    t = threading.Thread(target=lambda: box.setdefault("e", _try(lambda: client_handshake(c, pki["psk"], timeout=3))))
    t.start()
    try:
        assert p.poll(3000), "listener not readable after the first Initial"
        s, _ = ls.accept()  # accept() returns on the first Initial, before the handshake
        from wrappers.quic import server_handshake

        server_handshake(s, pki["psk"], None, timeout=3)
        joined(t, 5)
        assert box["e"] is None
        close_all(s)
    finally:
        close_all(c, ls)


def _try(fn):
    try:
        fn()
    except Exception as e:  # reported by the caller
        return e
    return None


def test_closed_socket_is_readable_and_enotconn(net, pki):
    c, s, ls = open_pair("psk", pki)
    try:
        s.shutdown(2)
        r, _, _ = select.select([c], [], [], 3)
        assert r == [c]
        with pytest.raises(OSError) as e:
            c.recv(10)
        assert e.value.errno == errno.ENOTCONN
    finally:
        close_all(c, s, ls)


def test_asyncio_accept_recv_send(net, pki):
    async def main():
        loop = asyncio.get_running_loop()
        ls = quic_socket()
        ls.bind(("127.0.0.11", 0))
        ls.listen(4)
        ls.setblocking(False)
        c = quic_socket()
        c.connect(ls.getsockname())
        from wrappers.quic import client_handshake, server_handshake

        hs = loop.run_in_executor(None, lambda: client_handshake(c, pki["psk"], timeout=3))
        s, _ = await asyncio.wait_for(loop.sock_accept(ls), 3)
        await loop.run_in_executor(None, lambda: server_handshake(s, pki["psk"], None, timeout=3))
        await hs
        s.setblocking(False)
        c.setblocking(False)
        c.send(b"hello asyncio", MSG_STREAM_NEW | MSG_STREAM_FIN)
        data = await asyncio.wait_for(loop.sock_recv(s, 100), 3)
        assert data == b"hello asyncio"
        s.send(b"reply", MSG_STREAM_FIN)
        assert await asyncio.wait_for(loop.sock_recv(c, 100), 3) == b"reply"
        close_all(c, s, ls)

    asyncio.run(main())
