"""The daily reconciliation: our charges against the provider's transactions of one day.

A day is the bot's default zone's calendar day. The provider's transactions that day are
matched to our charges by our reference; each difference is printed and stored:

* ``unknown_to_us``: the provider made a top-up under a reference we have no charge for;
* ``status_mismatch``: it succeeded there and not here, or the other way round;
* ``amount_mismatch``: both succeeded, for different amounts;
* ``missing_at_provider``: it succeeded here that day, and the provider has no successful
  top-up under its reference on any day (it is looked up, so a top-up made just before
  midnight and settled here just after is not a difference).

Run again for the same day, it replaces that day's run. The top-up provider and the eSIM
provider are reconciled apart (each with its own charges: those of SIM lines, those of eSIM
lines), each its own run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from bot.clock import Clock
from bot.domain.charges import ChargeState
from bot.domain.lines import LineKind
from bot.gateways.topup import TopUpResult, TopUpStatus
from storage.charges import ChargeRecord, ChargesRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.reconciliation import Difference, ReconciliationRepository

log = logging.getLogger(__name__)

# Yesterday is reconciled after this local time (late top-ups have settled by then).
RECONCILE_AFTER = time(1, 0)


@dataclass(frozen=True)
class ReconciliationReport:
    backend: str
    day: date
    ours: int  # our charges that succeeded that day
    theirs: int  # the provider's transactions that day
    differences: list[Difference]


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of ``day`` in ``zone``, as aware datetimes."""
    start = datetime.combine(day, time(), zone)
    return start, datetime.combine(day + timedelta(days=1), time(), zone)


class Reconciled(Protocol):
    """A provider as reconciliation reads it: a top-up backend, or the eSIM charges."""

    async def transactions(self, start: datetime, end: datetime) -> list[TopUpResult]: ...

    async def lookup(self, reference: str) -> TopUpResult | None: ...


class ReconciliationService:
    def __init__(self, db: Database, cipher: FieldCipher, provider: Reconciled,
                 clock: Clock, *, backend: str, zone: ZoneInfo,
                 lines_of: LineKind = LineKind.SIM) -> None:
        self._db = db
        self._lines_of = lines_of  # whose charges this provider made
        self._cipher = cipher
        self._provider = provider
        self._clock = clock
        self._backend = backend
        self._zone = zone

    async def reconcile(self, day: date, *, actor: str = "cli") -> ReconciliationReport:
        """GatewayError when the provider cannot list the day (nothing is stored then)."""
        start, end = day_bounds(day, self._zone)
        theirs = await self._provider.transactions(start, end)
        async with self._db.read() as conn:
            repo = ChargesRepository(conn, self._cipher)
            ours = await repo.succeeded_between(start, end, line_kind=self._lines_of)
            matched = {t.reference: await repo.by_reference(t.reference) for t in theirs}
        found = [d for t in theirs if (d := _compare(t, matched[t.reference])) is not None]
        listed = {t.reference for t in theirs}  # compared above, whatever their status
        for charge in ours:
            if charge.reference in listed:
                continue
            elsewhere = await self._provider.lookup(charge.reference)
            if elsewhere is None or elsewhere.status is not TopUpStatus.SUCCEEDED:
                found.append(_difference("missing_at_provider", charge.reference, charge,
                                         elsewhere))
        async with self._db.write() as conn:
            await ReconciliationRepository(conn).replace(
                backend=self._backend, day=day.isoformat(), ours=len(ours),
                theirs=len(theirs), found=found, now=self._clock.now(), actor=actor)
        if found:
            log.warning("Reconciliation of %s for %s: %d differences", self._backend, day,
                        len(found))
        return ReconciliationReport(self._backend, day, len(ours), len(theirs), found)

    async def reconcile_yesterday_if_due(self) -> ReconciliationReport | None:
        """What the hourly job runs: yesterday (in the bot's zone) once it is past
        RECONCILE_AFTER, unless a run for it is stored already. The database, not the job
        queue, says whether it is done, so a late or skipped job loses nothing."""
        local = self._clock.now().astimezone(self._zone)
        if local.time() < RECONCILE_AFTER:
            return None
        day = local.date() - timedelta(days=1)
        async with self._db.read() as conn:
            done = await ReconciliationRepository(conn).run_for(self._backend, day.isoformat())
        if done is not None:
            return None
        return await self.reconcile(day, actor="system")


def _compare(theirs: TopUpResult, ours: ChargeRecord | None) -> Difference | None:
    if ours is None:
        return _difference("unknown_to_us", theirs.reference, None, theirs)
    succeeded_there = theirs.status is TopUpStatus.SUCCEEDED
    succeeded_here = ours.state is ChargeState.SUCCEEDED
    if theirs.status is TopUpStatus.PENDING:
        return None  # still settling there: the look-up path settles it here
    if succeeded_there != succeeded_here:
        return _difference("status_mismatch", theirs.reference, ours, theirs)
    if succeeded_here and theirs.amount != ours.amount:
        return _difference("amount_mismatch", theirs.reference, ours, theirs)
    return None


def _difference(kind: str, reference: str, ours: ChargeRecord | None,
                theirs: TopUpResult | None) -> Difference:
    currency = (ours.amount.currency if ours is not None
                else theirs.amount.currency if theirs is not None else None)
    return Difference(
        kind=kind, reference=reference[:150], charge_id=ours.id if ours else None,
        our_state=ours.state.value if ours else None,
        their_status=theirs.status.value if theirs else None,
        our_amount_minor=ours.amount.minor if ours else None,
        their_amount_minor=theirs.amount.minor if theirs else None, currency=currency)
