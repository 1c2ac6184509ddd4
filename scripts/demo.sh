#!/usr/bin/env bash
# The demo (`make demo`): moto seeded with three accounts of old, unused and fresh keys (one
# of them with a root access key), the exporter reading them with config/demo.yaml, Debian's
# Prometheus with the shipped alert rules (every `for:` shortened, so alerts fire in about a
# minute instead of an hour), and Alertmanager. Ctrl-C stops everything (exit 0).
#
#   MOTO_PORT          moto                (default 5000)
#   EXPORTER_PORT      the exporter        (default 9871; DEMO_PORT is the old name)
#   PROMETHEUS_PORT    Prometheus          (default 9090)
#   ALERTMANAGER_PORT  Alertmanager        (default 9093)
#   DEMO_FOR           the `for:` of every rule in the demo's copy of the rules (default 30s)
#   DEMO_DIR           logs, configuration, data and the pids of the children (default .demo)
#   IKE_BIN            an exporter binary to run instead of building one with cargo
#
# Everything listens on 127.0.0.1 only. Installs only what the demo needs (the moto
# virtualenv, Debian's prometheus + prometheus-alertmanager): scripts/setup-test-env.sh --demo.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

MOTO_PORT="${MOTO_PORT:-5000}"
EXPORTER_PORT="${EXPORTER_PORT:-${DEMO_PORT:-9871}}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-9093}"
DEMO_FOR="${DEMO_FOR:-30s}"
DEMO_DIR="${DEMO_DIR:-$REPO/.demo}"
SCRAPE_INTERVAL=5s
SHIPPED_RULES=deploy/prometheus/iam-key-exporter.rules.yml
# The alerts the seeded data makes fire (IAMUserMultipleActiveKeys fires too).
EXPECTED=(IAMAccessKeyTooOld IAMAccessKeyUnused IAMRootAccessKeyPresent)

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- ports, before anything is installed, built or started --------------------------
PORT_VARS=(MOTO_PORT EXPORTER_PORT PROMETHEUS_PORT ALERTMANAGER_PORT)
declare -A PORT_WHAT=([MOTO_PORT]=moto [EXPORTER_PORT]="the exporter"
                      [PROMETHEUS_PORT]=Prometheus [ALERTMANAGER_PORT]=Alertmanager)
seen=" "
for var in "${PORT_VARS[@]}"; do
    port="${!var}"
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] ||
        die "$var=$port is not a port number (1-65535)"
    [[ "$seen" == *" $port "* ]] && die "$var=$port: that port is given twice; give each server its own"
    seen+="$port "
done
[[ "$DEMO_FOR" =~ ^[0-9]+(ms|s|m|h)$ ]] || die "DEMO_FOR=$DEMO_FOR is not a duration like 30s or 2m"

# Busy = a server could not bind 127.0.0.1:PORT now (something listens there, or on every
# interface). Prints "VAR PORT" for each busy one.
busy_ports() {
    python3 - "$@" <<'PYEOF'
import socket, sys
args = sys.argv[1:]
for var, port in zip(args[::2], args[1::2]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
    try:
        s.bind(("127.0.0.1", int(port)))
    except OSError:
        print(var, port)
    finally:
        s.close()
PYEOF
}

free_port_near() {  # a free port to suggest instead of $1: $1+10000, $1+10001, ...
    local p
    for ((p = $1 + 10000; p < 65536 && p < $1 + 10100; p++)); do
        [[ " $seen " == *" $p "* ]] && continue
        [ -z "$(busy_ports X "$p")" ] && { echo "$p"; return; }
    done
    echo "<another port>"
}

check_ports() {
    local args=() var port busy
    command -v python3 >/dev/null 2>&1 || die "python3 is missing: install it (apt-get install python3)"
    for var in "${PORT_VARS[@]}"; do args+=("$var" "${!var}"); done
    busy="$(busy_ports "${args[@]}")"
    [ -z "$busy" ] && return 0
    while read -r var port; do
        holder=""
        if command -v ss >/dev/null 2>&1; then
            holder="$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -1 |
                sed -E 's/users:\(\("([^"]*)",pid=([0-9]+).*/ by \1 (pid \2)/')" || true
        fi
        printf 'demo: port %s (%s, %s) is already in use%s.\n' "$port" "${PORT_WHAT[$var]}" "$var" "$holder" >&2
        printf '      Stop what listens there, or choose another port: %s=%s make demo\n' "$var" "$(free_port_near "$port")" >&2
    done <<<"$busy"
    exit 1
}
check_ports

