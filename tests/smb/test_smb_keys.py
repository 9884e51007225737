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


def test_smb_seskey_key_length_errors_name_the_key():
    with pytest.raises(ValueError, match=r"^s2c_key must be 16 or 32 bytes, got 15$"):
        format_tshark_seskey(1, None, bytes(15), bytes(16))
    with pytest.raises(ValueError, match=r"^c2s_key must be 16 or 32 bytes, got 33$"):
        format_tshark_seskey(1, None, bytes(16), bytes(33))


def test_smb_seskey_session_ids_with_the_top_bit_set_round_trip():
    """SessionId is an unsigned 64-bit value (MS-SMB2 2.2.1): 0x8000... and above must not turn negative."""
    records = [SessionKeyRecord(0xFFFFFFFFFFFFFFFF, None, v.S2C_KEY, v.C2S_KEY),
               SessionKeyRecord(0x8000000000000001, None, v.C2S_KEY, v.S2C_KEY)]
    text = keys_file_text(records)
    assert text.splitlines()[0].startswith("ffffffffffffffff,")
    assert text.splitlines()[1].startswith("0100000000000080,")
    assert parse_keys_file(text) == records


def test_smb_keys_file_duplicates_skipped_not_ending_the_file():
    records = [SessionKeyRecord(1, None, v.S2C_KEY, v.C2S_KEY), SessionKeyRecord(1, None, bytes(16), bytes(16)),
               SessionKeyRecord(3, None, v.C2S_KEY, v.S2C_KEY)]
    assert parse_keys_file(keys_file_text(records)) == [records[0], records[2]]


def test_smb_keys_file_comments_and_blank_lines_anywhere():
    a = SessionKeyRecord(1, None, v.S2C_KEY, v.C2S_KEY).line()
    b = SessionKeyRecord(2, v.SESSION_KEY, v.C2S_KEY, v.S2C_KEY).line()
    records = parse_keys_file(f"# written by a test\n{a}\n\n   \n# another comment\n{b}\n")
    assert [r.session_id for r in records] == [1, 2]


@pytest.mark.parametrize("bad", ["0100000000000000,,aa", "01000000000000,,{s2c},{c2s}", "zz,,,", "#x\n\nnot,a,key,line"])
def test_smb_keys_file_malformed_line_names_its_number(bad):
    good = SessionKeyRecord(1, None, v.S2C_KEY, v.C2S_KEY).line()
    text = good + "\n" + bad.format(s2c=v.S2C_KEY.hex(), c2s=v.C2S_KEY.hex())
    number = text.splitlines().index(text.splitlines()[-1]) + 1
    with pytest.raises(ValueError, match=rf"^keys file line {number}: expected sesid,sessionkey,s2c,c2s$"):
        parse_keys_file(text)
