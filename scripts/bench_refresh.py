"""CPU time the exporter spends per AWS request during a refresh against moto.

Seeds one account with USERS users (one key each) in a moto launcher, runs the release
binary's one-shot mode (`once`) against it, and divides the exporter's user+system CPU time
by the number of AWS requests the launcher counted. Also reports the exporter's peak RSS.

Run: .venv/bin/python scripts/bench_refresh.py [USERS]   (after `cargo build --release`)
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCOUNT = "111111111111"


def post(url, path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


def main():
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    binary = os.path.join(REPO, "target/release/iam-key-exporter")
    if not os.path.exists(binary):
        sys.exit("build first: cargo build --release")
    launcher = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests/moto/launcher.py"), "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        url = launcher.stdout.readline().strip().removeprefix("LISTENING ")
        post(url, "/_launcher/seed", {
            "account": ACCOUNT,
            "users": [{"name": f"user-{i:05}", "keys": [{}]} for i in range(users)],
        })
        post(url, "/_launcher/counts/reset", {})
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "c.yaml")
            with open(config, "w") as f:
                f.write(f'accounts:\n  - id: "{ACCOUNT}"\n')
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            env.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE",
                       AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                       AWS_EC2_METADATA_DISABLED="true")
            start = time.monotonic()
            subprocess.run([binary, "once", f"--config.file={config}",
                            f"--output={os.path.join(tmp, 'out.prom')}", "--log.level=warn"],
                           env=env, check=True)
            wall = time.monotonic() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        with urllib.request.urlopen(url + "/_launcher/counts") as resp:
            counts = json.load(resp).get(ACCOUNT, {})
        requests = sum(counts.values())
        cpu = usage.ru_utime + usage.ru_stime
        print(f"users={users} requests={requests} ({json.dumps(counts, sort_keys=True)})")
        print(f"wall {wall:.2f} s, exporter CPU {cpu:.3f} s, "
              f"{cpu / requests * 1000:.3f} ms CPU per AWS request, peak RSS {usage.ru_maxrss / 1024:.1f} MiB")
    finally:
        launcher.terminate()
        launcher.wait()


if __name__ == "__main__":
    main()
