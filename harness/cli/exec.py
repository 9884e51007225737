"""`wirecheck exec`: run a program, unmodified, on the emulated network."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import click

from wrappers.config import WrapperConfigError
from wrappers.launch import child_environ
from wrappers.sockdir import check_socket_dir, make_socket_dir, sweep_stale


@click.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--dir", "socket_dir", metavar="D", help="Socket directory (default: $SOCKET_WRAPPER_DIR, else a new private one).")
@click.option("--iface", metavar="N", help="This program's interface number, 1..64 (SOCKET_WRAPPER_DEFAULT_IFACE).")
@click.option("--pcap", metavar="F", help="Append every packet to this pcap (SOCKET_WRAPPER_PCAP_FILE).")
@click.option("--network", type=click.Choice(["127.0.0.0", "10.53.57.0"]), help="Emulated IPv4 network.")
@click.option("--create", is_flag=True, help="Create the socket directory (mode 0700) if it is missing.")
@click.option("--no-native", is_flag=True, help="Do not LD_PRELOAD libsocket_wrapper.so (Python children only).")
@click.option("--clean", is_flag=True, help="Remove stale socket files (from crashed runs) before starting.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(socket_dir: str | None, iface: str | None, pcap: str | None, network: str | None,
          create: bool, no_native: bool, clean: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND with its AF_INET/AF_INET6 sockets emulated over unix sockets.

    Python programs are wrapped through an injected sitecustomize, native programs through
    Debian's libsocket_wrapper.so; both share the socket directory and the pcap.
    """
    temp = None
    socket_dir = socket_dir or os.environ.get("SOCKET_WRAPPER_DIR") or None
    if socket_dir is None:
        temp = socket_dir = make_socket_dir("wirecheck-sw-")
        click.echo(f"wirecheck exec: socket directory {socket_dir}", err=True)
    try:
        try:
            check_socket_dir(socket_dir, create=create)
            env = child_environ(socket_dir, iface=iface, pcap=pcap, ipv4_network=network, native=not no_native)
        except (ValueError, WrapperConfigError) as e:
            raise click.UsageError(str(e)) from None
        if clean:
            for name in sweep_stale(env["SOCKET_WRAPPER_DIR"]):
                click.echo(f"wirecheck exec: removed stale socket file {name}", err=True)
        try:
            proc = subprocess.Popen(list(command), env=env)
        except FileNotFoundError:
            raise click.UsageError(f"{command[0]}: command not found") from None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda s, _f: proc.send_signal(s))
        rc = proc.wait()
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    sys.exit(rc if rc >= 0 else 128 - rc)

