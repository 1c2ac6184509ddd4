#!/usr/bin/env bash
# Build the container image here and check it: `make image-test`.
#
#   1. a static (glibc, crt-static) binary of the `dist` profile (release with debug info)
#      as the Dockerfile builds it: cargo build --profile dist (about 9 min on 2 cores from
#      clean; reused when up to date), or IKE_STATIC_BIN=path to skip it;
#   2. stripped, its symbols kept beside it (objcopy --only-keep-debug, .gnu_debuglink),
#      staged with a CA bundle in target/image/;
#   3. the image built from the Dockerfile with buildah (BINARY_SOURCE=prebuilt: no base
#      image is pulled; the runtime stage is FROM scratch);
#   4. checked: user 65532:65532, entrypoint, port 9871, only the binary and the CA bundle
#      in it, the binary static and stripped;
#   5. run from its exported root filesystem with chroot, as the image's user (podman run
#      cannot set rlimits on this machine), against moto: /-/ready, /metrics with the
#      account read (account_up 1, a key's age), promtool check metrics, process uid.
#
# Needs root (chroot, mount), buildah and podman (installed with apt-get when missing),
# the virtualenv of scripts/setup-test-env.sh (moto, boto3) and promtool.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
IMAGE="${IMAGE:-localhost/iam-key-exporter:test}"
STAGE="$REPO/target/image"
say() { printf '[image-test] %s\n' "$*"; }
fail() { say "FAIL: $*"; exit 1; }

[[ "$(id -u)" -eq 0 ]] || fail "needs root (chroot, mount proc)"
for tool in buildah podman; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    say "apt-get install buildah podman"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah podman >/dev/null
    break
  fi
done
[[ -x "$VENV/bin/moto_server" ]] || bash "$REPO/scripts/setup-test-env.sh"
PROMTOOL="${PROMTOOL:-$(command -v promtool || true)}"
[[ -n "$PROMTOOL" ]] || fail "promtool missing (apt-get install prometheus)"

