"""The aioquic boundary: the only place that touches aioquic's private attributes and methods.

aioquic promises nothing about names that start with an underscore, yet quic.ko's rules need a few of
them: its stream rules, receive credit and key update state (connection.py: KoQuicConnection), and
the raw handshake mode where the application's TLS library drives the handshake (rawtls.py:
RawQuicConnection), the previous receive keys a key update keeps (keyphase.py), stream send buffers
(sendbuf.py) and the pacer aioquic's loss recovery holds (connection.py installs congestion.KoPacer). Keeping them
here, with ``AIOQUIC_PRIVATE`` listing every private name they use by the aioquic object that holds
it, lets tests/quic/test_aioquic_private.py check each name on real aioquic objects: an upgrade that
renames or removes one fails there, by name, instead of changing behaviour quietly (an override of a
vanished method is simply never called).
"""

from __future__ import annotations

from .connection import KoQuicConnection, key_update_requested, one_rtt_crypto
from .rawtls import RawQuicConnection

# Every aioquic private name the package uses (connection.py, rawtls.py, keyphase.py), by the aioquic
# class (or object) that holds it.
# "attributes" are read or written on instances; "methods" are overridden or called.
AIOQUIC_PRIVATE: dict[str, dict[str, tuple[str, ...]]] = {
    "aioquic.quic.connection.QuicConnection": {
        "attributes": (
            "_close_at", "_close_event", "_configuration", "_crypto_streams", "_cryptos", "_events",
            "_handshake_complete", "_handshake_done_pending", "_host_cid_seq", "_host_cids", "_is_client",
            "_local_active_connection_id_limit", "_local_max_data", "_local_max_stream_data_bidi_local",
            "_local_max_streams_bidi", "_local_max_streams_uni", "_local_next_stream_id_bidi",
            "_local_next_stream_id_uni", "_loss", "_max_datagram_size", "_network_paths", "_pacing_at",
            "_quic_logger",
            "_remote_active_connection_id_limit", "_remote_max_data", "_remote_max_datagram_frame_size",
            "_remote_max_idle_timeout", "_remote_max_stream_data_bidi_local",
            "_remote_max_stream_data_bidi_remote", "_remote_max_stream_data_uni", "_remote_max_streams_bidi",
            "_remote_max_streams_uni", "_remote_version_information", "_spaces", "_state", "_streams",
            "_streams_queue", "_version",
        ),
        "methods": (
            "_alpn_handler", "_confirm_handshake", "_connect", "_find_preferred_address", "_flush_builder",
            "_get_or_create_stream_for_send",
            "_handle_crypto_frame", "_handle_max_stream_data_frame", "_initialize",
            "_parse_transport_parameters", "_payload_received", "_probe_preferred_address",
            "_replenish_connection_ids", "_serialize_transport_parameters", "_unblock_streams",
            "_update_traffic_key", "_write_ack_frame", "_write_connection_limits", "_write_crypto_frame",
            "_write_stream_frame", "_write_stream_limits",
        ),
    },
    "aioquic.tls.Context": {
        "attributes": ("_request_client_certificate",),
        "methods": ("_client_handle_new_session_ticket",),
    },
    "aioquic.quic.recovery.QuicPacketRecovery": {"attributes": ("_pacer",), "methods": ()},
    "aioquic.quic.stream.QuicStreamSender": {"attributes": ("_buffer", "_buffer_start", "_buffer_stop", "_pending"),
                                             "methods": ()},
    "aioquic.quic.stream.QuicStreamReceiver": {"attributes": ("_final_size",), "methods": ()},
    "aioquic.quic.crypto.CryptoPair": {"attributes": ("_update_key_requested",), "methods": ("_update_key",)},
}


__all__ = ["AIOQUIC_PRIVATE", "KoQuicConnection", "RawQuicConnection", "key_update_requested", "one_rtt_crypto"]