# --- one demo per state directory ---------------------------------------------------
mkdir -p "$DEMO_DIR"
DEMO_DIR="$(cd "$DEMO_DIR" && pwd)"
exec 9>"$DEMO_DIR/lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    die "another demo is running with $DEMO_DIR (pids in $DEMO_DIR/pids): stop it first, or set DEMO_DIR"
fi

# --- what the demo needs, and the exporter ---------------------------------------------
bash scripts/setup-test-env.sh --demo
PY="$REPO/.venv/bin/python"
for tool in prometheus prometheus-alertmanager promtool amtool curl; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool is missing: run this as root once, or apt-get install prometheus prometheus-alertmanager curl"
done

if [ -n "${IKE_BIN:-}" ]; then
    BIN="$(cd "$(dirname "$IKE_BIN")" && pwd)/$(basename "$IKE_BIN")"
    [ -x "$BIN" ] || die "IKE_BIN=$IKE_BIN is not an executable"
    say "using IKE_BIN=$BIN (not building)"
else
    command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust (https://rustup.rs), or set IKE_BIN to a built binary"
    BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/iam-key-exporter"
    if [ -x "$BIN" ]; then
        say "building the exporter (cargo build; a rebuild takes seconds to a minute)"
    else
        say "building the exporter (cargo build). The first build compiles about 220 crates, the"
        say "AWS SDK for Rust among them: about 8 minutes on 2 cores. Later runs take seconds."
    fi
    build_start=$SECONDS
    cargo build --bin iam-key-exporter
    say "built in $((SECONDS - build_start))s: $BIN"
fi

# The build may have taken minutes: look again before starting anything.
check_ports

# --- state ----------------------------------------------------------------------------
rm -rf "$DEMO_DIR/prometheus-data" "$DEMO_DIR/alertmanager-data"  # every demo starts afresh
rm -f "$DEMO_DIR"/*.log "$DEMO_DIR/pids"
echo $$ >"$DEMO_DIR/demo.pid"
[ -p "$DEMO_DIR/tick" ] || { rm -f "$DEMO_DIR/tick"; mkfifo "$DEMO_DIR/tick"; }
exec 8<>"$DEMO_DIR/tick"  # `read -t N -u 8` waits N seconds without a child process
pause() { read -r -t "$1" -u 8 _ || true; }

# The shipped rules with every `for:` set to DEMO_FOR; the rest must be the shipped file
# exactly (checked: both files parsed are equal once `for` is removed), so it never drifts.
DEMO_RULES="$DEMO_DIR/iam-key-exporter.rules.yml"
rules_summary="$("$PY" - "$SHIPPED_RULES" "$DEMO_RULES" "$DEMO_FOR" <<'PYEOF'
import sys
import yaml
shipped_path, demo_path, new_for = sys.argv[1:]
text = open(shipped_path).read()
out, changed = [], 0
for line in text.split("\n"):
    body = line.lstrip()
    if body.startswith("for:"):
        out.append(line[: len(line) - len(body)] + "for: " + new_for)
        changed += 1
    else:
        out.append(line)
demo = "\n".join(out)

def without_for(t):
    doc, fors = yaml.safe_load(t), []
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                fors.append(rule.pop("for"))
    return doc, fors

shipped, shipped_fors = without_for(text)
rewritten, fors = without_for(demo)
if shipped != rewritten or not (len(shipped_fors) == len(fors) == changed) or set(fors) != {new_for}:
    sys.exit(f"rewriting the `for:` lines of {shipped_path} changed more than `for`")
with open(demo_path, "w") as f:
    f.write(f"# Generated by scripts/demo.sh from {shipped_path}: every `for:` set to {new_for}\n"
            "# so that the demo's alerts fire within a minute or two. Do not edit.\n" + demo)
print(f"{changed} rules; shipped: {', '.join(sorted(set(shipped_fors), key=shipped_fors.index))}")
PYEOF
)" || die "cannot make the demo's rules from $SHIPPED_RULES"
promtool check rules "$DEMO_RULES" >"$DEMO_DIR/promtool.log" 2>&1 ||
    { cat "$DEMO_DIR/promtool.log" >&2; die "promtool rejects $DEMO_RULES"; }

# Relative to the repository when inside it: Prometheus' alerts page shows the rules file's
# path as it was given (.demo/iam-key-exporter.rules.yml).
PROMETHEUS_CONFIG="$DEMO_DIR/prometheus.yml"
[[ "$DEMO_DIR" == "$REPO"/* ]] && PROMETHEUS_CONFIG="${DEMO_DIR#"$REPO"/}/prometheus.yml"
cat >"$DEMO_DIR/prometheus.yml" <<EOF
# Generated by scripts/demo.sh.
global:
  scrape_interval: $SCRAPE_INTERVAL
  scrape_timeout: $SCRAPE_INTERVAL
  evaluation_interval: $SCRAPE_INTERVAL
rule_files:
  - $(basename "$DEMO_RULES")   # next to this file
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$ALERTMANAGER_PORT"]
scrape_configs:
  - job_name: iam-key-exporter   # the job name the shipped IAMKeyExporterDown rule expects
    static_configs:
      - targets: ["127.0.0.1:$EXPORTER_PORT"]
EOF

cat >"$DEMO_DIR/alertmanager.yml" <<EOF
# Generated by scripts/demo.sh: one route, no notifications (its API and amtool show the alerts).
route:
  receiver: demo
  group_by: [alertname, account_name]
  group_wait: 5s
  group_interval: 1m
  repeat_interval: 4h
receivers:
  - name: demo
EOF

# --- children ---------------------------------------------------------------------------
names=() pids=() logs=()
stack_start=$SECONDS

# Each child runs in a session of its own (setsid execs in place: $! stays its pid), so
# Ctrl-C reaches only this script, which stops the children in order. Were they in the
# terminal's process group, a child stopping on Ctrl-C could be seen by check_children
# before the trap ran, and a deliberate stop reported as a crash.
start_child() {  # start_child NAME LOG COMMAND...: in the background, its output in LOG
    local name="$1" log="$2"
    shift 2
    setsid "$@" </dev/null >"$log" 2>&1 8>&- 9>&- &
    names+=("$name") pids+=("$!") logs+=("$log")
    echo "$name $!" >>"$DEMO_DIR/pids"
}

running() {  # running PID: the process exists and is not a zombie
    local stat
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat="${stat##*) }"
    [ "${stat%% *}" != Z ]
}

stop_children() {
    local i p alive
    [ "${#pids[@]}" -gt 0 ] || return 0
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
    for _ in $(seq 150); do  # up to 15 s, then SIGKILL
        alive=0
        for p in "${pids[@]}"; do running "$p" && alive=1; done
        [ "$alive" = 0 ] && break
        pause 0.1
    done
    for p in "${pids[@]}"; do running "$p" && kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    names=() pids=() logs=()
}

on_signal() {
    trap '' INT TERM HUP
    echo
    say "stopping moto, the exporter, Prometheus and Alertmanager"
    stop_children
    say "stopped (logs and data stay in $DEMO_DIR)"
    exit 0
}
trap on_signal INT TERM HUP
trap stop_children EXIT

# A child that exited: its log tail, stop the others, exit 1.
check_children() {
    local i status
    for i in "${!pids[@]}"; do
        running "${pids[i]}" && continue
        status=0
        wait "${pids[i]}" 2>/dev/null || status=$?
        {
            echo "demo: ${names[i]} exited (status $status) after $((SECONDS - stack_start))s. Last lines of ${logs[i]}:"
            tail -n 30 "${logs[i]}" | sed 's/^/    /'
        } >&2
        stop_children
        exit 1
    done
}

wait_until() {  # wait_until WHAT SECONDS COMMAND...: poll COMMAND every 0.2 s, children watched
    local what="$1" limit="$2" start=$SECONDS
    shift 2
    until "$@"; do
        check_children
        if [ $((SECONDS - start)) -ge "$limit" ]; then
            echo "demo: $what: not after ${limit}s." >&2
            for i in "${!names[@]}"; do
                echo "--- last lines of ${logs[i]}:" >&2
                tail -n 15 "${logs[i]}" | sed 's/^/    /' >&2
            done
            exit 1
        fi
        pause 0.2
    done
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

MOTO_URL="http://127.0.0.1:$MOTO_PORT"
EXPORTER_URL="http://127.0.0.1:$EXPORTER_PORT"
PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT"
ALERTMANAGER_URL="http://127.0.0.1:$ALERTMANAGER_PORT"

say "starting moto (seeding the demo accounts), the exporter, Alertmanager and Prometheus; state in $DEMO_DIR"
start_child moto "$DEMO_DIR/moto.log" \
    "$PY" tests/moto/launcher.py --host 127.0.0.1 --port "$MOTO_PORT" --seed-demo
wait_until "moto to listen on $MOTO_URL" 60 grep -qs '^LISTENING ' "$DEMO_DIR/moto.log"

# Pointed at moto the way any AWS SDK is pointed at another endpoint; nothing else from the
# caller's AWS environment. moto accepts any credentials; these belong to its default
# account 123456789012, from which the exporter assumes a role in each demo account.
aws_unset=()
for var in $(compgen -e | grep '^AWS_' || true); do aws_unset+=(-u "$var"); done
start_child exporter "$DEMO_DIR/exporter.log" \
    env "${aws_unset[@]}" \
    AWS_ENDPOINT_URL="$MOTO_URL" \
    AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE \
    AWS_SECRET_ACCESS_KEY=demo-secret \
    AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true \
    AWS_CONFIG_FILE=/dev/null \
    AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    "$BIN" --config.file config/demo.yaml --web.listen-address "127.0.0.1:$EXPORTER_PORT"

start_child alertmanager "$DEMO_DIR/alertmanager.log" \
    prometheus-alertmanager --config.file="$DEMO_DIR/alertmanager.yml" \
    --storage.path="$DEMO_DIR/alertmanager-data" \
    --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" \
    --web.external-url="$ALERTMANAGER_URL/" \
    --cluster.listen-address=

start_child prometheus "$DEMO_DIR/prometheus.log" \
    prometheus --config.file="$PROMETHEUS_CONFIG" \
    --storage.tsdb.path="$DEMO_DIR/prometheus-data" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    --web.external-url="$PROMETHEUS_URL/"

wait_until "the exporter to read every account ($EXPORTER_URL/-/ready)" 90 http_ok "$EXPORTER_URL/-/ready"
wait_until "Alertmanager to be ready" 60 http_ok "$ALERTMANAGER_URL/-/ready"
wait_until "Prometheus to be ready" 60 http_ok "$PROMETHEUS_URL/-/ready"

echo
echo "iam-key-exporter demo is up ($((SECONDS - stack_start))s). Open:"
echo
w=$((${#PROMETHEUS_URL} + 16))
printf "  %-${w}s %s\n" \
    "$EXPORTER_URL/" "the exporter's landing page: 3 accounts, their state and key counts" \
    "$EXPORTER_URL/keys" "every access key, oldest first, with its owner and last use" \
    "$EXPORTER_URL/metrics" "the metrics Prometheus scrapes (every $SCRAPE_INTERVAL here)" \
    "$PROMETHEUS_URL/classic/alerts" "Prometheus' alerts page: the shipped rules" \
    "$ALERTMANAGER_URL/api/v2/alerts" "Alertmanager's API: the alerts Prometheus sent it (JSON)"
cat <<EOF

Debian's Alertmanager has no web UI (its / says so); list its alerts from a shell with:

  amtool alert query --alertmanager.url=$ALERTMANAGER_URL

The demo's rules are $SHIPPED_RULES with every \`for:\` set to
$DEMO_FOR ($rules_summary). So about a minute from now
Prometheus' alerts page shows these firing (red; click a name to see its keys), and
Alertmanager (its API, amtool) lists them a few seconds later:

  IAMAccessKeyTooOld         active keys older than their policy allows (90 days by default),
                             in all three accounts
  IAMAccessKeyTooOldSoon     production's ci-deploy: policy rule automation allows 365 days and
                             tells 60 days ahead; its key is 310 days old
  IAMAccessKeyUnused         production's legacy-backup key: never used in 200 days
  IAMUserMultipleActiveKeys  production's ci-deploy has two active keys
  IAMRootAccessKeyPresent    security-tooling's root user has an access key (read from the
                             account's IAM credential report)
  IAMRootWithoutMFA          ... and no MFA device
  IAMUserPasswordUnused      security-tooling's auditor: a console password never used
  IAMUserWithoutMFA          ... and no MFA device

Logs, configuration and data: $DEMO_DIR/. Ctrl-C stops everything.

EOF

# --- watch: say when the alerts fire, stop if a child dies ------------------------------------
# Prints "Name (count), ..." of the alerts firing in Prometheus or active in Alertmanager.
ALERTS_PY='
import json, sys, urllib.request
kind, url = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(url, timeout=2) as r:
        doc = json.load(r)
except Exception:
    sys.exit(0)
alerts = doc["data"]["alerts"] if kind == "prometheus" else doc
counts = {}
for a in alerts:
    state = a.get("state") if kind == "prometheus" else a.get("status", {}).get("state")
    if state in ("firing", "active"):
        name = a["labels"].get("alertname", "?")
        counts[name] = counts.get(name, 0) + 1
print(", ".join(f"{n} ({c})" for n, c in sorted(counts.items())))
'
# Started with SIGINT ignored, so Ctrl-C never interrupts Python mid-start (a traceback on
# the terminal); the script's trap runs once it returns.
alerts() { (trap '' INT && exec "$PY" -c "$ALERTS_PY" "$@") || true; }
has_expected() {  # has_expected "Name (n), ...": every EXPECTED alert is there
    local name
    for name in "${EXPECTED[@]}"; do [[ ", $1" == *", $name ("* ]] || return 1; done
}
prometheus_done=0 alertmanager_done=0 warned=0
while :; do
    check_children
    if [ "$prometheus_done" = 0 ]; then
        firing="$(alerts prometheus "$PROMETHEUS_URL/api/v1/alerts")"
        if has_expected "$firing"; then
            say "+$((SECONDS - stack_start))s firing in Prometheus ($PROMETHEUS_URL/classic/alerts): $firing"
            prometheus_done=1
        fi
    fi
    if [ "$alertmanager_done" = 0 ]; then
        active="$(alerts alertmanager "$ALERTMANAGER_URL/api/v2/alerts")"
        if has_expected "$active"; then
            say "+$((SECONDS - stack_start))s in Alertmanager ($ALERTMANAGER_URL/api/v2/alerts): $active"
            alertmanager_done=1
        fi
    fi
    if [ "$prometheus_done$alertmanager_done" != 11 ] && [ "$warned" = 0 ] &&
        [ $((SECONDS - stack_start)) -gt 240 ]; then
        say "no alerts after 4 minutes: see $PROMETHEUS_URL/classic/targets and the logs in $DEMO_DIR"
        warned=1
    fi
    pause 2
done
