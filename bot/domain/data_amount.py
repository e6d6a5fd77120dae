"""Amounts of mobile data as people type them: 500, 500 MB, 1.5GB, 1,024 MB."""

from __future__ import annotations

import re

MAX_MEGABYTES = 1024 * 1024  # 1 TB: anything above is a typo
_AMOUNT = re.compile(r"^\s*(\d{1,7}(?:,\d{3})*)(?:[.](\d{1,3}))?\s*(mb|m|gb|g)?\s*$",
                     re.IGNORECASE)


def parse_megabytes(text: str) -> int | None:
    """Whole megabytes (1 GB = 1,024 MB), or None when it is not a positive amount of data."""
    match = _AMOUNT.match(text or "")
    if not match:
        return None
    whole, fraction, unit = match.groups()
    scale = 1024 if (unit or "mb").lower().startswith("g") else 1
    digits = whole.replace(",", "") + (fraction or "")
    megabytes = int(digits) * scale // 10 ** len(fraction or "")
    return megabytes if 0 < megabytes <= MAX_MEGABYTES else None
