"""Real SMTP servers on 127.0.0.1 for tests: aiosmtpd, with recorded messages and scripted faults.

    with SMTPTestServer() as server:                 # plain SMTP on a free port
        ... send to server.host, server.port ...
        server.messages[0].message["Subject"]         # parsed with email.policy.default
        server.messages[0].data                       # the raw bytes as received

    server.fail_next("RCPT", 451, "4.3.0 Try again later")   # one-shot: the next RCPT (or MAIL,
                                                               # DATA) answers that instead
    server.stall_next("DATA")                        # one-shot: never answer the next DATA (until
                                                     # the server stops)
    server.hang_up_after_data(times=2)               # take the next 2 messages, then hang up
                                                     # each time instead of answering 250
    server.connections                               # connections that carried messages
    server.drop_connections()                        # hang up on every client (an idle timeout)

    SMTPTestServer(tls=TLSFiles.generate(tmp_path))                   # offers STARTTLS
    SMTPTestServer(tls=..., require_starttls=True, auth=("u", "p"))   # STARTTLS, then AUTH required
    SMTPTestServer(tls=..., implicit_tls=True)                         # TLS from the first byte (465)

    with StallingServer() as stall: ...              # accepts TCP, never says a word

The aiosmtpd `Controller` runs its own event loop in a thread, so tests that run their own loop
(`asyncio.run`) never share it. A message is recorded before the server answers 250 to DATA, so a
send that returned has its message in `messages` — no waiting needed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Command = Literal["MAIL", "RCPT", "DATA"]


@dataclass(frozen=True)
class Received:
    """One message as the server got it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # the message exactly as transmitted (dot-unstuffed), CRLF line ends
    tls: bool  # whether the session was encrypted (STARTTLS or implicit TLS)
    login: str | None  # the user who authenticated, if any
    peer: tuple[str, int] = ("", 0)  # the client's address and port: one per connection

    @property
    def message(self) -> EmailMessage:
        message = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass(frozen=True)
class TLSFiles:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""

    cert: Path
    key: Path

    @classmethod
    def generate(cls, directory: Path) -> TLSFiles:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        files = cls(directory / "smtp-cert.pem", directory / "smtp-key.pem")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return files

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this certificate (and only it)."""
        return ssl.create_default_context(cafile=str(self.cert))


@dataclass
class _Handler:
    """aiosmtpd handler hooks: record messages, answer scripted faults."""

    messages: list[Received] = field(default_factory=list)
    faults: dict[str, tuple[int, str]] = field(default_factory=dict)
    stalls: set[str] = field(default_factory=set)
    hang_ups: int = 0  # messages still to take without answering: the connection is closed
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)

    async def _fault(self, command: str) -> str | None:
        with self.lock:
            fault = self.faults.pop(command, None)
            stall = command in self.stalls
            self.stalls.discard(command)
        if stall:  # hold the reply until the server stops (bounded, in case a test forgets)
            await asyncio.get_running_loop().run_in_executor(None, self.released.wait, 30.0)
            return "421 4.3.2 Shutting down"
        return None if fault is None else f"{fault[0]} {fault[1]}"

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if (fault := await self._fault("MAIL")) is not None:
            return fault
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if (fault := await self._fault("RCPT")) is not None:
            return fault
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if (fault := await self._fault("DATA")) is not None:
            return fault
        data = envelope.original_content or b""
        login = session.auth_data.login.decode() if session.auth_data is not None else None
        received = Received(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=data if isinstance(data, bytes) else data.encode(),
            # session.ssl is set by STARTTLS only; implicit TLS shows on the transport.
            tls=session.ssl is not None
            or (
                server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None
            ),
            login=login,
            peer=tuple(session.peer) if session.peer else ("", 0),
        )
        with self.lock:
            self.messages.append(received)
            hang_up = self.hang_ups > 0
            self.hang_ups -= hang_up
            if hang_up and server.transport is not None:
                server.transport.close()  # the reply below goes nowhere
            elif server.transport is not None and server.transport not in self.transports:
                self.transports.append(server.transport)
        return "250 2.0.0 Message accepted for delivery"


class _Authenticator:
    def __init__(self, login: str, password: str) -> None:
        self.login = login.encode()
        self.password = password.encode()

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.login
            and auth_data.password == self.password
        )
        # handled=False: aiosmtpd answers 535 itself (True would mean "I already replied").
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class _Controller(Controller):
    """aiosmtpd's Controller on port 0: learns the port the system chose before its self-test
    connection (the stock one would connect to port 0)."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it untyped


class SMTPTestServer:
    """An aiosmtpd server on 127.0.0.1 and a free port; use as a context manager."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        tls: TLSFiles | None = None,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
    ) -> None:
        if (require_starttls or implicit_tls or auth) and tls is None:
            raise ValueError("STARTTLS, implicit TLS and AUTH need tls=TLSFiles")
        self._handler = _Handler()
        kwargs: dict[str, Any] = {"hostname": self.host, "port": 0}
        if implicit_tls:
            assert tls is not None
            kwargs["ssl_context"] = tls.server_context()
        elif tls is not None:
            kwargs["tls_context"] = tls.server_context()
            kwargs["require_starttls"] = require_starttls
        if auth is not None:
            # AUTH is offered only over TLS (aiosmtpd's default, auth_require_tls=True).
            kwargs["authenticator"] = _Authenticator(*auth)
            kwargs["auth_required"] = True
        self._controller = _Controller(self._handler, **kwargs)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def messages(self) -> list[Received]:
        with self._handler.lock:
            return list(self._handler.messages)

    @property
    def connections(self) -> int:
        """How many connections carried the messages received so far."""
        return len({m.peer for m in self.messages})

    def drop_connections(self) -> None:
        """Hang up on every client that sent a message (as a server does after an idle timeout),
        and wait until that is done."""
        with self._handler.lock:
            transports, self._handler.transports = self._handler.transports, []
        loop = self._controller.loop
        done = threading.Event()

        def close() -> None:
            for transport in transports:
                transport.close()
            done.set()

        loop.call_soon_threadsafe(close)
        assert done.wait(10.0), "the SMTP server did not hang up in time"

    def fail_next(self, command: Command, code: int, text: str = "") -> None:
        """Answer the next `command` with `code text` instead of accepting it (one-shot)."""
        with self._handler.lock:
            self._handler.faults[command] = (code, text or "Scripted failure")

    def stall_next(self, command: Command) -> None:
        """Never answer the next `command` (until the server stops): a server that hangs."""
        with self._handler.lock:
            self._handler.stalls.add(command)

    def hang_up_after_data(self, times: int = 1) -> None:
        """Take each of the next `times` messages (recorded in `messages`), then close the
        connection instead of answering: the client cannot tell whether it was accepted."""
        with self._handler.lock:
            self._handler.hang_ups = times

    def __enter__(self) -> SMTPTestServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._handler.released.set()
        self._controller.stop()


class StallingServer:
    """A TCP listener that never answers: the kernel completes the handshake into the backlog
    (so the client is connected) and nothing ever reads or writes — an SMTP greeting that never
    comes. No thread is needed."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def __enter__(self) -> StallingServer:
        self._socket.bind((self.host, 0))
        self._socket.listen(8)
        return self

    def __exit__(self, *exc: object) -> None:
        self._socket.close()


def free_port() -> int:
    """A port with nothing listening on 127.0.0.1 (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
