"""Small stream data goes out whole or waits, as quic.ko sends its frames (wrappers/quic/aio/connection.py,
point 10).

aioquic cuts pending stream data to whatever the congestion window (the packet builder's flight
space) leaves. After a loss that left 16 bytes of window, lxin's func_test got its 17-byte echo
"quic event test21" as "quic event test2" and failed: quic.ko never cuts a frame to fit the window.
These tests drive the frame writer with a packet builder whose room is set exactly."""

from __future__ import annotations

from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.stream import QuicStream

from wrappers.quic.aio import KoQuicConnection


class Builder:
    """The two numbers a frame writer reads, and a buffer for what it writes."""

    def __init__(self, packet_room: int, flight_room: int):
        self.remaining_buffer_space = packet_room
        self.remaining_flight_space = flight_room
        self.quic_logger_frames: list = []
        self.frames: list[tuple[int, Buffer]] = []

    def start_frame(self, frame_type, capacity=1, handler=None, handler_args=()):
        buf = Buffer(capacity=1 << 17)
        self.frames.append((frame_type, buf))
        return buf


def _conn() -> KoQuicConnection:
    return KoQuicConnection(configuration=QuicConfiguration(is_client=True, server_name="wirecheck.test"))


def _stream(data: bytes) -> QuicStream:
    st = QuicStream(stream_id=112, max_stream_data_local=1 << 20, max_stream_data_remote=1 << 20)
    st.sender.write(data, end_stream=True)
    return st


MSG = b"quic event test21"
HEADER = 3 + 2  # frame type and length, stream id 112 (a two-byte varint); offset 0 is not written


def test_a_message_the_window_would_cut_waits_whole():
    conn, st = _conn(), _stream(MSG)
    b = Builder(packet_room=1200, flight_room=HEADER + len(MSG) - 1)  # one byte short
    assert conn.write_stream_frame(b, st, max_offset=1 << 20) == 0
    assert b.frames == [] and st.sender.next_offset == 0  # nothing sent, nothing consumed


def test_the_whole_message_goes_when_the_window_takes_it():
    conn, st = _conn(), _stream(MSG)
    b = Builder(packet_room=1200, flight_room=HEADER + len(MSG))
    assert conn.write_stream_frame(b, st, max_offset=1 << 20) == len(MSG)
    [(frame_type, buf)] = b.frames
    assert frame_type & 1  # FIN with the data
    assert buf.data.endswith(MSG)


def test_data_beyond_one_base_datagram_is_cut_to_the_window_as_aioquic_does():
    """A 64 KiB datagram's worth could wait for ever: aioquic's smallest window is two base-size
    datagrams. So larger pending data still fills what the window leaves."""
    conn, st = _conn(), _stream(b"x" * 100_000)
    b = Builder(packet_room=65000, flight_room=600)
    assert 550 < conn.write_stream_frame(b, st, max_offset=1 << 20) < 600


def test_flow_control_still_cuts_as_aioquic_does():
    conn, st = _conn(), _stream(MSG)
    b = Builder(packet_room=1200, flight_room=1200)
    assert conn.write_stream_frame(b, st, max_offset=len(MSG) - 1) == len(MSG) - 1
