//! The shipped alert rules and Grafana dashboard against real data, end to end:
//! moto ▸ the exporter ▸ Prometheus (Debian's `prometheus`, with
//! deploy/prometheus/iam-key-exporter.rules.yml) ▸ Alertmanager (Debian's
//! `prometheus-alertmanager`) ▸ a webhook receiver run by this test.
//!
//! What an operator checks after deploying: the right keys page (and only those), with their
//! severity, summary, description and runbook; a deleted key's alert resolves; Prometheus
//! scrapes the exporter and shows the alerts; every dashboard panel has data.
//!
//! Needs `prometheus`, `prometheus-alertmanager` and the moto virtualenv
//! (scripts/setup-test-env.sh, or `make test`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::stack::*;
use common::*;
use serde_json::{json, Value};

/// The account of the scenario: one key per alert case.
const PRODUCTION: &str = "111111111111";
/// Dashboard coverage: a key older than a year, a used-but-idle key, a user with two keys.
const STAGING: &str = "222222222222";
/// Dashboard coverage: an account whose AssumeRole is denied (down, with errors).
const SANDBOX: &str = "333333333333";
/// Read through the credential report, whose `<root_account>` row (added by the launcher;
/// moto has none) shows an active root access key.
const ROOTED: &str = "444444444444";

const TOO_OLD: &str = "IAMAccessKeyTooOld";
const UNUSED: &str = "IAMAccessKeyUnused";
const MULTIPLE: &str = "IAMUserMultipleActiveKeys";
const ACCOUNT_DOWN: &str = "IAMKeyExporterAccountDown";
const ROOT_KEY: &str = "IAMRootAccessKeyPresent";

const TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn shipped_rules_page_the_right_keys_and_every_dashboard_panel_has_data() {
    let moto = Moto::start();
    let (_, d120) = days_ago(120.0);
    let (_, d60) = days_ago(60.0);
    let (_, d400) = days_ago(400.0);
    let (_, d390) = days_ago(390.0);
    let (_, d100) = days_ago(100.0);
    let (_, d20) = days_ago(20.0);
    let (_, d5) = days_ago(5.0);
    let (_, d2) = days_ago(2.0);
    let (_, d1) = days_ago(1.0);
    let prod = moto.seed(
        PRODUCTION,
        json!([
            // 120 days old, used 2 days ago: too old, not unused.
            {"name": "ci-deployer", "keys": [
                {"status": "Active", "create_date": d120, "last_used": used(&d2, "s3")}]},
            // 60 days old, never used: unused (idle counts from creation), not too old.
            {"name": "reporting", "keys": [{"status": "Active", "create_date": d60}]},
            // 400 days old and idle, but Inactive: neither.
            {"name": "former-admin", "keys": [
                {"status": "Inactive", "create_date": d400, "last_used": used(&d390, "iam")}]},
            // 5 days old, used yesterday: nothing.
            {"name": "new-service", "keys": [
                {"status": "Active", "create_date": d5, "last_used": used(&d1, "sqs")}]},
        ]),
    );
    let (old_key, unused_key, inactive_key, fresh_key) =
        (&prod[0][0], &prod[1][0], &prod[2][0], &prod[3][0]);
    // Without these the ">365d" band, the last-used column of unused keys, "Users with > 1
    // active key", "Accounts down" and the error panels would be legitimately empty.
    let staging = moto.seed(
        STAGING,
        json!([
            {"name": "legacy-batch", "keys": [
                {"status": "Active", "create_date": d400, "last_used": used(&d100, "dynamodb")},
                {"status": "Active", "create_date": d20, "last_used": used(&d1, "dynamodb")}]},
        ]),
    );
    let (staging_old_key, staging_new_key) = (&staging[0][0], &staging[0][1]);
    moto.faults(json!([
        {"kind": "access_denied", "operation": "AssumeRole", "account": SANDBOX}
    ]));
    moto.seed(
        ROOTED,
        json!([{"name": "billing-export", "keys": [
            {"status": "Active", "create_date": d5, "last_used": used(&d1, "s3")}]}]),
    );
    moto.post(
        "/_launcher/root",
        json!({"account": ROOTED, "mfa_active": false, "access_key_1_active": true}),
    );

    // refresh_interval 1s: a key deleted in IAM is gone from /metrics a second later.
    let exporter = Exporter::start(
        &moto,
        &format!(
            r#"
refresh_interval: 1s
accounts:
  - {{id: "{PRODUCTION}", name: production, labels: {{team: platform}}}}
  - {{id: "{STAGING}", name: staging, labels: {{team: data}}}}
  - {{id: "{SANDBOX}", name: sandbox, labels: {{team: data}}}}
  - {{id: "{ROOTED}", name: legacy-root, source: credential_report, labels: {{team: finance}}}}
"#
        ),
    );
    exporter.wait_ready(Duration::from_secs(30));

    let shipped = ShippedRules::load();
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook.url);
    let prometheus = Prometheus::start(
        exporter.address(),
        alertmanager.url.trim_start_matches("http://"),
        &shipped.with_for_zero(),
    );

    // Prometheus scrapes the exporter.
    wait_for(
        "Prometheus to scrape the exporter (up == 1)",
        TIMEOUT,
        || {
            let r = prometheus.query_data(r#"up{job="iam-key-exporter"} == 1"#);
            (r.len() == 1).then_some(())
        },
    );

    let id = |alertname: &str, account: &str, user: &str, key: &str| AlertId {
        alertname: alertname.into(),
        account_name: account.into(),
        user: user.into(),
        access_key_id: key.into(),
    };
    let too_old_prod = id(TOO_OLD, "production", "ci-deployer", old_key);
    // Each key alert, with the days its description must show (`humanizeDuration` of the
    // age or idle time).
    let key_alert_days = [
        (too_old_prod.clone(), 120),
        (id(UNUSED, "production", "reporting", unused_key), 60),
        (id(TOO_OLD, "staging", "legacy-batch", staging_old_key), 400),
        (id(UNUSED, "staging", "legacy-batch", staging_old_key), 100),
    ];
    let expected_key_alerts: BTreeSet<AlertId> =
        key_alert_days.iter().map(|(a, _)| a.clone()).collect();
    let mut expected_firing = expected_key_alerts.clone();
    expected_firing.insert(id(MULTIPLE, "staging", "legacy-batch", ""));
    expected_firing.insert(id(ACCOUNT_DOWN, "sandbox", "", ""));
    expected_firing.insert(id(ROOT_KEY, "legacy-root", "", ""));

    // Prometheus' view: exactly these alerts fire (IAMKeyExporterDown fires for the few
    // seconds before the first scrape, with `for: 0s`, so this polls until it is gone).
    let firing_in_prometheus = || -> BTreeSet<AlertId> {
        prometheus
            .query_data(r#"ALERTS{alertstate="firing"}"#)
            .iter()
            .map(|s| AlertId::of(&s["metric"]))
            .collect()
    };
    wait_for_firing(&firing_in_prometheus, &expected_firing, "at first");

    // Alertmanager delivers each key alert to the webhook, firing, with the shipped labels
    // and annotations.
    let mut got = BTreeSet::new();
    wait_for_or(TIMEOUT, || {
        got = webhook.key_alerts("firing");
        got.is_superset(&expected_key_alerts).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "webhook: firing key alerts received:\n  {}\nexpected:\n  {}\nall notifications: {:#?}",
            fmt_ids(&got),
            fmt_ids(&expected_key_alerts),
            webhook.bodies()
        )
    });
    assert_eq!(
        webhook.key_alerts("firing"),
        expected_key_alerts,
        "webhook: unexpected key alerts"
    );
    let forbidden_keys = [inactive_key, fresh_key, staging_new_key];
    webhook.assert_none_about(&forbidden_keys, &["former-admin", "new-service"]);

    // Every notification: shipped severity and runbook_url, rendered summary and description.
    for alert in webhook.alerts() {
        shipped.assert_annotations(&alert, &[]);
    }
    // Key alerts name the key, its user and account, and say how old or idle it is.
    for (alert_id, days) in &key_alert_days {
        let alert = webhook
            .find(alert_id, "firing")
            .unwrap_or_else(|| panic!("{alert_id:?} not received"));
        let description = shipped.assert_annotations(
            &alert,
            &["access_key_id", "user", "account_name", "account_id"],
        );
        assert!(
            description.contains(&format!("{days}d ")),
            "{alert_id:?}: the description does not say {days}d: {description:?}"
        );
    }
    // The two-keys alert lists both keys (a `query` in its description template).
    let multiple = wait_for("IAMUserMultipleActiveKeys at the webhook", TIMEOUT, || {
        webhook.find(&id(MULTIPLE, "staging", "legacy-batch", ""), "firing")
    });
    let description = shipped.assert_annotations(&multiple, &["user", "account_name"]);
    assert!(
        description.contains(&format!("({staging_old_key}, {staging_new_key})"))
            || description.contains(&format!("({staging_new_key}, {staging_old_key})")),
        "IAMUserMultipleActiveKeys does not list both keys: {description:?}"
    );
    let root = wait_for("IAMRootAccessKeyPresent at the webhook", TIMEOUT, || {
        webhook.find(&id(ROOT_KEY, "legacy-root", "", ""), "firing")
    });
    shipped.assert_annotations(&root, &["account_name", "account_id"]);
    assert_eq!(root["labels"]["severity"], "critical");
    assert_eq!(
        root["labels"]["key"], "1",
        "the alert names the root key slot"
    );
    let down = wait_for("IAMKeyExporterAccountDown at the webhook", TIMEOUT, || {
        webhook.find(&id(ACCOUNT_DOWN, "sandbox", "", ""), "firing")
    });
    shipped.assert_annotations(&down, &["account_name", "account_id"]);
    // The account-down alert names the failing stage and AWS error code (a `query` in its
    // description template) once Prometheus has two samples of the error counter.
    wait_for(
        "IAMKeyExporterAccountDown's description to name assume_role/AccessDenied",
        TIMEOUT,
        || {
            prometheus
                .alerts()
                .iter()
                .find(|a| a["labels"]["alertname"] == ACCOUNT_DOWN)
                .and_then(|a| a["annotations"]["description"].as_str().map(String::from))
                .filter(|d| d.contains("assume_role/AccessDenied") && d.contains("sandbox"))
        },
    );

    // Every dashboard query returns data (before the deletion below empties the 90-365d band).
    check_dashboard(&prometheus);

    // Deleting the old key resolves its alert.
    moto.post(
        "/_launcher/delete_key",
        json!({"account": PRODUCTION, "user": "ci-deployer", "access_key_id": old_key}),
    );
    let resolved = wait_for(
        "a resolved notification for the deleted key's IAMAccessKeyTooOld",
        TIMEOUT,
        || webhook.find(&too_old_prod, "resolved"),
    );
    assert!(
        !resolved["endsAt"]
            .as_str()
            .unwrap_or("")
            .starts_with("0001"),
        "resolved alert without endsAt: {resolved}"
    );
    expected_firing.remove(&too_old_prod);
    wait_for_firing(
        &firing_in_prometheus,
        &expected_firing,
        "after the deletion",
    );

    // Nothing arrived late about the keys that must never page.
    webhook.assert_none_about(&forbidden_keys, &["former-admin", "new-service"]);
    assert_eq!(webhook.key_alerts("firing"), expected_key_alerts);
    assert!(
        webhook.errors().is_empty(),
        "webhook: {:?}",
        webhook.errors()
    );
    // Every notification, firing or resolved: shipped severity and runbook_url, rendered
    // summary and description.
    for alert in webhook.alerts() {
        shipped.assert_annotations(&alert, &[]);
    }
}

