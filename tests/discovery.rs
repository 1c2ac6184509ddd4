//! Accounts found through AWS Organizations (moto's, seeded by the launcher, with pages
//! capped so every NextToken is followed), re-discovered while the exporter runs, and shared
//! among replicas by `--shard.*`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::stack::*;
use common::*;
use serde_json::{json, Value};

/// The management account: moto's default, whose credentials the exporter runs with.
const MGMT: &str = "123456789012";
const PAYMENTS: &str = "210000000001";
const SEARCH: &str = "210000000002";
const SANDBOX: &str = "210000000003";
const OLD: &str = "210000000004";
const CLOSING: &str = "210000000005";
const EXCLUDED: &str = "210000000006";
/// Listed in the file only; not in the organization.
const LEGACY: &str = "310000000001";

const INFO: &str = "aws_iam_account_info";
const KEY_CREATED: &str = "aws_iam_access_key_created_timestamp_seconds";

fn organization(moto: &Moto, accounts: Value) -> Value {
    moto.post(
        "/_launcher/organization",
        json!({
            "ous": [{"name": "prod", "children": [{"name": "prod-eu"}]}, {"name": "sandbox"}],
            "accounts": accounts,
        }),
    )
}

fn account(id: &str, name: &str, ou: &str, state: &str, tags: Value) -> Value {
    json!({"id": id, "name": name, "ou": ou, "state": state, "tags": tags})
}

/// Account ids with an `aws_iam_account_info` series.
fn read_accounts(m: &Metrics) -> BTreeSet<String> {
    m.find(INFO, &[])
        .iter()
        .map(|s| s.labels["account_id"].clone())
        .collect()
}

fn discovered(m: &Metrics, state: &str) -> Option<f64> {
    m.get("iam_key_exporter_discovered_accounts", &[("state", state)])
}

