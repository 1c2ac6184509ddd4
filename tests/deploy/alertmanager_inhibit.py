"""The example Alertmanager configuration's inhibit rules, in a real Alertmanager.

    python alertmanager_inhibit.py ALERTMANAGER_BINARY CONFIG RULES

Starts ALERTMANAGER_BINARY (Debian's prometheus-alertmanager) on 127.0.0.1 with CONFIG
(its receivers emptied, so nothing is sent anywhere), posts alerts shaped like the shipped
rules' (RULES) and reads back which ones Alertmanager holds back (`status.inhibitedBy`):

  - while IAMKeyExporterAccountDown (or IAMKeyExporterAccountStale) fires for an account,
    every key and user alert of that account is inhibited;
  - the same alerts of another account are not, nor the account alerts themselves;
  - every alert of the shipped rules computed from an account's IAM data (its expression
    uses an aws_iam_* metric: keys, users, root) is covered.

amtool cannot evaluate inhibit rules (`amtool config routes test` only routes), hence a
real Alertmanager.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

DOWN, OTHER = "111111111111", "222222222222"
ACCOUNT_ALERTS = ("IAMKeyExporterAccountDown", "IAMKeyExporterAccountStale")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r) if r.status == 200 and body is None else None


def about_account_data(rules_path):
    """Alert names of the shipped rules computed from an account's IAM data (aws_iam_*)."""
    names = set()
    for group in yaml.safe_load(open(rules_path))["groups"]:
        for rule in group["rules"]:
            if "alert" in rule and re.search(r"\baws_iam_\w+", rule["expr"]):
                names.add(rule["alert"])
    return names


def main():
    binary, config_path, rules_path = sys.argv[1:4]
    config = yaml.safe_load(open(config_path))
    for r in config.get("receivers") or []:
        for k in list(r):
            if k != "name":
                del r[k]
    targets = sorted(about_account_data(rules_path))
    if not targets:
        sys.exit(f"{rules_path}: no alert on the accounts' IAM data (aws_iam_*) found")
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "alertmanager.yml")
        yaml.safe_dump(config, open(cfg, "w"))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(os.path.join(tmp, "alertmanager.log"), "w+")
        proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(base + "/-/ready", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        sys.exit(f"Alertmanager did not start:\n{log.read()}")
                    time.sleep(0.2)
            for source in ACCOUNT_ALERTS:
                # A fresh set of alerts for each source alert: expire the previous ones.
                request(base + "/api/v2/alerts", [
                    {"labels": {"alertname": name, "account_id": acc, "user": "u",
                                "access_key_id": "AKIA" + acc, "severity": "warning"},
                     "startsAt": "2020-01-01T00:00:00Z"}
                    for name in targets for acc in (DOWN, OTHER)
                ] + [{"labels": {"alertname": source, "account_id": DOWN, "severity": "warning"},
                      "startsAt": "2020-01-01T00:00:00Z"}])
                # Alertmanager marks inhibited alerts a moment after it has them (longer on a
                # busy machine): wait for the expected state, not only for the alerts.
                want = {(name, acc): acc == DOWN for name in targets for acc in (DOWN, OTHER)}
                want[(source, DOWN)] = False
                got = {}
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    alerts = request(base + "/api/v2/alerts?active=true&inhibited=true")
                    got = {(a["labels"]["alertname"], a["labels"]["account_id"]):
                           bool(a["status"]["inhibitedBy"]) for a in alerts}
                    if got == want:
                        break
                    time.sleep(0.2)
                for name in targets:
                    if got.get((name, DOWN)) is not True:
                        errors.append(f"{name} of an account with {source} firing is not inhibited")
                    if got.get((name, OTHER)) is not False:
                        errors.append(f"{name} of another account is inhibited by {source}")
                if got.get((source, DOWN)) is not False:
                    errors.append(f"{source} itself is inhibited")
                # Resolve everything before the next round.
                request(base + "/api/v2/alerts", [
                    {"labels": {"alertname": n, "account_id": a, "user": "u",
                                "access_key_id": "AKIA" + a, "severity": "warning"},
                     "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2020-01-01T00:00:01Z"}
                    for n in targets for a in (DOWN, OTHER)
                ] + [{"labels": {"alertname": source, "account_id": DOWN, "severity": "warning"},
                      "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2020-01-01T00:00:01Z"}])
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    for e in errors:
        print(e)
    if errors:
        return 1
    print(f"inhibit rules (real Alertmanager): {', '.join(ACCOUNT_ALERTS)} each hold back "
          f"the {len(targets)} alerts on their account's IAM data ({', '.join(targets)}), "
          "and nothing of another account")
    return 0


if __name__ == "__main__":
    sys.exit(main())
