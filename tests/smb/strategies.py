"""Hypothesis strategies for the SMB codec.  The dataclasses annotate each field with its wire width
(harness.smb.wire U8..U64, Bytes16, Utf16), so registering those types lets ``st.builds(cls)``
generate in-range values for every message; only classes with cross-field rules get explicit
strategies."""

from __future__ import annotations

from hypothesis import strategies as st

from harness.smb import fscc
from harness.smb.constants import HeaderFlags, TreeConnectFlags
from harness.smb.header import Header
from harness.smb.messages import (
    CreateContext,
    ErrorResponse,
    NegotiateRequest,
    NegotiateResponse,
    RawNegotiateContext,
    TreeConnectContext,
    TreeConnectRequest,
    all_message_classes,
)
from harness.smb.messages.negotiate import NEGOTIATE_CONTEXT_TYPES
from harness.smb.wire import U8, U16, U32, U64, Bytes16, Utf16

st.register_type_strategy(U8, st.integers(0, 0xFF))
st.register_type_strategy(U16, st.integers(0, 0xFFFF))
st.register_type_strategy(U32, st.integers(0, 0xFFFFFFFF))
st.register_type_strategy(U64, st.integers(0, 0xFFFFFFFFFFFFFFFF))
st.register_type_strategy(Bytes16, st.binary(min_size=16, max_size=16))
st.register_type_strategy(Utf16, st.text(max_size=40))
st.register_type_strategy(bytes, st.binary(max_size=200))
st.register_type_strategy(RawNegotiateContext, st.builds(
    RawNegotiateContext, st.integers(0, 0xFFFF).filter(lambda t: t not in NEGOTIATE_CONTEXT_TYPES),
    st.binary(max_size=64)))
st.register_type_strategy(CreateContext, st.builds(CreateContext, st.binary(min_size=1, max_size=16),
                                                   st.binary(max_size=80)))
st.register_type_strategy(TreeConnectContext, st.builds(TreeConnectContext, st.integers(0, 0xFFFF),
                                                        st.binary(max_size=40)))



def _negotiate_context():
    from harness.smb.messages.negotiate import AnyNegotiateContext

    return st.from_type(AnyNegotiateContext)


negotiate_contexts = st.lists(st.deferred(_negotiate_context), max_size=6)


@st.composite
def negotiate_requests(draw):
    dialects = draw(st.lists(st.integers(0, 0xFFFF), max_size=8))
    if draw(st.booleans()):
        dialects.append(0x0311)
    offers = 0x0311 in dialects
    return NegotiateRequest(dialects, draw(st.from_type(U16)), draw(st.from_type(U32)), draw(st.from_type(Bytes16)),
                            draw(negotiate_contexts) if offers else [],
                            0 if offers else draw(st.from_type(U64)))


@st.composite
def negotiate_responses(draw):
    response = draw(st.builds(NegotiateResponse, contexts=st.just([])))
    if draw(st.booleans()):
        response.dialect_revision = 0x0311
        response.contexts = draw(negotiate_contexts)
    return response


@st.composite
def tree_connect_requests(draw):
    flags = draw(st.from_type(U16))
    contexts = draw(st.lists(st.from_type(TreeConnectContext), max_size=3)) if flags & TreeConnectFlags.EXTENSION_PRESENT else []
    return TreeConnectRequest(draw(st.from_type(Utf16)), flags, contexts)


SPECIAL = {NegotiateRequest: negotiate_requests(), NegotiateResponse: negotiate_responses(),
           TreeConnectRequest: tree_connect_requests()}


def message_strategy(cls):
    return SPECIAL[cls] if cls in SPECIAL else st.builds(cls)


MESSAGE_CLASSES = sorted(all_message_classes(), key=lambda cls: cls.__name__)
any_message = st.one_of([message_strategy(cls) for cls in MESSAGE_CLASSES])
error_responses = st.builds(ErrorResponse)


@st.composite
def headers(draw, command=None, response=None):
    flags = draw(st.from_type(U32))
    if response is not None:
        flags = flags | HeaderFlags.SERVER_TO_REDIR if response else flags & ~HeaderFlags.SERVER_TO_REDIR
    is_async = bool(flags & HeaderFlags.ASYNC_COMMAND)
    return Header(
        command=draw(st.from_type(U16)) if command is None else command,
        status=draw(st.from_type(U32)), credit_charge=draw(st.from_type(U16)), credits=draw(st.from_type(U16)),
        flags=flags, next_command=0, message_id=draw(st.from_type(U64)),
        process_id=0 if is_async else draw(st.from_type(U32)), tree_id=0 if is_async else draw(st.from_type(U32)),
        async_id=draw(st.from_type(U64)) if is_async else 0, session_id=draw(st.from_type(U64)),
        signature=draw(st.from_type(Bytes16)))


FSCC_CLASSES = sorted([*fscc.FILE_INFO_CLASSES.values(), *fscc.FS_INFO_CLASSES.values(),
                       *fscc.DIRECTORY_CLASSES.values()], key=lambda cls: cls.__name__)


def fscc_strategy(cls):
    if cls in (fscc.FileBothDirectoryInformation, fscc.FileIdBothDirectoryInformation):
        return st.builds(cls, short_name=st.text(alphabet=st.characters(max_codepoint=0xFFFF,
                                                                         exclude_categories=("Cs",)), max_size=12))
    return st.builds(cls)
