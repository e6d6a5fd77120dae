"""The real bot process (`topup-bot run`) for end-to-end tests, pointed at a BotApiServer.

    with BotProcess(server, data_dir) as bot:            # start() on enter, stop on exit
        server.wait_for_long_poll()
        user.send_text("012 345 678")
        code = bot.sms_code("+85512345678")              # read from the bot's stderr

Both output streams are read line by line by daemon threads into memory; waiting for a
line blocks on a condition variable (no sleep-polling) until it arrives, the process
exits, or the timeout passes.
"""

from __future__ import annotations

import os
import re
import signal as signals
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.e2e.botapi import BotApiServer

# Settings the bot reads from the environment: never inherited from the test's environment.
_BOT_SETTINGS = (
    "ADMIN_CHAT_IDS", "APPROVAL_TIMEOUT_MINUTES", "BLIND_INDEX_KEY", "CARRIER_BACKEND",
    "DATABASE_URL", "DATA_DIR", "DEFAULT_CURRENCY", "DEFAULT_TIMEZONE", "ENCRYPTION_KEYS",
    "LOG_LEVEL", "PAYMENTS_CURRENCY", "PAYMENTS_PROVIDER_TOKEN", "SIM_DECLINE_RATE",
    "SIM_LATENCY_MS", "SIM_PENDING_RATE", "SIM_SETTLE_SECONDS", "SIM_TIMEOUT_RATE",
    "SMS_BACKEND", "STARS_PER_USD", "SWEEP_INTERVAL_SECONDS", "TELEGRAM_API_BASE_URL",
    "TELEGRAM_BOT_TOKEN", "WEBHOOK_LISTEN", "WEBHOOK_PORT", "WEBHOOK_SECRET", "WEBHOOK_URL",
)
_CODE = re.compile(r"\b(\d{6})\b")


def bot_executable() -> str:
    """`topup-bot` next to this interpreter (the project's .venv), else on PATH."""
    candidate = Path(sys.executable).with_name("topup-bot")
    return str(candidate) if candidate.exists() else "topup-bot"