#[test]
fn discovery_reads_the_selected_part_of_the_organization_and_follows_its_changes() {
    let moto = Moto::start();
    moto.post("/_launcher/organizations_paging", json!({"max_results": 2}));
    let org = organization(
        &moto,
        json!([
            account(
                PAYMENTS,
                "payments-prod",
                "prod",
                "ACTIVE",
                json!({"team": "payments", "cost-center": "42", "other": "x"})
            ),
            account(
                SEARCH,
                "search-prod",
                "prod/prod-eu",
                "ACTIVE",
                json!({"team": "search"})
            ),
            account(
                SANDBOX,
                "sandbox-1",
                "sandbox",
                "ACTIVE",
                json!({"team": "lab"})
            ),
            account(OLD, "old", "prod", "SUSPENDED", json!({})),
            account(CLOSING, "closing", "prod", "PENDING_CLOSURE", json!({})),
            account(EXCLUDED, "excluded", "prod", "ACTIVE", json!({})),
        ]),
    );
    let prod = org["ous"]["prod"].as_str().unwrap().to_string();
    moto.seed(PAYMENTS, users("pay", 3, 1));
    moto.seed(SEARCH, users("srch", 2, 2));
    moto.seed(SANDBOX, users("sb", 1, 1));
    moto.seed(LEGACY, users("leg", 1, 1));

    let exporter = Exporter::start(
        &moto,
        &format!(
            r#"
refresh_interval: 30m
discovery:
  organizations:
    role_arn: arn:aws:iam::{MGMT}:role/IAMKeyExporterOrgReader
    include_ous: [{prod}]
    exclude_accounts: ["{EXCLUDED}"]
    tags_as_labels: [team, cost-center]
    refresh_interval: 5s
accounts:
  - {{id: "{SEARCH}", name: search-renamed, labels: {{env: prod}}}}
  - {{id: "{LEGACY}", name: legacy}}
"#
        ),
    );
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape();
    promtool_check_metrics(&m.raw).unwrap_or_else(|e| panic!("{e}\n{}", m.raw));

    // The prod subtree, ACTIVE only, minus the excluded id, plus the file's own account.
    assert_eq!(
        read_accounts(&m),
        BTreeSet::from([PAYMENTS.into(), SEARCH.into(), LEGACY.into()])
    );
    let info = |id: &str| m.find(INFO, &[("account_id", id)])[0].labels.clone();
    let payments = info(PAYMENTS);
    assert_eq!(
        payments["account_name"], "payments-prod",
        "named by Organizations"
    );
    assert_eq!(payments["tag_team"], "payments");
    assert_eq!(payments["tag_cost_center"], "42");
    assert!(
        !payments.contains_key("tag_other"),
        "only the configured tags"
    );
    let search = info(SEARCH);
    assert_eq!(
        search["account_name"], "search-renamed",
        "the entry's name wins"
    );
    assert_eq!(search["env"], "prod");
    assert_eq!(search["tag_team"], "search");
    let keys = |m: &Metrics, id: &str| m.find(KEY_CREATED, &[("account_id", id)]).len();
    assert_eq!(
        (keys(&m, PAYMENTS), keys(&m, SEARCH), keys(&m, LEGACY)),
        (3, 4, 1)
    );
    let origin = |m: &Metrics, o: &str| m.get("iam_key_exporter_accounts", &[("origin", o)]);
    assert_eq!(origin(&m, "organizations"), Some(2.0));
    assert_eq!(origin(&m, "static"), Some(1.0));
    assert_eq!(discovered(&m, "ACTIVE"), Some(2.0));
    assert_eq!(discovered(&m, "SUSPENDED"), Some(1.0));
    assert_eq!(discovered(&m, "PENDING_CLOSURE"), Some(1.0));
    assert_eq!(m.get("iam_key_exporter_discovery_up", &[]), Some(1.0));

    // One discovery's calls: a walk of prod (4 accounts: 2 pages; 1 child OU) and prod-eu
    // (1 account, no child), and the tags of the two accounts read (pages of 2); never
    // ListAccounts.
    moto.post("/_launcher/counts/reset", json!({}));
    let before = m.get(
        "iam_key_exporter_discovery_last_success_timestamp_seconds",
        &[],
    );
    exporter.scrape_until("the next discovery", Duration::from_secs(20), |m| {
        m.get(
            "iam_key_exporter_discovery_last_success_timestamp_seconds",
            &[],
        ) != before
    });
    let calls: BTreeMap<&str, u64> = [
        "ListAccounts",
        "ListAccountsForParent",
        "ListOrganizationalUnitsForParent",
        "ListTagsForResource",
        "ListRoots",
        "AssumeRole",
    ]
    .into_iter()
    .map(|op| (op, moto.count(MGMT, op)))
    .collect();
    eprintln!("calls of one discovery: {calls:?}");
    assert_eq!(calls["ListAccounts"], 0);
    assert_eq!(calls["ListRoots"], 0, "the walk starts at the included OU");
    assert_eq!(calls["ListAccountsForParent"], 3);
    assert_eq!(calls["ListOrganizationalUnitsForParent"], 2);
    assert_eq!(
        calls["ListTagsForResource"], 3,
        "payments has 3 tags: 2 pages"
    );
    assert_eq!(
        calls["AssumeRole"], 0,
        "the discovery role's session is reused"
    );

    // The organization changes: sandbox-1 moves into prod, payments is suspended. The next
    // discovery starts the one and stops the other; search, unchanged, keeps its session.
    let search_sessions = moto.count(SEARCH, "AssumeRole");
    organization(
        &moto,
        json!([
            account(
                PAYMENTS,
                "payments-prod",
                "prod",
                "SUSPENDED",
                json!({"team": "payments"})
            ),
            account(
                SEARCH,
                "search-prod",
                "prod/prod-eu",
                "ACTIVE",
                json!({"team": "search"})
            ),
            account(
                SANDBOX,
                "sandbox-1",
                "prod",
                "ACTIVE",
                json!({"team": "lab"})
            ),
            account(OLD, "old", "prod", "SUSPENDED", json!({})),
            account(CLOSING, "closing", "prod", "PENDING_CLOSURE", json!({})),
            account(EXCLUDED, "excluded", "prod", "ACTIVE", json!({})),
        ]),
    );
    let m = exporter.scrape_until("sandbox-1 in, payments out", Duration::from_secs(30), |m| {
        read_accounts(m) == BTreeSet::from([SEARCH.into(), SANDBOX.into(), LEGACY.into()])
            && keys(m, SANDBOX) == 1
    });
    assert_eq!(keys(&m, PAYMENTS), 0, "a suspended account's series vanish");
    assert!(m
        .find("iam_key_exporter_account_up", &[("account_id", PAYMENTS)])
        .is_empty());
    assert_eq!(
        m.find(INFO, &[("account_id", SANDBOX)])[0].labels["tag_team"],
        "lab"
    );
    assert_eq!(discovered(&m, "ACTIVE"), Some(2.0));
    assert_eq!(discovered(&m, "SUSPENDED"), Some(2.0));
    assert_eq!(moto.count(SEARCH, "AssumeRole"), search_sessions);

    // Discovery fails: the account list stays as it was, and the failure shows.
    moto.faults(json!([{"kind": "access_denied", "operation": "ListAccountsForParent"}]));
    let m = exporter.scrape_until("discovery down", Duration::from_secs(30), |m| {
        m.get("iam_key_exporter_discovery_up", &[]) == Some(0.0)
    });
    assert!(
        m.get(
            "iam_key_exporter_refresh_errors_total",
            &[("stage", "discovery"), ("code", "AccessDeniedException")]
        )
        .is_some_and(|n| n >= 1.0),
        "{}",
        m.raw
    );
    assert_eq!(
        read_accounts(&m),
        BTreeSet::from([SEARCH.into(), SANDBOX.into(), LEGACY.into()])
    );
    let (_, page) = exporter.get("/");
    assert!(
        page.contains("Discovery (AWS Organizations): <span class=\"down\">down</span>")
            && page.contains("AccessDeniedException (discovery)"),
        "{page}"
    );
    assert_eq!(exporter.get("/-/ready").0, 200, "readiness does not flap");
}

