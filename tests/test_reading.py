"""Alerts that read right (issue 12, point 4): the direction of an item's text follows its language
(Arabic, Persian, Hebrew, Urdu right to left) in Telegram and email, and digests are titled in
words. Through the service to the Bot API double and aiosmtpd, and on the renderers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from botapi import BotAPIDouble
from httpserver import LoopbackServer
from servicekit import DESK, make_due, running, serve, write_config
from smtpserver import SMTPTestServer

from monitor.core.direction import LRM, RLM, direction, line_mark
from monitor.core.email_render import render_alert
from monitor.core.telegram_html import alert_html, digest_html, plain_text
from monitor.model import Alert
from monitor.outbox import digest_title

CNN_TITLE = "CNN: بكين تحذر من خط أحمر في تايوان"
ARABIC_FEED = (
    '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
    "<language>ar</language>"
    "<item><guid>cnn-1</guid>"
    f"<title>{CNN_TITLE}</title><link>https://example.org/cnn-1</link>"
    "<pubDate>{published}</pubDate>"
    "<description>Reuters: قال وزير الخارجية إن قضية تايوان هي أول خط أحمر</description>"
    "</item></channel></rss>"
)


def _alert(title: str, body: str, language: str | None) -> Alert:
    return Alert(
        id=1,
        watchlist="taiwan",
        channel="desk",
        recipient="1",
        title=title,
        body=body,
        link="https://example.org/a",
        source="cnn",
        published=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        language=language,
    )


@pytest.mark.parametrize(
    ("language", "text", "expected"),
    [
        ("ar", "CNN: بكين تحذر", "rtl"),
        ("fa-IR", "BBC: تهران", "rtl"),
        ("he", "Reuters: ירושלים", "rtl"),
        ("ur", "AP: اسلام آباد", "rtl"),
        ("en", "«تايوان» is the first red line", "ltr"),
        (None, "«تايوان» هي أول خط أحمر", "rtl"),
        (None, "Taiwan", "ltr"),
    ],
)
def test_direction_follows_the_language_and_else_the_text(
    language: str | None, text: str, expected: str
) -> None:
    assert direction(language, text) == expected


def test_a_line_gets_a_mark_only_when_its_first_letter_disagrees_with_the_language() -> None:
    assert line_mark("ar", "CNN: بكين") == RLM
    assert line_mark("ar", "بكين: CNN") == ""
    assert line_mark("en", "«تايوان» is a red line") == LRM
    assert line_mark("en", "Taiwan") == ""
    assert line_mark(None, "CNN: بكين") == ""  # unknown language: the reader's own rule


def test_telegram_lines_of_an_arabic_item_run_right_to_left() -> None:
    arabic = plain_text(alert_html(_alert(CNN_TITLE, "Reuters: قضية تايوان", "ar"))).split("\n")
    assert arabic[1] == RLM + CNN_TITLE
    assert arabic[3] == RLM + "Reuters: قضية تايوان"
    english = plain_text(alert_html(_alert("«تايوان» is a red line", "Taiwan says no", "en")))
    assert english.split("\n")[1] == LRM + "«تايوان» is a red line"
    assert RLM not in english
    (digest,) = digest_html([_alert(CNN_TITLE, "Reuters: قضية تايوان", "ar")], "Digest")
    entry = plain_text(digest).split("\n")
    assert entry[3].startswith(RLM + "• " + CNN_TITLE)
    assert entry[4] == RLM + "  Reuters: قضية تايوان"


def test_email_blocks_take_the_direction_of_the_items_language() -> None:
    def html_of(alert: Alert) -> str:
        message = render_alert(alert, sender="m@example.org", to="r@example.org")
        part = message.get_body(("html",))
        assert part is not None
        return str(part.get_content())

    arabic = html_of(_alert(CNN_TITLE, "Reuters: قضية تايوان", "ar"))
    assert '<h2 dir="rtl"' in arabic and '<p dir="rtl"' in arabic
    english = html_of(_alert("«تايوان» is a red line", "Taiwan says no", "en"))
    assert '<h2 dir="ltr"' in english and '<p dir="ltr"' in english


def test_digest_titles_say_what_is_in_them() -> None:
    assert digest_title(["taiwan"]) == "Digest: 1 alert — taiwan"
    assert digest_title(["taiwan", "taiwan"]) == "Digest: 2 alerts — taiwan"
    assert digest_title(["a", "b", "b", "c", "d", "d", "d", "e"]) == (
        "Digest: 8 alerts — d (3), b (2), a (1), 2 more watchlists"
    )


# ---- through the service ---------------------------------------------------------------------


@pytest.fixture
def arabic_feed() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        published = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        serve(server, ARABIC_FEED.replace("{published}", published).encode())
        yield server


def test_an_arabic_item_reaches_telegram_and_email_right_to_left_with_digests_in_words(
    database_url: str,
    double: BotAPIDouble,
    arabic_feed: LoopbackServer,
    smtp: SMTPTestServer,
    tmp_path: Path,
) -> None:
    watchlists = (
        "watchlists:\n"
        "  taiwan: {query: 'تايوان', notify: [desk, morning]}\n"
        "channels:\n"
        f"  desk: {{type: telegram, chat_ids: [{DESK}]}}\n"
        "  morning: {type: email, to: [chief@example.org], digest: daily 08:00 Europe/London}\n"
        f"email: {{host: 127.0.0.1, port: {smtp.port}, starttls: false}}\n"
    )
    settings = write_config(tmp_path, database_url, double, arabic_feed, watchlists=watchlists)

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await service.poll_all()
            assert (await service.deliver_tick()).sent == 1  # Telegram now, email at 08:00
            make_due(settings)
            assert (await service.deliver_tick()).sent == 1

    asyncio.run(scenario())
    (alert,) = double.messages_to(DESK)
    lines = alert.plain.split("\n")
    assert lines[1] == RLM + CNN_TITLE
    assert lines[3].startswith(RLM + "Reuters: ")
    (mail,) = smtp.messages
    message = message_from_bytes(mail.data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == "Digest: 1 alert — taiwan"
    html = message.get_body(("html",))
    assert html is not None
    content = str(html.get_content())
    assert '<h3 dir="rtl"' in content and '<p dir="rtl"' in content
