#!/usr/bin/env bash
# CI for the TypeScript client: installs from the npm registry (npm ci, the
# versions in package-lock.json), compiles with tsc and runs the tests
# (node --test) against real `switchyard serve` processes on loopback.
# Needs Node.js 20+ and npm; builds bin/switchyard with Go if it is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ ! -x "$root/bin/switchyard" ]; then
  echo "bin/switchyard is missing: building it"
  (cd "$root" && go build -o bin/switchyard ./cmd/switchyard)
fi
export SWITCHYARD_BIN="$root/bin/switchyard"

cd "$here"
echo "node $(node --version), npm $(npm --version)"
npm ci --no-audit --no-fund
npm run build
npm test
