"""The impairment layer acts on QUIC carrier datagrams: loss, duplication, reordering and corruption
are survived by the engine's own timers (loss recovery) and the data arrives intact."""

from __future__ import annotations

import threading

import pytest
from threadutil import joined

from wrappers import impair
from wrappers.quic import MSG_STREAM_FIN, MSG_STREAM_NEW, quic_recvmsg, quic_sendmsg

from .conftest import close_all, open_pair


@pytest.fixture
def impaired():
    # Random losses alone do not make the check certain: the flows are keyed by their ephemeral ports,
    # which differ from run to run, and a 256 KiB transfer is about 20 datagrams in all, none of them
    # lost in about one run in eight at 10%. Datagrams 4 and 6 of every flow are therefore dropped as
    # well (past the first flight, inside the transfer), and the random aspects ride on top.
    impair.configure("seed=7; out: loss=10% drop=4,6 dup=2% reorder=5% corrupt=1%; match: udp")
    yield
    impair.configure(None)
    impair.reset()


@pytest.mark.parametrize("mode", ["psk", "cert"])
def test_transfer_survives_loss_dup_reorder_corruption(net, pki, impaired, mode):
    c, s, ls = open_pair(mode, pki, timeout=15)
    blob = bytes(range(256)) * 1024  # 256 KiB
    try:
        def send():
            for off in range(0, len(blob), 16384):
                last = off + 16384 >= len(blob)
                quic_sendmsg(c, blob[off:off + 16384], -1 if off == 0 else 0,
                             (MSG_STREAM_NEW if off == 0 else 0) | (MSG_STREAM_FIN if last else 0))

        t = threading.Thread(target=send, daemon=True)
        t.start()
        s.settimeout(20)
        got = bytearray()
        while True:
            data, _, flags = quic_recvmsg(s, 65536)
            got += data
            if flags & MSG_STREAM_FIN:
                break
        joined(t, 20)
        assert bytes(got) == blob
        flows = [list(getattr(imp, "history", [])) for imp in list(impair.flows().values())]
        history = [h for hist in flows for h in hist]
        # Datagrams 4 and 6 of every flow were dropped, in both directions. Not "4 drops": how many
        # datagrams the receiving side sends depends on how its ACKs coalesce, and a fresh-clone run
        # saw the server's flow end after 6 datagrams (drops 4, 6 and 4: 3).
        listed = [h for h in history if h.index in (4, 6)]
        assert listed and all(not h.deliveries and "drop-list" in h.reasons for h in listed), \
            [str(h) for h in history]
        assert sum(1 for hist in flows if len(hist) > 4) >= 2, [str(h) for h in history]
    finally:
        close_all(c, s, ls)
