"""Also in: the Telegram alerts sent for a story are edited to list the sources that join it later
(python-telegram-bot against the Bot API double, feeds on a loopback server, SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import pytest
from botapi import TOKEN, BotAPIDouble
from httpserver import LoopbackServer, require_corpus
from servicekit import (
    ALICE,
    DESK,
    WATCHLISTS,
    MonitorProcess,
    feed,
    make_due,
    outbox,
    running,
    say,
    sent_to,
    write_config,
)
from smtpserver import SMTPTestServer

from monitor.config import Settings
from monitor.daemon import Service
from monitor.edits import MAX_EDIT_ATTEMPTS, EditStats, MessageEditor
from monitor.errors import RateLimitedError
from monitor.feeds import parse_feed
from monitor.model import Alert
from monitor.notify.telegram import TelegramNotifier
from monitor.store import db
from monitor.store.message_edits import EditToMake, claim_due_edits, finish_edit
from monitor.store.subscribers import SUBSCRIBERS_CHANNEL, DeliveryState
from monitor.store.tables import alerts

REPORT = "Taiwan report"  # one wire report, carried word for word by each outlet
OUTLETS = ("wire", "bbc", "reuters")  # the feeds, in the order they carry it
RSS = {"Content-Type": "application/rss+xml"}


def serve(feeds: LoopbackServer, name: str, *titles: str) -> None:
    feeds.respond(f"/{name}.xml", body=feed(*titles), headers={"Content-Type": "text/xml"})


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str, double: BotAPIDouble, feeds: LoopbackServer
) -> Settings:
    """Three feeds; only the first carries the report so far. The desk channel and subscribers
    get the alerts."""
    serve(feeds, "wire", REPORT)
    for name in OUTLETS[1:]:
        serve(feeds, name)
    return write_config(tmp_path, database_url, double, feeds, feed_names=OUTLETS)


async def tick(service: Service) -> None:
    """A poll of every feed, then a delivery round."""
    await service.poll_all()
    await service.deliver_tick()


def make_edits_due(settings: Settings) -> None:
    """Every edit waiting out a back-off is due now."""
    engine = db.make_engine(settings.database.url)
    try:
        with db.transaction(engine) as session:
            session.execute(
                alerts.update()
                .where(alerts.c.edit_due_at.is_not(None))
                .values(edit_due_at=datetime.now(UTC))
            )
    finally:
        engine.dispose()


def test_a_delivered_alert_keeps_the_telegram_message_it_became(
    settings: Settings, double: BotAPIDouble
) -> None:
    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await tick(service)

    asyncio.run(scenario())
    [message] = double.messages_to(DESK)
    [alert] = outbox(settings)
    assert (alert.status, alert.message_chat_id, alert.message_id) == (
        "sent",
        DESK,
        message.message_id,
    )
    assert json.loads(alert.message_sources) == []


def test_each_later_source_is_added_to_the_alerts_sent_and_nothing_is_sent_again(
    settings: Settings, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await tick(service)
            for name in OUTLETS[1:]:
                serve(feeds, name, REPORT)
                await tick(service)
            await tick(service)  # nothing new: nothing to edit

    asyncio.run(scenario())
    [desk] = double.messages_to(DESK)
    alice = double.messages_to(ALICE)[-1]
    assert [len(sent_to(double, chat)) for chat in (DESK, ALICE)] == [1, 2]  # reply + alert
    assert "also in" not in desk.plain
    edits = double.edits
    assert sorted((e.chat_id, e.message_id) for e in edits) == sorted(
        [(DESK, desk.message_id), (ALICE, alice.message_id)] * 2
    )
    for chat, message in ((DESK, desk), (ALICE, alice)):
        first, second = [e for e in edits if e.chat_id == chat]
        assert first.plain == message.plain + "\nalso in: bbc"
        assert second.plain == message.plain + "\nalso in: bbc, reuters"
        assert second.buttons == message.buttons  # a subscriber keeps the alert's buttons
    assert alice.buttons != []
    assert {row.message_sources for row in outbox(settings)} == {'["bbc", "reuters"]'}


def test_a_muted_subscriber_keeps_the_mute_note_and_unmute_button_when_a_source_joins(
    settings: Settings, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    async def scenario() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await tick(service)
            alert = double.messages_to(ALICE)[-1]
            double.press_button(alert, "mute:taiwan-red-line")
            await double.edits_eventually(1)
            serve(feeds, "bbc", REPORT)
            await tick(service)

    asyncio.run(scenario())
    alert = double.messages_to(ALICE)[-1]
    muted, also = [e for e in double.edits if e.chat_id == ALICE]
    assert muted.plain is not None and also.plain is not None
    note = muted.plain.removeprefix(alert.plain)
    assert note.startswith("\n\n🔕 taiwan-red-line muted until ")
    assert also.plain == alert.plain + "\nalso in: bbc" + note
    assert also.buttons == muted.buttons == [("🔔 Unmute", "unmute:taiwan-red-line")]
    [desk] = [e for e in double.edits if e.chat_id == DESK]  # the desk has no buttons to keep
    assert desk.buttons == [] and "muted" not in (desk.plain or "")


def test_a_message_that_cannot_be_edited_stays_as_it_is_and_nothing_is_sent_instead(
    settings: Settings, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    double.fail(DESK, "bad_request", method="editMessageText")  # "message to edit not found"

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await tick(service)
            serve(feeds, "bbc", REPORT)
            await tick(service)
            make_edits_due(settings)
            await tick(service)
            serve(feeds, "reuters", REPORT)  # a later source does not try again either
            await tick(service)

    asyncio.run(scenario())
    assert len(sent_to(double, DESK)) == 1
    assert len(double.calls_of("editMessageText")) == 1
    assert double.edits == []
    [alert] = outbox(settings)
    assert (alert.status, alert.message_id, alert.edit_due_at) == ("sent", None, None)


def test_an_edit_waits_for_telegram_and_gives_up_quietly_after_a_few_tries(
    settings: Settings, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    """Each try of the edit is counted in /metrics by its outcome."""
    double.fail(DESK, "retry_after", retry_after=1, method="editMessageText")

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await tick(service)
            serve(feeds, "bbc", REPORT)
            asked = datetime.now(UTC)
            await tick(service)  # 429: the edit waits at least the second asked
            [alert] = outbox(settings)
            assert alert.edit_attempts == 1
            assert alert.edit_due_at >= asked + timedelta(seconds=1)
            make_edits_due(settings)
            await service.deliver_tick()
            assert [e.plain.endswith("also in: bbc") for e in double.edits] == [True]

            double.fail(DESK, "server_error", times=None, method="editMessageText")
            serve(feeds, "reuters", REPORT)
            await tick(service)
            for _ in range(MAX_EDIT_ATTEMPTS + 2):
                make_edits_due(settings)
                await service.deliver_tick()
            # /metrics: the 429 and the outage's tries but the last retried, then given up
            counted = {
                outcome: service.metrics.registry.get_sample_value(
                    "monitor_alert_edits_total", {"outcome": outcome}
                )
                for outcome in ("edited", "retried", "given_up", "dropped")
            }
            assert counted == {
                "edited": 1,
                "retried": MAX_EDIT_ATTEMPTS,
                "given_up": 1,
                "dropped": 0,
            }

    asyncio.run(scenario())
    assert len(sent_to(double, DESK)) == 1
    assert len(double.calls_of("editMessageText")) == 2 + MAX_EDIT_ATTEMPTS
    [alert] = outbox(settings)
    assert (alert.edit_due_at, alert.message_sources) == (None, '["bbc"]')


def test_an_editor_made_on_its_own_counts_what_it_drops_and_ends_its_thread(
    settings: Settings, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    """A `MessageEditor` without the outbox's database thread starts its own, and closing it
    (here: leaving `with`) ends it. A subscriber's edit it may not make is dropped and counted."""

    async def before() -> None:
        async with running(settings) as service:
            await say(double, ALICE, "/subscribe taiwan-red-line")
            await tick(service)
            serve(feeds, "bbc", REPORT)
            await service.poll_all()  # the edits are asked for, not made

    def no_subscriber(state: DeliveryState | None, watchlist: str) -> tuple[str, bool]:
        return "no access", True

    async def edit(editor: MessageEditor) -> EditStats:
        telegram = TelegramNotifier(
            TOKEN, double.api_url, subscriber_channels=(SUBSCRIBERS_CHANNEL,)
        )
        try:
            return await editor.edit_due({"desk": telegram, SUBSCRIBERS_CHANNEL: telegram})
        finally:
            await telegram.close()

    asyncio.run(before())
    engine = db.make_engine(settings.database.url)
    try:
        with MessageEditor(engine, owner="editor", refusal=no_subscriber) as editor:
            stats = asyncio.run(edit(editor))
            threads = [t for t in threading.enumerate() if t.name.startswith("edits-db")]
            assert len(threads) == 1
    finally:
        engine.dispose()
    threads[0].join(timeout=10)
    assert not threads[0].is_alive()
    assert stats == EditStats(edited=1, dropped=1)
    [desk] = double.messages_to(DESK)
    [made] = double.edits
    assert (made.chat_id, made.plain) == (DESK, desk.plain + "\nalso in: bbc")


