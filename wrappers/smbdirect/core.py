"""MS-SMBD connection state machine, sans-IO (h11 style): bytes in, events out, no clock of its own.

The adapter feeds ``receive(message, now)`` with each RDMA SEND the peer made, ``handle_timer(now)``
when ``timer()`` is due, and queues upper-layer messages with ``send(data, now)``; it drains
``sends()`` (the RDMA SENDs to post, in order) after every call, and acts on the events returned.

Rules (section numbers of MS-SMBD; "terminate" = Terminated event, the adapter drops the
connection the way an RNIC does, the peer sees it as connection loss):

Role    PASSIVE --valid Negotiate Request--> ESTABLISHED (Negotiate Response sent, Established)
        ACTIVE  --valid Negotiate Response--> ESTABLISHED (Established)
        any     --violation / timer / loss--> TERMINATED (Terminated, once; nothing is sent after it)

3.1.7.2 passive: negotiation timer 5 s, one 512-byte receive posted (a bigger first SEND is an RNIC
        length error: terminate).  3.1.4.1 active: negotiation timer 120 s.  Timer expiry: terminate.
3.1.5.6 Negotiate Request: < 20 bytes -> terminate; 0x0100 outside [MinVersion, MaxVersion] ->
        failure response STATUS_NOT_SUPPORTED then graceful close; CreditsRequested 0,
        MaxReceiveSize < 128, MaxFragmentedSize < 131072 -> terminate.  MaxReceiveSize :=
        max(128, min(own, PreferredSendSize)); MaxSendSize := min(own, MaxReceiveSize);
        MaxFragmentedSendSize := MaxFragmentedSize; receives posted per 3.1.5.9; none postable ->
        failure response STATUS_INSUFFICIENT_RESOURCES.
3.1.5.7 Negotiate Response: terminate unless >= 32 bytes, NegotiatedVersion 0x0100, MaxReceiveSize
        >= 128, MaxFragmentedSize >= 131072, CreditsGranted > 0, CreditsRequested > 0,
        PreferredSendSize <= own MaxReceiveSize, Status 0 (a failure Status -> ECONNREFUSED).
        MaxReadWriteSize := min(own, peer's).
3.1.5.8 Data Transfer: terminate if < 20 bytes, CreditsRequested 0, DataOffset not 8-aligned,
        DataOffset + DataLength > length, DataLength + RemainingDataLength > MaxFragmentedRecvSize,
        or RemainingDataLength 0 while reassembly still expects bytes.  Ours, RNIC behaviour: a
        SEND with no receive posted (ReceiveCredits 0) or longer than MaxReceiveSize terminates;
        so does a payload overlapping the 20-byte header or a reassembly growing past
        MaxFragmentedRecvSize.
3.1.5.1 Send: never with SendCredits 0; with 1 left only a message that grants credits; each SEND
        carries CreditsRequested = SendCreditTarget.  3.1.5.9: receives are "posted" (credits)
        up to min(ReceiveCreditTarget, ReceiveCreditMax); new ones ride on the next SEND.
        Ours: after a message arrives with nothing queued, a credit-only SEND goes out only when
        the peer has no announced credit left (or one, after a message with data or a flag), or
        at least max(2, target/2) new ones wait
        (SHOULD-level batching; the literal text makes two idle peers trade empty grants
        forever), and at least 3 receives stay posted when ReceiveCreditMax allows (with fewer,
        credit-only messages either ping-pong or leave a peer stuck on its last credit).  A SEND beyond the credits we announced terminates (the peer broke 3.1.5.1).  While the application is not reading
        (``pause_receive``) at most one credit is kept outstanding.
3.1.5.4 Fragmentation: DataOffset 24, DataLength <= MaxSendSize - 24, RemainingDataLength = bytes
        still to come; a remote-invalidate token rides on the last fragment; a message longer
        than MaxFragmentedSendSize is refused locally (EMSGSIZE).
3.1.5.5/3.1.6.2 Keepalive: every received message re-arms the idle timer (KeepaliveInterval) and
        clears KeepaliveRequested.  Expiry with a keepalive outstanding -> terminate (ETIMEDOUT);
        otherwise the next SEND (an empty one if nothing is queued) carries
        SMB_DIRECT_RESPONSE_REQUESTED and the timer is re-armed to the response timeout (<4>: 5 s).
        A received RESPONSE_REQUESTED is answered promptly.  Ours: the answer does not carry the
        flag itself (read literally, 3.1.5.8 + 3.1.5.1 would have both peers ping-pong forever).
"""

