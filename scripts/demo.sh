#!/usr/bin/env bash
# One command for a person: set up, then run the gateway on simulated hardware (no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/edge demo -c config/demo.yaml "$@"
