//! The shipped alert rules and Grafana dashboard against real data, end to end:
//! moto ▸ the exporter ▸ Prometheus (Debian's `prometheus`, with
//! deploy/prometheus/iam-key-exporter.rules.yml) ▸ Alertmanager (Debian's
//! `prometheus-alertmanager`) ▸ a webhook receiver run by this test.
//!
//! What an operator checks after deploying: the right keys page (and only those), with their
//! severity, summary, description and runbook; a deleted key's alert resolves; Prometheus
//! scrapes the exporter and shows the alerts; every dashboard panel has data.
//!
//! Owners and exemptions: with `user_tags_as_labels: [owner, team]`, a tagged user's alerts
//! carry `tag_owner` and `tag_team`, and a second Alertmanager running the shipped example
//! routing (deploy/alertmanager/alertmanager.example.yml, only its receivers' URLs and its
//! timers rewritten) delivers them to that team's receiver (or the owner's), and an untagged
//! user's to the default one. Keys exempt by a user tag or a configured rule (user or key)
//! never alert; a key whose exemption has ended does.
//!
//! Needs `prometheus`, `prometheus-alertmanager` and the moto virtualenv
//! (scripts/setup-test-env.sh, or `make test`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::stack::*;
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
const TOO_OLD_SOON: &str = "IAMAccessKeyTooOldSoon";
const UNUSED: &str = "IAMAccessKeyUnused";
const MULTIPLE: &str = "IAMUserMultipleActiveKeys";
const ACCOUNT_DOWN: &str = "IAMKeyExporterAccountDown";
const ROOT_KEY: &str = "IAMRootAccessKeyPresent";
const PASSWORD_UNUSED: &str = "IAMUserPasswordUnused";
const NO_MFA: &str = "IAMUserWithoutMFA";
const ROOT_NO_MFA: &str = "IAMRootWithoutMFA";
const COVERAGE: &str = "IAMKeyExporterCoverageMissing";
const CREDENTIAL_TOO_OLD: &str = "IAMServiceCredentialTooOld";
const BEDROCK_LONG_LIVED: &str = "IAMBedrockAPIKeyLongLived";
const ROLE_UNUSED: &str = "IAMRoleUnused";

/// The tag that exempts a user's keys until a date (the exporter's default).
const EXEMPT_TAG: &str = "iam-key-exporter:exempt-until";
/// Keys with fixed ids: one exempt by a configured rule naming the key, one not.
const RULE_EXEMPT_KEY: &str = "AKIAE2EEXEMPT0000001";
const NOT_EXEMPT_KEY: &str = "AKIAE2ENOTEXEMPT0002";

const TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn shipped_rules_page_the_right_keys_and_every_dashboard_panel_has_data() {
    let moto = Moto::start();
    let (_, d120) = days_ago(120.0);
    let (_, d60) = days_ago(60.0);
    let (_, d400) = days_ago(400.0);
    let (_, d390) = days_ago(390.0);
    let (_, d100) = days_ago(100.0);
    let (_, d80) = days_ago(80.0);
    let (_, d20) = days_ago(20.0);
    let (_, d5) = days_ago(5.0);
    let (_, d2) = days_ago(2.0);
    let (_, d1) = days_ago(1.0);
    let prod = moto.seed(
        PRODUCTION,
        json!([
            // 120 days old, used 2 days ago: too old, not unused. A Bedrock API key as old
            // that never expires (too old and too long-lived), and a young one that expires
            // within 30 days (nothing).
            {"name": "ci-deployer", "keys": [
                {"status": "Active", "create_date": d120, "last_used": used(&d2, "s3")}],
             "service_credentials": [
                {"service": "bedrock.amazonaws.com", "create_date": d120},
                {"service": "bedrock.amazonaws.com", "create_date": d5,
                 "expiration_date": days_ago(-25.0).1}]},
            // 60 days old, never used: unused (idle counts from creation), not too old.
            {"name": "reporting", "keys": [{"status": "Active", "create_date": d60}]},
            // 400 days old and idle, but Inactive: neither.
            {"name": "former-admin", "keys": [
                {"status": "Inactive", "create_date": d400, "last_used": used(&d390, "iam")}]},
            // 5 days old, used yesterday: nothing.
            {"name": "new-service", "keys": [
                {"status": "Active", "create_date": d5, "last_used": used(&d1, "sqs")}]},
            // Owners (routing): too old, to the payments team's receiver.
            {"name": "payments-api", "tags": {"team": "payments", "owner": "alice@example.com"},
             "keys": [{"status": "Active", "create_date": d120, "last_used": used(&d2, "s3")}]},
            // Too old, exempt until a date long past: alerts, to the platform team.
            {"name": "platform-ftp",
             "tags": {"team": "platform", "owner": "carol@example.com",
                      EXEMPT_TAG: "2020-01-31 migration window"},
             "keys": [{"status": "Active", "create_date": d100, "last_used": used(&d1, "s3")}]},
            // Too old; the platform route's child route gives this owner a receiver.
            {"name": "platform-batch", "tags": {"team": "platform", "owner": "bob@example.com"},
             "keys": [{"status": "Active", "create_date": d100, "last_used": used(&d1, "sqs")}]},
            // Too old and never used, but exempt by its tag until 2099: nothing at all.
            {"name": "break-glass",
             "tags": {"team": "payments", "owner": "alice@example.com",
                      EXEMPT_TAG: "2099-12-31 emergency access, reviewed quarterly"},
             "keys": [{"status": "Active", "create_date": d400}]},
            // Too old, exempt by a configured rule for the user: nothing.
            {"name": "vendor-sync",
             "keys": [{"status": "Active", "create_date": d120, "last_used": used(&d1, "s3")}]},
            // Two too-old keys, one exempt by a configured rule naming it: only the other
            // alerts, and the exempt key does not count as a second active key.
            {"name": "two-keys", "keys": [
                {"status": "Active", "create_date": d100, "last_used": used(&d1, "s3"),
                 "access_key_id": RULE_EXEMPT_KEY},
                {"status": "Active", "create_date": d100, "last_used": used(&d1, "s3"),
                 "access_key_id": NOT_EXEMPT_KEY}]},
            // 80 days old, used yesterday: due for rotation in 10 days, within the default
            // policy's notice (14 days): IAMAccessKeyTooOldSoon, and the dashboard's "due
            // soon" panels have data.
            {"name": "rotation-due", "keys": [
                {"status": "Active", "create_date": d80, "last_used": used(&d1, "s3")}]},
        ]),
    );
    // A role last used 100 days ago (IAMRoleUnused) and one used yesterday (nothing).
    moto.post(
        "/_launcher/roles",
        json!({"account": PRODUCTION, "roles": [
            {"name": "legacy-etl", "create_date": d400, "last_used": {"date": d100, "region": "eu-west-1"}},
            {"name": "web", "create_date": d400, "last_used": {"date": d1, "region": "eu-west-1"}},
        ]}),
    );
    let (old_key, unused_key, inactive_key, fresh_key) =
        (&prod[0][0], &prod[1][0], &prod[2][0], &prod[3][0]);
    let (payments_key, expired_key, bob_key, break_glass_key, vendor_key) = (
        &prod[4][0],
        &prod[5][0],
        &prod[6][0],
        &prod[7][0],
        &prod[8][0],
    );
    assert_eq!(prod[9], [RULE_EXEMPT_KEY, NOT_EXEMPT_KEY]);
    let due_soon_key = &prod[10][0];
    // Without these the last-used column of unused keys, "Users with > 1 active key",
    // "Accounts down" and the error panels would be legitimately empty.
    let staging = moto.seed(
        STAGING,
        json!([
            {"name": "legacy-batch", "keys": [
                {"status": "Active", "create_date": d400, "last_used": used(&d100, "dynamodb")},
                {"status": "Active", "create_date": d20, "last_used": used(&d1, "dynamodb")}]},
        ]),
    );
    let (staging_old_key, staging_new_key) = (&staging[0][0], &staging[0][1]);
    // A few throttled IAM requests: the pacing panels have data.
    moto.faults(json!([
        {"kind": "access_denied", "operation": "AssumeRole", "account": SANDBOX},
        {"kind": "throttle", "operation": "ListAccessKeys", "account": STAGING, "count": 3}
    ]));
    let (_, d60_pw) = days_ago(60.0);
    moto.seed(
        ROOTED,
        json!([
            {"name": "billing-export", "keys": [
                {"status": "Active", "create_date": d5, "last_used": used(&d1, "s3")}]},
            // A console password last used 60 days ago (set 400 days ago, at creation), and
            // no MFA device: IAMUserPasswordUnused and IAMUserWithoutMFA, to payments.
            {"name": "console-admin", "create_date": d400, "password": true,
             "password_last_used": d60_pw, "tags": {"team": "payments", "owner": "dana@example.com"},
             "keys": []},
        ]),
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
user_tags_as_labels: [owner, team]
exemptions:
  rules:
    - {{account: "{PRODUCTION}", user: vendor-sync, reason: "vendor cannot rotate", until: 2099-12-31}}
    - {{account: "{PRODUCTION}", user: two-keys, access_key_id: {RULE_EXEMPT_KEY}, reason: "legacy client", until: 2099-12-31}}
accounts:
  - {{id: "{PRODUCTION}", name: production, labels: {{tag_team: platform}}}}
  - {{id: "{STAGING}", name: staging, labels: {{tag_team: data}}}}
  - {{id: "{SANDBOX}", name: sandbox, labels: {{tag_team: data}}}}
  - {{id: "{ROOTED}", name: legacy-root, source: credential_report, labels: {{tag_team: finance}}}}
"#
        ),
    );
    exporter.wait_ready(Duration::from_secs(30));

    let shipped = ShippedRules::load();
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook.url);
    // The shipped example routing, each receiver a webhook of its own.
    let routing = ShippedRouting::load();
    let receivers: BTreeMap<String, Webhook> = routing
        .receivers()
        .into_iter()
        .map(|r| (r, Webhook::start()))
        .collect();
    let urls = receivers
        .iter()
        .map(|(r, w)| (r.clone(), w.url.clone()))
        .collect();
    let routed = Alertmanager::start_with(&routing.for_test(&urls));
    let prometheus = Prometheus::start_to(
        &[("iam-key-exporter", &[exporter.address()])],
        &[
            alertmanager.url.trim_start_matches("http://"),
            routed.url.trim_start_matches("http://"),
        ],
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
    let too_old_payments = id(TOO_OLD, "production", "payments-api", payments_key);
    let too_old_expired = id(TOO_OLD, "production", "platform-ftp", expired_key);
    let too_old_bob = id(TOO_OLD, "production", "platform-batch", bob_key);
    let too_old_two_keys = id(TOO_OLD, "production", "two-keys", NOT_EXEMPT_KEY);
    let console_unused = id(PASSWORD_UNUSED, "legacy-root", "console-admin", "");
    let console_no_mfa = id(NO_MFA, "legacy-root", "console-admin", "");
    // Each key alert, with the days its description must show (`humanizeDuration` of the
    // age or idle time).
    let key_alert_days = [
        (too_old_prod.clone(), 120),
        (id(UNUSED, "production", "reporting", unused_key), 60),
        (id(TOO_OLD, "staging", "legacy-batch", staging_old_key), 400),
        (id(UNUSED, "staging", "legacy-batch", staging_old_key), 100),
        (too_old_payments.clone(), 120),
        (too_old_expired.clone(), 100),
        (too_old_bob.clone(), 100),
        (too_old_two_keys.clone(), 100),
    ];
    let expected_key_alerts: BTreeSet<AlertId> =
        key_alert_days.iter().map(|(a, _)| a.clone()).collect();
    let mut expected_firing = expected_key_alerts.clone();
    expected_firing.insert(id(MULTIPLE, "staging", "legacy-batch", ""));
    expected_firing.insert(id(TOO_OLD_SOON, "production", "rotation-due", due_soon_key));
    expected_firing.insert(id(ACCOUNT_DOWN, "sandbox", "", ""));
    expected_firing.insert(id(ROOT_KEY, "legacy-root", "", ""));
    expected_firing.insert(id(ROOT_NO_MFA, "legacy-root", "", ""));
    expected_firing.insert(console_unused.clone());
    expected_firing.insert(console_no_mfa.clone());
    expected_firing.insert(id(CREDENTIAL_TOO_OLD, "production", "ci-deployer", ""));
    expected_firing.insert(id(BEDROCK_LONG_LIVED, "production", "ci-deployer", ""));
    expected_firing.insert(id(ROLE_UNUSED, "production", "", ""));
    // The api source cannot see root, MFA or console passwords: said for each such account,
    // the one that cannot be read too (its source is known without reading it).
    let not_covered: Vec<AlertId> = ["production", "staging", "sandbox"]
        .into_iter()
        .map(|account| id(COVERAGE, account, "", ""))
        .collect();
    expected_firing.extend(not_covered.iter().cloned());

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
    // Exempt: break-glass (tag), vendor-sync (rule for the user), two-keys' RULE_EXEMPT_KEY
    // (rule for the key).
    let rule_exempt_key = RULE_EXEMPT_KEY.to_string();
    let forbidden_keys = [
        inactive_key,
        fresh_key,
        staging_new_key,
        break_glass_key,
        vendor_key,
        &rule_exempt_key,
    ];
    let forbidden_users = ["former-admin", "new-service", "break-glass", "vendor-sync"];
    webhook.assert_none_about(&forbidden_keys, &forbidden_users);

    // Every notification: shipped severity and runbook_url, rendered summary and description.
    for alert in webhook.alerts() {
        shipped.assert_annotations(&alert, &[]);
    }
    // The coverage alert names what the account's data lacks.
    for alert_id in &not_covered {
        let alert = wait_for(&format!("{alert_id:?} at the webhook"), TIMEOUT, || {
            webhook.find(alert_id, "firing")
        });
        let description = shipped.assert_annotations(&alert, &["account_name", "account_id"]);
        assert!(
            description.contains("does not cover console_password, root, user_mfa:"),
            "{description}"
        );
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
    // Owners: the tagged users' alerts carry tag_owner and tag_team, and name them.
    for (alert_id, owner, team) in [
        (&too_old_payments, "alice@example.com", "payments"),
        (&too_old_expired, "carol@example.com", "platform"),
        (&too_old_bob, "bob@example.com", "platform"),
        (&console_unused, "dana@example.com", "payments"),
        (&console_no_mfa, "dana@example.com", "payments"),
    ] {
        let alert = wait_for(&format!("{alert_id:?} at the webhook"), TIMEOUT, || {
            webhook.find(alert_id, "firing")
        });
        assert_eq!(alert["labels"]["tag_owner"], owner, "{alert:#}");
        assert_eq!(alert["labels"]["tag_team"], team, "{alert:#}");
        let description = shipped.assert_annotations(&alert, &["user", "account_name"]);
        assert!(
            description.contains(&format!("(owner {owner}, team {team})")),
            "{alert_id:?}: {description:?}"
        );
    }
    // The untagged user's alert has neither label (and its description no owner).
    let untagged = webhook.find(&too_old_prod, "firing").unwrap();
    for label in ["tag_owner", "tag_team"] {
        assert!(untagged["labels"].get(label).is_none(), "{untagged:#}");
    }
    // The console password was last used 60 days ago.
    let unused_pw = webhook.find(&console_unused, "firing").unwrap();
    let description = unused_pw["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains("was last used 60d "),
        "{description:?}"
    );
    let root_no_mfa = wait_for("IAMRootWithoutMFA at the webhook", TIMEOUT, || {
        webhook.find(&id(ROOT_NO_MFA, "legacy-root", "", ""), "firing")
    });
    shipped.assert_annotations(&root_no_mfa, &["account_name", "account_id"]);
    assert_eq!(root_no_mfa["labels"]["severity"], "critical");

    // The shipped routing: each team's alerts at its receiver (bob's at his own), the rest at
    // the default receiver, grouped by owner within a team.
    let routed_expected: BTreeMap<&str, BTreeSet<AlertId>> = BTreeMap::from([
        (
            "team-payments",
            BTreeSet::from([
                too_old_payments.clone(),
                console_unused.clone(),
                console_no_mfa.clone(),
            ]),
        ),
        ("team-platform", BTreeSet::from([too_old_expired.clone()])),
        ("platform-bob", BTreeSet::from([too_old_bob.clone()])),
        (
            "security-default",
            expected_firing
                .iter()
                .filter(|a| {
                    ![
                        &too_old_payments,
                        &console_unused,
                        &console_no_mfa,
                        &too_old_expired,
                        &too_old_bob,
                    ]
                    .contains(a)
                })
                .cloned()
                .collect(),
        ),
    ]);
    assert_eq!(
        routed_expected.keys().collect::<Vec<_>>(),
        receivers.keys().collect::<Vec<_>>(),
        "the shipped example's receivers"
    );
    let routed_firing = |name: &str| -> BTreeSet<AlertId> {
        receivers[name]
            .alerts()
            .iter()
            .filter(|a| a["status"] == "firing")
            .map(|a| AlertId::of(&a["labels"]))
            .collect()
    };
    let mut last = BTreeMap::new();
    wait_for_or(TIMEOUT, || {
        last = routed_expected
            .keys()
            .map(|r| (*r, routed_firing(r)))
            .collect::<BTreeMap<_, _>>();
        routed_expected
            .iter()
            .all(|(r, want)| last[r].is_superset(want))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!("routed alerts (receiver → firing alerts):\n{last:#?}\nexpected at least:\n{routed_expected:#?}")
    });
    for (name, want) in &routed_expected {
        let got = routed_firing(name);
        // Before the first scrape, IAMKeyExporterDown fires for a moment (`for: 0s`): it
        // belongs to the default receiver too.
        let extra: Vec<&AlertId> = got
            .difference(want)
            .filter(|a| !(*name == "security-default" && a.alertname == "IAMKeyExporterDown"))
            .collect();
        assert!(
            extra.is_empty(),
            "receiver {name} got alerts it should not: {extra:#?}"
        );
        for body in receivers[*name].bodies() {
            assert_eq!(body["receiver"], *name, "{body:#}");
        }
        receivers[*name].assert_none_about(&forbidden_keys, &forbidden_users);
    }
    // Within a team, one notification group per owner.
    for body in receivers["team-payments"].bodies() {
        assert_eq!(body["commonLabels"]["tag_team"], "payments", "{body:#}");
        assert!(
            body["groupLabels"]["tag_owner"].is_string(),
            "not grouped by owner: {body:#}"
        );
    }
    for body in receivers["security-default"].bodies() {
        assert!(
            body["commonLabels"].get("tag_team").is_none(),
            "a team's alert at the default receiver: {body:#}"
        );
    }

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

    // Every dashboard query returns data.
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
    webhook.assert_none_about(&forbidden_keys, &forbidden_users);
    for w in receivers.values() {
        w.assert_none_about(&forbidden_keys, &forbidden_users);
        assert!(w.errors().is_empty(), "webhook: {:?}", w.errors());
    }
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

// ----------------------------------------------------------------------------------------
// Dashboard

/// A panel query, with Grafana's variables substituted.
struct DashboardQuery {
    what: String,
    expr: String,
}

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

/// Sends every panel query of deploy/grafana/iam-key-exporter.json to Prometheus: each must
/// return data (the world has a credential_report account, exemptions, owners and throttled
/// requests for the panels on them), and every variable must have values.
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

/// What this test asks of the alerts the webhook received.
trait KeyAlerts {
    fn key_alerts(&self, status: &str) -> BTreeSet<AlertId>;
    fn find(&self, id: &AlertId, status: &str) -> Option<Value>;
    fn assert_none_about(&self, keys: &[&String], users: &[&str]);
}

impl KeyAlerts for Webhook {
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
