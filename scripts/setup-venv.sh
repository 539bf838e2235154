#!/usr/bin/env bash
# Create .venv and install the project with its dev tools. Idempotent; fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "Python 3.11 or newer is required (found: $(python3 --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    # Debian ships venv separately.
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    rm -rf .venv && python3 -m venv .venv
  fi
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -vE '^WARNING: Location|^\s*$' || true
  .venv/bin/python -c 'import aio_pika, cryptography, pydantic, lxml, structlog, rfc8785, joserfc, hypothesis'
  rm -f .venv/.installed-* && touch "$stamp"
fi
