"""One poll of one feed: fetch → parse → dedup → store → match → enqueue alerts.

Everything a poll finds — new and updated items, their stories, matches and outbox alerts, and the
feed's new poll state — is written in ONE transaction, so a crash anywhere loses nothing and repeats
nothing: either the poll happened (and its alerts are in the outbox) or it did not (and the next
poll finds the same items again). That transaction speaks to the database a fixed number of times,
one read and one write of each kind, however many items the poll brings. A poll that finds nothing
(a 304, a body identical to the last) changes only the feed's times and validators: those are
written for many feeds at once, within half a second (`poll_states`).

Dedup (SPEC §5, `core.dedup`): an item is known by its identity within its feed; seen again with the
same content hash it is ignored; with a new hash it is stored as an update and re-matched, alerting
only for watchlists its story did not match before. Items with the same content hash are one story,
whichever feeds carry them, and a story alerts once per watchlist and recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from monitor.config import Digest, FeedSettings, Settings
from monitor.core import headlines, stories
from monitor.core.alert_age import too_old_to_alert
from monitor.core.dedup import HASH_VERSION, content_hash, item_identity
from monitor.core.match import Matcher
from monitor.core.timing import (
    cache_max_age,
    is_throttled,
    next_digest_at,
    next_poll,
    next_poll_after_failure,
    subscriber_due_at,
)
from monitor.errors import FeedParseError, FetchError, InputError, StoreError
from monitor.fetch import (
    FetchPolicy,
    FetchResult,
    HostBusyError,
    HTTPStatusError,
    RetryLaterError,
    fetch,
    fetch_local,
    open_session,
)
from monitor.inputs import html_article
from monitor.language import item_language
from monitor.model import Article, Match
from monitor.parse_pool import ParsePool
from monitor.poll_states import QuietPolls
from monitor.store import db, subscribers
from monitor.store.alerts import (
    NewAlert,
    NewMatch,
    enqueue_alerts,
    insert_matches,
    matched_watchlists,
)
from monitor.store.feeds import FeedState, QuietPoll, record_poll
from monitor.store.message_edits import request_edits
from monitor.store.stories import (
    FeedItems,
    NewItem,
    StoryItem,
    add_story_hashes,
    identity_key,
    insert_items,
    insert_stories,
    item_texts,
    stored_versions,
    story_candidates,
    story_reads,
    update_items,
)
from monitor.store.story_locks import lock_stories
from monitor.store.subscribers import SUBSCRIBERS_CHANNEL, SUBSCRIBERS_DIGEST_CHANNEL

log = logging.getLogger("monitor.pipeline")

Routes = Mapping[str, tuple[tuple[str, str], ...]]  # watchlist → ((channel, recipient), …)
# Polls that change only the feed's times and validators: written in batches (`poll_states`).
QUIET_STATUSES = frozenset({"not_modified", "unchanged"})
GONE_STATUSES = frozenset({404, 410})  # answered for `fetch.gone_after`, the feed is gone
GONE_POLL_INTERVAL = timedelta(days=1)  # how often a gone feed is tried, in case it comes back
STORE_RETRY = timedelta(minutes=1)  # a poll whose items could not be written is tried again
# One feed's parse, in a worker process (`parse_pool`): CPU seconds, and memory of the worker.
PARSE_CPU_SECONDS = 30.0
PARSE_MEMORY_BYTES = 1024 * 2**20
_NO_CONTENT = content_hash("", "")  # items without title or text are told apart by identity only
FULL_TEXT_PER_POLL = 20  # pages fetched per poll of a `full_text` feed
# Changed feeds parsed, matched and stored at once. The store writes one poll at a time, so more
# would only wait there, each holding its parsed items, matches and story reads: with 50 polls
# in flight, ~40 of them did, and the daemon's memory grew with them (a peak of 308 MB at 1,000
# feeds x 10,000 watchlists, 286 with this). Enough to keep the parse workers and the store busy.
CHANGED_AT_ONCE = 6


@dataclass(frozen=True)
class PollResult:
    """What one poll did, for logs, `monitor once` and metrics."""

    feed: str
    status: str  # ok | not_modified | unchanged | error | retry_later
    new_items: int = 0
    updated_items: int = 0
    alerts: int = 0
    too_old: int = 0  # matches not alerted: the item is older than the feed's `alert_max_age`
    error: str | None = None
    warning: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "error"


@dataclass(frozen=True)
class _Keyed:
    """An item of a poll as dedup knows it: its identity (and that identity as stored) and its
    content hash, before any other work."""

    index: int  # in the feed
    article: Article
    identity: str
    key: str
    content_hash: str


@dataclass(frozen=True)
class _Prepared:
    """A new or changed item with its work done: language, matches, fingerprint."""

    keyed: _Keyed
    article: Article
    matches: list[Match]
    fingerprint: tuple[int, ...] = ()  # of the feed's own body (core.stories); () if too short
    headline_keys: tuple[int, ...] = ()  # of its headline (core.headlines)

    @property
    def indexed(self) -> tuple[int, ...]:
        """The hashes by which the item finds candidate stories, and its own story is found."""
        return self.fingerprint[: stories.INDEXED] + self.headline_keys


@dataclass(frozen=True)
class _NewStory:
    temp_id: int  # its id in the plan, until the database gives it one
    content_hash: str
    fingerprint: str | None  # encoded (core.stories); None for a body too short to have one
    indexed: tuple[int, ...]  # its smallest hashes, by which copies find it


@dataclass(frozen=True)
class _Step:
    """One item to store: its story (a plan's temp id for a story this poll makes), and the
    item it updates: a stored one (`item_id`), or one this poll inserts (`first` False, no
    `item_id`: an identity the feed repeats with another text)."""

    prepared: _Prepared
    story_id: int
    first: bool  # inserted, not an update
    item_id: int | None
    old_story_id: int | None  # the story of the version it updates
    first_seen: datetime | None  # when the item it updates was first stored (None: now)


@dataclass(frozen=True)
class _StoryPlan:
    steps: list[_Step]
    new_stories: list[_NewStory]
    matched: dict[int, set[str]]  # stored story → the watchlists it has matched
    # (story, headline key) of the items that joined a story by their text or headline: a story
    # is found by the headline of each of its items, not only of the one that made it.
    joined_keys: list[tuple[int, int]] = field(default_factory=list)


# Temp ids of the stories a poll makes sort after every stored story's, as their real ids will.
_TEMP_STORY = 1 << 62
_DEFAULT_RULES = stories.Rules()
NEAR_CANDIDATES = 20  # stories an item is compared with: those sharing most indexed hashes
# The candidates whose items and matched watchlists the candidates' statement reads along: those
# sharing this many hashes with an item, every story its headline may join and most it copies.
_READ_ALONG = stories.HEADLINE_KEYS_SHARED


_SessionKey = tuple[bool, tuple[object, ...]]  # allow_private, `_session_kind`


def _session_kind(policy: FetchPolicy, per_host: int) -> tuple[object, ...]:
    """What an HTTP session is built with besides `allow_private`: the address rules it enforces,
    its User-Agent and its connections per host (`open_session`)."""
    return (policy.allowed_networks, policy.proxy, policy.user_agent, per_host)


def digests_for(settings: Settings) -> dict[str, Digest]:
    """The channels that take their alerts as a digest, with its schedule."""
    return {
        name: digest
        for name, channel in settings.channels.items()
        if (digest := getattr(channel, "digest", None)) is not None
    }


def routes_for(settings: Settings) -> dict[str, tuple[tuple[str, str], ...]]:
    """Where each watchlist's alerts go: (channel, recipient) pairs from its `notify` channels.

    One message per chat (SPEC §6): a Telegram chat, or an email address, that two of the
    watchlist's channels list gets the alert once, through the first of them in `notify`."""
    from monitor.config import EmailChannel, TelegramChannel

    routes: dict[str, tuple[tuple[str, str], ...]] = {}
    for watchlist in settings.watchlists.values():
        pairs: dict[tuple[str, str], tuple[str, str]] = {}  # who → (channel, recipient)
        for name in watchlist.notify:
            channel = settings.channels[name]
            if isinstance(channel, TelegramChannel):
                for chat in channel.chat_ids:
                    pairs.setdefault(("telegram", str(chat)), (name, str(chat)))
            elif isinstance(channel, EmailChannel):
                for address in channel.to:
                    pairs.setdefault(("email", address.lower()), (name, address))
            else:  # each console channel prints
                pairs.setdefault((name, ""), (name, ""))
        routes[watchlist.name] = tuple(pairs.values())
    return routes


def telegram_channels_of(settings: Settings) -> frozenset[str]:
    """The names of the channels whose recipients are Telegram chats."""
    return frozenset(name for name, c in settings.channels.items() if c.type == "telegram")


class Poller:
    """Polls feeds for one process. Owns its HTTP sessions; `close()` them when done."""

    def __init__(
        self,
        engine: Engine,
        matcher: Matcher,
        routes: Routes,
        *,
        policy: FetchPolicy,
        base_dir: Path,
        owner: str,
        digests: Mapping[str, Digest] | None = None,
        subscribers: bool = False,
        telegram_channels: Collection[str] = (),
        per_host: int = 2,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        gone_after: timedelta = timedelta(days=3),
        story_rules: stories.Rules = _DEFAULT_RULES,
        changed_at_once: int = CHANGED_AT_ONCE,
    ) -> None:
        self.engine = engine
        self.matcher = matcher
        self.routes = routes
        self.policy = policy
        self.base_dir = base_dir
        self.owner = owner
        self.digests = dict(digests or {})
        self.subscribers = subscribers  # Telegram subscribers get alerts too
        # A chat of these channels' `chat_ids` gets its alert there, not again as a subscriber.
        self.telegram_channels = frozenset(telegram_channels)
        self.per_host = per_host
        self.rng = rng or random.Random()
        self.clock = clock
        self.gone_after = gone_after
        self.story_rules = story_rules
        # By `allow_private` and `_session_kind`; `_fetching` counts the fetches using each.
        self._sessions: dict[_SessionKey, aiohttp.ClientSession] = {}
        self._fetching: Counter[_SessionKey] = Counter()
        self._private_policy: tuple[FetchPolicy, FetchPolicy] | None = None  # (of, allowing)
        self._last_key: tuple[FetchPolicy, int, _SessionKey] | None = None  # `_session_key`
        self._parser: ParsePool | None = None  # started at the first parse, in the poll's loop
        # 304s and unchanged bodies: their poll state is written for many feeds at once.
        self.quiet = QuietPolls(engine, owner)
        self.parsing_feeds: set[int] = set()  # feed ids waiting for their parse or being parsed
        # Changed feeds parsed, matched and stored at once (`CHANGED_AT_ONCE`); the others wait
        # with their fetched bytes.
        self.processing = asyncio.Semaphore(changed_at_once)
        # Told how long each HTTP fetch of a feed took, in seconds (the service's metrics).
        self.on_fetch: Callable[[float], None] | None = None

    async def use_fetch(self, policy: FetchPolicy, per_host: int, gone_after: timedelta) -> None:
        """Fetch with these `fetch:` settings from the next poll on (a reload). Polls under way
        finish with their own; a session left with no use is closed once its last fetch ends."""
        self.policy = policy
        self.per_host = per_host
        self.gone_after = gone_after
        await self._close_unused_sessions()

    @contextlib.asynccontextmanager
    async def _session(self, policy: FetchPolicy) -> AsyncIterator[aiohttp.ClientSession]:
        """The session for fetches under `policy`, held for one fetch."""
        key, session = self._take_session(policy)
        try:
            yield session
        finally:
            if self._release_session(key):
                await self._close_unused_sessions()

    def _take_session(self, policy: FetchPolicy) -> tuple[_SessionKey, aiohttp.ClientSession]:
        """The session for a fetch under `policy`, counted as in use until `_release_session`."""
        key = self._session_key(policy)
        session = self._sessions.get(key)
        if session is None or session.closed:
            session = open_session(policy, limit_per_host=self.per_host)
            self._sessions[key] = session
        self._fetching[key] += 1
        return key, session

    def _release_session(self, key: _SessionKey) -> bool:
        """Count a fetch with the session of `key` as done; True if that session is of `fetch:`
        settings a reload has replaced, to be closed (`_close_unused_sessions`) once its last
        fetch ends."""
        self._fetching[key] -= 1
        return key[1] != self._current_kind()

    def _current_kind(self) -> tuple[object, ...]:
        return self._session_key(self.policy)[1]

    def _session_key(self, policy: FetchPolicy) -> _SessionKey:
        # Worked out at every fetch: kept for the last policy and `per_host` it was asked for
        # (a reload replaces both).
        last = self._last_key
        if last is not None and last[0] is policy and last[1] == self.per_host:
            return last[2]
        key = (policy.allow_private, _session_kind(policy, self.per_host))
        self._last_key = (policy, self.per_host, key)
        return key

    async def _close_unused_sessions(self) -> None:
        """Close the sessions built with `fetch:` settings a reload has changed and that no fetch
        uses any more."""
        current = self._current_kind()
        for key in [k for k in self._sessions if k[1] != current and not self._fetching[k]]:
            del self._fetching[key]
            await self._sessions.pop(key).close()

    def _policy_for(self, feed: FeedSettings) -> FetchPolicy:
        """The policy a feed's own URL is fetched with: the process's, `allow_private` if the feed
        says so. Built once per policy, not per poll (a reload may replace `self.policy`)."""
        if not feed.allow_private or self.policy.allow_private:
            return self.policy
        if self._private_policy is None or self._private_policy[0] is not self.policy:
            self._private_policy = (self.policy, replace(self.policy, allow_private=True))
        return self._private_policy[1]

    @property
    def parser(self) -> ParsePool:
        if self._parser is None:
            self._parser = ParsePool(cpu_seconds=PARSE_CPU_SECONDS, memory_bytes=PARSE_MEMORY_BYTES)
        return self._parser

    @property
    def parsing(self) -> int:
        """Feeds being parsed in a worker now."""
        return self._parser.parsing if self._parser is not None else 0

    async def stop_parsing(self) -> None:
        """Kill the parse workers now: parses under way fail, those waiting are refused."""
        if self._parser is not None:
            await self._parser.close()

    async def flush(self) -> None:
        """Write the poll state of the quiet polls that wait (`poll_states`)."""
        await self.quiet.flush()

    async def close(self) -> None:
        await self.quiet.close()
        await self.stop_parsing()
        self._parser = None
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        self._fetching.clear()

    async def poll(
        self, state: FeedState, feed: FeedSettings, *, force: bool = False
    ) -> PollResult:
        """Poll one claimed feed and record the outcome (this releases its lease)."""
        now = self.clock()
        interval = feed.interval
        policy = self._policy_for(feed)
        try:
            result = await self._fetch(feed, state, policy, force=force)
        except RetryLaterError as exc:
            if is_throttled(exc.status, exc.retry_after):
                # 429, or 503 with Retry-After: the server asked us to wait, not a broken feed.
                at = next_poll_after_failure(
                    now,
                    interval,
                    state.consecutive_failures,
                    retry_after_seconds=exc.retry_after,
                    rng=self.rng,
                )
                return await self._record(state, now, "retry_later", exc.reason, at, failed=False)
            failures = state.consecutive_failures + 1
            at = next_poll_after_failure(
                now, interval, failures, retry_after_seconds=None, rng=self.rng
            )
            return await self._record(state, now, "error", exc.reason, at, failed=True)
        except HostBusyError as exc:
            # Queued behind the host's other requests and never sent: not a failure of the feed.
            at = next_poll_after_failure(
                now, interval, state.consecutive_failures, retry_after_seconds=None, rng=self.rng
            )
            return await self._record(state, now, "retry_later", exc.reason, at, failed=False)
        except HTTPStatusError as exc:
            if exc.status in GONE_STATUSES:
                return await self._record_missing(state, feed, now, exc.reason)
            failures = state.consecutive_failures + 1
            at = next_poll_after_failure(
                now, interval, failures, retry_after_seconds=None, rng=self.rng
            )
            return await self._record(state, now, "error", exc.reason, at, failed=True)
        except FetchError as exc:
            failures = state.consecutive_failures + 1
            at = next_poll_after_failure(
                now, interval, failures, retry_after_seconds=None, rng=self.rng
            )
            return await self._record(state, now, "error", exc.reason, at, failed=True)

        if result.permanent_redirect and result.permanent_redirect != feed.url:
            # The config names the feed's URL, so it is the operator who moves it (FAULTS 21);
            # every hop was checked against the address policy before it was followed.
            log.warning(
                "feed.moved feed=%s url=%s action=set the feed's url to it in the config",
                feed.name,
                result.permanent_redirect,
            )
        hints = {"max_age_seconds": cache_max_age(result.headers)}
        if result.not_modified or result.body is None:
            at = next_poll(now, interval, rng=self.rng, **hints)
            return self._record_quiet(state, now, "not_modified", at, result)
        body_hash = hashlib.sha256(result.body).hexdigest()
        if body_hash == state.body_hash and not force:
            at = next_poll(now, interval, rng=self.rng, **hints)
            return self._record_quiet(state, now, "unchanged", at, result, body_hash)
        # Waiting for a slot is waiting for its parse: a stop gives the feed back at once.
        self.parsing_feeds.add(state.id)
        try:
            async with self.processing:
                return await self._process(state, feed, now, result, result.body, body_hash, hints)
        finally:
            self.parsing_feeds.discard(state.id)

    async def _process(
        self,
        state: FeedState,
        feed: FeedSettings,
        now: datetime,
        result: FetchResult,
        body: bytes,
        body_hash: str,
        hints: dict[str, int | None],
    ) -> PollResult:
        """Parse, match and store a changed feed (holding one of the `processing` slots; the
        feed is among `parsing_feeds` until its parse ends)."""
        interval = feed.interval
        try:
            parsed = await self.parser.parse(
                body,
                url=result.url,
                headers=result.headers,
                fetched_at=now,
                source=feed.name,
            )
        except FeedParseError as exc:
            failures = state.consecutive_failures + 1
            at = next_poll_after_failure(
                now, interval, failures, retry_after_seconds=None, rng=self.rng
            )
            return await self._record(state, now, "error", str(exc), at, failed=True)
        finally:
            self.parsing_feeds.discard(state.id)

        # Identity and content hash of every item, and what the feed has stored of them (one
        # query): only what is new or changed is detected, fingerprinted and matched.
        keyed, known = await asyncio.to_thread(self._sort_out, state, parsed.articles)
        # The pages are the items' links, chosen by the feed's author: a feed's `allow_private`
        # covers its own URL only, its links keep to the global address policy (FAULTS 76).
        pages = await self._full_texts(state, keyed, known, self.policy) if feed.full_text else {}
        todo = _news(keyed, known)
        prepared = await asyncio.to_thread(self._prepare, todo, feed, parsed.language, pages)
        at = next_poll(now, interval, ttl_minutes=parsed.ttl, rng=self.rng, **hints)
        try:
            outcome = await asyncio.to_thread(
                self._store,
                state,
                keyed,
                prepared,
                now,
                at,
                result,
                body_hash,
                parsed.bozo_warning,
                feed.alert_max_age,
                lambda missing: self._prepare(missing, feed, parsed.language, pages),
            )
        except StoreError as exc:
            # Nothing of this poll was written (one transaction). Recorded as the feed's error,
            # not its failure, with its old validators, so that the retry fetches and stores the
            # same items again (FAULTS 55, 56). If even this write fails, the lease runs out.
            log.error("poll.store_failed feed=%s error=%s", feed.name, exc)
            retry = now + min(interval, STORE_RETRY)
            await self._record(state, now, "error", f"database: {exc}", retry, failed=False)
            return PollResult(feed.name, "error", error=f"database: {exc}")
        if parsed.bozo_warning:
            # A broken feed that still had items: accepted, and the problem kept in the log.
            log.warning("poll.bozo feed=%s warning=%r", feed.name, parsed.bozo_warning)
        if parsed.dropped_items:
            log.warning("poll.capped feed=%s dropped_items=%s", feed.name, parsed.dropped_items)
        log.info(
            "poll.done feed=%s new=%s updated=%s alerts=%s too_old=%s",
            feed.name,
            outcome.new_items,
            outcome.updated_items,
            outcome.alerts,
            outcome.too_old,
        )
        return outcome

    async def _fetch(
        self, feed: FeedSettings, state: FeedState, policy: FetchPolicy, *, force: bool
    ) -> FetchResult:
        if not feed.url.startswith(("http://", "https://")) and "://" not in feed.url:
            return await asyncio.to_thread(fetch_local, feed.url, self.base_dir, policy.max_body)
        started = time.monotonic()
        key, session = self._take_session(policy)
        try:
            return await fetch(
                feed.url,
                policy=policy,
                session=session,
                etag=None if force else state.etag,
                last_modified=None if force else state.last_modified,
            )
        finally:
            if self._release_session(key):
                await self._close_unused_sessions()
            if self.on_fetch is not None:
                self.on_fetch(time.monotonic() - started)

    async def _full_texts(
        self, state: FeedState, keyed: Sequence[_Keyed], known: FeedItems, policy: FetchPolicy
    ) -> dict[int, str]:
        """For a `full_text` feed: the main text of each NEW item's page (trafilatura), by index.

        Only items not stored yet, at most FULL_TEXT_PER_POLL a poll; a page that cannot be
        fetched or read leaves the feed's own text."""
        articles = [k.article for k in keyed]

        async def page(i: int) -> tuple[int, str | None]:
            link = articles[i].link or ""
            try:
                async with self._session(policy) as session:
                    result = await fetch(link, policy=policy, session=session)
                if not result.body:
                    return i, None
                extracted = await asyncio.to_thread(html_article, result.body, link, url=result.url)
            except (FetchError, InputError) as exc:
                log.info("poll.full_text_failed feed=%s link=%s error=%s", state.name, link, exc)
                return i, None
            return i, extracted.body

        wanted = [k.index for k in keyed if k.article.link and k.key not in known.by_identity][
            :FULL_TEXT_PER_POLL
        ]
        found = await asyncio.gather(*(page(i) for i in wanted))
        return {i: body for i, body in found if body and len(body) > len(articles[i].body)}

    def _sort_out(
        self, state: FeedState, articles: Sequence[Article]
    ) -> tuple[list[_Keyed], FeedItems]:
        """Identity and content hash of each item, and what the feed has stored of those
        identities and hashes (one query)."""
        keyed = [
            _Keyed(
                index,
                article,
                identity := item_identity(article.guid, article.link, article.title, article.body),
                identity_key(identity),
                content_hash(article.title, article.body),
            )
            for index, article in enumerate(articles)
        ]
        with db.read_session(self.engine) as session:
            known = stored_versions(
                session, state.id, [k.identity for k in keyed], [k.content_hash for k in keyed]
            )
        return keyed, known

    def _prepare(
        self,
        keyed: Sequence[_Keyed],
        feed: FeedSettings,
        feed_language: str | None,
        pages: Mapping[int, str],
    ) -> list[_Prepared]:
        """Language, fingerprint and matches of each new or changed item (CPU work, off the loop).

        The content hash is always of the feed's own text, so that a full-text item is not taken
        for an update on the next poll, when only the feed's version is at hand; the fingerprint
        that finds its near-copies is of the page's text, which is what other outlets copy."""
        out = []
        for k in keyed:
            article = k.article
            language = item_language(
                article.language, (feed.language, feed_language), article.title, article.body
            )
            article = replace(
                article, language=language, source=feed.name, body=pages.get(k.index, article.body)
            )
            near = stories.fingerprint(article.body)
            keys = headlines.title_keys(article.title, language)
            out.append(_Prepared(k, article, self.matcher.match(article), near, keys))
        return out

    def _store(
        self,
        state: FeedState,
        keyed: Sequence[_Keyed],
        prepared: Sequence[_Prepared],
        now: datetime,
        next_at: datetime,
        fetched: FetchResult,
        body_hash: str,
        warning: str | None,
        max_age: timedelta | None,
        prepare: Callable[[Sequence[_Keyed]], list[_Prepared]],
    ) -> PollResult:
        """Store a poll's new and changed items, their stories, matches and alerts, and the
        feed's poll state, in one transaction and a round trip per kind of statement.

        Every decision is made as if the items were stored one after the other in content-hash
        order (an item repeated in the poll is an update of the one stored a moment before, a
        later copy joins the story an earlier one made), but in memory, between one read of each
        kind before the writes and one write of each kind after them."""
        ready = {p.keyed.index: p for p in prepared}
        with db.transaction(self.engine) as session:
            # Read again in the transaction: what `prepared` was chosen by may have changed.
            known = stored_versions(
                session, state.id, [k.identity for k in keyed], [k.content_hash for k in keyed]
            )
            todo_keys = _news(keyed, known)
            missing = [k for k in todo_keys if k.index not in ready]
            if missing:  # stored or pruned by someone else meanwhile: rare
                ready.update({p.keyed.index: p for p in prepare(missing)})
            todo = [ready[k.index] for k in todo_keys]
            if any(p.indexed for p in todo):
                # Near-copies have no unique key to race on: replicas storing copies of one
                # story at the same moment take turns (by the hashes that find copies), so that
                # the second finds the first's. Before this transaction's first write.
                lock_stories(session, (h for p in todo for h in p.indexed))
            plan = _plan_stories(session, todo, known, now, self.story_rules)
            # No body stored yet: the feed's first poll (or its first at a new URL), where an
            # undated item may be the bottom of an archive (core.alert_age).
            first_poll = state.body_hash is None
            new, updated, alerts, too_old = self._write(
                session, state, plan, now, max_age, first_poll=first_poll
            )
            record_poll(
                session,
                state.id,
                polled_at=now,
                status="ok",
                error=None,
                etag=fetched.etag,
                last_modified=fetched.last_modified,
                body_hash=body_hash,
                new_items=new + updated,
                next_poll_at=next_at,
                failed=False,
                owner=self.owner,
            )
        return PollResult(state.name, "ok", new, updated, alerts, too_old, warning=warning)

    def _write(
        self,
        session: Session,
        state: FeedState,
        plan: _StoryPlan,
        now: datetime,
        max_age: timedelta | None,
        *,
        first_poll: bool,
    ) -> tuple[int, int, int, int]:
        """The writes of a planned poll, a round trip each: new stories (with their
        fingerprints) and their index, new items, changed items, matches, alerts.
        Returns (new items, updated items, alerts queued, matches too old to alert)."""
        ids, created = insert_stories(
            session, [(story.content_hash, story.fingerprint) for story in plan.new_stories], now
        )
        real = {story.temp_id: ids[story.content_hash] for story in plan.new_stories}
        # A story another transaction created meanwhile keeps its own fingerprint and index.

        def story_of(step_story: int) -> int:
            return real.get(step_story, step_story)

        add_story_hashes(
            session,
            [
                (real[story.temp_id], h)
                for story in plan.new_stories
                if story.content_hash in created
                for h in story.indexed
            ]
            + [(story_of(story_id), h) for story_id, h in plan.joined_keys],
            now,
        )

        firsts = [step for step in plan.steps if step.first]
        inserted = insert_items(
            session,
            state.id,
            [_new_item(step.prepared, now, story_of(step.story_id)) for step in firsts],
        )
        # Later sources of stories stored before: their Telegram alerts are due an edit.
        joined = {
            story_of(step.story_id)
            for step in plan.steps
            if step.story_id < _TEMP_STORY and step.story_id != step.old_story_id
        }
        request_edits(session, joined, self.telegram_channels | {SUBSCRIBERS_CHANNEL}, now)
        updates: list[tuple[int, NewItem]] = []
        matched = {story_of(story): set(names) for story, names in plan.matched.items()}
        wanted: list[NewMatch] = []
        too_old = 0
        for step in plan.steps:
            p = step.prepared
            story_id = story_of(step.story_id)
            item_id = step.item_id if step.item_id is not None else inserted.get(p.keyed.key)
            if item_id is None:  # another replica stored it first
                continue
            if not step.first:
                updates.append((item_id, _new_item(p, now, story_id)))
            matched_before = set(matched.setdefault(story_id, set()))
            if step.old_story_id is not None:
                matched_before |= matched.setdefault(story_of(step.old_story_id), set())
            old = too_old_to_alert(
                p.article.published if p.article.dated else None,
                step.first_seen or now,
                now,
                max_age,
                first_poll=first_poll,
            )
            for m in p.matches:
                if m.watchlist in matched_before:
                    continue  # this story already alerted for this watchlist
                if old:
                    # Stored and matched (backtest sees it), not alerted; no match record, so
                    # that a fresh item of the story may still alert.
                    too_old += 1
                    continue
                hits = json.dumps([h._asdict() for h in m.hits], ensure_ascii=False)
                wanted.append(
                    NewMatch(story_id, item_id, m.watchlist, hits, p.article.title, p.article.body)
                )
                matched[story_id].add(m.watchlist)
        update_items(session, updates)
        recorded = insert_matches(session, wanted, now)
        queued = self._enqueue(session, wanted, recorded, now)
        return len(inserted), len(updates), queued, too_old

    def _enqueue(
        self,
        session: Session,
        wanted: Sequence[NewMatch],
        recorded: set[tuple[int, str]],
        now: datetime,
    ) -> int:
        """The alerts of the matches recorded: one per route of the watchlist, and one per active
        Telegram subscriber of it, except a chat a route reaches already (one message per chat).
        A subscriber's alert held by a mute or a digest goes to the digest channel, due when it
        ends; the digest channel delivers a recipient's due alerts as one digest."""
        fresh = [
            (m.story_id, m.item_id, m.watchlist)
            for m in wanted
            if (m.story_id, m.watchlist) in recorded
        ]
        if not fresh:
            return 0
        targets = (
            subscribers.subscribers_of_watchlists(session, {w for _, _, w in fresh})
            if self.subscribers
            else {}
        )
        queued: list[NewAlert] = []
        for story_id, item_id, watchlist in fresh:
            for channel, recipient in self.routes.get(watchlist, ()):
                due = self._due(channel, now)
                queued.append(NewAlert(story_id, item_id, watchlist, channel, recipient, due))
            routed = {
                recipient
                for channel, recipient in self.routes.get(watchlist, ())
                if channel in self.telegram_channels
            }
            for target in targets.get(watchlist, ()):
                if target.recipient in routed:
                    continue
                due = subscriber_due_at(
                    now,
                    digest=target.digest,
                    chat_muted_until=target.muted_until,
                    watchlist_muted_until=target.watchlist_muted_until,
                )
                channel = SUBSCRIBERS_DIGEST_CHANNEL if due is not None else SUBSCRIBERS_CHANNEL
                queued.append(
                    NewAlert(story_id, item_id, watchlist, channel, target.recipient, due)
                )
        return enqueue_alerts(session, queued, now)

    def _due(self, channel: str, now: datetime) -> datetime | None:
        """A digest channel's alerts wait for its next digest; others are due at once."""
        digest = self.digests.get(channel)
        if digest is None:
            return None
        return next_digest_at(now, digest.every, digest.at, digest.zone)

    async def _record_missing(
        self, state: FeedState, feed: FeedSettings, now: datetime, reason: str
    ) -> PollResult:
        """A 404 or 410: a failure like another, until the feed has answered so for
        `fetch.gone_after`; from then on it is `gone`, polled once a day (FAULTS 24)."""
        since = state.missing_since or now
        failures = state.consecutive_failures + 1
        if now - since < self.gone_after:
            at = next_poll_after_failure(
                now, feed.interval, failures, retry_after_seconds=None, rng=self.rng
            )
            return await self._record(
                state, now, "error", reason, at, failed=True, missing_since=since
            )
        if state.last_status != "gone":
            log.warning(
                "feed.gone feed=%s since=%s error=%r action=fix the feed's url or remove it",
                state.name,
                since.isoformat(),
                reason,
            )
        at = now + max(GONE_POLL_INTERVAL, feed.interval)
        error = f"{reason} since {since:%Y-%m-%d %H:%M} UTC"
        return await self._record(state, now, "gone", error, at, failed=True, missing_since=since)

    def _record_quiet(
        self,
        state: FeedState,
        now: datetime,
        status: str,
        next_at: datetime,
        validators: FetchResult | None,
        body_hash: str | None = None,
    ) -> PollResult:
        """Record a quiet poll (a 304, an unchanged body): queued, written with others'
        (`poll_states`). Not a coroutine: most polls are quiet, and nothing here waits."""
        self.quiet.add(
            QuietPoll(
                state.id,
                polled_at=now,
                status=status,
                etag=validators.etag if validators else state.etag,
                last_modified=validators.last_modified if validators else state.last_modified,
                body_hash=body_hash or state.body_hash,
                next_poll_at=next_at,
            )
        )
        return PollResult(state.name, status)

    async def _record(
        self,
        state: FeedState,
        now: datetime,
        status: str,
        error: str | None,
        next_at: datetime,
        *,
        failed: bool,
        validators: FetchResult | None = None,
        body_hash: str | None = None,
        missing_since: datetime | None = None,
    ) -> PollResult:
        """Record a poll that stored nothing (a quiet one: queued, written with others').
        `missing_since`: when the feed's 404/410 answers began, kept by a failure that is not one
        (a 500 between two 404s), dropped by a success."""
        if missing_since is None and failed:
            missing_since = state.missing_since
        if status in QUIET_STATUSES and not failed:
            return self._record_quiet(state, now, status, next_at, validators, body_hash)

        def write() -> None:
            with db.transaction(self.engine) as session:
                record_poll(
                    session,
                    state.id,
                    polled_at=now,
                    status=status,
                    error=error,
                    etag=validators.etag if validators else state.etag,
                    last_modified=validators.last_modified if validators else state.last_modified,
                    body_hash=body_hash or state.body_hash,
                    new_items=0,
                    next_poll_at=next_at,
                    failed=failed,
                    owner=self.owner,
                    missing_since=missing_since,
                )

        try:
            await asyncio.to_thread(write)
        except StoreError as exc:
            log.error("poll.record_failed feed=%s error=%s", state.name, exc)
        if failed and status != "gone":
            log.warning(
                "poll.failed feed=%s error=%s next=%s", state.name, error, next_at.isoformat()
            )
        return PollResult(state.name, status, error=error)


def _news(keyed: Sequence[_Keyed], known: FeedItems) -> list[_Keyed]:
    """The items to store, in content-hash order, as if stored one after the other: an identity
    stored with the same hash is unchanged; a new identity whose hash the feed has under another
    identity says again what the feed said (a guid that changes on every poll, one item under two
    guids: FAULTS 13); an identity the poll repeats with another text updates the one just
    stored. Pure: `known` is what the feed has stored of these identities and hashes."""
    current = {key: ref.content_hash for key, ref in known.by_identity.items()}
    counts = Counter(known.hash_counts)
    out = []
    # In hash order, so that two replicas storing the same stories lock rows in one order.
    for k in sorted(keyed, key=lambda k: k.content_hash):
        stored = current.get(k.key)
        if stored is not None:
            if stored == k.content_hash:
                continue
            counts[stored] -= 1
        elif k.content_hash != _NO_CONTENT and counts[k.content_hash] > 0:
            continue
        counts[k.content_hash] += 1
        current[k.key] = k.content_hash
        out.append(k)
    return out


def _plan_stories(
    session: Session,
    todo: Sequence[_Prepared],
    known: FeedItems,
    now: datetime,
    rules: stories.Rules,
) -> _StoryPlan:
    """Each item's story (SPEC §5) — the one its exact content hash made, else a recent story it
    is a copy or rewrite of (core.stories: by its fingerprint, its outlet, its time, its headline
    and its lead), else a new one — decided in order after two reads for the whole poll: the
    stories of the exact hashes together with each item's best candidates by its index hashes
    and their fingerprints, then the items of those similar enough, without their texts; and a
    third, of the few texts the rules may look at (`_texts_wanted`), when there are any. A story
    made by an earlier item of the poll is found as a stored one would be."""
    lookups: list[tuple[int, ...]] = []  # 2n: item n's fingerprint hashes; 2n + 1: its keys
    for p in todo:
        lookups += [p.fingerprint[: stories.INDEXED], p.headline_keys]
    stored_stories = {ref.story_id for ref in known.by_identity.values()}
    found = story_candidates(
        session,
        [p.keyed.content_hash for p in todo],
        lookups,
        since=now - rules.window,
        limit=NEAR_CANDIDATES,
        read_along=_READ_ALONG,
        stories_matched=stored_stories,
    )
    exact = found.exact
    made: dict[int, list[int]] = {}  # indexed hash → stories this poll makes

    def ranked(stored: Sequence[tuple[int, int]], hashes: Sequence[int], least: int) -> list[int]:
        # The stored stories' best come ranked; the stories this poll made (all later than any
        # stored one) are ranked with them as if the index held them already.
        shared: Counter[int] = Counter(dict(stored))
        for h in hashes:
            shared.update(made.get(h, ()))
        best = sorted(shared, key=lambda story: (-shared[story], story))[:NEAR_CANDIDATES]
        return [story for story in best if shared[story] >= least]

    def candidates(n: int, p: _Prepared) -> list[int]:
        return ranked(found.ranked[2 * n], p.fingerprint[: stories.INDEXED], 1)

    def by_headline(n: int, p: _Prepared) -> list[int]:
        return ranked(found.ranked[2 * n + 1], p.headline_keys, stories.HEADLINE_KEYS_SHARED)

    stored_fingerprints = found.fingerprints
    # Item n → the stored stories it may join by its fingerprint, and their similarity.
    scores: dict[int, dict[int, float]] = {}
    for n, p in enumerate(todo):
        if p.keyed.content_hash not in exact:
            scores[n] = {
                story: score
                for score, story in stories.ranked_candidates(
                    p.fingerprint,
                    [(s, stored_fingerprints.get(s)) for s in candidates(n, p)],
                    rules.threshold,
                )
            }
    similar = {story for found_by_text in scores.values() for story in found_by_text} | {
        story for n in scores for story in by_headline(n, todo[n])
    }
    # Every stored story an item may end up in, or leave, is one of `exact`'s, `similar`'s, or
    # one of the feed's stored items': their matches are read with the items, in one round trip,
    # unless the candidates' statement read them along already.
    may_match = set(exact.values()) | similar | stored_stories
    read = story_reads(
        session,
        [s for s in similar if s not in found.items],
        [s for s in may_match if s not in found.matched],
    )
    items_of = found.items | read.items
    read_matched = found.matched | read.matched
    # The stored items as the rules weigh them, their texts read only where the rules may look
    # at them (core.stories.texts_read): "" in the others, which the rules never read.
    reports: dict[int, list[stories.Report]] = {
        story: [_stored_report(i, "") for i in items_of[story]]
        for story in sorted(similar)
        if items_of.get(story)
    }
    wanted = _texts_wanted(todo, now, rules, scores, found.ranked, reports, items_of)
    texts = item_texts(session, wanted) if wanted else {}
    for story, weighed in reports.items():
        for place, item in enumerate(items_of[story]):
            if item.item_id in texts:
                weighed[place] = _stored_report(item, texts[item.item_id])
    new_stories: list[_NewStory] = []
    fingerprint_of: dict[int, str | None] = dict(stored_fingerprints)
    # identity → (stored item id, its story, first seen): None for an item this poll inserts
    versions: dict[str, tuple[int | None, int, datetime | None]] = {
        key: (ref.id, ref.story_id, ref.fetched_at) for key, ref in known.by_identity.items()
    }
    steps = []
    joined_keys: list[tuple[int, int]] = []
    for n, p in enumerate(todo):
        k = p.keyed
        indexed = p.indexed
        report = _report(p, now)
        story_id = exact.get(k.content_hash)
        if story_id is None and p.fingerprint:
            similarities = stories.ranked_candidates(
                p.fingerprint,
                [(s, fingerprint_of.get(s)) for s in candidates(n, p)],
                rules.threshold,
            )
            story_id = stories.choose(similarities, report, reports, rules)
        if story_id is None and p.headline_keys:
            story_id = stories.choose_by_headline(by_headline(n, p), report, reports)
        joined = story_id is not None and exact.get(k.content_hash) != story_id
        if story_id is None:
            story_id = _TEMP_STORY + len(new_stories)
            encoded = stories.encode(p.fingerprint) if p.fingerprint else None
            new_stories.append(_NewStory(story_id, k.content_hash, encoded, tuple(indexed)))
            exact[k.content_hash] = story_id
            fingerprint_of[story_id] = encoded
            for h in indexed:
                made.setdefault(h, []).append(story_id)
        else:
            # A later exact copy in this poll finds the story of this item, as a stored one.
            exact.setdefault(k.content_hash, story_id)
            if joined:
                joined_keys += [(story_id, h) for h in p.headline_keys]
                for h in p.headline_keys:
                    made.setdefault(h, []).append(story_id)
        reports.setdefault(story_id, []).append(report)
        version = versions.get(k.key)
        if version is None:
            steps.append(_Step(p, story_id, True, None, None, None))
            versions[k.key] = (None, story_id, None)
        else:
            item_id, old_story, first_seen = version
            steps.append(_Step(p, story_id, False, item_id, old_story, first_seen))
            versions[k.key] = (item_id, story_id, first_seen)
    involved = {s.story_id for s in steps} | {s.old_story_id for s in steps if s.old_story_id}
    stored = sorted(s for s in involved if s < _TEMP_STORY)
    unread = [s for s in stored if s not in read_matched]  # none: each is one `may_match` has
    matched = {s: read_matched[s] for s in stored if s in read_matched}
    matched |= matched_watchlists(session, unread) if unread else {}
    return _StoryPlan(steps, new_stories, matched, joined_keys)


def _stored_report(item: StoryItem, text: str) -> stories.Report:
    """A stored item as the story rules weigh it, with its text if read ("" if not)."""
    outlet = stories.outlet_of(item.link, item.feed_name)
    return stories.Report(outlet, item.at, item.title, text, item.language)


def _texts_wanted(
    todo: Sequence[_Prepared],
    now: datetime,
    rules: stories.Rules,
    scores: Mapping[int, Mapping[int, float]],
    ranked: Sequence[Sequence[tuple[int, int]]],
    unread: Mapping[int, Sequence[stories.Report]],
    items_of: Mapping[int, Sequence[StoryItem]],
) -> set[int]:
    """The ids of the stored items whose texts `_plan_stories`' rules may read
    (core.stories.texts_read): of the stories in `unread` (their stored items, texts unread),
    those that each item not found by its exact hash (`scores`' items) may be weighed against,
    by its fingerprint (`scores`: the candidates at the threshold) or by its headline. More than
    the rules read, never fewer, so that the decisions are those of the rules with every text at
    hand. An item's headline candidates are those sharing `HEADLINE_KEYS_SHARED` of its keys with
    the index (`ranked[2n + 1]`), the poll's earlier items' keys counted too: `_plan_stories`
    counts the keys of an earlier item that joined a stored story as the index's, so a story
    sharing none of an item's keys may be its candidate through an item joined before it. Each
    earlier item is counted as if it had joined every story."""
    wanted: set[int] = set()
    earlier: Counter[int] = Counter()  # headline keys of the poll's earlier items
    for n, p in enumerate(todo):
        keys_before = sum(earlier[h] for h in p.headline_keys)
        earlier.update(p.headline_keys)
        by_text = scores.get(n)
        if by_text is None:  # an exact copy: its story is its hash's
            continue
        by_text = by_text if p.fingerprint else {}
        shared = dict(ranked[2 * n + 1]) if p.headline_keys else {}
        least = stories.HEADLINE_KEYS_SHARED - keys_before
        by_headline = {s for s in unread if p.headline_keys and shared.get(s, 0) >= least}
        report = _report(p, now)
        for story in by_headline | by_text.keys():
            stored = unread.get(story)
            if not stored:
                continue
            read = stories.texts_read(
                report, stored, rules, score=by_text.get(story), by_headline=story in by_headline
            )
            wanted.update(
                i.item_id for i, reads in zip(items_of[story], read, strict=True) if reads
            )
    return wanted


def _report(p: _Prepared, now: datetime) -> stories.Report:
    """The item as the story rules weigh it: its outlet, its date (else now), headline, text."""
    a = p.article
    at = a.published if a.dated and a.published is not None else now
    return stories.Report(
        stories.outlet_of(a.link, a.source or ""), at, a.title, a.body, a.language
    )


def _new_item(p: _Prepared, now: datetime, story_id: int) -> NewItem:
    a = p.article
    return NewItem(
        identity=p.keyed.identity,
        content_hash=p.keyed.content_hash,
        hash_version=HASH_VERSION,
        title=a.title,
        text=a.body,
        html=a.html,
        link=a.link,
        author=a.author,
        published_at=a.published,
        language=a.language,
        fetched_at=now,
        story_id=story_id,
    )
