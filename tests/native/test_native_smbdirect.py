"""Native programs on the emulated IPPROTO_SMBDIRECT socket: libwirecheck_quic.so in front of cwrap,
the socket living in the engine daemon as a wrappers.smbdirect SmbDirectSocket.

The C program (tests/native/c/smbdtest.c, its SMB client in smbd_smb2.c) is a minimal real SMB 3.1.1 client (NTLMv2, signed
TREE_CONNECT, CREATE, WRITE and READ through RDMA channels, CLOSE) against `wirecheck serve
--transport smbdirect` in another process: the server's RDMA READ takes the WRITE data out of the C
program's registered buffer and its RDMA WRITE puts the READ data into another, by process_vm_* into
the C process (the region table names its pid). Both directions are checked by sha256 against the
file the server wrote, and the capture is held to the checks the Python client's capture passes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tsharkutil
from procutil import WIRECHECK, _missing

from harness.pcap import Capture
from harness.pcap.assertions import Count
from harness.pcap.catalogue import build

from .nativeutil import HERE, REPO, build_library, exec_argv, net_env, python

USER, PASSWORD = "nat", "Native-pw1"
SERVER = "127.0.0.10"
PYREF = str(HERE / "pysmbd_errnos.py")
# Cases only a C program can make (the Python socket has no such call): an fd that is not SMB Direct,
# an address the program does not own, and the SOL_SOCKET reads of the kernel's socket.
C_ONLY = {"register_not_smbdirect": 88, "register_unmapped": 14, "get_so_protocol": 0}


@pytest.fixture(scope="session")
def smbdtest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        _missing("gcc", "gcc")
    if not Path("/usr/include/nettle/cmac.h").exists():
        _missing("the nettle headers", "nettle-dev")
    build_library()
    out = tmp_path_factory.mktemp("native-smbd") / "smbdtest"
    cmd = ["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", f"-I{REPO}/native", "-o", str(out),
           str(HERE / "c" / "smbdtest.c"), str(HERE / "c" / "smbd_smb2.c"), "-lnettle", "-ldl"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return out


class Server:
    def __init__(self, sockdir: Path, share: Path, pcap: Path, log: Path, **env_extra: str):
        self.share = share
        env = {**net_env(), **env_extra}
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.log = log
        self.p = subprocess.Popen(exec_argv(sockdir, 10, WIRECHECK, "serve", "--transport", "smbdirect", "--listen",
                                            SERVER, "--share", f"data={share}", "--user", f"{USER}:{PASSWORD}",
                                            pcap=pcap), env=env, stderr=self._log, start_new_session=True)
        deadline = time.monotonic() + 60
        while "serving" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or self.p.poll() is not None:
                self.stop()
                pytest.fail(f"wirecheck serve did not start: {log.read_text(errors='replace')}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGINT)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(10)
        self._log.close()


@pytest.fixture
def server(sockdir: Path, tmp_path: Path) -> Iterator[Server]:
    share = tmp_path / "share"
    share.mkdir()
    srv = Server(sockdir, share, tmp_path / "run.pcap", tmp_path / "serve.log")
    yield srv
    srv.stop()


def _run(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return r


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan"])
def test_native_smb_client_write_read_by_rdma(smbdtest, sockdir, server, tmp_path, sanitize):
    """A C SMB 3.1.1 client over IPPROTO_SMBDIRECT: WRITE then READ of 3 MiB + 4097 bytes, both carried
    by the server's RDMA into/out of the C program's registered buffers; sha256 of what was written,
    what was read back and the server's file agree; both responses invalidated the token (SEND with
    Invalidate), so deregistering it again is ENOENT. The capture shows what the Python client's does."""
    size = 3 * 1024 * 1024 + 4097
    pcap = tmp_path / "run.pcap"
    r = _run(exec_argv(sockdir, 11, str(smbdtest), "smb", SERVER, "445", USER, PASSWORD, "data", "n.bin", str(size),
                       pcap=pcap), net_env(sanitize=sanitize))
    out = r.stdout
    assert r.returncode == 0 and "done" in out, f"rc={r.returncode}\n{out}\n{r.stderr[-3000:]}"
    written = re.search(r"^write ([0-9a-f]{64})$", out, re.M)
    read = re.search(r"^read ([0-9a-f]{64})$", out, re.M)
    assert written and read, out
    on_disk = hashlib.sha256((server.share / "n.bin").read_bytes()).hexdigest()
    assert written.group(1) == read.group(1) == on_disk, out
    assert (server.share / "n.bin").stat().st_size == size
    assert "write: token" in out and "read: token" in out, out  # invalidated by the responses
    assert "signature verified" in out, out

    tsharkutil.tshark_path()
    server.stop()  # the capture is complete once both ends are gone
    cap = Capture(pcap)
    cap.check(build("smbdirect.negotiated"), build("smbdirect.rdma_used"),
              Count("smb2.cmd == 8 && smb2.flags.response == 0 && smb2.channel == 2", eq=1),
              Count("smb2.cmd == 9 && smb2.flags.response == 0 && smb2.channel == 2", eq=1),
              Count(f"smb2.cmd == 8 && smb2.flags.response == 1 && smb2.read_remaining == {size}", eq=1),
              Count(f"infiniband.reth.dmalen == {size}", min=2),  # the RDMA WRITE and the RDMA READ request
              Count("infiniband.bth.opcode == 0x17 && smb2", eq=2),  # SEND Only with Invalidate: both responses
              Count("_ws.malformed && !spnego", eq=0))  # tshark's gss-api quirk on the NEGOTIATE, as for Python
    # the RDMA went to the C program's own buffers: the RETHs name the addresses and tokens it registered
    regs = {(int(t, 16), int(a, 16)) for t, a in re.findall(r"^(?:write|read): token (0x[0-9a-f]+) at (0x[0-9a-f]+)", out, re.M)}
    assert len(regs) == 2, out
    fields = subprocess.run([tsharkutil.tshark_path(), "-r", str(pcap), "-Y", "infiniband.reth", "-T", "fields",
                             "-e", "infiniband.reth.r_key", "-e", "infiniband.reth.va"], capture_output=True,
                            text=True, check=True).stdout
    seen = {(int(k, 16), int(v, 16)) for k, v in (ln.split("\t") for ln in fields.splitlines() if ln.strip())}
    assert regs <= seen, (regs, seen)


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan"])
def test_errnos_are_the_python_sockets(smbdtest, sockdir, server, sanitize):
    """Every option/state misuse a C program can make gives the errno the Python socket gives for the
    same misuse (run side by side against one server), and the C-only cases theirs."""
    env = net_env(sanitize=sanitize)
    c = _run(exec_argv(sockdir, 11, str(smbdtest), "errnos", SERVER, "445"), env)
    py = _run(exec_argv(sockdir, 12, python(), PYREF, SERVER, "445"), net_env())
    assert c.returncode == 0 and c.stdout.rstrip().endswith("done"), f"{c.stdout}\n{c.stderr[-3000:]}"
    assert py.returncode == 0 and py.stdout.rstrip().endswith("done"), f"{py.stdout}\n{py.stderr[-3000:]}"

    def cases(text: str) -> dict[str, int]:
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"^case (\S+) errno (\d+)$", text, re.M)}

    cc, pc = cases(c.stdout), cases(py.stdout)
    assert len(pc) == 40, py.stdout  # every reference case ran
    assert {k: v for k, v in cc.items() if k not in C_ONLY} == pc, (c.stdout, py.stdout)
    assert {k: cc.get(k) for k in C_ONLY} == C_ONLY, c.stdout
    values = re.findall(r"^value (\S+) (\d+)$", c.stdout, re.M)
    assert ("receive_credit_max", "255") in values and ("max_send_size", "1364") in values, c.stdout
    assert ("so_protocol", "257") in values, c.stdout


