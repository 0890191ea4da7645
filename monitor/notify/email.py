"""The email channel: one SMTP session per message, through smtplib in a worker thread.

`send(alert)` renders the alert (`monitor.core.email_render`) and delivers it to `alert.recipient`;
`send_digest` and `send_message` deliver a digest or any prepared message the same way. Every failure
becomes a `DeliveryError` (issue 4, FAULTS 52):

- temporary (retried with back-off): 4xx replies (421, 450, 451, 452 …), the server closing the
  connection, timeouts, connection refused or reset, DNS failures;
- permanent (given up with the server's reason): 5xx replies (550 mailbox unavailable, 552, 554 …);
- permanent, as a configuration problem: TLS failures (certificate not trusted, handshake failed,
  STARTTLS not offered), authentication rejected (5xx) or not offered, no usable AUTH mechanism.

smtplib has no timeout by default; here `timeout` bounds each socket operation and the whole send:
when it runs out the socket is shut down, so the worker thread ends too. A timeout after the message
was handed over (DATA) is ambiguous — the server may have accepted it — and the retry may deliver
it twice; the outbox's at-least-once contract allows that, and the reason says so.

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
    ) -> None:
        if not host:
            raise ValueError("email: no SMTP host is set (email.host)")
        if ssl and starttls:
            raise ValueError("email: ssl and starttls cannot both be true")
        if timeout <= 0:
            raise ValueError("email: the timeout must be positive")
        if not parseaddr(sender)[1]:
            raise ValueError(f"email: {sender!r} is not a sender address")
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
            message = render_alert(alert, sender=self.sender, to=recipient, date=self._clock())
        except (ValueError, UnicodeError) as exc:
            raise DeliveryError(f"cannot build the email: {exc}", permanent=True) from exc
        await self.send_message(message, recipient)

    async def close(self) -> None:
        return None  # one connection per message: nothing stays open

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
                alerts, sender=self.sender, to=to, title=title, date=self._clock()
            )
        except (ValueError, UnicodeError) as exc:
            raise DeliveryError(f"cannot build the email: {exc}", permanent=True) from exc
        await self.send_message(message, to)

    async def send_message(self, message: EmailMessage, recipient: str) -> None:
        """Deliver a prepared message to `recipient` (the envelope recipient; headers such as
        To or Bcc are never used to pick recipients). Raises `DeliveryError`."""
        session = _Session()
        work = asyncio.ensure_future(asyncio.to_thread(self._transmit, message, recipient, session))
        try:
            await asyncio.wait_for(asyncio.shield(work), self.timeout)
        except TimeoutError:
            session.abort()
            work.add_done_callback(_discard_result)
            if session.stage != "QUIT":  # at QUIT the server had accepted the message
                raise DeliveryError(self._timeout_reason(session.stage)) from None
        except asyncio.CancelledError:
            session.abort()
            work.add_done_callback(_discard_result)
            raise
        log.debug("email.sent host=%s recipient=%s", self.host, recipient)

    # ---- the worker thread -----------------------------------------------------------------

    def _transmit(self, message: EmailMessage, recipient: str, session: _Session) -> None:
        """One SMTP session, blocking: connect, (STARTTLS), (AUTH), MAIL/RCPT/DATA, QUIT."""
        try:
            self._session(message, recipient, session)
        except DeliveryError:
            raise
        except Exception as exc:
            if session.aborted:  # the deadline shut the socket; send_message has reported it
                raise DeliveryError(self._timeout_reason(session.stage)) from None
            error = self._error(exc, session.stage, recipient)
            if self._leaks(exc):  # never chain an exception that holds the password
                raise error from None
            raise error from exc
        finally:
            session.close()

    def _session(self, message: EmailMessage, recipient: str, session: _Session) -> None:
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
        session.stage = "QUIT"
        # The message was accepted: a failed goodbye changes nothing.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()

    def _context(self) -> ssl_lib.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl_lib.create_default_context()
        return self._ssl_context

    # ---- errors ----------------------------------------------------------------------------

    @property
    def _server(self) -> str:
        return f"{self.host}:{self.port}"

    def _timeout_reason(self, stage: str) -> str:
        return f"SMTP {self._server} timed out after {self.timeout:g}s at {stage}{_maybe(stage)}"

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
                f"SMTP {server} closed the connection at {stage}: {self._text(exc)}{_maybe(stage)}"
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
            return DeliveryError(self._timeout_reason(stage))
        if isinstance(exc, socket.gaierror):
            return DeliveryError(f"SMTP host {self.host} cannot be resolved: {self._text(exc)}")
        if isinstance(exc, ConnectionRefusedError):
            return DeliveryError(f"SMTP {server} refused the connection (nothing listening?)")
        if isinstance(exc, OSError):
            return DeliveryError(
                f"SMTP {server} network error at {stage}: {self._text(exc)}{_maybe(stage)}"
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

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _without_bcc(message: EmailMessage) -> EmailMessage:
    """The message without Bcc headers (as `smtplib.send_message` does): recipients are chosen
    by the envelope, and a Bcc header must not reach them."""
    if "Bcc" not in message and "Resent-Bcc" not in message:
        return message
    stripped = copy.copy(message)
    del stripped["Bcc"]
    del stripped["Resent-Bcc"]
    return stripped


def _maybe(stage: str) -> str:
    """A failure after the message went out (waiting for the reply to DATA) is ambiguous: the
    server may have accepted it, and the retry may deliver it twice (at-least-once)."""
    return " (the message may have been delivered)" if stage == "DATA" else ""


def _recipient(address: str) -> str:
    address = address.strip()
    if not address or "@" not in address or any(c in address for c in "\r\n<>,"):
        raise DeliveryError(f"not an email address: {one_line(address, 100)!r}", permanent=True)
    return address


def _discard_result(task: asyncio.Future[None]) -> None:
    """Retrieve the outcome of a send given up on, so asyncio does not log it as unretrieved."""
    if not task.cancelled():
        task.exception()
