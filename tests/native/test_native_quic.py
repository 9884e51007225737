"""Native programs on the emulated IPPROTO_QUIC socket: libwirecheck_quic.so in front of cwrap, the
sockets living in the QUIC daemon (wrappers/quic/daemon.py) as ordinary Python QuicSockets.

The C program (tests/native/c/qtest.c) makes plain quic.ko calls; its handshake is the engine's
(wirecheck_quic_handshake) until a TLS library drives the raw HANDSHAKE_INFO interface.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest

from .nativeutil import PYPEER, exec_argv, net_env, python

HOST = "127.0.0.12"


def _errno_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith(("ok ", "FAIL"))]


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan"])
def test_socket_bind_listen_options_errnos(qtest, sockdir, peers, sanitize):
    p = peers.start("errnos", exec_argv(sockdir, 11, str(qtest), "errnos"), net_env(sanitize=sanitize))
    p.finish(rc=None)
    lines = _errno_lines("\n".join(p.lines))
    fails = [ln for ln in lines if ln.startswith("FAIL")]
    assert not fails and p.p.returncode == 0, p.describe()
    assert len(lines) == 35, p.describe()  # every case ran (a crash or an early exit shows here)


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan"])
def test_fionread_siocoutq_sendmmsg_recvmmsg(qtest, sockdir, peers, psk, sanitize):
    """ioctl FIONREAD (SIOCINQ) counts what the daemon has queued for reading, SIOCOUTQ what was written
    and not acknowledged, EINVAL on a listener, FIONBIO passes on; sendmmsg and recvmmsg are loops over
    sendmsg/recvmsg (three messages on three streams in one call each, MSG_WAITFORONE, EAGAIN)."""
    env = net_env(sanitize=sanitize)
    srv = peers.start("mmsg-server", exec_argv(sockdir, 12, str(qtest), "mmsg-server", HOST, "4443", psk), env)
    srv.expect("ready")
    cli = peers.start("mmsg-client", exec_argv(sockdir, 11, str(qtest), "mmsg-client", HOST, "4443", psk), env)
    cli.expect("done", timeout=60)
    srv.expect("done", timeout=60)
    cli.finish(rc=None)
    srv.finish(rc=None)
    for p, cases in ((srv, 6), (cli, 4)):
        oks = [ln for ln in p.lines if ln.startswith("ok ")]
        assert p.p.returncode == 0 and len(oks) == cases, p.describe()


@pytest.mark.parametrize("mode", ["plain", "fork", "dup", "pass", "pass-asan"])
def test_native_client_native_server(qtest, sockdir, peers, psk, mode, tmp_path):
    """fork: the child echoes on the fd its parent accepted (and closed); dup: on a dup of a dup, the
    original closed; pass: a process that existed before the fd receives it by SCM_RIGHTS, with other
    settings (so another daemon of its own) than the process that made the socket. pass-asan: the same
    with the ASan+UBSan build of the library (a sanitizer report aborts the program)."""
    env = net_env(sanitize=mode.endswith("-asan"))
    mode = mode.removesuffix("-asan")
    srv = peers.start("server", exec_argv(sockdir, 12, str(qtest), "server", HOST, "4433", psk, mode), env)
    srv.expect("ready")
    cli = peers.start("client", exec_argv(sockdir, 11, str(qtest), "client", HOST, "4433", psk, f"hello {mode}"), env)
    cli.finish()
    assert cli.lines == [f"HELLO {mode.upper()}"], cli.describe()
    srv.finish()
    echoed = next(ln for ln in srv.lines if ln.startswith("echoed"))
    pid = int(echoed.rsplit(" ", 1)[1])
    # the server's wirecheck exec runs the program as its child: a fork/pass echo comes from a grandchild
    if mode in ("fork", "pass"):
        assert pid != srv.p.pid and pid not in _children(srv.p.pid), srv.describe()
    assert "closed: errno 107" in srv.lines, srv.describe()  # the client's close arrived: ENOTCONN


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.parametrize("carrier", ["seqpacket", "udp"])
def test_native_and_python_peers_both_ways(qtest, sockdir, peers, psk, carrier, tmp_path):
    env = net_env(carrier=carrier)
    pcap = tmp_path / "mixed.pcap"
    srv = peers.start("pyserver", exec_argv(sockdir, 12, python(), PYPEER, "server", HOST, "4434", psk, pcap=pcap), env)
    srv.expect("ready")
    cli = peers.start("cclient", exec_argv(sockdir, 11, str(qtest), "client", HOST, "4434", psk, "c to python",
                                           pcap=pcap), env)
    cli.finish()
    assert cli.lines == ["C TO PYTHON"], cli.describe()
    srv.finish()
    srv2 = peers.start("cserver", exec_argv(sockdir, 12, str(qtest), "server", HOST, "4435", psk, pcap=pcap), env)
    srv2.expect("ready")
    cli2 = peers.start("pyclient", exec_argv(sockdir, 11, python(), PYPEER, "client", HOST, "4435", psk, pcap=pcap),
                       env)
    cli2.expect("connected")
    cli2.say("fin python to c")
    cli2.say("recv")
    cli2.expect("PYTHON TO C")
    cli2.say("close")
    cli2.finish()
    srv2.finish()
    from tsharkutil import fields

    rows = fields(pcap, ["ip.src", "ip.dst", "quic.stream_data"], display_filter="quic.stream.stream_id",
                  options=["-o", f"tls.keylog_file:{tmp_path / 'mixed.keys'}"])
    data = {bytes.fromhex(r[2].replace(":", "")) for r in rows if r[2]}
    assert {b"c to python", b"C TO PYTHON", b"python to c", b"PYTHON TO C"} <= data, rows


def test_epoll_level_and_edge_triggered(qtest, sockdir, peers, psk):
    """Readiness is exactly "a recvmsg would not block": nothing queued, data, a partial read, empty."""
    env = net_env()
    srv = peers.start("cserver", exec_argv(sockdir, 12, str(qtest), "server", HOST, "4436", psk, "epoll"), env)
    srv.expect("ready")
    cli = peers.start("pyclient", exec_argv(sockdir, 11, python(), PYPEER, "client", HOST, "4436", psk), env)
    cli.expect("connected")
    srv.expect("go")
    time.sleep(0.3)  # the server's epoll_wait(0) saw nothing; now data arrives
    cli.say("send hello world!")
    cli.expect("sent")
    srv.expect("ok LT: queue empty")
    srv.expect("go")
    time.sleep(0.3)
    cli.say("send second")
    srv.expect("ok ET: read it")
    srv.finish()
    cli.say("close")
    cli.finish()
    assert not [ln for ln in srv.lines if ln.startswith("FAIL")], srv.describe()
    assert len([ln for ln in srv.lines if ln.startswith("ok ")]) == 12, srv.describe()


def test_sigkill_mid_transfer_leaves_the_peer_a_close(qtest, sockdir, peers, psk):
    """A native sender killed by SIGKILL in the middle of a stream: the daemon sees its fd close and
    sends CONNECTION_CLOSE at once (the Python receiver gets ENOTCONN in well under the 30 s idle
    timeout), and the daemon of the killed program's host goes on serving the next connection."""
    env = net_env()
    sink = peers.start("pysink", exec_argv(sockdir, 12, python(), PYPEER, "sink", HOST, "4437", psk), env)
    sink.expect("ready")
    src = peers.start("csource", exec_argv(sockdir, 11, str(qtest), "source", HOST, "4437", psk, str(1 << 34)), env)
    sink.expect("got", timeout=60)
    src.kill()
    t0 = time.monotonic()
    line = sink.expect("closed", timeout=15)
    assert time.monotonic() - t0 < 10, sink.describe()
    assert int(line.split()[1]) >= 1 << 20 and line.split()[2] == "107", line
    sink.finish()
    # a new pair on the same hosts (host 11's daemon, unless it left for being idle)
    srv = peers.start("cserver", exec_argv(sockdir, 12, str(qtest), "server", HOST, "4438", psk), env)
    srv.expect("ready")
    cli = peers.start("cclient", exec_argv(sockdir, 11, str(qtest), "client", HOST, "4438", psk, "after"), env)
    cli.finish()
    assert cli.lines == ["AFTER"]
    srv.finish()


