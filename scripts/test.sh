#!/usr/bin/env bash
# Runs the whole test suite (unit + integration with real Redis, workers, simulator, SDKs).
# PostgreSQL tests use GENESIS_TEST_POSTGRES_URL (default: 127.0.0.1:5432, database test).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec python -m pytest -q "$@"
