"""The DingConnect fake itself, over real HTTP with plain httpx: each rule it promises."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from bot.clock import ManualClock
from tests.fakes.dingconnect import (
    BATCH_SETTLE_AFTER,
    BATCH_SKU,
    CELLCARD,
    DEFAULT_API_KEY,
    ERROR_DESCRIPTIONS,
    EXAMPLE_NUMBERS,
    FIXED_TOPUP_VALUES,
    KHR_PER_USD,
    KHR_SKU,
    METFONE,
    PROVIDER_CODES,
    RESULT_FAILED,
    RESULT_REFUSED,
    RESULT_SUCCESS,
    SEATEL,
    SKUS,
    SMART,
    UAT_NUMBERS,
    ErrorCode,
    FakeDingConnect,
    ProcessingState,
)
from tests.fakes.http import Fault

SEND = "/api/V1/SendTransfer"
LIST = "/api/V1/ListTransferRecords"
SMART_5 = SKUS[SMART].fixed[Decimal("5")]
SMART_5_COST = Decimal("4.85")  # 5.00 − 3 % commission
SMART_NUMBER = EXAMPLE_NUMBERS[SMART]
START_BALANCE = Decimal("1000.00")

PREFIXES = {
    SMART: "10 15 16 69 70 81 86 87 93 96 98",
    CELLCARD: "11 12 14 17 61 76 77 78 79 85 89 92 95 99",
    METFONE: "31 60 66 67 68 71 88 90 97",
    SEATEL: "18",
}


@pytest.fixture
def ding(clock: ManualClock) -> Iterator[FakeDingConnect]:
    with FakeDingConnect(clock=clock.now) as fake:
        yield fake


@pytest.fixture
def client(ding: FakeDingConnect) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ding.base_url, headers={"api_key": DEFAULT_API_KEY},
                      timeout=5) as http:
        yield http


def body_of(response: httpx.Response) -> Any:
    return json.loads(response.text, parse_float=Decimal)


def codes(response: httpx.Response) -> list[str]:
    return [error["Code"] for error in body_of(response)["ErrorCodes"]]


def send(client: httpx.Client, sku: str = SMART_5, value: float = 5,
         account: str = SMART_NUMBER, ref: str = "ref-1", *, validate_only: bool = False,
         **extra: Any) -> httpx.Response:
    return client.post(SEND, json={"SkuCode": sku, "SendValue": value, "AccountNumber": account,
                                   "DistributorRef": ref, "ValidateOnly": validate_only,
                                   **extra})


def listed(client: httpx.Client, **query: Any) -> dict[str, Any]:
    response = client.post(LIST, json={"Take": 50, **query})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = body_of(response)
    return result


def products(client: httpx.Client, **params: Any) -> dict[str, dict[str, Any]]:
    response = client.get("/api/V1/GetProducts", params=params)
    assert response.status_code == 200
    return {item["SkuCode"]: item for item in body_of(response)["Items"]}


def refs_listed(client: httpx.Client) -> list[str]:
    return [i["TransferRecord"]["TransferId"]["DistributorRef"] for i in listed(client)["Items"]]


def provider_codes(client: httpx.Client, **params: Any) -> list[str]:
    response = client.get("/api/V1/GetProviders", params=params)
    assert response.status_code == 200
    return [item["ProviderCode"] for item in body_of(response)["Items"]]


# -- authentication and headers -----------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"api_key": "wrong"}], ids=["missing", "wrong"])
def test_a_missing_or_wrong_api_key_is_refused_with_401_and_nothing_is_done(
        ding: FakeDingConnect, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=ding.base_url, headers=headers) as anonymous:
        response = send(anonymous)
        balance = anonymous.get("/api/V1/GetBalance")

    assert response.status_code == 401
    assert body_of(response) == {"ResultCode": RESULT_REFUSED, "ErrorCodes": [
        {"Code": "AuthenticationFailed", "Context": "api_key"}]}
    assert balance.status_code == 401
    assert ding.transfers() == []
    assert ding.balance == START_BALANCE


def test_the_api_key_is_the_one_given_to_the_constructor() -> None:
    with FakeDingConnect(api_key="k-123") as fake, httpx.Client(base_url=fake.base_url) as http:
        assert http.get("/api/V1/GetBalance", headers={"api_key": "k-123"}).status_code == 200
        assert http.get("/api/V1/GetBalance",
                        headers={"api_key": DEFAULT_API_KEY}).status_code == 401


def test_the_correlation_id_is_echoed_on_success_refusal_and_injected_faults(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    headers = {"X-Correlation-Id": "corr-42"}
    ding.faults.add(Fault.http_status(503), path="/api/V1/GetProducts")
    answers = [
        client.get("/api/V1/GetBalance", headers=headers),
        client.post(SEND, json={}, headers=headers),
        client.get("/api/V1/GetBalance", headers={**headers, "api_key": "wrong"}),
        client.get("/api/V1/GetProducts", headers=headers),
        client.get("/api/V1/NoSuchMethod", headers=headers),
    ]
    assert [a.status_code for a in answers] == [200, 400, 401, 503, 404]
    assert all(a.headers["X-Correlation-Id"] == "corr-42" for a in answers)
    assert "X-Correlation-Id" not in client.get("/api/V1/GetBalance").headers


def test_paths_are_case_insensitive_and_unknown_ones_answer_in_dings_shape(
        client: httpx.Client) -> None:
    assert client.get("/api/v1/getbalance").status_code == 200

    missing = client.get("/api/V1/GetNothing")
    wrong_verb = client.get(SEND)

    assert missing.status_code == 404
    assert body_of(missing)["ResultCode"] == RESULT_REFUSED
    assert codes(missing) == ["NotFound"]
    assert wrong_verb.status_code == 405
    assert codes(wrong_verb) == ["MethodNotAllowed"]


# -- providers --------------------------------------------------------------------------


def test_get_providers_lists_the_four_cambodian_operators(client: httpx.Client) -> None:
    response = client.get("/api/V1/GetProviders")

    body = body_of(response)
    assert body["ResultCode"] == RESULT_SUCCESS
    assert body["ErrorCodes"] == []
    by_code = {item["ProviderCode"]: item for item in body["Items"]}
    assert set(by_code) == set(PROVIDER_CODES)
    assert {item["ShortName"] for item in by_code.values()} == {
        "Smart", "Cellcard", "Metfone", "Seatel"}
    smart = by_code[SMART]
    assert smart["CountryIso"] == "KH"
    assert smart["RegionCodes"] == ["KH"]
    assert smart["PaymentTypes"] == ["Prepaid"]
    assert set(smart) >= {"Name", "ValidationRegex", "CustomerCareNumber", "LogoUrl"}


def test_get_providers_filters_by_repeated_query_parameters(client: httpx.Client) -> None:
    assert sorted(provider_codes(client, countryIsos=["KH", "TH"])) == sorted(PROVIDER_CODES)
    assert provider_codes(client, countryIsos="TH") == []
    assert sorted(provider_codes(client, providerCodes=[SMART, SEATEL])) == sorted(
        [SMART, SEATEL])
    assert provider_codes(client, regionCodes="KH", providerCodes=METFONE) == [METFONE]
    assert provider_codes(client, regionCodes="TH") == []


@pytest.mark.parametrize(("provider", "prefix"), [
    (provider, prefix) for provider, prefixes in PREFIXES.items() for prefix in prefixes.split()])
def test_the_account_number_tells_the_operator_from_its_prefix(
        client: httpx.Client, provider: str, prefix: str) -> None:
    for subscriber in ("234567", "2345678"):  # 6 or 7 digits after the prefix
        assert provider_codes(client, accountNumber=f"855{prefix}{subscriber}") == [provider]
        assert provider_codes(client, accountNumber=f"+855{prefix}{subscriber}") == [provider]


@pytest.mark.parametrize("number", [
    "012345678",  # national format, not international
    "8551234567",  # too short
    "855123456789012",  # too long
    "85513234567",  # 13 is nobody's prefix
    "66812345678",  # Thailand
])
def test_an_account_number_no_operator_owns_matches_no_provider(
        client: httpx.Client, number: str) -> None:
    assert provider_codes(client, accountNumber=number) == []


def test_get_provider_status_follows_set_provider_down(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.set_provider_down(CELLCARD)
    items = body_of(client.get("/api/V1/GetProviderStatus"))["Items"]
    assert {i["ProviderCode"]: i["IsProcessingTransfers"] for i in items} == {
        SMART: True, CELLCARD: False, METFONE: True, SEATEL: True}

    ding.set_provider_down(CELLCARD, down=False)
    only = body_of(client.get("/api/V1/GetProviderStatus", params={"providerCodes": CELLCARD}))
    assert [(i["ProviderCode"], i["IsProcessingTransfers"]) for i in only["Items"]] == [
        (CELLCARD, True)]


def test_set_provider_down_refuses_an_unknown_provider(ding: FakeDingConnect) -> None:
    with pytest.raises(KeyError, match="XXKH"):
        ding.set_provider_down("XXKH")


# -- products ---------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDER_CODES)
def test_each_provider_has_fixed_range_and_data_products(
        client: httpx.Client, provider: str) -> None:
    items = products(client, providerCodes=provider)
    skus = SKUS[provider]
    assert set(items) == {*skus.fixed.values(), skus.range, skus.data}

    for value, sku in skus.fixed.items():
        fixed = items[sku]
        assert fixed["Minimum"] == fixed["Maximum"]
        assert fixed["Minimum"]["SendValue"] == value
        assert fixed["Minimum"]["SendCurrencyIso"] == "USD"
        assert fixed["Minimum"]["ReceiveValue"] == value
        assert fixed["Minimum"]["ReceiveCurrencyIso"] == "USD"
        assert fixed["Benefits"] == ["Mobile"]
        assert fixed["CommissionRate"] == Decimal("0.03")

    ranged = items[skus.range]
    assert ranged["Minimum"]["SendValue"] == Decimal("0.5")
    assert ranged["Maximum"]["SendValue"] == Decimal("50")

    data = items[skus.data]
    assert data["Benefits"] == ["Data"]
    assert data["ValidityPeriodIso"] == "P30D"
    assert "20 GB 30 days" in data["DefaultDisplayText"]
    assert data["Minimum"] == data["Maximum"]
    assert data["Minimum"]["DistributorFee"] == Decimal("0.10")

    for item in items.values():
        assert item["ProviderCode"] == provider
        assert item["RedemptionMechanism"] == "Immediate"
        assert item["RegionCode"] == "KH"
        assert item["LookupBillsRequired"] is False
        assert item["SettingDefinitions"] == []
        assert item["ProcessingMode"] == ("Batch" if item["SkuCode"] == BATCH_SKU
                                          else "Instant")


def test_seatels_range_product_receives_riel(client: httpx.Client) -> None:
    seatel_range = products(client, skuCodes=KHR_SKU)[KHR_SKU]

    assert seatel_range["Minimum"]["ReceiveCurrencyIso"] == "KHR"
    assert seatel_range["Minimum"]["ReceiveValue"] == Decimal("0.50") * KHR_PER_USD
    assert seatel_range["Maximum"]["ReceiveValue"] == Decimal("50") * KHR_PER_USD
    assert seatel_range["Maximum"]["SendCurrencyIso"] == "USD"
    smart_range = products(client, skuCodes=SKUS[SMART].range)[SKUS[SMART].range]
    assert smart_range["Maximum"]["ReceiveCurrencyIso"] == "USD"


def test_the_metfone_data_bundle_is_the_batch_product(client: httpx.Client) -> None:
    batch = [sku for sku, item in products(client).items() if item["ProcessingMode"] == "Batch"]
    assert batch == [BATCH_SKU]
    assert SKUS[METFONE].data == BATCH_SKU


def test_get_products_filters(client: httpx.Client) -> None:
    everything = products(client)
    assert len(everything) == len(PROVIDER_CODES) * (len(FIXED_TOPUP_VALUES) + 2)
    assert set(products(client, countryIsos=["TH", "KH"])) == set(everything)
    assert products(client, countryIsos="TH") == {}
    assert set(products(client, benefits="Data")) == {SKUS[p].data for p in PROVIDER_CODES}
    assert set(products(client, skuCodes=[SMART_5, KHR_SKU])) == {SMART_5, KHR_SKU}
    assert {i["ProviderCode"] for i in products(
        client, providerCodes=[SMART, SEATEL]).values()} == {SMART, SEATEL}
    by_number = products(client, accountNumber="+" + EXAMPLE_NUMBERS[METFONE])
    assert {i["ProviderCode"] for i in by_number.values()} == {METFONE}
    assert products(client, accountNumber="012345678") == {}
    assert products(client, regionCodes="TH") == {}


# -- balance and error descriptions -----------------------------------------------------


def test_get_balance_reports_the_balance_and_set_balance_changes_it(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    assert body_of(client.get("/api/V1/GetBalance")) == {
        "Balance": START_BALANCE, "CurrencyIso": "USD", "ResultCode": RESULT_SUCCESS,
        "ErrorCodes": []}

    ding.set_balance(Decimal("12.34"))

    assert body_of(client.get("/api/V1/GetBalance"))["Balance"] == Decimal("12.34")
    assert ding.balance == Decimal("12.34")


def test_money_controls_take_decimals_only(ding: FakeDingConnect) -> None:
    with pytest.raises(TypeError, match="Decimal"):
        ding.set_balance(12.34)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Decimal"):
        FakeDingConnect(balance=5)  # type: ignore[arg-type]


def test_get_error_code_descriptions_lists_every_code_the_fake_uses(
        client: httpx.Client) -> None:
    body = body_of(client.get("/api/V1/GetErrorCodeDescriptions"))

    assert body["ResultCode"] == RESULT_SUCCESS
    described = {item["Code"]: item["Message"] for item in body["Items"]}
    assert set(described) == {str(code) for code in ErrorCode}
    assert set(ERROR_DESCRIPTIONS) == set(ErrorCode)
    assert all(described.values())
    assert "ProviderTimedOut" in described


# -- SendTransfer: success ----------------------------------------------------------------


def test_an_instant_transfer_completes_at_once_and_deducts_its_cost(
        ding: FakeDingConnect, client: httpx.Client, clock: ManualClock) -> None:
    response = send(client, ref="order-1")

    assert response.status_code == 200
    body = body_of(response)
    assert body["ResultCode"] == RESULT_SUCCESS
    assert body["ErrorCodes"] == []
    record = body["TransferRecord"]
    assert record["TransferId"]["DistributorRef"] == "order-1"
    assert record["TransferId"]["TransferRef"]
    assert record["ProcessingState"] == "Complete"
    assert record["SkuCode"] == SMART_5
    assert record["AccountNumber"] == SMART_NUMBER
    assert record["Price"]["SendValue"] == Decimal("5")
    assert record["Price"]["ReceiveValue"] == Decimal("5")
    assert record["CommissionApplied"] == Decimal("0.15")
    assert record["StartedUtc"] == record["CompletedUtc"] == "2026-11-25T02:00:00.000Z"
    assert record["ReceiptParams"]["providerRef"]
    assert ding.balance == START_BALANCE - SMART_5_COST

    [transfer] = ding.transfers()
    assert transfer.transfer_ref == record["TransferId"]["TransferRef"]
    assert transfer.distributor_ref == "order-1"
    assert transfer.state is ProcessingState.COMPLETE
    assert transfer.cost == transfer.charged == SMART_5_COST
    assert transfer.send_value == Decimal("5.00")
    assert transfer.started_utc == transfer.completed_utc == clock.now()
    assert ding.transfer_by_ref("order-1") == transfer
    assert ding.transfer_by_ref("unknown") is None


def test_a_range_transfer_prices_the_value_sent_and_rounds_commission_half_up(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    response = send(client, sku=SKUS[SMART].range, value=7.25)

    record = body_of(response)["TransferRecord"]
    assert record["Price"]["ReceiveValue"] == Decimal("7.25")
    assert record["CommissionApplied"] == Decimal("0.15")  # 2 % of 7.25 = 0.145
    assert ding.balance == START_BALANCE - Decimal("7.10")


def test_a_seatel_range_transfer_receives_riel(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    response = send(client, sku=KHR_SKU, value=7.25, account=EXAMPLE_NUMBERS[SEATEL])

    price = body_of(response)["TransferRecord"]["Price"]
    assert (price["ReceiveValue"], price["ReceiveCurrencyIso"]) == (Decimal("29725"), "KHR")
    assert (price["SendValue"], price["SendCurrencyIso"]) == (Decimal("7.25"), "USD")
    [transfer] = ding.transfers()
    assert (transfer.receive_value, transfer.receive_currency) == (Decimal("29725"), "KHR")


def test_a_data_bundle_costs_its_value_plus_the_distributor_fee(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    response = send(client, sku=SKUS[SMART].data, value=5)

    record = body_of(response)["TransferRecord"]
    assert record["Price"]["DistributorFee"] == Decimal("0.10")
    assert record["CommissionApplied"] == 0
    assert ding.balance == START_BALANCE - Decimal("5.10")


def test_a_leading_plus_lowercase_fields_and_the_currency_in_any_case_are_accepted(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    response = client.post(SEND, json={
        "skuCode": SMART_5, "sendValue": 5, "accountNumber": "+" + SMART_NUMBER,
        "distributorRef": "r", "validateOnly": False, "sendCurrencyIso": "usd",
        "Settings": [{"Name": "note", "Value": "x"}], "BillRef": None})

    assert response.status_code == 200, response.text
    assert body_of(response)["TransferRecord"]["AccountNumber"] == SMART_NUMBER
    assert ding.transfers()[0].account_number == SMART_NUMBER


def test_the_uat_number_completes_without_deducting_anything(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    assert products(client, skuCodes=SMART_5)[SMART_5]["UatNumber"] == UAT_NUMBERS[SMART]

    response = send(client, account=UAT_NUMBERS[SMART])

    record = body_of(response)["TransferRecord"]
    assert record["ProcessingState"] == "Complete"
    assert record["CommissionApplied"] == 0
    assert ding.balance == START_BALANCE
    [transfer] = ding.transfers()
    assert transfer.uat
    assert transfer.charged == 0


# -- SendTransfer: refusals ---------------------------------------------------------------


def _without(field: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"SkuCode": SMART_5, "SendValue": 5, "AccountNumber": SMART_NUMBER,
                              "DistributorRef": "r", "ValidateOnly": False}
    del fields[field]
    return fields


REFUSALS = [
    pytest.param({"SkuCode": "NOPE"}, "ProductNotFound", "NOPE", id="unknown-sku"),
    pytest.param({"AccountNumber": EXAMPLE_NUMBERS[CELLCARD]}, "AccountNumberInvalid",
                 "AccountNumber", id="other-operators-number"),
    pytest.param({"AccountNumber": "010234567"}, "AccountNumberInvalid", "AccountNumber",
                 id="national-format"),
    pytest.param({"AccountNumber": "8551023456"}, "AccountNumberInvalid", "AccountNumber",
                 id="too-short"),
    pytest.param({"SendValue": 4.99}, "ValueOutOfRange", None, id="fixed-value-differs"),
    pytest.param({"SkuCode": SKUS[SMART].range, "SendValue": 0.49}, "ValueOutOfRange", None,
                 id="below-range"),
    pytest.param({"SkuCode": SKUS[SMART].range, "SendValue": 50.01}, "ValueOutOfRange", None,
                 id="above-range"),
    pytest.param({"SendValue": 5.001}, "InvalidSendValue", "SendValue", id="three-decimals"),
    pytest.param({"SendValue": -5}, "InvalidSendValue", "SendValue", id="negative"),
    pytest.param({"SendValue": 0}, "InvalidSendValue", "SendValue", id="zero"),
    pytest.param({"SendValue": "5.00"}, "InvalidSendValue", "SendValue", id="string"),
    pytest.param({"SendValue": True}, "InvalidSendValue", "SendValue", id="boolean"),
    pytest.param({"SendCurrencyIso": "KHR"}, "InvalidSendCurrency", "SendCurrencyIso",
                 id="other-currency"),
    pytest.param({"ValidateOnly": "false"}, "InvalidRequest", "ValidateOnly",
                 id="validate-only-not-bool"),
    pytest.param({"DistributorRef": ""}, "InvalidRequest", "DistributorRef", id="empty-ref"),
    pytest.param({"SkuCode": 5}, "InvalidRequest", "SkuCode", id="sku-not-text"),
]


@pytest.mark.parametrize(("change", "code", "context"), REFUSALS)
def test_a_refused_transfer_answers_400_and_records_and_charges_nothing(
        ding: FakeDingConnect, client: httpx.Client, change: dict[str, Any], code: str,
        context: str | None) -> None:
    fields = {"SkuCode": SMART_5, "SendValue": 5, "AccountNumber": SMART_NUMBER,
              "DistributorRef": "r", "ValidateOnly": False, **change}

    response = client.post(SEND, json=fields)

    assert response.status_code == 400
    body = body_of(response)
    assert body["TransferRecord"] is None
    assert body["ResultCode"] == RESULT_REFUSED
    assert codes(response) == [code]
    if context is not None:
        assert body["ErrorCodes"][0]["Context"] == context
    assert ding.transfers() == []
    assert ding.balance == START_BALANCE


@pytest.mark.parametrize(("missing", "code"), [
    ("SkuCode", "InvalidRequest"), ("AccountNumber", "InvalidRequest"),
    ("DistributorRef", "InvalidRequest"), ("ValidateOnly", "InvalidRequest"),
    ("SendValue", "InvalidSendValue")])
def test_each_required_field_is_required(
        ding: FakeDingConnect, client: httpx.Client, missing: str, code: str) -> None:
    response = client.post(SEND, json=_without(missing))

    assert response.status_code == 400
    assert body_of(response)["ErrorCodes"] == [{"Code": code, "Context": missing}]
    assert ding.transfers() == []


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b""])
def test_a_body_that_is_no_json_object_is_refused(
        client: httpx.Client, content: bytes) -> None:
    response = client.post(SEND, content=content, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert codes(response) == ["InvalidRequest"]
    assert body_of(response)["TransferRecord"] is None


def test_a_balance_below_the_cost_is_refused_and_exactly_the_cost_is_enough(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.set_balance(SMART_5_COST - Decimal("0.01"))

    refused = send(client, ref="r")

    assert refused.status_code == 400
    assert codes(refused) == ["InsufficientBalance"]
    assert ding.balance == SMART_5_COST - Decimal("0.01")
    assert ding.transfers() == []

    ding.set_balance(SMART_5_COST)
    accepted = send(client, ref="r")  # the refusal did not use the ref up

    assert accepted.status_code == 200
    assert ding.balance == 0


# -- DistributorRef ---------------------------------------------------------------------


def test_a_repeated_distributor_ref_is_refused_by_default(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    assert send(client, ref="same").status_code == 200

    repeat = send(client, ref="same")

    assert repeat.status_code == 400
    assert body_of(repeat)["ErrorCodes"] == [
        {"Code": "DuplicateDistributorRef", "Context": "same"}]
    assert len(ding.transfers()) == 1
    assert ding.balance == START_BALANCE - SMART_5_COST


def test_a_repeated_distributor_ref_is_refused_whatever_the_rest_of_the_request(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    send(client, ref="same")

    other = send(client, sku=SKUS[CELLCARD].range, value=3, account=EXAMPLE_NUMBERS[CELLCARD],
                 ref="same")

    assert codes(other) == ["DuplicateDistributorRef"]


def test_pay_twice_processes_the_repeat_as_a_new_transfer(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.duplicate_refs = "pay_twice"

    first = body_of(send(client, ref="same"))["TransferRecord"]
    second = body_of(send(client, ref="same"))["TransferRecord"]

    assert first["TransferId"]["TransferRef"] != second["TransferId"]["TransferRef"]
    assert [t.distributor_ref for t in ding.transfers()] == ["same", "same"]
    assert ding.balance == START_BALANCE - 2 * SMART_5_COST
    newest = ding.transfer_by_ref("same")
    assert newest is not None
    assert newest.transfer_ref == second["TransferId"]["TransferRef"]


def test_pay_twice_can_be_chosen_in_the_constructor(clock: ManualClock) -> None:
    with FakeDingConnect(clock=clock.now, duplicate_refs="pay_twice") as fake, \
            httpx.Client(base_url=fake.base_url, headers={"api_key": DEFAULT_API_KEY}) as http:
        assert send(http, ref="x").status_code == send(http, ref="x").status_code == 200
        assert len(fake.transfers()) == 2


# -- ValidateOnly -------------------------------------------------------------------------


def test_validate_only_checks_deducts_nothing_and_keeps_the_ref_free(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    response = send(client, ref="v", validate_only=True)

    assert response.status_code == 200
    body = body_of(response)
    assert body["ResultCode"] == RESULT_SUCCESS
    record = body["TransferRecord"]
    assert record["TransferId"] is None
    assert record["Price"]["SendValue"] == Decimal("5")
    assert record["Price"]["ReceiveValue"] == Decimal("5")
    assert ding.balance == START_BALANCE
    assert ding.transfers() == []
    assert listed(client)["Items"] == []

    assert send(client, ref="v").status_code == 200
    assert len(ding.transfers()) == 1


def test_validate_only_refuses_what_the_transfer_would_be_refused_for(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.set_balance(Decimal("1.00"))
    assert codes(send(client, validate_only=True)) == ["InsufficientBalance"]
    assert codes(send(client, value=4, validate_only=True)) == ["ValueOutOfRange"]
    ding.set_balance(START_BALANCE)
    send(client, ref="used")
    assert codes(send(client, ref="used", validate_only=True)) == ["DuplicateDistributorRef"]


def test_validate_only_does_not_use_up_armed_outcomes(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.submit_next()
    ding.provider_timeout_next()

    send(client, ref="check", validate_only=True)

    assert codes(send(client, ref="a")) == ["ProviderTimedOut"]
    assert body_of(send(client, ref="b"))["TransferRecord"]["ProcessingState"] == "Submitted"


# -- Submitted transfers that settle --------------------------------------------------------


def test_a_batch_product_is_submitted_charged_at_once_and_settles_complete(
        ding: FakeDingConnect, client: httpx.Client, clock: ManualClock) -> None:
    response = send(client, sku=BATCH_SKU, value=5, account=EXAMPLE_NUMBERS[METFONE])

    assert response.status_code == 200
    record = body_of(response)["TransferRecord"]
    assert record["ProcessingState"] == "Submitted"
    assert record["CompletedUtc"] is None
    assert record["ReceiptParams"] == {}
    assert ding.balance == START_BALANCE - Decimal("5.10")
    ref = record["TransferId"]["TransferRef"]

    clock.advance(BATCH_SETTLE_AFTER - timedelta(seconds=1))
    assert listed(client, TransferRef=ref)["Items"][0]["TransferRecord"][
        "ProcessingState"] == "Submitted"

    clock.advance(timedelta(seconds=1))
    [item] = listed(client, TransferRef=ref)["Items"]
    assert item["TransferRecord"]["ProcessingState"] == "Complete"
    assert item["TransferRecord"]["CompletedUtc"] == "2026-11-25T02:02:00.000Z"
    assert item["TransferRecord"]["ReceiptParams"]["providerRef"]
    assert item["ResultCode"] == RESULT_SUCCESS
    assert ding.balance == START_BALANCE - Decimal("5.10")


def test_submit_next_makes_an_instant_product_settle_failed_and_refunded(
        ding: FakeDingConnect, client: httpx.Client, clock: ManualClock) -> None:
    ding.submit_next(settle_to="Failed", after=timedelta(minutes=10))

    record = body_of(send(client, ref="late"))["TransferRecord"]

    assert record["ProcessingState"] == "Submitted"
    assert ding.balance == START_BALANCE - SMART_5_COST
    clock.advance(timedelta(minutes=9))
    assert ding.balance == START_BALANCE - SMART_5_COST

    clock.advance(timedelta(minutes=1))
    [item] = listed(client, DistributorRef="late")["Items"]
    assert item["TransferRecord"]["ProcessingState"] == "Failed"
    assert item["ResultCode"] == RESULT_FAILED
    assert [e["Code"] for e in item["ErrorCodes"]] == ["ProviderError"]
    assert item["TransferRecord"]["CommissionApplied"] == 0
    assert ding.balance == START_BALANCE
    transfer = ding.transfer_by_ref("late")
    assert transfer is not None
    assert transfer.state is ProcessingState.FAILED
    assert transfer.charged == 0
    assert transfer.cost == SMART_5_COST


def test_settlement_is_seen_by_the_controls_too(
        ding: FakeDingConnect, client: httpx.Client, clock: ManualClock) -> None:
    ding.submit_next(after=timedelta(minutes=1))
    send(client, ref="s")

    clock.advance(timedelta(minutes=1))

    transfer = ding.transfer_by_ref("s")
    assert transfer is not None
    assert transfer.state is ProcessingState.COMPLETE
    assert transfer.completed_utc == datetime(2026, 11, 25, 2, 1, tzinfo=UTC)


def test_submit_next_counts_transfers(ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.submit_next(2)

    states = [body_of(send(client, ref=f"r{n}"))["TransferRecord"]["ProcessingState"]
              for n in range(3)]

    assert states == ["Submitted", "Submitted", "Complete"]


def test_a_refused_transfer_does_not_use_up_submit_next(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.submit_next()
    send(client, sku="NOPE")

    assert body_of(send(client))["TransferRecord"]["ProcessingState"] == "Submitted"


def test_settle_by_hand(ding: FakeDingConnect, client: httpx.Client,
                        clock: ManualClock) -> None:
    ding.submit_next(2, after=timedelta(hours=1))
    first = body_of(send(client, ref="a"))["TransferRecord"]["TransferId"]["TransferRef"]
    second = body_of(send(client, ref="b"))["TransferRecord"]["TransferId"]["TransferRef"]
    clock.advance(timedelta(minutes=5))

    ding.settle(first, "Complete")
    ding.settle(second, "Failed")
    clock.advance(timedelta(hours=2))  # the schedule no longer applies

    a, b = ding.transfer_by_ref("a"), ding.transfer_by_ref("b")
    assert a is not None
    assert b is not None
    assert (a.state, a.completed_utc) == (ProcessingState.COMPLETE,
                                          datetime(2026, 11, 25, 2, 5, tzinfo=UTC))
    assert (b.state, b.charged) == (ProcessingState.FAILED, Decimal(0))
    assert ding.balance == START_BALANCE - SMART_5_COST
    with pytest.raises(ValueError, match="not Submitted"):
        ding.settle(first, "Failed")
    with pytest.raises(KeyError):
        ding.settle("no-such-ref", "Complete")


# -- provider timeouts and outages ----------------------------------------------------------


def test_provider_timeout_answers_failed_and_charges_nothing(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.provider_timeout_next()

    response = send(client, ref="slow")

    assert response.status_code == 500
    body = body_of(response)
    assert body["ResultCode"] == RESULT_FAILED
    assert codes(response) == ["ProviderTimedOut"]
    assert body["TransferRecord"]["ProcessingState"] == "Failed"
    assert body["TransferRecord"]["TransferId"]["DistributorRef"] == "slow"
    assert ding.balance == START_BALANCE
    transfer = ding.transfer_by_ref("slow")
    assert transfer is not None
    assert (transfer.state, transfer.charged) == (ProcessingState.FAILED, Decimal(0))
    [item] = listed(client, DistributorRef="slow")["Items"]
    assert item["ErrorCodes"] == [{"Code": "ProviderTimedOut", "Context": SMART}]
    assert item["ResultCode"] == RESULT_FAILED

    # the failed record keeps its ref; the next transfer goes through
    assert codes(send(client, ref="slow")) == ["DuplicateDistributorRef"]
    assert body_of(send(client, ref="again"))["TransferRecord"]["ProcessingState"] == "Complete"
    assert ding.balance == START_BALANCE - SMART_5_COST


def test_provider_timeout_next_counts_and_comes_before_submit_next(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.submit_next()
    ding.provider_timeout_next(2)

    first, second, third = (send(client, ref=f"r{n}") for n in range(3))

    assert codes(first) == codes(second) == ["ProviderTimedOut"]
    assert body_of(third)["TransferRecord"]["ProcessingState"] == "Submitted"


def test_a_provider_marked_down_refuses_with_503_and_nothing_recorded(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.set_provider_down(SMART)

    response = send(client, ref="down")
    validation = send(client, ref="down", validate_only=True)
    other = send(client, sku=SKUS[CELLCARD].fixed[Decimal(1)], value=1,
                 account=EXAMPLE_NUMBERS[CELLCARD], ref="elsewhere")

    assert response.status_code == validation.status_code == 503
    assert body_of(response)["ErrorCodes"] == [{"Code": "ProviderUnavailable", "Context": SMART}]
    assert body_of(response)["ResultCode"] == RESULT_FAILED
    assert body_of(response)["TransferRecord"] is None
    assert other.status_code == 200
    assert [t.distributor_ref for t in ding.transfers()] == ["elsewhere"]

    ding.set_provider_down(SMART, down=False)
    assert send(client, ref="down").status_code == 200


# -- ListTransferRecords ----------------------------------------------------------------


def test_list_transfer_records_needs_take(client: httpx.Client) -> None:
    for request in ({}, {"Take": 0}, {"Take": "10"}, {"Take": 10, "Skip": -1}):
        response = client.post(LIST, json=request)
        assert response.status_code == 400, request
        assert codes(response) == ["InvalidRequest"]
        assert "TransferRecord" not in body_of(response)


def test_list_transfer_records_pages_newest_first(
        client: httpx.Client, clock: ManualClock) -> None:
    for n in range(1, 6):
        send(client, ref=f"r{n}")
        clock.advance(timedelta(minutes=1))

    def page(skip: int, take: int) -> tuple[list[str], bool]:
        body = body_of(client.post(LIST, json={"Skip": skip, "Take": take}))
        return ([i["TransferRecord"]["TransferId"]["DistributorRef"] for i in body["Items"]],
                body["ThereAreMoreItems"])

    assert page(0, 2) == (["r5", "r4"], True)
    assert page(2, 2) == (["r3", "r2"], True)
    assert page(4, 2) == (["r1"], False)
    assert page(0, 5) == (["r5", "r4", "r3", "r2", "r1"], False)
    assert page(5, 2) == ([], False)


def test_transfers_started_in_the_same_instant_list_the_later_first(
        client: httpx.Client) -> None:
    send(client, ref="first")
    send(client, ref="second")

    refs = [i["TransferRecord"]["TransferId"]["DistributorRef"] for i in listed(client)["Items"]]
    assert refs == ["second", "first"]


def test_list_transfer_records_filters(client: httpx.Client) -> None:
    send(client, ref="smart")
    cellcard = body_of(send(client, sku=SKUS[CELLCARD].fixed[Decimal(2)], value=2,
                            account=EXAMPLE_NUMBERS[CELLCARD], ref="cellcard"))
    cellcard_ref = cellcard["TransferRecord"]["TransferId"]["TransferRef"]

    def refs(**query: Any) -> list[str]:
        return [i["TransferRecord"]["TransferId"]["DistributorRef"]
                for i in listed(client, **query)["Items"]]

    assert refs(DistributorRef="smart") == ["smart"]
    assert refs(TransferRef=cellcard_ref) == ["cellcard"]
    assert refs(AccountNumber=EXAMPLE_NUMBERS[CELLCARD]) == ["cellcard"]
    assert refs(AccountNumber="+" + SMART_NUMBER) == ["smart"]
    assert refs(DistributorRef="smart", AccountNumber=EXAMPLE_NUMBERS[CELLCARD]) == []
    assert refs(DistributorRef="nobody") == []


def test_only_the_last_two_months_are_listed(
        ding: FakeDingConnect, client: httpx.Client, clock: ManualClock) -> None:
    send(client, ref="old")  # 2026-11-25 02:00
    clock.set(datetime(2027, 1, 25, 2, 0, tzinfo=UTC))
    assert refs_listed(client) == ["old"]

    clock.advance(timedelta(seconds=1))

    assert refs_listed(client) == []
    assert [t.distributor_ref for t in ding.transfers()] == ["old"]
    assert codes(send(client, ref="old")) == ["DuplicateDistributorRef"]


def test_two_months_back_from_the_end_of_a_month_stops_at_the_shorter_months_end(
        client: httpx.Client, clock: ManualClock) -> None:
    clock.set(datetime(2027, 2, 28, 11, 59, tzinfo=UTC))
    send(client, ref="before")
    clock.set(datetime(2027, 2, 28, 12, 0, tzinfo=UTC))
    send(client, ref="at")

    clock.set(datetime(2027, 4, 30, 12, 0, tzinfo=UTC))  # two months back: Feb 28, 12:00

    assert refs_listed(client) == ["at"]


# -- transport faults from the base ---------------------------------------------------------


def test_a_dropped_answer_still_charges_and_the_retry_is_a_duplicate(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.faults.add(Fault.drop_after_processing(), path=SEND)

    with pytest.raises(httpx.RemoteProtocolError):
        send(client, ref="lost")

    assert ding.balance == START_BALANCE - SMART_5_COST
    transfer = ding.transfer_by_ref("lost")
    assert transfer is not None
    assert transfer.state is ProcessingState.COMPLETE
    assert codes(send(client, ref="lost")) == ["DuplicateDistributorRef"]
    [item] = listed(client, DistributorRef="lost")["Items"]
    assert item["TransferRecord"]["TransferId"]["TransferRef"] == transfer.transfer_ref


def test_an_injected_503_is_not_processed_and_has_dings_body(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.faults.add(Fault.http_status(503), path=SEND)

    response = send(client, ref="r")

    assert response.status_code == 503
    assert body_of(response) == {"TransferRecord": None, "ResultCode": RESULT_FAILED,
                                 "ErrorCodes": [{"Code": "ServiceUnavailable", "Context": SEND}]}
    assert ding.transfers() == []
    assert ding.balance == START_BALANCE
    assert send(client, ref="r").status_code == 200  # the fault fired once


def test_an_injected_429_is_rate_limited_with_retry_after(
        ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.faults.add(Fault.http_status(429), path="/api/V1/GetProducts")

    response = client.get("/api/V1/GetProducts")

    assert response.status_code == 429
    assert codes(response) == ["RateLimited"]
    assert "TransferRecord" not in body_of(response)
    assert response.headers["Retry-After"] == "1"


def test_a_delayed_answer_times_the_client_out_after_the_transfer_was_made(
        ding: FakeDingConnect) -> None:
    ding.faults.add(Fault.delay_after_processing(1.0), path=SEND)

    with httpx.Client(base_url=ding.base_url, headers={"api_key": DEFAULT_API_KEY},
                      timeout=0.2) as impatient, pytest.raises(httpx.ReadTimeout):
        send(impatient, ref="late")

    transfer = ding.transfer_by_ref("late")
    assert transfer is not None
    assert transfer.state is ProcessingState.COMPLETE


def test_latency_slows_every_answer(ding: FakeDingConnect, client: httpx.Client) -> None:
    ding.latency_seconds = 0.3

    started = time.monotonic()
    response = client.get("/api/V1/GetBalance")

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_requests_are_logged(ding: FakeDingConnect, client: httpx.Client) -> None:
    send(client, ref="logged")

    [request] = ding.requests_to(SEND, method="POST")
    assert json.loads(request.body)["DistributorRef"] == "logged"
    assert request.headers["api_key"] == DEFAULT_API_KEY
