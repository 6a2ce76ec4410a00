#!/usr/bin/env bash
# Set up a development / demo environment from a clean clone: Debian packages (when missing),
# a virtualenv in .venv and the project with its dev extras. Idempotent; quick when done before.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v socat >/dev/null 2>&1 || need_pkgs+=(socat)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_pkgs+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_pkgs+=(mosquitto-clients)
ldconfig -p 2>/dev/null | grep -q libzbar.so || need_pkgs+=(libzbar0)
ldconfig -p 2>/dev/null | grep -q libusb-1.0.so || need_pkgs+=(libusb-1.0-0)  # USB NFC readers (nfcpy)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# the ejyy bridge's tests use a real MariaDB: the one on 127.0.0.1:3306 when it answers, else one they start
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server mariadb-client)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # Debian starts its own broker on 1883 after install; the tests and demo start their own on free ports.
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "setup: Python >= 3.11 is required ($PY is $("$PY" --version 2>&1))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.setup-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
