"""``wirecheck serve`` and ``wirecheck smb``: the reference server and client as commands.

    wirecheck serve --listen 127.0.0.1:4450 --share data=/srv/data --user alice:secret [--encrypt]
    wirecheck smb //127.0.0.1:4450/data --user alice:secret [--encrypt] ls|get|put|rm|mkdir|cat ...

Both write SMB session keys for tshark's smb2_seskey_list with --keys-out (one line per session).
"""

from __future__ import annotations

import os
import re
import sys

import click

from harness.transport import DEFAULT_PORTS


def _split_hostport(text: str, default_port: int) -> tuple[str, int]:
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]+)(?::(\d+))?|([0-9a-fA-F:]+)", text)
    if not match:
        raise click.BadParameter(f"not HOST[:PORT]: {text!r}")
    host = match.group(1) or match.group(3) or match.group(5)
    port = match.group(2) or match.group(4)
    return host, int(port) if port else default_port


def _emulated_network(transport: str) -> None:
    """SMB Direct exists only on the emulated network (no kernel IPPROTO_SMBDIRECT yet): join the
    socket directory of SOCKET_WRAPPER_DIR (``wirecheck exec`` sets it and activates already)."""
    if transport != "smbdirect":
        return
    import wrappers

    if wrappers.active_config() is not None:
        return
    if not os.environ.get("SOCKET_WRAPPER_DIR"):
        raise click.UsageError("--transport smbdirect needs the emulated network: run under `wirecheck exec` "
                               "or set SOCKET_WRAPPER_DIR")
    try:
        wrappers.activate()
    except Exception as exc:  # noqa: BLE001 - a bad socket directory is the user's to fix
        raise click.UsageError(f"SOCKET_WRAPPER_DIR: {exc}") from exc


def _user(text: str) -> tuple[str, str]:
    if ":" not in text:
        raise click.BadParameter("expected USER:PASSWORD")
    user, password = text.split(":", 1)
    return user, password


@click.command("serve")
@click.option("--listen", "listen_at", default="0.0.0.0", show_default=True, help="ADDR[:PORT]")
@click.option("--transport", type=click.Choice(["tcp", "nbt", "quic", "smbdirect"]), default="tcp", show_default=True,
              help="smbdirect: SMB Direct (MS-SMBD) with RDMA on the emulated network (under `wirecheck exec`)")
@click.option("--share", "shares", multiple=True, required=True,
              help="NAME=PATH, or NAME=PATH:encrypt to require encryption on that share")
@click.option("--user", "users", multiple=True, required=True, help="USER:PASSWORD (repeatable)")
@click.option("--encrypt", is_flag=True, help="require encryption for every session")
@click.option("--sign", is_flag=True, help="require signing")
@click.option("--accept-transport-security", is_flag=True,
              help="over QUIC, accept SMB2_ACCEPT_TRANSPORT_LEVEL_SECURITY (no SMB encryption)")
@click.option("--cert", type=click.Path(exists=True), help="QUIC: certificate (PEM)")
@click.option("--key", type=click.Path(exists=True), help="QUIC: private key (PEM)")
@click.option("--client-ca", type=click.Path(exists=True), help="QUIC: require client certificates from this CA")
@click.option("--keys-out", type=click.Path(), help="append SMB session keys (tshark smb2_seskey_list lines)")
@click.option("--break-timeout", type=click.FloatRange(min=0.01), default=35.0, show_default=True,
              help="seconds an oplock or lease break waits for its acknowledgment before the holder loses it")
def serve(listen_at, transport, shares, users, encrypt, sign, accept_transport_security, cert, key, client_ca,
          keys_out, break_timeout):
    """Serve directories over SMB 3.1.1 (and 2.0.2-3.0.2) until interrupted."""
    from harness.smb.server import ServerConfig, ShareConfig
    from harness.smb_server import SMBServer
    from harness.transport import TransportUnavailable

    host, port = _split_hostport(listen_at, DEFAULT_PORTS[transport])
    share_configs = {}
    for item in shares:
        if "=" not in item:
            raise click.BadParameter(f"--share {item!r}: expected NAME=PATH")
        name, path = item.split("=", 1)
        share_encrypt = False
        if path.endswith(":encrypt"):
            path, share_encrypt = path[: -len(":encrypt")], True
        if not os.path.isdir(path):
            raise click.BadParameter(f"--share {item!r}: {path} is not a directory")
        share_configs[name] = ShareConfig(name, path, share_encrypt)
    config = ServerConfig(shares=share_configs, users=dict(_user(u) for u in users), encrypt=encrypt, sign=sign,
                          accept_transport_security=accept_transport_security, break_timeout=break_timeout)
    _emulated_network(transport)
    options = {}
    if transport == "quic":
        if not (cert and key):
            raise click.UsageError("--transport quic needs --cert and --key")
        options = {"cert": cert, "key": key, "client_ca": client_ca}
    try:
        if options:
            from harness.transport import listen

            server = SMBServer(config, transport=transport, keys_out=keys_out,
                               listener=listen(transport, host, port, **options))
        else:
            server = SMBServer(config, host, port, transport=transport, keys_out=keys_out)
    except TransportUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"serving {', '.join(share_configs)} on {transport}://{server.address[0]}:{server.port}", err=True)
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


