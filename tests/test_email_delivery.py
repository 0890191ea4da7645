"""Email that readers can trust and leave, sent without hammering the server (issue 12, point 5):
SMTP connections reused within a delivery round and capped, `List-Unsubscribe` and a footer that
says why the mail came and how to stop. Real aiosmtpd servers; the evidence is what they received
and on how many connections."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botapi import BotAPIDouble
from httpserver import LoopbackServer
from servicekit import make_due, outbox, running, serve, stories_feed, write_config
from smtpserver import SMTPTestServer

from monitor.errors import ConfigError
from monitor.model import Alert
from monitor.notify.email import EmailNotifier

SENDER = "News monitor <monitor@example.org>"


def _alert(n: int, *, recipient: str = "desk@example.org", watchlist: str = "taiwan") -> Alert:
    return Alert(
        id=n,
        watchlist=watchlist,
        channel="desk",
        recipient=recipient,
        title=f"Taiwan story {n}",
        body="Taiwan is the first red line.",
        link=f"https://example.org/{n}",
        source="wire",
        published=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    )


def _notifier(server: SMTPTestServer, **options: object) -> EmailNotifier:
    return EmailNotifier(
        host=server.host,
        port=server.port,
        starttls=False,
        sender=SENDER,
        timeout=10.0,
        local_hostname="client.test",
        **options,  # type: ignore[arg-type]
    )


def test_40_matches_in_a_burst_are_40_emails_over_one_smtp_connection(
    database_url: str, double: BotAPIDouble, smtp: SMTPTestServer, tmp_path: Path
) -> None:
    watchlists = (
        "watchlists:\n"
        "  taiwan: {query: 'taiwan AND \"red line\"', notify: [desk]}\n"
        "channels:\n"
        "  desk: {type: email, to: [desk@example.org]}\n"
        f"email: {{host: 127.0.0.1, port: {smtp.port}, starttls: false}}\n"
    )
    with LoopbackServer() as feeds:
        serve(feeds, stories_feed(40))
        settings = write_config(tmp_path, database_url, double, feeds, watchlists=watchlists)

        async def scenario() -> None:
            async with running(settings, bot=False) as service:
                await service.poll_all()
                assert (await service.deliver_tick()).sent == 40

        asyncio.run(scenario())
    assert len(smtp.messages) == 40
    assert smtp.connections == 1  # was 40: one connection per message


def test_an_email_sent_twice_without_an_answer_is_taken_as_delivered_and_no_third_goes(
    database_url: str,
    double: BotAPIDouble,
    smtp: SMTPTestServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server takes every message and hangs up before answering: the first copy may have
    arrived, so the alert goes once more; when that one goes unanswered too, it is taken as
    delivered — logged, counted, recorded — and no third copy is sent."""
    watchlists = (
        "watchlists:\n"
        "  taiwan: {query: 'taiwan AND \"red line\"', notify: [desk]}\n"
        "channels:\n"
        "  desk: {type: email, to: [desk@example.org]}\n"
        f"email: {{host: 127.0.0.1, port: {smtp.port}, starttls: false}}\n"
    )
    smtp.hang_up_after_data(times=10)
    rounds = []
    with LoopbackServer() as feeds:
        serve(feeds, stories_feed(1))
        settings = write_config(tmp_path, database_url, double, feeds, watchlists=watchlists)

        async def scenario() -> float | None:
            async with running(settings, bot=False) as service:
                await service.poll_all()
                with caplog.at_level(logging.WARNING, logger="monitor"):
                    rounds.append(await service.deliver_tick())
                    for _ in range(3):
                        make_due(settings)
                        rounds.append(await service.deliver_tick())
                return service.metrics.registry.get_sample_value(
                    "monitor_deliveries_total", {"outcome": "unconfirmed"}
                )

        unconfirmed = asyncio.run(scenario())
    assert len(smtp.messages) == 2  # was one more every round
    first, second = (m.message for m in smtp.messages)
    assert first["Message-ID"] == second["Message-ID"] and first["Subject"] == second["Subject"]
    assert [(r.sent, r.retried, r.unconfirmed) for r in rounds] == [
        (0, 1, 0),  # the first copy: no answer, sent again
        (0, 0, 1),  # the second: no answer again, taken as delivered
        (0, 0, 0),
        (0, 0, 0),
    ]
    assert unconfirmed == 1.0
    (line,) = [r.getMessage() for r in caplog.records if "alert.unconfirmed" in r.getMessage()]
    assert "channel=desk" in line and "sends=2 action=taken as delivered, not sent again" in line
    (row,) = outbox(settings)
    assert (row.status, row.unconfirmed_sends) == ("sent", 2)


