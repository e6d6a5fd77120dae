"""`topup-bot broadcast --to ... --text ... [--yes]` and `topup-bot broadcast status ID`
through the real command line (bot/__main__.py, bot/cli_broadcast.py): what it queues and
prints, asking first, run again after a crash (no second broadcast), exit statuses, bad
input as one line."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.__main__ import main
from bot.domain.phone import parse_cambodian_mobile
from bot.services.promotions import Confirmed, Previewed
from bot.settings import load_settings
from bot.wiring import build_components
from storage import migrate
from storage.lines import LinesRepository
from storage.tables import notifications

CELLCARD, CELLCARD_2, SMART = "012345678", "011345678", "010345678"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting leaks in from the machine; the CLI runs in an empty directory (its SQLite
    database and key file in ./data)."""
    for name in list(os.environ):
        if name.startswith(("TELEGRAM_", "DATABASE_", "ENCRYPTION_", "BLIND_", "DATA_DIR",
                            "LOG_LEVEL", "DEFAULT_", "ADMIN_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def _users() -> None:
    """501 (Cellcard) and 502 (Smart) opted in; 503 (Cellcard) did not."""
    components = build_components(load_settings(env_file=None))
    try:
        await migrate.upgrade(components.db)
        now = components.clock.now()
        for user_id, phone, promotions in ((501, CELLCARD, True), (502, SMART, True),
                                           (503, CELLCARD_2, False)):
            await components.users.greet(user_id, "en")
            async with components.db.write() as conn:
                await LinesRepository(conn, components.cipher).add(
                    owner_id=user_id, number=parse_cambodian_mobile(phone), now=now,
                    verified_at=now)
            await components.promotions.set_opted_in(user_id, promotions)
    finally:
        await components.db.dispose()


async def _queued() -> list[str]:
    components = build_components(load_settings(env_file=None))
    try:
        async with components.db.read() as conn:
            rows = await conn.execute(select(notifications.c.dedupe_key).where(
                notifications.c.kind == "promotion").order_by(notifications.c.id))
            return [str(key) for key in rows.scalars()]
    finally:
        await components.db.dispose()


def queued() -> list[str]:
    return asyncio.run(_queued())


def test_broadcast_with_yes_queues_it_and_status_tells_how_it_goes(
        capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_users())

    code, out, err = run(capsys, "broadcast", "--to", "Cellcard", "--text",
                         "  Double data this weekend!\nAt every shop.  ", "--yes")

    assert code == 0, err
    assert out.startswith("Broadcast #")
    broadcast_id = int(out.split("#", 1)[1].split(" ", 1)[0])
    assert (f"Broadcast #{broadcast_id} queued: 1 offer to users who opted in and have a "
            "Cellcard line") in out
    assert f"`topup-bot broadcast status {broadcast_id}`" in out
    assert queued() == [f"broadcast:{broadcast_id}:501"]

    code, out, err = run(capsys, "broadcast", "status", str(broadcast_id))

    assert code == 0, err
    shown = dict(line.split(None, 1) for line in out.splitlines()[:3])
    assert shown["Broadcast"] == (f"#{broadcast_id} to cellcard (users who opted in and have "
                                  "a Cellcard line)")
    assert shown["State"] == "sending"
    assert "Queued     1\n" in out
    assert "Pending    1\n" in out
    assert "Delivered  0\n" in out
    assert out.endswith("Text:\nDouble data this weekend!\nAt every shop.\n")


async def _confirmed_and_died(text: str) -> int:
    """A broadcast confirmed on the command line whose process died before queuing."""
    components = build_components(load_settings(env_file=None))
    try:
        previewed = await components.promotions.preview(None, text, actor="cli",
                                                        chat_id=None)
        assert isinstance(previewed, Previewed)
        assert isinstance(await components.promotions.confirm(
            previewed.broadcast.id, actor="cli", chat_id=None), Confirmed)
        return previewed.broadcast.id
    finally:
        await components.db.dispose()


def test_run_again_it_makes_no_second_broadcast_and_resumes_the_first(
        capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_users())
    first = asyncio.run(_confirmed_and_died("Free SIM swap"))  # then a crash: nothing queued
    assert queued() == []

    code, out, err = run(capsys, "broadcast", "--to", "all", "--text", "Free SIM swap",
                         "--yes")

    assert code == 0, err
    assert out.startswith(f"This offer is already broadcast #{first} (confirmed ")
    assert "no new broadcast was made. 2 offers queued." in out
    assert sorted(queued()) == [f"broadcast:{first}:501", f"broadcast:{first}:502"]
    code, out, err = run(capsys, "broadcast", "--to", "cellcard", "--text",
                         "Free SIM swap", "--yes")  # and once more, to fewer people
    assert code == 0, err
    assert f"already broadcast #{first}" in out
    assert sorted(queued()) == [f"broadcast:{first}:501", f"broadcast:{first}:502"]


def test_without_yes_it_asks_and_only_y_sends(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(_users())
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))

    code, out, err = run(capsys, "broadcast", "--to", "all", "--text", "Free SIM swap")

    assert code == 1
    assert "To 2 users (every user who opted in), each after their quiet hours:" in out
    assert "Free SIM swap" in out
    assert "Send it? [y/N]" in out
    assert err == "topup-bot: not sent (answer y, or pass --yes)\n"
    assert queued() == []

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal: nobody said yes
    assert run(capsys, "broadcast", "--to", "all", "--text", "Free SIM swap")[0] == 1
    assert queued() == []

    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    code, out, err = run(capsys, "broadcast", "--to", "all", "--text", "Free SIM swap")

    assert code == 0, err
    assert "queued: 2 offers" in out
    assert sorted(key.rsplit(":", 1)[1] for key in queued()) == ["501", "502"]


def test_nobody_to_send_to_sends_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_users())

    code, out, err = run(capsys, "broadcast", "--to", "seatel", "--text", "Hi", "--yes")

    assert (code, err) == (0, "")
    assert out == ("Nobody would get it: there are no users who opted in and have a Seatel "
                   "line. Nothing was sent.\n")
    assert queued() == []


@pytest.mark.parametrize(("argv", "message"), [
    (["broadcast"], "broadcast needs --to all|OPERATOR and --text TEXT"),
    (["broadcast", "--to", "all"], "broadcast needs --to"),
    (["broadcast", "--to", "vodafone", "--text", "Hi"],
     "--to 'vodafone' is not an audience: one of all, smart, cellcard, metfone, seatel"),
    (["broadcast", "--to", "all", "--text", "   "], "--text is empty"),
    (["broadcast", "--to", "all", "--text", "x" * 5000],
     "--text is 5000 characters; an offer holds at most 4000"),
    (["broadcast", "status", "abc"], "'abc' is not a broadcast number"),
    (["broadcast", "status", "999"], "there is no broadcast #999"),
])
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                          argv: list[str], message: str) -> None:
    asyncio.run(_users())

    code, out, err = run(capsys, *argv, "--yes") if "--text" in argv else run(capsys, *argv)

    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("topup-bot: ") and message in err
    assert queued() == []


def test_before_migrate_it_asks_for_migrate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "broadcast", "--to", "all", "--text", "Hi", "--yes")

    assert (code, out) == (2, "")
    assert "topup-bot migrate" in err
    assert "Traceback" not in err
