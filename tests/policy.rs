//! The policy decides once, and every output follows: on one seeded world with rules by
//! account label, user tag, account and user, and IAM path, the keys the shipped alerts fire
//! for in a real Prometheus are exactly the keys `audit --format json` reports, kind for kind
//! (too old, unused, and both notices); after a reload with another limit, both follow again,
//! and the reload reads nothing from AWS.
//!
//! Needs `prometheus` and the moto virtualenv (scripts/setup-test-env.sh, or `make test`).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::stack::*;
use common::*;
use serde_json::{json, Value};

const PROD: &str = "111111111111";
const SANDBOX: &str = "222222222222";

fn used(days: f64) -> Value {
    json!({"date": days_ago(days).1, "service": "s3", "region": "eu-west-1"})
}

fn key(age: f64, last_used: Option<f64>) -> Value {
    let mut k = json!({"status": "Active", "create_date": days_ago(age).1});
    if let Some(d) = last_used {
        k["last_used"] = used(d);
    }
    k
}

fn config(ci_max_age: &str) -> String {
    format!(
        r#"
refresh_interval: 1h
policy:
  rules:
    - {{name: sandbox, account_labels: {{environment: sandbox}}, key_max_age: 180d}}
    - {{name: service, user_tags: {{kind: service}}, key_max_age: 365d, key_max_idle: 90d}}
    - {{name: ci, account: "{PROD}", user: "ci-*", key_max_age: {ci_max_age}}}
    - {{name: breakglass, path: /breakglass/, key_max_idle: 365d}}
accounts:
  - {{id: "{PROD}", name: production}}
  - {{id: "{SANDBOX}", name: sandbox, labels: {{environment: sandbox}}}}
"#
    )
}

/// (alert name, account, user, key), as the alerts and the audit both name them.
type Fired = BTreeSet<(String, String, String, String)>;

/// The alert each audit finding corresponds to.
fn alert_of(kind: &str) -> Option<&'static str> {
    match kind {
        "key_too_old" => Some("IAMAccessKeyTooOld"),
        "key_unused" | "key_never_used" => Some("IAMAccessKeyUnused"),
        "key_too_old_soon" => Some("IAMAccessKeyTooOldSoon"),
        "key_unused_soon" => Some("IAMAccessKeyUnusedSoon"),
        _ => None,
    }
}

const KEY_ALERTS: &str =
    "IAMAccessKeyTooOld|IAMAccessKeyUnused|IAMAccessKeyTooOldSoon|IAMAccessKeyUnusedSoon";

