"""aioquic's private attributes: used in one place (the package wrappers/quic/aio), all listed, all present.

aioquic promises nothing about names that start with an underscore. wirecheck needs some of them
(quic.ko's stream rules, receive credit, key update state, the raw TLS adapter: see wrappers/quic/aio),
so they are kept in one package with a table of every name it uses (``aio.AIOQUIC_PRIVATE``). These tests make an aioquic
upgrade that renames or removes one fail here, by name, instead of changing behaviour quietly: an
override of a vanished private method is never called, and ``getattr(q, "_x", 0)`` reads 0 forever.
"""

from __future__ import annotations

import ast
from pathlib import Path

from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.logger import QuicLogger
from aioquic.quic.stream import QuicStream

from wrappers.quic import aio

ROOT = Path(__file__).resolve().parents[2]
QUIC_PKG = ROOT / "wrappers" / "quic"
BOUNDARY = QUIC_PKG / "aio"
# Our own classes have private attributes that happen to share a name with one of aioquic's.
OWN_NAMES_SHARED_WITH_AIOQUIC = {"_is_client", "_state", "_configuration", "_version"}


def _live_objects() -> dict[str, object]:
    """Real aioquic objects, in the state where every listed attribute exists (a client that has
    sent its first flight: TLS context, crypto pairs, packet spaces and paths are set up)."""
    q = QuicConnection(configuration=QuicConfiguration(is_client=True, server_name="wirecheck.test"))
    q.connect(("127.0.0.1", 4433), now=0.0)
    stream = QuicStream(stream_id=0)
    return {
        "aioquic.quic.connection.QuicConnection": q,
        "aioquic.tls.Context": q.tls,
        "aioquic.quic.stream.QuicStreamSender": stream.sender,
        "aioquic.quic.stream.QuicStreamReceiver": stream.receiver,
        "aioquic.quic.crypto.CryptoPair": CryptoPair(),
        "aioquic.quic.recovery.QuicPacketRecovery": q._loss,
    }


def missing_private_names(table: dict[str, dict[str, tuple[str, ...]]]) -> list[str]:
    """``class.name`` for every listed name that the installed aioquic does not have."""
    objects = _live_objects()
    missing = []
    for owner, kinds in table.items():
        obj = objects.get(owner)
        if obj is None:
            missing.append(f"{owner} (no such aioquic object is built here)")
            continue
        for name in kinds["attributes"]:
            if not hasattr(obj, name):
                missing.append(f"{owner}.{name}")
        for name in kinds["methods"]:
            if not callable(getattr(type(obj), name, None)):
                missing.append(f"{owner}.{name}()")
    return missing


def _aioquic_private_names() -> set[str]:
    """Every private name the installed aioquic's objects have (what other modules must not touch)."""
    names: set[str] = set()
    for obj in (*_live_objects().values(), QuicConfiguration(), QuicLogger(),
                _live_objects()["aioquic.quic.connection.QuicConnection"]._loss,
                QuicStream(stream_id=0)):
        names |= {n for n in dir(obj) if n.startswith("_") and not n.startswith("__")}
    return names


def _aioquic_subclasses(tree: ast.Module) -> list[ast.ClassDef]:
    """Classes of a module that derive from something imported from aioquic."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aioquic"):
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("aioquic")}
    return [c for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
            and any(ast.unparse(b).split(".")[0] in names for b in c.bases)]


def _private_uses(path: Path) -> list[tuple[int, str, str]]:
    """(line, receiver, name) of every ``X._name`` in a module, X not self or cls, and of every
    ``self._name`` inside a class that derives from an aioquic class."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            recv = ast.unparse(node.value)
            if recv not in ("self", "cls"):
                out.append((node.lineno, recv, node.attr))
    for cls in _aioquic_subclasses(tree):
        for node in ast.walk(cls):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                out.append((node.lineno, f"self ({cls.name})", node.attr))
    return out


def test_every_listed_private_name_exists_in_the_installed_aioquic():
    assert missing_private_names(aio.AIOQUIC_PRIVATE) == []


def test_the_check_reports_a_name_aioquic_does_not_have():
    """The check above is not vacuous: a renamed attribute or method is reported by name."""
    table = {
        "aioquic.quic.connection.QuicConnection": {"attributes": ("_streams", "_no_such_attribute"),
                                                   "methods": ("_write_connection_limits", "_no_such_method")},
        "aioquic.quic.stream.QuicStreamSender": {"attributes": ("_buffer_gone",), "methods": ()},
    }
    assert missing_private_names(table) == [
        "aioquic.quic.connection.QuicConnection._no_such_attribute",
        "aioquic.quic.connection.QuicConnection._no_such_method()",
        "aioquic.quic.stream.QuicStreamSender._buffer_gone",
    ]


def test_the_table_lists_every_private_name_the_boundary_uses():
    """Every ``._x`` in wrappers/quic/aio that aioquic defines, and every private aioquic method that
    its classes override, is in AIOQUIC_PRIVATE (our own private names need not be)."""
    listed = {n for kinds in aio.AIOQUIC_PRIVATE.values() for names in kinds.values() for n in names}
    aioquic_names = _aioquic_private_names()
    unlisted: set[str] = set()
    for path in sorted(BOUNDARY.glob("*.py")):
        tree = ast.parse(path.read_text())
        used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        overridden = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        unlisted |= {f"{path.name}: {n}" for n in (used | overridden) & aioquic_names if n not in listed}
    assert sorted(unlisted) == [], f"private aioquic names missing from AIOQUIC_PRIVATE: {sorted(unlisted)}"


def _offenders(paths: list[Path]) -> list[str]:
    aioquic_names = _aioquic_private_names() - OWN_NAMES_SHARED_WITH_AIOQUIC
    return [f"{p}:{line}: {recv}.{name}" for p in paths for line, recv, name in _private_uses(p)
            if name in aioquic_names]


def test_no_other_module_touches_aioquic_private_names():
    paths = [p for p in sorted(QUIC_PKG.rglob("*.py")) if BOUNDARY not in p.parents]
    paths += sorted((ROOT / "harness").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    paths = [p for p in paths if p.resolve() != Path(__file__).resolve()]
    assert _offenders(paths) == []


def test_the_scan_finds_a_private_access(tmp_path):
    """The scan above is not vacuous: a module reaching into aioquic is reported (and our own
    private attributes are not)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from aioquic.quic.logger import QuicLogger\n\n"
                   "def f(conn):\n    return conn.quic._streams, conn._opts\n\n"
                   "class Log(QuicLogger):\n    def end_trace(self, trace):\n        self._traces.remove(trace)\n\n"
                   "class Ours:\n    def g(self):\n        return self._traces\n")
    assert _offenders([bad]) == [f"{bad}:4: conn.quic._streams", f"{bad}:8: self (Log)._traces"]


def test_the_one_rtt_accessor_is_aioquics_crypto_pair():
    q = QuicConnection(configuration=QuicConfiguration(is_client=True, server_name="wirecheck.test"))
    q.connect(("127.0.0.1", 4433), now=0.0)
    assert aio.one_rtt_crypto(q) is q._cryptos[tls.Epoch.ONE_RTT]
