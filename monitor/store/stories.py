"""Items and the stories that group them: finding an item by (feed, identity), storing new and
changed items, the story of an exact content hash, near-copy candidates by fingerprint hashes,
the backtest's item stream and retention (`prune`).

Inserts that may race — the story of a hash, the item of (feed, identity) — are `INSERT … ON
CONFLICT DO NOTHING` against the unique keys and report whether they inserted. A near-copy has no
such key: `story_locks` makes the transactions that could decide one story take turns.
Deciding what is a near-copy is `core.stories`' job, not this module's.

Functions take a Session and never commit. Feeds are in `feeds`; matches and alerts in `alerts`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    CompoundSelect,
    Integer,
    String,
    and_,
    bindparam,
    column,
    delete,
    exists,
    func,
    literal_column,
    null,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TextualSelect
from sqlalchemy.types import TypeEngine

from monitor.store._shared import (
    array_literal,
    in_id_array,
    insert_ignore,
    insert_ignore_many,
    rowcount,
    takes_arrays,
)
from monitor.store.tables import alerts, clean_text, feeds, items, matches, stories, story_hashes

__all__ = [
    "FeedItems",
    "NewItem",
    "StoredItem",
    "StoredItemRef",
    "StoryCandidates",
    "StoryItem",
    "StoryReads",
    "add_fingerprint",
    "add_story_hashes",
    "feed_says_already",
    "find_item",
    "forget_story_hashes",
    "identity_key",
    "insert_item",
    "insert_items",
    "insert_stories",
    "item_texts",
    "items_since",
    "prune",
    "stored_versions",
    "stories_of_hashes",
    "story_candidates",
    "story_for_hash",
    "story_of_hash",
    "story_reads",
    "update_item",
    "update_items",
]


MAX_IDENTITY_BYTES = 1024  # a longer identity is stored as its digest: btree keys must stay small
_IN_CHUNK = 500  # values per IN (…): a feed of 300,000 items is read in pages, not one statement


@dataclass(frozen=True, slots=True)
class StoredItemRef:
    """An item already stored for (feed, identity): enough to tell unchanged from updated."""

    id: int
    content_hash: str
    hash_version: int
    story_id: int
    fetched_at: datetime  # first seen


@dataclass(frozen=True, slots=True)
class NewItem:
    """An item to insert or to update. `fetched_at` is when this version was fetched."""

    identity: str
    content_hash: str
    hash_version: int
    title: str
    text: str
    html: str | None
    link: str | None
    author: str | None
    published_at: datetime | None
    language: str | None
    fetched_at: datetime
    story_id: int


@dataclass(frozen=True, slots=True)
class StoredItem:
    """A stored item as a backtest reads it."""

    id: int
    story_id: int
    feed_name: str
    title: str
    text: str
    language: str | None
    published_at: datetime | None
    fetched_at: datetime
    link: str | None


@dataclass(frozen=True, slots=True)
class StoryItem:
    """An item of a story as the story rules weigh it (core.stories.Report): where it came
    from, when (published, else first seen), its headline, and its id, by which its text is read
    (`item_texts`) when the rules may look at it (core.stories.texts_read): most never are, and
    the texts were most of what a poll's story reads held in memory."""

    story_id: int
    item_id: int
    feed_name: str
    link: str | None
    at: datetime
    title: str
    language: str | None


@dataclass(frozen=True, slots=True)
class FeedItems:
    """What a feed has stored of the identities and content hashes a poll brought: the stored
    version of each identity (by its stored key, `identity_key`), and how many of the feed's
    items have each of the hashes."""

    by_identity: dict[str, StoredItemRef]
    hash_counts: dict[str, int]


def identity_key(identity: str) -> str:
    """The identity as the database has it: `_identity_key`, cleaned as every stored text is."""
    return clean_text(_identity_key(identity))


