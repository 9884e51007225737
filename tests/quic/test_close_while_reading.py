"""A QUIC socket closed by one thread while another is about to wait in recv(): the reader gets
EBADF, as from a kernel socket, not select()'s ValueError for fd -1 (seen as a dying server thread
in test_write_survives_fault[quic-reset-send-none])."""

from __future__ import annotations

import errno

import pytest

from wrappers.quic.sockdata import QuicDataMixin

from .conftest import close_all, open_pair


def test_recv_after_close_between_check_and_wait(net, pki, monkeypatch):
    c, s, ls = open_pair("psk", pki)
    try:
        drain = QuicDataMixin._drain
        calls = {"n": 0}

        def drain_then_close(self):
            drain(self)
            if self is s and calls["n"] == 0:
                calls["n"] += 1
                s.close()  # the other thread's close, landing after the queue was found empty

        monkeypatch.setattr(QuicDataMixin, "_drain", drain_then_close)
        s.settimeout(2.0)
        with pytest.raises(OSError) as e:
            s.recv(100)
        assert e.value.errno == errno.EBADF, e.value
        assert calls["n"] == 1
    finally:
        close_all(c, s, ls)
