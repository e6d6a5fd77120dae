"""Bakong KHQR payloads: the CRC, published example payloads, builds that match the NBC's
JavaScript SDK byte for byte, round trips, refused inputs and the PyPI ``bakong-khqr``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bot.domain.khqr import (
    KhqrError,
    KhqrRecipient,
    KhqrRequest,
    ParsedKhqr,
    build_payload,
    crc16,
    parse_payload,
    payload_md5,
)
from bot.domain.money import Money

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def at_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def with_crc(body: str) -> str:
    """A payload body (ending in ``6304``) with its right CRC, to test what follows it."""
    return body + crc16(body)


# --- the CRC ---------------------------------------------------------------------------

def test_crc16_is_ccitt_false() -> None:
    assert crc16("123456789") == "29B1"  # the catalogued check value of CRC-16/CCITT-FALSE
    assert crc16("") == "FFFF"
    assert crc16("\x00") == "E1F0"  # leading zeros kept: always four digits


# --- published example payloads ---------------------------------------------------------
# From the test suite and README of ``bakong-khqr`` 1.0.20 on npm (the NBC's JavaScript
# SDK; package.json: gitlab.nbc.gov.kh:khqr/sdk-javascript) and the README of ``ts-khqr``
# 2.2.3. ``valid`` is what that SDK's ``BakongKHQR.verify`` answers with its clock set to 0
# (so none counts as expired); parse_payload agrees on every one.


@dataclass(frozen=True)
class Published:
    source: str
    payload: str
    valid: bool


NBC = "npm bakong-khqr 1.0.20 "
PUBLISHED = [
    Published(NBC + "test/decode.test.js, Decode Test 5 (an ABA merchant QR)",
              "000201010211021641277800000000980416518352888000006030470016abaakhppxxx@abaa"
              "01153166007701102420204abaa5204224253038405802KH5910USD OUTLET6010PHNOM PENH"
              "62250509115B02750070827CE19809924001339CA026411FDA6803mmp63043870", True),
    Published(NBC + "test/decode.test.js, Decode Test 6 (ACLEDA)",
              "00020101021130470009khqr@aclb0111855124649170215ACLEDA Bank Plc52045999530384"
              "05802KH5907BUN MAO6010Phnom Penh6102126213020901050033164310002KM0107BUN MAO"
              "0210Phnom Penh6304E313", True),
    Published(NBC + "test/decode.test.js, Decode Test 7 (ACLEDA)",
              "00020101021130640009khqr@aclb0111855124649060215ACLEDA Bank Plc05138550000001"
              "9425204593153038405802KH5912KHQR TESTING6010Phnom Penh610212621302090175357716"
              "4360002KM0112KHQR TESTING0210Phnom Penh6304AC1C", True),
    Published(NBC + "test/feature/non-khqr/docode.test.js (UnionPay tag 15)",
              "00020101021115140110555555555530400014jonhsmith@nbcq01061234560208Dev Bank5204"
              "599953031165802KH5910Jonh Smith6010Phnom Penh9924011316873168216090203TTT"
              "6304EC18", True),
    Published(NBC + "test/feature/non-khqr/docode.test.js (ACLEDA, tags 39 and 65)",
              "00020101021129370009khqr@aclb011009686507250206ACLEDA39200011855112150800101452"
              "0420005802KH53031165912Chhuon Vutha6010Phnom Penh62420210096865072510020111070103"
              "ABC99070103ABC65240003ABC01020199070103ABC99340013171740156077901020199070103ABC"
              "63046995", True),
    Published(NBC + "test/feature/timestamp/valid.test.js, 'KHQR was expired'",
              "00020101021229180014vandoeurn@devb52045999530384054031015802KH5909Vandoeurn6010"
              "Phnom Penh993400131727249364974011317272494849746304" "7BD0", True),
    Published(NBC + "test/feature/timestamp/decode.test.js, Decode Test 1",
              "00020101021229460015john_smith@devb0111855122334550208Dev Bank520459995303840540"
              "31005802KH5910John Smith6010PHNOM PENH62670106#123450211855122334550311Coffee Shop"
              "0709Cashier_10810Buy coffee64280002km0108ចន ស្មីន0206ភ្នំពញ99340013172682191579701"
              "1317268220357976304B73E", True),
    Published(NBC + "test/feature/timestamp/decode.test.js, Decode Test 2",
              "00020101021230350009khqr@devb01061234560208Dev Bank52045999530384054031005802KH"
              "5910John Smith6010PHNOM PENH62670106#123450211855122334550311Coffee Shop0709"
              "Cashier_10810Buy coffee64280002km0108ចន ស្មីន0206ភ្នំពញ9934001317268229626120113"
              "17268230826126304A560", True),
    Published("npm ts-khqr 2.2.3 README.md, 'Generate KHQR'",
              "00020101021229420013ishinvin@devb01090123456780208Dev Bank520459995303116540510"
              "0005802KH5909Ishin Vin6010Phnom Penh62680114INV-2022-12-250211855123456780310Ishin"
              " Shop07060123450807Payment64180002ZH0102文山0202金边99340013175507623233601131755"
              "076292336630416C4", True),
    # Refused by the NBC SDK's verify, and by parse_payload:
    Published(NBC + "test/feature/non-khqr/docode.test.js, 'Incorrect length of tag 52' "
              "(its CRC does not match)",
              "00020101021115231234567812345678901234530400014jonhsmith@nbcq01061234560208Dev "
              "Bank5206599953031165802KH5910Jonh Smith6010Phnom Penh9917001316873168216096304"
              "D82B", False),
    Published(NBC + "test/feature/mcc/valid.test.js (MCC 1A2B)",
              "00020101021129180014jonhsmith@nbcq52041A2B53031165802KH5910Jonh Smith6010Phnom "
              "Penh6304F7FD", False),
    Published(NBC + "test/feature/mcc/valid.test.js (MCC -100)",
              "00020101021129180014jonhsmith@nbcq5204-10053031165802KH5910Jonh Smith6010Phnom "
              "Penh6304038A", False),
    Published(NBC + "test/feature/timestamp/valid.test.js, 'Point of Initiation Method is "
              "invalid' (13)",
              "00020101021329180014vandoeurn@devb52045999530384054031015802KH5909Vandoeurn6010"
              "Phnom Penh993400131727249364974011317272494849746304DCEF", False),
    Published(NBC + "test/feature/timestamp/valid.test.js, 'Invalid Dynamic KHQR' (no amount)",
              "00020101021229180014vandoeurn@devb5204599953038405802KH5909Vandoeurn6010Phnom "
              "Penh993400131727249364974011317272494849746304B6F4", False),
    Published(NBC + "test/feature/timestamp/valid.test.js, 'Expiration timestamp is required'",
              "00020101021215311974011600520446ACLB1000231208129200016chantha_dev@ftcc52045999"
              "5303116540410005802KH5911Chantha Dev6010Phnom Penh63046011", False),
    Published(NBC + "test/feature/timestamp/valid.test.js, 'Expiration timestamp is required 1'",
              "00020101021215311974011600520446ACLB1000231208129200016chantha_dev@ftcc52045999"
              "53031165403400" "5802KH5911Chantha Dev6010Phnom Penh99170013172974008531463046EEC",
              False),
    Published(NBC + "test/feature/timestamp/valid.test.js, 'Expiration timestamp length is "
              "invalid' (14 digits)",
              "00020101021229220018sopheak_leng2@ftcc520459995303116540410005802KH5912sopheak "
              "leng6010Phnom Penh9936001411732270085311011417323270145310630445D7", False),
    # Dynamic QRs of the 2021 format, a creation time and no expiry: NBC's decode reads
    # them, its verify (and parse_payload) refuses them now that an expiry is required.
    Published(NBC + "test/decode.test.js, Decode Test 1",
              "00020101021229190015john_smith@devb52045999530311654065000.05802KH5910jonh smith"
              "6010Phnom Penh62360109#INV-20030313Coffee Klaing0702#299170013161302797275763049"
              "ACF", False),
    Published(NBC + "test/decode.test.js, Decode Test 2",
              "00020101021230410015john_smith@devb01061234560208Dev Bank52045999530384054035.0"
              "5802KH5916john smith actor6010Phnom Penh62130709Counter 2991700131613438575794"
              "63048EF2", False),
    Published(NBC + "test/decode.test.js, Decode Test 3",
              "00020101021230410015john_smith@devb01061234560208Dev Bank52045999530384054035.0"
              "5802KH5916john smith actor6010Phnom Penh62280111Invoice#0690709Counter 2991700131"
              "6134385758926304384E", False),
    Published(NBC + "test/decode.test.js, Decode Test 4",
              "00020101021230410015john_smith@devb01061234560208Dev Bank52045999530384054035.0"
              "5802KH5916john smith actor6010Phnom Penh62150111Invoice#0699917001316134385758926"
              "304552D", False),
    Published(NBC + "test/decode.test.js, Decode Test 8",
              "00020101021229310014jonhsmith@nbcq0109012345678520459995303116540750000.05802KH"
              "5910Jonh Smith6009Siam Reap62550117INV-2021-07-658220211855123456780305BKK-1070601"
              "234599170013163039583850263041134", False),
    Published(NBC + "test/decode.test.js, Decode Test 13 (tags 52/53 swapped)",
              "00020101021230410015john_smith@devb01061234560208Dev Bank53038405204599954035.0"
              "5802KH5916john smith actor6010Phnom Penh62150111Invoice#06999170013161343857589"
              "263040437", False),
    Published(NBC + "test/decode.test.js, Decode Test 14 (no account tag)",
              "00020101021252045999530384054035.05802KH5916john smith actor6010Phnom Penh621501"
              "11Invoice#06999170013161343857589263042494", False),
    Published(NBC + "test/decode.test.js, Decode Test 15 (account id without @)",
              "000201010212301900151234567890123456304D807", False),
    Published(NBC + "test/decode.test.js, Decode Test 16 (account id of 40 characters)",
              "00020101021230440040123456789012345678901234567890123456789063041747", False),
    # The SDK's own README example: its terminal label (62/07) is 27 characters, over 25.
    Published(NBC + "README.md, 'Decode KHQR'",
              "00020101021230190015john_smith@devb5204599953038405405500.05802KH5910John Smith"
              "6010Phnom Penh62640111Invoice#0690314Coffee Khlaing0727Cooooooooooooooooooounter"
              " 299340013172734056490701131727340624907630458D8", False),
]


@pytest.mark.parametrize("example", PUBLISHED, ids=lambda e: e.payload[-4:])
def test_published_payloads_carry_the_crc_they_show(example: Published) -> None:
    if "its CRC does not match" in example.source:
        assert crc16(example.payload[:-4]) != example.payload[-4:]
    else:
        assert crc16(example.payload[:-4]) == example.payload[-4:]


@pytest.mark.parametrize("example", PUBLISHED, ids=lambda e: e.payload[-4:])
def test_parse_payload_accepts_what_the_nbc_sdk_verifies(example: Published) -> None:
    if example.valid:
        assert parse_payload(example.payload).tags["63"] == example.payload[-4:]
    else:
        with pytest.raises(KhqrError):
            parse_payload(example.payload)


def _published(crc: str) -> str:
    return next(e.payload for e in PUBLISHED if e.payload.endswith(crc))


def test_the_ts_khqr_readme_example_parses_to_its_fields_and_md5() -> None:
    payload = _published("16C4")
    assert payload_md5(payload) == "922a409e0f8784858f644bf912c132b0"  # as the README shows
    parsed = parse_payload(payload)
    assert parsed == ParsedKhqr(
        dynamic=True, account_id="ishinvin@devb", merchant_account=False, merchant_id=None,
        acquiring_bank="Dev Bank", merchant_name="Ishin Vin", merchant_city="Phnom Penh",
        amount=Money.of_major(10_000, "KHR"), bill_number="INV-2022-12-25",
        created_at=at_ms(1755076232336), expires_at=at_ms(1755076292336), tags=parsed.tags)
    assert parsed.tags["29"] == "0013ishinvin@devb01090123456780208Dev Bank"  # 01: account info
    assert parsed.tags["64"] == "0002ZH0102文山0202金边"  # lengths count characters, not bytes


def test_an_nbc_merchant_example_with_khmer_text_parses() -> None:
    parsed = parse_payload(_published("A560"))
    assert (parsed.merchant_account, parsed.account_id, parsed.merchant_id) == (
        True, "khqr@devb", "123456")
    assert (parsed.acquiring_bank, parsed.merchant_name, parsed.merchant_city) == (
        "Dev Bank", "John Smith", "PHNOM PENH")
    assert (parsed.amount, parsed.bill_number) == (Money.of_major(100, "USD"), "#12345")
    assert parsed.expires_at is not None and parsed.created_at is not None
    assert parsed.expires_at - parsed.created_at == timedelta(minutes=2)


def test_a_static_merchant_qr_has_no_amount_and_keeps_other_uses_of_tag_99() -> None:
    parsed = parse_payload(_published("3870"))  # ABA: tag 99 holds no timestamps
    assert not parsed.dynamic and parsed.amount is None
    assert (parsed.account_id, parsed.merchant_id, parsed.acquiring_bank) == (
        "abaakhppxxx@abaa", "316600770110242", "abaa")
    assert (parsed.merchant_name, parsed.merchant_city) == ("USD OUTLET", "PHNOM PENH")
    assert parsed.bill_number is None  # its tag 62 holds 05 and 07 only
    assert (parsed.created_at, parsed.expires_at) == (None, None)
    assert parsed.tags["99"] == "001339CA026411FDA6803mmp"
    assert parsed.tags["52"] == "2242"


def test_an_expired_qr_still_parses_the_clock_is_the_callers() -> None:
    parsed = parse_payload(_published("7BD0"))
    assert parsed.amount == Money(101_00, "USD")
    assert parsed.expires_at == at_ms(1727249484974) < datetime.now(UTC)


# --- builds the NBC SDK makes byte for byte -----------------------------------------------
# Made by running ``bakong-khqr`` 1.0.20 from npm (generateIndividual / generateMerchant)
# under node with Date.now frozen at 1727249364974 and an expiry 10 minutes later.

CREATED = at_ms(1727249364974)
EXPIRES = CREATED + timedelta(minutes=10)
BOT = KhqrRecipient("topup_bot@devb", "Topup Bot")
SHOP = KhqrRecipient("jonhsmith@devb", "Jonh Smith", "Siem Reap", merchant_id="123456",
                     acquiring_bank="Dev Bank")

NBC_BUILDS = [
    (BOT, Money(1_50, "USD"), "TU-7F3K9Q",
     "00020101021229180014topup_bot@devb52045999530384054041.505802KH5909Topup Bot6010Phnom "
     "Penh62130109TU-7F3K9Q9934001317272493649740113172724996497463046D58",
     "b65dd3ac3886d281cc12708a5c5f9124"),
    (KhqrRecipient("topup_bot@devb", "Topup Bot", acquiring_bank="Dev Bank"),
     Money(20_500_00, "KHR"), "TU-0000000001",
     "00020101021229300014topup_bot@devb0208Dev Bank5204599953031165405205005802KH5909Topup "
     "Bot6010Phnom Penh62170113TU-0000000001993400131727249364974011317272499649746304E6AB",
     "f231b649f9ae28a2b582a50c15df101a"),
    (SHOP, Money(10_00, "USD"), "INV-2021-07-65822",
     "00020101021230400014jonhsmith@devb01061234560208Dev Bank5204599953038405402105802KH5910"
     "Jonh Smith6009Siem Reap62210117INV-2021-07-65822993400131727249364974011317272499649746"
     "304F662", "0824e39cc2b96d1605db3e321a5aeb91"),
    (KhqrRecipient("jonhsmith@devb", "Jonh Smith", merchant_id="123456",
                   acquiring_bank="Dev Bank"),
     Money(9_999_999_999_999_00, "KHR"), "B1",
     "00020101021230400014jonhsmith@devb01061234560208Dev Bank52045999530311654139999999999999"
     "5802KH5910Jonh Smith6010Phnom Penh62060102B1993400131727249364974011317272499649746304"
     "CF0A", "9cfcf3a199f98a4e34b17b97b59ed4a7"),
    (KhqrRecipient("a@b", "A"), Money(9_999_999_999_99, "USD"), "X",
     "00020101021229070003a@b52045999530384054139999999999.995802KH5901A6010Phnom Penh62050101X"
     "99340013172724936497401131727249964974630475EF", "9910d491cb73993c1a40ab56a91e6bf2"),
    (KhqrRecipient("a@b", "A", "Battambang"), Money(1, "USD"), "ABCDEFGHIJKLMNOPQRSTUVWXY",
     "00020101021229070003a@b52045999530384054040.015802KH5901A6010Battambang62290125ABCDEFGHIJ"
     "KLMNOPQRSTUVWXY993400131727249364974011317272499649746304294A",
     "e6f84205080ccc8e03c19c1524ed693b"),
]


@pytest.mark.parametrize(("recipient", "amount", "bill", "payload", "md5"), NBC_BUILDS,
                         ids=lambda v: v[-4:] if isinstance(v, str) and len(v) > 40 else None)
def test_build_matches_the_nbc_sdk_byte_for_byte(recipient: KhqrRecipient, amount: Money,
                                                   bill: str, payload: str, md5: str) -> None:
    request = KhqrRequest(recipient, amount, bill, CREATED, EXPIRES)
    assert build_payload(request) == payload
    assert payload_md5(payload) == md5
    parsed = parse_payload(payload)
    assert (parsed.amount, parsed.bill_number, parsed.account_id) == (
        amount, bill, recipient.account_id)
    assert (parsed.created_at, parsed.expires_at) == (CREATED, EXPIRES)


def test_build_matches_the_nbc_sdk_published_individual_example() -> None:
    # test/individualGenerate.test.js, "Success Generate 1": the SDK's test compares the
    # payload without its last 46 characters (the clock-dependent tag 99 and the CRC).
    request = KhqrRequest(KhqrRecipient("jonhsmith@nbcq", "Jonh Smith", "PHNOM PENH"),
                          Money.of_major(1, "USD"), "INV-2021-07-65822", CREATED, EXPIRES)
    assert build_payload(request)[:-46] == (
        "00020101021229180014jonhsmith@nbcq520459995303840540115802KH5910Jonh Smith6010PHNOM "
        "PENH62210117INV-2021-07-65822")


@pytest.mark.parametrize(("amount", "text"), [
    (Money(1, "USD"), "0.01"), (Money(10, "USD"), "0.10"), (Money(1_50, "USD"), "1.50"),
    (Money(1_00, "USD"), "1"), (Money(100_11, "USD"), "100.11"),
    (Money(100_00, "KHR"), "100"), (Money(2_050_000, "KHR"), "20500"),
])
def test_tag_54_is_written_as_the_nbc_sdk_writes_it(amount: Money, text: str) -> None:
    tags = parse_payload(build_payload(KhqrRequest(BOT, amount, "B", CREATED, EXPIRES))).tags
    assert tags["54"] == text


# --- round trips ---------------------------------------------------------------------------

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
ID_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="@")


def texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(PRINTABLE, min_size=1, max_size=max_size).filter(lambda s: s == s.strip())


account_ids = st.builds("{}@{}".format, st.text(ID_CHARS, min_size=1, max_size=15),
                        st.text(ID_CHARS, min_size=1, max_size=16))
individuals = st.builds(KhqrRecipient, account_ids, texts(25), texts(15),
                        acquiring_bank=st.none() | texts(32))
merchants = st.builds(KhqrRecipient, account_ids, texts(25), texts(15),
                      merchant_id=texts(32), acquiring_bank=texts(32))
amounts = st.one_of(
    st.integers(1, 10**12 - 1).map(lambda cents: Money(cents, "USD")),  # to 9999999999.99
    st.integers(1, 10**13 - 1).map(lambda dollars: Money.of_major(dollars, "USD")),
    st.integers(1, 10**13 - 1).map(lambda riel: Money.of_major(riel, "KHR")),
)
moments = st.datetimes(datetime(2001, 9, 10), datetime(2286, 10, 1),  # 13 digits of ms
                       timezones=st.sampled_from([UTC, timezone(timedelta(hours=7))]))
lifetimes = st.timedeltas(timedelta(milliseconds=1), timedelta(days=30))


def whole_ms(moment: datetime) -> datetime:
    return at_ms((moment - EPOCH) // timedelta(milliseconds=1))


@given(recipient=individuals | merchants, amount=amounts, bill=texts(25), created=moments,
       lifetime=lifetimes)
def test_what_is_built_parses_back(recipient: KhqrRecipient, amount: Money, bill: str,
                                   created: datetime, lifetime: timedelta) -> None:
    request = KhqrRequest(recipient, amount, bill, created, created + lifetime)
    payload = build_payload(request)
    parsed = parse_payload(payload)
    assert parsed == ParsedKhqr(
        dynamic=True, account_id=recipient.account_id,
        merchant_account=recipient.merchant_id is not None, merchant_id=recipient.merchant_id,
        acquiring_bank=recipient.acquiring_bank, merchant_name=recipient.name,
        merchant_city=recipient.city, amount=amount, bill_number=bill,
        created_at=whole_ms(created), expires_at=whole_ms(created + lifetime), tags=parsed.tags)
    assert list(parsed.tags) == ["00", "01", "30" if recipient.merchant_id else "29", "52",
                                 "53", "54", "58", "59", "60", "62", "99", "63"]
    assert len(parsed.tags["54"]) <= 13
    md5 = payload_md5(payload)
    assert len(md5) == 32 and md5 == md5.lower()


@given(st.data())
def test_one_changed_character_fails_to_parse(data: st.DataObject) -> None:
    payload = NBC_BUILDS[2][3]
    index = data.draw(st.integers(0, len(payload) - 1))
    char = data.draw(PRINTABLE)
    assume(char != payload[index])
    # An ASCII character for an ASCII one changes at most 8 bits in place: CRC-16 sees it.
    with pytest.raises(KhqrError):
        parse_payload(payload[:index] + char + payload[index + 1:])


# --- refused input ---------------------------------------------------------------------------

RECIPIENTS: dict[str, Callable[[], KhqrRecipient]] = {
    "name over 25": lambda: KhqrRecipient("a@b", "N" * 26),
    "non-ASCII name": lambda: KhqrRecipient("a@b", "ចន ស្មីន"),
    "name with accent": lambda: KhqrRecipient("a@b", "Café"),
    "control character": lambda: KhqrRecipient("a@b", "Top\nup"),
    "empty name": lambda: KhqrRecipient("a@b", ""),
    "outer space": lambda: KhqrRecipient("a@b", "Topup "),
    "city over 15": lambda: KhqrRecipient("a@b", "A", "Phnom Penh Thmey"),
    "empty city": lambda: KhqrRecipient("a@b", "A", ""),
    "account over 32": lambda: KhqrRecipient("a" * 28 + "@devb", "A"),
    "account without @": lambda: KhqrRecipient("topup_bot", "A"),
    "account with two @": lambda: KhqrRecipient("a@b@c", "A"),
    "account with a space": lambda: KhqrRecipient("top up@devb", "A"),
    "merchant without bank": lambda: KhqrRecipient("a@b", "A", merchant_id="1"),
    "merchant id over 32": lambda: KhqrRecipient("a@b", "A", merchant_id="1" * 33,
                                                 acquiring_bank="B"),
    "bank over 32": lambda: KhqrRecipient("a@b", "A", acquiring_bank="B" * 33),
}


@pytest.mark.parametrize("make", RECIPIENTS.values(), ids=RECIPIENTS.keys())
def test_a_bad_recipient_is_refused(make: Callable[[], KhqrRecipient]) -> None:
    with pytest.raises(KhqrError):
        make()


def request(**change: object) -> KhqrRequest:
    fields: dict[str, object] = {"recipient": BOT, "amount": Money(1_50, "USD"),
                                 "bill_number": "TU-1", "created_at": CREATED,
                                 "expires_at": EXPIRES}
    return KhqrRequest(**{**fields, **change})  # type: ignore[arg-type]


REQUESTS: dict[str, dict[str, object]] = {
    "zero": {"amount": Money(0, "USD")},
    "negative": {"amount": Money(-1_00, "USD")},
    "sub-riel": {"amount": Money(2_050_050, "KHR")},
    "stars": {"amount": Money(100, "XTR")},
    "not Money": {"amount": 1.5},
    "14 characters of dollars": {"amount": Money(10_000_000_000_01, "USD")},
    "14 digits of whole dollars": {"amount": Money.of_major(10**13, "USD")},
    "14 digits of riel": {"amount": Money.of_major(10**13, "KHR")},
    "bill over 25": {"bill_number": "B" * 26},
    "non-ASCII bill": {"bill_number": "វិក្កយបត្រ"},
    "empty bill": {"bill_number": ""},
    "expiry before creation": {"expires_at": CREATED - timedelta(seconds=1)},
    "expiry at creation": {"expires_at": CREATED},
    "expiry in the same millisecond": {"expires_at": CREATED + timedelta(microseconds=500)},
    "naive creation": {"created_at": CREATED.replace(tzinfo=None)},
    "naive expiry": {"expires_at": EXPIRES.replace(tzinfo=None)},
    "before 13 digits of ms": {"created_at": at_ms(10**12 - 1)},
    "after 13 digits of ms": {"expires_at": at_ms(10**13)},
    "not a recipient": {"recipient": "topup_bot@devb"},
}


@pytest.mark.parametrize("change", REQUESTS.values(), ids=REQUESTS.keys())
def test_a_bad_request_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(KhqrError):
        request(**change)


def test_the_largest_amounts_fit() -> None:
    for amount in (Money(9_999_999_999_99, "USD"), Money.of_major(10**13 - 1, "USD"),
                   Money.of_major(10**13 - 1, "KHR")):
        assert parse_payload(build_payload(request(amount=amount))).amount == amount


GOOD = NBC_BUILDS[0][3]
GOOD_BODY = GOOD[:-4]
BROKEN = {
    "lowercase CRC": GOOD[:-4] + GOOD[-4:].lower(),
    "cut short": GOOD[:-10],
    "data after the CRC": GOOD + "0000",
    "empty": "",
    "only a CRC": with_crc("6304"),
    "repeated tag": with_crc(GOOD_BODY.replace("5802KH", "5802KH5802KH")),
    "29 and 30": with_crc(GOOD_BODY.replace("5204", "30070003a@b5204")),
    "length that is not a number": with_crc(GOOD_BODY.replace("5909Topup", "59x9Topup")),
    "length past the end": with_crc(GOOD_BODY.replace("6010Phnom Penh", "6099Phnom Penh")),
    "empty field": with_crc(GOOD_BODY.replace("5802KH", "5802KH6000")),
    "three decimals": with_crc(GOOD_BODY.replace("54041.50", "54051.505")),
    "negative amount": with_crc(GOOD_BODY.replace("54041.50", "5405-1.50")),
    "euro": with_crc(GOOD_BODY.replace("5303840", "5303978")),
    "no merchant name": with_crc(GOOD_BODY.replace("5909Topup Bot", "")),
    "no merchant city": with_crc(GOOD_BODY.replace("6010Phnom Penh", "")),
    "no country": with_crc(GOOD_BODY.replace("5802KH", "")),
    "not starting with 000201": with_crc(GOOD_BODY.replace("000201", "000202", 1)),
    "expiry before creation": with_crc(GOOD_BODY.replace(
        "01131727249964974", "01131727249364973")),
    "bill number over 25": with_crc(GOOD_BODY.replace("62130109TU-7F3K9Q", "62300126" + "B" * 26)),
}


@pytest.mark.parametrize("payload", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_payload_is_refused(payload: str) -> None:
    with pytest.raises(KhqrError):
        parse_payload(payload)


def test_an_amount_written_the_old_way_reads_as_the_same_money() -> None:
    old = with_crc(GOOD_BODY.replace("54041.50", "54051.500"))
    assert parse_payload(old).amount == Money(1_50, "USD")
    riel = with_crc(GOOD_BODY.replace("5303840", "5303116").replace("54041.50", "540750000.0"))
    assert parse_payload(riel).amount == Money.of_major(50_000, "KHR")


# --- the PyPI package bakong-khqr --------------------------------------------------------------
# bakong-khqr 0.6.5 builds individual accounts only, with an expiry in whole days and its
# clock read inside its timestamp module. With that clock frozen its payloads are ours byte
# for byte, but for one thing: it writes USD amounts without trailing zeros (1.5, 0.1) where
# the NBC SDK, and we, write two decimals (1.50, 0.10). Both parse to the same Money.

our_individuals = st.builds(KhqrRecipient, account_ids, texts(25), texts(15))


@given(recipient=our_individuals, amount=amounts, bill=texts(25), created=moments,
       days=st.integers(1, 30))
def test_bakong_khqr_from_pypi_builds_the_same_payload(recipient: KhqrRecipient, amount: Money,
                                                       bill: str, created: datetime,
                                                       days: int) -> None:
    khqr = pytest.importorskip("bakong_khqr")
    their_timestamp = pytest.importorskip("bakong_khqr.sdk.timestamp")
    created = whole_ms(created)
    ms = (created - EPOCH) // timedelta(milliseconds=1)
    assume(ms + days * 86_400_000 < 10**13)
    ours = build_payload(KhqrRequest(recipient, amount, bill, created,
                                     created + timedelta(days=days)))
    # Half a millisecond on, so that its int(time.time() * 1000) lands on ms despite floats.
    frozen = SimpleNamespace(time=lambda: (ms + 0.5) / 1000)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(their_timestamp, "time", frozen)
        theirs = str(khqr.KHQR().create_qr(
            amount=float(amount.as_decimal()), account_id=recipient.account_id,
            merchant_name=recipient.name, merchant_city=recipient.city,
            currency=amount.currency, bill_number=bill, expiration=days))
    our_amount = parse_payload(ours).tags["54"]
    their_amount = our_amount.rstrip("0") if "." in our_amount else our_amount
    expected = ours if their_amount == our_amount else with_crc(ours[:-4].replace(
        f"54{len(our_amount):02d}{our_amount}", f"54{len(their_amount):02d}{their_amount}"))
    assert theirs == expected
    assert parse_payload(theirs).amount == amount
