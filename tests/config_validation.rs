//! Bad configuration files: each gets one clear message naming the file, the place and the
//! field, and exit code 2 before any port is bound.

use std::net::TcpListener;
use std::process::Command;

const GOOD_ACCOUNT: &str = "accounts:\n  - id: \"111111111111\"\n    name: prod\n";

/// Runs `check-config` on `yaml`; returns (exit code, stderr).
fn check(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iam-key-exporter"))
        .arg("check-config")
        .arg(format!("--config.file={}", path.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (
        out.status.code().unwrap(),
        stderr,
        path.display().to_string(),
    )
}

/// Asserts exit 2 and that the message names the file and contains every `parts`.
fn rejects(yaml: &str, parts: &[&str]) {
    let (code, stderr, path) = check(yaml);
    assert_eq!(code, 2, "expected exit 2 for:\n{yaml}\nstderr: {stderr}");
    assert!(
        stderr.contains(&path),
        "message does not name the file: {stderr}"
    );
    for p in parts {
        assert!(stderr.contains(p), "message lacks {p:?}: {stderr}");
    }
}

#[test]
fn accepts_the_shipped_configs() {
    for file in ["config/example.yaml", "config/demo.yaml"] {
        let (code, stderr, _) = check(&std::fs::read_to_string(file).unwrap());
        assert_eq!(code, 0, "{file}: {stderr}");
    }
    // The sample inside the Kubernetes ConfigMap.
    let cm: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string("deploy/kubernetes/configmap.yaml").unwrap())
            .unwrap();
    let embedded = cm["data"]["config.yaml"]
        .as_str()
        .expect("configmap has data.config.yaml");
    let (code, stderr, _) = check(embedded);
    assert_eq!(code, 0, "deploy/kubernetes/configmap.yaml: {stderr}");
}

#[test]
fn thirteen_digit_account_id() {
    rejects(
        "accounts:\n  - id: \"1234567890123\"\n",
        &[
            "accounts[0].id",
            "must be exactly 12 digits",
            "line 2 column 9",
        ],
    );
}

#[test]
fn non_numeric_account_id() {
    rejects(
        "accounts:\n  - id: \"12345678901x\"\n",
        &["accounts[0].id", "12 digits", "line 2"],
    );
}

#[test]
fn unquoted_account_id() {
    rejects(
        "accounts:\n  - id: 11111111111\n",
        &["accounts[0].id", "must be quoted", "\"011111111111\""],
    );
}

#[test]
fn duplicate_account_id() {
    rejects(
        "accounts:\n  - {id: \"111111111111\", name: a}\n  - {id: \"111111111111\", name: b}\n",
        &[
            "accounts[1].id",
            "\"111111111111\" is listed twice (also accounts[0])",
            "line 2",
        ],
    );
}

#[test]
fn duplicate_account_name() {
    rejects(
        "accounts:\n  - {id: \"111111111111\", name: prod}\n  - {id: \"222222222222\", name: prod}\n",
        &["accounts[1].name", "name \"prod\" is used twice (also accounts[0])", "line 2"],
    );
}

#[test]
fn unknown_key() {
    rejects(
        &format!("{GOOD_ACCOUNT}refresh_intervall: 5m\n"),
        &[
            "unknown field `refresh_intervall`",
            "expected one of",
            "refresh_interval",
            "line 4",
        ],
    );
    rejects(
        "accounts:\n  - id: \"111111111111\"\n    rolearn: x\n",
        &["accounts[0]", "unknown field `rolearn`", "line 3"],
    );
}

#[test]
fn malformed_duration() {
    rejects(
        &format!("refresh_interval: 15q\n{GOOD_ACCOUNT}"),
        &[
            "refresh_interval",
            "invalid duration \"15q\"",
            "like 90s, 15m or 1h",
            "line 1",
        ],
    );
    rejects(
        &format!("sts:\n  session_duration: forever\n{GOOD_ACCOUNT}"),
        &["sts.session_duration", "invalid duration", "line 2"],
    );
}

#[test]
fn unparsable_role_arn() {
    rejects(
        "accounts:\n  - id: \"111111111111\"\n    role_arn: arn:aws:iam:111111111111:role/X\n",
        &[
            "accounts[0].role_arn",
            "does not parse",
            "arn:<partition>:iam::<12-digit account id>:role/<name>",
            "line 3",
        ],
    );
    rejects(
        "accounts:\n  - id: \"111111111111\"\n    role_arn: arn:aws:iam::222222222222:role/X\n",
        &[
            "accounts[0].role_arn",
            "in another account than id",
            "line 2",
        ],
    );
}

#[test]
fn empty_account_list() {
    rejects(
        "refresh_interval: 5m\naccounts: []\n",
        &["accounts", "empty", "line 2"],
    );
    rejects("refresh_interval: 5m\n", &["accounts: missing"]);
}

#[test]
fn values_sts_would_refuse() {
    rejects(
        &format!("sts:\n  session_duration: 13h\n{GOOD_ACCOUNT}"),
        &["sts.session_duration", "outside what STS allows", "line 2"],
    );
    rejects(
        "accounts:\n  - id: \"111111111111\"\n    external_id: x\n",
        &["accounts[0].external_id", "2-1224", "line 3"],
    );
}

#[test]
fn a_role_for_an_account_read_without_one() {
    rejects(
        "accounts:\n  - id: \"111111111111\"\n    assume_role: false\n    role_name: Audit\n",
        &["accounts[0]", "assume_role is false", "would be ignored"],
    );
}

#[test]
fn yaml_syntax_error() {
    rejects(
        "accounts:\n  - id: \"111111111111\n    name: x\n",
        &["line"],
    );
    rejects("accounts: [\n", &["line"]);
}

#[test]
fn serve_mode_exits_2_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "accounts: []\n").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_iam-key-exporter"))
        .arg(format!("--config.file={}", path.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Never bound: the port is still free.
    TcpListener::bind(("127.0.0.1", port)).expect("the port was left bound");
}
