//! Bad configuration files: each gets one clear message naming the file, the place and the
//! field, and exit code 2 before any port is bound.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{users, Exporter, Moto};

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
        &[":2:9: accounts[0].id: ", "must be exactly 12 digits"],
    );
}

#[test]
fn non_numeric_account_id() {
    rejects(
        "accounts:\n  - id: \"12345678901x\"\n",
        &[":2:9: accounts[0].id: ", "12 digits"],
    );
}

#[test]
fn unquoted_account_id() {
    rejects(
        "accounts:\n  - id: 11111111111\n",
        &[
            ":2:9: accounts[0].id: ",
            "must be quoted",
            "\"011111111111\"",
        ],
    );
}

#[test]
fn duplicate_account_id() {
    rejects(
        "accounts:\n  - {id: \"111111111111\", name: a}\n  - {id: \"111111111111\", name: b}\n",
        &[
            ":3:10: accounts[1].id: ",
            "\"111111111111\" is listed twice (also accounts[0], line 2)",
        ],
    );
}

#[test]
fn duplicate_account_name() {
    rejects(
        "accounts:\n  - {id: \"111111111111\", name: prod}\n  - {id: \"222222222222\", name: prod}\n",
        &[
            ":3:32: accounts[1].name: ",
            "name \"prod\" is used twice (also accounts[0], line 2)",
        ],
    );
}

#[test]
fn unknown_key() {
    rejects(
        &format!("{GOOD_ACCOUNT}refresh_intervall: 5m\n"),
        &[
            ":4:1: refresh_intervall: unknown field `refresh_intervall`",
            "did you mean `refresh_interval`?",
            "expected one of",
        ],
    );
    rejects(
        "accounts:\n  - id: \"111111111111\"\n    rolearn: x\n",
        &[
            ":3:5: accounts[0].rolearn: unknown field `rolearn`",
            "did you mean `role_arn`?",
        ],
    );
}

#[test]
fn malformed_duration() {
    rejects(
        &format!("refresh_interval: 15q\n{GOOD_ACCOUNT}"),
        &[
            ":1:19: refresh_interval: ",
            "invalid duration \"15q\"",
            "like 90s, 15m or 1h",
        ],
    );
    rejects(
        &format!("sts:\n  session_duration: forever\n{GOOD_ACCOUNT}"),
        &[":2:21: sts.session_duration: ", "invalid duration"],
    );
}

#[test]
fn unparsable_role_arn() {
    rejects(
        "accounts:\n  - id: \"111111111111\"\n    role_arn: arn:aws:iam:111111111111:role/X\n",
        &[
            ":3:15: accounts[0].role_arn: ",
            "does not parse",
            "arn:<partition>:iam::<12-digit account id>:role/<name>",
        ],
    );
    rejects(
        "accounts:\n  - id: \"111111111111\"\n    role_arn: arn:aws:iam::222222222222:role/X\n",
        &[
            ":3:15: accounts[0].role_arn: ",
            "in another account than id",
        ],
    );
}

#[test]
fn empty_account_list() {
    rejects(
        "refresh_interval: 5m\naccounts: []\n",
        &[
            ":2:11: accounts: ",
            "no account to read",
            "discovery.organizations",
        ],
    );
    rejects(
        "refresh_interval: 5m\n",
        &[":1:1: accounts: no account to read"],
    );
}

#[test]
fn values_sts_would_refuse() {
    rejects(
        &format!("sts:\n  session_duration: 13h\n{GOOD_ACCOUNT}"),
        &[
            ":2:21: sts.session_duration: ",
            "outside the allowed range 15m to 12h",
        ],
    );
    rejects(
        "accounts:\n  - id: \"111111111111\"\n    external_id: x\n",
        &[":3:18: accounts[0].external_id: ", "2-1224"],
    );
}

#[test]
fn a_role_for_an_account_read_without_one() {
    rejects(
        "accounts:\n  - id: \"111111111111\"\n    assume_role: false\n    role_name: Audit\n",
        &[
            ":3:18: accounts[0].assume_role: ",
            "assume_role is false",
            "would be ignored",
        ],
    );
}

