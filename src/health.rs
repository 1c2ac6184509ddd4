//! The exporter's own health counters, shared by the AWS layer (which counts) and the
//! collector (which renders). Per-account gauges live in the inventory instead.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::accounts::{Account, Shard};
use crate::exposition::{write_header, write_sample, Labels};
use crate::inventory::{RefreshError, Timestamp};

/// A monotonic counter family with a fixed set of label names.
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    const fn new(
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
    ) -> Self {
        CounterVec {
            name,
            help,
            label_names,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one to the series with these label values (in `label_names` order).
    pub fn inc(&self, label_values: &[&str]) {
        debug_assert_eq!(label_values.len(), self.label_names.len());
        let key = label_values.iter().map(|v| v.to_string()).collect();
        *self.values.lock().unwrap().entry(key).or_default() += 1;
    }

    /// Forgets the series whose first two labels (account id and name) are not a pair in
    /// `accounts`: removed accounts, and the old name of a renamed one.
    fn retain_accounts(&self, accounts: &HashSet<(&str, &str)>) {
        self.values
            .lock()
            .unwrap()
            .retain(|labels, _| match &labels[..] {
                [id, name, ..] => accounts.contains(&(id.as_str(), name.as_str())),
                _ => false,
            });
    }

    pub fn render(&self, out: &mut Vec<u8>) {
        write_header(out, self.name, "counter", self.help);
        for (values, n) in self.values.lock().unwrap().iter() {
            let mut labels = Labels::new();
            for (name, value) in self.label_names.iter().zip(values) {
                labels.add(name, value);
            }
            write_sample(out, self.name, labels.as_str(), *n as f64);
        }
    }
}

/// Counters, reload and discovery state of the running exporter.
pub struct Health {
    pub assume_role: CounterVec,
    pub refresh_errors: CounterVec,
    pub aws_requests: CounterVec,
    pub shard: Shard,
    reload: Mutex<Reload>,
    /// None while discovery is not configured.
    discovery: Mutex<Option<DiscoveryStatus>>,
    identity: Mutex<IdentityStatus>,
}

/// Who the exporter is to AWS (sts:GetCallerIdentity): the principal member roles must trust.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub account_id: String,
    pub arn: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum IdentityStatus {
    #[default]
    Unknown,
    Known(Identity),
    /// Why it could not be asked, in words.
    Failed(String),
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
}

#[derive(Clone, Copy)]
pub struct Reload {
    pub successful: bool,
    pub last_success: f64,
}

impl Health {
    pub fn new(started: f64, shard: Shard) -> Self {
        Health {
            assume_role: CounterVec::new(
                "iam_key_exporter_assume_role_total",
                "STS AssumeRole calls made to open or renew an account's session, by outcome.",
                &["account_id", "account_name", "outcome"],
            ),
            refresh_errors: CounterVec::new(
                "iam_key_exporter_refresh_errors_total",
                "Failed account refreshes, by the stage that failed and the AWS error code.",
                &["account_id", "account_name", "stage", "code"],
            ),
            aws_requests: CounterVec::new(
                "iam_key_exporter_aws_requests_total",
                "AWS API request attempts (retries included), by operation and outcome.",
                &["account_id", "account_name", "operation", "outcome"],
            ),
            shard,
            reload: Mutex::new(Reload {
                successful: true,
                last_success: started,
            }),
            discovery: Mutex::new(None),
            identity: Mutex::default(),
        }
    }

    /// Drops the counters of accounts no longer read (or read under another name), so they
    /// do not stay forever; `also` names an owner to keep besides them (discovery's, which
    /// has no account name).
    pub fn retain_accounts(&self, accounts: &[Arc<Account>], also: Option<&str>) {
        let mut ids: HashSet<(&str, &str)> = accounts
            .iter()
            .map(|a| (a.id.as_str(), a.name.as_str()))
            .collect();
        ids.extend(also.map(|id| (id, "")));
        for counter in [&self.assume_role, &self.refresh_errors, &self.aws_requests] {
            counter.retain_accounts(&ids);
        }
    }

    pub fn record_reload(&self, successful: bool, now: f64) {
        let mut r = self.reload.lock().unwrap();
        r.successful = successful;
        if successful {
            r.last_success = now;
        }
    }

    pub fn reload(&self) -> Reload {
        *self.reload.lock().unwrap()
    }

    /// Turns discovery's status on (kept if it already was) or off.
    pub fn discovery_configured(&self, configured: bool) {
        let mut d = self.discovery.lock().unwrap();
        match (configured, d.is_some()) {
            (true, false) => *d = Some(DiscoveryStatus::default()),
            (false, true) => *d = None,
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
            self.refresh_errors
                .inc(&[owner, "", e.stage.as_str(), &e.code]);
        }
        let mut d = self.discovery.lock().unwrap();
        let status = d.get_or_insert_with(DiscoveryStatus::default);
        status.attempted = true;
        match result {
            Ok(by_state) => {
                status.up = true;
                status.last_success = Some(now);
                status.by_state = by_state;
                status.last_error = None;
            }
            Err(e) => {
                status.up = false;
                status.last_error = Some(e);
            }
        }
    }

    pub fn set_identity(&self, identity: IdentityStatus) {
        *self.identity.lock().unwrap() = identity;
    }

    pub fn identity(&self) -> IdentityStatus {
        self.identity.lock().unwrap().clone()
    }

    pub fn discovery(&self) -> Option<DiscoveryStatus> {
        self.discovery.lock().unwrap().clone()
    }
}
