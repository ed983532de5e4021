#!/usr/bin/env bash
# Smoke test of the real binary: serve on a free port with the web console
# (--ui) and check its page and script are served, attach with
# `switchyard listen`, submit with `switchyard send` and with curl, check
# both events arrived, stop the node with SIGTERM and check it exits 0.
set -euo pipefail
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

go build -o "$work/switchyard" ./cmd/switchyard
bin="$work/switchyard"
"$bin" version

# Port 0: the kernel picks a free port; the node logs the URL it serves.
"$bin" serve --listen 127.0.0.1:0 --gossip-bind 127.0.0.1:0 --ui --log-format json >"$work/serve.log" 2>&1 &
serve_pid=$!
url=""
for _ in $(seq 100); do
  url=$(grep -o '"url":"[^"]*"' "$work/serve.log" | head -n1 | cut -d'"' -f4 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "serve did not start"; cat "$work/serve.log"; exit 1; }
curl -fsS "$url/readyz"
# --ui: the console's page and script come from the binary.
# Each fetched whole before grep -q reads it: with pipefail, grep -q leaving
# at its first match can fail curl with "Failed writing body" (23).
page=$(curl -fsS "$url/ui")
grep -q '<title>Switchyard console</title>' <<<"$page"
script=$(curl -fsS "$url/ui/app.js")
grep -q 'observe' <<<"$script"

"$bin" listen --url "$url" --participant-id bob --session-id s1 --count 2 >"$work/bob.out" 2>"$work/bob.err" &
listen_pid=$!
# Wait until bob is attached (the directory shows him online).
for _ in $(seq 100); do
  curl -fsS "$url/v1/gateway/sessions/s1" 2>/dev/null | grep -q '"online":true' && break
  sleep 0.1
done

"$bin" send --url "$url" --sender-id alice --session-id s1 --message "from switchyard send"
curl -fsS -X POST "$url/v1/gateway/events" \
  -H "Content-Type: application/json" \
  -d '{"sender_id":"agent-α","sender_type":"ai","event_type":"message","message":"hand-off: customer needs billing","session_id":"s1"}'
echo

wait "$listen_pid"
cat "$work/bob.out"
grep -q '"seq":1,.*"message":"from switchyard send"' "$work/bob.out"
grep -q '"seq":2,.*"message":"hand-off: customer needs billing"' "$work/bob.out"

kill -TERM "$serve_pid"
set +e
wait "$serve_pid"
status=$?
set -e
if [ "$status" -ne 0 ]; then
  echo "serve exited $status after SIGTERM"; cat "$work/serve.log"; exit 1
fi
grep -q '"msg":"stopped"' "$work/serve.log"
echo "smoke test passed"
