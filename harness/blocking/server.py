"""Threaded I/O adapter around the sans-IO server (harness/smb/server.py).

One accept thread, one thread per connection, taking requests in the order they arrived across
connections (harness/blocking/arrival.py).  All protocol state changes run under one server
lock: sessions and opens are shared between connections (breaks, change notifications), and the
sans-IO core is not thread-safe by design.  Output for *another* connection (an oplock break, an
async completion) is sent through that connection's send lock, so frames never interleave.
"""

from __future__ import annotations

import functools
import threading
import time

from harness.blocking.arrival import ArrivalOrder
from harness.blocking.inotify import ShareWatcher
from harness.blocking.netif import describe
from harness.smb.keys import SessionKeyRecord
from harness.smb.rdma_channel import take_invalidate
from harness.smb.server import Disconnect, ServerConfig, ServerConnection, ServerState, oplocks
from harness.transport import Listener, Transport, TransportError, listen

FRAME_HEADROOM = 64 * 1024
PRE_NEGOTIATE_LIMIT = 0x1FFFF  # what Samba allows before NEGOTIATE


def _append_key(path: str, record: SessionKeyRecord) -> None:
    """The key sink of a server with ``keys_out``: one keys-file line per session, as it is set up."""
    with open(path, "a") as handle:
        handle.write(record.line() + "\n")