@pytest.mark.parametrize("way", ["client-sends", "server-sends"])
@pytest.mark.parametrize("size", [8 << 20, pytest.param(64 << 20, marks=pytest.mark.slow)], ids=["8MiB", "64MiB"])
def test_bulk_native_to_native_sha256(qtest, sockdir, peers, psk, size, way):
    env = net_env()
    t0 = time.monotonic()
    if way == "client-sends":
        sink = peers.start("csink", exec_argv(sockdir, 12, str(qtest), "sink", HOST, "4439", psk), env)
        sink.expect("ready")
        src = peers.start("csource", exec_argv(sockdir, 11, str(qtest), "source", HOST, "4439", psk, str(size)), env)
    else:
        src = peers.start("csource", exec_argv(sockdir, 12, str(qtest), "source-listen", HOST, "4439", psk, str(size)),
                          env)
        src.expect("ready")
        sink = peers.start("csink", exec_argv(sockdir, 11, str(qtest), "sink-connect", HOST, "4439", psk), env)
    sent = src.expect("sent", timeout=600)
    got = sink.expect("received", timeout=600)
    elapsed = time.monotonic() - t0
    src.finish(timeout=60)
    sink.finish(timeout=60)
    assert sent.split()[1:] == got.split()[1:] == [str(size), got.split()[2]]
    assert re.fullmatch(r"[0-9a-f]{64}", got.split()[2])
    print(f"{size >> 20} MiB native -> native ({way}) in {elapsed:.1f}s: {size / elapsed / 1e6:.1f} MB/s")


