//! The exporter's own health counters, shared by the AWS layer (which counts) and the
//! collector (which renders). Per-account gauges live in the inventory instead.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::config::Account;

use crate::exposition::{write_header, write_sample, Labels};

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

    /// Forgets the series whose first label (the account id) is not in `accounts`.
    fn retain_accounts(&self, accounts: &HashSet<&str>) {
        self.values.lock().unwrap().retain(|labels, _| {
            labels
                .first()
                .is_some_and(|id| accounts.contains(id.as_str()))
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

/// Counters and reload state of the running exporter.
pub struct Health {
    pub assume_role: CounterVec,
    pub refresh_errors: CounterVec,
    pub aws_requests: CounterVec,
    reload: Mutex<Reload>,
}

#[derive(Clone, Copy)]
pub struct Reload {
    pub successful: bool,
    pub last_success: f64,
}

impl Health {
    pub fn new(started: f64) -> Self {
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
            reload: Mutex::new(Reload {
                successful: true,
                last_success: started,
            }),
        }
    }

    /// Drops the counters of accounts no longer configured, so they do not stay forever.
    pub fn retain_accounts(&self, accounts: &[Arc<Account>]) {
        let ids: HashSet<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
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
}
