"""TREE_CONNECT and TREE_DISCONNECT (MS-SMB2 §3.3.5.7, §3.3.5.8).

Rules: the path is ``\\\\server\\share`` or a bare share name; an unknown share is
STATUS_BAD_NETWORK_NAME; a share that requires encryption needs a session that can encrypt, and
from then on every request on the tree must be encrypted (checked by the connection).  IPC$ is a
pipe share with no files.  TREE_DISCONNECT closes the tree's opens.
"""

from __future__ import annotations

from .. import messages as m
from ..constants import Dialect, NtStatus, ShareCapabilities, ShareFlags, ShareType
from .model import FULL_ACCESS, Fail, Reply, Session, Tree
from .opens import close_tree_opens


def tree_connect(conn, session: Session, request: m.TreeConnectRequest, encrypted: bool) -> Reply:
    path = request.path
    name = path.rsplit("\\", 1)[-1] if path.startswith("\\\\") else path
    if path.startswith("\\\\") and path.count("\\") != 3:
        raise Fail(NtStatus.BAD_NETWORK_NAME, f"bad share path {path!r}")
    share_type = ShareType.DISK
    if name.upper() == "IPC$":
        tree = Tree(session.next_tree_id, None, None, False)
        share_type = ShareType.PIPE
    else:
        found = conn.state.shares.get(name.lower())
        if found is None:
            raise Fail(NtStatus.BAD_NETWORK_NAME, f"no share {name!r}")
        share, fs = found
        needs = share.encrypt and not conn.accept_transport_security
        if needs and (session.keys is None or session.keys.c2s is None):
            raise Fail(NtStatus.ACCESS_DENIED, "share requires encryption; session cannot encrypt")
        # The TREE_CONNECT itself may travel unencrypted: its response carries ENCRYPT_DATA and
        # every later request on the tree must then be encrypted (§3.3.5.7, checked in _handle).
        tree = Tree(session.next_tree_id, share, fs, needs)
    session.next_tree_id += 1
    session.trees[tree.tree_id] = tree
    flags = ShareFlags.NO_CACHING if share_type == ShareType.PIPE else 0
    if tree.encrypt or session.encrypt_data:
        flags |= ShareFlags.ENCRYPT_DATA
    caps = ShareCapabilities.CONTINUOUS_AVAILABILITY if tree.share is not None and \
        tree.share.continuously_available and conn.dialect >= Dialect.SMB_3_0 else 0
    response = m.TreeConnectResponse(share_type=share_type, share_flags=int(flags), capabilities=int(caps),
                                     maximal_access=FULL_ACCESS)
    return Reply(NtStatus.SUCCESS, response, tree_id=tree.tree_id)


def tree_disconnect(conn, session: Session, tree: Tree) -> Reply:
    close_tree_opens(conn, session, tree)
    del session.trees[tree.tree_id]
    return Reply(NtStatus.SUCCESS, m.TreeDisconnectResponse())
