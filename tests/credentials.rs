//! Service-specific credentials (Bedrock API keys, CodeCommit and Keyspaces passwords), SSH
//! public keys and roles, end to end: on one seeded world, each shows in `/metrics`, `/keys`, and `audit`
//! (JSON, CSV, table), and the shipped alerts fire in a real Prometheus for exactly the
//! stale ones the audit reports; a member role denied ListServiceSpecificCredentials loses
//! those credentials in that account only (absent, not zero), says so, and keeps the rest.
//!
//! Needs `prometheus` and the moto virtualenv (scripts/setup-test-env.sh, or `make test`).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::stack::*;
use common::*;
use serde_json::{json, Value};

const PROD: &str = "111111111111";
const LAB: &str = "222222222222";
const BEDROCK: &str = "bedrock.amazonaws.com";
const CODECOMMIT: &str = "codecommit.amazonaws.com";

/// A credential created `age` days ago that expires `lifetime` days after its creation.
fn credential(service: &str, age: f64, status: &str, lifetime: Option<f64>) -> Value {
    let mut c = json!({"service": service, "status": status, "create_date": days_ago(age).1});
    if let Some(days) = lifetime {
        c["expiration_date"] = json!(days_ago(age - days).1);
    }
    c
}

fn role(name: &str, path: &str, age: f64, used: Option<f64>) -> Value {
    let last_used = used.map(|d| json!({"date": days_ago(d).1, "region": "eu-west-1"}));
    json!({"name": name, "path": path, "create_date": days_ago(age).1, "last_used": last_used})
}

const CONFIG: &str = r#"
refresh_interval: 1h
read: {ssh_public_keys: true}
policy:
  rules:
    - {name: lab, account: "222222222222", key_max_age: 365d, role_max_idle: 365d}
accounts:
  - {id: "111111111111", name: production}
  - {id: "222222222222", name: lab}
"#;

/// (alert, account, user or role, credential id), as the alerts and the audit name them.
type Fired = BTreeSet<(String, String, String, String)>;

const ALERTS: &str =
    "IAMServiceCredentialTooOld|IAMBedrockAPIKeyLongLived|IAMSSHPublicKeyTooOld|IAMRoleUnused";

fn alert_of(kind: &str) -> Option<&'static str> {
    match kind {
        "service_credential_too_old" => Some("IAMServiceCredentialTooOld"),
        "bedrock_key_long_lived" => Some("IAMBedrockAPIKeyLongLived"),
        "ssh_key_too_old" => Some("IAMSSHPublicKeyTooOld"),
        "role_unused" => Some("IAMRoleUnused"),
        _ => None,
    }
}

fn audit(moto: &Moto, format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, CONFIG).unwrap();
    let out = exporter_command(moto)
        .arg(format!("--config.file={}", path.display()))
        .args(["audit", "--format", format])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "findings: exit 3: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn audited(json: &str) -> Fired {
    let doc: Value = serde_json::from_str(json).unwrap();
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| {
            let alert = alert_of(f["kind"].as_str()?)?;
            let who = f["user"].as_str().or(f["role"].as_str())?;
            let id = f["credential_id"].as_str().unwrap_or("");
            Some((
                alert.into(),
                f["account_id"].as_str()?.into(),
                who.into(),
                id.into(),
            ))
        })
        .collect()
}

fn firing(prometheus: &Prometheus) -> Fired {
    prometheus
        .query_data(&format!(
            "ALERTS{{alertstate=\"firing\", alertname=~\"{ALERTS}\"}}"
        ))
        .iter()
        .map(|a| {
            let l = |k: &str| a["metric"][k].as_str().unwrap_or("").to_string();
            let who = if l("role").is_empty() {
                l("user")
            } else {
                l("role")
            };
            let id = format!("{}{}", l("credential_id"), l("ssh_key_id"));
            (l("alertname"), l("account_id"), who, id)
        })
        .collect()
}

