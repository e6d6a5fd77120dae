"""Submitting: an approved charge goes to the provider once; an unknown outcome is looked up,
never re-sent blind, and worked again later with back-off."""

from __future__ import annotations

import logging
from datetime import timedelta

from bot.domain.charges import ChargeState
from bot.domain.invariants import present
from bot.gateways.esim_charges import EsimCharges
from bot.gateways.topup import (
    DuplicateReference,
    GatewayError,
    GatewayTimeout,
    TopUpRequest,
    TopUpResult,
    TryLater,
)
from bot.services.charging.common import Deps, Phase
from bot.services.charging.notices import ChargeStuck
from bot.services.charging.outcomes import LOOKUP_FAILED, Lookup
from bot.services.charging.policy import LINE_UNAVAILABLE
from bot.services.charging.settlement import Settlement
from storage.charges import ChargeRecord
from storage.lines import LineRecord

log = logging.getLogger(__name__)


class Submission(Phase):
    def __init__(self, deps: Deps, settlement: Settlement) -> None:
        super().__init__(deps)
        self._settlement = settlement
        self._line_kinds: dict[int, bool] = {}  # line id -> an eSIM line

    async def submit(self, charge_id: int) -> ChargeRecord | None:
        """Sends an approved charge to the provider (once: the move to submitted is a
        compare-and-set committed before the call). Returns the charge as it is after."""
        charge = await self._get(charge_id)
        if charge is None or charge.state is not ChargeState.APPROVED:
            return charge
        if charge.attempts > 0:
            # It went out before (it cannot with today's states, but never send blind):
            # what does the provider know of it?
            found = await self.lookup(charge)
            if isinstance(found, TopUpResult):
                async with self._db.write() as conn:
                    await self._repo(conn).transition(
                        charge.id, ChargeState.APPROVED, ChargeState.SUBMITTED,
                        self._clock.now(), next_attempt_at=self._clock.now() + self.retry.lease)
                return await self._settlement.apply(charge.id, found)
            if found is LOOKUP_FAILED:
                async with self._db.write() as conn:
                    await self._repo(conn).reschedule(
                        charge.id, ChargeState.APPROVED, self._clock.now(),
                        next_attempt_at=self._clock.now() + self.retry.delay(charge.attempts))
                return await self._get(charge.id)
        return await self.send(charge, ChargeState.APPROVED)

    async def send(self, charge: ChargeRecord, from_state: ChargeState) -> ChargeRecord | None:
        """Marks one more attempt (committed), then calls the provider."""
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            line = await self._line(conn, charge.line_id)
            if line is None or not self._owned(line, charge.user_id):
                return await self._settlement.fail_in(conn, charge, LINE_UNAVAILABLE, now)
            lease = {"next_attempt_at": now + self.retry.lease, "failure_reason": None}
            if from_state is ChargeState.APPROVED:
                moved = await repo.transition(charge.id, ChargeState.APPROVED,
                                              ChargeState.SUBMITTED, now, bump_attempts=True,
                                              **lease)
            else:
                moved = await repo.reschedule(charge.id, ChargeState.SUBMITTED, now,
                                              expected_attempts=charge.attempts,
                                              bump_attempts=True, **lease)
            if not moved:  # another worker or tap got there first
                return await repo.get(charge.id)
            await self._audit(conn, now, "system", "charge.submitted", charge,
                              attempt=charge.attempts + 1, reference=charge.reference)
            sent = present(await repo.get(charge.id), f"charge {charge.id} exists")
        await self._point("submitted", charge.id)
        try:
            result = await self._send_once(line, sent)
        except GatewayError as error:
            log.warning("Top-up %s (charge %s): %s; looking it up", sent.reference, sent.id,
                        type(error).__name__)
            return await self._after_unknown(sent, error)
        if result.reference != sent.reference:
            log.error("Provider answered charge %s with reference %s", sent.id, result.reference)
            return await self._after_unknown(sent, GatewayError("reference mismatch"))
        return await self._settlement.apply(sent.id, result)

    async def _send_once(self, line: LineRecord, sent: ChargeRecord) -> TopUpResult:
        """The one call that makes the top-up: to the eSIM provider for an eSIM line (a new
        eSIM while it has no ICCID, else a top-up of it), to the top-up provider else."""
        if line.is_esim:
            return await self._esim_charges().charge(
                reference=sent.reference, iccid=line.iccid, price=sent.amount,
                package_id=present(sent.product_id, f"eSIM charge {sent.id} has a package"))
        number = present(line.number, f"SIM line {line.id} has a number")
        return await self._provider.top_up(TopUpRequest(
            reference=sent.reference, phone_e164=number.e164, operator=line.operator,
            amount=sent.amount if sent.product_id is None else None,
            product_id=sent.product_id))

    def _esim_charges(self) -> EsimCharges:
        if self._esims is None:
            raise GatewayError("no eSIM provider is configured")
        return self._esims

    async def lookup(self, charge: ChargeRecord) -> Lookup:
        """What the provider that was sent the charge knows of its reference."""
        try:
            if await self._is_esim_line(charge.line_id):
                return await self._esim_charges().lookup(charge.reference)
            return await self._provider.lookup(charge.reference)
        except GatewayError as error:
            log.warning("Look-up of %s failed: %s", charge.reference, type(error).__name__)
            return LOOKUP_FAILED

    async def _is_esim_line(self, line_id: int) -> bool:
        # A line's kind never changes: read once per line and process.
        kind = self._line_kinds.get(line_id)
        if kind is None:
            async with self._db.read() as conn:
                line = await self._line(conn, line_id)
            kind = self._line_kinds[line_id] = bool(line is not None and line.is_esim)
        return kind

    async def _after_unknown(self, charge: ChargeRecord,
                             error: GatewayError) -> ChargeRecord | None:
        """The outcome is unknown: look it up; never send again from here."""
        if isinstance(error, TryLater):  # nothing was done: no look-up needed
            return await self.retry_later(charge, error.reason, lookup_failed=False,
                                           asked_to_wait=error.retry_after)
        found = await self.lookup(charge)
        if isinstance(found, TopUpResult):
            return await self._settlement.apply(charge.id, found)
        reason = ("timeout" if isinstance(error, GatewayTimeout)
                  else "duplicate_reference" if isinstance(error, DuplicateReference)
                  else "gateway_error")
        return await self.retry_later(charge, reason, lookup_failed=found is LOOKUP_FAILED)

    async def retry_later(self, charge: ChargeRecord, reason: str, *, lookup_failed: bool,
                           asked_to_wait: timedelta | None = None) -> ChargeRecord | None:
        """The charge is worked again later: after the back-off of its attempts, or after
        ``asked_to_wait`` when the provider did nothing and asked us to come back (the same
        number within two minutes at Reloadly). Within ``RetryPolicy.try_later_for`` of its
        creation such a refusal uses up no attempt, so the charge does not fail for it."""
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            current = await repo.get(charge.id, lock=True)
            if current is None or current.state is not ChargeState.SUBMITTED:
                return current
            attempts = current.attempts
            if asked_to_wait is not None:
                at = now + max(asked_to_wait, self.retry.first_delay)
                if attempts > 0 and now - current.created_at < self.retry.try_later_for:
                    attempts -= 1
            else:
                at = now + self.retry.delay(attempts)
            await repo.reschedule(current.id, ChargeState.SUBMITTED, now, next_attempt_at=at,
                                  failure_reason=reason[:64], attempts=attempts)
            await self._audit(conn, now, "system", "charge.retry_scheduled", current,
                              reason=reason, attempts=attempts, at=at.isoformat(),
                              lookup_failed=lookup_failed,
                              provider_asked_to_wait=asked_to_wait is not None)
            if lookup_failed and attempts >= self.retry.max_attempts:
                stuck = ChargeStuck(charge=await self._facts(conn, current),
                                    user_id=current.user_id, reference=current.reference)
                await self._tell_admins(conn, current, stuck, now, dedupe=f"stuck:{current.id}")
            return await repo.get(current.id)
