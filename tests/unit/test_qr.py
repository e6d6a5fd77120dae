"""The QR images the bot sends decode, with a real decoder, to exactly what they hold."""

from __future__ import annotations

import io

import pytest
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from handlers.qr import qr_png


def decoded(png: bytes) -> list[str]:
    return [result.text for result in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


def test_an_install_code_round_trips() -> None:
    lpa = "LPA:1$lpa.airalo.com$TEST-ABCDE-12345-FGHIJ"
    png = qr_png(lpa)
    assert png.startswith(b"\x89PNG")
    assert decoded(png) == [lpa]


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
               max_size=120))
def test_any_printable_payload_round_trips(payload: str) -> None:
    assert decoded(qr_png(payload)) == [payload]


def test_nothing_to_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="something"):
        qr_png("")
