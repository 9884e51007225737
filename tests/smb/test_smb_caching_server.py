"""Oplocks and leases over the real server (harness/smb/server/oplocks.py on the CachingTable), driven by
two of our clients over loopback TCP: breaks that wait for an acknowledgment, breaks that time out,
upgrades, BREAK_IN_PROGRESS and acknowledgments with the MS-SMB2 statuses (§3.3.4.6-7, §3.3.5.22)."""

from __future__ import annotations

import resource
import time

import pytest

from harness.blocking.client import Lease, SMBClient, granted_lease
from harness.blocking.server import SMBServer
from harness.smb import messages as m
from harness.smb.constants import (
    AccessMask,
    Command,
    CreateDisposition,
    HeaderFlags,
    LeaseFlags,
    LeaseState,
    NtStatus,
    OplockLevel,
)
from harness.smb.server import ServerConfig, ShareConfig

USER, PASSWORD = "alice", "Pw-alice1"
RW = AccessMask.FILE_READ_DATA | AccessMask.FILE_WRITE_DATA | AccessMask.FILE_READ_ATTRIBUTES | AccessMask.SYNCHRONIZE
R, H, W = LeaseState.READ_CACHING, LeaseState.HANDLE_CACHING, LeaseState.WRITE_CACHING
KEY1, KEY2 = b"\x11" * 16, b"\x22" * 16


def start(tmp_path, break_timeout: float = 5.0) -> SMBServer:
    share = tmp_path / "share"
    share.mkdir()
    (share / "f.txt").write_bytes(b"hello")
    config = ServerConfig(shares={"share": ShareConfig("share", str(share))}, users={USER: PASSWORD},
                          break_timeout=break_timeout)
    return SMBServer(config, "127.0.0.1", 0).start()


@pytest.fixture
def server(tmp_path):
    srv = start(tmp_path)
    yield srv
    srv.stop()
    assert not srv.errors, srv.errors


def client(server) -> SMBClient:
    return SMBClient("127.0.0.1", server.port, username=USER, password=PASSWORD, timeout=10)


def create_request(name: str, oplock: int = OplockLevel.NONE, lease: Lease | None = None) -> m.CreateRequest:
    contexts = [lease.context()] if lease is not None else []
    return m.CreateRequest(name=name, desired_access=RW, share_access=7, create_disposition=CreateDisposition.OPEN,
                           requested_oplock_level=OplockLevel.LEASE if lease else oplock, contexts=contexts)


def test_batch_oplock_broken_to_level_ii_by_a_second_open_waits_for_the_ack(server):
    with client(server) as a, client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        first = sa.open("f.txt", RW, CreateDisposition.OPEN, oplock=OplockLevel.BATCH)
        assert first.oplock_level == OplockLevel.BATCH
        mid = b.send(Command.CREATE, create_request("f.txt", OplockLevel.BATCH), sb.tree_id)
        breaks = a.poll(1.0)  # receives the break and acknowledges it (auto_ack)
        assert [type(n.body) for n in breaks] == [m.OplockBreakNotification]
        note = breaks[0]
        assert note.header.message_id == 0xFFFFFFFFFFFFFFFF and not note.header.flags & HeaderFlags.SIGNED
        assert note.body.file_id == first.file_id and note.body.oplock_level == OplockLevel.II
        second = b.wait(mid)
        assert second.header.status == NtStatus.SUCCESS
        assert second.header.flags & HeaderFlags.ASYNC_COMMAND  # it went through an interim response
        assert second.body.oplock_level == OplockLevel.II
        a.poll(0.2)
        assert [r.header.status for r in a.break_acks] == [NtStatus.SUCCESS]
        assert a.break_acks[0].body.oplock_level == OplockLevel.II


