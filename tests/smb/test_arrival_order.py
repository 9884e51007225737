"""harness/blocking/arrival.py: the server takes requests of different connections in the order
they arrived, even when the thread of the earlier one is slow to run (smbtorture
smb2.notify.basedir hung a CI run for 600 s when a CHANGE_NOTIFY was handled after the change it
was sent before)."""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest

from harness.blocking import arrival
from harness.blocking.client import SMBClient
from harness.blocking.server import SMBServer
from harness.smb import change_notify as cn
from harness.smb.constants import AccessMask, Command, CreateDisposition, CreateOptions, NtStatus
from harness.smb.server import ServerConfig, ShareConfig
from harness.transport.stream import StreamTransport

USER, PASSWORD = "bob", "Pw-123456"
RW = AccessMask.GENERIC_READ | AccessMask.GENERIC_WRITE
DIR_ACCESS = AccessMask.FILE_READ_DATA | AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE
STARVED = 0.5  # seconds the server thread of a CHANGE_NOTIFY stays off the CPU after its bytes arrived


@pytest.fixture
def server(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    config = ServerConfig(shares={"share": ShareConfig("share", str(share))}, users={USER: PASSWORD})
    srv = SMBServer(config, "127.0.0.1", 0)
    srv.start()
    yield srv
    srv.stop()
    assert not srv.errors, srv.errors


@pytest.fixture
def starved_notify(monkeypatch):
    """Server connection threads sit on an arrived CHANGE_NOTIFY for ``STARVED`` seconds before
    reading it: what a busy machine does to a thread that is runnable but not running."""
    real = StreamTransport.recv_pdu

    def recv_pdu(self, timeout=None):
        if threading.current_thread().name == "smb-conn":
            select.select([self.sock], [], [], timeout)
            try:
                head = self.sock.recv(4 + 64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                head = b""
            if len(head) >= 4 + 14 and head[4:8] == b"\xfeSMB" and head[4 + 12] == Command.CHANGE_NOTIFY:
                time.sleep(STARVED)
        return real(self, timeout)

    monkeypatch.setattr(StreamTransport, "recv_pdu", recv_pdu)


def _client(server) -> SMBClient:
    return SMBClient("127.0.0.1", server.port, username=USER, password=PASSWORD, timeout=10)


def test_a_notify_sent_before_a_change_on_another_connection_reports_it(server, starved_notify):
    with _client(server) as a, _client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        dir_id = sa.open("", DIR_ACCESS, CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE).file_id
        mid = sa.notify_request(dir_id, cn.FILE_NAME)  # sent, not waited for: as smbtorture does
        sb.close_file(sb.open("new.txt", RW, CreateDisposition.CREATE).file_id)
        assert sa.notify_result(mid, timeout=5) == (NtStatus.SUCCESS, [(cn.ADDED, "new.txt")])
    assert server.arrivals.waits >= 1


def test_a_stuck_connection_delays_another_at_most_max_wait(monkeypatch):
    monkeypatch.setattr(arrival, "MAX_WAIT", 0.3)
    order = arrival.ArrivalOrder()
    order.add(1, lambda: True)  # claims a whole PDU waiting, and never takes it
    order.add(2, lambda: False)
    start = time.monotonic()
    order.received(2)
    assert 0.25 <= time.monotonic() - start < 2.0
    assert order.waits == 1
    order.handled(2)
    start = time.monotonic()
    order.received(2)  # connection 1 has not moved since: not waited for again
    assert time.monotonic() - start < 0.2
    assert order.waits == 1


def test_nothing_whole_waiting_means_no_wait():
    order = arrival.ArrivalOrder()
    order.add(1, lambda: False)
    order.add(2, lambda: False)
    order.received(2)
    assert order.waits == 0


def test_a_waiting_thread_is_released_when_the_earlier_request_is_handled():
    order = arrival.ArrivalOrder()
    whole = threading.Event()
    whole.set()
    order.add(1, whole.is_set)
    order.add(2, lambda: False)
    released = threading.Event()

    def second():
        order.received(2)
        released.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not released.wait(0.2)  # connection 1's request came first
    order.received(1)  # does not wait for 2: 2 is itself waiting
    assert not released.is_set()
    order.handled(1)
    assert released.wait(2)
    thread.join()


def test_two_holding_threads_never_wait_on_each_other():
    order = arrival.ArrivalOrder()
    order.add(1, lambda: False)
    order.add(2, lambda: False)
    order.received(1)  # holding, nobody ahead
    done = threading.Event()
    thread = threading.Thread(target=lambda: (order.received(2), done.set()))
    thread.start()  # 2 waits for 1, which holds an unhandled PDU
    assert not done.wait(0.2)
    order.handled(1)
    assert done.wait(2)
    thread.join()
