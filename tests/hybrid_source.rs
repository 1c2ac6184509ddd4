//! The `hybrid` source against moto: the credential report plus ListAccessKeys only where
//! key ids are not known gives exactly the `api` source's key series, including around the
//! report's staleness (a key created after it, a user deleted after it, a first key deleted),
//! for a fraction of the calls.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const H: &str = "111111111111";
const KEY_CREATED: &str = "aws_iam_access_key_created_timestamp_seconds";
const KEY_LAST_USED: &str = "aws_iam_access_key_last_used_timestamp_seconds";

/// (user, access_key_id, status, created, last used, service) of every key of H.
fn keys(m: &Metrics) -> BTreeSet<String> {
    m.find(KEY_CREATED, &[("account_id", H)])
        .iter()
        .map(|s| {
            let l = &s.labels;
            let id = &l["access_key_id"];
            let used = m.get(KEY_LAST_USED, &[("account_id", H), ("access_key_id", id)]);
            let service = m
                .find(
                    "aws_iam_access_key_last_used_info",
                    &[("account_id", H), ("access_key_id", id)],
                )
                .first()
                .map(|s| s.labels["service"].clone());
            format!(
                "{} {id} {} {} {used:?} {service:?}",
                l["user"], l["status"], s.value
            )
        })
        .collect()
}

fn start(moto: &Moto, source: &str) -> Exporter {
    let e = Exporter::start(
        moto,
        &format!(
            "refresh_interval: 2s\nrefresh_timeout: 1m\naws: {{credential_report_timeout: 50s}}\n\
             accounts:\n  - {{id: \"{H}\", source: {source}}}\n"
        ),
    );
    e.wait_ready(Duration::from_secs(60));
    e
}

fn calls(moto: &Moto) -> Value {
    moto.get("/_launcher/counts")[H].clone()
}

#[test]
fn hybrid_gives_the_api_sources_keys_for_a_fraction_of_the_calls() {
    let moto = Moto::start();
    let (_, d300) = days_ago(300.0);
    let (_, d200) = days_ago(200.0);
    let (_, d10) = days_ago(10.0);
    let mut users = Vec::new();
    for i in 0..30 {
        let keys: Vec<Value> = match i % 5 {
            0 => vec![],
            1 => vec![json!({"create_date": d300})],
            2 => vec![
                json!({"create_date": d300, "status": "Inactive"}),
                json!({"create_date": d200, "last_used": {"date": d10, "service": "s3", "region": "eu-west-1"}}),
            ],
            3 => vec![
                json!({"create_date": d200, "last_used": {"date": d10, "service": "ec2", "region": "us-east-1"}}),
            ],
            _ => vec![json!({"create_date": d300}), json!({"create_date": d200})],
        };
        users.push(json!({"name": format!("user-{i:02}"), "keys": keys}));
    }
    let ids = moto.seed(H, Value::Array(users));
    let with_keys = ids.iter().filter(|k| !k.is_empty()).count() as u64;

    // The report AWS has is from before three changes: user-01 gets a second key, user-03
    // is deleted, user-04's first key is deleted.
    moto.post(
        "/_launcher/credential_report/generate",
        json!({"account": H}),
    );
    moto.post(
        "/_launcher/add_key",
        json!({"account": H, "user": "user-01"}),
    );
    moto.post(
        "/_launcher/delete_user",
        json!({"account": H, "user": "user-03"}),
    );
    moto.post(
        "/_launcher/delete_key",
        json!({"account": H, "user": "user-04", "access_key_id": ids[4][0]}),
    );

    let hybrid = start(&moto, "hybrid");
    let first = calls(&moto);
    let api = start(&moto, "api");
    let (h, a) = (keys(&hybrid.scrape()), keys(&api.scrape()));
    assert_eq!(h, a, "hybrid and api disagree");
    assert!(
        h.iter().any(|k| k.starts_with("user-01 ")) && !h.iter().any(|k| k.starts_with("user-03 "))
    );
    assert_eq!(h.iter().filter(|k| k.starts_with("user-04 ")).count(), 1);
    assert!(
        h.iter()
            .all(|k| k.split(' ').nth(1).unwrap().starts_with("AKIA")),
        "{h:#?}"
    );

    // First refresh: the report's 2 Generates and 1 Get, one ListAccessKeys per user with
    // keys in the report, and GetAccessKeyLastUsed for the one key newer than the report.
    eprintln!("hybrid, first refresh: {first}");
    assert_eq!(first["GetCredentialReport"], 1);
    assert_eq!(first["ListAccessKeys"], with_keys);
    assert_eq!(first["GetAccessKeyLastUsed"], 1);
    assert!(first.get("ListUsers").is_none());

    // Steady state: the report alone, not one ListAccessKeys.
    drop(api);
    moto.post("/_launcher/counts/reset", json!({}));
    hybrid.next_refresh(H, Duration::from_secs(30));
    let steady = calls(&moto);
    eprintln!("hybrid, steady state: {steady}");
    assert!(steady.get("ListAccessKeys").is_none(), "{steady}");
    assert!(steady.get("GetAccessKeyLastUsed").is_none(), "{steady}");

    // A user's first key is deleted and AWS makes a new report: the remaining key keeps its
    // id (the report source would move it from key_2 to key_1), for one ListAccessKeys.
    moto.post(
        "/_launcher/delete_key",
        json!({"account": H, "user": "user-02", "access_key_id": ids[2][0]}),
    );
    moto.post(
        "/_launcher/credential_report/generate",
        json!({"account": H}),
    );
    moto.post("/_launcher/counts/reset", json!({}));
    let m = hybrid.next_refresh(H, Duration::from_secs(30));
    let after = calls(&moto);
    assert_eq!(after["ListAccessKeys"], 1, "{after}");
    let user02: Vec<String> = keys(&m)
        .into_iter()
        .filter(|k| k.starts_with("user-02 "))
        .collect();
    assert_eq!(user02.len(), 1);
    assert!(user02[0].contains(&ids[2][1]), "{user02:?}");
    let api = start(&moto, "api");
    assert_eq!(keys(&hybrid.scrape()), keys(&api.scrape()));
}
