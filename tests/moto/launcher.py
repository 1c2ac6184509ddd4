#!/usr/bin/env python3
"""A thin launcher around moto's WSGI app: the AWS emulator for iam-key-exporter's tests.

Run with the project's virtualenv (scripts/setup-test-env.sh makes it):

    .venv/bin/python tests/moto/launcher.py [--host 127.0.0.1] [--port 0] [--seed-demo]

Once listening (and, with --seed-demo, once the demo data is in), it prints exactly one
line to stdout, ``LISTENING http://HOST:PORT``; everything else goes to stderr.

AWS endpoints: point an SDK at the URL for every service (AWS_ENDPOINT_URL); moto routes
by the SigV4 credential scope. Any access key signs; AssumeRole into
arn:aws:iam::<id>:role/<any> gives ASIA... credentials that read account <id>'s own IAM data.
Unknown AKIA... keys belong to moto's default account 123456789012 (the "base credentials").

On top of moto it adds what moto lacks:
  * AWS-style pagination of IAM ListUsers, ListAccessKeys, ListUserTags and
    GetAccountAuthorizationDetails (moto ignores MaxItems/Marker for all four): MaxItems
    (default 100, capped at 1000), IsTruncated + an opaque Marker holding '+', '/' and '='
    (an unencoded or foreign marker gets 400 InvalidInput); items sorted by UserName /
    AccessKeyId / tag Key / (UserName, GroupName, RoleName, PolicyId: the four lists of
    GetAccountAuthorizationDetails are paged as one sequence, in that order); by default
    pages 1, 4, 7, ... (counting from 0) hold only max(1, MaxItems // 2) items.
  * AWS Organizations seeded in one call with fixed account ids and any account State,
    answered as application/x-amz-json-1.1 (moto says text/html), every List* operation
    paged by the launcher with opaque NextTokens (see "Organizations" below);
  * fault injection per operation (the Query "Action", or the JSON X-Amz-Target operation)
    and account; added latency; token-bucket rate limits like AWS's;
  * ExternalId enforcement on AssumeRole (moto never checks it);
  * the credential report as AWS keeps it: a snapshot with a real GeneratedTime, reused for
    up to 4 hours, with the <root_account> row moto lacks (set through /_launcher/root);
  * per-account, per-operation request, throttle and response-byte counts;
  * fast seeding and mutation of IAM users (tags, paths) and keys (creation and last-used
    dates) straight into moto's backends.

Control API (JSON in and out; dates ISO-8601 with a zone, answered as 2024-01-02T03:04:05Z;
bad input answers 400 {"error": "..."} naming the field; nothing is changed then). GET
endpoints take no body; every POST setting answers the setting as it now is.
  GET  /_launcher/health                 {"ok": true}
  GET  /_launcher/counts                 {"<account>": {"<Operation>": n, ...}, ...}  every AWS request,
                                         faulted and throttled ones too
  GET  /_launcher/throttled              same shape: requests the rate limits refused
  GET  /_launcher/bytes                  same shape: response body bytes sent (errors too)
  POST /_launcher/counts/reset           resets counts, throttled and bytes
  GET  /_launcher/faults                 {"faults": [rule + "remaining", "hits"]}
  POST /_launcher/faults                 {"faults": [{"kind": "throttle"|"error500"|"access_denied"|"no_such_entity"|
                                           "error"|"stall"|"reset",
                                           "operation": "ListUsers"|"ListAccounts"|...|"*", "account": "<id>"|null,
                                           "count": n|null, "delay_seconds": 3600,
                                           "status": 400, "code": "...", "message": "..."}]}   appends rules
           Query protocol (IAM, STS) / JSON protocol (Organizations):
           throttle        400 Throttling "Rate exceeded"      / 400 TooManyRequestsException
           error500        500 ServiceUnavailable              / 500 ServiceException
           access_denied   403 AccessDenied                    / 400 AccessDeniedException
           no_such_entity  404 NoSuchEntity (a user or key deleted since it was listed)
                                                               / 400 AccountNotFoundException
           error           "status" (default 400, 400-599), "code" (required), "message" (default "")
                           as given, in either protocol: e.g. {"kind": "error", "status": 410,
                           "code": "ReportExpired", "operation": "GetCredentialReport"}; also
                           ReportInProgress (404), ReportNotPresent (410), LimitExceeded (409), ...
           stall sleeps delay_seconds then answers normally; reset closes the connection with no
           answer. status/code/message are only for kind "error". The first rule that matches and
           is not used up applies. The account of a request is the one owning the signing key, or
           for AssumeRole the one in RoleArn. Query errors are <ErrorResponse> XML (Type Sender,
           Receiver for 5xx); JSON errors are {"__type": code, "message": ...} with Content-Type
           application/x-amz-json-1.1 and an x-amzn-ErrorType header.
  POST /_launcher/faults/clear           removes all rules and releases stalled requests
  GET|POST /_launcher/pagination         {"short_pages": true|false}
  POST /_launcher/seed                   {"account", "users": [{"name", "create_date"?, "path"?, "password"?,
                                           "password_last_used"?, "tags"?: {"owner": "alice@example.com", ...},
                                           "keys": [{"status"?, "create_date"?,
                                           "last_used"?: {"date", "service", "region"}, "access_key_id"?,
                                           "secret_access_key"?}]}]}
                                         -> {"users": [{"name", "keys": [ids], "secret_access_keys": [...]}]}
                                         tags (at most 50; key 1-128 chars, value 0-256) show in GetUser,
                                         ListUserTags and GetAccountAuthorizationDetails, not in ListUsers (as AWS);
                                         path shows everywhere, in the user's ARN too, and filters PathPrefix
  POST /_launcher/key                    {"account", "user", "access_key_id", "status"?, "create_date"?,
                                          "last_used"?: {...}|null (null = never used)}  -> the key
  POST /_launcher/add_key                {"account", "user", "status"?, "create_date"?}  a new key for an
                                         existing user (at most 2), as CreateAccessKey makes it -> the key
  POST /_launcher/delete_key             {"account", "user", "access_key_id"}
  POST /_launcher/delete_user            {"account", "user"}   (and its keys)
  GET  /_launcher/demo                   what --seed-demo made, with the base credentials

  Latency and rate limits (AWS requests only, never control requests):
  GET|POST /_launcher/latency            {"min_ms": 30, "max_ms": 80}  each request waits a uniform random
                                         time in [min, max] before it is handled, on its own thread (concurrent
                                         requests overlap their waits); 0/0 = off (default)
  GET|POST /_launcher/rate_limits        {"default": {"rate": 10, "burst": 10}|null,
                                          "operations": {"GetAccessKeyLastUsed": {"rate": 20, "burst": 20}|null, ...},
                                          "accounts": null|["<id>", ...]}   or {"off": true} (default)
                                         a token bucket per (account, operation), full at first, refilled
                                         continuously at rate/s up to burst (burst defaults to max(1, rate));
                                         operations not listed use default; null = unlimited; accounts null =
                                         every account. A request that finds no token answers 400 Throttling
                                         "Rate exceeded" (Organizations: 400 TooManyRequestsException) without
                                         reaching moto or the fault rules; it is counted in counts and throttled.
                                         Setting the limits refills every bucket.

  ExternalId (moto never checks it):
  GET|POST /_launcher/external_id        {"role_arn": "arn:aws:iam::111111111111:role/X", "external_id": "abc"|null}
                                         -> {"external_ids": {"<role arn>": "<id>", ...}}; null removes it.
                                         AssumeRole with exactly that RoleArn and not exactly that ExternalId
                                         (missing or different) answers 403 AccessDenied "User: <caller arn> is not
                                         authorized to perform: sts:AssumeRole on resource: <role arn>", as AWS
                                         does when a trust policy's sts:ExternalId condition fails.

  Credential report (answered by the launcher, not moto):
  GET|POST /_launcher/credential_report  {"max_age_seconds": 14400, "csv_quoting": false}
  POST /_launcher/credential_report/expire  {"account"}  the account's report counts as expired: Get answers
                                         410 ReportExpired and the next Generate starts a new one
  POST /_launcher/credential_report/generate  {"account"}  a report generated now, as a completed Generate
                                         makes it -> {"account", "generated"}
  POST /_launcher/root                   {"account", "mfa_active", "access_key_1_active", "access_key_2_active"}
                                         adds the <root_account> row (moto has none) to that account's
                                         reports generated from now on
           GenerateCredentialReport: with a report younger than max_age_seconds -> COMPLETE (nothing new);
           else, if one was STARTED -> the report is generated now (content frozen, GeneratedTime = now) ->
           COMPLETE; else -> STARTED. GetCredentialReport: the current report if younger than max_age;
           404 ReportInProgress if STARTED and not yet complete; 410 ReportExpired if there is only an
           expired one; 410 ReportNotPresent if none was ever generated. Keys and users changed after
           the report was generated show only in the next one. Rows as AWS writes them: <root_account>
           first (if set), then users in creation order; key last-used date, region and service as
           GetAccessKeyLastUsed answers them (moto writes not_supported for region and service); N/A
           for the password columns of a user without a password. Fields are joined with commas and
           not quoted, as moto does (a user name holding a comma makes a malformed row: a test relies
           on that); csv_quoting true quotes fields that need it (RFC 4180).

  AWS Organizations (JSON protocol, X-Amz-Target AWSOrganizationsV20161128.<Operation>; calls are
  answered for the signer's account, so sign with the management account's credentials):
  POST /_launcher/organization           {"management_account": "123456789012" (default),
                                          "ous": [{"name": "prod", "tags"?: {...}, "children": [{"name": "prod-eu"}]}],
                                          "accounts": [{"id": "210000000001", "name": "payments-prod",
                                                        "ou": "prod/prod-eu" (path of OU names; omitted or "" = root),
                                                        "tags"?: {"team": "payments"}, "email"?: "...",
                                                        "state"?: "ACTIVE"|"SUSPENDED"|"PENDING_CLOSURE"|"CLOSED"|
                                                                  "PENDING_ACTIVATION",
                                                        "joined"?: date, "joined_method"?: "CREATED"|"INVITED"}]}
                                         REPLACES the management account's whole organization (call it again with
                                         the changed tree to move, retag, suspend, add or remove accounts). The
                                         management account is always a member (name "management", at the root,
                                         unless listed in accounts). Ids are derived from the management account
                                         and the OU path, so they are the same on every call and every run.
                                         An account keeps its JoinedTimestamp across calls (default: now).
                                         -> {"management_account", "organization_id", "root_id",
                                             "ous": {"prod": "ou-...", "prod/prod-eu": "ou-..."},
                                             "accounts": [{"id", "name", "ou", "parent_id", "state"}]}
  GET  /_launcher/organization           {"organizations": {"<management account>": the same view, read from moto}}
  POST /_launcher/organization/delete    {"management_account"?}  no organization any more
  GET|POST /_launcher/organizations_paging  {"max_results": 2|null}
           Every Organizations List* operation is paged by the launcher: items sorted by Id (tags by
           Key), opaque NextToken naming the last item returned (an item removed between pages skips
           nothing). Page size = MaxResults if given, else moto's default (ListAccounts 100;
           ListAccountsForParent, ListOrganizationalUnitsForParent, ListPolicies,
           ListPoliciesForTarget 20; the others, ListTagsForResource too, unpaged), capped at
           max_results when set (null = no cap, the default). An undecodable NextToken, or one from
           another operation or other parameters, answers 400 InvalidInputException
           (Reason INVALID_NEXT_TOKEN), as AWS does. Accounts: State always; the older Status only
           for ACTIVE, SUSPENDED and PENDING_CLOSURE, as AWS. As AWS, a member account may only
           call DescribeOrganization (and the handshake calls): anything else answers 400
           AccessDeniedException; an account in no organization gets 400
           AWSOrganizationsNotInUseException (moto answered both from an empty organization).
           Delegated administrators are not emulated. Organizations calls are counted, faulted,
           limited and delayed like the others; their operation is the X-Amz-Target's.

moto's own /moto-api/reset still wipes everything moto holds (and the launcher's credential
reports); launcher settings (faults, latency, limits, ExternalIds, paging) stay. /moto-api
requests are not counted.

Speed: one request at a time runs inside moto (it is not thread-safe, and fewer threads
fighting for the GIL is faster); latency waits and stalls run outside, side by side. On 2
cores the launcher serves roughly 300-380 moto requests/s to light clients (about 2-2.5 ms of
CPU each, 0.7 ms of it werkzeug's HTTP handling: every answer closes its connection, so every
request is a new connection and a new thread).
"""