def test_c_header_numbers_are_the_python_ones(tmp_path):
    """native/wirecheck_smbdirect.h (what a C program includes) and wqd_proto.h's SMB Direct calls carry
    the same numbers as wrappers.smbdirect.constants and the daemon's protocol module."""
    from wrappers.quic import native_proto as P
    from wrappers.smbdirect import constants as C

    if shutil.which("gcc") is None:
        _missing("gcc", "gcc")
    names = ["IPPROTO_SMBDIRECT", "SOL_SMBDIRECT", *sorted(n for n in dir(C) if n.startswith("SMBDIRECT_"))]
    src = tmp_path / "nums.c"
    src.write_text('#include <stdio.h>\n#include "wirecheck_smbdirect.h"\n#include "wqd_proto.h"\nint main(void){\n'
                   + "".join(f'printf("{n} %d\\n", (int){n});\n' for n in names)
                   + 'printf("RDMA_REMOTE_READ %d\\nRDMA_REMOTE_WRITE %d\\n", SMBDIRECT_RDMA_REMOTE_READ, '
                     "SMBDIRECT_RDMA_REMOTE_WRITE);\n"
                   + 'printf("OPS %d %d %d\\n", WQD_SMBD_REGISTER, WQD_SMBD_DEREGISTER, WQD_SMBD_RDMA_READ);\n'
                   + "printf(\"DESC %zu\\n\", sizeof(struct smbdirect_buffer_descriptor_v1)); return 0;}\n")
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(REPO / "native"), "-o", str(tmp_path / "nums"), str(src)],
                   check=True)
    got = dict(ln.split(" ", 1) for ln in subprocess.run([str(tmp_path / "nums")], capture_output=True, text=True,
                                                         check=True).stdout.splitlines())
    for n in names:
        assert int(got[n]) == getattr(C, n), n
    assert int(got["RDMA_REMOTE_READ"]) == C.RDMA_REMOTE_READ and int(got["RDMA_REMOTE_WRITE"]) == C.RDMA_REMOTE_WRITE
    assert got["OPS"].split() == [str(P.OP_SMBD_REGISTER), str(P.OP_SMBD_DEREGISTER), str(P.OP_SMBD_RDMA_READ)]
    assert got["DESC"] == str(C.BUFFER_DESCRIPTOR_SIZE)


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan"])
def test_native_listener_rdma_both_ways_with_a_python_peer(smbdtest, sockdir, peers, tmp_path, sanitize):
    """A C program listens and accepts (IPv4, the Python peer's address reported), RDMA-WRITEs into the
    Python peer's buffer with sendmsg(MSG_OOB) in two pieces (the second at SMBDIRECT_CMSG_RDMA_OFFSET),
    RDMA-READs the peer's other buffer, answers with a SEND with Invalidate of the peer's write token,
    and the peer RDMA-WRITEs into the C program's registered buffer: sha256 equal on both sides."""
    size = 1024 * 1024 + 513
    pcap = tmp_path / "peer.pcap"
    srv = peers.start("cserver", exec_argv(sockdir, 12, str(smbdtest), "rdma-server", "127.0.0.12", "5445", pcap=pcap),
                      net_env(sanitize=sanitize))
    srv.expect("ready", timeout=60)
    cli = peers.start("pypeer", exec_argv(sockdir, 11, python(), str(HERE / "pysmbd_peer.py"), "127.0.0.12", "5445",
                                          str(size), pcap=pcap), net_env())
    cli.finish(timeout=120)
    srv.finish(timeout=60)
    c = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in srv.lines if " " in ln}
    p = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in cli.lines if " " in ln}
    assert c["accepted"] == "127.0.0.11", srv.describe()
    assert c["wrote"] == p["got"], (srv.describe(), cli.describe())  # C's RDMA WRITE landed in Python's buffer
    assert c["read"] == p["source"], (srv.describe(), cli.describe())  # C's RDMA READ got Python's buffer
    assert c["peer"] == "wrote " + p["wrote"], (srv.describe(), cli.describe())  # Python's RDMA WRITE into C's
    assert p["invalidated"] == "True" and p["deregister"] == "2", cli.describe()  # SEND with Invalidate: ENOENT
    assert c["end"] == "0", srv.describe()  # the peer's close is a clean end of stream


@pytest.mark.parametrize("rdma, expected", [("auto", "mode 1 register errno 0"), ("memfd", "mode 2 register errno 95")])
def test_native_registration_needs_process_vm(smbdtest, sockdir, tmp_path, rdma, expected):
    """A native program's memory is reached by process_vm_* only: against a server that asks for memfd
    mode (ptrace rules forbid process_vm), registering is EOPNOTSUPP, never a silent copy."""
    share = tmp_path / "share"
    share.mkdir()
    srv = Server(sockdir, share, tmp_path / "m.pcap", tmp_path / "serve.log", WIRECHECK_SMBDIRECT_RDMA=rdma)
    try:
        r = _run(exec_argv(sockdir, 11, str(smbdtest), "register-mode", SERVER, "445"), net_env())
    finally:
        srv.stop()
    assert r.returncode == 0 and r.stdout.strip() == expected, f"{r.stdout}\n{r.stderr[-2000:]}"
