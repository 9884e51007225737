"""quic.ko's connection-ID sequence numbers, as the CONNECTION_ID socket option reports and checks them.

Apart from ``options.py`` so that the socket's parts (``sockparts.py``) can name the type without
importing the option code.
"""

from __future__ import annotations

import errno

from . import uapi
from .core import err


class ConnectionIds:
    """quic.ko's view of the source (0) and destination (1) connection-ID sets: sequence numbers only.

    The live range is prior_to .. prior_to + limit - 1 (new IDs are issued as old ones retire).
    aioquic issues and retires the IDs on the wire by its own rules; these numbers are what the
    CONNECTION_ID option reports and checks (quic.ko's checks on set: prior_to inside the live
    range, active a live ID above the current one).
    """

    def __init__(self, limit: int = 7):
        self.limit = limit
        self.sets = {0: [0, 0], 1: [0, 0]}  # dest -> [active, prior_to]

    def get(self, dest: int) -> tuple[int, int]:
        a, p = self.sets[1 if dest else 0]
        return a, p

    def set(self, info: uapi.ConnectionIdInfo) -> bytes | None:
        """Apply a CONNECTION_ID set; returns the CONNECTION_ID event payload when prior_to moved."""
        cur = self.sets[1 if info.dest else 0]
        active, prior = cur
        first, last = prior, prior + self.limit - 1
        if info.prior_to and not first < info.prior_to <= last:
            raise err(errno.EINVAL, f"prior_to {info.prior_to} outside {first + 1}..{last}")
        if info.active and not (active < info.active <= last and info.active >= max(prior, info.prior_to)):
            raise err(errno.EINVAL, f"active {info.active} is not a live ID above {active}")
        new_prior = info.prior_to or prior
        new_active = info.active or active
        if new_active < new_prior:
            new_active = new_prior
        cur[:] = [new_active, new_prior]
        if info.prior_to:
            return uapi.ConnectionIdInfo(1 if info.dest else 0, new_active, new_prior).pack()
        return None
