"""pytest plugin: scenario files as test items (one per matrix cell), and fixtures for users' tests.

Enable with the entry point ``[project.entry-points.pytest11] wirecheck = "harness.pytest_plugin"`` (or
``-p harness.pytest_plugin``). Then ``pytest scenarios/`` collects every ``<area>/<NNN>.yaml`` under a
directory named ``scenarios`` (or holding a ``sections.conf``) as items named like ``tcp/001[ipv6]``.

Why items run through the same cell process as ``wirecheck check``: one behaviour, one set of results
files (``<results>/<area>/<stem>.full/.pcap/.ladder``), and isolation that makes ``pytest -n auto``
(pytest-xdist) safe: every cell has its own process group and socket directory. For suites that outgrow
one machine, xdist's remote executors work the same way, e.g.
``pytest -d --tx ssh=ci@host2//python=/srv/wirecheck/.venv/bin/python --tx popen scenarios/`` with the
checkout present on every host (xdist's ``--rsyncdir`` is deprecated: sync it yourself).

Known failures and flapping cells (``<scenarios>/knownfail``, ``flapping``, Samba format, matched against
``<cell id>(<section>)``) become strict and non-strict xfail marks: a known failure that passes fails.

Options: ``--wirecheck-group quick`` (like ``wirecheck check -g``), ``--wirecheck-section NAME`` (variables from sections.conf, default its first section),
``--wirecheck-results DIR`` (default: pytest's basetemp).

Fixtures for users' own tests:

- ``wirecheck_net``: a private emulated network (socket directory, pcap, processes stopped at teardown)::

      def test_echo(wirecheck_net):
          srv = wirecheck_net.start(["python", "-m", "harness.peers.net_exchange", "udp-echo-server",
                                     "--addr", wirecheck_net.address(10), "--port", "7"], host=10)
          ...
          cap = wirecheck_net.capture()      # stops the processes, returns a harness.pcap.Capture
          cap.check(Count("udp.port == 7", min=2))

- ``wirecheck_run``: run a scenario file (or one cell id of it) in-test and get its result record.
- ``wirecheck_smb``: ``serve()`` starts the reference SMB server on the emulated network;
  ``with srv.client() as c:`` is the reference client (harness.blocking.client) against it; ``srv.capture()``
  opens the pcap with the session keys.
- ``wirecheck_quic_pair``: a handshaken IPPROTO_QUIC client/server pair in this process (``.client``,
  ``.server``), ``.capture()`` with the TLS key log.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import pytest

_LISTS = pytest.StashKey[dict]()
SCENARIO_NAME = re.compile(r"^[0-9]{3}(-[A-Za-z0-9-]+)?\.ya?ml$")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wirecheck")
    group.addoption("--wirecheck-section", default=None, metavar="NAME",
                    help="sections.conf section whose variables scenarios see (default: the first)")
    group.addoption("--wirecheck-group", action="append", default=None, metavar="GROUP[,GROUP]",
                    help="collect only scenario cells in these groups (like `wirecheck check -g`)")
    group.addoption("--wirecheck-results", default=None, metavar="DIR",
                    help="where cells leave .full/.pcap/.ladder (default: pytest's basetemp)")


def _scenario_root(path: Path) -> Path | None:
    root = path.parent.parent
    if root.name == "scenarios" or (root / "sections.conf").exists():
        return root
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if SCENARIO_NAME.match(file_path.name) and _scenario_root(file_path) is not None:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioLoadError(Exception):
    pass


class ScenarioFile(pytest.File):
    def collect(self):
        from harness.scenario import ScenarioError, load_file, registry

        registry.discover()
        try:
            scen = load_file(self.path)
        except ScenarioError as e:
            raise self.CollectError("\n".join(e.problems)) from None
        for cell in scen.cells():
            yield ScenarioItem.from_parent(self, name=cell.id, cell=cell)


class CellFailed(Exception):
    def __init__(self, result: dict, outdir: Path, stem: str):
        super().__init__(result.get("reason", "failed"))
        self.result, self.outdir, self.stem = result, outdir, stem


def _section_vars(config: pytest.Config, root: Path) -> tuple[str | None, dict[str, str], list[str] | None]:
    from harness.runner import config as sections

    secs = sections.load(root / "sections.conf")
    want = config.getoption("--wirecheck-section")
    for s in secs:
        if want is None or s.name == want:
            return s.name, dict(s.vars), s.areas
    raise pytest.UsageError(f"--wirecheck-section {want}: not in {root / 'sections.conf'}")


class ScenarioItem(pytest.Item):
    def __init__(self, *, cell, **kwargs):
        super().__init__(**kwargs)
        self.cell = cell
        self.add_marker(pytest.mark.wirecheck(*cell.scenario.groups))
        self._expected_results()

    def _expected_results(self) -> None:
        """knownfail -> strict xfail (a pass is an XPASS(strict) failure: Samba's uxsuccess); flapping ->
        non-strict xfail. Lists: `<scenarios>/knownfail(.d)`, `<scenarios>/flapping(.d)`."""
        from harness.runner import lists

        root = _scenario_root(Path(self.cell.scenario.path))
        if root is None:
            return
        section, _vars, _areas = _section_vars(self.config, root)
        cache = self.config.stash.setdefault(_LISTS, {})
        if root not in cache:
            try:
                cache[root] = (lists.load("knownfail", [root / "knownfail", root / "knownfail.d"]),
                               lists.load("flapping", [root / "flapping", root / "flapping.d"]))
            except lists.ListError as e:
                raise pytest.UsageError(str(e)) from None
        knownfail, flapping = cache[root]
        lid = lists.list_id(self.cell.id, section or "global")
        if (entry := flapping.match(lid)) is not None:
            self.add_marker(pytest.mark.xfail(reason=f"flapping: {entry.reason} ({entry.where})", strict=False))
        elif (entry := knownfail.match(lid)) is not None:
            self.add_marker(pytest.mark.xfail(reason=f"knownfail: {entry.reason} ({entry.where})", strict=True))

    def runtest(self) -> None:
        from harness.scenario.cellproc import run_isolated
        from harness.scenario.model import substitute
        from harness.scenario.requires import check

        cell = self.cell
        section, svars, areas = _section_vars(self.config, _scenario_root(Path(cell.scenario.path)) or Path("."))
        if areas is not None and cell.scenario.area not in areas:
            pytest.skip(f"area {cell.scenario.area} is not in section {section} (AREAS={' '.join(areas)})")
        needs_tshark = any("pcap" in i for i in (cell.scenario.data.get("expect") or []))
        found = check(substitute(cell.scenario.requires, cell.variables(svars)), section=section,
                      needs_tshark=needs_tshark, missing_ops=cell.scenario.missing_ops)
        if found and found.fails_here():
            pytest.fail(f"{found.reason} (a failure under CI)", pytrace=False)
        if found:
            pytest.skip(found.reason)
        base = self.config.getoption("--wirecheck-results")
        base = Path(base) if base else self.config._tmp_path_factory.getbasetemp() / "wirecheck"  # type: ignore[attr-defined]
        outdir = base / (section or "global") / cell.scenario.area
        result = run_isolated(cell, outdir, section_vars=svars)
        self.user_properties.append(("pcap", str(outdir / f"{cell.file_stem}.pcap")))
        self.user_properties.append(("duration", f"{result.get('duration', 0):.2f}"))
        if result["status"] != "pass":
            raise CellFailed(result, outdir, cell.file_stem)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, CellFailed):
            e = excinfo.value
            lines = [f"{self.cell.id} failed: {e.result.get('reason', '')}"]
            lines += ["  " + d for d in (e.result.get("details") or [])[1:]]
            for suffix in ("full", "pcap", "ladder"):
                p = e.outdir / f"{e.stem}.{suffix}"
                if p.exists():
                    lines.append(f"  {suffix}: {p}")
            return "\n".join(lines)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, self.cell.scenario.line - 1, f"scenario {self.cell.id}"


# ------------------------------------------------------------------------------------------ fixtures

class EmulatedNetwork:
    """A private emulated network for one test: socket directory, pcap, processes on hosts."""

    def __init__(self, pcap: Path):
        self.socket_dir = tempfile.mkdtemp(prefix="wc-")   # short: sun_path limits the directory length
        self.pcap = pcap
        self.procs: list[subprocess.Popen] = []

    def env(self, host: int | None = None, **extra: str) -> dict[str, str]:
        from wrappers.launch import child_environ

        env = child_environ(self.socket_dir, iface=host, pcap=str(self.pcap))
        env.update(extra)
        return env

    def address(self, host: int, family: str = "ipv4") -> str:
        from wrappers.addressing import Network

        return Network().iface_address(socket.AF_INET6 if family == "ipv6" else socket.AF_INET, host)

    def start(self, argv: list[str], host: int, **kwargs: Any) -> subprocess.Popen:
        argv = [sys.executable if i == 0 and a == "python" else a for i, a in enumerate(argv)]
        p = subprocess.Popen(argv, env=self.env(host), start_new_session=True, **kwargs)
        self.procs.append(p)
        return p

    def run(self, argv: list[str], host: int, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess:
        argv = [sys.executable if i == 0 and a == "python" else a for i, a in enumerate(argv)]
        return subprocess.run(argv, env=self.env(host), timeout=timeout, **kwargs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=3)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait()

    def capture(self, **kwargs: Any):
        """Stop the processes (so every packet is written) and open the pcap with harness.pcap."""
        from harness.pcap import Capture

        self.stop()
        return Capture(self.pcap, **kwargs)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


@pytest.fixture
def wirecheck_net(tmp_path: Path):
    net = EmulatedNetwork(tmp_path / "run.pcap")
    yield net
    net.close()


@pytest.fixture
def wirecheck_run(tmp_path: Path):
    """run(path, cell=None, section_vars=None) -> result record (status, reason, details, duration)."""
    from harness.scenario import load_file, registry
    from harness.scenario.cellproc import run_isolated

    def run(path: str | os.PathLike, cell: str | None = None, section_vars: dict | None = None) -> dict:
        registry.discover()
        scen = load_file(path)
        assert scen is not None  # without a problem list, load_file raises ScenarioError rather than return None
        cells = [c for c in scen.cells() if cell in (None, c.id, c.label)]
        if not cells:
            raise LookupError(f"{scen.id} has no cell {cell!r}")
        return run_isolated(cells[0], tmp_path / scen.area, section_vars=section_vars)
    return run


class SMBServerHandle:
    """The reference SMB server (harness.blocking.server) running on a host of a wirecheck_net."""

    def __init__(self, net: EmulatedNetwork, proc: subprocess.Popen, *, transport: str, address: str, port: int,
                 share: str, path: Path, user: str, password: str, keys: Path):
        self.net, self.proc, self.transport = net, proc, transport
        self.address, self.port, self.share, self.path = address, port, share, path
        self.user, self.password, self.keys = user, password, keys

    def client(self, host: int = 11, **kwargs: Any):
        """A harness.blocking.client.SMBClient connected from `host`, in this process (context manager).

        The socket wrapper is active in this process while the block runs (it is process-wide), so the
        client's packets land in the same pcap; its SMB session keys go to `self.keys` for decryption.
        """
        import contextlib

        @contextlib.contextmanager
        def connected():
            import wrappers
            from harness.blocking.client import SMBClient

            saved = dict(os.environ)
            try:
                with wrappers.activate(self.net.socket_dir, iface=host, pcap=str(self.net.pcap)):
                    kwargs.setdefault("keys_out", str(self.keys))
                    with SMBClient(self.address, self.port, transport=self.transport, username=self.user,
                                   password=self.password, **kwargs) as c:
                        yield c
            finally:
                os.environ.clear()
                os.environ.update(saved)
        return connected()

    def capture(self, **kwargs: Any):
        """Stop the server and open the pcap, with the SMB keys the clients wrote."""
        kwargs.setdefault("smb_keys", str(self.keys) if self.keys.exists() and self.keys.stat().st_size else None)
        return self.net.capture(**kwargs)


@pytest.fixture
def wirecheck_smb(wirecheck_net: EmulatedNetwork, tmp_path: Path):
    """serve(transport="tcp", host=10, share="data", encrypt=False, timeout=20) -> SMBServerHandle.

    Starts the reference SMB server as a process on the emulated network (a fresh share directory)
    and returns once it listens; ``handle.client()`` opens the reference client against it::

        def test_write_read(wirecheck_smb):
            srv = wirecheck_smb()
            with srv.client() as c:
                c.share("data").put_bytes("a.txt", b"hi")
            assert (srv.path / "a.txt").read_bytes() == b"hi"
            srv.capture().check(Count("smb2.cmd == 9", min=1))
    """
    import json
    import time

    def serve(transport: str = "tcp", host: int = 10, share: str = "data", encrypt: bool = False,
              user: str = "wirecheck", password: str = "wirecheck-pass", timeout: float = 20.0) -> SMBServerHandle:
        from harness.transport import DEFAULT_PORTS

        if transport not in ("tcp", "nbt"):
            raise ValueError(f"wirecheck_smb serves tcp or nbt (QUIC needs certificates: use a scenario), not {transport}")
        path = tmp_path / f"share-{share}"
        path.mkdir(exist_ok=True)
        out = tmp_path / f"smb-server-{host}.out"
        port = DEFAULT_PORTS[transport]
        argv = ["python", "-m", "harness.peers.smb_ops", "server", "--transport", transport,
                "--addr", wirecheck_net.address(host), "--port", str(port), "--share", share, "--path", str(path),
                "--user", f"{user}:{password}"] + (["--encrypt"] if encrypt else [])
        with open(out, "wb") as f:
            proc = wirecheck_net.start(argv, host=host, stdout=f, stderr=subprocess.STDOUT, cwd=os.getcwd())
        deadline = time.monotonic() + timeout
        while '"listening"' not in out.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the SMB server did not start: {out.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)
        state = json.loads(next(x for x in out.read_text().splitlines() if '"listening"' in x))
        return SMBServerHandle(wirecheck_net, proc, transport=transport, address=wirecheck_net.address(host),
                               port=int(state.get("port") or port), share=share, path=path, user=user,
                               password=password, keys=tmp_path / "smb.keys")
    return serve


class QuicPair:
    """A client and a server IPPROTO_QUIC socket, handshake done, on the emulated network in this process."""

    def __init__(self, client: Any, server: Any, listener: Any, pcap: Path, keylog: Path):
        self.client, self.server, self.listener = client, server, listener
        self.pcap, self.keylog = pcap, keylog

    def close(self) -> None:
        for s in (self.client, self.server, self.listener):
            try:
                s.close()
            except OSError:
                pass

    def capture(self, **kwargs: Any):
        """Close the sockets and open the pcap with the TLS key log (1-RTT decrypted)."""
        from harness.pcap import Capture

        self.close()
        kwargs.setdefault("keylog", str(self.keylog) if self.keylog.exists() else None)
        return Capture(self.pcap, **kwargs)


@pytest.fixture
def wirecheck_quic_pair(tmp_path: Path):
    """A connected QUIC socket pair (PSK handshake, ALPN "smb"), the wrapper active in this process with a
    pcap and key log; the sockets speak the quic.ko API (wrappers.quic)::

        def test_stream(wirecheck_quic_pair):
            p = wirecheck_quic_pair
            quic_sendmsg(p.client, b"ping", -1, MSG_STREAM_NEW | MSG_STREAM_FIN)
            assert quic_recvmsg(p.server, 100)[0] == b"ping"
            p.capture().check(Count("quic.stream.fin == 1", min=1))
    """
    import threading

    import wrappers

    saved = dict(os.environ)
    sock_dir = tempfile.mkdtemp(prefix="wq-")
    pcap, keylog = tmp_path / "quic.pcap", tmp_path / "quic.keys"
    psk = tmp_path / "psk.txt"
    psk.write_text(f"wirecheck:{os.urandom(32).hex()}\n")
    os.environ["SSLKEYLOGFILE"] = str(keylog)
    pair = None
    try:
        with wrappers.activate(sock_dir, iface=11, pcap=str(pcap)):
            from wrappers.quic import IPPROTO_QUIC, QuicSocket, client_handshake, server_handshake

            # socket.socket(..., IPPROTO_QUIC) is a QuicSocket at run time (the wrapper's socket factory)
            ls = cast(QuicSocket, socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC))
            ls.bind(("127.0.0.11", 0))
            ls.listen(1)
            box: dict[str, Any] = {}

            def accept() -> None:
                try:
                    ls.settimeout(10)
                    s, _ = ls.accept()
                    server_handshake(s, str(psk), None, "smb", timeout=10)
                    box["s"] = s
                except BaseException as e:  # noqa: BLE001 - raised in the test's thread
                    box["e"] = e
            t = threading.Thread(target=accept, daemon=True)
            t.start()
            c = cast(QuicSocket, socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC))
            c.settimeout(10)
            c.connect(ls.getsockname())
            client_handshake(c, str(psk), None, "smb", timeout=10)
            t.join(15)
            if "e" in box or "s" not in box:
                raise RuntimeError(f"QUIC server handshake failed: {box.get('e', 'timed out')}")
            pair = QuicPair(c, box["s"], ls, pcap, keylog)
            yield pair
            pair.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(sock_dir, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "wirecheck(*groups): a scenario cell and its groups (--wirecheck-group)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--wirecheck-group G[,G]: keep only scenario cells in one of these groups (other tests stay)."""
    wanted = [g for v in config.getoption("--wirecheck-group") or [] for g in v.split(",") if g]
    if not wanted:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        groups = item.cell.scenario.groups if isinstance(item, ScenarioItem) else None
        (keep if groups is None or groups is False or set(groups) & set(wanted) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """A test (or a fixture, torn down just now) that collected pcap assertions with expect() and
    never ran verify() has checked nothing: that is an error of the test, not a pass."""
    yield
    # imported when used, as the plugin's other harness imports: every pytest run loads this entry point
    from harness.pcap.capture import unverified

    left = unverified()
    if left:
        pytest.fail("pcap assertions collected with Capture.expect() but never evaluated (call verify()):\n  "
                    + "\n  ".join(left), pytrace=False)