def test_a_break_nobody_acknowledges_times_out_and_the_create_goes_on(tmp_path):
    srv = start(tmp_path, break_timeout=0.4)
    try:
        with client(srv) as a, client(srv) as b:
            a.on_break = lambda note: True  # swallow the break: never acknowledge
            sa, sb = a.share("share"), b.share("share")
            first = sa.open("f.txt", RW, CreateDisposition.OPEN, oplock=OplockLevel.EXCLUSIVE)
            assert first.oplock_level == OplockLevel.EXCLUSIVE
            began = time.monotonic()
            mid = b.send(Command.CREATE, create_request("f.txt", OplockLevel.EXCLUSIVE), sb.tree_id)
            second = b.wait(mid)
            waited = time.monotonic() - began
            assert second.header.status == NtStatus.SUCCESS and second.body.oplock_level == OplockLevel.II
            assert waited >= 0.35, waited
            assert len(a.poll(0.1)) == 1
            # The late acknowledgment: the break is over (the holder is NONE): STATUS_INVALID_DEVICE_STATE.
            late = a.acknowledge(a.notifications[0])
            a.poll(0.3)
            assert late is not None and [r.header.status for r in a.break_acks] == [NtStatus.INVALID_DEVICE_STATE]
    finally:
        srv.stop()
    assert not srv.errors, srv.errors


def test_rwh_lease_broken_to_rh_by_a_second_client_and_acknowledged(server):
    with client(server) as a, client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        first = granted_lease(sa.open("f.txt", RW, CreateDisposition.OPEN, lease=Lease(KEY1, R | H | W, epoch=4)))
        assert first.lease_state == R | H | W and first.epoch == 5
        mid = b.send(Command.CREATE, create_request("f.txt", lease=Lease(KEY2, R | H | W)), sb.tree_id)
        breaks = a.poll(1.0)
        assert len(breaks) == 1
        note = breaks[0].body
        assert isinstance(note, m.LeaseBreakNotification)
        assert breaks[0].header.session_id == 0 and breaks[0].header.message_id == 0xFFFFFFFFFFFFFFFF
        assert (note.lease_key, note.current_lease_state, note.new_lease_state) == (KEY1, R | H | W, R | H)
        assert note.flags & 1 and note.new_epoch == 6  # ACK_REQUIRED, epoch + 1 (v2)
        second = b.wait(mid)
        assert second.header.status == NtStatus.SUCCESS
        assert granted_lease(second.body).lease_state == R | H
        a.poll(0.2)
        assert [(r.header.status, r.body.lease_state) for r in a.break_acks] == [(NtStatus.SUCCESS, R | H)]


def test_lease_upgrade_by_a_second_open_with_the_same_key(server):
    with client(server) as a:
        sa = a.share("share")
        first = granted_lease(sa.open("f.txt", RW, CreateDisposition.OPEN, lease=Lease(KEY1, R)))
        assert first.lease_state == R
        second = granted_lease(sa.open("f.txt", RW, CreateDisposition.OPEN, lease=Lease(KEY1, R | H | W)))
        assert second.lease_state == R | H | W and second.epoch == first.epoch + 1
        third = granted_lease(sa.open("f.txt", RW, CreateDisposition.OPEN, lease=Lease(KEY1, R)))
        assert third.lease_state == R | H | W  # never downgraded by a request
        assert not a.notifications


def test_break_in_progress_for_an_open_with_the_breaking_key(server):
    with client(server) as a, client(server) as b:
        a.on_break = lambda note: True  # hold the acknowledgment back
        sa, sb = a.share("share"), b.share("share")
        sa.open("f.txt", RW, CreateDisposition.OPEN, lease=Lease(KEY1, R | H | W))
        mid = b.send(Command.CREATE, create_request("f.txt", lease=Lease(KEY2, R | H)), sb.tree_id)
        assert len(a.poll(1.0)) == 1
        during = sa.open("f.txt", RW, CreateDisposition.OPEN, lease=Lease(KEY1, R | H | W))
        lease = granted_lease(during)
        assert lease.lease_flags & LeaseFlags.BREAK_IN_PROGRESS and lease.lease_state == R | H | W
        a.acknowledge(a.notifications[0])
        second = b.wait(mid)
        assert granted_lease(second.body).lease_state == R | H