def test_python_sink_sha256_matches_native_source(qtest, sockdir, peers, psk):
    env = net_env()
    sink = peers.start("pysink", exec_argv(sockdir, 12, python(), PYPEER, "sink", HOST, "4440", psk), env)
    sink.expect("ready")
    src = peers.start("csource", exec_argv(sockdir, 11, str(qtest), "source", HOST, "4440", psk, str(3 << 20)), env)
    sent = src.expect("sent", timeout=120)
    got = sink.expect("received", timeout=120)
    assert sent.split()[1:] == got.split()[1:]
    src.finish()  # the source waits for the sink's one-byte answer, then closes; the sink waits for that
    sink.finish()
    assert hashlib.sha256(b"").hexdigest() != got.split()[2]


def test_a_program_writing_garbage_into_its_fd_is_cut_off_alone(qtest, sockdir, peers, psk):
    """Bad input: bytes written behind the library's back (a raw write(2)) into the daemon's side of the
    pair. That socket is closed (its peer gets a close, the program EPIPE / ENOTCONN); a connection of
    another program on the same daemon goes on working."""
    env = net_env()
    other_srv = peers.start("cserver", exec_argv(sockdir, 12, str(qtest), "server", HOST, "4441", psk), env)
    other_srv.expect("ready")
    other = peers.start("pyclient", exec_argv(sockdir, 11, python(), PYPEER, "client", HOST, "4441", psk), env)
    other.expect("connected")
    # the bad program is on host 12, whose daemon also holds the other connection's server socket
    sink = peers.start("pysink", exec_argv(sockdir, 13, python(), PYPEER, "sink", "127.0.0.13", "4442", psk), env)
    sink.expect("ready")
    bad = peers.start("garbage", exec_argv(sockdir, 12, str(qtest), "garbage", "127.0.0.13", "4442", psk), env)
    line = bad.expect("cut off")
    bad.finish()
    assert line.startswith("cut off: send errno 32, recv errno 107"), bad.describe()  # EPIPE, ENOTCONN
    assert sink.expect("closed").split()[2] == "107"  # the peer saw the connection close
    other.say("fin still here")
    other.say("recv")
    other.expect("STILL HERE")
    other.say("close")
    other.finish()
    other_srv.finish()


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan"])
def test_splice_sendfile_tee_on_a_quic_fd(qtest, sockdir, peers, psk, sanitize, tmp_path):
    """quic.ko has no splice_read and no sendpage: splice and sendfile into a QUIC socket are writes, out
    of one into a pipe reads. The C client splices a pipe into its stream (a full stream: EAGAIN with
    nothing taken from the pipe; a child writing the pipe until EOF), sendfiles 1 MiB with and without
    an offset, and the sink's sha256 matches; the sink's answer comes back through splice and sendfile
    into a pipe. Errnos: no pipe at either end, offsets, a QUIC in_fd for sendfile, tee."""
    import os

    data = tmp_path / "file.bin"
    data.write_bytes(os.urandom(1 << 20))
    env = net_env(sanitize=sanitize)
    sink = peers.start("pysink", exec_argv(sockdir, 12, python(), PYPEER, "splice-sink", HOST, "4444", psk), env)
    sink.expect("ready")
    cli = peers.start("splice-client", exec_argv(sockdir, 11, str(qtest), "splice-client", HOST, "4444", psk,
                                                 str(data)), env)
    sink.expect("connected")
    cli.expect("ok non-blocking QUIC fd full", timeout=120)
    sink.say("go")  # the sink reads from now on: the blocked sends go through
    sent = cli.expect("sent", timeout=120)
    got = sink.expect("received", timeout=120)
    cli.expect("done", timeout=60)
    cli.finish()
    sink.finish()
    assert sent.split()[1:] == got.split()[1:], (sent, got)
    assert int(sent.split()[1]) > (1 << 20) + 300000 + 65536
    oks = [ln for ln in cli.lines if ln.startswith("ok ")]
    assert len(oks) == 21 and not [ln for ln in cli.lines if ln.startswith("FAIL")], cli.describe()