#[test]
fn yaml_syntax_error() {
    rejects(
        "accounts:\n  - id: \"111111111111\n    name: x\n",
        &[":2:9: not valid YAML here: "],
    );
    rejects("accounts: [\n", &[":2:1: not valid YAML here: "]);
}

/// Runs the exporter (serve mode) with `yaml` and `args` while this test holds its port:
/// a configuration error must come first (exit 2, the config's message); an exporter that
/// bound before validating would instead fail with "cannot listen" (exit 1).
fn serve_fails_before_binding(yaml: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_iam-key-exporter"))
        .arg(format!("--config.file={}", path.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("cannot listen"), "{stderr}");
    stderr
}

#[test]
fn serve_mode_exits_2_before_binding() {
    let stderr = serve_fails_before_binding("accounts: []\n", &[]);
    assert!(stderr.contains("no account to read"), "{stderr}");
}

#[test]
fn every_problem_of_a_file_at_once() {
    let (code, stderr, path) = check(
        "concurrency: 0\nrefresh_interval: 10ms\nsts:\n  region: moon\naccounts:\n  - {id: \"1\"}\n  - {id: \"111111111111\", bogus: 1}\n",
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("5 problems"), "{stderr}");
    for want in [
        format!("{path}:1:14: concurrency: \"0\" is not a whole number from 1 to 1024"),
        format!("{path}:2:19: refresh_interval: \"10ms\" is outside the allowed range 1s to 1day"),
        format!("{path}:4:11: sts.region: "),
        format!("{path}:6:10: accounts[0].id: "),
        format!("{path}:7:26: accounts[1].bogus: unknown field `bogus`"),
    ] {
        assert!(stderr.contains(&want), "{want:?} missing in:\n{stderr}");
    }
}

#[test]
fn durations_have_bounds() {
    for (value, range) in [
        ("10ms", "1s to 1day"),
        ("1y", "1s to 1day"),
        ("99999999999999h", ""),
    ] {
        rejects(
            &format!("refresh_interval: {value}\n{GOOD_ACCOUNT}"),
            &[":1:19: refresh_interval: ", range],
        );
    }
    rejects(
        &format!("aws:\n  max_attempts: 500\n{GOOD_ACCOUNT}"),
        &[":2:17: aws.max_attempts: ", "from 1 to 20"],
    );
}

#[test]
fn settings_that_would_mute_alerts_or_cut_work_short() {
    // A failed refresh would drop the data before the next attempt.
    rejects(
        &format!("refresh_interval: 1h\nmax_staleness: 30m\n{GOOD_ACCOUNT}"),
        &[
            ":2:16: max_staleness: ",
            "shorter than the longest time between two refreshes",
            "1h 16m",
        ],
    );
    rejects(
        &format!("aws:\n  attempt_timeout: 2m\n  operation_timeout: 1m\n{GOOD_ACCOUNT}"),
        &[
            ":2:20: aws.attempt_timeout: ",
            "must not be longer than aws.operation_timeout",
        ],
    );
    rejects(
        &format!("sts:\n  session_duration: 15m\n  renew_before: 20m\n{GOOD_ACCOUNT}"),
        &[
            ":3:17: sts.renew_before: ",
            "shorter than sts.session_duration",
        ],
    );
}

#[test]
fn settings_without_effect_are_warnings() {
    let (code, stderr, path) = check(&format!(
        "refresh_timeout: 2m\naws:\n  operation_timeout: 3m\n{GOOD_ACCOUNT}"
    ));
    assert_eq!(code, 0, "{stderr}");
    for want in [
        format!("warning: {path}:3:22: aws.operation_timeout: aws.operation_timeout (3m) is longer than refresh_timeout (2m)"),
        format!("warning: {path}:1:18: refresh_timeout: aws.credential_report_timeout (5m) must be shorter"),
    ] {
        assert!(stderr.contains(&want), "{want:?} missing in:\n{stderr}");
    }
}

#[test]
fn a_costly_but_working_setting_is_a_warning() {
    let (code, stderr, path) = check(&format!(
        "refresh_interval: 1h\nmax_staleness: 3h\n{GOOD_ACCOUNT}"
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: {path}:1:19: refresh_interval: sessions of 1h"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("every refresh assumes the role again"),
        "{stderr}"
    );
}

#[test]
fn many_user_patterns_in_exemptions_are_a_warning() {
    use iam_key_exporter::config::EXEMPTION_PATTERNS_WARN as PATTERNS_WARN;
    let rules = |patterns: usize, names: usize| {
        let mut yaml = "exemptions:\n  rules:\n".to_string();
        for i in 0..patterns {
            yaml += &format!("    - {{user: ci-{i}-*, reason: r, until: 2027-03-31}}\n");
        }
        for i in 0..names {
            yaml += &format!("    - {{user: ci-{i}, reason: r, until: 2027-03-31}}\n");
        }
        format!("{yaml}{GOOD_ACCOUNT}")
    };
    // Plain user names cost nothing per rule, however many.
    let (code, stderr, _) = check(&rules(PATTERNS_WARN, 3 * PATTERNS_WARN));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (code, stderr, path) = check(&rules(PATTERNS_WARN + 1, 0));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: {path}:3:5: exemptions.rules: {} rules have a user pattern",
            PATTERNS_WARN + 1
        )),
        "{stderr}"
    );
}

