#!/usr/bin/env bash
# The main job: a full exchange between Tajikistan and Russia on the local RabbitMQ.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
bash scripts/ensure-services.sh
exec .venv/bin/broker demo "$@"
