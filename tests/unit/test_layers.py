"""The layers import downwards only: handlers talk to services (and the pure domain), never
to storage or to a provider's gateway; the domain imports nothing of the bot's outside it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package directory -> modules it must not import (prefixes)
FORBIDDEN = {
    "handlers": ("storage", "bot.gateways"),
    "bot/domain": ("storage", "bot.gateways", "bot.services", "handlers", "telegram"),
    "bot/services": ("handlers", "telegram"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _crossings(package: str) -> list[str]:
    banned = FORBIDDEN[package]
    return [f"{path.relative_to(ROOT)}:{line}: {module}"
            for path in sorted((ROOT / package).rglob("*.py"))
            for line, module in _imports(path)
            if any(module == prefix or module.startswith(prefix + ".") for prefix in banned)]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_only_the_layers_below_it(package: str) -> None:
    assert _crossings(package) == []


def test_the_check_finds_a_crossing(tmp_path: Path) -> None:
    module = tmp_path / "handler.py"
    module.write_text("from storage.charges import ChargeRecord\nimport bot.gateways.topup\n",
                      encoding="utf-8")
    assert [name for _, name in _imports(module)] == ["storage.charges", "bot.gateways.topup"]