def test_connections_are_capped_and_a_dropped_idle_one_is_replaced(smtp: SMTPTestServer) -> None:
    notifier = _notifier(smtp, connections=3)

    async def scenario() -> None:
        try:
            await asyncio.gather(*(notifier.send(_alert(n)) for n in range(30)))
            assert notifier.opened <= 3
            smtp.drop_connections()  # the server hangs up on idle clients
            await notifier.send(_alert(30))  # on a new connection, without an error
        finally:
            await notifier.close()

    asyncio.run(scenario())
    assert len(smtp.messages) == 31
    assert smtp.connections <= 4


def test_every_email_says_why_it_came_and_how_to_stop(smtp: SMTPTestServer) -> None:
    notifier = _notifier(smtp)

    async def scenario() -> None:
        try:
            await notifier.send(_alert(1))
            await notifier.send_digest(
                [_alert(2), _alert(3, watchlist="china-russia")], title="Digest: 2 alerts"
            )
        finally:
            await notifier.close()

    asyncio.run(scenario())
    single, digest = (received.message for received in smtp.messages)
    assert single["List-Unsubscribe"] == "<mailto:monitor@example.org?subject=unsubscribe%20desk>"
    plain = single.get_body(("plain",))
    assert plain is not None
    assert (
        str(plain.get_content())
        .replace("\r\n", "\n")
        .endswith(
            "\n-- \nWhy you got this: desk@example.org receives the alerts of the watchlist taiwan "
            "(channel desk).\n"
            'To stop: write to monitor@example.org with the subject "unsubscribe desk".\n'
        )
    )
    html = single.get_body(("html",))
    assert html is not None
    assert (
        'To stop: <a href="mailto:monitor@example.org?subject=unsubscribe%20desk">write to '
        "monitor@example.org</a> with the subject &quot;unsubscribe desk&quot;.</p>"
    ) in str(html.get_content())
    digest_plain = digest.get_body(("plain",))
    assert digest_plain is not None
    assert "receives the alerts of the watchlists china-russia, taiwan (channel desk)." in str(
        digest_plain.get_content()
    ).replace("\r\n", "\n")


def test_a_configured_unsubscribe_page_is_linked(
    double: BotAPIDouble, smtp: SMTPTestServer, tmp_path: Path
) -> None:
    page = "https://example.org/stop?list={channel}&who={recipient}"
    notifier = _notifier(smtp, unsubscribe=page)

    async def scenario() -> None:
        try:
            await notifier.send(_alert(1, recipient="ali+news@example.org"))
        finally:
            await notifier.close()

    asyncio.run(scenario())
    (received,) = smtp.messages
    url = "https://example.org/stop?list=desk&who=ali%2Bnews@example.org"
    assert received.message["List-Unsubscribe"] == f"<{url}>"
    plain = received.message.get_body(("plain",))
    assert plain is not None
    assert f"To stop: open {url}." in str(plain.get_content())

    database = f"sqlite:///{tmp_path / 'monitor.db'}"
    with LoopbackServer() as feeds:
        for value, ok in ((page, True), ("http://example.org/stop", False), ("stop", False)):
            extra = f"email: {{host: 127.0.0.1, unsubscribe: '{value}'}}\n"
            if ok:
                write_config(tmp_path, database, double, feeds, extra=extra)
                continue
            with pytest.raises(ConfigError, match="expected a mailto: or https: URL"):
                write_config(tmp_path, database, double, feeds, extra=extra)
