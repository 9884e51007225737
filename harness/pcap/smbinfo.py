"""What Wireshark's Info column says about each SMB2 message of a frame, for the ladder diagram.

Why the Info column: a reader of a ladder needs the file a CREATE opened, the name of an error status
and the class a QUERY_INFO asked for, and tshark already renders them ("Create Request File: a.txt",
"Create Response, Error: STATUS_OBJECT_NAME_NOT_FOUND", "GetInfo Request FILE_INFO/SMB2_FILE_ALL_INFO").
The column lists a frame's messages (compounded or several per segment) separated by ';', in order.
"""
from __future__ import annotations

import re

INFO_FIELD = "_ws.col.Info"
_FLAGS = re.compile(r"^(?:\[[^\]]*\]\s*)+")          # "[TCP Retransmission] " and other analysis prefixes
_VERB = re.compile(r"\b(?:Request|Response)\b[,:]?\s*")


def details(info: str | None, count: int) -> list[str]:
    """Per SMB2 message of the frame, what follows "Request"/"Response" in its Info piece ("File:
    a.txt", "STATUS_ACCESS_DENIED", "FILE_INFO/SMB2_FILE_ALL_INFO"); [] when the column does not
    hold exactly `count` such pieces (another protocol's text, a frame tshark summarised differently)."""
    if not info or count <= 0:
        return []
    pieces = [p.strip() for p in _FLAGS.sub("", str(info)).split(";")]
    if len(pieces) != count or not all(_VERB.search(p) for p in pieces):
        return []
    out = []
    for p in pieces:
        rest = p[_VERB.search(p).end():]  # type: ignore[union-attr]
        out.append(rest.replace("Error: ", "").strip(" ,"))
    return out
