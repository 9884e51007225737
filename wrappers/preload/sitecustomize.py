"""Injected by `wirecheck exec` (PYTHONPATH): emulate sockets in this Python process.

Invisible when off: without SOCKET_WRAPPER_DIR (or inside the QUIC daemon) it does nothing. It then hands over to the
sitecustomize it shadows, if any, so a distribution's own start-up hooks still run.
"""

import importlib.machinery
import importlib.util
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))

# The QUIC daemon (wrappers/quic/daemon.py) reads the settings itself and must not wrap its own
# sockets: it is the engine behind native programs' QUIC fds, not a program on the network.
if os.environ.get("SOCKET_WRAPPER_DIR") and not os.environ.get("WIRECHECK_QUICD"):
    try:
        import wrappers as _wrappers

        _wrappers.activate()
    except Exception as _e:  # noqa: BLE001 - a broken environment must say why, then stop
        sys.stderr.write(f"wirecheck: cannot emulate sockets: {_e}\n")
        sys.stderr.flush()
        os._exit(2)  # SystemExit during site import would become "Fatal Python error"

_others = [p for p in sys.path if os.path.abspath(p or ".") != _here]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _others)
if _spec is not None and _spec.origin and os.path.abspath(_spec.origin) != os.path.abspath(__file__):
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)  # type: ignore[union-attr]
