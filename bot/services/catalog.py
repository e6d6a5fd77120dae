"""The plans each operator sells, from the chosen top-up provider, cached per operator.

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
from bot.domain.products import Product
from bot.gateways.topup import GatewayError

log = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(minutes=10)


class PlanSource(Protocol):
    """Where plans come from: a top-up provider (or this catalog, for its readers)."""

    async def catalog(self, operator: Operator) -> list[Product]: ...


class CatalogService:
    def __init__(self, provider: PlanSource | None, clock: Clock, *,
                 ttl: timedelta = DEFAULT_TTL) -> None:
        self._provider = provider
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
        """Reads every operator whose plans are stale; never raises (the old ones stay)."""
        for operator in Operator:
            await self._refresh(operator, strict=False)

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
            self._by_id = {product.id: product for listed in self._plans.values()
                           for product in listed}
