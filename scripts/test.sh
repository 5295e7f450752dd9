#!/usr/bin/env bash
# Runs every check from a fresh machine: makes a virtualenv, installs rlm the way users do
# (`pip install .`, so the tests exercise the wheel as shipped), then ruff and pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k limits -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${RLM_TEST_VENV:-.venv-test}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet ".[test]"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
exec "$venv/bin/python" -m pytest "$@"