def _identity_key(identity: str) -> str:
    """The identity as stored: itself, or `sha256:<hex>` when too long for a unique index."""
    encoded = clean_text(identity).encode("utf-8")
    if len(encoded) <= MAX_IDENTITY_BYTES:
        return identity
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def find_item(session: Session, feed_id: int, identity: str) -> StoredItemRef | None:
    """The stored item of `feed_id` with this identity, if any."""
    row = session.execute(
        select(
            items.c.id,
            items.c.content_hash,
            items.c.hash_version,
            items.c.story_id,
            items.c.fetched_at,
        ).where(items.c.feed_id == feed_id, items.c.identity == _identity_key(identity))
    ).first()
    return None if row is None else StoredItemRef(**row._mapping)


def _chunks(values: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield list(values[start : start + _IN_CHUNK])


def stored_versions(
    session: Session, feed_id: int, identities: Sequence[str], hashes: Sequence[str]
) -> FeedItems:
    """For one poll, in one query (a page per 500 values for huge feeds): the feed's stored items
    that have one of `identities` or one of `hashes`."""
    keys = sorted({_identity_key(identity) for identity in identities})
    wanted = sorted(set(hashes))
    by_identity: dict[str, StoredItemRef] = {}
    hash_counts: dict[str, int] = {}
    seen: set[int] = set()
    pages = max(len(keys), len(wanted))
    for start in range(0, pages, _IN_CHUNK):
        some_keys = keys[start : start + _IN_CHUNK]
        some_hashes = wanted[start : start + _IN_CHUNK]
        rows = session.execute(
            select(
                items.c.id,
                items.c.identity,
                items.c.content_hash,
                items.c.hash_version,
                items.c.story_id,
                items.c.fetched_at,
            ).where(
                items.c.feed_id == feed_id,
                or_(items.c.identity.in_(some_keys), items.c.content_hash.in_(some_hashes)),
            )
        )
        for row in rows:
            if row.id in seen:
                continue
            seen.add(row.id)
            by_identity[row.identity] = StoredItemRef(
                row.id, row.content_hash, row.hash_version, row.story_id, row.fetched_at
            )
            hash_counts[row.content_hash] = hash_counts.get(row.content_hash, 0) + 1
    return FeedItems(by_identity, hash_counts)


def feed_says_already(session: Session, feed_id: int, content_hash: str) -> bool:
    """Whether `feed_id` has an item with this content hash already, under any identity."""
    found = session.execute(
        select(items.c.id)
        .where(items.c.content_hash == content_hash, items.c.feed_id == feed_id)
        .limit(1)
    ).first()
    return found is not None


def story_for_hash(session: Session, content_hash: str, now: datetime) -> tuple[int, bool]:
    """The story of this content hash, created if absent: (story id, created by this call).

    Race-safe: when another transaction creates the same story first, PostgreSQL makes the insert
    wait for it and do nothing, and the story is then read back.
    """
    values = {"content_hash": content_hash, "created_at": now}
    story_id = insert_ignore(session, stories, values, ["content_hash"])
    if story_id is not None:
        return story_id, True
    existing = session.execute(
        select(stories.c.id).where(stories.c.content_hash == content_hash)
    ).scalar_one()
    return existing, False


def story_of_hash(session: Session, content_hash: str) -> int | None:
    """The story of an exact copy: the story that this content hash created, else the story of
    any stored item with this hash (one that joined its story as a near-copy), however old."""
    created = select(stories.c.id).where(stories.c.content_hash == content_hash)
    story_id: int | None = session.execute(created).scalar_one_or_none()
    if story_id is not None:
        return story_id
    joined = (
        select(items.c.story_id)
        .where(items.c.content_hash == content_hash)
        .order_by(items.c.id)
        .limit(1)
    )
    found: int | None = session.execute(joined).scalar_one_or_none()
    return found


# The reads of deciding a poll's stories, built once (their compiled SQL is cached): each takes
# its values as one expanding parameter, and each is an indexed lookup.
_VALUES: BindParameter[Any] = bindparam("values", expanding=True)
_first_of_hash = (
    select(items.c.content_hash, func.min(items.c.id).label("id"))
    .where(items.c.content_hash.in_(_VALUES))
    .group_by(items.c.content_hash)
    .subquery()
)
# Both ways a hash has a story, in one round trip: the story it created (0 first), else the
# story of the first stored item with that hash (1).
_STORIES_OF_HASHES = union_all(
    select(
        stories.c.content_hash, stories.c.id.label("story_id"), literal_column("0").label("way")
    ).where(stories.c.content_hash.in_(_VALUES)),
    select(items.c.content_hash, items.c.story_id, literal_column("1").label("way")).join(
        _first_of_hash, _first_of_hash.c.id == items.c.id
    ),
)
_at = func.coalesce(items.c.published_at, items.c.fetched_at).label("at")


def _story_reads_statement(
    story_ids: ColumnElement[bool], matched_ids: ColumnElement[bool]
) -> CompoundSelect[Any]:
    """The items of some stories and the watchlists other stories have matched, in one statement:
    an item row has no watchlist, a match row only its story and watchlist. The item rows come in
    order of story, date and id (the match rows fall among them)."""
    item_rows = (
        select(
            items.c.story_id,
            feeds.c.name.label("feed_name"),
            items.c.link,
            _at,
            items.c.title,
            items.c.language,
            items.c.id.label("item_id"),
            null().label("watchlist"),
        )
        .join(feeds, feeds.c.id == items.c.feed_id)
        .where(story_ids)
    )
    empty = ("feed_name", "link", "at", "title", "language", "item_id")
    match_rows = select(
        matches.c.story_id, *(null().label(name) for name in empty), matches.c.watchlist
    ).where(matched_ids)
    return union_all(item_rows, match_rows).order_by("story_id", "at", "item_id")


_STORY_READS = _story_reads_statement(
    items.c.story_id.in_(_VALUES), matches.c.story_id.in_(bindparam("matched", expanding=True))
)
# On PostgreSQL the ids are array parameters: the statement's text is the same for any number
# of ids, so psycopg prepares it after a few executions and the server keeps its plan.
_STORY_READS_ANY = _story_reads_statement(
    in_id_array(items.c.story_id, "values"), in_id_array(matches.c.story_id, "matched")
)


def stories_of_hashes(session: Session, hashes: Sequence[str]) -> dict[str, int]:
    """`story_of_hash` for many hashes (hash → story id; a hash without a story is left out): the
    story each hash created, else the story of the first stored item with that hash (one that
    joined its story as a near-copy). One query, whatever the number of hashes."""
    created: dict[str, int] = {}
    joined: dict[str, int] = {}
    for some in _chunks(sorted(set(hashes))):
        for row in session.execute(_STORIES_OF_HASHES, {"values": some}):
            (joined if row.way else created)[row.content_hash] = row.story_id
    return joined | created


@dataclass(frozen=True, slots=True)
class StoryCandidates:
    """What a poll's items may join (`story_candidates`): the story of each exact content hash,
    the best candidates of each lookup (story id, hashes shared; the most shared first, then the
    oldest), and the stored fingerprint of every candidate."""

    exact: dict[str, int]
    ranked: list[list[tuple[int, int]]]
    fingerprints: dict[int, str | None]
    # Read along on PostgreSQL (`story_candidates`' `read_along`), as `story_reads` reads them:
    # the items of each story read (oldest first, without their texts), the watchlists of each
    # story read.
    items: dict[int, list[StoryItem]] = field(default_factory=dict)
    matched: dict[int, set[str]] = field(default_factory=dict)


def story_candidates(
    session: Session,
    content_hashes: Sequence[str],
    lookups: Sequence[Sequence[int]],
    since: datetime,
    limit: int,
    *,
    read_along: int | None = None,
    stories_matched: Collection[int] = (),
) -> StoryCandidates:
    """In one round trip (a statement per 500 content hashes for huge polls):
    `stories_of_hashes(content_hashes)`, and for each lookup (a group of index hashes), the
    `limit` stories created since `since` sharing most of its hashes, with their fingerprints.

    Ranked in the database, so that stories sharing only a common phrase's hash cannot crowd the
    limit out of the true copy, which shares most of them, and only the best are sent back.

    With `read_along` on PostgreSQL, the same statement reads what `story_reads` would of the
    stories likely to be wanted next: the items of the candidates sharing at least `read_along`
    hashes with a lookup, and the watchlists matched by those, by the exact hashes' stories and by
    `stories_matched`; a poll that joins a stored story then needs no second round trip."""
    hashes = sorted(set(content_hashes))
    created: dict[str, int] = {}
    joined: dict[str, int] = {}
    ranked: list[list[tuple[int, int]]] = [[] for _ in lookups]
    fingerprints: dict[int, str | None] = {}
    items_of: dict[int, list[tuple[datetime, int, StoryItem]]] = {}
    watchlists: dict[int, set[str]] = {}
    along = read_along is not None and takes_arrays(session)
    ran = False
    for statement, values in _candidate_pages(session, hashes, lookups, along):
        ran = True
        values |= {"since": since, "limit": limit}
        if along:
            values |= {"read_along": read_along, "stories": array_literal(stories_matched)}
        for row in session.execute(statement, values):
            if row.way == "near":
                ranked[row.lookup].append((row.story_id, row.shared))
                fingerprints[row.story_id] = row.detail
            elif row.way == "item":
                item = StoryItem(
                    row.story_id,
                    row.shared,
                    row.feed_name,
                    row.link,
                    row.at,
                    row.title,
                    row.language,
                )
                items_of.setdefault(row.story_id, []).append((row.at, row.shared, item))
            elif row.way == "matched":
                watchlists.setdefault(row.story_id, set()).add(row.detail)
            else:
                (created if row.way == "created" else joined)[row.detail] = row.story_id
    for found in ranked:
        found.sort(key=lambda pair: (-pair[1], pair[0]))
    exact = joined | created
    if not (along and ran):
        return StoryCandidates(exact, ranked, fingerprints)
    # Which stories were read along, those without rows too, as the statement chose them.
    read = {story for found in ranked for story, shared in found if shared >= (read_along or 0)}
    items = {story: [i for _, _, i in sorted(items_of.get(story, []))] for story in read}
    matched = {story: watchlists.get(story, set()) for story in read | set(exact.values())}
    matched |= {story: watchlists.get(story, set()) for story in stories_matched}
    return StoryCandidates(exact, ranked, fingerprints, items, matched)


def _candidate_pages(
    session: Session, hashes: Sequence[str], lookups: Sequence[Sequence[int]], along: bool = False
) -> Iterator[tuple[TextClause | TextualSelect, dict[str, Any]]]:
    """`story_candidates`' statements and their values. On PostgreSQL one statement of constant
    text whatever the poll, its values in arrays: psycopg prepares it after a few executions
    and the server keeps its plan instead of planning it at every poll (0.4-0.5 ms a time).
    Elsewhere (SQLite has no arrays) the (lookup, hash) pairs as one JSON text, and the content
    hashes in pages of `_IN_CHUNK`: two statements in all, whatever the poll. A statement whose
    text grew with the pairs, a bind parameter each, was compiled and kept once per number of
    pairs: with every item's headline keys looked up, hundreds of sizes and ~130 MB of the
    daemon's memory."""
    if takes_arrays(session):
        numbers = [number for number, lookup in enumerate(lookups) for _ in lookup]
        lookup_hashes = [h for lookup in lookups for h in lookup]
        if hashes or lookup_hashes:
            values: dict[str, Any] = {
                "hashes": array_literal(hashes),
                "lookups": array_literal(numbers),
                "lookup_hashes": array_literal(lookup_hashes),
            }
            statement = (
                _candidates_reading_along()
                if along
                else _candidates_statement(arrays=True, lookups=True)
            )
            yield statement, values
        return
    pairs = [(number, h) for number, lookup in enumerate(lookups) for h in lookup]
    for page in range(max(1 if pairs else 0, -(-len(hashes) // _IN_CHUNK))):
        some_hashes = hashes[page * _IN_CHUNK : (page + 1) * _IN_CHUNK]
        rows = pairs if page == 0 else []
        if not rows and not some_hashes:
            continue
        values = {"hashes": some_hashes}
        if rows:
            values["pairs"] = json.dumps(rows)
        yield _candidates_statement(arrays=False, lookups=bool(rows)), values


_IN_HASH_ARRAY = "= ANY(CAST(:hashes AS VARCHAR[]))"  # PostgreSQL: the hashes as one array


def _exact_stories(in_hashes: str, *, candidate_columns: bool) -> str:
    """The rows of the stories of the content hashes `:hashes` (`in_hashes` compares a column with
    them): the story a hash created (`created`), else that of the first item stored with it
    (`joined`), the hash in `detail`. With `candidate_columns`, NULL `lookup` and `shared`
    columns too, in the order of the candidates' rows."""
    lookup, shared = ("NULL AS lookup, ", "NULL AS shared, ") if candidate_columns else ("", "")
    null = "NULL, " if candidate_columns else ""
    return f"""
        SELECT 'created' AS way, {lookup}stories.id AS story_id, {shared}
               stories.content_hash AS detail
        FROM stories WHERE stories.content_hash {in_hashes}
        UNION ALL
        SELECT 'joined', {null}items.story_id, {null}items.content_hash
        FROM items JOIN (
            SELECT min(items.id) AS id FROM items WHERE items.content_hash {in_hashes}
            GROUP BY items.content_hash
        ) AS first_of_hash ON first_of_hash.id = items.id"""


@cache
def _candidates_statement(*, arrays: bool, lookups: bool) -> TextClause:
    """`story_candidates`' statement: for content hashes alone, or (`lookups`) for the
    headline lookups too. `arrays`: PostgreSQL's, whose values are arrays, lookups always; else
    the (lookup, hash) pairs come in JSON."""
    in_hashes = _IN_HASH_ARRAY if arrays else "IN :hashes"
    exact = _exact_stories(in_hashes, candidate_columns=True)
    if not lookups:
        sql = exact
    else:
        if arrays:
            wanted = "SELECT * FROM unnest(CAST(:lookups AS INTEGER[]), CAST(:lookup_hashes AS BIGINT[]))"
        else:
            wanted = (
                "SELECT CAST(json_extract(value, '$[0]') AS INTEGER),"
                " CAST(json_extract(value, '$[1]') AS BIGINT) FROM json_each(:pairs)"
            )
        # The hashes an index row shares with a lookup, counted once per (hash, story) however
        # often the index holds the pair; each lookup's stories ranked by how many they share.
        sql = f"""
        WITH wanted (lookup, hash) AS ({wanted}),
        indexed AS (
            SELECT DISTINCT story_hashes.hash, story_hashes.story_id FROM story_hashes
            WHERE story_hashes.hash IN (SELECT hash FROM wanted)
              AND story_hashes.created_at >= :since
        ),
        counted AS (
            SELECT wanted.lookup, indexed.story_id, count(*) AS shared
            FROM wanted JOIN indexed ON indexed.hash = wanted.hash
            GROUP BY wanted.lookup, indexed.story_id
        ),
        ranked AS (
            SELECT lookup, story_id, shared, row_number() OVER (
                PARTITION BY lookup ORDER BY shared DESC, story_id
            ) AS place
            FROM counted
        )
        SELECT 'near' AS way, ranked.lookup, ranked.story_id, ranked.shared,
               stories.fingerprint AS detail
        FROM ranked JOIN stories ON stories.id = ranked.story_id
        WHERE ranked.place <= :limit
        UNION ALL {exact}"""
    if arrays:
        # The arrays come as literals (`array_literal`), cast in the statement.
        return text(sql).bindparams(bindparam("since", type_=story_hashes.c.created_at.type))
    # Typed: a page of lookups without hashes renders an empty IN of text, not of integers.
    statement = text(sql).bindparams(bindparam("hashes", expanding=True, type_=String()))
    if lookups:
        statement = statement.bindparams(bindparam("since", type_=story_hashes.c.created_at.type))
    return statement


@cache
def _candidates_reading_along() -> TextualSelect:
    """PostgreSQL's `story_candidates` statement with `read_along`: its rows, then the items of
    the candidates sharing `:read_along` hashes or more with a lookup (`item` rows, without the
    item's text: its id in `shared`), and the watchlists (`matched` rows, in `detail`) of those, of the exact hashes'
    stories and of `:stories`. The columns an item row needs are NULL in the others."""
    base = _candidates_statement(arrays=True, lookups=True).text
    head = base.partition("SELECT 'near' AS way")[0]
    nothing = """, CAST(NULL AS TEXT) AS feed_name, CAST(NULL AS TEXT) AS link,
               CAST(NULL AS TIMESTAMPTZ) AS at, CAST(NULL AS TEXT) AS title,
               CAST(NULL AS TEXT) AS language"""
    sql = f"""{head.rstrip()},
        best AS (
            SELECT lookup, story_id, shared FROM ranked WHERE place <= :limit
        ),
        exact AS ({_exact_stories(_IN_HASH_ARRAY, candidate_columns=False)}
        ),
        read_along AS (SELECT DISTINCT story_id FROM best WHERE shared >= :read_along)
        SELECT 'near' AS way, best.lookup, best.story_id, best.shared,
               stories.fingerprint AS detail{nothing}
        FROM best JOIN stories ON stories.id = best.story_id
        UNION ALL
        SELECT way, NULL, story_id, NULL, detail, NULL, NULL, NULL, NULL, NULL
        FROM exact
        UNION ALL
        SELECT 'item', NULL, items.story_id, items.id, NULL, feeds.name, items.link,
               coalesce(items.published_at, items.fetched_at), items.title, items.language
        FROM read_along JOIN items ON items.story_id = read_along.story_id
        JOIN feeds ON feeds.id = items.feed_id
        UNION ALL
        SELECT 'matched', NULL, matches.story_id, NULL, matches.watchlist,
               NULL, NULL, NULL, NULL, NULL
        FROM matches WHERE matches.story_id IN (
            SELECT story_id FROM read_along UNION SELECT story_id FROM exact
            UNION SELECT unnest(CAST(:stories AS BIGINT[]))
        )"""
    # Every column typed, in order: SQLAlchemy then matches them by position and keeps the
    # result's description from one execution to the next instead of building it each time.
    names = ("way", "lookup", "story_id", "shared", "detail", "feed_name", "link", "at", "title")
    types: dict[str, TypeEngine[Any]] = {"lookup": Integer(), "at": items.c.published_at.type}
    types |= {"story_id": BigInteger(), "shared": BigInteger()}
    return (
        text(sql)
        .bindparams(bindparam("since", type_=story_hashes.c.created_at.type))
        .columns(*(column(name, types.get(name, String())) for name in (*names, "language")))
    )


@dataclass(frozen=True, slots=True)
class StoryReads:
    """What deciding a poll's stories reads of stored stories (`story_reads`): the items of each
    story it may join (story id → its items, oldest first) and the watchlists each story it may
    end up in has matched (story id → watchlists; every story asked for has an entry)."""

    items: dict[int, list[StoryItem]]
    matched: dict[int, set[str]]


def story_reads(
    session: Session, item_stories: Collection[int], matched_stories: Collection[int]
) -> StoryReads:
    """The items of `item_stories` (without their texts: `item_texts`) and the watchlists
    `matched_stories` have matched, in one round trip (a statement per 500 ids of each on SQLite;
    none when both are empty): a poll that joins a story reads both, and the second read cost a
    round trip of its own."""
    found: dict[int, list[StoryItem]] = {}
    matched: dict[int, set[str]] = {story_id: set() for story_id in matched_stories}
    wanted, wanted_matched = sorted(set(item_stories)), sorted(matched)
    pages: list[tuple[Any, Any]]
    if not wanted and not wanted_matched:
        pages = []
    elif takes_arrays(session):  # the ids as array literals: the same text always
        pages = [(array_literal(wanted), array_literal(wanted_matched))]
        statement = _STORY_READS_ANY
    else:
        count = max(len(wanted), len(wanted_matched))
        pages = [
            (wanted[start : start + _IN_CHUNK], wanted_matched[start : start + _IN_CHUNK])
            for start in range(0, count, _IN_CHUNK)
        ]
        statement = _STORY_READS
    for some, some_matched in pages:
        for row in session.execute(statement, {"values": some, "matched": some_matched}):
            if row.watchlist is not None:
                matched[row.story_id].add(row.watchlist)
                continue
            found.setdefault(row.story_id, []).append(
                StoryItem(
                    row.story_id,
                    row.item_id,
                    row.feed_name,
                    row.link,
                    row.at,
                    row.title,
                    row.language,
                )
            )
    return StoryReads(found, matched)


_ITEM_TEXTS = select(items.c.id, items.c.text).where(items.c.id.in_(_VALUES))
_ITEM_TEXTS_ANY = select(items.c.id, items.c.text).where(in_id_array(items.c.id, "values"))


def item_texts(session: Session, item_ids: Collection[int]) -> dict[int, str]:
    """item id → text of the stored items `item_ids` (an item gone meanwhile is left out), in one
    statement (a statement per 500 ids on SQLite; none for no ids): the texts the story rules
    may read of the items `story_reads` and `story_candidates` read without them."""
    wanted = sorted(set(item_ids))
    if not wanted:
        return {}
    if takes_arrays(session):  # the ids as an array literal: the same text always
        rows = session.execute(_ITEM_TEXTS_ANY, {"values": array_literal(wanted)})
        return {row.id: row.text for row in rows}
    texts: dict[int, str] = {}
    for some in _chunks(wanted):
        texts.update((row.id, row.text) for row in session.execute(_ITEM_TEXTS, {"values": some}))
    return texts


def insert_stories(
    session: Session, new: Sequence[tuple[str, str | None]], now: datetime
) -> tuple[dict[str, int], set[str]]:
    """Create the stories of (content hash, fingerprint) pairs in one round trip. Returns hash →
    story id of each, and the hashes whose story this call created (another transaction made
    the others meanwhile, with its own fingerprint)."""
    rows = [{"content_hash": h, "created_at": now, "fingerprint": fp} for h, fp in new]
    made = insert_ignore_many(session, stories, rows, ["content_hash"], ["id", "content_hash"])
    found = {row.content_hash: row.id for row in made}
    created = set(found)
    missing = [h for h, _ in new if h not in found]
    if missing:
        found.update(stories_of_hashes(session, missing))
    return found, created


def add_story_hashes(session: Session, indexed: Sequence[tuple[int, int]], now: datetime) -> None:
    """Index (story id, hash) pairs of new stories' fingerprints (core.stories), in one round
    trip."""
    if indexed:
        session.execute(
            story_hashes.insert(),
            [{"story_id": story_id, "hash": h, "created_at": now} for story_id, h in indexed],
        )


def add_fingerprint(
    session: Session, story_id: int, fingerprint: str, smallest: Sequence[int], now: datetime
) -> None:
    """Store a story's fingerprint and index its `smallest` hashes (core.stories)."""
    session.execute(update(stories).where(stories.c.id == story_id).values(fingerprint=fingerprint))
    if smallest:
        session.execute(
            story_hashes.insert(),
            [{"story_id": story_id, "hash": h, "created_at": now} for h in smallest],
        )


def _item_values(item: NewItem) -> dict[str, Any]:
    return {
        "content_hash": item.content_hash,
        "hash_version": item.hash_version,
        "title": item.title,
        "text": item.text,
        "html": item.html,
        "link": item.link,
        "author": item.author,
        "published_at": item.published_at,
        "language": item.language,
    }


def insert_item(session: Session, feed_id: int, item: NewItem) -> int | None:
    """Insert a new item; its id, or None if (feed, identity) was stored meanwhile by another
    process (then treat it as seen)."""
    values = _item_values(item) | {
        "feed_id": feed_id,
        "identity": _identity_key(item.identity),
        "fetched_at": item.fetched_at,
        "story_id": item.story_id,
    }
    return insert_ignore(session, items, values, ["feed_id", "identity"])


def insert_items(session: Session, feed_id: int, new: Sequence[NewItem]) -> dict[str, int]:
    """Insert new items in one round trip; return stored identity key → id of those inserted
    (one that (feed, identity) had already, stored meanwhile by another process, is left out)."""
    rows = [
        _item_values(item)
        | {
            "feed_id": feed_id,
            "identity": _identity_key(item.identity),
            "fetched_at": item.fetched_at,
            "story_id": item.story_id,
        }
        for item in new
    ]
    made = insert_ignore_many(session, items, rows, ["feed_id", "identity"], ["id", "identity"])
    return {row.identity: row.id for row in made}


def update_items(session: Session, changed: Sequence[tuple[int, NewItem]]) -> None:
    """`update_item` for many items in one round trip (an executemany), in the order given."""
    if not changed:
        return
    names = [*_item_values(changed[0][1]), "story_id", "updated_at"]
    statement = (
        update(items)
        .where(items.c.id == bindparam("item_id"))
        .values({name: bindparam(f"new_{name}") for name in names})
    )
    rows = []
    for item_id, item in changed:
        values = _item_values(item) | {"story_id": item.story_id, "updated_at": item.fetched_at}
        rows.append({"item_id": item_id} | {f"new_{k}": v for k, v in values.items()})
    session.execute(statement, rows)


def update_item(session: Session, item_id: int, item: NewItem, story_id: int) -> None:
    """Store a changed version of an item: its content, `story_id`, and `updated_at` =
    `item.fetched_at`. Identity and first `fetched_at` (retention, backtest) stay."""
    values = _item_values(item) | {"story_id": story_id, "updated_at": item.fetched_at}
    session.execute(update(items).where(items.c.id == item_id).values(values))


def items_before(session: Session, before: datetime) -> tuple[int, datetime | None]:
    """How many items were published before `before` (an undated item: first seen before it),
    and the oldest of those dates: what a backtest's window left out."""
    published = func.coalesce(items.c.published_at, items.c.fetched_at)
    count, oldest = session.execute(
        select(func.count(), func.min(published)).where(published < before)
    ).one()
    return count, oldest


def items_since(session: Session, since: datetime) -> Iterator[StoredItem]:
    """Items published at or after `since` (an undated item: first seen at or after it), oldest
    first by that date, streamed in batches: the date a backtest filters and reports by.

    Iterate while the session is open (a server-side cursor on PostgreSQL: a `read_session`
    with `streaming`).
    """
    published = func.coalesce(items.c.published_at, items.c.fetched_at)
    statement = (
        select(
            items.c.id,
            items.c.story_id,
            feeds.c.name.label("feed_name"),
            items.c.title,
            items.c.text,
            items.c.language,
            items.c.published_at,
            items.c.fetched_at,
            items.c.link,
        )
        .join(feeds, feeds.c.id == items.c.feed_id)
        .where(published >= since)
        .order_by(published, items.c.id)
        .execution_options(yield_per=500)
    )
    result = session.execute(statement)
    try:
        for row in result:
            yield StoredItem(**row._mapping)
    finally:
        result.close()


def forget_story_hashes(session: Session, before: datetime) -> int:
    """Delete the indexed hashes of stories created before `before`, which no copy joins any more
    (core.stories.WINDOW); return how many. The stories keep their fingerprints."""
    return rowcount(session.execute(delete(story_hashes).where(story_hashes.c.created_at < before)))


def prune(session: Session, older_than: datetime) -> int:
    """Delete items first fetched before `older_than` whose story never alerted; return how many.

    Stories with alerts keep every item, match and alert (the alert log). The matches of deleted
    items go with them, and so do stories left without items.
    """
    alerted_story = exists().where(alerts.c.story_id == items.c.story_id)
    alerted_item = exists().where(alerts.c.item_id == items.c.id)
    # An updated item may have moved to another story: its match with an alerted story stays.
    kept_match = exists().where(
        matches.c.item_id == items.c.id,
        exists().where(alerts.c.story_id == matches.c.story_id),
    )
    doomed = (
        select(items.c.id)
        .where(items.c.fetched_at < older_than, ~alerted_story, ~alerted_item, ~kept_match)
        .correlate(None)
    )
    session.execute(delete(matches).where(matches.c.item_id.in_(doomed)))
    deleted = rowcount(session.execute(delete(items).where(items.c.id.in_(doomed))))
    unused_story = and_(
        stories.c.created_at < older_than,
        ~exists().where(items.c.story_id == stories.c.id),
        ~exists().where(matches.c.story_id == stories.c.id),
        ~exists().where(alerts.c.story_id == stories.c.id),
    )
    session.execute(
        delete(story_hashes).where(
            story_hashes.c.story_id.in_(select(stories.c.id).where(unused_story))
        )
    )
    session.execute(delete(stories).where(unused_story))
    return deleted
