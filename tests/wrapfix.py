"""Fixtures for in-process tests of the socket wrapper: a private socket dir, activation, a pcap."""

from __future__ import annotations

import os
import tempfile

import pytest

import wrappers


@pytest.fixture
def swdir():
    """A fresh private socket directory with a short path (sun_path is 108 bytes)."""
    d = tempfile.mkdtemp(prefix="wc-", dir="/tmp")
    yield d
    for root, dirs, files in os.walk(d, topdown=False):
        for f in files:
            os.unlink(os.path.join(root, f))
        for x in dirs:
            os.rmdir(os.path.join(root, x))
    os.rmdir(d)


@pytest.fixture
def wrapped(swdir):
    """The wrapper active in this process on interface 11, no pcap."""
    saved = dict(os.environ)
    with wrappers.activate(swdir, iface=11) as cfg:
        yield cfg
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def wrapped_pcap(swdir, tmp_path):
    """The wrapper active with a pcap; yields (config, pcap path)."""
    saved = dict(os.environ)
    pcap = str(tmp_path / "run.pcap")
    with wrappers.activate(swdir, iface=11, pcap=pcap) as cfg:
        yield cfg, pcap
    os.environ.clear()
    os.environ.update(saved)
