"""Who writes which packet into the shared pcap, so that each packet is there exactly once.

Theory of operation
-------------------
cwrap logs every packet from both ends (each process logs what it sends *and* what it receives),
so a capture of two wrapped programs shows everything twice. We log each packet once by one rule:

    A packet is logged by its sender when the sender is a *logger* (a process writing to the same
    pcap file); otherwise by its receiver.

A process learns who is at the other end of a unix socket from the kernel (SO_PEERCRED for
streams, SCM_CREDENTIALS for datagrams) and classifies that pid once:

* a Python process under ``wrappers`` with the same pcap registers itself with a marker file in
  ``$SOCKET_WRAPPER_DIR/.wirecheck/loggers/<pid>`` holding the pcap's real path;
* a native process under ``libsocket_wrapper.so`` is recognised from its environment
  (LD_PRELOAD and SOCKET_WRAPPER_PCAP_FILE naming the same file). cwrap also logs what it
  receives, so packets *to* such a process appear twice: that is documented in the README.

Causal order: a reply must never be logged before the request that caused it, or Wireshark
reports "ACKed unseen segment" and retransmissions. Every send that logs runs as
"take the pcap lock, send without blocking, write the record, release": the peer can only react
to bytes it received, and it can only log its reaction after our lock is released.
"""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager

from . import packets
from .pcapfile import get_writer
from .sockdir import current_pid, private_dir

_LOCAL = threading.local()


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2 :].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return None


class Recorder:
    """The pcap of one process: writer, logger marker, and the sender-or-receiver decision."""

    def __init__(self, pcap_path: str, socket_dir: str):
        self.path = os.path.realpath(pcap_path)
        self.writer = get_writer(self.path)
        self.socket_dir = socket_dir
        self._loggers_dir = private_dir(socket_dir, "loggers")
        self._cache: dict[int, bool] = {}
        self._registered_pid: int | None = None
        self.register()
        os.register_at_fork(after_in_child=self._after_fork)

    # -- markers ------------------------------------------------------------------------------
    def register(self) -> None:
        pid = os.getpid()
        marker = os.path.join(self._loggers_dir, str(pid))
        tmp = f"{marker}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{self.path}\n{_start_time(pid) or ''}\n")
        os.replace(tmp, marker)
        self._registered_pid = pid
        # The marker outlives the process on purpose (see _classify); it lives in the run's
        # socket directory and goes with it.

    def unregister(self) -> None:
        if self._registered_pid == os.getpid():
            try:
                os.unlink(os.path.join(self._loggers_dir, str(self._registered_pid)))
            except OSError:
                pass
            self._registered_pid = None

    def _after_fork(self) -> None:
        self._cache = {}
        self.register()

    # -- classification -----------------------------------------------------------------------
    def peer_logs(self, pid: int | None) -> bool:
        """Does the process at the other end log its own sends into our file?"""
        if not pid:
            return False
        if pid == current_pid():
            return True
        cached = self._cache.get(pid)
        if cached is None:
            cached = self._classify(pid)
            self._cache[pid] = cached
        return cached

    def _classify(self, pid: int) -> bool:
        try:
            with open(os.path.join(self._loggers_dir, str(pid))) as f:
                path, start = (f.read().split("\n") + [""])[:2]
            # A logger that has exited still logged its sends (a peer may accept a connection, or
            # read a datagram, after its sender is gone); a live pid with another start time is a
            # different process that reused the pid.
            if path == self.path and (not start or _start_time(pid) in (None, start)):
                return True
        except OSError:
            pass
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(
                    item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item
                )
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        if b"socket_wrapper" not in env.get(b"LD_PRELOAD", b""):
            return False
        pcap = env.get(b"SOCKET_WRAPPER_PCAP_FILE", b"").decode(errors="replace")
        if not pcap:
            return False
        return os.path.realpath(os.path.join(cwd, pcap)) == self.path

    # -- writing ------------------------------------------------------------------------------
    def locked(self) -> AbstractContextManager[object]:
        return self.writer.locked()

    def write(self, pkts: list[list[bytes | memoryview]]) -> None:
        """The records of one event (a handshake, a FIN and its ACK, a send split into segments)
        in one append: one system call instead of one per record."""
        self.writer.write_packets(pkts)

    def udp(self, src: tuple, dst: tuple, payload: bytes | memoryview) -> None:
        self.writer.write_packet(packets.build_udp(src[:2], dst[:2], payload))

    def icmp_unreachable(self, original: list[bytes | memoryview], family: int) -> None:
        self.writer.write_packet([packets.build_icmp_unreachable(b"".join(bytes(b) for b in original), family)])


_recorders: dict[tuple[str, str], Recorder] = {}
_recorders_by_name: dict[tuple[str, str], Recorder] = {}
_recorders_lock = threading.Lock()


def recorder_for(pcap_path: str | None, socket_dir: str) -> Recorder | None:
    if not pcap_path:
        return None
    # Every new socket asks: an absolute path is looked up as given (realpath() costs a dozen
    # system calls), a relative one through realpath, since it depends on the working directory.
    # Only absolute paths are ever filed by name, so a hit needs no isabs() first.
    rec = _recorders_by_name.get((pcap_path, socket_dir))
    if rec is not None:
        return rec
    fast = (pcap_path, socket_dir) if os.path.isabs(pcap_path) else None
    key = (os.path.realpath(pcap_path), socket_dir)
    rec = _recorders.get(key)
    if rec is None:
        with _recorders_lock:
            rec = _recorders.get(key)
            if rec is None:
                rec = _recorders[key] = Recorder(pcap_path, socket_dir)
    if fast:
        _recorders_by_name[fast] = rec
    return rec
