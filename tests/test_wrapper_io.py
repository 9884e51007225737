"""asyncio, fd passing, pcap records and impairments through the emulated sockets of one process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import time

import pytest
from threadutil import joined
from tsharkutil import tshark_path as require_tshark
from wrapfix import swdir, wrapped, wrapped_pcap  # noqa: F401

from wrappers import impair

V4, V6 = socket.AF_INET, socket.AF_INET6
CHECKS = ["-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]
PROBLEMS = ("_ws.malformed || _ws.expert.severity >= warning || tcp.analysis.retransmission || "
            "tcp.analysis.out_of_order || tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment || "
            "ip.checksum.status == 0 || tcp.checksum.status == 0 || udp.checksum.status == 0")


def tshark_fields(pcap, *fields, display_filter=None):
    cmd = [require_tshark(), "-r", pcap, *CHECKS, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    if display_filter:
        cmd += ["-Y", display_filter]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines()]


def assert_clean(pcap):
    bad = tshark_fields(pcap, "frame.number", "_ws.col.Info", display_filter=PROBLEMS)
    assert bad == [], f"tshark flags frames in {pcap}: {bad}"


@pytest.fixture(autouse=True)
def _no_impairment():
    impair.configure("")
    yield
    impair.configure(None)
    impair.reset()


# -- asyncio ------------------------------------------------------------------------------------

@pytest.mark.parametrize("family,host", [(V4, "127.0.0.10"), (V6, "fd00::5357:5f0a")])
def test_asyncio_streams(wrapped, family, host):
    async def main():
        async def handle(reader, writer):
            data = await reader.read(100)
            writer.write(data.upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, host, 8080)
        reader, writer = await asyncio.open_connection(host, 8080)
        writer.write(b"hello")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(100), 5)
        peer = writer.get_extra_info("peername")
        writer.close()
        server.close()
        await server.wait_closed()
        return reply, peer

    reply, peer = asyncio.run(asyncio.wait_for(main(), 20))
    assert reply == b"HELLO" and peer[:2] == (host, 8080)


def test_asyncio_datagrams(wrapped):
    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.t = transport

            def datagram_received(self, data, addr):
                self.t.sendto(data[::-1], addr)

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.set_result((data, addr))

        st, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.10", 5353))
        ct, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.10", 5353))
        ct.sendto(b"abc")
        result = await asyncio.wait_for(got, 5)
        st.close()
        ct.close()
        return result

    assert asyncio.run(main()) == (b"cba", ("127.0.0.10", 5353))


# -- fd passing ---------------------------------------------------------------------------------

def test_passed_socket_keeps_its_identity(wrapped):
    srv = socket.socket(V4)
    srv.bind(("127.0.0.10", 6000))
    srv.listen()
    a, b = socket.socketpair()
    socket.send_fds(a, [b"x"], [srv.fileno()])
    _, fds, _, _ = socket.recv_fds(b, 10, 1)
    # a new object over the received fd, as a receiving process would make it
    from wrappers import meta

    meta.forget(meta.lookup(srv.fileno()))  # forget what this process knows: rebuild from the kernel + sidecar
    passed = socket.socket(fileno=fds[0])
    assert passed.family == V4 and passed.getsockname() == ("127.0.0.10", 6000)
    c = socket.create_connection(("127.0.0.10", 6000), timeout=5)
    conn, peer = passed.accept()
    assert peer == c.getsockname()
    for s in (a, b, c, conn, passed, srv):
        s.close()


# -- pcap -----------------------------------------------------------------------------------------

def test_pcap_each_packet_once_with_both_ends_in_process(wrapped_pcap):
    cfg, pcap = wrapped_pcap
    srv = socket.socket(V4)
    srv.bind(("127.0.0.10", 445))
    srv.listen()
    c = socket.create_connection(("127.0.0.10", 445), timeout=5)
    conn, _ = srv.accept()
    conn.settimeout(5)
    big = os.urandom(200 * 1024)  # larger than one IP packet: split into segments
    c.sendall(big)
    got = b""
    while len(got) < len(big):
        got += conn.recv(1 << 20)
    conn.sendall(b"reply")
    assert c.recv(10) == b"reply"
    c.close()
    assert conn.recv(10) == b""
    conn.close()
    u = socket.socket(V6, socket.SOCK_DGRAM)
    u.bind(("fd00::5357:5f0a", 7))
    v = socket.socket(V6, socket.SOCK_DGRAM)
    for i in range(3):
        v.sendto(b"datagram %d" % i, ("fd00::5357:5f0a", 7))
        u.recvfrom(100)
    assert_clean(pcap)
    rows = tshark_fields(pcap, "tcp.flags.str", "tcp.len", display_filter="tcp")
    flags = [r[0] for r in rows]
    assert flags.count("··········S·") == 1 and flags.count("·······A··S·") == 1  # one handshake
    assert sum(int(r[1]) for r in rows) == len(big) + 5  # every byte exactly once
    assert flags.count("·······A···F") == 2  # one FIN each way
    assert len(tshark_fields(pcap, "udp.length", display_filter="udp")) == 3


def test_pcap_blocking_receives_keep_the_acks_right(wrapped_pcap):
    """Blocking sockets whose peer logs take the receive fast path (a blocking recv that only
    counts): the replies' acks must still cover every byte received, by recv and by recv_into."""
    _, pcap = wrapped_pcap
    srv = socket.socket(V4)
    srv.bind(("127.0.0.10", 446))
    srv.listen()
    c = socket.create_connection(("127.0.0.10", 446))
    conn, _ = srv.accept()
    assert c.gettimeout() is None and conn.gettimeout() is None
    expected_acks = []
    buf = bytearray(70000)
    received = 0
    for i, size in enumerate((100, 3000, 66000, 7)):
        c.sendall(bytes([i]) * size)
        got = 0
        while got < size:  # the first receive learns that the peer logs; the rest take the fast path
            got += conn.recv_into(buf, size - got) if i % 2 else len(conn.recv(size - got))
        received += size
        conn.sendall(b"ok")
        assert c.recv(2) == b"ok"
        expected_acks.append(1 + received)  # the SYN counts one
    c.close()
    assert conn.recv(10) == b""
    conn.close()
    assert_clean(pcap)
    rows = tshark_fields(pcap, "tcp.ack", display_filter="tcp.srcport == 446 && tcp.len == 2")
    assert [int(r[0]) for r in rows] == expected_acks


