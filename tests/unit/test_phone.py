"""Cambodian mobile numbers: formats people type, operator detection, refusals."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType, carrier

from bot.domain.operators import Operator
from bot.domain.phone import (
    MobileNumber,
    PhoneError,
    describe_phone_error,
    parse_cambodian_mobile,
)

Reason = PhoneError.Reason

# National prefix -> (subscriber digits after the prefix, operator), each checked against
# the phonenumbers metadata this project pins (every subscriber number of that length is
# valid and belongs to that carrier).
PREFIXES: dict[str, tuple[int, Operator]] = {
    "010": (6, Operator.SMART),
    "015": (6, Operator.SMART),
    "016": (6, Operator.SMART),
    "069": (6, Operator.SMART),
    "070": (6, Operator.SMART),
    "081": (6, Operator.SMART),
    "086": (6, Operator.SMART),
    "093": (6, Operator.SMART),
    "096": (7, Operator.SMART),
    "098": (6, Operator.SMART),
    "011": (6, Operator.CELLCARD),
    "012": (6, Operator.CELLCARD),
    "014": (6, Operator.CELLCARD),
    "017": (6, Operator.CELLCARD),
    "061": (6, Operator.CELLCARD),
    "076": (7, Operator.CELLCARD),
    "077": (6, Operator.CELLCARD),
    "078": (6, Operator.CELLCARD),
    "085": (6, Operator.CELLCARD),
    "089": (6, Operator.CELLCARD),
    "092": (6, Operator.CELLCARD),
    "095": (6, Operator.CELLCARD),
    "099": (6, Operator.CELLCARD),
    "031": (7, Operator.METFONE),
    "060": (6, Operator.METFONE),
    "066": (6, Operator.METFONE),
    "067": (6, Operator.METFONE),
    "068": (6, Operator.METFONE),
    "071": (7, Operator.METFONE),
    "088": (7, Operator.METFONE),
    "090": (6, Operator.METFONE),
    "097": (7, Operator.METFONE),
    "018": (7, Operator.SEATEL),
}


# --- accepted formats ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "012345678",
        "012 345 678",
        "012-345-678",
        "012.345.678",
        "(012) 345-678",
        "(012)345678",
        "  012 345 678  ",
        "+855 12-345-678",
        "+855 12 345 678",
        "+85512345678",
        "+855 (0)12 345 678",
        "+855 012 345 678",
        "855 12345678",
        "85512345678",
        "855 012 345 678",
        "00855 12 345 678",
        "0085512345678",
        "12345678",
        "012\u00a0345\u00a0678",
        "០១២ ៣៤៥ ៦៧៨",  # Khmer digits
        "０１２３４５６７８",  # full-width digits
    ],
)
def test_cellcard_formats(text: str) -> None:
    number = parse_cambodian_mobile(text)
    assert number == MobileNumber(e164="+85512345678", operator=Operator.CELLCARD)


@pytest.mark.parametrize(
    ("text", "e164", "operator"),
    [
        ("096 999 9999", "+855969999999", Operator.SMART),
        ("010 123 456", "+85510123456", Operator.SMART),
        ("015 123 456", "+85515123456", Operator.SMART),
        ("070 123 456", "+85570123456", Operator.SMART),
        ("081 123 456", "+85581123456", Operator.SMART),
        ("093 123 456", "+85593123456", Operator.SMART),
        ("098 123 456", "+85598123456", Operator.SMART),
        ("011 123 456", "+85511123456", Operator.CELLCARD),
        ("092 123 456", "+85592123456", Operator.CELLCARD),
        ("076 123 4567", "+855761234567", Operator.CELLCARD),
        ("012 345 6789", "+855123456789", Operator.CELLCARD),
        ("097 123 4567", "+855971234567", Operator.METFONE),
        ("097 123 456", "+85597123456", Operator.METFONE),
        ("088 123 4567", "+855881234567", Operator.METFONE),
        ("031 123 4567", "+855311234567", Operator.METFONE),
        ("071 123 4567", "+855711234567", Operator.METFONE),
        ("090 123 456", "+85590123456", Operator.METFONE),
        ("018 123 4567", "+855181234567", Operator.SEATEL),
        ("018 123 456", "+85518123456", Operator.SEATEL),
        ("+855 18 123 4567", "+855181234567", Operator.SEATEL),
    ],
)
def test_operator_detection(text: str, e164: str, operator: Operator) -> None:
    number = parse_cambodian_mobile(text)
    assert number.e164 == e164
    assert number.operator is operator


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", Reason.EMPTY),
        ("   ", Reason.EMPTY),
        ("023212345", Reason.LANDLINE),
        ("023 212 345", Reason.LANDLINE),
        ("+855 23 212 345", Reason.LANDLINE),
        ("hello", Reason.NOT_A_NUMBER),
        ("📱", Reason.NOT_A_NUMBER),
        ("012 345 678 📱", Reason.NOT_A_NUMBER),
        ("x" * 4000, Reason.NOT_A_NUMBER),
        ("1" * 4000, Reason.NOT_A_NUMBER),
        ("012", Reason.NOT_A_NUMBER),
        ("855", Reason.NOT_A_NUMBER),
        ("+855", Reason.NOT_A_NUMBER),
        ("+", Reason.NOT_A_NUMBER),
        ("012 345 678#", Reason.NOT_A_NUMBER),
        ("+855 12 345 678 ext 5", Reason.NOT_A_NUMBER),
        ("0123456", Reason.INVALID),
        ("01234567890123", Reason.INVALID),
        ("063 123 456", Reason.INVALID),
        ("096 123 456", Reason.INVALID),  # Smart's 096 takes seven digits
        ("088 123 456", Reason.INVALID),
        ("010 123 4567", Reason.INVALID),
    ],
)
def test_refuses(text: str, reason: PhoneError.Reason) -> None:
    with pytest.raises(PhoneError) as excinfo:
        parse_cambodian_mobile(text)
    assert excinfo.value.reason is reason
    assert isinstance(excinfo.value, ValueError)


def test_none_is_empty() -> None:
    with pytest.raises(PhoneError) as excinfo:
        parse_cambodian_mobile(None)  # type: ignore[arg-type]
    assert excinfo.value.reason is Reason.EMPTY


@pytest.mark.parametrize(
    ("text", "country"),
    [
        ("+1 415 555 0100", "+1"),
        ("001 415 555 0100", "+1"),
        ("+44 7911 123456", "+44"),
        ("0044 7911 123456", "+44"),
        ("+66 81 234 5678", "+66"),
    ],
)
def test_foreign_numbers_name_their_country_code(text: str, country: str) -> None:
    with pytest.raises(PhoneError) as excinfo:
        parse_cambodian_mobile(text)
    assert excinfo.value.reason is Reason.FOREIGN
    assert excinfo.value.detail == country
    assert str(excinfo.value) == f"foreign: {country}"


def test_unsupported_cambodian_operator() -> None:
    parsed = phonenumbers.parse("+85513123456")
    assert phonenumbers.is_valid_number(parsed)
    assert phonenumbers.number_type(parsed) == PhoneNumberType.MOBILE
    assert carrier.name_for_number(parsed, "en") == "qbmore/Cadcomms"

    with pytest.raises(PhoneError) as excinfo:
        parse_cambodian_mobile("013 123 456")
    assert excinfo.value.reason is Reason.UNSUPPORTED_OPERATOR
    assert excinfo.value.detail == "qbmore/cadcomms"


def test_mobile_without_a_known_carrier_is_unsupported() -> None:
    parsed = phonenumbers.parse("+85587123456")
    assert phonenumbers.number_type(parsed) == PhoneNumberType.MOBILE
    assert carrier.name_for_number(parsed, "en") == ""

    with pytest.raises(PhoneError) as excinfo:
        parse_cambodian_mobile("087 123 456")
    assert excinfo.value.reason is Reason.UNSUPPORTED_OPERATOR
    assert excinfo.value.detail == "unknown"


# --- describe_phone_error --------------------------------------------------------------


@pytest.mark.parametrize("reason", list(Reason))
def test_describe_every_reason(reason: PhoneError.Reason) -> None:
    text = describe_phone_error(PhoneError(reason, "DETAIL"))
    assert text.strip()
    assert text.isascii()
    assert any(ch.isalpha() for ch in text)


def test_describe_includes_the_detail_where_it_matters() -> None:
    foreign = describe_phone_error(PhoneError(Reason.FOREIGN, "+44"))
    unsupported = describe_phone_error(PhoneError(Reason.UNSUPPORTED_OPERATOR, "qbmore"))
    assert foreign == "+44 is not a Cambodian number (+855)"
    assert "qbmore" in unsupported
    for name in ("Smart", "Cellcard", "Metfone", "Seatel"):
        assert name in unsupported


@pytest.mark.parametrize(
    "text", ["", "hello", "+1 415 555 0100", "023212345", "0123456", "013 123 456"]
)
def test_describe_real_errors(text: str) -> None:
    with pytest.raises(PhoneError) as excinfo:
        parse_cambodian_mobile(text)
    assert describe_phone_error(excinfo.value)


def test_descriptions_differ_per_reason() -> None:
    texts = {describe_phone_error(PhoneError(reason, "x")) for reason in Reason}
    assert len(texts) == len(Reason)


# --- MobileNumber ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("e164", "national", "masked", "hidden"),
    [
        ("+85512345678", "012 345 678", "012 ••• 678", "345"),
        ("+855971234567", "097 123 4567", "097 ••• 567", "1234"),
        ("+855181234567", "018 123 4567", "018 ••• 567", "1234"),
    ],
)
def test_national_and_masked(e164: str, national: str, masked: str, hidden: str) -> None:
    number = MobileNumber(e164=e164, operator=Operator.CELLCARD)
    assert number.national == national
    assert number.masked == masked
    assert hidden not in number.masked.replace(" ", "")
    assert sum(ch.isdigit() for ch in number.masked) == 6


def test_masked_of_a_parsed_number() -> None:
    number = parse_cambodian_mobile("+855 12 345 678")
    assert number.masked == "012 ••• 678"
    assert "345" not in number.masked


# --- properties ------------------------------------------------------------------------

_NUMBERS = st.sampled_from(sorted(PREFIXES)).flatmap(
    lambda prefix: st.tuples(
        st.just(prefix),
        st.text(alphabet="0123456789", min_size=PREFIXES[prefix][0],
                max_size=PREFIXES[prefix][0]),
    )
)


def _group(digits: str, sep: str) -> str:
    return sep.join(digits[i:i + 3] for i in range(0, len(digits), 3))


@settings(deadline=None)
@given(_NUMBERS)
def test_every_written_form_gives_one_e164(number: tuple[str, str]) -> None:
    prefix, subscriber = number
    national = prefix + subscriber  # 0xx...
    bare = national[1:]
    e164 = "+855" + bare
    operator = PREFIXES[prefix][1]
    forms = [
        national,
        _group(national, " "),
        _group(national, "-"),
        f"({prefix}) {subscriber}",
        "+855" + bare,
        "+855 " + _group(bare, " "),
        "+855-" + _group(bare, "-"),
        "855 " + bare,
        "855" + bare,
        "00855 " + bare,
    ]
    for form in forms:
        parsed = parse_cambodian_mobile(form)
        assert parsed.e164 == e164, form
        assert parsed.operator is operator, form
    result = parse_cambodian_mobile(national)
    assert result.masked == f"{national[:3]} ••• {national[-3:]}"
    assert result.national.replace(" ", "") == national


@settings(deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_phone_error(text: str) -> None:
    try:
        number = parse_cambodian_mobile(text)
    except PhoneError:
        return
    assert number.e164.startswith("+855")


@settings(deadline=None)
@given(st.text(alphabet="0123456789+-() .\u00a0", max_size=40))
def test_phone_like_text_raises_only_phone_error(text: str) -> None:
    try:
        number = parse_cambodian_mobile(text)
    except PhoneError:
        return
    assert number.e164.startswith("+855")
    assert isinstance(number.operator, Operator)
