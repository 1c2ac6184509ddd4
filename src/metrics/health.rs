//! The exporter's own metrics (counters of AWS calls and failures, reload, shard, discovery
//! and identity state) in a `prometheus` crate registry, shared by the parts that count and
//! the collector that renders. Per-account refresh gauges come from the inventory instead,
//! and the per-key families from the collector's own writer (too many series for the crate:
//! `benches/render.rs` measures both).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::accounts::{Account, Origin, Shard};
use crate::inventory::{Identity, RefreshError, Timestamp};

/// Version facts for `iam_key_exporter_build_info`.
#[derive(Clone, Copy)]
pub struct BuildInfo {
    pub version: &'static str,
    pub revision: &'static str,
    pub rustc_version: &'static str,
}

#[derive(Clone, Debug, Default)]
pub enum IdentityStatus {
    #[default]
    Unknown,
    Known(Identity),
    /// Why it could not be asked.
    Failed(RefreshError),
}

/// How the last discoveries went.
#[derive(Clone, Debug, Default)]
pub struct DiscoveryStatus {
    /// Whether a discovery has finished since discovery was configured.
    pub attempted: bool,
    pub up: bool,
    pub last_success: Option<Timestamp>,
    /// Accounts the last successful discovery found, by state.
    pub by_state: BTreeMap<String, usize>,
    pub last_error: Option<RefreshError>,
    /// A result held back by the shrink guard, while one is.
    pub held: Option<Held>,
}

/// A discovery result held back for dropping too many accounts (`shrink_guard`).
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    /// ACTIVE accounts in the list in force, and in the held result.
    pub applied: usize,
    pub found: usize,
    /// Results held in a row, and how many it takes to apply one.
    pub consecutive: u32,
    pub confirmations: u32,
}

/// Why the HTTP server turned a client away or cut it off: the `reason` label of
/// `iam_key_exporter_http_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    InFlight,
    LoginQueue,
    IdleEvicted,
    WriteTimeout,
    StalledCut,
}

impl Refused {
    const ALL: [Refused; 5] = [
        Refused::InFlight,
        Refused::LoginQueue,
        Refused::IdleEvicted,
        Refused::WriteTimeout,
        Refused::StalledCut,
    ];

    fn label(self) -> &'static str {
        match self {
            Refused::InFlight => "inflight",
            Refused::LoginQueue => "login_queue",
            Refused::IdleEvicted => "idle_evicted",
            Refused::WriteTimeout => "write_timeout",
            Refused::StalledCut => "stalled_cut",
        }
    }
}

/// The running exporter's own state and metrics.
pub struct Health {
    registry: Registry,
    assume_role: IntCounterVec,
    refresh_errors: IntCounterVec,
    aws_requests: IntCounterVec,
    accounts: IntGaugeVec,
    request_rate: GaugeVec,
    reload_successful: IntGauge,
    reload_success_time: Gauge,
    discovered: IntGaugeVec,
    discovery_up: IntGaugeVec,
    discovery_success_time: GaugeVec,
    shrink_held: IntGaugeVec,
    shrink_kept: IntGaugeVec,
    identity_info: IntGaugeVec,
    http_refused: IntCounterVec,
    pub shard: Shard,
    /// None while discovery is not configured.
    discovery: Mutex<Option<DiscoveryStatus>>,
    identity: Mutex<IdentityStatus>,
}

/// The families only a running server has: a file written by `once` leaves them out.
const SERVER_ONLY: &[&str] = &[
    "iam_key_exporter_http_refused_total",
    "iam_key_exporter_config_last_reload_successful",
    "iam_key_exporter_config_last_reload_success_timestamp_seconds",
];

const ACCOUNT_LABELS: [&str; 2] = ["account_id", "account_name"];