#[test]
fn a_first_discovery_that_fails_leaves_the_exporter_running_but_not_ready() {
    let moto = Moto::start();
    organization(
        &moto,
        json!([account(PAYMENTS, "payments", "", "ACTIVE", json!({}))]),
    );
    moto.seed(PAYMENTS, users("pay", 1, 1));
    moto.seed(LEGACY, users("leg", 1, 1));
    moto.faults(json!([{"kind": "access_denied", "operation": "ListAccounts", "count": 1}]));
    let exporter = Exporter::start(
        &moto,
        &format!(
            "discovery: {{organizations: {{refresh_interval: 1h}}}}\naccounts:\n  - id: \"{LEGACY}\"\n"
        ),
    );
    let m = exporter.scrape_until("the static account read", Duration::from_secs(30), |m| {
        m.get("iam_key_exporter_account_up", &[("account_id", LEGACY)]) == Some(1.0)
            && m.get("iam_key_exporter_discovery_up", &[]) == Some(0.0)
    });
    assert_eq!(
        exporter.get("/-/ready").0,
        503,
        "ready before the account list is known"
    );
    assert!(m.find(INFO, &[("account_id", PAYMENTS)]).is_empty());
    // Retried well before the hour is up; then the organization's accounts are read.
    exporter.wait_ready(Duration::from_secs(60));
    let m = exporter.scrape();
    assert_eq!(m.get("iam_key_exporter_discovery_up", &[]), Some(1.0));
    assert_eq!(
        read_accounts(&m),
        BTreeSet::from([MGMT.into(), PAYMENTS.into(), LEGACY.into()])
    );
}

