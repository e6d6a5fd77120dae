"""What every fake provider server shares: a Tornado app on 127.0.0.1 in a daemon thread,
a log of the requests it got, latency, and faults injected per test.

    with FakeReloadly() as fake:            # a subclass: its routes and its state
        fake.faults.add(Fault.http_status(503), path="/topups")
        ...                                  # point the adapter at fake.base_url

Tests and a separate bot process can both use it (it has its own loop). State is shared
between the test's thread and the server's, so subclasses change it under ``self.lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import tornado.httpserver
import tornado.netutil
import tornado.web


class FaultKind(enum.StrEnum):
    STATUS = "status"  # answer this status and body; the request is not processed
    DROP_AFTER = "drop_after"  # process the request, then close the connection unanswered
    DELAY_AFTER = "delay_after"  # process the request, then wait before answering


@dataclass
class Fault:
    kind: FaultKind
    status: int = 500
    body: Any = None  # JSON-serialisable; None: the subclass's usual error body
    seconds: float = 0.0

    @classmethod
    def http_status(cls, status: int, body: Any = None) -> Fault:
        return cls(FaultKind.STATUS, status=status, body=body)

    @classmethod
    def drop_after_processing(cls) -> Fault:
        """The answer is lost after the provider acted: the client sees a reset."""
        return cls(FaultKind.DROP_AFTER)

    @classmethod
    def delay_after_processing(cls, seconds: float) -> Fault:
        """The provider acted but answers late: a client timeout shorter than this fires."""
        return cls(FaultKind.DELAY_AFTER, seconds=seconds)


@dataclass
class _Armed:
    fault: Fault
    method: str | None
    path: re.Pattern[str]
    remaining: int


@dataclass
class Faults:
    """Faults armed by a test; each fires on the next ``times`` matching requests."""

    _armed: list[_Armed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, fault: Fault, *, path: str = ".*", method: str | None = None,
            times: int = 1) -> None:
        with self._lock:
            self._armed.append(_Armed(fault, method, re.compile(path), times))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for armed in self._armed:
                if ((armed.method is None or armed.method == method)
                        and armed.path.fullmatch(path)):
                    armed.remaining -= 1
                    if armed.remaining <= 0:
                        self._armed.remove(armed)
                    return armed.fault
        return None


class TokenState(enum.StrEnum):
    MISSING = "missing"  # no Authorization header
    UNKNOWN = "unknown"  # not a bearer token, or never issued here
    EXPIRED = "expired"  # past its lifetime, or revoked by the test
    VALID = "valid"


@dataclass
class _Token:
    expires_at: datetime
    revoked: bool = False


class BearerTokens:
    """The OAuth client-credentials tokens a fake issued: each fake answers a bad one with
    its own documented error. Call under the fake's lock."""

    def __init__(self, *, length: int = 32) -> None:
        self._tokens: dict[str, _Token] = {}
        self._length = length

    def issue(self, now: datetime, lifetime: timedelta) -> str:
        value = secrets.token_urlsafe(self._length)
        self._tokens[value] = _Token(expires_at=now + lifetime)
        return value

    def check(self, authorization: str, now: datetime) -> TokenState:
        """What an ``Authorization`` header's token is worth at ``now``."""
        if not authorization.strip():
            return TokenState.MISSING
        scheme, _, value = authorization.strip().partition(" ")
        token = self._tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            return TokenState.UNKNOWN
        if token.revoked or now >= token.expires_at:
            return TokenState.EXPIRED
        return TokenState.VALID

    def revoke_all(self) -> None:
        for token in self._tokens.values():
            token.revoked = True

    def __len__(self) -> int:
        return len(self._tokens)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # JSON-serialisable
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[LoggedRequest, dict[str, str]], Answer]


class FakeHttpServer:
    """Subclasses give ``routes()``: (method, path regex with named groups, handler)."""

    name = "fake-provider"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.lock = threading.RLock()
        self.faults = Faults()
        self.latency_seconds = 0.0  # added before every answer
        self.requests: list[LoggedRequest] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # -- what subclasses give ----------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Route]]:
        raise NotImplementedError

    def error_answer(self, status: int, request: LoggedRequest) -> Answer:
        """The provider's error body for an injected status or an unknown path."""
        return Answer(status, {"status": status, "path": request.path})

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        self._ready.clear()  # a server started again waits for its new socket
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.name} did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError(f"{self.name} failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def requests_to(self, path_pattern: str, method: str | None = None) -> list[LoggedRequest]:
        pattern = re.compile(path_pattern)
        with self.lock:
            return [r for r in self.requests if pattern.fullmatch(r.path)
                    and (method is None or r.method == method)]

    # -- serving -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        sockets = tornado.netutil.bind_sockets(self.port, self.host)
        compiled = [(method, re.compile(path), handler) for method, path, handler in self.routes()]
        app = tornado.web.Application([(r".*", _Handler, {"server": self, "routes": compiled})],
                                      log_function=lambda handler: None)
        http = tornado.httpserver.HTTPServer(app)
        http.add_sockets(sockets)
        self.port = int(sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            http.stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await http.close_all_connections()


class _Handler(tornado.web.RequestHandler):
    def initialize(self, server: FakeHttpServer,
                   routes: list[tuple[str, re.Pattern[str], Route]]) -> None:
        self.server = server
        self.compiled = routes

    async def _serve(self) -> None:
        request = LoggedRequest(
            method=self.request.method or "GET", path=self.request.path,
            query={k: [v.decode() for v in vs] for k, vs in self.request.query_arguments.items()},
            headers={k.lower(): v for k, v in self.request.headers.get_all()},
            body=self.request.body or b"")
        server = self.server
        with server.lock:
            server.requests.append(request)
        if server.latency_seconds:
            await asyncio.sleep(server.latency_seconds)
        fault = server.faults.take(request.method, request.path)
        if fault is not None and fault.kind is FaultKind.STATUS:
            answer = (Answer(fault.status, fault.body) if fault.body is not None
                      else server.error_answer(fault.status, request))
            self._write(answer)
            return
        answer = self._route(request)
        if fault is not None and fault.kind is FaultKind.DROP_AFTER:
            stream = self.request.connection.stream
            stream.close()
            return
        if fault is not None and fault.kind is FaultKind.DELAY_AFTER:
            await asyncio.sleep(fault.seconds)
        self._write(answer)

    def _route(self, request: LoggedRequest) -> Answer:
        allowed = False
        for method, pattern, handler in self.compiled:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            allowed = True
            if method == request.method:
                return handler(request, match.groupdict())
        return self.server.error_answer(405 if allowed else 404, request)

    def _write(self, answer: Answer) -> None:
        self.set_status(answer.status)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        if "Content-Type" not in answer.headers:
            self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(answer.body))

    get = post = put = delete = patch = _serve  # type: ignore[assignment]