def test_pcap_connect_failure_shows_icmp(wrapped_pcap):
    _, pcap = wrapped_pcap
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.99", 80), timeout=2)
    u = socket.socket(V6, socket.SOCK_DGRAM)
    # A fixed source port: from an ephemeral one, Wireshark may pick a dissector by that port (about 1
    # in 1400 of them, e.g. 12000 as LLC) and call the 1-byte datagram malformed, so the check below
    # would fail or pass with the process id that chose the port.
    u.bind(("::", 4445))
    with pytest.raises(OSError):
        u.sendto(b"x", ("fd00::5357:5f30", 4444))
    assert tshark_fields(pcap, "udp.srcport", display_filter="udp && !icmpv6") == [["4445"]]
    rows = tshark_fields(pcap, "frame.protocols", "icmp.type", "icmpv6.type")
    assert any("icmp" in r[0] and r[1] == "3" for r in rows)
    assert any("icmpv6" in r[0] and r[2] == "1" for r in rows)
    assert tshark_fields(pcap, "frame.number", display_filter="_ws.malformed") == []


# -- impairments ----------------------------------------------------------------------------------

def udp_pair(port=4000):
    r = socket.socket(V4, socket.SOCK_DGRAM)
    r.bind(("127.0.0.10", port))
    r.setblocking(False)
    s = socket.socket(V4, socket.SOCK_DGRAM)
    s.bind(("127.0.0.11", port + 1))
    return s, r


def drain(r, wait=0.3):
    got = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            got.append(r.recv(2000))
        except BlockingIOError:
            time.sleep(0.01)
    return got


def run_fates(spec, n=200, expect=None):
    """Send n numbered datagrams through the impairment; what arrived, in order of arrival.

    With ``expect`` (a spec that loses nothing) the reader waits for that many datagrams however
    late the delayed ones come on a loaded machine; otherwise it stops after 0.5 s of silence."""
    impair.reset()
    impair.configure(spec)
    s, r = udp_pair()
    r.setblocking(True)
    r.settimeout(0.5 if expect is None else 10)
    got = []

    def reader():
        try:
            while expect is None or len(got) < expect:
                got.append(r.recv(2000))
        except TimeoutError:
            pass

    t = threading.Thread(target=reader)
    t.start()
    for i in range(n):
        s.sendto(b"%05d" % i, ("127.0.0.10", 4000))
    joined(t, 15)
    s.close()
    r.close()
    return got


def test_same_seed_same_fate_through_the_socket(wrapped):
    spec = "seed=7; out: loss=20% burst=2 dup=5% corrupt=2%"
    first, second = run_fates(spec), run_fates(spec)
    assert first == second
    assert 100 < len(first) < 200
    other = run_fates("seed=8; out: loss=20% burst=2 dup=5% corrupt=2%")
    assert other != first


def test_drop_list_and_reorder(wrapped):
    got = run_fates("out: drop=0,5-7", n=10)
    assert got == [b"%05d" % i for i in (1, 2, 3, 4, 8, 9)]
    got = run_fates("seed=3; out: reorder=30% reorder_delay=50ms", n=50, expect=50)
    assert sorted(got) == [b"%05d" % i for i in range(50)] and got != sorted(got)