/// Registers a metric family, and hands it back to be updated. Names and labels are the
/// code's own constants, so neither creating nor registering one can fail.
fn registered<C: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<C>,
) -> C {
    let metric = metric.expect("a valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

/// A counter family by account, and by `extra` labels.
fn counter(registry: &Registry, name: &str, help: &str, extra: &[&str]) -> IntCounterVec {
    let labels: Vec<&str> = ACCOUNT_LABELS.iter().chain(extra).copied().collect();
    registered(registry, IntCounterVec::new(Opts::new(name, help), &labels))
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn float_gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    registered(registry, GaugeVec::new(Opts::new(name, help), labels))
}

impl Health {
    pub fn new(started: f64, shard: Shard, build: BuildInfo) -> Self {
        let r = Registry::new();
        let int_gauge = |name: &str, help: &str, value: i64| {
            let g = registered(&r, IntGauge::new(name, help));
            g.set(value);
            g
        };
        int_gauge(
            "iam_key_exporter_shards",
            "How many replicas share the accounts (--shard.total).",
            shard.total.into(),
        );
        int_gauge(
            "iam_key_exporter_shard_index",
            "This replica's shard, from 0 (--shard.index).",
            shard.index.into(),
        );
        gauges(
            &r,
            "iam_key_exporter_build_info",
            "Build information of the running exporter (always 1).",
            &["version", "revision", "rustc_version"],
        )
        .with_label_values(&[build.version, build.revision, build.rustc_version])
        .set(1);
        let reload_success_time = registered(
            &r,
            Gauge::new(
                "iam_key_exporter_config_last_reload_success_timestamp_seconds",
                "When the configuration was last loaded successfully, in Unix seconds.",
            ),
        );
        reload_success_time.set(started);
        Health {
            assume_role: counter(
                &r,
                "iam_key_exporter_assume_role_total",
                "STS AssumeRole calls made to open or renew an account's session, by outcome.",
                &["outcome"],
            ),
            refresh_errors: counter(
                &r,
                "iam_key_exporter_refresh_errors_total",
                "Failed account refreshes and discoveries, by the stage that failed and the AWS error code.",
                &["stage", "code"],
            ),
            aws_requests: counter(
                &r,
                "iam_key_exporter_aws_requests_total",
                "AWS API request attempts (retries included), by operation and outcome.",
                &["operation", "outcome"],
            ),
            request_rate: float_gauges(
                &r,
                "iam_key_exporter_aws_request_rate",
                "IAM requests per second the account's pace allows now: aws.requests_per_second, lowered when IAM throttles and raised again while it does not.",
                &ACCOUNT_LABELS,
            ),
            accounts: gauges(
                &r,
                "iam_key_exporter_accounts",
                "Accounts this replica reads, by where they were found (static: only in the configuration file; organizations: found by discovery).",
                &["origin"],
            ),
            reload_successful: int_gauge(
                "iam_key_exporter_config_last_reload_successful",
                "Whether the last configuration reload succeeded.",
                1,
            ),
            reload_success_time,
            discovered: gauges(
                &r,
                "iam_key_exporter_discovered_accounts",
                "Accounts the last successful discovery found in the configured part of the organization (all replicas together read the ACTIVE ones), by state.",
                &["state"],
            ),
            discovery_up: gauges(
                &r,
                "iam_key_exporter_discovery_up",
                "1 if the last discovery through AWS Organizations succeeded, else 0; absent before the first.",
                &[],
            ),
            discovery_success_time: float_gauges(
                &r,
                "iam_key_exporter_discovery_last_success_timestamp_seconds",
                "When discovery through AWS Organizations last succeeded, in Unix seconds.",
                &[],
            ),
            shrink_held: gauges(
                &r,
                "iam_key_exporter_discovery_shrink_held",
                "Discoveries in a row whose account list was held back for dropping more than discovery.organizations.shrink_guard.max_drop of the ACTIVE accounts in force (0: the last one was applied); the one that reaches shrink_guard.confirmations is applied.",
                &[],
            ),
            shrink_kept: gauges(
                &r,
                "iam_key_exporter_discovery_shrink_kept_accounts",
                "While a discovery result is held back, the ACTIVE accounts of the list kept in force (what the held result found is iam_key_exporter_discovered_accounts); absent otherwise.",
                &[],
            ),
            identity_info: gauges(
                &r,
                "iam_key_exporter_aws_identity_info",
                "The AWS identity the exporter's own credentials belong to (sts:GetCallerIdentity), which member roles must trust (always 1).",
                &["account_id", "arn"],
            ),
            http_refused: {
                let c = registered(
                    &r,
                    IntCounterVec::new(
                        Opts::new(
                            "iam_key_exporter_http_refused_total",
                            "HTTP clients the server turned away or cut off, by reason: inflight (503, --web.max-inflight-responses reached), login_queue (429, too many basic-auth checks waiting), idle_evicted (the longest-idle connection closed for a new one at --web.max-connections), write_timeout (a response not read within --web.write-timeout), stalled_cut (a response not read for 250 ms, cut for a new one at --web.max-inflight-responses).",
                        ),
                        &["reason"],
                    ),
                );
                for why in Refused::ALL {
                    c.with_label_values(&[why.label()]);
                }
                c
            },
            registry: r,
            shard,
            discovery: Mutex::new(None),
            identity: Mutex::default(),
        }
    }

    /// One AWS request attempt of the client owned by (`account_id`, `account_name`).
    pub fn count_request(&self, owner: [&str; 2], operation: &str, outcome: &str) {
        self.aws_requests
            .with_label_values(&[owner[0], owner[1], operation, outcome])
            .inc();
    }

    /// The IAM requests per second the account's pace allows now.
    pub fn set_request_rate(&self, owner: [&str; 2], per_second: f64) {
        self.request_rate.with_label_values(&owner).set(per_second);
    }

    pub fn count_assume_role(&self, owner: [&str; 2], outcome: &str) {
        self.assume_role
            .with_label_values(&[owner[0], owner[1], outcome])
            .inc();
    }

    pub fn count_refused(&self, why: Refused) {
        self.http_refused.with_label_values(&[why.label()]).inc();
    }

    pub fn count_refresh_error(&self, owner: [&str; 2], e: &RefreshError) {
        self.refresh_errors
            .with_label_values(&[owner[0], owner[1], e.stage.as_str(), e.code.as_str()])
            .inc();
    }

    /// The accounts this replica now reads: counts them by origin, and drops the counters
    /// of accounts no longer read (or read under another name) so they do not stay forever.
    /// `also` names an owner to keep besides them (discovery's, which has no account name).
    pub fn track_accounts(&self, accounts: &[Arc<Account>], also: Option<&str>) {
        for origin in [Origin::Static, Origin::Organizations] {
            let n = accounts.iter().filter(|a| a.origin == origin).count();
            self.accounts
                .with_label_values(&[origin.label()])
                .set(n as i64);
        }
        let mut keep: HashSet<(&str, &str)> = accounts
            .iter()
            .map(|a| (a.id.as_str(), a.name.as_str()))
            .collect();
        keep.extend(also.map(|id| (id, "")));
        for counter in [&self.assume_role, &self.refresh_errors, &self.aws_requests] {
            retain(counter, &keep);
        }
        retain(&self.request_rate, &keep);
    }

    pub fn record_reload(&self, successful: bool, now: f64) {
        self.reload_successful.set(i64::from(successful));
        if successful {
            self.reload_success_time.set(now);
        }
    }

    /// Turns discovery's status on (kept if it already was) or off.
    pub fn discovery_configured(&self, configured: bool) {
        let mut d = self.discovery.lock().unwrap();
        match (configured, d.is_some()) {
            (true, false) => *d = Some(DiscoveryStatus::default()),
            (false, true) => {
                *d = None;
                self.discovered.reset();
                self.discovery_up.reset();
                self.discovery_success_time.reset();
                self.shrink_held.reset();
                self.shrink_kept.reset();
            }
            _ => {}
        }
    }

    /// Records a discovery: the accounts found by state, or why it failed (also counted as
    /// a refresh error of `owner`, discovery's account). A failure keeps the counts of the
    /// last success, as the account list keeps its accounts.
    pub fn record_discovery(
        &self,
        result: Result<BTreeMap<String, usize>, RefreshError>,
        owner: &str,
        now: f64,
    ) {
        if let Err(e) = &result {
            self.count_refresh_error([owner, ""], e);
        }
        let mut d = self.discovery.lock().unwrap();
        let status = d.get_or_insert_with(DiscoveryStatus::default);
        status.attempted = true;
        let up = self.discovery_up.with_label_values(&[] as &[&str]);
        match result {
            Ok(by_state) => {
                up.set(1);
                self.discovery_success_time
                    .with_label_values(&[] as &[&str])
                    .set(now);
                self.discovered.reset();
                for (state, n) in &by_state {
                    self.discovered.with_label_values(&[state]).set(*n as i64);
                }
                status.up = true;
                status.last_success = Some(now);
                status.by_state = by_state;
                status.last_error = None;
            }
            Err(e) => {
                up.set(0);
                status.up = false;
                status.last_error = Some(e);
            }
        }
    }

    /// Records what the shrink guard did with a discovery result: held it back, or applied
    /// it (None).
    pub fn record_shrink_guard(&self, held: Option<Held>) {
        let mut d = self.discovery.lock().unwrap();
        let Some(status) = d.as_mut() else {
            return;
        };
        let no_labels: &[&str] = &[];
        match &held {
            Some(h) => {
                self.shrink_held
                    .with_label_values(no_labels)
                    .set(h.consecutive.into());
                self.shrink_kept
                    .with_label_values(no_labels)
                    .set(h.applied as i64);
            }
            None => {
                self.shrink_held.with_label_values(no_labels).set(0);
                self.shrink_kept.reset();
            }
        }
        status.held = held;
    }

    pub fn discovery(&self) -> Option<DiscoveryStatus> {
        self.discovery.lock().unwrap().clone()
    }

    pub fn set_identity(&self, identity: IdentityStatus) {
        if let IdentityStatus::Known(id) = &identity {
            self.identity_info.reset();
            self.identity_info
                .with_label_values(&[&id.account_id, &id.arn])
                .set(1);
        }
        *self.identity.lock().unwrap() = identity;
    }

    pub fn identity(&self) -> IdentityStatus {
        self.identity.lock().unwrap().clone()
    }

    /// Appends these metrics in the text format; `server` false leaves out what only a
    /// running server has (reload state).
    pub fn render(&self, out: &mut Vec<u8>, server: bool) {
        let families: Vec<_> = self
            .registry
            .gather()
            .into_iter()
            .filter(|f| server || !SERVER_ONLY.contains(&f.name()))
            .collect();
        // Encoding into a Vec cannot fail; the metric names are the crate-checked ones above.
        let _ = TextEncoder::new().encode(&families, out);
    }
}

/// Removes the series of `vec` whose account labels are not a pair in `keep`.
fn retain<B: MetricVecBuilder>(vec: &MetricVec<B>, keep: &HashSet<(&str, &str)>) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            let pair = (
                labels.get("account_id").copied().unwrap_or(""),
                labels.get("account_name").copied().unwrap_or(""),
            );
            if !keep.contains(&pair) {
                let _ = vec.remove(&labels);
            }
        }
    }
}