def bot_environment(server: BotApiServer, data_dir: Path, log_level: str = "INFO",
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """The bot's settings for ``server`` and ``data_dir``; none inherited from the tests."""
    env = {k: v for k, v in os.environ.items() if k not in _BOT_SETTINGS}
    env.update(TELEGRAM_BOT_TOKEN=server.token, TELEGRAM_API_BASE_URL=server.base_url,
               DATA_DIR=str(data_dir), LOG_LEVEL=log_level, PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def run_cli(server: BotApiServer, data_dir: Path, *args: str, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`topup-bot ARGS` as an operator runs it beside the bot: same settings (and ``env``
    on top), same data."""
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [bot_executable(), "--env-file", str(data_dir / "no-such.env"), *args]
    return subprocess.run(command, cwd=data_dir,
                          env=bot_environment(server, data_dir, extra=env),
                          capture_output=True, text=True, timeout=timeout, check=False)


class _Lines:
    """Lines of one output stream, collected by a reader thread; waitable."""

    def __init__(self, changed: threading.Condition) -> None:
        self._changed = changed
        self.lines: list[str] = []
        self.closed = False

    def pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        finally:
            with self._changed:
                self.closed = True
                self._changed.notify_all()


class BotProcess:
    """One `topup-bot run` process; stop() or kill() it, or leave that to ``with``."""

    def __init__(self, server: BotApiServer, data_dir: Path, *,
                 env: dict[str, str] | None = None, log_level: str = "INFO",
                 command: str = "run") -> None:
        self.server = server
        self.data_dir = Path(data_dir)
        self.extra_env = dict(env or {})
        self.log_level = log_level
        self.command = command  # "run", or "worker" (no Telegram front: it never polls)
        self.process: subprocess.Popen[str] | None = None
        self._changed = threading.Condition()
        self._stderr = _Lines(self._changed)
        self._stdout = _Lines(self._changed)
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"BotProcess(pid={pid}, data_dir={str(self.data_dir)!r})"

    # -- lifecycle -----------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        return bot_environment(self.server, self.data_dir, self.log_level, self.extra_env)

    def start(self) -> BotProcess:
        """Starts the process (it migrates, then polls; see ``wait_until_polling``)."""
        if self.process is not None:
            raise RuntimeError(f"{self} was already started; make a new BotProcess")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # cwd is the data dir and --env-file names a file that is not there: no .env is read.
        command = [bot_executable(), "--env-file", str(self.data_dir / "no-such.env"),
                   *self.command.split()]
        self.process = subprocess.Popen(
            command, cwd=self.data_dir, env=self.environment(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            errors="replace", bufsize=1)
        for name, lines, stream in (("stderr", self._stderr, self.process.stderr),
                                    ("stdout", self._stdout, self.process.stdout)):
            assert stream is not None
            thread = threading.Thread(target=lines.pump, args=(stream,), daemon=True,
                                      name=f"topup-bot-{self.process.pid}-{name}")
            thread.start()
            self._threads.append(thread)
        return self

    def wait_until_polling(self, timeout: float = 30.0) -> None:
        """Blocks until the bot long-polls getUpdates (it has started and is ready)."""
        deadline = time.monotonic() + timeout
        while True:  # the server's wait is event-driven; the loop only notices an early exit
            self._check_alive("before it polled for updates")
            remaining = deadline - time.monotonic()
            try:
                self.server.wait_for_long_poll(timeout=max(0.01, min(1.0, remaining)))
                return
            except AssertionError:
                if remaining <= 1.0:
                    raise AssertionError(f"{self} did not poll getUpdates within {timeout:g} s"
                                         f"\n{self.output_tail()}") from None

    def stop(self, signal: int = signals.SIGTERM, timeout: float = 15.0) -> int:
        """Sends ``signal`` and waits for the exit; its exit status (KILL after timeout)."""
        process = self.process
        if process is None:
            raise RuntimeError(f"{self} was never started")
        if process.poll() is None:
            process.send_signal(signal)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
                self._join()
                raise AssertionError(f"{self} did not exit within {timeout:g} s of signal "
                                     f"{signal}; killed it\n{self.output_tail()}") from None
        self._join()
        return process.returncode

    def wait_for_exit(self, timeout: float = 30.0) -> int:
        """Blocks until the process ends by itself (a refused start-up); its exit status."""
        process = self.process
        if process is None:
            raise RuntimeError(f"{self} was never started")
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self} still runs after {timeout:g} s\n"
                                 f"{self.output_tail()}") from None
        self._join()
        return process.returncode

    def kill(self) -> int:
        """SIGKILL: no shutdown, nothing flushed."""
        return self.stop(signals.SIGKILL, timeout=10.0)

    def cleanup(self) -> None:
        """Ends the process if it still runs (for fixtures; never raises for a slow exit)."""
        process = self.process
        if process is None or process.poll() is not None:
            self._join()
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        self._join()

    def __enter__(self) -> BotProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def _join(self) -> None:
        for thread in self._threads:
            thread.join(5)

    def _check_alive(self, when: str) -> None:
        if self.process is not None and self.process.poll() is not None:
            self._join()
            raise AssertionError(f"{self} exited with status {self.process.returncode} "
                                 f"{when}\n{self.output_tail()}")

    # -- output --------------------------------------------------------------------------

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self._stderr.lines)

    @property
    def stdout(self) -> str:
        with self._changed:
            return "\n".join(self._stdout.lines)

    def stderr_lines(self) -> list[str]:
        with self._changed:
            return list(self._stderr.lines)

    def mark(self) -> int:
        """The number of stderr lines so far: pass as ``after=`` to see only newer ones."""
        with self._changed:
            return len(self._stderr.lines)

    def output_tail(self, lines: int = 40) -> str:
        with self._changed:
            err = self._stderr.lines[-lines:]
            out = self._stdout.lines[-lines:]
        text = "--- bot stderr (last lines) ---\n" + "\n".join(err)
        if out:
            text += "\n--- bot stdout (last lines) ---\n" + "\n".join(out)
        return text

    def wait_for_stderr(self, pattern: str | re.Pattern[str], timeout: float = 10.0, *,
                        after: int = 0) -> re.Match[str]:
        """The first stderr line (index ≥ ``after``) matching ``pattern``, as a re.Match."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            index = after
            while True:
                lines = self._stderr.lines
                while index < len(lines):
                    found = regex.search(lines[index])
                    if found is not None:
                        return found
                    index += 1
                if self._stderr.closed:
                    raise AssertionError(f"{self} ended its stderr (exit status "
                                         f"{self.returncode}) without a line matching "
                                         f"{regex.pattern!r}\n{self._tail_locked()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self} wrote no stderr line matching "
                                         f"{regex.pattern!r} within {timeout:g} s\n"
                                         f"{self._tail_locked()}")
                self._changed.wait(remaining)

    def sms_code(self, phone_e164: str, timeout: float = 10.0, *, after: int = 0) -> str:
        """The 6-digit code in the newest SMS to ``phone_e164`` (in stderr lines from index
        ``after`` on), waiting for one to arrive."""
        self.wait_for_stderr(self._sms_line(phone_e164), timeout, after=after)
        code = self.last_sms_code(phone_e164, after=after)
        assert code is not None
        return code

    def last_sms_code(self, phone_e164: str, *, after: int = 0) -> str | None:
        """The code in the newest SMS to that number so far, or None."""
        line = self._sms_line(phone_e164)
        for text in reversed(self.stderr_lines()[after:]):
            found = line.search(text)
            if found is not None:
                code = _CODE.search(found.group(1))
                if code is not None:
                    return code.group(1)
        return None

    def sms_count(self, phone_e164: str | None = None) -> int:
        line = self._sms_line(phone_e164) if phone_e164 else re.compile(r"^SMS to \+\d+: ")
        return sum(1 for text in self.stderr_lines() if line.search(text))

    @staticmethod
    def _sms_line(phone_e164: str) -> re.Pattern[str]:
        return re.compile(rf"^SMS to {re.escape(phone_e164)}: (.*\b\d{{6}}\b.*)$")

    def _tail_locked(self, lines: int = 40) -> str:
        return "--- bot stderr (last lines) ---\n" + "\n".join(self._stderr.lines[-lines:])
