"""`wirecheck pcap show|check`: ladder diagrams and declarative checks on a capture.

harness.cli registers this group. Exit status: 0 all checks passed,
1 a check failed, 2 usage error or bad input (unreadable capture, bad checks file, unknown field,
tshark missing) — so CI can tell "the product is wrong" from "the test is wrong".
"""
from __future__ import annotations

import sys

import click

from harness.pcap.capture import Capture
from harness.pcap.checks_yaml import ChecksError, load_checks
from harness.pcap.ladder import ladder, render
from harness.pcap.tshark import PcapError

EXIT_OK, EXIT_FAIL, EXIT_BAD = 0, 1, 2


def _capture(file, keylog, smb_keys, smb_ports) -> Capture:
    return Capture(file, keylog=keylog, smb_keys=smb_keys, smb_ports=smb_ports)


def _bad(msg: str) -> None:
    click.echo(f"wirecheck pcap: error: {msg}", err=True)
    sys.exit(EXIT_BAD)


_common = [
    click.option("--keylog", type=click.Path(dir_okay=False), help="TLS key log (NSS format) for QUIC."),
    click.option("--smb-keys", type=click.Path(dir_okay=False),
                 help="SMB3 session keys: lines `SESID S2C C2S` (see harness/pcap/keys.py)."),
    click.option("--smb-port", "smb_ports", type=int, multiple=True,
                 help="A TCP port other than 445 that carries SMB2 (repeatable)."),
]


def common(fn):
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


@click.group()
def pcap() -> None:
    """Inspect and assert on captures (SMB2/3 over TCP, QUIC, SMB Direct)."""


@pcap.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--checks", "checks_file", required=True, type=click.Path(dir_okay=False),
              help="YAML checks file (a list of checks, or a mapping with `checks:`).")
@common
@click.option("-q", "--quiet", is_flag=True, help="Print failures and the summary only.")
def check(file, checks_file, keylog, smb_keys, smb_ports, quiet) -> None:
    """Run the checks in CHECKS on FILE in one tshark pass."""
    try:
        cs = load_checks(checks_file)
        cap = _capture(file, keylog or cs.keylog, smb_keys or cs.smb_keys, [*smb_ports, *cs.smb_ports])
        results = cap.results(cs.assertions)
    except ChecksError as e:
        _bad(f"{len(e.problems)} problem(s) in the checks file:\n" + "\n".join(e.problems))
    except PcapError as e:
        _bad(str(e))
    failed = [r for r in results if not r.ok]
    if not quiet:
        for r in results:
            click.echo(f"===> {r.name}: {'OK' if r.ok else 'FAILED'}")
    if failed:
        click.echo("")
        click.echo(cap.report(failed, total=len(results)))
    click.echo(f"\nPASSED:  {len(results) - len(failed)}\nFAILED:  {len(failed)}")
    sys.exit(EXIT_FAIL if failed else EXIT_OK)


@pcap.command()
@click.argument("file", type=click.Path(dir_okay=False))
@common
@click.option("--all-tcp", is_flag=True, help="Also show pure TCP ACKs.")
@click.option("--width", type=int, default=28, help="Width of one lane.")
@click.option("--svg", "svg_out", type=click.Path(dir_okay=False), help="Also draw the ladder as an SVG picture.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False),
              help="Also write an HTML page: the SVG plus a table of the frames.")
def show(file, keylog, smb_keys, smb_ports, all_tcp, width, svg_out, html_out) -> None:
    """Print a ladder diagram of FILE: one line per SMB2, QUIC or TCP event."""
    try:
        cap = _capture(file, keylog, smb_keys, smb_ports)
        lines = ladder(cap, all_tcp=all_tcp, lane=width)
        notes = cap.notices()
        pictures = render(cap, all_tcp=all_tcp) if (svg_out or html_out) else None
    except PcapError as e:
        _bad(str(e))
    for ln in lines:
        click.echo(ln)
    for n in notes:
        click.echo(f"notice: {n}")
    for out, text in ((svg_out, pictures and pictures[0]), (html_out, pictures and pictures[1])):
        if out:
            try:
                with open(out, "w") as f:
                    f.write(text or "")
            except OSError as e:
                _bad(f"cannot write {out}: {e.strerror}")
            click.echo(f"wrote {out}")
