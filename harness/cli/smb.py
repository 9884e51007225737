"""``wirecheck serve`` and ``wirecheck smb``: the reference server and client as commands.

    wirecheck serve --listen 127.0.0.1:4450 --share data=/srv/data --user alice:secret [--encrypt]
    wirecheck serve --multichannel --listen tcp:127.0.0.10:445 --listen smbdirect:127.0.0.10:5445 ...
    wirecheck smb //127.0.0.1:4450/data --user alice:secret [--encrypt] ls|get|put|rm|mkdir|cat ...

Both write SMB session keys for tshark's smb2_seskey_list with --keys-out (one line per session).
"""

from __future__ import annotations

import os
import re
import sys

import click

from harness.cli import smb_files
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


TRANSPORTS = ("tcp", "nbt", "quic", "smbdirect")
_SPEED_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _listener(text: str, default_transport: str) -> tuple[str, str, int, dict]:
    """``[TRANSPORT:]ADDR[:PORT][,speed=10G][,rss]`` -> (transport, host, port, options).  An IPv6
    address with a port is written in brackets: ``tcp:[::1]:445``."""
    spec, *extras = text.split(",")
    transport = default_transport
    head, sep, rest = spec.partition(":")
    if sep and head in TRANSPORTS:
        transport, spec = head, rest
    host, port = _split_hostport(spec, DEFAULT_PORTS[transport])
    options: dict = {}
    for extra in extras:
        key, _, value = extra.partition("=")
        if key == "rss" and not value:
            options["rss"] = True
        elif key == "speed" and (match := re.fullmatch(r"(\d+)([KMGT]?)", value.upper())):
            options["link_speed"] = int(match.group(1)) * _SPEED_UNITS[match.group(2)]
        else:
            raise click.BadParameter(f"--listen {text!r}: unknown option {extra!r} (speed=N[K|M|G|T], rss)")
    return transport, host, port, options


def _share(item: str):
    """``NAME=PATH[:encrypt][:ca]`` (``ca``: continuously available, persistent handles granted)."""
    from harness.smb.server import ShareConfig

    if "=" not in item:
        raise click.BadParameter(f"--share {item!r}: expected NAME=PATH")
    name, path = item.split("=", 1)
    flags: set[str] = set()
    while (tail := path.rsplit(":", 1)) and len(tail) == 2 and tail[1] in ("encrypt", "ca"):
        path = tail[0]
        flags.add(tail[1])
    if not os.path.isdir(path):
        raise click.BadParameter(f"--share {item!r}: {path} is not a directory")
    return ShareConfig(name, path, "encrypt" in flags, continuously_available="ca" in flags)


@click.command("serve")
@click.option("--listen", "listen_at", multiple=True, show_default=True,
              help="[TRANSPORT:]ADDR[:PORT][,speed=10G][,rss], repeatable (e.g. --listen tcp:127.0.0.10:445 "
                   "--listen smbdirect:127.0.0.10:5445 --listen quic:127.0.0.10:443); default 0.0.0.0 on --transport")
@click.option("--transport", type=click.Choice(TRANSPORTS), default="tcp", show_default=True,
              help="for a --listen without TRANSPORT:; smbdirect: SMB Direct (MS-SMBD) with RDMA on the emulated "
                   "network (under `wirecheck exec`)")
@click.option("--share", "shares", multiple=True, required=True,
              help="NAME=PATH, with :encrypt to require encryption and/or :ca for a continuously available share")
@click.option("--user", "users", multiple=True, required=True, help="USER:PASSWORD (repeatable)")
@click.option("--encrypt", is_flag=True, help="require encryption for every session")
@click.option("--sign", is_flag=True, help="require signing")
@click.option("--accept-transport-security", is_flag=True,
              help="over QUIC, accept SMB2_ACCEPT_TRANSPORT_LEVEL_SECURITY (no SMB encryption)")
@click.option("--multichannel/--no-multichannel", default=False, show_default=True,
              help="offer SMB2_GLOBAL_CAP_MULTI_CHANNEL: session binding and the interface list of the listeners")
@click.option("--durable-timeout", type=click.FloatRange(0, 3600), default=60.0, show_default=True,
              help="seconds a durable v2 handle asking for no timeout survives its connection")
@click.option("--durable-max-timeout", type=click.FloatRange(0, 3600), default=300.0, show_default=True,
              help="cap on the timeout a durable v2 handle asks for, seconds")
@click.option("--durable-v1-timeout", type=click.FloatRange(0, 3600), default=16.0, show_default=True,
              help="seconds a durable v1 handle survives its connection")
@click.option("--cert", type=click.Path(exists=True), help="QUIC: certificate (PEM)")
@click.option("--key", type=click.Path(exists=True), help="QUIC: private key (PEM)")
@click.option("--client-ca", type=click.Path(exists=True), help="QUIC: require client certificates from this CA")
@click.option("--keys-out", type=click.Path(), help="append SMB session keys (tshark smb2_seskey_list lines)")
@click.option("--break-timeout", type=click.FloatRange(min=0.01), default=35.0, show_default=True,
              help="seconds an oplock or lease break waits for its acknowledgment before the holder loses it")
