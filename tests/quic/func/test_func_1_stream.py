"""tests/func_test.c STREAM TEST (36 cases), run once with PSK and once with a certificate.

Ported from lxin/quic's tests/func_test.c (main at 03a9c7c, 98 cases): same descriptions (the test
docstrings), same stream IDs, errnos and values. The cases share one connection and run in order.
"""

from __future__ import annotations

import errno
import time

from wrappers.quic import (
    MSG_STREAM_DONTWAIT,
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    MSG_STREAM_UNI,
    QUIC_SOCKOPT_STREAM_OPEN,
    QUIC_SOCKOPT_STREAM_RESET,
    SOL_QUIC,
    ErrInfo,
    StreamInfo,
    quic_recvmsg,
    quic_sendmsg,
)

from ..funcserver import await_peer_stop_sending, expect_errno, send_then_reset

MSG_SYN, MSG_FIN = MSG_STREAM_NEW, MSG_STREAM_FIN


def stream_open(c, sid, flags=0):
    return StreamInfo.unpack(c.getsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_OPEN, StreamInfo(sid, flags).pack())).stream_id


def echo(c, sid, flags, msg, expect_sid=None):
    quic_sendmsg(c, msg, sid, flags)
    data, rsid, rflags = quic_recvmsg(c, 4096)
    assert data == msg
    if expect_sid is not None:
        assert rsid == expect_sid
    return rsid


def test01(func):
    """not allowed send(MSG_SYN) to open a stream when last is not closed"""
    c = func.c
    assert c.send(b"quic ", MSG_SYN) == 5  # as func_test.c: the server echoes "quic test2" at test2's FIN
    expect_errno(lambda: c.send(b"test1", MSG_SYN), errno.EINVAL)


def test02(func):
    """use send(MSG_SYN) to open one stream"""
    c = func.c
    time.sleep(0.1)  # the server echoes what it reads with FIN; let it read test1's data first
    c.send(b"test2", MSG_FIN)
    data, sid, _ = quic_recvmsg(c, 4096)
    assert (data, sid) == (b"quic test2", 0)


def test03(func):
    """use send(MSG_SYN) to open next stream after last is closed"""
    c = func.c
    c.send(b"quic test3", MSG_SYN | MSG_FIN | MSG_STREAM_UNI)
    data, sid, _ = quic_recvmsg(c, 4096)
    assert (data, sid) == (b"quic test3", 3)


def test04(func):
    """use send(MSG_SYN) to open next bidi stream after last is closed"""
    c = func.c
    c.send(b"quic test4", MSG_SYN | MSG_FIN)
    data, sid, _ = quic_recvmsg(c, 4096)
    assert (data, sid) == (b"quic test4", 4)


def test05(func):
    """not allowed to open a stream that is already closed with getsockopt(QUIC_SOCKOPT_STREAM_OPEN)"""
    expect_errno(lambda: stream_open(func.c, 0), errno.ENOSTR, errno.EINVAL)


def test06(func):
    """use getsockopt(QUIC_SOCKOPT_STREAM_OPEN) to open a specific stream"""
    c = func.c
    assert stream_open(c, 6) == 6
    c.send(b"quic test6", MSG_FIN)
    data, sid, _ = quic_recvmsg(c, 4096)
    assert (data, sid) == (b"quic test6", 7)


def test07(func):
    """use getsockopt(QUIC_SOCKOPT_STREAM_OPEN) to open next bidi stream"""
    c = func.c
    assert stream_open(c, -1) == 8
    c.send(b"quic test7", MSG_FIN)
    assert quic_recvmsg(c, 4096)[:2] == (b"quic test7", 8)


def test08(func):
    """use getsockopt(QUIC_SOCKOPT_STREAM_OPEN) to open next uni stream"""
    c = func.c
    assert stream_open(c, -1, MSG_STREAM_UNI) == 10
    c.send(b"quic test8", MSG_FIN)
    assert quic_recvmsg(c, 4096)[:2] == (b"quic test8", 11)


def test09(func):
    """not allowed to open a stream that is already closed with sendmsg(MSG_QUIC_STREAM_NEW)"""
    expect_errno(lambda: quic_sendmsg(func.c, b"quic test9", 0, MSG_SYN), errno.ENOSTR)


def test10(func):
    """not allowed to open a stream twice with sendmsg(MSG_QUIC_STREAM_NEW)"""
    c = func.c
    assert quic_sendmsg(c, b"quic ", 12, MSG_SYN) == 5
    expect_errno(lambda: quic_sendmsg(c, b"test10", 12, MSG_SYN), errno.EINVAL)


def test11(func):
    """sendmsg with a specific stream normally"""
    time.sleep(0.1)  # let the server read test10's data first
    quic_sendmsg(func.c, b"test11", 12, MSG_FIN)
    assert quic_recvmsg(func.c, 4096)[:2] == (b"quic test11", 12)


def test12(func):
    """not allowed to open a stream with sendmsg(sid == -1) if it the old one is not closed"""
    c = func.c
    quic_sendmsg(c, b"quic ", -1, MSG_SYN | MSG_STREAM_UNI)
    expect_errno(lambda: quic_sendmsg(c, b"test12", -1, MSG_SYN | MSG_STREAM_UNI), errno.EINVAL)


def test13(func):
    """open next uni stream with sendmsg(sid == -1)"""
    time.sleep(0.1)  # the server echoes what it reads with FIN; let it read test12's data first
    quic_sendmsg(func.c, b"test13", -1, MSG_FIN)
    assert quic_recvmsg(func.c, 4096)[:2] == (b"quic test13", 15)


def test14(func):
    """open next bidi stream with sendmsg(sid == -1)"""
    echo(func.c, -1, MSG_SYN | MSG_FIN, b"quic test14", 16)


