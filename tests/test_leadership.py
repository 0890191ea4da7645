"""The leadership lease (store.leadership): taking, renewing, losing and giving up a role, judged by
the database clock, on SQLite and PostgreSQL; and what only the leader does. The election between
live processes is tested in test_replicas.py."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from httpserver import LoopbackServer
from sqlalchemy import Engine, update

from monitor.config import parse_config
from monitor.daemon import Service
from monitor.store._shared import database_now
from monitor.store.db import ensure_schema, make_engine, read_session, transaction
from monitor.store.leadership import holder_of, lead, resign
from monitor.store.tables import alerts, leadership

LEASE = timedelta(seconds=30)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    ensure_schema(engine, upgrade=True)
    yield engine
    engine.dispose()


def expire(engine: Engine, role: str = "leader") -> None:
    """The holder's lease ran out (it stopped renewing): its end is now in the past."""
    with transaction(engine) as session:
        session.execute(
            update(leadership)
            .where(leadership.c.role == role)
            .values(expires_at=database_now(session) - timedelta(seconds=1))
        )


def test_one_holder_at_a_time_and_terms_grow_with_each_change_of_hands(engine: Engine) -> None:
    with transaction(engine) as session:
        first = lead(session, "leader", "a:1", LEASE)
        assert first is not None and first.term == 1
        assert first.remaining == LEASE
        assert lead(session, "leader", "b:2", LEASE) is None  # held by a
        renewed = lead(session, "leader", "a:1", LEASE, term=1)
        assert renewed is not None and renewed.term == 1
        assert renewed.expires_at >= first.expires_at
    with read_session(engine) as session:
        held = holder_of(session, "leader")
    assert held is not None and (held.holder, held.term, held.expired) == ("a:1", 1, False)

    expire(engine)
    with transaction(engine) as session:
        taken = lead(session, "leader", "b:2", LEASE)
        assert taken is not None and taken.term == 2
        # The old holder cannot renew its term, nor take the role back while b holds it.
        assert lead(session, "leader", "a:1", LEASE, term=1) is None
        assert lead(session, "leader", "a:1", LEASE) is None


def test_an_expired_lease_is_not_renewed_even_by_its_holder_term(engine: Engine) -> None:
    with transaction(engine) as session:
        assert lead(session, "leader", "a:1", LEASE) is not None
    expire(engine)
    with transaction(engine) as session:
        # Renewing names a lease that is over: the holder must take the role afresh.
        assert lead(session, "leader", "a:1", LEASE, term=1) is None
        again = lead(session, "leader", "a:1", LEASE)
        assert again is not None and again.term == 2


def test_resigning_hands_the_role_on_at_once(engine: Engine) -> None:
    with transaction(engine) as session:
        held = lead(session, "leader", "a:1", LEASE)
        assert held is not None
        assert not resign(session, "leader", "b:2", held.term)  # not b's to give up
        assert resign(session, "leader", "a:1", held.term)
        taken = lead(session, "leader", "b:2", LEASE)
        assert taken is not None and taken.term == held.term + 1
    with read_session(engine) as session:
        assert holder_of(session, "nobody-ever") is None


def test_roles_are_independent(engine: Engine) -> None:
    with transaction(engine) as session:
        assert lead(session, "leader", "a:1", LEASE) is not None
        assert lead(session, "other", "b:2", LEASE) is not None


def test_only_the_leader_sends_digests(database_url: str, tmp_path: Path) -> None:
    """A digest goes out from the leader only, so that no recipient gets it in pieces."""
    from smtpserver import SMTPTestServer

    feed = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><guid>w</guid>'
        + f"<pubDate>{format_datetime(datetime.now(UTC))}</pubDate>".encode()
        + b"<title>Weather</title><description>Sunny all week</description></item></channel></rss>"
    )
    with LoopbackServer() as server, SMTPTestServer() as smtp:
        server.respond("/a.xml", body=feed, headers={"Content-Type": "application/rss+xml"})
        text = textwrap.dedent(
            f"""
            database: {{url: "{database_url}"}}
            fetch: {{allow_private: true}}
            service: {{listen: null}}
            feeds: [{{name: a, url: '{server.url("/a.xml")}'}}]
            watchlists:
              sunny: {{query: "sunny", notify: [morning]}}
            channels:
              morning: {{type: email, to: [chief@example.org], digest: daily 08:00 UTC}}
            email: {{host: 127.0.0.1, port: {smtp.port}, starttls: false, from: "M <m@example.org>"}}
            """
        )
        settings = parse_config(text, str(tmp_path / "config.yaml"))

        async def go() -> tuple[int, int]:
            service = Service.build(settings)
            service.prepare(now=datetime.now(UTC), alone=True)
            try:
                await service.poll_all()
                with transaction(service.engine) as session:  # the digest's time has come
                    session.execute(alerts.update().values(next_attempt_at=database_now(session)))
                service.lead(False)
                as_follower = (await service.deliver_tick()).sent
                service.lead(True)
                as_leader = (await service.deliver_tick()).sent
            finally:
                await service.close()
            return as_follower, as_leader

        assert asyncio.run(go()) == (0, 1)
        assert len(smtp.messages) == 1
