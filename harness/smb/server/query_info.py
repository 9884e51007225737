"""QUERY_INFO (MS-SMB2 §3.3.5.20): file, file system and security information in FSCC classes.

Rules: the FILE classes that expose attributes need FILE_READ_ATTRIBUTES; a buffer smaller than a
class's fixed part is STATUS_INFO_LENGTH_MISMATCH, one that cannot hold the variable part gets
STATUS_BUFFER_OVERFLOW and the truncated data (MS-FSCC §2.4); quotas are not supported.  SECURITY
returns the parts of the file's stored descriptor that AdditionalInformation names (READ_CONTROL
needed), FileFullEaInformation its EAs (FILE_READ_EA needed), FileStreamInformation its streams.
"""

from __future__ import annotations

import struct

from .. import fscc
from .. import messages as m
from ..constants import AccessMask, Command, Dialect, InfoType, NtStatus
from ..errors import SMBProtocolError
from ..fscc_lists import pack_full_eas, unpack_full_eas, unpack_get_eas
from ..vfs import short_name
from . import file_security, streams
from .model import Fail, Handler, Open, Reply
from .opens import file_meta, open_for, os_error, share_of, stat_open
from .sparse import FILE_SUPPORTS_SPARSE_FILES


def _file_info(conn, tree, opened: Open, info_class: int) -> tuple[bytes, bool]:
    """(packed info, variable-length?)"""
    meta = file_meta(conn, stat_open(opened))
    basic = fscc.FileBasicInformation(meta.creation_time, meta.last_access_time, meta.last_write_time,
                                      meta.change_time, meta.attributes)
    # A name whose delete is pending no longer counts as a link (as Windows and Samba report it).
    standard = fscc.FileStandardInformation(meta.allocation_size, meta.end_of_file,
                                            max(0, meta.nlink - int(opened.delete_on_close)),
                                            int(opened.delete_on_close), int(meta.is_dir))
    fs = share_of(opened)
    name = "\\" + fs.relative(opened.path) + (f":{opened.stream}" if opened.stream is not None else "")
    ea = fscc.FileEaInformation(file_security.ea_size(fs, opened.path))
    if info_class == 4:
        return basic.pack(), False
    if info_class == 5:
        return standard.pack(), False
    if info_class == 6:
        return fscc.FileInternalInformation(meta.file_id).pack(), False
    if info_class == 7:
        return ea.pack(), False
    if info_class == 8:
        return fscc.FileAccessInformation(opened.access).pack(), False
    if info_class == 9:
        return fscc.FileNameInformation(name).pack(), True
    if info_class == 21:  # FileAlternateNameInformation: the same 8.3 alias QUERY_DIRECTORY reports
        return fscc.FileNameInformation(short_name(share_of(opened).basename(opened.path))).pack(), True
    if info_class == 48 and conn.dialect != Dialect.SMB_3_1_1:  # §3.3.5.20.1
        raise Fail(NtStatus.NOT_SUPPORTED, "FileNormalizedNameInformation needs SMB 3.1.1")
    if info_class == 48:  # FileNormalizedNameInformation: share-relative, no leading separator
        stream = f":{opened.stream}" if opened.stream is not None else ""
        return fscc.FileNameInformation(fs.relative(opened.path) + stream).pack(), True
    if info_class == 14:
        return fscc.FilePositionInformation(opened.position).pack(), False
    if info_class == 16:
        return fscc.FileModeInformation(opened.mode).pack(), False
    if info_class == 17:
        return fscc.FileAlignmentInformation(0).pack(), False
    if info_class == 18:
        return fscc.FileAllInformation(basic, standard, fscc.FileInternalInformation(meta.file_id),
                                       ea, fscc.FileAccessInformation(opened.access),
                                       fscc.FilePositionInformation(opened.position), fscc.FileModeInformation(opened.mode),
                                       fscc.FileAlignmentInformation(0), fscc.FileNameInformation(name)).pack(), True
    if info_class == 22:
        if opened.stream is not None:  # the file's streams, whichever of them is open
            base = fs.stat(opened.path)
            return streams.stream_information(fs, opened.path, base.is_dir, base.end_of_file,
                                              base.allocation_size), True
        return streams.stream_information(fs, opened.path, meta.is_dir, meta.end_of_file,
                                          meta.allocation_size), True
    if info_class == 34:
        return fscc.FileNetworkOpenInformation(meta.creation_time, meta.last_access_time, meta.last_write_time,
                                               meta.change_time, meta.allocation_size, meta.end_of_file,
                                               meta.attributes).pack(), False
    if info_class == 35:
        return fscc.FileAttributeTagInformation(meta.attributes, 0).pack(), False
    if info_class == 28:  # FileCompressionInformation: size, format, shifts, reserved
        return struct.pack("<QHBBB3x", meta.end_of_file, 0, 0, 0, 0), False
    raise Fail(NtStatus.INVALID_INFO_CLASS if info_class in (1, 2, 3, 12, 37, 38) or info_class > 75
               else NtStatus.NOT_SUPPORTED, f"file info class {info_class}")


