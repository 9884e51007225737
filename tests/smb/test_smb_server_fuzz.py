"""A short, reproducible run of the server fuzzer (tests/smb/server_fuzz.py): mutated requests of a
real session end in a reply or in Disconnect, never in another exception."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from . import server_fuzz

_CORPUS: dict[str, object] = {}


def _setup(tmp_path_factory):
    if not _CORPUS:
        root = str(tmp_path_factory.mktemp("fuzz"))
        state = server_fuzz.make_state(root)
        _CORPUS["state"] = state
        _CORPUS["corpora"] = [server_fuzz.record_session(state, False), server_fuzz.record_session(state, True)]
    return _CORPUS["state"], _CORPUS["corpora"]


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2**32), signed=st.booleans())
def test_mutated_requests_never_crash_the_server(tmp_path_factory, seed, signed):
    state, corpora = _setup(tmp_path_factory)
    server_fuzz.run_case(state, corpora[int(signed)], random.Random(seed))


def test_timed_main_runs():
    assert server_fuzz.main(1.0) == 0
