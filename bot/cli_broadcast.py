"""`topup-bot broadcast --to all|OPERATOR --text TEXT [--yes]` and `topup-bot broadcast
status ID`: an offer to the users who opted in to promotions, as the admins' /broadcast
sends it (bot/services/promotions.py). The argument parsing is in ``bot.__main__``; the
work is here.

Without ``--yes`` the audience and the text are shown and the operator is asked; anything
but "y" sends nothing. The report is not pushed anywhere (there is no chat):
``broadcast status`` tells it. The same offer run again (after a crash half-way, say) makes
no new broadcast: the one that sends it is queued on (what is queued is skipped), so
nobody gets it twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bot.domain.broadcasts import (
    AUDIENCE_WORDS,
    MAX_OFFER_CHARS,
    Broadcast,
    OfferTextError,
    UnknownAudience,
    check_offer_text,
    parse_audience,
)
from bot.domain.numbers import whole_number
from bot.domain.operators import Operator
from bot.services.promotions import (
    AlreadySent,
    BroadcastStatus,
    Confirmed,
    NobodyToTell,
)
from bot.wiring import Components


class BroadcastCliError(ValueError):
    """Bad input for a broadcast command: one line for the operator, exit status 2."""


class NotSent(Exception):
    """The operator did not confirm: nothing was sent (exit status 1)."""


@dataclass(frozen=True)
class Offer:
    operator: Operator | None
    text: str


def parse_offer(to: str | None, text: str | None) -> Offer:
    if to is None or text is None:
        raise BroadcastCliError("broadcast needs --to all|OPERATOR and --text TEXT (or: "
                                "broadcast status ID)")
    try:
        operator = parse_audience(to)
    except UnknownAudience:
        raise BroadcastCliError(f"--to {to[:40]!r} is not an audience: one of "
                                f"{', '.join(AUDIENCE_WORDS)}") from None
    try:
        return Offer(operator, check_offer_text(text))
    except OfferTextError as error:
        if error.reason is OfferTextError.Reason.EMPTY:
            raise BroadcastCliError("--text is empty: write the offer") from None
        raise BroadcastCliError(
            f"--text is {error.length} characters; an offer holds at most {MAX_OFFER_CHARS} "
            "(Telegram's 4096 less the line on how to stop offers)") from None


def audience_text(operator: Operator | None) -> str:
    if operator is None:
        return "every user who opted in"
    return f"users who opted in and have a {operator.display_name} line"


async def broadcast(components: Components, offer: Offer, *, yes: bool,
                    ask: Callable[[str], str] = input) -> str:
    """Queues the offer (after asking, unless ``yes``); the lines to print. NotSent when the
    operator does not confirm."""
    service = components.promotions
    if not yes:
        count = await service.count_audience(offer.operator)
        if count == 0:
            return _nobody(offer.operator)
        print(f"To {count} {_users(count)} ({audience_text(offer.operator)}), each after "
              "their quiet hours:")
        print("-" * 40)
        print(offer.text)
        print("-" * 40)
        print("(Each copy ends with a line on how to stop offers, in its reader's language.)")
        try:
            answer = ask("Send it? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            raise NotSent("not sent (answer y, or pass --yes)")
    previewed = await service.preview(offer.operator, offer.text, actor="cli", chat_id=None)
    if isinstance(previewed, NobodyToTell):
        return _nobody(offer.operator)
    if isinstance(previewed, AlreadySent):
        return await _resume(components, previewed.broadcast)
    broadcast_id = previewed.broadcast.id
    confirmed = await service.confirm(broadcast_id, actor="cli", chat_id=None)
    if isinstance(confirmed, AlreadySent):  # another one of this offer, confirmed meanwhile
        return await _resume(components, confirmed.broadcast)
    if not isinstance(confirmed, Confirmed):  # made just now: nobody else can answer it
        raise NotSent(f"broadcast #{broadcast_id} was not confirmed: {confirmed}")
    queued = await service.queue_offers(broadcast_id)
    return (f"Broadcast #{broadcast_id} queued: {queued} {_offers(queued)} to "
            f"{audience_text(offer.operator)}, paced and each after its reader's quiet "
            f"hours. `topup-bot broadcast status {broadcast_id}` tells how it goes.")


async def _resume(components: Components, earlier: Broadcast) -> str:
    """The offer is already broadcast: that broadcast is queued on (a run that died
    half-way), never a second one."""
    queued = await components.promotions.queue_offers(earlier.id)
    when = _when(components, earlier.confirmed_at or earlier.created_at)
    return (f"This offer is already broadcast #{earlier.id} (confirmed {when} by "
            f"{earlier.confirmed_by}, to {audience_text(earlier.operator)}): each user gets "
            f"it once, so no new broadcast was made. {queued} {_offers(queued)} queued. "
            f"`topup-bot broadcast status {earlier.id}` tells how it goes.")


def _nobody(operator: Operator | None) -> str:
    return f"Nobody would get it: there are no {audience_text(operator)}. Nothing was sent."


def _users(count: int) -> str:
    return "user" if count == 1 else "users"


def _offers(count: int) -> str:
    return "offer" if count == 1 else "offers"


def parse_broadcast_id(text: str) -> int:
    number = whole_number(text.strip().removeprefix("#"))
    if number is None:
        raise BroadcastCliError(f"{text[:40]!r} is not a broadcast number")
    return number


async def broadcast_status(components: Components, broadcast_id: int) -> str:
    status = await components.promotions.status(broadcast_id)
    if status is None:
        raise BroadcastCliError(f"there is no broadcast #{broadcast_id}")
    return format_status(status, lambda moment: _when(components, moment))


def _state(broadcast: Broadcast, status: BroadcastStatus,
           when: Callable[[datetime], str]) -> str:
    if broadcast.cancelled_at is not None:
        return f"cancelled {when(broadcast.cancelled_at)}, nothing sent"
    if broadcast.confirmed_at is None:
        return "previewed, not confirmed"
    if broadcast.finished_at is not None:
        return f"done, reported {when(broadcast.finished_at)}"
    if broadcast.queued is None:
        return "being queued"
    return "every message is final; the report follows shortly" if status.tally.final \
        else "sending"


def format_status(status: BroadcastStatus, when: Callable[[datetime], str]) -> str:
    broadcast, tally = status.broadcast, status.tally
    rows = [("Broadcast", f"#{broadcast.id} to {broadcast.audience_word} "
                          f"({audience_text(broadcast.operator)})"),
            ("Made", f"{when(broadcast.created_at)} by {broadcast.created_by} "
                     f"(audience then: {broadcast.audience})"),
            ("State", _state(broadcast, status, when))]
    if broadcast.confirmed_at is not None:
        rows += [("Confirmed", f"{when(broadcast.confirmed_at)} by {broadcast.confirmed_by}"),
                 ("Queued", str(tally.total)), ("Delivered", str(tally.delivered)),
                 ("Blocked", f"{tally.blocked} (blocked the bot)"),
                 ("Failed", str(tally.failed)),
                 ("Opted out", f"{tally.opted_out} (turned offers off before it arrived)"),
                 ("Pending", str(tally.pending))]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    lines += ["Text:", broadcast.text]
    return "\n".join(lines)


def _when(components: Components, moment: datetime) -> str:
    return moment.astimezone(components.settings.locale.zone).strftime("%Y-%m-%d %H:%M %Z")