from __future__ import annotations

import argparse
import base64
import csv
import functools
import hashlib
import io
import json
import logging
import random
import re
import signal
import socket
import string
import struct
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
import zlib
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs
from xml.sax.saxutils import escape as xml_escape

import moto.backends
import moto.core.responses
from moto.iam.models import IAMBackend, get_account_id_from, iam_backends
from moto.iam.models import AccessKeyLastUsed
from moto.moto_server.werkzeug_app import MotoRequestHandler
from moto.organizations import utils as org_utils
from moto.organizations.models import (
    FakeAccount,
    FakeOrganization,
    FakeOrganizationalUnit,
    FakePolicy,
    FakeRoot,
    organizations_backends,
)
from moto.server import DomainDispatcherApplication, create_backend_app
from moto.sts.models import sts_backends
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
ROLE_ARN_RE = re.compile(r"^arn:[a-z0-9-]+:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/")
USER_NAME_RE = re.compile(r"^[\w+=,.@-]{1,64}$")
ACCESS_KEY_ID_RE = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{12,124}$")

FAULT_KINDS = ("throttle", "error500", "access_denied", "no_such_entity", "error", "stall", "reset")
DEFAULT_MAX_ITEMS = 100
MAX_MAX_ITEMS = 1000
DEFAULT_ACCOUNT = "123456789012"  # moto's default account: unknown AKIA keys belong to it
JSON_CT = "application/x-amz-json-1.1"
REPORT_MAX_AGE = 4 * 3600  # AWS reuses a credential report for four hours


# --------------------------------------------------------------------------- moto tweaks

def _speed_up_moto() -> None:
    """Pure-speed patches; none changes what moto answers (each is a cache of a pure lookup).

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

    # 3. Every request lists its response class's methods with inspect.getmembers (about 15%
    #    of moto's time per request); a class's methods never change while we run.
    names_of = functools.lru_cache(maxsize=None)(moto.core.responses.method_names_from_class)
    moto.core.responses.method_names_from_class = names_of  # type: ignore[assignment]

    # 4. Routing a request tries hundreds of URL regexes, under a global lock, for the host
    #    moto derives from the credential scope; the answer for a host never changes.
    routed: dict[str | None, Any] = {}
    find_backend = DomainDispatcherApplication.get_backend_for_host

    def get_backend_for_host(self: DomainDispatcherApplication, host: str | None) -> Any:
        if host not in routed:
            routed[host] = find_backend(self, host)
        return routed[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]


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


def check_fields(body: dict, allowed: set[str], where: str = "") -> None:
    unknown = set(body) - allowed
    if unknown:
        raise BadInput(f"{where + ': ' if where else ''}unknown field(s) {sorted(unknown)}")


def want_bool(body: dict, field: str, default: bool | None = None) -> bool:
    value = body.get(field, default)
    if not isinstance(value, bool):
        raise BadInput(f"{field}: expected true or false, got {value!r}")
    return value


def want_number(value: Any, field: str, minimum: float = 0, maximum: float | None = None,
                above: bool = False) -> float:
    """A JSON number in range; bools are not numbers here even though Python says so."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok:
        ok = value > minimum if above else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bound = f"> {minimum}" if above else f">= {minimum}"
        if maximum is not None:
            bound += f" and <= {maximum}"
        raise BadInput(f"{field}: expected a number {bound}, got {value!r}")
    return value