def test_write_breaks_level_ii_oplocks_without_waiting(server):
    with client(server) as a, client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        first = sa.open("f.txt", RW, CreateDisposition.OPEN, oplock=OplockLevel.II)
        assert first.oplock_level == OplockLevel.BATCH or first.oplock_level == OplockLevel.II
        second = sb.open("f.txt", RW, CreateDisposition.OPEN, oplock=OplockLevel.II)
        assert second.oplock_level == OplockLevel.II
        sb._req(Command.WRITE, m.WriteRequest(file_id=second.file_id, offset=0, data=b"x"))
        breaks = a.poll(0.5)
        assert [(n.body.file_id, n.body.oplock_level) for n in breaks] == [(first.file_id, OplockLevel.NONE)]
        # The writer's own level II goes too (a "self break", as Windows and Samba send it).
        assert [(n.body.file_id, n.body.oplock_level) for n in b.notifications] == [(second.file_id, 0)]
        assert not a.break_acks and not b.break_acks  # II -> NONE needs no acknowledgment
        # Acknowledged anyway: STATUS_INVALID_OPLOCK_PROTOCOL.
        b.acknowledge(b.notifications[0])
        b.poll(0.3)
        assert [r.header.status for r in b.break_acks] == [NtStatus.INVALID_OPLOCK_PROTOCOL]


def test_bad_acknowledgments_get_their_statuses(server):
    with client(server) as a, client(server) as b:
        a.on_break = lambda note: True
        sa, sb = a.share("share"), b.share("share")
        opened = sa.open("f.txt", RW, CreateDisposition.OPEN, oplock=OplockLevel.BATCH)
        # No break in progress: STATUS_INVALID_DEVICE_STATE (oplock), STATUS_UNSUCCESSFUL (lease),
        # an unknown lease key STATUS_OBJECT_NAME_NOT_FOUND, an unknown FileId STATUS_FILE_CLOSED.
        ack = m.OplockBreakAcknowledgment(file_id=opened.file_id, oplock_level=OplockLevel.II)
        assert a.wait(a.send(Command.OPLOCK_BREAK, ack, sa.tree_id)).header.status == NtStatus.INVALID_DEVICE_STATE
        unknown = m.LeaseBreakAcknowledgment(lease_key=KEY2, lease_state=0)
        assert a.wait(a.send(Command.OPLOCK_BREAK, unknown, sa.tree_id)).header.status == \
            NtStatus.OBJECT_NAME_NOT_FOUND
        gone = m.OplockBreakAcknowledgment(file_id=b"\x01" * 16, oplock_level=0)
        assert a.wait(a.send(Command.OPLOCK_BREAK, gone, sa.tree_id)).header.status == NtStatus.FILE_CLOSED
        # A break to II acknowledged with LEASE: STATUS_INVALID_PARAMETER, and the open is NONE.
        mid = b.send(Command.CREATE, create_request("f.txt", OplockLevel.BATCH), sb.tree_id)
        assert len(a.poll(1.0)) == 1
        ack = m.OplockBreakAcknowledgment(file_id=opened.file_id, oplock_level=OplockLevel.LEASE)
        assert a.wait(a.send(Command.OPLOCK_BREAK, ack, sa.tree_id)).header.status == NtStatus.INVALID_PARAMETER
        assert b.wait(mid).header.status == NtStatus.SUCCESS  # the break is over: the CREATE went on
        lease_holder = granted_lease(sa.open("g.txt", RW, CreateDisposition.OPEN_IF, lease=Lease(KEY1, R | H)))
        assert lease_holder.lease_state == R | H
        idle = m.LeaseBreakAcknowledgment(lease_key=KEY1, lease_state=R)
        assert a.wait(a.send(Command.OPLOCK_BREAK, idle, sa.tree_id)).header.status == NtStatus.UNSUCCESSFUL
        # A lease break to R acknowledged with more than R: STATUS_REQUEST_NOT_ACCEPTED.
        mid = b.send(Command.CREATE, m.CreateRequest(name="g.txt", desired_access=RW, share_access=7,
                                                      create_disposition=CreateDisposition.OVERWRITE_IF),
                      sb.tree_id)
        notes = a.poll(1.0)
        assert len(notes) == 1 and notes[0].body.new_lease_state == 0
        greedy = m.LeaseBreakAcknowledgment(lease_key=KEY1, lease_state=R | H)
        assert a.wait(a.send(Command.OPLOCK_BREAK, greedy, sa.tree_id)).header.status == \
            NtStatus.REQUEST_NOT_ACCEPTED
        right = m.LeaseBreakAcknowledgment(lease_key=KEY1, lease_state=0)
        assert a.wait(a.send(Command.OPLOCK_BREAK, right, sa.tree_id)).header.status == NtStatus.SUCCESS
        assert b.wait(mid).header.status == NtStatus.SUCCESS


