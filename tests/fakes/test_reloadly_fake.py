"""The Reloadly fake keeps the documented rules: driven over HTTP with a plain httpx client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from bot.clock import ManualClock
from tests.fakes.http import Fault
from tests.fakes.reloadly import (
    CELLCARD_ID,
    LIVE_AUDIENCE,
    METFONE_ID,
    SANDBOX_AUDIENCE,
    SEATEL_ID,
    SMART_DATA_ID,
    SMART_ID,
    TOPUPS_MEDIA_TYPE,
    FakeReloadly,
    Status,
    kh_national_number,
)

CLIENT_ID = "reloadly-test-id"
CLIENT_SECRET = "reloadly-test-secret"
SMART_PHONE = "85510123456"  # prefix 10
CELLCARD_PHONE = "85512345678"  # prefix 12
METFONE_PHONE = "855971234567"  # prefix 97, 9 national digits
SEATEL_PHONE = "85518123456"  # prefix 18
WIRE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
START = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeReloadly]:
    with FakeReloadly(clock=clock.now) as server:
        yield server


def token_body(**overrides: Any) -> dict[str, Any]:
    body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "grant_type": "client_credentials", "audience": SANDBOX_AUDIENCE}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def get_token(fake: FakeReloadly) -> str:
    answer = httpx.post(f"{fake.base_url}/oauth/token", json=token_body())
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


@pytest.fixture
def api(fake: FakeReloadly) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {get_token(fake)}", "Accept": TOPUPS_MEDIA_TYPE}
    with httpx.Client(base_url=fake.base_url, headers=headers, timeout=5) as client:
        yield client


def order(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"operatorId": SMART_ID, "amount": 5, "customIdentifier": "ref-1",
                            "recipientPhone": {"countryCode": "KH", "number": SMART_PHONE}}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def assert_error(answer: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["errorCode"] == code
    assert set(body) == {"timeStamp", "message", "path", "errorCode", "infoLink", "details"}
    assert WIRE_TIME.fullmatch(body["timeStamp"])
    assert body["path"] == answer.request.url.path
    assert body["infoLink"] is None
    return body


# -- token ------------------------------------------------------------------------------------

class TestToken:
    def test_issues_a_bearer_token_for_the_sandbox_audience(self, fake: FakeReloadly) -> None:
        answer = httpx.post(f"{fake.base_url}/oauth/token", json=token_body())
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {"access_token", "scope", "expires_in", "token_type"}
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 60 * 24 * 3600  # the documented 5184000
        assert body["access_token"]
        assert fake.issued_tokens == 1

    def test_expires_in_follows_the_configured_lifetime(self, clock: ManualClock) -> None:
        with FakeReloadly(clock=clock.now, token_lifetime=timedelta(hours=1)) as fake:
            answer = httpx.post(f"{fake.base_url}/oauth/token", json=token_body())
        assert answer.json()["expires_in"] == 3600

    def test_bad_credentials_are_access_denied(self, fake: FakeReloadly) -> None:
        answer = httpx.post(f"{fake.base_url}/oauth/token",
                            json=token_body(client_secret="wrong"))
        body = assert_error(answer, 401, "INVALID_CREDENTIALS")
        assert body["message"] == "Access Denied"
        assert body["path"] == "/oauth/token"
        assert body["details"] == []
        assert fake.issued_tokens == 0

    def test_an_unknown_audience_is_invalid_audience(self, fake: FakeReloadly) -> None:
        answer = httpx.post(f"{fake.base_url}/oauth/token",
                            json=token_body(audience="https://example.com"))
        assert_error(answer, 401, "INVALID_AUDIENCE")

    def test_the_other_environments_audience_refuses_the_credentials(
            self, fake: FakeReloadly) -> None:
        answer = httpx.post(f"{fake.base_url}/oauth/token", json=token_body(audience=LIVE_AUDIENCE))
        assert_error(answer, 401, "INVALID_CREDENTIALS")
        assert fake.issued_tokens == 0

    def test_a_live_fake_takes_the_live_audience(self, clock: ManualClock) -> None:
        with FakeReloadly(clock=clock.now, sandbox=False) as fake:
            live = httpx.post(f"{fake.base_url}/oauth/token",
                              json=token_body(audience=LIVE_AUDIENCE))
            sandbox = httpx.post(f"{fake.base_url}/oauth/token", json=token_body())
        assert live.status_code == 200
        assert sandbox.status_code == 401

    def test_another_grant_type_is_a_bad_request(self, fake: FakeReloadly) -> None:
        answer = httpx.post(f"{fake.base_url}/oauth/token", json=token_body(grant_type="password"))
        assert_error(answer, 400, "UNSUPPORTED_GRANT_TYPE")

    def test_a_missing_field_is_a_bad_request_naming_it(self, fake: FakeReloadly) -> None:
        answer = httpx.post(f"{fake.base_url}/oauth/token", json=token_body(audience=None))
        body = assert_error(answer, 400, "INVALID_INPUT_PROVIDED")
        assert body["details"] == [{"field": "audience", "issue": "must not be blank"}]

    def test_a_form_body_is_unsupported(self, fake: FakeReloadly) -> None:
        answer = httpx.post(f"{fake.base_url}/oauth/token", data=token_body())
        assert answer.status_code == 415
        assert fake.issued_tokens == 0


# -- API access ---------------------------------------------------------------------------------

class TestAccess:
    def test_a_missing_token_is_refused(self, fake: FakeReloadly) -> None:
        answer = httpx.get(f"{fake.base_url}/accounts/balance",
                           headers={"Accept": TOPUPS_MEDIA_TYPE})
        body = assert_error(answer, 401, "INVALID_TOKEN")
        assert body["message"] == "Full authentication is required to access this resource"

    def test_an_unknown_token_is_invalid(self, fake: FakeReloadly) -> None:
        answer = httpx.get(f"{fake.base_url}/accounts/balance",
                           headers={"Accept": TOPUPS_MEDIA_TYPE, "Authorization": "Bearer nope"})
        body = assert_error(answer, 401, "INVALID_TOKEN")
        assert "Invalid token" in body["message"]

    def test_a_token_expires_by_the_fakes_clock(self, clock: ManualClock) -> None:
        with FakeReloadly(clock=clock.now, token_lifetime=timedelta(hours=1)) as fake:
            headers = {"Accept": TOPUPS_MEDIA_TYPE, "Authorization": f"Bearer {get_token(fake)}"}
            url = f"{fake.base_url}/accounts/balance"
            clock.advance(timedelta(minutes=59, seconds=59))
            assert httpx.get(url, headers=headers).status_code == 200
            clock.advance(timedelta(seconds=1))
            assert_error(httpx.get(url, headers=headers), 401, "TOKEN_EXPIRED")

    def test_expire_tokens_expires_the_issued_ones_only(self, fake: FakeReloadly,
                                                        api: httpx.Client) -> None:
        fake.expire_tokens()
        assert_error(api.get("/accounts/balance"), 401, "TOKEN_EXPIRED")
        fresh = {"Authorization": f"Bearer {get_token(fake)}"}
        assert api.get("/accounts/balance", headers=fresh).status_code == 200
        assert fake.issued_tokens == 2

    @pytest.mark.parametrize("accept", [None, "application/json", "*/*"])
    def test_another_accept_is_not_acceptable(self, api: httpx.Client, accept: str | None) -> None:
        headers = dict(api.headers)
        headers.pop("accept")
        if accept is not None:
            headers["accept"] = accept
        answer = httpx.get(f"{api.base_url}/accounts/balance", headers=headers)
        assert_error(answer, 406, "MEDIA_TYPE_NOT_ACCEPTABLE")
        assert answer.headers["content-type"].startswith("application/json")

    def test_the_vendor_type_among_others_is_accepted(self, api: httpx.Client) -> None:
        answer = api.get("/accounts/balance",
                         headers={"Accept": f"application/json, {TOPUPS_MEDIA_TYPE};q=0.9"})
        assert answer.status_code == 200
        assert answer.headers["content-type"] == TOPUPS_MEDIA_TYPE

    def test_an_unknown_path_has_springs_body(self, api: httpx.Client) -> None:
        answer = api.get("/topup")
        assert answer.status_code == 404
        body = answer.json()
        assert set(body) == {"timeStamp", "status", "error", "message", "path"}
        assert (body["status"], body["error"], body["path"]) == (404, "Not Found", "/topup")

    def test_a_wrong_method_is_not_allowed(self, api: httpx.Client) -> None:
        answer = api.get("/topups")
        assert answer.status_code == 405
        assert answer.json()["error"] == "Method Not Allowed"


# -- balance and operators ----------------------------------------------------------------------

class TestCatalogue:
    def test_balance(self, fake: FakeReloadly, api: httpx.Client) -> None:
        body = api.get("/accounts/balance").json()
        assert body["balance"] == 1000.0
        assert (body["currencyCode"], body["currencyName"]) == ("USD", "US Dollar")
        assert WIRE_TIME.fullmatch(body["updatedAt"])
        fake.set_balance(Decimal("12.34"))
        assert api.get("/accounts/balance").json()["balance"] == 12.34
        assert fake.balance == Decimal("12.34")

    def test_operators_of_cambodia(self, fake: FakeReloadly, api: httpx.Client) -> None:
        answer = api.get("/operators/countries/KH")
        assert answer.status_code == 200
        operators = answer.json()
        assert isinstance(operators, list)
        assert {op["id"] for op in operators} == {SMART_ID, CELLCARD_ID, METFONE_ID, SEATEL_ID,
                                                  SMART_DATA_ID}
        assert {op.id for op in fake.operators()} == {op["id"] for op in operators}
        by_id = {op["id"]: op for op in operators}
        smart, seatel, data = by_id[SMART_ID], by_id[SEATEL_ID], by_id[SMART_DATA_ID]
        assert (smart["denominationType"], smart["fixedAmounts"]) == ("FIXED",
                                                                      [1, 2, 5, 10, 20])
        assert smart["operatorId"] == SMART_ID and smart["country"] == {"isoName": "KH",
                                                                       "name": "Cambodia"}
        assert by_id[CELLCARD_ID]["denominationType"] == "RANGE"
        assert (by_id[CELLCARD_ID]["minAmount"], by_id[CELLCARD_ID]["maxAmount"]) == (0.5, 50)
        assert seatel["fx"] == {"rate": 4100, "currencyCode": "KHR"}
        assert (seatel["senderCurrencyCode"], seatel["destinationCurrencyCode"]) == ("USD",
                                                                                     "KHR")
        assert data["bundle"] and data["data"]
        assert data["fixedAmountsDescriptions"]["3.00"] == "Smart 20 GB / 30 days"
        for field in ("supportsLocalAmounts", "commission", "internationalDiscount",
                      "localDiscount", "localMinAmount", "localMaxAmount", "logoUrls",
                      "localFixedAmounts", "localFixedAmountsDescriptions", "promotions",
                      "pin", "suggestedAmounts", "suggestedAmountsMap"):
            assert field in smart

    @pytest.mark.parametrize("flag", ["includeBundles", "includeData"])
    def test_bundles_and_data_can_be_left_out(self, api: httpx.Client, flag: str) -> None:
        operators = api.get("/operators/countries/KH", params={flag: "false"}).json()
        assert SMART_DATA_ID not in {op["id"] for op in operators}
        assert len(operators) == 4

    def test_suggested_amounts_only_when_asked(self, api: httpx.Client) -> None:
        plain = {op["id"]: op for op in api.get("/operators/countries/KH").json()}
        asked = {op["id"]: op for op in api.get(
            "/operators/countries/KH",
            params={"suggestedAmounts": "true", "suggestedAmountsMap": "true"}).json()}
        assert plain[SEATEL_ID]["suggestedAmounts"] == []
        assert plain[SEATEL_ID]["suggestedAmountsMap"] == {}
        assert asked[SEATEL_ID]["suggestedAmounts"] == [1, 2, 5, 10]
        assert asked[SEATEL_ID]["suggestedAmountsMap"]["5"] == 20500

    def test_an_unsupported_country(self, api: httpx.Client) -> None:
        assert_error(api.get("/operators/countries/ZZ"), 404, "COUNTRY_NOT_SUPPORTED")

    def test_operator_by_id(self, api: httpx.Client) -> None:
        body = api.get(f"/operators/{SEATEL_ID}").json()
        assert (body["id"], body["name"]) == (SEATEL_ID, "Seatel Cambodia")
        assert_error(api.get("/operators/999999"), 404, "OPERATOR_NOT_FOUND")

    @pytest.mark.parametrize(("phone", "operator_id"), [
        ("+85510123456", SMART_ID), ("85510123456", SMART_ID), ("010123456", SMART_ID),
        ("10123456", SMART_ID), ("%2B85512345678", CELLCARD_ID), ("0971234567", METFONE_ID),
        ("85585123456", CELLCARD_ID), ("85123456", CELLCARD_ID), ("018123456", SEATEL_ID),
    ])
    def test_auto_detect_reads_every_form(self, api: httpx.Client, phone: str,
                                          operator_id: int) -> None:
        answer = api.get(f"/operators/auto-detect/phone/{phone}/countries/KH")
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == operator_id
        assert not answer.json()["bundle"]

    @pytest.mark.parametrize("phone", ["85523123456", "0101", "abc", "8551012345678"])
    def test_auto_detect_failure(self, api: httpx.Client, phone: str) -> None:
        answer = api.get(f"/operators/auto-detect/phone/{phone}/countries/KH")
        assert_error(answer, 404, "COULD_NOT_AUTO_DETECT_OPERATOR")

    def test_national_numbers(self) -> None:
        assert kh_national_number("+855 10-123-456") == "10123456"
        assert kh_national_number("855971234567") == "971234567"
        assert kh_national_number("023123456") is None  # Phnom Penh landline


# -- synchronous top-ups ------------------------------------------------------------------------

class TestTopup:
    def test_a_successful_topup_debits_the_discounted_amount(
            self, fake: FakeReloadly, api: httpx.Client) -> None:
        answer = api.post("/topups", json=order())
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "SUCCESSFUL"
        assert isinstance(body["transactionId"], int)
        assert body["customIdentifier"] == "ref-1"
        assert body["recipientPhone"] == SMART_PHONE
        assert (body["countryCode"], body["operatorId"], body["operatorName"]) == (
            "KH", SMART_ID, "Smart Cambodia")
        assert (body["requestedAmount"], body["requestedAmountCurrencyCode"]) == (5, "USD")
        assert (body["deliveredAmount"], body["deliveredAmountCurrencyCode"]) == (5, "USD")
        assert (body["discount"], body["discountCurrencyCode"]) == (0.175, "USD")  # 3.5 %
        assert body["transactionDate"] == "2026-11-25 02:00:00"
        assert body["pinDetail"] is None
        assert body["balanceInfo"]["oldBalance"] == 1000
        assert body["balanceInfo"]["newBalance"] == 995.175
        assert body["balanceInfo"]["currencyCode"] == "USD"
        assert fake.balance == Decimal("995.175")
        [record] = fake.transactions()
        assert record.id == body["transactionId"]
        assert (record.status, record.phone, record.operator_id) == (
            Status.SUCCESSFUL, SMART_PHONE, SMART_ID)
        assert (record.cost, record.discount) == (Decimal("4.825"), Decimal("0.175"))
        assert record.created_at == START
        assert fake.transaction_by_reference("ref-1") == record

    def test_strings_and_numbers_are_both_taken(self, fake: FakeReloadly,
                                                api: httpx.Client) -> None:
        answer = api.post("/topups", json=order(operatorId=str(CELLCARD_ID), amount="2.50",
                                                recipientPhone={"countryCode": "kh",
                                                                "number": "+" + CELLCARD_PHONE}))
        assert answer.status_code == 200, answer.text
        assert answer.json()["requestedAmount"] == 2.5
        assert fake.balance == Decimal("1000.00") - Decimal("2.40")  # 4 % off

    def test_fx_to_riel_rounds_to_whole_riel(self, fake: FakeReloadly, api: httpx.Client) -> None:
        body = api.post("/topups", json=order(operatorId=SEATEL_ID, amount="1.2345",
                                              recipientPhone={"countryCode": "KH",
                                                              "number": SEATEL_PHONE})).json()
        # 1.2345 x 4100 = 5061.45 riel; 5 % off 1.2345 leaves 1.172775, kept to 5 decimals.
        assert (body["deliveredAmount"], body["deliveredAmountCurrencyCode"]) == (5061, "KHR")
        assert fake.transactions()[0].delivered_amount == Decimal("5061")
        assert fake.transactions()[0].cost == Decimal("1.17278")
        assert fake.balance == Decimal("1000.00") - Decimal("1.17278")

    def test_a_local_amount_is_in_riel(self, fake: FakeReloadly, api: httpx.Client) -> None:
        body = api.post("/topups", json=order(operatorId=SEATEL_ID, amount=8200,
                                              useLocalAmount=True,
                                              recipientPhone={"countryCode": "KH",
                                                              "number": SEATEL_PHONE})).json()
        assert (body["requestedAmount"], body["requestedAmountCurrencyCode"]) == (2, "USD")
        assert (body["deliveredAmount"], body["deliveredAmountCurrencyCode"]) == (8200, "KHR")
        assert fake.balance == Decimal("998.00")  # localDiscount is 0

    def test_a_data_bundle(self, fake: FakeReloadly, api: httpx.Client) -> None:
        answer = api.post("/topups", json=order(operatorId=SMART_DATA_ID, amount=3))
        assert answer.status_code == 200
        assert fake.balance == Decimal("1000") - Decimal("2.94")  # 2 % off


REFUSALS = [
    pytest.param(order(operatorId=None), 400, "INVALID_INPUT_PROVIDED", id="no-operator"),
    pytest.param(order(amount=None), 400, "INVALID_INPUT_PROVIDED", id="no-amount"),
    pytest.param(order(recipientPhone=None), 400, "INVALID_INPUT_PROVIDED", id="no-recipient"),
    pytest.param(order(amount="five"), 400, "INVALID_INPUT_PROVIDED", id="amount-not-a-number"),
    pytest.param(order(amount=-5), 400, "INVALID_INPUT_PROVIDED", id="negative-amount"),
    pytest.param(order(operatorId="smart"), 400, "INVALID_INPUT_PROVIDED", id="operator-text"),
    pytest.param(order(useLocalAmount="maybe"), 400, "INVALID_INPUT_PROVIDED", id="local-text"),
    pytest.param(order(customIdentifier="x" * 151), 400, "INVALID_INPUT_PROVIDED",
                 id="reference-too-long"),
    pytest.param(order(operatorId=999999), 404, "OPERATOR_NOT_FOUND", id="unknown-operator"),
    pytest.param(order(recipientPhone={"countryCode": "KH", "number": "85523123456"}), 400,
                 "INVALID_RECIPIENT_PHONE", id="landline"),
    pytest.param(order(recipientPhone={"countryCode": "KH", "number": "8551012"}), 400,
                 "INVALID_RECIPIENT_PHONE", id="too-short"),
    pytest.param(order(recipientPhone={"countryCode": "TH", "number": SMART_PHONE}), 400,
                 "INVALID_RECIPIENT_PHONE", id="other-country"),
    pytest.param(order(recipientPhone={"countryCode": "KH", "number": CELLCARD_PHONE}), 400,
                 "OPERATOR_AND_RECIPIENT_PHONE_MISMATCH", id="cellcard-number-to-smart"),
    pytest.param(order(operatorId=SMART_DATA_ID, amount=3,
                       recipientPhone={"countryCode": "KH", "number": METFONE_PHONE}), 400,
                 "OPERATOR_AND_RECIPIENT_PHONE_MISMATCH", id="metfone-number-to-smart-data"),
    pytest.param(order(amount=3), 400, "INVALID_AMOUNT_FOR_OPERATOR", id="fixed-not-a-plan"),
    pytest.param(order(operatorId=CELLCARD_ID, amount="0.49",
                       recipientPhone={"countryCode": "KH", "number": CELLCARD_PHONE}), 400,
                 "INVALID_AMOUNT_FOR_OPERATOR", id="range-below"),
    pytest.param(order(operatorId=CELLCARD_ID, amount="50.01",
                       recipientPhone={"countryCode": "KH", "number": CELLCARD_PHONE}), 400,
                 "INVALID_AMOUNT_FOR_OPERATOR", id="range-above"),
    pytest.param(order(useLocalAmount=True), 400, "LOCAL_AMOUNTS_NOT_SUPPORTED_BY_OPERATOR",
                 id="local-not-supported"),
    pytest.param(order(operatorId=SEATEL_ID, amount=4000, useLocalAmount=True,
                       recipientPhone={"countryCode": "KH", "number": SEATEL_PHONE}), 400,
                 "INVALID_LOCAL_AMOUNT_FOR_OPERATOR", id="local-below"),
    pytest.param(order(operatorId=METFONE_ID, amount=4, useLocalAmount=True,
                       recipientPhone={"countryCode": "KH", "number": METFONE_PHONE}), 400,
                 "INVALID_LOCAL_AMOUNT_FOR_OPERATOR", id="local-not-a-plan"),
]


class TestRefusals:
    @pytest.mark.parametrize(("body", "status", "code"), REFUSALS)
    @pytest.mark.parametrize("path", ["/topups", "/topups-async"])
    def test_a_refusal_changes_nothing(self, fake: FakeReloadly, api: httpx.Client, path: str,
                                       body: dict[str, Any], status: int, code: str) -> None:
        assert_error(api.post(path, json=body), status, code)
        assert fake.balance == Decimal("1000.00")
        assert fake.transactions() == []

    def test_the_longest_reference_is_taken(self, api: httpx.Client) -> None:
        assert api.post("/topups", json=order(customIdentifier="x" * 150)).status_code == 200

    def test_a_missing_field_is_named(self, api: httpx.Client) -> None:
        body = assert_error(api.post("/topups", json=order(amount=None)), 400,
                            "INVALID_INPUT_PROVIDED")
        assert body["details"] == [{"field": "amount", "issue": "must not be null"}]

    def test_malformed_json(self, api: httpx.Client) -> None:
        answer = api.post("/topups", content=b"{", headers={"Content-Type": "application/json"})
        assert_error(answer, 400, "INVALID_INPUT_PROVIDED")

    def test_insufficient_balance(self, fake: FakeReloadly, api: httpx.Client) -> None:
        fake.set_balance(Decimal("4.82"))  # the 5 USD plan costs 4.825
        assert_error(api.post("/topups", json=order()), 400, "INSUFFICIENT_BALANCE")
        assert fake.balance == Decimal("4.82")
        fake.set_balance(Decimal("4.825"))
        assert api.post("/topups", json=order()).status_code == 200
        assert fake.balance == 0

    def test_an_operator_marked_down(self, fake: FakeReloadly, api: httpx.Client) -> None:
        fake.set_operator_down(SMART_ID)
        assert_error(api.post("/topups", json=order()), 503,
                     "OPERATOR_UNAVAILABLE_OR_CURRENTLY_INACTIVE")
        assert fake.transactions() == []
        other = order(operatorId=CELLCARD_ID, customIdentifier="ref-2",
                      recipientPhone={"countryCode": "KH", "number": CELLCARD_PHONE})
        assert api.post("/topups", json=other).status_code == 200
        fake.set_operator_down(SMART_ID, down=False)
        assert api.post("/topups", json=order()).status_code == 200

    def test_a_reference_is_used_once(self, fake: FakeReloadly, api: httpx.Client) -> None:
        assert api.post("/topups", json=order()).status_code == 200
        again = order(operatorId=CELLCARD_ID,
                      recipientPhone={"countryCode": "KH", "number": CELLCARD_PHONE})
        assert_error(api.post("/topups", json=again), 400, "CUSTOM_IDENTIFIER_ALREADY_USED")
        assert_error(api.post("/topups-async", json=again), 400, "CUSTOM_IDENTIFIER_ALREADY_USED")
        assert len(fake.transactions()) == 1

    def test_a_failed_topup_still_uses_its_reference(self, fake: FakeReloadly,
                                                     api: httpx.Client) -> None:
        fake.process_next(settle_to="FAILED", after=timedelta(0))
        assert api.post("/topups", json=order()).status_code == 200
        assert fake.transactions()[0].status is Status.FAILED
        assert_error(api.post("/topups", json=order()), 400, "CUSTOM_IDENTIFIER_ALREADY_USED")

    def test_a_refused_request_does_not_use_its_reference(self, fake: FakeReloadly,
                                                          api: httpx.Client) -> None:
        fake.set_balance(Decimal(0))
        assert_error(api.post("/topups", json=order()), 400, "INSUFFICIENT_BALANCE")
        fake.set_balance(Decimal(100))
        assert api.post("/topups", json=order()).status_code == 200

    def test_racing_duplicates_are_both_paid(self, fake: FakeReloadly, api: httpx.Client) -> None:
        fake.duplicate_check_races = True
        first = api.post("/topups", json=order())
        second = api.post("/topups", json=order())
        assert (first.status_code, second.status_code) == (200, 200)
        assert first.json()["transactionId"] != second.json()["transactionId"]
        assert [t.custom_identifier for t in fake.transactions()] == ["ref-1", "ref-1"]
        assert fake.balance == Decimal("1000.00") - 2 * Decimal("4.825")
        assert fake.transaction_by_reference("ref-1") == fake.transactions()[0]
        # A different reference to the same number is still too soon.
        assert_error(api.post("/topups", json=order(customIdentifier="ref-2")), 400,
                     "PHONE_RECENTLY_RECHARGED")

    def test_a_number_recharged_within_two_minutes(self, fake: FakeReloadly, clock: ManualClock,
                                                   api: httpx.Client) -> None:
        assert api.post("/topups", json=order()).status_code == 200
        clock.advance(timedelta(minutes=1, seconds=59))
        assert_error(api.post("/topups", json=order(customIdentifier="ref-2", amount=10)), 400,
                     "PHONE_RECENTLY_RECHARGED")
        other_number = order(customIdentifier="ref-3",
                             recipientPhone={"countryCode": "KH", "number": "85510999999"})
        assert api.post("/topups", json=other_number).status_code == 200
        clock.advance(timedelta(seconds=1))
        assert api.post("/topups", json=order(customIdentifier="ref-2")).status_code == 200
        assert len(fake.transactions()) == 3

    def test_the_same_number_written_differently_is_the_same_number(
            self, api: httpx.Client) -> None:
        assert api.post("/topups", json=order()).status_code == 200
        local_form = order(customIdentifier="ref-2",
                           recipientPhone={"countryCode": "KH", "number": "010123456"})
        assert_error(api.post("/topups", json=local_form), 400, "PHONE_RECENTLY_RECHARGED")

    def test_a_failed_recharge_does_not_block_the_number(self, fake: FakeReloadly,
                                                         api: httpx.Client) -> None:
        fake.process_next(settle_to="FAILED", after=timedelta(0))
        assert api.post("/topups", json=order()).status_code == 200
        assert api.post("/topups", json=order(customIdentifier="ref-2")).status_code == 200

    def test_a_processing_recharge_blocks_the_number(self, fake: FakeReloadly,
                                                     api: httpx.Client) -> None:
        fake.process_next(after=timedelta(minutes=5))
        assert api.post("/topups", json=order()).json()["status"] == "PROCESSING"
        assert_error(api.post("/topups", json=order(customIdentifier="ref-2")), 400,
                     "PHONE_RECENTLY_RECHARGED")


# -- processing, settling, async ------------------------------------------------------------------

class TestProcessing:
    def test_processing_settles_successful_by_the_clock(self, fake: FakeReloadly,
                                                        clock: ManualClock,
                                                        api: httpx.Client) -> None:
        fake.process_next(after=timedelta(seconds=30))
        body = api.post("/topups", json=order()).json()
        assert body["status"] == "PROCESSING"
        assert fake.balance == Decimal("995.175")  # held while processing
        status_path = f"/topups/{body['transactionId']}/status"
        clock.advance(timedelta(seconds=29))
        processing = api.get(status_path).json()
        assert (processing["status"], processing["transaction"]) == ("PROCESSING", None)
        clock.advance(timedelta(seconds=1))
        settled = api.get(status_path).json()
        assert settled["status"] == "SUCCESSFUL"
        assert (settled["code"], settled["message"]) == (None, None)
        assert settled["transaction"]["status"] == "SUCCESSFUL"
        assert settled["transaction"]["transactionId"] == body["transactionId"]
        assert fake.balance == Decimal("995.175")

    def test_a_failed_settlement_gives_the_money_back(self, fake: FakeReloadly,
                                                      clock: ManualClock,
                                                      api: httpx.Client) -> None:
        fake.process_next(settle_to="FAILED", after=timedelta(minutes=1))
        transaction_id = api.post("/topups", json=order()).json()["transactionId"]
        assert fake.balance == Decimal("995.175")
        clock.advance(timedelta(minutes=1))
        assert api.get("/accounts/balance").json()["balance"] == 1000
        status = api.get(f"/topups/{transaction_id}/status").json()
        assert (status["status"], status["code"]) == ("FAILED", "TOPUP_TRANSACTION_FAILED")
        assert status["transaction"]["status"] == "FAILED"
        assert fake.transactions()[0].status is Status.FAILED
        assert fake.balance == Decimal("1000.00")

    def test_only_the_next_count_are_processing(self, fake: FakeReloadly,
                                                api: httpx.Client) -> None:
        fake.process_next(2, settle_to="REFUNDED", after=timedelta(hours=1))
        statuses = []
        for n, number in enumerate(["85510000001", "85510000002", "85510000003"]):
            body = order(customIdentifier=f"ref-{n}",
                         recipientPhone={"countryCode": "KH", "number": number})
            statuses.append(api.post("/topups", json=body).json()["status"])
        assert statuses == ["PROCESSING", "PROCESSING", "SUCCESSFUL"]

    def test_settle_forces_a_status(self, fake: FakeReloadly, api: httpx.Client) -> None:
        fake.process_next(after=timedelta(days=1))
        first = api.post("/topups", json=order()).json()["transactionId"]
        fake.settle(first, "SUCCESSFUL")
        assert api.get(f"/topups/{first}/status").json()["status"] == "SUCCESSFUL"
        assert fake.balance == Decimal("995.175")
        fake.settle(first, "REFUNDED")
        assert fake.balance == Decimal("1000.00")
        assert fake.transactions()[0].status is Status.REFUNDED
        with pytest.raises(ValueError, match="cannot go"):
            fake.settle(first, "SUCCESSFUL")
        with pytest.raises(KeyError):
            fake.settle(123, "FAILED")

    def test_process_next_takes_only_final_statuses(self, fake: FakeReloadly) -> None:
        with pytest.raises(ValueError, match="settles"):
            fake.process_next(settle_to="PROCESSING", after=timedelta(0))

    def test_async_answers_only_the_id(self, fake: FakeReloadly, api: httpx.Client) -> None:
        answer = api.post("/topups-async", json=order())
        assert answer.status_code == 200
        body = answer.json()
        assert list(body) == ["transactionId"]
        assert fake.balance == Decimal("995.175")
        status = api.get(f"/topups/{body['transactionId']}/status").json()
        assert set(status) == {"code", "message", "status", "transaction"}
        assert status["status"] == "SUCCESSFUL"
        assert status["transaction"]["customIdentifier"] == "ref-1"
        assert status["transaction"]["balanceInfo"]["newBalance"] == 995.175

    def test_async_applies_the_same_checks(self, fake: FakeReloadly, api: httpx.Client) -> None:
        fake.set_balance(Decimal(1))
        assert_error(api.post("/topups-async", json=order()), 400, "INSUFFICIENT_BALANCE")
        assert fake.transactions() == []

    def test_status_of_an_unknown_transaction(self, api: httpx.Client) -> None:
        assert_error(api.get("/topups/42/status"), 404, "TRANSACTION_NOT_FOUND")


# -- reports ------------------------------------------------------------------------------------

class TestReports:
    @pytest.fixture
    def five(self, fake: FakeReloadly, clock: ManualClock, api: httpx.Client) -> list[int]:
        ids = []
        numbers = [SMART_PHONE, CELLCARD_PHONE, METFONE_PHONE, SEATEL_PHONE, "85515123456"]
        operators = [SMART_ID, CELLCARD_ID, METFONE_ID, SEATEL_ID, SMART_ID]
        for n, (number, operator_id) in enumerate(zip(numbers, operators, strict=True)):
            body = order(operatorId=operator_id, customIdentifier=f"Ref-{n}", amount=5,
                         recipientPhone={"countryCode": "KH", "number": number})
            answer = api.post("/topups", json=body)
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["transactionId"])
            clock.advance(timedelta(hours=1))
        return ids

    def test_pages_of_the_report(self, api: httpx.Client, five: list[int]) -> None:
        first = api.get("/topups/reports/transactions", params={"page": 1, "size": 2}).json()
        assert [t["transactionId"] for t in first["content"]] == five[:2]  # oldest first
        assert (first["totalElements"], first["totalPages"], first["numberOfElements"]) == (
            5, 3, 2)
        assert (first["first"], first["last"], first["number"], first["size"]) == (
            True, False, 0, 2)
        last = api.get("/topups/reports/transactions", params={"page": 3, "size": 2}).json()
        assert [t["transactionId"] for t in last["content"]] == five[4:]
        assert (last["first"], last["last"], last["number"], last["numberOfElements"]) == (
            False, True, 2, 1)
        past = api.get("/topups/reports/transactions", params={"page": 4, "size": 2}).json()
        assert past["content"] == [] and past["last"]
        zero = api.get("/topups/reports/transactions", params={"page": 0, "size": 2}).json()
        assert zero["content"] == first["content"]

    def test_defaults_and_items(self, api: httpx.Client, five: list[int]) -> None:
        page = api.get("/topups/reports/transactions").json()
        assert page["size"] == 200 and page["totalPages"] == 1
        item = page["content"][0]
        assert item["status"] == "SUCCESSFUL"
        assert item["balanceInfo"] is None
        assert WIRE_TIME.fullmatch(item["transactionDate"])

    @pytest.mark.parametrize(("params", "expected"), [
        ({"customIdentifier": "Ref-2"}, [2]),
        ({"customIdentifier": "ref-2"}, [2]),  # searched case-insensitively
        ({"operatorId": SMART_ID}, [0, 4]),
        ({"operatorName": "seatel cambodia"}, [3]),
        ({"countryCode": "KH"}, [0, 1, 2, 3, 4]),
        ({"countryCode": "TH"}, []),
        ({"startDate": "2026-11-25 03:00:00", "endDate": "2026-11-25 05:00:00"}, [1, 2, 3]),
        ({"startDate": "2026-11-25 05:00:01"}, [4]),
    ])
    def test_filters(self, api: httpx.Client, five: list[int], params: dict[str, Any],
                     expected: list[int]) -> None:
        page = api.get("/topups/reports/transactions", params=params).json()
        assert [t["transactionId"] for t in page["content"]] == [five[i] for i in expected]
        assert page["totalElements"] == len(expected)

    @pytest.mark.parametrize("params", [{"startDate": "2026-11-25"}, {"size": 0},
                                        {"page": "one"}])
    def test_bad_parameters(self, api: httpx.Client, params: dict[str, Any]) -> None:
        answer = api.get("/topups/reports/transactions", params=params)
        assert_error(answer, 400, "INVALID_INPUT_PROVIDED")

    def test_one_transaction(self, api: httpx.Client, five: list[int]) -> None:
        body = api.get(f"/topups/reports/transactions/{five[3]}").json()
        assert (body["transactionId"], body["operatorId"]) == (five[3], SEATEL_ID)
        assert body["deliveredAmount"] == 20500
        assert_error(api.get("/topups/reports/transactions/1"), 404, None)

    def test_reports_show_the_settled_status(self, fake: FakeReloadly, clock: ManualClock,
                                             api: httpx.Client) -> None:
        fake.process_next(settle_to="REFUNDED", after=timedelta(minutes=10))
        transaction_id = api.post("/topups", json=order()).json()["transactionId"]
        path = f"/topups/reports/transactions/{transaction_id}"
        assert api.get(path).json()["status"] == "PROCESSING"
        clock.advance(timedelta(minutes=10))
        assert api.get(path).json()["status"] == "REFUNDED"
        listed = api.get("/topups/reports/transactions").json()["content"]
        assert [t["status"] for t in listed] == ["REFUNDED"]
        assert fake.balance == Decimal("1000.00")


# -- transport faults ---------------------------------------------------------------------------

class TestFaults:
    def test_a_dropped_answer_after_the_topup_was_applied(self, fake: FakeReloadly,
                                                          api: httpx.Client) -> None:
        fake.faults.add(Fault.drop_after_processing(), path="/topups")
        with pytest.raises(httpx.TransportError):
            api.post("/topups", json=order())
        [record] = fake.transactions()
        assert record.custom_identifier == "ref-1"
        assert fake.balance == Decimal("995.175")
        assert len(fake.requests_to("/topups", "POST")) == 1
        # The retry with the same reference is refused: the client must read the report.
        assert_error(api.post("/topups", json=order()), 400, "CUSTOM_IDENTIFIER_ALREADY_USED")
        found = api.get("/topups/reports/transactions",
                        params={"customIdentifier": "ref-1"}).json()
        assert [t["transactionId"] for t in found["content"]] == [record.id]

    def test_an_injected_503_is_not_processed(self, fake: FakeReloadly,
                                              api: httpx.Client) -> None:
        fake.faults.add(Fault.http_status(503), path="/topups")
        answer = api.post("/topups", json=order())
        assert answer.status_code == 503
        assert answer.json()["error"] == "Service Unavailable"
        assert fake.transactions() == []
        assert fake.balance == Decimal("1000.00")
        assert api.post("/topups", json=order()).status_code == 200  # fired once

    def test_a_late_answer_times_out_after_the_topup(self, fake: FakeReloadly,
                                                     api: httpx.Client) -> None:
        fake.faults.add(Fault.delay_after_processing(1.0), path="/topups-async")
        with pytest.raises(httpx.ReadTimeout):
            api.post("/topups-async", json=order(), timeout=0.2)
        assert len(fake.transactions()) == 1

    def test_latency_delays_every_answer(self, fake: FakeReloadly, api: httpx.Client) -> None:
        fake.latency_seconds = 0.5
        with pytest.raises(httpx.ReadTimeout):
            api.get("/accounts/balance", timeout=0.1)
        fake.latency_seconds = 0.0
        assert api.get("/accounts/balance").status_code == 200
