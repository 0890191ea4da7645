"""Shared fixtures. Kept minimal: each test module owns its own helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from httpserver import LoopbackServer


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    """A fresh loopback HTTP server (see tests/httpserver.py), stopped after the test."""
    with LoopbackServer() as server:
        yield server
