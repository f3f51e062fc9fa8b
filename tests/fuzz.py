"""What the fuzz tests of the servers share: Hypothesis settings for a test that talks to
a live server (bounded, no deadline), and request bodies (raw bytes, or JSON of any shape)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SERVER = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def bodies(max_bytes: int = 300) -> st.SearchStrategy[bytes]:
    """Bytes of any kind, or JSON documents of any shape (NaN and infinities included)."""
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16)
    documents = st.recursive(
        leaves,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=4),
        max_leaves=10,
    )
    return st.one_of(st.binary(max_size=max_bytes), documents.map(lambda v: json.dumps(v).encode()))