_UNC = re.compile(r"^(?://|\\\\)([^/\\]+)[/\\]([^/\\]+)[/\\]?$")


@click.command("smb")
@click.argument("unc")
@click.option("--transport", type=click.Choice(["tcp", "nbt", "quic", "smbdirect"]), default="tcp", show_default=True,
              help="smbdirect: SMB Direct (MS-SMBD) with RDMA on the emulated network (under `wirecheck exec`)")
@click.option("--user", "user", required=True, help="USER:PASSWORD")
@click.option("--sign/--no-sign", default=True, show_default=True,
              help="require signing; a signed or encrypted session never uses RDMA channels (MS-SMB2 3.2.4.6)")
@click.option("--rdma/--no-rdma", default=True, show_default=True,
              help="over smbdirect, READ/WRITE above 16 KiB through RDMA channels (RDMA_V1_INVALIDATE)")
@click.option("--encrypt", is_flag=True, help="encrypt the session")
@click.option("--accept-transport-security", is_flag=True,
              help="over QUIC, offer SMB2_ACCEPT_TRANSPORT_LEVEL_SECURITY (no SMB encryption if accepted)")
@click.option("--cipher", type=click.Choice(["aes-128-ccm", "aes-128-gcm", "aes-256-ccm", "aes-256-gcm"]))
@click.option("--server-name", help="name for NETNAME and the QUIC certificate check (default: HOST)")
@click.option("--ca", type=click.Path(exists=True), help="QUIC: trust this CA")
@click.option("--insecure", is_flag=True, help="QUIC: do not check the certificate")
@click.option("--keys-out", type=click.Path(), help="append SMB session keys (tshark smb2_seskey_list lines)")
@click.option("--timeout", type=float, default=30.0, show_default=True)
@click.option("--lease", "lease", type=click.Choice(["R", "RH", "RW", "RWH"], case_sensitive=False),
              help="hold: ask for this lease (v2, a random key)")
@click.option("--oplock", type=click.Choice(["ii", "exclusive", "batch"], case_sensitive=False),
              help="hold: ask for this oplock instead of a lease")
