#!/usr/bin/env bash
# The demo: moto on 127.0.0.1 seeded with three accounts of old, unused and fresh keys, and
# the exporter reading them through AssumeRole with config/demo.yaml. Ctrl-C stops both.
#   DEMO_PORT     exporter port (default 9871)
#   MOTO_PORT     moto port (default 5000)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DEMO_PORT="${DEMO_PORT:-9871}"
MOTO_PORT="${MOTO_PORT:-5000}"

bash scripts/setup-test-env.sh
cargo build --quiet

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

mkdir -p .demo
.venv/bin/python tests/moto/launcher.py --port "$MOTO_PORT" --seed-demo >.demo/moto.out 2>.demo/moto.log &
pids+=($!)
for _ in $(seq 50); do grep -q LISTENING .demo/moto.out 2>/dev/null && break; sleep 0.2; done
grep -q LISTENING .demo/moto.out || { echo "moto did not start; see .demo/moto.log" >&2; exit 1; }

# Pointed at moto the way any AWS SDK is pointed at another endpoint. moto accepts any
# credentials; these belong to its default account 123456789012.
AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" \
AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE \
AWS_SECRET_ACCESS_KEY=demo-secret \
AWS_REGION=us-east-1 \
AWS_EC2_METADATA_DISABLED=true \
    ./target/debug/iam-key-exporter --config.file config/demo.yaml \
    --web.listen-address "127.0.0.1:$DEMO_PORT" &
pids+=($!)

url="http://127.0.0.1:$DEMO_PORT"
for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/-/ready" || true)" = 200 ] && break
    sleep 0.2
done
echo
echo "iam-key-exporter demo is up:"
echo "  $url/          accounts and their state"
echo "  $url/metrics   metrics"
echo
echo "Active keys older than 90 days (what the IAMAccessKeyTooOld alert pages on):"
curl -s "$url/metrics" | awk '/^aws_iam_access_key_age_seconds/ && /status="Active"/ && $NF > 90*86400 {
    match($0, /account_name="[^"]*"/); account = substr($0, RSTART + 14, RLENGTH - 15)
    match($0, /user="[^"]*"/); user = substr($0, RSTART + 6, RLENGTH - 7)
    match($0, /access_key_id="[^"]*"/); key = substr($0, RSTART + 15, RLENGTH - 16)
    printf "  %-18s %-20s %-22s %4d days\n", account, user, key, $NF / 86400
}'
echo
echo "Ctrl-C stops the demo."
wait
