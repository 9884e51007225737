"""A stream's send buffer as a list of the application's messages, not one bytearray.

aioquic's QuicStreamSender keeps unacknowledged stream data in one bytearray: every write appends
to it (a copy, and when the front has been cut, a reallocation that copies what is left), every
frame is cut out of it twice (a bytearray slice, then bytes), and acknowledged data is cut off the
front. On the emulated carrier a connection writes 1 MiB SMB messages into a buffer of up to 4 MiB
and sends 64 KiB frames: these copies were a visible share of the engine's time.

``ChunkedStreamSender`` keeps each written message as it came (bytes, no copy) with its stream
offset, builds a frame from a memoryview of the message (one copy; none when a frame is a whole
message) and drops a message once it is wholly acknowledged. Everything else is aioquic's: its
``write`` checks and FIN bookkeeping, its ``get_frame`` choice of range, flow control and FIN bit,
its ``on_data_delivery`` ranges; they run on an empty bytearray, and this class supplies the bytes.
The frames, and so the packets, are the same.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from aioquic.quic.packet import QuicStreamFrame
from aioquic.quic.stream import QuicStreamSender


class ChunkedStreamSender(QuicStreamSender):
    """aioquic's sender with the written messages kept whole (see the module docstring)."""

    _chunks: deque[tuple[int, bytes]]  # (stream offset, data), covering the unacknowledged bytes in order

    def write(self, data: bytes, end_stream: bool = False) -> None:
        super().write(b"")  # aioquic's checks: nothing after the FIN or a reset
        size = len(data)
        if size:
            self.buffer_is_empty = False
            self._pending.add(self._buffer_stop, self._buffer_stop + size)
            self._chunks.append((self._buffer_stop, bytes(data)))
            self._buffer_stop += size
        if end_stream:
            super().write(b"", end_stream=True)

    def get_frame(self, max_size: int, max_offset: int | None = None) -> QuicStreamFrame | None:
        try:
            first = self._pending[0]
        except IndexError:
            first = None
        frame = super().get_frame(max_size, max_offset)
        if frame is None or first is None or frame.offset != first.start:
            return frame
        # aioquic took [start, stop) off the pending ranges: what is left of the first range starts at stop
        try:
            rest = self._pending[0]
        except IndexError:
            rest = None
        stop = rest.start if rest is not None and rest.start < first.stop else first.stop
        if stop > first.start:
            frame.data = self._slice(first.start, stop)
        return frame

    def _slice(self, start: int, stop: int) -> bytes:
        pieces: list[Any] = []
        for off, data in self._chunks:
            end = off + len(data)
            if end <= start:
                continue
            if off >= stop:
                break
            lo, hi = max(start - off, 0), min(stop, end) - off
            pieces.append(data if lo == 0 and hi == len(data) else memoryview(data)[lo:hi])
        if len(pieces) == 1:
            return bytes(pieces[0])  # no copy when it is a whole message
        return b"".join(pieces)

    def on_data_delivery(self, delivery: Any, start: int, stop: int, fin: bool) -> None:
        super().on_data_delivery(delivery, start, stop, fin)
        chunks = self._chunks
        while chunks and chunks[0][0] + len(chunks[0][1]) <= self._buffer_start:
            chunks.popleft()


def unacked_bytes(sender: QuicStreamSender) -> int:
    """Bytes written to the stream and not yet acknowledged (either sender class)."""
    return int(sender._buffer_stop - sender._buffer_start)


def chunked(sender: QuicStreamSender) -> None:
    """Make one aioquic stream sender keep its data as ChunkedStreamSender does (before or after
    data was written: what the bytearray holds becomes the first message)."""
    if type(sender) is not QuicStreamSender:
        return
    held = bytes(sender._buffer)
    sender.__class__ = ChunkedStreamSender
    assert isinstance(sender, ChunkedStreamSender)
    sender._chunks = deque([(sender._buffer_start, held)] if held else [])
    sender._buffer = bytearray()
