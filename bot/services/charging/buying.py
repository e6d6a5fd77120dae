"""Buying an eSIM: a charge on a line of its own, approved by the Confirm tap itself.

In one transaction: the eSIM line (no ICCID yet), the charge (approved, under the button's
nonce, so a second tap finds it), the wallet hold. The order then goes out as any approved
charge does (Submission, in the background, or the charges sweep after a crash); settlement
gives the line its ICCID, or unbinds it and gives the money back.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.charges import ChargeState
from bot.domain.invariants import holds
from bot.domain.money import Money
from bot.domain.products import ProductKind
from bot.services.charging.common import Phase
from bot.services.charging.outcomes import ChargeView, Invalid
from bot.services.charging.policy import ESIM_PURCHASE, MAX_NONCE_CHARS, RequestProblem
from storage.charges import Creation, lock_wallet_of
from storage.lines import LinesRepository
from storage.wallet import WalletRepository


@dataclass(frozen=True)
class EsimOrdered:
    charge: ChargeView
    created: bool  # False: this button was tapped before; that purchase goes on


@dataclass(frozen=True)
class CannotAfford:
    """The wallet has less than the eSIM costs: nothing was written."""

    available: Money
    price: Money


class Buying(Phase):
    async def buy_esim(self, user_id: int, product_id: str, nonce: str,
                       ) -> EsimOrdered | CannotAfford | Invalid:
        if not nonce or len(nonce) > MAX_NONCE_CHARS:
            raise ValueError("a nonce is 1 to 80 characters")
        await self._catalog.warm()  # before the transaction: the price is read in it
        now = self._clock.now()
        key = f"{ESIM_PURCHASE}:{user_id}:{nonce}"
        async with self._db.write() as conn:
            repo = self._repo(conn)
            existing = await repo.by_key(key)
            if existing is not None:
                return EsimOrdered(ChargeView.of(existing), created=False)
            product = self._product(product_id)
            if product is None or product.kind is not ProductKind.ESIM:
                return Invalid(RequestProblem.UNKNOWN_PLAN)
            await lock_wallet_of(conn, user_id)
            wallet = WalletRepository(conn)
            available = await wallet.available(user_id, product.price.currency)
            if available < product.price:
                return CannotAfford(available, product.price)
            line = await LinesRepository(conn, self._cipher).add_esim(
                owner_id=user_id, operator=product.operator, now=now)
            charge, creation = await repo.create(
                idempotency_key=key, user_id=user_id, line_id=line.id, amount=product.price,
                cause=ESIM_PURCHASE, state=ChargeState.APPROVED, product_id=product.id,
                now=now, next_attempt_at=now + self.retry.lease)
            held = await wallet.hold(charge_id=charge.id, user_id=user_id,
                                     amount=product.price, now=now)
            # A new line has no other charge, and the key was not taken under our lock.
            holds(creation is Creation.CREATED and held,
                  f"eSIM purchase {key} was created and held once")
            await self._audit(conn, now, f"user:{user_id}", "charge.approved", charge,
                              product=product.id, esim=True)
        await self._point("approved", charge.id)
        return EsimOrdered(ChargeView.of(charge), created=True)