#[test]
fn service_credentials_and_roles_show_everywhere_and_fire_exactly_for_the_stale_ones() {
    let moto = Moto::start();
    let until = days_ago(-30.0).1[..10].to_string();
    let seeded = moto.post(
        "/_launcher/seed",
        json!({"account": PROD, "users": [
            {"name": "ml-app", "service_credentials": [
                credential(BEDROCK, 120.0, "Active", None),      // too old, never expires
                credential(BEDROCK, 10.0, "Active", Some(30.0)),  // a 30-day key: fine
            ]},
            {"name": "ml-batch", "service_credentials": [
                credential(BEDROCK, 10.0, "Active", Some(200.0)), // young, but lives 200 days
            ]},
            {"name": "git-user", "service_credentials": [
                credential(CODECOMMIT, 100.0, "Active", None),   // too old
                credential(CODECOMMIT, 20.0, "Active", None),
            ], "ssh_keys": [
                {"upload_date": days_ago(120.0).1},               // too old
                {"upload_date": days_ago(10.0).1},
                {"upload_date": days_ago(300.0).1, "status": "Inactive"},
            ]},
            {"name": "git-old", "service_credentials": [
                credential(CODECOMMIT, 300.0, "Inactive", None), // cannot be used
            ]},
            {"name": "db", "service_credentials": [
                credential("cassandra.amazonaws.com", 95.0, "Active", None),
            ]},
            {"name": "exempt", "tags": {"iam-key-exporter:exempt-until": format!("{until} vendor")},
             "service_credentials": [credential(CODECOMMIT, 200.0, "Active", None)]},
        ]}),
    );
    let ids = |user: usize| -> Vec<String> {
        seeded["users"][user]["service_credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    moto.post(
        "/_launcher/roles",
        json!({"account": PROD, "roles": [
            role("unused-200", "/", 400.0, Some(200.0)),
            role("used-yesterday", "/", 400.0, Some(1.0)),
            role("never-used-old", "/", 730.0, None),
            role("new-role", "/", 10.0, None),
            role("AWSServiceRoleForSupport", "/aws-service-role/support.amazonaws.com/", 800.0, None),
            role("IAMKeyExporterReadOnly", "/", 800.0, None),
        ]}),
    );
    let ssh_ids: Vec<String> = seeded["users"][2]["ssh_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let lab = moto.post(
        "/_launcher/seed",
        json!({"account": LAB, "users": [
            {"name": "lab-git", "service_credentials": [credential(CODECOMMIT, 200.0, "Active", None)]},
        ]}),
    );
    moto.post(
        "/_launcher/roles",
        json!({"account": LAB, "roles": [
            role("lab-200", "/", 400.0, Some(200.0)),   // within the lab rule's 365 days
            role("lab-400", "/", 800.0, Some(399.0)),
        ]}),
    );

    let exporter = Exporter::start(&moto, CONFIG);
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape();

    // /metrics: every credential, its age and expiry where AWS gives one.
    let created = "aws_iam_service_credential_created_timestamp_seconds";
    assert_eq!(m.find(created, &[("account_id", PROD)]).len(), 8);
    let ml_app = ids(0);
    let bedrock = [("credential_id", ml_app[0].as_str()), ("service", BEDROCK)];
    assert!(m.get(created, &bedrock).is_some());
    assert_eq!(
        m.get(
            "aws_iam_service_credential_expiration_timestamp_seconds",
            &bedrock
        ),
        None,
        "a key that never expires has no expiration series"
    );
    let short = [("credential_id", ml_app[1].as_str()), ("status", "Active")];
    let expires = m
        .get(
            "aws_iam_service_credential_expiration_timestamp_seconds",
            &short,
        )
        .unwrap();
    assert!(
        (expires - (now() + 20.0 * DAY)).abs() < 2.0 * DAY,
        "{expires}"
    );
    let age = m
        .get(
            "aws_iam_service_credential_age_seconds",
            &[("credential_id", &ids(2)[0])],
        )
        .unwrap();
    assert!((age / DAY - 100.0).abs() < 1.0, "{age}");
    assert!(m
        .get(
            created,
            &[("credential_id", &ids(3)[0]), ("status", "Inactive")]
        )
        .is_some());

    // Roles: idle since last use, or since creation; the exporter's own and service-linked
    // ones are marked.
    let idle = |account: &str, r: &str| {
        m.get(
            "aws_iam_role_idle_seconds",
            &[("account_id", account), ("role", r)],
        )
        .map(|v| (v / DAY).round())
    };
    assert_eq!(idle(PROD, "unused-200"), Some(200.0));
    assert_eq!(idle(PROD, "never-used-old"), Some(730.0));
    assert_eq!(idle(PROD, "new-role"), Some(10.0));
    let last_used = "aws_iam_role_last_used_timestamp_seconds";
    assert!(m
        .get(
            last_used,
            &[("role", "used-yesterday"), ("region", "eu-west-1")]
        )
        .is_some());
    assert_eq!(
        m.get(last_used, &[("role", "never-used-old")]),
        None,
        "no date from IAM: absent"
    );
    let info = |r: &str, label: &str| {
        m.find("aws_iam_role_info", &[("role", r)])
            .first()
            .and_then(|s| s.labels.get(label).cloned())
    };
    assert_eq!(
        info("AWSServiceRoleForSupport", "managed_by").as_deref(),
        Some("aws")
    );
    assert_eq!(
        info("IAMKeyExporterReadOnly", "managed_by").as_deref(),
        Some("iam-key-exporter")
    );
    assert_eq!(info("unused-200", "managed_by"), None);
    assert_eq!(
        info("unused-200", "policy_rule").as_deref(),
        Some("default")
    );
    assert_eq!(
        m.find("aws_iam_role_info", &[("account_id", LAB)])[0].labels["policy_rule"],
        "lab"
    );
    assert_eq!(
        m.get(
            "iam_key_exporter_policy_role_max_idle_seconds",
            &[("policy_rule", "lab")]
        ),
        Some(365.0 * DAY)
    );
    for kind in ["service_credentials", "roles"] {
        for account in [PROD, LAB] {
            let covered = [("account_id", account), ("kind", kind)];
            assert_eq!(
                m.get("iam_key_exporter_account_coverage", &covered),
                Some(1.0)
            );
        }
    }

    // The audit names the stale ones, and Prometheus fires for exactly those.
    let json_audit = audit(&moto, "json");
    let want = audited(&json_audit);
    let expect = |alert: &str, account: &str, who: &str, id: &str| {
        (
            alert.to_string(),
            account.to_string(),
            who.to_string(),
            id.to_string(),
        )
    };
    let expected: Fired = [
        expect("IAMServiceCredentialTooOld", PROD, "ml-app", &ids(0)[0]),
        expect("IAMBedrockAPIKeyLongLived", PROD, "ml-app", &ids(0)[0]),
        expect("IAMBedrockAPIKeyLongLived", PROD, "ml-batch", &ids(1)[0]),
        expect("IAMServiceCredentialTooOld", PROD, "git-user", &ids(2)[0]),
        expect("IAMSSHPublicKeyTooOld", PROD, "git-user", &ssh_ids[0]),
        expect("IAMServiceCredentialTooOld", PROD, "db", &ids(4)[0]),
        expect("IAMRoleUnused", PROD, "unused-200", ""),
        expect("IAMRoleUnused", PROD, "never-used-old", ""),
        expect("IAMRoleUnused", LAB, "lab-400", ""),
    ]
    .into_iter()
    .collect();
    assert_eq!(want, expected, "the audit's findings");
    let doc: Value = serde_json::from_str(&json_audit).unwrap();
    let exempt: Vec<&Value> = doc["exempt"].as_array().unwrap().iter().collect();
    assert!(
        exempt
            .iter()
            .any(|f| f["user"] == "exempt" && f["credential_id"] == ids(5)[0].as_str()),
        "the exempt user's credential is listed as exempt: {exempt:?}"
    );

    let prometheus = Prometheus::start_to(
        &[("iam-key-exporter", &[exporter.address()])],
        &[],
        &ShippedRules::load().with_for_zero(),
    );
    let mut last = Fired::new();
    let same = wait_for_or(Duration::from_secs(60), || {
        last = firing(&prometheus);
        (last == want).then_some(())
    });
    assert!(
        same.is_some(),
        "Prometheus fires for others than the audit reports.\n  only in Prometheus: {:?}\n  only in the audit: {:?}",
        last.difference(&want).collect::<Vec<_>>(),
        want.difference(&last).collect::<Vec<_>>()
    );

    // CSV and table carry the same findings with their ids.
    let csv = audit(&moto, "csv");
    assert!(
        csv.lines()
            .any(|l| l.contains("bedrock_key_long_lived") && l.contains(&ids(1)[0])),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.contains(",role_unused,never-used-old,")),
        "{csv}"
    );
    let table = audit(&moto, "table");
    assert!(
        table
            .lines()
            .any(|l| l.contains("service_credential_too_old") && l.contains(&ids(4)[0])),
        "{table}"
    );
    assert!(table.contains("role_unused"), "{table}");

    // The credential view lists every kind, and filters by it.
    let view = |query: &str| -> Value {
        let (status, body) = exporter.get(&format!("/keys.json{query}"));
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    };
    let service = view(&format!("?account={PROD}&kind=service_credential"));
    assert_eq!(service["total"], 8);
    let row = service["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == ids(1)[0].as_str())
        .unwrap();
    assert_eq!(row["service"], BEDROCK);
    assert_eq!(row["user"], "ml-batch");
    assert!(row["idle_days"].is_null(), "IAM records no use: {row}");
    assert!(row["expires"].is_string(), "{row}");
    let roles = view(&format!("?account={PROD}&kind=role"));
    assert_eq!(roles["total"], 6);
    let ssh = view(&format!(
        "?account={PROD}&kind=ssh_public_key&status=Active"
    ));
    assert_eq!(ssh["total"], 2);
    assert_eq!(ssh["keys"][0]["id"], ssh_ids[0].as_str(), "oldest first");
    assert!(ssh["keys"][0]["rotate_by"].is_string());
    let all = view(&format!("?account={LAB}"));
    let kinds: BTreeSet<&str> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["role", "service_credential"]));
    let (_, html) = exporter.get("/keys?kind=role");
    assert!(html.contains("<option selected>role</option>"), "{html}");
    assert!(html.contains("/aws-service-role/support.amazonaws.com/AWSServiceRoleForSupport"));
    assert!(!html.contains(&ids(0)[0]), "filtered to roles");
    drop(lab);
}

