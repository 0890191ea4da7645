"""Replicas of `monitor run` as real processes on PostgreSQL, with the Bot API double and a local
feed server: one leader polls Telegram at a time, and the role moves on when the leader dies or
loses its database; every replica stops cleanly on SIGTERM, whatever its role."""

from __future__ import annotations

import asyncio
import itertools
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from botapi import TOKEN, BotAPIDouble
from httpserver import LoopbackServer
from replicas import Cluster, TcpProxy, eventually, skewed_clock, through
from sqlalchemy import Engine, text
from sqlalchemy.exc import ProgrammingError

from monitor.store.db import make_engine, read_session
from monitor.store.leadership import holder_of

DESK = -100777
HANDOVER_SECONDS = 10.0  # the longest a bot may go without a leader polling for it

FEED = (
    b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
    b"<item><guid>weather-1</guid><title>Sunny spells</title>"
    b"<description>Weather for the week ahead</description></item></channel></rss>"
)


@pytest.fixture
def feed_url() -> Iterator[str]:
    with LoopbackServer() as server:
        server.respond("/a.xml", body=FEED, headers={"Content-Type": "application/rss+xml"})
        yield server.url("/a.xml")


def bot_config(feed_url: str) -> Callable[[str, str, str], str]:
    def config(name: str, api_url: str, listen: str) -> str:
        return textwrap.dedent(
            f"""
            database: {{url: "{{database_url}}"}}
            fetch: {{allow_private: true}}
            service: {{listen: "{listen}", lease: 5s}}
            feeds:
              - {{name: a, url: '{feed_url}'}}
            watchlists:
              taiwan: {{query: "Taiwan", notify: [desk]}}
            channels:
              desk: {{type: telegram, chat_ids: [{DESK}]}}
            telegram:
              token: "{TOKEN}"
              api_url: "{api_url}"
              subscriptions: open
            """
        )

    return config


@pytest.fixture
def cluster(
    tmp_path: Path, postgresql_url: str, double: BotAPIDouble, feed_url: str
) -> Iterator[Cluster]:
    with Cluster(tmp_path, postgresql_url, bot_config(feed_url), double.api_url_for) as replicas:
        yield replicas


def wait_for_poller(double: BotAPIDouble, since: float, *, other_than: str = "") -> str:
    """Block until a replica (other than `other_than`) starts polling after `since`; its name."""
    double.wait_for(
        lambda d: any(p.start > since and p.client != other_than for p in d.polls),
        timeout=120,  # replicas start slowly on a busy machine; the handover time is checked apart
    )
    return next(p.client for p in double.polls if p.start > since and p.client != other_than)


def longest_gap(double: BotAPIDouble, since: float) -> float:
    """The longest time since `since` during which no getUpdates request was open: how long the
    bot went without a poller."""
    now = time.monotonic()
    spans = sorted((p.start, now if p.end is None else p.end) for p in double.polls)
    gap, covered = 0.0, since
    for start, end in spans:
        if end <= covered:
            continue
        gap = max(gap, start - covered)
        covered = end
    return max(gap, now - covered)


def assert_clean_stops(cluster: Cluster) -> None:
    """SIGTERM every replica still running: each exits 0 without a traceback."""
    codes = cluster.stop()
    for name, code in codes.items():
        output = cluster.replicas[name].output()
        assert code == 0, f"{name} exited {code}:\n{output}"
        assert "Traceback" not in output, output
        assert "run.stopped" in output


def test_fault_71_the_leader_killed_hands_over_within_ten_seconds(
    cluster: Cluster, double: BotAPIDouble
) -> None:
    for name in ("r1", "r2", "r3"):
        cluster.start(name)
    leader = wait_for_poller(double, 0.0)
    killed_at = time.monotonic()
    cluster.replicas[leader].kill()

    successor = wait_for_poller(double, killed_at, other_than=leader)
    assert longest_gap(double, killed_at) < HANDOVER_SECONDS
    # The new leader answers commands; nobody else ever polled with it.
    double.send_command("/help", chat_id=1001)
    double.wait_for_messages(1, chat_id=1001)
    assert double.overlapping_polls() == []
    assert {p.client for p in double.polls} == {leader, successor}
    assert_clean_stops(cluster)


