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
  * AWS-style pagination of IAM ListUsers, ListAccessKeys, ListUserTags, ListSSHPublicKeys
    and GetAccountAuthorizationDetails (moto ignores MaxItems/Marker for all five), and of
    ListServiceSpecificCredentials: MaxItems (default 100, capped at 1000), IsTruncated + an
    opaque Marker holding '+', '/' and '=' (an unencoded or foreign marker gets 400
    InvalidInput); items sorted by UserName / AccessKeyId / tag Key / SSHPublicKeyId /
    (UserName, GroupName, RoleName, PolicyId: the four lists of GetAccountAuthorizationDetails
    are paged as one sequence, in that order) / (UserName, CreateDate, credential id); by
    default pages 1, 4, 7, ... (counting from 0) hold only max(1, MaxItems // 2) items.
    GetAccountAuthorizationDetails' roles carry their trust policy URL-encoded, as AWS and
    GetRole send it (moto sends raw JSON there).
  * service-specific credentials (CodeCommit, Keyspaces, Bedrock and CloudWatch Logs API
    keys), which moto does not emulate (see "Service-specific credentials" below); AWS's
    limit of 5 SSH public keys per user on UploadSSHPublicKey (409 LimitExceeded);
  * AWS Organizations seeded in one call with fixed account ids and any account State,
    answered as application/x-amz-json-1.1 (moto says text/html), every List* operation
    paged by the launcher with opaque NextTokens (see "Organizations" below);
  * fault injection per operation (the Query "Action", or the JSON X-Amz-Target operation)
    and account; added latency; token-bucket rate limits like AWS's;
  * ExternalId enforcement on AssumeRole (moto never checks it);
  * the credential report as AWS keeps it: a snapshot with a real GeneratedTime, reused for
    up to 4 hours, with the <root_account> row moto lacks (set through /_launcher/root);
  * per-account, per-operation request, throttle and response-byte counts;
  * fast seeding and mutation of IAM users (tags, paths), keys (creation and last-used
    dates), service-specific credentials, SSH public keys and roles (creation and last-used
    dates, inline policies) straight into moto's backends.

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
                                           "operation": "ListUsers"|"ListServiceSpecificCredentials"|"ListAccounts"|...|"*",
                                           "account": "<id>"|null,
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
                                           "keys"?: [{"status"?, "create_date"?,
                                           "last_used"?: {"date", "service", "region"}, "access_key_id"?,
                                           "secret_access_key"?}],
                                           "service_credentials"?: [{"service": "bedrock.amazonaws.com", "status"?,
                                           "create_date"?, "expiration_date"?: date|null, "id"?: "ACCA..."}],
                                           "ssh_keys"?: [{"status"?, "upload_date"?, "id"?: "APKA..."}]}]}
                                         -> {"users": [{"name", "keys": [ids], "secret_access_keys": [...],
                                                        "service_credentials": [ids], "ssh_keys": [ids]}]}
                                         tags (at most 50; key 1-128 chars, value 0-256) show in GetUser,
                                         ListUserTags and GetAccountAuthorizationDetails, not in ListUsers (as AWS);
                                         path shows everywhere, in the user's ARN too, and filters PathPrefix.
                                         At most 2 keys; service credentials: service one of
                                         codecommit.amazonaws.com, cassandra.amazonaws.com, bedrock.amazonaws.com,
                                         logs.amazonaws.com, at most 2 per service, status Active (default) or
                                         Inactive, expiration_date (after create_date, which defaults to now) only
                                         for the API keys of bedrock and logs, ids unique (default: ACCA + 17
                                         random); SSH keys: at most 5, in moto's own model (Get/Update/Delete
                                         SSHPublicKey work on them), a made-up ssh-rsa body, ids unique in the
                                         account (default: APKA + 16 random). Statuses default to Active, dates
                                         to now.
  POST /_launcher/key                    {"account", "user", "access_key_id", "status"?, "create_date"?,
                                          "last_used"?: {...}|null (null = never used)}  -> the key
  POST /_launcher/add_key                {"account", "user", "status"?, "create_date"?}  a new key for an
                                         existing user (at most 2), as CreateAccessKey makes it -> the key
  POST /_launcher/delete_key             {"account", "user", "access_key_id"}
  POST /_launcher/delete_user            {"account", "user"}   (and its keys and service credentials)
                                         -> {"deleted": name, "keys": [ids], "service_credentials": [ids]}
  POST /_launcher/service_credential     {"account", "user", "service", "status"?, "create_date"?,
                                          "expiration_date"?: date|null, "id"?}  a service-specific credential
                                         for an existing user, checked as in seed ->
                                         {"id", "user", "service", "status" (Expired once past its expiration),
                                          "create_date", "expiration_date", "service_user_name",
                                          "service_credential_alias"}  (null where AWS answers none)
  POST /_launcher/roles                  {"account", "roles": [{"name", "path"?: "/", "create_date"?,
                                           "last_used"?: {"date", "region"?: "us-east-1"}|null, "policies"?: 0,
                                           "description"?}]}  -> {"roles": [{"name", "arn"}]}
                                         roles in moto with a trust policy (the account's root with MFA, or for a
                                         path /aws-service-role/<service>/ that service, as a service-linked
                                         role); create_date defaults to now. last_used null or absent = never
                                         used: GetRole and GetAccountAuthorizationDetails answer an empty
                                         <RoleLastUsed/>, else LastUsedDate and Region. policies (0-20) attaches
                                         that many inline policies of about 1.5 KB each (S3, DynamoDB, KMS and
                                         Logs statements with ARNs and conditions; 2-2.6 KB URL-encoded in an
                                         answer), the same on every run, for realistic page sizes: a
                                         GetAccountAuthorizationDetails Filter=Role page of 1000 roles with 2
                                         each is about 5.5 MB. Every such page makes moto serialize the whole
                                         account first (about 0.5 s for those 1000 roles), whatever MaxItems.
                                         Names are unique regardless of case. moto itself marks a role used (now,
                                         with no Region) at every request signed with credentials assumed into
                                         it: seed no role under the name the exporter assumes.
  GET  /_launcher/demo                   what --seed-demo made, with the base credentials:
                                         {"accounts": {"<id>": {"name", "users": [names], "service_credentials":
                                          [as /_launcher/service_credential answers], "ssh_keys": [{"user", "id",
                                          "status", "upload_date"}], "roles": [{"name", "arn", "path",
                                          "create_date", "last_used": {"date", "region"}|null}], "root"?}},
                                          "base_credentials": {"account", "user", "access_key_id",
                                          "secret_access_key"}}

  Latency and rate limits (AWS requests only, never control requests):
  GET|POST /_launcher/latency            {"min_ms": 30, "max_ms": 80}  each request waits a uniform random
                                         time in [min, max] before it is handled, on its own thread (concurrent
                                         requests overlap their waits); 0/0 = off (default)
  GET|POST /_launcher/rate_limits        {"default": {"rate": 10, "burst": 10}|null,
                                          "operations": {"GetAccessKeyLastUsed": {"rate": 20, "burst": 20}|null,
                                                         "ListServiceSpecificCredentials": ..., ...},
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

  Service-specific credentials (answered by the launcher: moto 5.2.5 raises NotImplementedError).
  Kept per account and user beside moto's backend; a credential goes with its user (DeleteUser,
  /_launcher/delete_user, /moto-api/reset, a new user of the same name starts with none).
           ListServiceSpecificCredentials: UserName, or AllUsers=true (every user of the account),
           or neither (the caller's user when the signing key is a user's, else an empty list: role
           credentials); UserName with AllUsers=true -> 400 ValidationError; an unknown UserName ->
           404 NoSuchEntity "The user with name X cannot be found."; ServiceName filters (an
           unsupported name finds nothing). Paged as above (MaxItems, Marker, IsTruncated, short
           pages), sorted by (UserName, CreateDate, id). Members: UserName, Status (Expired once
           ExpirationDate is past, as AWS reports it), ServiceUserName ("<user>-at-<account>", or
           "<user>+1-at-<account>" while that one is taken; only codecommit and cassandra),
           ServiceCredentialAlias ("<user>-at-<account>-v1-<created yyyymmddhhmmss>"; only the
           bedrock and logs API keys), CreateDate, ExpirationDate (only when set),
           ServiceSpecificCredentialId, ServiceName.
           CreateServiceSpecificCredential: UserName, ServiceName, CredentialAgeDays (1-36600: an
           ExpirationDate that many days from now; only for bedrock.amazonaws.com and
           logs.amazonaws.com, else 400 ValidationError). Answers the credential with its
           ServicePassword (codecommit, cassandra) or ServiceCredentialSecret ("ABSK...": bedrock,
           logs), as AWS does; Create and Reset are the only answers holding it. An unknown user ->
           404 NoSuchEntity; another service -> 404 NotSupportedService; a third credential for
           the same user and service -> 409 LimitExceeded. Update (Status Active|Inactive), Delete
           and Reset (a new password or secret) take ServiceSpecificCredentialId and UserName
           (default: the caller's user; role credentials -> 400 ValidationError); an unknown id ->
           404 NoSuchEntity. All five are counted, faulted, limited and delayed like any other
           operation.

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
reports and service-specific credentials); launcher settings (faults, latency, limits, ExternalIds, paging) stay. /moto-api
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
from urllib.parse import parse_qs, quote
from xml.sax.saxutils import escape as xml_escape

