"""Fixtures for in-process tests of the socket wrapper: a private socket dir, activation, a pcap.

:func:`emulated_network` is the same as a context manager, for a test module whose fixture needs
another interface (or more set-up around it) than the fixtures here give.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

import wrappers
from wrappers.config import Config


@contextlib.contextmanager
def socket_dir() -> Iterator[str]:
    """A fresh private socket directory with a short path (sun_path is 108 bytes), removed after."""
    d = tempfile.mkdtemp(prefix="wc-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d)


@contextlib.contextmanager
def activated_in(d: str, iface: int = 11, pcap: str | None = None) -> Iterator[Config]:
    """The wrapper active in this process on socket dir ``d`` and interface ``iface`` (a pcap when
    given); the environment it exported (SOCKET_WRAPPER_*) is put back after."""
    saved = dict(os.environ)
    try:
        with wrappers.activate(d, iface=iface, pcap=pcap) as cfg:
            yield cfg
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def emulated_network(iface: int = 11, pcap: str | None = None) -> Iterator[Config]:
    """:func:`socket_dir` and :func:`activated_in` together: a private emulated network."""
    with socket_dir() as d, activated_in(d, iface, pcap) as cfg:
        yield cfg


@pytest.fixture
def swdir():
    """A fresh private socket directory (see :func:`socket_dir`)."""
    with socket_dir() as d:
        yield d


@pytest.fixture
def wrapped(swdir):
    """The wrapper active in this process on interface 11, no pcap."""
    with activated_in(swdir) as cfg:
        yield cfg


@pytest.fixture
def wrapped_pcap(swdir, tmp_path):
    """The wrapper active with a pcap; yields (config, pcap path)."""
    pcap = str(tmp_path / "run.pcap")
    with activated_in(swdir, pcap=pcap) as cfg:
        yield cfg, pcap