def test_fault_71_a_terminated_database_connection_leaves_one_leader_and_never_two_pollers(
    cluster: Cluster, double: BotAPIDouble, postgresql_url: str
) -> None:
    for name in ("r1", "r2", "r3"):
        cluster.start(name)
    leader = wait_for_poller(double, 0.0)
    engine = make_engine(postgresql_url)
    try:
        with engine.connect() as connection:
            terminated = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": f"monitor {cluster.replicas[leader].owner}"},
            ).scalar_one()
        assert terminated >= 1
        cut_at = time.monotonic()
        # Polling goes on, by one replica; the lease row names a live one.
        now_polling = wait_for_poller(double, cut_at)
        assert longest_gap(double, cut_at) < HANDOVER_SECONDS
        with read_session(engine) as session:
            held = holder_of(session, "leader")
        assert held is not None and not held.expired
        assert cluster.by_owner(held.holder).name == now_polling
    finally:
        engine.dispose()
    double.send_command("/help", chat_id=1001)
    double.wait_for_messages(1, chat_id=1001)
    assert double.overlapping_polls() == []
    assert_clean_stops(cluster)


def test_fault_71_a_leader_cut_off_from_the_database_stops_polling_before_another_takes_over(
    cluster: Cluster, double: BotAPIDouble, postgresql_url: str
) -> None:
    with TcpProxy.to(postgresql_url) as proxy:
        first = cluster.start("r1", database_url=through(proxy, postgresql_url))
        assert wait_for_poller(double, 0.0) == "r1"
        cluster.start("r2")
        cluster.start("r3")
        # The standbys are up (they poll feeds) before the leader loses the database.
        engine = make_engine(postgresql_url)
        try:
            eventually(lambda: _connected(engine, cluster, "r2", "r3"), "the standbys connected")
        finally:
            engine.dispose()
        cut_at = time.monotonic()
        proxy.cut()
        successor = wait_for_poller(double, cut_at, other_than="r1")
        started = min(p.start for p in double.polls if p.client == successor)
        assert longest_gap(double, cut_at) < HANDOVER_SECONDS
        # r1 stopped its own polling first: never two getUpdates loops at once.
        assert double.overlapping_polls() == []
        assert max(p.end or 0.0 for p in double.polls if p.client == "r1") < started
        assert "leader.lost" in first.output()
        assert_clean_stops(cluster)


def _connected(engine: Engine, cluster: Cluster, *names: str) -> bool:
    wanted = {f"monitor {cluster.replicas[n].owner}" for n in names}
    with engine.connect() as connection:
        found = set(
            connection.execute(text("SELECT application_name FROM pg_stat_activity")).scalars()
        )
    return wanted <= found


# ---- sharing the work -------------------------------------------------------------------------

TOPICS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")  # one watchlist and chat each


def chat_of(topic: str) -> int:
    return 2001 + TOPICS.index(topic)


def story_feed(i: int) -> bytes:
    """Feed i: one item, matching the watchlist of topic i % 6 (published now: news, not backlog)."""
    now = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>f{i}</title>'
        f"<item><guid>story-{i}</guid><title>Story {i} {TOPICS[i % len(TOPICS)]}</title>"
        f"<link>https://example.org/story-{i}</link><pubDate>{now}</pubDate>"
        f"<description>Report number {i} about {TOPICS[i % len(TOPICS)]}</description>"
        "</item></channel></rss>"
    ).encode()


GATE_SECONDS = 110.0  # below the 120 s fetch timeout of the test that gates feeds
EMPTY_FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'