import moto.backends
import moto.core.responses
from moto.iam.models import IAMBackend, get_account_id_from, iam_backends
from moto.iam.models import AccessKeyLastUsed, Role
from moto.iam.utils import random_role_id
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
SERVICE_CREDENTIAL_ID_RE = re.compile(r"^ACCA[A-Z0-9]{16,124}$")
SSH_KEY_ID_RE = re.compile(r"^APKA[A-Z0-9]{16,124}$")
ROLE_NAME_RE = re.compile(r"^[\w+=,.@-]{1,64}$")
ROLE_PATH_RE = re.compile(r"^/(?:[\x21-\x7e]{1,510}/)?$")  # AWS: "/" or "/.../", at most 512 characters
SERVICE_LINKED_PATH_RE = re.compile(r"^/aws-service-role/([a-z0-9.-]+\.amazonaws\.com)/$")

FAULT_KINDS = ("throttle", "error500", "access_denied", "no_such_entity", "error", "stall", "reset")
DEFAULT_MAX_ITEMS = 100
MAX_MAX_ITEMS = 1000
DEFAULT_ACCOUNT = "123456789012"  # moto's default account: unknown AKIA keys belong to it
JSON_CT = "application/x-amz-json-1.1"
REPORT_MAX_AGE = 4 * 3600  # AWS reuses a credential report for four hours
# Service-specific credentials: user name + password services, and API-key services (the only
# ones with an expiration, an alias and a secret instead of a password).
PASSWORD_SERVICES = ("codecommit.amazonaws.com", "cassandra.amazonaws.com")
API_KEY_SERVICES = ("bedrock.amazonaws.com", "logs.amazonaws.com")
CREDENTIAL_SERVICES = PASSWORD_SERVICES + API_KEY_SERVICES
MAX_SERVICE_CREDENTIALS = 2  # per user and service, as AWS
MAX_CREDENTIAL_AGE_DAYS = 36600
MAX_SSH_KEYS = 5  # per user, as AWS
MAX_ROLE_POLICIES = 20  # inline policies /_launcher/roles attaches to one role


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
MARKER_TAGS = {"ListUsers": b"U", "ListAccessKeys": b"K", "ListUserTags": b"T", "GetAccountAuthorizationDetails": b"A",
               "ListSSHPublicKeys": b"H", "ListServiceSpecificCredentials": b"S"}
