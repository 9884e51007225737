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
def serve(listen_at, transport, shares, users, encrypt, sign, accept_transport_security, cert, key, client_ca,
          keys_out):
    """Serve directories over SMB 3.1.1 (and 2.0.2-3.0.2) until interrupted."""
    from harness.blocking.server import SMBServer
    from harness.smb.server import ServerConfig, ShareConfig
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
                          accept_transport_security=accept_transport_security)
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
@click.argument("command", type=click.Choice(["ls", "get", "put", "rm", "mkdir", "rmdir", "cat", "lock", "notify"]))
@click.argument("args", nargs=-1)
def smb(unc, transport, user, sign, rdma, encrypt, accept_transport_security, cipher, server_name, ca, insecure, keys_out,
        timeout, command, args):
    """Run one command against //HOST[:PORT]/SHARE.

    \b
      ls [DIR]            list a directory
      get REMOTE [LOCAL]  download (LOCAL defaults to the base name)
      put LOCAL [REMOTE]  upload
      cat REMOTE          print a file to stdout
      rm PATH / mkdir PATH / rmdir PATH
      lock PATH OFFSET LENGTH [shared] [wait] [hold=SECONDS]
                          take a byte-range lock (exclusive unless `shared`; `wait`: block
                          until granted, at most --timeout, then cancel), hold it, unlock
      notify [DIR] [tree] [count=N] [filter=names|all|0xBITS]
                          print the next N changes in DIR (with `tree`: below it too)
    """
    from harness.blocking.client import SMBClient
    from harness.smb.client import SMBError
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
            _run(share, command, args)
            moved = client.rdma_bytes["read"] + client.rdma_bytes["write"]
            if transport == "smbdirect" and command in ("get", "put", "cat"):
                click.echo(f"{moved} bytes by RDMA", err=True)
    except (SMBError, TransportError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def _run(share, command: str, args: tuple[str, ...]) -> None:
    def need(count: int) -> None:
        if len(args) < count:
            raise click.UsageError(f"{command} needs {count} argument(s)")

    if command == "lock":
        _lock(share, args)
    elif command == "notify":
        _notify(share, args)
    elif command == "ls":
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


def _options(args: tuple[str, ...]) -> tuple[list[str], set[str], dict[str, str]]:
    """Positional words, bare flags from ``flags``-like words and key=value options of a command."""
    words, flags, values = [], set(), {}
    for arg in args:
        if "=" in arg:
            key, value = arg.split("=", 1)
            values[key] = value
        elif arg in ("shared", "wait", "tree"):
            flags.add(arg)
        else:
            words.append(arg)
    return words, flags, values


def _lock(share, args: tuple[str, ...]) -> None:
    import time

    from harness.smb.constants import AccessMask, CreateDisposition

    words, flags, values = _options(args)
    if len(words) != 3:
        raise click.UsageError("lock needs PATH OFFSET LENGTH")
    path, offset, length = words[0], int(words[1], 0), int(words[2], 0)
    hold = float(values.get("hold", "0"))
    file_id = share.open(path, AccessMask.GENERIC_READ, CreateDisposition.OPEN).file_id
    kind = "shared" if "shared" in flags else "exclusive"
    try:
        try:
            share.lock(file_id, offset, length, exclusive=kind == "exclusive", wait="wait" in flags)
        except TimeoutError as exc:
            raise click.ClickException(f"{path} {offset}+{length}: not granted within --timeout "
                                       "(the request was cancelled)") from exc
        click.echo(f"locked {path} {offset}+{length} ({kind})", err=True)
        time.sleep(hold)
        share.unlock(file_id, offset, length)
        click.echo(f"unlocked {path} {offset}+{length}", err=True)
    finally:
        share.close_file(file_id)


_FILTERS = {"names": 0x3, "all": 0xFFF}
_ACTIONS = {1: "ADDED", 2: "REMOVED", 3: "MODIFIED", 4: "RENAMED_OLD_NAME", 5: "RENAMED_NEW_NAME"}


def _notify(share, args: tuple[str, ...]) -> None:
    from harness.smb.constants import AccessMask, CreateDisposition, CreateOptions, NtStatus

    words, flags, values = _options(args)
    spec = values.get("filter", "all")
    completion_filter = _FILTERS[spec] if spec in _FILTERS else int(spec, 0)
    count = int(values.get("count", "1"))
    access = AccessMask.FILE_READ_DATA | AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE
    dir_id = share.open(words[0] if words else "", access, CreateDisposition.OPEN,
                        CreateOptions.DIRECTORY_FILE).file_id
    try:
        for _ in range(count):
            mid = share.notify_request(dir_id, completion_filter, watch_tree="tree" in flags)
            try:
                status, changes = share.notify_result(mid)
            except TimeoutError as exc:
                share.client.cancel(mid)
                share.client.wait(mid)
                raise click.ClickException("no change within --timeout") from exc
            if status == NtStatus.NOTIFY_ENUM_DIR:
                click.echo("overflow: too many changes to list, re-read the directory")
            for action, name in changes:
                click.echo(f"{_ACTIONS.get(action, str(action)):18} {name}")
    finally:
        share.close_file(dir_id)
