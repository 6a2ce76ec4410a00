#!/usr/bin/env bash
# One command for a person: set up, then run the gateway on simulated hardware. When Mosquitto is
# installed (setup.sh installs it), `edge demo` starts a private one on 127.0.0.1 to play the cloud
# (whitelist snapshot, signed remote open, events); with none, or with --no-broker, it runs offline.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/edge demo -c config/demo.yaml "$@"
