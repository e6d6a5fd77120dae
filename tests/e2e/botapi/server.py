"""A Telegram Bot API test server: real HTTP on 127.0.0.1, for the real bot process.

    with BotApiServer(token=TOKEN, bot_username="topup_test_bot") as server:
        env["TELEGRAM_API_BASE_URL"] = server.base_url       # the bot adds /bot<token>/...
        user = server.user(1001, first_name="Dara", language_code="km")
        user.send_command("/start")
        reply = user.wait_for_message("Hello")

Tornado serves it from a daemon thread with its own event loop, so sync tests, asyncio
tests and a separate bot process can all use it. getUpdates long-polls for real; with a
webhook set, each update is POSTed to it. Flood limits answer 429 like Telegram.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web

from tests.e2e.botapi.errors import NOT_FOUND, UNAUTHORIZED, ApiError
from tests.e2e.botapi.group import TelegramGroup
from tests.e2e.botapi.methods import (
    canonical_name,
    execute,
    get_webhook_info,
    start_get_updates,
)
from tests.e2e.botapi.params import Params, UploadedFile
from tests.e2e.botapi.ratelimit import FloodControl, RateStats
from tests.e2e.botapi.records import (
    BotMessage,
    CallbackAnswer,
    GroupInfo,
    JsonDict,
    PreCheckoutAnswer,
    RecordedCall,
    Refund,
    StoredFile,
    SuccessfulPayment,
    UserInfo,
    WebhookDelivery,
)
from tests.e2e.botapi.state import BotApiState, InjectedFault, PollState, WebhookState
from tests.e2e.botapi.user import TelegramUser

DEFAULT_TOKEN = "7000000001:AAH-e2e-test-token-for-the-topup-bot-x"
T = TypeVar("T")
_TOKEN_SHAPE = re.compile(r"^\d+:[A-Za-z0-9_-]+$")


class BotApiServer:
    """The server, its state, and the test-side API (users, recorded calls, counters)."""

    def __init__(self, token: str = DEFAULT_TOKEN, *, bot_username: str = "topup_test_bot",
                 bot_first_name: str = "TopUp Test", host: str = "127.0.0.1", port: int = 0,
                 rate_limits: bool = True, global_rate: float = 30.0, global_burst: int = 30,
                 chat_rate: float = 1.0, chat_burst: int = 3,
                 group_rate: float = 20 / 60, group_burst: int = 20,
                 callback_query_ttl: float = 15 * 60, pre_checkout_timeout: float = 10.0,
                 webhook_retry_delays: tuple[float, ...] = (0.1, 0.5, 1.0),
                 webhook_timeout: float = 10.0, strict_formatting: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        if not _TOKEN_SHAPE.match(token):
            raise ValueError("a bot token looks like 123456:ABC-def")
        self.token = token
        self.host = host
        self._requested_port = port
        self.port = 0
        self.webhook_retry_delays = tuple(webhook_retry_delays)
        self.webhook_timeout = webhook_timeout
        flood = FloodControl(enabled=rate_limits, global_rate=global_rate,
                             global_burst=global_burst, chat_rate=chat_rate,
                             chat_burst=chat_burst, group_rate=group_rate,
                             group_burst=group_burst)
        self.state = BotApiState(token=token, bot_id=int(token.split(":", 1)[0]),
                                 bot_username=bot_username, bot_first_name=bot_first_name,
                                 flood=flood, callback_query_ttl=callback_query_ttl,
                                 pre_checkout_timeout=pre_checkout_timeout,
                                 strict_formatting=strict_formatting, clock=clock)
        self._users: dict[int, TelegramUser] = {}
        self._groups: dict[int, TelegramGroup] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._change: asyncio.Event | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> BotApiServer:
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        self._thread = threading.Thread(target=self._run, name="botapi-test-server",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Bot API test server did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError("the Bot API test server failed to start") \
                from self._startup_error
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

    def __enter__(self) -> BotApiServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What goes in TELEGRAM_API_BASE_URL: the bot adds /bot<token>/<method>."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/bot{self.token}"

    @property
    def bot_id(self) -> int:
        return self.state.bot_id

    @property
    def bot_username(self) -> str:
        return self.state.bot_username

    # -- the user side -----------------------------------------------------------------

    def user(self, user_id: int, first_name: str = "Test", *, last_name: str | None = None,
             username: str | None = None, language_code: str | None = "en",
             is_premium: bool | None = None, phone_number: str | None = None) -> TelegramUser:
        """The user with that id (created with a private chat with the bot on first use)."""
        with self.state.lock:
            existing = self._users.get(user_id)
            if existing is not None:
                return existing
            info = UserInfo(user_id, first_name, last_name, username, language_code, is_premium)
            self.state.add_chat(info)
            user = self._users[user_id] = TelegramUser(self.state, info, phone_number)
            return user

    def group(self, chat_id: int, title: str = "Test group", *,
              members: tuple[TelegramUser, ...] = (), kind: str = "supergroup",
              bot_is_admin: bool = False) -> TelegramGroup:
        """The group with that id (negative; -100... for a supergroup), the bot a member of
        it, created on first use; ``members`` join it."""
        if chat_id >= 0:
            raise ValueError("a group's chat id is negative")
        with self.state.lock:
            group = self._groups.get(chat_id)
            if group is None:
                info = GroupInfo(chat_id, title, kind, bot_is_admin)
                self.state.add_chat(info)
                group = self._groups[chat_id] = TelegramGroup(self.state, info)
            for member in members:
                group.add_member(member)
            return group

    def chat_messages(self, chat_id: int) -> list[BotMessage]:
        """What the bot sent to a chat (a user's or a group), oldest first."""
        with self.state.lock:
            return [self.state.snapshot(m) for m in self.state.chats[chat_id].messages.values()
                    if m.outgoing]

    # -- what happened -----------------------------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        """Every API request so far, oldest first."""
        with self.state.lock:
            return list(self.state.calls)

    def calls_of(self, method: str) -> list[RecordedCall]:
        name = canonical_name(method) or method
        return [call for call in self.calls if call.method == name]

    def wait_for_call(self, method: str, predicate: Callable[[RecordedCall], bool] | None = None,
                      timeout: float = 10.0, *, after: int = 0) -> RecordedCall:
        """The first call of ``method`` (index ≥ ``after`` in ``calls``) that matches."""
        name = canonical_name(method) or method

        def found() -> RecordedCall | None:
            return next((c for c in self.state.calls[after:]
                         if c.method == name and (predicate is None or predicate(c))), None)

        result = self.state.wait_until(found, timeout)
        if result is None:
            seen = ", ".join(c.method for c in self.calls[-20:]) or "none"
            raise AssertionError(f"no {name} call within {timeout:g} s; last calls: {seen}")
        call: RecordedCall = result
        return call

    async def wait_for_call_async(self, method: str,
                                  predicate: Callable[[RecordedCall], bool] | None = None,
                                  timeout: float = 10.0,  # noqa: ASYNC109 - as the sync one
                                  *, after: int = 0) -> RecordedCall:
        return await asyncio.to_thread(self.wait_for_call, method, predicate, timeout,
                                       after=after)

    def wait_for_long_poll(self, timeout: float = 10.0) -> None:
        """Blocks until a getUpdates call is waiting for updates (the bot is polling)."""
        if not self.state.wait_until(lambda: self.state.waiting_polls > 0, timeout):
            raise AssertionError(f"no getUpdates long poll within {timeout:g} s; last calls: "
                                 f"{[c.method for c in self.calls[-10:]]}")

    async def wait_for_long_poll_async(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await asyncio.to_thread(self.wait_for_long_poll, timeout)

    def wait_until(self, condition: Callable[[], T | None], timeout: float = 10.0) -> T:
        """Blocks until ``condition()`` (run under the server's lock after every change)
        returns something truthy, and returns it; AssertionError on timeout."""
        result = self.state.wait_until(condition, timeout)
        if not result:
            raise AssertionError(f"condition not met within {timeout:g} s")
        value: T = result
        return value

    @property
    def callback_answers(self) -> dict[str, CallbackAnswer]:
        with self.state.lock:
            return {qid: q.answer for qid, q in self.state.callback_queries.items()
                    if q.answer is not None}

    @property
    def pre_checkout_answers(self) -> dict[str, PreCheckoutAnswer]:
        with self.state.lock:
            return {qid: q.answer for qid, q in self.state.pre_checkouts.items()
                    if q.answer is not None}

    @property
    def payments(self) -> list[SuccessfulPayment]:
        with self.state.lock:
            return list(self.state.payments.values())

    @property
    def refunds(self) -> list[Refund]:
        with self.state.lock:
            return list(self.state.refunds)

    @property
    def commands(self) -> list[JsonDict]:
        """The command list for the default scope and no language."""
        return self.commands_for()

    def commands_for(self, scope: JsonDict | None = None,
                     language_code: str = "") -> list[JsonDict]:
        key = (json.dumps(scope or {"type": "default"}, sort_keys=True), language_code)
        with self.state.lock:
            return copy.deepcopy(self.state.commands.get(key, []))

    @property
    def files(self) -> dict[str, StoredFile]:
        with self.state.lock:
            return dict(self.state.files)

    def file_bytes(self, file_id: str) -> bytes:
        stored = self.files.get(file_id)
        if stored is None or stored.data is None:
            raise KeyError(f"no stored bytes for file_id {file_id!r}")
        return stored.data

    @property
    def stats(self) -> RateStats:
        """Flood-limit counters: accepted sends, 429s, per chat, and when each send was."""
        with self.state.lock:
            return self.state.flood.stats()

    def reset_stats(self) -> None:
        with self.state.lock:
            self.state.flood.reset_stats()

    @property
    def pending_updates(self) -> list[JsonDict]:
        """Updates not yet confirmed by getUpdates' offset (or delivered to the webhook)."""
        with self.state.lock:
            return copy.deepcopy(self.state.pending)

    def update(self, update_id: int) -> JsonDict:
        with self.state.lock:
            return copy.deepcopy(self.state.update_log[update_id])

    def replay_update(self, update_id: int) -> int | None:
        """Queues an earlier update again (same content, a new update_id)."""
        with self.state.lock:
            return self.state.replay_update(update_id)

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        with self.state.lock:
            return list(self.state.webhook_deliveries)

    def webhook_info(self) -> JsonDict:
        """What getWebhookInfo would answer (without recording a call)."""
        with self.state.lock:
            info: JsonDict = get_webhook_info(self.state, Params({}))
            return info

    # -- fault injection ---------------------------------------------------------------

    def inject_error(self, method: str, error_code: int, description: str, *, times: int = 1,
                     retry_after: int | None = None) -> None:
        """The next ``times`` calls of ``method`` ("*" for any; -1 times: until cleared)
        fail with that error (e.g. 502 "Bad Gateway", or 429 with retry_after)."""
        parameters = {"retry_after": retry_after} if retry_after is not None else None
        name = "*" if method == "*" else (canonical_name(method) or method).lower()
        with self.state.lock:
            self.state.faults.append(InjectedFault(
                name, ApiError(error_code, description, parameters), times))

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults.clear()
            self.state.latency.clear()

    def set_latency(self, method: str, seconds: float) -> None:
        """Delays every answer to ``method`` ("*" for all) by ``seconds``."""
        name = "*" if method == "*" else (canonical_name(method) or method).lower()
        with self.state.lock:
            self.state.latency[name] = seconds

    # -- the event loop thread ---------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._change = asyncio.Event()
        sockets = tornado.netutil.bind_sockets(self._requested_port, self.host)
        app = tornado.web.Application(
            [(r"/bot(?P<token>[^/]*)/(?P<method>[^/]*)", _ApiHandler, {"server": self}),
             (r"/file/bot(?P<token>[^/]*)/(?P<path>.+)", _FileHandler, {"server": self}),
             (r".*", _NotFoundHandler)],
            log_function=lambda handler: None)
        http = tornado.httpserver.HTTPServer(app, max_body_size=60 * 1024 * 1024)
        http.add_sockets(sockets)
        self.port = int(sockets[0].getsockname()[1])
        self.state.listeners.append(self._notify_threadsafe)
        worker = asyncio.create_task(self._webhook_worker())
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            self._stopping = True
            self._pulse()
            self.state.listeners.remove(self._notify_threadsafe)
            http.stop()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await http.close_all_connections()

    def _notify_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._pulse)

    def _pulse(self) -> None:
        """Wakes every coroutine waiting for a change (each waits on the current event)."""
        if self._change is not None:
            self._change.set()
            self._change = asyncio.Event()

    async def _changed(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()

    async def get_updates(self, params: Params, handler: _ApiHandler) -> list[JsonDict]:
        """getUpdates: answers at once when updates are queued, else long-polls."""
        poll: PollState = start_get_updates(self.state, params)
        assert self._loop is not None
        deadline = self._loop.time() + poll.timeout
        waiting = False
        try:
            while True:
                assert self._change is not None
                event = self._change
                with self.state.lock:
                    updates = self.state.poll_result(poll)
                remaining = deadline - self._loop.time()
                if updates or remaining <= 0 or handler.closed or self._stopping:
                    return updates
                if not waiting:
                    waiting = True
                    with self.state.lock:
                        self.state.waiting_polls += 1
                        self.state.notify()
                await self._changed(event, remaining)
        finally:
            if waiting:
                with self.state.lock:
                    self.state.waiting_polls -= 1
                    self.state.notify()

    async def _webhook_worker(self) -> None:
        client = tornado.httpclient.AsyncHTTPClient()
        try:
            while not self._stopping:
                assert self._change is not None
                event = self._change
                with self.state.lock:
                    job = self.state.next_webhook_job()
                if job is None:
                    await self._changed(event, 5.0)
                    continue
                hook, update = job
                await self._deliver(client, hook, update)
                with self.state.lock:
                    self.state.webhook_done(hook.generation, int(update["update_id"]))
        finally:
            client.close()

    async def _deliver(self, client: tornado.httpclient.AsyncHTTPClient, hook: WebhookState,
                       update: JsonDict) -> None:
        headers = {"Content-Type": "application/json"}
        if hook.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = hook.secret_token
        body = json.dumps(update)
        for attempt, delay in enumerate((0.0, *self.webhook_retry_delays), start=1):
            if delay:
                await asyncio.sleep(delay)
            with self.state.lock:
                if self.state.webhook is None or \
                        self.state.webhook.generation != hook.generation:
                    return
            request = tornado.httpclient.HTTPRequest(
                hook.url, method="POST", headers=headers, body=body,
                request_timeout=self.webhook_timeout, connect_timeout=self.webhook_timeout,
                follow_redirects=False)
            response = await client.fetch(request, raise_error=False)
            status = 0 if response.code == 599 else response.code
            error = None if 200 <= status < 300 else (
                str(response.error) if status == 0 else f"Wrong response from the webhook: "
                                                         f"{status} {response.reason}")
            with self.state.lock:
                self.state.webhook_attempt(hook.generation, WebhookDelivery(
                    int(update["update_id"]), hook.url, attempt, status, error,
                    self.state.clock()))
                if error is None:
                    self.state.webhook_done(hook.generation, int(update["update_id"]))
            if error is None:
                self._method_in_reply(response.body)
                return

    def _method_in_reply(self, body: bytes | None) -> None:
        """Telegram runs a method given in the webhook's reply; its result is not sent."""
        if not body:
            return
        try:
            data = json.loads(body)
        except ValueError:
            return
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            method = data.pop("method")
            with contextlib.suppress(ApiError):
                execute(self.state, method, Params(data))

    def latency_for(self, method: str) -> float:
        with self.state.lock:
            latency = self.state.latency
            return latency.get(method.lower(), latency.get("*", 0.0))


class _BaseHandler(tornado.web.RequestHandler):
    def reply(self, status: int, payload: JsonDict) -> None:
        if getattr(self, "closed", False):
            return
        self.set_status(status, reason=None if status in _KNOWN_STATUSES else "Error")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload, ensure_ascii=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"ok": False, "error_code": status_code,
                                "description": self._reason}))


