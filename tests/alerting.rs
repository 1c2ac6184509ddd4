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
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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

/// Like `wait_for`, but returns None on timeout so the caller can say what it saw last.
fn wait_for_or<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
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

/// deploy/prometheus/iam-key-exporter.rules.yml as shipped.
struct ShippedRules {
    text: String,
    /// alertname → the rule
    alerts: BTreeMap<String, serde_yaml::Value>,
}

impl ShippedRules {
    fn load() -> ShippedRules {
        let path = repo().join("deploy/prometheus/iam-key-exporter.rules.yml");
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let mut alerts = BTreeMap::new();
        for group in parsed["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                if let Some(name) = rule["alert"].as_str() {
                    alerts.insert(name.to_string(), rule.clone());
                }
            }
        }
        ShippedRules { text, alerts }
    }

    /// The shipped file with every `for:` set to 0s, because the test cannot wait the real
    /// durations (1h for the key alerts). Only the `for:` lines change: expressions, labels
    /// and annotations are the shipped text, which is checked here by comparing both files
    /// parsed, minus `for`.
    fn with_for_zero(&self) -> String {
        let mut changed = 0;
        let mut out: String = self
            .text
            .lines()
            .map(|line| {
                let trimmed = line.trim_start();
                if trimmed.starts_with("for:") {
                    changed += 1;
                    format!("{}for: 0s", &line[..line.len() - trimmed.len()])
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        out.push('\n');
        assert!(changed > 0, "no `for:` in the shipped rules");
        let strip = |text: &str| {
            let mut v: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
            let mut fors = Vec::new();
            for group in v["groups"].as_sequence_mut().unwrap() {
                for rule in group["rules"].as_sequence_mut().unwrap() {
                    if let Some(f) = rule.as_mapping_mut().unwrap().remove("for") {
                        fors.push(f);
                    }
                }
            }
            (v, fors)
        };
        let (shipped, shipped_fors) = strip(&self.text);
        let (rewritten, fors) = strip(&out);
        assert_eq!(
            shipped, rewritten,
            "the `for:` rewrite changed more than `for`"
        );
        assert_eq!(fors.len(), changed);
        assert_eq!(shipped_fors.len(), changed);
        out
    }

    /// A received alert carries the shipped severity and runbook_url, and a rendered summary
    /// and description, both naming the alert's value of each label in `named`. Returns the
    /// description.
    fn assert_annotations(&self, alert: &Value, named: &[&str]) -> String {
        let labels = &alert["labels"];
        let ann = &alert["annotations"];
        let name = labels["alertname"].as_str().unwrap();
        let rule = self
            .alerts
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not a shipped alert: {alert:#}"));
        assert!(
            labels["severity"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: no severity\n{alert:#}"
        );
        assert_eq!(
            labels["severity"].as_str(),
            rule["labels"]["severity"].as_str(),
            "{name}: severity\n{alert:#}"
        );
        assert_eq!(
            ann["runbook_url"].as_str(),
            rule["annotations"]["runbook_url"].as_str(),
            "{name}: runbook_url\n{alert:#}"
        );
        for field in ["summary", "description"] {
            let text = ann[field].as_str().unwrap_or("");
            assert!(!text.trim().is_empty(), "{name}: no {field}\n{alert:#}");
            assert!(
                !text.contains("{{") && !text.contains("<no value>"),
                "{name}: {field} template not rendered: {text:?}"
            );
            for label in named {
                let value = labels[label].as_str().unwrap();
                assert!(
                    text.contains(value),
                    "{name}: {field} does not name {label} {value}: {text:?}"
                );
            }
        }
        ann["description"].as_str().unwrap().to_string()
    }
}

// ----------------------------------------------------------------------------------------
// The webhook receiver

/// Alertmanager's webhook receiver: a one-thread HTTP/1.1 server on 127.0.0.1 that records
/// each POSTed JSON body.
struct Webhook {
    url: String,
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (bodies, errors, stop) = (bodies.clone(), errors.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    match serve(stream) {
                        Ok(Some(body)) => bodies.lock().unwrap().push(body),
                        Ok(None) => {}
                        Err(e) => errors.lock().unwrap().push(e),
                    }
                }
            })
        };
        Webhook {
            url: format!("http://{addr}/alerts"),
            addr,
            bodies,
            errors,
            stop,
            thread: Some(thread),
        }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Every alert of every notification, in order of arrival.
    fn alerts(&self) -> Vec<Value> {
        self.bodies()
            .iter()
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .collect()
    }

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

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request and answers it, closing the connection. A POST's body is returned,
/// parsed as JSON.
fn serve(stream: TcpStream) -> Result<Option<Value>, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut request_line = String::new();
    if reader
        .read_line(&mut request_line)
        .map_err(|e| e.to_string())?
        == 0
    {
        return Ok(None); // a connection closed without a request (the wake-up in drop)
    }
    let mut content_length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse::<usize>().ok();
            }
        }
    }
    let result = if request_line.starts_with("POST ") {
        let len =
            content_length.ok_or_else(|| format!("{}: no Content-Length", request_line.trim()))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| format!("{}: body is not JSON: {e}", request_line.trim()))
    } else {
        Ok(None)
    };
    let mut stream = reader.into_inner();
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    result
}

