"""Invariants that guard money and data hold under ``python -O`` too: they raise a named
error (and roll the transaction back), they are not ``assert`` statements."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.invariants import InvariantError, holds, present
from bot.services.charging import Requested
from storage.crypto import FieldCipher
from storage.db import Database
from storage.wallet import WalletRepository
from tests.unit.charging_world import ALICE, make_world, usd

ROOT = Path(__file__).resolve().parents[2]
# Code where a broken rule would move money or write data: no assert at all.
GUARDED = ("bot/services", "bot/domain", "bot/gateways", "storage")
# Asserts that only narrow a type for mypy, where the code above them makes None impossible.
NARROWING_ONLY = {
    ("storage/db.py", "assert driver is not None"),
    ("bot/services/wallet.py", "assert invoice is not None"),
    ("bot/services/charging/asking.py", "assert amount is not None"),
}


def _asserts(relative: str) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted((ROOT / relative).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assert):
                found.append((str(path.relative_to(ROOT)), node.lineno,
                              "assert " + ast.unparse(node.test)))
    return found


def _narrows_a_type(test: ast.expr) -> bool:
    """``x is not None`` (joined by ``and``) or ``isinstance(...)``: what mypy narrows."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return all(_narrows_a_type(value) for value in test.values)
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        return isinstance(test.ops[0], ast.IsNot) and isinstance(test.comparators[0],
                                                                  ast.Constant) \
            and test.comparators[0].value is None
    return (isinstance(test, ast.Call) and isinstance(test.func, ast.Name)
            and test.func.id == "isinstance")


def test_services_domain_gateways_and_storage_check_invariants_without_assert() -> None:
    offending = [(path, line, text) for relative in GUARDED
                 for path, line, text in _asserts(relative)
                 if (path, text) not in NARROWING_ONLY]
    assert offending == []


def test_handlers_assert_only_to_narrow_types() -> None:
    offending = []
    for path in sorted((ROOT / "handlers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assert) and not _narrows_a_type(node.test):
                offending.append((path.name, node.lineno, ast.unparse(node.test)))
    assert offending == []


def test_the_checks_raise_a_named_error() -> None:
    holds(True, "fine")
    assert present(0, "zero is a value") == 0
    with pytest.raises(InvariantError, match="charge 7 was held once"):
        holds(False, "charge 7 was held once")
    with pytest.raises(InvariantError, match="charge 7 exists"):
        present(None, "charge 7 exists")


def test_the_checks_still_raise_under_python_dash_o() -> None:
    script = ("from bot.domain.invariants import InvariantError, holds\n"
              "assert False, 'asserts are on'\n"
              "try:\n    holds(False, 'x')\nexcept InvariantError:\n    print('raised')\n")
    result = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True,
                            text=True, cwd=ROOT, check=True, timeout=60)
    assert result.stdout.strip() == "raised"


async def test_an_approval_whose_hold_fails_raises_and_changes_nothing(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The hold is made under the charge's row lock, so it cannot fail; if it ever does,
    the approval must not go on (under -O an assert would have let it)."""
    world = await make_world(db, cipher, clock)
    await world.fund(ALICE, 2000)
    requested = await world.service().request_manual(ALICE, world.lines[ALICE], usd(500),
                                                     None, "n")
    assert isinstance(requested, Requested)

    async def hold_that_fails(self: WalletRepository, **_: object) -> bool:
        return False

    monkeypatch.setattr(WalletRepository, "hold", hold_that_fails)
    with pytest.raises(InvariantError, match="held and approved once"):
        await world.service().approve(ALICE, requested.charge.id)

    charge = await world.charge(requested.charge.id)
    assert charge.state is ChargeState.AWAITING_APPROVAL
    assert await world.available(ALICE) == usd(2000)
    assert world.provider.sent == []
