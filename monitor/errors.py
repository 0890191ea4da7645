"""One exception tree for the whole service.

    MonitorError
    ├── ConfigError        the config file is invalid; carries every problem found (exit code 2)
    ├── QueryError         a watchlist query does not parse or names an unknown entity/field
    ├── InputError         an input of `monitor match` is missing or cannot be decoded
    ├── FetchError         an HTTP fetch or local read failed (timeout, status, body too large …)
    │   └── UnsafeURLError the URL or an address it resolves to is refused (scheme, private address)
    ├── FeedParseError     the bytes are not a usable feed (not a feed, entity declarations, …)
    ├── StoreError         the database cannot be opened or a storage operation failed
    │   ├── SchemaVersionError  the schema is newer than this code, or older and not upgraded
    │   └── DatabaseLocationError  the SQLite file or its folder is missing, moved or read-only
    ├── SetupError         the machine is not ready: a port taken, a folder missing or read-only
    │   └── DatabaseLocationError  (also a StoreError)
    ├── BotError           the Telegram subscriber bot cannot start (token rejected, API unreachable)
    └── DeliveryError      a channel could not deliver an alert: temporary (retry) or permanent
        ├── RateLimitedError     the channel asked us to wait `retry_after` s (Telegram 429): not a failure
        ├── RecipientGoneError   the recipient blocked/kicked the bot or is gone: permanent, deactivate it
        ├── RecipientMovedError  the chat has a new id (group → supergroup): store it and resend there
        └── CredentialsRejectedError  the channel refused our credentials (Telegram 401): permanent
                                 for the whole channel, which stops; its alerts wait in the outbox

Third-party exceptions are translated at the boundary (`raise FetchError(...) from exc`), so callers
only ever catch these.
"""

from __future__ import annotations

from dataclasses import dataclass


class MonitorError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config file: where, which key, and what."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class ConfigError(MonitorError):
    """The configuration is invalid. `problems` lists every error found, not only the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class QueryError(MonitorError):
    """A query that does not parse. `column` is 1-based, pointing at the fault in `query`."""

    def __init__(self, message: str, column: int, query: str = "") -> None:
        self.message = message
        self.column = column
        self.query = query
        super().__init__(f"column {column}: {message}")

    def pointer(self) -> str:
        """The query with a caret under the faulty column, for terminals."""
        return f"{self.query}\n{' ' * (self.column - 1)}^"


class InputError(MonitorError):
    """An input of `monitor match` could not be read or decoded."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")


class FetchError(MonitorError):
    """Fetching a URL or reading a local feed failed."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


class UnsafeURLError(FetchError):
    """The URL is refused before any connection: bad scheme or a non-public address."""


class FeedParseError(MonitorError):
    """The fetched bytes are not a feed we accept."""


class StoreError(MonitorError):
    """The database cannot be opened, or a statement failed (locked past the busy timeout, disk
    full, connection lost …). Raised by `monitor.store`; the SQLAlchemy error is its `__cause__`."""


class SchemaVersionError(StoreError):
    """The database schema does not match this code: newer (refuse to start) or older and not
    upgraded (run `monitor db upgrade`)."""


class SetupError(MonitorError):
    """The machine is not ready for the command: the port of `service.listen` is taken, a folder is
    missing or read-only, the database is not where the config says. Nothing the command could
    retry: the CLI prints the message on one line and exits 2, like a config error."""


class DatabaseLocationError(StoreError, SetupError):
    """The SQLite database cannot be used where the config puts it: its folder is missing or not
    writable, the file is read-only, it does not exist yet for a command that only reads, or it is
    still at its old location (relative to the working directory instead of the config file)."""


class DeliveryError(MonitorError):
    """A notifier could not deliver an alert. `permanent` ones are given up at once with the
    reason; temporary ones are retried with back-off, no sooner than `retry_after` seconds."""

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        unconfirmed: bool = False,
    ):
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after
        # The message went out and no answer came: it may have arrived (a Telegram timeout after
        # the request was sent). The outbox sends it once more at most.
        self.unconfirmed = unconfirmed
        super().__init__(reason)


class BotError(MonitorError):
    """The Telegram subscriber bot cannot start or poll: the token was rejected, the Bot API is
    unreachable. Alerts are not affected; the bot can be started again later — pointless when
    `token_rejected` (Telegram answered 401)."""

    def __init__(self, reason: str, *, token_rejected: bool = False) -> None:
        super().__init__(reason)
        self.token_rejected = token_rejected


class RateLimitedError(DeliveryError):
    """The channel refused the message for now and said how long to wait (Telegram's 429 with
    `parameters.retry_after`). Not a failure: retry after exactly `retry_after` seconds without
    counting an attempt — the alert is merely early."""

    def __init__(self, reason: str, *, retry_after: float, recipient: str = "") -> None:
        super().__init__(reason, permanent=False, retry_after=retry_after)
        self.recipient = recipient


class RecipientGoneError(DeliveryError):
    """This recipient can no longer receive anything (the user blocked the bot, the bot was kicked
    from the group, the chat was deleted). Permanent for this recipient only: deactivate it, and
    leave every other recipient alone."""

    def __init__(self, recipient: str, reason: str) -> None:
        super().__init__(reason, permanent=True)
        self.recipient = recipient


class RecipientMovedError(DeliveryError):
    """The chat moved to a new id (a Telegram group upgraded to a supergroup). Temporary, due at
    once: store `new_recipient` in place of `recipient` and send there."""

    def __init__(self, recipient: str, new_recipient: str, reason: str) -> None:
        super().__init__(reason, permanent=False, retry_after=0.0)
        self.recipient = recipient
        self.new_recipient = new_recipient


class CredentialsRejectedError(DeliveryError):
    """The channel refused our credentials (Telegram answered 401 Unauthorized: the bot token is
    wrong or was revoked). Permanent for every recipient of the channel: it stops sending, and its
    alerts stay in the outbox, to go once the credentials are fixed and the service restarted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, permanent=True)
