"""Small helpers for tests that read captures with tshark.

Why a helper: tshark reports a bad ``-e`` field or display filter only on stderr, with no rows on
stdout.  Calling it with stderr discarded turns a typo into "no matches" and a broken assertion
into a passing test.  ``run_tshark`` therefore raises with stderr whenever tshark fails.

Under CI (environment variable ``CI`` set) a missing tshark fails the test; on a laptop it skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import pytest

#: Turn on the checksum validation that Wireshark leaves off by default.
CHECKSUM_OPTS: tuple[str, ...] = (
    "-o", "ip.check_checksum:TRUE",
    "-o", "tcp.check_checksum:TRUE",
    "-o", "udp.check_checksum:TRUE",
)  # fmt: skip

#: QUIC on an ephemeral port that tshark's UDP port table gives to another dissector (79 of the ports
#: 10000-60000: quake3, eobi, ...) is found only when heuristics run first; queries about QUIC use it,
#: and so do queries about TLS or with a TLS key log (in a QUIC capture the handshake is QUIC's), as
#: the pcap library does.
QUIC_FIRST: tuple[str, ...] = ("-o", "udp.try_heuristic_first:TRUE")

#: Dissect every segment's payload where it stands in the file.  In a capture that cwrap writes to
#: as well, the two writers' order is not causal (cwrap logs a send after making it, without our
#: lock): a request can come after the reply that ACKs it.  tshark's sequence analysis then takes
#: the request for a spurious retransmission and hands its bytes to no dissector (no http.request),
#: so a count of application messages in such a capture needs this.
ORDER_FREE: tuple[str, ...] = ("-o", "tcp.analyze_sequence_numbers:FALSE")

#: Frames that something is wrong with: malformed, an expert warning or error (bad checksum,
#: "previous segment not captured", "ACKed unseen segment", ...), or any TCP analysis flag
#: (retransmission, out-of-order, dup ack, ...).
PROBLEM_FILTER = "tcp.analysis.flags || _ws.malformed || _ws.expert.severity >= warning"


class TsharkError(RuntimeError):
    """tshark exited non-zero; the message holds its command line and stderr."""


def tshark_path() -> str:
    """Path of tshark, or skip (fail under CI) the calling test."""
    path = shutil.which("tshark")
    if path is None:
        message = "tshark not found on PATH"
        if os.environ.get("CI"):
            pytest.fail(message + " (required under CI)")
        pytest.skip(message)
    return path


def run_tshark(args: Sequence[str], *, timeout: float = 120) -> str:
    """Run ``tshark ARGS`` and return stdout; raise TsharkError (with stderr) on failure."""
    cmd = [tshark_path(), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise TsharkError(f"tshark timed out after {timeout}s: {cmd}") from e
    if proc.returncode != 0:
        raise TsharkError(f"tshark exited {proc.returncode}: {cmd}\n{proc.stderr.strip()}")
    return proc.stdout


def _about_quic(display_filter: str | None, names: Sequence[str], options: Sequence[str]) -> bool:
    words = (display_filter or "", *names, *options)
    return any("quic" in t or "tls" in t for t in words)


def fields(
    path: str | os.PathLike[str],
    names: Sequence[str],
    *,
    display_filter: str | None = None,
    options: Sequence[str] = (),
    timeout: float = 120,
) -> list[list[str]]:
    """One row per frame (matching ``display_filter``), one string per field ('' when absent).

    Repeated fields come comma-separated in one cell, as tshark prints them.
    """
    if _about_quic(display_filter, names, options):
        options = (*QUIC_FIRST, *options)
    args = ["-r", os.fspath(path), "-n", *options, "-T", "fields", "-E", "separator=\t"]
    for name in names:
        args += ["-e", name]
    if display_filter:
        args += ["-Y", display_filter]
    out = run_tshark(args, timeout=timeout)
    return [line.split("\t") for line in out.splitlines()]


def count_frames(path: str | os.PathLike[str], *, display_filter: str | None = None,
                 options: Sequence[str] = ()) -> int:
    """How many frames tshark reads (matching ``display_filter``)."""
    return len(fields(path, ["frame.number"], display_filter=display_filter, options=options))


def problems(path: str | os.PathLike[str], *, options: Sequence[str] = CHECKSUM_OPTS) -> list[list[str]]:
    """Frames matching PROBLEM_FILTER, with their number, info, expert messages and analysis flags.

    An empty list means tshark found nothing to complain about (with checksum validation on).
    """
    return fields(
        path,
        ["frame.number", "_ws.col.Info", "_ws.expert.message", "_ws.malformed", "tcp.analysis.flags"],
        display_filter=PROBLEM_FILTER,
        options=options,
    )
