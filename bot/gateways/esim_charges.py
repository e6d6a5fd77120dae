"""The eSIM provider as the charge pipeline sees it: a charge on an eSIM line is an order
under the charge's reference (a new eSIM while the line has no ICCID, else a top-up of it),
answered as a TopUpResult and found again by that reference, like any top-up.

What the provider says maps as a top-up provider's answers do: a refusal is a FAILED result
with its DeclineReason (nothing was ordered); a timeout, a reset or a 5xx raise, for the
charging service to look the reference up (Airalo's orders are not idempotent: ordering
again blind could buy two eSIMs).
"""

from __future__ import annotations

from datetime import datetime

from bot.clock import Clock
from bot.domain.charges import DeclineReason
from bot.domain.money import Money
from bot.gateways.esim import EsimOrder, EsimProvider, EsimRefused
from bot.gateways.topup import TopUpResult, TopUpStatus


class EsimCharges:
    def __init__(self, provider: EsimProvider, clock: Clock) -> None:
        self._provider = provider
        self._clock = clock

    async def charge(self, *, reference: str, package_id: str, iccid: str | None,
                     price: Money) -> TopUpResult:
        """Orders ``package_id`` under ``reference``: a new eSIM (``iccid`` None) or a
        top-up of ``iccid``."""
        try:
            if iccid is None:
                order = await self._provider.order(package_id, reference)
            else:
                order = await self._provider.top_up(iccid, package_id, reference)
        except EsimRefused as refused:
            return self._declined(reference, package_id, price, refused.reason)
        return self._result(order)

    async def lookup(self, reference: str) -> TopUpResult | None:
        order = await self._provider.find_order(reference)
        return self._result(order) if order is not None else None

    async def transactions(self, start: datetime, end: datetime) -> list[TopUpResult]:
        return [self._result(order) for order in
                await self._provider.orders_between(start, end)]

    def _declined(self, reference: str, package_id: str, price: Money,
                  reason: DeclineReason) -> TopUpResult:
        return TopUpResult(reference=reference, status=TopUpStatus.FAILED, provider_tx_id="",
                           amount=price, at=self._clock.now(), product_id=package_id,
                           failure_reason=reason.value)

    @staticmethod
    def _result(order: EsimOrder) -> TopUpResult:
        return TopUpResult(
            reference=order.reference, status=TopUpStatus.SUCCEEDED,
            provider_tx_id=order.code or order.order_id, amount=order.price, at=order.at,
            product_id=order.package_id, provider_cost=order.net_price,
            esim_iccid=order.iccid)