#[test]
fn discovery_settings() {
    let (code, stderr, _) = check(
        "discovery:\n  organizations:\n    role_arn: arn:aws:iam::123456789012:role/OrgReader\n    include_ous: [ou-ab12-prod0001]\n    tags_as_labels: [team, cost-center]\naccounts: []\n",
    );
    assert_eq!(code, 0, "accounts may be empty with discovery: {stderr}");
    rejects(
        "discovery:\n  organizations:\n    include_ous: [ou-AB12-prod]\n",
        &[
            ":3:19: discovery.organizations.include_ous[0]: ",
            "organizational unit id like ou-ab12-cdef3456",
        ],
    );
    rejects(
        "discovery:\n  organizations:\n    tags_as_labels: [cost-center, cost_center]\n",
        &[
            ":3:35: discovery.organizations.tags_as_labels[1]: ",
            "would both become label tag_cost_center",
        ],
    );
    rejects(
        "discovery:\n  organizations:\n    exclude_accounts: [\"111111111111\"]\naccounts:\n  - id: \"111111111111\"\n",
        &[":3:24: discovery.organizations.exclude_accounts[0]: ", "listed in accounts[0]"],
    );
    rejects(
        "discovery:\n  organizations:\n    tags_as_labels: [team]\naccounts:\n  - id: \"111111111111\"\n    labels: {tag_team: x}\n",
        &[":6:14: accounts[0].labels.tag_team: ", "also made from the tag \"team\"", "line 3"],
    );
    rejects(
        "discovery:\n  organizations:\n    include_ous: [ou-ab12-prod0001]\n    exclude_ous: [ou-ab12-prod0001]\n",
        &[":4:19: discovery.organizations.exclude_ous[0]: ", "in both include_ous and exclude_ous"],
    );
    rejects("discovery: {}\n", &[":1:12: discovery: ", "organizations"]);
    rejects(
        "discovery:\n  organizations:\n    refresh_interval: 1s\n",
        &[
            ":3:23: discovery.organizations.refresh_interval: ",
            "5s to 7days",
        ],
    );
}

#[test]
fn discovery_shrink_guard() {
    let (code, stderr, _) =
        check("discovery:\n  organizations:\n    shrink_guard: {max_drop: 0%, confirmations: 1}\n");
    assert_eq!(code, 0, "{stderr}");
    // Both problems at once, each at its place.
    rejects(
        "discovery:\n  organizations:\n    shrink_guard:\n      max_drop: 50\n      confirmations: 0\n",
        &[
            ":4:17: discovery.organizations.shrink_guard.max_drop: \"50\" is not a percentage from 0% to 100%, like 50%",
            ":5:22: discovery.organizations.shrink_guard.confirmations: \"0\" is not a whole number from 1 to 100",
        ],
    );
    rejects(
        "discovery:\n  organizations:\n    shrink_guard: {max_drop: 150%}\n",
        &[
            ":3:30: discovery.organizations.shrink_guard.max_drop: ",
            "0% to 100%",
        ],
    );
    rejects(
        "discovery:\n  organizations:\n    shrink_guard: {max_drops: 10%}\n",
        &[
            ":3:20: discovery.organizations.shrink_guard.max_drops: unknown field",
            "max_drop",
        ],
    );
    rejects(
        "discovery:\n  organizations:\n    shrink_guard: 50%\n",
        &[":3:19: discovery.organizations.shrink_guard: "],
    );
}

