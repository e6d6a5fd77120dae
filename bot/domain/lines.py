"""What kind of line a user keeps alive: a SIM (a phone number, topped up with airtime or
bundles) or an eSIM (an ICCID, topped up with the eSIM provider's packages, and readable
from that provider)."""

from __future__ import annotations

import enum


class LineKind(enum.StrEnum):
    SIM = "sim"
    ESIM = "esim"