from __future__ import annotations

import errno
from collections import deque
from dataclasses import dataclass, field

from . import constants as C
from .messages import DataTransfer, NegotiateRequest, NegotiateResponse

ACTIVE, PASSIVE, ESTABLISHED, TERMINATED = "ACTIVE", "PASSIVE", "ESTABLISHED", "TERMINATED"
KA_NONE, KA_PENDING, KA_SENT = "NONE", "PENDING", "SENT"
MIN_POSTED = 3


@dataclass
class Params:
    """The local initial values (3.1.4.1 / 3.1.7.2); Windows' defaults."""

    receive_credit_max: int = C.DEFAULT_RECEIVE_CREDIT_MAX
    send_credit_target: int = C.DEFAULT_SEND_CREDIT_TARGET
    max_send_size: int = C.DEFAULT_MAX_SEND_SIZE
    max_receive_size: int = C.DEFAULT_MAX_RECEIVE_SIZE
    max_fragmented_recv_size: int = C.DEFAULT_MAX_FRAGMENTED_RECV_SIZE
    max_read_write_size: int = C.DEFAULT_MAX_READ_WRITE_SIZE
    keepalive_interval: float = C.DEFAULT_KEEPALIVE_INTERVAL
    keepalive_response_timeout: float = C.DEFAULT_KEEPALIVE_RESPONSE_TIMEOUT
    negotiate_timeout: float | None = None  # None: 120 s active, 5 s passive

    def copy(self) -> Params:
        return Params(**self.__dict__)


# -- events ---------------------------------------------------------------------------------------
@dataclass
class Established:
    pass


@dataclass
class MessageReceived:
    data: bytes
    invalidated_token: int | None = None


@dataclass
class Terminated:
    reason: str
    errno: int
    graceful: bool = False  # True: we close after a failure Negotiate Response (3.1.5.3)


@dataclass
class Send:
    """One RDMA SEND to post: the SMBD message and the peer token to invalidate with it."""

    data: bytes
    invalidate_token: int | None = None
    kind: str = "data"  # negotiate_request | negotiate_response | data


class LocalError(OSError):
    pass


@dataclass
class _Pending:
    data: bytes | memoryview
    remaining: int
    invalidate: int | None = None
    credits_granted: int = 0


@dataclass
class Stats:
    sends: int = 0
    receives: int = 0
    messages_out: int = 0
    messages_in: int = 0
    keepalives_sent: int = 0
    credit_stalls: int = 0
    extra: dict = field(default_factory=dict)


