"""`topup-bot charges [STATE]`: the charges an operator should see, one line each."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from bot.domain.charges import ChargeState
from storage.charges import ChargeRecord

if TYPE_CHECKING:
    from bot.wiring import Components

STATES = tuple(state.value for state in ChargeState)
_COLUMNS = ("ID", "STATE", "USER", "LINE", "CAUSE", "AMOUNT", "TRIES", "NEXT (UTC)",
            "REASON", "REFERENCE", "CREATED (UTC)")


class UnknownState(ValueError):
    def __init__(self, state: str) -> None:
        super().__init__(f"unknown charge state {state!r}; one of: {', '.join(STATES)}")


def parse_state(state: str | None) -> ChargeState | None:
    if state is None:
        return None
    try:
        return ChargeState(state.strip().lower())
    except ValueError:
        raise UnknownState(state) from None


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def _row(charge: ChargeRecord) -> tuple[str, ...]:
    return (str(charge.id), charge.state.value, str(charge.user_id), str(charge.line_id),
            charge.cause, charge.amount.plain(), str(charge.attempts),
            _when(charge.next_attempt_at), charge.failure_reason or "-", charge.reference,
            _when(charge.created_at))


def format_charges(charges: list[ChargeRecord], state: ChargeState | None) -> str:
    what = f"{state.value} charges" if state is not None else "charges"
    if not charges:
        return f"No {what}."
    rows = [_COLUMNS, *(_row(charge) for charge in charges)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in rows]
    lines.append(f"{len(charges)} {what}, newest first.")
    return "\n".join(lines)


async def list_charges(components: Components, state: str | None, limit: int = 50) -> str:
    """The newest ``limit`` charges in ``state`` (every state when None) as a table.
    Raises UnknownState (a ValueError) for a state that does not exist."""
    wanted = parse_state(state)
    return format_charges(await components.charging.list_by_state(wanted, limit), wanted)
