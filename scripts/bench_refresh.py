"""Exporter benchmarks against moto (release build).

cpu [USERS]      Seeds one account with USERS users (one key each), runs the one-shot mode
                 (`once`, api source) and divides the exporter's user+system CPU time by the
                 number of AWS requests the launcher counted, at paces from 25 requests/s
                 to unpaced (the default, 50, among them). Also reports context switches
                 and peak RSS, and the same for the boto3 script the exporter replaces
                 (the same calls, every page followed).
memory [KEYS]    Seeds one account with KEYS/2 users of two keys each, serves it through the
                 credential_report source, and reports the exporter's RSS while it holds them,
                 and the time and size of /metrics scrapes (plain and gzip).

slowreaders [KEYS] [CLIENTS]
                 Serves KEYS keys (default 100,000), then CLIENTS clients (default 500) with a
                 4 KiB receive buffer ask for /metrics or /keys.json?limit=5000 and never read:
                 how many were answered and refused, RSS idle, while they hang and after they
                 close, and how long a normal scrape takes meanwhile.

sizing [ACCOUNTS] [USERS]
                 A simulated Organization (ACCOUNTS accounts found by discovery, USERS users of
                 one key each): for each source, the wall time of one replica's first full
                 refresh, its AWS calls, CPU, RSS and scrape time, then its CPU over a
                 minute between refreshes. What the README's sizing advice rests on.

throttled [ACCOUNTS USERS BIG_USERS [SOURCES]]
                 IAM as it behaves on AWS: 30-80 ms per call and a token bucket of 10 calls/s
                 (burst 10) per account and operation, answering Throttling beyond. ACCOUNTS
                 accounts of USERS users plus one of BIG_USERS (default 20, 1000, 5000), one
                 key each, read by one exporter per source: wall time to a complete refresh
                 against the lower bound the limits imply, AWS calls, throttled calls and
                 failed refreshes. Then a second refresh of each (steady state). SOURCES:
                 comma-separated, default credential_report,hybrid,api.

credentials [USERS] [ROLES]
                 One account of USERS users (default 2,500; one key each, tagged, every fifth
                 with a Bedrock API key and a CodeCommit password) and ROLES roles (default
                 1,000, two inline policies of ~1.5 KB each, as real roles carry), read once
                 with the hybrid source and user tags as labels: AWS calls per operation, the
                 bytes of the GetAccountAuthorizationDetails pages, wall and CPU time and peak
                 RSS, with roles and service-specific credentials read, then without, then
                 with SSH keys too (one ListSSHPublicKeys per user).

Run after `cargo build --release` (`make bench` runs them all), e.g.
     .venv/bin/python scripts/bench_refresh.py cpu 1500
"""

import gzip
import json
import os
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


BINARY = os.environ.get("IKE_BIN", os.path.join(REPO, "target/release/iam-key-exporter"))


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


