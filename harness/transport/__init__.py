"""PDU channels for the SMB layer: one interface (:class:`~.base.Transport`), several transports.

The SMB code (harness/smb) only ever sees whole SMB2 messages: ``send_pdu``, ``recv_pdu``, ``close``,
plus RDMA hooks that only SMB Direct implements.  Adding a transport never touches SMB code.
"""

from .base import FrameTooLarge, Listener, Transport, TransportClosed, TransportError, TransportUnavailable
from .factory import DEFAULT_PORTS, connect, listen

__all__ = ["DEFAULT_PORTS", "FrameTooLarge", "Listener", "Transport", "TransportClosed", "TransportError",
           "TransportUnavailable", "connect", "listen"]
