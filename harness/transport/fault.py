"""Transport faults for reconnect tests: cut a connection after N bytes, by reset or by blackhole.

Why a transport wrapper and not only the impairment layer (wrappers/impair/, ``cut=rst@N`` /
``cut=blackhole@N``): the impairment layer acts on sockets of the emulated network (the socket
wrapper, scenario peers), and does not see QUIC streams (its ``cut`` is for TCP).  This wrapper works
on any :class:`~.base.Transport` -- tcp, nbt, quic, smbdirect -- in the test's own process, with the
same two kinds and the same byte-count trigger, counted on whole PDUs:

- ``reset``: once ``after`` bytes have passed in ``direction`` ("send" or "recv"), the connection is
  closed at once; the PDU that crosses the mark is not delivered (send) or is dropped after it was
  read (recv: the server did the work, its answer is lost -- what makes replay matter).
- ``blackhole``: from the mark on, nothing is delivered in either direction and nothing is closed:
  the peer sees silence, the local side sees ``TimeoutError`` when it waits (the idle-timeout case).

``FaultPlan`` holds the trigger; :meth:`FaultPlan.arm` starts counting, :meth:`FaultPlan.cut_now`
fires immediately (a cut "at a step" of a scenario).
"""

from __future__ import annotations

import threading
import time

from .base import Transport, TransportError

KINDS = ("reset", "blackhole")


class FaultPlan:
    def __init__(self, kind: str = "reset", after: int | None = None, direction: str = "recv",
                 on_fire=None) -> None:
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, not {kind!r}")
        if direction not in ("send", "recv"):
            raise ValueError(f"direction must be send or recv, not {direction!r}")
        self.kind = kind
        self.after = after
        self.direction = direction
        self.fired_at: float | None = None
        self.counted = 0
        self.on_fire = on_fire  # called once, in the thread that hit the mark (e.g. restart the server)
        self._lock = threading.Lock()

    def count(self, direction: str, nbytes: int) -> bool:
        """Add ``nbytes``; True when this PDU crosses the mark (the fault fires now)."""
        with self._lock:
            if self.fired_at is not None:
                return True
            if self.after is None or direction != self.direction:
                return False
            self.counted += nbytes
            if self.counted < self.after:
                return False
            self.fired_at = time.monotonic()
        if self.on_fire is not None:
            self.on_fire()
        return True

    def cut_now(self) -> None:
        with self._lock:
            if self.fired_at is not None:
                return
            self.fired_at = time.monotonic()
        if self.on_fire is not None:
            self.on_fire()

    @property
    def fired(self) -> bool:
        return self.fired_at is not None


class FaultyTransport(Transport):
    """``inner`` with a :class:`FaultPlan` applied; everything else passes through."""

    def __init__(self, inner: Transport, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.name = inner.name
        self.secure = inner.secure
        self.peer = inner.peer
        self.local = inner.local
        self.supports_rdma = inner.supports_rdma
        self.max_send = inner.max_send

    @property
    def max_recv(self) -> int:  # type: ignore[override]
        return self.inner.max_recv

    @max_recv.setter
    def max_recv(self, value: int) -> None:
        self.inner.max_recv = value

    def _fire(self) -> None:
        if self.plan.kind == "reset":
            self.inner.close()
            raise TransportError("connection reset (injected fault)")

    def __getattr__(self, name: str):
        # Whatever else the inner transport offers (SMB Direct's max_send, deregister_buffer,
        # fileno...) passes through, so a fault plan never hides a transport capability.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def send_pdu(self, pdu: bytes, *, invalidate_token: int | None = None) -> None:
        if self.plan.fired or self.plan.count("send", len(pdu)):
            self._fire()
            return  # blackhole: swallowed
        if invalidate_token is None:  # the plain call: an inner transport may predate the keyword
            self.inner.send_pdu(pdu)
        else:
            self.inner.send_pdu(pdu, invalidate_token=invalidate_token)

    def recv_pdu(self, timeout: float | None = None) -> bytes:
        if self.plan.fired:
            self._fire()
            self._silence(timeout)
        pdu = self.inner.recv_pdu(timeout)
        if self.plan.count("recv", len(pdu)):
            self._fire()
            self._silence(timeout)
        return pdu

    @staticmethod
    def _silence(timeout: float | None) -> None:
        time.sleep(timeout if timeout is not None else 30.0)
        raise TimeoutError("no answer (blackholed connection)")

    def close(self) -> None:
        self.inner.close()

    def register_buffer(self, buffer, writable: bool):
        return self.inner.register_buffer(buffer, writable)

    def rdma_read(self, descriptors, length: int, into=None):
        return self.inner.rdma_read(descriptors, length, into=into)

    def rdma_write(self, descriptors, data: bytes | memoryview) -> None:
        return self.inner.rdma_write(descriptors, data)