def serve(listen_at, transport, shares, users, encrypt, sign, accept_transport_security, multichannel,
          durable_timeout, durable_max_timeout, durable_v1_timeout, cert, key, client_ca, keys_out, break_timeout):
    """Serve directories over SMB 3.1.1 (and 2.0.2-3.0.2) until interrupted."""
    from harness.blocking.server import SMBServer
    from harness.smb.server import ServerConfig
    from harness.transport import TransportUnavailable, listen

    listeners = [_listener(text, transport) for text in (listen_at or ("0.0.0.0",))]
    share_configs = {config.name: config for config in map(_share, shares)}
    config = ServerConfig(shares=share_configs, users=dict(_user(u) for u in users), encrypt=encrypt, sign=sign,
                          accept_transport_security=accept_transport_security, multichannel=multichannel,
                          durable_timeout_ms=int(durable_timeout * 1000),
                          durable_max_timeout_ms=int(durable_max_timeout * 1000),
                          durable_v1_timeout_ms=int(durable_v1_timeout * 1000), break_timeout=break_timeout)
    if any(kind == "smbdirect" for kind, *_ in listeners):
        _emulated_network("smbdirect")
    if any(kind == "quic" for kind, *_ in listeners) and not (cert and key):
        raise click.UsageError("a QUIC listener needs --cert and --key")
    servers: list = []
    try:
        for kind, host, port, options in listeners:
            quic = {"cert": cert, "key": key, "client_ca": client_ca} if kind == "quic" else {}
            # One server state behind every listener: a session bound over several transports is one session.
            server = SMBServer(config, transport=kind, keys_out=keys_out, listener=listen(kind, host, port, **quic),
                               share_with=servers[0] if servers else None, **options)
            servers.append(server)
            click.echo(f"serving {', '.join(share_configs)} on {kind}://{_hostport(server.address)}", err=True)
    except (TransportUnavailable, OSError) as exc:
        for server in servers:
            server.stop()
        raise click.ClickException(str(exc)) from exc
    sys.stderr.flush()
    for server in servers[1:]:
        server.start()
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers[1:]:
            server.stop()


def _hostport(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
@click.option("--multichannel", is_flag=True,
              help="bind a channel to every address the server lists (SMB Direct where RDMA_CAPABLE, else TCP, "
                   "QUIC with --ca/--insecure where no TCP answers) and print the channels")
@click.option("--timeout", type=float, default=30.0, show_default=True)
@click.option("--lease", "lease", type=click.Choice(["R", "RH", "RW", "RWH"], case_sensitive=False),
              help="hold: ask for this lease (v2, a random key)")
@click.option("--oplock", type=click.Choice(["ii", "exclusive", "batch"], case_sensitive=False),
              help="hold: ask for this oplock instead of a lease")
@click.option("--no-ack", is_flag=True, help="hold: print breaks without acknowledging them")
@click.argument("command", type=click.Choice(["ls", "get", "put", "rm", "mkdir", "rmdir", "cat", "lock", "notify",
                                             "hold", "getsd", "setsd", "streams"]))
@click.argument("args", nargs=-1)
def smb(unc, transport, user, sign, rdma, encrypt, accept_transport_security, cipher, server_name, ca, insecure, keys_out,
        multichannel, timeout, lease, oplock, no_ack, command, args):
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
      hold PATH [SECONDS] open PATH with --lease (default RWH) or --oplock, print the grant
                          and each break as it comes (acknowledged unless --no-ack), close
      getsd PATH          print the owner, group and DACL (allow|deny:SID:MASK:FLAGS per ACE)
      setsd PATH ACE...   replace the DACL; ACE as allow|deny:SID:MASK[:FLAGS]
      streams PATH        list the named streams (reach one as PATH:NAME with get/put/cat/rm)
    """
    from harness.blocking.client import SMBClient
    from harness.blocking.multichannel import MultiChannelClient
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
    if multichannel and os.environ.get("SOCKET_WRAPPER_DIR"):
        _emulated_network("smbdirect")  # SMB Direct channels exist only on the emulated network
    factory = MultiChannelClient if multichannel else SMBClient
    try:
        with factory(host, port, transport=transport, username=username, password=password, encrypt=encrypt,
                     cipher=cipher, server_name=server_name, timeout=timeout, keys_out=keys_out, sign=sign,
                     rdma=rdma, accept_transport_security=accept_transport_security,
                     **options) as client:
            if multichannel:
                _bind_channels(client, {k: v for k, v in (("ca", ca), ("insecure", insecure)) if v})
            with client.share(match.group(2)) as share:
                if command == "hold":
                    _hold(client, share, args, lease, oplock, no_ack)
                else:
                    _run(share, command, args)
            moved = client.rdma_bytes["read"] + client.rdma_bytes["write"]
            if (transport == "smbdirect" or multichannel) and command in ("get", "put", "cat"):
                click.echo(f"{moved} bytes by RDMA", err=True)
    except (SMBError, TransportError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def _bind_channels(client, quic_options: dict) -> None:
    """``--multichannel``: bind what the server offers and say which channels the session has."""
    if not client.multichannel:
        click.echo("server does not offer multichannel: 1 channel", err=True)
    else:
        client.bind_offered(**quic_options)
    for number, channel in enumerate(client.channels, 1):
        kind, host, port, _options = channel.how
        role = "primary" if number == 1 else "bound"
        rdma = ", RDMA" if getattr(channel.transport, "supports_rdma", False) else ""
        click.echo(f"channel {number}: {kind}://{_hostport((host, port or DEFAULT_PORTS[kind]))} ({role}{rdma})",
                   err=True)


def _hold(client, share, args: tuple[str, ...], lease: str | None, oplock: str | None, no_ack: bool) -> None:
    """Hold an oplock or a lease and show what the server does to it (MS-SMB2 §3.3.4.6-7)."""
    from harness.blocking.client import Lease, granted_lease
    from harness.smb.constants import AccessMask, CreateDisposition, LeaseState, OplockLevel

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
    elif command == "getsd":
        need(1)
        smb_files.getsd(share, args[0])
    elif command == "setsd":
        need(2)
        smb_files.setsd(share, args[0], args[1:])
    elif command == "streams":
        need(1)
        smb_files.streams(share, args[0])


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
