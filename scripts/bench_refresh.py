"""Exporter benchmarks against moto (release build).

cpu [USERS]      Seeds one account with USERS users (one key each), runs the one-shot mode
                 (`once`, api source) and divides the exporter's user+system CPU time by the
                 number of AWS requests the launcher counted. Also reports peak RSS.
memory [KEYS]    Seeds one account with KEYS/2 users of two keys each, serves it through the
                 credential_report source, and reports the exporter's RSS while it holds them,
                 and the time and size of /metrics scrapes (plain and gzip).

sizing [ACCOUNTS] [USERS]
                 A simulated Organization (ACCOUNTS accounts found by discovery, USERS users of
                 one key each): for each source, the wall time of one replica's first full
                 refresh, its AWS calls, CPU, RSS and scrape time. What the README's sizing
                 advice rests on.

Run: .venv/bin/python scripts/bench_refresh.py cpu 1500
     .venv/bin/python scripts/bench_refresh.py memory 100000     (after `cargo build --release`)
"""

import gzip
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCOUNT = "111111111111"


def post(url, path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


BINARY = os.path.join(REPO, "target/release/iam-key-exporter")


def start_launcher():
    launcher = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests/moto/launcher.py"), "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    return launcher, launcher.stdout.readline().strip().removeprefix("LISTENING ")


def aws_env(url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE",
               AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    return env


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory(keys):
    launcher, url = start_launcher()
    exporter = None
    try:
        t = time.monotonic()
        users = [{"name": f"service-user-{i:06}", "keys": [{}, {}]} for i in range(keys // 2)]
        for i in range(0, len(users), 5000):
            post(url, "/_launcher/seed", {"account": ACCOUNT, "users": users[i:i + 5000]})
        print(f"seeded {keys} keys in {time.monotonic() - t:.1f} s")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "c.yaml")
            with open(config, "w") as f:
                f.write(f'refresh_interval: 1h\nsource: credential_report\naccounts:\n  - id: "{ACCOUNT}"\n')
            exporter = subprocess.Popen(
                [BINARY, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                 "--log.level=warn"], env=aws_env(url))
            base = f"http://127.0.0.1:{port}"
            t = time.monotonic()
            while True:
                try:
                    with urllib.request.urlopen(base + "/-/ready") as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError):
                    pass
                time.sleep(0.5)
            print(f"first refresh done in {time.monotonic() - t:.1f} s; RSS holding {keys} keys: {rss_mib(exporter.pid):.1f} MiB")
            for encoding in ["identity", "gzip"]:
                times = []
                for _ in range(5):
                    req = urllib.request.Request(base + "/metrics", headers={"Accept-Encoding": encoding})
                    t = time.monotonic()
                    with urllib.request.urlopen(req) as r:
                        body = r.read()
                    times.append(time.monotonic() - t)
                text = gzip.decompress(body) if encoding == "gzip" else body
                lines = text.count(b"\n")
                print(f"scrape ({encoding}): median {sorted(times)[2] * 1000:.0f} ms, "
                      f"{len(body) / 1048576:.1f} MiB on the wire, {lines} lines; "
                      f"RSS after {rss_mib(exporter.pid):.1f} MiB")
    finally:
        if exporter:
            exporter.terminate()
            exporter.wait()
        launcher.terminate()
        launcher.wait()


def cpu(users):
    launcher, url = start_launcher()
    try:
        post(url, "/_launcher/seed", {
            "account": ACCOUNT,
            "users": [{"name": f"user-{i:05}", "keys": [{}]} for i in range(users)],
        })
        post(url, "/_launcher/counts/reset", {})
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "c.yaml")
            with open(config, "w") as f:
                f.write(f'accounts:\n  - id: "{ACCOUNT}"\n')
            env = aws_env(url)
            start = time.monotonic()
            subprocess.run([BINARY, "once", f"--config.file={config}",
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


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sizing(accounts, users):
    launcher, url = start_launcher()
    try:
        ids = [f"{500000000000 + i:012}" for i in range(accounts)]
        post(url, "/_launcher/organization", {
            "accounts": [{"id": i, "name": f"account-{n:04}"} for n, i in enumerate(ids)],
        })
        t = time.monotonic()
        batch = [{"name": f"user-{u:05}", "keys": [{}]} for u in range(users)]
        for i in ids + ["123456789012"]:
            post(url, "/_launcher/seed", {"account": i, "users": batch})
        print(f"seeded {accounts + 1} accounts (the management account too) x {users} users "
              f"in {time.monotonic() - t:.0f} s")
        for source in ["credential_report", "api"]:
            post(url, "/_launcher/counts/reset", {})
            port = free_port()
            with tempfile.TemporaryDirectory() as tmp:
                config = os.path.join(tmp, "c.yaml")
                with open(config, "w") as f:
                    f.write(f"refresh_interval: 1h\nsource: {source}\n"
                            "discovery: {organizations: {}}\n")
                exporter = subprocess.Popen(
                    [BINARY, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                     "--log.level=warn"], env=aws_env(url))
                try:
                    base = f"http://127.0.0.1:{port}"
                    start = time.monotonic()
                    while True:
                        try:
                            with urllib.request.urlopen(base + "/-/ready") as r:
                                if r.status == 200:
                                    break
                        except (urllib.error.URLError, ConnectionError):
                            pass
                        if exporter.poll() is not None:
                            sys.exit("the exporter exited")
                        time.sleep(1)
                    wall = time.monotonic() - start
                    with urllib.request.urlopen(url + "/_launcher/counts") as resp:
                        counts = json.load(resp)
                    by_op = {}
                    for ops in counts.values():
                        for op, n in ops.items():
                            by_op[op] = by_op.get(op, 0) + n
                    t = time.monotonic()
                    with urllib.request.urlopen(urllib.request.Request(
                            base + "/metrics", headers={"Accept-Encoding": "gzip"})) as r:
                        body = r.read()
                    scrape = time.monotonic() - t
                    print(f"{source}: first full refresh of {accounts + 1} accounts in {wall:.0f} s; "
                          f"{sum(by_op.values())} AWS calls {json.dumps(by_op, sort_keys=True)}; "
                          f"exporter CPU {proc_cpu_seconds(exporter.pid):.1f} s, "
                          f"RSS {rss_mib(exporter.pid):.1f} MiB; gzip scrape {scrape * 1000:.0f} ms, "
                          f"{len(body) / 1024:.0f} KiB")
                finally:
                    exporter.terminate()
                    exporter.wait()
    finally:
        launcher.terminate()
        launcher.wait()


def main():
    if not os.path.exists(BINARY):
        sys.exit("build first: cargo build --release")
    mode = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    if mode == "cpu":
        cpu(int(sys.argv[2]) if len(sys.argv) > 2 else 1500)
    elif mode == "memory":
        memory(int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
    elif mode == "sizing":
        sizing(int(sys.argv[2]) if len(sys.argv) > 2 else 200,
               int(sys.argv[3]) if len(sys.argv) > 3 else 200)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