#[test]
fn three_shards_read_the_organization_once_and_alert_as_one_exporter() {
    let moto = Moto::start();
    moto.post("/_launcher/organizations_paging", json!({"max_results": 3}));
    let ids: Vec<String> = (1..=9).map(|i| format!("2200000000{i:02}")).collect();
    let accounts: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| account(id, &format!("team-{i}"), "", "ACTIVE", json!({})))
        .collect();
    let mut all_accounts = accounts.clone();
    all_accounts.push(account("220000000099", "gone", "", "CLOSED", json!({})));
    organization(&moto, Value::Array(all_accounts));
    let (_, d200) = days_ago(200.0);
    let (_, d100) = days_ago(100.0);
    let (_, d1) = days_ago(1.0);
    for id in ids.iter().map(String::as_str).chain([MGMT]) {
        moto.seed(
            id,
            json!([
                // Too old (200 days, used yesterday) and unused (100 days, never used).
                {"name": "ci", "keys": [{"create_date": d200, "last_used": {"date": d1, "service": "s3", "region": "eu-west-1"}}]},
                {"name": "old-app", "keys": [{"create_date": d100}]},
                {"name": "fresh", "keys": [{}]},
            ]),
        );
    }
    let config = "refresh_interval: 30m\ndiscovery: {organizations: {}}\n";
    let shards: Vec<Exporter> = (0..3)
        .map(|i| {
            let mut e = if i == 2 {
                // A StatefulSet pod finds its shard in its hostname.
                Exporter::spawn_env(
                    &moto,
                    config,
                    &["--shard.total=3", "--shard.index=auto"],
                    &[("HOSTNAME", "iam-key-exporter-2")],
                )
            } else {
                Exporter::spawn(
                    &moto,
                    config,
                    &["--shard.total=3", &format!("--shard.index={i}")],
                )
            };
            e.wait_listening();
            e
        })
        .collect();
    let single = Exporter::start(&moto, config);
    // A replica started with shard 1's index by mistake: with shards 1 and 2 it makes a job
    // of three replicas in which shard 0 is read by nobody.
    let mut duplicate = Exporter::spawn(&moto, config, &["--shard.total=3", "--shard.index=1"]);
    duplicate.wait_listening();
    for e in shards.iter().chain([&single, &duplicate]) {
        e.wait_ready(Duration::from_secs(60));
    }

    // The union of the shards is the discovered ACTIVE set, each account on exactly one
    // shard, the one its id hashes to; every key as the single exporter shows it.
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    let mut sharded_keys = BTreeSet::new();
    for (i, e) in shards.iter().enumerate() {
        let m = e.scrape();
        assert_eq!(m.get("iam_key_exporter_shards", &[]), Some(3.0));
        assert_eq!(m.get("iam_key_exporter_shard_index", &[]), Some(i as f64));
        for id in read_accounts(&m) {
            assert_eq!(
                iam_key_exporter::accounts::shard_of(&id, 3),
                i as u32,
                "{id} on shard {i}"
            );
            assert!(owner.insert(id.clone(), i).is_none(), "{id} on two shards");
        }
        sharded_keys.extend(key_series(&m));
    }
    let single_m = single.scrape();
    let mut expected: BTreeSet<String> = ids.iter().cloned().collect();
    expected.insert(MGMT.into());
    assert_eq!(owner.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(read_accounts(&single_m), expected);
    assert_eq!(sharded_keys, key_series(&single_m));
    assert_eq!(sharded_keys.len(), 30);
    let per_shard: Vec<usize> = (0..3)
        .map(|i| owner.values().filter(|o| **o == i).count())
        .collect();
    assert!(per_shard.iter().all(|n| *n > 0), "{per_shard:?}");

    // Prometheus scraping the three shards fires exactly the alerts it fires for the single
    // exporter, and none of the sharding alerts.
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&webhook.url);
    let targets: Vec<&str> = shards.iter().map(|e| e.address()).collect();
    let misconfigured = [
        shards[1].address(),
        shards[2].address(),
        duplicate.address(),
    ];
    let prometheus = Prometheus::start_jobs(
        &[
            ("sharded", &targets),
            ("single", &[single.address()]),
            ("misconfigured", &misconfigured),
        ],
        alertmanager.url.trim_start_matches("http://"),
        &ShippedRules::load().with_for_zero(),
    );
    let firing = |job: &str| -> BTreeSet<(String, String, String)> {
        prometheus
            .alerts()
            .iter()
            .filter(|a| a["state"] == "firing" && a["labels"]["job"] == job)
            .map(|a| {
                let l = &a["labels"];
                let s = |k: &str| l[k].as_str().unwrap_or("").to_string();
                (s("alertname"), s("account_id"), s("access_key_id"))
            })
            .collect()
    };
    let mut last = (BTreeSet::new(), BTreeSet::new());
    let settled = wait_for_or(Duration::from_secs(90), || {
        last = (firing("sharded"), firing("single"));
        // Both old keys of each of the 10 accounts are older than 90 days.
        let too_old = last
            .1
            .iter()
            .filter(|a| a.0 == "IAMAccessKeyTooOld")
            .count();
        (too_old == 20 && last.0 == last.1).then_some(())
    });
    assert!(
        settled.is_some(),
        "sharded:\n{:#?}\nsingle:\n{:#?}",
        last.0,
        last.1
    );
    let names: BTreeSet<&str> = last.0.iter().map(|a| a.0.as_str()).collect();
    assert!(names.contains("IAMAccessKeyUnused"), "{names:?}");
    for quiet in [
        "IAMKeyExporterShardingMismatch",
        "IAMKeyExporterAccountsUnread",
        "IAMKeyExporterDiscoveryFailing",
        "IAMKeyExporterShardIndexDuplicated",
        "IAMKeyExporterShardMissing",
    ] {
        assert!(!names.contains(quiet), "{quiet} fires: {:#?}", last.0);
    }

    // The misconfigured job: shard 1 twice, shard 0 by nobody.
    let want: BTreeSet<(String, String)> = [
        ("IAMKeyExporterShardIndexDuplicated", "1"),
        ("IAMKeyExporterShardMissing", ""),
    ]
    .iter()
    .map(|(a, i)| (a.to_string(), i.to_string()))
    .collect();
    let mut seen = BTreeSet::new();
    let fired = wait_for_or(Duration::from_secs(90), || {
        seen = prometheus
            .alerts()
            .iter()
            .filter(|a| a["state"] == "firing" && a["labels"]["job"] == "misconfigured")
            .filter(|a| {
                a["labels"]["alertname"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Shard")
            })
            .map(|a| {
                let l = &a["labels"];
                let s = |k: &str| l[k].as_str().unwrap_or("").to_string();
                (s("alertname"), s("shard_index"))
            })
            .collect();
        (seen == want).then_some(())
    });
    assert!(
        fired.is_some(),
        "shard alerts of the misconfigured job: {seen:#?}"
    );
}

