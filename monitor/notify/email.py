"""The email channel: SMTP through smtplib in worker threads, connections reused and capped.

A connection, once open (connected, greeted, TLS, logged in), carries message after message:
at most `connections` are open at once (`email.connections`, default 1: a burst of 40 alerts is
one connection, not 40), each for at most `MESSAGES_PER_CONNECTION` messages, and each is closed
(QUIT) by `release()` — which the outbox calls after each delivery round — or when it has been
idle for `IDLE_SECONDS`, since servers drop idle clients. A reused connection the server has
closed meanwhile is replaced once before the message is handed over.

`send(alert)` renders the alert (`monitor.core.email_render`) and delivers it to `alert.recipient`;
`send_digest` and `send_message` deliver a digest or any prepared message the same way. Every failure
becomes a `DeliveryError` (issue 4, FAULTS 52):

- temporary (retried with back-off): 4xx replies (421, 450, 451, 452 …), the server closing the
  connection, timeouts, connection refused or reset, DNS failures;
- permanent (given up with the server's reason): 5xx replies (550 mailbox unavailable, 552, 554 …);
- permanent, as a configuration problem: TLS failures (certificate not trusted, handshake failed,
  STARTTLS not offered), authentication rejected (5xx) or not offered, no usable AUTH mechanism.

smtplib has no timeout by default; here `timeout` bounds each socket operation and the whole send:
when it runs out the socket is shut down, so the worker thread ends too. A timeout, a dropped
connection or a network error after the message was handed over (DATA) is ambiguous — the server
may have accepted it: the reason says so and the error is `unconfirmed`, so the outbox sends the
message once more at most (a second such failure is taken as delivered).

The password is used only for `login` and never appears in a reason, a log record or a repr; a
server reply that echoes it (or its base64 forms) is masked before it becomes a reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import smtplib
import socket
import ssl as ssl_lib
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any, Protocol

from monitor.core.email_render import one_line, render_alert, render_digest
from monitor.errors import DeliveryError
from monitor.model import Alert

log = logging.getLogger("monitor.notify.email")

DEFAULT_TIMEOUT = 30.0
MESSAGES_PER_CONNECTION = 100  # many servers refuse more on one connection
IDLE_SECONDS = 30.0
_REASON_CHARS = 300


class SecretLike(Protocol):
    """pydantic's `SecretStr`, or anything else that hands out its value only on request."""

    def get_secret_value(self) -> str: ...


class EmailSettingsLike(Protocol):
    """What `EmailNotifier.from_settings` reads: the attributes of `config.EmailSettings`."""

    @property
    def host(self) -> str | None: ...
    @property
    def port(self) -> int: ...
    @property
    def starttls(self) -> bool: ...
    @property
    def ssl(self) -> bool: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> SecretLike | None: ...
    @property
    def sender(self) -> str: ...
    @property
    def connections(self) -> int: ...
    @property
    def unsubscribe(self) -> str | None: ...