#[test]
fn exemption_rules_and_user_tags() {
    let one = "accounts:\n  - id: \"111111111111\"\n";
    rejects(
        &format!("exemptions:\n  rules:\n    - {{user: ci, reason: x}}\n{one}"),
        &[
            ":3:7: exemptions.rules[0].until: ",
            "every exemption needs an end date",
        ],
    );
    rejects(
        &format!("exemptions:\n  rules:\n    - {{user: ci, reason: x, until: 2027-13-45}}\n{one}"),
        &[
            ":3:36: exemptions.rules[0].until: ",
            "not a date like 2027-03-31",
        ],
    );
    rejects(
        &format!(
            "exemptions:\n  rules:\n    - {{user: \"ci deploy\", reason: \"\", until: 2027-01-01, access_key_id: nope}}\n{one}"
        ),
        &[
            "3 problems",
            ":3:14: exemptions.rules[0].user: ",
            ":3:35: exemptions.rules[0].reason: reason must not be empty",
            ":3:73: exemptions.rules[0].access_key_id: ",
        ],
    );
    rejects(
        &format!("user_tags_as_labels: [cost-center, cost_center]\n{one}"),
        &[
            ":1:36: user_tags_as_labels[1]: ",
            "would both become label tag_cost_center",
        ],
    );
}

#[test]
fn shard_flags_are_checked_before_binding() {
    for (args, want) in [
        (
            &["--shard.total=3", "--shard.index=3"][..],
            "--shard.index=3 is not below --shard.total=3",
        ),
        (&["--shard.total=0"][..], "--shard.total must be at least 1"),
        (
            &["--shard.total=3", "--shard.index=x"][..],
            "neither a number nor",
        ),
    ] {
        let stderr = serve_fails_before_binding(GOOD_ACCOUNT, args);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.yaml");
    std::fs::write(&path, GOOD_ACCOUNT).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iam-key-exporter"))
        .args(["check-config", "--shard.total=3", "--shard.index=auto"])
        .arg(format!("--config.file={}", path.display()))
        .env("HOSTNAME", "iam-key-exporter")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("hostname ending in -<number>"), "{stderr}");
    assert!(stderr.contains("\"iam-key-exporter\""), "{stderr}");
}

#[test]
fn telemetry_paths_that_would_hide_metrics_or_health() {
    for path in ["metrics", "", "/-/healthy", "/", "/-/anything"] {
        let out = Command::new(env!("CARGO_BIN_EXE_iam-key-exporter"))
            .arg(format!("--web.telemetry-path={path}"))
            .arg("--config.file=/nonexistent.yaml")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path:?}: {stderr}");
        assert!(
            stderr.contains("--web.telemetry-path"),
            "{path:?}: {stderr}"
        );
    }
}

#[test]
fn policy_problems_are_positioned() {
    let policy =
        |rules: &str| format!("policy:\n  key_max_age: 90d\n  rules:\n{rules}{GOOD_ACCOUNT}");
    rejects(
        &policy("    - {user: ci-*, key_max_age: soon}\n"),
        &[":4:33: policy.rules[0].key_max_age: ", "invalid duration"],
    );
    rejects(
        &policy("    - {usr: ci-*, key_max_age: 30d}\n"),
        &[
            ":4:8: policy.rules[0].usr: ",
            "unknown field `usr`; did you mean `user`?",
        ],
    );
    rejects(
        &policy("    - {user: ci-*}\n"),
        &[":4:7: policy.rules[0]: ", "sets no limit"],
    );
    rejects(
        &policy("    - {user: ci-*, key_max_age: 0s}\n"),
        &["policy.rules[0].key_max_age: ", "outside the allowed range"],
    );
    rejects(
        "policy:\n  key_max_idle: 3700d\naccounts: [{id: \"111111111111\"}]\n",
        &[
            ":2:17: policy.key_max_idle: ",
            "outside the allowed range 1s to 10years",
        ],
    );
    rejects(
        &policy("    - {name: ci, user: ci-*, key_max_age: 30d}\n    - {name: ci, path: /x/, key_max_age: 30d}\n"),
        &[":5:7: policy.rules[1].name: ", "\"ci\" is taken"],
    );
    rejects(
        &policy("    - {path: breakglass, key_max_idle: 365d}\n    - {ous: [ou-1], notice: 1d}\n"),
        &[
            "policy.rules[0].path: ",
            "starts and ends with /",
            "policy.rules[1].ous[0]: ",
            "not an organizational unit id",
        ],
    );
}

