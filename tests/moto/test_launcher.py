#!/usr/bin/env python3
"""Self-test of tests/moto/launcher.py, with boto3 against a launcher on a free port.

    .venv/bin/python tests/moto/test_launcher.py [-v] [TestLauncher.test_name ...]

Plain unittest; exits non-zero on failure. Timings go to stderr. The throughput benchmark
(TestBenchmark) runs only with LAUNCHER_BENCH=1.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCHER = os.path.join(HERE, "launcher.py")

BIG = "444444444444"       # 2,500 users
KEYS = "555555555555"      # ListAccessKeys pagination
FAULTY = "666666666666"    # faults
OTHER = "777777777777"     # works while FAULTY is denied
SEEDED = "888888888888"    # seeding/mutation round trips
REPORT = "121212121212"    # credential report rewriting
SNAP = "131313131313"      # credential report snapshots
TAGGED = "141414141414"    # user tags and paths, GetAccountAuthorizationDetails
EXT = "151515151515"       # ExternalId
LIMITED = "161616161616"   # rate limits
BYTES = "171717171717"     # byte counts
MGMT = "123456789012"      # moto's default account: the base credentials; manages the organization
CREDS = "181818181818"     # service-specific credentials
SSH = "191919191919"       # SSH public keys
ROLES = "202020202020"     # roles and RoleLastUsed
N_BIG = 2500

NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30)


def utc(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def log(msg: str) -> None:
    print(f"[test_launcher] {msg}", file=sys.stderr, flush=True)


class Launcher:
    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, LAUNCHER, "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.stderr_lines: list[str] = []
        self.drainer = threading.Thread(target=self._drain, daemon=True)
        self.drainer.start()
        line = self._readline(timeout=60)
        if not line.startswith("LISTENING http://"):
            self.proc.kill()
            raise RuntimeError(f"launcher did not start: {line!r}\n{''.join(self.stderr_lines)}")
        self.url = line.split()[1]

    def _drain(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.stderr_lines.append(line)

    def _readline(self, timeout: float) -> str:
        out: list[str] = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(timeout)
        return out[0].strip() if out else ""

    def control(self, path: str, body: dict | None = None, method: str | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method or ("GET" if body is None else "POST"),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def ok(self, path: str, body: dict | None = None) -> dict:
        status, answer = self.control(path, body)
        if status != 200:
            raise AssertionError(f"{path} -> {status} {answer}")
        return answer

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = -999
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.drainer.join(5)
        self.proc.stderr.close()  # type: ignore[union-attr]
        return rc


class TestLauncher(unittest.TestCase):
    L: Launcher

    @classmethod
    def setUpClass(cls) -> None:
        t0 = time.monotonic()
        cls.L = Launcher()
        log(f"launcher up at {cls.L.url} in {time.monotonic() - t0:.2f}s")

    @classmethod
    def tearDownClass(cls) -> None:
        rc = cls.L.stop()
        if rc != 0:
            raise AssertionError(f"launcher exited {rc} on SIGTERM\n{''.join(cls.L.stderr_lines[-30:])}")

    def tearDown(self) -> None:
        self.L.ok("/_launcher/faults/clear", {})
        self.L.ok("/_launcher/pagination", {"short_pages": True})
        self.L.ok("/_launcher/latency", {"min_ms": 0, "max_ms": 0})
        self.L.ok("/_launcher/rate_limits", {"off": True})
        self.L.ok("/_launcher/organizations_paging", {"max_results": None})
        self.L.ok("/_launcher/credential_report", {"max_age_seconds": 4 * 3600, "csv_quoting": False})

    # -- clients
    def base_session(self) -> dict:
        return dict(endpoint_url=self.L.url, region_name="us-east-1",
                    aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="base-secret")

    def assume(self, account: str, config: Config | None = None) -> dict:
        sts = boto3.client("sts", config=config or NO_RETRY, **self.base_session())
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/IAMKeyExporterReadOnly",
                                RoleSessionName="iam-key-exporter", ExternalId="example-external-id")["Credentials"]
        return dict(endpoint_url=self.L.url, region_name="us-east-1",
                    aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                    aws_session_token=creds["SessionToken"])

    def iam(self, account: str, config: Config | None = None):
        return boto3.client("iam", config=config or NO_RETRY, **self.assume(account, config))

    def org(self, session: dict | None = None):
        return boto3.client("organizations", config=NO_RETRY, **(session or self.base_session()))

    def error(self, call: Callable[[], Any]) -> tuple[int, str, str, dict]:
        """(HTTP status, code, message, headers) of the error a call raises."""
        with self.assertRaises(ClientError) as cm:
            call()
        r = cm.exception.response
        return (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"].get("Message", ""),
                r["ResponseMetadata"]["HTTPHeaders"])

    def bad(self, path: str, body: dict, words: str) -> None:
        status, answer = self.L.control(path, body)
        self.assertEqual(status, 400, (path, body, answer))
        self.assertIn(words, answer["error"], (path, body, answer))

    def counts(self, account: str) -> dict:
        return self.L.ok("/_launcher/counts").get(account, {})

    def seed_users(self, account: str, n: int, prefix: str = "user", keys: int = 1) -> dict:
        users = [{"name": f"{prefix}-{i:05d}", "create_date": "2020-01-01T00:00:00Z",
                  "keys": [{"create_date": "2021-02-03T04:05:06Z",
                            "last_used": {"date": "2024-01-02T03:04:05Z", "service": "s3", "region": "eu-west-1"}}
                           for _ in range(keys)]}
                 for i in range(n)]
        return self.L.ok("/_launcher/seed", {"account": account, "users": users})

    # -- pagination
    def test_01_list_users_pagination_2500(self) -> None:
        t0 = time.monotonic()
        seeded = self.seed_users(BIG, N_BIG)
        seed_s = time.monotonic() - t0
        log(f"seeding {N_BIG} users with one key each over HTTP: {seed_s:.2f}s")
        self.assertEqual(len(seeded["users"]), N_BIG)
        self.assertLess(seed_s, 10)
        all_ids = {k for u in seeded["users"] for k in u["keys"]}

        iam = self.iam(BIG)
        pages, names, markers = [], [], []
        kwargs: dict = {"MaxItems": 1000}
        while True:
            r = iam.list_users(**kwargs)
            pages.append(len(r["Users"]))
            names += [u["UserName"] for u in r["Users"]]
            if not r["IsTruncated"]:
                self.assertNotIn("Marker", r)
                break
            markers.append(r["Marker"])
            kwargs["Marker"] = r["Marker"]
        self.assertEqual(pages, [1000, 500, 1000])
        self.assertEqual(len(names), N_BIG)
        self.assertEqual(set(names), {f"user-{i:05d}" for i in range(N_BIG)})
        self.assertEqual(names, sorted(names))
        for m in markers:
            for ch in "+/=":
                self.assertIn(ch, m)

        # default MaxItems is 100, like AWS
        r = iam.list_users()
        self.assertEqual(len(r["Users"]), 100)
        self.assertTrue(r["IsTruncated"])
        # MaxItems above 1000 is capped
        r = iam.list_users(MaxItems=5000)
        self.assertEqual(len(r["Users"]), 1000)

        # short pages off: full pages
        self.L.ok("/_launcher/pagination", {"short_pages": False})
        pager = iam.get_paginator("list_users").paginate(PaginationConfig={"PageSize": 1000})
        self.assertEqual([len(p["Users"]) for p in pager], [1000, 1000, 500])
        self.L.ok("/_launcher/pagination", {"short_pages": True})

        # a full scan as the exporter does it: ListUsers, ListAccessKeys per user,
        # GetAccessKeyLastUsed per key, all pages followed; one AssumeRole. Four clients
        # share the users (the exporter's calls overlap too, and it keeps the test quick).
        self.L.ok("/_launcher/counts/reset", {})
        t0 = time.monotonic()
        retrying = Config(retries={"total_max_attempts": 3, "mode": "standard"})
        session = self.assume(BIG, retrying)
        clients = [boto3.client("iam", config=retrying, **session) for _ in range(4)]
        users = [u["UserName"] for page in clients[0].get_paginator("list_users").paginate(PaginationConfig={"PageSize": 1000})
                 for u in page["Users"]]
        seen_keys = {}

        def scan(n: int) -> None:
            iam = clients[n]
            for user in users[n::len(clients)]:
                for kp in iam.get_paginator("list_access_keys").paginate(UserName=user):
                    for key in kp["AccessKeyMetadata"]:
                        lu = iam.get_access_key_last_used(AccessKeyId=key["AccessKeyId"])["AccessKeyLastUsed"]
                        seen_keys[key["AccessKeyId"]] = (key["CreateDate"], lu["LastUsedDate"], lu["ServiceName"], lu["Region"])

        with ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(scan, range(len(clients))))
        scan_s = time.monotonic() - t0
        log(f"full boto3 scan of {N_BIG} users / {len(seen_keys)} keys: {scan_s:.1f}s "
            f"({(N_BIG * 2 + 4) / scan_s:.0f} requests/s)")
        self.assertEqual(set(seen_keys), all_ids)
        for created, last, service, region in seen_keys.values():
            self.assertEqual(created, utc("2021-02-03T04:05:06Z"))
            self.assertEqual(last, utc("2024-01-02T03:04:05Z"))
            self.assertEqual((service, region), ("s3", "eu-west-1"))
        self.assertEqual(self.counts(BIG), {"AssumeRole": 1, "ListUsers": 3,
                                            "ListAccessKeys": N_BIG, "GetAccessKeyLastUsed": N_BIG})

    def test_02_list_access_keys_pagination(self) -> None:
        seeded = self.seed_users(KEYS, 3, prefix="two", keys=2)
        iam = self.iam(KEYS)
        for u in seeded["users"]:
            ids, pages, kwargs = [], [], {"UserName": u["name"], "MaxItems": 1}
            while True:
                r = iam.list_access_keys(**kwargs)
                pages.append(len(r["AccessKeyMetadata"]))
                ids += [k["AccessKeyId"] for k in r["AccessKeyMetadata"]]
                if not r["IsTruncated"]:
                    break
                for ch in "+/=":
                    self.assertIn(ch, r["Marker"])
                kwargs["Marker"] = r["Marker"]
            self.assertEqual(pages, [1, 1])
            self.assertEqual(ids, sorted(u["keys"]))
            r = iam.list_access_keys(UserName=u["name"])
            self.assertEqual(sorted(k["AccessKeyId"] for k in r["AccessKeyMetadata"]), sorted(u["keys"]))
            self.assertFalse(r["IsTruncated"])

        # a ListUsers marker is no ListAccessKeys marker; garbage is InvalidInput
        users_marker = iam.list_users(MaxItems=1)["Marker"]
        for bad in (users_marker, "garbage", "AAAA"):
            with self.assertRaises(ClientError) as cm:
                iam.list_access_keys(UserName="two-00000", Marker=bad)
            self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidInput")
            self.assertEqual(cm.exception.response["ResponseMetadata"]["HTTPStatusCode"], 400)

    def test_03_unencoded_marker_is_rejected(self) -> None:
        """A client that puts the marker into the form body without URL-encoding sends '+' as ' '."""
        self.seed_users("999999999999", 3, prefix="enc")
        iam = self.iam("999999999999")
        marker = iam.list_users(MaxItems=1)["Marker"]
        creds = self.assume("999999999999")
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        def raw(body: str) -> tuple[int, str]:
            req = AWSRequest(method="POST", url=self.L.url + "/", data=body,
                             headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
            SigV4Auth(Credentials(creds["aws_access_key_id"], creds["aws_secret_access_key"],
                                  creds["aws_session_token"]), "iam", "us-east-1").add_auth(req)
            r = urllib.request.Request(self.L.url + "/", data=body.encode(), headers=dict(req.headers.items()), method="POST")
            try:
                with urllib.request.urlopen(r, timeout=30) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        status, text = raw(f"Action=ListUsers&Version=2010-05-08&MaxItems=1&Marker={marker}")
        self.assertEqual(status, 400, text)
        self.assertIn("<Code>InvalidInput</Code>", text)
        from urllib.parse import quote
        status, text = raw(f"Action=ListUsers&Version=2010-05-08&MaxItems=1&Marker={quote(marker, safe='')}")
        self.assertEqual(status, 200, text)
        self.assertIn("<UserName>enc-00001</UserName>", text)

    # -- faults
    def test_04_throttle_and_500_with_count(self) -> None:
        self.seed_users(FAULTY, 2, prefix="f")
        iam = self.iam(FAULTY)
        self.L.ok("/_launcher/counts/reset", {})
        self.L.ok("/_launcher/faults", {"faults": [
            {"kind": "throttle", "operation": "ListUsers", "account": FAULTY, "count": 2},
            {"kind": "error500", "operation": "ListAccessKeys", "account": None, "count": 1},
        ]})
        for _ in range(2):
            with self.assertRaises(ClientError) as cm:
                iam.list_users()
            err = cm.exception.response
            self.assertEqual(err["Error"]["Code"], "Throttling")
            self.assertEqual(err["Error"]["Message"], "Rate exceeded")
            self.assertEqual(err["Error"]["Type"], "Sender")
            self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], 400)
        self.assertEqual(len(iam.list_users()["Users"]), 2)
        with self.assertRaises(ClientError) as cm:
            iam.list_access_keys(UserName="f-00000")
        self.assertEqual(cm.exception.response["Error"]["Code"], "ServiceUnavailable")
        self.assertEqual(cm.exception.response["ResponseMetadata"]["HTTPStatusCode"], 500)
        self.assertEqual(len(iam.list_access_keys(UserName="f-00000")["AccessKeyMetadata"]), 1)
        # another account is not throttled by an account-scoped rule
        self.L.ok("/_launcher/faults", {"faults": [{"kind": "throttle", "operation": "*", "account": FAULTY}]})
        iam_other = self.iam(OTHER)
        iam_other.list_users()
        with self.assertRaises(ClientError):
            iam.get_access_key_last_used(AccessKeyId="AKIAIOSFODNN7EXAMPLE")
        faults = self.L.ok("/_launcher/faults")["faults"]
        self.assertEqual([(f["kind"], f["remaining"], f["hits"]) for f in faults],
                         [("throttle", 0, 2), ("error500", 0, 1), ("throttle", None, 1)])
        # an SDK with retries gets through a short burst of throttling
        self.L.ok("/_launcher/faults/clear", {})
        self.L.ok("/_launcher/faults", {"faults": [{"kind": "throttle", "operation": "ListUsers", "count": 2}]})
        retrying = self.iam(FAULTY, Config(retries={"total_max_attempts": 3, "mode": "standard"}))
        self.assertEqual(len(retrying.list_users()["Users"]), 2)
        c = self.counts(FAULTY)
        self.assertEqual(c["ListUsers"], 2 + 1 + 3)  # faulted ones count too
        self.assertEqual(c["ListAccessKeys"], 2)
        self.assertEqual(c["GetAccessKeyLastUsed"], 1)

    def test_05_stall(self) -> None:
        self.seed_users(FAULTY, 1, prefix="stall")
        iam_fast = self.iam(FAULTY)
        impatient = self.iam(FAULTY, Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=0.5))
        self.L.ok("/_launcher/faults", {"faults": [
            {"kind": "stall", "operation": "ListUsers", "account": FAULTY, "count": 1, "delay_seconds": 2}]})
        t0 = time.monotonic()
        with self.assertRaises(ReadTimeoutError):
            impatient.list_users()
        self.assertLess(time.monotonic() - t0, 1.5)
        # the stalled thread holds nobody else up
        t0 = time.monotonic()
        iam_fast.list_access_keys(UserName="stall-00000")
        self.assertLess(time.monotonic() - t0, 1.0)
        # a patient client gets the normal answer after the delay
        self.L.ok("/_launcher/faults", {"faults": [
            {"kind": "stall", "operation": "ListUsers", "account": FAULTY, "count": 1, "delay_seconds": 1}]})
        t0 = time.monotonic()
        iam_fast.list_users()
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        # an hour-long stall is released by faults/clear
        self.L.ok("/_launcher/faults", {"faults": [{"kind": "stall", "operation": "ListUsers", "account": FAULTY}]})
        done: list = []
        th = threading.Thread(target=lambda: done.append(iam_fast.list_users()), daemon=True)
        th.start()
        time.sleep(0.5)
        self.assertFalse(done)
        self.L.ok("/_launcher/faults/clear", {})
        th.join(5)
        self.assertTrue(done)

    def test_06_access_denied_on_assume_role(self) -> None:
        self.seed_users(OTHER, 1, prefix="ok")
        self.L.ok("/_launcher/faults", {"faults": [{"kind": "access_denied", "operation": "AssumeRole", "account": FAULTY}]})
        with self.assertRaises(ClientError) as cm:
            self.assume(FAULTY)
        err = cm.exception.response
        self.assertEqual(err["Error"]["Code"], "AccessDenied")
        self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], 403)
        self.assertIn(f"arn:aws:iam::{FAULTY}:role/IAMKeyExporterReadOnly", err["Error"]["Message"])
        session = self.assume(OTHER)
        sts = boto3.client("sts", config=NO_RETRY, **session)
        self.assertEqual(sts.get_caller_identity()["Account"], OTHER)
        iam = boto3.client("iam", config=NO_RETRY, **session)
        self.assertIn("ok-00000", [u["UserName"] for u in iam.list_users()["Users"]])

    def test_07_reset(self) -> None:
        iam = self.iam(FAULTY)
        self.L.ok("/_launcher/faults", {"faults": [{"kind": "reset", "operation": "ListUsers", "count": 1}]})
        t0 = time.monotonic()
        with self.assertRaises(ConnectionClosedError) as cm:
            iam.list_users()
        log(f"reset fault: boto3 raised {type(cm.exception).__name__}: {cm.exception}")
        self.assertLess(time.monotonic() - t0, 5)
        iam.list_users()

    # -- seeding and mutation
    def test_08_seed_and_mutate_round_trip(self) -> None:
        answer = self.L.ok("/_launcher/seed", {"account": SEEDED, "users": [
            {"name": "alice", "create_date": "2019-05-06T07:08:09Z", "keys": [
                {"status": "Active", "create_date": "2020-01-02T03:04:05Z",
                 "last_used": {"date": "2024-01-02T03:04:05Z", "service": "s3", "region": "us-east-1"}},
                {"status": "Inactive", "create_date": "2021-06-07T08:09:10Z"},
            ]},
            {"name": "bob", "keys": []},
            {"name": "svc+x=y,z.w@q_-", "keys": [{}]},
        ]})
        self.assertEqual([u["name"] for u in answer["users"]], ["alice", "bob", "svc+x=y,z.w@q_-"])
        a1, a2 = answer["users"][0]["keys"]
        self.assertEqual(answer["users"][1]["keys"], [])
        iam = self.iam(SEEDED)
        users = {u["UserName"]: u for u in iam.list_users()["Users"]}
        self.assertEqual(set(users), {"alice", "bob", "svc+x=y,z.w@q_-"})
        self.assertEqual(users["alice"]["CreateDate"], utc("2019-05-06T07:08:09Z"))
        keys = {k["AccessKeyId"]: k for k in iam.list_access_keys(UserName="alice")["AccessKeyMetadata"]}
        self.assertEqual(keys[a1]["CreateDate"], utc("2020-01-02T03:04:05Z"))
        self.assertEqual(keys[a1]["Status"], "Active")
        self.assertEqual(keys[a2]["CreateDate"], utc("2021-06-07T08:09:10Z"))
        self.assertEqual(keys[a2]["Status"], "Inactive")
        lu = iam.get_access_key_last_used(AccessKeyId=a1)
        self.assertEqual(lu["UserName"], "alice")
        self.assertEqual(lu["AccessKeyLastUsed"], {"LastUsedDate": utc("2024-01-02T03:04:05Z"),
                                                   "ServiceName": "s3", "Region": "us-east-1"})
        self.assertEqual(iam.get_access_key_last_used(AccessKeyId=a2)["AccessKeyLastUsed"],
                         {"ServiceName": "N/A", "Region": "N/A"})

        # mutate
        view = self.L.ok("/_launcher/key", {"account": SEEDED, "user": "alice", "access_key_id": a2,
                                            "status": "Active", "create_date": "2022-02-02T02:02:02Z",
                                            "last_used": {"date": "2025-03-04T05:06:07Z", "service": "ec2", "region": "eu-west-3"}})
        self.assertEqual(view["status"], "Active")
        self.assertEqual(view["create_date"], "2022-02-02T02:02:02Z")
        self.L.ok("/_launcher/key", {"account": SEEDED, "user": "alice", "access_key_id": a1, "last_used": None})
        keys = {k["AccessKeyId"]: k for k in iam.list_access_keys(UserName="alice")["AccessKeyMetadata"]}
        self.assertEqual(keys[a2]["Status"], "Active")
        self.assertEqual(keys[a2]["CreateDate"], utc("2022-02-02T02:02:02Z"))
        self.assertEqual(keys[a1]["CreateDate"], utc("2020-01-02T03:04:05Z"))  # untouched
        self.assertEqual(iam.get_access_key_last_used(AccessKeyId=a2)["AccessKeyLastUsed"],
                         {"LastUsedDate": utc("2025-03-04T05:06:07Z"), "ServiceName": "ec2", "Region": "eu-west-3"})
        self.assertEqual(iam.get_access_key_last_used(AccessKeyId=a1)["AccessKeyLastUsed"],
                         {"ServiceName": "N/A", "Region": "N/A"})

        # delete a key, then the user
        self.L.ok("/_launcher/delete_key", {"account": SEEDED, "user": "alice", "access_key_id": a1})
        self.assertEqual([k["AccessKeyId"] for k in iam.list_access_keys(UserName="alice")["AccessKeyMetadata"]], [a2])
        with self.assertRaises(ClientError) as cm:
            iam.get_access_key_last_used(AccessKeyId=a1)
        self.assertEqual(cm.exception.response["Error"]["Code"], "NoSuchEntity")
        self.L.ok("/_launcher/delete_user", {"account": SEEDED, "user": "alice"})
        self.assertNotIn("alice", [u["UserName"] for u in iam.list_users()["Users"]])
        with self.assertRaises(ClientError) as cm:
            iam.list_access_keys(UserName="alice")
        self.assertEqual(cm.exception.response["Error"]["Code"], "NoSuchEntity")
        with self.assertRaises(ClientError):
            iam.get_access_key_last_used(AccessKeyId=a2)

        # a fixed key id/secret, usable as base credentials that map to the account
        answer = self.L.ok("/_launcher/seed", {"account": SEEDED, "users": [
            {"name": "exporter", "keys": [{"access_key_id": "AKIAFIXEDKEY88888888", "secret_access_key": "s3cr3t"}]}]})
        self.assertEqual(answer["users"][0]["keys"], ["AKIAFIXEDKEY88888888"])
        sts = boto3.client("sts", config=NO_RETRY, endpoint_url=self.L.url, region_name="us-east-1",
                           aws_access_key_id="AKIAFIXEDKEY88888888", aws_secret_access_key="s3cr3t")
        self.assertEqual(sts.get_caller_identity()["Account"], SEEDED)

    def test_09_control_errors(self) -> None:
        self.L.ok("/_launcher/seed", {"account": SEEDED, "users": [{"name": "carol", "keys": [{}]}]})
        cases = [
            ("/_launcher/seed", {"account": "12", "users": []}, "account"),
            ("/_launcher/seed", {"account": SEEDED, "users": [{"name": "carol"}]}, "already exists"),
            ("/_launcher/seed", {"account": SEEDED, "users": [{"name": "x", "create_date": "yesterday"}]}, "create_date"),
            ("/_launcher/seed", {"account": SEEDED, "users": [{"name": "x", "create_date": "2020-01-01T00:00:00"}]}, "time zone"),
            ("/_launcher/seed", {"account": SEEDED, "users": [{"name": "x", "keys": [{}, {}, {}]}]}, "at most 2"),
            ("/_launcher/seed", {"account": SEEDED, "users": [{"name": "x", "keys": [{"status": "Enabled"}]}]}, "status"),
            ("/_launcher/seed", {"account": SEEDED, "users": [{"name": "bad name"}]}, "name"),
            ("/_launcher/key", {"account": SEEDED, "user": "nobody", "access_key_id": "AKIA0000000000000000"}, "no user"),
            ("/_launcher/key", {"account": SEEDED, "user": "carol", "access_key_id": "AKIA0000000000000000"}, "no key"),
            ("/_launcher/key", {"account": SEEDED, "user": "carol", "access_key_id": "AKIA0000000000000000", "bogus": 1}, "unknown field"),
            ("/_launcher/delete_key", {"account": SEEDED, "user": "carol", "access_key_id": "AKIA0000000000000000"}, "no key"),
            ("/_launcher/delete_user", {"account": SEEDED, "user": "nobody"}, "no user"),
            ("/_launcher/faults", {"faults": [{"kind": "explode"}]}, "kind"),
            ("/_launcher/faults", {"faults": [{"kind": "throttle", "count": 0}]}, "count"),
            ("/_launcher/pagination", {"short_pages": "no"}, "short_pages"),
            ("/_launcher/faults", {"faults": [{"kind": "error"}]}, "faults[0].code"),
            ("/_launcher/faults", {"faults": [{"kind": "error", "code": "X", "status": 200}]}, "faults[0].status"),
            ("/_launcher/faults", {"faults": [{"kind": "throttle", "code": "X"}]}, "only for kind 'error'"),
            ("/_launcher/seed", {"account": SEEDED, "users": [{"name": "x", "tags": {"k": 1}}]}, "users[0].tags.k"),
            ("/_launcher/seed", {"account": SEEDED, "users": [{"name": "x", "tags": {f"k{i}": "v" for i in range(51)}}]}, "at most 50"),
            ("/_launcher/seed", {"account": SEEDED, "users": [{"name": "x", "tags": ["k"]}]}, "users[0].tags"),
            ("/_launcher/organization", {"accounts": [{"id": "1", "name": "x"}]}, "accounts[0].id"),
            ("/_launcher/organization", {"accounts": [{"id": "210000000009", "name": "x", "ou": "nope"}]}, "accounts[0].ou"),
            ("/_launcher/organization", {"accounts": [{"id": "210000000009", "name": "x", "state": "GONE"}]}, "accounts[0].state"),
            ("/_launcher/organization", {"accounts": [{"id": "210000000009"}]}, "accounts[0].name"),
            ("/_launcher/organization", {"accounts": [{"id": "210000000009", "name": "a"}, {"id": "210000000009", "name": "b"}]}, "twice"),
            ("/_launcher/organization", {"ous": [{"name": "a"}, {"name": "a"}]}, "ous[1].name"),
            ("/_launcher/organization", {"ous": [{"name": "a/b"}]}, "ous[0].name"),
            ("/_launcher/organization", {"ous": [{"name": "a", "children": [{"name": "b", "kids": []}]}]}, "ous[0].children[0]"),
            ("/_launcher/organization", {"management_account": "12"}, "management_account"),
            ("/_launcher/organization", {"bogus": 1}, "unknown field"),
            ("/_launcher/organization/delete", {"management_account": "999999999990"}, "no organization"),
            ("/_launcher/organizations_paging", {"max_results": 0}, "max_results"),
            ("/_launcher/latency", {"min_ms": 50, "max_ms": 10}, "max_ms"),
            ("/_launcher/latency", {"min_ms": -1}, "min_ms"),
            ("/_launcher/latency", {"min_ms": "30"}, "min_ms"),
            ("/_launcher/rate_limits", {"default": {"rate": 0}}, "default.rate"),
            ("/_launcher/rate_limits", {"default": {"rate": 1, "burst": 0.5}}, "default.burst"),
            ("/_launcher/rate_limits", {"default": {"rate": 1, "size": 2}}, "default: unknown field"),
            ("/_launcher/rate_limits", {"operations": {"ListUsers": 5}}, "operations.ListUsers"),
            ("/_launcher/rate_limits", {"accounts": ["x"]}, "accounts"),
            ("/_launcher/rate_limits", {"off": True, "default": None}, "unknown field"),
            ("/_launcher/external_id", {"role_arn": "nope", "external_id": "abc"}, "role_arn"),
            ("/_launcher/external_id", {"role_arn": "arn:aws:iam::111111111111:role/X"}, "external_id"),
            ("/_launcher/external_id", {"role_arn": "arn:aws:iam::111111111111:role/X", "external_id": 5}, "external_id"),
            ("/_launcher/credential_report", {"max_age_seconds": 0}, "max_age_seconds"),
            ("/_launcher/credential_report", {"csv_quoting": "yes"}, "csv_quoting"),
            ("/_launcher/credential_report/expire", {"account": "1"}, "account"),
            ("/_launcher/root", {"account": SEEDED, "mfa": True}, "unknown field"),
        ]
        for path, body, words in cases:
            status, answer = self.L.control(path, body)
            self.assertEqual(status, 400, (path, body, answer))
            self.assertIn(words, answer["error"], (path, body, answer))
        carol_key = self.iam(SEEDED).list_access_keys(UserName="carol")["AccessKeyMetadata"][0]["AccessKeyId"]
        status, answer = self.L.control("/_launcher/key", {"account": SEEDED, "user": "carol",
                                                           "access_key_id": carol_key, "create_date": "2020-13-01T00:00:00Z"})
        self.assertEqual(status, 400)
        self.assertIn("create_date", answer["error"])
        self.assertEqual(self.L.control("/_launcher/nope")[0], 404)
        # nothing half-done: the failed seeds created no user, no setting changed
        names = [u["UserName"] for u in self.iam(SEEDED).list_users(MaxItems=1000)["Users"]]
        self.assertNotIn("x", names)
        self.assertEqual(self.L.ok("/_launcher/latency"), {"min_ms": 0, "max_ms": 0})
        self.assertEqual(self.L.ok("/_launcher/rate_limits"), {"off": True})
        self.assertEqual(self.L.ok("/_launcher/external_id"), {"external_ids": {}})
        self.assertEqual(self.L.ok("/_launcher/organizations_paging"), {"max_results": None})
        self.assertEqual(self.L.ok("/_launcher/credential_report"), {"max_age_seconds": 14400, "csv_quoting": False})
        self.assertEqual(self.L.ok("/_launcher/faults"), {"faults": []})
        self.assertNotIn("999999999990", self.L.ok("/_launcher/organization")["organizations"])

    def test_10_counts(self) -> None:
        self.L.ok("/_launcher/counts/reset", {})
        self.assertEqual(self.L.ok("/_launcher/counts"), {})
        iam = self.iam(OTHER)
        iam.list_users()
        iam.list_users()
        self.assertEqual(self.counts(OTHER), {"AssumeRole": 1, "ListUsers": 2})
        self.L.ok("/_launcher/counts/reset", {})
        self.assertEqual(self.L.ok("/_launcher/counts"), {})

    def test_11_credential_report_root_row_and_generated_time(self) -> None:
        account = REPORT
        self.seed_users(account, 2, prefix="rep")
        self.L.ok("/_launcher/root", {"account": account, "mfa_active": True, "access_key_1_active": True})
        iam = self.iam(account)
        before = datetime.now(timezone.utc).replace(microsecond=0)
        self.assertEqual(iam.generate_credential_report()["State"], "STARTED")
        self.assertEqual(iam.generate_credential_report()["State"], "COMPLETE")
        report = iam.get_credential_report()
        self.assertGreaterEqual(report["GeneratedTime"], before, "GeneratedTime should be real, not 2015")
        rows = list(csv.DictReader(io.StringIO(report["Content"].decode())))
        self.assertEqual(rows[0]["user"], "<root_account>")
        self.assertEqual(rows[0]["arn"], f"arn:aws:iam::{account}:root")
        self.assertEqual((rows[0]["mfa_active"], rows[0]["access_key_1_active"], rows[0]["access_key_2_active"]),
                         ("true", "true", "false"))
        self.assertNotEqual(rows[0]["access_key_1_last_rotated"], "N/A")
        self.assertEqual(rows[0]["access_key_2_last_rotated"], "N/A")
        self.assertEqual([r["user"] for r in rows[1:]], ["rep-00000", "rep-00001"])
        self.assertEqual(len(rows[0]), len(rows[1]), "the root row has every column")
        bad = self.L.control("/_launcher/root", {"account": account, "mfa_active": "yes"})
        self.assertEqual(bad[0], 400)


    # -- AWS Organizations
    ORG_TREE = {
        "ous": [{"name": "prod", "children": [{"name": "prod-eu", "children": []}, {"name": "prod-us"}]},
                {"name": "sandbox", "tags": {"kind": "sandbox"}}],
        "accounts": [
            {"id": "210000000001", "name": "payments-prod", "ou": "prod/prod-eu", "tags": {"team": "payments", "cost-center": "42"}},
            {"id": "210000000002", "name": "search-prod", "ou": "prod/prod-us", "state": "SUSPENDED"},
            {"id": "210000000003", "name": "old-sandbox", "ou": "sandbox", "state": "CLOSED"},
            {"id": "210000000004", "name": "brand-new", "state": "PENDING_ACTIVATION"},
            {"id": "210000000005", "name": "leaving", "ou": "prod", "state": "PENDING_CLOSURE"},
        ],
    }

    def org_tree(self, org: Any, root_id: str) -> dict[str, list[str]]:
        """{OU path: sorted account ids} read through the Organizations API, as the exporter would."""
        tree: dict[str, list[str]] = {}

        def walk(parent: str, path: str) -> None:
            tree[path] = sorted(a["Id"] for p in org.get_paginator("list_accounts_for_parent").paginate(ParentId=parent)
                                for a in p["Accounts"])
            for p in org.get_paginator("list_organizational_units_for_parent").paginate(ParentId=parent):
                for ou in p["OrganizationalUnits"]:
                    walk(ou["Id"], f"{path}/{ou['Name']}" if path else ou["Name"])

        walk(root_id, "")
        return tree

    def test_12_organization_tree(self) -> None:
        v = self.L.ok("/_launcher/organization", self.ORG_TREE)
        self.assertRegex(v["organization_id"], r"^o-[a-z0-9]{10}$")
        self.assertRegex(v["root_id"], r"^r-[a-z0-9]{4}$")
        self.assertEqual(set(v["ous"]), {"prod", "prod/prod-eu", "prod/prod-us", "sandbox"})
        self.assertEqual([a["id"] for a in v["accounts"]], [MGMT] + [f"21000000000{i}" for i in range(1, 6)])
        org = self.org()
        desc = org.describe_organization()
        self.assertEqual(desc["ResponseMetadata"]["HTTPHeaders"]["content-type"], "application/x-amz-json-1.1")
        self.assertEqual((desc["Organization"]["Id"], desc["Organization"]["MasterAccountId"]), (v["organization_id"], MGMT))
        self.assertEqual([r["Id"] for r in org.list_roots()["Roots"]], [v["root_id"]])
        self.assertEqual(self.org_tree(org, v["root_id"]), {
            "": [MGMT, "210000000004"], "prod": ["210000000005"], "prod/prod-eu": ["210000000001"],
            "prod/prod-us": ["210000000002"], "sandbox": ["210000000003"]})
        accounts = {a["Id"]: a for p in org.get_paginator("list_accounts").paginate() for a in p["Accounts"]}
        self.assertEqual(len(accounts), 6)
        for spec in self.ORG_TREE["accounts"]:
            a, state = accounts[spec["id"]], spec.get("state", "ACTIVE")
            self.assertEqual((a["Name"], a["State"]), (spec["name"], state))
            if state in ("ACTIVE", "SUSPENDED", "PENDING_CLOSURE"):
                self.assertEqual(a["Status"], state)
            else:
                self.assertNotIn("Status", a, "AWS answers no Status for CLOSED and PENDING_ACTIVATION")
        self.assertNotIn("Status", org.describe_account(AccountId="210000000003")["Account"])
        self.assertEqual(accounts[MGMT]["Name"], "management")
        tags = {t["Key"]: t["Value"] for t in org.list_tags_for_resource(ResourceId="210000000001")["Tags"]}
        self.assertEqual(tags, {"team": "payments", "cost-center": "42"})
        self.assertEqual(org.list_tags_for_resource(ResourceId=v["ous"]["sandbox"])["Tags"], [{"Key": "kind", "Value": "sandbox"}])
        # a member sees the organization but may not list it; an outsider is in none
        member = self.org(self.assume("210000000001"))
        self.assertEqual(member.describe_organization()["Organization"]["Id"], v["organization_id"])
        self.assertEqual(self.error(member.list_accounts)[:2], (400, "AccessDeniedException"))
        outsider = self.org(self.assume(OTHER))
        self.assertEqual(self.error(outsider.list_roots)[:2], (400, "AWSOrganizationsNotInUseException"))

        # a bad tree changes nothing
        self.bad("/_launcher/organization", {"accounts": [{"id": "210000000009", "name": "x", "ou": "nope"}]}, "accounts[0].ou")
        self.assertEqual(len(org.list_accounts()["Accounts"]), 6)

        # change it: move, retag, suspend, remove, add; ids and join times stay
        tree = json.loads(json.dumps(self.ORG_TREE))
        accts = {a["id"]: a for a in tree["accounts"]}
        accts["210000000001"].update(ou="sandbox", tags={"team": "payments", "cost-center": "43"})
        accts["210000000005"]["state"] = "SUSPENDED"
        del accts["210000000004"]
        accts["210000000006"] = {"id": "210000000006", "name": "added", "ou": "prod/prod-eu"}
        tree["accounts"] = list(accts.values())
        v2 = self.L.ok("/_launcher/organization", tree)
        self.assertEqual((v2["organization_id"], v2["root_id"], v2["ous"]), (v["organization_id"], v["root_id"], v["ous"]))
        self.assertEqual(self.org_tree(org, v["root_id"]), {
            "": [MGMT], "prod": ["210000000005"], "prod/prod-eu": ["210000000006"],
            "prod/prod-us": ["210000000002"], "sandbox": ["210000000001", "210000000003"]})
        after = {a["Id"]: a for a in org.list_accounts()["Accounts"]}
        self.assertEqual((after["210000000005"]["State"], after["210000000005"]["Status"]), ("SUSPENDED", "SUSPENDED"))
        self.assertEqual(after["210000000001"]["JoinedTimestamp"], accounts["210000000001"]["JoinedTimestamp"])
        self.assertEqual(self.error(lambda: org.describe_account(AccountId="210000000004"))[1], "AccountNotFoundException")
        self.assertEqual(org.list_tags_for_resource(ResourceId="210000000001")["Tags"],
                         [{"Key": "cost-center", "Value": "43"}, {"Key": "team", "Value": "payments"}])
        self.assertEqual(self.L.ok("/_launcher/organization")["organizations"][MGMT], v2)

    def test_13_organizations_paging(self) -> None:
        tags = {f"k{i}": f"v{i}" for i in range(5)}
        v = self.L.ok("/_launcher/organization", {
            "ous": [{"name": n} for n in ("a", "b", "c")],
            "accounts": [{"id": f"22000000000{i}", "name": f"acct-{i}", "tags": tags if i == 1 else {}} for i in range(1, 8)]})
        org, root = self.org(), v["root_id"]
        # default: moto's page sizes, so a small organization never pages
        r = org.list_accounts()
        self.assertEqual((len(r["Accounts"]), "NextToken" in r), (8, False))
        self.assertNotIn("NextToken", org.list_tags_for_resource(ResourceId="220000000001"))

        self.assertEqual(self.L.ok("/_launcher/organizations_paging", {"max_results": 2}), {"max_results": 2})

        def pages(op: str, key: str, **kw: Any) -> list[list[str]]:
            out = [[i.get("Id") or i.get("Key") for i in p[key]] for p in org.get_paginator(op).paginate(**kw)]
            return out

        ids = pages("list_accounts", "Accounts")
        self.assertEqual([len(p) for p in ids], [2, 2, 2, 2])
        self.assertEqual(sum(ids, []), sorted([MGMT] + [f"22000000000{i}" for i in range(1, 8)]))
        self.assertEqual([len(p) for p in pages("list_accounts_for_parent", "Accounts", ParentId=root)], [2, 2, 2, 2])
        self.assertEqual([len(p) for p in pages("list_accounts", "Accounts", PaginationConfig={"PageSize": 1})], [1] * 8)
        self.assertEqual(pages("list_tags_for_resource", "Tags", ResourceId="220000000001"),
                         [["k0", "k1"], ["k2", "k3"], ["k4"]])
        self.assertEqual([len(p) for p in pages("list_organizational_units_for_parent", "OrganizationalUnits", ParentId=root)], [2, 1])
        self.assertEqual([len(p) for p in pages("list_children", "Children", ParentId=root, ChildType="ACCOUNT")], [2, 2, 2, 2])

        # tokens are opaque and only good for the request they came from
        first = org.list_accounts()
        token = first["NextToken"]
        tag_token = org.list_tags_for_resource(ResourceId="220000000001")["NextToken"]
        for call in (lambda: org.list_accounts(NextToken="garbage"),
                     lambda: org.list_accounts(NextToken=token[:-4]),
                     lambda: org.list_accounts_for_parent(ParentId=root, NextToken=token),
                     lambda: org.list_accounts(NextToken=tag_token),
                     lambda: org.list_tags_for_resource(ResourceId="220000000002", NextToken=tag_token)):
            status, code, message, _ = self.error(call)
            self.assertEqual((status, code), (400, "InvalidInputException"))
            self.assertIn("nextToken", message)
        # the token names the last item returned: removing it between pages skips nothing
        removed = first["Accounts"][-1]["Id"]
        self.L.ok("/_launcher/organization", {"ous": [{"name": n} for n in ("a", "b", "c")],
                                              "accounts": [{"id": f"22000000000{i}", "name": f"acct-{i}"}
                                                           for i in range(1, 8) if f"22000000000{i}" != removed]})
        self.assertEqual([a["Id"] for a in org.list_accounts(NextToken=token)["Accounts"]], ids[1])

        self.L.ok("/_launcher/organizations_paging", {"max_results": None})
        self.assertNotIn("NextToken", org.list_accounts())

    def test_14_organizations_counts_and_faults(self) -> None:
        self.L.ok("/_launcher/organization", {"accounts": [{"id": "230000000001", "name": "one"}]})
        org = self.org()
        self.L.ok("/_launcher/counts/reset", {})
        org.list_roots()
        org.list_accounts()
        org.list_accounts()
        self.assertEqual(self.counts(MGMT), {"ListRoots": 1, "ListAccounts": 2})
        self.L.ok("/_launcher/faults", {"faults": [
            {"kind": "throttle", "operation": "ListAccounts", "account": MGMT, "count": 1},
            {"kind": "access_denied", "operation": "ListAccounts", "count": 1},
            {"kind": "error500", "operation": "ListAccounts", "count": 1},
            {"kind": "no_such_entity", "operation": "DescribeAccount", "count": 1},
            {"kind": "error", "status": 409, "code": "ConcurrentModificationException", "message": "busy",
             "operation": "ListAccounts", "count": 1},
        ]})
        for want in ((400, "TooManyRequestsException"), (400, "AccessDeniedException"), (500, "ServiceException")):
            status, code, _, headers = self.error(org.list_accounts)
            self.assertEqual((status, code), want)
            self.assertEqual(headers["content-type"], "application/x-amz-json-1.1")
            self.assertEqual(headers["x-amzn-errortype"], code)
        self.assertEqual(self.error(org.list_accounts)[:3], (409, "ConcurrentModificationException", "busy"))
        self.assertEqual(self.error(lambda: org.describe_account(AccountId="230000000001"))[:2], (400, "AccountNotFoundException"))
        self.assertEqual(org.describe_account(AccountId="230000000001")["Account"]["Name"], "one")
        self.assertEqual(len(org.list_accounts()["Accounts"]), 2)
        self.assertEqual(self.counts(MGMT), {"ListRoots": 1, "ListAccounts": 7, "DescribeAccount": 2})
        self.assertGreater(self.L.ok("/_launcher/bytes")[MGMT]["ListAccounts"], 0)

    def test_22_another_management_account_and_delete(self) -> None:
        mgmt2 = "240000000000"
        self.L.ok("/_launcher/seed", {"account": mgmt2, "users": [{"name": "org-reader", "keys": [
            {"access_key_id": "AKIAORGREADER0000001", "secret_access_key": "org-reader-secret"}]}]})
        v = self.L.ok("/_launcher/organization", {"management_account": mgmt2, "accounts": [
            {"id": "240000000001", "name": "child", "state": "SUSPENDED"}]})
        self.assertEqual(v["management_account"], mgmt2)
        org2 = self.org(dict(endpoint_url=self.L.url, region_name="us-east-1",
                             aws_access_key_id="AKIAORGREADER0000001", aws_secret_access_key="org-reader-secret"))
        self.assertEqual(sorted(a["Id"] for a in org2.list_accounts()["Accounts"]), [mgmt2, "240000000001"])
        self.assertEqual(org2.describe_organization()["Organization"]["MasterAccountId"], mgmt2)
        self.assertNotEqual(v["organization_id"], self.L.ok("/_launcher/organization", {"accounts": []})["organization_id"])
        self.assertIn(mgmt2, self.L.ok("/_launcher/organization")["organizations"])
        # an account belongs to one organization at a time
        self.bad("/_launcher/organization", {"accounts": [{"id": "240000000001", "name": "stolen"}]}, "240000000000's organization")
        self.assertEqual(self.L.ok("/_launcher/organization/delete", {"management_account": mgmt2}), {"deleted": mgmt2})
        self.assertEqual(self.error(org2.list_accounts)[:2], (400, "AWSOrganizationsNotInUseException"))
        self.assertNotIn(mgmt2, self.L.ok("/_launcher/organization")["organizations"])
        self.L.ok("/_launcher/organization", {"accounts": [{"id": "240000000001", "name": "moved"}]})

    # -- a generic AWS error
    def test_15_error_fault_any_code(self) -> None:
        self.seed_users(FAULTY, 1, prefix="gen")
        iam = self.iam(FAULTY)
        self.L.ok("/_launcher/faults", {"faults": [
            {"kind": "error", "status": 410, "code": "ReportExpired", "message": "too old",
             "operation": "GetCredentialReport", "account": FAULTY, "count": 1},
            {"kind": "error", "status": 404, "code": "ReportInProgress", "operation": "GetCredentialReport", "count": 1},
            {"kind": "error", "status": 410, "code": "ReportNotPresent", "operation": "GetCredentialReport", "count": 1},
            {"kind": "error", "status": 409, "code": "LimitExceeded", "operation": "GenerateCredentialReport", "count": 1},
            {"kind": "error", "status": 503, "code": "ServiceFailure", "operation": "ListUsers", "count": 1},
            {"kind": "error", "code": "InvalidClientTokenId", "operation": "GetCallerIdentity", "count": 1},
        ]})
        self.assertEqual(self.error(iam.get_credential_report)[:3], (410, "ReportExpired", "too old"))
        self.assertEqual(self.error(iam.get_credential_report)[:2], (404, "ReportInProgress"))
        self.assertEqual(self.error(iam.get_credential_report)[:2], (410, "ReportNotPresent"))
        self.assertEqual(self.error(iam.generate_credential_report)[:2], (409, "LimitExceeded"))
        with self.assertRaises(ClientError) as cm:
            iam.list_users()
        self.assertEqual((cm.exception.response["Error"]["Code"], cm.exception.response["Error"]["Type"]),
                         ("ServiceFailure", "Receiver"))
        sts = boto3.client("sts", config=NO_RETRY, **self.base_session())
        self.assertEqual(self.error(sts.get_caller_identity)[:2], (400, "InvalidClientTokenId"))
        self.assertIn("gen-00000", [u["UserName"] for u in iam.list_users()["Users"]])
        faults = self.L.ok("/_launcher/faults")["faults"]
        self.assertEqual(faults[0]["code"], "ReportExpired")
        self.assertEqual([f["remaining"] for f in faults], [0] * 6)

    # -- ExternalId
    def test_16_external_id(self) -> None:
        role = f"arn:aws:iam::{EXT}:role/Auditor"
        sts = boto3.client("sts", config=NO_RETRY, **self.base_session())
        answer = self.L.ok("/_launcher/external_id", {"role_arn": role, "external_id": "s3cret-id"})
        self.assertEqual(answer, {"external_ids": {role: "s3cret-id"}})
        for kw in ({}, {"ExternalId": "wrong-id"}, {"ExternalId": "s3cret-id "}):
            status, code, message, _ = self.error(lambda: sts.assume_role(RoleArn=role, RoleSessionName="audit", **kw))
            self.assertEqual((status, code), (403, "AccessDenied"))
            self.assertEqual(message, f"User: arn:aws:iam::{MGMT}:root is not authorized to perform: "
                                      f"sts:AssumeRole on resource: {role}")
        creds = sts.assume_role(RoleArn=role, RoleSessionName="audit", ExternalId="s3cret-id")["Credentials"]
        assumed = boto3.client("sts", config=NO_RETRY, endpoint_url=self.L.url, region_name="us-east-1",
                               aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                               aws_session_token=creds["SessionToken"])
        self.assertEqual(assumed.get_caller_identity()["Account"], EXT)
        # only that role; the message names the calling user
        sts.assume_role(RoleArn=f"arn:aws:iam::{EXT}:role/Other", RoleSessionName="other")
        self.L.ok("/_launcher/seed", {"account": OTHER, "users": [{"name": "deployer", "keys": [
            {"access_key_id": "AKIAEXTCALLER0000001", "secret_access_key": "deployer-secret"}]}]})
        deployer = boto3.client("sts", config=NO_RETRY, endpoint_url=self.L.url, region_name="us-east-1",
                                aws_access_key_id="AKIAEXTCALLER0000001", aws_secret_access_key="deployer-secret")
        message = self.error(lambda: deployer.assume_role(RoleArn=role, RoleSessionName="deploy"))[2]
        self.assertTrue(message.startswith(f"User: arn:aws:iam::{OTHER}:user/deployer is not authorized"), message)
        # null removes it
        self.assertEqual(self.L.ok("/_launcher/external_id", {"role_arn": role, "external_id": None}), {"external_ids": {}})
        sts.assume_role(RoleArn=role, RoleSessionName="audit")

    # -- latency, rate limits, bytes
    def test_17_latency_overlaps(self) -> None:
        clients = [boto3.client("sts", config=NO_RETRY, **self.base_session()) for _ in range(8)]
        for c in clients:
            c.get_caller_identity()  # warm: loading the model is not the launcher's time
        self.assertEqual(self.L.ok("/_launcher/latency", {"min_ms": 300, "max_ms": 300}), {"min_ms": 300, "max_ms": 300})
        took: list[float] = []

        def call(c: Any) -> None:
            t = time.monotonic()
            c.get_caller_identity()
            took.append(time.monotonic() - t)

        t0 = time.monotonic()
        with ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(call, clients))
        wall = time.monotonic() - t0
        log(f"8 concurrent requests with 300 ms latency: {wall:.2f}s in all, each {min(took):.2f}-{max(took):.2f}s")
        self.assertGreaterEqual(min(took), 0.3)
        self.assertLess(wall, 1.2, "the waits did not overlap (8 x 0.3 s = 2.4 s if serialized)")
        t0 = time.monotonic()
        self.L.ok("/_launcher/counts")
        self.assertLess(time.monotonic() - t0, 0.25, "control requests are not delayed")
        self.L.ok("/_launcher/latency", {"min_ms": 20, "max_ms": 60})
        for _ in range(5):
            t0 = time.monotonic()
            clients[0].get_caller_identity()
            self.assertGreaterEqual(time.monotonic() - t0, 0.02)
        self.assertEqual(self.L.ok("/_launcher/latency", {"min_ms": 0, "max_ms": 0}), {"min_ms": 0, "max_ms": 0})

    def test_18_rate_limits(self) -> None:
        self.seed_users(LIMITED, 2, prefix="lim")
        iam = self.iam(LIMITED)
        key = iam.list_access_keys(UserName="lim-00000")["AccessKeyMetadata"][0]["AccessKeyId"]
        other = self.iam(OTHER)
        limits = {"default": {"rate": 1, "burst": 3},
                  "operations": {"ListAccessKeys": None, "GetAccessKeyLastUsed": {"rate": 0.5, "burst": 4}},
                  "accounts": [LIMITED]}
        self.assertEqual(self.L.ok("/_launcher/rate_limits", limits)["default"], {"rate": 1, "burst": 3})
        self.L.ok("/_launcher/counts/reset", {})

        def outcomes(call: Callable[[], Any], n: int) -> list[str]:
            out = []
            for _ in range(n):
                try:
                    call()
                    out.append("ok")
                except ClientError as e:
                    err = e.response
                    self.assertEqual((err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Message"]), (400, "Rate exceeded"))
                    out.append(err["Error"]["Code"])
            return out

        self.assertEqual(outcomes(iam.list_users, 6), ["ok"] * 3 + ["Throttling"] * 3)
        self.assertEqual(outcomes(lambda: iam.get_access_key_last_used(AccessKeyId=key), 6), ["ok"] * 4 + ["Throttling"] * 2)
        self.assertEqual(outcomes(lambda: iam.list_access_keys(UserName="lim-00000"), 8), ["ok"] * 8)  # null: unlimited
        self.assertEqual(outcomes(other.list_users, 6), ["ok"] * 6)  # not a listed account
        self.assertEqual(self.L.ok("/_launcher/throttled"), {LIMITED: {"ListUsers": 3, "GetAccessKeyLastUsed": 2}})
        c = self.counts(LIMITED)
        self.assertEqual((c["ListUsers"], c["GetAccessKeyLastUsed"], c["ListAccessKeys"]), (6, 6, 8))
        time.sleep(1.1)  # refills continuously: one more ListUsers token
        self.assertEqual(outcomes(iam.list_users, 2), ["ok", "Throttling"])

        # Organizations answer TooManyRequestsException
        self.L.ok("/_launcher/organization", {"accounts": []})
        self.L.ok("/_launcher/rate_limits", {"default": None, "operations": {"ListRoots": {"rate": 1, "burst": 1}}})
        org = self.org()
        org.list_roots()
        self.assertEqual(self.error(org.list_roots)[:2], (400, "TooManyRequestsException"))
        self.assertEqual(self.L.ok("/_launcher/throttled")[MGMT], {"ListRoots": 1})
        self.assertEqual(self.L.ok("/_launcher/rate_limits", {"off": True}), {"off": True})
        self.assertEqual(outcomes(iam.list_users, 4), ["ok"] * 4)

    def test_19_response_bytes(self) -> None:
        self.seed_users(BYTES, 3, prefix="b")
        self.L.ok("/_launcher/counts/reset", {})
        iam = self.iam(BYTES)
        sizes = [int(iam.list_users()["ResponseMetadata"]["HTTPHeaders"]["content-length"]) for _ in range(2)]
        self.L.ok("/_launcher/faults", {"faults": [{"kind": "throttle", "operation": "ListUsers", "count": 1}]})
        throttled = int(self.error(iam.list_users)[3]["content-length"])
        got = self.L.ok("/_launcher/bytes")[BYTES]
        self.assertEqual(got["ListUsers"], sum(sizes) + throttled)
        self.assertGreater(got["AssumeRole"], 500)
        self.assertEqual(set(self.L.ok("/_launcher/bytes")), set(self.L.ok("/_launcher/counts")))
        self.L.ok("/_launcher/counts/reset", {})
        self.assertEqual((self.L.ok("/_launcher/bytes"), self.L.ok("/_launcher/throttled")), ({}, {}))

    # -- the credential report as AWS keeps it
    def report_rows(self, iam: Any) -> tuple[datetime, list[dict]]:
        r = iam.get_credential_report()
        return r["GeneratedTime"], list(csv.DictReader(io.StringIO(r["Content"].decode())))

    def test_20_credential_report_snapshot(self) -> None:
        acct = SNAP
        seeded = self.L.ok("/_launcher/seed", {"account": acct, "users": [
            {"name": "alice", "password": True, "password_last_used": "2024-05-06T07:08:09Z",
             "keys": [{"create_date": "2023-01-02T03:04:05Z",
                       "last_used": {"date": "2024-01-02T03:04:05Z", "service": "s3", "region": "eu-west-1"}},
                      {"create_date": "2023-06-07T08:09:10Z"}]},
            {"name": "bob", "keys": []},
        ]})
        iam = self.iam(acct)
        self.assertEqual(self.error(iam.get_credential_report)[:2], (410, "ReportNotPresent"))
        self.assertEqual(iam.generate_credential_report()["State"], "STARTED")
        self.assertEqual(self.error(iam.get_credential_report)[:2], (404, "ReportInProgress"))
        before = datetime.now(timezone.utc).replace(microsecond=0)
        self.assertEqual(iam.generate_credential_report()["State"], "COMPLETE")
        generated, rows = self.report_rows(iam)
        self.assertLessEqual(before, generated)
        self.assertLessEqual(generated, datetime.now(timezone.utc))
        by_user = {r["user"]: r for r in rows}
        self.assertEqual(list(by_user), ["alice", "bob"])
        alice, bob = by_user["alice"], by_user["bob"]
        lu = iam.get_access_key_last_used(AccessKeyId=seeded["users"][0]["keys"][0])["AccessKeyLastUsed"]
        self.assertEqual(utc(alice["access_key_1_last_used_date"]), lu["LastUsedDate"])
        self.assertEqual((alice["access_key_1_last_used_region"], alice["access_key_1_last_used_service"]),
                         (lu["Region"], lu["ServiceName"]))
        self.assertEqual((alice["access_key_2_active"], alice["access_key_2_last_rotated"], alice["access_key_2_last_used_date"],
                          alice["access_key_2_last_used_region"], alice["access_key_2_last_used_service"]),
                         ("true", "2023-06-07T08:09:10+00:00", "N/A", "N/A", "N/A"))
        self.assertEqual((alice["password_enabled"], alice["password_last_used"]), ("true", "2024-05-06T07:08:09+00:00"))
        self.assertEqual([bob[c] for c in ("password_enabled", "password_last_used", "password_last_changed",
                                           "access_key_1_active", "access_key_1_last_rotated")],
                         ["false", "N/A", "N/A", "false", "N/A"])

        # changes after the report are not in it until a new one is generated
        self.L.ok("/_launcher/seed", {"account": acct, "users": [{"name": "carol", "keys": [{}]}]})
        self.L.ok("/_launcher/key", {"account": acct, "user": "alice", "access_key_id": seeded["users"][0]["keys"][0],
                                     "status": "Inactive"})
        self.assertEqual(iam.generate_credential_report()["State"], "COMPLETE")  # the report is young: reused
        self.assertEqual(self.report_rows(iam), (generated, rows))
        self.assertEqual(self.L.ok("/_launcher/credential_report/expire", {"account": acct}), {"account": acct, "expired": True})
        self.assertEqual(self.error(iam.get_credential_report)[:2], (410, "ReportExpired"))
        self.assertEqual(iam.generate_credential_report()["State"], "STARTED")
        self.assertEqual(iam.generate_credential_report()["State"], "COMPLETE")
        generated2, rows2 = self.report_rows(iam)
        self.assertGreaterEqual(generated2, generated)
        self.assertEqual([r["user"] for r in rows2], ["alice", "bob", "carol"])
        self.assertEqual(rows2[0]["access_key_1_active"], "false")

        # max age: older reports expire by themselves
        self.assertEqual(self.L.ok("/_launcher/credential_report", {"max_age_seconds": 1}),
                         {"max_age_seconds": 1, "csv_quoting": False})
        time.sleep(1.1)
        self.assertEqual(self.error(iam.get_credential_report)[:2], (410, "ReportExpired"))
        self.assertEqual(iam.generate_credential_report()["State"], "STARTED")

        # fields with commas: unquoted like moto by default, RFC 4180 on request
        self.L.ok("/_launcher/credential_report", {"max_age_seconds": 3600, "csv_quoting": True})
        self.L.ok("/_launcher/seed", {"account": acct, "users": [{"name": "svc,legacy", "keys": [{}]}]})
        self.L.ok("/_launcher/credential_report/expire", {"account": acct})
        self.assertEqual(iam.generate_credential_report()["State"], "STARTED")
        self.assertEqual(iam.generate_credential_report()["State"], "COMPLETE")
        rows3 = self.report_rows(iam)[1]
        self.assertEqual(rows3[-1]["user"], "svc,legacy")
        self.assertEqual(rows3[-1]["access_key_1_active"], "true")

        # a report made on request, then a key added after it: not in it
        made = self.L.ok("/_launcher/credential_report/generate", {"account": acct})
        self.assertEqual(iam.generate_credential_report()["State"], "COMPLETE")
        generated4, rows4 = self.report_rows(iam)
        self.assertEqual(generated4, utc(made["generated"]))
        bob_key = self.L.ok("/_launcher/add_key", {"account": acct, "user": "bob"})
        self.assertTrue(bob_key["access_key_id"].startswith("AKIA"))
        listed = iam.list_access_keys(UserName="bob")["AccessKeyMetadata"]
        self.assertEqual([k["AccessKeyId"] for k in listed], [bob_key["access_key_id"]])
        self.assertEqual(self.report_rows(iam)[1], rows4)
        self.assertEqual(self.L.control("/_launcher/add_key", {"account": acct, "user": "alice"})[0], 400,
                         "a third key")

    # -- user tags, paths, ListUserTags and GetAccountAuthorizationDetails paging
    def test_21_user_tags_paths_and_authorization_details(self) -> None:
        many = {f"tag-{i}": f"value-{i}" for i in range(5)}
        self.L.ok("/_launcher/seed", {"account": TAGGED, "users": [
            {"name": "alice", "path": "/eng/", "tags": {"owner": "alice@example.com", "team": "payments"}, "keys": [{}]},
            {"name": "bob", "tags": many},
            {"name": "carol"},
        ]})
        iam = self.iam(TAGGED)
        user = iam.get_user(UserName="alice")["User"]
        self.assertEqual(user["Path"], "/eng/")
        self.assertEqual(user["Arn"], f"arn:aws:iam::{TAGGED}:user/eng/alice")
        self.assertEqual({t["Key"]: t["Value"] for t in user["Tags"]}, {"owner": "alice@example.com", "team": "payments"})
        self.assertNotIn("Tags", iam.get_user(UserName="carol")["User"])
        listed = iam.list_users()["Users"]
        self.assertFalse([u for u in listed if "Tags" in u], "ListUsers answers no tags, as AWS")
        self.assertEqual([u["UserName"] for u in iam.list_users(PathPrefix="/eng/")["Users"]], ["alice"])

        self.L.ok("/_launcher/pagination", {"short_pages": False})
        tag_pages = [[t["Key"] for t in p["Tags"]]
                     for p in iam.get_paginator("list_user_tags").paginate(UserName="bob", PaginationConfig={"PageSize": 2})]
        self.assertEqual(tag_pages, [["tag-0", "tag-1"], ["tag-2", "tag-3"], ["tag-4"]])
        r = iam.list_user_tags(UserName="bob")
        self.assertEqual((len(r["Tags"]), r["IsTruncated"]), (5, False))

        iam.create_group(GroupName="admins")
        iam.create_role(RoleName="deployer", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
        seen, sizes, markers = [], [], []
        kw: dict = {"MaxItems": 2}
        while True:
            r = iam.get_account_authorization_details(**kw)
            page = ([u["UserName"] for u in r["UserDetailList"]] + [g["GroupName"] for g in r["GroupDetailList"]]
                    + [x["RoleName"] for x in r["RoleDetailList"]] + [p["PolicyName"] for p in r["Policies"]])
            sizes.append(len(page))
            seen += page
            for u in r["UserDetailList"]:
                if u["UserName"] == "alice":
                    self.assertEqual({t["Key"] for t in u["Tags"]}, {"owner", "team"})
            if not r["IsTruncated"]:
                break
            markers.append(r["Marker"])
            kw["Marker"] = r["Marker"]
        self.assertEqual(seen, ["alice", "bob", "carol", "admins", "deployer"])
        self.assertEqual(sizes, [2, 2, 1])
        for ch in "+/=":
            self.assertIn(ch, markers[0])
        only_users = iam.get_account_authorization_details(Filter=["User"], MaxItems=100)
        self.assertEqual(([u["UserName"] for u in only_users["UserDetailList"]], only_users["RoleDetailList"]),
                         (["alice", "bob", "carol"], []))
        # a marker of one operation is no marker of another
        self.assertEqual(self.error(lambda: iam.list_user_tags(UserName="bob", Marker=markers[0]))[:2], (400, "InvalidInput"))

    # -- service-specific credentials (the launcher's own), SSH keys, roles
    def list_all(self, call: Callable[..., dict], key: str, **kw: Any) -> tuple[list[int], list[dict], list[str]]:
        """Every page of a Marker/IsTruncated list, followed as the exporter does: page sizes,
        items, markers. Stops on IsTruncated only (a short page is no last page)."""
        sizes, items, markers = [], [], []
        while True:
            r = call(**kw)
            sizes.append(len(r[key]))
            items += r[key]
            if not r["IsTruncated"]:
                self.assertNotIn("Marker", r)
                return sizes, items, markers
            markers.append(r["Marker"])
            kw["Marker"] = r["Marker"]

    def test_23_service_specific_credentials(self) -> None:
        now = datetime.now(timezone.utc)
        seeded = self.L.ok("/_launcher/seed", {"account": CREDS, "users": [
            {"name": "alice", "keys": [{"access_key_id": "AKIACREDSALICE000001", "secret_access_key": "alice-secret"}],
             "service_credentials": [
                 {"service": "bedrock.amazonaws.com", "create_date": "2024-01-01T00:00:00Z",
                  "expiration_date": "2024-02-01T00:00:00Z", "id": "ACCAALICEBEDROCK00001"},
                 {"service": "codecommit.amazonaws.com", "create_date": "2023-05-06T07:08:09Z"},
                 {"service": "codecommit.amazonaws.com", "create_date": "2022-01-01T00:00:00Z"}]},
            {"name": "bob", "service_credentials": [
                {"service": "cassandra.amazonaws.com", "status": "Inactive", "create_date": "2021-01-01T00:00:00Z"}]},
            {"name": "carol", "service_credentials": [
                {"service": "bedrock.amazonaws.com", "create_date": "2025-01-01T00:00:00Z"},
                {"service": "logs.amazonaws.com", "create_date": "2025-02-01T00:00:00Z",
                 "expiration_date": "2999-01-01T00:00:00Z"}]},
            {"name": "dave"},
        ]})
        ids = {u["name"]: u["service_credentials"] for u in seeded["users"]}
        self.assertEqual(ids["alice"][0], "ACCAALICEBEDROCK00001")
        self.assertEqual(ids["dave"], [])
        for cid in sum(ids.values(), []):
            self.assertRegex(cid, r"^ACCA[A-Z0-9]{17}$")
        iam = self.iam(CREDS)
        raw: list[bytes] = []
        iam.meta.events.register("after-call.iam", lambda http_response, **_: raw.append(http_response.content))

        # one user: sorted by CreateDate, Expired past the expiration, service user names
        alice = iam.list_service_specific_credentials(UserName="alice")
        self.assertFalse(alice["IsTruncated"])
        got = [(c["ServiceName"], c["Status"], c["CreateDate"]) for c in alice["ServiceSpecificCredentials"]]
        self.assertEqual(got, [("codecommit.amazonaws.com", "Active", utc("2022-01-01T00:00:00Z")),
                               ("codecommit.amazonaws.com", "Active", utc("2023-05-06T07:08:09Z")),
                               ("bedrock.amazonaws.com", "Expired", utc("2024-01-01T00:00:00Z"))])
        cc1, cc2, bedrock = alice["ServiceSpecificCredentials"]
        self.assertEqual({cc1["ServiceUserName"], cc2["ServiceUserName"]}, {f"alice-at-{CREDS}", f"alice+1-at-{CREDS}"})
        self.assertEqual(bedrock["ExpirationDate"], utc("2024-02-01T00:00:00Z"))
        self.assertNotIn("ServiceUserName", bedrock)
        self.assertTrue(bedrock["ServiceCredentialAlias"].startswith(f"alice-at-{CREDS}"))
        self.assertNotIn("ExpirationDate", cc1)
        self.assertNotIn("ServiceCredentialAlias", cc1)
        self.assertNotIn(b"ServicePassword", raw[-1])  # only Create and Reset answer secrets
        # ServiceName filters; a user without any; the caller's own user without UserName
        self.assertEqual([c["ServiceName"] for c in iam.list_service_specific_credentials(
            UserName="alice", ServiceName="bedrock.amazonaws.com")["ServiceSpecificCredentials"]], ["bedrock.amazonaws.com"])
        self.assertEqual(iam.list_service_specific_credentials(UserName="dave")["ServiceSpecificCredentials"], [])
        as_alice = boto3.client("iam", config=NO_RETRY, endpoint_url=self.L.url, region_name="us-east-1",
                                aws_access_key_id="AKIACREDSALICE000001", aws_secret_access_key="alice-secret")
        self.assertEqual(len(as_alice.list_service_specific_credentials()["ServiceSpecificCredentials"]), 3)
        self.assertEqual(iam.list_service_specific_credentials()["ServiceSpecificCredentials"], [], "role credentials")
        # AllUsers: every user's, by (UserName, CreateDate)
        every = iam.list_service_specific_credentials(AllUsers=True)["ServiceSpecificCredentials"]
        self.assertEqual([(c["UserName"], c["ServiceName"]) for c in every], [
            ("alice", "codecommit.amazonaws.com"), ("alice", "codecommit.amazonaws.com"),
            ("alice", "bedrock.amazonaws.com"), ("bob", "cassandra.amazonaws.com"),
            ("carol", "bedrock.amazonaws.com"), ("carol", "logs.amazonaws.com")])
        self.assertEqual(every[3]["Status"], "Inactive")
        self.assertEqual(every[5]["Status"], "Active", "expires in 2999")
        self.assertEqual([c["UserName"] for c in iam.list_service_specific_credentials(
            AllUsers=True, ServiceName="bedrock.amazonaws.com")["ServiceSpecificCredentials"]], ["alice", "carol"])
        self.assertEqual(len(iam.list_service_specific_credentials(AllUsers=False, UserName="bob")["ServiceSpecificCredentials"]), 1)
        # errors
        status, code, _, _ = self.error(lambda: iam.list_service_specific_credentials(UserName="alice", AllUsers=True))
        self.assertEqual((status, code), (400, "ValidationError"))
        self.assertEqual(self.error(lambda: iam.list_service_specific_credentials(UserName="nobody"))[:3],
                         (404, "NoSuchEntity", "The user with name nobody cannot be found."))

        # paging: 6 + 7 more = 13 credentials; short pages 2, 1, 2, 2, 1, 2, 2, 1: the last one full
        self.L.ok("/_launcher/seed", {"account": CREDS, "users": [
            {"name": f"page-{i}", "service_credentials": [{"service": "codecommit.amazonaws.com"}]} for i in range(7)]})
        sizes, items, markers = self.list_all(iam.list_service_specific_credentials, "ServiceSpecificCredentials",
                                              AllUsers=True, MaxItems=2)
        self.assertEqual(sizes, [2, 1, 2, 2, 1, 2, 2, 1])
        expected = [(c["UserName"], c["ServiceSpecificCredentialId"])
                    for c in iam.list_service_specific_credentials(AllUsers=True, MaxItems=1000)["ServiceSpecificCredentials"]]
        self.assertEqual(len(expected), 13)
        self.assertEqual([(c["UserName"], c["ServiceSpecificCredentialId"]) for c in items], expected)
        for ch in "+/=":
            self.assertIn(ch, markers[0])
        self.L.ok("/_launcher/pagination", {"short_pages": False})
        sizes, items, _ = self.list_all(iam.list_service_specific_credentials, "ServiceSpecificCredentials",
                                        AllUsers=True, MaxItems=13)
        self.assertEqual((sizes, len(items)), ([13], 13), "one full page, not truncated")
        self.assertEqual(self.list_all(iam.list_service_specific_credentials, "ServiceSpecificCredentials",
                                       AllUsers=True, MaxItems=5)[0], [5, 5, 3])
        self.assertEqual(len(iam.list_service_specific_credentials(AllUsers=True)["ServiceSpecificCredentials"]), 13,
                         "default MaxItems 100")
        self.L.ok("/_launcher/pagination", {"short_pages": True})
        # a removed item does not shift the next page; foreign and garbage markers are InvalidInput
        first = iam.list_service_specific_credentials(AllUsers=True, MaxItems=3)
        iam.delete_service_specific_credential(UserName=first["ServiceSpecificCredentials"][-1]["UserName"],
                                               ServiceSpecificCredentialId=first["ServiceSpecificCredentials"][-1]["ServiceSpecificCredentialId"])
        nxt = iam.list_service_specific_credentials(AllUsers=True, MaxItems=3, Marker=first["Marker"])
        self.assertEqual(nxt["ServiceSpecificCredentials"][0]["ServiceSpecificCredentialId"], expected[3][1])
        users_marker = iam.list_users(MaxItems=1)["Marker"]
        for bad in (users_marker, "garbage"):
            self.assertEqual(self.error(lambda: iam.list_service_specific_credentials(AllUsers=True, Marker=bad))[:2],
                             (400, "InvalidInput"))

        # create: Bedrock with an age (secret, alias, expiration), CodeCommit (user name, password)
        made = iam.create_service_specific_credential(UserName="dave", ServiceName="bedrock.amazonaws.com",
                                                      CredentialAgeDays=30)["ServiceSpecificCredential"]
        self.assertTrue(made["ServiceCredentialSecret"].startswith("ABSK"))
        self.assertNotIn("ServicePassword", made)
        self.assertNotIn("ServiceUserName", made)
        self.assertAlmostEqual((made["ExpirationDate"] - made["CreateDate"]).total_seconds(), 30 * 86400, delta=1)
        self.assertLess(abs((made["CreateDate"] - now).total_seconds()), 60)
        self.assertEqual((made["Status"], made["UserName"]), ("Active", "dave"))
        git = iam.create_service_specific_credential(UserName="dave", ServiceName="codecommit.amazonaws.com")[
            "ServiceSpecificCredential"]
        self.assertEqual(git["ServiceUserName"], f"dave-at-{CREDS}")
        self.assertGreaterEqual(len(git["ServicePassword"]), 40)
        self.assertNotIn("ExpirationDate", git)
        listed = {c["ServiceSpecificCredentialId"]: c for c in
                  iam.list_service_specific_credentials(UserName="dave")["ServiceSpecificCredentials"]}
        self.assertEqual(listed[made["ServiceSpecificCredentialId"]]["ExpirationDate"], made["ExpirationDate"])
        self.assertEqual(self.error(lambda: iam.create_service_specific_credential(
            UserName="dave", ServiceName="codecommit.amazonaws.com", CredentialAgeDays=30))[:2], (400, "ValidationError"))
        self.assertEqual(self.error(lambda: iam.create_service_specific_credential(
            UserName="dave", ServiceName="bedrock.amazonaws.com", CredentialAgeDays=36601))[:2], (400, "ValidationError"))
        iam.create_service_specific_credential(UserName="dave", ServiceName="codecommit.amazonaws.com")
        self.assertEqual(self.error(lambda: iam.create_service_specific_credential(
            UserName="dave", ServiceName="codecommit.amazonaws.com"))[:2], (409, "LimitExceeded"))
        self.assertEqual(self.error(lambda: iam.create_service_specific_credential(
            UserName="dave", ServiceName="s3.amazonaws.com"))[:2], (404, "NotSupportedService"))
        self.assertEqual(self.error(lambda: iam.create_service_specific_credential(
            UserName="nobody", ServiceName="codecommit.amazonaws.com"))[:2], (404, "NoSuchEntity"))
        # update, reset, delete
        gid = git["ServiceSpecificCredentialId"]
        iam.update_service_specific_credential(UserName="dave", ServiceSpecificCredentialId=gid, Status="Inactive")
        self.assertEqual({c["ServiceSpecificCredentialId"]: c["Status"] for c in iam.list_service_specific_credentials(
            UserName="dave")["ServiceSpecificCredentials"]}[gid], "Inactive")
        reset = iam.reset_service_specific_credential(UserName="dave", ServiceSpecificCredentialId=gid)["ServiceSpecificCredential"]
        self.assertNotEqual(reset["ServicePassword"], git["ServicePassword"])
        iam.delete_service_specific_credential(UserName="dave", ServiceSpecificCredentialId=gid)
        self.assertNotIn(gid, [c["ServiceSpecificCredentialId"] for c in
                               iam.list_service_specific_credentials(UserName="dave")["ServiceSpecificCredentials"]])
        self.assertEqual(self.error(lambda: iam.delete_service_specific_credential(
            UserName="dave", ServiceSpecificCredentialId=gid))[:2], (404, "NoSuchEntity"))
        self.assertEqual(self.error(lambda: iam.update_service_specific_credential(
            ServiceSpecificCredentialId=gid, Status="Active"))[:2], (400, "ValidationError"), "role credentials, no UserName")

        # the control endpoint; a deleted user takes its credentials along
        view = self.L.ok("/_launcher/service_credential", {"account": CREDS, "user": "bob", "service": "bedrock.amazonaws.com",
                                                           "create_date": "2024-01-01T00:00:00Z",
                                                           "expiration_date": "2024-03-01T00:00:00Z"})
        self.assertEqual((view["status"], view["service_user_name"], view["expiration_date"]),
                         ("Expired", None, "2024-03-01T00:00:00Z"))
        self.L.ok("/_launcher/service_credential", {"account": CREDS, "user": "bob", "service": "bedrock.amazonaws.com"})
        self.bad("/_launcher/service_credential", {"account": CREDS, "user": "bob", "service": "bedrock.amazonaws.com"},
                 "already has 2")
        gone = self.L.ok("/_launcher/delete_user", {"account": CREDS, "user": "bob"})
        self.assertEqual(len(gone["service_credentials"]), 3)
        self.assertEqual(self.error(lambda: iam.list_service_specific_credentials(UserName="bob"))[:2], (404, "NoSuchEntity"))
        self.L.ok("/_launcher/seed", {"account": CREDS, "users": [{"name": "bob"}]})
        self.assertEqual(iam.list_service_specific_credentials(UserName="bob")["ServiceSpecificCredentials"], [])
        self.assertNotIn("bob", [c["UserName"] for c in
                                 iam.list_service_specific_credentials(AllUsers=True, MaxItems=1000)["ServiceSpecificCredentials"]])

        # faults, counts and bytes as for any operation
        self.L.ok("/_launcher/counts/reset", {})
        self.L.ok("/_launcher/faults", {"faults": [
            {"kind": "access_denied", "operation": "ListServiceSpecificCredentials", "account": CREDS, "count": 1}]})
        status, code, message, _ = self.error(lambda: iam.list_service_specific_credentials(UserName="alice"))
        self.assertEqual((status, code), (403, "AccessDenied"))
        self.assertIn("iam:ListServiceSpecificCredentials", message)
        self.assertEqual(len(iam.list_service_specific_credentials(UserName="alice")["ServiceSpecificCredentials"]), 2,
                         "her Bedrock key was deleted while paging")
        self.assertEqual(self.counts(CREDS), {"ListServiceSpecificCredentials": 2})
        self.assertGreater(self.L.ok("/_launcher/bytes")[CREDS]["ListServiceSpecificCredentials"], 0)

    def test_24_seed_errors_of_credentials_ssh_keys_and_roles(self) -> None:
        acct = CREDS
        self.L.ok("/_launcher/seed", {"account": acct, "users": [
            {"name": "erin", "service_credentials": [{"service": "codecommit.amazonaws.com", "id": "ACCAERIN0000000000001"}],
             "ssh_keys": [{"id": "APKAERIN000000000001"}]}]})
        self.L.ok("/_launcher/roles", {"account": acct, "roles": [{"name": "Existing"}]})

        def user(**kw: Any) -> dict:
            return {"account": acct, "users": [{"name": "x", **kw}]}

        sc = "users[0].service_credentials"
        cases = [
            ("/_launcher/seed", user(service_credentials=[{"service": "s3.amazonaws.com"}]), f"{sc}[0].service"),
            ("/_launcher/seed", user(service_credentials=[{}]), f"{sc}[0].service"),
            ("/_launcher/seed", user(service_credentials=[{"service": "bedrock.amazonaws.com", "status": "Expired"}]), f"{sc}[0].status"),
            ("/_launcher/seed", user(service_credentials=[{"service": "bedrock.amazonaws.com", "create_date": "soon"}]), f"{sc}[0].create_date"),
            ("/_launcher/seed", user(service_credentials=[{"service": "codecommit.amazonaws.com",
                                                           "expiration_date": "2999-01-01T00:00:00Z"}]), f"{sc}[0].expiration_date: only API keys"),
            ("/_launcher/seed", user(service_credentials=[{"service": "bedrock.amazonaws.com", "create_date": "2024-01-01T00:00:00Z",
                                                           "expiration_date": "2023-01-01T00:00:00Z"}]), f"{sc}[0].expiration_date: must be after"),
            ("/_launcher/seed", user(service_credentials=[{"service": "bedrock.amazonaws.com", "id": "AKIA0000000000000000"}]), f"{sc}[0].id"),
            ("/_launcher/seed", user(service_credentials=[{"service": "bedrock.amazonaws.com", "id": "ACCAERIN0000000000001"}]), "already exists"),
            ("/_launcher/seed", user(service_credentials=[{"service": "bedrock.amazonaws.com", "id": "ACCAX0000000000000001"},
                                                          {"service": "logs.amazonaws.com", "id": "ACCAX0000000000000001"}]), f"{sc}[1].id"),
            ("/_launcher/seed", user(service_credentials=[{"service": "bedrock.amazonaws.com"}] * 3), "at most 2"),
            ("/_launcher/seed", user(service_credentials=[{"service": "bedrock.amazonaws.com", "kind": "x"}]), f"{sc}[0]: unknown field"),
            ("/_launcher/seed", user(service_credentials={"service": "bedrock.amazonaws.com"}), f"{sc}: expected a list"),
            ("/_launcher/seed", user(ssh_keys=[{}] * 6), "at most 5"),
            ("/_launcher/seed", user(ssh_keys=[{"id": "APKA-bad"}]), "users[0].ssh_keys[0].id"),
            ("/_launcher/seed", user(ssh_keys=[{"id": "APKAERIN000000000001"}]), "already exists"),
            ("/_launcher/seed", user(ssh_keys=[{"status": "Enabled"}]), "users[0].ssh_keys[0].status"),
            ("/_launcher/seed", user(ssh_keys=[{"uploaded": "2024-01-01T00:00:00Z"}]), "users[0].ssh_keys[0]: unknown field"),
            ("/_launcher/service_credential", {"account": acct, "user": "nobody", "service": "bedrock.amazonaws.com"}, "no user"),
            ("/_launcher/service_credential", {"account": acct, "user": "erin", "service": "git"}, "service:"),
            ("/_launcher/service_credential", {"account": acct, "user": "erin", "service": "bedrock.amazonaws.com",
                                               "expiration_date": "yesterday"}, "expiration_date"),
            ("/_launcher/service_credential", {"account": acct, "user": "erin", "service": "bedrock.amazonaws.com", "x": 1}, "unknown field"),
            ("/_launcher/roles", {"account": acct, "roles": [{"name": "bad name"}]}, "roles[0].name"),
            ("/_launcher/roles", {"account": acct, "roles": [{"name": "existing"}]}, "already exists"),
            ("/_launcher/roles", {"account": acct, "roles": [{"name": "r"}, {"name": "R"}]}, "roles[1].name"),
            ("/_launcher/roles", {"account": acct, "roles": [{"name": "r", "path": "team"}]}, "roles[0].path"),
            ("/_launcher/roles", {"account": acct, "roles": [{"name": "r", "policies": 21}]}, "roles[0].policies"),
            ("/_launcher/roles", {"account": acct, "roles": [{"name": "r", "policies": True}]}, "roles[0].policies"),
            ("/_launcher/roles", {"account": acct, "roles": [{"name": "r", "last_used": {"region": "eu-west-1"}}]}, "roles[0].last_used.date"),
            ("/_launcher/roles", {"account": acct, "roles": [{"name": "r", "last_used": {"date": "2024-01-01T00:00:00Z",
                                                                                           "service": "s3"}}]}, "roles[0].last_used: unknown field"),
            ("/_launcher/roles", {"account": acct, "roles": [{"name": "r", "last_used": "yesterday"}]}, "roles[0].last_used"),
            ("/_launcher/roles", {"account": acct, "roles": [{"name": "r", "create_date": "2024-01-01"}]}, "roles[0].create_date"),
            ("/_launcher/roles", {"account": acct, "roles": [{"name": "r", "tags": {}}]}, "roles[0]: unknown field"),
            ("/_launcher/roles", {"account": acct, "roles": {"name": "r"}}, "roles: expected a list"),
        ]
        for path, body, words in cases:
            self.bad(path, body, words)
        # nothing half-done
        iam = self.iam(acct)
        self.assertNotIn("x", [u["UserName"] for u in iam.list_users(MaxItems=1000)["Users"]])
        self.assertEqual([r["RoleName"] for r in iam.list_roles()["Roles"]], ["Existing"])
        self.assertEqual(len(iam.list_service_specific_credentials(UserName="erin")["ServiceSpecificCredentials"]), 1)

    def test_25_ssh_public_keys(self) -> None:
        fixed = [f"APKASSH00000000000{i:02d}" for i in range(3)]
        seeded = self.L.ok("/_launcher/seed", {"account": SSH, "users": [
            {"name": "git-user", "ssh_keys": [{"id": fixed[2], "upload_date": "2022-01-02T03:04:05Z"},
                                              {"id": fixed[0], "status": "Inactive"}, {"id": fixed[1]}, {}, {}]},
            {"name": "nokeys"}]})
        ids = seeded["users"][0]["ssh_keys"]
        self.assertEqual((ids[:3], len(ids), seeded["users"][1]["ssh_keys"]), ([fixed[2], fixed[0], fixed[1]], 5, []))
        iam = self.iam(SSH)
        # paged by SSHPublicKeyId; short pages 2, 1, 2: the last page full and not truncated
        sizes, items, markers = self.list_all(iam.list_ssh_public_keys, "SSHPublicKeys", UserName="git-user", MaxItems=2)
        self.assertEqual(sizes, [2, 1, 2])
        self.assertEqual([k["SSHPublicKeyId"] for k in items], sorted(ids))
        for ch in "+/=":
            self.assertIn(ch, markers[0])
        whole = iam.list_ssh_public_keys(UserName="git-user")
        self.assertEqual((len(whole["SSHPublicKeys"]), whole["IsTruncated"]), (5, False))
        self.assertEqual(iam.list_ssh_public_keys(UserName="nokeys")["SSHPublicKeys"], [])
        by_id = {k["SSHPublicKeyId"]: k for k in items}
        self.assertEqual((by_id[fixed[2]]["UploadDate"], by_id[fixed[2]]["Status"]), (utc("2022-01-02T03:04:05Z"), "Active"))
        self.assertEqual(by_id[fixed[0]]["Status"], "Inactive")
        self.assertEqual(set(by_id[fixed[0]]), {"UserName", "SSHPublicKeyId", "Status", "UploadDate"})
        # moto's own operations work on seeded keys
        key = iam.get_ssh_public_key(UserName="git-user", SSHPublicKeyId=fixed[2], Encoding="SSH")["SSHPublicKey"]
        self.assertTrue(key["SSHPublicKeyBody"].startswith("ssh-rsa AAAA"))
        self.assertEqual(key["UploadDate"], utc("2022-01-02T03:04:05Z"))
        iam.update_ssh_public_key(UserName="git-user", SSHPublicKeyId=fixed[0], Status="Active")
        # AWS's limit of 5 per user
        body = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDtest git-user@example.com"
        self.assertEqual(self.error(lambda: iam.upload_ssh_public_key(UserName="git-user", SSHPublicKeyBody=body))[:2],
                         (409, "LimitExceeded"))
        iam.delete_ssh_public_key(UserName="git-user", SSHPublicKeyId=fixed[1])
        new = iam.upload_ssh_public_key(UserName="git-user", SSHPublicKeyBody=body)["SSHPublicKey"]["SSHPublicKeyId"]
        listed = [k["SSHPublicKeyId"] for p in iam.get_paginator("list_ssh_public_keys").paginate(
            UserName="git-user", PaginationConfig={"PageSize": 1}) for k in p["SSHPublicKeys"]]
        self.assertEqual(listed, sorted(set(ids) - {fixed[1]} | {new}))

    def test_26_roles_last_used_in_authorization_details(self) -> None:
        self.L.ok("/_launcher/seed", {"account": ROLES, "users": [{"name": f"u{i}"} for i in range(3)]})
        made = self.L.ok("/_launcher/roles", {"account": ROLES, "roles": [
            {"name": "used-yesterday", "create_date": "2023-01-01T00:00:00Z", "policies": 2,
             "last_used": {"date": "2025-06-01T12:00:00Z", "region": "eu-west-1"}},
            {"name": "unused-200-days", "last_used": {"date": "2024-01-01T00:00:00Z"}},
            {"name": "never-used", "create_date": "2022-01-01T00:00:00Z", "last_used": None, "policies": 1,
             "description": "created long ago"},
            {"name": "AWSServiceRoleForSupport", "path": "/aws-service-role/support.amazonaws.com/"},
            {"name": "deployer", "path": "/ci/"},
        ]})["roles"]
        arns = {r["name"]: r["arn"] for r in made}
        self.assertEqual(arns["AWSServiceRoleForSupport"],
                         f"arn:aws:iam::{ROLES}:role/aws-service-role/support.amazonaws.com/AWSServiceRoleForSupport")
        self.assertEqual(arns["deployer"], f"arn:aws:iam::{ROLES}:role/ci/deployer")
        used = {"used-yesterday": {"LastUsedDate": utc("2025-06-01T12:00:00Z"), "Region": "eu-west-1"},
                "unused-200-days": {"LastUsedDate": utc("2024-01-01T00:00:00Z"), "Region": "us-east-1"}}
        iam = self.iam(ROLES)
        raw: list[bytes] = []
        iam.meta.events.register("after-call.iam", lambda http_response, **_: raw.append(http_response.content))

        def check_roles(roles: list[dict]) -> None:
            for r in roles:
                self.assertEqual(r.get("RoleLastUsed", {}), used.get(r["RoleName"], {}), r["RoleName"])

        r = iam.get_account_authorization_details(Filter=["Role"])
        self.assertEqual((r["UserDetailList"], r["IsTruncated"]), ([], False))
        check_roles(r["RoleDetailList"])
        details = {x["RoleName"]: x for x in r["RoleDetailList"]}
        self.assertEqual(sorted(details), sorted(arns))
        self.assertEqual(details["used-yesterday"]["CreateDate"], utc("2023-01-01T00:00:00Z"))
        self.assertEqual([p["PolicyName"] for p in details["used-yesterday"]["RolePolicyList"]],
                         ["s3-data-access-0", "dynamodb-table-access-1"])
        doc = details["never-used"]["RolePolicyList"][0]["PolicyDocument"]  # boto3 decodes it
        self.assertEqual(doc["Version"], "2012-10-17")
        self.assertGreater(len(json.dumps(doc)), 1000)
        self.assertEqual(details["AWSServiceRoleForSupport"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"],
                         {"Service": "support.amazonaws.com"})
        self.assertIn(b"<AssumeRolePolicyDocument>%7B%22Version%22", raw[-1], "URL-encoded, as AWS")
        self.assertEqual(raw[-1].count(b"<RoleLastUsed />") + raw[-1].count(b"<RoleLastUsed/>"), 3)
        got = iam.get_role(RoleName="used-yesterday")["Role"]
        self.assertEqual(got["RoleLastUsed"], used["used-yesterday"])
        self.assertEqual(iam.get_role(RoleName="never-used")["Role"]["RoleLastUsed"], {})
        self.assertEqual(iam.get_role(RoleName="never-used")["Role"]["Description"], "created long ago")

        # users and roles paged as one sequence, with short pages: 3 users + 5 roles
        sizes, pages, markers = [], [], []
        kw: dict = {"Filter": ["User", "Role"], "MaxItems": 3}
        while True:
            r = iam.get_account_authorization_details(**kw)
            page = [u["UserName"] for u in r["UserDetailList"]] + [x["RoleName"] for x in r["RoleDetailList"]]
            check_roles(r["RoleDetailList"])
            sizes.append(len(page))
            pages += page
            if not r["IsTruncated"]:
                break
            markers.append(r["Marker"])
            kw["Marker"] = r["Marker"]
        self.assertEqual(sizes, [3, 1, 3, 1])
        self.assertEqual(pages, ["u0", "u1", "u2"] + sorted(arns))
        roles_only = self.list_all(iam.get_account_authorization_details, "RoleDetailList", Filter=["Role"], MaxItems=2)
        self.assertEqual(roles_only[0], [2, 1, 2])
        self.assertEqual([x["RoleName"] for x in roles_only[1]], sorted(arns))

class TestLauncherProcess(unittest.TestCase):
    def test_demo_and_sigint(self) -> None:
        t0 = time.monotonic()
        L = Launcher("--seed-demo")
        log(f"launcher with --seed-demo up in {time.monotonic() - t0:.2f}s")
        try:
            demo = L.ok("/_launcher/demo")
            base = demo["base_credentials"]
            sts = boto3.client("sts", config=NO_RETRY, endpoint_url=L.url, region_name="us-east-1",
                               aws_access_key_id=base["access_key_id"], aws_secret_access_key=base["secret_access_key"])
            self.assertEqual(sts.get_caller_identity()["Account"], "333333333333")
            iam333 = boto3.client("iam", config=NO_RETRY, endpoint_url=L.url, region_name="us-east-1",
                                  aws_access_key_id=base["access_key_id"], aws_secret_access_key=base["secret_access_key"])
            self.assertIn("iam-key-exporter", [u["UserName"] for u in iam333.list_users()["Users"]])
            now = datetime.now(timezone.utc)
            summary = {}
            for account in ("111111111111", "222222222222"):
                creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/IAMKeyExporterReadOnly",
                                        RoleSessionName="demo")["Credentials"]
                iam = boto3.client("iam", config=NO_RETRY, endpoint_url=L.url, region_name="us-east-1",
                                   aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                                   aws_session_token=creds["SessionToken"])
                for u in iam.list_users(MaxItems=1000)["Users"]:
                    for k in iam.list_access_keys(UserName=u["UserName"])["AccessKeyMetadata"]:
                        lu = iam.get_access_key_last_used(AccessKeyId=k["AccessKeyId"])["AccessKeyLastUsed"]
                        summary.setdefault(account, []).append(
                            (u["UserName"], k["Status"], (now - k["CreateDate"]).days,
                             None if "LastUsedDate" not in lu else (now - lu["LastUsedDate"]).days))
            prod = summary["111111111111"]
            self.assertGreaterEqual(len({u for u, *_ in prod}), 6)
            self.assertIn(("legacy-backup", "Active", 200, None), prod)
            self.assertTrue(any(s == "Inactive" and age > 90 for _, s, age, _ in prod))
            self.assertTrue(any(age < 90 and used == 1 for _, _, age, used in prod))
            self.assertEqual(sum(1 for u, s, *_ in prod if u == "ci-deploy" and s == "Active"), 2)
            self.assertGreaterEqual(len(summary["222222222222"]), 3)

            # service-specific credentials, SSH keys and roles, as the demo answer describes them
            def age(date: str | None) -> int | None:
                return None if date is None else (now - utc(date)).days

            accounts = demo["accounts"]
            creds = [(c["user"], c["service"], c["status"], age(c["create_date"]), c["expiration_date"] is not None)
                     for a in ("111111111111", "222222222222") for c in accounts[a]["service_credentials"]]
            self.assertIn(("alice", "bedrock.amazonaws.com", "Active", 200, False), creds)
            self.assertIn(("carol", "bedrock.amazonaws.com", "Active", 5, True), creds)
            self.assertIn(("ci-deploy", "codecommit.amazonaws.com", "Active", 150, False), creds)
            self.assertIn(("bob", "codecommit.amazonaws.com", "Active", 10, False), creds)
            self.assertIn(("old-intern", "cassandra.amazonaws.com", "Inactive", 400, False), creds)
            carol = next(c for c in accounts["222222222222"]["service_credentials"] if c["user"] == "carol")
            self.assertEqual((utc(carol["expiration_date"]) - utc(carol["create_date"])).days, 30)
            ssh = [(k["user"], k["status"], age(k["upload_date"])) for a in accounts.values() for k in a["ssh_keys"]]
            self.assertEqual(sorted(ssh), [("carol", "Active", 5), ("ci-deploy", "Active", 300)])
            roles = {r["name"]: (r["path"], age(r["create_date"]), r["last_used"] and age(r["last_used"]["date"]))
                     for a in accounts.values() for r in a["roles"]}
            self.assertEqual(roles, {"data-pipeline-legacy": ("/", 600, 200), "payments-api": ("/", 500, 1),
                                     "old-migration": ("/", 730, None),
                                     "AWSServiceRoleForSupport": ("/aws-service-role/support.amazonaws.com/", 800, None),
                                     "analytics-sandbox": ("/", 10, None)})
            self.assertEqual(accounts["333333333333"]["roles"], [])
            # ... and as the API answers them
            creds = sts.assume_role(RoleArn="arn:aws:iam::111111111111:role/IAMKeyExporterReadOnly",
                                    RoleSessionName="demo")["Credentials"]
            prod_iam = boto3.client("iam", config=NO_RETRY, endpoint_url=L.url, region_name="us-east-1",
                                    aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                                    aws_session_token=creds["SessionToken"])
            listed = prod_iam.list_service_specific_credentials(AllUsers=True)["ServiceSpecificCredentials"]
            self.assertEqual(sorted(c["ServiceSpecificCredentialId"] for c in listed),
                             sorted(c["id"] for c in accounts["111111111111"]["service_credentials"]))
            self.assertEqual(len(prod_iam.list_ssh_public_keys(UserName="ci-deploy")["SSHPublicKeys"]), 1)
            details = {r["RoleName"]: r.get("RoleLastUsed", {}) for r in
                       prod_iam.get_account_authorization_details(Filter=["Role"])["RoleDetailList"]}
            self.assertEqual({n: "LastUsedDate" in lu for n, lu in details.items()},
                             {"data-pipeline-legacy": True, "payments-api": True, "old-migration": False,
                              "AWSServiceRoleForSupport": False})
        finally:
            rc = L.stop(signal.SIGINT)
        self.assertEqual(rc, 0, "".join(L.stderr_lines[-20:]))

    def test_sigterm_with_a_stalled_request(self) -> None:
        L = Launcher()
        L.ok("/_launcher/faults", {"faults": [{"kind": "stall", "operation": "GetCallerIdentity"}]})
        sts = boto3.client("sts", config=Config(retries={"total_max_attempts": 1}, read_timeout=30), endpoint_url=L.url,
                           region_name="us-east-1", aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="x")
        th = threading.Thread(target=lambda: self.assertRaises(Exception, sts.get_caller_identity), daemon=True)
        th.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        rc = L.stop(signal.SIGTERM)
        self.assertEqual(rc, 0, "".join(L.stderr_lines[-20:]))
        self.assertLess(time.monotonic() - t0, 5)
        th.join(5)


def _bench_client(url: str, account: str, keys: list, start: float, deadline: float, out: Any) -> None:
    """One benchmark client (its own process: 8 boto3 clients in one would measure the GIL)."""
    try:
        cfg = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)
        sts = boto3.client("sts", config=cfg, endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="x")
        c = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/Bench", RoleSessionName="bench")["Credentials"]
        iam = boto3.client("iam", config=cfg, endpoint_url=url, region_name="us-east-1", aws_access_key_id=c["AccessKeyId"],
                           aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
        iam.list_users(MaxItems=1)  # warm
        time.sleep(max(0.0, start - time.time()))
        ok = throttled = 0
        spent = 0.0
        i = 0
        while time.time() < deadline:
            user, key = keys[i % len(keys)]
            i += 1
            for call in (lambda: iam.list_access_keys(UserName=user), lambda: iam.get_access_key_last_used(AccessKeyId=key)):
                t = time.perf_counter()
                try:
                    call()
                    ok += 1
                except ClientError as e:
                    if e.response["Error"]["Code"] != "Throttling":
                        raise
                    throttled += 1
                spent += time.perf_counter() - t
        out.put((ok, throttled, spent))
    except BaseException:
        out.put((0, 0, 0.0))
        raise


class TestBenchmark(unittest.TestCase):
    """Throughput of the launcher, opt-in: LAUNCHER_BENCH=1 (knobs LAUNCHER_BENCH_CLIENTS=8,
    LAUNCHER_BENCH_USERS=1000, LAUNCHER_BENCH_SECONDS=10). Each client is a process with its
    own account, doing ListAccessKeys + GetAccessKeyLastUsed per user."""

    @unittest.skipUnless(os.environ.get("LAUNCHER_BENCH"), "set LAUNCHER_BENCH=1 to measure throughput")
    def test_throughput(self) -> None:
        import multiprocessing

        n_clients = int(os.environ.get("LAUNCHER_BENCH_CLIENTS", "8"))
        n_users = int(os.environ.get("LAUNCHER_BENCH_USERS", "1000"))
        seconds = float(os.environ.get("LAUNCHER_BENCH_SECONDS", "10"))
        L = Launcher("--log-level", "WARNING")
        try:
            accounts = [f"9000000000{i:02d}" for i in range(n_clients)]
            keys = {}
            for a in accounts:
                users = [{"name": f"u{i:05d}", "keys": [{"last_used": {"date": "2024-01-01T00:00:00Z"}}]} for i in range(n_users)]
                keys[a] = [(u["name"], u["keys"][0]) for u in L.ok("/_launcher/seed", {"account": a, "users": users})["users"]]
            scenarios = [
                ("no latency, no limits", {"min_ms": 0, "max_ms": 0}, {"off": True}),
                ("latency 30-80 ms", {"min_ms": 30, "max_ms": 80}, {"off": True}),
                ("latency 30-80 ms + 20/s per account and operation", {"min_ms": 30, "max_ms": 80},
                 {"default": {"rate": 20, "burst": 20}}),
                ("latency 30-80 ms + 5/s per account and operation", {"min_ms": 30, "max_ms": 80},
                 {"default": {"rate": 5, "burst": 5}}),
            ]
            for name, latency, limits in scenarios:
                L.ok("/_launcher/latency", latency)
                L.ok("/_launcher/rate_limits", limits)
                out: Any = multiprocessing.Queue()
                start = time.time() + 3  # after every client has imported boto3 and assumed its role
                deadline = start + seconds
                procs = [multiprocessing.Process(target=_bench_client, args=(L.url, a, keys[a], start, deadline, out)) for a in accounts]
                for p in procs:
                    p.start()
                L.ok("/_launcher/counts/reset", {})  # the clients' warm-up calls are no ListAccessKeys
                time.sleep(max(0.0, start - time.time()))
                cpu0 = _cpu_seconds(L.proc.pid)
                results = [out.get() for _ in procs]
                for p in procs:
                    p.join()
                cpu = _cpu_seconds(L.proc.pid) - cpu0
                counted = sum(n for ops in L.ok("/_launcher/counts").values() for op, n in ops.items()
                              if op in ("ListAccessKeys", "GetAccessKeyLastUsed"))
                ok = sum(r[0] for r in results)
                throttled = sum(r[1] for r in results)
                mean_ms = 1000 * sum(r[2] for r in results) / max(1, ok + throttled)
                log(f"{name}: {n_clients} clients, {counted / seconds:.0f} requests/s ({ok / seconds:.0f}/s ok, "
                    f"{throttled / seconds:.0f}/s throttled), mean {mean_ms:.1f} ms per call, "
                    f"launcher CPU {100 * cpu / seconds:.0f}% ({1000 * cpu / max(1, counted):.2f} ms/request)")
        finally:
            L.stop()


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    unittest.main(verbosity=2)
