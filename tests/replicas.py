"""Replicas of `monitor run` as real processes on one PostgreSQL database, for tests.

`Cluster` writes one config per replica (its own `/healthz` port and its own root on the Bot API
double, `BotAPIDouble.api_url_for(name)`, so that the double knows which replica sent what) and
starts `python -m monitor.cli run` for each, logging to a file. A replica can be killed (SIGKILL),
stopped (SIGTERM, returning its exit code) or started with extra environment (a skewed clock) or
another database URL (through a `TcpProxy` that a test can cut).

`skewed_clock(30)` is the environment of a process whose wall clock runs 30 s ahead (libfaketime).

`TcpProxy` forwards 127.0.0.1:<port> to a TCP server; `cut()` closes every connection and stops
accepting, as when a replica loses its network path to the database.

`eventually` waits for a condition that only the database or a process can tell (checked every
50 ms, with a deadline); where the Bot API double or the HTTP server can tell, tests wait on their
conditions instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TypeVar

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def eventually(check: Callable[[], T | None], what: str, timeout: float = 120.0) -> T:
    """The first truthy value of `check()`, called every 50 ms; AssertionError after `timeout`
    (generous: replicas starting on a busy machine take their time, and waiting costs nothing
    when the condition holds early)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def skewed_clock(seconds: float) -> dict[str, str]:
    """Environment for a process whose wall clock runs `seconds` ahead of the machine's (behind if
    negative), through libfaketime (LD_PRELOAD); its monotonic clock is left alone."""
    import libfaketime

    _, environment = libfaketime.get_reload_information()
    return {**environment, "FAKETIME": f"{seconds:+g}s", "DONT_FAKE_MONOTONIC": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Replica:
    """One `monitor run` process."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def owner(self) -> str:
        """How the replica names itself in leases (host:pid)."""
        return f"{socket.gethostname()}:{self.pid}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 15.0, *, signalled: bool = False) -> int:
        """SIGTERM (unless `signalled` already); the exit code (the process is killed if it
        outlives `timeout`)."""
        if not signalled and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    @property
    def running(self) -> bool:
        return self.process.poll() is None


@dataclass
class Cluster:
    """Replicas sharing `database_url`. `config(name, api_url, listen)` gives a replica's config
    text; use as a context manager so that every replica is gone at the end."""

    directory: Path
    database_url: str
    config: Callable[[str, str, str], str]
    api_url: Callable[[str], str]
    replicas: dict[str, Replica] = field(default_factory=dict)
    # What Python runs for each replica: `monitor.cli`, or a script that wraps it (benchmarks).
    program: list[str] = field(default_factory=lambda: ["-m", "monitor.cli"])

    def start(
        self,
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        database_url: str | None = None,
    ) -> Replica:
        port = free_port()
        text = self.config(name, self.api_url(name), f"127.0.0.1:{port}")
        text = text.replace("{database_url}", database_url or self.database_url)
        config = self.directory / f"config-{name}.yaml"
        config.write_text(text, "utf-8")
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, *self.program, "--config", str(config), "run"],
                cwd=self.directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            )
        replica = Replica(name, process, log, port)
        self.replicas[name] = replica
        return replica

    def by_owner(self, owner: str) -> Replica:
        return next(r for r in self.replicas.values() if r.owner == owner)

    def stop(self) -> dict[str, int]:
        """SIGTERM every running replica at once; their exit codes."""
        running = [r for r in self.replicas.values() if r.running]
        for replica in running:
            replica.process.send_signal(signal.SIGTERM)
        return {replica.name: replica.terminate(signalled=True) for replica in running}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for replica in self.replicas.values():
            if replica.running:
                replica.process.kill()
                replica.process.wait()


def through(proxy: TcpProxy, database_url: str) -> str:
    """`database_url` with its host and port replaced by the proxy's."""
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


class TcpProxy:
    """127.0.0.1:<port> → `target`, in a thread with its own event loop. `cut()` drops every
    connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread: threading.Thread | None = None

    @classmethod
    def to(cls, database_url: str) -> TcpProxy:
        url = make_url(database_url)
        return cls(url.host or "127.0.0.1", url.port or 5432)

    def start(self) -> Self:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="tcp-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""

        async def cut() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(cut(), self._loop).result(timeout=10)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
