"""tshark smb2_seskey_list export (the uat:smb2_seskey_list preference of tshark 4.0)."""

from __future__ import annotations

import pytest

from harness.smb.keys import SessionKeyRecord, format_tshark_seskey, keys_file_text, parse_keys_file

from . import vectors as v


def test_smb_seskey_session_id_is_le_wire_bytes_without_quotes():
    line = format_tshark_seskey(0x00000000028033EE, None, v.S2C_KEY, v.C2S_KEY)
    assert line == f"ee33800200000000,,{v.S2C_KEY.hex()},{v.C2S_KEY.hex()}"
    assert '"' not in line


def test_smb_seskey_with_session_key_and_256_bit_keys():
    line = format_tshark_seskey(0xA8A68666, v.SESSION_KEY, bytes(32), bytes(range(32)))
    assert line.split(",") == ["6686a6a800000000", v.SESSION_KEY.hex(), "00" * 32, bytes(range(32)).hex()]
    with pytest.raises(ValueError):
        format_tshark_seskey(1, None, bytes(15), bytes(16))


def test_smb_keys_file_one_line_per_session_and_parses_back():
    records = [SessionKeyRecord(1, None, v.S2C_KEY, v.C2S_KEY), SessionKeyRecord(2, v.SESSION_KEY, v.C2S_KEY, v.S2C_KEY),
               SessionKeyRecord(1, None, bytes(16), bytes(16))]
    text = keys_file_text(records)
    assert text.count("\n") == 2 and text.endswith("\n")
    assert parse_keys_file(text) == records[:2]
