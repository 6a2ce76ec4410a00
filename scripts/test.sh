#!/usr/bin/env bash
# One command for a developer or CI: set up, lint, then run every test against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
