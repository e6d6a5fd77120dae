"""The Airalo fake keeps the documented rules: driven over HTTP with a plain httpx client."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from bot.clock import ManualClock
from tests.fakes.airalo import (
    ASIA_1GB,
    ASIA_5GB,
    ASIA_TOPUP_1GB,
    DEFAULT_BRAND,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    KOUPREY_ID,
    MAX_QUANTITY,
    PACKAGE_1GB,
    PACKAGE_3GB,
    PACKAGE_5GB,
    PACKAGE_10GB,
    PACKAGE_UNLIMITED,
    TOPUP_1GB,
    TOPUP_3GB,
    TOPUP_5GB,
    ErrorCode,
    FakeAiralo,
    RateLimit,
    SimStatus,
    business_error,
    luhn_valid,
)
from tests.fakes.http import Fault

START = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
WIRE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
MATCHING_ID = r"[A-Z0-9]{5}(?:-[A-Z0-9]{5}){4}"
JSON = {"Accept": "application/json"}
# Every client here talks plain HTTP to 127.0.0.1. Sharing one TLS context with no CA loaded
# saves loading the CA bundle per client (20 ms each); TLS, never used, would fail closed.
NO_CA = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
INVALID = {"message": "the parameter is invalid"}
NOT_FOUND = {"data": [], "meta": {"message": "messages.resource_not_found"}}
LONG_TOKENS = timedelta(days=366)  # the tests below move the clock by days


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeAiralo]:
    with FakeAiralo(clock=clock.now, token_lifetime=LONG_TOKENS) as server:
        yield server


def token_form(**overrides: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {"client_id": DEFAULT_CLIENT_ID,
                                   "client_secret": DEFAULT_CLIENT_SECRET,
                                   "grant_type": "client_credentials"}
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def request_token(fake: FakeAiralo, **overrides: str | None) -> httpx.Response:
    return httpx.post(f"{fake.api_url}/token", data=token_form(**overrides), headers=JSON,
                      verify=NO_CA)


def get_token(fake: FakeAiralo) -> str:
    answer = request_token(fake)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"]["access_token"])


def client_for(fake: FakeAiralo) -> httpx.Client:
    headers = {**JSON, "Authorization": f"Bearer {get_token(fake)}"}
    return httpx.Client(base_url=fake.api_url, headers=headers, timeout=5, verify=NO_CA)


@pytest.fixture
def api(fake: FakeAiralo) -> Iterator[httpx.Client]:
    with client_for(fake) as client:
        yield client


def order(api: httpx.Client, **overrides: Any) -> httpx.Response:
    form: dict[str, Any] = {"quantity": "1", "package_id": PACKAGE_1GB, "type": "sim",
                            "description": "ref-1"}
    form.update(overrides)
    return api.post("/orders", data={k: v for k, v in form.items() if v is not None})


def ordered(api: httpx.Client, **overrides: Any) -> dict[str, Any]:
    answer = order(api, **overrides)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def new_iccid(api: httpx.Client, package_id: str = PACKAGE_1GB) -> str:
    return str(ordered(api, package_id=package_id)["sims"][0]["iccid"])


def usage(api: httpx.Client, iccid: str) -> dict[str, Any]:
    answer = api.get(f"/sims/{iccid}/usage")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def assert_invalid(answer: httpx.Response, errors: dict[str, str]) -> None:
    assert answer.status_code == 422, answer.text
    assert answer.json() == {"data": errors, "meta": INVALID}


def assert_business(answer: httpx.Response, code: ErrorCode) -> dict[str, Any]:
    assert answer.status_code == 422, answer.text
    body: dict[str, Any] = answer.json()
    assert set(body) == {"code", "reason"}
    assert body["code"] == code
    return body


# -- token ------------------------------------------------------------------------------------

class TestToken:
    def test_issues_a_bearer_token(self, fake: FakeAiralo) -> None:
        answer = request_token(fake)
        assert answer.status_code == 200
        body = answer.json()
        assert body["meta"] == {"message": "success"}
        assert set(body["data"]) == {"token_type", "expires_in", "access_token"}
        assert body["data"]["token_type"] == "Bearer"
        assert body["data"]["expires_in"] == 366 * 86400
        assert body["data"]["access_token"]
        assert fake.issued_tokens == 1
        assert fake.credentials == {"client_id": DEFAULT_CLIENT_ID,
                                    "client_secret": DEFAULT_CLIENT_SECRET}

    def test_multipart_and_json_bodies_are_taken(self, fake: FakeAiralo) -> None:
        multipart = httpx.post(f"{fake.api_url}/token", headers=JSON, verify=NO_CA,
                               files={k: (None, v) for k, v in token_form().items()})
        as_json = httpx.post(f"{fake.api_url}/token", headers=JSON, json=token_form(),
                             verify=NO_CA)
        assert (multipart.status_code, as_json.status_code) == (200, 200)
        assert fake.issued_tokens == 2

    def test_tokens_last_24_hours_unless_configured(self, clock: ManualClock) -> None:
        with FakeAiralo(clock=clock.now) as fake:
            assert request_token(fake).json()["data"]["expires_in"] == 86400
        with FakeAiralo(clock=clock.now, token_lifetime=timedelta(hours=1)) as fake:
            assert request_token(fake).json()["data"]["expires_in"] == 3600

    def test_an_unknown_client_id_is_invalid(self, fake: FakeAiralo) -> None:
        answer = request_token(fake, client_id="someone-else")
        assert_invalid(answer, {"client_id": "The selected client id is invalid."})
        assert fake.issued_tokens == 0

    def test_a_wrong_secret_fails_client_authentication(self, fake: FakeAiralo) -> None:
        answer = request_token(fake, client_secret="wrong")
        assert answer.status_code == 401
        assert answer.json() == {"data": [], "meta": {"message": "Client authentication failed"}}
        assert fake.issued_tokens == 0

    def test_missing_fields_and_another_grant(self, fake: FakeAiralo) -> None:
        assert_invalid(request_token(fake, client_id=None, client_secret=""), {
            "client_id": "The client id field is required.",
            "client_secret": "The client secret field is required."})
        assert_invalid(request_token(fake, grant_type="password"),
                       {"grant_type": "The selected grant type is invalid."})

    def test_without_accept_json_a_validation_error_redirects(self, fake: FakeAiralo) -> None:
        answer = httpx.post(f"{fake.api_url}/token", data=token_form(client_id="x"),
                            verify=NO_CA)
        assert answer.status_code == 302
        assert answer.headers["location"] == fake.base_url + "/"

    def test_three_a_minute_then_too_many_attempts(self, fake: FakeAiralo,
                                                   clock: ManualClock) -> None:
        assert request_token(fake, client_secret="wrong").status_code == 401  # counted too
        first = request_token(fake)
        assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == (
            "3", "1")
        assert request_token(fake).status_code == 200
        refused = request_token(fake)
        assert refused.status_code == 429
        assert refused.json() == {"message": "Too Many Attempts."}
        assert refused.headers["retry-after"] == "60"
        assert refused.headers["x-ratelimit-limit"] == "3"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        reset = int(refused.headers["x-ratelimit-reset"])
        assert reset == int((START + timedelta(minutes=1)).timestamp())
        clock.advance(timedelta(seconds=59))
        assert request_token(fake).headers["retry-after"] == "1"
        clock.advance(timedelta(seconds=1))
        assert request_token(fake).status_code == 200
        assert fake.issued_tokens == 3

    def test_the_token_limit_is_a_parameter(self, clock: ManualClock) -> None:
        with FakeAiralo(clock=clock.now, token_rate_limit=None) as fake:
            assert all(request_token(fake).status_code == 200 for _ in range(6))


# -- API access -------------------------------------------------------------------------------

class TestAccess:
    @pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic abc", "Bearer"])
    def test_no_good_token_is_unauthenticated(self, fake: FakeAiralo,
                                              authorization: str | None) -> None:
        headers = dict(JSON)
        if authorization is not None:
            headers["Authorization"] = authorization
        answer = httpx.get(f"{fake.api_url}/balance", headers=headers, verify=NO_CA)
        assert answer.status_code == 401
        assert answer.json() == {"message": "Unauthenticated."}

    def test_a_token_expires_by_the_fakes_clock(self, clock: ManualClock) -> None:
        with FakeAiralo(clock=clock.now, token_lifetime=timedelta(hours=1)) as fake, \
                client_for(fake) as api:
            clock.advance(timedelta(minutes=59, seconds=59))
            assert api.get("/balance").status_code == 200
            clock.advance(timedelta(seconds=1))
            assert api.get("/balance").status_code == 401

    def test_expire_tokens_expires_the_issued_ones(self, fake: FakeAiralo,
                                                   api: httpx.Client) -> None:
        fake.expire_tokens()
        assert api.get("/balance").status_code == 401
        fresh = {"Authorization": f"Bearer {get_token(fake)}"}
        assert api.get("/balance", headers=fresh).status_code == 200
        assert fake.issued_tokens == 2

    def test_unauthenticated_without_accept_json_redirects(self, fake: FakeAiralo) -> None:
        assert httpx.get(f"{fake.api_url}/balance", verify=NO_CA).status_code == 302

    def test_unknown_path_and_wrong_method(self, api: httpx.Client) -> None:
        assert api.get("/nothing").status_code == 404
        assert api.get("/orders/topups").status_code == 405
        assert api.get("/token").status_code == 405

    def test_balance(self, fake: FakeAiralo, api: httpx.Client) -> None:
        body = api.get("/balance").json()
        assert body == {"data": {"balances": {"name": "balance", "availableBalance": {
            "amount": 1000.0, "currency": "USD"}}}, "meta": {"message": "success"}}
        fake.set_balance(Decimal("12.34"))
        assert api.get("/balance").json()["data"]["balances"]["availableBalance"]["amount"] == (
            12.34)
        assert fake.balance == Decimal("12.34")


# -- packages ---------------------------------------------------------------------------------

def package_ids(body: dict[str, Any]) -> set[str]:
    return {p["id"] for entry in body["data"] for op in entry["operators"]
            for p in op["packages"]}


class TestPackages:
    def test_local_packages_of_cambodia(self, api: httpx.Client) -> None:
        answer = api.get("/packages", params={"filter[type]": "local", "filter[country]": "KH"})
        assert answer.status_code == 200
        body = answer.json()
        [entry] = body["data"]
        assert (entry["slug"], entry["country_code"], entry["title"]) == (
            "cambodia", "KH", "Cambodia")
        assert {"width", "height", "url"} <= set(entry["image"])
        assert package_ids(body) == {PACKAGE_1GB, PACKAGE_3GB, PACKAGE_5GB, PACKAGE_10GB,
                                     PACKAGE_UNLIMITED}
        fixed, unlimited = entry["operators"]
        assert fixed["id"] == KOUPREY_ID and fixed["type"] == "local"
        for name in ("title", "esim_type", "is_prepaid", "is_roaming", "plan_type",
                     "activation_policy", "rechargeability", "apn", "coverages", "countries"):
            assert name in fixed
        assert fixed["countries"][0]["country_code"] == "KH"
        one = next(p for p in fixed["packages"] if p["id"] == PACKAGE_1GB)
        assert (one["type"], one["price"], one["net_price"], one["amount"], one["day"]) == (
            "sim", 5.0, 2.5, 1024, 7)
        assert (one["data"], one["title"], one["is_unlimited"]) == ("1 GB", "1 GB - 7 Days",
                                                                    False)
        assert one["prices"] == {"net_price": {"USD": 2.5},
                                 "recommended_retail_price": {"USD": 5.0}}
        for name in ("voice", "text", "short_info", "qr_installation", "manual_installation"):
            assert name in one
        [unl] = unlimited["packages"]
        assert (unl["id"], unl["is_unlimited"], unl["amount"], unl["data"]) == (
            PACKAGE_UNLIMITED, True, 0, "Unlimited")
        assert body["meta"]["total"] == 1 and body["meta"]["message"] == "success"

    def test_global_packages_covering_cambodia(self, api: httpx.Client) -> None:
        body = api.get("/packages", params={"filter[type]": "global",
                                            "filter[country]": "KH"}).json()
        [entry] = body["data"]
        assert (entry["slug"], entry["country_code"], entry["title"]) == ("asia", "", "Asia")
        [operator] = entry["operators"]
        assert operator["type"] == "global"
        assert "KH" in {c["country_code"] for c in operator["countries"]}
        assert package_ids(body) == {ASIA_1GB, ASIA_5GB}

    def test_filters_together_and_apart(self, api: httpx.Client) -> None:
        every = api.get("/packages").json()
        assert [e["slug"] for e in every["data"]] == ["cambodia", "thailand", "vietnam", "asia"]
        kh = api.get("/packages", params={"filter[country]": "kh"}).json()
        assert [e["slug"] for e in kh["data"]] == ["cambodia", "asia"]
        local = api.get("/packages", params={"filter[type]": "local"}).json()
        assert "asia" not in [e["slug"] for e in local["data"]]
        nowhere = api.get("/packages", params={"filter[country]": "FR"}).json()
        assert nowhere["data"] == [] and nowhere["meta"]["total"] == 0

    def test_include_topup_adds_the_topup_packages(self, api: httpx.Client) -> None:
        params = {"filter[country]": "KH", "include": "topup"}
        body = api.get("/packages", params=params).json()
        ids = package_ids(body)
        assert {TOPUP_1GB, TOPUP_3GB, TOPUP_5GB, ASIA_TOPUP_1GB} <= ids
        kinds = {p["id"]: p["type"] for e in body["data"] for op in e["operators"]
                 for p in op["packages"]}
        assert kinds[TOPUP_1GB] == "topup" and kinds[PACKAGE_1GB] == "sim"
        without = package_ids(api.get("/packages", params={"filter[country]": "KH"}).json())
        assert not any(i.endswith("-topup") for i in without)

    def test_pages_of_the_catalogue(self, fake: FakeAiralo, api: httpx.Client) -> None:
        first = api.get("/packages", params={"limit": 3}).json()
        assert [e["slug"] for e in first["data"]] == ["cambodia", "thailand", "vietnam"]
        meta, links = first["meta"], first["links"]
        assert (meta["current_page"], meta["last_page"], meta["per_page"], meta["total"]) == (
            1, 2, "3", 4)
        assert (meta["from"], meta["to"]) == (1, 3)
        assert meta["path"] == f"{fake.api_url}/packages"
        assert links["prev"] is None
        assert links["next"] == f"{fake.api_url}/packages?limit=3&page=2"
        assert links["last"] == f"{fake.api_url}/packages?limit=3&page=2"
        second = api.get(links["next"]).json()
        assert [e["slug"] for e in second["data"]] == ["asia"]
        assert (second["meta"]["from"], second["meta"]["to"]) == (4, 4)
        assert second["links"]["next"] is None
        assert second["links"]["prev"] == f"{fake.api_url}/packages?limit=3&page=1"
        past = api.get("/packages", params={"limit": 3, "page": 9}).json()
        assert past["data"] == [] and (past["meta"]["from"], past["meta"]["to"]) == (None, None)

    def test_bad_paging_parameters(self, api: httpx.Client) -> None:
        assert_invalid(api.get("/packages", params={"limit": "many", "page": "x"}), {
            "limit": "The limit must be an integer.", "page": "The page must be an integer."})
        assert_invalid(api.get("/packages", params={"filter[type]": "regional"}),
                       {"filter.type": "The selected filter.type is invalid."})

    def test_keyed_pages_as_the_docs_prose_warns(self, clock: ManualClock) -> None:
        with FakeAiralo(clock=clock.now, keyed_pages=True) as fake, client_for(fake) as api:
            assert isinstance(api.get("/packages", params={"limit": 2}).json()["data"], list)
            second = api.get("/packages", params={"limit": 2, "page": 2}).json()["data"]
        assert isinstance(second, dict)
        assert {k: v["slug"] for k, v in second.items()} == {"2": "vietnam", "3": "asia"}

    def test_a_sold_out_package_leaves_the_listing(self, fake: FakeAiralo,
                                                   api: httpx.Client) -> None:
        fake.sell_out(PACKAGE_1GB)
        assert PACKAGE_1GB not in package_ids(api.get("/packages").json())
        fake.set_stock(PACKAGE_1GB, None)
        assert PACKAGE_1GB in package_ids(api.get("/packages").json())

    def test_the_packages_rate_limit(self, clock: ManualClock) -> None:
        limit = RateLimit(2, timedelta(minutes=1))
        with FakeAiralo(clock=clock.now, packages_rate_limit=limit) as fake, \
                client_for(fake) as api:
            assert api.get("/packages").headers["x-ratelimit-remaining"] == "1"
            assert api.get("/packages").headers["x-ratelimit-remaining"] == "0"
            refused = api.get("/packages")
            assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
            assert api.get("/balance").status_code == 200  # other endpoints are not limited
            clock.advance(timedelta(minutes=1))
            assert api.get("/packages").status_code == 200


# -- orders -----------------------------------------------------------------------------------

class TestOrder:
    def test_a_successful_order(self, fake: FakeAiralo, api: httpx.Client) -> None:
        answer = order(api, description="bot-order-42")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["meta"] == {"message": "success"}
        data = body["data"]
        assert (data["package_id"], data["quantity"], data["type"], data["description"]) == (
            PACKAGE_1GB, 1, "sim", "bot-order-42")
        assert (data["price"], data["net_price"], data["currency"]) == (5.0, 2.5, "USD")
        assert (data["validity"], data["data"], data["esim_type"]) == (7, "1 GB", "Prepaid")
        assert data["package"] == "Kouprey Mobile-1 GB - 7 Days"
        assert data["code"] == f"20261207-{data['id']:06d}"
        assert data["created_at"] == "2026-12-07 10:00:00"
        assert data["manual_installation"].startswith("<p>")
        assert data["qrcode_installation"].startswith("<p>")
        assert data["installation_guides"]["en"].startswith("https://")
        [sim] = data["sims"]
        for name in ("id", "created_at", "imsis", "qrcode_url", "airalo_code", "apn_type",
                     "apn_value", "is_roaming", "confirmation_code"):
            assert name in sim
        assert sim["lpa"] == "lpa.airalo.com"
        assert re.fullmatch(MATCHING_ID, sim["matching_id"])
        assert sim["qrcode"] == f"LPA:1$lpa.airalo.com${sim['matching_id']}"
        assert re.fullmatch(r"LPA:1\$[^$]+\$[^$]+", sim["qrcode"])
        assert sim["direct_apple_installation_url"] == (
            "https://esimsetup.apple.com/esim_qrcode_provisioning?carddata=" + sim["qrcode"])
        assert re.fullmatch(r"89\d{17,18}", sim["iccid"]) and luhn_valid(sim["iccid"])
        assert (sim["imsis"], sim["confirmation_code"]) == (None, None)
        assert fake.balance == Decimal("997.50")
        [record] = fake.orders
        assert (record.id, record.description, record.cost) == (
            data["id"], "bot-order-42", Decimal("2.50"))
        assert record.iccids == (sim["iccid"],)
        assert fake.sim(sim["iccid"]).status is SimStatus.NOT_ACTIVE

    def test_json_and_multipart_bodies(self, fake: FakeAiralo, api: httpx.Client) -> None:
        as_json = api.post("/orders", json={"quantity": 1, "package_id": PACKAGE_3GB})
        multipart = api.post("/orders", files={"quantity": (None, "2"),
                                               "package_id": (None, PACKAGE_1GB)})
        assert (as_json.status_code, multipart.status_code) == (200, 200)
        assert as_json.json()["data"]["description"] is None
        assert len(multipart.json()["data"]["sims"]) == 2
        assert fake.balance == Decimal("1000.00") - Decimal("4.80") - 2 * Decimal("2.50")

    def test_every_esim_has_its_own_iccid(self, fake: FakeAiralo, api: httpx.Client) -> None:
        many = ordered(api, quantity="5", package_id=PACKAGE_5GB)
        more = ordered(api, quantity="3", package_id=PACKAGE_5GB)
        iccids = [s["iccid"] for s in many["sims"] + more["sims"]]
        matching = [s["matching_id"] for s in many["sims"] + more["sims"]]
        assert len(set(iccids)) == len(set(matching)) == 8
        assert all(luhn_valid(i) for i in iccids)
        assert fake.balance == Decimal("1000.00") - 8 * Decimal("7.20")
        assert len(fake.sims()) == 8

    @pytest.mark.parametrize(("quantity", "message"), [
        ("0", "The quantity must be at least 1."),
        ("51", "The quantity may not be greater than 50."),
        ("1.5", "The quantity must be an integer."),
        ("two", "The quantity must be an integer."),
        (None, "The quantity field is required."),
        ("  ", "The quantity field is required."),
    ])
    def test_quantity_bounds(self, fake: FakeAiralo, api: httpx.Client, quantity: str | None,
                             message: str) -> None:
        assert_invalid(order(api, quantity=quantity), {"quantity": message})
        assert fake.orders == [] and fake.balance == Decimal("1000.00")

    def test_fifty_is_the_most(self, api: httpx.Client) -> None:
        assert len(ordered(api, quantity="50")["sims"]) == 50

    @pytest.mark.parametrize(("package_id", "message"), [
        ("cambodia-1day-1tb", "The selected package is invalid."),
        (TOPUP_1GB, "The selected package is invalid."),  # a top-up is not an eSIM
        (None, "The package id field is required."),
    ])
    def test_a_bad_package(self, fake: FakeAiralo, api: httpx.Client, package_id: str | None,
                           message: str) -> None:
        assert_invalid(order(api, package_id=package_id), {"package_id": message})
        assert fake.orders == []

    def test_every_bad_field_at_once(self, api: httpx.Client) -> None:
        assert_invalid(order(api, package_id="nope", quantity="99", type="topup"), {
            "package_id": "The selected package is invalid.",
            "quantity": "The quantity may not be greater than 50.",
            "type": "The selected type is invalid."})

    def test_brand_and_sharing_fields(self, api: httpx.Client) -> None:
        assert_invalid(order(api, brand_settings_name="Nobody"),
                       {"brand_settings_name": "Brand settings name doesn't exist."})
        assert ordered(api, brand_settings_name=DEFAULT_BRAND)["brand_settings_name"] == (
            DEFAULT_BRAND)
        assert_invalid(order(api, to_email="user@example.com"), {
            "sharing_option": "The sharing option field is required when to email is present."})
        shared = order(api, to_email="user@example.com", **{"sharing_option[]": ["link", "pdf"]})
        assert shared.status_code == 200
        assert_invalid(order(api, description="x" * 256),
                       {"description": "The description may not be greater than 255 "
                                       "characters."})

    def test_a_sold_out_package(self, fake: FakeAiralo, api: httpx.Client) -> None:
        fake.sell_out(PACKAGE_1GB)
        body = assert_business(order(api), ErrorCode.PACKAGE_UNAVAILABLE)
        assert "out of stock" in body["reason"]
        assert fake.orders == [] and fake.balance == Decimal("1000.00")
        assert order(api, package_id=PACKAGE_3GB).status_code == 200

    def test_a_limited_stock(self, fake: FakeAiralo, api: httpx.Client) -> None:
        fake.set_stock(PACKAGE_1GB, 2)
        assert_invalid(order(api, quantity="3"),
                       {"quantity": "SIM quantity is not available. Available quantity: 2."})
        assert len(ordered(api, quantity="2")["sims"]) == 2
        assert_business(order(api), ErrorCode.PACKAGE_UNAVAILABLE)

    def test_insufficient_credit(self, fake: FakeAiralo, api: httpx.Client) -> None:
        fake.set_balance(Decimal("4.99"))
        body = assert_business(order(api, quantity="2"), ErrorCode.INSUFFICIENT_CREDIT)
        assert body["reason"].startswith("Insufficient Airalo Credit: ")
        assert "5.00" in body["reason"] and "4.99" in body["reason"]
        assert fake.orders == [] and fake.balance == Decimal("4.99")
        assert order(api, quantity="1").status_code == 200  # 2.50 is covered
        assert fake.balance == Decimal("2.49")

    def test_operator_maintenance(self, fake: FakeAiralo, api: httpx.Client) -> None:
        fake.set_maintenance(KOUPREY_ID)
        assert_business(order(api), ErrorCode.OPERATOR_MAINTENANCE)
        assert order(api, package_id=ASIA_1GB).status_code == 200
        fake.set_maintenance(KOUPREY_ID, on=False)
        assert order(api).status_code == 200

    def test_ordering_is_not_idempotent(self, fake: FakeAiralo, api: httpx.Client) -> None:
        first = ordered(api, description="same-ref")
        second = ordered(api, description="same-ref")
        assert first["id"] != second["id"]
        assert first["sims"][0]["iccid"] != second["sims"][0]["iccid"]
        assert [o.id for o in fake.orders_with_description("same-ref")] == [first["id"],
                                                                           second["id"]]
        assert fake.balance == Decimal("995.00")

    def test_business_error_bodies_for_injected_faults(self, fake: FakeAiralo,
                                                       api: httpx.Client) -> None:
        assert business_error(33, "9") == {
            "code": 33, "reason": "Insufficient stock of eSIMs remaining: 9. Please try your "
                                  "request again later."}
        fake.faults.add(Fault.http_status(422, business_error(ErrorCode.UNEXPECTED)),
                        path="/v2/orders", method="POST")
        assert_business(order(api), ErrorCode.UNEXPECTED)
        assert fake.orders == []


class TestOrderFaults:
    def test_a_dropped_answer_after_the_order_was_made(self, fake: FakeAiralo,
                                                       api: httpx.Client) -> None:
        fake.faults.add(Fault.drop_after_processing(), path="/v2/orders", method="POST")
        with pytest.raises(httpx.TransportError):
            order(api, description="lost-answer-7")
        [record] = fake.orders_with_description("lost-answer-7")
        assert fake.balance == Decimal("997.50")
        found = api.get("/orders", params={"filter[description]": "lost-answer-7",
                                           "include": "sims"}).json()
        [listed] = found["data"]
        assert (listed["id"], listed["description"]) == (record.id, "lost-answer-7")
        assert [s["iccid"] for s in listed["sims"]] == list(record.iccids)

    def test_a_late_answer_times_out_after_the_order_was_made(self, fake: FakeAiralo,
                                                              api: httpx.Client) -> None:
        fake.faults.add(Fault.delay_after_processing(0.3), path="/v2/orders", method="POST")
        with pytest.raises(httpx.ReadTimeout):
            api.post("/orders", data={"quantity": "1", "package_id": PACKAGE_1GB,
                                      "description": "slow-1"}, timeout=0.05)
        assert len(fake.orders_with_description("slow-1")) == 1

    def test_an_injected_server_error_is_not_processed(self, fake: FakeAiralo,
                                                       api: httpx.Client) -> None:
        fake.faults.add(Fault.http_status(500), path="/v2/orders", method="POST")
        answer = order(api)
        assert answer.status_code == 500
        assert answer.json() == {"message": "Server Error"}
        assert fake.orders == [] and fake.balance == Decimal("1000.00")
        assert order(api).status_code == 200  # fired once


# -- reading orders back ----------------------------------------------------------------------

class TestOrderLookup:
    @pytest.fixture
    def three(self, api: httpx.Client, clock: ManualClock) -> list[dict[str, Any]]:
        made = []
        for description in ("ref-1", "ref-10", "Ref_2"):
            made.append(ordered(api, description=description))
            clock.advance(timedelta(days=1))
        return made

    def test_newest_first_with_documented_strings(self, api: httpx.Client,
                                                  three: list[dict[str, Any]]) -> None:
        body = api.get("/orders").json()
        assert [o["id"] for o in body["data"]] == [o["id"] for o in reversed(three)]
        item = body["data"][0]
        assert (item["price"], item["validity"], item["quantity"]) == ("5.00", "7", 1)
        assert not {"sims", "user", "status"} & set(item)
        assert body["meta"]["total"] == 3

    def test_includes(self, api: httpx.Client, three: list[dict[str, Any]]) -> None:
        item = api.get("/orders", params={"include": "sims,user,status"}).json()["data"][-1]
        assert item["sims"][0]["iccid"] == three[0]["sims"][0]["iccid"]
        assert item["status"] == {"name": "Completed", "slug": "completed"}
        assert "email" in item["user"]

    def test_pages(self, api: httpx.Client, three: list[dict[str, Any]]) -> None:
        page = api.get("/orders", params={"limit": 2, "page": 2}).json()
        assert [o["id"] for o in page["data"]] == [three[0]["id"]]
        assert (page["meta"]["last_page"], page["meta"]["per_page"]) == (2, "2")

    @pytest.mark.parametrize(("params", "expected"), [
        ({"filter[description]": "ref-1"}, [1, 0]),  # LIKE '%ref-1%': ref-10 too
        ({"filter[description]": "REF-10"}, [1]),  # case-insensitive
        ({"filter[description]": "ref_2"}, [2]),
        ({"filter[description]": "ref_1"}, [1, 0]),  # "_" is LIKE's any-one-character
        ({"filter[description]": "nope"}, []),
        ({"filter[created_at]": "2026-12-08 - 2026-12-09"}, [2, 1]),
        ({"filter[order_status]": "completed"}, [2, 1, 0]),
        ({"filter[order_status]": "refunded"}, []),
    ])
    def test_filters(self, api: httpx.Client, three: list[dict[str, Any]],
                     params: dict[str, str], expected: list[int]) -> None:
        answer = api.get("/orders", params=params)
        assert answer.status_code == 200, answer.text
        assert [o["id"] for o in answer.json()["data"]] == [three[i]["id"] for i in expected]

    def test_filter_by_code_and_iccid(self, api: httpx.Client,
                                      three: list[dict[str, Any]]) -> None:
        by_code = api.get("/orders", params={"filter[code]": three[1]["code"]}).json()
        assert [o["id"] for o in by_code["data"]] == [three[1]["id"]]
        iccid = three[2]["sims"][0]["iccid"]
        by_iccid = api.get("/orders", params={"filter[iccid]": iccid[-8:]}).json()
        assert [o["id"] for o in by_iccid["data"]] == [three[2]["id"]]

    def test_one_order(self, api: httpx.Client, three: list[dict[str, Any]]) -> None:
        body = api.get(f"/orders/{three[1]['id']}", params={"include": "sims"}).json()
        assert body["meta"] == {"message": "success"}
        assert (body["data"]["code"], body["data"]["description"]) == (three[1]["code"],
                                                                       "ref-10")
        assert len(body["data"]["sims"]) == 1
        missing = api.get("/orders/1")
        assert missing.status_code == 404 and missing.json() == NOT_FOUND

    def test_the_esim(self, api: httpx.Client, three: list[dict[str, Any]]) -> None:
        sim = three[0]["sims"][0]
        body = api.get(f"/sims/{sim['iccid']}",
                       params={"include": "order,order.status"}).json()
        data = body["data"]
        assert (data["iccid"], data["qrcode"], data["recycled"]) == (sim["iccid"],
                                                                     sim["qrcode"], False)
        assert data["simable"]["id"] == three[0]["id"]
        assert data["simable"]["status"]["slug"] == "completed"
        missing = api.get("/sims/8944465400000000000")
        assert missing.status_code == 404 and missing.json() == NOT_FOUND


# -- usage ------------------------------------------------------------------------------------

class TestUsage:
    def test_not_active_until_installed(self, fake: FakeAiralo, clock: ManualClock,
                                        api: httpx.Client) -> None:
        iccid = new_iccid(api)
        answer = api.get(f"/sims/{iccid}/usage")
        assert answer.json()["meta"] == {"message": "api.succes"}
        data = answer.json()["data"]
        assert data == {"remaining": 1024, "total": 1024, "expired_at": None,
                        "is_unlimited": False, "status": "NOT_ACTIVE", "remaining_voice": 0,
                        "remaining_text": 0, "total_voice": 0, "total_text": 0}
        clock.advance(timedelta(days=3))
        fake.install(iccid)
        data = usage(api, iccid)
        assert data["status"] == "ACTIVE"
        assert data["expired_at"] == "2026-12-17 10:00:00"  # installed + 7 days
        assert WIRE_TIME.fullmatch(data["expired_at"])
        with pytest.raises(ValueError, match="cannot be installed"):
            fake.install(iccid)
        with pytest.raises(KeyError):
            fake.install("8900000000000000000")

    def test_drained_to_finished(self, fake: FakeAiralo, api: httpx.Client) -> None:
        iccid = new_iccid(api)
        with pytest.raises(ValueError, match="NOT_ACTIVE"):
            fake.drain(iccid, 1)
        fake.install(iccid)
        fake.drain(iccid, 1000)
        assert (usage(api, iccid)["remaining"], usage(api, iccid)["status"]) == (24, "ACTIVE")
        fake.drain(iccid, 500)
        data = usage(api, iccid)
        assert (data["remaining"], data["total"], data["status"]) == (0, 1024, "FINISHED")
        assert fake.sim(iccid).status is SimStatus.FINISHED

    def test_expired_by_the_clock(self, fake: FakeAiralo, clock: ManualClock,
                                  api: httpx.Client) -> None:
        iccid = new_iccid(api)
        fake.install(iccid)
        clock.advance(timedelta(days=7) - timedelta(seconds=1))
        assert usage(api, iccid)["status"] == "ACTIVE"
        clock.advance(timedelta(seconds=1))
        assert usage(api, iccid)["status"] == "EXPIRED"
        assert fake.sim(iccid).status is SimStatus.EXPIRED

    def test_unlimited(self, fake: FakeAiralo, api: httpx.Client) -> None:
        iccid = new_iccid(api, PACKAGE_UNLIMITED)
        fake.install(iccid)
        data = usage(api, iccid)
        assert (data["is_unlimited"], data["total"], data["remaining"], data["status"]) == (
            True, 0, 0, "ACTIVE")
        with pytest.raises(ValueError, match="unlimited"):
            fake.drain(iccid, 10)

    def test_recycled(self, fake: FakeAiralo, api: httpx.Client) -> None:
        iccid = new_iccid(api)
        fake.recycle(iccid)
        data = usage(api, iccid)
        assert (data["status"], data["expired_at"], data["is_unlimited"]) == (
            "RECYCLED", None, None)
        assert api.get(f"/sims/{iccid}").json()["data"]["recycled"] is True

    def test_an_unknown_iccid(self, api: httpx.Client) -> None:
        answer = api.get("/sims/8944465400000000000/usage")
        assert answer.status_code == 404
        assert answer.json() == NOT_FOUND

    def test_ten_a_minute_per_iccid(self, fake: FakeAiralo, clock: ManualClock,
                                    api: httpx.Client) -> None:
        iccid, other = new_iccid(api), new_iccid(api)
        for n in range(10):
            answer = api.get(f"/sims/{iccid}/usage")
            assert answer.status_code == 200
            assert answer.headers["x-ratelimit-remaining"] == str(9 - n)
            clock.advance(timedelta(seconds=1))  # under the account's 5 a second
        refused = api.get(f"/sims/{iccid}/usage")
        assert refused.status_code == 429
        assert refused.json() == {"message": "Too Many Attempts."}
        assert refused.headers["retry-after"] == "50"
        assert refused.headers["x-ratelimit-limit"] == "10"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert int(refused.headers["x-ratelimit-reset"]) == int(
            (START + timedelta(minutes=1)).timestamp())
        assert api.get(f"/sims/{other}/usage").status_code == 200  # its own window
        clock.advance(timedelta(seconds=49))
        assert api.get(f"/sims/{iccid}/usage").headers["retry-after"] == "1"
        clock.advance(timedelta(seconds=1))
        assert api.get(f"/sims/{iccid}/usage").status_code == 200  # a new window

    def test_five_a_second_for_the_account(self, clock: ManualClock) -> None:
        with FakeAiralo(clock=clock.now, usage_rate_limit=None) as fake, \
                client_for(fake) as api:
            iccid = new_iccid(api)
            assert all(api.get(f"/sims/{iccid}/usage").status_code == 200 for _ in range(5))
            refused = api.get(f"/sims/{iccid}/usage")
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            clock.advance(timedelta(seconds=1))
            assert api.get(f"/sims/{iccid}/usage").status_code == 200

    def test_limits_can_be_tightened(self, clock: ManualClock) -> None:
        tight = RateLimit(1, timedelta(minutes=15))  # the "Rate limits" page's figure
        with FakeAiralo(clock=clock.now, usage_rate_limit=tight) as fake, \
                client_for(fake) as api:
            iccid = new_iccid(api)
            assert api.get(f"/sims/{iccid}/usage").status_code == 200
            refused = api.get(f"/sims/{iccid}/usage")
            assert (refused.status_code, refused.headers["retry-after"]) == (429, "900")

    def test_make_sims_seeds_many_without_requests(self, fake: FakeAiralo,
                                                   api: httpx.Client) -> None:
        balance, requests = fake.balance, len(fake.requests)
        iccids = fake.make_sims(PACKAGE_3GB, MAX_QUANTITY + 2)
        assert len(set(iccids)) == MAX_QUANTITY + 2 and all(map(luhn_valid, iccids))
        assert (fake.balance, len(fake.requests)) == (balance, requests)
        orders = fake.orders
        assert [(o.quantity, o.description, o.package_id) for o in orders] == [
            (MAX_QUANTITY, None, PACKAGE_3GB), (2, None, PACKAGE_3GB)]
        assert [i for o in orders for i in o.iccids] == iccids
        data = usage(api, iccids[-1])
        assert (data["status"], data["total"], data["expired_at"]) == (
            "ACTIVE", 3072, "2026-12-22 10:00:00")  # from now + 15 days
        idle = fake.make_sims(PACKAGE_1GB, 1, installed=False)
        assert usage(api, idle[0])["status"] == "NOT_ACTIVE"
        fake.install(idle[0])  # as a bought eSIM, the user installs it later
        assert fake.make_sims(PACKAGE_1GB, 0) == []
        with pytest.raises(ValueError, match="topup"):
            fake.make_sims(TOPUP_1GB, 1)
        with pytest.raises(KeyError):
            fake.make_sims("no-such-package", 1)
        assert len(fake.sims()) == MAX_QUANTITY + 3


# -- top-ups ----------------------------------------------------------------------------------

def topup(api: httpx.Client, iccid: str | None, package_id: str | None = TOPUP_1GB,
          description: str | None = "topup-ref") -> httpx.Response:
    form = {"iccid": iccid, "package_id": package_id, "description": description}
    return api.post("/orders/topups", data={k: v for k, v in form.items() if v is not None})


class TestTopups:
    def test_the_topups_of_an_esim(self, api: httpx.Client) -> None:
        iccid = new_iccid(api)
        answer = api.get(f"/sims/{iccid}/topups")
        assert answer.status_code == 200
        listed = answer.json()["data"]
        assert [t["id"] for t in listed] == [TOPUP_1GB, TOPUP_3GB, TOPUP_5GB]
        first = listed[0]
        assert set(first) == {"id", "type", "price", "net_price", "amount", "day",
                              "is_unlimited", "title", "data", "short_info", "voice", "text"}
        assert (first["type"], first["price"], first["net_price"], first["amount"],
                first["day"]) == ("topup", 5.0, 2.5, 1024, 7)
        regional = new_iccid(api, ASIA_1GB)
        assert [t["id"] for t in api.get(f"/sims/{regional}/topups").json()["data"]] == [
            ASIA_TOPUP_1GB]
        unlimited = new_iccid(api, PACKAGE_UNLIMITED)
        assert api.get(f"/sims/{unlimited}/topups").json() == {"data": []}
        assert api.get("/sims/8944465400000000000/topups").json() == NOT_FOUND

    def test_a_topup_adds_data_and_days(self, fake: FakeAiralo, clock: ManualClock,
                                        api: httpx.Client) -> None:
        iccid = new_iccid(api)
        fake.install(iccid)
        fake.drain(iccid, 1024)
        assert usage(api, iccid)["status"] == "FINISHED"
        clock.advance(timedelta(days=2))
        answer = topup(api, iccid, TOPUP_3GB)
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        assert (data["type"], data["package_id"], data["quantity"], data["description"]) == (
            "topup", TOPUP_3GB, 1, "topup-ref")
        assert (data["price"], data["net_price"], data["validity"]) == (9.0, 4.8, 15)
        assert "sims" not in data
        after = usage(api, iccid)
        assert (after["status"], after["remaining"], after["total"]) == ("ACTIVE", 3072, 4096)
        assert after["expired_at"] == "2026-12-29 10:00:00"  # 7 + 15 days from installation
        assert fake.balance == Decimal("1000.00") - Decimal("2.50") - Decimal("4.80")
        assert fake.sim(iccid).topups == (TOPUP_3GB,)
        [record] = fake.orders_with_description("topup-ref")
        assert (record.type, record.iccids) == ("topup", (iccid,))
        listed = api.get("/orders", params={"include": "sims"}).json()["data"][0]
        assert (listed["type"], listed["sims"][0]["iccid"]) == ("topup", iccid)

    def test_a_topup_before_installation_lengthens_the_validity(
            self, fake: FakeAiralo, api: httpx.Client) -> None:
        iccid = new_iccid(api)
        assert topup(api, iccid, TOPUP_1GB, description=None).status_code == 200
        assert usage(api, iccid)["total"] == 2048
        fake.install(iccid)
        assert usage(api, iccid)["expired_at"] == "2026-12-21 10:00:00"  # 7 + 7 days

    def test_topups_are_not_idempotent(self, fake: FakeAiralo, api: httpx.Client) -> None:
        iccid = new_iccid(api)
        assert topup(api, iccid).status_code == 200
        assert topup(api, iccid).status_code == 200
        assert len(fake.orders_with_description("topup-ref")) == 2
        assert usage(api, iccid)["total"] == 3072

    def test_an_expired_esim_cannot_be_topped_up(self, fake: FakeAiralo, clock: ManualClock,
                                                 api: httpx.Client) -> None:
        iccid = new_iccid(api)
        fake.install(iccid)
        clock.advance(timedelta(days=8))
        assert api.get(f"/sims/{iccid}/topups").json() == {"data": []}
        body = assert_business(topup(api, iccid), ErrorCode.BAD_REQUEST)
        assert iccid in body["reason"] and "expired" in body["reason"]
        assert fake.balance == Decimal("997.50")
        assert fake.orders_with_description("topup-ref") == []

    def test_a_recycled_esim_cannot_be_topped_up(self, fake: FakeAiralo,
                                                 api: httpx.Client) -> None:
        iccid = new_iccid(api)
        fake.recycle(iccid)
        listed = assert_business(api.get(f"/sims/{iccid}/topups"), ErrorCode.RECYCLED)
        assert listed["reason"] == (f"The eSIM with iccid {iccid} has been recycled. It can no "
                                    f"longer be used or topped up.")
        assert_business(topup(api, iccid), ErrorCode.RECYCLED)

    def test_bad_topup_requests(self, fake: FakeAiralo, api: httpx.Client) -> None:
        iccid = new_iccid(api)
        regional = new_iccid(api, ASIA_1GB)
        assert_invalid(topup(api, None, None), {"package_id": "The package id field is required.",
                                                "iccid": "The iccid field is required."})
        assert_invalid(topup(api, iccid, PACKAGE_1GB), {"package_id": "invalid topup package"})
        assert_invalid(topup(api, regional, TOPUP_1GB),
                       {"package_id": "invalid topup package"})
        assert_invalid(topup(api, "8944465400000000000"),
                       {"iccid": "The selected iccid is invalid."})
        assert fake.balance == Decimal("1000.00") - Decimal("2.50") - Decimal("1.70")

    def test_topups_need_credit_and_stock(self, fake: FakeAiralo, api: httpx.Client) -> None:
        iccid = new_iccid(api)
        fake.set_balance(Decimal("1.00"))
        assert_business(topup(api, iccid), ErrorCode.INSUFFICIENT_CREDIT)
        fake.set_balance(Decimal("100.00"))
        fake.sell_out(TOPUP_1GB)
        assert TOPUP_1GB not in [t["id"] for t in api.get(f"/sims/{iccid}/topups").json()["data"]]
        assert_business(topup(api, iccid), ErrorCode.PACKAGE_UNAVAILABLE)
        assert usage(api, iccid)["total"] == 1024