def seed_keys(url, keys):
    """`keys` keys in ACCOUNT, two per user, seeded 5,000 users a request."""
    users = [{"name": f"service-user-{i:06}", "keys": [{}, {}]} for i in range(keys // 2)]
    for i in range(0, len(users), 5000):
        post(url, "/_launcher/seed", {"account": ACCOUNT, "users": users[i:i + 5000]})


def one_account_exporter(url, tmp, *flags):
    """The exporter reading ACCOUNT through the credential report: (process, base URL, port)."""
    port = free_port()
    config = os.path.join(tmp, "c.yaml")
    with open(config, "w") as f:
        f.write(f'refresh_interval: 30m\nsource: credential_report\naccounts:\n  - id: "{ACCOUNT}"\n')
    proc = subprocess.Popen(
        [BINARY, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn", *flags], env=aws_env(url))
    return proc, f"http://127.0.0.1:{port}", port


def memory(keys):
    launcher, url = start_launcher()
    exporter = None
    try:
        t = time.monotonic()
        seed_keys(url, keys)
        print(f"seeded {keys} keys in {time.monotonic() - t:.1f} s")
        with tempfile.TemporaryDirectory() as tmp:
            exporter, base, _ = one_account_exporter(url, tmp)
            t = time.monotonic()
            wait_until(exporter, lambda: ready(base))
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


def run_once(url, config_text):
    """`once` with this configuration: (wall seconds, the process's rusage)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "c.yaml")
        with open(config, "w") as f:
            f.write(config_text)
        start = time.monotonic()
        proc = subprocess.Popen(
            [BINARY, "once", f"--config.file={config}",
             f"--output={os.path.join(tmp, 'out.prom')}", "--log.level=warn"],
            env=aws_env(url))
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            sys.exit(f"the exporter failed: {status}")
        return time.monotonic() - start, usage


BOTO3_PEER = """
import sys
import boto3
creds = boto3.client("sts", region_name="us-east-1").assume_role(
    RoleArn=f"arn:aws:iam::{sys.argv[1]}:role/IAMKeyExporterReadOnly",
    RoleSessionName="boto3-peer")["Credentials"]
iam = boto3.client("iam", region_name="us-east-1", aws_access_key_id=creds["AccessKeyId"],
                   aws_secret_access_key=creds["SecretAccessKey"],
                   aws_session_token=creds["SessionToken"])
for page in iam.get_paginator("list_users").paginate():
    for user in page["Users"]:
        for kp in iam.get_paginator("list_access_keys").paginate(UserName=user["UserName"]):
            for key in kp["AccessKeyMetadata"]:
                iam.get_access_key_last_used(AccessKeyId=key["AccessKeyId"])
"""


def cpu(users):
    launcher, url = start_launcher()
    try:
        post(url, "/_launcher/seed", {
            "account": ACCOUNT,
            "users": [{"name": f"user-{i:05}", "keys": [{}]} for i in range(users)],
        })
        # A sweep of the pace, the default (50 requests/s) among them, up to one moto cannot
        # reach: what the exporter's own work costs, and whether waiting for a turn adds to it.
        paces = [("25 requests/s", "aws: {requests_per_second: 25}\n"),
                 ("default pace (50 requests/s)", ""),
                 ("100 requests/s", "aws: {requests_per_second: 100}\n"),
                 ("200 requests/s", "aws: {requests_per_second: 200}\n"),
                 ("unpaced", "aws: {requests_per_second: 1000}\n")]
        for pace, line in paces:
            post(url, "/_launcher/counts/reset", {})
            wall, usage = run_once(url, f'{line}accounts:\n  - id: "{ACCOUNT}"\n')
            with urllib.request.urlopen(url + "/_launcher/counts") as resp:
                counts = json.load(resp).get(ACCOUNT, {})
            requests = sum(counts.values())
            cpu = usage.ru_utime + usage.ru_stime
            print(f"{pace}: users={users} requests={requests} ({json.dumps(counts, sort_keys=True)})")
            print(f"{pace}: wall {wall:.2f} s, exporter CPU {cpu:.3f} s (user {usage.ru_utime:.3f}, "
                  f"system {usage.ru_stime:.3f}), {cpu / requests * 1000:.3f} ms CPU per AWS request, "
                  f"{(usage.ru_nvcsw + usage.ru_nivcsw) / requests:.1f} context switches per request, "
                  f"peak RSS {usage.ru_maxrss / 1024:.1f} MiB", flush=True)
        # The script the exporter replaces: boto3, every page followed, one key's last use
        # at a time, unpaced (the same calls).
        post(url, "/_launcher/counts/reset", {})
        start = time.monotonic()
        peer = subprocess.Popen([sys.executable, "-c", BOTO3_PEER, ACCOUNT], env=aws_env(url))
        _, status, usage = os.wait4(peer.pid, 0)
        if status != 0:
            sys.exit(f"the boto3 peer failed: {status}")
        with urllib.request.urlopen(url + "/_launcher/counts") as resp:
            requests = sum(json.load(resp).get(ACCOUNT, {}).values())
        cpu = usage.ru_utime + usage.ru_stime
        print(f"boto3 peer: wall {time.monotonic() - start:.2f} s, CPU {cpu:.3f} s, "
              f"{cpu / requests * 1000:.3f} ms CPU per AWS request ({requests} requests), "
              f"peak RSS {usage.ru_maxrss / 1024:.1f} MiB", flush=True)
    finally:
        launcher.terminate()
        launcher.wait()


def credentials(users, roles):
    launcher, url = start_launcher()
    try:
        seeded = []
        for i in range(users):
            u = {"name": f"user-{i:05}", "keys": [{}], "tags": {"owner": f"team-{i % 40}"}}
            if i % 5 == 0:
                u["service_credentials"] = [{"service": "bedrock.amazonaws.com"},
                                            {"service": "codecommit.amazonaws.com"}]
            seeded.append(u)
        for i in range(0, users, 5000):
            post(url, "/_launcher/seed", {"account": ACCOUNT, "users": seeded[i:i + 5000]})
        post(url, "/_launcher/roles", {"account": ACCOUNT, "roles": [
            {"name": f"role-{i:05}", "policies": 2} for i in range(roles)]})
        print(f"one account: {users} users, {users // 5 * 2} service-specific credentials, {roles} roles")
        for what, read in (("keys, tags, service-specific credentials, roles", ""),
                           ("keys and tags only", "read: {roles: false, service_specific_credentials: false}\n"),
                           ("all of those and SSH keys", "read: {ssh_public_keys: true}\n")):
            post(url, "/_launcher/counts/reset", {})
            wall, usage = run_once(url, f'{read}source: hybrid\nuser_tags_as_labels: [owner]\n'
                                        f'aws: {{requests_per_second: 1000}}\naccounts:\n  - id: "{ACCOUNT}"\n')
            tables = {}
            for table in ("counts", "bytes"):
                with urllib.request.urlopen(f"{url}/_launcher/{table}") as resp:
                    tables[table] = json.load(resp).get(ACCOUNT, {})
            calls, sent = tables["counts"], tables["bytes"]
            gaad = "GetAccountAuthorizationDetails"
            pages = calls.get(gaad, 0)
            print(f"{what}: {sum(calls.values())} calls {json.dumps(calls, sort_keys=True)}")
            print(f"  {gaad}: {pages} pages, {sent.get(gaad, 0) / 1048576:.1f} MiB "
                  f"({sent.get(gaad, 0) / max(pages, 1) / 1048576:.2f} MiB a page); "
                  f"ListServiceSpecificCredentials {calls.get('ListServiceSpecificCredentials', 0)} calls, "
                  f"ListSSHPublicKeys {calls.get('ListSSHPublicKeys', 0)} calls")
            print(f"  wall {wall:.2f} s, CPU {usage.ru_utime + usage.ru_stime:.2f} s, "
                  f"peak RSS {usage.ru_maxrss / 1024:.1f} MiB")
    finally:
        launcher.terminate()
        launcher.wait()


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SOURCES = ("credential_report", "hybrid", "api")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


IDLE_SECONDS = 60


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
        for source in SOURCES:
            post(url, "/_launcher/counts/reset", {})
            port = free_port()
            with tempfile.TemporaryDirectory() as tmp:
                config = os.path.join(tmp, "c.yaml")
                with open(config, "w") as f:
                    f.write(f"refresh_interval: 30m\nsource: {source}\n"
                            "discovery: {organizations: {}}\n")
                exporter = subprocess.Popen(
                    [BINARY, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                     "--log.level=warn"], env=aws_env(url))
                try:
                    base = f"http://127.0.0.1:{port}"
                    start = time.monotonic()
                    wait_until(exporter, lambda: ready(base))
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
                    # Between refreshes (the next is 30 minutes away), unscraped: what holding
                    # the accounts costs (timers, session renewals, the process collector).
                    cpu, t = proc_cpu_seconds(exporter.pid), time.monotonic()
                    time.sleep(IDLE_SECONDS)
                    idle = (proc_cpu_seconds(exporter.pid) - cpu) / (time.monotonic() - t)
                    print(f"{source}: idle between refreshes, holding {accounts + 1} accounts: "
                          f"{idle * 60 * 1000:.0f} ms CPU a minute ({idle * 100:.3f} % of a core)",
                          flush=True)
                finally:
                    exporter.terminate()
                    exporter.wait()
    finally:
        launcher.terminate()
        launcher.wait()


# What the benchmark's IAM allows: calls per second per account and operation, and latency.
RATE, BURST = 10.0, 10
LATENCY_MS = (30, 80)


def lower_bound(users_by_account, calls_by_op, concurrency):
    """Seconds the limits force: per account, its slowest operation's calls beyond the burst
    at RATE (operations have buckets of their own and run side by side); accounts in
    parallel up to `concurrency`, longest first (a lower bound of any schedule)."""
    per_account = []
    for users in users_by_account:
        ops = calls_by_op(users)
        per_account.append(max(max(0, n - BURST) / RATE for n in ops.values()))
    return max(max(per_account), sum(per_account) / concurrency)


def run_exporter(url, accounts, source):
    port = free_port()
    tmp = tempfile.mkdtemp()
    config = os.path.join(tmp, "c.yaml")
    with open(config, "w") as f:
        # A second refresh starts a minute after the first: the steady state.
        f.write(f"refresh_interval: 1m\nrefresh_timeout: 1h\nmax_staleness: 3h\nsource: {source}\n"
                "sts: {session_duration: 12h}\n"
                "aws: {operation_timeout: 30m, credential_report_timeout: 10m}\naccounts:\n")
        for a in accounts:
            f.write(f'  - id: "{a}"\n')
    proc = subprocess.Popen(
        [BINARY, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"], env=aws_env(url))
    return proc, f"http://127.0.0.1:{port}"


def metrics(base):
    with urllib.request.urlopen(base + "/metrics") as r:
        return r.read().decode()


def samples(text, name):
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, value = line.rsplit(" ", 1)
            out.append((labels, float(value)))
    return out


def ready(base):
    with urllib.request.urlopen(base + "/-/ready") as r:
        return True if r.status == 200 else None


def wait_until(proc, check):
    """Polls `check` every second until it returns something; exits if the exporter does."""
    while True:
        if proc.poll() is not None:
            sys.exit("the exporter exited")
        try:
            result = check()
            if result is not None:
                return result
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(1)


def launcher_totals(url):
    totals = {}
    for table in ["counts", "throttled"]:
        with urllib.request.urlopen(f"{url}/_launcher/{table}") as resp:
            totals[table] = sum(sum(ops.values()) for ops in json.load(resp).values())
    return totals


def throttled(n_accounts, users, big_users):
    launcher, url = start_launcher()
    try:
        accounts = [f"{600000000000 + i:012}" for i in range(n_accounts + 1)]
        sizes = [users] * n_accounts + [big_users]
        t = time.monotonic()
        for a, n in zip(accounts, sizes):
            batch = [{"name": f"user-{u:05}", "keys": [{}]} for u in range(n)]
            for i in range(0, n, 5000):
                post(url, "/_launcher/seed", {"account": a, "users": batch[i:i + 5000]})
        print(f"seeded {n_accounts} accounts x {users} users + 1 x {big_users} in {time.monotonic() - t:.0f} s; "
              f"IAM: {LATENCY_MS[0]}-{LATENCY_MS[1]} ms per call, {RATE:g} calls/s (burst {BURST}) "
              f"per account and operation")
        post(url, "/_launcher/latency", {"min_ms": LATENCY_MS[0], "max_ms": LATENCY_MS[1]})
        sources = sys.argv[5].split(",") if len(sys.argv) > 5 else list(SOURCES)
        calls = {
            "credential_report": lambda u: {"GenerateCredentialReport": 2, "GetCredentialReport": 1},
            "hybrid": lambda u: {"GenerateCredentialReport": 2, "GetCredentialReport": 1, "ListAccessKeys": u},
            "api": lambda u: {"ListUsers": -(-u // 1000), "ListAccessKeys": u, "GetAccessKeyLastUsed": u},
        }
        for source in sources:
            post(url, "/_launcher/rate_limits", {"default": {"rate": RATE, "burst": BURST}})
            post(url, "/_launcher/counts/reset", {})
            proc, base = run_exporter(url, accounts, source)
            try:
                start = time.monotonic()
                wait_until(proc, lambda: ready(base))
                first = time.monotonic() - start
                text = metrics(base)
                report(source, "first ", first, lower_bound(sizes, calls[source], 8), text,
                       launcher_totals(url), proc)
                before = launcher_totals(url)
                ready_at = time.time()
                start = time.monotonic()

                def all_refreshed_again():
                    text = metrics(base)
                    done = samples(text, "iam_key_exporter_account_last_success_timestamp_seconds")
                    return text if len(done) == len(accounts) and min(v for _, v in done) > ready_at else None

                text = wait_until(proc, all_refreshed_again)
                after = launcher_totals(url)
                steady = {k: after[k] - before[k] for k in after}
                report(source, "second", time.monotonic() - start, None, text, steady, proc)
            finally:
                proc.terminate()
                proc.wait()
    finally:
        launcher.terminate()
        launcher.wait()


def report(source, which, wall, bound, text, totals, proc):
    down = [l for l, v in samples(text, "iam_key_exporter_account_up") if v == 0]
    errors = sum(v for _, v in samples(text, "iam_key_exporter_refresh_errors_total"))
    against = f", lower bound {bound:5.0f} s ({wall / bound:.2f}x)" if bound else ""
    print(f"{source:18} {which} refresh: wall {wall:5.0f} s{against}; {totals['counts']} AWS calls, "
          f"{totals['throttled']} throttled; {len(down)} accounts down, {errors:g} refresh errors in all; "
          f"exporter CPU {proc_cpu_seconds(proc.pid):.1f} s so far", flush=True)


def slow_readers(keys, clients):
    launcher, url = start_launcher()
    exporter = None
    stalled = []
    try:
        seed_keys(url, keys)
        with tempfile.TemporaryDirectory() as tmp:
            exporter, base, port = one_account_exporter(url, tmp, "--web.write-timeout=10s")
            wait_until(exporter, lambda: ready(base))

            def scrape_ms():
                t = time.monotonic()
                with urllib.request.urlopen(base + "/metrics") as r:
                    r.read()
                return (time.monotonic() - t) * 1000

            alone = sorted(scrape_ms() for _ in range(3))[1]
            idle = rss_mib(exporter.pid)
            answers = {}
            for i in range(clients):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect(("127.0.0.1", port))
                path = "/metrics" if i % 2 == 0 else "/keys.json?limit=5000"
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                stalled.append(s)
            for s in stalled:
                status = s.recv(12).decode(errors="replace")[9:12]
                answers[status] = answers.get(status, 0) + 1
            during = rss_mib(exporter.pid)
            # A scrape once the flood is answered: it waits for a response whose client has
            # taken nothing for 250 ms and takes its place (503 only while all are read).
            time.sleep(1)
            t = time.monotonic()
            while True:
                try:
                    took = scrape_ms()
                    break
                except urllib.error.HTTPError as e:
                    if e.code != 503:
                        raise
                    time.sleep(0.2)
            waited = time.monotonic() - t
            for s in stalled:
                s.close()
            stalled = []
            time.sleep(2)
            after = rss_mib(exporter.pid)
            print(f"{clients} readers that never read, {keys} keys: answers {answers}; RSS {idle:.1f} MiB idle, "
                  f"{during:.1f} MiB while they hang (+{during - idle:.1f}), {after:.1f} MiB after they close; "
                  f"a scrape alone {alone:.0f} ms, meanwhile {took:.0f} ms after {waited:.1f} s of 503s "
                  f"(write timeout 10 s)")
    finally:
        for s in stalled:
            s.close()
        if exporter:
            exporter.terminate()
            exporter.wait()
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
    elif mode == "slowreaders":
        slow_readers(int(sys.argv[2]) if len(sys.argv) > 2 else 100_000,
                     int(sys.argv[3]) if len(sys.argv) > 3 else 500)
    elif mode == "throttled":
        args = [int(a) for a in sys.argv[2:5]]
        throttled(*(args + [20, 1000, 5000][len(args):]))
    elif mode == "credentials":
        credentials(int(sys.argv[2]) if len(sys.argv) > 2 else 2500,
                    int(sys.argv[3]) if len(sys.argv) > 3 else 1000)
    elif mode == "sizing":
        sizing(int(sys.argv[2]) if len(sys.argv) > 2 else 200,
               int(sys.argv[3]) if len(sys.argv) > 3 else 200)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
