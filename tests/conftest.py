"""Shared fixtures: the databases, the loopback servers every adapter test talks to."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botapi import BotAPIDouble
from httpserver import LoopbackServer
from servicekit import feed, serve
from smtpserver import SMTPTestServer


@pytest.fixture
def double() -> Iterator[BotAPIDouble]:
    """The Bot API double: python-telegram-bot pointed at it speaks real HTTP on loopback."""
    with BotAPIDouble() as server:
        yield server


@pytest.fixture
def feeds() -> Iterator[LoopbackServer]:
    """A feed server with one feed of one item, "first" (modules needing others override it)."""
    with LoopbackServer() as server:
        serve(server, feed("first"))
        yield server


@pytest.fixture
def smtp() -> Iterator[SMTPTestServer]:
    """An SMTP server (aiosmtpd) on loopback that keeps what it receives."""
    with SMTPTestServer() as server:
        yield server


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    """A fresh loopback HTTP server (see tests/httpserver.py), stopped after the test."""
    with LoopbackServer() as server:
        yield server


PG_URL = os.environ.get("MONITOR_TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(
    not PG_URL, reason="MONITOR_TEST_DATABASE_URL is not set: PostgreSQL tests skipped"
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_pg)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a PostgreSQL schema of its own (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'monitor.db'}"
        return
    with postgresql_schema() as url:
        yield url


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    """An empty PostgreSQL schema of its own (dropped afterwards); skipped without PostgreSQL."""
    if not PG_URL:
        pytest.skip("MONITOR_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    with postgresql_schema() as url:
        yield url


@contextlib.contextmanager
def postgresql_schema() -> Iterator[str]:
    """A URL of the test database whose search_path is a new schema, dropped at the end."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from monitor.store.db import make_engine

    assert PG_URL is not None
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.engine.dispose()
