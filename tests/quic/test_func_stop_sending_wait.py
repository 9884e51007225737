"""func_test's STOP_SENDING cases wait for the peer's answer, not for a fixed second.

A fresh-clone run on a loaded machine failed test35 against lxin's C server: its STOP_SENDING came
later than func_test.c's sleep(1), the next send went out as data, and the server's late echo of it
made every following case read the wrong reply. Here the server answers 1.5 s late on purpose."""

from __future__ import annotations

import errno
import time

from wrappers.quic import MSG_STREAM_NEW, quic_sendmsg

from .conftest import close_all, emulated, open_pair
from .funcserver import FuncServer, await_peer_stop_sending, expect_errno

LATE = 1.5


class LateStopSending(FuncServer):
    def _handle(self, s, text, data, sid, flags) -> None:
        if b"client stop_sending" in text.get(sid, b"") + data:
            time.sleep(LATE)
        super()._handle(s, text, data, sid, flags)


def test_send_after_a_late_stop_sending_is_enostr(pki) -> None:
    with emulated():
        c, s, ls = open_pair("psk", pki)
        srv = LateStopSending(s)
        srv.start()
        try:
            t0 = time.monotonic()
            quic_sendmsg(c, b"client stop_sending", 2, MSG_STREAM_NEW)  # a uni stream, as 418 is
            await_peer_stop_sending(c, 2, timeout=10)
            assert time.monotonic() - t0 >= LATE, "the wait returned before the peer could have answered"
            expect_errno(lambda: quic_sendmsg(c, b"more", 2, 0), errno.ENOSTR)
        finally:
            srv.stop = True
            srv.join(5)
            close_all(c, s, ls)
        assert not srv.is_alive() and not srv.errors, srv.errors

