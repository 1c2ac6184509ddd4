//! Builds the `/metrics` exposition from the inventory at scrape time. Ages are computed
//! against the scrape's "now"; nothing here calls AWS or holds a lock while writing.
//!
//! The output is produced in chunks of about [`CHUNK`] bytes so a scrape of hundreds of
//! thousands of series is streamed (and gzipped) without holding the whole text in memory.
//! Every metric family stays contiguous, as the text format requires: the renderer walks
//! family by family, and within a family account by account.

use std::sync::Arc;

use crate::exposition::{write_header, write_sample, Labels};
use crate::health::Health;
use crate::inventory::{AccountState, Snapshot};
use crate::process;

const CHUNK: usize = 64 * 1024;

/// The families drawn from snapshots, as DESIGN.md's metric contract names them.
const SNAPSHOT_FAMILIES: &[Family] = &[
    Family {
        name: "aws_iam_access_key_created_timestamp_seconds",
        help: "When the access key was created, in Unix seconds.",
        write: |out, name, a, _| {
            for (k, l) in a.keys() {
                write_sample(out, name, l.as_str(), k.created);
            }
        },
    },
    Family {
        name: "aws_iam_access_key_age_seconds",
        help: "Seconds since the access key was created, at scrape time.",
        write: |out, name, a, now| {
            for (k, l) in a.keys() {
                write_sample(out, name, l.as_str(), (now - k.created).max(0.0));
            }
        },
    },
    Family {
        name: "aws_iam_access_key_last_used_timestamp_seconds",
        help: "When the access key was last used, in Unix seconds; absent if AWS has no date.",
        write: |out, name, a, _| {
            for (k, l) in a.keys() {
                if let Some(u) = &k.last_used {
                    write_sample(out, name, l.as_str(), u.at);
                }
            }
        },
    },
    Family {
        name: "aws_iam_access_key_idle_seconds",
        help: "Seconds since the access key was last used, or since creation if never used.",
        write: |out, name, a, now| {
            for (k, l) in a.keys() {
                let since = k.last_used.as_ref().map_or(k.created, |u| u.at);
                write_sample(out, name, l.as_str(), (now - since).max(0.0));
            }
        },
    },
    Family {
        name: "aws_iam_access_key_last_used_info",
        help: "Service and region of the access key's last use, where AWS reports them (always 1).",
        write: |out, name, a, _| {
            for (k, l) in a.keys() {
                let Some(u) = &k.last_used else { continue };
                if let Some(service) = &u.service {
                    let region = u.region.as_deref().unwrap_or("");
                    let l = l.clone().with("service", service).with("region", region);
                    write_sample(out, name, l.as_str(), 1.0);
                }
            }
        },
    },
    Family {
        name: "aws_iam_user_created_timestamp_seconds",
        help: "When the IAM user was created, in Unix seconds.",
        write: |out, name, a, _| {
            for (u, l) in a.users() {
                write_sample(out, name, l.as_str(), u.created);
            }
        },
    },
    Family {
        name: "aws_iam_user_password_last_used_timestamp_seconds",
        help: "When the IAM user's console password was last used, in Unix seconds, when known.",
        write: |out, name, a, _| {
            for (u, l) in a.users() {
                if let Some(t) = u.password_last_used {
                    write_sample(out, name, l.as_str(), t);
                }
            }
        },
    },
    Family {
        name: "aws_iam_user_mfa_active",
        help: "1 if the IAM user has an active MFA device (credential_report source).",
        write: |out, name, a, _| {
            for (u, l) in a.users() {
                if let Some(mfa) = u.mfa_active {
                    write_sample(out, name, l.as_str(), f64::from(u8::from(mfa)));
                }
            }
        },
    },
    Family {
        name: "aws_iam_root_access_key_active",
        help: "1 if the root user's access key 1 or 2 (label key) is active (credential_report source).",
        write: |out, name, a, _| {
            if let Some(root) = &a.snapshot.root {
                for (slot, active) in ["1", "2"].iter().zip(root.access_keys_active) {
                    let l = a.account.clone().with("key", slot);
                    write_sample(out, name, l.as_str(), f64::from(u8::from(active)));
                }
            }
        },
    },
    Family {
        name: "aws_iam_root_mfa_active",
        help: "1 if the root user has an active MFA device (credential_report source).",
        write: |out, name, a, _| {
            if let Some(root) = &a.snapshot.root {
                write_sample(out, name, a.account.as_str(), f64::from(u8::from(root.mfa_active)));
            }
        },
    },
    Family {
        name: "aws_iam_credential_report_generated_timestamp_seconds",
        help: "When the credential report the data comes from was generated, in Unix seconds (credential_report source).",
        write: |out, name, a, _| {
            if let Some(t) = a.snapshot.report_generated {
                write_sample(out, name, a.account.as_str(), t);
            }
        },
    },
];

struct Family {
    name: &'static str,
    help: &'static str,
    write: fn(&mut Vec<u8>, &'static str, &Prepared, f64),
}

/// One account's snapshot with its label sets escaped once per scrape, not once per family.
struct Prepared {
    snapshot: Arc<Snapshot>,
    account: Labels,
    key_labels: Vec<Labels>,
    user_labels: Vec<Labels>,
}

impl Prepared {
    fn new(state: &AccountState, snapshot: Arc<Snapshot>) -> Self {
        let account = Labels::new()
            .with("account_id", &state.account.id)
            .with("account_name", &state.account.name);
        let user_labels = snapshot
            .users
            .iter()
            .map(|u| account.clone().with("user", &u.name))
            .collect();
        let key_labels = snapshot
            .keys
            .iter()
            .map(|k| {
                account
                    .clone()
                    .with("user", &k.user)
                    .with("access_key_id", &k.id)
                    .with("status", if k.active { "Active" } else { "Inactive" })
            })
            .collect();
        Prepared {
            snapshot,
            account,
            key_labels,
            user_labels,
        }
    }

