//! The real exporter binary against moto (through tests/moto/launcher.py): sessions, the
//! paginated scan, failure isolation, exact values, and the HTTP endpoints.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use serde_json::json;

const A: &str = "111111111111";
const B: &str = "222222222222";
/// The account moto gives the base (non-assumed) credentials.
const BASE: &str = "123456789012";

const KEY_CREATED: &str = "aws_iam_access_key_created_timestamp_seconds";
const KEY_AGE: &str = "aws_iam_access_key_age_seconds";
const KEY_LAST_USED: &str = "aws_iam_access_key_last_used_timestamp_seconds";
const KEY_IDLE: &str = "aws_iam_access_key_idle_seconds";
const KEY_INFO: &str = "aws_iam_access_key_last_used_info";
const USER_CREATED: &str = "aws_iam_user_created_timestamp_seconds";
const UP: &str = "iam_key_exporter_account_up";

fn key(m: &Metrics, name: &str, id: &str) -> Option<f64> {
    m.get(name, &[("access_key_id", id)])
}

fn assert_near(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: got {got}, want {want} ± {tolerance}"
    );
}

#[test]
fn multi_account_sessions_exact_values_and_isolation() {
    let moto = Moto::start();
    let (c400, c400_iso) = days_ago(400.0);
    let (u100, u100_iso) = days_ago(100.0);
    let (c200, c200_iso) = days_ago(200.0);
    let (_, c500_iso) = days_ago(500.0);
    let (_, u300_iso) = days_ago(300.0);
    let a = moto.seed(
        A,
        json!([
            {"name": "alice", "keys": [
                {"create_date": c400_iso, "last_used": {"date": u100_iso, "service": "s3", "region": "eu-west-1"}},
                {"create_date": c200_iso},
            ]},
            {"name": "bob", "keys": [
                {"create_date": c500_iso, "status": "Inactive",
                 "last_used": {"date": u300_iso, "service": "ec2", "region": "us-east-1"}},
            ]},
        ]),
    );
    moto.seed(B, json!([{"name": "carol", "keys": [{}]}]));
    let base = moto.seed(BASE, json!([{"name": "dave", "keys": [{}]}]));
    moto.faults(json!([{"kind": "access_denied", "operation": "AssumeRole", "account": B}]));

    let exporter = Exporter::start(
        &moto,
        &format!(
            r#"
refresh_interval: 1s
sts: {{session_duration: 15m}}
accounts:
  - {{id: "{A}", name: production, labels: {{team: platform}}}}
  - {{id: "{B}", name: staging}}
  - {{id: "{BASE}", name: tooling, assume_role: false}}
"#
        ),
    );
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape_until("the AWS identity", Duration::from_secs(30), |m| {
        !m.find("iam_key_exporter_aws_identity_info", &[]).is_empty()
    });
    let now = now();
    promtool_check_metrics(&m.raw)
        .unwrap_or_else(|e| panic!("promtool check metrics: {e}\n{}", m.raw));

    // Who the exporter is to AWS: shown so that member roles can be made to trust it.
    let identity = m.find(
        "iam_key_exporter_aws_identity_info",
        &[("account_id", BASE)],
    );
    assert_eq!(identity.len(), 1, "{}", m.raw);
    let arn = identity[0].labels["arn"].clone();
    assert!(arn.starts_with(&format!("arn:aws:sts::{BASE}:")), "{arn}");
    assert!(
        exporter.log().contains(&format!("arn={arn}")),
        "{}",
        exporter.log()
    );
    assert!(exporter
        .get("/")
        .1
        .contains(&format!("AWS identity: <code>{arn}</code>")));

    // Exact values from IAM, ages against now.
    let (old, never, inactive) = (&a[0][0], &a[0][1], &a[1][0]);
    assert_eq!(key(&m, KEY_CREATED, old), Some(c400));
    assert_eq!(key(&m, KEY_LAST_USED, old), Some(u100));
    assert_near("age", key(&m, KEY_AGE, old).unwrap(), now - c400, 30.0);
    assert_near("idle", key(&m, KEY_IDLE, old).unwrap(), now - u100, 30.0);
    let info = m.find(KEY_INFO, &[("access_key_id", old)]);
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].labels["service"], "s3");
    assert_eq!(info[0].labels["region"], "eu-west-1");
    assert_eq!(info[0].labels["user"], "alice");
    assert_eq!(info[0].labels["account_name"], "production");
    // Never used: no last-used series, idle counts from creation.
    assert_eq!(key(&m, KEY_CREATED, never), Some(c200));
    assert_eq!(key(&m, KEY_LAST_USED, never), None);
    assert!(m.find(KEY_INFO, &[("access_key_id", never)]).is_empty());
    assert_near(
        "idle of never-used key",
        key(&m, KEY_IDLE, never).unwrap(),
        now - c200,
        30.0,
    );
    let status =
        |id: &str| m.find(KEY_CREATED, &[("access_key_id", id)])[0].labels["status"].clone();
    assert_eq!(status(inactive), "Inactive");
    assert_eq!(status(old), "Active");
    assert_eq!(m.find(USER_CREATED, &[("account_id", A)]).len(), 2);

    // The denied account is down with its error code and shows no key data; the others are
    // unaffected.
    assert_eq!(m.get(UP, &[("account_id", A)]), Some(1.0));
    assert_eq!(m.get(UP, &[("account_id", B)]), Some(0.0));
    assert_eq!(m.get(UP, &[("account_id", BASE)]), Some(1.0));
    let errors = m.get(
        "iam_key_exporter_refresh_errors_total",
        &[
            ("account_id", B),
            ("stage", "assume_role"),
            ("code", "AccessDenied"),
        ],
    );
    assert!(
        errors.unwrap_or(0.0) >= 1.0,
        "no AccessDenied error counted for {B}"
    );
    assert!(m.find(KEY_CREATED, &[("account_id", B)]).is_empty());
    assert!(
        key(&m, KEY_CREATED, &base[0][0]).is_some(),
        "the base-credentials account is read"
    );
    assert_eq!(
        m.get("aws_iam_account_info", &[("account_id", A)]),
        Some(1.0),
        "account info with custom labels"
    );
    assert_eq!(
        m.find("aws_iam_account_info", &[("team", "platform")])
            .len(),
        1
    );

    // Sessions: expiry exported for assumed roles only, and reused across refreshes.
    let expiry = m.get(
        "iam_key_exporter_session_expiry_timestamp_seconds",
        &[("account_id", A)],
    );
    assert_near("session expiry", expiry.unwrap(), now + 900.0, 60.0);
    assert_eq!(
        m.get(
            "iam_key_exporter_session_expiry_timestamp_seconds",
            &[("account_id", BASE)]
        ),
        None
    );
    // Two more refreshes of A (counted by moto as they start), then one seen to finish.
    let list_users_before = moto.count(A, "ListUsers");
    wait_for(
        "A to be refreshed twice more",
        Duration::from_secs(20),
        || (moto.count(A, "ListUsers") >= list_users_before + 2).then_some(()),
    );
    let m = exporter.next_refresh(A, Duration::from_secs(20));
    assert_eq!(moto.count(A, "AssumeRole"), 1, "the session was not reused");
    assert_eq!(
        m.get(
            "iam_key_exporter_assume_role_total",
            &[("account_id", A), ("outcome", "ok")]
        ),
        Some(1.0)
    );

    // The landing page says which account is down and why.
    let (status, page) = exporter.get("/");
    assert_eq!(status, 200);
    assert!(
        page.contains("production") && page.contains("AccessDenied"),
        "{page}"
    );

    // gzip when asked for, the same series as plain text.
    let mut resp = ureq::get(&format!("{}/metrics", exporter.url))
        .header("Accept-Encoding", "gzip")
        .call()
        .unwrap();
    assert_eq!(resp.headers().get("content-encoding").unwrap(), "gzip");
    let mut compressed = Vec::new();
    resp.body_mut()
        .as_reader()
        .read_to_end(&mut compressed)
        .unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .unwrap();
    let unzipped = Metrics::parse(&text);
    assert_eq!(
        unzipped.find(KEY_CREATED, &[]).len(),
        m.find(KEY_CREATED, &[]).len()
    );

    let (took, status) = exporter.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
}

