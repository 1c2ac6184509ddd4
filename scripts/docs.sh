#!/usr/bin/env bash
# `make docs`: docs/screenshot.png, the picture at the top of the README. Runs the demo stack
# (scripts/demo.sh, on free ports), waits until the seeded keys' alerts fire in Prometheus and
# Alertmanager, and has headless Chromium (Debian's `chromium`, installed by this target only)
# take Prometheus' alerts page as a user sees it after two clicks: the "Inactive" filter off
# and the firing rules expanded (zoomed to 80 %, so that a screen holds more than one key).
# Then stops the stack.
#
#   IKE_BIN   an exporter binary to use instead of building one (passed to scripts/demo.sh)
#   OUT       where to write the PNG (default docs/screenshot.png)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-docs/screenshot.png}"
WIDTH=1280
HEIGHT=900
ZOOM=0.8

say() { printf 'docs: %s\n' "$*"; }
die() { printf 'docs: %s\n' "$*" >&2; exit 1; }
started=$SECONDS

# --- Chromium ---------------------------------------------------------------------------
if ! command -v chromium >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "chromium is missing: run this as root once, or apt-get install chromium"
    say "apt-get install chromium (about 30 s)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
command -v python3 >/dev/null 2>&1 || die "python3 is missing"

# --- the demo stack: on the demo's own ports when they are free (the picture shows them), --
# --- else on free ones ------------------------------------------------------------------------
read -r MOTO_PORT EXPORTER_PORT PROMETHEUS_PORT ALERTMANAGER_PORT < <(python3 -c '
import socket
def bind(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    return s
try:
    socks = [bind(p) for p in (5000, 9871, 9090, 9093)]
except OSError:
    socks = [bind(0) for _ in range(4)]
print(*(s.getsockname()[1] for s in socks))
')
export MOTO_PORT EXPORTER_PORT PROMETHEUS_PORT ALERTMANAGER_PORT
unset DEMO_PORT DEMO_FOR DEMO_DIR  # the demo as `make demo` runs it, state in .demo/

bash scripts/demo.sh &
demo=$!
stop_demo() {
    if kill -0 "$demo" 2>/dev/null; then
        kill -TERM "$demo" 2>/dev/null || true  # the demo stops its children and exits 0
        wait "$demo" 2>/dev/null || true
    fi
}
trap stop_demo EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PROMETHEUS="http://127.0.0.1:$PROMETHEUS_PORT"
ALERTMANAGER="http://127.0.0.1:$ALERTMANAGER_PORT"
# Exit 0 once IAMAccessKeyTooOld, IAMAccessKeyUnused and IAMRootAccessKeyPresent fire in
# Prometheus and are active in Alertmanager.
firing() {
    python3 - "$PROMETHEUS" "$ALERTMANAGER" <<'PYEOF'
import json, sys, urllib.request
want = {"IAMAccessKeyTooOld", "IAMAccessKeyUnused", "IAMRootAccessKeyPresent"}
def get(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.load(r)
try:
    prom = {a["labels"]["alertname"] for a in get(sys.argv[1] + "/api/v1/alerts")["data"]["alerts"]
            if a["state"] == "firing"}
    am = {a["labels"]["alertname"] for a in get(sys.argv[2] + "/api/v2/alerts")
          if a["status"]["state"] == "active"}
except Exception:
    sys.exit(1)
sys.exit(0 if want <= prom and want <= am else 1)
PYEOF
}
# The first build of the exporter takes minutes (the demo shows its progress).
until firing; do
    kill -0 "$demo" 2>/dev/null || { wait "$demo" || true; die "the demo stopped before its alerts fired"; }
    [ $((SECONDS - started)) -lt 1500 ] || die "the demo's alerts did not fire within 25 minutes"
    sleep 2
done
sleep 6  # one more evaluation and page render, so that every instance shows

# --- the screenshot ---------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
say "screenshot of $PROMETHEUS/classic/alerts -> $OUT"
python3 - "$PROMETHEUS/classic/alerts" "$OUT" "$WIDTH" "$HEIGHT" "$ZOOM" <<'PYEOF'
"""Headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: Chromium
reads commands on fd 3 and writes answers on fd 4, each a JSON text ended by a NUL byte), so
the page can be clicked before it is shot: Python's standard library only."""
import base64, fcntl, json, os, shutil, subprocess, sys, tempfile, time

url, out, width, height, zoom = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

# What a user does on the page: the "Inactive" filter off, a click on each firing rule.
CLICKS = """
(async () => {
  document.querySelector('#inactiveAlerts').parentElement.click();
  const firing = document.querySelectorAll('tr.alert-danger.alert_header');
  firing.forEach(row => row.click());
  document.body.style.zoom = '%s';
  await new Promise(resolve => setTimeout(resolve, 500));
  return firing.length;
})()
""" % zoom


def high(fd):  # a copy of fd numbered >= 10, clear of the 3 and 4 Chromium wants
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return copy


class Chromium:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="docs-chromium-")
        cmd_r, self.cmd_w = os.pipe()
        self.ans_r, ans_w = os.pipe()
        cmd_r, ans_w = high(cmd_r), high(ans_w)
        self.log = open(os.path.join(self.profile, "chromium.log"), "wb")
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{cmd_r} 4>&{ans_w} {cmd_r}<&- {ans_w}>&-', "bash",
             "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            pass_fds=(cmd_r, ans_w), stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        os.close(cmd_r)
        os.close(ans_w)
        self.buf, self.last_id, self.events = b"", 0, []

    def message(self):
        while b"\0" not in self.buf:
            chunk = os.read(self.ans_r, 1 << 20)
            if not chunk:
                self.log.flush()
                tail = open(self.log.name, errors="replace").read()[-2000:]
                raise SystemExit(f"chromium closed the DevTools pipe; its log:\n{tail}")
            self.buf += chunk
        text, self.buf = self.buf.split(b"\0", 1)
        return json.loads(text)

    def call(self, method, params=None, session=None):
        self.last_id += 1
        msg = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self.message()
            if m.get("id") == self.last_id:
                if "error" in m:
                    raise SystemExit(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def event(self, method, session, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, e in enumerate(self.events):
                if e.get("method") == method and e.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self.message())
        raise SystemExit(f"no {method} within {timeout}s")

    def close(self):
        try:
            self.call("Browser.close")
        except BaseException:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


browser = Chromium()
try:
    pages = [t["targetId"] for t in browser.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
    target = pages[0] if pages else browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    browser.call("Page.enable", session=s)
    browser.call("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=s)
    browser.call("Page.navigate", {"url": url}, session=s)
    browser.event("Page.loadEventFired", s)
    r = browser.call("Runtime.evaluate", {"expression": CLICKS, "awaitPromise": True, "returnByValue": True},
                     session=s)
    if "exceptionDetails" in r:
        raise SystemExit(f"the clicks failed: {r['exceptionDetails']}")
    if r["result"].get("value", 0) < 3:
        raise SystemExit(f"the alerts page shows {r['result'].get('value')} firing rules, expected at least 3")
    shot = browser.call("Page.captureScreenshot", {"format": "png"}, session=s)
finally:
    browser.close()
with open(out, "wb") as f:
    f.write(base64.b64decode(shot["data"]))
PYEOF

stop_demo
trap - EXIT
say "wrote $OUT ($(( $(stat -c %s "$OUT") / 1024 )) KiB, ${WIDTH}x${HEIGHT}) in $((SECONDS - started))s"
