"""Property tests: every structure survives encode → decode unchanged."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.smb import fscc
from harness.smb.compound import build_compound, decode_message, pack_message, split_compound
from harness.smb.constants import HeaderFlags
from harness.smb.header import Header, TransformHeader
from harness.smb.messages import (
    BufferDescriptorV1,
    CreateContext,
    ErrorContext,
    ErrorResponse,
    NetworkInterfaceInfo,
    ValidateNegotiateInfoRequest,
    ValidateNegotiateInfoResponse,
    pack_create_contexts,
    unpack_create_contexts,
)
from harness.smb.messages.create_contexts import TYPED_CONTEXTS, parse_lease
from harness.smb.messages.negotiate import pack_negotiate_contexts, unpack_negotiate_contexts

from .strategies import (
    FSCC_CLASSES,
    MESSAGE_CLASSES,
    any_message,
    fscc_strategy,
    headers,
    message_strategy,
    negotiate_contexts,
)


@given(headers())
def test_smb_header_roundtrip(header):
    raw = header.pack()
    assert len(raw) == 64 and Header.unpack(raw) == header


@given(st.builds(TransformHeader))
def test_smb_transform_header_roundtrip(transform):
    raw = transform.pack()
    assert len(raw) == 52 and TransformHeader.unpack(raw) == transform


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_smb_message_roundtrip(cls, data):
    message = data.draw(message_strategy(cls))
    header = data.draw(headers(command=cls.COMMAND, response=cls.IS_RESPONSE))
    header.status = 0
    raw = pack_message(header, message)
    decoded_header, decoded = decode_message(raw)
    assert decoded_header == header
    assert type(decoded) is cls and decoded == message
    assert decoded.pack() == message.pack()


@given(st.builds(ErrorResponse), st.integers(1, 0x12))
def test_smb_error_response_roundtrip(error, command):
    raw = pack_message(Header(command=command, status=0xC0000022, flags=HeaderFlags.SERVER_TO_REDIR), error)
    assert decode_message(raw)[1] == error


@given(st.lists(st.builds(ErrorContext), max_size=5))
def test_smb_error_contexts_roundtrip(contexts):
    assert ErrorResponse.unpack(ErrorResponse.with_contexts(contexts).pack()).contexts() == contexts


@given(negotiate_contexts)
def test_smb_negotiate_context_list_roundtrip(contexts):
    raw = pack_negotiate_contexts(contexts)
    assert unpack_negotiate_contexts(raw, 0, len(contexts), "test") == contexts


@given(st.lists(st.from_type(CreateContext), min_size=1, max_size=6))
def test_smb_create_context_chain_roundtrip(contexts):
    raw = pack_create_contexts(contexts)
    assert unpack_create_contexts(raw) == contexts
    # Every Next offset is 8-aligned and each data block starts 8-aligned inside its entry.
    position = 0
    while True:
        next_offset = int.from_bytes(raw[position : position + 4], "little")
        assert next_offset % 8 == 0
        data_offset = int.from_bytes(raw[position + 10 : position + 12], "little")
        assert data_offset % 8 == 0
        if not next_offset:
            break
        position += next_offset


@pytest.mark.parametrize("cls", TYPED_CONTEXTS, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_smb_typed_create_context_roundtrip(cls, data):
    typed = data.draw(st.builds(cls))
    chain = unpack_create_contexts(pack_create_contexts([typed.to_context()]))
    assert cls.from_context(chain[0]) == typed
    if typed.NAME == b"RqLs":
        assert parse_lease(chain[0]) == typed


@given(st.lists(any_message, min_size=1, max_size=5), st.booleans())
@settings(deadline=None)
def test_smb_compound_roundtrip(messages, related):
    singles = [pack_message(Header(command=m.COMMAND if m.COMMAND >= 0 else 0, message_id=index,
                                   flags=HeaderFlags.SERVER_TO_REDIR if m.IS_RESPONSE else 0), m)
               for index, m in enumerate(messages)]
    chain = build_compound(singles, related=related)
    elements = split_compound(chain)
    assert len(elements) == len(messages)
    for index, (element, message) in enumerate(zip(elements, messages, strict=True)):
        last = index == len(messages) - 1
        assert (element.header.next_command == 0) == last
        assert last or len(element.raw) % 8 == 0
        assert element.header.is_related == (related and index > 0)
        assert decode_message(element.raw)[1] == message


@pytest.mark.parametrize("cls", FSCC_CLASSES, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_smb_fscc_roundtrip(cls, data):
    info = data.draw(fscc_strategy(cls))
    assert cls.unpack(info.pack()) == info


@pytest.mark.parametrize("cls", sorted(fscc.DIRECTORY_CLASSES.values(), key=lambda c: c.__name__),
                         ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_smb_directory_chain_roundtrip(cls, data):
    entries = data.draw(st.lists(fscc_strategy(cls), max_size=5))
    raw = fscc.pack_directory_entries(entries)
    assert fscc.unpack_directory_entries(cls.INFO_CLASS, raw) == entries


@given(st.integers(0, 2**63 - 1))
def test_smb_filetime_unix_roundtrip(filetime):
    assert fscc.filetime_from_unix_ns(fscc.filetime_to_unix_ns(filetime)) == filetime


def test_smb_filetime_known_values():
    import datetime

    assert fscc.filetime_from_unix_ns(0) == 116444736000000000
    moment = datetime.datetime(2024, 1, 2, 3, 4, 5, 678900, tzinfo=datetime.UTC)
    assert fscc.filetime_to_datetime(fscc.filetime_from_datetime(moment)) == moment
    assert fscc.filetime_from_datetime(moment) == fscc.filetime_from_unix_ns(int(moment.timestamp() * 10**6) * 1000)


@given(st.lists(st.builds(BufferDescriptorV1), max_size=8))
def test_smb_buffer_descriptor_list_roundtrip(descriptors):
    assert BufferDescriptorV1.unpack_list(BufferDescriptorV1.pack_list(descriptors)) == descriptors


@given(st.builds(ValidateNegotiateInfoRequest), st.builds(ValidateNegotiateInfoResponse))
def test_smb_validate_negotiate_info_roundtrip(request_info, response_info):
    assert ValidateNegotiateInfoRequest.unpack(request_info.pack()) == request_info
    assert ValidateNegotiateInfoResponse.unpack(response_info.pack()) == response_info
    assert len(response_info.pack()) == 24


@given(st.lists(st.builds(NetworkInterfaceInfo, address=st.ip_addresses().map(str),
                          port=st.integers(0, 0xFFFF), flow_info=st.integers(0, 2**32 - 1),
                          scope_id=st.integers(0, 2**32 - 1)), min_size=1, max_size=4))
def test_smb_network_interface_info_roundtrip(entries):
    for entry in entries:
        if not entry.is_ipv6:
            entry.flow_info = entry.scope_id = 0
    raw = NetworkInterfaceInfo.pack_list(entries)
    assert len(raw) == 152 * len(entries)
    decoded = NetworkInterfaceInfo.unpack_list(raw)
    for got, sent in zip(decoded, entries, strict=True):  # compare addresses as addresses, not spellings
        assert ipaddress.ip_address(got.address) == ipaddress.ip_address(sent.address)
        got.address = sent.address
    assert decoded == entries