#[test]
fn deletions_and_deactivations_show_on_the_next_refresh() {
    let moto = Moto::start();
    let keys = moto.seed(
        A,
        json!([
            {"name": "u1", "keys": [{}, {}]},
            {"name": "u2", "keys": [{}]},
            {"name": "u3", "keys": [{}]},
        ]),
    );
    let exporter = Exporter::start(
        &moto,
        &format!("refresh_interval: 1s\naccounts:\n  - id: \"{A}\"\n"),
    );
    exporter.wait_ready(Duration::from_secs(30));
    assert_eq!(exporter.scrape().find(KEY_CREATED, &[]).len(), 4);

    moto.post(
        "/_launcher/delete_key",
        json!({"account": A, "user": "u1", "access_key_id": keys[0][0]}),
    );
    moto.post(
        "/_launcher/key",
        json!({"account": A, "user": "u1", "access_key_id": keys[0][1], "status": "Inactive"}),
    );
    moto.post(
        "/_launcher/delete_user",
        json!({"account": A, "user": "u2"}),
    );
    let m = exporter.scrape_until("the changes to appear", Duration::from_secs(20), |m| {
        m.find(KEY_CREATED, &[]).len() == 2
    });
    assert_eq!(
        key(&m, KEY_CREATED, &keys[0][0]),
        None,
        "deleted key still shown"
    );
    assert!(
        m.find(USER_CREATED, &[("user", "u2")]).is_empty(),
        "deleted user still shown"
    );
    assert_eq!(
        key(&m, KEY_CREATED, &keys[1][0]),
        None,
        "deleted user's key still shown"
    );
    let deactivated = m.find(KEY_CREATED, &[("access_key_id", &keys[0][1])]);
    assert_eq!(deactivated.len(), 1);
    assert_eq!(deactivated[0].labels["status"], "Inactive");
    assert!(key(&m, KEY_CREATED, &keys[2][0]).is_some());
}

