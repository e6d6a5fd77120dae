"""The plans each operator sells, from the chosen top-up provider, cached per operator;
and the eSIM packages the eSIM provider sells (new eSIMs and their top-ups), cached alike.

Services look a plan up by id inside their transactions, where no network call may wait:
``get`` answers from the cache alone. ``warm`` (before a sweep, a request, at start-up)
reads what is stale from the provider; when the provider cannot answer, the last catalog
it gave is kept, so a passing outage neither empties the plan list nor skips rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

from bot.clock import Clock, SystemClock
from bot.domain.operators import Operator
from bot.domain.products import Product, ProductKind
from bot.gateways.esim import EsimPackage
from bot.gateways.topup import GatewayError

log = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(minutes=10)


class PlanSource(Protocol):
    """Where plans come from: a top-up provider (or this catalog, for its readers)."""

    async def catalog(self, operator: Operator) -> list[Product]: ...


class EsimPackageSource(Protocol):
    """Where eSIM packages come from: the eSIM provider."""

    async def catalog(self) -> list[EsimPackage]: ...


class CatalogService:
    def __init__(self, provider: PlanSource | None, clock: Clock, *,
                 ttl: timedelta = DEFAULT_TTL, esims: EsimPackageSource | None = None) -> None:
        self._provider = provider
        self._esims = esims
        self._esim_plans: list[Product] = []
        self._esims_read_at: datetime | None = None
        self._clock = clock
        self._ttl = ttl
        self._plans: dict[Operator, list[Product]] = {}
        self._read_at: dict[Operator, datetime] = {}
        self._by_id: dict[str, Product] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, products: Mapping[str, Product]) -> CatalogService:
        """A fixed catalog that never asks anyone (tests, the simulated carrier's constant)."""
        catalog = cls(None, SystemClock())
        for product in products.values():
            catalog._plans.setdefault(product.operator, []).append(product)
        catalog._by_id = dict(products)
        return catalog

    def get(self, product_id: str | None) -> Product | None:
        """The plan with this id in the catalog as last read; None when it is not (never
        listed, or withdrawn since: it cannot be bought any more)."""
        return self._by_id.get(product_id) if product_id else None

    async def for_operator(self, operator: Operator) -> list[Product]:
        """The operator's plans, read again when older than the TTL. GatewayError only when
        the provider cannot answer and nothing was ever read."""
        await self._refresh(operator, strict=True)
        return list(self._plans.get(operator, ()))

    async def catalog(self, operator: Operator) -> list[Product]:
        """``for_operator`` under the name a provider gives it, so the catalog stands in
        for the provider wherever only plans are wanted."""
        return await self.for_operator(operator)

    async def warm(self) -> None:
        """Reads every operator whose plans are stale, and the eSIM packages; never raises
        (the old ones stay)."""
        for operator in Operator:
            await self._refresh(operator, strict=False)
        await self._refresh_esims(strict=False)

    async def esims_for_sale(self) -> list[Product]:
        """New eSIMs for sale, cheapest first (Cambodian before regional). GatewayError
        only when the provider cannot answer and nothing was ever read."""
        await self._refresh_esims(strict=True)
        return [p for p in self._esim_plans if p.kind is ProductKind.ESIM]

    async def _refresh_esims(self, *, strict: bool) -> None:
        if self._esims is None:
            return
        async with self._lock:
            if self._esims_read_at is not None \
                    and self._clock.now() - self._esims_read_at < self._ttl:
                return
            try:
                packages = await self._esims.catalog()
            except GatewayError as error:
                if strict and self._esims_read_at is None:
                    raise
                log.warning("eSIM packages not read (%s); keeping the last ones", error)
                return
            self._esim_plans = [product for package in sorted(packages,
                                                              key=EsimPackage.shelf_order)
                                if (product := package.as_product()) is not None]
            self._esims_read_at = self._clock.now()
            self._index()

    def _index(self) -> None:
        self._by_id = {product.id: product for listed in
                       (*self._plans.values(), self._esim_plans) for product in listed}

    async def _refresh(self, operator: Operator, *, strict: bool) -> None:
        if self._provider is None:
            return
        async with self._lock:
            read_at = self._read_at.get(operator)
            if read_at is not None and self._clock.now() - read_at < self._ttl:
                return
            try:
                plans = await self._provider.catalog(operator)
            except GatewayError as error:
                if strict and operator not in self._plans:
                    raise
                log.warning("Catalog of %s not read (%s); keeping the last one", operator,
                            error)
                return
            self._plans[operator] = plans
            self._read_at[operator] = self._clock.now()
            self._index()
