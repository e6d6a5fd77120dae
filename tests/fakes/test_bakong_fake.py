"""The Bakong fake keeps the rules it says it keeps: driven over HTTP with a plain httpx client,
with KHQR payloads built here (a small TLV writer and binascii's CRC, not the fake's code)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from bot.clock import ManualClock
from tests.fakes.bakong import (
    CHECK_MD5,
    CHECK_MD5_LIST,
    MAX_MD5_LIST,
    ErrorCode,
    FakeBakong,
    InvalidKhqr,
    parse_khqr,
)
from tests.fakes.http import Fault

START = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
TOKEN = "test-developer-token"
ACCOUNT = "topupbot@aclb"
# Plain HTTP to 127.0.0.1 only: one TLS context with no CA spares loading the bundle per call.
NO_CA = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
HEX64 = re.compile(r"[0-9a-f]{64}")
NOT_FOUND = {"responseCode": 1, "errorCode": 1, "data": None,
             "responseMessage": "Transaction could not be found. Please check and try again."}
FAILED = {"responseCode": 1, "errorCode": 3, "data": None,
          "responseMessage": "Transaction failed."}
TRANSACTION_KEYS = {"hash", "fromAccountId", "toAccountId", "currency", "amount", "description",
                    "createdDateMs", "acknowledgedDateMs", "trackingStatus", "receiverBank",
                    "receiverBankAccount", "instructionRef", "externalRef"}


# -- KHQR payloads, written here --------------------------------------------------------------

def tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def khqr(*, amount: str | None = "5", currency: str = "840", bill: str = "INV-1",
         account: str = ACCOUNT, merchant: bool = False, static: bool = False,
         expires: datetime = START + timedelta(minutes=15), crc: str | None = None) -> str:
    account_info = tlv("00", account) + (tlv("01", "TOPUP01") + tlv("02", "ACLEDA")
                                         if merchant else "")
    body = (tlv("00", "01") + tlv("01", "11" if static else "12")
            + tlv("30" if merchant else "29", account_info) + tlv("52", "5999")
            + tlv("53", currency) + (tlv("54", amount) if amount is not None else "")
            + tlv("58", "KH") + tlv("59", "Topup Bot") + tlv("60", "Phnom Penh")
            + tlv("62", tlv("01", bill))
            + tlv("99", tlv("00", ms(START)) + tlv("01", ms(expires))) + "6304")
    return body + (crc or f"{binascii.crc_hqx(body.encode(), 0xFFFF):04X}")


def md5_of(payload: str) -> str:
    return hashlib.md5(payload.encode(), usedforsecurity=False).hexdigest()


# -- fixtures and calls -----------------------------------------------------------------------

@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeBakong]:
    with FakeBakong(clock=clock.now, token=TOKEN) as server:
        yield server


@pytest.fixture
def api(fake: FakeBakong) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with httpx.Client(base_url=fake.api_url, headers=headers, timeout=5,
                      verify=NO_CA) as client:
        yield client


def check(api: httpx.Client, md5: str, **kwargs: Any) -> httpx.Response:
    return api.post(CHECK_MD5, json={"md5": md5}, **kwargs)


def checked(api: httpx.Client, md5: str) -> dict[str, Any]:
    answer = check(api, md5)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def check_list(api: httpx.Client, md5s: Any) -> httpx.Response:
    return api.post(CHECK_MD5_LIST, content=json.dumps(md5s))


def assert_missing_fields(answer: httpx.Response, status: int = 400) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json() == {"responseCode": 1, "responseMessage": "Missing required fields.",
                             "errorCode": 5, "data": None}


# -- the token --------------------------------------------------------------------------------

class TestToken:
    @pytest.mark.parametrize("authorization", [None, "Bearer nope", f"Basic {TOKEN}", "Bearer"])
    def test_no_good_token_is_401(self, fake: FakeBakong, authorization: str | None) -> None:
        headers = {} if authorization is None else {"Authorization": authorization}
        for path, body in ((CHECK_MD5, {"md5": "0" * 32}), (CHECK_MD5_LIST, ["0" * 32])):
            answer = httpx.post(fake.api_url + path, json=body, headers=headers, verify=NO_CA)
            assert answer.status_code == 401
            assert answer.json() == {"responseCode": 1, "responseMessage": "Unauthorized.",
                                     "errorCode": 6, "data": None}

    def test_the_token_expires_on_the_clock(self, fake: FakeBakong, clock: ManualClock,
                                            api: httpx.Client) -> None:
        assert fake.token == TOKEN
        assert fake.token_expires_at == START + timedelta(days=90)
        clock.advance(timedelta(days=90) - timedelta(seconds=1))
        assert check(api, "0" * 32).status_code == 200
        clock.advance(timedelta(seconds=1))
        assert check(api, "0" * 32).status_code == 401

    def test_expire_and_renew(self, fake: FakeBakong, api: httpx.Client) -> None:
        fake.expire_token()
        assert check(api, "0" * 32).status_code == 401
        new = fake.renew_token()
        assert new != TOKEN and fake.token == new
        assert check(api, "0" * 32, headers=fake.authorization).status_code == 200
        assert check(api, "0" * 32).status_code == 401  # the revoked one stays revoked

    def test_a_renewed_token_leaves_the_old_one_until_its_expiry(
            self, fake: FakeBakong, clock: ManualClock, api: httpx.Client) -> None:
        clock.advance(timedelta(days=30))
        fake.renew_token()
        assert fake.token_expires_at == START + timedelta(days=120)
        assert check(api, "0" * 32).status_code == 200
        clock.advance(timedelta(days=60))
        assert check(api, "0" * 32).status_code == 401
        assert check(api, "0" * 32, headers=fake.authorization).status_code == 200

    def test_the_default_token_looks_like_a_jwt(self, clock: ManualClock) -> None:
        with FakeBakong(clock=clock.now, token_lifetime=timedelta(days=10)) as fake:
            header, claims, signature = fake.token.split(".")
            decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
            assert decoded["exp"] == int((START + timedelta(days=10)).timestamp())
            assert decoded["iat"] == int(START.timestamp())
            assert header and signature
            answer = httpx.post(fake.api_url + CHECK_MD5, json={"md5": "0" * 32},
                                headers=fake.authorization, verify=NO_CA)
            assert answer.status_code == 200


# -- one md5 ----------------------------------------------------------------------------------

class TestCheckMd5:
    def test_not_paid_is_not_found(self, api: httpx.Client) -> None:
        assert checked(api, md5_of(khqr())) == NOT_FOUND

    def test_paid(self, fake: FakeBakong, api: httpx.Client) -> None:
        payload = khqr(amount="5")
        paid = fake.pay(payload)
        body = checked(api, md5_of(payload))
        assert {k: body[k] for k in ("responseCode", "responseMessage", "errorCode")} == {
            "responseCode": 0, "responseMessage": "Getting transaction successfully.",
            "errorCode": None}
        data = body["data"]
        assert set(data) == TRANSACTION_KEYS
        assert HEX64.fullmatch(data["hash"]) and data["hash"] == paid.hash
        assert (data["fromAccountId"], data["toAccountId"]) == ("customer@aclb", ACCOUNT)
        assert (data["currency"], data["amount"], type(data["amount"])) == ("USD", 5.0, float)
        assert data["createdDateMs"] == data["acknowledgedDateMs"] == int(ms(START))
        assert data["description"] == "" and data["trackingStatus"] is None
        assert re.fullmatch(r"100FT\d{11}", data["externalRef"])
        assert (paid.md5, paid.amount, paid.succeeded, paid.late) == (
            md5_of(payload), Decimal("5"), True, False)
        assert paid.qr.bill_number == "INV-1"

    def test_riel_is_a_whole_number(self, fake: FakeBakong, api: httpx.Client) -> None:
        payload = khqr(amount="20500", currency="116")
        fake.pay(payload, from_account="someone@abaa")
        data = checked(api, md5_of(payload))["data"]
        assert (data["currency"], data["amount"], type(data["amount"])) == ("KHR", 20500, int)
        assert data["fromAccountId"] == "someone@abaa"

    def test_a_merchant_account_qr(self, fake: FakeBakong, api: httpx.Client) -> None:
        payload = khqr(merchant=True, account="shop@wing")
        fake.pay(payload)
        assert checked(api, md5_of(payload))["data"]["toAccountId"] == "shop@wing"

    def test_failed(self, fake: FakeBakong, api: httpx.Client) -> None:
        payload = khqr()
        failed = fake.fail(payload)
        assert not failed.succeeded
        assert checked(api, md5_of(payload)) == FAILED

    def test_another_amount_or_currency(self, fake: FakeBakong, api: httpx.Client) -> None:
        short = khqr(amount="5", bill="INV-2")
        fake.pay(short, amount="4.88")
        data = checked(api, md5_of(short))["data"]
        assert (data["amount"], data["currency"]) == (4.88, "USD")
        riel = khqr(amount="5", bill="INV-3")
        fake.pay(riel, amount=20500, currency="KHR")
        data = checked(api, md5_of(riel))["data"]
        assert (data["amount"], data["currency"]) == (20500, "KHR")

    def test_a_late_payment_is_seen_from_its_time_only(
            self, fake: FakeBakong, clock: ManualClock, api: httpx.Client) -> None:
        payload = khqr(expires=START + timedelta(minutes=15))
        at = START + timedelta(minutes=20)
        late = fake.pay(payload, at=at)
        assert late.late
        assert checked(api, md5_of(payload)) == NOT_FOUND
        assert fake.answered(md5_of(payload)) is None
        clock.set(at - timedelta(milliseconds=1))
        assert checked(api, md5_of(payload)) == NOT_FOUND
        clock.set(at)
        data = checked(api, md5_of(payload))["data"]
        assert data["createdDateMs"] == int(ms(at))

    def test_paid_twice_answers_the_first(self, fake: FakeBakong, clock: ManualClock,
                                          api: httpx.Client) -> None:
        payload = khqr()
        first = fake.pay(payload)
        clock.advance(timedelta(minutes=1))
        second = fake.pay(payload, amount="5")
        assert first.hash != second.hash
        assert [t.hash for t in fake.transactions(md5_of(payload))] == [first.hash, second.hash]
        assert checked(api, md5_of(payload))["data"]["hash"] == first.hash
        assert fake.answered(md5_of(payload)) == first

    def test_a_failure_first_stays_the_answer(self, fake: FakeBakong, clock: ManualClock,
                                              api: httpx.Client) -> None:
        payload = khqr()
        fake.fail(payload)
        clock.advance(timedelta(seconds=30))
        fake.pay(payload)
        assert checked(api, md5_of(payload)) == FAILED

    def test_a_static_qr(self, fake: FakeBakong, api: httpx.Client) -> None:
        payload = khqr(amount=None, static=True)
        with pytest.raises(ValueError, match="static"):
            fake.pay(payload)
        fake.pay(payload, amount="3")
        assert checked(api, md5_of(payload)) == {
            "responseCode": 1, "errorCode": 2, "data": None,
            "responseMessage": "Sorry, the system does not support static QR code."}


# -- a list of md5s ---------------------------------------------------------------------------

class TestCheckMd5List:
    def test_fifty_mixed(self, fake: FakeBakong, api: httpx.Client) -> None:
        payloads = [khqr(bill=f"INV-{n}") for n in range(MAX_MD5_LIST)]
        paid = {n: fake.pay(payloads[n]) for n in (0, 7, 49)}
        fake.fail(payloads[8])
        md5s = [md5_of(p) for p in payloads]
        answer = check_list(api, md5s)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert {k: body[k] for k in ("responseCode", "errorCode")} == {
            "responseCode": 0, "errorCode": None}
        items = body["data"]
        assert [item["md5"] for item in items] == md5s
        statuses = [item["status"] for item in items]
        assert [n for n, s in enumerate(statuses) if s == "SUCCESS"] == [0, 7, 49]
        assert statuses[8] == "FAILED"
        assert statuses.count("NOT_FOUND") == MAX_MD5_LIST - 4
        for n, record in paid.items():
            assert set(items[n]) == {"md5", "status", "message", "data"}
            assert items[n]["data"]["hash"] == record.hash
            assert set(items[n]["data"]) == TRANSACTION_KEYS
        assert items[1] == {"md5": md5s[1], "status": "NOT_FOUND", "data": None,
                            "message": NOT_FOUND["responseMessage"]}
        assert items[8]["data"] is None

    def test_what_bakong_khqr_reads_as_paid(self, fake: FakeBakong, api: httpx.Client) -> None:
        one, two = khqr(bill="A"), khqr(bill="B")
        fake.pay(two)
        items = check_list(api, [md5_of(one), md5_of(two), md5_of(two)]).json()["data"]
        # bakong-khqr's check_bulk_payments: the md5 of each item whose status is SUCCESS
        assert [i["md5"] for i in items if i.get("status") == "SUCCESS"] == [md5_of(two)] * 2

    def test_fifty_one_is_refused(self, fake: FakeBakong, api: httpx.Client) -> None:
        payload = khqr()
        fake.pay(payload)
        assert_missing_fields(check_list(api, [md5_of(payload)] * (MAX_MD5_LIST + 1)))

    @pytest.mark.parametrize("body", [[], {"md5": "0" * 32}, "0" * 32, None,
                                      ["0" * 32, "0" * 31], ["0" * 32, 5], ["A" * 32]])
    def test_not_a_list_of_md5s_is_refused(self, api: httpx.Client, body: Any) -> None:
        assert_missing_fields(check_list(api, body))

    def test_a_late_payment_in_a_list(self, fake: FakeBakong, clock: ManualClock,
                                      api: httpx.Client) -> None:
        payload = khqr()
        fake.pay(payload, at=START + timedelta(hours=1))
        assert check_list(api, [md5_of(payload)]).json()["data"][0]["status"] == "NOT_FOUND"
        clock.advance(timedelta(hours=1))
        assert check_list(api, [md5_of(payload)]).json()["data"][0]["status"] == "SUCCESS"


# -- bad bodies -------------------------------------------------------------------------------

class TestBadBodies:
    @pytest.mark.parametrize("content", [b"", b"not json", b"\xff\xfe", b'["' + b"0" * 32 + b'"]',
                                         b"{}", b'{"md5": 5}', b'{"md5": null}',
                                         b'{"md5": "' + b"0" * 31 + b'"}',
                                         b'{"md5": "' + b"g" * 32 + b'"}',
                                         b'{"md5": "' + b"A" * 32 + b'"}'])
    def test_refused_with_error_code_5(self, api: httpx.Client, content: bytes) -> None:
        assert_missing_fields(api.post(CHECK_MD5, content=content))

    def test_the_http_status_of_a_refusal_is_a_switch(self, clock: ManualClock) -> None:
        with FakeBakong(clock=clock.now, token=TOKEN, bad_request_status=200) as fake:
            answer = httpx.post(fake.api_url + CHECK_MD5, content=b"nope",
                                headers=fake.authorization, verify=NO_CA)
            assert_missing_fields(answer, status=200)

    def test_extra_fields_are_ignored(self, fake: FakeBakong, api: httpx.Client) -> None:
        payload = khqr()
        fake.pay(payload)
        body = api.post(CHECK_MD5, json={"md5": md5_of(payload), "other": 1}).json()
        assert body["responseCode"] == 0

    def test_unknown_paths_and_methods(self, api: httpx.Client) -> None:
        missing = api.post("/v1/check_transaction_by_hash", json={"hash": "0" * 64})
        assert missing.status_code == 404
        assert missing.json() == {"responseCode": 1, "responseMessage": "Not Found",
                                  "errorCode": None, "data": None}
        assert api.get(CHECK_MD5).status_code == 405


# -- the 403 switch, the rate limit, faults ---------------------------------------------------

class TestRefusals:
    def test_foreign_ip_is_403_to_everything(self, fake: FakeBakong, api: httpx.Client) -> None:
        payload = khqr()
        fake.pay(payload)
        fake.refuse_foreign_ip = True
        for answer in (check(api, md5_of(payload)), check_list(api, [md5_of(payload)]),
                       api.post(CHECK_MD5, content=b"junk", headers={"Authorization": "x"})):
            assert answer.status_code == 403
            body = answer.json()
            assert (body["responseCode"], body["errorCode"], body["data"]) == (1, None, None)
        fake.refuse_foreign_ip = False
        assert checked(api, md5_of(payload))["responseCode"] == 0

    def test_rate_limit_429_with_retry_after(self, fake: FakeBakong, clock: ManualClock,
                                             api: httpx.Client) -> None:
        fake.rate_limit = (3, 10)
        assert check(api, "0" * 32).status_code == 200
        clock.advance(timedelta(seconds=4))
        assert check_list(api, ["0" * 32]).status_code == 200
        assert api.post(CHECK_MD5, content=b"junk").status_code == 400  # counted too
        refused = check(api, "0" * 32)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "6"  # the first leaves the window at 10 s
        assert refused.json()["responseCode"] == 1
        clock.advance(timedelta(seconds=5, milliseconds=500))
        assert check(api, "0" * 32).headers["retry-after"] == "1"
        clock.advance(timedelta(milliseconds=500))
        assert check(api, "0" * 32).status_code == 200  # one left, one came in
        assert check(api, "0" * 32).status_code == 429
        fake.rate_limit = None
        assert check(api, "0" * 32).status_code == 200

    def test_the_rate_limit_comes_before_the_token(self, fake: FakeBakong) -> None:
        fake.rate_limit = (1, 60)
        url = fake.api_url + CHECK_MD5
        assert httpx.post(url, json={"md5": "0" * 32}, verify=NO_CA).status_code == 401
        assert httpx.post(url, json={"md5": "0" * 32}, headers=fake.authorization,
                          verify=NO_CA).status_code == 429

    def test_an_injected_busy_server(self, fake: FakeBakong, api: httpx.Client) -> None:
        fake.faults.add(Fault.http_status(504), path=CHECK_MD5_LIST)
        busy = check_list(api, ["0" * 32])
        assert busy.status_code == 504
        assert busy.json() == {"responseCode": 1, "errorCode": None, "data": None,
                               "responseMessage": "Bakong server is busy, please try again "
                                                  "later."}
        assert check_list(api, ["0" * 32]).status_code == 200

    def test_an_answer_lost_after_processing(self, fake: FakeBakong, api: httpx.Client) -> None:
        fake.faults.add(Fault.drop_after_processing(), path=CHECK_MD5)
        with pytest.raises(httpx.TransportError):
            check(api, "0" * 32)
        assert check(api, "0" * 32).status_code == 200


# -- counters ---------------------------------------------------------------------------------

class TestCounters:
    def test_calls_and_md5s_asked(self, fake: FakeBakong, api: httpx.Client) -> None:
        one, two, three = "1" * 32, "2" * 32, "3" * 32
        check(api, one)
        check_list(api, [two, three])
        check_list(api, [one])
        api.post(CHECK_MD5, content=b"junk")
        assert fake.calls(CHECK_MD5) == 2 and fake.calls(CHECK_MD5_LIST) == 2
        assert fake.calls() == 4
        assert fake.md5s_asked() == [one, two, three, one]
        assert fake.md5s_asked(CHECK_MD5_LIST) == [two, three, one]
        fake.clear_log()
        assert (fake.calls(), fake.md5s_asked()) == (0, [])


# -- the fake's KHQR reader -------------------------------------------------------------------

class TestPayloads:
    def test_what_it_reads(self) -> None:
        payload = khqr(amount="4.88", bill="INV-9", merchant=True, account="shop@wing")
        qr = parse_khqr(payload)
        assert (qr.account_id, qr.merchant_account, qr.currency, qr.amount) == (
            "shop@wing", True, "USD", Decimal("4.88"))
        assert (qr.bill_number, qr.merchant_name, qr.static) == ("INV-9", "Topup Bot", False)
        assert (qr.created_at, qr.expires_at) == (START, START + timedelta(minutes=15))
        assert qr.md5 == md5_of(payload)

    def test_it_reads_the_bots_payloads(self, fake: FakeBakong, api: httpx.Client) -> None:
        khqr_domain = pytest.importorskip("bot.domain.khqr")  # the tests may use it; the fake not
        from bot.domain.money import Money

        individual = khqr_domain.KhqrRecipient(account_id=ACCOUNT, name="Topup Bot")
        merchant = khqr_domain.KhqrRecipient(account_id="shop@wing", name="Topup Bot",
                                             merchant_id="TOPUP01", acquiring_bank="Wing Bank")
        expires = START + timedelta(minutes=15)
        for recipient, amount, wire in ((individual, Money.from_decimal("1.50", "USD"), 1.5),
                                        (merchant, Money.of_major(20_500, "KHR"), 20500)):
            payload = khqr_domain.build_payload(khqr_domain.KhqrRequest(
                recipient=recipient, amount=amount, bill_number="INV-42", created_at=START,
                expires_at=expires))
            paid = fake.pay(payload)
            assert paid.md5 == khqr_domain.payload_md5(payload) == md5_of(payload)
            assert (paid.qr.bill_number, paid.qr.expires_at, paid.qr.merchant_account) == (
                "INV-42", expires, recipient.is_merchant)
            data = checked(api, paid.md5)["data"]
            assert (data["amount"], data["currency"], data["toAccountId"]) == (
                wire, amount.currency, recipient.account_id)

    def test_a_wrong_crc_is_refused(self, fake: FakeBakong) -> None:
        good = khqr()
        wrong = good[:-4] + ("0000" if good[-4:] != "0000" else "0001")
        with pytest.raises(InvalidKhqr, match="CRC"):
            fake.pay(wrong)
        lettered = next(p for p in (khqr(bill=f"INV-{n}") for n in range(100))
                        if re.search("[A-F]", p[-4:]))
        with pytest.raises(InvalidKhqr, match="CRC"):  # the CRC's hex digits are uppercase
            fake.pay(lettered[:-4] + lettered[-4:].lower())
        assert fake.transactions() == []
        fake.pay(lettered)
        assert len(fake.transactions()) == 1

    @pytest.mark.parametrize(("payload", "message"), [
        (khqr()[:-8], "tag 63"),
        (khqr()[:-1], "characters"),
        (khqr(currency="978"), "tag 53"),
        (khqr(amount="20500.5", currency="116"), "KHR"),
        (khqr(amount="4.885"), "cents"),
        (khqr(amount="0"), "positive"),
        (khqr(account=""), "account id"),
        ("hello", "tag and length"),
    ])
    def test_malformed_payloads(self, fake: FakeBakong, payload: str, message: str) -> None:
        with pytest.raises(InvalidKhqr, match=message):
            fake.pay(payload)

    def test_the_error_codes_are_bakongs(self) -> None:
        assert {code.name: int(code) for code in ErrorCode} == {
            "NOT_FOUND": 1, "STATIC_QR": 2, "FAILED": 3, "MISSING_FIELDS": 5,
            "UNAUTHORIZED": 6, "ACCOUNT_NOT_FOUND": 11, "ACCOUNT_INVALID": 12}

    def test_pay_arguments(self, fake: FakeBakong) -> None:
        with pytest.raises(ValueError, match="currency"):
            fake.pay(khqr(), currency="EUR")
        with pytest.raises(ValueError, match="positive"):
            fake.pay(khqr(), amount="-1")
        with pytest.raises(ValueError, match="aware"):
            fake.pay(khqr(), at=datetime(2026, 12, 7, 10, 0))
