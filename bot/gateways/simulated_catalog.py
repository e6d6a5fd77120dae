"""The simulated carrier's plan catalog: airtime and data packs per Cambodian operator.

Prices and sizes are close to what the operators sell; airtime validity follows
``bot.domain.operators.VALIDITY_TIERS``.
"""

from __future__ import annotations

from bot.domain.money import Money
from bot.domain.operators import VALIDITY_TIERS, Operator
from bot.domain.products import Product, ProductKind

_DATA_PACKS: dict[Operator, tuple[tuple[str, int, int, int], ...]] = {
    # (name, price in cents, data MB, days)
    Operator.SMART: (("Smart@Net 1.5 GB / 1 day", 50, 1536, 1),
                     ("Smart@Net 5 GB / 7 days", 100, 5120, 7),
                     ("Smart@Net 20 GB / 30 days", 300, 20480, 30),
                     ("Smart@Net 60 GB / 30 days", 500, 61440, 30),
                     ("Smart@Net 150 GB / 30 days", 1000, 153600, 30)),
    Operator.CELLCARD: (("Cellcard Data 2 GB / 1 day", 50, 2048, 1),
                        ("Cellcard Data 6 GB / 7 days", 100, 6144, 7),
                        ("Cellcard Data 25 GB / 30 days", 300, 25600, 30),
                        ("Cellcard Data 70 GB / 30 days", 500, 71680, 30)),
    Operator.METFONE: (("Metfone 4G 3 GB / 3 days", 50, 3072, 3),
                       ("Metfone 4G 8 GB / 7 days", 100, 8192, 7),
                       ("Metfone 4G 30 GB / 30 days", 300, 30720, 30),
                       ("Metfone 4G 80 GB / 30 days", 600, 81920, 30)),
    Operator.SEATEL: (("Seatel 4G+ 5 GB / 7 days", 100, 5120, 7),
                      ("Seatel 4G+ 25 GB / 30 days", 300, 25600, 30),
                      ("Seatel 4G+ 100 GB / 30 days", 500, 102400, 30)),
}


def build_catalog() -> dict[Operator, tuple[Product, ...]]:
    catalog: dict[Operator, tuple[Product, ...]] = {}
    for operator in Operator:
        airtime = tuple(
            Product(id=f"{operator.value}-air-{cents}", operator=operator,
                    kind=ProductKind.AIRTIME,
                    name=f"{operator.display_name} ${cents // 100} airtime",
                    price=Money(cents, "USD"), airtime=Money(cents, "USD"), validity_days=days)
            for cents, days in VALIDITY_TIERS[operator])
        data = tuple(
            Product(id=f"{operator.value}-data-{mb}-{days}d", operator=operator,
                    kind=ProductKind.DATA, name=name, price=Money(cents, "USD"),
                    data_mb=mb, validity_days=days)
            for name, cents, mb, days in _DATA_PACKS[operator])
        catalog[operator] = airtime + data
    return catalog


CATALOG = build_catalog()
PRODUCTS = {product.id: product for products in CATALOG.values() for product in products}