def test_delay_does_not_sleep_the_sender(wrapped):
    impair.configure("out: delay=200ms")
    s, r = udp_pair(4100)
    t0 = time.monotonic()
    s.sendto(b"late", ("127.0.0.10", 4100))
    assert time.monotonic() - t0 < 0.1  # the application is never slept
    with pytest.raises(BlockingIOError):
        r.recv(10)
    r.settimeout(2)
    assert r.recv(10) == b"late"
    assert time.monotonic() - t0 >= 0.19


def test_rebind_changes_the_source_the_peer_sees(wrapped):
    impair.configure("out: rebind=port@2")
    s, r = udp_pair(4200)
    r.settimeout(2)
    sources = []
    for _ in range(4):
        s.sendto(b"x", ("127.0.0.10", 4200))
        sources.append(r.recvfrom(10)[1])
    assert sources[0] == sources[1] != sources[2] == sources[3]
    assert s.getsockname() == ("127.0.0.11", 4201)  # behind the NAT the application sees no change
    r.sendto(b"to new port", sources[3])
    s.settimeout(2)
    assert s.recv(100) == b"to new port"


def tcp_pair(port):
    srv = socket.socket(V4)
    srv.bind(("127.0.0.10", port))
    srv.listen()
    c = socket.create_connection(("127.0.0.10", port), timeout=5)
    conn, _ = srv.accept()
    conn.settimeout(5)
    srv.close()
    return c, conn


def test_stream_cut_rst_after_bytes(wrapped):
    impair.configure("match: tcp; out: cut=rst@1000")
    c, conn = tcp_pair(4300)
    c.sendall(b"a" * 600)
    c.sendall(b"b" * 600)  # crosses the limit: 400 of these go out, then the reset
    got = b""
    with pytest.raises(ConnectionResetError):
        while True:
            chunk = conn.recv(4096)
            got += chunk
            if not chunk:
                break
    assert got == b"a" * 600 + b"b" * 400
    with pytest.raises(ConnectionResetError):
        c.send(b"after")


def test_stream_cut_blackhole_at_time(wrapped):
    impair.configure("match: tcp; out: cut=blackhole@0.2s")
    c, conn = tcp_pair(4400)
    c.sendall(b"early")
    assert conn.recv(10) == b"early"
    time.sleep(0.3)
    c.sendall(b"lost")  # accepted, never delivered
    conn.settimeout(0.3)
    with pytest.raises(TimeoutError):
        conn.recv(10)


def test_stream_delay_keeps_order_and_data(wrapped):
    impair.configure("match: tcp; out: delay=50ms jitter=20ms")
    c, conn = tcp_pair(4500)
    payload = os.urandom(300_000)
    sender = threading.Thread(target=lambda: [c.sendall(payload[i:i + 7000]) for i in range(0, len(payload), 7000)])
    t0 = time.monotonic()
    sender.start()
    got = b""
    while len(got) < len(payload):
        got += conn.recv(65536)
    sender.join()
    assert got == payload and time.monotonic() - t0 >= 0.03


def test_shutdown_waits_for_delayed_bytes(wrapped):
    """With a stream delay, the FIN must not overtake the bytes still in the delay queue."""
    impair.configure("match: tcp; out: delay=30ms jitter=10ms")
    c, conn = tcp_pair(4600)
    payload = os.urandom(200_000)
    c.sendall(payload)
    c.shutdown(socket.SHUT_WR)  # returns at once; the FIN follows the queued bytes
    got = b""
    while chunk := conn.recv(65536):
        got += chunk
    assert got == payload


def test_shutdown_with_unread_data_is_a_fin_not_a_reset(wrapped_pcap):
    """Linux sends RST for close() with unread bytes, never for shutdown(SHUT_WR)."""
    _, pcap = wrapped_pcap
    c, conn = tcp_pair(4700)
    conn.sendall(b"unread reply")
    time.sleep(0.05)
    c.shutdown(socket.SHUT_WR)  # the reply still sits unread in c's queue
    assert conn.recv(10) == b""
    assert c.recv(100) == b"unread reply"
    conn.close()
    c.close()
    assert_clean(pcap)
    assert tshark_fields(pcap, "frame.number", display_filter="tcp.flags.reset == 1") == []


def test_delayed_datagrams_wait_for_a_slow_reader(wrapped):
    """A unix receiver queues 10 datagrams; a real UDP buffer holds hundreds. Delayed datagrams
    (here all 30, by reorder=100%) that meet a full queue must wait for the reader, not vanish."""
    impair.reset()
    impair.configure("seed=1; out: reorder=100% reorder_delay=20ms")
    s, r = udp_pair()
    try:
        for i in range(30):
            s.sendto(b"%05d" % i, ("127.0.0.10", 4000))
        time.sleep(0.2)  # every timer has fired into a queue of 10 by now
        r.settimeout(5)
        got = sorted(r.recv(2000) for _ in range(30))
        assert got == [b"%05d" % i for i in range(30)]
    finally:
        s.close()
        r.close()
        impair.reset()