def test15(func):
    """open multiple stream and send on 1st one"""
    c = func.c
    assert stream_open(c, 18) == 18
    assert stream_open(c, 20) == 20
    echo(c, 18, MSG_FIN, b"quic test15", 19)


def test16(func):
    """open multiple stream and send on 2nd one"""
    echo(func.c, 20, MSG_FIN, b"quic test16", 20)


def test17(func):
    """not allowed to send data on a closed stream"""
    expect_errno(lambda: quic_sendmsg(func.c, b"quic test17", 20, MSG_FIN), errno.EINVAL, errno.ENOSTR)


def test18(func):
    """sendmsg with sid > original max_streams_bidi"""
    echo(func.c, 400, MSG_SYN | MSG_FIN, b"quic test18", 400)


def test19(func):
    """sendmsg with sid > original max_streams_uni"""
    echo(func.c, 402, MSG_SYN | MSG_FIN, b"quic test19", 403)


def test20(func):
    """return -EAGAIN if sid > current max_streams_bidi"""
    time.sleep(0.2)
    expect_errno(lambda: quic_sendmsg(func.c, b"quic test20", 428, MSG_SYN | MSG_FIN | MSG_STREAM_DONTWAIT),
                 errno.EAGAIN)


def test21(func):
    """sendmsg after current max_streams_bidi grows"""
    echo(func.c, 404, MSG_SYN | MSG_FIN, b"quic test21", 404)
    echo(func.c, 428, MSG_SYN | MSG_FIN, b"quic test21", 428)


def test22(func):
    """return -EAGAIN if sid > current max_streams_uni"""
    time.sleep(0.2)
    expect_errno(lambda: quic_sendmsg(func.c, b"quic test22", 426, MSG_SYN | MSG_FIN | MSG_STREAM_DONTWAIT),
                 errno.EAGAIN)


def test23(func):
    """sendmsg after current max_streams_uni grows"""
    echo(func.c, 406, MSG_SYN | MSG_FIN, b"quic test23", 407)
    echo(func.c, 426, MSG_SYN | MSG_FIN, b"quic test23", 427)


def test24(func):
    """getsockopt(QUIC_SOCKOPT_STREAM_OPEN) with sid > original max_streams_bidi"""
    c = func.c
    assert stream_open(c, 408) == 408
    echo(c, 408, MSG_FIN, b"quic test24", 408)


def test25(func):
    """getsockopt(QUIC_SOCKOPT_STREAM_OPEN) with sid > original max_streams_uni"""
    c = func.c
    assert stream_open(c, 410) == 410
    echo(c, 410, MSG_FIN, b"quic test25", 411)


def test26(func):
    """return -EAGAIN if sid > current max_streams_bidi"""
    time.sleep(0.2)
    expect_errno(lambda: stream_open(func.c, 440, MSG_STREAM_DONTWAIT), errno.EAGAIN)


def test27(func):
    """getsockopt(QUIC_SOCKOPT_STREAM_OPEN) after max_streams_bidi grows"""
    c = func.c
    echo(c, 412, MSG_SYN | MSG_FIN, b"quic test27", 412)
    assert stream_open(c, 440) == 440
    echo(c, 440, MSG_FIN, b"quic test27", 440)


def test28(func):
    """return -EAGAIN if sid > current max_streams_uni"""
    time.sleep(0.2)
    expect_errno(lambda: stream_open(func.c, 438, MSG_STREAM_DONTWAIT), errno.EAGAIN)


def test29(func):
    """getsockopt(QUIC_SOCKOPT_STREAM_OPEN) max_streams_bidi grows"""
    c = func.c
    echo(c, 414, MSG_SYN | MSG_FIN, b"quic test29", 415)
    assert stream_open(c, 438) == 438
    echo(c, 438, MSG_FIN, b"quic test29", 439)


def test30(func):
    """not allowed to reset a closed stream"""
    time.sleep(0.2)
    expect_errno(lambda: func.c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_RESET, ErrInfo(414, 1).pack()),
                 errno.ENOSTR)


def test31(func):
    """not allowed to reset a stream that hasn't opened"""
    c = func.c
    echo(c, 416, MSG_SYN | MSG_FIN, b"quic test31", 416)
    echo(c, 420, MSG_SYN | MSG_FIN, b"quic test31", 420)
    expect_errno(lambda: c.setsockopt(SOL_QUIC, QUIC_SOCKOPT_STREAM_RESET, ErrInfo(444, 1).pack()), errno.EINVAL)


def test32(func):
    """reset a opened stream"""
    send_then_reset(func.c, b"quic test32", 444, MSG_SYN)  # one datagram: see send_then_reset


def test33(func):
    """not allowed to send data on a reset stream"""
    expect_errno(lambda: quic_sendmsg(func.c, b"quic test33", 444, 0), errno.EINVAL)


def test34(func):
    """not allowed to send data with FIN on a reset stream"""
    expect_errno(lambda: quic_sendmsg(func.c, b"quic test34", 444, MSG_FIN), errno.EINVAL)


def test35(func):
    """not allowed to send data on a reset stream by peer stop_sending"""
    c = func.c
    quic_sendmsg(c, b"client stop_sending", 418, MSG_SYN)
    await_peer_stop_sending(c, 418)  # func_test.c: sleep(1)
    expect_errno(lambda: quic_sendmsg(c, b"quic test35", 418, 0), errno.ENOSTR)


def test36(func):
    """not allowed to send data with FIN on a reset stream set by peer stop_sending"""
    expect_errno(lambda: quic_sendmsg(func.c, b"quic test36", 418, MSG_FIN), errno.ENOSTR)
