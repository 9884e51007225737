"""Fuzzing the server state machine: bad input must end in a reply or in :class:`Disconnect`.

The corpus is the requests of a real session (negotiate, session setup, tree connect, create, write,
read, query directory, query info, ioctl, close, compounds), captured from our client model; each
case replays a prefix of it and then a mutated PDU (bit flips, truncation, splices, random bytes,
header field overwrites).  Any other exception — or a reply that is not a parseable SMB2/transform
message — is a bug.  ``python tests/smb/server_fuzz.py SECONDS`` runs it for a fixed time (the issue's
10-minute run); the pytest module test_smb_server_fuzz.py runs a short hypothesis version.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import sys
import tempfile
import time

from harness.smb import messages as m
from harness.smb.auth import Initiator
from harness.smb.client import ClientConnection, ClientSession
from harness.smb.constants import AccessMask, Command, CreateDisposition, CreateOptions
from harness.smb.header import Header
from harness.smb.server import Disconnect, ServerConfig, ServerConnection, ServerState, ShareConfig

USER, PASSWORD = "fuzz", "Fuzz-pw1"
ALL_FF = b"\xff" * 16


def make_state(root: str) -> ServerState:
    os.makedirs(os.path.join(root, "share"), exist_ok=True)
    return ServerState(ServerConfig(shares={"share": ShareConfig("share", os.path.join(root, "share"))},
                                    users={USER: PASSWORD}))


def record_session(state: ServerState, sign: bool) -> list[bytes]:
    """The request PDUs of one realistic session (as the server received them)."""
    pdus: list[bytes] = []
    server = ServerConnection(state)
    client = ClientConnection("tcp", "srv", require_signing=sign)
    sessions: dict[int, ClientSession] = {}

    def send(pdu: bytes) -> list:
        pdus.append(pdu)
        responses = []
        for reply in server.receive_pdu(pdu):
            responses += client.receive(reply, sessions)
        return responses

    negotiate = client.negotiate_request()
    pdus.append(negotiate)
    client.receive_negotiate(server.receive_pdu(negotiate)[0])
    session = ClientSession(initiator=Initiator(USER, PASSWORD))
    token = session.initiator.step(None)
    while token is not None:
        (response,) = send(client.session_setup_request(session, token))
        session.session_id = response.header.session_id
        sessions[session.session_id] = session
        token = client.session_setup_response(session, response)

    def req(command, body, tree=0, payload=0):
        raw, _ = client.build(command, body, session, tree, payload)
        return send(client.seal([raw], session, tree))[0]

    tree = req(Command.TREE_CONNECT, m.TreeConnectRequest("\\\\srv\\share")).header.tree_id
    created = req(Command.CREATE, m.CreateRequest(name="f.txt", desired_access=AccessMask.GENERIC_ALL, share_access=7,
                                                  create_disposition=CreateDisposition.OVERWRITE_IF), tree)
    fid = created.body.file_id
    req(Command.WRITE, m.WriteRequest(file_id=fid, data=b"hello fuzz" * 10), tree)
    req(Command.READ, m.ReadRequest(file_id=fid, length=100), tree)
    req(Command.QUERY_INFO, m.QueryInfoRequest(file_id=fid, info_type=1, file_info_class=18,
                                               output_buffer_length=4096), tree)
    req(Command.SET_INFO, m.SetInfoRequest(file_id=fid, info_type=1, file_info_class=20, buffer=struct.pack("<Q", 5)),
        tree)
    # security descriptor, EAs and streams (their codecs read client bytes)
    everyone = bytes([1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])
    ace = struct.pack("<BBHI", 0, 0, 8 + len(everyone), 0x1F01FF) + everyone
    dacl = struct.pack("<BBHHH", 2, 0, 8 + len(ace), 1, 0) + ace
    sd = struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, 20) + dacl
    req(Command.SET_INFO, m.SetInfoRequest(file_id=fid, info_type=3, additional_information=4, buffer=sd), tree)
    req(Command.QUERY_INFO, m.QueryInfoRequest(file_id=fid, info_type=3, additional_information=7,
                                               output_buffer_length=4096), tree)
    ea = struct.pack("<IBBH", 0, 0, 4, 3) + b"NAME\x00abc"
    req(Command.SET_INFO, m.SetInfoRequest(file_id=fid, info_type=1, file_info_class=15, buffer=ea), tree)
    req(Command.QUERY_INFO, m.QueryInfoRequest(file_id=fid, info_type=1, file_info_class=15, output_buffer_length=4096,
                                               input_buffer=struct.pack("<IB", 0, 4) + b"NAME\x00"), tree)
    stream = req(Command.CREATE, m.CreateRequest(name="f.txt:s:$DATA", desired_access=AccessMask.GENERIC_ALL,
                                                 share_access=7, create_disposition=CreateDisposition.OVERWRITE_IF), tree)
    req(Command.QUERY_INFO, m.QueryInfoRequest(file_id=stream.body.file_id, info_type=1, file_info_class=22,
                                               output_buffer_length=4096), tree)
    req(Command.CLOSE, m.CloseRequest(file_id=stream.body.file_id), tree)
    req(Command.IOCTL, m.IoctlRequest(ctl_code=0x001401FC, file_id=ALL_FF, max_output_response=4096), tree)
    req(Command.LOCK, m.LockRequest(file_id=fid, locks=[m.LockElement(0, 10, 0x12)], lock_sequence=0x11), tree)
    req(Command.LOCK, m.LockRequest(file_id=fid, locks=[m.LockElement(0, 10, 0x04)]), tree)
    req(Command.CLOSE, m.CloseRequest(file_id=fid), tree)
    dir_id = req(Command.CREATE, m.CreateRequest(name="", desired_access=AccessMask.GENERIC_READ, share_access=7,
                                                 create_disposition=CreateDisposition.OPEN,
                                                 create_options=CreateOptions.DIRECTORY_FILE), tree).body.file_id
    req(Command.QUERY_DIRECTORY, m.QueryDirectoryRequest(file_id=dir_id, file_information_class=37, file_name="*",
                                                         output_buffer_length=8192), tree)
    # a CHANGE_NOTIFY that goes async, and its CANCEL (which gets no reply of its own)
    raw, mid = client.build(Command.CHANGE_NOTIFY, m.ChangeNotifyRequest(file_id=dir_id, flags=1, completion_filter=0xFFF,
                                                                         output_buffer_length=4096), session, tree)
    interim = send(client.seal([raw], session, tree))[0]
    pdus.append(client.cancel_request(mid, interim.header.async_id, session))
    server.receive_pdu(pdus[-1])
    server.take_output()
    raws = [client.build(Command.CREATE, m.CreateRequest(name="g.txt", desired_access=AccessMask.GENERIC_ALL,
                                                         share_access=7, create_disposition=3), session, tree)[0],
            client.build(Command.CLOSE, m.CloseRequest(file_id=ALL_FF), session, tree)[0]]
    send(client.seal(raws, session, tree, related=True))
    req(Command.ECHO, m.EchoRequest())
    req(Command.LOGOFF, m.LogoffRequest())
    return pdus


def mutate(rng: random.Random, pdu: bytes) -> bytes:
    data = bytearray(pdu)
    kind = rng.randrange(7)
    if kind == 0 and data:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        data = data[: rng.randrange(len(data) + 1)]
    elif kind == 2 and len(data) > 64:
        start = rng.randrange(64, len(data))
        data[start:start + rng.randint(1, 16)] = os.urandom(rng.randint(0, 32))
    elif kind == 3 and len(data) >= 64:
        offset = rng.choice([6, 8, 12, 14, 16, 20, 24, 32, 36, 40])  # header fields
        size = 2 if offset in (6, 12, 14) else (8 if offset in (24, 40) else 4)
        data[offset:offset + size] = rng.choice([b"\x00", b"\xff", os.urandom(8)])[:1] * size
    elif kind == 4 and len(data) > 64:
        offset = rng.randrange(64, len(data))
        data[offset:offset + 4] = struct.pack("<I", rng.choice([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, len(data)]))
    elif kind == 5:
        data = bytearray(os.urandom(rng.randint(0, 300)))
        if rng.random() < 0.5:
            data[:4] = rng.choice([b"\xfeSMB", b"\xfdSMB", b"\xfcSMB"])
    else:
        data += os.urandom(rng.randint(1, 64))
    return bytes(data)


def check_reply(reply: bytes) -> None:
    protocol = reply[:4]
    assert protocol in (b"\xfeSMB", b"\xfdSMB"), protocol
    if protocol == b"\xfeSMB":
        Header.unpack(reply)


def run_case(state: ServerState, corpus: list[bytes], rng: random.Random) -> None:
    server = ServerConnection(state)
    prefix = rng.randrange(len(corpus))
    try:
        for pdu in corpus[:prefix]:
            for reply in server.receive_pdu(pdu):
                check_reply(reply)
        for _ in range(rng.randint(1, 3)):
            for reply in server.receive_pdu(mutate(rng, corpus[rng.randrange(len(corpus))])):
                check_reply(reply)
    except Disconnect:
        pass
    finally:
        server.close()


def main(seconds: float) -> int:
    root = tempfile.mkdtemp(prefix="smbfuzz-")
    try:
        state = make_state(root)
        corpora = [record_session(state, sign=False), record_session(state, sign=True)]
        rng = random.Random(int.from_bytes(os.urandom(8), "little"))
        deadline = time.monotonic() + seconds
        cases = 0
        while time.monotonic() < deadline:
            run_case(state, corpora[cases % 2], rng)
            cases += 1
        print(f"server fuzz: {cases} cases in {seconds:.0f} s, no crash")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0))