WORK="$(mktemp -d)"
MOTO_PID="" EXPORTER_PID="" CONTAINER=""
cleanup() {
  [[ -n "$EXPORTER_PID" ]] && kill "$EXPORTER_PID" 2>/dev/null && wait "$EXPORTER_PID" 2>/dev/null
  [[ -n "$MOTO_PID" ]] && kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
  mountpoint -q "$WORK/rootfs/proc" 2>/dev/null && umount "$WORK/rootfs/proc"
  [[ -n "$CONTAINER" ]] && podman rm -f "$CONTAINER" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- 1. static release binary --------------------------------------------------------
TARGET="$(rustc -vV | sed -n 's/^host: //p')"
if [[ -z "${IKE_STATIC_BIN:-}" ]]; then
  say "cargo build --profile dist --target $TARGET with +crt-static"
  start=$(date +%s)
  (cd "$REPO" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile dist --locked --target "$TARGET")
  say "release build: $(( $(date +%s) - start )) s"
  IKE_STATIC_BIN="${CARGO_TARGET_DIR:-$REPO/target}/$TARGET/dist/iam-key-exporter"
fi
[[ -x "$IKE_STATIC_BIN" ]] || fail "no binary at $IKE_STATIC_BIN"

# --- 2. strip, keep the symbols --------------------------------------------------------
rm -rf "$STAGE" && mkdir -p "$STAGE"
objcopy --only-keep-debug "$IKE_STATIC_BIN" "$STAGE/iam-key-exporter.debug"
objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$STAGE/iam-key-exporter.debug" \
  "$IKE_STATIC_BIN" "$STAGE/iam-key-exporter"
cp /etc/ssl/certs/ca-certificates.crt "$STAGE/ca-certificates.crt"
say "binary: $(stat -c %s "$IKE_STATIC_BIN") bytes with debuginfo, $(stat -c %s "$STAGE/iam-key-exporter") stripped, symbols $(stat -c %s "$STAGE/iam-key-exporter.debug")"

# --- 3. image ----------------------------------------------------------------------------
dangling_before="$(buildah images -q --filter dangling=true | sort)"
start=$(date +%s)
revision="$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
buildah bud --quiet --isolation chroot --build-arg BINARY_SOURCE=prebuilt \
  --build-arg IKE_REVISION="$revision" -t "$IMAGE" -f "$REPO/Dockerfile" "$REPO" >/dev/null
say "image build: $(( $(date +%s) - start )) s"
# Remove the intermediate stage images this build left, and the working containers
# buildah keeps on them (only those).
for img in $(comm -13 <(echo "$dangling_before") <(buildah images -q --filter dangling=true | sort)); do
  buildah containers --format '{{.ContainerID}} {{.ImageID}}' \
    | awk -v i="$img" 'index($2, i) == 1 { print $1 }' | xargs -r buildah rm >/dev/null
  buildah rmi "$img" >/dev/null
done

# --- 4. what is in it ----------------------------------------------------------------------
podman image inspect "$IMAGE" >"$WORK/inspect.json"
"$VENV/bin/python" - "$WORK/inspect.json" >"$WORK/run.env" <<'PY'
import json, shlex, sys
img = json.load(open(sys.argv[1]))[0]
cfg = img["Config"]
errors = []
if cfg.get("User") != "65532:65532":
    errors.append(f"User is {cfg.get('User')!r}, not 65532:65532")
if cfg.get("Entrypoint") != ["/usr/local/bin/iam-key-exporter"]:
    errors.append(f"Entrypoint {cfg.get('Entrypoint')}")
if "9871/tcp" not in (cfg.get("ExposedPorts") or {}):
    errors.append("port 9871/tcp not exposed")
if errors:
    sys.exit("image config: " + "; ".join(errors))
print("IMAGE_USER=" + shlex.quote(cfg["User"]))
print("IMAGE_CMD=(" + " ".join(shlex.quote(a) for a in cfg["Entrypoint"] + (cfg.get("Cmd") or [])) + ")")
print("IMAGE_ENV=(" + " ".join(shlex.quote(e) for e in cfg.get("Env") or []) + ")")
print("IMAGE_SIZE=" + str(img["Size"]))
PY
# shellcheck disable=SC1091
source "$WORK/run.env"
say "image $IMAGE: $IMAGE_SIZE bytes, user $IMAGE_USER, command: ${IMAGE_CMD[*]}"

CONTAINER="$(podman create "$IMAGE")"
mkdir -p "$WORK/rootfs"
podman export "$CONTAINER" | tar -x -C "$WORK/rootfs"
files="$(cd "$WORK/rootfs" && find . -type f | sort | tr '\n' ' ')"
[[ "$files" == "./etc/ssl/certs/ca-certificates.crt ./usr/local/bin/iam-key-exporter " ]] \
  || fail "unexpected files in the image: $files"
bin="$WORK/rootfs/usr/local/bin/iam-key-exporter"
readelf -lW "$bin" | grep -q 'Requesting program interpreter' && fail "the binary is dynamically linked"
readelf -SW "$bin" | grep -q '\.debug_info' && fail "the binary has debug info (not stripped)"
readelf -SW "$bin" | grep -q '\.gnu_debuglink' || fail "no .gnu_debuglink to the symbols"
say "image holds only the static, stripped binary and the CA bundle"

# --- 5. run it -----------------------------------------------------------------------------
free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOTO_PORT="$(free_port)"
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
KEY="$("$VENV/bin/python" - "$MOTO_PORT" <<'PY'
import sys, time, boto3
url = f"http://127.0.0.1:{sys.argv[1]}"
iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
for _ in range(100):
    try:
        iam.list_users()
        break
    except Exception:
        time.sleep(0.1)
iam.create_user(UserName="image-test")
print(iam.create_access_key(UserName="image-test")["AccessKey"]["AccessKeyId"])
PY
)"
mkdir -p "$WORK/rootfs/etc/iam-key-exporter" "$WORK/rootfs/proc" "$WORK/rootfs/tmp"
cat >"$WORK/rootfs/etc/iam-key-exporter/config.yaml" <<'EOF'
refresh_interval: 1m
accounts:
  - id: "123456789012"
    name: image-test
    assume_role: false
EOF
mount -t proc proc "$WORK/rootfs/proc"
PORT="$(free_port)"
# The image's own command and environment, its user, plus a loopback listen address and
# moto as the AWS endpoint.
env -i "${IMAGE_ENV[@]}" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" \
  /usr/sbin/chroot --userspec="$IMAGE_USER" "$WORK/rootfs" \
  "${IMAGE_CMD[@]}" --web.listen-address="127.0.0.1:$PORT" >"$WORK/exporter.log" 2>&1 &
EXPORTER_PID=$!
ready=""
for _ in $(seq 1 100); do
  if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/-/ready")" == 200 ]]; then ready=1; break; fi
  kill -0 "$EXPORTER_PID" 2>/dev/null || break
  sleep 0.2
done
[[ -n "$ready" ]] || { cat "$WORK/exporter.log"; fail "the exporter never became ready"; }
uid="$(awk '/^Uid:/ {print $2}' "/proc/$EXPORTER_PID/status")"
[[ "$uid" == "${IMAGE_USER%%:*}" && "$uid" != 0 ]] || fail "the exporter runs as uid $uid"
curl -sf "http://127.0.0.1:$PORT/metrics" >"$WORK/metrics"
grep -q '^iam_key_exporter_account_up{account_id="123456789012",account_name="image-test"} 1$' "$WORK/metrics" \
  || { cat "$WORK/exporter.log"; fail "account_up is not 1"; }
grep -q "^aws_iam_access_key_age_seconds{.*access_key_id=\"$KEY\"" "$WORK/metrics" \
  || fail "no age for key $KEY"
"$PROMTOOL" check metrics <"$WORK/metrics" || fail "promtool check metrics"
say "the image runs as uid $uid, is ready, and serves /metrics ($(wc -l <"$WORK/metrics") lines, account_up 1)"
say "PASS: $IMAGE"
