"""A real HTTP server on 127.0.0.1 for tests: files from the shared corpus and scripted faults.

The server is aiohttp.web running in a background thread with its own event loop, so synchronous
tests can use it and tests that run their own loop (`asyncio.run`) never share it. Every request is
recorded before it is answered, so a test can prove that a refused URL reached nothing.

Built-in routes (anything else: 404, or a route a test added with `route()` / `respond()`):

    /corpus/<path>             a file under the corpus (MONITOR_CORPUS or ../shared/corpus)
    /etag                      a small feed with ETag "v1" and a Last-Modified; 304 when they match
    /status/<code>             that status; ?retry_after=<value> adds a Retry-After header
    /redirect/<n>              302 to /redirect/<n-1> … /redirect/0 serves a small feed
    /redirect-to?url=&status=  one redirect (default 302) to any URL, e.g. file:///etc/passwd
    /loop                      302 to itself
    /drip?interval=&count=     200, then one byte every `interval` seconds, `count` bytes in all
    /stream?size=              200 without Content-Length: `size` bytes in 64 KB chunks
    /lying-length?length=      declares Content-Length `length`, sends 1 KB, then waits

Use it through the `http_server` fixture in conftest.py, or as `with LoopbackServer() as server:`
(pass `ssl_context` for an HTTPS server).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Self

import pytest
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORPUS_ENV = "MONITOR_CORPUS"
SMALL_FEED = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Test feed</title>'
    b"<item><title>First item</title><link>https://example.org/1</link>"
    b"<description>Body of the first item</description></item></channel></rss>\n"
)
ETAG = '"v1"'
LAST_MODIFIED = "Tue, 10 Jun 2025 04:00:00 GMT"
_CONTENT_TYPES = {
    ".xml": "application/xml",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".rdf": "application/rdf+xml",
    ".json": "application/feed+json",
    ".html": "text/html",
    ".htm": "text/html",
    ".txt": "text/plain",
}
# Upper bound for handlers that wait on the client: the server never hangs a test run for long.
_MAX_WAIT = 30.0


def corpus_dir() -> Path | None:
    """The shared test corpus: $MONITOR_CORPUS, else <repo>/../shared/corpus; None if missing."""
    configured = os.environ.get(CORPUS_ENV)
    path = (
        Path(configured)
        if configured
        else Path(__file__).resolve().parents[2] / "shared" / "corpus"
    )
    return path if path.is_dir() else None


def require_corpus() -> Path:
    """The corpus directory, or skip the calling test with the reason."""
    path = corpus_dir()
    if path is None:
        pytest.skip(
            f"test corpus not found: set {CORPUS_ENV} or place it at ../shared/corpus "
            "next to the repository"
        )
    return path


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]


class ThreadedServer:
    """An aiohttp.web server on 127.0.0.1 (random port) in a thread with its own event loop, so
    synchronous tests can use it and tests that run their own loop never share it. Subclasses
    build their app in `_start_site` (setting `self._runner` and `self.port`); start/stop, or
    use `with`."""

    thread_name = "loopback-server"

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # reported to the starting thread below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name=self.thread_name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    async def _start_site(self) -> None:
        raise NotImplementedError

    def _before_stop(self) -> None:
        """Called before the server shuts down (e.g. to release requests held open)."""

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or self._thread is None:
            return
        self._before_stop()
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LoopbackServer(ThreadedServer):
    """aiohttp.web on 127.0.0.1 with a random port, in its own thread. Start/stop or use `with`."""

    def __init__(
        self, corpus: Path | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        super().__init__()
        self.corpus = corpus if corpus is not None else corpus_dir()
        self.ssl_context = ssl_context
        self._routes: dict[str, Handler] = {}
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    thread_name = "loopback-http"

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    # -- what tests use --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def route(self, path: str, handler: Handler) -> None:
        """Answer requests for exactly `path` with `handler` (replacing any earlier route)."""
        with self._lock:
            self._routes[path] = handler

    def respond(
        self,
        path: str,
        *,
        status: int = 200,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer `path` with a fixed response (sent as given: no compression is added)."""
        fixed_headers = dict(headers or {})

        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, body=body, headers=fixed_headers)

        self.route(path, handler)

    def reset(self) -> None:
        """Forget recorded requests and added routes."""
        with self._lock:
            self._requests.clear()
            self._routes.clear()

    # -- dispatch --------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    request.method, request.path, request.query_string, dict(request.headers)
                )
            )
            handler = self._routes.get(request.path)
        if handler is not None:
            return await handler(request)
        head, _, rest = request.path.lstrip("/").partition("/")
        builtin = _BUILTINS.get(head)
        if builtin is None:
            raise web.HTTPNotFound()
        return await builtin(self, request, rest)

    async def _corpus(self, request: web.Request, rest: str) -> web.StreamResponse:
        if self.corpus is None:
            raise web.HTTPNotFound(text="no corpus")
        root = self.corpus.resolve()
        path = (root / rest).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound()
        content_type = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return web.Response(body=path.read_bytes(), headers={"Content-Type": content_type})

    async def _etag(self, request: web.Request, rest: str) -> web.StreamResponse:
        validators = {"ETag": ETAG, "Last-Modified": LAST_MODIFIED}
        if request.headers.get("If-None-Match") == ETAG or (
            "If-None-Match" not in request.headers
            and request.headers.get("If-Modified-Since") == LAST_MODIFIED
        ):
            return web.Response(status=304, headers=validators)
        return web.Response(
            body=SMALL_FEED, headers={**validators, "Content-Type": "application/rss+xml"}
        )

    async def _status(self, request: web.Request, rest: str) -> web.StreamResponse:
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        headers["Date"] = request.query.get("date", formatdate(usegmt=True))
        return web.Response(status=int(rest), headers=headers, text="scripted status")

    async def _redirect(self, request: web.Request, rest: str) -> web.StreamResponse:
        remaining = int(rest)
        if remaining <= 0:
            return web.Response(body=SMALL_FEED, headers={"Content-Type": "application/rss+xml"})
        return web.Response(status=302, headers={"Location": f"/redirect/{remaining - 1}"})

    async def _redirect_to(self, request: web.Request, rest: str) -> web.StreamResponse:
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query["url"]})

    async def _loop_route(self, request: web.Request, rest: str) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/loop"})

    async def _drip(self, request: web.Request, rest: str) -> web.StreamResponse:
        interval = float(request.query.get("interval", "0.2"))
        count = int(request.query.get("count", "100"))
        response = web.StreamResponse(headers={"Content-Type": "application/xml"})
        await response.prepare(request)
        for _ in range(count):
            await response.write(b"<")
            await asyncio.sleep(interval)
        await response.write_eof()
        return response

    async def _stream(self, request: web.Request, rest: str) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse(headers={"Content-Type": "application/xml"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def _lying_length(self, request: web.Request, rest: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/xml"})
        response.content_length = int(request.query["length"])
        await response.prepare(request)
        await response.write(b" " * 1024)
        await asyncio.sleep(_MAX_WAIT)  # cancelled as soon as the client hangs up
        return response


_Builtin = Callable[[LoopbackServer, web.Request, str], Awaitable[web.StreamResponse]]
_BUILTINS: dict[str, _Builtin] = {
    "corpus": LoopbackServer._corpus,
    "etag": LoopbackServer._etag,
    "status": LoopbackServer._status,
    "redirect": LoopbackServer._redirect,
    "redirect-to": LoopbackServer._redirect_to,
    "loop": LoopbackServer._loop_route,
    "drip": LoopbackServer._drip,
    "stream": LoopbackServer._stream,
    "lying-length": LoopbackServer._lying_length,
}
