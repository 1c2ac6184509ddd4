//! The credential report parser over real-format AWS reports (tests/fixtures/credential_report),
//! including what moto cannot produce: the `<root_account>` row, `no_information`,
//! `not_supported`, reordered and added columns, and malformed reports.

use iam_key_exporter::inventory::credential_report::{parse, parse_date};
use iam_key_exporter::inventory::{KeyStatus, Snapshot};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("tests/fixtures/credential_report/{name}")).unwrap()
}

fn date(s: &str) -> f64 {
    parse_date(s).unwrap()
}

fn key<'a>(s: &'a Snapshot, user: &str, slot: &str) -> &'a iam_key_exporter::inventory::AccessKey {
    s.keys
        .iter()
        .find(|k| k.user == user && k.id == slot)
        .unwrap_or_else(|| panic!("no {user}/{slot}"))
}

#[test]
fn typical_aws_report() {
    let s = parse(&fixture("aws_typical.csv"), 1_795_000_000.0).unwrap();
    assert_eq!(s.report_generated, Some(1_795_000_000.0));

    // The root row is the root account, not a user.
    let root = s.root.as_ref().expect("root row");
    assert!(root.mfa_active);
    assert_eq!(root.access_keys_active, [true, false]);
    let names: Vec<_> = s.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "ci-deploy", "legacy"]);

    // alice: console user with MFA, an active key and an inactive one, both used.
    let alice = &s.users[0];
    assert_eq!(alice.created, date("2020-01-15T10:00:00Z"));
    assert_eq!(alice.password_last_used, Some(date("2026-11-20T07:30:00Z")));
    let console = alice.console.as_ref().unwrap();
    assert!(console.mfa_active && console.password_enabled);
    assert_eq!(
        console.password_last_changed,
        Some(date("2025-06-01T00:00:00Z"))
    );
    assert_eq!(console.certificates, [None, None]);
    assert_eq!(alice.path.as_deref(), Some("/"));
    let k1 = key(&s, "alice", "key_1");
    assert_eq!(k1.status, KeyStatus::Active);
    assert_eq!(k1.created, date("2025-07-29T12:00:00Z"));
    let used = k1.last_used.as_ref().unwrap();
    assert_eq!(used.at, date("2026-08-18T09:45:00Z"));
    assert_eq!(used.service.as_deref(), Some("s3"));
    assert_eq!(used.region.as_deref(), Some("eu-west-1"));
    let k2 = key(&s, "alice", "key_2");
    assert_eq!(
        k2.status,
        KeyStatus::Inactive,
        "an inactive key keeps its rotation date and is listed"
    );
    assert_eq!(
        k2.last_used.as_ref().unwrap().service.as_deref(),
        Some("ec2")
    );

    // ci-deploy: no password (N/A), key 1 never used (N/A), key 2 used.
    let ci = s.users.iter().find(|u| u.name == "ci-deploy").unwrap();
    assert_eq!(ci.password_last_used, None);
    let console = ci.console.as_ref().unwrap();
    assert!(!console.mfa_active && !console.password_enabled);
    assert_eq!(console.password_last_changed, None);
    assert_eq!(
        ci.path.as_deref(),
        Some("/automation/"),
        "the path comes from the ARN"
    );
    assert!(key(&s, "ci-deploy", "key_1").last_used.is_none());
    assert_eq!(
        key(&s, "ci-deploy", "key_2").created,
        date("2026-11-01T00:00:00Z")
    );

    // legacy: password last used `no_information`, no keys at all.
    let legacy = s.users.iter().find(|u| u.name == "legacy").unwrap();
    assert_eq!(legacy.password_last_used, None);
    assert!(s.keys.iter().all(|k| k.user != "legacy"));
    assert_eq!(s.keys.len(), 4);
}

#[test]
fn columns_are_found_by_name() {
    // An added column, the root row last, and no root keys.
    let s = parse(&fixture("root_without_keys_extra_column.csv"), 0.0).unwrap();
    assert_eq!(s.root.as_ref().unwrap().access_keys_active, [false, false]);
    assert!(!s.root.as_ref().unwrap().mfa_active);
    assert_eq!(s.users.len(), 1);
    assert_eq!(
        key(&s, "bob", "key_1").created,
        date("2023-02-03T04:05:07Z")
    );

    // The same report with its columns in reverse order parses the same.
    let text = String::from_utf8(fixture("aws_typical.csv")).unwrap();
    let reversed: String = text
        .lines()
        .map(|l| l.split(',').rev().collect::<Vec<_>>().join(",") + "\n")
        .collect();
    let a = parse(text.as_bytes(), 0.0).unwrap();
    let b = parse(reversed.as_bytes(), 0.0).unwrap();
    assert_eq!(format!("{:?}", a), format!("{:?}", b));
}

/// A malformed report's error names the row and column, and never panics.
fn rejects(report: &[u8], parts: &[&str]) {
    let e = parse(report, 0.0).unwrap_err().to_string();
    for p in parts {
        assert!(e.contains(p), "error {e:?} lacks {p:?}");
    }
}

fn typical_with(row: usize, column: &str, value: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(fixture("aws_typical.csv")).unwrap();
    let mut lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == column).unwrap();
    let mut fields: Vec<Vec<u8>> = lines[row - 1]
        .split(|b| *b == b',')
        .map(<[u8]>::to_vec)
        .collect();
    fields[col] = value.to_vec();
    lines[row - 1] = fields.join(&b","[..]);
    lines.join(&b"\n"[..])
}

#[test]
fn malformed_reports_give_clear_errors() {
    rejects(b"", &["header lacks the column \"user\""]);
    rejects(
        b"user,arn\nalice,x\n",
        &["header lacks the column \"user_creation_time\""],
    );
    rejects(
        &typical_with(3, "access_key_1_last_rotated", b"yesterday"),
        &["row 3", "access_key_1_last_rotated", "\"yesterday\""],
    );
    rejects(
        &typical_with(4, "mfa_active", b"maybe"),
        &["row 4", "mfa_active", "true or false"],
    );
    rejects(
        &typical_with(3, "user", b"al\xffice"),
        &["row 3", "column user", "UTF-8"],
    );
    rejects(
        &typical_with(5, "user_creation_time", b"N/A"),
        &["row 5", "user_creation_time", "missing"],
    );
    // A short row (and moto's unquoted comma in a user name gives a long one).
    let text = String::from_utf8(fixture("aws_typical.csv")).unwrap();
    let short = text.replacen(",false,N/A,false,N/A\nci-deploy", "\nci-deploy", 1);
    rejects(short.as_bytes(), &["row 3"]);
}