def want_tags(value: Any, field: str, limit: int = 50) -> dict[str, str]:
    """{"key": "value"} as IAM and Organizations accept tags: at most 50, key 1-128, value 0-256."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"{field}: expected an object of tag key -> value")
    if len(value) > limit:
        raise BadInput(f"{field}: at most {limit} tags, got {len(value)}")
    for k, v in value.items():
        if not (1 <= len(k) <= 128):
            raise BadInput(f"{field}: tag key {k!r} must have 1 to 128 characters")
        if not isinstance(v, str) or len(v) > 256:
            raise BadInput(f"{field}.{k}: expected a string of at most 256 characters, got {v!r}")
    return dict(value)


def derived_id(seed: str, n: int) -> str:
    """n lower-case letters/digits from a hash: ids the same on every call and every run."""
    alphabet = string.ascii_lowercase + string.digits
    value = int.from_bytes(hashlib.sha256(seed.encode("utf-8")).digest(), "big")
    out = []
    for _ in range(n):
        value, r = divmod(value, len(alphabet))
        out.append(alphabet[r])
    return "".join(out)


# --------------------------------------------------------------------------- markers
#
# Opaque, like AWS's: base64 of  MAGIC | tag | page(2) | len(1) | last sort key | 0-2 zeros.
# MAGIC encodes to "+/+/" and the filler makes the length not a multiple of 3, so every
# marker holds '+', '/' and '='. A client that does not URL-encode it sends '+' as a space
# and gets 400 InvalidInput, as it would from AWS. The marker carries the last item
# returned, not an offset, so deletions between pages skip nothing.

MARKER_MAGIC = b"\xfb\xff\xbf"
MARKER_TAGS = {"ListUsers": b"U", "ListAccessKeys": b"K", "ListUserTags": b"T", "GetAccountAuthorizationDetails": b"A"}
# The lists each paged IAM operation answers, with the field they are sorted by. Several
# lists are paged as one sequence, in this order; their marker's sort key is "<list index>/<key>".
PAGED_LISTS = {
    "ListUsers": [("Users", "UserName")],
    "ListAccessKeys": [("AccessKeyMetadata", "AccessKeyId")],
    "ListUserTags": [("Tags", "Key")],
    "GetAccountAuthorizationDetails": [("UserDetailList", "UserName"), ("GroupDetailList", "GroupName"),
                                       ("RoleDetailList", "RoleName"), ("Policies", "PolicyId")],
}


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


# Organizations NextTokens: base64 of  MAGIC | crc32(operation) | crc32(other parameters) |
# len(2) | last sort key. A token is only good for the operation and parameters (ParentId,
# ResourceId, ...) it came from, as AWS's are.
ORG_TOKEN_MAGIC = b"\x9e\x8b\x1f\x02"


def org_checksum(params: dict) -> int:
    return zlib.crc32(json.dumps(params, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def encode_org_token(op: str, params: dict, last: str) -> str:
    key = last.encode("utf-8")
    raw = ORG_TOKEN_MAGIC + struct.pack(">IIH", zlib.crc32(op.encode()), org_checksum(params), len(key)) + key
    return base64.b64encode(raw).decode("ascii")


def decode_org_token(op: str, params: dict, token: Any) -> str:
    if not isinstance(token, str):
        raise ValueError("not a string")
    try:
        raw = base64.b64decode(token.encode("ascii"), validate=True)
    except Exception:
        raise ValueError("not base64") from None
    head = len(ORG_TOKEN_MAGIC) + 10
    if len(raw) < head or not raw.startswith(ORG_TOKEN_MAGIC):
        raise ValueError("bad token")
    op_crc, params_crc, n = struct.unpack(">IIH", raw[len(ORG_TOKEN_MAGIC):head])
    if op_crc != zlib.crc32(op.encode()) or params_crc != org_checksum(params) or len(raw) != head + n:
        raise ValueError("token of another request")
    return raw[head:].decode("utf-8")


# --------------------------------------------------------------------------- state

FAULT_FIELDS = {"kind", "operation", "account", "count", "delay_seconds", "status", "code", "message"}


class FaultRule:
    def __init__(self, spec: Any, index: int):
        where = f"faults[{index}]"
        if not isinstance(spec, dict):
            raise BadInput(f"{where}: expected an object")
        check_fields(spec, FAULT_FIELDS, where)
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
        self.status, self.code, self.message = self.parse_error(spec, where)
        self.remaining = self.count
        self.hits = 0

    def parse_error(self, spec: dict, where: str) -> tuple[int | None, str | None, str | None]:
        if self.kind != "error":
            for field in ("status", "code", "message"):
                if field in spec:
                    raise BadInput(f"{where}.{field}: only for kind 'error'")
            return None, None, None
        status = spec.get("status", 400)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise BadInput(f"{where}.status: expected an HTTP error status 400-599, got {status!r}")
        code = spec.get("code")
        if not isinstance(code, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_.]{0,127}$", code):
            raise BadInput(f"{where}.code: expected an AWS error code like 'ReportExpired', got {code!r}")
        message = spec.get("message", "")
        if not isinstance(message, str):
            raise BadInput(f"{where}.message: expected a string")
        return status, code, message

    def matches(self, operation: str, account: str) -> bool:
        if self.remaining == 0:
            return False
        if self.operation not in ("*", operation):
            return False
        return self.account is None or self.account == account

    def view(self) -> dict:
        out = {
            "kind": self.kind,
            "operation": self.operation,
            "account": self.account,
            "count": self.count,
            "remaining": self.remaining,
            "hits": self.hits,
            "delay_seconds": self.delay,
        }
        if self.kind == "error":
            out.update(status=self.status, code=self.code, message=self.message)
        return out


class RateLimits:
    """The token-bucket limits of /_launcher/rate_limits (what AWS's request quotas look like)."""

    def __init__(self, spec: dict):
        off = spec.get("off", False)
        if not isinstance(off, bool):
            raise BadInput(f"off: expected true or false, got {off!r}")
        if off:
            check_fields(spec, {"off"})
            self.default, self.operations, self.accounts, self.off = None, {}, None, True
            return
        check_fields(spec, {"off", "default", "operations", "accounts"})
        self.off = False
        self.default = self.parse_limit(spec.get("default"), "default")
        ops = spec.get("operations") or {}
        if not isinstance(ops, dict):
            raise BadInput("operations: expected an object of operation -> {rate, burst}|null")
        self.operations = {op: self.parse_limit(v, f"operations.{op}") for op, v in ops.items()}
        accounts = spec.get("accounts")
        if accounts is not None:
            if not isinstance(accounts, list) or not all(isinstance(a, str) and ACCOUNT_RE.match(a) for a in accounts):
                raise BadInput("accounts: expected null (every account) or a list of 12-digit account ids")
            accounts = frozenset(accounts)
        self.accounts = accounts

    @staticmethod
    def parse_limit(value: Any, field: str) -> tuple[float, float] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise BadInput(f"{field}: expected {{\"rate\": n, \"burst\": n}} or null (unlimited)")
        check_fields(value, {"rate", "burst"}, field)
        rate = want_number(value.get("rate"), f"{field}.rate", 0, above=True)
        burst = want_number(value.get("burst", max(1.0, rate)), f"{field}.burst", 1)
        return float(rate), float(burst)

    def limit(self, account: str, operation: str) -> tuple[float, float] | None:
        if self.off or (self.accounts is not None and account not in self.accounts):
            return None
        if operation in self.operations:
            return self.operations[operation]
        return self.default

    def view(self) -> dict:
        if self.off:
            return {"off": True}

        def lim(v: tuple[float, float] | None) -> dict | None:
            return None if v is None else {"rate": v[0], "burst": v[1]}

        return {"default": lim(self.default), "operations": {k: lim(v) for k, v in self.operations.items()},
                "accounts": None if self.accounts is None else sorted(self.accounts)}


class CredentialReport:
    """One generated report of one account: frozen content and the time it was made."""

    def __init__(self, content: bytes, generated: datetime):
        self.content = content
        self.generated = generated  # naive UTC, whole seconds
        self.expired = False


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults: list[FaultRule] = []
        self.counts: dict[str, dict[str, int]] = {}
        self.throttled: dict[str, dict[str, int]] = {}
        self.bytes: dict[str, dict[str, int]] = {}
        self.short_pages = True
        self.stall_release = threading.Event()  # set (and replaced) by faults/clear
        self.stopping = threading.Event()
        self.demo: dict | None = None
        self.latency = (0.0, 0.0)  # seconds
        self.limits = RateLimits({"off": True})
        self.buckets: dict[tuple[str, str], list[float]] = {}  # (account, op) -> [tokens, stamp]
        self.external_ids: dict[str, str] = {}
        self.org_max_results: int | None = None
        # Credential reports: moto builds one at every Get, has no <root_account> row and a
        # fixed GeneratedTime, so the launcher keeps its own.
        self.root_rows: dict[str, dict[str, bool]] = {}
        self.reports: dict[str, CredentialReport] = {}
        self.report_started: dict[str, datetime] = {}
        self.report_max_age = float(REPORT_MAX_AGE)
        self.csv_quoting = False

    @staticmethod
    def bump(table: dict[str, dict[str, int]], account: str, operation: str, n: int = 1) -> None:
        per = table.setdefault(account, {})
        per[operation] = per.get(operation, 0) + n

    def count(self, account: str, operation: str) -> None:
        with self.lock:
            self.bump(self.counts, account, operation)

    def count_bytes(self, account: str, operation: str, n: int) -> None:
        with self.lock:
            self.bump(self.bytes, account, operation, n)

    def take_token(self, account: str, operation: str) -> bool:
        """False if the rate limits refuse this request (and it is counted as throttled)."""
        with self.lock:
            limit = self.limits.limit(account, operation)
            if limit is None:
                return True
            rate, burst = limit
            now = time.monotonic()
            bucket = self.buckets.get((account, operation))
            if bucket is None:
                bucket = self.buckets[(account, operation)] = [burst, now]
            bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return True
            self.bump(self.throttled, account, operation)
            return False

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
        unknown = set(u) - {"name", "create_date", "path", "password", "password_last_used", "tags", "keys"}
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
        tags = want_tags(u.get("tags"), f"{where}.tags")
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
        plans.append((name, created, path, tags, password, pw_used, key_plans))

    out = []
    for name, created, path, tags, password, pw_used, key_plans in plans:
        user = backend.create_user(region_name="us-east-1", user_name=name, path=path,
                                   tags=[{"Key": k, "Value": v} for k, v in tags.items()])
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


def find_user(body: dict) -> tuple[IAMBackend, Any]:
    """The IAM backend of `account` and its user `user`, which must exist."""
    account = want_account(body)
    name = want_str(body, "user")
    backend = iam_backend(account)
    user = backend.users.get(name)
    if user is None:
        raise BadInput(f"user: no user {name!r} in account {account}")
    return backend, user


def add_key(body: dict) -> dict:
    """A new key for an existing user, as CreateAccessKey makes one (now, never used)."""
    check_fields(body, {"account", "user", "status", "create_date"})
    backend, user = find_user(body)
    if len(user.access_keys) >= 2:
        raise BadInput(f"user: {user.name!r} already has 2 access keys, the most IAM allows")
    status = want_status(body.get("status", "Active"), "status")
    created = parse_date(body["create_date"], "create_date") if body.get("create_date") is not None else None
    key = backend.create_access_key(user.name, status=status)
    if created is not None:
        key.create_date = created
    return key_view(key)


def find_user_key(body: dict) -> tuple[IAMBackend, Any, Any]:
    backend, user = find_user(body)
    akid = want_str(body, "access_key_id")
    for key in user.access_keys:
        if key.access_key_id == akid:
            return backend, user, key
    raise BadInput(f"access_key_id: user {user.name!r} in account {body['account']} has no key {akid!r}")


def mutate_key(body: dict) -> dict:
    check_fields(body, {"account", "user", "access_key_id", "status", "create_date", "last_used"})
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
    check_fields(body, {"account", "user", "access_key_id"})
    backend, user, key = find_user_key(body)
    backend.delete_access_key(key.access_key_id, user.name)
    backend.access_keys.pop(key.access_key_id, None)
    return {"deleted": key.access_key_id}


def delete_user(body: dict) -> dict:
    check_fields(body, {"account", "user"})
    backend, user = find_user(body)
    name = user.name
    keys = [k.access_key_id for k in user.access_keys]
    for akid in keys:
        backend.access_keys.pop(akid, None)
    user.access_keys = []
    backend.tagger.delete_all_tags_for_resource(user.arn)
    del backend.users[name]
    return {"deleted": name, "keys": keys}


# --------------------------------------------------------------------------- organizations

ORG_STATES = ("ACTIVE", "SUSPENDED", "PENDING_CLOSURE", "CLOSED", "PENDING_ACTIVATION")
STATES_WITH_STATUS = ("ACTIVE", "SUSPENDED", "PENDING_CLOSURE")  # the older Status field's values
OU_NAME_RE = re.compile(r"^[^/]{1,128}$")  # AWS allows '/', but here it separates path names
MAX_OU_DEPTH = 5  # AWS's limit of nested OUs under the root


class SeededAccount(FakeAccount):
    """An account placed by /_launcher/organization: a fixed id and any State.

    moto's constructor draws a random id and creates OrganizationAccountAccessRole in that
    random account's IAM; a seeded account needs neither (AssumeRole works without a role)."""

    # moto's model metaclass files every model under the service named by its module
    __module__ = "moto.organizations.models"

    def __init__(self, org: FakeOrganization, account_id: str, spec: dict, parent_id: str, joined: datetime):
        self.type = "ACCOUNT"
        self.region = org.region
        self.organization_id = org.id
        self.master_account_id = org.master_account_id
        self.create_account_status_id = "car-" + derived_id(f"car:{account_id}", 8)
        self.id = account_id
        self.name = spec["name"]
        self.email = spec["email"]
        self.create_time = joined
        self.state = spec["state"]
        self.status = self.state if self.state in STATES_WITH_STATUS else None
        self.joined_method = spec["joined_method"]
        self.parent_id = parent_id
        self.attached_policies = []
        self.tags = dict(spec["tags"])

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.status is None:  # AWS answers no Status for CLOSED and PENDING_ACTIVATION
            out.pop("Status", None)
        return out


def parse_ous(specs: Any, field: str, parent: str, depth: int, out: list[tuple[str, str, dict]]) -> None:
    """Flattens the OU tree into (path, parent path, tags), parents first."""
    if specs is None:
        return
    if not isinstance(specs, list):
        raise BadInput(f"{field}: expected a list of OUs")
    if specs and depth > MAX_OU_DEPTH:
        raise BadInput(f"{field}: OUs nest at most {MAX_OU_DEPTH} deep under the root")
    names: set[str] = set()
    for i, ou in enumerate(specs):
        where = f"{field}[{i}]"
        if not isinstance(ou, dict):
            raise BadInput(f"{where}: expected an object {{name, children?, tags?}}")
        check_fields(ou, {"name", "children", "tags"}, where)
        name = ou.get("name")
        if not isinstance(name, str) or not OU_NAME_RE.match(name):
            raise BadInput(f"{where}.name: expected 1-128 characters without '/', got {name!r}")
        if name in names:
            raise BadInput(f"{where}.name: two OUs named {name!r} under the same parent")
        names.add(name)
        path = f"{parent}/{name}" if parent else name
        out.append((path, parent, want_tags(ou.get("tags"), f"{where}.tags")))
        parse_ous(ou.get("children"), f"{where}.children", path, depth + 1, out)


def parse_org_accounts(specs: Any, management: str, paths: set[str]) -> list[tuple[str, dict]]:
    if specs is None:
        specs = []
    if not isinstance(specs, list):
        raise BadInput("accounts: expected a list")
    out, seen = [], set()
    for i, a in enumerate(specs):
        where = f"accounts[{i}]"
        if not isinstance(a, dict):
            raise BadInput(f"{where}: expected an object")
        check_fields(a, {"id", "name", "ou", "tags", "state", "email", "joined", "joined_method"}, where)
        account = a.get("id")
        if not isinstance(account, str) or not ACCOUNT_RE.match(account):
            raise BadInput(f"{where}.id: expected a 12-digit account id string, got {a.get('id')!r}")
        if account in seen:
            raise BadInput(f"{where}.id: account {account} listed twice")
        seen.add(account)
        name = a.get("name", "management" if account == management else None)
        if not isinstance(name, str) or not 1 <= len(name) <= 50:
            raise BadInput(f"{where}.name: expected 1-50 characters, got {name!r}")
        ou = a.get("ou") or ""
        if not isinstance(ou, str) or (ou and ou not in paths):
            raise BadInput(f"{where}.ou: no OU {ou!r}; known paths: {sorted(paths)}")
        state = a.get("state", "ACTIVE")
        if state not in ORG_STATES:
            raise BadInput(f"{where}.state: expected one of {list(ORG_STATES)}, got {state!r}")
        email = a.get("email", f"aws+{account}@example.com")
        if not isinstance(email, str) or "@" not in email:
            raise BadInput(f"{where}.email: expected an email address, got {email!r}")
        joined = parse_date(a["joined"], f"{where}.joined") if a.get("joined") is not None else None
        method = a.get("joined_method", "CREATED")
        if method not in ("CREATED", "INVITED"):
            raise BadInput(f"{where}.joined_method: expected 'CREATED' or 'INVITED', got {method!r}")
        out.append((account, {"name": name, "ou": ou, "tags": want_tags(a.get("tags"), f"{where}.tags"),
                              "state": state, "email": email, "joined": joined, "joined_method": method}))
    if management not in seen:
        out.insert(0, (management, {"name": "management", "ou": "", "tags": {}, "state": "ACTIVE",
                                    "email": f"aws+{management}@example.com", "joined": None,
                                    "joined_method": "CREATED"}))
    return out


def seed_organization(body: dict) -> dict:
    check_fields(body, {"management_account", "ous", "accounts"})
    management = want_account(body, "management_account") if "management_account" in body else DEFAULT_ACCOUNT
    ou_specs: list[tuple[str, str, dict]] = []
    parse_ous(body.get("ous"), "ous", "", 1, ou_specs)
    accounts = parse_org_accounts(body.get("accounts"), management, {p for p, _, _ in ou_specs})
    for account, _ in accounts:
        owner = organizations_backends.master_accounts.get(account)
        if account != management and owner is not None and owner[0] != management:
            raise BadInput(f"accounts: {account} is a member of {owner[0]}'s organization")
        if account != management and organizations_backends[account]["aws"].org is not None:
            raise BadInput(f"accounts: {account} manages an organization of its own")

    backend = organizations_backends[management]["aws"]
    joined_before = {a.id: a.create_time for a in backend.accounts}
    now = datetime.now(timezone.utc).replace(tzinfo=None)

    org = FakeOrganization(management, region_name="us-east-1", feature_set="ALL")
    org.id = "o-" + derived_id(f"org:{management}", 10)
    org.root_id = "r-" + derived_id(f"root:{management}", 4)
    root = FakeRoot(org)
    ous: dict[str, FakeOrganizationalUnit] = {"": root}
    for path, parent, tags in ou_specs:
        ou = FakeOrganizationalUnit(org, Name=path.rsplit("/", 1)[-1], ParentId=ous[parent].id,
                                    Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        ou.id = f"ou-{org.root_id[2:]}-" + derived_id(f"ou:{management}:{path}", 8)
        ous[path] = ou
    members = []
    for account, spec in accounts:
        joined = spec["joined"] or joined_before.get(account) or now
        members.append(SeededAccount(org, account, spec, ous[spec["ou"]].id, joined))
        if account == management:
            org.master_account_email = spec["email"]
    policies = default_policies(org)
    for target in [*ous.values(), *members]:
        for policy in policies:
            target.attached_policies.append(policy)
            policy.attachments.append(target)

    # Swap the new tree in whole; a request that is being answered sees the old or the new one.
    backend._reset()
    backend.org, backend.ou, backend.accounts, backend.policies = org, list(ous.values()), members, policies
    owners = organizations_backends.master_accounts
    for account, (owner, _) in list(owners.items()):
        if owner == management:
            owners.pop(account, None)
    for member in members:
        if member.id != management:
            owners[member.id] = (management, "aws")  # DescribeOrganization from a member finds it
    return organization_view(management)


def default_policies(org: FakeOrganization) -> list[FakePolicy]:
    """The two AWS-managed policies moto's CreateOrganization attaches to every target."""
    out = []
    for pid, name, ptype, description, statement in (
        (org_utils.DEFAULT_SCP_POLICY_ID, "FullAWSAccess", "SERVICE_CONTROL_POLICY",
         "Allows access to every operation", {"Effect": "Allow", "Action": "*", "Resource": "*"}),
        (org_utils.DEFAULT_RCP_POLICY_ID, "RCPFullAWSAccess", "RESOURCE_CONTROL_POLICY",
         "Allows access to every resource", {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}),
    ):
        policy = FakePolicy(org, Name=name, Description=description, Type=ptype,
                            Content=json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
        policy.id = pid
        policy.aws_managed = True
        out.append(policy)
    return out


def organization_view(management: str) -> dict:
    """The organization as moto holds it now (also after Organizations API calls changed it)."""
    backend = organizations_backends[management]["aws"]
    org = backend.org
    if org is None:
        raise BadInput(f"management_account: {management} has no organization")
    by_id = {ou.id: ou for ou in backend.ou}

    def path_of(ou_id: str) -> str:
        names = []
        while ou_id in by_id and by_id[ou_id].type != "ROOT":
            names.append(by_id[ou_id].name)
            ou_id = by_id[ou_id].parent_id
        return "/".join(reversed(names))

    return {
        "management_account": management,
        "organization_id": org.id,
        "root_id": org.root_id,
        "ous": {path_of(ou.id): ou.id for ou in backend.ou if ou.type != "ROOT"},
        "accounts": [{"id": a.id, "name": a.name, "ou": path_of(a.parent_id), "parent_id": a.parent_id,
                      "state": a.state} for a in backend.accounts],
    }


def delete_organization(body: dict) -> dict:
    check_fields(body, {"management_account"})
    management = want_account(body, "management_account") if "management_account" in body else DEFAULT_ACCOUNT
    backend = organizations_backends[management]["aws"]
    if backend.org is None:
        raise BadInput(f"management_account: {management} has no organization")
    backend._reset()
    for account, (owner, _) in list(organizations_backends.master_accounts.items()):
        if owner == management:
            organizations_backends.master_accounts.pop(account, None)
    return {"deleted": management}


def list_organizations() -> dict:
    out = {}
    for account in list(organizations_backends.keys()):
        if organizations_backends[account]["aws"].org is not None:
            out[account] = organization_view(account)
    return {"organizations": out}


# --------------------------------------------------------------------------- credential report

REPORT_COLUMNS = (
    "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,"
    "password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,"
    "access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,"
    "access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,"
    "access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,"
    "cert_2_active,cert_2_last_rotated"
).split(",")


def report_date(dt: datetime) -> str:
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def report_key_fields(key: Any) -> list[str]:
    """active, last_rotated, last_used_date, last_used_region, last_used_service of one key slot."""
    if key is None:
        return ["false", "N/A", "N/A", "N/A", "N/A"]
    lu = key.last_used
    if lu is None:
        used = ["N/A", "N/A", "N/A"]
    elif isinstance(lu, datetime):  # moto tolerates a bare datetime
        used = [report_date(lu), "N/A", "N/A"]
    else:
        used = [report_date(lu.timestamp), lu.region or "N/A", lu.service or "N/A"]
    return ["true" if key.status == "Active" else "false", report_date(key.create_date), *used]


def report_user_row(user: Any) -> list[str]:
    if user.password:
        pw = ["true", report_date(user.password_last_used) if user.password_last_used else "no_information",
              report_date(user.create_date), "N/A"]
    else:
        pw = ["false", "N/A", "N/A", "N/A"]
    keys = list(user.access_keys)[:2] + [None, None]
    certs = list(user.signing_certificates.values())[:2] + [None, None]
    cert_fields = []
    for cert in certs[:2]:
        cert_fields += ["false", "N/A"] if cert is None else [
            "true" if cert.status == "Active" else "false", report_date(cert.upload_date)]
    return [user.name, user.arn, report_date(user.create_date), *pw,
            "true" if user.mfa_devices else "false",
            *report_key_fields(keys[0]), *report_key_fields(keys[1]), *cert_fields]


def report_root_row(account: str, row: dict[str, bool], generated: datetime) -> list[str]:
    created = report_date(generated - timedelta(days=3650))
    values = dict.fromkeys(REPORT_COLUMNS, "N/A")
    values.update({
        "user": "<root_account>",
        "arn": f"arn:aws:iam::{account}:root",
        "user_creation_time": created,
        "password_enabled": "not_supported",
        "password_last_used": "no_information",
        "password_last_changed": "not_supported",
        "password_next_rotation": "not_supported",
        "mfa_active": str(row["mfa_active"]).lower(),
        "cert_1_active": "false",
        "cert_2_active": "false",
    })
    for n in ("1", "2"):
        active = row[f"access_key_{n}_active"]
        values[f"access_key_{n}_active"] = str(active).lower()
        if active:
            values[f"access_key_{n}_last_rotated"] = created
    return [values[c] for c in REPORT_COLUMNS]


def build_report(account: str, root_row: dict[str, bool] | None, generated: datetime, quoting: bool) -> bytes:
    rows = [REPORT_COLUMNS]
    if root_row is not None:
        rows.append(report_root_row(account, root_row, generated))
    rows += [report_user_row(u) for u in list(iam_backend(account).users.values())]
    if not quoting:  # moto's way: a comma in a user name shifts the row's columns
        return "".join(",".join(r) + "\n" for r in rows).encode("utf-8")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


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
         "tags": {"owner": "alice@example.com", "team": "payments"},
         "keys": [{"create_date": ago(days=400), "last_used": used("s3", "us-east-1", days=2)}]},
        {"name": "bob", "create_date": ago(days=700), "password": True, "password_last_used": ago(days=40),
         "tags": {"owner": "bob@example.com", "team": "search"},
         "keys": [{"create_date": ago(days=120), "last_used": used("ec2", "eu-west-1", days=30)}]},
        {"name": "ci-deploy", "create_date": ago(days=800), "path": "/automation/",
         "tags": {"team": "platform"},
         "keys": [{"create_date": ago(days=310), "last_used": used("ecr", "us-east-1", hours=1)},
                  {"create_date": ago(days=12), "last_used": used("sts", "us-east-1", hours=3)}]},
        {"name": "terraform", "create_date": ago(days=600),
         "keys": [{"create_date": ago(days=5), "last_used": used("iam", "us-east-1", days=1)}]},
        {"name": "legacy-backup", "create_date": ago(days=1000),
         "keys": [{"create_date": ago(days=200)}]},
        # Exempt from the key alerts until a date, by a user tag: in /keys and the audit, silent in Alertmanager.
        {"name": "break-glass", "create_date": ago(days=700),
         "tags": {"iam-key-exporter:exempt-until": fmt_date(now + timedelta(days=60))[:10] + " emergency access, reviewed quarterly"},
         "keys": [{"create_date": ago(days=250), "last_used": used("iam", "us-east-1", days=3)}]},
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
    # security-tooling is read through the credential report (config/demo.yaml): its root
    # user has an active access key and no MFA, which IAMRootAccessKeyPresent pages on.
    root = {"mfa_active": False, "access_key_1_active": True, "access_key_2_active": False}
    with state.lock:
        state.root_rows["333333333333"] = root
    summary["333333333333"]["root"] = root
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

Answer = tuple[str, list, bytes]  # WSGI status line, headers, whole body


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


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


def query_error(service: str, status: int, code: str, message: str) -> Answer:
    """An error in the Query protocol (IAM, STS): <ErrorResponse> XML."""
    ns = STS_NS if service == "sts" else IAM_NS
    kind = "Receiver" if status >= 500 else "Sender"
    request_id = str(uuid.uuid4())
    body = (f'<ErrorResponse xmlns="{ns}"><Error><Type>{kind}</Type><Code>{code}</Code>'
            f"<Message>{xml_escape(message)}</Message></Error><RequestId>{request_id}</RequestId>"
            f"</ErrorResponse>").encode("utf-8")
    return status_line(status), [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body


def json_error(status: int, code: str, message: str, **extra: str) -> Answer:
    """An error in the JSON protocol (Organizations): what the SDKs parse."""
    request_id = str(uuid.uuid4())
    body = json.dumps({"__type": code, "message": message, **extra}).encode("utf-8")
    return status_line(status), [("Content-Type", JSON_CT), ("x-amzn-ErrorType", code),
                                 ("x-amzn-RequestId", request_id)], body


def iam_result(op: str, inner: str) -> Answer:
    request_id = str(uuid.uuid4())
    body = (f'<{op}Response xmlns="{IAM_NS}"><{op}Result>{inner}</{op}Result>'
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{op}Response>").encode("utf-8")
    return "200 OK", [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body


# What each fault kind answers in the Query protocol and in the JSON one (Organizations).
FAULT_ANSWERS = {
    "throttle": ((400, "Throttling", "Rate exceeded"),
                 (400, "TooManyRequestsException", "You have sent too many requests in too short a period of "
                  "time. The quota helps protect against denial-of-service attacks. Try again later.")),
    "error500": ((500, "ServiceUnavailable", "Service is unavailable. Please try again later."),
                 (500, "ServiceException", "AWS Organizations can't complete your request because of an "
                  "internal service error. Try again later.")),
    "access_denied": ((403, "AccessDenied", ""),  # message made per request
                      (400, "AccessDeniedException", "You don't have permissions to access this resource.")),
    # What IAM answers for a user or key deleted since it was listed.
    "no_such_entity": ((404, "NoSuchEntity", "The entity was deleted while it was being read."),
                       (400, "AccountNotFoundException", "You specified an account that doesn't exist.")),
}

# Organizations List* operations moto pages itself, with its default page size; the
# launcher asks moto for everything and pages it with its own tokens.
ORG_PAGE_DEFAULTS = {"ListAccounts": 100, "ListAccountsForParent": 20, "ListOrganizationalUnitsForParent": 20,
                     "ListPolicies": 20, "ListPoliciesForTarget": 20}
ORG_MOTO_PAGED = set(ORG_PAGE_DEFAULTS) | {"ListCreateAccountStatus"}
# What a member account may call (anything else: AccessDeniedException), and an account in
# no organization (anything else: AWSOrganizationsNotInUseException). Delegated
# administrators are not emulated.
ORG_MEMBER_OPERATIONS = {"DescribeOrganization", "LeaveOrganization", "ListHandshakesForAccount",
                         "DescribeHandshake", "AcceptHandshake", "DeclineHandshake"}
ORG_OUTSIDER_OPERATIONS = {"CreateOrganization", "ListHandshakesForAccount", "DescribeHandshake",
                           "AcceptHandshake", "DeclineHandshake"}
ORG_SORT_FIELDS = ("Id", "Key", "TargetId", "ServicePrincipal", "AccountId")
INVALID_NEXT_TOKEN = ("You specified an invalid value for nextToken. You must get the value from the "
                      "response to a previous call to the API.")


def org_sort_key(item: Any) -> str:
    if isinstance(item, dict):
        for field in ORG_SORT_FIELDS:
            if field in item:
                return str(item[field])
    return json.dumps(item, sort_keys=True)


class Req:
    """What the middleware knows of one AWS request."""

    __slots__ = ("environ", "body", "params", "operation", "service", "protocol", "akid", "signer", "account")

    def __init__(self, environ: dict):
        self.environ = environ
        self.body = read_body(environ)
        auth = environ.get("HTTP_AUTHORIZATION", "")
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:  # JSON protocol: the operation is in the header, the body is JSON
            self.protocol, self.params = "json", {}
            self.operation = target.rsplit(".", 1)[-1] or "unknown"
        else:
            self.protocol, self.params = "query", request_params(environ, self.body)
            self.operation = self.params.get("Action") or "unknown"
        self.service = self.service_of(auth, self.operation, target)
        m = CREDENTIAL_RE.search(auth)
        self.akid = m.group(1) if m else self.params.get("AWSAccessKeyId", "AKIAEXAMPLE")
        self.signer = get_account_id_from(self.akid)
        self.account = self.signer
        if self.operation == "AssumeRole":  # counted, limited and faulted as the role's account
            m = ROLE_ARN_ACCOUNT_RE.match(self.params.get("RoleArn", ""))
            if m:
                self.account = m.group(1)

    @staticmethod
    def service_of(auth: str, operation: str, target: str) -> str:
        m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", auth)
        if m:
            return m.group(1).lower()
        if target:
            return "organizations" if target.startswith("AWSOrganizations") else target.split(".")[0].lower()
        return "sts" if operation in STS_ACTIONS else "iam"

    def error(self, status: int, code: str, message: str) -> Answer:
        if self.protocol == "json":
            return json_error(status, code, message)
        return query_error(self.service, status, code, message)


class Launcher:
    def __init__(self, app: Callable, state: State):
        self.app = app
        self.state = state
        # One request at a time inside moto (and control calls that touch its backends): moto
        # is not thread-safe, and with many threads wanting the GIL at once CPython spends more
        # time switching than working (measured: 4.5 -> 2.8 ms CPU per request at 32 clients).
        # Latency waits, stalls and the launcher's own work stay outside it.
        self.moto_lock = threading.Lock()

    # -- WSGI entry
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_launcher/") or path == "/_launcher":
            return self.control(environ, start_response)
        if path.startswith("/moto-api"):
            if path.startswith("/moto-api/reset"):
                with self.state.lock:  # the reports are moto's data seen through the launcher
                    self.state.reports.clear()
                    self.state.report_started.clear()
            return self.respond(start_response, *self.call_app(environ))  # under the moto lock

        req = Req(environ)
        self.state.count(req.account, req.operation)
        self.wait_latency()
        status, headers, body = self.handle(req)
        if req.service == "organizations":  # moto says text/html or application/json
            headers = [(k, v) for k, v in headers if k.lower() != "content-type"] + [("Content-Type", JSON_CT)]
        self.state.count_bytes(req.account, req.operation, len(body))
        return self.respond(start_response, status, headers, body)

    def wait_latency(self) -> None:
        low, high = self.state.latency
        if high > 0:
            # On this request's own thread (werkzeug runs one per connection): concurrent
            # requests wait side by side. A shutdown cuts the wait short.
            self.state.stopping.wait(random.uniform(low, high))

    def handle(self, req: Req) -> Answer:
        if not self.state.take_token(req.account, req.operation):
            if req.protocol == "json":
                return req.error(400, "TooManyRequestsException", FAULT_ANSWERS["throttle"][1][2])
            return req.error(400, "Throttling", "Rate exceeded")
        rule = self.state.take_fault(req.operation, req.account)
        if rule is not None:
            LOG.debug("fault %s on %s for %s", rule.kind, req.operation, req.account)
            answer = self.fault(req, rule)
            if answer is not None:
                return answer
        if req.operation == "AssumeRole" and req.service == "sts":
            denied = self.check_external_id(req)
            if denied is not None:
                return denied
        if req.service == "iam":
            if req.operation in PAGED_LISTS:
                return self.paginated(req)
            if req.operation == "GenerateCredentialReport":
                return self.generate_report(req)
            if req.operation == "GetCredentialReport":
                return self.get_report(req)
        if req.service == "organizations":
            refused = self.org_access(req)
            if refused is not None:
                return refused
            if req.operation.startswith("List"):
                return self.org_list(req)
        return self.call_app(req.environ)

    def fault(self, req: Req, rule: FaultRule) -> Answer | None:
        """The answer a fault rule gives, or None when the request goes on (after a stall)."""
        if rule.kind == "error":
            return req.error(rule.status, rule.code, rule.message)  # type: ignore[arg-type]
        if rule.kind in FAULT_ANSWERS:
            query, js = FAULT_ANSWERS[rule.kind]
            if req.protocol == "json":
                return req.error(*js)
            status, code, message = query
            if rule.kind == "access_denied":
                message = self.denied_message(req.operation, req.params, req.account)
            return req.error(status, code, message)
        if rule.kind == "reset":
            self.reset_connection(req.environ)
        if rule.kind == "stall":
            release = self.state.stall_release
            deadline = time.monotonic() + rule.delay
            while not release.is_set() and not self.state.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                release.wait(min(left, 0.5))
            if self.state.stopping.is_set():
                self.reset_connection(req.environ)
        return None

    @staticmethod
    def denied_message(operation: str, params: dict, account: str) -> str:
        if operation == "AssumeRole":
            return (f"User: arn:aws:iam::{account}:user/iam-key-exporter is not authorized to perform: "
                    f"sts:AssumeRole on resource: {params.get('RoleArn', '')}")
        return (f"User: arn:aws:sts::{account}:assumed-role/IAMKeyExporterReadOnly/iam-key-exporter is not "
                f"authorized to perform: iam:{operation} on resource: arn:aws:iam::{account}:user/")

    @staticmethod
    def reset_connection(environ: dict) -> None:
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

    # -- ExternalId
    def check_external_id(self, req: Req) -> Answer | None:
        role_arn = req.params.get("RoleArn", "")
        with self.state.lock:
            wanted = self.state.external_ids.get(role_arn)
        if wanted is None or req.params.get("ExternalId") == wanted:
            return None
        return req.error(403, "AccessDenied", f"User: {self.caller_arn(req.akid, req.signer)} is not authorized "
                                              f"to perform: sts:AssumeRole on resource: {role_arn}")

    @staticmethod
    def caller_arn(akid: str, account: str) -> str:
        """The ARN AWS names in an AccessDenied: the user owning the key, or the assumed role."""
        key = iam_backend(account).access_keys.get(akid)
        if key is not None and key.user_name:
            user = iam_backend(account).users.get(key.user_name)
            if user is not None:
                return user.arn
        for role in list(sts_backends[account]["aws"].assumed_roles):
            if role.access_key_id == akid:
                return role.arn
        return f"arn:aws:iam::{account}:root"

    # -- pagination of ListUsers / ListAccessKeys / ListUserTags / GetAccountAuthorizationDetails
    def paginated(self, req: Req) -> Answer:
        op, params = req.operation, req.params
        raw_max = params.get("MaxItems")
        max_items = DEFAULT_MAX_ITEMS
        if raw_max not in (None, ""):
            try:
                max_items = int(raw_max)
            except ValueError:
                return req.error(400, "ValidationError",
                                 f"1 validation error detected: Value '{raw_max}' at 'maxItems' failed to satisfy constraint: Member must be a number")
            if max_items < 1:
                return req.error(400, "ValidationError",
                                 f"1 validation error detected: Value '{max_items}' at 'maxItems' failed to satisfy constraint: Member must have value greater than or equal to 1")
            max_items = min(max_items, MAX_MAX_ITEMS)
        page, after = 0, None
        marker = params.get("Marker")
        if marker is not None:
            try:
                page, last = decode_marker(op, marker)
                after = self.sort_position(op, last)
            except ValueError:
                return req.error(400, "InvalidInput", "Invalid Marker.")

        status, headers, body = self.call_app(req.environ)
        if status.startswith("200"):
            short = self.state.short_pages and page % 3 == 1
            size = max(1, max_items // 2) if short else max_items
            whole = self.whole_page(body, op, size) if after is None else None
            body = whole if whole is not None else self.slice_page(body, op, size, page, after)
        return status, headers, body

    @staticmethod
    def whole_page(body: bytes, op: str, size: int) -> bytes | None:
        """moto's answer as it stands when it already is the whole page, in order (most
        ListAccessKeys): parsing and rewriting its XML costs 0.3 ms, about 12% of a request.
        None when it needs slice_page."""
        lists = PAGED_LISTS[op]
        if len(lists) != 1 or b"<Marker>" in body:
            return None
        field = lists[0][1].encode()
        keys = re.findall(b"<" + field + b">([^<]*)</" + field + b">", body)
        if len(keys) > size or keys != sorted(keys):
            return None
        if b"<IsTruncated>" in body:
            return body if b"<IsTruncated>false</IsTruncated>" in body else None
        end = f"</{op}Result>".encode()
        if body.count(end) != 1:
            return None
        return body.replace(end, b"<IsTruncated>false</IsTruncated>" + end)

    @staticmethod
    def sort_position(op: str, last: str) -> tuple[int, str]:
        """A marker's last sort key as (list index, key); ValueError if it cannot be one."""
        if len(PAGED_LISTS[op]) == 1:
            return 0, last
        index, sep, key = last.partition("/")
        if not sep or not index.isdigit() or int(index) >= len(PAGED_LISTS[op]):
            raise ValueError("bad marker")
        return int(index), key

    @staticmethod
    def slice_page(body: bytes, op: str, size: int, page: int, after: tuple[int, str] | None) -> bytes:
        root = ET.fromstring(body)
        ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""

        def q(name: str) -> str:
            return f"{{{ns}}}{name}" if ns else name

        result = root.find(q(f"{op}Result"))
        if result is None:
            return body
        lists = PAGED_LISTS[op]
        containers, items = [], []
        for i, (container_name, sort_field) in enumerate(lists):
            container = result.find(q(container_name))
            if container is None:
                container = ET.Element(q(container_name))
                result.insert(0, container)
            containers.append(container)
            for m in sorted(container, key=lambda m: m.findtext(q(sort_field)) or ""):
                items.append(((i, m.findtext(q(sort_field)) or ""), m))
            for child in list(container):
                container.remove(child)
        if after is not None:
            items = [it for it in items if it[0] > after]
        chosen, more = items[:size], len(items) > size
        for (i, _), m in chosen:
            containers[i].append(m)
        for name in ("IsTruncated", "Marker"):
            for el in result.findall(q(name)):
                result.remove(el)
        truncated = ET.SubElement(result, q("IsTruncated"))
        truncated.text = "true" if more else "false"
        if more:
            i, key = chosen[-1][0]
            ET.SubElement(result, q("Marker")).text = encode_marker(op, page + 1, key if len(lists) == 1 else f"{i}/{key}")
        return ET.tostring(root, encoding="utf-8", xml_declaration=False)

    # -- the credential report
    def report_expired(self, report: CredentialReport) -> bool:
        age = (datetime.now(timezone.utc).replace(tzinfo=None) - report.generated).total_seconds()
        return report.expired or age >= self.state.report_max_age

    def generate_report(self, req: Req) -> Answer:
        account, st = req.account, self.state
        now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
        with st.lock:
            current = st.reports.get(account)
            if current is not None and not self.report_expired(current):
                return iam_result("GenerateCredentialReport", "<State>COMPLETE</State>")
            if account not in st.report_started:
                st.report_started[account] = now
                return iam_result("GenerateCredentialReport",
                                  "<State>STARTED</State><Description>No report exists. Starting a new report "
                                  "generation task</Description>")
            root_row, quoting = st.root_rows.get(account), st.csv_quoting
        # The report is made now (outside the lock: it reads every user) and then frozen.
        with self.moto_lock:
            content = build_report(account, root_row, now, quoting)
        with st.lock:
            st.reports[account] = CredentialReport(content, now)
            st.report_started.pop(account, None)
        return iam_result("GenerateCredentialReport", "<State>COMPLETE</State>")

    def get_report(self, req: Req) -> Answer:
        with self.state.lock:
            report = self.state.reports.get(req.account)
            started = req.account in self.state.report_started
        if report is not None and not self.report_expired(report):
            return iam_result("GetCredentialReport",
                              f"<Content>{base64.b64encode(report.content).decode('ascii')}</Content>"
                              f"<ReportFormat>text/csv</ReportFormat>"
                              f"<GeneratedTime>{fmt_date(report.generated)}</GeneratedTime>")
        if started:
            return req.error(404, "ReportInProgress",
                             "The request was rejected because the credential report is still being generated.")
        if report is not None:
            return req.error(410, "ReportExpired",
                             "The request was rejected because the most recent credential report has expired. "
                             "To generate a new credential report, use GenerateCredentialReport.")
        return req.error(410, "ReportNotPresent",
                         "The request was rejected because the credential report does not exist. "
                         "To generate a credential report, use GenerateCredentialReport.")

    # -- Organizations
    def org_access(self, req: Req) -> Answer | None:
        """What AWS answers an account that does not manage an organization (moto answers it
        from that account's own, empty backend: no accounts, no error)."""
        if organizations_backends[req.signer]["aws"].org is not None:
            return None
        if req.signer in organizations_backends.master_accounts:
            if req.operation in ORG_MEMBER_OPERATIONS:
                return None
            return json_error(400, "AccessDeniedException", "You don't have permissions to access this resource.")
        if req.operation in ORG_OUTSIDER_OPERATIONS:
            return None
        return json_error(400, "AWSOrganizationsNotInUseException", "Your account is not a member of an organization.")

    def org_list(self, req: Req) -> Answer:
        try:
            params = json.loads(req.body or b"{}")
        except ValueError:
            return self.call_app(req.environ)  # moto answers what it answers
        if not isinstance(params, dict):
            return self.call_app(req.environ)
        op = req.operation
        max_results = params.pop("MaxResults", None)
        token = params.pop("NextToken", None)
        if max_results is not None and (isinstance(max_results, bool) or not isinstance(max_results, int)
                                        or max_results < 1):
            return json_error(400, "InvalidInputException", "You provided a value that does not match the "
                              "required pattern.", Reason="INVALID_INPUT")
        after = None
        if token is not None:
            try:
                after = decode_org_token(op, params, token)
            except (ValueError, UnicodeDecodeError):
                return json_error(400, "InvalidInputException", INVALID_NEXT_TOKEN, Reason="INVALID_NEXT_TOKEN")

        forward = dict(params)
        if op in ORG_MOTO_PAGED:
            forward["MaxResults"] = 1_000_000  # all of it, in one page
        data = json.dumps(forward).encode("utf-8")
        req.environ["wsgi.input"] = io.BytesIO(data)
        req.environ["CONTENT_LENGTH"] = str(len(data))
        status, headers, body = self.call_app(req.environ)
        if not status.startswith("200"):
            return status, headers, body
        try:
            answer = json.loads(body)
        except ValueError:
            return status, headers, body
        lists = [k for k, v in answer.items() if isinstance(v, list)] if isinstance(answer, dict) else []
        if len(lists) != 1:
            return status, headers, body
        items = sorted(answer[lists[0]], key=org_sort_key)
        if after is not None:
            items = [it for it in items if org_sort_key(it) > after]
        size = max_results or ORG_PAGE_DEFAULTS.get(op)
        cap = self.state.org_max_results
        if cap is not None:
            size = min(size, cap) if size else cap
        answer.pop("NextToken", None)
        if size is not None and len(items) > size:
            items = items[:size]
            answer["NextToken"] = encode_org_token(op, params, org_sort_key(items[-1]))
        answer[lists[0]] = items
        return status, headers, json.dumps(answer).encode("utf-8")

    # -- calling moto
    def call_app(self, environ: dict) -> Answer:
        """Runs moto on the request and returns its whole answer, to be rewritten."""
        captured: dict[str, Any] = {}
        chunks: list[bytes] = []

        def capture(status: str, headers: list, exc_info: Any = None) -> Callable:
            captured["status"], captured["headers"] = status, headers
            return chunks.append

        with self.moto_lock:
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
            ("GET", "/_launcher/counts"): lambda b: self.table("counts"),
            ("GET", "/_launcher/throttled"): lambda b: self.table("throttled"),
            ("GET", "/_launcher/bytes"): lambda b: self.table("bytes"),
            ("POST", "/_launcher/counts/reset"): self.reset_counts,
            ("GET", "/_launcher/faults"): self.get_faults,
            ("POST", "/_launcher/faults"): self.add_faults,
            ("POST", "/_launcher/faults/clear"): self.clear_faults,
            ("GET", "/_launcher/pagination"): self.pagination,
            ("POST", "/_launcher/pagination"): self.pagination,
            ("POST", "/_launcher/seed"): self.seed,
            ("POST", "/_launcher/key"): mutate_key,
            ("POST", "/_launcher/add_key"): add_key,
            ("POST", "/_launcher/delete_key"): delete_key,
            ("POST", "/_launcher/delete_user"): delete_user,
            ("POST", "/_launcher/root"): self.set_root,
            ("GET", "/_launcher/demo"): self.get_demo,
            ("GET", "/_launcher/latency"): self.latency,
            ("POST", "/_launcher/latency"): self.latency,
            ("GET", "/_launcher/rate_limits"): self.rate_limits,
            ("POST", "/_launcher/rate_limits"): self.rate_limits,
            ("GET", "/_launcher/external_id"): self.external_id,
            ("POST", "/_launcher/external_id"): self.external_id,
            ("GET", "/_launcher/credential_report"): self.report_settings,
            ("POST", "/_launcher/credential_report"): self.report_settings,
            ("POST", "/_launcher/credential_report/expire"): self.expire_report,
            ("POST", "/_launcher/credential_report/generate"): self.make_report,
            ("GET", "/_launcher/organization"): lambda b: list_organizations(),
            ("POST", "/_launcher/organization"): seed_organization,
            ("POST", "/_launcher/organization/delete"): delete_organization,
            ("GET", "/_launcher/organizations_paging"): self.organizations_paging,
            ("POST", "/_launcher/organizations_paging"): self.organizations_paging,
        }
        handler = routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in routes):
                return self.json(start_response, 405, {"error": f"method {method} not allowed on {path}"})
            return self.json(start_response, 404, {"error": f"no control endpoint {path}"})
        try:
            started = time.monotonic()
            with self.moto_lock:  # seeding and reading moto's backends: never during a request
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
        start_response(status_line(status), [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
        ])
        return [data]

    @staticmethod
    def seed(body: dict) -> dict:
        check_fields(body, {"account", "users"})
        return {"users": seed(want_account(body), body.get("users"))}

    def set_root(self, body: dict) -> dict:
        check_fields(body, {"account", "mfa_active", "access_key_1_active", "access_key_2_active"})
        account = want_account(body)
        row = {field: want_bool(body, field, False)
               for field in ("mfa_active", "access_key_1_active", "access_key_2_active")}
        with self.state.lock:
            self.state.root_rows[account] = row
        return {"root": row}

    def table(self, name: str) -> dict:
        with self.state.lock:
            return {a: dict(ops) for a, ops in getattr(self.state, name).items()}

    def reset_counts(self, _: dict) -> dict:
        with self.state.lock:
            self.state.counts, self.state.throttled, self.state.bytes = {}, {}, {}
        return {"ok": True}

    def get_faults(self, _: dict) -> dict:
        with self.state.lock:
            return {"faults": [r.view() for r in self.state.faults]}

    def add_faults(self, body: dict) -> dict:
        check_fields(body, {"faults"})
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
            check_fields(body, {"short_pages"})
            if "short_pages" in body:
                self.state.short_pages = want_bool(body, "short_pages")
        return {"short_pages": self.state.short_pages}

    def latency(self, body: dict) -> dict:
        if body:
            check_fields(body, {"min_ms", "max_ms"})
            low = want_number(body.get("min_ms"), "min_ms", 0, 600_000)
            high = want_number(body.get("max_ms", low), "max_ms", 0, 600_000)
            if high < low:
                raise BadInput(f"max_ms: must be >= min_ms ({low}), got {high}")
            self.state.latency = (low / 1000.0, high / 1000.0)
        low, high = self.state.latency
        return {"min_ms": round(low * 1000, 3), "max_ms": round(high * 1000, 3)}

    def rate_limits(self, body: dict) -> dict:
        if body:
            limits = RateLimits(body)
            with self.state.lock:
                self.state.limits, self.state.buckets = limits, {}
        with self.state.lock:
            return self.state.limits.view()

    def external_id(self, body: dict) -> dict:
        if body:
            check_fields(body, {"role_arn", "external_id"})
            role_arn = body.get("role_arn")
            if not isinstance(role_arn, str) or not ROLE_ARN_RE.match(role_arn):
                raise BadInput(f"role_arn: expected a role ARN like arn:aws:iam::111111111111:role/Name, got {role_arn!r}")
            if "external_id" not in body:
                raise BadInput("external_id: required (a string, or null to remove it)")
            external_id = body["external_id"]
            if external_id is not None and (not isinstance(external_id, str) or not 2 <= len(external_id) <= 1224):
                raise BadInput(f"external_id: expected a string of 2-1224 characters or null, got {external_id!r}")
            with self.state.lock:
                if external_id is None:
                    self.state.external_ids.pop(role_arn, None)
                else:
                    self.state.external_ids[role_arn] = external_id
        with self.state.lock:
            return {"external_ids": dict(self.state.external_ids)}

    def report_settings(self, body: dict) -> dict:
        if body:
            check_fields(body, {"max_age_seconds", "csv_quoting"})
            max_age = self.state.report_max_age
            if "max_age_seconds" in body:
                max_age = float(want_number(body["max_age_seconds"], "max_age_seconds", 0, above=True))
            quoting = want_bool(body, "csv_quoting", self.state.csv_quoting)
            with self.state.lock:
                self.state.report_max_age, self.state.csv_quoting = max_age, quoting
        return {"max_age_seconds": self.state.report_max_age, "csv_quoting": self.state.csv_quoting}

    def expire_report(self, body: dict) -> dict:
        check_fields(body, {"account"})
        account = want_account(body)
        with self.state.lock:
            report = self.state.reports.get(account)
            if report is not None:
                report.expired = True
            self.state.report_started.pop(account, None)
        return {"account": account, "expired": report is not None}

    def make_report(self, body: dict) -> dict:
        """A report generated now, as if a Generate had completed: what a test needs to change
        IAM after the report and before the exporter reads it."""
        check_fields(body, {"account"})
        account = want_account(body)
        now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
        with self.state.lock:
            root_row, quoting = self.state.root_rows.get(account), self.state.csv_quoting
        content = build_report(account, root_row, now, quoting)  # control handlers hold moto_lock
        with self.state.lock:
            self.state.reports[account] = CredentialReport(content, now)
            self.state.report_started.pop(account, None)
        return {"account": account, "generated": fmt_date(now)}

    def organizations_paging(self, body: dict) -> dict:
        if body:
            check_fields(body, {"max_results"})
            value = body.get("max_results")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise BadInput(f"max_results: expected a positive integer or null (no cap), got {value!r}")
            self.state.org_max_results = value
        return {"max_results": self.state.org_max_results}

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
