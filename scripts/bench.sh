#!/usr/bin/env bash
# Runs the load scenarios of docs/BENCHMARKS.md against freshly started nodes
# on loopback and prints one JSON line per scenario (and a table on stderr).
# Usage: scripts/bench.sh [duration]   (default 10s)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10s}
work=$(mktemp -d)
trap 'pkill -f "$work/switchyard serve" 2>/dev/null || true; pkill -f "$work/switchyard-bench --floor-listen" 2>/dev/null || true; rm -rf "$work"' EXIT

go build -o "$work/switchyard" ./cmd/switchyard
go build -o "$work/switchyard-bench" ./cmd/switchyard-bench
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(go version | cut -d' ' -f3)" >&2

# node_args: extra serve flags for the nodes of the next runs; node_env:
# their environment (GOMAXPROCS=1 for the sidecar runs).
node_args=()
node_env=()

# start_node PORT [JOIN_GOSSIP_PORT]: a node on 127.0.0.1:PORT, gossip on PORT+1000.
start_node() {
  local port=$1 join=${2:-}
  local args=(serve --listen "127.0.0.1:$port" --gossip-bind "127.0.0.1:$((port + 1000))"
    --rate-limit -1 --max-connections 200000 --log-level warn "${node_args[@]}")
  [ -n "$join" ] && args+=(--join "127.0.0.1:$join")
  env "${node_env[@]}" "$work/switchyard" "${args[@]}" >>"$work/node-$port.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "$pid"
}

# label NAME: prefix each JSON line with the run's name and node flags.
label() { local args="${node_env[*]} ${node_args[*]}"; args=${args% }; sed "s|^{|{\"run\":\"$1\",\"node_args\":\"${args# }\",|"; }

run() { # run NAME ARGS...: one scenario on a fresh node
  local name=$1; shift
  local pid; pid=$(start_node 18787)
  echo "== $name ${node_args[*]}" >&2
  "$work/switchyard-bench" --json --url http://127.0.0.1:18787 --pid "$pid" --duration "$dur" "$@" | label "$name"
  stop_node "$pid"
}

run_cross() { # run_cross NAME ARGS...: submits to node A, subscribers on node B
  local name=$1; shift
  local a b; a=$(start_node 18787); b=$(start_node 18788 19787)
  for _ in $(seq 100); do
    curl -fsS http://127.0.0.1:18787/v1/gateway/members | grep -q 127.0.0.1:18788 && break; sleep 0.1
  done
  echo "== $name ${node_args[*]}" >&2
  "$work/switchyard-bench" --json --scenario cross-node --url http://127.0.0.1:18787 --sub-url http://127.0.0.1:18788 \
    --pid "$a,$b" --duration "$dur" "$@" | label "$name"
  stop_node "$a" "$b"
}

run_floor() { # run_floor NAME ARGS...: the same load against the floor server (switchyard-bench --floor-listen)
  local name=$1; shift
  env "${node_env[@]}" "$work/switchyard-bench" --floor-listen 127.0.0.1:18790 >>"$work/floor.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -fsS http://127.0.0.1:18790/readyz >/dev/null 2>&1 && break; sleep 0.1; done
  echo "== $name (floor server) ${node_env[*]}" >&2
  "$work/switchyard-bench" --json --url http://127.0.0.1:18790 --pid "$pid" --duration "$dur" "$@" | label "$name"
  stop_node "$pid"
}

stop_node() { # the nodes are not children of this shell: poll until gone
  kill -TERM "$@" 2>/dev/null || true
  for p in "$@"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
}

for window in 0 2ms; do
  node_args=(--coalesce-window "$window")
  run fanout-batch       --scenario fanout --subscribers 1000 --batch --concurrency 64
  run fanout-nobatch     --scenario fanout --subscribers 1000 --concurrency 64
  run fanout-100-per-s   --scenario fanout --subscribers 1000 --batch --rate 100
  run_cross cross-node-batch       --subscribers 1000 --batch --concurrency 64
  run_cross cross-node-100-per-s   --subscribers 1000 --batch --rate 100
done
node_args=()
run pairs              --scenario pairs --pairs 1000 --concurrency 32
# Few submits in flight: the latency without the queueing of 32.
run pairs-4-in-flight  --scenario pairs --pairs 1000 --concurrency 4
run idle-10k           --scenario idle --connections 10000
# The agent's sidecar: one attached participant, GOMAXPROCS=1 as injected.
node_env=(GOMAXPROCS=1)
run sidecar-1-agent-1000-per-s       --scenario fanout --subscribers 1 --rate 1000 --concurrency 4
run_floor sidecar-1-agent-1000-per-s-floor --scenario fanout --subscribers 1 --rate 1000 --concurrency 4
node_env=()
run_floor pairs-floor              --scenario pairs --pairs 1000 --concurrency 32
run_floor pairs-4-in-flight-floor  --scenario pairs --pairs 1000 --concurrency 4
run_floor fanout-100-per-s-floor   --scenario fanout --subscribers 1000 --batch --rate 100
