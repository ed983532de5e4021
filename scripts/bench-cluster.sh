#!/usr/bin/env bash
# Runs the cluster scenario of docs/BENCHMARKS.md ("A cluster of N
# sidecars") for each N given (default 10 50 100): N real `switchyard serve`
# processes on loopback, one JSON line per N on stdout, progress on stderr.
# Usage: scripts/bench-cluster.sh [N ...]
# Environment: PARTICIPANTS (10000), BIG_SESSIONS (1000), IDLE_WINDOW (10s),
# RESTART_NODES (0: all).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10 50 100)
work=$(mktemp -d)
trap 'pkill -f "$work/switchyard serve" 2>/dev/null || true; rm -rf "$work"' EXIT

go build -o "$work/switchyard" ./cmd/switchyard
go build -o "$work/switchyard-bench" ./cmd/switchyard-bench
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(go version | cut -d' ' -f3), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)" >&2
ulimit -n 65536 2>/dev/null || true

for n in "${sizes[@]}"; do
  echo "== cluster of $n nodes" >&2
  "$work/switchyard-bench" --json --scenario cluster --switchyard "$work/switchyard" --nodes "$n" \
    --participants "${PARTICIPANTS:-10000}" --big-agent-sessions "${BIG_SESSIONS:-1000}" \
    --idle-window "${IDLE_WINDOW:-10s}" --restart-nodes "${RESTART_NODES:-0}"
done
