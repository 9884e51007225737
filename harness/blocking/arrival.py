"""Requests of different connections handled in the order they arrived.

Why: a client that sends a request on one connection and then, without waiting, another on a
second connection expects the server to see them in that order.  smbtorture smb2.notify.basedir
does exactly this: CHANGE_NOTIFY on connection 1, then a SET_INFO on connection 2 whose change the
notify must report.  With one thread per connection, the first connection's thread may not run for
a while after its bytes arrived (two busy cores, the GIL), the SET_INFO is handled first, the watch
starts after the change, and the notify waits for ever.  Samba's smbd, one process per connection,
has the same window; it was seen here once in a CI run, where smbtorture then hung for 600 s.

The rule (one condition, so the checks of all threads are serialised):

==============================  ===========================================================
state of another connection     what a thread about to handle a request does
==============================  ===========================================================
a whole PDU unread (its thread  waits until that connection has handled one more request
  still sending the last reply,   (or what looked whole turns out to be a frame's start)
  or not yet running)
has a PDU, not yet handled,     waits likewise: that PDU came in first
  and is not itself waiting
waiting on others               is not waited for (two threads never wait on each other)
nothing whole unread            is not waited for: its next request is still on its way
==============================  ===========================================================

A wait ends at the latest after ``MAX_WAIT`` seconds, so a connection that is stuck (a client that
sends requests and reads no replies blocks its thread in a send) can delay another's request, never
stop it; and it delays one request only: it is not waited for again until it handles a request.  Transports that cannot tell whether a whole PDU is waiting
(QUIC, SMB Direct: :meth:`~harness.transport.base.Transport.whole_pdu_waiting` is False) get no
ordering beyond what their threads give.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_WAIT = 2.0  # seconds: far above a scheduling delay, far below any client's timeout
RECHECK = 0.005  # seconds between looks at a connection whose thread has not taken its bytes yet


@dataclass
class _Connection:
    whole_pdu_waiting: Callable[[], bool]
    holding: bool = False  # has a PDU it has not handled yet
    yielding: bool = False  # is waiting for others right now
    handled: int = 0
    outwaited: int = -1  # ``handled`` when a wait for it last ran out: not waited for again until it moves


class ArrivalOrder:
    """The shared state of one server's connection threads (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._cond = threading.Condition()
        self._clock = clock
        self._connections: dict[int, _Connection] = {}
        self.waits = 0  # how many requests waited for another connection's (for tests)

    def add(self, key: int, whole_pdu_waiting: Callable[[], bool]) -> None:
        with self._cond:
            self._connections[key] = _Connection(whole_pdu_waiting)

    def remove(self, key: int) -> None:
        with self._cond:
            self._connections.pop(key, None)
            self._cond.notify_all()

    def received(self, key: int) -> None:
        """Thread ``key`` has its PDU: let the connections whose requests came in first go first."""
        with self._cond:
            me = self._connections[key]
            me.holding = True
            ahead = {other: conn.handled for other, conn in self._connections.items()
                     if other != key and self._is_ahead(conn)}
            if not ahead:
                return
            self.waits += 1
            me.yielding = True
            deadline = self._clock() + MAX_WAIT
            try:
                while True:
                    ahead = {other: count for other, count in ahead.items()
                             if (conn := self._connections.get(other)) is not None
                             and conn.handled == count and self._is_ahead(conn)}
                    left = deadline - self._clock()
                    if not ahead:
                        return
                    if left <= 0:
                        for other in ahead:
                            self._connections[other].outwaited = ahead[other]
                        return
                    # woken when one is handled; a look every RECHECK for bytes that turned out to
                    # be only the start of a frame (then its request is still on its way)
                    self._cond.wait(min(left, RECHECK))
            finally:
                me.yielding = False

    @staticmethod
    def _is_ahead(conn: _Connection) -> bool:
        return (not conn.yielding and conn.outwaited != conn.handled
                and (conn.holding or conn.whole_pdu_waiting()))

    def handled(self, key: int) -> None:
        """Thread ``key`` has handled its PDU (its replies are queued, the server lock released)."""
        with self._cond:
            me = self._connections[key]
            me.holding = False
            me.handled += 1
            self._cond.notify_all()
