"""The synthesized TCP close stays consistent whatever the interleaving of the closers.

Nothing on a unix stream socket has sequence numbers: each end invents them (wrappers/tcplog.py)
and the closer logs its FIN and the peer's ACK of it. When both ends close at the same moment
from two threads or processes, the second closer must see the first one's FIN exactly when the
capture already shows it; when a socket passed with SCM_RIGHTS is closed by one holder while
another still has it, the FIN goes out with the last close, as the kernel sends it.

Each test forces its interleaving instead of hoping for it: the seam
``wrappers.stream._after_fin_logged`` runs after the first closer wrote its FIN record and holds
it there until the second closer has logged its own FIN, or for at most PAUSE seconds (with the
fix the second closer cannot log before the first one's real close, so the pause runs out). A
version that writes the FIN record and does the real shutdown in two steps lets the second closer
in between and fails these tests ("TCP Keep-Alive", "ACKed unseen segment", a FIN acking one byte
too few).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tsharkutil
from procutil import PcapCheck, Procs, pcaps, procs, py_peer, sockdir, tuples, wirecheck_exec  # noqa: F401
from wrapfix import swdir, wrapped_pcap  # noqa: F401

from wrappers import stream

PAUSE = 1.5
PORT = 4100


class FirstCloserPause:
    """The seam: the first FIN logged waits until a second FIN is logged (or PAUSE runs out)."""

    def __init__(self) -> None:
        self.first_logged = threading.Event()
        self.second_logged = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.first_logged.set()
            self.second_logged.wait(PAUSE)
        else:
            self.second_logged.set()


@pytest.fixture
def seam(monkeypatch: pytest.MonkeyPatch) -> Iterator[FirstCloserPause]:
    pause = FirstCloserPause()
    monkeypatch.setattr(stream, "_after_fin_logged", pause)
    yield pause


def _connected(family: int) -> tuple[socket.socket, socket.socket]:
    host = "127.0.0.11" if family == socket.AF_INET else "fd00::5357:5f0b"
    lst = socket.socket(family, socket.SOCK_STREAM)
    lst.bind((host, PORT))
    lst.listen(1)
    client = socket.socket(family, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect((host, PORT))
    server, _ = lst.accept()
    server.settimeout(5)
    lst.close()
    return client, server


def _race(first: Callable[[], None], second: Callable[[], None], seam: FirstCloserPause) -> None:
    """Run ``first`` in a thread; once its FIN is logged, run ``second`` in another; join both."""
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported by the join below
                errors.append(e)
        return run

    t1 = threading.Thread(target=guarded(first), name="first-closer")
    t1.start()
    assert seam.first_logged.wait(10), "the first closer never logged its FIN"
    t2 = threading.Thread(target=guarded(second), name="second-closer")
    t2.start()
    for t in (t1, t2):
        t.join(10)
        assert not t.is_alive(), f"{t.name} hung"
    assert not errors, errors
    assert seam.calls == 2, f"expected two FINs logged, the seam ran {seam.calls} times"


def _fins(pcap: str) -> list[list[str]]:
    return tsharkutil.fields(Path(pcap), ["ip.src", "ipv6.src", "tcp.seq", "tcp.ack"],
                             display_filter="tcp.flags.fin == 1")


FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


@pytest.mark.parametrize("fam", list(FAMILIES))
def test_simultaneous_close(wrapped_pcap, seam: FirstCloserPause, pcaps: PcapCheck, fam: str) -> None:  # noqa: F811
    """Both ends close() at once: each FIN acks the other's FIN exactly when it was logged before."""
    _cfg, pcap = wrapped_pcap
    client, server = _connected(FAMILIES[fam])
    client.sendall(b"request")
    assert server.recv(100) == b"request"
    server.sendall(b"reply!")
    assert client.recv(100) == b"reply!"
    _race(client.close, server.close, seam)
    pcaps.assert_clean(Path(pcap))
    fins = _fins(pcap)
    assert len(fins) == 2, fins
    # client FIN: seq 1+7, it had not seen the server's FIN yet (ack 1+6); server FIN acks the client FIN.
    assert [f[2:] for f in fins] == [["8", "7"], ["7", "9"]], fins


