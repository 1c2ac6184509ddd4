#!/usr/bin/env python3
"""A thin launcher around moto's WSGI app: the AWS emulator for iam-key-exporter's tests.

Run with the project's virtualenv (scripts/setup-test-env.sh makes it):

    .venv/bin/python tests/moto/launcher.py [--host 127.0.0.1] [--port 0] [--seed-demo]

Once listening (and, with --seed-demo, once the demo data is in), it prints exactly one
line to stdout, ``LISTENING http://HOST:PORT``; everything else goes to stderr.

AWS endpoints: point an SDK at the URL for every service (AWS_ENDPOINT_URL); moto routes
by the SigV4 credential scope. Any access key signs; AssumeRole into
arn:aws:iam::<id>:role/<any> gives ASIA... credentials that read account <id>'s own IAM data.

On top of moto it adds what moto lacks:
  * AWS-style pagination of IAM ListUsers and ListAccessKeys: MaxItems (default 100, capped
    at 1000), IsTruncated + an opaque Marker holding '+', '/' and '=' (an unencoded or
    foreign marker gets 400 InvalidInput); items sorted by UserName / AccessKeyId; by default
    pages 1, 4, 7, ... (counting from 0) hold only max(1, MaxItems // 2) items.
  * fault injection per operation (the Query "Action") and account;
  * per-account, per-operation request counts;
  * fast seeding and mutation of IAM users and keys (creation and last-used dates) straight
    into moto's backends.

Control API (JSON in and out; dates ISO-8601 with a zone, answered as 2024-01-02T03:04:05Z;
bad input answers 400 {"error": "..."} naming the field; nothing is changed then):
  GET  /_launcher/health                 {"ok": true}
  GET  /_launcher/counts                 {"<account>": {"<Action>": n, ...}, ...}  (faulted requests too)
  POST /_launcher/counts/reset
  GET  /_launcher/faults                 {"faults": [rule + "remaining", "hits"]}
  POST /_launcher/faults                 {"faults": [{"kind": "throttle"|"error500"|"access_denied"|"no_such_entity"|"stall"|"reset",
                                           "operation": "ListUsers"|...|"*", "account": "<id>"|null,
                                           "count": n|null, "delay_seconds": 3600}]}   appends rules
           throttle 400 Throttling "Rate exceeded"; error500 500 ServiceUnavailable;
           access_denied 403 AccessDenied; no_such_entity 404 NoSuchEntity
           (a user or key deleted since it was listed); stall sleeps delay_seconds then answers normally;
           reset closes the connection with no answer. The first rule that matches and is not
           used up applies. The account of a request is the one owning the signing key, or for
           AssumeRole the one in RoleArn.
  POST /_launcher/faults/clear           removes all rules and releases stalled requests
  GET|POST /_launcher/pagination         {"short_pages": true|false}
  POST /_launcher/seed                   {"account", "users": [{"name", "create_date"?, "path"?, "password"?,
                                           "password_last_used"?, "keys": [{"status"?, "create_date"?,
                                           "last_used"?: {"date", "service", "region"}, "access_key_id"?,
                                           "secret_access_key"?}]}]}
                                         -> {"users": [{"name", "keys": [ids], "secret_access_keys": [...]}]}
  POST /_launcher/key                    {"account", "user", "access_key_id", "status"?, "create_date"?,
                                          "last_used"?: {...}|null (null = never used)}  -> the key
  POST /_launcher/delete_key             {"account", "user", "access_key_id"}
  POST /_launcher/root                   {"account", "mfa_active", "access_key_1_active", "access_key_2_active"}
                                         adds the <root_account> row (moto has none) to that account's
                                         credential reports; GeneratedTime is also made real
                                         (moto always answers 2015-02-02T20:02:02Z)
  POST /_launcher/delete_user            {"account", "user"}   (and its keys)
  GET  /_launcher/demo                   what --seed-demo made, with the base credentials
moto's own /moto-api/reset still wipes everything.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs
from xml.sax.saxutils import escape as xml_escape

import moto.backends
from moto.iam.models import IAMBackend, get_account_id_from, iam_backends
from moto.iam.models import AccessKeyLastUsed
from moto.moto_server.werkzeug_app import MotoRequestHandler
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

LOG = logging.getLogger("moto-launcher")

IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
ET.register_namespace("", IAM_NS)

STS_ACTIONS = {
    "AssumeRole",
    "AssumeRoleWithWebIdentity",
    "AssumeRoleWithSAML",
    "GetCallerIdentity",
    "GetSessionToken",
    "GetFederationToken",
    "GetAccessKeyInfo",
    "DecodeAuthorizationMessage",
}

ACCOUNT_RE = re.compile(r"^\d{12}$")
ROLE_ARN_ACCOUNT_RE = re.compile(r"^arn:[a-z0-9-]+:iam::(\d{12}):")
CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/")
USER_NAME_RE = re.compile(r"^[\w+=,.@-]{1,64}$")
ACCESS_KEY_ID_RE = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{12,124}$")

FAULT_KINDS = ("throttle", "error500", "access_denied", "no_such_entity", "stall", "reset")
DEFAULT_MAX_ITEMS = 100
MAX_MAX_ITEMS = 1000


# --------------------------------------------------------------------------- moto tweaks

def _speed_up_moto() -> None:
    """Two pure-speed patches; neither changes what moto answers.

    1. moto lists its own package directory on every request (under a global lock) to
       route by Host header; the list never changes while we run, so cache it.
    2. GetAccessKeyLastUsed (and ListAccessKeys without UserName) scan every key of every
       user of every account; look in the caller account's key index first and fall back
       to moto's full scan (which also finds other accounts' keys, as moto does).
    """
    modules = frozenset(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]

    original = IAMBackend.get_access_key_last_used

    def get_access_key_last_used(self: IAMBackend, access_key_id: str) -> dict[str, Any]:
        key = self.access_keys.get(access_key_id)
        if key is not None and key.user_name is not None:
            user = self.users.get(key.user_name)
            if user is not None and any(k is key for k in user.access_keys):
                return {"user_name": key.user_name, "last_used": key.last_used}
        return original(self, access_key_id)

    IAMBackend.get_access_key_last_used = get_access_key_last_used  # type: ignore[method-assign]


def iam_backend(account: str) -> IAMBackend:
    return iam_backends[account]["global"]  # "global" is moto's alias for partition "aws"


# --------------------------------------------------------------------------- helpers

class BadInput(Exception):
    """A control request with bad input: answered 400 {"error": ...}."""


def parse_date(value: Any, field: str) -> datetime:
    """ISO-8601 with an offset ('Z' or '+00:00') -> naive UTC datetime, as moto stores."""
    if not isinstance(value, str) or not value:
        raise BadInput(f"{field}: expected an ISO-8601 UTC date like 2024-01-02T03:04:05Z, got {value!r}")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadInput(f"{field}: bad date {value!r}, expected e.g. 2024-01-02T03:04:05Z") from None
    if dt.tzinfo is None:
        raise BadInput(f"{field}: date {value!r} has no time zone; append Z for UTC")
    return dt.astimezone(timezone.utc).replace(tzinfo=None)


def fmt_date(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    s = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        s += ".%06d" % dt.microsecond
    return s + "Z"


def want_account(body: dict, field: str = "account") -> str:
    account = body.get(field)
    if not isinstance(account, str) or not ACCOUNT_RE.match(account):
        raise BadInput(f"{field}: expected a 12-digit account id string, got {account!r}")
    return account


def want_str(body: dict, field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise BadInput(f"{field}: expected a non-empty string, got {value!r}")
    return value


def want_status(value: Any, field: str) -> str:
    if value not in ("Active", "Inactive"):
        raise BadInput(f"{field}: expected 'Active' or 'Inactive', got {value!r}")
    return value


def parse_last_used(value: Any, field: str) -> AccessKeyLastUsed | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadInput(f"{field}: expected an object {{date, service, region}} or null")
    unknown = set(value) - {"date", "service", "region"}
    if unknown:
        raise BadInput(f"{field}: unknown field(s) {sorted(unknown)}")
    when = parse_date(value.get("date"), f"{field}.date")
    service = value.get("service", "iam")
    region = value.get("region", "us-east-1")
    if not isinstance(service, str) or not service or not isinstance(region, str) or not region:
        raise BadInput(f"{field}: service and region must be non-empty strings")
    return AccessKeyLastUsed(timestamp=when, service=service, region=region)


def key_view(key: Any) -> dict:
    lu = key.last_used
    last_used = None
    if lu is not None:
        if isinstance(lu, datetime):  # moto tolerates users setting a bare datetime
            last_used = {"date": fmt_date(lu), "service": None, "region": None}
        else:
            last_used = {"date": fmt_date(lu.timestamp), "service": lu.service, "region": lu.region}
    return {
        "access_key_id": key.access_key_id,
        "user": key.user_name,
        "status": key.status,
        "create_date": fmt_date(key.create_date),
        "last_used": last_used,
    }


# --------------------------------------------------------------------------- markers
#
# Opaque, like AWS's: base64 of  MAGIC | tag | page(2) | len(1) | last sort key | 0-2 zeros.
# MAGIC encodes to "+/+/" and the filler makes the length not a multiple of 3, so every
# marker holds '+', '/' and '='. A client that does not URL-encode it sends '+' as a space
# and gets 400 InvalidInput, as it would from AWS. The marker carries the last item
# returned, not an offset, so deletions between pages skip nothing.

MARKER_MAGIC = b"\xfb\xff\xbf"
MARKER_TAGS = {"ListUsers": b"U", "ListAccessKeys": b"K"}


def encode_marker(op: str, page: int, last: str) -> str:
    name = last.encode("utf-8")
    raw = MARKER_MAGIC + MARKER_TAGS[op] + struct.pack(">HB", page, len(name)) + name
    if len(raw) % 3 == 0:
        raw += b"\x00"
    return base64.b64encode(raw).decode("ascii")


def decode_marker(op: str, marker: str) -> tuple[int, str]:
    try:
        raw = base64.b64decode(marker.encode("ascii"), validate=True)
    except Exception:
        raise ValueError("not base64") from None
    head = len(MARKER_MAGIC) + 1 + 3
    if len(raw) < head or len(raw) % 3 == 0 or not raw.startswith(MARKER_MAGIC):
        raise ValueError("bad marker")
    if raw[len(MARKER_MAGIC):len(MARKER_MAGIC) + 1] != MARKER_TAGS[op]:
        raise ValueError("marker of another operation")
    page, n = struct.unpack(">HB", raw[len(MARKER_MAGIC) + 1:head])
    name = raw[head:head + n]
    rest = raw[head + n:]
    if len(name) != n or len(rest) > 1 or rest.strip(b"\x00"):
        raise ValueError("bad marker")
    return page, name.decode("utf-8")


# --------------------------------------------------------------------------- state

class FaultRule:
    def __init__(self, spec: Any, index: int):
        where = f"faults[{index}]"
        if not isinstance(spec, dict):
            raise BadInput(f"{where}: expected an object")
        unknown = set(spec) - {"kind", "operation", "account", "count", "delay_seconds"}
        if unknown:
            raise BadInput(f"{where}: unknown field(s) {sorted(unknown)}")
        self.kind = spec.get("kind")
        if self.kind not in FAULT_KINDS:
            raise BadInput(f"{where}.kind: expected one of {list(FAULT_KINDS)}, got {self.kind!r}")
        self.operation = spec.get("operation", "*")
        if not isinstance(self.operation, str) or not self.operation:
            raise BadInput(f"{where}.operation: expected an operation name or '*'")
        self.account = spec.get("account")
        if self.account is not None and not (isinstance(self.account, str) and ACCOUNT_RE.match(self.account)):
            raise BadInput(f"{where}.account: expected a 12-digit account id string or null")
        self.count = spec.get("count")
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1):
            raise BadInput(f"{where}.count: expected a positive integer or null (forever)")
        self.delay = spec.get("delay_seconds", 3600)
        if isinstance(self.delay, bool) or not isinstance(self.delay, (int, float)) or self.delay < 0:
            raise BadInput(f"{where}.delay_seconds: expected a number >= 0")
        self.remaining = self.count
        self.hits = 0

    def matches(self, operation: str, account: str) -> bool:
        if self.remaining == 0:
            return False
        if self.operation not in ("*", operation):
            return False
        return self.account is None or self.account == account

    def view(self) -> dict:
        return {
            "kind": self.kind,
            "operation": self.operation,
            "account": self.account,
            "count": self.count,
            "remaining": self.remaining,
            "hits": self.hits,
            "delay_seconds": self.delay,
        }


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults: list[FaultRule] = []
        self.counts: dict[str, dict[str, int]] = {}
        self.short_pages = True
        self.stall_release = threading.Event()  # set (and replaced) by faults/clear
        self.stopping = threading.Event()
        self.demo: dict | None = None
        # Credential report gaps: moto has no <root_account> row and a fixed GeneratedTime.
        self.root_rows: dict[str, dict[str, bool]] = {}
        self.report_generated: dict[str, datetime] = {}

    def count(self, account: str, operation: str) -> None:
        with self.lock:
            per = self.counts.setdefault(account, {})
            per[operation] = per.get(operation, 0) + 1

    def take_fault(self, operation: str, account: str) -> FaultRule | None:
        with self.lock:
            for rule in self.faults:
                if rule.matches(operation, account):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    rule.hits += 1
                    return rule
        return None

    def clear_faults(self) -> None:
        with self.lock:
            self.faults = []
            released, self.stall_release = self.stall_release, threading.Event()
        released.set()  # stalled requests go on and get their normal answer


# --------------------------------------------------------------------------- seeding

def seed(account: str, users: Any) -> list[dict]:
    if not isinstance(users, list):
        raise BadInput("users: expected a list")
    backend = iam_backend(account)
    plans = []
    seen: set[str] = set()
    wanted_ids: set[str] = set()
    for i, u in enumerate(users):
        where = f"users[{i}]"
        if not isinstance(u, dict):
            raise BadInput(f"{where}: expected an object")
        unknown = set(u) - {"name", "create_date", "path", "password", "password_last_used", "keys"}
        if unknown:
            raise BadInput(f"{where}: unknown field(s) {sorted(unknown)}")
        name = u.get("name")
        if not isinstance(name, str) or not USER_NAME_RE.match(name):
            raise BadInput(f"{where}.name: expected an IAM user name ([\\w+=,.@-], 1-64 chars), got {name!r}")
        if name in seen or name in backend.users:
            raise BadInput(f"{where}.name: user {name!r} already exists in account {account}")
        seen.add(name)
        created = parse_date(u["create_date"], f"{where}.create_date") if u.get("create_date") is not None else None
        path = u.get("path", "/")
        if not isinstance(path, str) or not path.startswith("/") or not path.endswith("/"):
            raise BadInput(f"{where}.path: expected a path like '/' or '/team/'")
        password = u.get("password", False)
        if not isinstance(password, bool):
            raise BadInput(f"{where}.password: expected true or false")
        pw_used = None
        if u.get("password_last_used") is not None:
            pw_used = parse_date(u["password_last_used"], f"{where}.password_last_used")
        keys = u.get("keys", [])
        if not isinstance(keys, list):
            raise BadInput(f"{where}.keys: expected a list")
        if len(keys) > 2:
            raise BadInput(f"{where}.keys: IAM allows at most 2 access keys per user, got {len(keys)}")
        key_plans = []
        for j, k in enumerate(keys):
            kw = f"{where}.keys[{j}]"
            if not isinstance(k, dict):
                raise BadInput(f"{kw}: expected an object")
            unknown = set(k) - {"status", "create_date", "last_used", "access_key_id", "secret_access_key"}
            if unknown:
                raise BadInput(f"{kw}: unknown field(s) {sorted(unknown)}")
            status = want_status(k.get("status", "Active"), f"{kw}.status")
            kc = parse_date(k["create_date"], f"{kw}.create_date") if k.get("create_date") is not None else None
            lu = parse_last_used(k.get("last_used"), f"{kw}.last_used")
            akid = k.get("access_key_id")
            if akid is not None:
                if not isinstance(akid, str) or not ACCESS_KEY_ID_RE.match(akid):
                    raise BadInput(f"{kw}.access_key_id: expected AKIA followed by 16+ of [A-Z0-9], got {akid!r}")
                if akid in wanted_ids or any(akid in iam_backends[a]["global"].access_keys for a in list(iam_backends.keys())):
                    raise BadInput(f"{kw}.access_key_id: {akid} already exists")
                wanted_ids.add(akid)
            secret = k.get("secret_access_key")
            if secret is not None and (not isinstance(secret, str) or not secret):
                raise BadInput(f"{kw}.secret_access_key: expected a non-empty string")
            key_plans.append((status, kc, lu, akid, secret))
        plans.append((name, created, path, password, pw_used, key_plans))

    out = []
    for name, created, path, password, pw_used, key_plans in plans:
        user = backend.create_user(region_name="us-east-1", user_name=name, path=path)
        if created is not None:
            user.create_date = created
        if password:
            user.password = "seeded-password"
        user.password_last_used = pw_used
        ids, secrets = [], []
        for status, kc, lu, akid, secret in key_plans:
            key = backend.create_access_key(name, status=status)
            if akid is not None:
                del backend.access_keys[key.access_key_id]
                key.access_key_id = akid
                backend.access_keys[akid] = key
            if secret is not None:
                key.secret_access_key = secret
            if kc is not None:
                key.create_date = kc
            key.last_used = lu
            ids.append(key.access_key_id)
            secrets.append(key.secret_access_key)
        out.append({"name": name, "keys": ids, "secret_access_keys": secrets})
    return out


def find_user_key(body: dict) -> tuple[IAMBackend, Any, Any]:
    account = want_account(body)
    user_name = want_str(body, "user")
    akid = want_str(body, "access_key_id")
    backend = iam_backend(account)
    user = backend.users.get(user_name)
    if user is None:
        raise BadInput(f"user: no user {user_name!r} in account {account}")
    for key in user.access_keys:
        if key.access_key_id == akid:
            return backend, user, key
    raise BadInput(f"access_key_id: user {user_name!r} in account {account} has no key {akid!r}")


def mutate_key(body: dict) -> dict:
    unknown = set(body) - {"account", "user", "access_key_id", "status", "create_date", "last_used"}
    if unknown:
        raise BadInput(f"unknown field(s) {sorted(unknown)}")
    _, _, key = find_user_key(body)
    status = want_status(body["status"], "status") if "status" in body else None
    created = parse_date(body["create_date"], "create_date") if "create_date" in body else None
    has_lu = "last_used" in body
    lu = parse_last_used(body["last_used"], "last_used") if has_lu else None
    if status is not None:
        key.status = status
    if created is not None:
        key.create_date = created
    if has_lu:
        key.last_used = lu
    return key_view(key)


def delete_key(body: dict) -> dict:
    unknown = set(body) - {"account", "user", "access_key_id"}
    if unknown:
        raise BadInput(f"unknown field(s) {sorted(unknown)}")
    backend, user, key = find_user_key(body)
    backend.delete_access_key(key.access_key_id, user.name)
    backend.access_keys.pop(key.access_key_id, None)
    return {"deleted": key.access_key_id}


def delete_user(body: dict) -> dict:
    unknown = set(body) - {"account", "user"}
    if unknown:
        raise BadInput(f"unknown field(s) {sorted(unknown)}")
    account = want_account(body)
    name = want_str(body, "user")
    backend = iam_backend(account)
    user = backend.users.get(name)
    if user is None:
        raise BadInput(f"user: no user {name!r} in account {account}")
    keys = [k.access_key_id for k in user.access_keys]
    for akid in keys:
        backend.access_keys.pop(akid, None)
    user.access_keys = []
    backend.tagger.delete_all_tags_for_resource(user.arn)
    del backend.users[name]
    return {"deleted": name, "keys": keys}


# --------------------------------------------------------------------------- demo data

DEMO_BASE_KEY_ID = "AKIAEXPORTERDEMO3333"
DEMO_BASE_SECRET = "demo/secret+for+the+moto+launcher/333333"


def seed_demo(state: State) -> dict:
    now = datetime.now(timezone.utc).replace(microsecond=0)

    def ago(**kw: float) -> str:
        return fmt_date((now - timedelta(**kw)).replace(tzinfo=None))  # type: ignore[return-value]

    def used(service: str, region: str, **kw: float) -> dict:
        return {"date": ago(**kw), "service": service, "region": region}

    production = [
        {"name": "alice", "create_date": ago(days=900), "password": True, "password_last_used": ago(hours=5),
         "keys": [{"create_date": ago(days=400), "last_used": used("s3", "us-east-1", days=2)}]},
        {"name": "bob", "create_date": ago(days=700), "password": True, "password_last_used": ago(days=40),
         "keys": [{"create_date": ago(days=120), "last_used": used("ec2", "eu-west-1", days=30)}]},
        {"name": "ci-deploy", "create_date": ago(days=800),
         "keys": [{"create_date": ago(days=310), "last_used": used("ecr", "us-east-1", hours=1)},
                  {"create_date": ago(days=12), "last_used": used("sts", "us-east-1", hours=3)}]},
        {"name": "terraform", "create_date": ago(days=600),
         "keys": [{"create_date": ago(days=5), "last_used": used("iam", "us-east-1", days=1)}]},
        {"name": "legacy-backup", "create_date": ago(days=1000),
         "keys": [{"create_date": ago(days=200)}]},
        {"name": "old-intern", "create_date": ago(days=1200),
         "keys": [{"status": "Inactive", "create_date": ago(days=500), "last_used": used("s3", "eu-central-1", days=450)}]},
        {"name": "grafana-cloudwatch", "create_date": ago(days=365),
         "keys": [{"create_date": ago(days=95), "last_used": used("cloudwatch", "us-east-1", minutes=10)}]},
    ]
    staging = [
        {"name": "ci-deploy", "create_date": ago(days=500),
         "keys": [{"create_date": ago(days=180), "last_used": used("ecr", "us-west-2", days=1)}]},
        {"name": "terraform", "create_date": ago(days=450),
         "keys": [{"create_date": ago(days=95), "last_used": used("iam", "us-east-1", days=3)}]},
        {"name": "carol", "create_date": ago(days=60), "password": True,
         "keys": [{"create_date": ago(days=20)}]},
        {"name": "load-test", "create_date": ago(days=150),
         "keys": [{"status": "Inactive", "create_date": ago(days=140), "last_used": used("sqs", "us-west-2", days=100)}]},
    ]
    security = [
        {"name": "iam-key-exporter", "create_date": ago(days=90),
         "keys": [{"create_date": ago(days=60), "access_key_id": DEMO_BASE_KEY_ID,
                   "secret_access_key": DEMO_BASE_SECRET, "last_used": used("sts", "us-east-1", minutes=15)}]},
        {"name": "auditor", "create_date": ago(days=400), "password": True,
         "keys": [{"create_date": ago(days=100), "last_used": used("iam", "us-east-1", days=10)}]},
    ]
    summary = {}
    for account, name, users in (("111111111111", "production", production),
                                  ("222222222222", "staging", staging),
                                  ("333333333333", "security-tooling", security)):
        seeded = seed(account, users)
        summary[account] = {"name": name, "users": [u["name"] for u in seeded]}
    state.demo = {
        "accounts": summary,
        "base_credentials": {
            "account": "333333333333",
            "user": "iam-key-exporter",
            "access_key_id": DEMO_BASE_KEY_ID,
            "secret_access_key": DEMO_BASE_SECRET,
        },
    }
    return state.demo


# --------------------------------------------------------------------------- the middleware

def read_body(environ: dict) -> bytes:
    length = environ.get("CONTENT_LENGTH") or ""
    stream = environ.get("wsgi.input")
    body = b""
    if stream is not None:
        if length.isdigit():
            body = stream.read(int(length)) if int(length) else b""
        elif environ.get("wsgi.input_terminated"):
            body = stream.read()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def request_params(environ: dict, body: bytes) -> dict[str, str]:
    params: dict[str, str] = {}
    for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items():
        params[k] = v[0]
    ctype = environ.get("CONTENT_TYPE", "")
    if body and (ctype.startswith("application/x-www-form-urlencoded") or not ctype):
        try:
            for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items():
                params[k] = v[0]
        except UnicodeDecodeError:
            pass
    return params


class Launcher:
    def __init__(self, app: Callable, state: State):
        self.app = app
        self.state = state

    # -- WSGI entry
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_launcher/") or path == "/_launcher":
            return self.control(environ, start_response)

        body = read_body(environ)
        params = request_params(environ, body)
        operation = params.get("Action") or "unknown"
        auth = environ.get("HTTP_AUTHORIZATION", "")
        service = self.service_of(auth, operation)
        account = self.account_of(auth, params, operation)
        self.state.count(account, operation)

        rule = self.state.take_fault(operation, account)
        if rule is not None:
            LOG.debug("fault %s on %s for %s", rule.kind, operation, account)
            if rule.kind == "throttle":
                return self.aws_error(start_response, service, 400, "Throttling", "Rate exceeded")
            if rule.kind == "error500":
                return self.aws_error(start_response, service, 500, "ServiceUnavailable",
                                      "Service is unavailable. Please try again later.", "Receiver")
            if rule.kind == "access_denied":
                return self.aws_error(start_response, service, 403, "AccessDenied", self.denied_message(operation, params, account))
            if rule.kind == "no_such_entity":
                # What IAM answers for a user or key deleted since it was listed.
                return self.aws_error(start_response, service, 404, "NoSuchEntity",
                                      "The entity was deleted while it was being read.")
            if rule.kind == "reset":
                return self.reset_connection(environ)
            if rule.kind == "stall":
                release = self.state.stall_release
                deadline = time.monotonic() + rule.delay
                while not release.is_set() and not self.state.stopping.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    release.wait(min(left, 0.5))
                if self.state.stopping.is_set():
                    return self.reset_connection(environ)

        if operation in MARKER_TAGS and service == "iam":
            return self.paginated(environ, start_response, operation, params)
        if operation in ("GenerateCredentialReport", "GetCredentialReport") and service == "iam":
            return self.credential_report(environ, start_response, operation, account)
        return self.app(environ, start_response)

    @staticmethod
    def service_of(auth: str, operation: str) -> str:
        m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", auth)
        if m:
            return m.group(1).lower()
        return "sts" if operation in STS_ACTIONS else "iam"

    @staticmethod
    def account_of(auth: str, params: dict, operation: str) -> str:
        if operation == "AssumeRole":
            m = ROLE_ARN_ACCOUNT_RE.match(params.get("RoleArn", ""))
            if m:
                return m.group(1)
        m = CREDENTIAL_RE.search(auth)
        akid = m.group(1) if m else params.get("AWSAccessKeyId", "AKIAEXAMPLE")
        return get_account_id_from(akid)

    @staticmethod
    def denied_message(operation: str, params: dict, account: str) -> str:
        if operation == "AssumeRole":
            return (f"User: arn:aws:iam::{account}:user/iam-key-exporter is not authorized to perform: "
                    f"sts:AssumeRole on resource: {params.get('RoleArn', '')}")
        return (f"User: arn:aws:sts::{account}:assumed-role/IAMKeyExporterReadOnly/iam-key-exporter is not "
                f"authorized to perform: iam:{operation} on resource: arn:aws:iam::{account}:user/")

    @staticmethod
    def aws_error(start_response: Callable, service: str, status: int, code: str, message: str,
                  kind: str = "Sender") -> list[bytes]:
        ns = STS_NS if service == "sts" else IAM_NS
        request_id = str(uuid.uuid4())
        body = (f'<ErrorResponse xmlns="{ns}"><Error><Type>{kind}</Type><Code>{code}</Code>'
                f"<Message>{xml_escape(message)}</Message></Error><RequestId>{request_id}</RequestId>"
                f"</ErrorResponse>").encode("utf-8")
        reasons = {400: "Bad Request", 403: "Forbidden", 500: "Internal Server Error"}
        start_response(f"{status} {reasons.get(status, 'Error')}", [
            ("Content-Type", "text/xml"),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", request_id),
        ])
        return [body]

    @staticmethod
    def reset_connection(environ: dict) -> list[bytes]:
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            try:
                # linger 0: the final close sends RST; SHUT_RD ends werkzeug's keep-alive loop
                # (else it would wait for another request on this connection)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        # werkzeug treats ConnectionError as "client went away": no response, no traceback
        raise ConnectionResetError("fault injection: connection reset")

    # -- pagination of ListUsers / ListAccessKeys
    def paginated(self, environ: dict, start_response: Callable, op: str, params: dict) -> Iterable[bytes]:
        raw_max = params.get("MaxItems")
        max_items = DEFAULT_MAX_ITEMS
        if raw_max not in (None, ""):
            try:
                max_items = int(raw_max)
            except ValueError:
                return self.aws_error(start_response, "iam", 400, "ValidationError",
                                      f"1 validation error detected: Value '{raw_max}' at 'maxItems' failed to satisfy constraint: Member must be a number")
            if max_items < 1:
                return self.aws_error(start_response, "iam", 400, "ValidationError",
                                      f"1 validation error detected: Value '{max_items}' at 'maxItems' failed to satisfy constraint: Member must have value greater than or equal to 1")
            max_items = min(max_items, MAX_MAX_ITEMS)
        page, after = 0, None
        marker = params.get("Marker")
        if marker is not None:
            try:
                page, after = decode_marker(op, marker)
            except ValueError:
                return self.aws_error(start_response, "iam", 400, "InvalidInput", "Invalid Marker.")

        status, headers, body = self.call_app(environ)
        if status.startswith("200"):
            short = self.state.short_pages and page % 3 == 1
            size = max(1, max_items // 2) if short else max_items
            body = self.slice_page(body, op, size, page, after)
        return self.respond(start_response, status, headers, body)

    def call_app(self, environ: dict) -> tuple[str, list, bytes]:
        """Runs moto on the request and returns its whole answer, to be rewritten."""
        captured: dict[str, Any] = {}
        chunks: list[bytes] = []

        def capture(status: str, headers: list, exc_info: Any = None) -> Callable:
            captured["status"], captured["headers"] = status, headers
            return chunks.append

        result = self.app(environ, capture)
        try:
            for chunk in result:
                chunks.append(chunk)
        finally:
            if hasattr(result, "close"):
                result.close()
        return captured["status"], captured["headers"], b"".join(chunks)

    @staticmethod
    def respond(start_response: Callable, status: str, headers: list, body: bytes) -> list[bytes]:
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    def credential_report(self, environ: dict, start_response: Callable, op: str, account: str) -> Iterable[bytes]:
        """Closes moto's credential-report gaps: records when a report is really generated
        (moto always says 2015-02-02T20:02:02Z) and adds the <root_account> row AWS always
        has, as set through /_launcher/root."""
        status, headers, body = self.call_app(environ)
        if status.startswith("200") and op == "GenerateCredentialReport" and b"STARTED" in body:
            with self.state.lock:
                self.state.report_generated[account] = datetime.now(timezone.utc).replace(microsecond=0)
        if status.startswith("200") and op == "GetCredentialReport":
            body = self.rewrite_report(body, account)
        return self.respond(start_response, status, headers, body)

    def rewrite_report(self, body: bytes, account: str) -> bytes:
        root = ET.fromstring(body)
        ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
        q = (lambda name: f"{{{ns}}}{name}") if ns else (lambda name: name)
        result = root.find(q("GetCredentialReportResult"))
        if result is None:
            return body
        with self.state.lock:
            generated = self.state.report_generated.get(account)
            root_row = self.state.root_rows.get(account)
        if generated is not None:
            for el in result.iter(q("GeneratedTime")):
                el.text = fmt_date(generated)
        content = result.find(q("Content"))
        if root_row is not None and content is not None and content.text:
            lines = base64.b64decode(content.text).decode("utf-8").split("\n")
            header = lines[0].split(",")
            created = (generated or datetime.now(timezone.utc)) - timedelta(days=3650)
            values = dict.fromkeys(header, "N/A")
            values.update({
                "user": "<root_account>",
                "arn": f"arn:aws:iam::{account}:root",
                "user_creation_time": created.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                "password_enabled": "not_supported",
                "password_last_used": "no_information",
                "password_last_changed": "not_supported",
                "password_next_rotation": "not_supported",
                "mfa_active": str(root_row["mfa_active"]).lower(),
                "cert_1_active": "false",
                "cert_2_active": "false",
            })
            for n in ("1", "2"):
                active = root_row[f"access_key_{n}_active"]
                values[f"access_key_{n}_active"] = str(active).lower()
                if active:
                    values[f"access_key_{n}_last_rotated"] = created.strftime("%Y-%m-%dT%H:%M:%S+00:00")
            lines.insert(1, ",".join(values[h] for h in header))
            content.text = base64.b64encode("\n".join(lines).encode("utf-8")).decode("ascii")
        return ET.tostring(root, encoding="utf-8", xml_declaration=False)

    @staticmethod
    def slice_page(body: bytes, op: str, size: int, page: int, after: str | None) -> bytes:
        root = ET.fromstring(body)
        ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""

        def q(name: str) -> str:
            return f"{{{ns}}}{name}" if ns else name

        result = root.find(q(f"{op}Result"))
        if result is None:
            return body
        container_name, sort_field = ("Users", "UserName") if op == "ListUsers" else ("AccessKeyMetadata", "AccessKeyId")
        container = result.find(q(container_name))
        if container is None:
            container = ET.Element(q(container_name))
            result.insert(0, container)
        members = sorted(container, key=lambda m: m.findtext(q(sort_field)) or "")
        if after is not None:
            members = [m for m in members if (m.findtext(q(sort_field)) or "") > after]
        chosen, more = members[:size], len(members) > size
        for child in list(container):
            container.remove(child)
        container.extend(chosen)
        for name in ("IsTruncated", "Marker"):
            for el in result.findall(q(name)):
                result.remove(el)
        truncated = ET.SubElement(result, q("IsTruncated"))
        truncated.text = "true" if more else "false"
        if more:
            ET.SubElement(result, q("Marker")).text = encode_marker(op, page + 1, chosen[-1].findtext(q(sort_field)) or "")
        return ET.tostring(root, encoding="utf-8", xml_declaration=False)

    # -- control API
    def control(self, environ: dict, start_response: Callable) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "").rstrip("/")
        raw = read_body(environ)
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            return self.json(start_response, 400, {"error": f"body is not JSON: {e}"})
        if not isinstance(body, dict):
            return self.json(start_response, 400, {"error": "body must be a JSON object"})
        routes: dict[tuple[str, str], Callable[[dict], Any]] = {
            ("GET", "/_launcher/health"): lambda b: {"ok": True},
            ("GET", "/_launcher/counts"): self.get_counts,
            ("POST", "/_launcher/counts/reset"): self.reset_counts,
            ("GET", "/_launcher/faults"): self.get_faults,
            ("POST", "/_launcher/faults"): self.add_faults,
            ("POST", "/_launcher/faults/clear"): self.clear_faults,
            ("GET", "/_launcher/pagination"): self.pagination,
            ("POST", "/_launcher/pagination"): self.pagination,
            ("POST", "/_launcher/seed"): lambda b: {"users": seed(want_account(b), b.get("users"))},
            ("POST", "/_launcher/key"): mutate_key,
            ("POST", "/_launcher/delete_key"): delete_key,
            ("POST", "/_launcher/delete_user"): delete_user,
            ("POST", "/_launcher/root"): self.set_root,
            ("GET", "/_launcher/demo"): self.get_demo,
        }
        handler = routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in routes):
                return self.json(start_response, 405, {"error": f"method {method} not allowed on {path}"})
            return self.json(start_response, 404, {"error": f"no control endpoint {path}"})
        try:
            if path == "/_launcher/seed":
                unknown = set(body) - {"account", "users"}
                if unknown:
                    raise BadInput(f"unknown field(s) {sorted(unknown)}")
            started = time.monotonic()
            answer = handler(body)
            if method == "POST":
                LOG.info("control %s done in %.3fs", path, time.monotonic() - started)
            return self.json(start_response, 200, answer)
        except BadInput as e:
            LOG.info("control %s: 400 %s", path, e)
            return self.json(start_response, 400, {"error": str(e)})
        except Exception as e:  # a moto exception, e.g. LimitExceeded
            LOG.exception("control %s failed", path)
            return self.json(start_response, 400, {"error": f"{type(e).__name__}: {e}"})

    @staticmethod
    def json(start_response: Callable, status: int, obj: Any) -> list[bytes]:
        data = (json.dumps(obj, indent=None, sort_keys=True) + "\n").encode("utf-8")
        reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
        start_response(f"{status} {reasons.get(status, 'Error')}", [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
        ])
        return [data]

    def set_root(self, body: dict) -> dict:
        account = want_account(body)
        row = {}
        for field in ("mfa_active", "access_key_1_active", "access_key_2_active"):
            value = body.get(field, False)
            if not isinstance(value, bool):
                raise BadInput(f"{field}: expected true or false, got {value!r}")
            row[field] = value
        with self.state.lock:
            self.state.root_rows[account] = row
        return {"root": row}

    def get_counts(self, _: dict) -> dict:
        with self.state.lock:
            return {a: dict(ops) for a, ops in self.state.counts.items()}

    def reset_counts(self, _: dict) -> dict:
        with self.state.lock:
            self.state.counts = {}
        return {"ok": True}

    def get_faults(self, _: dict) -> dict:
        with self.state.lock:
            return {"faults": [r.view() for r in self.state.faults]}

    def add_faults(self, body: dict) -> dict:
        unknown = set(body) - {"faults"}
        if unknown:
            raise BadInput(f"unknown field(s) {sorted(unknown)}")
        specs = body.get("faults")
        if not isinstance(specs, list):
            raise BadInput("faults: expected a list of fault rules")
        rules = [FaultRule(s, i) for i, s in enumerate(specs)]
        with self.state.lock:
            self.state.faults.extend(rules)
            return {"faults": [r.view() for r in self.state.faults]}

    def clear_faults(self, _: dict) -> dict:
        self.state.clear_faults()
        return {"faults": []}

    def pagination(self, body: dict) -> dict:
        if body:
            unknown = set(body) - {"short_pages"}
            if unknown:
                raise BadInput(f"unknown field(s) {sorted(unknown)}")
            if "short_pages" in body:
                if not isinstance(body["short_pages"], bool):
                    raise BadInput("short_pages: expected true or false")
                self.state.short_pages = body["short_pages"]
        return {"short_pages": self.state.short_pages}

    def get_demo(self, _: dict) -> dict:
        if self.state.demo is None:
            raise BadInput("the demo was not seeded (start with --seed-demo)")
        return self.state.demo


# --------------------------------------------------------------------------- main

class QuietHandler(MotoRequestHandler):
    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        if LOG.isEnabledFor(logging.DEBUG):
            super().log_request(code, size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed-demo", action="store_true", help="seed demo accounts 111111111111, 222222222222, 333333333333")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)

    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.DEBUG if args.log_level == "DEBUG" else logging.WARNING)

    _speed_up_moto()
    state = State()
    app = Launcher(DomainDispatcherApplication(create_backend_app), state)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=QuietHandler)

    def stop(signum: int, _frame: Any) -> None:
        if state.stopping.is_set():
            return
        LOG.info("signal %d: shutting down", signum)
        state.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.seed_demo:
        started = time.monotonic()
        demo = seed_demo(state)
        LOG.info("seeded demo in %.3fs: %s; base credentials %s (account 333333333333)",
                 time.monotonic() - started, json.dumps(demo["accounts"]), DEMO_BASE_KEY_ID)

    host = args.host if ":" not in args.host else f"[{args.host}]"
    print(f"LISTENING http://{host}:{server.port}", flush=True)
    sys.stdout = sys.stderr  # exactly one line on stdout: moto prints warnings there
    LOG.info("moto %s launcher listening on http://%s:%d", moto.__version__, host, server.port)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        state.stopping.set()
        server.server_close()
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