# The lists each paged IAM operation moto answers, with the field they are sorted by. Several
# lists are paged as one sequence, in this order; their marker's sort key is "<list index>/<key>".
PAGED_LISTS = {
    "ListUsers": [("Users", "UserName")],
    "ListAccessKeys": [("AccessKeyMetadata", "AccessKeyId")],
    "ListUserTags": [("Tags", "Key")],
    "ListSSHPublicKeys": [("SSHPublicKeys", "SSHPublicKeyId")],
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


# --------------------------------------------------------------------------- service-specific credentials
#
# moto 5.2.5 answers none of the *ServiceSpecificCredential* operations (NotImplementedError,
# a 500 HTML page), so the launcher keeps them: per account, per user name, beside moto's
# backend and guarded by the same lock (the moto lock). A credential remembers the moto user
# it was made for: once that user is gone (DeleteUser, /_launcher/delete_user, a reset), or
# replaced by another of the same name, the credential is gone too.

def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def random_id(prefix: str, n: int = 17) -> str:
    return prefix + "".join(random.choices(string.ascii_uppercase + string.digits, k=n))


def random_secret(n: int = 30) -> str:
    return base64.b64encode(random.randbytes(n)).decode("ascii")


class ServiceCredential:
    __slots__ = ("id", "account", "user", "user_id", "service", "status", "create_date", "expiration_date",
                 "service_user_name", "alias", "secret")

    def __init__(self, account: str, user: Any, service: str, status: str, created: datetime,
                 expires: datetime | None, cid: str, service_user_name: str | None):
        self.id = cid
        self.account = account
        self.user = user.name
        self.user_id = user.id
        self.service = service
        self.status = status  # Active | Inactive as set; Expired is derived from expiration_date
        self.create_date = created
        self.expiration_date = expires
        self.service_user_name = service_user_name
        self.alias = None
        if service in API_KEY_SERVICES:
            self.alias = f"{user.name}-at-{account}-v1-{created:%Y%m%d%H%M%S}"
        self.secret = ""
        self.reset()

    def reset(self) -> str:
        """A new password (or API key secret), as Create and Reset answer it."""
        if self.service in API_KEY_SERVICES:
            self.secret = "ABSK" + base64.b64encode(f"{self.alias}:{random_secret(24)}".encode()).decode("ascii")
        else:
            self.secret = random_secret(33)  # 44 characters, as CodeCommit's
        return self.secret

    def effective_status(self, now: datetime) -> str:
        if self.expiration_date is not None and self.expiration_date <= now:
            return "Expired"  # as AWS reports a credential past its expiration
        return self.status

    def sort_key(self) -> tuple[str, str, str]:
        return self.user, self.create_date.strftime("%Y%m%d%H%M%S%f"), self.id

    def metadata_xml(self, now: datetime) -> str:
        """A ServiceSpecificCredentialMetadata member, elements in the API model's order."""
        out = [f"<UserName>{xml_escape(self.user)}</UserName><Status>{self.effective_status(now)}</Status>"]
        if self.service_user_name is not None:
            out.append(f"<ServiceUserName>{xml_escape(self.service_user_name)}</ServiceUserName>")
        if self.alias is not None:
            out.append(f"<ServiceCredentialAlias>{xml_escape(self.alias)}</ServiceCredentialAlias>")
        out.append(f"<CreateDate>{fmt_date(self.create_date)}</CreateDate>")
        if self.expiration_date is not None:
            out.append(f"<ExpirationDate>{fmt_date(self.expiration_date)}</ExpirationDate>")
        out.append(f"<ServiceSpecificCredentialId>{self.id}</ServiceSpecificCredentialId>"
                   f"<ServiceName>{xml_escape(self.service)}</ServiceName>")
        return "".join(out)

    def credential_xml(self, now: datetime) -> str:
        """A ServiceSpecificCredential (Create, Reset): with the password or the API key secret."""
        out = [f"<CreateDate>{fmt_date(self.create_date)}</CreateDate>"]
        if self.expiration_date is not None:
            out.append(f"<ExpirationDate>{fmt_date(self.expiration_date)}</ExpirationDate>")
        out.append(f"<ServiceName>{xml_escape(self.service)}</ServiceName>")
        if self.service_user_name is not None:
            out.append(f"<ServiceUserName>{xml_escape(self.service_user_name)}</ServiceUserName>"
                       f"<ServicePassword>{xml_escape(self.secret)}</ServicePassword>")
        if self.alias is not None:
            out.append(f"<ServiceCredentialAlias>{xml_escape(self.alias)}</ServiceCredentialAlias>"
                       f"<ServiceCredentialSecret>{xml_escape(self.secret)}</ServiceCredentialSecret>")
        out.append(f"<ServiceSpecificCredentialId>{self.id}</ServiceSpecificCredentialId>"
                   f"<UserName>{xml_escape(self.user)}</UserName><Status>{self.effective_status(now)}</Status>")
        return "".join(out)

    def view(self) -> dict:
        return {
            "id": self.id,
            "user": self.user,
            "service": self.service,
            "status": self.effective_status(now_utc()),
            "create_date": fmt_date(self.create_date),
            "expiration_date": fmt_date(self.expiration_date),
            "service_user_name": self.service_user_name,
            "service_credential_alias": self.alias,
        }


# account -> user name -> that user's credentials, in creation order; and every credential by id
SERVICE_CREDENTIALS: dict[str, dict[str, list[ServiceCredential]]] = {}
CREDENTIAL_IDS: dict[str, ServiceCredential] = {}


def user_credentials(account: str, user_name: str) -> list[ServiceCredential]:
    """The live credentials of one user (a list the caller may append to)."""
    per_account = SERVICE_CREDENTIALS.setdefault(account, {})
    creds = per_account.get(user_name)
    user = iam_backend(account).users.get(user_name)
    if user is None:
        per_account.pop(user_name, None)
        return []
    if creds is None or (creds and creds[0].user_id != user.id):  # none yet, or a former user's
        creds = per_account[user_name] = []
    return creds


def account_credentials(account: str) -> list[ServiceCredential]:
    return [c for name in list(SERVICE_CREDENTIALS.get(account, {})) for c in user_credentials(account, name)]


def credential_id_taken(cid: str) -> bool:
    cred = CREDENTIAL_IDS.get(cid)
    return cred is not None and any(c is cred for c in user_credentials(cred.account, cred.user))


def forget_credentials() -> None:
    SERVICE_CREDENTIALS.clear()
    CREDENTIAL_IDS.clear()


def add_service_credential(account: str, user: Any, service: str, status: str, created: datetime | None,
                           expires: datetime | None, cid: str | None) -> ServiceCredential:
    """A new credential (checked by the caller: service, the limit of 2, a free id)."""
    creds = user_credentials(account, user.name)
    while cid is None or credential_id_taken(cid):
        cid = random_id("ACCA")
    service_user_name = None
    if service in PASSWORD_SERVICES:  # jane-at-123456789012, then jane+1-at-123456789012
        taken = {c.service_user_name for c in creds if c.service == service}
        service_user_name = f"{user.name}-at-{account}"
        if service_user_name in taken:
            service_user_name = f"{user.name}+1-at-{account}"
    cred = ServiceCredential(account, user, service, status, created or now_utc().replace(microsecond=0),
                             expires, cid, service_user_name)
    creds.append(cred)
    CREDENTIAL_IDS[cid] = cred
    return cred


def field_name(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def parse_service_credential(spec: Any, where: str) -> dict:
    """One service credential of /_launcher/seed or /_launcher/service_credential, checked."""
    if not isinstance(spec, dict):
        raise BadInput(f"{where}: expected an object")
    check_fields(spec, {"service", "status", "create_date", "expiration_date", "id"}, where)
    service = spec.get("service")
    if service not in CREDENTIAL_SERVICES:
        raise BadInput(f"{field_name(where, 'service')}: expected one of {list(CREDENTIAL_SERVICES)}, got {service!r}")
    status = want_status(spec.get("status", "Active"), field_name(where, "status"))
    created = None
    if spec.get("create_date") is not None:
        created = parse_date(spec["create_date"], field_name(where, "create_date"))
    expires = None
    if spec.get("expiration_date") is not None:
        expires = parse_date(spec["expiration_date"], field_name(where, "expiration_date"))
        if service not in API_KEY_SERVICES:
            raise BadInput(f"{field_name(where, 'expiration_date')}: only API keys expire "
                           f"({', '.join(API_KEY_SERVICES)}), not {service}")
        if expires <= (created or now_utc()):
            raise BadInput(f"{field_name(where, 'expiration_date')}: must be after the creation date")
    cid = spec.get("id")
    if cid is not None and (not isinstance(cid, str) or not SERVICE_CREDENTIAL_ID_RE.match(cid)):
        raise BadInput(f"{field_name(where, 'id')}: expected ACCA followed by 16+ of [A-Z0-9], got {cid!r}")
    if cid is not None and credential_id_taken(cid):
        raise BadInput(f"{field_name(where, 'id')}: {cid} already exists")
    return {"service": service, "status": status, "created": created, "expires": expires, "id": cid}


# --------------------------------------------------------------------------- seeding

def seed(account: str, users: Any) -> list[dict]:
    if not isinstance(users, list):
        raise BadInput("users: expected a list")
    backend = iam_backend(account)
    plans = []
    seen: set[str] = set()
    wanted_ids: set[str] = set()
    wanted_credentials: set[str] = set()
    wanted_ssh: set[str] = set()
    for i, u in enumerate(users):
        where = f"users[{i}]"
        if not isinstance(u, dict):
            raise BadInput(f"{where}: expected an object")
        unknown = set(u) - {"name", "create_date", "path", "password", "password_last_used", "tags", "keys",
                            "service_credentials", "ssh_keys"}
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
        cred_plans = parse_seed_credentials(u.get("service_credentials", []), where, wanted_credentials)
        ssh_plans = parse_seed_ssh_keys(u.get("ssh_keys", []), where, backend, wanted_ssh)
        plans.append((name, created, path, tags, password, pw_used, key_plans, cred_plans, ssh_plans))

    out = []
    for name, created, path, tags, password, pw_used, key_plans, cred_plans, ssh_plans in plans:
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
        creds = [add_service_credential(account, user, c["service"], c["status"], c["created"], c["expires"], c["id"]).id
                 for c in cred_plans]
        ssh_ids = [add_ssh_key(user, *plan).ssh_public_key_id for plan in ssh_plans]
        out.append({"name": name, "keys": ids, "secret_access_keys": secrets, "service_credentials": creds,
                    "ssh_keys": ssh_ids})
    return out


def parse_seed_credentials(specs: Any, where: str, wanted: set[str]) -> list[dict]:
    if not isinstance(specs, list):
        raise BadInput(f"{where}.service_credentials: expected a list")
    plans, per_service = [], {}
    for j, spec in enumerate(specs):
        plan = parse_service_credential(spec, f"{where}.service_credentials[{j}]")
        per_service[plan["service"]] = per_service.get(plan["service"], 0) + 1
        if per_service[plan["service"]] > MAX_SERVICE_CREDENTIALS:
            raise BadInput(f"{where}.service_credentials: IAM allows at most {MAX_SERVICE_CREDENTIALS} "
                           f"credentials per user for {plan['service']}")
        if plan["id"] is not None:
            if plan["id"] in wanted:
                raise BadInput(f"{where}.service_credentials[{j}].id: {plan['id']} given twice")
            wanted.add(plan["id"])
        plans.append(plan)
    return plans


def parse_seed_ssh_keys(specs: Any, where: str, backend: IAMBackend, wanted: set[str]) -> list[tuple]:
    if not isinstance(specs, list):
        raise BadInput(f"{where}.ssh_keys: expected a list")
    if len(specs) > MAX_SSH_KEYS:
        raise BadInput(f"{where}.ssh_keys: IAM allows at most {MAX_SSH_KEYS} SSH public keys per user, got {len(specs)}")
    plans = []
    for j, spec in enumerate(specs):
        kw = f"{where}.ssh_keys[{j}]"
        if not isinstance(spec, dict):
            raise BadInput(f"{kw}: expected an object")
        check_fields(spec, {"status", "upload_date", "id"}, kw)
        status = want_status(spec.get("status", "Active"), f"{kw}.status")
        uploaded = parse_date(spec["upload_date"], f"{kw}.upload_date") if spec.get("upload_date") is not None else None
        kid = spec.get("id")
        if kid is not None:
            if not isinstance(kid, str) or not SSH_KEY_ID_RE.match(kid):
                raise BadInput(f"{kw}.id: expected APKA followed by 16+ of [A-Z0-9], got {kid!r}")
            if kid in wanted or any(k.ssh_public_key_id == kid for u in list(backend.users.values())
                                    for k in u.ssh_public_keys):
                raise BadInput(f"{kw}.id: {kid} already exists")
            wanted.add(kid)
        plans.append((status, uploaded, kid))
    return plans


def add_ssh_key(user: Any, status: str, uploaded: datetime | None, kid: str | None) -> Any:
    """An SSH public key in moto's own model, as UploadSSHPublicKey makes one."""
    body = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ" + random_secret(270).replace("=", "") + f" {user.name}@example.com"
    key = user.upload_ssh_public_key(body)
    if kid is not None:
        key.ssh_public_key_id = kid
    key.status = status
    if uploaded is not None:
        key.upload_date = uploaded
    return key


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
    creds = [c.id for c in user_credentials(body["account"], name)]
    SERVICE_CREDENTIALS.get(body["account"], {}).pop(name, None)
    for cid in creds:
        CREDENTIAL_IDS.pop(cid, None)
    for akid in keys:
        backend.access_keys.pop(akid, None)
    user.access_keys = []
    backend.tagger.delete_all_tags_for_resource(user.arn)
    del backend.users[name]
    return {"deleted": name, "keys": keys, "service_credentials": creds}


def add_credential(body: dict) -> dict:
    """A service-specific credential for an existing user."""
    check_fields(body, {"account", "user", "service", "status", "create_date", "expiration_date", "id"})
    _, user = find_user(body)
    plan = parse_service_credential({k: v for k, v in body.items() if k not in ("account", "user")}, "")
    account = body["account"]
    if sum(1 for c in user_credentials(account, user.name) if c.service == plan["service"]) >= MAX_SERVICE_CREDENTIALS:
        raise BadInput(f"user: {user.name!r} already has {MAX_SERVICE_CREDENTIALS} credentials for "
                       f"{plan['service']}, the most IAM allows")
    cred = add_service_credential(account, user, plan["service"], plan["status"], plan["created"], plan["expires"],
                                  plan["id"])
    return cred.view()


# --------------------------------------------------------------------------- roles

def trust_policy(account: str, service: str | None) -> str:
    if service is not None:  # a service-linked role: only its service assumes it
        statement = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    else:
        statement = {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                     "Action": "sts:AssumeRole", "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def inline_policy(account: str, role: str, n: int) -> tuple[str, str]:
    """The n-th inline policy of a seeded role: a realistic document of about 1.5 KB (S3,
    DynamoDB or KMS statements with ARNs and conditions), the same on every run."""
    tag = derived_id(f"policy:{account}:{role}:{n}", 6)
    region = ("us-east-1", "eu-west-1", "ap-southeast-2")[n % 3]
    kind = n % 3
    if kind == 0:
        bucket = f"{role.lower()[:30]}-{tag}-data"
        statements = [
            {"Sid": "ListTheBucket", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": f"arn:aws:s3:::{bucket}",
             "Condition": {"StringLike": {"s3:prefix": ["incoming/*", "processed/*", "reports/${aws:username}/*"]}}},
            {"Sid": "ReadWriteObjects", "Effect": "Allow",
             "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"],
             "Resource": [f"arn:aws:s3:::{bucket}/incoming/*", f"arn:aws:s3:::{bucket}/processed/*"],
             "Condition": {"StringEquals": {"s3:x-amz-server-side-encryption": "aws:kms", "aws:RequestedRegion": region}}},
            {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Action": "s3:*",
             "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        ]
    elif kind == 1:
        table = f"arn:aws:dynamodb:{region}:{account}:table/{role[:40]}-{tag}"
        statements = [
            {"Sid": "ReadWriteOwnItems", "Effect": "Allow",
             "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem",
                        "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"],
             "Resource": [table, f"{table}/index/by-customer", f"{table}/index/by-created-date"],
             "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["${aws:PrincipalTag/tenant}"]},
                           "StringEqualsIfExists": {"dynamodb:ReturnConsumedCapacity": "TOTAL"}}},
            {"Sid": "DescribeAndStreams", "Effect": "Allow",
             "Action": ["dynamodb:DescribeTable", "dynamodb:DescribeStream", "dynamodb:GetRecords",
                        "dynamodb:GetShardIterator", "dynamodb:ListStreams"],
             "Resource": [table, f"{table}/stream/*"]},
            {"Sid": "NoTableAdministration", "Effect": "Deny",
             "Action": ["dynamodb:DeleteTable", "dynamodb:UpdateTable", "dynamodb:RestoreTableFromBackup"],
             "Resource": f"arn:aws:dynamodb:*:{account}:table/*"},
        ]
    else:
        key = f"arn:aws:kms:{region}:{account}:key/{uuid.UUID(hashlib.md5(tag.encode()).hexdigest())}"
        statements = [
            {"Sid": "UseTheDataKey", "Effect": "Allow",
             "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
                        "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:DescribeKey"],
             "Resource": key,
             "Condition": {"StringEquals": {"kms:ViaService": [f"s3.{region}.amazonaws.com",
                                                               f"dynamodb.{region}.amazonaws.com"],
                                            "kms:EncryptionContext:aws:s3:arn": f"arn:aws:s3:::{role.lower()[:30]}-{tag}"}}},
            {"Sid": "GrantsForAwsServices", "Effect": "Allow", "Action": ["kms:CreateGrant", "kms:ListGrants"],
             "Resource": key, "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}},
            {"Sid": "NoKeyAdministration", "Effect": "Deny",
             "Action": ["kms:ScheduleKeyDeletion", "kms:DisableKey", "kms:PutKeyPolicy"],
             "Resource": f"arn:aws:kms:*:{account}:key/*"},
        ]
    statements.append(
        {"Sid": "WriteTheJobLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": f"arn:aws:logs:{region}:{account}:log-group:/aws/jobs/{role[:40]}:*",
         "Condition": {"StringEquals": {"aws:ResourceAccount": account}, "ArnLike": {
             "aws:SourceArn": f"arn:aws:states:{region}:{account}:stateMachine:{role[:40]}-*"}}})
    name = ("s3-data-access", "dynamodb-table-access", "kms-data-key")[kind] + f"-{n}"
    return name, json.dumps({"Version": "2012-10-17", "Statement": statements})


def role_view(role: Role) -> dict:
    last_used = None
    if role.last_used is not None:
        last_used = {"date": fmt_date(role.last_used), "region": role.last_used_region}
    return {"name": role.name, "arn": role.arn, "path": role.path, "create_date": fmt_date(role.create_date),
            "last_used": last_used}


def seed_roles(body: dict) -> dict:
    check_fields(body, {"account", "roles"})
    account = want_account(body)
    specs = body.get("roles")
    if not isinstance(specs, list):
        raise BadInput("roles: expected a list")
    backend = iam_backend(account)
    existing = {r.name.lower() for r in list(backend.roles.values())}  # role names are case-insensitive
    plans, seen = [], set()
    for i, r in enumerate(specs):
        where = f"roles[{i}]"
        if not isinstance(r, dict):
            raise BadInput(f"{where}: expected an object")
        check_fields(r, {"name", "path", "create_date", "last_used", "policies", "description"}, where)
        name = r.get("name")
        if not isinstance(name, str) or not ROLE_NAME_RE.match(name):
            raise BadInput(f"{where}.name: expected an IAM role name ([\\w+=,.@-], 1-64 chars), got {name!r}")
        if name.lower() in existing or name.lower() in seen:
            raise BadInput(f"{where}.name: role {name!r} already exists in account {account}")
        seen.add(name.lower())
        path = r.get("path", "/")
        if not isinstance(path, str) or len(path) > 512 or not ROLE_PATH_RE.match(path):
            raise BadInput(f"{where}.path: expected a path like '/' or '/service-role/', got {path!r}")
        created = parse_date(r["create_date"], f"{where}.create_date") if r.get("create_date") is not None else None
        last_used = r.get("last_used")
        used = None
        if last_used is not None:
            if not isinstance(last_used, dict):
                raise BadInput(f"{where}.last_used: expected an object {{date, region}} or null (never used)")
            check_fields(last_used, {"date", "region"}, f"{where}.last_used")
            region = last_used.get("region", "us-east-1")
            if not isinstance(region, str) or not region:
                raise BadInput(f"{where}.last_used.region: expected a region name like 'us-east-1', got {region!r}")
            used = (parse_date(last_used.get("date"), f"{where}.last_used.date"), region)
        policies = r.get("policies", 0)
        if isinstance(policies, bool) or not isinstance(policies, int) or not 0 <= policies <= MAX_ROLE_POLICIES:
            raise BadInput(f"{where}.policies: expected a number of inline policies 0-{MAX_ROLE_POLICIES}, got {policies!r}")
        description = r.get("description", "")
        if not isinstance(description, str) or len(description) > 1000:
            raise BadInput(f"{where}.description: expected a string of at most 1000 characters")
        plans.append((name, path, created, used, policies, description))

    out = []
    for name, path, created, used, policies, description in plans:
        m = SERVICE_LINKED_PATH_RE.match(path)
        service = m.group(1) if m else None
        # moto's create_role looks for the name among every role (one scan per role): built here instead
        role = Role(account_id=account, partition="aws", role_id=random_role_id(account), name=name,
                    assume_role_policy_document=trust_policy(account, service), path=path,
                    permissions_boundary=None, description=description or None, tags=[], max_session_duration="3600",
                    linked_service=service)
        if created is not None:
            role.create_date = created
        if used is not None:
            role.last_used, role.last_used_region = used
        for n in range(policies):
            role.put_policy(*inline_policy(account, name, n))
        backend.roles[role.id] = role
        out.append({"name": name, "arn": role.arn})
    return {"roles": out}


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
         "keys": [{"create_date": ago(days=400), "last_used": used("s3", "us-east-1", days=2)}],
         # an old Bedrock API key that never expires
         "service_credentials": [{"service": "bedrock.amazonaws.com", "create_date": ago(days=200)}]},
        {"name": "bob", "create_date": ago(days=700), "password": True, "password_last_used": ago(days=40),
         "tags": {"owner": "bob@example.com", "team": "search"},
         "keys": [{"create_date": ago(days=120), "last_used": used("ec2", "eu-west-1", days=30)}],
         "service_credentials": [{"service": "codecommit.amazonaws.com", "create_date": ago(days=10)}]},
        {"name": "ci-deploy", "create_date": ago(days=800), "path": "/automation/",
         "tags": {"team": "platform"},
         "keys": [{"create_date": ago(days=310), "last_used": used("ecr", "us-east-1", hours=1)},
                  {"create_date": ago(days=12), "last_used": used("sts", "us-east-1", hours=3)}],
         "service_credentials": [{"service": "codecommit.amazonaws.com", "create_date": ago(days=150)}],
         "ssh_keys": [{"upload_date": ago(days=300)}]},
        {"name": "terraform", "create_date": ago(days=600),
         "keys": [{"create_date": ago(days=5), "last_used": used("iam", "us-east-1", days=1)}]},
        {"name": "legacy-backup", "create_date": ago(days=1000),
         "keys": [{"create_date": ago(days=200)}]},
        # Exempt from the key alerts until a date, by a user tag: in /keys and the audit, silent in Alertmanager.
        {"name": "break-glass", "create_date": ago(days=700),
         "tags": {"iam-key-exporter:exempt-until": fmt_date(now + timedelta(days=60))[:10] + " emergency access, reviewed quarterly"},
         "keys": [{"create_date": ago(days=250), "last_used": used("iam", "us-east-1", days=3)}]},
        {"name": "old-intern", "create_date": ago(days=1200),
         "keys": [{"status": "Inactive", "create_date": ago(days=500), "last_used": used("s3", "eu-central-1", days=450)}],
         "service_credentials": [{"service": "cassandra.amazonaws.com", "status": "Inactive", "create_date": ago(days=400)}]},
        {"name": "grafana-cloudwatch", "create_date": ago(days=365),
         "keys": [{"create_date": ago(days=95), "last_used": used("cloudwatch", "us-east-1", minutes=10)}]},
    ]
    staging = [
        {"name": "ci-deploy", "create_date": ago(days=500),
         "keys": [{"create_date": ago(days=180), "last_used": used("ecr", "us-west-2", days=1)}]},
        {"name": "terraform", "create_date": ago(days=450),
         "keys": [{"create_date": ago(days=95), "last_used": used("iam", "us-east-1", days=3)}]},
        {"name": "carol", "create_date": ago(days=60), "password": True,
         "keys": [{"create_date": ago(days=20)}],
         # a Bedrock API key made with a 30-day expiration, 5 days ago
         "service_credentials": [{"service": "bedrock.amazonaws.com", "create_date": ago(days=5),
                                  "expiration_date": ago(days=5 - 30)}],
         "ssh_keys": [{"upload_date": ago(days=5)}]},
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
    roles = {
        "111111111111": [
            {"name": "data-pipeline-legacy", "create_date": ago(days=600), "policies": 2,
             "last_used": {"date": ago(days=200), "region": "us-east-1"}},
            {"name": "payments-api", "create_date": ago(days=500), "policies": 3,
             "last_used": {"date": ago(days=1), "region": "eu-west-1"}},
            {"name": "old-migration", "create_date": ago(days=730), "policies": 1},
            {"name": "AWSServiceRoleForSupport", "path": "/aws-service-role/support.amazonaws.com/",
             "create_date": ago(days=800), "description": "Enables resource access for AWS to provide billing, "
             "administrative and support services"},
        ],
        "222222222222": [
            {"name": "analytics-sandbox", "create_date": ago(days=10), "policies": 1},
        ],
    }
    summary = {}
    for account, name, users in (("111111111111", "production", production),
                                  ("222222222222", "staging", staging),
                                  ("333333333333", "security-tooling", security)):
        seeded = seed(account, users)
        made = seed_roles({"account": account, "roles": roles.get(account, [])})["roles"]
        backend = iam_backend(account)
        by_name = {r.name: r for r in list(backend.roles.values())}
        summary[account] = {
            "name": name,
            "users": [u["name"] for u in seeded],
            "service_credentials": [c.view() for u in seeded for c in user_credentials(account, u["name"])],
            "ssh_keys": [{"user": u["name"], "id": k.ssh_public_key_id, "status": k.status,
                          "upload_date": fmt_date(k.upload_date)}
                         for u in seeded for k in backend.users[u["name"]].ssh_public_keys],
            "roles": [role_view(by_name[r["name"]]) for r in made],
        }
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


def iam_result(op: str, inner: str | None) -> Answer:
    """A Query-protocol answer; inner None for operations with no output (no <...Result>)."""
    request_id = str(uuid.uuid4())
    result = "" if inner is None else f"<{op}Result>{inner}</{op}Result>"
    body = (f'<{op}Response xmlns="{IAM_NS}">{result}'
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

# The service-specific credential operations the launcher answers (moto raises NotImplementedError).
CREDENTIAL_OPERATIONS = {
    "ListServiceSpecificCredentials": "list_service_credentials",
    "CreateServiceSpecificCredential": "create_service_credential",
    "UpdateServiceSpecificCredential": "update_service_credential",
    "DeleteServiceSpecificCredential": "delete_service_credential",
    "ResetServiceSpecificCredential": "reset_service_credential",
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
                with self.moto_lock:  # so are the service-specific credentials
                    forget_credentials()
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
            if req.operation in CREDENTIAL_OPERATIONS:
                with self.moto_lock:  # the credentials live beside moto's backend, under its lock
                    return getattr(self, CREDENTIAL_OPERATIONS[req.operation])(req)
            if req.operation == "UploadSSHPublicKey":
                refused = self.ssh_key_limit(req)
                if refused is not None:
                    return refused
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

    # -- pagination of ListUsers / ListAccessKeys / ListUserTags / ListSSHPublicKeys /
    #    GetAccountAuthorizationDetails (and the page sizes of ListServiceSpecificCredentials)
    @staticmethod
    def max_items(req: Req) -> int | Answer:
        """MaxItems as AWS takes it (default 100; above 1000 is capped here), or the error."""
        raw_max = req.params.get("MaxItems")
        if raw_max in (None, ""):
            return DEFAULT_MAX_ITEMS
        try:
            max_items = int(raw_max)
        except ValueError:
            return req.error(400, "ValidationError",
                             f"1 validation error detected: Value '{raw_max}' at 'maxItems' failed to satisfy constraint: Member must be a number")
        if max_items < 1:
            return req.error(400, "ValidationError",
                             f"1 validation error detected: Value '{max_items}' at 'maxItems' failed to satisfy constraint: Member must have value greater than or equal to 1")
        return min(max_items, MAX_MAX_ITEMS)

    def page_size(self, max_items: int, page: int) -> int:
        """By default pages 1, 4, 7, ... are short: what AWS's "IAM might return fewer than
        MaxItems" means, and what a client that stops at a short page gets wrong."""
        short = self.state.short_pages and page % 3 == 1
        return max(1, max_items // 2) if short else max_items

    def paginated(self, req: Req) -> Answer:
        op, params = req.operation, req.params
        max_items = self.max_items(req)
        if not isinstance(max_items, int):
            return max_items
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
            size = self.page_size(max_items, page)
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
            if lists[i][0] == "RoleDetailList":
                # moto sends the trust policy as raw JSON here (URL-encoded in GetRole); AWS encodes both
                doc = m.find(q("AssumeRolePolicyDocument"))
                if doc is not None and doc.text and doc.text.lstrip().startswith("{"):
                    doc.text = quote(doc.text)
        for name in ("IsTruncated", "Marker"):
            for el in result.findall(q(name)):
                result.remove(el)
        truncated = ET.SubElement(result, q("IsTruncated"))
        truncated.text = "true" if more else "false"
        if more:
            i, key = chosen[-1][0]
            ET.SubElement(result, q("Marker")).text = encode_marker(op, page + 1, key if len(lists) == 1 else f"{i}/{key}")
        return ET.tostring(root, encoding="utf-8", xml_declaration=False)

    # -- service-specific credentials (moto has none) and the SSH key limit (moto has none)
    @staticmethod
    def caller_user(req: Req) -> str | None:
        """The IAM user owning the signing key; None for role credentials and unknown keys."""
        backend = iam_backend(req.signer)
        key = backend.access_keys.get(req.akid)
        if key is not None and key.user_name and key.user_name in backend.users:
            return key.user_name
        return None

    def credential_owner(self, req: Req) -> str | Answer:
        """The user an Update/Delete/Reset names, or the caller's user, which must exist."""
        name = req.params.get("UserName") or self.caller_user(req)
        if name is None:
            return req.error(400, "ValidationError", "Must specify userName when calling with non-User credentials")
        if name not in iam_backend(req.account).users:
            return req.error(404, "NoSuchEntity", f"The user with name {name} cannot be found.")
        return name

    def find_credential(self, req: Req) -> ServiceCredential | Answer:
        name = self.credential_owner(req)
        if not isinstance(name, str):
            return name
        cid = req.params.get("ServiceSpecificCredentialId")
        if not cid:
            return req.error(400, "ValidationError", "1 validation error detected: Value null at "
                             "'serviceSpecificCredentialId' failed to satisfy constraint: Member must not be null")
        for cred in user_credentials(req.account, name):
            if cred.id == cid:
                return cred
        return req.error(404, "NoSuchEntity", f"The Service Specific Credential with id {cid} cannot be found.")

    def list_service_credentials(self, req: Req) -> Answer:
        params = req.params
        max_items = self.max_items(req)
        if not isinstance(max_items, int):
            return max_items
        all_users = params.get("AllUsers", "").lower()
        if all_users not in ("", "true", "false"):
            return req.error(400, "ValidationError", f"1 validation error detected: Value '{params['AllUsers']}' at "
                             "'allUsers' failed to satisfy constraint: Member must be a boolean")
        name = params.get("UserName") or None
        if name is not None and all_users == "true":
            return req.error(400, "ValidationError", "UserName and AllUsers cannot be specified together.")
        page, after = 0, None
        if params.get("Marker") is not None:
            try:
                page, last = decode_marker(req.operation, params["Marker"])
                after = tuple(last.split("/"))
                if len(after) != 3:
                    raise ValueError("bad marker")
            except (ValueError, UnicodeDecodeError):
                return req.error(400, "InvalidInput", "Invalid Marker.")
        if all_users == "true":
            creds = account_credentials(req.account)
        else:
            name = name or self.caller_user(req)
            if name is not None and name not in iam_backend(req.account).users:
                return req.error(404, "NoSuchEntity", f"The user with name {name} cannot be found.")
            creds = list(user_credentials(req.account, name)) if name is not None else []
        service = params.get("ServiceName")
        if service:
            creds = [c for c in creds if c.service == service]
        items = sorted(creds, key=ServiceCredential.sort_key)
        if after is not None:
            items = [c for c in items if c.sort_key() > after]
        size = self.page_size(max_items, page)
        chosen, more = items[:size], len(items) > size
        now = now_utc()
        inner = ["<ServiceSpecificCredentials>"]
        inner += [f"<member>{c.metadata_xml(now)}</member>" for c in chosen]
        inner.append(f"</ServiceSpecificCredentials><IsTruncated>{'true' if more else 'false'}</IsTruncated>")
        if more:
            inner.append(f"<Marker>{encode_marker(req.operation, page + 1, '/'.join(chosen[-1].sort_key()))}</Marker>")
        return iam_result(req.operation, "".join(inner))

    def create_service_credential(self, req: Req) -> Answer:
        params = req.params
        for field in ("UserName", "ServiceName"):
            if not params.get(field):
                return req.error(400, "ValidationError", f"1 validation error detected: Value null at "
                                 f"'{field[0].lower() + field[1:]}' failed to satisfy constraint: Member must not be null")
        name, service = params["UserName"], params["ServiceName"]
        expires = None
        raw_days = params.get("CredentialAgeDays")
        if raw_days not in (None, ""):
            try:
                days = int(raw_days)
            except ValueError:
                days = 0
            if not 1 <= days <= MAX_CREDENTIAL_AGE_DAYS:
                return req.error(400, "ValidationError", f"1 validation error detected: Value '{raw_days}' at "
                                 f"'credentialAgeDays' failed to satisfy constraint: Member must have value between "
                                 f"1 and {MAX_CREDENTIAL_AGE_DAYS}")
            if service not in API_KEY_SERVICES:
                return req.error(400, "ValidationError", f"CredentialAgeDays is not supported for {service}: only "
                                 f"API keys expire ({', '.join(API_KEY_SERVICES)}).")
            expires = now_utc().replace(microsecond=0) + timedelta(days=days)
        user = iam_backend(req.account).users.get(name)
        if user is None:
            return req.error(404, "NoSuchEntity", f"The user with name {name} cannot be found.")
        if service not in CREDENTIAL_SERVICES:
            return req.error(404, "NotSupportedService", f"Service {service} is not supported for service specific "
                             "credentials.")
        if sum(1 for c in user_credentials(req.account, name) if c.service == service) >= MAX_SERVICE_CREDENTIALS:
            return req.error(409, "LimitExceeded", "Cannot exceed quota for ServiceSpecificCredentialsPerUserPerService: "
                             f"{MAX_SERVICE_CREDENTIALS}")
        created = now_utc().replace(microsecond=0)
        cred = add_service_credential(req.account, user, service, "Active", created, expires, None)
        return iam_result(req.operation, f"<ServiceSpecificCredential>{cred.credential_xml(created)}"
                                         "</ServiceSpecificCredential>")

    def update_service_credential(self, req: Req) -> Answer:
        status = req.params.get("Status")
        if status not in ("Active", "Inactive"):
            return req.error(400, "ValidationError", f"1 validation error detected: Value '{status}' at 'status' "
                             "failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive]")
        cred = self.find_credential(req)
        if not isinstance(cred, ServiceCredential):
            return cred
        cred.status = status
        return iam_result(req.operation, None)

    def delete_service_credential(self, req: Req) -> Answer:
        cred = self.find_credential(req)
        if not isinstance(cred, ServiceCredential):
            return cred
        user_credentials(req.account, cred.user).remove(cred)
        CREDENTIAL_IDS.pop(cred.id, None)
        return iam_result(req.operation, None)

    def reset_service_credential(self, req: Req) -> Answer:
        cred = self.find_credential(req)
        if not isinstance(cred, ServiceCredential):
            return cred
        cred.reset()
        return iam_result(req.operation, f"<ServiceSpecificCredential>{cred.credential_xml(now_utc())}"
                                         "</ServiceSpecificCredential>")

    def ssh_key_limit(self, req: Req) -> Answer | None:
        """AWS allows 5 SSH public keys per user; moto takes any number."""
        with self.moto_lock:
            user = iam_backend(req.account).users.get(req.params.get("UserName", ""))
            if user is None or len(user.ssh_public_keys) < MAX_SSH_KEYS:
                return None  # moto answers, NoSuchEntity too
        return req.error(409, "LimitExceeded", f"Cannot exceed quota for SSHPublicKeysPerUser: {MAX_SSH_KEYS}")

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
            ("POST", "/_launcher/service_credential"): add_credential,
            ("POST", "/_launcher/roles"): seed_roles,
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
