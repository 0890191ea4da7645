"""Engines, transactions and the schema version (SPEC §8, FAULTS 54–57).

* `make_engine` knows the two supported databases. SQLite runs in WAL with a 10 s busy timeout and
  foreign keys on; SQLAlchemy, not the sqlite3 module, emits BEGIN, so that a write transaction takes
  the write lock up front (`BEGIN IMMEDIATE`). A deferred read-then-write transaction could otherwise
  fail with SQLITE_BUSY_SNAPSHOT instead of waiting (https://sqlite.org/isolation.html). PostgreSQL
  checks a pooled connection before use (`_check_connection`), so a restarted server costs one
  reconnect, not a failed poll.
* `transaction` is one write transaction; `read_session` reads (on PostgreSQL each statement on its
  own, read-only, from a pool of reading connections). Both translate SQLAlchemy errors into
  `StoreError`, so callers catch only our exception tree.
* `upgrade` and `ensure_schema` run the Alembic migrations shipped in `monitor/store/migrations/` (a
  Python package, so an installed wheel carries them); no alembic.ini is needed anywhere. A database
  whose revision this code does not know is newer than the code and is refused.
"""

from __future__ import annotations

import os
import select
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session

from monitor.errors import DatabaseLocationError, SchemaVersionError, StoreError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "WriterLock",
    "alembic_config",
    "check_sqlite_location",
    "current_revision",
    "ensure_schema",
    "head_revision",
    "make_engine",
    "read_engine",
    "read_session",
    "sqlite_file",
    "transaction",
    "upgrade",
    "writer_lock",
]

BUSY_TIMEOUT_SECONDS = 10.0
MIGRATIONS = Path(__file__).with_name("migrations")
# The newest revision under migrations/versions (a test holds it to Alembic's own head): a start
# against a database already there reads its version without importing Alembic (about 11 MB).
HEAD_REVISION = "0012"

_WRITE_OPTION = "monitor_write"  # execution option: this connection's BEGIN is BEGIN IMMEDIATE
_MIGRATION_LOCK = 7_261_504_118  # pg_advisory_xact_lock key: one replica migrates at a time


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///PATH` URL; None for PostgreSQL, `:memory:` and `file:` URIs."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None
    return Path(database)


def check_sqlite_location(path: Path, *, create: bool) -> None:
    """Refuse, naming the path, a SQLite file this process cannot use: its folder missing or not
    writable (WAL adds `-wal` and `-shm` files beside it), the file itself read-only, or — when the
    command must not `create` one — no file yet. Raises DatabaseLocationError."""
    directory = path.absolute().parent
    if not directory.is_dir():
        raise DatabaseLocationError(
            f"the folder of the SQLite database {path} does not exist: create {directory}, "
            "or set database.url to another path"
        )
    if not create:
        if not path.exists():
            raise DatabaseLocationError(
                f"no database at {path.absolute()} yet: `monitor once` or `monitor run` creates "
                "it (or check database.url)"
            )
        return
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DatabaseLocationError(
            f"the folder of the SQLite database {path} is not writable ({directory}): the "
            "database needs to create files beside it; make it writable for this user, "
            "or set database.url to another path"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseLocationError(
            f"the SQLite database {path} is read-only for this user: make it writable, "
            "or set database.url to another path"
        )


def make_engine(url: str, *, create: bool = True, application_name: str | None = None) -> Engine:
    """An engine for `sqlite:///path` or `postgresql+psycopg://…`.

    A plain `postgresql://` URL gets the psycopg (3) driver. Nothing is connected yet, except that a
    SQLite file this process cannot use is refused here, naming the path (`check_sqlite_location`);
    with `create=False` (commands that only read) a SQLite file that does not exist is refused
    instead of being created empty. `application_name` names the connections in PostgreSQL's
    `pg_stat_activity` (which replica holds which connection).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"database url {url!r} is not valid: {exc}") from exc
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            path = sqlite_file(url)
            if path is not None:
                check_sqlite_location(path, create=create)
            engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        if backend == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            connect_args = {"application_name": application_name[:63]} if application_name else {}
            engine = create_engine(parsed, connect_args=connect_args)
            event.listen(engine, "checkout", _check_connection)
            reader = create_engine(
                _read_only(parsed), connect_args=connect_args, isolation_level="AUTOCOMMIT"
            )
            event.listen(reader, "checkout", _check_connection)
            event.listen(engine, "engine_disposed", lambda _engine: reader.dispose())
            _READERS[engine] = reader
            return engine
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"database url {parsed.render_as_string()}: {exc}") from exc
    raise StoreError(
        f"database url {parsed.render_as_string()}: unsupported database {backend!r} "
        "(use sqlite:///path or postgresql+psycopg://user@host/db)"
    )


# PostgreSQL: each engine's pool of connections for `read_session`, whose statements run on their
# own (autocommit) in read-only transactions (`_read_only`).
_READERS: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def _read_only(url: URL) -> URL:
    """`url` whose connections make every transaction read-only unless it says otherwise (its
    `options` keep what they had, a search_path for one)."""
    options = url.query.get("options")
    before = options if isinstance(options, str) else " ".join(options or ())
    return url.update_query_dict({"options": f"{before} -c default_transaction_read_only=on"})


def _check_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled PostgreSQL connection is checked out only if the server has not ended it: an idle
    connection has nothing to read, and one the server ended (a restart, pg_terminate_backend)
    has its closing message and end of file waiting. The pool replaces a connection refused
    here with a new one. A look at the socket (about 2 µs) instead of pool_pre_ping's round
    trip (45-65 µs of CPU and a wait for the server at each checkout, that is at each poll)."""
    if dbapi_connection.closed:
        raise DisconnectionError("the connection is closed")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server ended the connection")


SQLITE_PAGE_CACHE_KIB = 512  # per connection


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 module (it would issue a deferred BEGIN of its own);
    # `_sqlite_on_begin` emits it instead. COMMIT and ROLLBACK still work as usual.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
        # In WAL, NORMAL loses no committed transaction to a process crash; a power cut may roll
        # back the last few, never corrupt the file.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # Each pooled connection keeps its own page cache, 2 MB by default and held once filled:
        # 10 connections, 20 MB. In WAL a connection's cache is dropped whenever another commits,
        # so a larger one is seldom reused; the OS's file cache is behind it either way.
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_PAGE_CACHE_KIB}")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    write = connection.get_execution_options().get(_WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _with_options(engine: Engine, **options: Any) -> Engine:
    """`engine.execution_options(**options)`, made once per engine and options and kept on it:
    making one takes 50-200 µs of CPU (it copies the engine's event dispatch), at every
    transaction otherwise."""
    key = f"_monitor_options_{sorted(options.items())}"
    made: Engine | None = engine.__dict__.get(key)
    if made is None:
        made = engine.__dict__[key] = engine.execution_options(**options)
    return made