/// The launcher's `last_used` of a key.
fn used(date: &str, service: &str) -> Value {
    json!({"date": date, "service": service, "region": "eu-west-1"})
}

// ----------------------------------------------------------------------------------------
// Dashboard

/// A panel query, with Grafana's variables substituted.
struct DashboardQuery {
    what: String,
    expr: String,
}

/// Sends every panel query of deploy/grafana/iam-key-exporter.json to Prometheus: each must
/// return data, except those on credential-report-only metrics, which must parse.
/// Polls until the alerts firing in Prometheus are exactly `expected`.
fn wait_for_firing(
    firing: &dyn Fn() -> BTreeSet<AlertId>,
    expected: &BTreeSet<AlertId>,
    when: &str,
) {
    let mut last = BTreeSet::new();
    wait_for_or(TIMEOUT, || {
        last = firing();
        (last == *expected).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{when}, ALERTS{{alertstate=\"firing\"}} in Prometheus:\n  {}\nexpected:\n  {}",
            fmt_ids(&last),
            fmt_ids(expected)
        )
    });
}

fn check_dashboard(prometheus: &Prometheus) {
    let path = repo().join("deploy/grafana/iam-key-exporter.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut queries = Vec::new();
    collect_queries(&dashboard["panels"], &mut queries);
    assert!(
        !queries.is_empty(),
        "no panel queries in {}",
        path.display()
    );

    // Every panel, including the root-key and MFA ones, which the credential_report account
    // feeds.
    let mut pending = queries;

    // Queries over counters (rate, increase) need two scrapes in their window: poll.
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let done = wait_for_or(TIMEOUT, || {
        pending.retain(|q| {
            let r = prometheus.query(&q.expr);
            assert_eq!(
                r["status"], "success",
                "{}: query rejected by Prometheus: {}\n{r}",
                q.what, q.expr
            );
            let empty = r["data"]["result"].as_array().is_none_or(|a| a.is_empty());
            if empty {
                last.insert(q.what.clone(), format!("{}\n    → {}", q.expr, r["data"]));
            }
            empty
        });
        pending.is_empty().then_some(())
    });
    if done.is_none() {
        let report: Vec<String> = pending
            .iter()
            .map(|q| format!("  {}: {}", q.what, last[&q.what]))
            .collect();
        panic!(
            "dashboard queries with no data after {TIMEOUT:?}:\n{}",
            report.join("\n")
        );
    }

    // The `team` and `account` variable dropdowns have values.
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(q) = var["query"]["query"].as_str().or(var["query"].as_str()) else {
            continue;
        };
        let Some(args) = q
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
        else {
            continue;
        };
        let (selector, label) = args.rsplit_once(',').unwrap();
        let selector = substitute(selector.trim(), q);
        let values = prometheus.label_values(label.trim(), &selector);
        assert!(
            !values.is_empty(),
            "variable {}: {q} has no values",
            var["name"]
        );
    }
}

fn collect_queries(panels: &Value, out: &mut Vec<DashboardQuery>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(DashboardQuery {
                    what: format!(
                        "panel {:?} [{}]",
                        title,
                        target["refId"].as_str().unwrap_or("?")
                    ),
                    expr: substitute(expr, expr),
                });
            }
        }
        // Rows hold their panels when collapsed.
        collect_queries(&panel["panels"], out);
    }
}

