"""The provider commands: `providers check` against the Reloadly fake (and with a refused
secret), `check-config` naming a missing credential, and `reconcile --date`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.settings import BakongSettings, GatewaySettings, ProviderSettings
from tests.fakes import airalo, bakong, reloadly
from tests.fakes import dingconnect as ding

TOKEN = "123456789:AAH-example_token_abcdefghijklmnop"
PROVIDER_VARIABLES = {f.alias
                      for section in (GatewaySettings, ProviderSettings, BakongSettings)
                      for f in section.model_fields.values() if f.alias}


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in [*PROVIDER_VARIABLES, "DATABASE_URL", "ENCRYPTION_KEYS", "BLIND_INDEX_KEY"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def fake_reloadly(monkeypatch: pytest.MonkeyPatch) -> Iterator[reloadly.FakeReloadly]:
    with reloadly.FakeReloadly() as fake:
        monkeypatch.setenv("CARRIER_BACKEND", "reloadly")
        monkeypatch.setenv("RELOADLY_CLIENT_ID", fake.client_id)
        monkeypatch.setenv("RELOADLY_CLIENT_SECRET", fake.client_secret)
        monkeypatch.setenv("RELOADLY_AUTH_URL", fake.base_url)
        monkeypatch.setenv("RELOADLY_API_URL", fake.base_url)
        yield fake


def test_providers_check_prints_the_balance_and_the_catalogs(
        fake_reloadly: reloadly.FakeReloadly, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--env-file", os.devnull, "providers", "check"]) == 0

    out = capsys.readouterr().out
    assert "Provider: reloadly" in out
    assert "Balance: 1000.00 USD" in out
    assert "Smart: 8 products" in out and "Seatel:" in out
    assert "The provider answers." in out
    assert fake_reloadly.issued_tokens == 1


def test_a_low_float_is_said_by_providers_check(
        fake_reloadly: reloadly.FakeReloadly, capsys: pytest.CaptureFixture[str]) -> None:
    fake_reloadly.set_balance(Decimal("12.50"))
    assert main(["--env-file", os.devnull, "providers", "check"]) == 0
    assert "Balance: 12.50 USD - below PROVIDER_FLOAT_ALERT 50.00 USD" in capsys.readouterr().out


def test_providers_check_names_a_refused_secret(
        fake_reloadly: reloadly.FakeReloadly, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RELOADLY_CLIENT_SECRET", "not-the-secret")

    assert main(["--env-file", os.devnull, "providers", "check"]) == 1
    assert "RELOADLY_CLIENT_SECRET" in capsys.readouterr().err


def test_providers_check_over_dingconnect(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with ding.FakeDingConnect() as fake:
        monkeypatch.setenv("CARRIER_BACKEND", "dingconnect")
        monkeypatch.setenv("DINGCONNECT_API_KEY", ding.DEFAULT_API_KEY)
        monkeypatch.setenv("DINGCONNECT_API_URL", fake.base_url)
        assert main(["--env-file", os.devnull, "providers", "check"]) == 0
    assert "Balance: 1000.00 USD" in capsys.readouterr().out


@pytest.mark.parametrize(("variable", "backend", "missing"), [
    ("CARRIER_BACKEND", "reloadly", "RELOADLY_CLIENT_ID"),
    ("CARRIER_BACKEND", "dingconnect", "DINGCONNECT_API_KEY"),
    ("ESIM_BACKEND", "airalo", "AIRALO_CLIENT_ID")])
def test_check_config_names_a_missing_credential(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str,
        backend: str, missing: str) -> None:
    monkeypatch.setenv(variable, backend)

    assert main(["--env-file", os.devnull, "check-config"]) == 2
    assert f"{missing}: needed when {variable}={backend}" in capsys.readouterr().err


def test_providers_check_over_airalo(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with airalo.FakeAiralo() as fake:
        monkeypatch.setenv("ESIM_BACKEND", "airalo")
        monkeypatch.setenv("AIRALO_CLIENT_ID", fake.client_id)
        monkeypatch.setenv("AIRALO_CLIENT_SECRET", fake.client_secret)
        monkeypatch.setenv("AIRALO_API_URL", fake.api_url)
        fake.set_balance(Decimal("75.25"))
        assert main(["--env-file", os.devnull, "providers", "check"]) == 0
        out = capsys.readouterr().out
        assert "eSIM provider: airalo" in out and "eSIM credit: 75.25 USD" in out
        assert "eSIMs for Cambodia: 7: Cambodia 1 GB - 7 Days (5.00 USD)" in out

        monkeypatch.setenv("AIRALO_CLIENT_SECRET", "not-the-secret")
        assert main(["--env-file", os.devnull, "providers", "check"]) == 1
        assert "AIRALO_CLIENT_SECRET" in capsys.readouterr().err


def test_check_config_names_what_khqr_needs(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BAKONG_ACCOUNT_ID", "topupbot@aclb")
    assert main(["--env-file", os.devnull, "check-config"]) == 2
    assert "BAKONG_TOKEN: needed when BAKONG_ACCOUNT_ID is set" in capsys.readouterr().err
    monkeypatch.setenv("BAKONG_TOKEN", "a-token")
    assert main(["--env-file", os.devnull, "check-config"]) == 2
    assert "BAKONG_MERCHANT_NAME: needed when BAKONG_ACCOUNT_ID is set" in \
        capsys.readouterr().err
    monkeypatch.setenv("BAKONG_MERCHANT_NAME", "Tóp-up Bot")  # printed into the QR: Latin only
    assert main(["--env-file", os.devnull, "check-config"]) == 2
    assert "BAKONG_MERCHANT_NAME: must be 1 to 25 plain Latin" in capsys.readouterr().err
    monkeypatch.setenv("BAKONG_MERCHANT_NAME", "TopUp Bot")
    monkeypatch.setenv("BAKONG_ACCOUNT_ID", "no-at-sign")
    assert main(["--env-file", os.devnull, "check-config"]) == 2
    assert "BAKONG_ACCOUNT_ID: must be a Bakong account id" in capsys.readouterr().err


def test_providers_check_asks_bakong_when_khqr_is_on(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with bakong.FakeBakong() as fake:
        for name, value in (("BAKONG_ACCOUNT_ID", "topupbot@aclb"), ("BAKONG_TOKEN", fake.token),
                            ("BAKONG_MERCHANT_NAME", "TopUp Bot"),
                            ("BAKONG_API_URL", fake.api_url)):
            monkeypatch.setenv(name, value)
        assert main(["--env-file", os.devnull, "providers", "check"]) == 0
        out = capsys.readouterr().out
        assert "KHQR: on, paid to topupbot@aclb (TopUp Bot, Phnom Penh), QRs in USD" in out
        assert fake.calls("/v1/check_transaction_by_md5") == 1

        fake.refuse_foreign_ip = True
        assert main(["--env-file", os.devnull, "providers", "check"]) == 1
        assert "Bakong answers only requests from Cambodia" in capsys.readouterr().err
        fake.refuse_foreign_ip = False
        fake.expire_token()
        assert main(["--env-file", os.devnull, "providers", "check"]) == 1
        assert "BAKONG_TOKEN is wrong or has expired" in capsys.readouterr().err


def test_providers_check_shows_the_simulated_esims(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--env-file", os.devnull, "providers", "check"]) == 0
    out = capsys.readouterr().out
    assert "eSIM provider: simulated" in out and "eSIMs for Cambodia: 7:" in out
    assert "KHQR: off (BAKONG_ACCOUNT_ID is not set)" in out


def test_reconcile_prints_a_day_without_differences(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--env-file", os.devnull, "migrate"]) == 0
    assert main(["--env-file", os.devnull, "reconcile", "--date", "2026-12-06"]) == 0
    assert "Reconciled simulated for 2026-12-06: 0 charges of ours succeeded, 0 " \
           "transactions at the provider, 0 differences." in capsys.readouterr().out


def test_reconcile_refuses_a_date_that_is_not_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--env-file", os.devnull, "reconcile", "--date", "06/12/2026"]) == 2
    assert "--date '06/12/2026' is not a date" in capsys.readouterr().err
