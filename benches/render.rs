//! Render time of /metrics for 1k, 10k and 100k access keys, and the memory the inventory
//! holds; then the same per-key families built with the `prometheus` crate, to keep the
//! choice of the hand-written writer for them checked. Run with `cargo bench --bench
//! render` (release build). Prints one line per size and way.
//!
//! The snapshot is synthetic but shaped like real IAM data: 10 accounts, one or two keys per
//! user, 40 % never used, realistic label lengths.

use std::sync::Arc;
use std::time::Instant;

use iam_key_exporter::accounts::{Account, Origin, Shard};
use iam_key_exporter::config::{self, ExemptionRule, Exemptions, DEFAULT_EXEMPTION_TAG};
use iam_key_exporter::exemptions::Rules;
use iam_key_exporter::inventory::{
    AccessKey, AccountState, KeyStatus, LastUse, Snapshot, Standards, User,
};
use iam_key_exporter::metrics::collector::{self, Scope};
use iam_key_exporter::metrics::health::{BuildInfo, Health};
use iam_key_exporter::web::keys;

const BUILD: BuildInfo = BuildInfo {
    version: "bench",
    revision: "bench",
    rustc_version: "bench",
};
const NOW: f64 = 1_800_000_000.0;

fn inventory(keys: usize) -> Vec<Arc<AccountState>> {
    let accounts = 10;
    (0..accounts)
        .map(|a| {
            let account = Arc::new(Account {
                id: format!("{:012}", 100_000_000_000u64 + a as u64),
                name: format!("account-{a:02}"),
                source: Default::default(),
                role: None,
                labels: Default::default(),
                origin: Origin::Static,
                user_tags: Vec::new(),
                reads_user_tags: false,
                read: Default::default(),
                ous: Vec::new(),
            });
            let per_account = keys / accounts;
            let mut snapshot = Snapshot {
                user_tags_read: true,
                ..Snapshot::default()
            };
            for k in 0..per_account {
                let user = format!("service-user-{:06}", k / 2);
                if k % 2 == 0 {
                    snapshot.users.push(User {
                        name: user.clone(),
                        created: NOW - 9e7,
                        password_last_used: None,
                        path: None,
                        tags: Default::default(),
                        console: None,
                    });
                }
                snapshot.keys.push(AccessKey {
                    user,
                    id: format!("AKIA{:016}", a * 10_000_000 + k),
                    status: if k % 7 != 0 {
                        KeyStatus::Active
                    } else {
                        KeyStatus::Inactive
                    },
                    created: NOW - (k as f64 * 997.0) % 6e7,
                    last_used: (k % 5 >= 2).then(|| LastUse {
                        at: NOW - (k as f64 * 13.0) % 1e7,
                        service: Some("s3".into()),
                        region: Some("eu-west-1".into()),
                    }),
                });
            }
            let mut state = AccountState::new(account);
            state.snapshot = Some(Arc::new(snapshot));
            state.up = true;
            Arc::new(state)
        })
        .collect()
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Peak resident memory of this process so far, in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The per-key families as the `prometheus` crate builds them: a MetricFamily of Metrics
/// with label pairs per key, then its text encoder. What a custom `Collector` would return.
fn render_with_crate(accounts: &[Arc<AccountState>], now: f64) -> Vec<u8> {
    use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
    use prometheus::Encoder;
    type Value = fn(&AccessKey, f64) -> Option<f64>;
    let families: [(&str, Value); 4] = [
        ("aws_iam_access_key_created_timestamp_seconds", |k, _| {
            Some(k.created)
        }),
        ("aws_iam_access_key_age_seconds", |k, now| {
            Some(now - k.created)
        }),
        ("aws_iam_access_key_last_used_timestamp_seconds", |k, _| {
            k.last_used.as_ref().map(|u| u.at)
        }),
        ("aws_iam_access_key_idle_seconds", |k, now| {
            Some(now - k.last_used.as_ref().map_or(k.created, |u| u.at))
        }),
    ];
    let label = |name: &str, value: &str| {
        let mut l = LabelPair::default();
        l.set_name(name.to_string());
        l.set_value(value.to_string());
        l
    };
    let mut out = Vec::new();
    for (name, value) in families {
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help("bench".to_string());
        family.set_field_type(MetricType::GAUGE);
        for state in accounts {
            let snapshot = state.snapshot.as_ref().unwrap();
            for k in &snapshot.keys {
                let Some(v) = value(k, now) else { continue };
                let mut m = Metric::default();
                m.set_label(vec![
                    label("account_id", &state.account.id),
                    label("account_name", &state.account.name),
                    label("user", &k.user),
                    label("access_key_id", &k.id),
                    label("status", k.status.as_str()),
                ]);
                let mut g = Gauge::default();
                g.set_value(v);
                m.set_gauge(g);
                family.mut_metric().push(m);
            }
        }
        prometheus::TextEncoder::new()
            .encode(&[family], &mut out)
            .unwrap();
    }
    out
}

/// The times of `runs` whole renders, in milliseconds, sorted.
fn render_times(
    accounts: &[Arc<AccountState>],
    standards: Arc<Standards>,
    health: &Health,
    runs: usize,
) -> Vec<f64> {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for chunk in collector::render(accounts, standards.clone(), health, Scope::Server, NOW)
            {
                std::hint::black_box(&chunk);
            }
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times
}

const POLICY: &str = r#"
policy:
  rules:
    - {account_labels: {tag_environment: sandbox}, key_max_age: 180d}
    - {user_tags: {kind: service}, key_max_age: 365d, key_max_idle: 90d}
    - {account: "111111111111", user: "ci-*", key_max_age: 30d}
    - {path: /breakglass/, key_max_idle: 365d}
accounts: [{id: "111111111111"}]
"#;

fn main() {
    let health = Health::new(NOW, Shard::default(), BUILD);
    for keys in [1_000, 10_000, 100_000] {
        let rss_before = rss_mib();
        let accounts = inventory(keys);
        let rss_held = rss_mib() - rss_before;
        let runs = if keys >= 100_000 { 10 } else { 50 };
        // Size of the output, measured outside the timed runs.
        let (mut bytes, mut lines) = (0, 0);
        for chunk in collector::render(&accounts, Default::default(), &health, Scope::Server, NOW) {
            bytes += chunk.len();
            lines += chunk.iter().filter(|c| **c == b'\n').count();
        }
        let times = render_times(&accounts, Default::default(), &health, runs);
        println!(
            "render {keys:>7} keys: median {:7.2} ms, min {:7.2} ms, {:>7} lines, {:6.1} MiB text; inventory holds ~{:.1} MiB; process RSS {:.1} MiB",
            times[times.len() / 2],
            times[0],
            lines,
            bytes as f64 / 1048576.0,
            rss_held,
            rss_mib(),
        );
    }

    // Exemptions are resolved at scrape time (a reload applies them at once): the default
    // tag and five user patterns, matched against every user of every account.
    let accounts = inventory(100_000);
    let exemptions = Exemptions {
        tag: Some(DEFAULT_EXEMPTION_TAG.to_string()),
        rules: (0..5)
            .map(|i| ExemptionRule {
                account: None,
                user: format!("break-glass-{i}-*"),
                access_key_id: None,
                reason: "bench".to_string(),
                until: NOW + 1e7,
            })
            .collect(),
    };
    let standards = Arc::new(Standards {
        policy: Default::default(),
        exemptions: Rules::new(&exemptions),
    });
    let times = render_times(&accounts, standards, &health, 10);
    println!(
        "render  100000 keys, default exemption tag and 5 user patterns: median {:7.2} ms",
        times[times.len() / 2]
    );

    // Large rule sets: 10k rules naming a user of one account each (a tenth of the users
    // are exempt), and 10k user patterns that share the users' first 13 characters but
    // match none, so each is tried to its end.
    let rule = |account: Option<String>, user: String| ExemptionRule {
        account,
        user,
        access_key_id: None,
        reason: "bench".to_string(),
        until: NOW + 1e7,
    };
    let sets = [
        (
            "10000 user names",
            (0..10_000)
                .map(|i| {
                    rule(
                        Some(format!("{:012}", 100_000_000_000u64 + i % 10)),
                        format!("service-user-{:06}", i / 10 * 5 % 5_000),
                    )
                })
                .collect::<Vec<_>>(),
        ),
        (
            "10000 user patterns",
            (0..10_000)
                .map(|i| rule(None, format!("service-user-{i:06}-*")))
                .collect(),
        ),
    ];
    for (what, rules) in sets {
        let standards = Arc::new(Standards {
            policy: Default::default(),
            exemptions: Rules::new(&Exemptions {
                tag: Some(DEFAULT_EXEMPTION_TAG.to_string()),
                rules,
            }),
        });
        let times = render_times(&accounts, standards, &health, 3);
        println!(
            "render  100000 keys, {what}: median {:7.2} ms",
            times[times.len() / 2]
        );
    }

    // The policy is decided per user at scrape time too: the README's four example rules,
    // none of which matches these users, so every user is tested against all four.
    let policy = config::parse(POLICY, std::path::Path::new("bench.yaml"))
        .expect("the example policy is valid")
        .policy;
    let standards = Arc::new(Standards {
        policy,
        exemptions: Rules::default(),
    });
    let times = render_times(&accounts, standards, &health, 10);
    println!(
        "render  100000 keys, the README's 4 policy rules: median {:7.2} ms",
        times[times.len() / 2]
    );

    // The key view's first page (500 of 100k keys, sorted oldest first), HTML and JSON.
    let exemptions = Arc::new(Standards::default());
    for json in [false, true] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..10 {
            let start = Instant::now();
            let page = keys::Page::select(
                accounts.clone(),
                exemptions.clone(),
                keys::Query::parse(None),
                NOW,
            );
            let chunks: Vec<Vec<u8>> = if json {
                page.json().collect()
            } else {
                page.html().collect()
            };
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            bytes = chunks.iter().map(Vec::len).sum::<usize>();
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "/keys{} first page of 100000 keys: median {:6.1} ms, {:.0} KiB",
            if json { ".json" } else { "" },
            times[times.len() / 2],
            bytes as f64 / 1024.0
        );
    }

    // The same 100k keys through the crate, after the writer's runs so its peak shows alone.
    let peak_before = peak_mib();
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let text = render_with_crate(&accounts, NOW);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        bytes = text.len();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "prometheus crate, 100000 keys, 4 per-key families only: median {:7.2} ms, {:6.1} MiB text, \
         peak RSS +{:.0} MiB (the writer above streams all families in 64 KiB chunks)",
        times[times.len() / 2],
        bytes as f64 / 1048576.0,
        peak_mib() - peak_before,
    );
}