def test_no_cpu_while_idle_with_leases_held_and_a_break_waiting(tmp_path):
    srv = start(tmp_path, break_timeout=30.0)
    try:
        with client(srv) as a, client(srv) as b:
            a.on_break = lambda note: True
            sa, sb = a.share("share"), b.share("share")
            sa.open("f.txt", RW, CreateDisposition.OPEN, lease=Lease(KEY1, R | H | W))
            b.send(Command.CREATE, create_request("f.txt", lease=Lease(KEY2, R | H)), sb.tree_id)
            assert len(a.poll(1.0)) == 1  # a break is waiting for its acknowledgment (30 s)
            before = resource.getrusage(resource.RUSAGE_SELF)
            time.sleep(1.0)
            after = resource.getrusage(resource.RUSAGE_SELF)
            used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            assert used < 0.05, f"{used:.3f} s of CPU in 1 s idle"
    finally:
        srv.stop()



def test_a_stat_open_breaks_nothing_and_gets_no_oplock_unless_it_overwrites(server):
    stat = AccessMask.FILE_READ_ATTRIBUTES | AccessMask.FILE_WRITE_ATTRIBUTES | AccessMask.SYNCHRONIZE
    with client(server) as a, client(server) as b:
        sa, sb = a.share("share"), b.share("share")
        held = sa.open("f.txt", RW, CreateDisposition.OPEN, oplock=OplockLevel.BATCH, share_access=0)
        assert held.oplock_level == OplockLevel.BATCH
        # Share mode NONE does not keep an attributes-only open out, and it breaks nothing.
        peek = sb.open("f.txt", stat, CreateDisposition.OPEN, oplock=OplockLevel.BATCH)
        assert peek.oplock_level == OplockLevel.NONE
        assert not a.poll(0.3)
        # Overwriting is more than a look: the BATCH holder is broken (to NONE) and the opener gets II.
        sa.close_file(held.file_id)
        sb.close_file(peek.file_id)
        held = sa.open("f.txt", RW, CreateDisposition.OPEN, oplock=OplockLevel.BATCH)
        assert held.oplock_level == OplockLevel.BATCH
        request = m.CreateRequest(name="f.txt", desired_access=stat, share_access=7,
                                  create_disposition=CreateDisposition.OVERWRITE,
                                  requested_oplock_level=OplockLevel.II)
        mid = b.send(Command.CREATE, request, sb.tree_id)
        breaks = a.poll(1.0)
        assert [(n.body.file_id, n.body.oplock_level) for n in breaks] == [(held.file_id, OplockLevel.NONE)]
        assert b.wait(mid).body.oplock_level == OplockLevel.II


