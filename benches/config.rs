//! Configuration validation and account planning at organization scale: 10k, 40k and 100k
//! accounts, valid and with an error in every account (the case a reload must reject
//! quickly). Run with `cargo bench --bench config`. Prints one line per size.

use std::path::Path;
use std::time::Instant;

use iam_key_exporter::accounts::{self, Shard};
use iam_key_exporter::config;

fn yaml(accounts: usize, broken: bool) -> String {
    let mut text = String::from("refresh_interval: 15m\naccounts:\n");
    for i in 0..accounts {
        let id = if broken {
            format!("{i:011}")
        } else {
            format!("{:012}", 100_000_000_000u64 + i as u64)
        };
        text.push_str(&format!(
            "  - id: \"{id}\"\n    name: account-{i:06}\n    labels: {{team: team-{}, env: prod}}\n",
            i % 50
        ));
    }
    text
}

fn main() {
    for n in [10_000, 40_000, 100_000] {
        let good = yaml(n, false);
        let start = Instant::now();
        let cfg = config::parse(&good, Path::new("bench.yaml")).expect("valid");
        let parsed = start.elapsed();
        let start = Instant::now();
        let planned = accounts::plan(&cfg, None, Shard { index: 1, total: 3 }).len();
        let plan = start.elapsed();
        let bad = yaml(n, true);
        let start = Instant::now();
        let problems = match config::parse(&bad, Path::new("bench.yaml")) {
            Err(config::ConfigError::Invalid { problems, .. }) => problems.len(),
            other => panic!("expected problems, got {:?}", other.map(|_| ())),
        };
        let rejected = start.elapsed();
        println!(
            "config {n:>6} accounts ({:.1} MiB): valid in {:7.1} ms, planned (shard 1 of 3: {planned}) in {:5.1} ms, \
             {problems} problems reported in {:7.1} ms",
            good.len() as f64 / 1048576.0,
            parsed.as_secs_f64() * 1000.0,
            plan.as_secs_f64() * 1000.0,
            rejected.as_secs_f64() * 1000.0,
        );
    }
}
