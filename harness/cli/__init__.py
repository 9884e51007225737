"""The `wirecheck` command line: one command, one vocabulary, every sub-command registered here.

Each sub-command lives in its own module of this package and is added explicitly below, so a broken
import fails `wirecheck` at once with its traceback instead of silently hiding the command. The
logic stays in its layer (harness.runner for `check`, harness.pcap for `pcap`, harness.blocking for
`serve`/`smb`); these modules only turn arguments into calls.

    wirecheck exec   run a program on the emulated network       (exec.py)
    wirecheck demo   the built-in default job                    (demo.py)
    wirecheck check  run scenario cells                          (check.py)
    wirecheck pcap   ladder diagrams and checks on a capture     (pcap.py)
    wirecheck serve  the reference SMB server                    (smb.py)
    wirecheck smb    one command against an SMB share            (smb.py)
    wirecheck h3     HTTP/3 GET client and file server over QUIC (h3.py)
"""

from __future__ import annotations

import click

from harness.cli.check import check
from harness.cli.demo import demo
from harness.cli.exec import exec_
from harness.cli.h3 import h3
from harness.cli.pcap import pcap
from harness.cli.smb import serve, smb

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """wirecheck: SMB 3.1.1 transports emulated in user space."""


for _command in (exec_, demo, check, pcap, serve, smb, h3):
    main.add_command(_command)