class _Secret:
    """A password that does not print."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'**********'"

    __str__ = __repr__


class EmailNotifier:
    """Sends alerts by SMTP: implicit TLS (`ssl`, port 465), STARTTLS (`starttls`, port 587), or
    neither (a trusted local relay). Logs in when `username` is set. Implements `Notifier`."""

    def __init__(
        self,
        *,
        host: str,
        port: int = 587,
        starttls: bool = True,
        ssl: bool = False,
        username: str | None = None,
        password: str | SecretLike | None = None,
        sender: str,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl_lib.SSLContext | None = None,
        local_hostname: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        connections: int = 1,
        unsubscribe: str | None = None,
    ) -> None:
        if not host:
            raise ValueError("email: no SMTP host is set (email.host)")
        if ssl and starttls:
            raise ValueError("email: ssl and starttls cannot both be true")
        if timeout <= 0:
            raise ValueError("email: the timeout must be positive")
        if not parseaddr(sender)[1]:
            raise ValueError(f"email: {sender!r} is not a sender address")
        if connections < 1:
            raise ValueError("email: connections must be at least 1")
        self.host = host
        self.port = port
        self.starttls = starttls
        self.ssl = ssl
        self.username = username or None
        secret = (
            password.get_secret_value()
            if password is not None and not isinstance(password, str)
            else password
        )
        self._password = _Secret(secret) if secret else None
        self.sender = sender
        self.timeout = float(timeout)
        self._ssl_context = ssl_context
        self._local_hostname = local_hostname
        self._clock = clock
        self.connections = connections
        self.unsubscribe = unsubscribe
        self.opened = 0  # SMTP connections opened so far
        self._idle: list[_Connection] = []  # open and free, the most recently used last
        self._idle_lock = threading.Lock()
        self._gates: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        if self.username and not (ssl or starttls):
            log.warning("email.insecure_login host=%s: the password is sent without TLS", host)

    @classmethod
    def from_settings(
        cls, settings: EmailSettingsLike, *, timeout: float = DEFAULT_TIMEOUT
    ) -> EmailNotifier:
        """A notifier for the `email:` section of the config (`config.EmailSettings`)."""
        if not settings.host:
            raise ValueError("email: no SMTP host is set (email.host)")
        return cls(
            host=settings.host,
            port=settings.port,
            starttls=settings.starttls,
            ssl=settings.ssl,
            username=settings.username,
            password=settings.password,
            sender=settings.sender,
            timeout=timeout,
            connections=settings.connections,
            unsubscribe=settings.unsubscribe,
        )

    def __repr__(self) -> str:
        mode = "ssl" if self.ssl else "starttls" if self.starttls else "plain"
        user = f" user={self.username}" if self.username else ""
        return f"<EmailNotifier {self.host}:{self.port} {mode}{user}>"

    # ---- the Notifier protocol -------------------------------------------------------------

    async def send(self, alert: Alert) -> None:
        """Deliver one alert to `alert.recipient`, or raise `DeliveryError`."""
        recipient = _recipient(alert.recipient)
        try:
            message = render_alert(
                alert,
                sender=self.sender,
                to=recipient,
                date=self._clock(),
                unsubscribe=self.unsubscribe,
            )
        except (ValueError, UnicodeError) as exc:
            raise DeliveryError(f"cannot build the email: {exc}", permanent=True) from exc
        await self.send_message(message, recipient)

    async def close(self) -> None:
        await self.release()

    async def release(self) -> None:
        """Close the connections left open (QUIT): the end of a delivery round."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        if idle:
            await asyncio.to_thread(_quit_all, idle)

    # ---- beyond the protocol ---------------------------------------------------------------

    async def send_digest(
        self, alerts: Sequence[Alert], *, title: str, recipient: str | None = None
    ) -> None:
        """Deliver `alerts` as one digest message (grouped by watchlist, newest first) to
        `recipient`, by default the alerts' common recipient."""
        if not alerts:
            return
        if recipient is None:
            recipients = {a.recipient for a in alerts}
            if len(recipients) != 1:
                raise ValueError("a digest goes to one recipient; pass recipient=")
            recipient = recipients.pop()
        to = _recipient(recipient)
        try:
            message = render_digest(
                alerts,
                sender=self.sender,
                to=to,
                title=title,
                date=self._clock(),
                unsubscribe=self.unsubscribe,
            )
        except (ValueError, UnicodeError) as exc:
            raise DeliveryError(f"cannot build the email: {exc}", permanent=True) from exc
        await self.send_message(message, to)

    async def send_message(self, message: EmailMessage, recipient: str) -> None:
        """Deliver a prepared message to `recipient` (the envelope recipient; headers such as
        To or Bcc are never used to pick recipients). Raises `DeliveryError`. Waits for a free
        connection first (`connections`); the timeout counts from then."""
        async with self._gate():
            await self._send_on_a_connection(message, recipient)
        log.debug("email.sent host=%s recipient=%s", self.host, recipient)

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            self._gates = {k: v for k, v in self._gates.items() if not k.is_closed()}
            gate = self._gates[loop] = asyncio.Semaphore(self.connections)
        return gate

    async def _send_on_a_connection(self, message: EmailMessage, recipient: str) -> None:
        with self._idle_lock:
            reused = self._idle.pop() if self._idle else None
        session = _Session()
        work = asyncio.ensure_future(
            asyncio.to_thread(self._transmit, message, recipient, session, reused)
        )
        try:
            kept = await asyncio.wait_for(asyncio.shield(work), self.timeout)
        except TimeoutError:
            session.abort()
            work.add_done_callback(_discard_result)
            if session.stage != "QUIT":  # at QUIT the server had accepted the message
                raise self._timeout_error(session.stage) from None
            work.add_done_callback(_close_kept)
            return
        except asyncio.CancelledError:
            session.abort()
            work.add_done_callback(_discard_result)
            raise
        if kept is not None:
            with self._idle_lock:
                self._idle.append(kept)

    # ---- the worker thread -----------------------------------------------------------------

    def _transmit(
        self,
        message: EmailMessage,
        recipient: str,
        session: _Session,
        reused: _Connection | None,
    ) -> _Connection | None:
        """One message, blocking: on `reused` if it is still good (else a new connection:
        connect, (STARTTLS), (AUTH)), then MAIL/RCPT/DATA. Returns the connection to keep for
        the next message, or None when it was closed."""
        connection = reused
        try:
            if connection is not None and not connection.usable(time.monotonic()):
                _quit_all([connection])
                connection = None
            if connection is not None:
                session.attach(connection.client)
                try:
                    self._envelope(message, recipient, session, connection.client)
                except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                    if session.stage not in ("MAIL", "RCPT") or session.aborted:
                        raise
                    # The server dropped the connection while it was idle: nothing was handed
                    # over yet, so a new one is tried once.
                    log.debug("email.reconnect host=%s reason=%s", self.host, exc)
                    session.close()
                    connection = None
            if connection is None:
                connection = _Connection(self._open(session))
                self._envelope(message, recipient, session, connection.client)
        except DeliveryError:
            session.close()
            raise
        except Exception as exc:
            session.close()
            if session.aborted:  # the deadline shut the socket; send_message has reported it
                raise self._timeout_error(session.stage) from None
            error = self._error(exc, session.stage, recipient)
            if self._leaks(exc):  # never chain an exception that holds the password
                raise error from None
            raise error from exc
        connection.sent += 1
        connection.last_used = time.monotonic()
        session.detach()
        if connection.sent >= MESSAGES_PER_CONNECTION:
            _quit_all([connection])
            return None
        return connection

    def _open(self, session: _Session) -> smtplib.SMTP:
        """A new connection, greeted, with TLS and logged in as configured."""
        self.opened += 1
        if self._local_hostname is None:
            self._local_hostname = socket.getfqdn()  # once: it may ask the DNS
        client: smtplib.SMTP
        if self.ssl:
            client = _SMTPSSL(
                local_hostname=self._local_hostname, timeout=self.timeout, context=self._context()
            )
        else:
            client = _SMTP(local_hostname=self._local_hostname, timeout=self.timeout)
        session.attach(client)
        session.stage = "connect"
        code, reply = client.connect(self.host, self.port)
        if code != 220:
            raise smtplib.SMTPConnectError(code, reply)
        session.check()
        session.stage = "EHLO"
        client.ehlo_or_helo_if_needed()
        if self.starttls:
            session.stage = "STARTTLS"
            client.starttls(context=self._context())
            client.ehlo()
        if self.username:
            session.stage = "AUTH"
            password = self._password.get_secret_value() if self._password else ""
            client.login(self.username, password)
        session.check()
        return client

    def _envelope(
        self, message: EmailMessage, recipient: str, session: _Session, client: smtplib.SMTP
    ) -> None:
        """MAIL, RCPT and DATA on an open connection."""
        envelope_from = parseaddr(self.sender)[1]
        options: list[str] = []
        policy = message.policy
        if not (envelope_from.isascii() and recipient.isascii()):
            # RFC 6531: an address beyond ASCII needs SMTPUTF8 (smtplib raises if not offered).
            options = ["SMTPUTF8", "BODY=8BITMIME"]
            policy = email_policy.SMTPUTF8
        data = _without_bcc(message).as_bytes(policy=policy)
        # MAIL, RCPT and DATA one by one (not `sendmail`), so a failure names its step and a
        # timeout knows whether the message was already handed over.
        session.stage = "MAIL"
        code, reply = client.mail(envelope_from, options)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, envelope_from)
        session.stage = "RCPT"
        code, reply = client.rcpt(recipient)
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
        session.stage = "DATA"
        code, reply = client.data(data)
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        session.stage = "QUIT"  # the message was accepted: what follows changes nothing

    def _context(self) -> ssl_lib.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl_lib.create_default_context()
        return self._ssl_context

    # ---- errors ----------------------------------------------------------------------------

    @property
    def _server(self) -> str:
        return f"{self.host}:{self.port}"

    def _timeout_error(self, stage: str) -> DeliveryError:
        return DeliveryError(
            f"SMTP {self._server} timed out after {self.timeout:g}s at {stage}{_maybe(stage)}",
            unconfirmed=_handed_over(stage),
        )

    def _error(self, exc: BaseException, stage: str, recipient: str) -> DeliveryError:
        """The `DeliveryError` for an exception of smtplib, ssl or socket at `stage`."""
        server = self._server
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, reply = exc.recipients.get(recipient) or next(
                iter(exc.recipients.values()), (-1, b"")
            )
            return self._reply_error(code, reply, f"refused the recipient {recipient}")
        if isinstance(exc, smtplib.SMTPSenderRefused):
            return self._reply_error(
                exc.smtp_code, exc.smtp_error, f"refused the sender {exc.sender}"
            )
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            what = f"rejected the login of {self.username} (check email.username and password)"
            return self._reply_error(exc.smtp_code, exc.smtp_error, what)
        if isinstance(exc, smtplib.SMTPDataError):
            return self._reply_error(exc.smtp_code, exc.smtp_error, "refused the message")
        if isinstance(exc, smtplib.SMTPConnectError):
            return self._reply_error(exc.smtp_code, exc.smtp_error, "refused the connection")
        if isinstance(exc, smtplib.SMTPResponseException):
            return self._reply_error(exc.smtp_code, exc.smtp_error, f"answered at {stage}")
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return DeliveryError(
                f"SMTP {server} closed the connection at {stage}: {self._text(exc)}{_maybe(stage)}",
                unconfirmed=_handed_over(stage),
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            text = self._text(exc)
            if "STARTTLS" in text:
                text = "it does not offer STARTTLS (check email.starttls, email.ssl and the port)"
            elif "AUTH" in text:
                text = "it does not offer AUTH on this connection (check email.starttls/ssl)"
            return DeliveryError(f"SMTP {server} config problem: {text}", permanent=True)
        if isinstance(exc, smtplib.SMTPException):  # e.g. "No suitable authentication method"
            return DeliveryError(
                f"SMTP {server} config problem at {stage}: {self._text(exc)}", permanent=True
            )
        if isinstance(exc, ssl_lib.SSLCertVerificationError):
            return DeliveryError(
                f"SMTP {server} TLS certificate not trusted: {exc.verify_message or self._text(exc)}"
                " (a config problem: host name or certificate)",
                permanent=True,
            )
        if isinstance(exc, ssl_lib.SSLError):
            return DeliveryError(
                f"SMTP {server} TLS failed at {stage}: {self._text(exc)}"
                " (a config problem: check email.ssl, email.starttls and the port)",
                permanent=True,
            )
        if isinstance(exc, TimeoutError):
            return self._timeout_error(stage)
        if isinstance(exc, socket.gaierror):
            return DeliveryError(f"SMTP host {self.host} cannot be resolved: {self._text(exc)}")
        if isinstance(exc, ConnectionRefusedError):
            return DeliveryError(f"SMTP {server} refused the connection (nothing listening?)")
        if isinstance(exc, OSError):
            return DeliveryError(
                f"SMTP {server} network error at {stage}: {self._text(exc)}{_maybe(stage)}",
                unconfirmed=_handed_over(stage),
            )
        if isinstance(exc, (ValueError, UnicodeError)):
            return DeliveryError(f"cannot send the email: {self._text(exc)}", permanent=True)
        return DeliveryError(f"SMTP {server} {type(exc).__name__} at {stage}: {self._text(exc)}")

    def _reply_error(self, code: int, reply: bytes | str, what: str) -> DeliveryError:
        """4xx: temporary; 5xx: permanent; anything else (a broken reply): temporary."""
        text = self._text(reply)
        reason = f"SMTP {self._server} {what}: {code} {text}".rstrip()
        return DeliveryError(reason, permanent=500 <= code <= 599)

    def _text(self, value: object) -> str:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        return self._mask(one_line(text, _REASON_CHARS))

    def _secrets(self) -> list[str]:
        if self._password is None:
            return []
        password = self._password.get_secret_value()
        user = self.username or ""
        forms = [
            password,
            base64.b64encode(password.encode()).decode(),
            base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
        ]
        return [f for f in forms if f]

    def _mask(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    def _leaks(self, exc: BaseException) -> bool:
        """Whether the exception's text holds the password in any form (then it is not chained)."""
        text = " ".join(str(a) for a in getattr(exc, "args", ()))
        text += " " + str(exc)
        return any(secret in text for secret in self._secrets())


class _SMTP(smtplib.SMTP):
    """smtplib names the TLS server (SNI and the certificate check use `_host`) only when the host
    is given to the constructor, which connects at once; we connect afterwards, once the client
    is reachable by `_Session.abort`, so `connect` records the name."""

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        self._host = host
        return super().connect(host, port, source_address)


class _SMTPSSL(smtplib.SMTP_SSL):
    __doc__ = _SMTP.__doc__

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        self._host = host
        return super().connect(host, port, source_address)


class _Session:
    """The SMTP client of one send, shared with the event loop so a deadline can cut it off."""

    def __init__(self) -> None:
        self.stage = "connect"
        self.aborted = False
        self._client: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    def attach(self, client: smtplib.SMTP) -> None:
        with self._lock:
            self._client = client

    def check(self) -> None:
        """Stop between steps once the deadline has passed (the socket may not have existed yet
        when `abort` ran)."""
        if self.aborted:
            raise TimeoutError("deadline passed")

    def abort(self) -> None:
        """Shut the socket down: a blocked read or write in the worker returns at once."""
        with self._lock:
            self.aborted = True
            sock = self._client.sock if self._client is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def detach(self) -> None:
        """The client outlives this send (kept for the next message)."""
        with self._lock:
            self._client = None

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class _Connection:
    """An open SMTP connection kept between messages."""

    def __init__(self, client: smtplib.SMTP) -> None:
        self.client = client
        self.sent = 0
        self.last_used = time.monotonic()

    def usable(self, now: float) -> bool:
        return now - self.last_used < IDLE_SECONDS and self.client.sock is not None


def _quit_all(connections: Sequence[_Connection]) -> None:
    """Say goodbye on each connection and close it; a failed goodbye changes nothing."""
    for connection in connections:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            connection.client.quit()
        connection.client.close()


def _without_bcc(message: EmailMessage) -> EmailMessage:
    """The message without Bcc headers (as `smtplib.send_message` does): recipients are chosen
    by the envelope, and a Bcc header must not reach them."""
    if "Bcc" not in message and "Resent-Bcc" not in message:
        return message
    stripped = copy.copy(message)
    del stripped["Bcc"]
    del stripped["Resent-Bcc"]
    return stripped


def _handed_over(stage: str) -> bool:
    """Whether a failure at `stage` may come after the server took the message: at DATA it may
    have accepted it without its reply reaching us (ambiguous; sent once more at most)."""
    return stage == "DATA"


def _maybe(stage: str) -> str:
    return " (the message may have been delivered)" if _handed_over(stage) else ""


def _recipient(address: str) -> str:
    address = address.strip()
    if not address or "@" not in address or any(c in address for c in "\r\n<>,"):
        raise DeliveryError(f"not an email address: {one_line(address, 100)!r}", permanent=True)
    return address


def _close_kept(task: asyncio.Future[_Connection | None]) -> None:
    """Close the connection of a send given up on at its very end."""
    if not task.cancelled() and task.exception() is None and (kept := task.result()) is not None:
        kept.client.close()


def _discard_result(task: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of a send given up on, so asyncio does not log it as unretrieved."""
    if not task.cancelled():
        task.exception()