def _writer(engine: Engine) -> Engine:
    return _with_options(engine, **{_WRITE_OPTION: True})


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        # The driver's message, without the SQL and its parameters (whole articles); the full
        # error stays reachable as __cause__.
        detail = str(exc.orig if isinstance(exc, DBAPIError) else exc).strip()
        raise StoreError(f"{what} failed: {detail[:500]}") from exc


class WriterLock:
    """One write transaction at a time, where urgent writers go before the others waiting.

    An urgent write is short and something waits on it that cannot wait long: the "sent" mark of
    an alert Telegram has accepted (until it is written, a crash or a lost lease sends the alert
    again). Poll writes are long and can wait: one of them finishing a little later costs nothing.
    Among writers of the same kind the order is not defined."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._held = False
        self.waiting = 0  # writers waiting for the lock now
        self.urgent_waiting = 0  # of them, urgent

    @contextmanager
    def held(self, *, urgent: bool = False) -> Iterator[None]:
        with self._condition:
            self.waiting += 1
            self.urgent_waiting += urgent
            try:
                while self._held or (not urgent and self.urgent_waiting):
                    self._condition.wait()
            finally:
                self.waiting -= 1
                self.urgent_waiting -= urgent
            self._held = True
        try:
            yield
        finally:
            with self._condition:
                self._held = False
                self._condition.notify_all()


_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, WriterLock] = weakref.WeakKeyDictionary()
_SQLITE_WRITERS_GUARD = threading.Lock()


def writer_lock(engine: Engine) -> WriterLock | None:
    """On SQLite, the lock that lets one write transaction of this engine run at a time (a
    process has one engine); None on PostgreSQL, where writers do not exclude each other.

    SQLite allows one writer anyway; queueing the threads here, instead of letting each spin in
    SQLite's busy handler while the writer competes with them for the GIL, keeps 50 concurrent polls
    from running into the busy timeout ("database is locked"), and lets an urgent write go first.
    Other processes still wait in the busy handler."""
    if engine.dialect.name != "sqlite":
        return None
    with _SQLITE_WRITERS_GUARD:
        lock = _SQLITE_WRITERS.get(engine)
        if lock is None:
            lock = _SQLITE_WRITERS[engine] = WriterLock()
        return lock


@contextmanager
def transaction(engine: Engine, *, urgent: bool = False) -> Iterator[Session]:
    """One write transaction: committed when the block ends, rolled back if it raises.

    On SQLite the write lock is taken at BEGIN (waiting up to the busy timeout for another
    writer); within this process, an `urgent` transaction goes before the others waiting
    (`WriterLock`)."""
    lock = writer_lock(engine)
    with (
        lock.held(urgent=urgent) if lock is not None else nullcontext(),
        _translated("database transaction"),
        Session(_writer(engine)) as session,
        session.begin(),
    ):
        yield session


def _reader(engine: Engine) -> Engine:
    return _with_options(engine, postgresql_readonly=True)


def read_engine(engine: Engine) -> Engine:
    """The engine whose connections `read_session` reads on: on PostgreSQL the reading pool's
    (an engine `make_engine` made), else `engine` itself. Listen to both for every statement."""
    return _READERS.get(engine, engine)


@contextmanager
def read_session(engine: Engine, *, streaming: bool = False) -> Iterator[Session]:
    """A session for reads (one snapshot on SQLite WAL; nothing is committed).

    On PostgreSQL each statement runs on its own, in a read-only transaction of its own (a
    connection of the engine's reading pool, in autocommit): no BEGIN and COMMIT round trips, two
    waits for the server that took 0.2-0.5 ms of a story lookup on a busy host. READ COMMITTED
    takes a snapshot per statement anyway, so the reads see what they saw in one transaction. The
    reading pool holds connections of its own (as many as the engine's pool at most).

    `streaming`: the reads stream rows through a server-side cursor (`items_since`), which lives
    only in a transaction. That transaction is READ ONLY and ends with COMMIT, not ROLLBACK:
    psycopg forgets every statement it has prepared on the connection at a rollback."""
    if engine.dialect.name != "postgresql":
        with _translated("database read"), Session(engine) as session:
            yield session  # closing the session rolls its transaction back
        return
    reader = _READERS.get(engine)
    if streaming or reader is None:  # None: an engine made elsewhere than `make_engine`
        with _translated("database read"), Session(_reader(engine)) as session:
            yield session
            session.commit()  # a read-only transaction: nothing to write
        return
    with _translated("database read"), Session(reader) as session:
        yield session


# --- schema version ------------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration of the shipped migrations, built in memory.

    With `connection`, the migration environment runs on it (inside its transaction). To write a
    new revision in a checkout: take this config, set its `sqlalchemy.url` to a database at head,
    and call `alembic.command.revision(config, "what changes", autogenerate=True)`; then edit and
    review the generated file under `migrations/versions/`.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations have exactly one head"
    return head


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return {revision.revision for revision in script.walk_revisions()}


def _revision_of(connection: Connection) -> str | None:
    # The table Alembic keeps its version in, read as Alembic does (one row per head).
    if not inspect(connection).has_table("alembic_version"):
        return None
    heads = tuple(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    if len(heads) > 1:
        raise SchemaVersionError(f"database schema has several heads {heads}: fix it by hand")
    return heads[0] if heads else None


def _refuse_if_newer(current: str | None, head: str) -> None:
    if current is not None and current not in _known_revisions():
        raise SchemaVersionError(
            f"database schema is at revision {current}, newer than this monitor (head {head}): "
            "upgrade monitor"
        )


def current_revision(engine: Engine) -> str | None:
    """The database's revision, None for a database never migrated."""
    with _translated("reading the schema version"), engine.connect() as connection:
        return _revision_of(connection)


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Migrate the database to the head revision; return (revision before, revision after).

    One transaction (DDL is transactional on both databases). On PostgreSQL an advisory lock makes
    replicas that start together migrate one after the other; on SQLite BEGIN IMMEDIATE does.
    """
    head = head_revision()
    with _translated("database upgrade"), _writer(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        before = _revision_of(connection)
        _refuse_if_newer(before, head)
        if before != head:
            from alembic import command

            command.upgrade(alembic_config(connection), "head")
    return before, head


def ensure_schema(engine: Engine, *, upgrade: bool) -> None:
    """Refuse a database newer than this code; bring an older one to head, or tell how to.

    Raises `SchemaVersionError` for a newer database, and for an older one when `upgrade` is false.
    """
    current = current_revision(engine)
    if current == HEAD_REVISION:
        return
    head = head_revision()
    _refuse_if_newer(current, head)
    if current == head:
        return
    if not upgrade:
        state = "not initialised" if current is None else f"at revision {current}"
        raise SchemaVersionError(
            f"database schema is {state}, older than this monitor (head {head}): "
            "run `monitor db upgrade`"
        )
    _upgrade(engine)


_upgrade = upgrade  # `ensure_schema`'s keyword shadows the function's name