def test_an_edit_asked_for_before_a_restart_is_made_after_it(
    settings: Settings, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    async def before() -> None:
        async with running(settings, bot=False) as service:
            await tick(service)
            serve(feeds, "bbc", REPORT)
            await service.poll_all()  # stopped before it delivered anything

    async def after() -> None:
        async with running(settings, bot=False) as service:
            await service.deliver_tick()

    asyncio.run(before())
    assert double.edits == []
    asyncio.run(after())
    [desk] = double.messages_to(DESK)
    [edit] = double.edits
    assert (edit.message_id, edit.plain) == (desk.message_id, desk.plain + "\nalso in: bbc")


def test_a_digest_lists_the_sources_of_a_story_on_one_entry(
    tmp_path: Path, database_url: str, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    for name in OUTLETS:
        serve(feeds, name)
    settings = write_config(
        tmp_path,
        database_url,
        double,
        feeds,
        watchlists=WATCHLISTS.replace(
            "chat_ids: [-100777]", "chat_ids: [-100777], digest: daily 07:30 UTC"
        ),
        feed_names=OUTLETS,
    )

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            for name in OUTLETS:  # one outlet after the other, before the digest's time
                serve(feeds, name, REPORT)
                await tick(service)
            make_due(settings)
            await service.deliver_tick()

    asyncio.run(scenario())
    [digest] = double.messages_to(DESK)
    entries = [line for line in digest.plain.splitlines() if line.startswith("• ")]
    assert [entry.split(" · ")[0] for entry in entries] == [f"• {REPORT} — wire, bbc, reuters"]
    assert double.calls_of("editMessageText") == []
    [alert] = outbox(settings)
    assert (alert.status, alert.message_id, alert.edit_due_at) == ("sent", None, None)


def test_an_email_sent_is_not_sent_again_when_more_sources_join(
    tmp_path: Path,
    database_url: str,
    double: BotAPIDouble,
    feeds: LoopbackServer,
    smtp: SMTPTestServer,
) -> None:
    serve(feeds, "wire", REPORT)
    serve(feeds, "bbc")
    watchlists = (
        WATCHLISTS.replace("notify: [desk]", "notify: [desk, mail]")
        + "  mail: {type: email, to: [desk@example.org]}\n"
        + f"email: {{host: 127.0.0.1, port: {smtp.port}, starttls: false}}\n"
    )
    settings = write_config(
        tmp_path, database_url, double, feeds, watchlists=watchlists, feed_names=OUTLETS[:2]
    )

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await tick(service)
            serve(feeds, "bbc", REPORT)
            await tick(service)

    asyncio.run(scenario())
    assert len(smtp.messages) == 1
    [edit] = double.edits
    assert edit.plain is not None and edit.plain.endswith("also in: bbc")


def test_one_process_edits_a_message_at_a_time_and_a_source_joining_meanwhile_is_not_lost(
    settings: Settings, feeds: LoopbackServer
) -> None:
    lease = timedelta(minutes=5)
    engine = db.make_engine(settings.database.url)

    def claim(owner: str) -> list[EditToMake]:
        with db.transaction(engine) as session:
            return claim_due_edits(session, owner, lease, 10, channels=["desk"])

    def finish(edit: EditToMake, owner: str) -> bool:
        with db.transaction(engine) as session:
            return finish_edit(session, edit, owner, edit.alert.other_feeds)

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await tick(service)  # the alert goes out
            serve(feeds, "bbc", REPORT)
            await service.poll_all()  # an edit is asked for; two replicas go for it
            [first] = claim("replica-1")
            assert (first.shown, first.alert.other_feeds) == ((), ("bbc",))
            assert claim("replica-2") == []  # leased: nobody else edits that message
            serve(feeds, "reuters", REPORT)
            await service.poll_all()  # joins while replica-1 edits
            assert finish(first, "replica-1")
            [second] = claim("replica-2")  # due again: the message lacks reuters
            assert (second.shown, second.alert.other_feeds) == (("bbc",), ("bbc", "reuters"))
            assert not finish(second, "replica-1")  # not its lease
            assert finish(second, "replica-2")
            assert claim("replica-1") == []

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()


def test_monitor_once_says_how_many_messages_it_edited(
    settings: Settings, tmp_path: Path, feeds: LoopbackServer
) -> None:
    # Real processes: `monitor once` sets up logging, which must not leak into other tests.
    config = tmp_path / "config.yaml"
    with MonitorProcess(config, "once") as first:
        assert first.wait(timeout=600) == 0
    serve(feeds, "bbc", REPORT)
    with MonitorProcess(config, "once") as second:
        assert second.wait(timeout=600) == 0
    summary = " ".join(" ".join(second.lines).split())
    assert (
        "1 new and 0 updated items; 0 alerts queued, 0 sent; "
        "1 sent before edited to list new sources" in summary
    )


def test_an_edit_made_again_after_its_record_was_lost_is_taken_as_done(
    settings: Settings, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    def forget_the_edit() -> None:  # as if the process died between the edit and its record
        engine = db.make_engine(settings.database.url)
        try:
            with db.transaction(engine) as session:
                session.execute(
                    alerts.update().values(message_sources="[]", edit_due_at=datetime.now(UTC))
                )
        finally:
            engine.dispose()

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await tick(service)
            serve(feeds, "bbc", REPORT)
            await tick(service)
            forget_the_edit()
            stats = await service.deliver_tick()  # Telegram: "message is not modified"
            assert stats.edited == 1
            await service.deliver_tick()

    asyncio.run(scenario())
    assert len(sent_to(double, DESK)) == 1
    assert len(double.calls_of("editMessageText")) == 2
    assert len(double.edits) == 1
    [alert] = outbox(settings)
    assert (alert.message_sources, alert.edit_due_at) == ('["bbc"]', None)


def test_an_edit_waits_for_the_chats_send_slot_like_a_message(double: BotAPIDouble) -> None:
    now = [1000.0]
    notifier = TelegramNotifier(TOKEN, double.api_url, max_wait=0.0, clock=lambda: now[0])
    alert = Alert(
        id=1,
        watchlist="taiwan-red-line",
        channel="desk",
        recipient=str(DESK),
        title=REPORT,
        body="Taiwan is the first red line.",
        link="https://example.org/r",
        source="wire",
        published=datetime(2026, 12, 4, 9, 0, tzinfo=UTC),
    )

    async def scenario() -> None:
        try:
            message = await notifier.send(alert)
            later = replace(alert, other_sources=("bbc",))
            with pytest.raises(RateLimitedError) as held:  # the chat had its message this second
                await notifier.edit(later, message)
            assert held.value.retry_after is not None and held.value.retry_after > 0
            assert double.calls_of("editMessageText") == []
            now[0] += held.value.retry_after
            await notifier.edit(later, message)
        finally:
            await notifier.close()

    asyncio.run(scenario())
    [edit] = double.edits
    assert edit.plain is not None and edit.plain.endswith("also in: bbc")


# One wire story as three outlets' feeds carried it: a headline and a sentence each (2026-02-17).
JESSE_JACKSON = {
    "abc": (
        "https://www.abc.net.au/news/2026-02-17/civil-rghts-leader-jesse-jackson-dies-age-84/106356528",
        "Civil rights leader Jesse Jackson dies, aged 84",
        "Jesse Jackson was America's pre-eminent civil rights figure for decades.",
    ),
    "bbc": (
        "https://www.bbc.com/news/articles/cp81l0e1eg5o?at_medium=RSS&at_campaign=rss",
        "US civil rights leader Jesse Jackson dies aged 84",
        "Tributes poured in from politicians who described Jackson as an agent of change and "
        "transformative leader.",
    ),
    "japantoday": (
        "https://japantoday.com/category/world/jesse-jackson-civil-rights-leader-and-us-presidential-hopeful-dies-at-84",
        "Jesse Jackson, civil rights leader and U.S. presidential hopeful, dies at 84",
        "Charismatic U.S. civil rights leader Jesse Jackson, an eloquent Baptist minister raised "
        "in the segregated South who became a close associate of Martin Luther King Jr and twice…",
    ),
}


def short_items_feed(*items: tuple[str, str, str]) -> bytes:
    """An RSS feed of (link, title, description) items, published now."""
    published = format_datetime(datetime.now(UTC))
    entries = "".join(
        f"<item><guid>{xml_escape(link)}</guid><title>{xml_escape(title)}</title>"
        f"<link>{xml_escape(link)}</link><pubDate>{published}</pubDate>"
        f"<description>{xml_escape(text)}</description></item>"
        for link, title, text in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"{entries}</channel></rss>"
    ).encode()


def test_one_wire_story_in_three_short_item_feeds_alerts_once_and_adds_each_source(
    tmp_path: Path, database_url: str, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    """Three outlets carry one wire story under three headlines, each with a sentence of its own:
    too little text to compare, but their headlines and leads tell the same news. The desk hears
    of it once, and its message lists each outlet as its item arrives."""
    for name in JESSE_JACKSON:
        feeds.respond(f"/{name}.xml", body=short_items_feed(), headers=RSS)
    feeds.respond("/abc.xml", body=short_items_feed(JESSE_JACKSON["abc"]), headers=RSS)
    watchlists = (
        "watchlists:\n"
        "  jackson: {query: '\"Jesse Jackson\"', notify: [desk]}\n"
        f"channels:\n  desk: {{type: telegram, chat_ids: [{DESK}]}}\n"
    )
    settings = write_config(
        tmp_path, database_url, double, feeds, watchlists=watchlists, feed_names=list(JESSE_JACKSON)
    )

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await tick(service)
            for name in ("bbc", "japantoday"):
                feeds.respond(
                    f"/{name}.xml", body=short_items_feed(JESSE_JACKSON[name]), headers=RSS
                )
                await tick(service)
            await tick(service)

    asyncio.run(scenario())
    [message] = double.messages_to(DESK)
    assert "Civil rights leader Jesse Jackson dies, aged 84" in message.plain
    assert [edit.plain for edit in double.edits] == [
        message.plain + "\nalso in: bbc",
        message.plain + "\nalso in: bbc, japantoday",
    ]
    assert len(outbox(settings)) == 1


# The US-Iran talks of 2026-02-17 in the real feeds: NPR's preview in the morning, then three
# outlets' reports of what the talks agreed, each in words of its own.
IRAN_TALKS_PREVIEW = (
    "https://www.npr.org/2026/02/17/nx-s1-5716107/iran-us-nuclear-talks-geneva",
    "US and Iran to meet for second round of nuclear talks",
    "Representatives for the U.S. and Iran will meet in Geneva Tuesday for a second round of "
    "nuclear talks as the U.S. builds up military forces in the region.",
)
IRAN_TALKS_AGREED = {
    "ndtv": (
        "https://www.ndtv.com/world-news/iran-us-agree-on-guiding-principles-for-deal-11046474",
        "'Agreed On Guiding Principles For Deal': Iran On US Nuclear Talks",
        'Iran and the United States agreed to "a set of guiding principles" laying the groundwork '
        "for a broader deal during talks in Geneva on Tuesday, Tehran's top diplomat said, after "
        "the leaders of both countries traded warnings of military action.",
    ),
    "aljazeera": (
        "https://www.aljazeera.com/news/2026/2/17/us-and-iran-reach-guiding-principles-in-geneva",
        "US and Iran reach \u2018guiding principles\u2019 in Geneva nuclear talks",
        "The US and Iran reached an understanding on key \u201cguiding principles\u201d at "
        "indirect nuclear talks in Geneva.",
    ),
    "bbc": (
        "https://www.bbc.com/news/articles/c4g2e1x9ejxo?at_medium=RSS&at_campaign=rss",
        "Iran says 'guiding principles' agreed with US at nuclear talks",
        "Tehran also says more work is needed to get a deal - the US is yet to comment on the "
        "issue.",
    ),
}


def test_one_event_in_three_short_item_feeds_alerts_once_and_the_preview_before_it_alerts_too(
    tmp_path: Path, database_url: str, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    """Three outlets report what the talks agreed, each in its own words: one alert, edited to
    add each outlet. The preview of the talks that morning shares their subject (Iran, the US,
    nuclear talks) but no name or rare word of the outcome: it is news of its own and alerted
    before, and the outcome alerts as well."""
    names = ["npr", *IRAN_TALKS_AGREED]
    for name in names:
        feeds.respond(f"/{name}.xml", body=short_items_feed(), headers=RSS)
    feeds.respond("/npr.xml", body=short_items_feed(IRAN_TALKS_PREVIEW), headers=RSS)
    watchlists = (
        "watchlists:\n"
        "  iran: {query: 'Iran AND nuclear', notify: [desk]}\n"
        f"channels:\n  desk: {{type: telegram, chat_ids: [{DESK}]}}\n"
    )
    settings = write_config(
        tmp_path, database_url, double, feeds, watchlists=watchlists, feed_names=names
    )

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await tick(service)
            for name, item in IRAN_TALKS_AGREED.items():
                feeds.respond(f"/{name}.xml", body=short_items_feed(item), headers=RSS)
                await tick(service)
            await tick(service)

    asyncio.run(scenario())
    preview, agreed = double.messages_to(DESK)
    assert "US and Iran to meet for second round of nuclear talks" in preview.plain
    assert "'Agreed On Guiding Principles For Deal'" in agreed.plain
    assert [edit.plain for edit in double.edits] == [
        agreed.plain + "\nalso in: aljazeera",
        agreed.plain + "\nalso in: aljazeera, bbc",
    ]
    assert len(outbox(settings)) == 2


def corpus_feed_item(feed: str, title: str) -> tuple[str, str, str]:
    """The (link, title, text) of the item of a real feed of the corpus (2026-02-17) with this
    headline, as the feed carried it."""
    [path] = (require_corpus() / "feeds" / "real" / "fastfeedparser").glob(f"{feed}__*")
    parsed = parse_feed(path.read_bytes(), fetched_at=datetime(2026, 2, 18, tzinfo=UTC))
    [item] = [a for a in parsed.articles if a.title == title]
    return item.link or "", item.title, item.body


def test_a_short_item_and_an_article_of_another_outlet_telling_the_same_alert_once(
    tmp_path: Path, database_url: str, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    """Japan Today carries a headline and a sentence of the Bondi hearing; Dawn, hours later,
    the full article of the same wire report under a headline of its own: too little text in
    common for a fingerprint, but the headlines and leads tell the same. One alert, then "also
    in: dawn"."""
    japantoday = corpus_feed_item(
        "japantoday_world",
        "Accused Bondi Beach killer Naveed Akram appears in court by video link",
    )
    dawn = corpus_feed_item(
        "dawn_world", "Accused Bondi killer Naveed Akram appears in court by video link"
    )
    for name in ("japantoday", "dawn"):
        feeds.respond(f"/{name}.xml", body=short_items_feed(), headers=RSS)
    feeds.respond("/japantoday.xml", body=short_items_feed(japantoday), headers=RSS)
    watchlists = (
        "watchlists:\n"
        "  bondi: {query: 'Akram', notify: [desk]}\n"
        f"channels:\n  desk: {{type: telegram, chat_ids: [{DESK}]}}\n"
    )
    settings = write_config(
        tmp_path,
        database_url,
        double,
        feeds,
        watchlists=watchlists,
        feed_names=["japantoday", "dawn"],
    )

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            await tick(service)
            feeds.respond("/dawn.xml", body=short_items_feed(dawn), headers=RSS)
            await tick(service)
            await tick(service)

    asyncio.run(scenario())
    [message] = double.messages_to(DESK)
    assert japantoday[1] in message.plain
    assert [edit.plain for edit in double.edits] == [message.plain + "\nalso in: dawn"]
    assert len(outbox(settings)) == 1


def test_a_headline_of_another_event_over_a_lead_of_this_one_stays_apart(
    tmp_path: Path, database_url: str, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    """Dawn, NDTV and Al Jazeera report the guiding principles agreed at the US-Iran talks;
    ABC Australia reports that Iran closed the Strait of Hormuz during the talks, under a
    sentence on the principles. It shares a name and the subject's words with NDTV's item, but
    tells another event than most of the story's items: a story of its own, and an alert."""
    agreed = {
        "dawn": corpus_feed_item(
            "dawn_world", "Iran FM says agreed with US \u2018on guiding principles\u2019 for deal"
        ),
        "ndtv": corpus_feed_item(
            "ndtv_search", "'Agreed On Guiding Principles For Deal': Iran On US Nuclear Talks"
        ),
        "aljazeera": corpus_feed_item(
            "aljazeera_english",
            "US and Iran reach \u2018guiding principles\u2019 in Geneva nuclear talks",
        ),
    }
    hormuz = corpus_feed_item(
        "abc_net_au_top", "Iran announces closure of vital shipping route during US nuclear talks"
    )
    names = [*agreed, "abc"]
    for name in names:
        feeds.respond(f"/{name}.xml", body=short_items_feed(), headers=RSS)
    watchlists = (
        "watchlists:\n"
        "  iran: {query: 'Iran', notify: [desk]}\n"
        f"channels:\n  desk: {{type: telegram, chat_ids: [{DESK}]}}\n"
    )
    settings = write_config(
        tmp_path, database_url, double, feeds, watchlists=watchlists, feed_names=names
    )

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            for name, item in agreed.items():
                feeds.respond(f"/{name}.xml", body=short_items_feed(item), headers=RSS)
                await tick(service)
            feeds.respond("/abc.xml", body=short_items_feed(hormuz), headers=RSS)
            await tick(service)
            await tick(service)

    asyncio.run(scenario())
    principles, closure = double.messages_to(DESK)
    assert agreed["dawn"][1] in principles.plain
    assert hormuz[1] in closure.plain
    assert [edit.plain for edit in double.edits] == [
        principles.plain + "\nalso in: ndtv",
        principles.plain + "\nalso in: aljazeera, ndtv",
    ]
    assert len(outbox(settings)) == 2


def test_a_later_item_finds_its_story_by_the_headline_of_an_item_that_joined_it(
    tmp_path: Path, database_url: str, double: BotAPIDouble, feeds: LoopbackServer
) -> None:
    """Al Jazeera reports Peru's impeachment of President Jeri; Japan Today's report of it joins
    that story. DW's "Peru ousts interim president over corruption probe" shares two title words
    with Al Jazeera's headline, too few to find its story by that headline, but five with Japan
    Today's, which the story indexed when Japan Today's item joined it: one alert."""
    reports = {
        "aljazeera": corpus_feed_item(
            "aljazeera_english",
            "Peru\u2019s Congress votes to impeach President Jose Jeri in government shake-up",
        ),
        "japantoday": corpus_feed_item(
            "japantoday_world",
            "Peru's Congress removes interim President Jer\u00ed as he faces a corruption probe",
        ),
        "dw": corpus_feed_item(
            "dw_english_all_rdf", "Peru ousts interim president over corruption probe"
        ),
    }
    for name in reports:
        feeds.respond(f"/{name}.xml", body=short_items_feed(), headers=RSS)
    watchlists = (
        "watchlists:\n"
        "  peru: {query: 'Peru', notify: [desk]}\n"
        f"channels:\n  desk: {{type: telegram, chat_ids: [{DESK}]}}\n"
    )
    settings = write_config(
        tmp_path, database_url, double, feeds, watchlists=watchlists, feed_names=list(reports)
    )

    async def scenario() -> None:
        async with running(settings, bot=False) as service:
            for name, item in reports.items():
                feeds.respond(f"/{name}.xml", body=short_items_feed(item), headers=RSS)
                await tick(service)
            await tick(service)

    asyncio.run(scenario())
    [message] = double.messages_to(DESK)
    assert reports["aljazeera"][1] in message.plain
    assert [edit.plain for edit in double.edits] == [
        message.plain + "\nalso in: japantoday",
        message.plain + "\nalso in: dw, japantoday",
    ]
    assert len(outbox(settings)) == 1
