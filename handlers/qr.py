"""QR codes as PNG images, made locally (segno): an eSIM's install code, and later KHQR.

Error correction M (15 %) holds up on a phone screen photographed by another phone; the
quiet zone of 4 modules is what the standard asks for, so every scanner finds the code.
"""

from __future__ import annotations

import io

import segno

SCALE = 10  # pixels per module: an LPA string (~45 chars) makes a ~370 px image


def qr_png(payload: str, *, scale: int = SCALE) -> bytes:
    """The PNG of a QR code holding ``payload`` exactly."""
    if not payload:
        raise ValueError("a QR code needs something to hold")
    image = io.BytesIO()
    segno.make_qr(payload, error="m", boost_error=False).save(
        image, kind="png", scale=scale, border=4)
    return image.getvalue()