#[test]
fn a_denied_listing_leaves_that_kind_absent_in_that_account_and_the_rest_exact() {
    let moto = Moto::start();
    for account in [PROD, LAB] {
        moto.post(
            "/_launcher/seed",
            json!({"account": account, "users": [
                {"name": "git-user", "keys": [{}],
                 "service_credentials": [credential(CODECOMMIT, 100.0, "Active", None)]},
            ]}),
        );
        moto.post(
            "/_launcher/roles",
            json!({"account": account, "roles": [role("r", "/", 10.0, None)]}),
        );
    }
    moto.faults(json!([
        {"kind": "access_denied", "operation": "ListServiceSpecificCredentials", "account": LAB},
    ]));
    let exporter = Exporter::start(&moto, CONFIG);
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape();

    let of = |name: &str, account: &str| m.find(name, &[("account_id", account)]).len();
    let created = "aws_iam_service_credential_created_timestamp_seconds";
    assert_eq!(of(created, PROD), 1);
    assert_eq!(of(created, LAB), 0, "not read: absent");
    for account in [PROD, LAB] {
        assert_eq!(of("aws_iam_access_key_age_seconds", account), 1);
        assert_eq!(of("aws_iam_role_idle_seconds", account), 1);
        assert_eq!(
            m.get("iam_key_exporter_account_up", &[("account_id", account)]),
            Some(1.0)
        );
    }
    let coverage = |account: &str| {
        m.get(
            "iam_key_exporter_account_coverage",
            &[("account_id", account), ("kind", "service_credentials")],
        )
    };
    assert_eq!(coverage(PROD), Some(1.0));
    assert_eq!(coverage(LAB), Some(0.0));
    let errors = m
        .get(
            "iam_key_exporter_refresh_errors_total",
            &[
                ("account_id", LAB),
                ("stage", "list_service_specific_credentials"),
            ],
        )
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "the error is counted by stage");
    let (_, page) = exporter.get("/");
    assert!(page.contains("service-specific credentials"), "{page}");
    assert!(
        page.contains("AccessDenied (list_service_specific_credentials)"),
        "{page}"
    );

    let prometheus = Prometheus::start_to(
        &[("iam-key-exporter", &[exporter.address()])],
        &[],
        &ShippedRules::load().with_for_zero(),
    );
    // One alert per account (the api source lacks root and MFA in both); the lab's names
    // the service-specific credentials too.
    let description = |account: &str| {
        prometheus
            .alerts()
            .into_iter()
            .find(|a| {
                a["labels"]["alertname"] == "IAMKeyExporterCoverageMissing"
                    && a["labels"]["account_id"] == account
                    && a["state"] == "firing"
            })
            .map(|a| {
                a["annotations"]["description"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
    };
    let lab = wait_for_or(Duration::from_secs(60), || description(LAB))
        .expect("IAMKeyExporterCoverageMissing for the lab account");
    assert!(
        lab.contains("does not cover console_password, root, service_credentials, user_mfa:"),
        "{lab}"
    );
    let prod = description(PROD).expect("the api source lacks root and MFA");
    assert!(
        prod.contains("does not cover console_password, root, user_mfa:"),
        "{prod}"
    );
}

#[test]
fn ssh_keys_and_roles_are_read_again_only_at_their_interval() {
    let moto = Moto::start();
    let ssh = |age: f64, status: &str| json!({"status": status, "upload_date": days_ago(age).1});
    let seeded = moto.post(
        "/_launcher/seed",
        json!({"account": PROD, "users": [
            {"name": "git-old", "ssh_keys": [ssh(200.0, "Active"), ssh(300.0, "Inactive")]},
            {"name": "git-new", "ssh_keys": [ssh(5.0, "Active")]},
            {"name": "no-keys"},
        ]}),
    );
    let old_key = seeded["users"][0]["ssh_keys"][0]
        .as_str()
        .unwrap()
        .to_string();
    moto.post(
        "/_launcher/roles",
        json!({"account": PROD, "roles": [role("first", "/", 10.0, None)]}),
    );
    // Without tag exemptions nothing else needs GetAccountAuthorizationDetails: its calls
    // are the roles' reads.
    let config = format!(
        "refresh_interval: 1s\nexemptions: {{tag: \"\"}}\nread: {{ssh_public_keys: true, ssh_public_keys_interval: 1h, roles_interval: 1h}}\naccounts:\n  - {{id: \"{PROD}\"}}\n"
    );
    let exporter = Exporter::start(&moto, &config);
    exporter.wait_ready(Duration::from_secs(30));
    let uploaded = "aws_iam_ssh_public_key_uploaded_timestamp_seconds";
    let m = exporter.scrape();
    assert_eq!(m.find(uploaded, &[]).len(), 3);
    let age = m
        .get(
            "aws_iam_ssh_public_key_age_seconds",
            &[("ssh_key_id", &old_key), ("status", "Active")],
        )
        .unwrap();
    assert!((age / DAY - 200.0).abs() < 1.0, "{age}");
    assert_eq!(
        moto.count(PROD, "ListSSHPublicKeys"),
        3,
        "one call per user"
    );

    // Later refreshes read only users not seen before, and forget deleted ones.
    moto.post(
        "/_launcher/seed",
        json!({"account": PROD, "users": [{"name": "git-later", "ssh_keys": [ssh(1.0, "Active")]}]}),
    );
    moto.post(
        "/_launcher/delete_user",
        json!({"account": PROD, "user": "git-new"}),
    );
    let m = exporter.scrape_until("the new user's key", Duration::from_secs(30), |m| {
        !m.find(uploaded, &[("user", "git-later")]).is_empty()
            && m.find(uploaded, &[("user", "git-new")]).is_empty()
    });
    assert_eq!(m.find(uploaded, &[]).len(), 3);
    std::thread::sleep(Duration::from_secs(3)); // a few more 1s refreshes
    assert_eq!(
        moto.count(PROD, "ListSSHPublicKeys"),
        4,
        "3 users at first, then only the new one, within the interval"
    );
    let refreshes = moto.count(PROD, "ListUsers");
    assert!(refreshes >= 4, "several refreshes happened: {refreshes}");
    // The roles were read once: a role made since shows at the next interval, not before.
    moto.post(
        "/_launcher/roles",
        json!({"account": PROD, "roles": [role("second", "/", 1.0, None)]}),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(moto.count(PROD, "GetAccountAuthorizationDetails"), 1);
    let m = exporter.scrape();
    let roles: Vec<&str> = m
        .find("aws_iam_role_info", &[])
        .iter()
        .map(|s| s.labels["role"].as_str())
        .collect();
    assert_eq!(
        roles,
        ["first"],
        "the last read stands within roles_interval"
    );

    // The audit and the view.
    let out = exporter_command(&moto)
        .arg(format!("--config.file={}", exporter.config.display()))
        .args(["audit", "--format", "json"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings: Vec<&Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "ssh_key_too_old")
        .collect();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["credential_id"], old_key.as_str());
    let (_, body) = exporter.get("/keys.json?kind=ssh_public_key");
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["total"], 3);
    assert_eq!(view["keys"][0]["id"], seeded["users"][0]["ssh_keys"][1]);
}