/// Replaces Grafana's template variables (`$name`, `${name}`, `${name:format}`) with what
/// "All" / a 1-minute resolution would give. An unknown variable fails the test, so a new one
/// in the dashboard gets a value here.
fn substitute(expr: &str, context: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(inner) => {
                let end = inner
                    .find('}')
                    .unwrap_or_else(|| panic!("unclosed ${{ in {context}"));
                (inner[..end].split(':').next().unwrap(), end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        let value = match name {
            "" => "$", // a `$` in a regex, not a variable
            "account" | "team" => ".*",
            "__rate_interval" | "__interval" | "__range" => "1m",
            other => {
                panic!("unknown template variable ${other} in {context}: give it a value here")
            }
        };
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

// ----------------------------------------------------------------------------------------
// Alerts

/// What identifies an alert here; "" where the alert has no such label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AlertId {
    alertname: String,
    account_name: String,
    user: String,
    access_key_id: String,
}

impl AlertId {
    fn of(labels: &Value) -> AlertId {
        let l = |k: &str| labels[k].as_str().unwrap_or("").to_string();
        AlertId {
            alertname: l("alertname"),
            account_name: l("account_name"),
            user: l("user"),
            access_key_id: l("access_key_id"),
        }
    }
}

fn fmt_ids(ids: &BTreeSet<AlertId>) -> String {
    ids.iter()
        .map(|a| {
            format!(
                "{} account_name={} user={} access_key_id={}",
                a.alertname, a.account_name, a.user, a.access_key_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// What this test asks of the alerts the webhook received.
trait KeyAlerts {
    fn key_alerts(&self, status: &str) -> BTreeSet<AlertId>;
    fn find(&self, id: &AlertId, status: &str) -> Option<Value>;
    fn assert_none_about(&self, keys: &[&String], users: &[&str]);
}

impl KeyAlerts for Webhook {
    /// IAMAccessKeyTooOld / IAMAccessKeyUnused alerts received with this status.
    fn key_alerts(&self, status: &str) -> BTreeSet<AlertId> {
        self.alerts()
            .iter()
            .filter(|a| a["status"] == status)
            .map(|a| AlertId::of(&a["labels"]))
            .filter(|a| a.alertname == TOO_OLD || a.alertname == UNUSED)
            .collect()
    }

    fn find(&self, id: &AlertId, status: &str) -> Option<Value> {
        self.alerts()
            .into_iter()
            .find(|a| a["status"] == status && AlertId::of(&a["labels"]) == *id)
    }

    /// No notification is about one of these keys or users.
    fn assert_none_about(&self, keys: &[&String], users: &[&str]) {
        for a in self.alerts() {
            let id = AlertId::of(&a["labels"]);
            assert!(
                !keys.iter().any(|k| **k == id.access_key_id) && !users.contains(&id.user.as_str()),
                "webhook received an alert that must not fire: {a:#}"
            );
        }
    }
}
