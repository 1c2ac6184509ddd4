//! The whole exposition of a fixed, seeded world compared with a golden file, as
//! node_exporter keeps `collector/fixtures/e2e-output.txt`: every metric, HELP text, label or
//! value change shows in review. Values that depend on when the test runs (ages, durations,
//! process figures, session expiries) are replaced by `<varies>`.
//!
//! After an intended change: `UPDATE_GOLDEN=1 cargo test --test golden`, then review the diff.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const MGMT: &str = "123456789012";
const PAYMENTS: &str = "210000000001";
const REPORTS: &str = "210000000002";
const LEGACY: &str = "310000000001";
/// Its role cannot be assumed: the failure series.
const DENIED: &str = "410000000001";

const GOLDEN: &str = "tests/fixtures/golden/metrics.prom";

/// Families whose values depend on the clock or the machine, not on the seeded world.
const VARIES: &[&str] = &[
    "aws_iam_access_key_age_seconds",
    "aws_iam_access_key_idle_seconds",
    "aws_iam_service_credential_age_seconds",
    "aws_iam_ssh_public_key_age_seconds",
    "aws_iam_role_idle_seconds",
    "aws_iam_credential_report_generated_timestamp_seconds",
    "iam_key_exporter_account_last_success_timestamp_seconds",
    "iam_key_exporter_account_refresh_duration_seconds",
    "iam_key_exporter_session_expiry_timestamp_seconds",
    "iam_key_exporter_config_last_reload_success_timestamp_seconds",
    "iam_key_exporter_discovery_last_success_timestamp_seconds",
];

