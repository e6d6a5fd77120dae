"""The inline-button codec: round trips, and refusal of anything it did not produce."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers import callback_data
from handlers.callback_data import MAX_BYTES, Callback, decode, encode, register

# Kinds private to these tests (the product's own kinds are other names).
PATTERN_A = register("tza", "id", "act")
PATTERN_B = register("tzb", "page")
register("tzc")
register("tzd", "a", "b", "c")
KINDS = ["tza", "tzb", "tzc", "tzd"]
TOKEN_ALPHABET = "ABCXYZabcxyz0123456789_-"
TOKEN = st.text(alphabet=TOKEN_ALPHABET, min_size=1, max_size=24)


# --- register ----------------------------------------------------------------------------

def test_register_returns_the_handler_pattern() -> None:
    assert PATTERN_A == r"^v1:tza(:|$)"
    assert re.match(PATTERN_A, encode("tza", 7, "pay"))
    assert re.match(PATTERN_B, encode("tzb", 2))
    assert not re.match(PATTERN_A, encode("tzb", 2))
    assert not re.match(PATTERN_A, "v1:tzaa:1:x")


def test_registering_again_with_the_same_arguments_is_fine() -> None:
    assert register("tza", "id", "act") == PATTERN_A
    assert callback_data.KINDS["tza"] == ("id", "act")


@pytest.mark.parametrize("args", [("id",), ("id", "action"), ("act", "id"), ()])
def test_registering_a_kind_with_other_arguments_raises(args: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register("tza", *args)
    assert callback_data.KINDS["tza"] == ("id", "act")


@pytest.mark.parametrize("kind", ["", "TZA", "tzzzz", "t1", "t-a", "t:a", "tz a", "ťza"])
def test_bad_kind_names_are_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="bad callback kind"):
        register(kind)
    assert kind not in callback_data.KINDS


# --- round trips -------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "args", "data"), [
    ("tza", (42, "pay"), "v1:tza:42:pay"),
    ("tza", ("line_7", "re-name"), "v1:tza:line_7:re-name"),
    ("tzb", (0,), "v1:tzb:0"),
    ("tzc", (), "v1:tzc"),
    ("tzd", ("a" * 18, "b" * 18, "c" * 18), "v1:tzd:" + ":".join(["a" * 18, "b" * 18, "c" * 18])),
])
def test_encode_and_decode(kind: str, args: tuple[object, ...], data: str) -> None:
    assert encode(kind, *args) == data
    assert decode(data) == Callback(kind, tuple(str(a) for a in args))


def test_arguments_by_name() -> None:
    callback = decode(encode("tza", 981, "pay"))
    assert callback is not None
    assert callback.arg("id") == "981"
    assert callback.arg("act") == "pay"
    assert callback.int_arg("id") == 981


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0), ("007", 7), ("123456789012345678", 123456789012345678),
    ("1234567890123456789", None),  # longer than 18 digits
    ("abc", None), ("-5", None), ("1_000", None), ("12a", None), ("x1", None),
])
def test_int_arg(value: str, expected: int | None) -> None:
    assert Callback("tza", (value, "x")).int_arg("id") == expected


@given(st.lists(TOKEN, min_size=3, max_size=3))
def test_tokens_round_trip(args: list[str]) -> None:
    try:
        data = encode("tzd", *args)
    except ValueError:
        assert len(":".join(["v1", "tzd", *args]).encode()) > MAX_BYTES
        return
    assert decode(data) == Callback("tzd", tuple(args))


# --- decode refuses ----------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    None, "", ":", "v1", "v1:", "v1::", "garbage", "v1:tza", "v1:tza:1", "v1:tza:1:pay:x",
    "v1:tzc:", "v1:tzb:", "v1:tzb::", "v2:tza:1:pay", "V1:tza:1:pay", "v1 :tza:1:pay",
    "v0:tzb:1", "v1:zzzz:1", "v1:TZA:1:pay", "v1:tzx", "v1:tza:1:pay:", ":v1:tza:1:pay",
    "v1:tzb:1 2", "v1:tzb: 1", "v1:tzb:1 ", "v1:tzb:a.b", "v1:tzb:a/b", "v1:tzb:é",
    "v1:tzb:١", "v1:tzb:🙂", "v1:tzb:" + "1" * 25, "v1:tzb:\x00",
])
def test_decode_refuses(data: str | None) -> None:
    assert decode(data) is None


def test_decode_refuses_data_over_64_bytes() -> None:
    longest = "v1:tzd:" + ":".join(["a" * 19, "b" * 18, "c" * 18])
    assert len(longest) == MAX_BYTES
    assert decode(longest) == Callback("tzd", ("a" * 19, "b" * 18, "c" * 18))
    over = "v1:tzd:" + ":".join(["a" * 19, "b" * 19, "c" * 18])
    assert len(over) == MAX_BYTES + 1
    assert decode(over) is None
    assert decode("v1:tzb:1" + "\u00e9" * 30) is None  # short in characters, long in bytes


# --- encode refuses ----------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["", "a b", "a:b", "é", "🙂", "1.5", "x" * 25, "a\tb", 1.5])
def test_encode_refuses_arguments_that_are_not_short_tokens(arg: object) -> None:
    with pytest.raises(ValueError, match="not a short token"):
        encode("tzb", arg)


def test_encode_refuses_data_over_64_bytes() -> None:
    assert len(encode("tzd", "a" * 19, "b" * 18, "c" * 18)) == MAX_BYTES
    with pytest.raises(ValueError, match="over 64 bytes"):
        encode("tzd", "a" * 19, "b" * 19, "c" * 18)


@pytest.mark.parametrize(("kind", "args"), [
    ("tza", (1,)), ("tza", (1, "x", "y")), ("tzc", (1,)), ("tzb", ()), ("zzzz", (1,)),
])
def test_encode_refuses_unknown_kinds_and_wrong_arity(kind: str,
                                                      args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError, match="takes"):
        encode(kind, *args)


def test_a_trailing_newline_is_not_a_token() -> None:
    assert decode("v1:tzb:7\n") is None
    with pytest.raises(ValueError, match="not a short token"):
        encode("tzb", "7\n")


def test_decode_refuses_a_lone_surrogate() -> None:
    assert decode("v1:tzb:\ud800") is None


# --- properties --------------------------------------------------------------------------

SEGMENT = st.one_of(TOKEN, st.text(max_size=8),
                    st.text(alphabet=TOKEN_ALPHABET + " :\n\t.é١🙂", max_size=26))
CANDIDATE = st.one_of(
    st.text(),
    st.builds(lambda version, kind, args: ":".join([version, kind, *args]),
              st.sampled_from(["v1", "v2", "V1", "", "v1 "]),
              st.sampled_from([*KINDS, "zzzz", ""]),
              st.lists(SEGMENT, max_size=4)),
)


@given(CANDIDATE)
def test_decode_never_raises_and_what_it_accepts_encodes_back(data: str) -> None:
    callback = decode(data)
    if callback is None:
        return
    assert callback.kind in KINDS
    assert len(data.encode()) <= MAX_BYTES
    assert encode(callback.kind, *callback.args) == data
    for name in callback_data.KINDS[callback.kind]:
        value = callback.int_arg(name)
        assert value is None or value == int(callback.arg(name))
