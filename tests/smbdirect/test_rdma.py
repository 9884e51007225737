"""RDMA READ/WRITE between two processes: 64 MiB both ways with sha256 (process_vm_* and memfd),
only registered ranges reachable, invalidation (deregister and SEND with Invalidate), the peer
process dying mid-transfer."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import socket
import threading
import time

import pytest

from wrappers import smbdirect as sd

MODES = ["vm", "memfd"]
BIG = 64 * 1024 * 1024


def connect(mode: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, sd.IPPROTO_SMBDIRECT)
    s.settimeout(20)
    s.connect(("127.0.0.2", 445))
    want = sd.RDMA_MODE_MEMFD if mode == "memfd" else sd.RDMA_MODE_VM
    assert s.getsockopt(sd.SOL_SMBDIRECT, sd.SMBDIRECT_RDMA_MODE) == want
    return s


def cmd(s: socket.socket, text: str) -> None:
    s.send(text.encode())


@pytest.fixture(params=MODES)
def mode(request, monkeypatch):
    monkeypatch.setenv("WIRECHECK_SMBDIRECT_RDMA", "memfd" if request.param == "memfd" else "auto")
    return request.param


def test_64mib_read_and_write_through_rdma(net, peer, mode):
    p = peer()
    s = connect(mode)
    p.expect("accepted")
    # SMB2 READ shape: we register, the peer RDMA-WRITEs into our buffer.
    dest = bytearray(BIG)
    descs = s.register(dest, sd.RDMA_REMOTE_WRITE)
    t0 = time.monotonic()
    cmd(s, f"PUSH 7 {sd.encode_descriptors(descs).hex()}")
    sha = p.expect("pushed", 60)["sha"]
    s.deregister(descs)  # memfd mode copies back here
    assert hashlib.sha256(dest).hexdigest() == sha
    # SMB2 WRITE shape: we register, the peer RDMA-READs from it.
    src = bytearray(random.Random(9).randbytes(BIG))
    descs = s.register(src, sd.RDMA_REMOTE_READ)
    cmd(s, f"PULL {sd.encode_descriptors(descs).hex()}")
    assert p.expect("pulled", 60)["sha"] == hashlib.sha256(src).hexdigest()
    s.deregister(descs)
    # And the other way round: the peer's region, our RDMA READ and WRITE.
    cmd(s, f"REG {BIG} 11")
    r = p.expect("reg")
    pdescs = sd.decode_descriptors(bytes.fromhex(r["descs"]))
    got = s.rdma_read(BIG, pdescs)
    assert hashlib.sha256(got).hexdigest() == r["sha"]
    new = random.Random(12).randbytes(BIG)
    s.rdma_write(new, pdescs)
    cmd(s, f"SHA {pdescs[0].token}")
    assert p.expect("sha")["sha"] == hashlib.sha256(new).hexdigest()
    assert time.monotonic() - t0 < 60
    s.close()
    p.expect("eof")


def test_partial_ranges_inside_the_region(net, peer, mode):
    p = peer()
    s = connect(mode)
    p.expect("accepted")
    cmd(s, "REG 100000 3")
    r = p.expect("reg")
    d = sd.decode_descriptors(bytes.fromhex(r["descs"]))
    whole = random.Random(3).randbytes(100000)
    assert s.rdma_read(10, d, 99990) == whole[-10:]
    buf = bytearray(50)
    s.rdma_read(buf, d, 5)
    assert bytes(buf) == whole[5:55]
    s.rdma_write(b"X" * 7, d, 1000)
    cmd(s, f"SHA {d[0].token}")
    assert p.expect("sha")["sha"] == hashlib.sha256(whole[:1000] + b"X" * 7 + whole[1007:]).hexdigest()
    s.close()


@pytest.mark.parametrize("how", ["past_end", "before_start", "wrong_right", "forged_token"])
def test_access_outside_registration_terminates(net, peer, mode, how):
    p = peer()
    s = connect(mode)
    p.expect("accepted")
    buf = bytearray(os.urandom(4096))
    before = bytes(buf)
    access = sd.RDMA_REMOTE_WRITE if how == "wrong_right" else sd.RDMA_REMOTE_READ
    d = s.register(buf, access)[0]
    if how == "past_end":
        bad = sd.BufferDescriptor(d.offset, d.token, 8192)
        arg = f"PULL {sd.encode_descriptors([bad]).hex()} 4000 200"
    elif how == "before_start":
        bad = sd.BufferDescriptor(d.offset - 64, d.token, 128)
        arg = f"PULL {sd.encode_descriptors([bad]).hex()}"
    elif how == "wrong_right":
        arg = f"PULL {sd.encode_descriptors([d]).hex()}"
    else:
        bad = sd.BufferDescriptor(d.offset, d.token ^ 0x01, 16)
        arg = f"PULL {sd.encode_descriptors([bad]).hex()}"
    cmd(s, arg)
    e = p.expect("error")
    assert e["errno"] == errno.EREMOTEIO, e
    assert p.expect("after")["errno"] == errno.ECONNABORTED
    with pytest.raises(OSError) as exc:
        s.recv()
    assert exc.value.errno == errno.ECONNRESET
    with pytest.raises(OSError):
        s.send(b"more")
    assert bytes(buf) == before  # still ours, untouched


GUARD = 4096


@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("where", ["one_before_start", "one_past_end"])
def test_out_of_range_access_from_another_process_leaves_guard_bytes(net, peer, mode, op, where):
    """The RDMA emulation itself (not a fake NIC): the peer process reads (PULL) or writes (PUSH)
    a range one byte before or one byte past the 4096 bytes we registered in the middle of a
    larger buffer.  The access fails as a remote access error (EREMOTEIO, then the connection is
    gone for both ends), and neither the guard bytes on both sides nor the registered bytes change:
    nothing is written partially before the bounds check (MS-SMBD 3.1.4.4: a peer may only reach
    the memory a descriptor was registered for)."""
    p = peer()
    s = connect(mode)
    p.expect("accepted")
    whole = bytearray(random.Random(17).randbytes(GUARD + 4096 + GUARD))
    before = bytes(whole)
    region = memoryview(whole)[GUARD:GUARD + 4096]
    d = s.register(region, sd.RDMA_REMOTE_READ | sd.RDMA_REMOTE_WRITE)[0]
    assert d.length == 4096
    if where == "one_before_start":
        bad = sd.BufferDescriptor(d.offset - 1, d.token, d.length)
    else:
        bad = sd.BufferDescriptor(d.offset + 1, d.token, d.length)
    wire = sd.encode_descriptors([bad]).hex()
    cmd(s, f"PULL {wire}" if op == "read" else f"PUSH 23 {wire}")
    e = p.expect("error")
    assert e["errno"] == errno.EREMOTEIO, e
    assert p.expect("after")["errno"] == errno.ECONNABORTED
    with pytest.raises(OSError) as exc:
        s.recv()
    assert exc.value.errno == errno.ECONNRESET
    s.close()  # memfd mode: a registration's shadow is copied back (if at all) by now
    del region
    assert whole[:GUARD] == before[:GUARD], "guard bytes before the registration changed"
    assert whole[-GUARD:] == before[-GUARD:], "guard bytes after the registration changed"
    assert whole == before, "the registered bytes changed although the access was refused"


def test_in_range_access_from_another_process_reaches_exactly_the_registration(net, peer, mode):
    """The positive control of the guard test: the same buffer layout, the exact registered range
    written by the peer: all 4096 bytes change, not one guard byte does."""
    p = peer()
    s = connect(mode)
    p.expect("accepted")
    whole = bytearray(GUARD + 4096 + GUARD)
    region = memoryview(whole)[GUARD:GUARD + 4096]
    d = s.register(region, sd.RDMA_REMOTE_WRITE)
    cmd(s, f"PUSH 23 {sd.encode_descriptors(d).hex()}")
    sha = p.expect("pushed")["sha"]
    s.deregister(d)  # memfd mode copies back here
    assert hashlib.sha256(region).hexdigest() == sha
    del region
    assert whole[:GUARD] == bytes(GUARD) and whole[-GUARD:] == bytes(GUARD)
    s.close()
    s.close()


def test_deregistered_token_is_useless(net, peer, mode):
    p = peer()
    s = connect(mode)
    p.expect("accepted")
    buf = bytearray(b"a" * 8192)
    d = s.register(buf, sd.RDMA_REMOTE_READ | sd.RDMA_REMOTE_WRITE)
    s.deregister(d)
    with pytest.raises(OSError) as e:
        s.deregister(d)
    assert e.value.errno == errno.ENOENT
    cmd(s, f"PUSH 5 {sd.encode_descriptors(d).hex()}")
    assert p.expect("error")["errno"] == errno.EREMOTEIO
    assert bytes(buf) == b"a" * 8192
    s.close()


def test_send_with_invalidate(net, peer, mode):
    p = peer()
    s = connect(mode)
    p.expect("accepted")
    buf = bytearray(b"b" * 4096)
    d = s.register(buf, sd.RDMA_REMOTE_WRITE)
    cmd(s, f"PUSH 1 {sd.encode_descriptors(d).hex()}")
    sha = p.expect("pushed")["sha"]
    cmd(s, f"SENDINV {d[0].token}")
    data, token = s.recv_message()
    assert (data, token) == (b"bye", d[0].token)
    assert hashlib.sha256(buf).hexdigest() == sha  # memfd mode: copied back by the invalidation
    with pytest.raises(OSError) as e:
        s.deregister(d)
    assert e.value.errno == errno.ENOENT
    cmd(s, f"PUSH 2 {sd.encode_descriptors(d).hex()}")
    assert p.expect("sent")
    assert p.expect("error")["errno"] == errno.EREMOTEIO
    s.close()


def test_send_with_invalidate_of_unknown_token_is_fatal(net, peer):
    p = peer()
    s = connect("vm")
    p.expect("accepted")
    cmd(s, "SENDINV 12345")
    p.expect("sent")
    with pytest.raises(OSError) as e:
        s.recv_message(5)
    assert e.value.errno == errno.ECONNABORTED


def test_peer_dies_mid_transfer(net, peer):
    p = peer()
    s = connect("vm")
    p.expect("accepted")
    cmd(s, f"REG {BIG} 1")
    d = sd.decode_descriptors(bytes.fromhex(p.expect("reg")["descs"]))
    threading.Timer(0.3, lambda: os.killpg(p.p.pid, signal.SIGKILL)).start()
    dest = bytearray(BIG)
    with pytest.raises(OSError) as e:
        for _ in range(200):
            s.rdma_read(dest, d)
    assert e.value.errno in (errno.ECONNRESET, errno.EREMOTEIO, errno.ECONNABORTED)
    with pytest.raises(OSError) as e2:
        s.recv_message(5)
    assert e2.value.errno in (errno.ECONNRESET, errno.ECONNABORTED)


def test_peer_dies_while_we_wait(net, peer):
    p = peer()
    s = connect("vm")
    p.expect("accepted")
    threading.Timer(0.2, lambda: os.killpg(p.p.pid, signal.SIGKILL)).start()
    with pytest.raises(OSError) as e:
        s.recv_message(10)
    assert e.value.errno == errno.ECONNRESET