def test_every_override_is_in_the_table_and_exported(qtest):
    """The one table of overridden libc entry points (with reasons) matches the library's exports."""
    import ctypes
    import subprocess

    from .nativeutil import REPO

    lib_path = REPO / "native" / "build" / "libwirecheck_quic.so"
    lib = ctypes.CDLL(str(lib_path))
    lib.wirecheck_quic_override.restype = ctypes.c_char_p
    lib.wirecheck_quic_override_reason.restype = ctypes.c_char_p
    table = {}
    i = 0
    while (name := lib.wirecheck_quic_override(i)) is not None:
        reason = lib.wirecheck_quic_override_reason(i)
        assert reason and len(reason) > 10, name
        table[name.decode()] = reason.decode()
        i += 1
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib_path)], capture_output=True, text=True,
                         check=True).stdout
    exported = {ln.split()[-1] for ln in out.splitlines() if " T " in ln}
    ours = {n for n in exported if n.startswith("wirecheck_")}
    assert exported - ours == set(table), (sorted(exported - ours), sorted(table))
    assert ours == {"wirecheck_quic_handshake", "wirecheck_quic_override", "wirecheck_quic_override_reason",
                    "wirecheck_smbdirect_register", "wirecheck_smbdirect_deregister", "wirecheck_smbdirect_rdma_read"}