#[test]
fn policy_rules_after_a_catch_all_are_a_warning() {
    let (code, stderr, _) = check(&format!(
        "policy:\n  rules:\n    - {{name: everyone, key_max_age: 60d}}\n    - {{name: ci, user: ci-*, key_max_age: 30d}}\n{GOOD_ACCOUNT}"
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr.contains(":4:7: policy.rules[1]: rule \"ci\" can never apply: rule \"everyone\" (line 3) matches every user"),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_the_policy_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!("read: {{roles: false}}\npolicy:\n  notice: 7d\n  rules:\n    - {{name: ci, user: ci-*, key_max_age: 30d}}\n{GOOD_ACCOUNT}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iam-key-exporter"))
        .arg("check-config")
        .arg(format!("--config.file={}", path.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "policy: default: key_max_age 90d, key_max_idle 45d, password_max_idle 45d, \
             role_max_idle 90d, notice 7d"
        ) && stdout.contains(
            "policy: rule ci: key_max_age 30d, key_max_idle 45d, password_max_idle 45d, \
             role_max_idle 90d, notice 7d"
        ) && stdout.contains(
            "read per account and refresh: service-specific credentials \
             (ListServiceSpecificCredentials: 1 call per 1000 credentials)\n"
        ),
        "{stdout}"
    );
}

#[test]
fn the_policy_subcommand_says_which_rule_applies_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        r#"
policy:
  rules:
    - {name: sandbox, account_labels: {tag_environment: sandbox}, key_max_age: 180d}
    - {name: service, user_tags: {kind: service}, key_max_age: 365d, key_max_idle: 90d}
    - {name: ci, account: "111111111111", user: "ci-*", key_max_age: 30d}
accounts:
  - {id: "111111111111", name: prod}
  - {id: "222222222222", name: sandbox-1, labels: {tag_environment: sandbox}}
"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_iam-key-exporter"))
            .arg(format!("--config.file={}", path.display()))
            .arg("policy")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let ci = run(&["--account", "111111111111", "--user", "ci-deploy"]);
    assert!(
        ci.contains("rule sandbox: does not apply: the account's label tag_environment differs or is missing")
            && ci.contains("rule service: does not apply: the user's tag \"kind\" differs or is missing")
            && ci.contains("rule ci: applies")
            && ci.contains("limits of rule ci: key_max_age 30d, key_max_idle 45d"),
        "{ci}"
    );
    // The account's configured labels come from the file.
    let sandbox = run(&["--account", "222222222222", "--user", "ci-deploy"]);
    assert!(sandbox.contains("rule sandbox: applies"), "{sandbox}");
    let service = run(&[
        "--account",
        "111111111111",
        "--user",
        "etl",
        "--user-tag",
        "kind=service",
    ]);
    assert!(service.contains("rule service: applies"), "{service}");
    let nobody = run(&["--account", "333333333333", "--user", "alice"]);
    assert!(
        nobody.contains("no rule applies; the defaults: key_max_age 90d"),
        "{nobody}"
    );
}

#[test]
fn an_invalid_external_id_is_described_not_printed() {
    // Whatever was meant as a secret must not end up in a CI log.
    for (value, want) in [
        ("s3cr3t value", "its character 7 is none of them"),
        ("s", "must be 2-1224 characters long; it has 1"),
    ] {
        let (code, stderr, _) = check(&format!(
            "defaults:\n  external_id: \"{value}\"\n{GOOD_ACCOUNT}"
        ));
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(":2:16: defaults.external_id: external id (not shown)")
                && stderr.contains(want),
            "{stderr}"
        );
        assert!(!stderr.contains(&format!("\"{value}\"")), "{stderr}");
    }
}