    fn keys(&self) -> impl Iterator<Item = (&crate::inventory::AccessKey, &Labels)> {
        self.snapshot.keys.iter().zip(&self.key_labels)
    }

    fn users(&self) -> impl Iterator<Item = (&crate::inventory::User, &Labels)> {
        self.snapshot.users.iter().zip(&self.user_labels)
    }
}

/// Version facts for `iam_key_exporter_build_info`.
pub struct BuildInfo {
    pub version: &'static str,
    pub revision: &'static str,
    pub rustc_version: &'static str,
}

/// The exposition of one scrape, as an iterator of text chunks.
pub struct Exposition {
    buf: Vec<u8>,
    accounts: Vec<Prepared>,
    now: f64,
    family: usize,
    account: usize,
}

/// Renders everything: exporter health and process metrics first (small), then the per-key
/// and per-user families (large, streamed). `now` is Unix seconds.
pub fn render(
    accounts: &[Arc<AccountState>],
    health: &Health,
    build: &BuildInfo,
    now: f64,
) -> Exposition {
    let mut buf = Vec::with_capacity(CHUNK * 2);
    write_account_families(&mut buf, accounts);
    health.assume_role.render(&mut buf);
    health.refresh_errors.render(&mut buf);
    health.aws_requests.render(&mut buf);

    let reload = health.reload();
    let build_labels = Labels::new()
        .with("version", build.version)
        .with("revision", build.revision)
        .with("rustc_version", build.rustc_version);
    for (name, help, labels, value) in [
        (
            "iam_key_exporter_accounts",
            "Accounts this exporter reads, by where they were found.",
            "origin=\"static\"",
            accounts.len() as f64,
        ),
        (
            "iam_key_exporter_config_last_reload_successful",
            "Whether the last configuration reload succeeded.",
            "",
            if reload.successful { 1.0 } else { 0.0 },
        ),
        (
            "iam_key_exporter_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully, in Unix seconds.",
            "",
            reload.last_success,
        ),
        (
            "iam_key_exporter_build_info",
            "Build information of the running exporter (always 1).",
            build_labels.as_str(),
            1.0,
        ),
    ] {
        write_header(&mut buf, name, "gauge", help);
        write_sample(&mut buf, name, labels, value);
    }
    process::render(&mut buf);

    let accounts = accounts
        .iter()
        .filter_map(|s| s.snapshot.clone().map(|snap| Prepared::new(s, snap)))
        .collect();
    Exposition {
        buf,
        accounts,
        now,
        family: 0,
        account: 0,
    }
}

/// Per-account gauges: configuration facts and the state of the last refresh.
fn write_account_families(out: &mut Vec<u8>, accounts: &[Arc<AccountState>]) {
    type Value = fn(&AccountState) -> Option<f64>;
    let families: [(&str, &str, Value); 4] = [
        (
            "iam_key_exporter_account_up",
            "1 if the last refresh of the account succeeded, else 0.",
            |s| Some(if s.up { 1.0 } else { 0.0 }),
        ),
        (
            "iam_key_exporter_account_last_success_timestamp_seconds",
            "When the account was last refreshed successfully, in Unix seconds.",
            |s| s.last_success,
        ),
        (
            "iam_key_exporter_account_refresh_duration_seconds",
            "How long the account's last refresh took.",
            |s| s.last_duration,
        ),
        (
            "iam_key_exporter_session_expiry_timestamp_seconds",
            "When the account's assumed-role session expires, in Unix seconds.",
            |s| s.session_expiry,
        ),
    ];
    let labels: Vec<Labels> = accounts
        .iter()
        .map(|s| {
            Labels::new()
                .with("account_id", &s.account.id)
                .with("account_name", &s.account.name)
        })
        .collect();

    let info = "aws_iam_account_info";
    write_header(out, info, "gauge", "An account read by the exporter, with its custom labels from the configuration (always 1).");
    for (s, l) in accounts.iter().zip(&labels) {
        let mut l = l.clone();
        for (k, v) in &s.account.labels {
            l.add(k, v);
        }
        write_sample(out, info, l.as_str(), 1.0);
    }
    for (name, help, value) in families {
        write_header(out, name, "gauge", help);
        for (s, l) in accounts.iter().zip(&labels) {
            if let Some(v) = value(s) {
                write_sample(out, name, l.as_str(), v);
            }
        }
    }
}

impl Iterator for Exposition {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        while self.family < SNAPSHOT_FAMILIES.len() && self.buf.len() < CHUNK {
            let family = &SNAPSHOT_FAMILIES[self.family];
            if self.account == 0 {
                write_header(&mut self.buf, family.name, "gauge", family.help);
            }
            if let Some(a) = self.accounts.get(self.account) {
                (family.write)(&mut self.buf, family.name, a, self.now);
            }
            self.account += 1;
            if self.account >= self.accounts.len() {
                self.account = 0;
                self.family += 1;
            }
        }
        if self.buf.is_empty() {
            None
        } else {
            Some(std::mem::replace(
                &mut self.buf,
                Vec::with_capacity(CHUNK * 2),
            ))
        }
    }
}