// ----------------------------------------------------------------------------------------
// Prometheus and Alertmanager

/// Debian's `prometheus`, scraping the exporter every second and evaluating `rules` every
/// second, sending alerts to `alertmanager`.
struct Prometheus {
    child: Mutex<ChildGuard>, // first: killed before the directory is removed
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(exporter: &str, alertmanager: &str, rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("iam-key-exporter.rules.yml");
        std::fs::write(&rules_path, rules).unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                r#"
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["{alertmanager}"]
scrape_configs:
  - job_name: iam-key-exporter
    static_configs:
      - targets: ["{exporter}"]
"#,
                rules = rules_path.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let child = ChildGuard::spawn("prometheus", cmd, &dir.path().join("prometheus.log"));
        let p = Prometheus {
            child: Mutex::new(child),
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            p.child.lock().unwrap().assert_running();
            http_ok(&format!("{}/-/ready", p.url))
        });
        p
    }

    /// The whole answer of an instant query (status, data or error).
    fn query(&self, expr: &str) -> Value {
        self.child.lock().unwrap().assert_running();
        agent()
            .get(&format!("{}/api/v1/query", self.url))
            .query("query", expr)
            .call()
            .unwrap_or_else(|e| panic!("Prometheus did not answer {expr}: {e}"))
            .body_mut()
            .read_json()
            .unwrap()
    }

    /// The result of an instant query that must succeed.
    fn query_data(&self, expr: &str) -> Vec<Value> {
        let r = self.query(expr);
        assert_eq!(r["status"], "success", "{expr}: {r}");
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Active alerts with their current annotations (/api/v1/alerts).
    fn alerts(&self) -> Vec<Value> {
        let r: Value = agent()
            .get(&format!("{}/api/v1/alerts", self.url))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        r["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    fn label_values(&self, label: &str, selector: &str) -> Vec<Value> {
        let r: Value = agent()
            .get(&format!("{}/api/v1/label/{label}/values", self.url))
            .query("match[]", selector)
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        assert_eq!(
            r["status"], "success",
            "label values {label} {selector}: {r}"
        );
        r["data"].as_array().cloned().unwrap_or_default()
    }
}

/// Debian's `prometheus-alertmanager`, alone (no cluster), sending every alert to `webhook`
/// as its own notification, quickly, resolved ones included.
struct Alertmanager {
    _child: ChildGuard, // first: killed before the directory is removed
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start(webhook: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                r#"
route:
  receiver: webhook
  group_by: ["..."]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: "{webhook}"
        send_resolved: true
"#
            ),
        )
        .unwrap();
        let port = free_port();
        let mut cmd = Command::new("prometheus-alertmanager");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=");
        let mut child =
            ChildGuard::spawn("alertmanager", cmd, &dir.path().join("alertmanager.log"));
        let url = format!("http://127.0.0.1:{port}");
        wait_for("Alertmanager to be ready", Duration::from_secs(60), || {
            child.assert_running();
            http_ok(&format!("{url}/-/ready"))
        });
        Alertmanager {
            _child: child,
            url,
            _dir: dir,
        }
    }
}

fn http_ok(url: &str) -> Option<()> {
    let resp = agent().get(url).call().ok()?;
    resp.status().is_success().then_some(())
}
