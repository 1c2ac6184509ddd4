//! `iam-key-exporter audit` against a seeded world: its three formats compared with golden
//! files (`UPDATE_GOLDEN=1` rewrites them), and its exit codes.

mod common;

use std::process::Output;

use common::*;
use serde_json::{json, Value};

const PROD: &str = "111111111111";
const REPORT: &str = "222222222222";
const DENIED: &str = "333333333333";

fn used(days: f64) -> Value {
    json!({"date": days_ago(days).1, "service": "s3", "region": "eu-west-1"})
}

fn key(id: &str, age: f64, last_used: Option<f64>) -> Value {
    let mut k = json!({"access_key_id": id, "create_date": days_ago(age).1});
    if let Some(d) = last_used {
        k["last_used"] = used(d);
    }
    k
}

fn seed(moto: &Moto) {
    moto.seed(
        PROD,
        json!([
            {"name": "alice", "keys": [key("AKIAAUDIT00000000001", 120.0, Some(2.0))]},
            {"name": "bob", "keys": [key("AKIAAUDIT00000000002", 200.0, None)]},
            {"name": "carol", "keys": [key("AKIAAUDIT00000000003", 10.0, Some(1.0)), key("AKIAAUDIT00000000004", 5.0, Some(1.0))]},
            {"name": "dave", "tags": {"iam-key-exporter:exempt-until": "2099-12-31 moving to IRSA"},
             "keys": [key("AKIAAUDIT00000000005", 100.0, Some(1.0))]},
            {"name": "erin", "tags": {"iam-key-exporter:exempt-until": "2020-01-01 expired long ago"},
             "keys": [key("AKIAAUDIT00000000006", 100.0, Some(1.0))]},
            {"name": "break-glass-1", "keys": [key("AKIAAUDIT00000000007", 300.0, None)]},
            {"name": "fresh", "keys": [key("AKIAAUDIT00000000008", 3.0, Some(1.0))]},
            // Under the `service` rule (365 days): 200 days is in time.
            {"name": "svc-report", "tags": {"kind": "service"},
             "keys": [key("AKIAAUDIT00000000010", 200.0, Some(1.0))]},
            // Under the `ci` rule (30 days): 40 days is too old.
            {"name": "ci-runner", "keys": [key("AKIAAUDIT00000000011", 40.0, Some(1.0))]},
            // Under the defaults (90 days, 14 days' notice): due in 10 days.
            {"name": "grace", "keys": [key("AKIAAUDIT00000000012", 80.0, Some(1.0))]},
        ]),
    );
    moto.seed(
        REPORT,
        json!([
            {"name": "console-user", "create_date": days_ago(400.0).1, "password": true,
             "password_last_used": days_ago(60.0).1, "keys": []},
        ]),
    );
    moto.post(
        "/_launcher/root",
        json!({"account": REPORT, "mfa_active": false, "access_key_1_active": true, "access_key_2_active": false}),
    );
}

fn config(extra_account: &str) -> String {
    format!(
        r#"
policy:
  rules:
    - {{name: service, user_tags: {{kind: service}}, key_max_age: 365d, key_max_idle: 90d}}
    - {{name: ci, user: "ci-*", key_max_age: 30d}}
exemptions:
  rules:
    - {{account: "{PROD}", user: break-glass-*, reason: "emergency access, reviewed quarterly", until: 2099-06-30}}
accounts:
  - {{id: "{PROD}", name: production}}
  - {{id: "{REPORT}", name: reports, source: credential_report}}
{extra_account}"#
    )
}

fn audit(moto: &Moto, config: &str, format: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config).unwrap();
    exporter_command(moto)
        .arg(format!("--config.file={}", path.display()))
        .args(["audit", "--format", format])
        .output()
        .unwrap()
}

/// Dates change from day to day; the rest of the output must not.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let is_date = b.len() - i >= 10
            && b[i..i + 10].iter().enumerate().all(|(j, c)| {
                if j == 4 || j == 7 {
                    *c == b'-'
                } else {
                    c.is_ascii_digit()
                }
            });
        if is_date && !text[i..].starts_with("2099-") {
            out.push_str("<date>");
            i += 10;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn compare_golden(name: &str, got: &str) {
    let path = repo().join("tests/fixtures/audit").join(name);
    let got = normalize(got);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "the audit's {name} differs from {} (UPDATE_GOLDEN=1 cargo test --test audit rewrites it):\n--- now:\n{got}\n--- golden:\n{want}",
        path.display()
    );
}