def test_shutdown_against_close(wrapped_pcap, seam: FirstCloserPause, pcaps: PcapCheck) -> None:  # noqa: F811
    """http.server's pattern: the server sends its answer and shuts down; the client, having read
    the answer but not the EOF, closes at that moment. Its FIN must ack the server's FIN."""
    _cfg, pcap = wrapped_pcap
    client, server = _connected(socket.AF_INET)
    client.sendall(b"GET")
    assert server.recv(100) == b"GET"
    server.sendall(b"x" * 1508)
    got = b""
    while len(got) < 1508:
        got += client.recv(4096)

    def server_done() -> None:
        server.shutdown(socket.SHUT_WR)

    _race(server_done, client.close, seam)
    server.close()
    pcaps.assert_clean(Path(pcap))
    fins = _fins(pcap)
    assert [f[2:] for f in fins] == [["1509", "4"], ["4", "1510"]], fins


def test_close_with_unread_data_racing_the_peer(wrapped_pcap, seam: FirstCloserPause, pcaps: PcapCheck) -> None:  # noqa: F811
    """The server sends its last data and closes; the client closes without reading it: a RST
    whose ack covers the data and the server's FIN, as Linux sends."""
    _cfg, pcap = wrapped_pcap
    client, server = _connected(socket.AF_INET)
    client.sendall(b"hello")
    assert server.recv(100) == b"hello"

    def server_last_words() -> None:
        server.sendall(b"last data")
        server.close()

    _race(server_last_words, client.close, seam)
    found = tsharkutil.problems(Path(pcap))
    # The RST itself is tshark's only remark ("Connection reset (RST)"): no analysis flag anywhere.
    assert [(r[0], r[2], r[4]) for r in found] == [("8", "Connection reset (RST)", "")], found
    pcaps.checked.add(Path(pcap))
    rst = tsharkutil.fields(Path(pcap), ["tcp.seq", "tcp.ack"], display_filter="tcp.flags.reset == 1")
    assert rst == [["6", "11"]], rst  # after "hello"; acks SYN + 9 bytes + the server's FIN


# -- a socket passed to another process --------------------------------------------------------------


def test_passed_socket_closed_by_receiver_while_sender_holds_it(procs: Procs, sockdir: Path, tmp_path: Path,  # noqa: F811
                                                               pcaps: PcapCheck) -> None:  # noqa: F811
    """The receiver of a passed socket closes it while the sender still holds its copy: no FIN
    yet (the kernel sends none); the sender's later close is the last one and logs the FIN, with
    the sequence numbers of everything the receiver sent and received."""
    pcap = pcaps.new()
    channel = str(tmp_path / "chan")
    go = tmp_path / "go"
    no_native = ["--no-native"]
    server = procs.start("server", wirecheck_exec(sockdir, *py_peer("tcp-server", "127.0.0.10", "445", "1"),
                                                  iface=10, pcap=pcap, extra=no_native))
    server.expect("ready")
    child = procs.start("child", wirecheck_exec(sockdir, *py_peer("fdpass-child", channel, "conn"), iface=11,
                                                pcap=pcap, extra=no_native))
    child.expect("ready")
    parent = procs.start("parent", wirecheck_exec(
        sockdir, *py_peer("fdpass-parent-conn-hold", channel, "127.0.0.10", "445", str(go)), iface=11, pcap=pcap,
        extra=no_native))
    parent.expect("passed")
    assert tuples(child.expect("reply"))["reply"] == "FROM CHILD"
    child.expect("done")
    child.finish()
    assert _fins(str(pcap)) == [], "the receiver's close is not the last: no FIN may be logged yet"
    go.touch()
    parent.expect("closed")
    parent.finish()
    assert tuples(server.expect("done"))["eof"] is True
    server.finish()
    pcaps.assert_clean(pcap)
    fins = _fins(str(pcap))
    assert [f[0] for f in fins] == ["127.0.0.11", "127.0.0.10"], fins
    # The child sent a 4-byte length + "from child" (14 bytes) and read "FROM CHILD" back.
    assert [f[2:] for f in fins] == [["15", "15"], ["15", "16"]], fins
