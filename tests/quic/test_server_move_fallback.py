"""A client whose validation of a moved server's new address fails still reaches the server.

quic.ko lets a server move (CONNECTION_MIGRATION on an accepted socket). The client validates the
new address with PATH_CHALLENGE; if no PATH_RESPONSE comes back within the validation window
(aioquic: three times the larger of the PTO and twice the initial RTT, at least 0.6 s), the
client abandons the new path and sends to the last validated address again, the server's first
one (RFC 9000 9.3.2). The listener still holds that address and quic.ko finds the connection by its
CID there, so the client's packets arrive. The emulation used to close the server's paths at its
first address once the move completed: the client's packets went nowhere, an idle server never
sent again, and both ends died at the idle timeout.

Here every datagram to or from the server's new port is first 1 s late (``out: delay``), then lost for
6 s: the response to the client's challenge cannot arrive within the window, and nothing from the
new port brings the client back there while the fallback is tested."""

from __future__ import annotations

import time

from wrappers import impair
from wrappers.quic import (
    MSG_STREAM_FIN,
    MSG_STREAM_NEW,
    QUIC_SOCKOPT_CONNECTION_MIGRATION,
    SOL_QUIC,
    quic_sendmsg,
    sockaddr_in,
)

from .conftest import close_all, emulated, open_pair
from .test_adv_migration import _no_impairments, _recv_data  # noqa: F401 - the autouse fixture resets impairments

BLACKHOLE = 6


def test_client_falls_back_to_the_servers_first_address_when_validation_fails(pki):
    with emulated():
        c, s, ls = open_pair("cert", pki)
        try:
            c.settimeout(8)
            s.settimeout(8)
            shost, sport = s.getsockname()[:2]
            impair.configure(f"seed=1; match: udp:{sport + 1}; out: delay=1s")
            s.setsockopt(SOL_QUIC, QUIC_SOCKOPT_CONNECTION_MIGRATION, sockaddr_in(shost, sport + 1))
            quic_sendmsg(s, b"from the new server port", 1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            data, _, _ = _recv_data(c)
            assert data == b"from the new server port"
            # from now on nothing leaves or reaches the new port for 6 s (what is delayed already is on
            # the wire): the answer to the client's challenge is lost, and nothing the server sends
            # can bring the client back to the new address before the fallback is tested
            impair.configure(f"seed=1; match: udp:{sport + 1}; out: blackhole=0s+{BLACKHOLE}s")
            # the challenge's answer is 2 s away; well before that the client gives the new path up
            # and sends to the server's first address again (its active path in aioquic)
            t0 = time.monotonic()
            while c._conn.quic.network_paths[0].addr[1] != sport:
                assert time.monotonic() - t0 < 5, "the client never abandoned the validation"
                time.sleep(0.05)
            # ... and the server's move completes when the client's first packet on the new path
            # arrives (1 s later): the server then reads only where its listener and its new name are
            while s.getsockname()[1] != sport + 1:
                assert time.monotonic() - t0 < 5, "the server's move never completed"
                time.sleep(0.05)
            quic_sendmsg(c, b"after the fallback", 0, MSG_STREAM_NEW | MSG_STREAM_FIN)
            s.settimeout(3)  # well inside the blackhole: only the server's first address can carry it
            data, sid, _ = _recv_data(s)
            assert data == b"after the fallback"
            c.settimeout(BLACKHOLE + 8)  # the reply goes out on the new path, after the blackhole
            quic_sendmsg(s, b"reply", sid, MSG_STREAM_FIN)
            data, _, _ = _recv_data(c)
            assert data == b"reply"
        finally:
            close_all(c, s, ls)
