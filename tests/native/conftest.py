from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .nativeutil import HERE, PSK_LINE, Peers, build_library, compile_c, need_toolchain


@pytest.fixture(scope="session")
def qtest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/native/c/qtest.c, compiled, with the preload library built."""
    need_toolchain()
    build_library()
    return compile_c(HERE / "c" / "qtest.c", tmp_path_factory.mktemp("native") / "qtest")


@pytest.fixture
def psk(tmp_path: Path) -> str:
    p = tmp_path / "psk.txt"
    p.write_text(PSK_LINE + "\n")
    return str(p)


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    ps = Peers(tmp_path)
    yield ps
    ps.close()
