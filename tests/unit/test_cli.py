"""The `topup-bot` command line: exit codes, one-line errors, and the `sim` controls."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.__main__ import main
from bot.gateways.sms import ConsoleSms
from bot.settings import (
    GatewaySettings,
    LocaleSettings,
    LoggingSettings,
    SchedulerSettings,
    SecuritySettings,
    StorageSettings,
    TelegramSettings,
)
from storage import migrate
from storage.crypto import generate_fernet_key

TOKEN = "123456789:AAH-example_token_abcdefghijklmnop"
CELLCARD_NUMBER = "012345678"
LANDLINE = "023212345"

_SETTINGS_VARIABLES = {
    field.alias
    for section in (TelegramSettings, StorageSettings, SecuritySettings, LocaleSettings,
                    GatewaySettings, SchedulerSettings, LoggingSettings)
    for field in section.model_fields.values() if field.alias
}


def _cleared(environ: Mapping[str, str]) -> list[str]:
    return sorted(name for name in environ
                  if name.startswith("TELEGRAM_") or name in _SETTINGS_VARIABLES)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting leaks in from the machine; the CLI runs in an empty directory."""
    for name in _cleared(os.environ):
        monkeypatch.delenv(name)
    for name in ("DATABASE_URL", "DATA_DIR", "ENCRYPTION_KEYS", "BLIND_INDEX_KEY",
                 "LOG_LEVEL", "TELEGRAM_BOT_TOKEN", "TELEGRAM_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def migrated(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "migrate")
    assert code == 0, err


def data_mb(shown: str) -> float:
    match = re.search(r"^Data\s+([\d.]+) (GB|MB)", shown, re.MULTILINE)
    assert match, shown
    return float(match[1]) * (1024 if match[2] == "GB" else 1)


# -- check-config ------------------------------------------------------------------------


def test_check_config_without_token_is_one_line_naming_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check-config")
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert "TELEGRAM_BOT_TOKEN" in lines[0]
    assert "Traceback" not in err


def test_check_config_with_bad_setting_names_it(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("DEFAULT_CURRENCY", "EUR")
    code, _, err = run(capsys, "check-config")
    assert code == 2
    assert err.splitlines() == ["topup-bot: DEFAULT_CURRENCY: must be USD or KHR"]


def test_check_config_prints_settings_with_the_token_masked(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    code, out, err = run(capsys, "check-config")
    assert code == 0, err
    assert TOKEN not in out
    assert TOKEN.split(":")[1] not in out
    assert re.search(r"^TELEGRAM_BOT_TOKEN\s+\*\*\*$", out, re.MULTILINE)
    assert re.search(r"^DEFAULT_TIMEZONE\s+Asia/Phnom_Penh$", out, re.MULTILINE)
    assert re.search(r"^DATABASE_URL\s+sqlite\+aiosqlite:///data/topup.db$", out, re.MULTILINE)
    assert out.rstrip().endswith("Configuration is valid.")


def test_check_config_reads_the_env_file(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nLOG_LEVEL=warning\n",
                                   encoding="utf-8")
    code, out, _ = run(capsys, "check-config")
    assert code == 0
    assert re.search(r"^LOG_LEVEL\s+WARNING$", out, re.MULTILINE)
    assert TOKEN not in out


def test_check_config_checks_the_database_and_changes_nothing(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    head = migrate.head_revision()
    code, out, err = run(capsys, "check-config")
    assert code == 0, err
    assert f"Database: reachable, empty (`run` or `migrate` creates schema {head})" in out
    assert "Bot API: not asked (check-config --online asks it, with getMe)" in out
    code, out, _ = run(capsys, "migrate")  # check-config created no schema
    assert out.strip() == f"Database at schema revision {head} (was empty)"
    code, out, err = run(capsys, "check-config")
    assert code == 0, err
    assert f"Database: reachable, schema revision {head} (current)" in out


# -- start-up checks: check-config makes each one `run` and `worker` make -----------------


def refusal(err: str) -> str:
    """The one line a refused start-up prints (log lines, if any, aside); no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("topup-bot: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)


@pytest.mark.usefixtures("token")
@pytest.mark.parametrize("command", ["check-config", "run", "worker"])
def test_a_short_encryption_key_is_refused(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch,
                                           command: str) -> None:
    monkeypatch.setenv("ENCRYPTION_KEYS", "short")
    code, out, err = run(capsys, command)
    assert code == 2
    assert out == ""
    assert refusal(err) == ("topup-bot: ENCRYPTION_KEYS: not a Fernet key (32 url-safe base64 "
                            "bytes); make one with `topup-bot generate-key`")


@pytest.mark.usefixtures("token")
def test_check_config_names_which_of_several_keys_is_bad(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCRYPTION_KEYS", f"{generate_fernet_key()},short")
    code, _, err = run(capsys, "check-config")
    assert code == 2
    assert refusal(err).startswith("topup-bot: ENCRYPTION_KEYS: key 2 of 2: not a Fernet key")


@pytest.mark.usefixtures("token")
def test_check_config_refuses_a_short_blind_index_key(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLIND_INDEX_KEY", "c2hvcnQ=")
    code, _, err = run(capsys, "check-config")
    assert code == 2
    assert refusal(err) == "topup-bot: BLIND_INDEX_KEY: must hold at least 32 bytes"


@pytest.mark.usefixtures("token")
@pytest.mark.parametrize("content", ["{", "[]", '{"encryption_keys": []}'])
def test_a_damaged_key_file_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                       content: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keys.json").write_text(content, encoding="utf-8")
    code, _, err = run(capsys, "check-config")
    assert code == 2
    line = refusal(err)
    assert line.startswith("topup-bot: DATA_DIR: data/keys.json is not a usable key file ("), line
    assert line.endswith("restore it from its backup, or set ENCRYPTION_KEYS and "
                         "BLIND_INDEX_KEY")


@pytest.mark.usefixtures("token")
@pytest.mark.parametrize("command", ["check-config", "run", "worker", "migrate"])
@pytest.mark.parametrize(("data_dir", "cause"), [
    pytest.param("a-file", "a-file is not a directory", id="a-file"),
    pytest.param("a-file/state", "cannot create a-file/state (not a directory)",
                 id="under-a-file"),
])
def test_an_unusable_data_dir_is_refused(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         command: str, data_dir: str, cause: str) -> None:
    (tmp_path / "a-file").write_text("not a directory", encoding="utf-8")
    monkeypatch.setenv("DATA_DIR", data_dir)
    code, out, err = run(capsys, command)
    assert code == 2
    assert out == ""
    assert refusal(err) == f"topup-bot: DATA_DIR: {cause}"


@pytest.mark.usefixtures("token")
@pytest.mark.parametrize("command", ["check-config", "run", "worker", "migrate", "status"])
def test_an_unreachable_database_is_one_line_and_exit_3(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        closed_port: int, command: str) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql+asyncpg://u@127.0.0.1:{closed_port}/x")
    code, out, err = run(capsys, command)
    assert code == 3
    assert out == ""
    assert refusal(err) == (f"topup-bot: DATABASE_URL: cannot reach the database at "
                            f"127.0.0.1:{closed_port} (connection refused)")


@pytest.mark.usefixtures("token")
def test_a_file_that_is_not_a_database_is_refused(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    (tmp_path / "other.db").write_bytes(b"this is not an SQLite database file. " * 4)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    code, _, err = run(capsys, "check-config")
    assert code == 2
    assert refusal(err) == (f"topup-bot: DATABASE_URL: cannot open the SQLite database "
                            f"{tmp_path / 'other.db'} (file is not a database)")


@pytest.mark.usefixtures("token")
@pytest.mark.parametrize("command", ["check-config", "run", "worker", "migrate"])
def test_a_schema_newer_than_this_version_is_refused(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path, command: str) -> None:
    migrated(capsys)
    database = tmp_path / "data" / "topup.db"
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    conn.close()
    code, out, err = run(capsys, command)
    assert code == 2
    assert out == ""
    assert refusal(err) == ("topup-bot: DATA_DIR: the database is at schema revision "
                            "ffffffffffff, which this version does not know: it was migrated "
                            "by a newer release; run that one")
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("ffffffffffff",)]
    conn.close()


@pytest.mark.usefixtures("token")
@pytest.mark.parametrize(("name", "value"), [
    ("WEBHOOK_URL", "http://bot.example.com/hook"),
    ("WEBHOOK_SECRET", "not allowed!"),
    ("WEBHOOK_SECRET", "s" * 257),
])
def test_check_config_refuses_webhook_settings_telegram_refuses(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str,
        value: str) -> None:
    monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "check-config")
    assert code == 2
    assert out == ""
    assert refusal(err).startswith(f"topup-bot: {name}: must be ")


# -- migrate, rotate-keys, generate-key -------------------------------------------------


def test_migrate_says_the_revision_and_can_run_twice(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    head = migrate.head_revision()
    code, out, _ = run(capsys, "migrate")
    assert code == 0
    assert out.strip() == f"Database at schema revision {head} (was empty)"
    assert (tmp_path / "data" / "topup.db").exists()
    code, out, _ = run(capsys, "migrate")
    assert code == 0
    assert out.strip() == f"Database at schema revision {head}"


def test_rotate_keys_after_migrate(capsys: pytest.CaptureFixture[str]) -> None:
    migrated(capsys)
    code, out, err = run(capsys, "rotate-keys")
    assert code == 0, err
    assert re.fullmatch(r"Re-encrypted 0 of \d+ rows with the primary key\.", out.strip())


def test_rotate_keys_before_migrate_asks_for_migrate(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rotate-keys")
    assert code == 2
    assert "topup-bot migrate" in err
    assert "Traceback" not in err


def test_rotate_keys_re_encrypts_with_a_new_primary_key(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    migrated(capsys)
    assert run(capsys, "sim", "set-balance", CELLCARD_NUMBER, "3")[0] == 0
    stored = json.loads((tmp_path / "data" / "keys.json").read_text(encoding="utf-8"))
    old = stored["encryption_keys"][0]
    new = generate_fernet_key()
    monkeypatch.setenv("ENCRYPTION_KEYS", f"{new},{old}")
    code, out, _ = run(capsys, "rotate-keys")
    assert code == 0
    rotated, examined = map(int, re.findall(r"\d+", out)[:2])
    assert rotated >= 1
    assert rotated == examined
    code, out, _ = run(capsys, "rotate-keys")
    assert code == 0
    assert out.startswith("Re-encrypted 0 of ")
    monkeypatch.setenv("ENCRYPTION_KEYS", new)  # the old key is no longer needed
    code, out, _ = run(capsys, "sim", "show", CELLCARD_NUMBER)
    assert code == 0
    assert "3.00 USD" in out


def test_generate_key_prints_a_fernet_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, first, _ = run(capsys, "generate-key")
    assert code == 0
    key = first.strip()
    token = Fernet(key.encode()).encrypt(b"x")
    assert Fernet(key.encode()).decrypt(token) == b"x"
    _, second, _ = run(capsys, "generate-key")
    assert second.strip() != key


# -- sim ----------------------------------------------------------------------------------


def test_sim_set_balance_then_show(capsys: pytest.CaptureFixture[str]) -> None:
    migrated(capsys)
    code, out, err = run(capsys, "sim", "set-balance", CELLCARD_NUMBER, "5")
    assert code == 0, err
    assert re.search(r"^Balance\s+5\.00 USD$", out, re.MULTILINE)
    code, out, err = run(capsys, "sim", "show", CELLCARD_NUMBER)
    assert code == 0, err
    assert "+85512345678" in out
    assert re.search(r"^Operator\s+Cellcard$", out, re.MULTILINE)
    assert re.search(r"^Status\s+active$", out, re.MULTILINE)
    assert re.search(r"^Balance\s+5\.00 USD$", out, re.MULTILINE)
    assert re.search(r"^Valid to\s+\d{4}-\d{2}-\d{2} \d{2}:\d{2} ", out, re.MULTILINE)


@pytest.mark.parametrize(("text", "shown"), [("5.50", "5.50 USD"), ("$2", "2.00 USD"),
                                             ("0", "0.00 USD")])
def test_sim_set_balance_accepts_amounts(capsys: pytest.CaptureFixture[str], text: str,
                                         shown: str) -> None:
    migrated(capsys)
    code, out, err = run(capsys, "sim", "set-balance", "+855 12 345 678", text)
    assert code == 0, err
    assert re.search(rf"^Balance\s+{re.escape(shown)}$", out, re.MULTILINE)


def test_sim_show_landline_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    migrated(capsys)
    code, out, err = run(capsys, "sim", "show", LANDLINE)
    assert code == 2
    assert out == ""
    assert "landline" in err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_sim_show_foreign_number_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    migrated(capsys)
    code, _, err = run(capsys, "sim", "show", "+14155550100")
    assert code == 2
    assert "Cambodian" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("amount", ["abc", "-5", "5.555", "KHR 20000"])
def test_sim_set_balance_refuses_bad_amounts(capsys: pytest.CaptureFixture[str],
                                             amount: str) -> None:
    migrated(capsys)
    code, _, err = run(capsys, "sim", "set-balance", CELLCARD_NUMBER, amount)
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_sim_use_data_reduces_data(capsys: pytest.CaptureFixture[str]) -> None:
    migrated(capsys)
    code, before, _ = run(capsys, "sim", "show", CELLCARD_NUMBER)
    assert code == 0
    code, after, _ = run(capsys, "sim", "use-data", CELLCARD_NUMBER, "300")
    assert code == 0
    used = data_mb(before) - data_mb(after)
    assert 300 - 11 <= used <= 300 + 11  # "1.91 GB" is shown to 0.01 GB (about 10 MB)


@pytest.mark.parametrize("megabytes", ["0", "-3", "lots", "1.5"])
def test_sim_use_data_refuses_bad_amounts(capsys: pytest.CaptureFixture[str],
                                          megabytes: str) -> None:
    migrated(capsys)
    code, _, err = run(capsys, "sim", "use-data", CELLCARD_NUMBER, megabytes)
    assert code == 2
    assert "megabytes" in err


def test_sim_set_validity_zero_expires_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    migrated(capsys)
    code, out, _ = run(capsys, "sim", "set-validity", CELLCARD_NUMBER, "0")
    assert code == 0
    assert re.search(r"^Status\s+expired$", out, re.MULTILINE)
    code, out, _ = run(capsys, "sim", "show", CELLCARD_NUMBER)
    assert code == 0
    assert re.search(r"^Status\s+expired$", out, re.MULTILINE)
    code, out, _ = run(capsys, "sim", "set-validity", CELLCARD_NUMBER, "30")
    assert code == 0
    assert re.search(r"^Status\s+active$", out, re.MULTILINE)


def test_sim_before_migrate_says_to_migrate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "sim", "show", CELLCARD_NUMBER)
    assert code == 2
    assert out == ""
    assert "topup-bot migrate" in err
    assert "Traceback" not in err


# -- argparse -----------------------------------------------------------------------------


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
    assert "frobnicate" in capsys.readouterr().err


def test_missing_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "migrate", "check-config", "rotate-keys", "sim"):
        assert re.search(rf"^\s+{re.escape(command)}\s", out, re.MULTILINE), command


# -- the installed console script ---------------------------------------------------------


def test_console_script_end_to_end(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "topup-bot"
    assert script.exists(), script
    env = {name: value for name, value in os.environ.items()
           if name not in _cleared(os.environ)}

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *argv], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=120, check=False)

    done = cli("migrate")
    assert done.returncode == 0, done.stderr
    assert "schema revision" in done.stdout
    done = cli("sim", "set-balance", CELLCARD_NUMBER, "5")
    assert done.returncode == 0, done.stderr
    done = cli("sim", "show", CELLCARD_NUMBER)
    assert done.returncode == 0, done.stderr
    assert "Cellcard" in done.stdout
    assert "5.00 USD" in done.stdout
    done = cli("sim", "show", LANDLINE)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "landline" in done.stderr
    done = cli("check-config")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "TELEGRAM_BOT_TOKEN" in lines[0]


# -- console SMS ----------------------------------------------------------------------------


async def test_console_sms_writes_one_line() -> None:
    stream = io.StringIO()
    await ConsoleSms(stream).send("+85512345678", "Your code is\n123456\r\n\nvalid 5 min ")
    assert stream.getvalue() == "SMS to +85512345678: Your code is 123456 valid 5 min\n"


async def test_console_sms_defaults_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    await ConsoleSms().send("+85510345678", "hello\nthere")
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "SMS to +85510345678: hello there\n"