#[test]
fn the_three_formats_match_the_seeded_world() {
    let moto = Moto::start();
    seed(&moto);
    let cfg = config("");
    for (format, file) in [
        ("table", "table.txt"),
        ("json", "audit.json"),
        ("csv", "audit.csv"),
    ] {
        let out = audit(&moto, &cfg, format);
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{format}: findings exit 3\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        compare_golden(file, &stdout);
    }
    // What the JSON says, checked beyond the golden file.
    let out = audit(&moto, &cfg, "json");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds = |list: &str, user: &str| -> Vec<String> {
        doc[list]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["user"] == user)
            .map(|f| f["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds("findings", "alice"), ["key_too_old"]);
    assert_eq!(kinds("findings", "bob"), ["key_too_old", "key_never_used"]);
    assert_eq!(kinds("findings", "carol"), ["two_active_keys"]);
    assert!(kinds("findings", "dave").is_empty() && kinds("exempt", "dave") == ["key_too_old"]);
    assert_eq!(
        kinds("findings", "erin"),
        ["key_too_old"],
        "an expired exemption exempts nothing"
    );
    assert_eq!(
        kinds("exempt", "break-glass-1"),
        ["key_too_old", "key_never_used"]
    );
    assert_eq!(
        kinds("findings", "<root>"),
        ["root_access_key", "root_without_mfa"]
    );
    assert_eq!(
        kinds("findings", "console-user"),
        ["password_unused", "console_without_mfa"]
    );
    assert!(kinds("findings", "fresh").is_empty());
    // Each key is judged by its own rule, and says which.
    assert!(kinds("findings", "svc-report").is_empty());
    assert_eq!(kinds("findings", "ci-runner"), ["key_too_old"]);
    let ci = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["user"] == "ci-runner")
        .unwrap();
    assert_eq!(ci["rule"], "ci");
    assert_eq!(
        ci["deadline"],
        date_in(-10.0),
        "created 40 days ago, 30 allowed"
    );
    // Due soon is listed apart and does not count as a finding.
    assert!(kinds("findings", "grace").is_empty());
    assert_eq!(kinds("due_soon", "grace"), ["key_too_old_soon"]);
    assert_eq!(doc["due_soon"][0]["deadline"], date_in(10.0));
    // Every finding names its controls, with the benchmark's version.
    let alice = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["user"] == "alice")
        .unwrap();
    let controls: Vec<String> = alice["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["framework"].as_str().unwrap(),
                c["id"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        controls.contains(&"CIS AWS Foundations Benchmark v3.0.0 1.14".to_string())
            && controls.contains(&"CIS AWS Foundations Benchmark v5.0.0 1.13".to_string())
            && controls.contains(&"AWS Security Hub IAM.3".to_string()),
        "{controls:?}"
    );
    assert_eq!(doc["policy"]["defaults"]["key_max_age_days"], 90);
    assert_eq!(doc["policy"]["rules"][1]["name"], "ci");
}

/// The UTC date `days` from now (negative: ago), as the audit writes deadlines.
fn date_in(days: f64) -> String {
    days_ago(-days).1[..10].to_string()
}

#[test]
fn exit_codes_say_clean_found_or_incomplete() {
    let moto = Moto::start();
    moto.seed(
        PROD,
        json!([{"name": "fresh", "keys": [key("AKIAAUDIT00000000009", 3.0, Some(1.0))]}]),
    );
    let clean = format!("accounts:\n  - {{id: \"{PROD}\", name: production}}\n");
    let out = audit(&moto, &clean, "table");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("Account 111111111111 (production): no findings"),
        "{stdout}"
    );

    moto.faults(json!([{"kind": "access_denied", "operation": "AssumeRole", "account": DENIED}]));
    let out = audit(
        &moto,
        &format!("{clean}  - {{id: \"{DENIED}\", name: denied}}\n"),
        "table",
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("Account 333333333333 (denied): FAILED: AccessDenied (assume_role)"),
        "{stdout}"
    );
    assert!(out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("level=info"));
}

#[test]
fn csv_cells_cannot_run_as_spreadsheet_formulas() {
    const HOSTILE: &str = "444444444444";
    let moto = Moto::start();
    let names = ["=1+1", "+cmd", "-2+3", "@SUM", "plain"];
    let users: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"name": n, "keys": [key(&format!("AKIAHOSTILE000000{i:03}"), 200.0, Some(1.0))]}))
        .collect();
    moto.seed(HOSTILE, json!(users));
    let reason = r#"=HYPERLINK("http://127.0.0.1/x","details")"#;
    let account_name = "=cmd|' /C calc'!A0";
    let cfg = format!(
        "exemptions:\n  rules:\n    - {{account: \"{HOSTILE}\", user: \"@SUM*\", reason: '{reason}', until: 2099-06-30}}\naccounts:\n  - {{id: \"{HOSTILE}\", name: \"{account_name}\"}}\n"
    );

    let out = audit(&moto, &cfg, "csv");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reader = csv::Reader::from_reader(&out.stdout[..]);
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), names.len(), "one key_too_old finding per user");
    for row in &rows {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a spreadsheet would run {cell:?} (row {row:?})"
            );
        }
        assert_eq!(&row[column("account_name")], format!("'{account_name}"));
    }
    let users: Vec<&str> = rows.iter().map(|r| &r[column("user")]).collect();
    for want in ["'=1+1", "'+cmd", "'-2+3", "'@SUM", "plain"] {
        assert!(users.contains(&want), "{want:?} missing in {users:?}");
    }
    let exempt = rows.iter().find(|r| &r[column("user")] == "'@SUM").unwrap();
    assert_eq!(&exempt[column("exempt_reason")], format!("'{reason}"));

    // JSON is read by programs: it keeps every value as it is.
    let out = audit(&moto, &cfg, "json");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = doc["findings"].as_array().unwrap();
    assert!(findings
        .iter()
        .any(|f| f["user"] == "=1+1" && f["account_name"] == account_name));
    assert_eq!(doc["exempt"][0]["exempt_reason"], reason);
}
