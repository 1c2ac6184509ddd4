#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (against moto, promtool), the moto
# launcher's self-test, and the deploy-file validators. Installs what they need first.
# The container image is checked separately (`make image-test`: it needs a second,
# release build of about 9 minutes).
#
# The test environment is installed (downloads) while the tests compile (CPU), and the
# test programs then run TEST_JOBS at a time (default 4): they mostly wait on moto,
# Prometheus and their own timers, so a 2-core machine runs four side by side. Each
# program's output is printed whole when it ends; the summary names those that failed.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
JOBS="${TEST_JOBS:-4}"
LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT

bash scripts/setup-test-env.sh >"$LOGS/setup-env.log" 2>&1 &
setup=$!

echo "== cargo test --no-run --all-targets"
# Every target, the benchmarks too (built, not run: they would only print figures).
# Diagnostics as cargo prints them go to stderr; the artifacts' JSON to a file.
cargo test --no-run --all-targets --message-format=json-render-diagnostics >"$LOGS/build.json"
setup_ok=0
wait "$setup" || setup_ok=$?
cat "$LOGS/setup-env.log"
if [ "$setup_ok" -ne 0 ]; then
    echo "scripts/setup-test-env.sh failed (exit $setup_ok)" >&2
    exit 1
fi

# name <TAB> executable, of every test program cargo built.
python3 - "$LOGS/build.json" >"$LOGS/programs.tsv" <<'PY'
import json, os, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    kind = m.get("target", {}).get("kind", [""])[0]
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] and kind != "bench":
        name = m["target"]["name"] if kind == "test" else f"{m['target']['name']} ({kind} unit tests)"
        print(f"{name}\t{m['executable']}")
PY

# The slowest first, so the last to finish is a short one.
SLOW="deploy-files exporter demo discovery credential_report_source moto-launcher credentials"
jobs_in_order() {
    for name in $SLOW; do echo "$name"; done
    cut -f1 "$LOGS/programs.tsv" | grep -vxF -f <(tr ' ' '\n' <<<"$SLOW") || true
    echo doc-tests
}

command_of() {
    case "$1" in
        deploy-files)
            # The binary just built: systemd-analyze verify runs the units against it,
            # and the manifests' flags and configuration are checked against it.
            echo "env IKE_BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/iam-key-exporter bash tests/deploy/check.sh" ;;
        moto-launcher) echo ".venv/bin/python tests/moto/test_launcher.py" ;;
        doc-tests) echo "cargo test --doc" ;;
        *)
            local exe
            exe="$(awk -F'\t' -v n="$1" '$1 == n {print $2}' "$LOGS/programs.tsv")"
            if [ -n "$exe" ]; then
                printf '%q\n' "$exe"
            else
                # A name in SLOW that cargo no longer builds fails rather than passing unrun.
                echo "echo 'no test program named $1' >&2; exit 1"
            fi ;;
    esac
}

run() {
    local name=$1 started=$SECONDS status=0
    bash -c "$(command_of "$name")" >"$LOGS/$name.log" 2>&1 || status=$?
    echo "$status" >"$LOGS/$name.status"
    {
        flock 9
        echo "== $name ($((SECONDS - started)) s, exit $status)"
        cat "$LOGS/$name.log"
    } 9>"$LOGS/print.lock"
}

echo "== running the tests, $JOBS at a time"
running=0
while IFS= read -r name; do
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    run "$name" &
    running=$((running + 1))
done < <(jobs_in_order)
wait

failed=()
while IFS= read -r name; do
    [ "$(cat "$LOGS/$name.status")" = 0 ] || failed+=("$name")
done < <(jobs_in_order)
if [ "${#failed[@]}" -gt 0 ]; then
    echo "== FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "== every test passed"