def test_app_instance_id_closes_the_previous_instances_open(server):
    """§3.3.5.9.13: the same AppInstanceId from another client (ClientGuid) closes the old open, so a
    failed-over application is not locked out by its own previous instance's share modes."""
    from harness.smb.messages.create_contexts import AppInstanceId

    instance = AppInstanceId(app_instance_id=b"\x5a" * 16).to_context()
    other = AppInstanceId(app_instance_id=b"\x5b" * 16).to_context()
    with client(server) as a, client(server) as b, client(server) as c:
        assert a.conn.client_guid != b.conn.client_guid
        sa, sb, sc = a.share("share"), b.share("share"), c.share("share")
        old = sa.open("f.txt", RW, CreateDisposition.OPEN, share_access=0, contexts=[instance])
        # Another AppInstanceId does not close it: the share mode keeps the third client out.
        with pytest.raises(Exception, match="SHARING_VIOLATION"):
            sc.open("f.txt", RW, CreateDisposition.OPEN, share_access=0, contexts=[other])
        new = sb.open("f.txt", RW, CreateDisposition.OPEN, share_access=0, contexts=[instance])
        assert new.file_id != old.file_id
        gone = a.wait(a.send(Command.READ, m.ReadRequest(file_id=old.file_id, length=1, offset=0), sa.tree_id))
        assert gone.header.status == NtStatus.FILE_CLOSED


def _durable(name: str, oplock: int = OplockLevel.NONE, lease: Lease | None = None) -> m.CreateRequest:
    from harness.smb.messages.create_contexts import DurableHandleRequest

    body = create_request(name, oplock, lease)
    body.contexts = [*body.contexts, DurableHandleRequest().to_context()]
    return body


@pytest.mark.parametrize("holds", ["batch", "lease"])
def test_a_break_in_flight_when_its_holder_disconnects_is_settled_at_once(tmp_path, holds):
    """MS-SMB2 3.3.4.6-7: a break nobody can acknowledge completes at once. The holder (a durable
    BATCH oplock or RWH lease) gets the break and disconnects without acknowledging it, as
    smbtorture smb2.durable-open.oplock/.lease do when their second open reaches the server before
    the first connection's end: the waiting CREATE goes on when the server sees that connection end,
    not at the break timeout (30 s here), and the detached durable open is closed (BATCH for the
    new open, as Windows and smbd grant it)."""
    srv = start(tmp_path, break_timeout=30.0)
    try:
        with client(srv) as b:
            a = client(srv)
            a.on_break = lambda note: True  # take the break, never acknowledge it
            sa, sb = a.share("share"), b.share("share")
            if holds == "batch":
                first = sa.client.request(Command.CREATE, _durable("f.txt", OplockLevel.BATCH), sa.tree_id).body
                assert first.oplock_level == OplockLevel.BATCH
                ask = create_request("f.txt", OplockLevel.BATCH)
            else:
                first = sa.client.request(Command.CREATE, _durable("f.txt", lease=Lease(KEY1, R | H | W)),
                                          sa.tree_id).body
                assert granted_lease(first).lease_state == R | H | W
                ask = create_request("f.txt", lease=Lease(KEY2, R | H | W))
            began = time.monotonic()
            mid = b.send(Command.CREATE, ask, sb.tree_id)
            assert len(a.poll(2.0)) == 1  # the break reached the holder, which does not answer it
            a.transport.close()  # gone without an acknowledgment (no LOGOFF: the durable open stays)
            second = b.wait(mid)
            waited = time.monotonic() - began
            assert second.header.status == NtStatus.SUCCESS
            assert second.header.flags & HeaderFlags.ASYNC_COMMAND  # it did wait for the break
            assert waited < 10, f"the CREATE waited {waited:.1f} s: the break was waited out"
            if holds == "batch":
                assert second.body.oplock_level == OplockLevel.BATCH
            else:
                assert granted_lease(second.body).lease_state == R | H | W
    finally:
        srv.stop()
    assert not srv.errors, srv.errors


def test_a_lease_break_goes_to_another_live_channel_of_the_holders_session():
    """§3.3.4.7 with multichannel: the holder's own channel is gone but its session has another
    live channel: the client is reachable there, so the break is sent there and not settled as
    unheard (which would close the holder's durable open)."""
    from types import SimpleNamespace as NS

    from harness.smb.server import oplocks

    dead, live = NS(closed=True), NS(closed=False)
    session = NS(connection=dead, channels=[live])
    holder = NS(connection=dead, session=session)
    assert oplocks._lease_target([holder]) is live
    live.closed = True
    assert oplocks._lease_target([holder]) is None
    assert oplocks._lease_target([NS(connection=None, session=None), NS(connection=live, session=None)]) is None