def _fs_info(tree, info_class: int) -> tuple[bytes, bool]:
    space = tree.fs.space()
    if info_class == 1:
        return fscc.FileFsVolumeInformation(0, 0x57495245, 0, "wirecheck").pack(), True
    if info_class == 3:
        return fscc.FileFsSizeInformation(space.total_units, space.available_units, 1, space.unit_size).pack(), False
    if info_class == 7:
        return fscc.FileFsFullSizeInformation(space.total_units, space.available_units, space.free_units, 1,
                                                 space.unit_size).pack(), False
    if info_class == 5:  # case-sensitive search, case-preserved names, Unicode names, ACLs; sparse files
        attributes = 0x0000000F | (FILE_SUPPORTS_SPARSE_FILES if tree.fs.sparse_files else 0)
        return fscc.FileFsAttributeInformation(attributes, 255, "NTFS").pack(), True
    if info_class == 4:
        return fscc.FileFsDeviceInformation(7, 0x20).pack(), False
    if info_class == 11:  # FileFsSectorSizeInformation (MS-FSCC §2.5.8)
        return struct.pack("<IIIIIIII", 512, 512, 512, 512, 0x0000000B, 0, 0, 0)[:28], False
    if info_class == 6:  # FileFsControlInformation
        return struct.pack("<QQQQQI4x", 0, 0, 0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0), False
    if info_class == 8:  # FileFsObjectIdInformation
        return bytes(64), False
    raise Fail(NtStatus.INVALID_INFO_CLASS, f"fs info class {info_class}")


def _query_info(conn, session, tree, header, request: m.QueryInfoRequest, related, encrypted) -> Reply:
    opened = open_for(session, tree, request.file_id, related)
    if request.output_buffer_length > conn.max_size:
        raise Fail(NtStatus.INVALID_PARAMETER, "OutputBufferLength > MaxTransactSize")
    if (request.info_type == InfoType.FILE and request.file_info_class in (4, 18, 34, 35)
            and not opened.access & AccessMask.FILE_READ_ATTRIBUTES):
        raise Fail(NtStatus.ACCESS_DENIED, "needs FILE_READ_ATTRIBUTES")
    try:
        if request.info_type == InfoType.FILE and request.file_info_class == 15:
            return _full_ea(opened, request)
        if request.info_type == InfoType.FILE:
            data, variable = _file_info(conn, tree, opened, request.file_info_class)
        elif request.info_type == InfoType.FILESYSTEM:
            data, variable = _fs_info(tree, request.file_info_class)
        elif request.info_type == InfoType.SECURITY:
            data = file_security.query(opened, share_of(opened), request.additional_information)
            if len(data) > request.output_buffer_length:
                return Reply(NtStatus.BUFFER_TOO_SMALL, m.ErrorResponse(struct.pack("<I", len(data))))
            return Reply(NtStatus.SUCCESS, m.QueryInfoResponse(data))
        elif request.info_type == InfoType.QUOTA:
            raise Fail(NtStatus.NOT_SUPPORTED, "quotas")
        else:
            raise Fail(NtStatus.INVALID_PARAMETER, "InfoType")
    except OSError as exc:
        raise os_error(exc) from exc
    minimum = _MIN_SIZES.get((request.info_type, request.file_info_class), 0 if variable else len(data))
    if request.output_buffer_length < minimum:
        raise Fail(NtStatus.INFO_LENGTH_MISMATCH, "buffer smaller than the fixed part")
    if len(data) > request.output_buffer_length:
        return Reply(NtStatus.BUFFER_OVERFLOW, m.QueryInfoResponse(data[: request.output_buffer_length]))
    return Reply(NtStatus.SUCCESS, m.QueryInfoResponse(data))


def _full_ea(opened: Open, request: m.QueryInfoRequest) -> Reply:
    """FileFullEaInformation (MS-FSCC §2.4.15): the EAs named in the input buffer's
    FILE_GET_EA_INFORMATION list, or all of them; entries that do not fit are left out
    (STATUS_BUFFER_OVERFLOW), and a buffer too small for the first is STATUS_BUFFER_TOO_SMALL."""
    if not opened.access & AccessMask.FILE_READ_EA:
        raise Fail(NtStatus.ACCESS_DENIED, "needs FILE_READ_EA")
    try:
        names = unpack_get_eas(request.input_buffer)
    except SMBProtocolError as exc:
        raise Fail(exc.status, str(exc)) from exc
    data = file_security.query_eas(share_of(opened), opened.path, names)
    if len(data) <= request.output_buffer_length:
        return Reply(NtStatus.SUCCESS, m.QueryInfoResponse(data))
    entries = unpack_full_eas(data)
    fitting: list = []
    for entry in entries:
        if len(pack_full_eas(fitting + [entry])) > request.output_buffer_length:
            break
        fitting.append(entry)
    if not fitting:
        raise Fail(NtStatus.BUFFER_TOO_SMALL, "the first EA does not fit")
    return Reply(NtStatus.BUFFER_OVERFLOW, m.QueryInfoResponse(pack_full_eas(fitting)))


# Fixed parts of the variable-length classes: a buffer smaller than these is INFO_LENGTH_MISMATCH,
# a larger one that still cannot hold the name gets BUFFER_OVERFLOW and truncated data (MS-FSCC §2.4).
# The sizes are Windows' (as smbtorture smb2.getinfo.q*_buffercheck expects them), a little above
# the structures' fixed parts.
_MIN_SIZES: dict[tuple[int, int], int] = {(InfoType.FILE, 9): 8, (InfoType.FILE, 18): 104, (InfoType.FILE, 21): 8, (InfoType.FILE, 22): 32,
              (InfoType.FILE, 48): 8, (InfoType.FILESYSTEM, 1): 24, (InfoType.FILESYSTEM, 5): 16}


HANDLERS: dict[int, Handler] = {
    Command.QUERY_INFO: _query_info,
}
