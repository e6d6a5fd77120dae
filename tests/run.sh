#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, starts a throwaway
# PostgreSQL when it can (its tests are skipped, saying so, when it cannot), lints,
# type-checks and runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

if [ -z "${TEST_POSTGRES_URL:-}" ] && [ "${TEST_POSTGRES:-auto}" != "off" ]; then
  # shellcheck source=tests/postgres.sh
  source tests/postgres.sh
  trap stop_postgres EXIT
  start_postgres || echo "No PostgreSQL server could be started: PostgreSQL tests will be skipped."
fi

echo "== ruff";  .venv/bin/ruff check .
echo "== mypy";  .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"