/// Every per-key sample as `metric account key value`, for comparing exporters.
fn key_series(m: &Metrics) -> BTreeSet<String> {
    m.find(KEY_CREATED, &[])
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {}",
                s.labels["account_id"], s.labels["user"], s.labels["access_key_id"], s.value
            )
        })
        .collect()
}

/// An organization that suddenly answers with no accounts (a wrong OU, a role that cannot see
/// it, an outage) or with far fewer is not believed at once: the accounts read stay, their
/// series and alerts with them, while a metric and `/` say a result is held back; only
/// `confirmations` such results in a row are applied.
#[test]
fn a_discovery_that_drops_too_many_accounts_is_held_until_it_repeats() {
    let moto = Moto::start();
    let ids: Vec<String> = (1..=4).map(|i| format!("2300000000{i:02}")).collect();
    // Which of the four accounts are in the prod OU; the others are moved to sandbox.
    let place = |in_prod: usize| {
        let accounts: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let ou = if i < in_prod { "prod" } else { "sandbox" };
                account(id, &format!("team-{i}"), ou, "ACTIVE", json!({}))
            })
            .collect();
        organization(&moto, Value::Array(accounts))["ous"]["prod"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let prod = place(4);
    for id in &ids {
        moto.seed(id, users("u", 1, 1));
    }
    let exporter = Exporter::start(
        &moto,
        &format!(
            "refresh_interval: 30m\ndiscovery:\n  organizations:\n    include_ous: [{prod}]\n    refresh_interval: 5s\n    shrink_guard: {{max_drop: 25%, confirmations: 4}}\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(60));
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    let m = exporter.scrape();
    assert_eq!(read_accounts(&m), all);
    let held = |m: &Metrics| m.get("iam_key_exporter_discovery_shrink_held", &[]);
    let kept = |m: &Metrics| m.get("iam_key_exporter_discovery_shrink_kept_accounts", &[]);
    assert_eq!(held(&m), Some(0.0));
    assert_eq!(kept(&m), None);
    let keys = |m: &Metrics| m.find(KEY_CREATED, &[]).len();
    assert_eq!(keys(&m), 4);

    // Every account leaves the OU: the empty answer is held, nothing vanishes.
    place(0);
    let m = exporter.scrape_until("an empty discovery held", Duration::from_secs(30), |m| {
        held(m).is_some_and(|n| n >= 1.0)
    });
    assert_eq!(
        read_accounts(&m),
        all,
        "the accounts in force are still read"
    );
    assert_eq!(keys(&m), 4, "and their keys still shown");
    assert_eq!(kept(&m), Some(4.0));
    assert_eq!(
        discovered(&m, "ACTIVE"),
        None,
        "what the discovery found is shown"
    );
    assert_eq!(m.get("iam_key_exporter_discovery_up", &[]), Some(1.0));
    let (_, page) = exporter.get("/");
    assert!(
        page.contains("Account list held back")
            && page.contains("found 0 ACTIVE account(s) where the list in force has 4"),
        "{page}"
    );
    // The organization comes back before it was confirmed: nothing happened.
    place(4);
    let m = exporter.scrape_until("the hold lifted", Duration::from_secs(30), |m| {
        held(m) == Some(0.0)
    });
    assert_eq!(read_accounts(&m), all);
    assert_eq!(kept(&m), None);
    assert!(!exporter.get("/").1.contains("Account list held back"));

    // Half of the organization leaves (50% > max_drop 25%): held three times, applied at
    // the fourth discovery in a row.
    let log_before = exporter.log().len();
    place(2);
    let m = exporter.scrape_until("a halved discovery held", Duration::from_secs(30), |m| {
        held(m).is_some_and(|n| n >= 1.0)
    });
    assert_eq!(read_accounts(&m), all);
    let m = exporter.scrape_until("the halved list applied", Duration::from_secs(60), |m| {
        read_accounts(m).len() == 2
    });
    assert_eq!(read_accounts(&m), ids[..2].iter().cloned().collect());
    assert_eq!(held(&m), Some(0.0));
    assert_eq!(kept(&m), None);
    let log = exporter.log()[log_before..].to_string();
    let holds: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("keeping that list"))
        .collect();
    assert_eq!(holds.len(), 3, "{log}");
    for (i, line) in holds.iter().enumerate() {
        assert!(line.contains(&format!("held={}", i + 1)), "{line}");
    }
    assert!(
        log.contains("applying a discovery that drops many accounts: 4 in a row"),
        "{log}"
    );
}
