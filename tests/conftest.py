"""Fixtures shared by the multi-process tests (procs, sockdir, pcaps): see procutil.py."""

from procutil import pcaps, procs, sockdir  # noqa: F401
