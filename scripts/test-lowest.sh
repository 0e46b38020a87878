#!/usr/bin/env bash
# The honest check of pyproject.toml's lower bounds: a separate venv (.venv-lowest) with every
# direct dependency pinned to its lowest allowed version, then the unit tests and an end-to-end
# pipeline run (real workers, simulator, SDKs) and the publishing tests on it. Arguments replace
# the default pytest ones (and then no pins are recorded).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV=.venv-lowest
pins="$("$PYTHON" scripts/requirements-from-pyproject.py --lowest pyproject.toml test)"
stamp="$VENV/.installed-$(echo "$pins" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  echo "$pins" > "$VENV/lowest.txt"
  "$VENV/bin/python" -m pip install -q -r "$VENV/lowest.txt"
  "$VENV/bin/python" -m pip install -q --no-deps -e .
  touch "$stamp"
fi
echo "lowest allowed versions installed:"
"$VENV/bin/python" -m pip freeze | tr '_' '-' | grep -iE "^($(echo "$pins" | sed -E 's/\[.*\]//; s/==.*//' | tr '_' '-' | paste -sd'|'))==" | sed 's/^/  /'
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if [ "$#" -gt 0 ]; then
  exec python -m pytest -q "$@"
fi
# Everything but worker processes, Chromium and network namespaces (unit, Redis-level, simulator
# and SDK tests); the test fixtures start redis-server when nothing answers.
python -m pytest -q -m "not workers and not browser and not netns" --ignore=tests/test_floors.py  # (that one checks this run was made)
python -m pytest -q "tests/test_pipeline.py::test_all_agents_run_completes_with_a_report_consistent_with_sql" \
  tests/test_completion.py tests/test_messaging.py
# What passed, committed beside this script: tests/test_floors.py fails when pyproject.toml's
# floors differ from it, i.e. when a floor changed and this run was not made again.
echo "$pins" > scripts/lowest-tested.txt
echo "lowest bounds passed; pins written to scripts/lowest-tested.txt"
