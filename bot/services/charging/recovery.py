"""Recovering: the repeating sweep that works due charges under a lease, and the look-up of
every open charge after a restart."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from bot.domain.charges import ChargeState
from bot.gateways.topup import TopUpResult, TopUpStatus
from bot.services.charging.asking import Asking
from bot.services.charging.common import Deps, Phase
from bot.services.charging.outcomes import LOOKUP_FAILED, ReconcileReport
from bot.services.charging.policy import NOT_ACCEPTED
from bot.services.charging.settlement import Settlement
from bot.services.charging.submission import Submission
from storage.charges import ChargeRecord

log = logging.getLogger(__name__)


class Recovery(Phase):
    def __init__(self, deps: Deps, asking: Asking, submission: Submission,
                 settlement: Settlement) -> None:
        super().__init__(deps)
        self._asking = asking
        self._submission = submission
        self._settlement = settlement

    async def _advance(self, charge: ChargeRecord) -> ChargeRecord | None:
        """Moves a due charge on (the caller holds its lease)."""
        if charge.state is ChargeState.APPROVED:
            return await self._submission.submit(charge.id)
        if charge.state is not ChargeState.SUBMITTED:
            return charge
        found = await self._submission.lookup(charge)
        if isinstance(found, TopUpResult):
            return await self._settlement.apply(charge.id, found)
        if found is LOOKUP_FAILED:
            return await self._submission.retry_later(
                charge, charge.failure_reason or "lookup_failed", lookup_failed=True)
        # The provider never saw this reference: sending it is not blind.
        if charge.attempts >= self.retry.max_attempts:
            return await self._settlement.fail(charge, NOT_ACCEPTED)
        return await self._submission.send(charge, ChargeState.SUBMITTED)

    async def warm_catalog(self) -> None:
        """Reads stale plans before work that looks them up inside a transaction (a sweep
        that creates rule charges in its own)."""
        await self._catalog.warm()

    async def process_due(self, now: datetime | None = None, limit: int = 100) -> int:
        """Submits approved charges, looks up pending and unknown ones, re-sends what the
        provider never saw (with back-off) and fails what ran out of attempts. Each charge is
        claimed with a lease first. Returns how many charges were worked on."""
        now = now or self._clock.now()
        await self._catalog.warm()
        async with self._db.read() as conn:
            due = await self._repo(conn).due_retries(now, limit)
        gate = asyncio.Semaphore(self._concurrency)

        async def work(charge: ChargeRecord) -> bool:
            async with gate:
                async with self._db.write() as conn:
                    claimed = await self._repo(conn).claim(charge.id, charge.state, now,
                                                           now + self.retry.lease)
                if not claimed:
                    return False
                try:
                    await self._advance(charge)
                except Exception:
                    # The lease runs out and the next sweep tries again.
                    log.exception("Charge %s could not be moved on", charge.id)
                    return False
                return True

        return sum(await asyncio.gather(*(work(charge) for charge in due)))

    async def sweep(self, now: datetime | None = None) -> tuple[int, int]:
        """What a repeating job runs: expire unanswered requests, then work due charges."""
        now = now or self._clock.now()
        return await self._asking.expire_due(now), await self.process_due(now)

    async def reconcile_on_start(self) -> ReconcileReport:
        """After a restart: every charge left submitted is looked up by its reference (never
        re-sent blind) and settled; approved charges whose submission never happened are
        submitted. A charge the provider never saw is re-sent only once its lease has run
        out (another worker may still be calling the provider for it)."""
        now = self._clock.now()
        looked_up = settled = pending = resent = left = submitted = 0
        errors: list[int] = []
        for state in (ChargeState.SUBMITTED, ChargeState.APPROVED):
            after: int | None = None
            while True:
                async with self._db.read() as conn:
                    batch = await self._repo(conn).by_state(state, 100, after_id=after)
                if not batch:
                    break
                after = batch[-1].id
                for charge in batch:
                    try:
                        if state is ChargeState.APPROVED:
                            await self._submission.submit(charge.id)
                            submitted += 1
                            continue
                        looked_up += 1
                        found = await self._submission.lookup(charge)
                        if isinstance(found, TopUpResult):
                            await self._settlement.apply(charge.id, found)
                            if found.status is TopUpStatus.PENDING:
                                pending += 1
                            else:
                                settled += 1
                            continue
                        due = charge.next_attempt_at is None or charge.next_attempt_at <= now
                        if found is LOOKUP_FAILED or not due:
                            left += 1
                            continue
                        async with self._db.write() as conn:
                            claimed = await self._repo(conn).claim(
                                charge.id, ChargeState.SUBMITTED, now, now + self.retry.lease)
                        if claimed:
                            await self._advance(charge)
                            resent += 1
                        else:
                            left += 1
                    except Exception:
                        log.exception("Charge %s could not be reconciled", charge.id)
                        errors.append(charge.id)
        report = ReconcileReport(looked_up=looked_up, settled=settled, pending=pending,
                                 resent_or_failed=resent, left_for_later=left,
                                 submitted=submitted, errors=errors)
        log.info("Charges reconciled: %s", report)
        return report
