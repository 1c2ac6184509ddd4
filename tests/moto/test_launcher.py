#!/usr/bin/env python3
"""Self-test of tests/moto/launcher.py, with boto3 against a launcher on a free port.

    .venv/bin/python tests/moto/test_launcher.py [-v] [TestLauncher.test_name ...]

Plain unittest; exits non-zero on failure. Timings go to stderr.
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
import urllib.error
import urllib.request
from datetime import datetime, timezone

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
        # GetAccessKeyLastUsed per key, all pages followed; one AssumeRole.
        self.L.ok("/_launcher/counts/reset", {})
        t0 = time.monotonic()
        iam = self.iam(BIG, Config(retries={"total_max_attempts": 3, "mode": "standard"}))
        seen_keys = {}
        for page in iam.get_paginator("list_users").paginate(PaginationConfig={"PageSize": 1000}):
            for user in page["Users"]:
                for kp in iam.get_paginator("list_access_keys").paginate(UserName=user["UserName"]):
                    for key in kp["AccessKeyMetadata"]:
                        lu = iam.get_access_key_last_used(AccessKeyId=key["AccessKeyId"])["AccessKeyLastUsed"]
                        seen_keys[key["AccessKeyId"]] = (key["CreateDate"], lu["LastUsedDate"], lu["ServiceName"], lu["Region"])
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
        # nothing half-done: the failed seeds created no user
        names = [u["UserName"] for u in self.iam(SEEDED).list_users(MaxItems=1000)["Users"]]
        self.assertNotIn("x", names)

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


if __name__ == "__main__":
    unittest.main(verbosity=2)