#[test]
fn large_account_is_read_in_full_with_the_minimum_of_calls() {
    let moto = Moto::start();
    // 2,500 users, every tenth with a key: the launcher pages ListUsers like AWS
    // (1000, a short page of 500 with IsTruncated still true, then 1000).
    let users: Vec<_> = (0..2500)
        .map(|i| {
            let keys = if i % 10 == 0 { json!([{}]) } else { json!([]) };
            json!({"name": format!("user-{i:05}"), "keys": keys})
        })
        .collect();
    moto.seed(A, json!(users));
    moto.post("/_launcher/counts/reset", json!({}));

    // Calls, not pacing, are what this counts: the pace set well above moto's own speed.
    let exporter = Exporter::start(
        &moto,
        &format!(
            "refresh_interval: 1h\naws: {{requests_per_second: 1000}}\naccounts:\n  - id: \"{A}\"\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(300));
    let m = exporter.scrape();
    assert_eq!(m.get(UP, &[("account_id", A)]), Some(1.0));

    let users = m.find(USER_CREATED, &[("account_id", A)]);
    let names: std::collections::BTreeSet<_> =
        users.iter().map(|s| s.labels["user"].clone()).collect();
    assert_eq!(users.len(), 2500, "every user exactly once");
    assert_eq!(names.len(), 2500);
    assert!(names.contains("user-00000") && names.contains("user-02499"));
    assert_eq!(m.find(KEY_CREATED, &[("account_id", A)]).len(), 250);

    // ceil(2500 / 1000) = 3 pages, one ListAccessKeys per user, one GetAccessKeyLastUsed per
    // key, one AssumeRole.
    assert_eq!(moto.count(A, "ListUsers"), 3);
    assert_eq!(moto.count(A, "ListAccessKeys"), 2500);
    assert_eq!(moto.count(A, "GetAccessKeyLastUsed"), 250);
    assert_eq!(moto.count(A, "AssumeRole"), 1);
    let ok = |op: &str| {
        m.get(
            "iam_key_exporter_aws_requests_total",
            &[("account_id", A), ("operation", op), ("outcome", "ok")],
        )
    };
    assert_eq!(ok("ListUsers"), Some(3.0));
    assert_eq!(ok("ListAccessKeys"), Some(2500.0));
}

#[test]
fn a_throttling_burst_is_retried_to_complete_data() {
    let moto = Moto::start();
    moto.seed(A, users("u", 20, 1));
    moto.faults(json!([
        {"kind": "throttle", "operation": "ListUsers", "account": A, "count": 2},
        {"kind": "throttle", "operation": "ListAccessKeys", "account": A, "count": 8},
        {"kind": "throttle", "operation": "GetAccessKeyLastUsed", "account": A, "count": 6},
        {"kind": "error500", "operation": "ListAccessKeys", "account": A, "count": 2},
    ]));
    let exporter = Exporter::start(
        &moto,
        &format!("refresh_interval: 1h\naws: {{max_backoff: 2s}}\naccounts:\n  - id: \"{A}\"\n"),
    );
    exporter.wait_ready(Duration::from_secs(120));
    let m = exporter.scrape();
    assert_eq!(m.get(UP, &[("account_id", A)]), Some(1.0), "{}", m.raw);
    assert_eq!(m.find(KEY_CREATED, &[("account_id", A)]).len(), 20);
    let count = |outcome: &str| -> f64 {
        m.find(
            "iam_key_exporter_aws_requests_total",
            &[("account_id", A), ("outcome", outcome)],
        )
        .iter()
        .map(|s| s.value)
        .sum()
    };
    assert_eq!(count("throttled"), 16.0);
    assert_eq!(count("error"), 2.0);
    assert!(m
        .find(
            "iam_key_exporter_refresh_errors_total",
            &[("account_id", A)]
        )
        .is_empty());
}

#[test]
fn a_long_throttling_burst_slows_the_account_down_instead_of_failing_it() {
    // 30 throttles in a row on one operation: more than the SDK's 6 attempts for any call,
    // which used to fail the refresh after a few seconds.
    let moto = Moto::start();
    moto.seed(A, users("u", 10, 1));
    moto.faults(json!([
        {"kind": "throttle", "operation": "ListAccessKeys", "account": A, "count": 30},
    ]));
    let exporter = Exporter::start(
        &moto,
        &format!(
            "refresh_interval: 1h\naws: {{requests_per_second: 20}}\naccounts:\n  - id: \"{A}\"\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(120));
    let m = exporter.scrape();
    assert_eq!(m.get(UP, &[("account_id", A)]), Some(1.0), "{}", m.raw);
    assert_eq!(m.find(KEY_CREATED, &[("account_id", A)]).len(), 10);
    assert_eq!(
        m.get(
            "iam_key_exporter_aws_requests_total",
            &[
                ("account_id", A),
                ("operation", "ListAccessKeys"),
                ("outcome", "throttled")
            ]
        ),
        Some(30.0)
    );
    // The pace came down from its 20 requests a second and has not climbed all the way back.
    let rate = m
        .get("iam_key_exporter_aws_request_rate", &[("account_id", A)])
        .unwrap();
    assert!((0.5..20.0).contains(&rate), "{rate}");
}

#[test]
fn a_stalled_endpoint_times_out_without_holding_up_other_accounts() {
    let moto = Moto::start();
    moto.seed(A, json!([{"name": "stuck", "keys": [{}]}]));
    moto.seed(B, json!([{"name": "fine", "keys": [{}]}]));
    moto.faults(
        json!([{"kind": "stall", "operation": "ListUsers", "account": A, "delay_seconds": 600}]),
    );
    let exporter = Exporter::start(
        &moto,
        &format!(
            r#"
refresh_interval: 1h
concurrency: 2
aws: {{attempt_timeout: 4s, operation_timeout: 10s, max_attempts: 2}}
accounts:
  - {{id: "{A}", name: stalled}}
  - {{id: "{B}", name: healthy}}
"#
        ),
    );
    // B's data is served while A's first refresh is still hanging.
    let m = exporter.scrape_until("B to be up", Duration::from_secs(30), |m| {
        m.get(UP, &[("account_id", B)]) == Some(1.0)
    });
    assert_eq!(m.find(KEY_CREATED, &[("account_id", B)]).len(), 1);
    let (ready, _) = exporter.get("/-/ready");
    assert_eq!(
        ready, 503,
        "A should still be in its first, stalled refresh"
    );

    // Then A's call times out: A is down with code Timeout, and the exporter is ready.
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape();
    assert_eq!(m.get(UP, &[("account_id", A)]), Some(0.0));
    let timeouts = m.get(
        "iam_key_exporter_refresh_errors_total",
        &[
            ("account_id", A),
            ("stage", "list_users"),
            ("code", "Timeout"),
        ],
    );
    assert_eq!(timeouts, Some(1.0), "{}", m.raw);
    assert_eq!(m.get(UP, &[("account_id", B)]), Some(1.0));
}

#[test]
fn sessions_are_renewed_before_they_expire() {
    let moto = Moto::start();
    moto.seed(A, json!([{"name": "u", "keys": [{}]}]));
    // With renew_before 2s short of the duration, each session counts as due for renewal
    // 2s after it was opened.
    let exporter = Exporter::start(
        &moto,
        &format!(
            "refresh_interval: 1s\nsts: {{session_duration: 15m, renew_before: 14m58s}}\naccounts:\n  - id: \"{A}\"\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(30));
    let first = exporter
        .scrape()
        .get(
            "iam_key_exporter_session_expiry_timestamp_seconds",
            &[("account_id", A)],
        )
        .unwrap();
    let m = exporter.scrape_until("a renewed session", Duration::from_secs(30), |m| {
        m.get(
            "iam_key_exporter_session_expiry_timestamp_seconds",
            &[("account_id", A)],
        )
        .is_some_and(|e| e > first)
    });
    assert!(moto.count(A, "AssumeRole") >= 2);
    assert!(
        m.get(
            "iam_key_exporter_assume_role_total",
            &[("account_id", A), ("outcome", "ok")]
        )
        .unwrap()
            >= 2.0
    );
    assert_eq!(m.get(UP, &[("account_id", A)]), Some(1.0));
}

#[test]
fn reload_keeps_the_running_config_on_a_bad_file() {
    let moto = Moto::start();
    moto.seed(A, json!([{"name": "u", "keys": [{}]}]));
    moto.seed(B, json!([{"name": "v", "keys": [{}]}]));
    let exporter = Exporter::start(&moto, &format!("accounts:\n  - id: \"{A}\"\n"));
    exporter.wait_ready(Duration::from_secs(30));

    std::fs::write(&exporter.config, "accounts:\n  - id: \"12\"\n").unwrap();
    let mut resp = ureq::post(&format!("{}/-/reload", exporter.url))
        .config()
        .http_status_as_error(false)
        .build()
        .send_empty()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    assert!(resp
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("12 digits"));
    let m = exporter.scrape();
    assert_eq!(
        m.get("iam_key_exporter_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(
        m.get(UP, &[("account_id", A)]),
        Some(1.0),
        "running config lost"
    );

    let reload = |config: String| {
        std::fs::write(&exporter.config, config).unwrap();
        let resp = ureq::post(&format!("{}/-/reload", exporter.url))
            .send_empty()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    };
    // Adding B: A, unchanged, keeps its task and session (no new AssumeRole).
    reload(format!("accounts:\n  - id: \"{A}\"\n  - id: \"{B}\"\n"));
    let m = exporter.scrape_until("B after reload", Duration::from_secs(30), |m| {
        m.get(UP, &[("account_id", B)]) == Some(1.0)
    });
    assert_eq!(
        m.get("iam_key_exporter_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(
        moto.count(A, "AssumeRole"),
        1,
        "the reload re-assumed A's role"
    );

    // Relabelling A restarts its task, but its data stays on /metrics without a gap: the
    // scrape right after the reload answered already shows A's key, with the new label.
    reload(format!(
        "accounts:\n  - {{id: \"{A}\", labels: {{team: x}}}}\n  - id: \"{B}\"\n"
    ));
    let m = exporter.scrape();
    assert_eq!(
        m.find(KEY_CREATED, &[("account_id", A)]).len(),
        1,
        "A's data was dropped"
    );
    assert_eq!(
        m.find("aws_iam_account_info", &[("account_id", A), ("team", "x")])
            .len(),
        1
    );

    // Renaming B: its counters follow the new name; none stay frozen under the old one.
    let requests = "iam_key_exporter_aws_requests_total";
    assert!(!m.find(requests, &[("account_name", B)]).is_empty());
    reload(format!(
        "accounts:\n  - {{id: \"{A}\", labels: {{team: x}}}}\n  - {{id: \"{B}\", name: beta2}}\n"
    ));
    let m = exporter.scrape_until(
        "B's counters under its new name",
        Duration::from_secs(30),
        |m| !m.find(requests, &[("account_name", "beta2")]).is_empty(),
    );
    for s in m
        .samples
        .iter()
        .filter(|s| s.name.starts_with("iam_key_exporter_"))
    {
        assert_ne!(
            s.labels.get("account_name").map(String::as_str),
            Some(B),
            "a series kept the old name: {s:?}"
        );
    }

    // Removing A: its series and its counters go.
    reload(format!("accounts:\n  - {{id: \"{B}\", name: beta2}}\n"));
    let m = exporter.scrape_until("A gone", Duration::from_secs(30), |m| {
        m.get(UP, &[("account_id", A)]).is_none()
    });
    assert!(m.find(KEY_CREATED, &[("account_id", A)]).is_empty());
    assert!(m
        .find("iam_key_exporter_aws_requests_total", &[("account_id", A)])
        .is_empty());
    assert_eq!(m.get(UP, &[("account_id", B)]), Some(1.0));
}

#[test]
fn once_mode_writes_the_metrics_file_atomically() {
    let moto = Moto::start();
    moto.seed(A, json!([{"name": "u", "keys": [{}]}]));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, format!("accounts:\n  - id: \"{A}\"\n")).unwrap();
    let out = dir.path().join("iam.prom");
    let status = exporter_command(&moto)
        .arg("once")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--output={}", out.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let m = Metrics::parse(&read(&out));
    assert_eq!(m.find(KEY_CREATED, &[("account_id", A)]).len(), 1);
    // The file outlives the process: no process_* (node_exporter has its own) or reload state.
    assert!(!m.raw.contains("process_") && !m.raw.contains("config_last_reload"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "temporary file left behind"
    );
    promtool_check_metrics(&m.raw).unwrap();
}

#[test]
fn users_and_keys_deleted_during_a_scan_are_skipped() {
    let moto = Moto::start();
    moto.seed(A, users("u", 6, 1));
    // IAM answers NoSuchEntity for a user deleted after ListUsers listed it, and for a key
    // deleted after ListAccessKeys listed it.
    moto.faults(json!([
        {"kind": "no_such_entity", "operation": "ListAccessKeys", "account": A, "count": 1},
        {"kind": "no_such_entity", "operation": "GetAccessKeyLastUsed", "account": A, "count": 1},
    ]));
    let exporter = Exporter::start(
        &moto,
        &format!("refresh_interval: 1h\naccounts:\n  - id: \"{A}\"\n"),
    );
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape();
    assert_eq!(
        m.get(UP, &[("account_id", A)]),
        Some(1.0),
        "the account failed: {}",
        m.raw
    );
    assert_eq!(
        m.find(KEY_CREATED, &[("account_id", A)]).len(),
        4,
        "two keys skipped, four kept"
    );
    assert_eq!(
        m.find(USER_CREATED, &[("account_id", A)]).len(),
        5,
        "the vanished user is gone"
    );
    assert!(m
        .find("iam_key_exporter_refresh_errors_total", &[])
        .is_empty());
}

#[test]
fn a_refresh_that_runs_too_long_is_abandoned_and_frees_its_slot() {
    let moto = Moto::start();
    moto.seed(A, users("slow", 10, 1));
    moto.seed(B, users("ok", 1, 1));
    // Every ListAccessKeys of A hangs; each call alone is within its own timeout (30s), so
    // only the refresh deadline ends A's scan. With concurrency 1, B waits for that slot.
    moto.faults(json!([
        {"kind": "stall", "operation": "ListAccessKeys", "account": A, "delay_seconds": 600}
    ]));
    let exporter = Exporter::start(
        &moto,
        &format!(
            "refresh_interval: 1h\nrefresh_timeout: 3s\nconcurrency: 1\n\
             aws: {{attempt_timeout: 30s, operation_timeout: 60s}}\n\
             accounts:\n  - {{id: \"{A}\"}}\n  - {{id: \"{B}\"}}\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape();
    assert_eq!(
        m.get(
            "iam_key_exporter_refresh_errors_total",
            &[
                ("account_id", A),
                ("stage", "refresh"),
                ("code", "RefreshTimeout")
            ]
        ),
        Some(1.0),
        "{}",
        m.raw
    );
    assert_eq!(m.get(UP, &[("account_id", A)]), Some(0.0));
    assert_eq!(m.get(UP, &[("account_id", B)]), Some(1.0));
    assert_eq!(m.find(KEY_CREATED, &[("account_id", B)]).len(), 1);
}

/// What an account's data cannot show is said, not left to look like "no problem": the
/// `api` source sees neither the root user nor MFA nor console passwords, and users' tags
/// that could not be read are missing; the metric and `/` say so per account.
#[test]
fn coverage_says_what_each_account_cannot_see() {
    let moto = Moto::start();
    moto.seed(A, users("a", 1, 1));
    moto.seed(B, users("b", 1, 1));
    moto.faults(json!([{"kind": "access_denied", "operation": "GetAccountAuthorizationDetails", "account": B}]));
    let exporter = Exporter::start(
        &moto,
        &format!("accounts:\n  - {{id: \"{A}\", name: by-api}}\n  - {{id: \"{B}\", name: by-hybrid, source: hybrid}}\n"),
    );
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape();
    promtool_check_metrics(&m.raw).unwrap_or_else(|e| panic!("{e}"));
    let coverage = |account: &str, kind: &str| {
        m.get(
            "iam_key_exporter_account_coverage",
            &[("account_id", account), ("kind", kind)],
        )
    };
    for kind in ["root", "user_mfa", "console_password"] {
        assert_eq!(coverage(A, kind), Some(0.0), "api: {kind}");
        assert_eq!(coverage(B, kind), Some(1.0), "hybrid: {kind}");
    }
    assert_eq!(coverage(A, "user_tags"), Some(1.0));
    assert_eq!(coverage(B, "user_tags"), Some(0.0), "tags refused");
    assert_eq!(
        coverage(B, "roles"),
        Some(0.0),
        "the same call reads the roles"
    );
    assert_eq!(coverage(A, "roles"), Some(1.0));
    assert_eq!(
        m.get(UP, &[("account_id", B)]),
        Some(1.0),
        "the keys are still read"
    );

    let (_, page) = exporter.get("/");
    let row = |id: &str| {
        page.lines()
            .find(|l| l.starts_with(&format!("<tr><td>{id}</td>")))
            .unwrap_or_else(|| panic!("no row for {id}: {page}"))
            .to_string()
    };
    assert!(
        row(A).contains(
            "the root user, users' MFA, console passwords: not covered by this source (api)"
        ),
        "{}",
        row(A)
    );
    assert!(!row(A).contains("tags"), "{}", row(A));
    assert!(
        row(B).contains("users' tags, roles: reading them failed")
            && !row(B).contains("not covered by this source"),
        "{}",
        row(B)
    );
}

#[test]
fn no_secret_reaches_the_log_even_at_debug() {
    let moto = Moto::start();
    moto.seed(A, users("u", 2, 1));
    moto.faults(json!([{"kind": "access_denied", "operation": "AssumeRole", "account": B}]));
    let exporter = Exporter::spawn(
        &moto,
        &format!("refresh_interval: 1s\naccounts:\n  - {{id: \"{A}\"}}\n  - {{id: \"{B}\"}}\n  - {{id: \"{BASE}\", assume_role: false}}\n"),
        &["--log.level=debug"],
    );
    // Several refreshes, one failing AssumeRole, one session, base credentials.
    wait_for(
        "three refreshes of the account",
        Duration::from_secs(30),
        || {
            let text = exporter.log();
            (text.matches("account_id=111111111111").count() >= 3 && text.contains("AccessDenied"))
                .then_some(())
        },
    );
    let text = exporter.log();
    assert!(
        text.contains("assumed role"),
        "the debug log was not captured:\n{text}"
    );
    // The base secret the exporter was given.
    let base_secret = exporter_command(&moto)
        .get_envs()
        .find(|(k, _)| *k == "AWS_SECRET_ACCESS_KEY")
        .and_then(|(_, v)| v.map(|v| v.to_string_lossy().to_string()))
        .unwrap();
    assert!(
        !text.contains(&base_secret),
        "the secret access key is in the log"
    );
    for needle in [
        "SecretAccessKey",
        "secret_access_key",
        "SessionToken",
        "session_token",
        "X-Amz-Security-Token",
    ] {
        assert!(
            !text.to_lowercase().contains(&needle.to_lowercase()),
            "{needle} in the log:\n{text}"
        );
    }
}

#[test]
fn a_failing_account_keeps_its_data_until_max_staleness() {
    let moto = Moto::start();
    moto.seed(A, users("u", 2, 1));
    let exporter = Exporter::start(
        &moto,
        &format!(
            "refresh_interval: 1s\nrefresh_timeout: 5s\nmax_staleness: 8s\n\
             aws: {{attempt_timeout: 3s, operation_timeout: 4s, credential_report_timeout: 4s}}\n\
             accounts:\n  - id: \"{A}\"\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(30));
    assert_eq!(exporter.scrape().find(KEY_CREATED, &[]).len(), 2);
    moto.faults(json!([{"kind": "access_denied", "operation": "ListUsers", "account": A}]));
    // Down, but the last good keys are still shown...
    let m = exporter.scrape_until("A down", Duration::from_secs(10), |m| {
        m.get(UP, &[("account_id", A)]) == Some(0.0)
    });
    assert_eq!(
        m.find(KEY_CREATED, &[]).len(),
        2,
        "last good data dropped too early"
    );
    // ...until they are older than max_staleness.
    let m = exporter.scrape_until("stale data dropped", Duration::from_secs(20), |m| {
        m.find(KEY_CREATED, &[]).is_empty()
    });
    assert_eq!(m.get(UP, &[("account_id", A)]), Some(0.0));
    assert!(m
        .get(
            "iam_key_exporter_account_last_success_timestamp_seconds",
            &[("account_id", A)]
        )
        .is_some());
}

#[test]
fn a_changed_config_file_is_picked_up_without_a_signal() {
    // As after a ConfigMap update: the file changes, nobody sends SIGHUP or POSTs /-/reload.
    let moto = Moto::start();
    moto.seed(A, users("a", 1, 1));
    moto.seed(B, users("b", 2, 1));
    let exporter = Exporter::start_with(
        &moto,
        &format!("accounts:\n  - id: \"{A}\"\n"),
        &["--config.auto-reload-interval=1s"],
    );
    exporter.wait_ready(Duration::from_secs(30));
    replace(
        &exporter.config,
        format!("accounts:\n  - id: \"{A}\"\n  - id: \"{B}\"\n"),
    );
    let m = exporter.scrape_until(
        "B read after the file changed",
        Duration::from_secs(30),
        |m| m.find(KEY_CREATED, &[("account_id", B)]).len() == 2,
    );
    assert_eq!(
        m.get("iam_key_exporter_config_last_reload_successful", &[]),
        Some(1.0)
    );
    // A broken file is reported once and the running configuration stays.
    replace(&exporter.config, "accounts: [{id: \"1\"}]\n");
    let m = exporter.scrape_until("the failed reload", Duration::from_secs(30), |m| {
        m.get("iam_key_exporter_config_last_reload_successful", &[]) == Some(0.0)
    });
    assert_eq!(m.find(KEY_CREATED, &[("account_id", B)]).len(), 2);
    std::thread::sleep(Duration::from_secs(3));
    let failures = exporter.log().matches("reload failed").count();
    assert_eq!(failures, 1, "{}", exporter.log());
}

#[test]
fn the_key_view_lists_the_keys_of_the_metrics_oldest_first() {
    let moto = Moto::start();
    let (_, d300) = days_ago(300.0);
    let (_, d100) = days_ago(100.0);
    let (_, d10) = days_ago(10.0);
    moto.seed(
        A,
        json!([
            {"name": "ci", "tags": {"owner": "platform@example.com"},
             "keys": [{"create_date": d300}, {"create_date": d10, "status": "Inactive"}]},
            {"name": "break-glass", "tags": {"iam-key-exporter:exempt-until": "2099-01-31 emergency only"},
             "keys": [{"create_date": d100}]},
        ]),
    );
    moto.seed(B, users("b", 3, 1));
    let exporter = Exporter::start(
        &moto,
        &format!(
            "user_tags_as_labels: [owner]\naccounts:\n  - {{id: \"{A}\", name: alpha}}\n  - {{id: \"{B}\", name: beta}}\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape();
    let in_metrics: std::collections::BTreeSet<(String, String)> = m
        .find(KEY_CREATED, &[])
        .iter()
        .map(|s| {
            (
                s.labels["account_id"].clone(),
                s.labels["access_key_id"].clone(),
            )
        })
        .collect();

    let view = |query: &str| -> serde_json::Value {
        let (status, body) = exporter.get(&format!("/keys.json{query}"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let all = view("?limit=5000");
    assert_eq!(all["total"], 6);
    let keys = all["keys"].as_array().unwrap();
    let in_view: std::collections::BTreeSet<(String, String)> = keys
        .iter()
        .map(|k| {
            (
                k["account_id"].as_str().unwrap().into(),
                k["access_key_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(in_view, in_metrics, "/keys and /metrics list the same keys");
    let ages: Vec<u64> = keys
        .iter()
        .map(|k| k["age_days"].as_u64().unwrap())
        .collect();
    assert!(
        ages.windows(2).all(|w| w[0] >= w[1]),
        "oldest first: {ages:?}"
    );
    assert_eq!(keys[0]["user"], "ci");
    assert_eq!(keys[0]["owner"]["owner"], "platform@example.com");
    assert_eq!(keys[1]["user"], "break-glass");
    assert_eq!(keys[1]["exempt_until"], "2099-01-31");
    assert_eq!(keys[1]["exempt_reason"], "emergency only");

    assert_eq!(view(&format!("?account={B}"))["total"], 3);
    assert_eq!(view("?account=beta")["total"], 3, "by name too");
    let inactive = view("?status=Inactive");
    assert_eq!(inactive["total"], 1);
    assert_eq!(inactive["keys"][0]["status"], "Inactive");
    let second_page = view("?limit=2&offset=2");
    assert_eq!(second_page["keys"].as_array().unwrap().len(), 2);
    assert_eq!(second_page["keys"][0], keys[2]);

    let (status, page) = exporter.get("/keys?limit=2");
    assert_eq!(status, 200);
    assert!(
        page.contains("Showing 1 to 2 of 6 credentials, oldest first."),
        "{page}"
    );
    assert!(
        page.contains("href=\"/keys?offset=2&amp;limit=2\">Next</a>"),
        "{page}"
    );
    assert!(page.contains("owner: platform@example.com"), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external assets"
    );
    assert!(exporter.get("/").1.contains("href=\"/keys\""));
}

#[test]
fn overlapping_exemption_rules_are_one_series_ending_last() {
    let moto = Moto::start();
    moto.seed(
        A,
        json!([{"name": "break-glass-1", "keys": [{"access_key_id": "AKIABREAKGLASS000001", "create_date": days_ago(200.0).1}]}]),
    );
    // Two rules with one reason cover the user: one exemption, to the later end; another
    // reason is another exemption.
    let exporter = Exporter::start(
        &moto,
        &format!(
            r#"exemptions:
  rules:
    - {{account: "{A}", user: break-glass-*, reason: emergency access, until: 2098-06-30}}
    - {{account: "*", user: break-glass-1, reason: emergency access, until: 2099-06-30}}
    - {{account: "{A}", user: break-glass-1, reason: audited yearly, until: 2097-01-31}}
accounts:
  - {{id: "{A}"}}
"#
        ),
    );
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape();
    let series = m.find("aws_iam_exemption_until_timestamp_seconds", &[]);
    let mut got: Vec<(&str, f64)> = series
        .iter()
        .map(|s| (s.labels["reason"].as_str(), s.value))
        .collect();
    got.sort_by(|a, b| a.0.cmp(b.0));
    // The end of each `until` day, UTC.
    assert_eq!(
        got,
        [
            ("audited yearly", 4_010_515_200.0),
            ("emergency access", 4_086_547_200.0)
        ]
    );
    let (_, body) = exporter.get("/keys.json");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["keys"][0]["exempt_until"], "2099-06-30", "{view}");
}

#[test]
fn the_account_with_the_most_users_is_read_first() {
    const C: &str = "333333333333";
    let moto = Moto::start();
    // Listed smallest first: only their sizes can put the largest first.
    moto.seed(A, users("a", 5, 1));
    moto.seed(B, users("b", 60, 1));
    moto.seed(C, users("c", 150, 1));
    let exporter = Exporter::start(
        &moto,
        &format!(
            "concurrency: 1\naccounts:\n  - {{id: \"{A}\"}}\n  - {{id: \"{B}\"}}\n  - {{id: \"{C}\"}}\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(60));
    // One account at a time: the order they finished is the order they started.
    let order: Vec<String> = exporter
        .log()
        .lines()
        .filter(|l| l.contains("refreshed account"))
        .filter_map(|l| {
            let (_, rest) = l.split_once("account_id=")?;
            Some(
                rest.split_whitespace()
                    .next()?
                    .trim_matches('"')
                    .to_string(),
            )
        })
        .take(3)
        .collect();
    assert_eq!(order, [C, B, A], "largest first");
    assert_eq!(
        moto.count(C, "GetAccountSummary"),
        1,
        "asked once, before the first refresh"
    );
}

#[test]
fn a_failing_account_is_asked_its_size_once_not_at_every_refresh() {
    let moto = Moto::start();
    moto.faults(json!([{"kind": "access_denied", "operation": "AssumeRole", "account": B}]));
    let exporter = Exporter::start(
        &moto,
        &format!("refresh_interval: 1s\naccounts:\n  - {{id: \"{B}\"}}\n"),
    );
    let failed = |m: &common::Metrics| {
        m.get(
            "iam_key_exporter_refresh_errors_total",
            &[("account_id", B), ("stage", "assume_role")],
        )
        .unwrap_or(0.0)
    };
    let m = exporter.scrape_until("four failed refreshes", Duration::from_secs(30), |m| {
        failed(m) >= 4.0
    });
    // One AssumeRole per refresh, and one more for the size asked before the first: asking
    // again at every refresh of an account that never got a snapshot would double them.
    let refreshes = failed(&m) as u64;
    let assumed = moto.count(B, "AssumeRole");
    assert!(
        assumed <= refreshes + 2,
        "{assumed} AssumeRole calls for {refreshes} refreshes"
    );
}

/// When STS will not say who the exporter is, `/` says so with AWS's code and words, the log
/// names the code, and the accounts are read all the same.
#[test]
fn an_identity_sts_will_not_give_is_shown_with_its_reason() {
    let moto = Moto::start();
    moto.seed(A, users("u", 1, 1));
    moto.faults(json!([{"kind": "access_denied", "operation": "GetCallerIdentity"}]));
    let exporter = Exporter::start(
        &moto,
        &format!("refresh_interval: 1h\naccounts:\n  - id: \"{A}\"\n"),
    );
    exporter.wait_ready(Duration::from_secs(30));
    let shown = "AWS identity: <span class=\"down\">unknown</span>: AccessDenied: ";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let page = loop {
        let (_, page) = exporter.get("/");
        if page.contains(shown) || std::time::Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(page.contains(shown), "{page}");
    let log = exporter.log();
    assert!(
        log.contains("cannot tell which AWS identity") && log.contains("code=AccessDenied"),
        "{log}"
    );
    let m = exporter.scrape();
    assert!(m.find("iam_key_exporter_aws_identity_info", &[]).is_empty());
    assert_eq!(m.get(UP, &[("account_id", A)]), Some(1.0));
}
