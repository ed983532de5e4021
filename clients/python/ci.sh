#!/usr/bin/env bash
# Tests of the Python client (clients/python) against a real `switchyard
# serve`, on a fresh Debian machine: installs Python's websockets and pytest
# from Debian when missing (as root, or with sudo), builds bin/switchyard
# when missing (.ci/run has just built it with `make build`), and runs the
# tests with the system Python. Exits non-zero when a test fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=/usr/bin/python3
if ! "$PY" -c 'import websockets, pytest' 2>/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing python3-websockets python3-pytest (Debian packages)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-websockets python3-pytest >/dev/null
fi
"$PY" -c 'import sys, websockets, pytest; print("python", sys.version.split()[0], "websockets", websockets.__version__, "pytest", pytest.__version__)'

if [ -z "${SWITCHYARD_BIN:-}" ] && [ ! -x bin/switchyard ]; then
  echo "building bin/switchyard"
  go build -o bin/switchyard ./cmd/switchyard
fi

# No bytecode or pytest cache left in the checkout.
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=clients/python/src \
  "$PY" -m pytest -q -p no:cacheprovider clients/python/tests