_KNOWN_STATUSES = frozenset({200, 400, 401, 403, 404, 409, 413, 420, 429, 500, 502, 503, 504})


class _NotFoundHandler(_BaseHandler):
    def prepare(self) -> None:
        self.reply(404, NOT_FOUND.payload())


class _ApiHandler(_BaseHandler):
    closed = False

    def initialize(self, server: BotApiServer) -> None:
        self.server = server

    def on_connection_close(self) -> None:
        self.closed = True
        self.server._pulse()

    async def get(self, token: str, method: str) -> None:
        await self.handle(token, method)

    async def post(self, token: str, method: str) -> None:
        await self.handle(token, method)

    def _params(self) -> Params:
        values: dict[str, Any] = {}
        for name, raw in self.request.query_arguments.items():
            values[name] = raw[-1].decode("utf-8", "replace")
        content_type = self.request.headers.get("Content-Type", "").lower()
        if content_type.startswith("application/json") and self.request.body.strip():
            try:
                body = json.loads(self.request.body)
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON object") from None
            if not isinstance(body, dict):
                raise ApiError(400, "Bad Request: can't parse JSON object")
            values.update(body)
        else:
            for name, raw in self.request.body_arguments.items():
                values[name] = raw[-1].decode("utf-8", "replace")
        files = {name: UploadedFile(parts[-1].filename or "", parts[-1].content_type or "",
                                    bytes(parts[-1].body))
                 for name, parts in self.request.files.items() if parts}
        return Params(values, files)

    async def handle(self, token: str, method: str) -> None:
        server, state = self.server, self.server.state
        name = canonical_name(method) or method
        try:
            params = self._params()
        except ApiError as exc:
            self.reply(exc.error_code, exc.payload())
            return
        if token != state.token:
            error = UNAUTHORIZED if _TOKEN_SHAPE.match(token) else NOT_FOUND
            state.record_call(RecordedCall(name, params.normalized(), state.clock(), False,
                                           error.error_code, error.description))
            self.reply(error.error_code, error.payload())
            return
        latency = server.latency_for(name)
        if latency > 0:
            await asyncio.sleep(latency)
        try:
            if name == "getUpdates":
                result = await self._get_updates(params)
                self.reply(200, {"ok": True, "result": result})
                return
            answer = execute(state, method, params)
        except ApiError as exc:
            self.reply(exc.error_code, exc.payload())
            return
        payload: JsonDict = {"ok": True, "result": answer.result}
        if answer.description:
            payload["description"] = answer.description
        self.reply(200, payload)

    async def _get_updates(self, params: Params) -> list[JsonDict]:
        state = self.server.state
        try:
            with state.lock:
                fault = state.take_fault("getUpdates")
            if fault is not None:
                raise fault
            result = await self.server.get_updates(params, self)
        except ApiError as exc:
            state.record_call(RecordedCall("getUpdates", params.normalized(), state.clock(),
                                           False, exc.error_code, exc.description))
            raise
        state.record_call(RecordedCall("getUpdates", params.normalized(), state.clock(), True,
                                       result=copy.deepcopy(result)))
        return result


class _FileHandler(_BaseHandler):
    def initialize(self, server: BotApiServer) -> None:
        self.server = server

    def get(self, token: str, path: str) -> None:
        state = self.server.state
        if token != state.token:
            self.reply(401, UNAUTHORIZED.payload())
            return
        with state.lock:
            stored = state.file_by_path(path)
        if stored is None or stored.data is None:
            self.reply(404, NOT_FOUND.payload())
            return
        self.set_header("Content-Type", stored.mime_type or "application/octet-stream")
        self.finish(stored.data)


__all__ = ["DEFAULT_TOKEN", "BotApiServer", "TelegramUser"]