def test_protocol_headers_match_between_c_and_python(tmp_path):
    from wrappers.quic import native_proto as P

    from .nativeutil import REPO, need_toolchain

    need_toolchain()
    src = tmp_path / "layout.c"
    src.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "wqd_proto.h"\n'
                   "int main(void){printf(\"%zu %zu %zu %zu %zu %zu\\n\", sizeof(struct wqd_req), "
                   "sizeof(struct wqd_rep), sizeof(struct wqd_anc), offsetof(struct wqd_req, len2), "
                   "offsetof(struct wqd_rep, aux), offsetof(struct wqd_rep, aux2)); return 0;}\n")
    import subprocess

    subprocess.run(["gcc", "-I", str(REPO / "native"), "-o", str(tmp_path / "layout"), str(src)], check=True)
    got = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True, check=True).stdout.split()
    assert [int(x) for x in got] == [P.REQ.size, P.REP.size, P.ANC.size, 28, 20, 24]
    r = P.Request(P.OP_SENDMSG, 1, 2, 3, 4, b"abc", [(288, 0, b"x" * 16)])
    assert P.Request.unpack(r.pack()) == r


def test_a_stopped_program_keeps_its_connection_alive(qtest, sockdir, peers, psk, tmp_path):
    """Timers run in the daemon, not in the program: a client with a 3 s idle timeout and a 1.5 s
    keepalive is stopped (SIGSTOP) for 6 s; its keepalive PINGs go on, so after SIGCONT the connection
    still works. (With the engine inside the program, the stop would outlast the idle timeout.)"""
    import os
    import signal

    env = net_env()
    pcap = tmp_path / "stop.pcap"
    srv = peers.start("cserver", exec_argv(sockdir, 12, str(qtest), "server", HOST, "4443", psk, pcap=pcap), env)
    srv.expect("ready")
    cli = peers.start("cidle", exec_argv(sockdir, 11, str(qtest), "idle", HOST, "4443", psk, "still alive", pcap=pcap),
                      env)
    cli.expect("connected")
    os.killpg(cli.p.pid, signal.SIGSTOP)
    stopped_at = time.time()
    time.sleep(6)
    os.killpg(cli.p.pid, signal.SIGCONT)
    cli.say("go")
    cli.expect("STILL ALIVE")
    cli.finish()
    srv.finish()
    from tsharkutil import fields

    rows = fields(pcap, ["frame.time_epoch"], display_filter="quic.frame_type == 0x01 && ip.src == 127.0.0.11",
                  options=["-o", f"tls.keylog_file:{tmp_path / 'stop.keys'}"])
    pings = [float(r[0]) for r in rows if r[0] and stopped_at < float(r[0]) < stopped_at + 6]
    assert len(pings) >= 2, rows  # PINGs from the stopped client's engine during the stop


def test_a_native_program_that_reads_nothing_holds_the_sender_back(qtest, sockdir, peers, psk):
    """Flow control reaches a native receiver: the program connects and then reads nothing (qtest idle,
    waiting on stdin); a Python server sending to it without blocking must meet EAGAIN, as towards
    quic.ko, once the stream's window and the receive buffer are full. The daemon, which checks the
    program's readiness on every arrival, used to take every item out of the engine's pair, so credit
    kept coming back: the sender was never held and the daemon queued whatever came (64 MiB here,
    256 MiB in a longer run)."""
    env = net_env()
    srv = peers.start("pyflood", exec_argv(sockdir, 12, python(), PYPEER, "flood", HOST, "4450", psk), env)
    srv.expect("ready")
    cli = peers.start("cidle", exec_argv(sockdir, 11, str(qtest), "idle", HOST, "4450", psk, "x"), env)
    cli.expect("connected")
    line = srv.expect("flood ", timeout=120)
    assert line.startswith("flood held "), f"{line}\n{srv.describe()}"
    held = int(line.split()[2])
    assert 0 < held < 32 << 20, line  # stream window + the pair's buffer + the socket's queue
    srv.finish(timeout=30)
    cli.kill()  # the whole process group: qtest itself, not only the `wirecheck exec` in front of it
