//! The credential_report source against moto: the same users read through both sources give
//! the same per-key values, and the report costs a constant few calls per account.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::json;

const API: &str = "111111111111";
const REPORT: &str = "222222222222";
const KEY_CREATED: &str = "aws_iam_access_key_created_timestamp_seconds";
const KEY_LAST_USED: &str = "aws_iam_access_key_last_used_timestamp_seconds";

/// (user, status, created, last used) of every key of an account, sorted.
fn keys(m: &Metrics, account: &str) -> Vec<(String, String, f64, Option<f64>)> {
    let mut out: Vec<_> = m
        .find(KEY_CREATED, &[("account_id", account)])
        .iter()
        .map(|s| {
            let id = &s.labels["access_key_id"];
            let used = m.get(
                KEY_LAST_USED,
                &[
                    ("account_id", account),
                    ("access_key_id", id),
                    ("user", &s.labels["user"]),
                ],
            );
            (
                s.labels["user"].clone(),
                s.labels["status"].clone(),
                s.value,
                used,
            )
        })
        .collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

#[test]
fn both_sources_agree_on_the_same_users() {
    let moto = Moto::start();
    let (_, c300) = days_ago(300.0);
    let (_, u10) = days_ago(10.0);
    let (_, c100) = days_ago(100.0);
    let (_, c500) = days_ago(500.0);
    let (_, c20) = days_ago(20.0);
    let users = json!([
        {"name": "alice", "keys": [{"create_date": c300, "last_used": {"date": u10, "service": "s3", "region": "eu-west-1"}}]},
        {"name": "bob", "keys": [{"create_date": c100}]},
        {"name": "carol", "keys": [{"create_date": c500, "status": "Inactive"}]},
        {"name": "dave", "keys": []},
        {"name": "erin", "keys": [{"create_date": c500}, {"create_date": c20, "last_used": {"date": u10}}]},
    ]);
    moto.seed(API, users.clone());
    moto.seed(REPORT, users);

    let exporter = Exporter::start(
        &moto,
        &format!(
            "refresh_interval: 1h\naccounts:\n  - {{id: \"{API}\", name: via-api}}\n  - {{id: \"{REPORT}\", name: via-report, source: credential_report}}\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape();
    assert_eq!(
        m.get("iam_key_exporter_account_up", &[("account_id", REPORT)]),
        Some(1.0),
        "{}",
        m.raw
    );
    promtool_check_metrics(&m.raw).unwrap();

    let (api, report) = (keys(&m, API), keys(&m, REPORT));
    assert_eq!(api.len(), 5);
    assert_eq!(api, report, "the two sources disagree");

    // The report's slots name the keys; users match too, with MFA from the report only.
    let slots: Vec<_> = m
        .find(KEY_CREATED, &[("account_id", REPORT), ("user", "erin")])
        .iter()
        .map(|s| s.labels["access_key_id"].clone())
        .collect();
    assert_eq!(slots, ["key_1", "key_2"]);
    let users = |a: &str| {
        m.find(
            "aws_iam_user_created_timestamp_seconds",
            &[("account_id", a)],
        )
        .len()
    };
    assert_eq!((users(API), users(REPORT)), (5, 5));
    assert_eq!(
        m.find("aws_iam_user_mfa_active", &[("account_id", REPORT)])
            .len(),
        5
    );
    assert!(m
        .find("aws_iam_user_mfa_active", &[("account_id", API)])
        .is_empty());
    assert!(m
        .get(
            "aws_iam_credential_report_generated_timestamp_seconds",
            &[("account_id", REPORT)]
        )
        .is_some());
}

#[test]
fn the_report_costs_a_constant_few_calls_whatever_the_size() {
    let moto = Moto::start();
    let users: Vec<_> = (0..2500)
        .map(|i| json!({"name": format!("user-{i:05}"), "keys": if i % 2 == 0 { json!([{}]) } else { json!([]) }}))
        .collect();
    moto.seed(REPORT, json!(users));
    moto.post("/_launcher/counts/reset", json!({}));

    let exporter = Exporter::start(
        &moto,
        &format!(
            "refresh_interval: 2s\nsource: credential_report\naccounts:\n  - id: \"{REPORT}\"\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape();
    assert_eq!(
        m.find(
            "aws_iam_user_created_timestamp_seconds",
            &[("account_id", REPORT)]
        )
        .len(),
        2500
    );
    assert_eq!(m.find(KEY_CREATED, &[("account_id", REPORT)]).len(), 1250);

    let counts = || -> BTreeMap<String, u64> {
        serde_json::from_value(moto.get("/_launcher/counts")[REPORT].clone()).unwrap()
    };
    // First refresh: Generate (STARTED), Generate (COMPLETE), Get. Nothing per user.
    let first = counts();
    assert_eq!(first.get("GetCredentialReport"), Some(&1), "{first:?}");
    assert!(first["GenerateCredentialReport"] <= 2, "{first:?}");
    for op in ["ListUsers", "ListAccessKeys", "GetAccessKeyLastUsed"] {
        assert!(!first.contains_key(op), "{op} called: {first:?}");
    }
    // Later refreshes reuse the report AWS keeps for four hours: Generate (COMPLETE) + Get.
    exporter.next_refresh(REPORT, Duration::from_secs(30));
    let second = counts();
    assert_eq!(second["GetCredentialReport"], 2, "{second:?}");
    assert_eq!(
        second["GenerateCredentialReport"],
        first["GenerateCredentialReport"] + 1,
        "{second:?}"
    );
    assert_eq!(second["AssumeRole"], 1);
}

#[test]
fn a_malformed_report_fails_only_its_account() {
    let moto = Moto::start();
    // moto writes report rows without quoting, so a comma in a user name (legal in IAM)
    // gives a row with an extra column: a malformed report.
    moto.seed(REPORT, json!([{"name": "svc,legacy", "keys": [{}]}]));
    moto.seed(API, json!([{"name": "fine", "keys": [{}]}]));
    let exporter = Exporter::start(
        &moto,
        &format!("refresh_interval: 1h\naccounts:\n  - {{id: \"{API}\"}}\n  - {{id: \"{REPORT}\", source: credential_report}}\n"),
    );
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape();
    assert_eq!(
        m.get("iam_key_exporter_account_up", &[("account_id", REPORT)]),
        Some(0.0)
    );
    assert_eq!(
        m.get(
            "iam_key_exporter_refresh_errors_total",
            &[
                ("account_id", REPORT),
                ("stage", "parse_credential_report"),
                ("code", "MalformedReport")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get("iam_key_exporter_account_up", &[("account_id", API)]),
        Some(1.0)
    );
    let (_, page) = exporter.get("/");
    assert!(
        page.contains("row 2"),
        "the landing page should say where the report is broken: {page}"
    );
}

#[test]
fn root_keys_and_mfa_come_from_the_report() {
    let moto = Moto::start();
    moto.seed(REPORT, json!([{"name": "alice", "keys": [{}]}]));
    // AWS's report always has a <root_account> row; the launcher adds the one moto lacks.
    moto.post(
        "/_launcher/root",
        json!({"account": REPORT, "mfa_active": false, "access_key_1_active": true}),
    );
    let exporter = Exporter::start(
        &moto,
        &format!("refresh_interval: 1h\nsource: credential_report\naccounts:\n  - {{id: \"{REPORT}\", name: legacy}}\n"),
    );
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape();
    let root_key = |slot: &str| {
        m.get(
            "aws_iam_root_access_key_active",
            &[("account_id", REPORT), ("key", slot)],
        )
    };
    assert_eq!(root_key("1"), Some(1.0));
    assert_eq!(root_key("2"), Some(0.0));
    assert_eq!(
        m.get("aws_iam_root_mfa_active", &[("account_name", "legacy")]),
        Some(0.0)
    );
    // The root user is not an IAM user: no per-user or per-key series for it.
    assert!(m
        .find(
            "aws_iam_user_created_timestamp_seconds",
            &[("user", "<root_account>")]
        )
        .is_empty());
    assert_eq!(m.find(KEY_CREATED, &[("account_id", REPORT)]).len(), 1);
    let generated = m
        .get(
            "aws_iam_credential_report_generated_timestamp_seconds",
            &[("account_id", REPORT)],
        )
        .unwrap();
    assert!(
        (now() - generated).abs() < 120.0,
        "report generated at {generated}, now {}",
        now()
    );
    promtool_check_metrics(&m.raw).unwrap();
}

#[test]
fn the_report_errors_aws_answers_are_waited_out_or_reported() {
    let moto = Moto::start();
    moto.seed(REPORT, users("r", 2, 1));
    // Each answer AWS gives while a report is being made or replaced, once: the refresh
    // waits (with backoff) and still succeeds.
    moto.faults(json!([
        {"kind": "error", "status": 409, "code": "LimitExceeded", "operation": "GenerateCredentialReport", "account": REPORT, "count": 1},
        {"kind": "error", "status": 404, "code": "ReportInProgress", "operation": "GetCredentialReport", "account": REPORT, "count": 1},
        {"kind": "error", "status": 410, "code": "ReportExpired", "operation": "GetCredentialReport", "account": REPORT, "count": 1},
        {"kind": "error", "status": 410, "code": "ReportNotPresent", "operation": "GetCredentialReport", "account": REPORT, "count": 1},
    ]));
    let exporter = Exporter::start(
        &moto,
        &format!(
            "refresh_interval: 2s\nrefresh_timeout: 1m\naws: {{credential_report_timeout: 50s}}\n\
             accounts:\n  - {{id: \"{REPORT}\", source: credential_report}}\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape();
    assert_eq!(
        m.get("iam_key_exporter_account_up", &[("account_id", REPORT)]),
        Some(1.0),
        "{}",
        m.raw
    );
    assert_eq!(keys(&m, REPORT).len(), 2);
    assert!(moto.count(REPORT, "GetCredentialReport") >= 4);

    // A report that never comes ends in ReportTimeout; a refusal is reported with its code.
    moto.faults(json!([
        {"kind": "error", "status": 404, "code": "ReportInProgress", "operation": "GetCredentialReport", "account": REPORT},
    ]));
    std::fs::write(
        &exporter.config,
        format!(
            "refresh_interval: 2s\nrefresh_timeout: 1m\naws: {{credential_report_timeout: 3s}}\n\
             accounts:\n  - {{id: \"{REPORT}\", source: credential_report}}\n"
        ),
    )
    .unwrap();
    let reload = agent()
        .post(&format!("{}/-/reload", exporter.url))
        .send_empty()
        .unwrap();
    assert_eq!(reload.status().as_u16(), 200);
    let errors = "iam_key_exporter_refresh_errors_total";
    exporter.scrape_until("ReportTimeout", Duration::from_secs(30), |m| {
        m.get(
            errors,
            &[
                ("stage", "generate_credential_report"),
                ("code", "ReportTimeout"),
            ],
        )
        .is_some()
    });
    moto.post("/_launcher/faults/clear", json!({}));
    moto.faults(json!([
        {"kind": "access_denied", "operation": "GetCredentialReport", "account": REPORT},
    ]));
    let m = exporter.scrape_until("AccessDenied", Duration::from_secs(30), |m| {
        m.get(
            errors,
            &[("stage", "get_credential_report"), ("code", "AccessDenied")],
        )
        .is_some()
    });
    assert_eq!(
        m.get("iam_key_exporter_account_up", &[("account_id", REPORT)]),
        Some(0.0)
    );
}
