"""tests/func_test.c CONNECTION TEST (27 cases), PSK and certificate, on the STREAM group's connection.

The peer (server) migration cases (17-19): the server moves to its port+1 after "client migration"
(on the SEQPACKET carrier it opens the new path to the client's rendezvous listener, carriers.py).
On the udp carrier a server's accepted path cannot move: the server's socket refuses with
EOPNOTSUPP (checked by the server, funcserver.py) and the client sees the peer where it was.
"""

from __future__ import annotations

import errno
import time

from wrappers.quic import (
    MSG_DATAGRAM,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_SOCKOPT_CONNECTION_ID,
    QUIC_SOCKOPT_CONNECTION_MIGRATION,
    QUIC_SOCKOPT_KEY_UPDATE,
    QUIC_SOCKOPT_TOKEN,
    SOL_QUIC,
    ConnectionIdInfo,
    sockaddr_in,
)

from ..funcserver import expect_errno


def cid_get(c, dest):
    return ConnectionIdInfo.unpack(c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_ID, ConnectionIdInfo(dest).pack()))


def cid_set(c, dest, prior_to=0, active=0):
    c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_ID, ConnectionIdInfo(dest, active, prior_to).pack())


def echo(c, msg):
    c.send(msg, MSG_STREAM_NEW | MSG_STREAM_FIN)
    assert c.recv(4096) == msg


def _retire_first(c, dest):
    cid_set(c, dest, prior_to=2)
    assert cid_get(c, dest).active == 2


def _retire_second(c, dest):
    cid_set(c, dest, prior_to=3)
    got = cid_get(c, dest)
    assert (got.active, got.prior_to) == (3, 3)


def _retire_retired(c, dest):
    expect_errno(lambda: cid_set(c, dest, prior_to=3, active=5), errno.EINVAL)
    expect_errno(lambda: cid_set(c, dest, prior_to=5, active=2), errno.EINVAL)
    got = cid_get(c, dest)
    assert (got.active, got.prior_to) == (3, 3)


def _retire_all(c, dest):
    expect_errno(lambda: cid_set(c, dest, prior_to=10), errno.EINVAL)
    expect_errno(lambda: cid_set(c, dest, prior_to=5, active=10), errno.EINVAL)


def _retire_multiple(c, dest):
    cid_set(c, dest, prior_to=5, active=8)
    got = cid_get(c, dest)
    assert (got.active, got.prior_to) == (8, 5)


def _retire_max(c, dest):
    cid_set(c, dest, prior_to=11)
    got = cid_get(c, dest)
    assert (got.active, got.prior_to) == (11, 11)


def test01(func):
    """retire source connection id 0"""
    _retire_first(func.c, 0)


def test02(func):
    """retire source connection id 1"""
    _retire_second(func.c, 0)


def test03(func):
    """not allow to retire a retired source connection id"""
    _retire_retired(func.c, 0)


def test04(func):
    """not allow to retire all source connection id"""
    _retire_all(func.c, 0)


def test05(func):
    """retire multiple source connection id"""
    _retire_multiple(func.c, 0)


def test06(func):
    """retire max_count - 1 source connection id"""
    _retire_max(func.c, 0)


def test07(func):
    """retire dest connection id 0"""
    _retire_first(func.c, 1)


def test08(func):
    """retire dest connection id 1"""
    _retire_second(func.c, 1)


def test09(func):
    """not allow to retire a retired dest connection id"""
    _retire_retired(func.c, 1)


def test10(func):
    """not allow to retire all dest connection id"""
    _retire_all(func.c, 1)


def test11(func):
    """retire multiple dest connection id"""
    _retire_multiple(func.c, 1)


def test12(func):
    """retire max_count - 1 dest connection id"""
    _retire_max(func.c, 1)


def test13(func):
    """connection migration is set"""
    c = func.c
    host, port = c.getsockname()[:2]
    func.memo["port"] = port
    c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in(host, port + 1))


def test14(func):
    """send message with new address"""
    echo(func.c, b"quic connection test14")


def test15(func):
    """connection migration is done"""
    assert func.c.getsockname()[1] == func.memo.get("port", -2) + 1


def test16(func):
    """retire source & dest connection id when doing migration"""
    assert cid_get(func.c, 1).active == 12


def test17(func):
    """peer connection migration is set"""
    func.memo["peer_port"] = func.c.getpeername()[1]
    echo(func.c, b"client migration")


def test18(func):
    """connection migration is done (udp carrier: the server's path cannot move, it stays)"""
    time.sleep(2)
    moved = 0 if func.memo["carrier"] == "udp" else 1
    assert func.c.getpeername()[1] == func.memo["peer_port"] + moved


def test19(func):
    """retire source & dest connection id when doing migration (udp carrier: no migration, no new one)"""
    assert cid_get(func.c, 1).active == (12 if func.memo["carrier"] == "udp" else 13)


def test20(func):
    """not allowed to do key update when last one is not yet done"""
    c = func.c
    c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_KEY_UPDATE, None, 0)
    expect_errno(lambda: c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_KEY_UPDATE, None, 0), errno.EINVAL)


def test21(func):
    """key update is done"""
    echo(func.c, b"quic connection test21")
    time.sleep(0.2)
    echo(func.c, b"quic connection test21")


def test22(func):
    """peer key update is done"""
    echo(func.c, b"client key_update")
    time.sleep(0.2)
    echo(func.c, b"quic connection test22")


def test23(func):
    """peer new_token is done"""
    echo(func.c, b"client new_token")


def test24(func):
    """get token from socket"""
    token = func.c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_TOKEN, 256)
    assert len(token) > 0


def test25(func):
    """not allowed to set token with an null value on client"""
    expect_errno(lambda: func.c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_TOKEN, None, 0), errno.EINVAL)


def test26(func):
    """send and recv datagram"""
    c = func.c
    # func_test.c's text: its server answers a datagram only when it reads "client datagram"
    c.sendmsg([b"client datagram"], [], MSG_DATAGRAM)
    data, _, flags, _ = c.recvmsg(4096)
    assert data == b"client datagram" and flags & MSG_DATAGRAM


def test27(func):
    """do not allow to send datagram bigger than max_datagram"""
    expect_errno(lambda: func.c.sendmsg([b"x" * 4097], [], MSG_DATAGRAM), errno.EMSGSIZE)