class StoryFeeds:
    """`count` feeds on a loopback server, each with one story; those in `gated` answer only once
    `open()` is called. With `withheld`, the feeds are empty until `publish()`. Every request's
    arrival is recorded (path, monotonic time)."""

    def __init__(
        self, server: LoopbackServer, count: int, gated: range = range(0), withheld: bool = False
    ) -> None:
        self.server = server
        self.count = count
        self.gate = threading.Event()
        self.published = threading.Event()
        if not withheld:
            self.published.set()
        self.arrivals: list[tuple[str, float]] = []
        for i in range(count):
            server.route(f"/f{i}.xml", self._handler(i, gated=i in gated))

    def _handler(self, i: int, *, gated: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            self.arrivals.append((request.path, time.monotonic()))
            # Gated polls wait on the server's loop, not in its few worker threads: twelve of
            # them must all still be waiting however long a busy machine takes to start the
            # other replicas (until the client's own fetch deadline).
            deadline = time.monotonic() + GATE_SECONDS
            while gated and not self.gate.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            body = story_feed(i) if self.published.is_set() else EMPTY_FEED
            return web.Response(body=body, headers={"Content-Type": "application/rss+xml"})

        return handle

    def open(self) -> None:
        self.gate.set()

    def publish(self) -> None:
        self.published.set()

    def config(
        self, *, lease: str = "5s", timeout: str = "20s", per_host: int = 2
    ) -> Callable[[str, str, str], str]:
        feeds = "\n".join(
            f"  - {{name: f{i}, url: '{self.server.url(f'/f{i}.xml')}'}}" for i in range(self.count)
        )
        watchlists = "\n".join(f"  {t}: {{query: {t}, notify: [{t}]}}" for t in TOPICS)
        channels = "\n".join(f"  {t}: {{type: telegram, chat_ids: [{chat_of(t)}]}}" for t in TOPICS)

        def config(name: str, api_url: str, listen: str) -> str:
            return (
                'database: {url: "{database_url}"}\n'
                f"fetch: {{allow_private: true, per_host: {per_host}}}\n"
                f"defaults: {{timeout: {timeout}}}\n"
                f'service: {{listen: "{listen}", lease: {lease}}}\n'
                f"feeds:\n{feeds}\nwatchlists:\n{watchlists}\nchannels:\n{channels}\n"
                f'telegram: {{token: "{TOKEN}", api_url: "{api_url}", subscriptions: "off"}}\n'
            )

        return config


def titles(double: BotAPIDouble) -> Counter[str]:
    return Counter(m.plain.splitlines()[1] for m in double.messages)


def test_three_replicas_deliver_every_alert_once(
    tmp_path: Path, postgresql_url: str, double: BotAPIDouble
) -> None:
    with LoopbackServer() as server:
        feeds = StoryFeeds(server, 60)
        # A lease that outlives a poll queued behind the host's other requests on a busy machine:
        # "polled once" is about sharing the work, not about how fast leases are renewed.
        config = feeds.config(lease="15s", per_host=6)
        with Cluster(tmp_path, postgresql_url, config, double.api_url_for) as cluster:
            for name in ("r1", "r2", "r3"):
                cluster.start(name)
            double.wait_for_messages(60, timeout=120)
            assert titles(double) == Counter({f"Story {i} {TOPICS[i % 6]}": 1 for i in range(60)})
            assert len([path for path, _ in feeds.arrivals]) == 60  # each feed polled once
            for topic in TOPICS:
                assert len(double.messages_to(chat_of(topic))) == 10
            assert_clean_stops(cluster)


def test_a_replica_killed_mid_run_loses_and_repeats_nothing(
    tmp_path: Path, postgresql_url: str, double: BotAPIDouble
) -> None:
    """r1 dies holding feed leases (polls waiting for their server) and alert leases (sends
    waiting for Telegram): the others take both over one lease (15 s) later. The lease is long
    enough that r1 keeps renewing it on a busy machine until it is killed."""
    lease = 15.0
    for topic in TOPICS:  # sendMessage hangs: whoever claims an alert holds its lease
        double.fail(chat_of(topic), "hang", times=None)
    with LoopbackServer() as server:
        feeds = StoryFeeds(server, 24, gated=range(12, 24))
        # r1's twelve gated polls must all be waiting at the server when it is killed, however
        # slowly a busy machine lets it get there: as many connections to the feed server as
        # feeds, and a fetch deadline that outlasts the test's set-up.
        config = feeds.config(lease="15s", timeout="120s", per_host=24)
        with Cluster(tmp_path, postgresql_url, config, double.api_url_for) as cluster:
            victim = cluster.start("r1")
            eventually(lambda: "run.started" in victim.output(), "r1 has started")
            engine = make_engine(postgresql_url)
            try:
                held = eventually(
                    lambda: (
                        _polls_recorded(engine) == 12
                        and _leases_of(engine, victim.owner, feeds=12, alerts=1)
                    ),
                    "r1 polled the open feeds and holds the gated ones and an alert",
                )
                cluster.start("r2")
                cluster.start("r3")
                eventually(lambda: _connected(engine, cluster, "r2", "r3"), "r2 and r3 are up")
            finally:
                engine.dispose()
            killed_at = time.monotonic()
            victim.kill()
            double.clear_faults()
            double.release()
            feeds.open()

            double.wait_for_messages(24, timeout=120)
            assert titles(double) == Counter({f"Story {i} {TOPICS[i % 6]}": 1 for i in range(24)})
            assert "r1" not in {m.client for m in double.messages}
            # The gated feeds were fetched again by the others once r1's lease ran out…
            again = [at for path, at in feeds.arrivals if at > killed_at]
            assert len(again) == 12
            # A lease, then a poll tick; slack for a busy machine, far below the 10-minute interval.
            assert min(again) - killed_at < lease + 10.0
            # …and r1's alerts were sent by them as soon as their leases ran out too.
            taken_over = [m.at for m in double.messages if m.plain.splitlines()[1] in held]
            assert taken_over and min(taken_over) - killed_at < lease + 10.0
            assert_clean_stops(cluster)


def _leases_of(engine: Engine, owner: str, *, feeds: int, alerts: int) -> set[str] | None:
    """The titles of the alerts `owner` holds, once it holds at least `feeds` feed leases and
    `alerts` alert leases."""
    with engine.connect() as connection:
        held_feeds = connection.execute(
            text("SELECT count(*) FROM feeds WHERE lease_owner = :o"), {"o": owner}
        ).scalar_one()
        held_titles = set(
            connection.execute(
                text(
                    "SELECT i.title FROM alerts a JOIN items i ON i.id = a.item_id "
                    "WHERE a.lease_owner = :o AND a.status = 'pending'"
                ),
                {"o": owner},
            ).scalars()
        )
    return held_titles if held_feeds >= feeds and len(held_titles) >= alerts else None


# ---- one clock --------------------------------------------------------------------------------


def test_fault_70_a_replica_whose_clock_runs_30_s_ahead_polls_on_schedule(
    tmp_path: Path, postgresql_url: str, double: BotAPIDouble
) -> None:
    """Its polls are timed by the database's clock: each 10-minute feed is polled once, a feed
    made due 6 s later is polled then and not before, its alert is due at once."""
    with LoopbackServer() as server:
        feeds = StoryFeeds(server, 2)
        with Cluster(tmp_path, postgresql_url, feeds.config(), double.api_url_for) as cluster:
            ahead = cluster.start("r1", env=skewed_clock(30))
            engine = make_engine(postgresql_url)
            try:
                eventually(lambda: _polls_recorded(engine) == 2, "both feeds polled once")
                with engine.begin() as connection:
                    polled = connection.execute(
                        text(
                            "SELECT name, last_polled_at, next_poll_at, clock_timestamp() AS now "
                            "FROM feeds ORDER BY name"
                        )
                    ).all()
                    # f1 is due again in 6 s, by the database's clock.
                    connection.execute(
                        text(
                            "UPDATE feeds SET next_poll_at = clock_timestamp() + interval '6 s' "
                            "WHERE name = 'f1'"
                        )
                    )
                    made_due_at = time.monotonic()
                    alerts_due = connection.execute(
                        text("SELECT bool_and(next_attempt_at <= clock_timestamp()) FROM alerts")
                    ).scalar_one()
            finally:
                engine.dispose()
            eventually(lambda: len(feeds.arrivals) == 3, "f1 polled again", timeout=20)
            assert [path for path, _ in feeds.arrivals].count("/f0.xml") == 1
            assert feeds.arrivals[-1][0] == "/f1.xml"
            assert feeds.arrivals[-1][1] - made_due_at > 5.5  # not before it was due
            for row in polled:
                # Not in the future, as a poll timed by a host 30 s ahead would be (however
                # late a busy machine let the test read it).
                assert (row.last_polled_at - row.now).total_seconds() <= 1
                assert 600 <= (row.next_poll_at - row.last_polled_at).total_seconds() <= 660
            assert alerts_due
            assert "Traceback" not in ahead.output()
            assert_clean_stops(cluster)


def _polls_recorded(engine: Engine) -> int:
    """How many feeds have a poll recorded (and no poll under way)."""
    with engine.connect() as connection:
        try:
            return int(
                connection.execute(
                    text(
                        "SELECT count(*) FROM feeds "
                        "WHERE last_polled_at IS NOT NULL AND lease_owner IS NULL"
                    )
                ).scalar_one()
            )
        except ProgrammingError:  # no schema yet
            return 0


# ---- Telegram's limits, shared ----------------------------------------------------------------


def test_three_replicas_sending_to_one_chat_stay_at_one_message_a_second(
    tmp_path: Path, postgresql_url: str, double: BotAPIDouble
) -> None:
    """Fifteen stories for one chat, found by three replicas at about the same time (each polls
    every 2 s): the chat gets them one a second, measured on the Bot API double's arrival times."""
    chat = 1001
    with LoopbackServer() as server:
        feeds = StoryFeeds(server, 15, withheld=True)
        listed = "\n".join(
            f"  - {{name: f{i}, url: '{server.url(f'/f{i}.xml')}', interval: 2s}}"
            for i in range(15)
        )

        def config(name: str, api_url: str, listen: str) -> str:
            return (
                'database: {url: "{database_url}"}\n'
                "fetch: {allow_private: true}\n"
                f'service: {{listen: "{listen}"}}\n'
                f"feeds:\n{listed}\n"
                "watchlists:\n  reports: {query: Report, notify: [desk]}\n"
                f"channels:\n  desk: {{type: telegram, chat_ids: [{chat}]}}\n"
                f'telegram: {{token: "{TOKEN}", api_url: "{api_url}", subscriptions: "off"}}\n'
            )

        with Cluster(tmp_path, postgresql_url, config, double.api_url_for) as cluster:
            for name in ("r1", "r2", "r3"):
                cluster.start(name)
            engine = make_engine(postgresql_url)
            try:  # every feed polled (empty) once, by whichever replica: all three are up
                eventually(lambda: _polls_recorded(engine) == 15, "every feed polled once")
            finally:
                engine.dispose()
            feeds.publish()
            messages = double.wait_for_messages(15, chat_id=chat, timeout=60)
            engine = make_engine(postgresql_url)
            try:
                booked = _booked_ticks(engine, chat)
            finally:
                engine.dispose()
            assert_clean_stops(cluster)
    # The budget itself: every message booked a slot in the shared table, a second or more apart
    # (ticks of 1/30 s of the database's clock), whichever replica booked it.
    assert len(booked) == 15
    assert min(b - a for a, b in itertools.pairwise(booked)) >= 30, booked
    # What the chat saw: about one a second. Each replica waits for its slot on its own clock and
    # a loaded machine delays a send by a few tenths, so single gaps may shrink; the rate may not.
    arrivals = sorted(m.at for m in messages)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) > 0.5, gaps
    assert (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) <= 1.05
    assert all(a.status == 200 for a in double.attempts)


def _booked_ticks(engine: Engine, chat_id: int) -> list[int]:
    """The send slots booked for `chat_id`, in order (ticks of 1/30 s)."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT tick FROM send_slots WHERE chat_id = :c ORDER BY tick"),
                {"c": chat_id},
            ).scalars()
        )
