#!/usr/bin/env bash
# Runs the whole test suite (unit + integration with real Redis, workers, simulator, SDKs), and
# prints the 15 slowest steps. Arguments go to pytest: `bash scripts/test.sh -m unit` is the fast
# tier (no Redis, no database server, no process). Markers: pyproject.toml and the README.
# PostgreSQL tests use GENESIS_TEST_POSTGRES_URL (default: 127.0.0.1:5432, database test).
BOOTSTRAP_REDIS=0  # the fixtures start Redis on the test URL when a test needs it
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec python -m pytest -q --durations=15 "$@"