fn audited(moto: &Moto, config: &str) -> Fired {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config).unwrap();
    let out = exporter_command(moto)
        .arg(format!("--config.file={}", path.display()))
        .args(["audit", "--format", "json"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("audit printed no JSON ({e}): {out:?}"));
    ["findings", "due_soon"]
        .iter()
        .flat_map(|list| doc[list].as_array().unwrap().clone())
        .filter_map(|f| {
            let alert = alert_of(f["kind"].as_str()?)?;
            Some((
                alert.to_string(),
                f["account_id"].as_str()?.to_string(),
                f["user"].as_str()?.to_string(),
                f["access_key_id"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn firing(prometheus: &Prometheus) -> Fired {
    prometheus
        .query_data(&format!(
            "ALERTS{{alertstate=\"firing\", alertname=~\"{KEY_ALERTS}\"}}"
        ))
        .iter()
        .map(|a| {
            let l = |k: &str| a["metric"][k].as_str().unwrap_or("").to_string();
            (
                l("alertname"),
                l("account_id"),
                l("user"),
                l("access_key_id"),
            )
        })
        .collect()
}

/// Waits until Prometheus fires exactly `want`; panics with both sets if it never does.
fn wait_for_alerts(prometheus: &Prometheus, want: &Fired) {
    let mut last = Fired::new();
    let same = wait_for_or(Duration::from_secs(60), || {
        last = firing(prometheus);
        (last == *want).then_some(())
    });
    assert!(
        same.is_some(),
        "Prometheus fires for other keys than the audit reports.\n  only in Prometheus: {:?}\n  only in the audit: {:?}",
        last.difference(want).collect::<Vec<_>>(),
        want.difference(&last).collect::<Vec<_>>()
    );
}

#[test]
fn prometheus_fires_for_exactly_the_keys_the_audit_reports() {
    let moto = Moto::start();
    let prod = moto.seed(
        PROD,
        json!([
            // Defaults (90 days, 45 unused, 14 days' notice).
            {"name": "alice", "keys": [key(100.0, Some(1.0))]},
            {"name": "bob", "keys": [key(50.0, None)]},
            {"name": "grace", "keys": [key(80.0, Some(1.0))]},
            {"name": "idle-soon", "keys": [key(20.0, Some(35.0))]},
            // `service` by tag: 365 days old, 90 unused.
            {"name": "etl", "tags": {"kind": "service"},
             "keys": [key(200.0, Some(1.0)), key(100.0, None)]},
            // `ci` in production: 30 days.
            {"name": "ci-deploy", "keys": [key(40.0, Some(1.0))]},
            // `breakglass` by path: 365 days unused, 90 old.
            {"name": "bg-admin", "path": "/breakglass/", "keys": [key(60.0, None)]},
        ]),
    );
    moto.seed(
        SANDBOX,
        json!([
            // `sandbox` by account label: 180 days; it comes before `ci`.
            {"name": "dev", "keys": [key(150.0, Some(1.0))]},
            {"name": "old-dev", "keys": [key(200.0, Some(1.0))]},
            {"name": "ci-sandbox", "keys": [key(40.0, Some(1.0))]},
        ]),
    );
    let exporter = Exporter::start(&moto, &config("30d"));
    exporter.wait_ready(Duration::from_secs(30));
    let prometheus = Prometheus::start_to(
        &[("iam-key-exporter", &[exporter.address()])],
        &[],
        &ShippedRules::load().with_for_zero(),
    );

    let audit = audited(&moto, &config("30d"));
    let id = |user: usize, key: usize| prod[user][key].clone();
    let expect = |alert: &str, user: &str, key: String| {
        (alert.to_string(), PROD.to_string(), user.to_string(), key)
    };
    // The world is what the rules say it is, before comparing outputs.
    for want in [
        expect("IAMAccessKeyTooOld", "alice", id(0, 0)),
        expect("IAMAccessKeyUnused", "bob", id(1, 0)),
        expect("IAMAccessKeyTooOldSoon", "grace", id(2, 0)),
        expect("IAMAccessKeyUnusedSoon", "idle-soon", id(3, 0)),
        expect("IAMAccessKeyUnused", "etl", id(4, 1)),
        expect("IAMAccessKeyTooOld", "ci-deploy", id(5, 0)),
    ] {
        assert!(audit.contains(&want), "{want:?} missing from {audit:#?}");
    }
    let users: BTreeSet<&str> = audit.iter().map(|(_, _, u, _)| u.as_str()).collect();
    for quiet in ["dev", "ci-sandbox", "bg-admin"] {
        assert!(
            !users.contains(quiet),
            "{quiet} is within its rule: {audit:#?}"
        );
    }
    assert!(users.contains("old-dev"));
    wait_for_alerts(&prometheus, &audit);

    // The rule is on the alert, as the audit names it.
    let alert = prometheus
        .alerts()
        .into_iter()
        .find(|a| a["labels"]["user"] == "ci-deploy")
        .expect("ci-deploy's alert");
    assert_eq!(alert["labels"]["policy_rule"], "ci");
    // The key view shows the same rule and the deadline it gives.
    let (_, body) = exporter.get(&format!("/keys.json?account={PROD}"));
    let view: Value = serde_json::from_str(&body).unwrap();
    let row = view["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["user"] == "ci-deploy")
        .expect("ci-deploy in /keys.json");
    assert_eq!(row["policy_rule"], "ci");
    assert_eq!(row["rotate_by"], days_ago(10.0).1[..10]);
    let (_, html) = exporter.get("/keys");
    assert!(html.contains("<th>Policy rule</th><th>Rotate by</th><th>Disable by</th>"));

    // One limit changed in the file: a reload applies it to alerts and audit alike, and
    // reads nothing from AWS.
    let requests = || {
        exporter
            .scrape()
            .find("iam_key_exporter_aws_requests_total", &[])
            .iter()
            .map(|s| s.value)
            .sum::<f64>()
    };
    let before = requests();
    std::fs::write(&exporter.config, config("60d")).unwrap();
    let status = agent()
        .post(&format!("{}/-/reload", exporter.url))
        .send_empty()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(status, 200);
    let audit = audited(&moto, &config("60d"));
    assert!(
        !audit.iter().any(|(_, _, u, _)| u == "ci-deploy"),
        "40 days is within 60: {audit:#?}"
    );
    wait_for_alerts(&prometheus, &audit);
    assert_eq!(requests(), before, "a policy reload called AWS");
}

#[test]
fn a_rule_whose_tags_cannot_be_read_falls_back_to_the_defaults_and_says_so() {
    let moto = Moto::start();
    let keys = moto.seed(
        PROD,
        json!([
            {"name": "etl", "tags": {"kind": "service"}, "keys": [key(200.0, Some(1.0))]},
            {"name": "alice", "keys": [key(10.0, Some(1.0))]},
        ]),
    );
    moto.faults(json!([
        {"kind": "access_denied", "operation": "GetAccountAuthorizationDetails", "account": PROD}
    ]));
    let cfg = format!(
        "policy:\n  rules:\n    - {{name: service, user_tags: {{kind: service}}, key_max_age: 365d}}\naccounts:\n  - {{id: \"{PROD}\", name: production}}\n"
    );
    let exporter = Exporter::start(&moto, &cfg);
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape();
    assert_eq!(
        m.get(
            "iam_key_exporter_policy_undecided_users",
            &[("account_id", PROD)]
        ),
        Some(2.0)
    );
    assert_eq!(
        m.get(
            "aws_iam_user_info",
            &[("user", "etl"), ("policy_rule", "default")]
        ),
        Some(1.0),
        "without its tags, etl gets the defaults, not `service`"
    );
    let (_, page) = exporter.get("/");
    assert!(
        page.contains("2 users get the policy's default limits: a rule needs their tags, which could not be read"),
        "{page}"
    );
    // The stricter default applies: etl's 200-day key is a finding, not silenced.
    let audit = audited(&moto, &cfg);
    assert!(
        audit.contains(&(
            "IAMAccessKeyTooOld".to_string(),
            PROD.to_string(),
            "etl".to_string(),
            keys[0][0].clone()
        )),
        "{audit:?}"
    );
}

#[test]
fn rules_by_ou_match_accounts_anywhere_below_the_ou() {
    const PAY: &str = "210000000001";
    const SEARCH: &str = "210000000002";
    const LAB: &str = "210000000003";
    let moto = Moto::start();
    let org = moto.post(
        "/_launcher/organization",
        json!({
            "ous": [{"name": "prod", "children": [{"name": "prod-eu"}]}, {"name": "sandbox"}],
            "accounts": [
                {"id": PAY, "name": "payments", "ou": "prod", "state": "ACTIVE"},
                {"id": SEARCH, "name": "search", "ou": "prod/prod-eu", "state": "ACTIVE"},
                {"id": LAB, "name": "lab", "ou": "sandbox", "state": "ACTIVE"},
            ],
        }),
    );
    let prod = org["ous"]["prod"].as_str().unwrap();
    let prod_eu = org["ous"]["prod/prod-eu"].as_str().unwrap();
    for (id, prefix) in [(PAY, "pay"), (SEARCH, "srch"), (LAB, "lab")] {
        moto.seed(id, users(prefix, 1, 1));
    }
    let rule_of = |m: &Metrics, account: &str| {
        m.find("aws_iam_user_info", &[("account_id", account)])[0].labels["policy_rule"].clone()
    };
    // The whole organization: discovery walks the tree for the rule.
    let exporter = Exporter::start(
        &moto,
        &format!(
            "discovery: {{organizations: {{}}}}\npolicy:\n  rules:\n    - {{name: prod, ous: [{prod}], key_max_age: 30d}}\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape();
    assert_eq!(rule_of(&m, PAY), "prod");
    assert_eq!(rule_of(&m, SEARCH), "prod", "an OU below the rule's counts");
    assert_eq!(rule_of(&m, LAB), "default");
    drop(exporter);
    // Only prod-eu is read: what is above it comes from ListParents.
    let exporter = Exporter::start(
        &moto,
        &format!(
            "discovery: {{organizations: {{include_ous: [{prod_eu}]}}}}\npolicy:\n  rules:\n    - {{name: prod, ous: [{prod}], key_max_age: 30d}}\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape();
    assert_eq!(rule_of(&m, SEARCH), "prod");
    assert!(m
        .find("aws_iam_user_info", &[("account_id", PAY)])
        .is_empty());
}
