"""Benchmark: delivering alerts to Telegram subscribers within Telegram's limits.

    python benchmarks/deliver.py [--alerts 10000] [--subscribers 1000] [--naive 300]

The local Bot API double (tests/botapi.py) stands in for Telegram and enforces its flood limits the
way Telegram does (429 with retry_after past ~1 message/s per chat or 30/s overall). ALERTS alerts for
SUBSCRIBERS subscribers are put in the outbox of an SQLite database and delivered by the daemon's
own `Outbox` with python-telegram-bot. It prints messages per second against the 30/s ceiling, the
largest per-chat rate observed, the 429s provoked, total time, and whether any alert was lost or
repeated — beside a naive baseline in the same run: the same Bot sending as fast as it can, without
our limiter, for NAIVE messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from botapi import TOKEN, BotAPIDouble  # the test double: a real HTTP server on loopback

from monitor.notify.telegram import TelegramNotifier
from monitor.outbox import Outbox
from monitor.store import db
from monitor.store.alerts import alert_counts, enqueue_alert, insert_match
from monitor.store.feeds import sync_feeds
from monitor.store.stories import NewItem, insert_item, story_for_hash
from monitor.store.subscribers import SUBSCRIBERS_CHANNEL

CEILING = 30.0


def fill_outbox(url: str, alerts: int, subscribers: int) -> None:
    engine = db.make_engine(url)
    db.upgrade(engine)
    now = datetime.now(UTC)
    stories = -(-alerts // subscribers)
    with db.transaction(engine) as session:
        feed_ids = sync_feeds(session, [("bench", "https://example.org/feed")], now)
        made = 0
        for n in range(stories):
            story_id, _ = story_for_hash(session, f"v1:{n:064x}", now)
            item = NewItem(
                identity=f"guid:{n}",
                content_hash=f"v1:{n:064x}",
                hash_version=1,
                title=f"Story {n}: قضية تايوان هي «أول خط أحمر»",
                text="قضية تايوان هي «أول خط أحمر» لا يمكن تجاوزه " * 5,
                html=None,
                link=f"https://example.org/{n}",
                author=None,
                published_at=now,
                language="ar",
                fetched_at=now,
                story_id=story_id,
            )
            item_id = insert_item(session, feed_ids["bench"], item)
            assert item_id is not None
            hits = '[{"term": "تايوان", "field": "body", "start": 5, "end": 11}]'
            insert_match(session, story_id, item_id, "bench", hits, now)
            for chat in range(subscribers):
                if made == alerts:
                    break
                enqueue_alert(
                    session,
                    story_id,
                    item_id,
                    "bench",
                    SUBSCRIBERS_CHANNEL,
                    str(10_000 + chat),
                    now,
                )
                made += 1
    engine.dispose()


async def deliver(url: str, double: BotAPIDouble) -> float:
    engine = db.make_engine(url)
    notifier = TelegramNotifier(TOKEN, double.api_url)
    outbox = Outbox(engine, {SUBSCRIBERS_CHANNEL: notifier}, owner="bench")
    started = time.perf_counter()
    try:
        while True:
            await outbox.deliver_due(limit=500)
            with db.read_session(engine) as session:
                left = alert_counts(session)["pending"]
            if not left:
                break
            await asyncio.sleep(0.2)  # only retries are left: let them come due
    finally:
        await outbox.close()
        engine.dispose()
    return time.perf_counter() - started


async def naive(double: BotAPIDouble, count: int) -> float:
    from telegram import Bot
    from telegram.error import RetryAfter

    started = time.perf_counter()
    async with Bot(TOKEN, base_url=f"{double.api_url}/bot") as bot:
        for i in range(count):
            # a naive sender just moves on after a 429 (and loses the message)
            with contextlib.suppress(RetryAfter):
                await bot.send_message(chat_id=50_000 + i % 30, text=f"naive {i}")
    return time.perf_counter() - started


def per_chat_peak(times: list[float]) -> float:
    """The highest rate one chat saw: messages in the busiest 10-second window / 10."""
    times.sort()
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - 10.0:
            j += 1
        best = max(best, i - j + 1)
    return best / 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--naive", type=int, default=300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, BotAPIDouble() as double:
        double.enforce_limits()
        url = f"sqlite:///{tmp}/bench.db"
        fill_outbox(url, args.alerts, args.subscribers)
        total = asyncio.run(deliver(url, double))
        messages = [m for m in double.messages if m.chat_id >= 10_000]
        ours_429 = sum(1 for a in double.attempts if a.status == 429 and a.chat_id >= 10_000)
        by_chat: dict[int, list[float]] = defaultdict(list)
        for m in messages:
            by_chat[m.chat_id].append(m.at)
        repeated = sum(
            n - 1 for n in Counter((m.chat_id, m.text) for m in messages).values() if n > 1
        )
        engine = db.make_engine(url)
        with db.read_session(engine) as session:
            counts = alert_counts(session)
        engine.dispose()

        naive_s = asyncio.run(naive(double, args.naive))
        naive_sent = [m for m in double.messages if 50_000 <= m.chat_id < 60_000]
        naive_429 = sum(1 for a in double.attempts if a.status == 429 and a.chat_id >= 50_000)

    rate = len(messages) / total
    peak_chat = max(per_chat_peak(t) for t in by_chat.values())
    print(
        f"{args.alerts} alerts to {args.subscribers} subscribers through the local Bot API double "
        "(Telegram's flood limits enforced)"
    )
    print(f"{'':32} | {'ours':>12} | {'naive (no limiter)':>18}")
    print(f"{'messages/s (ceiling 30/s)':32} | {rate:>12.1f} | {len(naive_sent) / naive_s:>18.1f}")
    print(f"{'share of the 30/s ceiling':32} | {rate / CEILING:>11.0%} | {'':>18}")
    print(f"{'largest per-chat rate, msg/s':32} | {peak_chat:>12.2f} | {'':>18}")
    print(f"{'429s provoked':32} | {ours_429:>12} | {naive_429:>18}")
    print(f"{'total time s':32} | {total:>12.1f} | {naive_s:>18.1f}")
    lost = args.alerts - len(messages)
    print(f"{'alerts lost / repeated':32} | {f'{lost} / {repeated}':>12} | {'':>18}")
    print(
        f"outbox afterwards: {counts}; naive: {args.naive - len(naive_sent)} of {args.naive} lost"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
