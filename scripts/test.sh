#!/usr/bin/env bash
# The project's one test command: set up, then lint, type-check and run every test against the real
# RabbitMQ and PostgreSQL on localhost.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
bash scripts/ensure-services.sh
export AUDIT_PG_DSN="${AUDIT_PG_DSN:-postgresql://postgres:postgres@127.0.0.1:5432/test}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
