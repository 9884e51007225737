"""NTLM-in-SPNEGO for SESSION_SETUP, through pyspnego on both sides.

Why a wrapper: pyspnego's pure-Python NTLM acceptor only looks users up in the file named by the
process-wide ``NTLM_USER_FILE`` variable, which would make two servers in one process (tests) share
one user list and would make the sans-IO layer touch the disk.  We redirect its two lookup functions
to an in-memory store chosen per thread/context (``contextvars``), so each :class:`Acceptor` carries
its own ``{user: password}`` and nothing is read from the environment.  Domain names are ignored on
lookup: smbclient sends its workgroup, smbprotocol none, and the server has a flat user list.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from dataclasses import dataclass

import spnego
from spnego import _ntlm
from spnego._context import GSSMech
from spnego._ntlm_raw import messages as _messages
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1
from spnego._spnego import NegTokenInit
from spnego.exceptions import NoCredentialError, SpnegoError

from .errors import AuthError, MalformedTokenError

_MARKER = "wirecheck:in-memory-store"
_STORE: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("wirecheck_ntlm_store", default=None)
_original_file = _ntlm._get_credential_file
_original_get = _ntlm._get_credential


def _credential_file():
    return _MARKER if _STORE.get() is not None else _original_file()


def _credential(store, domain=None, username=None):
    if store != _MARKER:
        return _original_get(store, domain, username)
    users = _STORE.get() or {}
    wanted = (username or "").upper()
    for name, password in users.items():
        if not username or name.upper() == wanted:
            return domain, name, lmowfv1(password), ntowfv1(password)
    raise NoCredentialError(context_msg=f"unknown user {username!r}")  # LOGON_FAILURE, as a wrong password


_ntlm._get_credential_file = _credential_file
_ntlm._get_credential = _credential

# pyspnego's acceptor recomputes the NTLMv2 response from the client's AV pairs *re-serialised*,
# which changes the bytes when the client orders or pads them differently (smbclient does), so the
# proof never matches.  Keep the client's blob as received and hash exactly that (MS-NLMP §3.3.2:
# temp is the client's NTLMv2_CLIENT_CHALLENGE, byte for byte).
_original_av_pairs = _messages.NTClientChallengeV2.av_pairs


def _av_pairs_keeping_blob(self):
    pairs = _original_av_pairs.fget(self)
    try:
        pairs._wirecheck_blob = self._data.tobytes()
    except AttributeError:  # pragma: no cover - TargetInfo without __dict__
        pass
    return pairs


def _compute_response_v2(nt_hash, server_challenge, client_challenge, time, av_pairs):
    blob = getattr(av_pairs, "_wirecheck_blob", None)
    if blob is None:
        return _original_v2(nt_hash, server_challenge, client_challenge, time, av_pairs)
    proof = hmac.new(nt_hash, server_challenge + blob, hashlib.md5).digest()
    lm = hmac.new(nt_hash, server_challenge + client_challenge, hashlib.md5).digest() + client_challenge
    return proof + blob, lm, hmac.new(nt_hash, proof, hashlib.md5).digest()


_original_v2 = _ntlm.compute_response_v2
# a method replaced by a property on a third-party class: deliberate (see _av_pairs_keeping_blob)
_messages.NTClientChallengeV2.av_pairs = property(_av_pairs_keeping_blob)  # type: ignore[method-assign,assignment]
_ntlm.compute_response_v2 = _compute_response_v2


def server_hint() -> bytes:
    """The SPNEGO NegTokenInit2 a server puts in its NEGOTIATE response (mechs: NTLMSSP only)."""
    return NegTokenInit(mech_types=[GSSMech.ntlm.value], hint_name=b"not_defined_in_RFC4178@please_ignore").pack()


@dataclass
class AuthResult:
    username: str
    session_key: bytes


class Acceptor:
    """One server-side authentication exchange: feed each SESSION_SETUP token to :meth:`step`."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        token = _STORE.set(users)
        try:
            self._ctx = spnego.server(protocol="negotiate")
        finally:
            _STORE.reset(token)

    def step(self, token: bytes) -> tuple[bytes | None, AuthResult | None]:
        """(reply token, result once complete).  Raises :class:`AuthError` on a bad password."""
        marker = _STORE.set(self.users)
        try:
            out = self._ctx.step(token)
        except SpnegoError as exc:  # pyspnego judged the token: wrong password, bad MIC, refused
            raise AuthError(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - the token is untrusted input parsed by pyspnego, whose
            # parsers raise whatever they meet (OverflowError on a timestamp, struct.error, StopIteration):
            # the token is malformed, which is not the same answer as wrong credentials.
            raise MalformedTokenError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            _STORE.reset(marker)
        if self._ctx.complete:
            return out, AuthResult(self._ctx.client_principal or "", self._ctx.session_key)
        return out, None


class Initiator:
    """One client-side authentication exchange (NTLM inside SPNEGO, as Windows and Samba do)."""

    def __init__(self, username: str, password: str, hostname: str = "unspecified") -> None:
        self._ctx = spnego.client(username, password, hostname=hostname, service="cifs", protocol="negotiate")

    def step(self, token: bytes | None) -> bytes | None:
        try:
            return self._ctx.step(token or None)
        except SpnegoError as exc:
            raise AuthError(str(exc)) from exc

    @property
    def complete(self) -> bool:
        return self._ctx.complete

    @property
    def session_key(self) -> bytes:
        return self._ctx.session_key
