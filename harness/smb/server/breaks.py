"""What a change made through this server tells other clients' caches: a WRITE, an end-of-file or
allocation change, a COPYCHUNK or a byte-range lock breaks the read caching of other opens (level II
oplocks, also the writer's own; READ leases of other lease keys). Change notification is
:mod:`.notify`; the rules and the break messages are :mod:`.oplocks` on the caching table.
"""

from __future__ import annotations

from .model import Open
from .oplocks import on_write


def break_others(conn, writer: Open) -> None:
    """Others' read caches go; these breaks need no acknowledgment to wait for (§3.3.4.6, §3.3.4.7)."""
    on_write(conn, writer)
