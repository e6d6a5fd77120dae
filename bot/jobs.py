"""Repeating JobQueue jobs: pollers that work what the database says is due.

APScheduler keeps jobs in memory and skips a run that is late, so nothing here *is* the
schedule: each run asks the database what is due (charges to submit, look up or expire;
messages to send) and works it under a lease. A run that is skipped or dies loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from telegram.ext import ContextTypes, JobQueue

from bot.gateways.topup import GatewayError
from bot.services.charging import ChargingService
from bot.services.history import HistoryService
from bot.services.khqr import KhqrService
from bot.services.notifications import NotificationDispatcher
from bot.services.otp import OtpService
from bot.services.promotions import PromotionsService
from bot.services.provider_float import ProviderFloatService
from bot.services.reconciliation import ReconciliationService
from bot.services.scheduler import SchedulerService

log = logging.getLogger(__name__)

DISPATCH_INTERVAL_SECONDS = 1.0
FLOAT_CHECK_SECONDS = 15 * 60
RECONCILE_CHECK_SECONDS = 60 * 60
MONTHLY_SUMMARY_SECONDS = 15 * 60  # due from 09:00 local on the 1st: at most 15 min late
BROADCAST_REPORT_SECONDS = 60  # a broadcast's report at most a minute after its last copy
OTP_PURGE_SECONDS = 15 * 60  # a code's row outlives its last use by at most this much
# A late run still runs (never skipped), runs that piled up run once, and a second run may
# start while a long drain goes on (the dispatcher returns at once then), so APScheduler
# never logs "maximum number of running instances reached".
_POLLER: dict[str, Any] = {"misfire_grace_time": None, "coalesce": True, "max_instances": 2}


def schedule_pollers(job_queue: JobQueue[Any], charging: ChargingService,
                     dispatcher: NotificationDispatcher, scheduler: SchedulerService, *,
                     sweep_seconds: float) -> None:
    async def dispatch(_context: ContextTypes.DEFAULT_TYPE) -> None:
        report = await dispatcher.run()
        if report.handled:
            log.debug("Notifications: %s", report)

    async def sweep_charges(_context: ContextTypes.DEFAULT_TYPE) -> None:
        expired, worked = await charging.sweep()
        if expired or worked:
            log.info("Charges: %d approval requests expired, %d charges moved on",
                     expired, worked)

    async def sweep_lines(_context: ContextTypes.DEFAULT_TYPE) -> None:
        report = await scheduler.check_lines()
        if report.processed:
            log.info("Line checks: %d lines, %d warnings, %d charges, failures %s",
                     report.processed, report.warnings, report.charges,
                     dict(report.failures) or "none")

    async def sweep_rules(_context: ContextTypes.DEFAULT_TYPE) -> None:
        runs = await scheduler.run_calendar()
        reminders = await scheduler.send_reminders()
        if runs.processed or reminders.processed:
            log.info("Calendar rules: %d runs (%d charges), %d reminders", runs.processed,
                     runs.charges, reminders.processed)

    _every(job_queue, sweep_lines, sweep_seconds, "line_checks")
    _every(job_queue, sweep_rules, sweep_seconds, "calendar_rules")
    _every(job_queue, dispatch, DISPATCH_INTERVAL_SECONDS, "notifications")
    _every(job_queue, sweep_charges, sweep_seconds, "charges")


def schedule_provider_jobs(job_queue: JobQueue[Any], float_check: ProviderFloatService | None,
                           reconciliations: Sequence[ReconciliationService]) -> None:
    """Our float at the provider every 15 minutes (real providers only), and yesterday's
    reconciliation of each provider once a day (asked every hour: the database says whether
    it is done)."""
    async def check_float(_context: ContextTypes.DEFAULT_TYPE) -> None:
        assert float_check is not None  # narrowing: only scheduled with one
        try:
            await float_check.check()
        except GatewayError as error:
            log.warning("Provider float not read: %s", error)

    async def reconcile(_context: ContextTypes.DEFAULT_TYPE) -> None:
        for reconciliation in reconciliations:
            try:
                report = await reconciliation.reconcile_yesterday_if_due()
            except GatewayError as error:
                log.warning("Reconciliation not run: %s", error)
                continue
            if report is not None:
                log.info("Reconciled %s for %s: ours %d, theirs %d, %d differences",
                         report.backend, report.day, report.ours, report.theirs,
                         len(report.differences))

    if float_check is not None:
        _every(job_queue, check_float, FLOAT_CHECK_SECONDS, "provider_float")
    _every(job_queue, reconcile, RECONCILE_CHECK_SECONDS, "reconciliation")


def schedule_khqr_polling(job_queue: JobQueue[Any], khqr: KhqrService, *,
                          seconds: float) -> None:
    """Open KHQRs checked with Bakong every ``seconds`` (each QR as often as its age says)."""
    async def poll(_context: ContextTypes.DEFAULT_TYPE) -> None:
        report = await khqr.poll()
        if report.paid or report.expired or report.failures:
            log.info("KHQR: %d checked in %d calls, %d paid, %d expired, failures %s",
                     report.checked, report.calls, report.paid, report.expired,
                     report.failures or "none")

    _every(job_queue, poll, seconds, "khqr_payments")


def schedule_monthly_summaries(job_queue: JobQueue[Any], history: HistoryService) -> None:
    """Last month's summary for those who asked, on their 1st (the outbox key makes it one
    per user and month; outside the first days of a month the job reads nothing)."""
    async def push(_context: ContextTypes.DEFAULT_TYPE) -> None:
        queued = await history.queue_monthly_summaries()
        if queued:
            log.info("Monthly summaries: %d queued", queued)

    _every(job_queue, push, MONTHLY_SUMMARY_SECONDS, "monthly_summaries")


def schedule_broadcast_reports(job_queue: JobQueue[Any], promotions: PromotionsService) -> None:
    """Each broadcast whose copies are all final is reported to the admin chat that
    confirmed it (the database says which are; a broadcast a dead process left half-queued
    is queued on)."""
    async def advance(_context: ContextTypes.DEFAULT_TYPE) -> None:
        finished = await promotions.advance()
        if finished:
            log.info("Broadcasts: %d finished and reported", finished)

    _every(job_queue, advance, BROADCAST_REPORT_SECONDS, "broadcast_reports")


def schedule_code_purge(job_queue: JobQueue[Any], otp: OtpService) -> None:
    """SMS codes that decide nothing any more (out of the hourly cap's window, expired, no
    lockout running) are deleted: each row keeps its number's blind index."""
    async def purge(_context: ContextTypes.DEFAULT_TYPE) -> None:
        purged = await otp.purge()
        if purged:
            log.info("SMS codes: %d purged", purged)

    _every(job_queue, purge, OTP_PURGE_SECONDS, "otp_purge")


def _every(job_queue: JobQueue[Any], callback: Any, seconds: float, name: str) -> None:
    """Runs ``callback`` once as soon as the job queue starts, then every ``seconds``.

    Not ``run_repeating(first=0)``: APScheduler counts an interval from when the job was
    added, so when the queue starts later (after start-up) the first run due "now" is
    pushed a whole interval ahead (an hour, with an hourly sweep). A one-off run keeps its
    date however late the queue starts.
    """
    job_queue.run_once(callback, when=0, name=f"{name} (at start)", job_kwargs=_POLLER)
    job_queue.run_repeating(callback, interval=seconds, first=seconds, name=name,
                            job_kwargs=_POLLER)