@click.option("--no-ack", is_flag=True, help="hold: print breaks without acknowledging them")
@click.argument("command", type=click.Choice(["ls", "get", "put", "rm", "mkdir", "rmdir", "cat", "hold"]))
@click.argument("args", nargs=-1)
def smb(unc, transport, user, sign, rdma, encrypt, accept_transport_security, cipher, server_name, ca, insecure, keys_out,
        timeout, lease, oplock, no_ack, command, args):
    """Run one command against //HOST[:PORT]/SHARE.

    \b
      ls [DIR]            list a directory
      get REMOTE [LOCAL]  download (LOCAL defaults to the base name)
      put LOCAL [REMOTE]  upload
      cat REMOTE          print a file to stdout
      rm PATH / mkdir PATH / rmdir PATH
      hold PATH [SECONDS] open PATH with --lease (default RWH) or --oplock, print the grant
                          and each break as it comes (acknowledged unless --no-ack), close
    """
    from harness.smb.client import SMBError
    from harness.smb_client import SMBClient
    from harness.transport import TransportError

    match = _UNC.match(unc)
    if not match:
        raise click.BadParameter(f"expected //HOST[:PORT]/SHARE, got {unc!r}")
    host, port = _split_hostport(match.group(1), DEFAULT_PORTS[transport])
    username, password = _user(user)
    options = {}
    if transport == "quic":
        options = {"ca": ca, "insecure": insecure}
    _emulated_network(transport)
    try:
        with SMBClient(host, port, transport=transport, username=username, password=password, encrypt=encrypt,
                       cipher=cipher, server_name=server_name, timeout=timeout, keys_out=keys_out, sign=sign,
                       rdma=rdma, accept_transport_security=accept_transport_security,
                       **options) as client, client.share(match.group(2)) as share:
            if command == "hold":
                _hold(client, share, args, lease, oplock, no_ack)
            else:
                _run(share, command, args)
            moved = client.rdma_bytes["read"] + client.rdma_bytes["write"]
            if transport == "smbdirect" and command in ("get", "put", "cat"):
                click.echo(f"{moved} bytes by RDMA", err=True)
    except (SMBError, TransportError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def _hold(client, share, args: tuple[str, ...], lease: str | None, oplock: str | None, no_ack: bool) -> None:
    """Hold an oplock or a lease and show what the server does to it (MS-SMB2 §3.3.4.6-7)."""
    from harness.smb.constants import AccessMask, CreateDisposition, LeaseState, OplockLevel
    from harness.smb_client import Lease, granted_lease

    if not args:
        raise click.UsageError("hold needs PATH [SECONDS]")
    seconds = float(args[1]) if len(args) > 1 else 60.0
    bits = {"R": LeaseState.READ_CACHING, "W": LeaseState.WRITE_CACHING, "H": LeaseState.HANDLE_CACHING}

    def letters(state: int) -> str:
        return "".join(c for c, bit in bits.items() if state & bit) or "NONE"

    access = AccessMask.FILE_READ_DATA | AccessMask.FILE_WRITE_DATA | AccessMask.FILE_READ_ATTRIBUTES
    if oplock:
        level = {"ii": OplockLevel.II, "exclusive": OplockLevel.EXCLUSIVE, "batch": OplockLevel.BATCH}[oplock.lower()]
        response = share.open(args[0], access, CreateDisposition.OPEN_IF, oplock=level)
        click.echo(f"granted oplock {OplockLevel(response.oplock_level).name}")
    else:
        wanted = sum(bits[c] for c in (lease or "RWH").upper())
        response = share.open(args[0], access, CreateDisposition.OPEN_IF, lease=Lease(os.urandom(16), wanted))
        got = granted_lease(response)
        click.echo(f"granted lease {letters(got.lease_state) if got else 'none'}"
                   + (f" epoch {got.epoch}" if got is not None and hasattr(got, "epoch") else ""))

    def show(note) -> bool:
        body = note.body
        if hasattr(body, "lease_key"):
            click.echo(f"lease break {letters(body.current_lease_state)} -> {letters(body.new_lease_state)}"
                       f" epoch {body.new_epoch}{' (ack required)' if body.flags & 1 else ''}")
        else:
            click.echo(f"oplock break -> {OplockLevel(body.oplock_level).name}")
        return no_ack

    client.on_break = show
    client.poll(seconds)
    for ack in client.break_acks:
        click.echo(f"acknowledged: status 0x{ack.header.status:08x}")
    share.close_file(response.file_id)


def _run(share, command: str, args: tuple[str, ...]) -> None:
    def need(count: int) -> None:
        if len(args) < count:
            raise click.UsageError(f"{command} needs {count} argument(s)")

    if command == "ls":
        for entry in share.listdir(args[0] if args else ""):
            kind = "D" if entry.is_dir else "A"
            click.echo(f"{entry.name:40} {kind} {entry.size:>12}")
    elif command == "get":
        need(1)
        local = args[1] if len(args) > 1 else os.path.basename(args[0].replace("\\", "/"))
        size = share.get(args[0], local)
        click.echo(f"got {args[0]} ({size} bytes) as {local}", err=True)
    elif command == "put":
        need(1)
        remote = args[1] if len(args) > 1 else os.path.basename(args[0])
        size = share.put(args[0], remote)
        click.echo(f"put {args[0]} ({size} bytes) as {remote}", err=True)
    elif command == "cat":
        need(1)
        sys.stdout.flush()
        out = sys.stdout.buffer
        for block in share.iter_read(args[0]):
            out.write(block)
        out.flush()
    elif command == "rm":
        need(1)
        share.remove(args[0])
    elif command == "mkdir":
        need(1)
        share.mkdir(args[0])
    elif command == "rmdir":
        need(1)
        share.remove(args[0], directory=True)