class Connection:
    def __init__(self, role: str, params: Params | None = None, now: float = 0.0):
        if role not in (ACTIVE, PASSIVE):
            raise ValueError(role)
        p = (params or Params()).copy()
        self.initiator = role == ACTIVE
        self.role = role
        self.params = p
        # Connection.* of 3.1.1.1
        self.protocol = 0
        self.max_send_size = p.max_send_size
        self.max_receive_size = p.max_receive_size
        self.max_fragmented_send_size = 0
        self.max_fragmented_recv_size = p.max_fragmented_recv_size
        self.max_read_write_size = 0 if self.initiator else p.max_read_write_size
        self.send_credit_target = p.send_credit_target
        self.send_credits = 0
        self.receive_credit_max = p.receive_credit_max
        self.receive_credit_target = 0
        self.receive_credits = 0
        self.send_queue: deque[_Pending] = deque()
        self.reassembly: list[bytes] = []
        self.reassembly_len = 0
        self.reassembly_remaining = 0
        self.invalidated_token: int | None = None
        self.keepalive_interval = p.keepalive_interval
        self.keepalive_requested = KA_NONE
        self.send_immediate = False
        self.paused = False
        self.stats = Stats()
        self._ungranted = 0
        self._out: list[Send] = []
        self._events: list[object] = []
        self.terminated: Terminated | None = None
        timeout = p.negotiate_timeout
        if timeout is None:
            timeout = C.NEGOTIATE_TIMEOUT_ACTIVE if self.initiator else C.NEGOTIATE_TIMEOUT_PASSIVE
        self._timer: float | None = now + timeout
        self._timer_kind = "negotiate"

    # -- the adapter's calls ------------------------------------------------------------------
    def initiate(self, now: float) -> None:
        """3.1.5.2: the active side's first SEND."""
        assert self.role == ACTIVE
        req = NegotiateRequest(credits_requested=self.send_credit_target, preferred_send_size=self.max_send_size,
                               max_receive_size=self.max_receive_size,
                               max_fragmented_size=self.max_fragmented_recv_size)
        self._out.append(Send(req.encode(), kind="negotiate_request"))

    def sends(self) -> list[Send]:
        out, self._out = self._out, []
        self.stats.sends += len(out)
        return out

    def events(self) -> list[object]:
        ev, self._events = self._events, []
        return ev

    def timer(self) -> float | None:
        return None if self.role == TERMINATED else self._timer

    @property
    def established(self) -> bool:
        return self.role == ESTABLISHED

    def receive(self, message: bytes | memoryview, now: float, invalidated_token: int | None = None) -> list[object]:
        if self.role == TERMINATED:
            return self.events()
        self.stats.receives += 1
        if self.role == PASSIVE:
            self._on_negotiate_request(bytes(message), now)
        elif self.role == ACTIVE:
            self._on_negotiate_response(bytes(message), now)
        else:
            self._timer = now + self.keepalive_interval
            self._timer_kind = "idle"
            self.keepalive_requested = KA_NONE
            self._on_data(memoryview(message), now, invalidated_token)
        return self.events()

    def send(self, data: bytes | memoryview, now: float, invalidate_token: int | None = None) -> None:
        """Queue one upper-layer message (3.1.4.2); raises LocalError(EMSGSIZE / ENOTCONN / EINVAL)."""
        if self.role != ESTABLISHED:
            raise LocalError(self.terminated.errno if self.terminated else errno.ENOTCONN, "not established")
        n = len(data)
        if n == 0:
            raise LocalError(errno.EINVAL, "an upper-layer message cannot be empty")
        if n > self.max_fragmented_send_size:
            raise LocalError(errno.EMSGSIZE, f"{n} bytes exceed the peer's MaxFragmentedSize {self.max_fragmented_send_size}")
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        chunk = self.max_send_size - C.DATA_OFFSET
        pos = 0
        while pos < n:
            piece = view[pos:pos + chunk]
            pos += len(piece)
            self.send_queue.append(_Pending(piece, n - pos, invalidate_token if pos >= n else None))
        self.stats.messages_out += 1
        self._pump(now)

    def queued(self) -> int:
        return len(self.send_queue)

    def pause_receive(self, paused: bool, now: float) -> None:
        """The application stopped (True) or resumed (False) consuming messages."""
        was = self.paused
        self.paused = paused
        if was and not paused and self.role == ESTABLISHED:
            self._post_receives()
            if self._ungranted:
                self.send_immediate = True
            self._pump(now)

    def handle_timer(self, now: float) -> list[object]:
        if self._timer is None or now < self._timer or self.role == TERMINATED:
            return self.events()
        if self._timer_kind == "negotiate":
            self._terminate("negotiation timer expired", errno.ETIMEDOUT)
        elif self.keepalive_requested != KA_NONE:
            self._terminate("keepalive not answered", errno.ETIMEDOUT)
        else:
            self.keepalive_requested = KA_PENDING
            self._timer = now + self.params.keepalive_response_timeout
            if not self.send_queue:
                self.send_immediate = True
            self._pump(now)
        return self.events()

    def connection_lost(self, reason: str = "connection lost", err: int = errno.ECONNRESET) -> list[object]:
        """3.1.7.1: the lower layer lost the connection."""
        if self.role != TERMINATED:
            self._terminate(reason, err)
        return self.events()

    def abort(self, reason: str, err: int) -> list[object]:
        """A local fatal error (e.g. an RDMA access violation): terminate now."""
        return self.connection_lost(reason, err)

    # -- negotiation ----------------------------------------------------------------------------
    def _on_negotiate_request(self, msg: bytes, now: float) -> None:
        if len(msg) > C.MIN_NEGOTIATE_RECEIVE:
            return self._terminate("first SEND longer than the posted 512-byte receive", errno.ECONNABORTED)
        if len(msg) < C.NEGOTIATE_REQUEST_SIZE:
            return self._terminate("negotiate request shorter than 20 bytes", errno.ECONNABORTED)
        req = NegotiateRequest.decode(msg)
        if not req.min_version <= C.SMBD_VERSION <= req.max_version:
            self._out.append(Send(NegotiateResponse.failure(C.STATUS_NOT_SUPPORTED).encode(), kind="negotiate_response"))
            return self._terminate(f"version range {req.min_version:#06x}-{req.max_version:#06x} excludes 0x0100",
                                   errno.ECONNREFUSED, graceful=True)
        if req.credits_requested == 0:
            return self._terminate("negotiate request asks for 0 credits", errno.ECONNABORTED)
        if req.max_receive_size < C.MIN_RECEIVE_SIZE:
            return self._terminate(f"MaxReceiveSize {req.max_receive_size} < 128", errno.ECONNABORTED)
        if req.max_fragmented_size < C.MIN_FRAGMENTED_SIZE:
            return self._terminate(f"MaxFragmentedSize {req.max_fragmented_size} < 131072", errno.ECONNABORTED)
        self.max_receive_size = max(C.MIN_RECEIVE_SIZE, min(self.max_receive_size, req.preferred_send_size))
        self.protocol = C.SMBD_VERSION
        self.receive_credit_target = req.credits_requested
        self.max_send_size = min(self.max_send_size, req.max_receive_size)
        self.max_fragmented_send_size = req.max_fragmented_size
        self._post_receives()
        if self.receive_credits == 0:
            self._out.append(Send(NegotiateResponse.failure(C.STATUS_INSUFFICIENT_RESOURCES).encode(),
                                  kind="negotiate_response"))
            return self._terminate("no receive credits to grant", errno.ECONNREFUSED, graceful=True)
        self._ungranted = 0
        resp = NegotiateResponse(status=C.STATUS_SUCCESS, credits_requested=self.send_credit_target,
                                 credits_granted=self.receive_credits, max_read_write_size=self.max_read_write_size,
                                 preferred_send_size=self.max_send_size, max_receive_size=self.max_receive_size,
                                 max_fragmented_size=self.max_fragmented_recv_size)
        self._out.append(Send(resp.encode(), kind="negotiate_response"))
        self._establish(now)

    def _on_negotiate_response(self, msg: bytes, now: float) -> None:
        if len(msg) > C.MIN_NEGOTIATE_RECEIVE:
            return self._terminate("first SEND longer than the posted 512-byte receive", errno.ECONNABORTED)
        if len(msg) < C.NEGOTIATE_RESPONSE_SIZE:
            return self._terminate("negotiate response shorter than 32 bytes", errno.ECONNABORTED)
        r = NegotiateResponse.decode(msg)
        if r.status != C.STATUS_SUCCESS:
            return self._terminate(f"negotiate failed with status {r.status:#010x}", errno.ECONNREFUSED)
        problems = []
        if r.negotiated_version != C.SMBD_VERSION:
            problems.append(f"NegotiatedVersion {r.negotiated_version:#06x}")
        if r.max_receive_size < C.MIN_RECEIVE_SIZE:
            problems.append(f"MaxReceiveSize {r.max_receive_size} < 128")
        if r.max_fragmented_size < C.MIN_FRAGMENTED_SIZE:
            problems.append(f"MaxFragmentedSize {r.max_fragmented_size} < 131072")
        if r.credits_granted == 0:
            problems.append("CreditsGranted 0")
        if r.credits_requested == 0:
            problems.append("CreditsRequested 0")
        if r.preferred_send_size > self.max_receive_size:
            problems.append(f"PreferredSendSize {r.preferred_send_size} > our MaxReceiveSize {self.max_receive_size}")
        if problems:
            return self._terminate("bad negotiate response: " + ", ".join(problems), errno.ECONNABORTED)
        self.protocol = C.SMBD_VERSION
        self.receive_credit_target = r.credits_requested
        self.max_receive_size = max(C.MIN_RECEIVE_SIZE, min(self.max_receive_size, r.preferred_send_size))
        self.max_send_size = min(self.max_send_size, r.max_receive_size)
        self.max_read_write_size = min(self.params.max_read_write_size, r.max_read_write_size)
        self.send_credits = r.credits_granted
        self.max_fragmented_send_size = r.max_fragmented_size
        self._post_receives()
        if self.receive_credits == 0:
            return self._terminate("no receive credits to grant", errno.ECONNABORTED)
        # Ours: announce the receives at once, so the passive side (which has no credits yet)
        # can send even if our upper layer is silent.
        self.send_immediate = True
        self._establish(now)
        self._pump(now)

    def _establish(self, now: float) -> None:
        self.role = ESTABLISHED
        self._timer = now + self.keepalive_interval
        self._timer_kind = "idle"
        self._events.append(Established())

    # -- data transfer ----------------------------------------------------------------------------
    def _on_data(self, msg: memoryview, now: float, invalidated_token: int | None) -> None:
        n = len(msg)
        if self.receive_credits == 0:
            return self._terminate("SEND with no receive posted (RNR)", errno.ECONNABORTED)
        if n > self.max_receive_size:
            return self._terminate(f"SEND of {n} bytes exceeds the posted receive size {self.max_receive_size}",
                                   errno.ECONNABORTED)
        if n < C.DATA_HEADER_SIZE:
            return self._terminate("data transfer message shorter than 20 bytes", errno.ECONNABORTED)
        cr, cg, flags, _rsv, remaining, off, dlen = DataTransfer.decode_header(msg)
        if cr == 0:
            return self._terminate("CreditsRequested 0", errno.ECONNABORTED)
        if off % 8:
            return self._terminate(f"DataOffset {off} not 8-byte aligned", errno.ECONNABORTED)
        if off + dlen > n:
            return self._terminate(f"DataOffset {off} + DataLength {dlen} > message length {n}", errno.ECONNABORTED)
        if dlen + remaining > self.max_fragmented_recv_size:
            return self._terminate(f"DataLength + RemainingDataLength {dlen + remaining} > MaxFragmentedSize "
                                   f"{self.max_fragmented_recv_size}", errno.ECONNABORTED)
        if dlen and off < C.DATA_HEADER_SIZE:
            return self._terminate(f"DataOffset {off} overlaps the header", errno.ECONNABORTED)
        if self.reassembly_len + dlen > self.max_fragmented_recv_size:
            return self._terminate("reassembly exceeds MaxFragmentedSize", errno.ECONNABORTED)
        if self.receive_credits - self._ungranted <= 0:
            return self._terminate("SEND beyond the credits granted (peer ignored credits)", errno.ECONNABORTED)
        self.receive_credits -= 1
        if not self.send_queue:
            self._post_receives()
            g = self._ungranted
            left = self.receive_credits - g  # what the peer can still send us
            meaningful = dlen > 0 or flags & C.SMB_DIRECT_RESPONSE_REQUESTED
            if g and (left == 0 or (meaningful and left <= 1) or g >= max(2, self.receive_credit_target // 2)):
                self.send_immediate = True
        self.receive_credit_target = cr
        if flags & C.SMB_DIRECT_RESPONSE_REQUESTED:
            self.send_immediate = True
        if cg:
            self.send_credits += cg
        if dlen:
            self.reassembly.append(bytes(msg[off:off + dlen]))
            self.reassembly_len += dlen
        if self.reassembly_remaining == 0:
            self.reassembly_remaining = remaining
        else:
            if dlen > self.reassembly_remaining:
                return self._terminate("fragment longer than the bytes announced", errno.ECONNABORTED)
            self.reassembly_remaining -= dlen
        if invalidated_token is not None:
            self.invalidated_token = invalidated_token
        if remaining == 0:
            if self.reassembly_remaining > 0:
                return self._terminate("last fragment arrived while reassembly expects "
                                       f"{self.reassembly_remaining} more bytes", errno.ECONNABORTED)
            if self.reassembly_len:
                data = self.reassembly[0] if len(self.reassembly) == 1 else b"".join(self.reassembly)
                self._events.append(MessageReceived(data, self.invalidated_token))
                self.stats.messages_in += 1
                self.invalidated_token = None
            elif self.invalidated_token is not None:
                self._events.append(MessageReceived(b"", self.invalidated_token))
                self.invalidated_token = None
            self.reassembly = []
            self.reassembly_len = 0
        self._pump(now)

    # -- credits (3.1.5.9) and the send loop (3.1.5.1) ---------------------------------------
    def _post_receives(self) -> None:
        rc = self.receive_credits
        # Ours: keep at least 3 receives posted (when ReceiveCreditMax allows) whatever the peer's
        # target; with 2 or fewer, credit-only messages either ping-pong or leave a peer stuck.
        cap = min(max(self.receive_credit_target, MIN_POSTED), self.receive_credit_max)
        want = max(0, cap - rc)
        if rc == 0 or (self.send_credits == 1 and self.send_queue):
            # 3.1.5.9 second rule, even with "sufficient" credits: a sender down to its last
            # credit with data queued must be able to grant, or it could never send again.
            want = max(want, 1)
        want = min(want, max(0, self.receive_credit_max - rc))
        if self.paused:
            want = min(want, max(0, 1 - rc))
        want = min(want, 0xFFFF - self._ungranted)
        self.receive_credits += want
        self._ungranted += want

    def _take_grant(self) -> int:
        self._post_receives()
        g = min(self._ungranted, 255)
        self._ungranted -= g
        return g

    def _pump(self, now: float) -> None:
        if self.role != ESTABLISHED:
            return
        if not self.send_queue and (self.send_immediate or self.keepalive_requested == KA_PENDING):
            self.send_queue.append(_Pending(b"", 0))
        while self.send_queue:
            if self.send_credits == 0:
                self.stats.credit_stalls += 1
                break
            m = self.send_queue[0]
            if m.credits_granted == 0:
                m.credits_granted = self._take_grant()
            if self.send_credits == 1 and m.credits_granted == 0:
                self.stats.credit_stalls += 1
                break
            self.send_queue.popleft()
            self.send_credits -= 1
            flags = 0
            if self.keepalive_requested == KA_PENDING:
                flags = C.SMB_DIRECT_RESPONSE_REQUESTED
                self.keepalive_requested = KA_SENT
                self.stats.keepalives_sent += 1
                self._timer = now + self.params.keepalive_response_timeout
                self._timer_kind = "idle"
            dt = DataTransfer(credits_requested=self.send_credit_target, credits_granted=m.credits_granted,
                              flags=flags, remaining_data_length=m.remaining, data=m.data)
            self._out.append(Send(dt.encode(), m.invalidate))
            self.send_immediate = False

    def _terminate(self, reason: str, err: int, graceful: bool = False) -> None:
        self.role = TERMINATED
        self._timer = None
        self.send_queue.clear()
        t = Terminated(reason, err, graceful)
        self.terminated = t
        self._events.append(t)

    # -- 3.1.4.7 ------------------------------------------------------------------------------
    def parameters(self) -> dict[str, int | float]:
        return {
            "max_send_size": self.max_send_size,
            "max_fragmented_send_size": self.max_fragmented_send_size,
            "max_receive_size": self.max_receive_size,
            "max_fragmented_recv_size": self.max_fragmented_recv_size,
            "max_read_write_size": self.max_read_write_size,
            "keepalive_interval": self.keepalive_interval,
            "send_credits": self.send_credits,
            "receive_credits": self.receive_credits,
            "send_credit_target": self.send_credit_target,
            "receive_credit_max": self.receive_credit_max,
            "protocol": self.protocol,
        }