#[test]
fn deeply_nested_yaml_is_an_error_not_a_crash() {
    // 40,000 nested lists (80 KB) used to overflow the stack (exit 134).
    rejects(
        &format!("bogus:\n{}\n", "- ".repeat(40_000)),
        &[":2:127: not valid YAML here: ", "nested more than 64 deep"],
    );
    rejects(
        &format!("accounts: {}\n", "[".repeat(100_000)),
        &[":1:", "not valid YAML here: "],
    );
}

/// `check-config` on `path`, which must end within 20 s (a FIFO used to block it forever):
/// (exit code, stderr).
fn check_path(path: &std::path::Path) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iam-key-exporter"))
        .arg("check-config")
        .arg(format!("--config.file={}", path.display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("check-config on {} did not end", path.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn only_a_regular_file_of_bounded_size_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let zero = dir.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    // Sparse: 17 MiB on paper, nothing on disk.
    let huge = dir.path().join("huge.yaml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(17 << 20)
        .unwrap();
    for (path, want) in [
        (&fifo, "cannot read the file: it is a named pipe (FIFO), not a regular file"),
        (&zero, "cannot read the file: it is a device, not a regular file"),
        (
            &huge,
            "cannot read the file: it has 17825792 bytes, more than the 16 MiB a configuration file may have",
        ),
    ] {
        let (code, stderr) = check_path(path);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(&format!("{}: {want}", path.display())),
            "{stderr}"
        );
    }
}

#[test]
fn a_running_exporter_refuses_bad_files_and_names_the_accounts_a_reload_removed() {
    const A: &str = "111111111111";
    const B: &str = "222222222222";
    const RELOADED: &str = "iam_key_exporter_config_last_reload_successful";
    let moto = Moto::start();
    moto.seed(A, users("a", 1, 1));
    moto.seed(B, users("b", 1, 1));
    let mut exporter = Exporter::spawn(
        &moto,
        &format!("accounts:\n  - id: \"{A}\"\n  - {{id: \"{B}\", name: billing}}\n"),
        &["--config.auto-reload-interval=1s"],
    );
    exporter.wait_listening();
    exporter.wait_ready(Duration::from_secs(30));
    let up =
        |m: &common::Metrics, id: &str| m.get("iam_key_exporter_account_up", &[("account_id", id)]);

    // Too deep: refused with its position, the running configuration kept (this used to
    // abort the process).
    std::fs::write(
        &exporter.config,
        format!("bogus:\n{}\n", "- ".repeat(40_000)),
    )
    .unwrap();
    let m = exporter.scrape_until("the deep file refused", Duration::from_secs(30), |m| {
        m.get(RELOADED, &[]) == Some(0.0)
    });
    assert_eq!((up(&m, A), up(&m, B)), (Some(1.0), Some(1.0)));
    assert!(
        exporter.log().contains(
            ":2:127: not valid YAML here: mappings and lists are nested more than 64 deep"
        ),
        "{}",
        exporter.log()
    );

    // Truncated but valid: B is dropped, and the log and the landing page say so.
    std::fs::write(&exporter.config, format!("accounts:\n  - id: \"{A}\"\n")).unwrap();
    exporter.scrape_until("B dropped", Duration::from_secs(30), |m| {
        m.get(RELOADED, &[]) == Some(1.0) && up(m, B).is_none()
    });
    let log = exporter.log();
    let line = log
        .lines()
        .find(|l| l.contains("no longer lists these accounts"))
        .unwrap_or_else(|| panic!("no reload line names the removed account:\n{log}"));
    assert!(line.contains("222222222222 (billing)"), "{line}");
    let (_, page) = exporter.get("/");
    assert!(
        page.contains("removed 1 account(s)</span>, no longer read: 222222222222 (billing)."),
        "{page}"
    );

    // A FIFO in its place: refused without blocking the control loop, which still stops on
    // SIGTERM (it used to wait forever for a writer).
    std::fs::remove_file(&exporter.config).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&exporter.config)
        .status()
        .unwrap()
        .success());
    exporter.scrape_until("the FIFO refused", Duration::from_secs(30), |m| {
        m.get(RELOADED, &[]) == Some(0.0)
    });
    assert!(exporter
        .log()
        .contains("it is a named pipe (FIFO), not a regular file"));
    let (_, status) = exporter.terminate();
    assert!(status.success(), "{status}");
}