fn normalize(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        let line = if line.starts_with('#') {
            line.to_string()
        } else if name.starts_with("process_") || VARIES.contains(&name) {
            let (series, _) = line.rsplit_once(' ').unwrap();
            format!("{series} <varies>")
        } else if name == "iam_key_exporter_build_info" {
            format!("{name}{{<varies>}} 1")
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn the_exposition_of_a_seeded_world_matches_the_golden_file() {
    let moto = Moto::start();
    moto.post(
        "/_launcher/organization",
        json!({
            "ous": [{"name": "prod"}],
            "accounts": [
                {"id": PAYMENTS, "name": "payments", "ou": "prod", "tags": {"team": "payments"}},
                {"id": REPORTS, "name": "reports", "ou": "prod", "tags": {"team": "finance"}},
            ],
        }),
    );
    let used = |date: &str, service: &str| json!({"date": date, "service": service, "region": "eu-west-1"});
    moto.seed(
        PAYMENTS,
        json!([
            {"name": "ci-deploy", "create_date": "2023-03-01T09:00:00Z", "path": "/automation/",
             "tags": {"owner": "platform@example.com", "team": "platform", "iam-key-exporter:exempt-until": "2099-12-31 rotation planned"},
             "keys": [
                {"access_key_id": "AKIAGOLDEN0000000001", "create_date": "2024-01-15T10:00:00Z",
                 "last_used": used("2025-06-01T08:00:00Z", "s3")},
                {"access_key_id": "AKIAGOLDEN0000000002", "create_date": "2025-02-01T10:00:00Z",
                 "status": "Inactive"},
            ],
             "service_credentials": [
                {"id": "ACCAGOLDEN00000000001", "service": "codecommit.amazonaws.com",
                 "create_date": "2024-03-03T03:03:03Z"}],
             "ssh_keys": [{"id": "APKAGOLDEN0000000001", "upload_date": "2024-04-04T04:04:04Z"}]},
            {"name": "alice", "create_date": "2022-05-10T12:00:00Z", "password": true, "tags": {"team": "payments"},
             "password_last_used": "2025-09-09T09:09:09Z", "keys": [],
             "service_credentials": [
                {"id": "ACCAGOLDEN00000000002", "service": "bedrock.amazonaws.com",
                 "create_date": "2025-05-05T05:05:05Z", "expiration_date": "2025-06-04T05:05:05Z"}]},
        ]),
    );
    moto.seed(
        REPORTS,
        json!([
            {"name": "report-bot", "create_date": "2023-07-07T07:07:07Z", "keys": [
                {"access_key_id": "AKIAGOLDEN0000000003", "create_date": "2024-08-08T08:08:08Z",
                 "last_used": used("2025-01-02T03:04:05Z", "iam")},
            ]},
        ]),
    );
    moto.post(
        "/_launcher/roles",
        json!({"account": PAYMENTS, "roles": [
            {"name": "batch", "path": "/jobs/", "create_date": "2023-02-02T02:02:02Z",
             "last_used": {"date": "2025-03-03T03:03:03Z", "region": "eu-west-1"}},
            {"name": "AWSServiceRoleForSupport", "path": "/aws-service-role/support.amazonaws.com/",
             "create_date": "2022-02-02T02:02:02Z", "last_used": null},
        ]}),
    );
    moto.post(
        "/_launcher/root",
        json!({"account": REPORTS, "mfa_active": false, "access_key_1_active": true, "access_key_2_active": false}),
    );
    moto.seed(
        MGMT,
        json!([{"name": "admin", "create_date": "2021-01-01T00:00:00Z", "keys": [
            {"access_key_id": "AKIAGOLDEN0000000004", "create_date": "2021-02-02T02:02:02Z"}]}]),
    );
    moto.seed(
        LEGACY,
        json!([{"name": "old-service", "create_date": "2019-04-04T04:04:04Z", "keys": [
            {"access_key_id": "AKIAGOLDEN0000000005", "create_date": "2019-04-04T04:04:04Z",
             "last_used": used("2020-10-10T10:10:10Z", "ec2")}]}]),
    );
    moto.faults(json!([{"kind": "access_denied", "operation": "AssumeRole", "account": DENIED}]));
    let exporter = Exporter::start(
        &moto,
        &format!(
            r#"
refresh_interval: 30m
read: {{ssh_public_keys: true}}
user_tags_as_labels: [owner, team]
policy:
  rules:
    - {{name: automation, path: /automation/, key_max_age: 365d}}
    - {{name: payments-team, user_tags: {{team: payments}}, key_max_idle: 30d, notice: 7d}}
exemptions:
  rules:
    - {{account: "{LEGACY}", user: old-*, reason: "decommissioned in Q1", until: 2020-01-31}}
discovery:
  organizations:
    tags_as_labels: [team]
accounts:
  - {{id: "{REPORTS}", source: credential_report}}
  - {{id: "{LEGACY}", name: legacy, labels: {{env: prod}}}}
  - {{id: "{DENIED}", name: denied}}
"#
        ),
    );
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape_until("the identity", Duration::from_secs(30), |m| {
        !m.find("iam_key_exporter_aws_identity_info", &[]).is_empty()
    });
    promtool_check_metrics(&m.raw).unwrap_or_else(|e| panic!("{e}\n{}", m.raw));
    let got = normalize(&m.raw);
    let path = repo().join(GOLDEN);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if got != want {
        let diff: Vec<String> = diff_lines(&want, &got);
        panic!(
            "the exposition differs from {GOLDEN} (- golden, + now); if the change is meant, \
             run UPDATE_GOLDEN=1 cargo test --test golden and review the diff:\n{}",
            diff.join("\n")
        );
    }
}

/// Lines only in `want` (-) or only in `got` (+), in order.
fn diff_lines(want: &str, got: &str) -> Vec<String> {
    let want_set: std::collections::HashSet<&str> = want.lines().collect();
    let got_set: std::collections::HashSet<&str> = got.lines().collect();
    let mut out: Vec<String> = want
        .lines()
        .filter(|l| !got_set.contains(l))
        .map(|l| format!("- {l}"))
        .collect();
    out.extend(
        got.lines()
            .filter(|l| !want_set.contains(l))
            .map(|l| format!("+ {l}")),
    );
    out
}