class SMBServer:
    def __init__(self, config: ServerConfig, host: str = "127.0.0.1", port: int | None = None,
                 transport: str = "tcp", keys_out: str | None = None, idle_timeout: float = 900.0,
                 listener: Listener | None = None, share_with: SMBServer | None = None,
                 link_speed: int | None = None, rss: bool = False) -> None:
        if config.clock is None or config.clock() == 0:
            config.clock = time.time_ns
        self.keys_out = keys_out
        if keys_out:
            open(keys_out, "a").close()
            config.key_sink = functools.partial(_append_key, keys_out)
        # share_with: another listener (e.g. QUIC next to TCP) of the *same* server: one state, one
        # lock, so a session bound over both transports is one session (multichannel).
        self.state: ServerState = share_with.state if share_with else ServerState(config)
        self.state.on_output = self._flush_other
        self.kind = transport
        self.listener = listener or listen(transport, host, port)
        self.address = self.listener.address
        # What FSCTL_QUERY_NETWORK_INTERFACE_INFO lists: this listener's real address(es), so a
        # multichannel client finds every transport of the server (harness/blocking/netif.py).
        self.interfaces = describe(transport, self.address[0], self.address[1], link_speed=link_speed, rss=rss)
        self.state.config.listeners.extend(self.interfaces)
        self.idle_timeout = idle_timeout
        self.lock: threading.RLock = share_with.lock if share_with else threading.RLock()
        self._send_locks: dict[int, threading.Lock] = share_with._send_locks if share_with else {}
        self._transports: dict[int, Transport] = share_with._transports if share_with else {}
        self._threads: list[threading.Thread] = []
        # Requests of different connections in the order they arrived (harness/blocking/arrival.py);
        # shared with ``share_with``, whose connections share the state.
        self.arrivals: ArrivalOrder = share_with.arrivals if share_with else ArrivalOrder()
        self._stop = threading.Event()
        self._accept_thread: threading.Thread | None = None
        # One timer thread for break acknowledgment deadlines (harness/smb/server/oplocks.py): it
        # sleeps until the next deadline, or forever while no break waits (no polling).  Listeners
        # of one server share it: whichever starts first starts it (_timer_started).
        self._timer_wake: threading.Condition = share_with._timer_wake if share_with else threading.Condition(self.lock)
        self._timer_started: threading.Event = share_with._timer_started if share_with else threading.Event()
        self._timer_thread: threading.Thread | None = None
        self.errors: list[str] = []
        if share_with is None:  # changes by other programs in a local share complete CHANGE_NOTIFY too
            self.state.on_watch = ShareWatcher(self.state, self.lock, self._stop, self.errors).watch

    @property
    def port(self) -> int:
        return self.address[1]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SMBServer:
        self._accept_thread = threading.Thread(target=self._accept_loop, name="smb-accept", daemon=True)
        self._accept_thread.start()
        if not self._timer_started.is_set():
            self._timer_started.set()
            self._timer_thread = threading.Thread(target=self._timer_loop, name="smb-timer", daemon=True)
            self._timer_thread.start()
        return self

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        with self._timer_wake:
            self._timer_wake.notify_all()
        self.listener.close()
        listeners = self.state.config.listeners
        listeners[:] = [entry for entry in listeners if not any(entry is mine for mine in self.interfaces)]
        for transport in list(self._transports.values()):
            transport.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> SMBServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                transport = self.listener.accept(timeout=0.5)
            except TimeoutError:
                continue
            except (OSError, TransportError) as exc:
                if self._stop.is_set():
                    return
                self.errors.append(f"accept: {exc}")
                continue
            thread = threading.Thread(target=self._serve, args=(transport,), name="smb-conn", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()

    def _timer_loop(self) -> None:
        with self._timer_wake:
            while not self._stop.is_set():
                deadline = oplocks.next_deadline(self.state)
                if deadline is None:
                    self._timer_wake.wait()
                    continue
                delay = deadline - self.state.config.clock() / 1e9
                if delay > 0:
                    self._timer_wake.wait(delay)
                    continue
                try:
                    oplocks.on_timer(self.state)
                except Exception as exc:  # a bug must not stop the timer for every other client
                    self.errors.append(f"timer: {type(exc).__name__}: {exc}")
                    self._timer_wake.wait(1.0)

    # ------------------------------------------------------------------ one connection

    def _serve(self, transport: Transport) -> None:
        connection = ServerConnection(self.state, transport.name)
        key = id(connection)
        send_lock = threading.Lock()
        self._send_locks[key] = send_lock
        self._transports[key] = transport  # where _flush_other sends this connection's output
        connection.peer_gone = transport.peer_gone
        if transport.supports_rdma:
            connection.rdma = transport  # the RDMA port of harness/smb/rdma_channel.py
        transport.max_recv = PRE_NEGOTIATE_LIMIT
        self.arrivals.add(key, transport.whole_pdu_waiting)
        try:
            while not self._stop.is_set():
                try:
                    pdu = transport.recv_pdu(timeout=self.idle_timeout)
                except (TimeoutError, TransportError, OSError):
                    return
                self.arrivals.received(key)
                self.lock.acquire()
                try:
                    try:
                        replies = connection.receive_pdu(pdu)
                    except Disconnect:
                        return
                    except Exception as exc:  # a bug must cost one connection, never the server
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                        return
                    invalidate = take_invalidate(connection)
                    self._timer_wake.notify_all()  # a break may have set a new deadline
                    if connection.negotiated and connection.rdma is None:
                        transport.max_recv = connection.max_size + FRAME_HEADROOM
                    # Take the send lock before letting other threads in, so an async completion
                    # queued by another connection can never overtake this reply (lock order:
                    # server lock, then send lock, as in _flush_other).
                    send_lock.acquire()
                finally:
                    self.lock.release()
                    self.arrivals.handled(key)
                try:
                    for reply in replies:
                        if invalidate is not None:  # RDMA_V1_INVALIDATE: SEND with Invalidate
                            transport.send_pdu(reply, invalidate_token=invalidate)
                            invalidate = None
                        else:
                            transport.send_pdu(reply)
                finally:
                    send_lock.release()
        except (TransportError, OSError, TimeoutError):
            return
        finally:
            self.arrivals.remove(key)
            with self.lock:
                connection.close()
                self._timer_wake.notify_all()
            self._send_locks.pop(key, None)
            self._transports.pop(key, None)
            transport.close()

    def _flush_other(self, connection: ServerConnection) -> None:
        transport = self._transports.get(id(connection))
        lock = self._send_locks.get(id(connection))
        if transport is None or lock is None:
            return
        pdus = connection.take_output()
        try:
            with lock:
                for pdu in pdus:
                    transport.send_pdu(pdu)
        except (TransportError, OSError, TimeoutError):
            transport.close()
