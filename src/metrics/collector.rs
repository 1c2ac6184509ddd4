//! Builds the `/metrics` exposition from the inventory at scrape time. Ages are computed
//! against the scrape's "now"; nothing here calls AWS or holds a lock while writing.
//!
//! The output is produced in chunks of about [`CHUNK`] bytes so a scrape of hundreds of
//! thousands of series is streamed (and gzipped) without holding the whole text in memory.
//! Every metric family stays contiguous, as the text format requires: the renderer walks
//! family by family, within a family account by account, and within an account key by key,
//! so a chunk can end anywhere and a large account never makes a large chunk.

use std::sync::Arc;

use crate::accounts::Account;
use crate::config::{Limits, DEFAULT_RULE};
use crate::exemptions;
use crate::inventory::{
    AccessKey, AccountState, Certificate, Role, ServiceCredential, Snapshot, SshKey, Standards,
    User,
};
use crate::metrics::exposition::{write_header, write_line, write_sample, Labels};
use crate::metrics::health::Health;
use crate::metrics::process;
use crate::policy;

const CHUNK: usize = 64 * 1024;

/// The families drawn from snapshots, as the README's metric table names them.
const SNAPSHOT_FAMILIES: &[Family] = &[
    Family {
        name: "aws_iam_access_key_created_timestamp_seconds",
        help: "When the access key was created, in Unix seconds.",
        rows: Rows::Key(|k, _| Some((k.created, None))),
    },
    Family {
        name: "aws_iam_access_key_age_seconds",
        help: "Seconds since the access key was created, at scrape time.",
        rows: Rows::Key(|k, now| Some(((now - k.created).max(0.0), None))),
    },
    Family {
        name: "aws_iam_access_key_last_used_timestamp_seconds",
        help: "When the access key was last used, in Unix seconds; absent if AWS has no date.",
        rows: Rows::Key(|k, _| k.last_used.as_ref().map(|u| (u.at, None))),
    },
    Family {
        name: "aws_iam_access_key_idle_seconds",
        help: "Seconds since the access key was last used, or since creation if never used.",
        rows: Rows::Key(|k, now| Some(((now - k.idle_since()).max(0.0), None))),
    },
    Family {
        name: "aws_iam_access_key_last_used_info",
        help: "Service and region of the access key's last use, where AWS reports them (always 1).",
        rows: Rows::Key(|k, _| {
            let u = k.last_used.as_ref()?;
            let service = u.service.as_deref()?;
            Some((1.0, Some((service, u.region.as_deref().unwrap_or("")))))
        }),
    },
    Family {
        name: "aws_iam_user_created_timestamp_seconds",
        help: "When the IAM user was created, in Unix seconds.",
        rows: Rows::User(|u, _, emit| emit(&[], u.created)),
    },
    Family {
        name: "aws_iam_user_info",
        help: "An IAM user, with its IAM path where the source knows it, the policy rule that sets its limits (policy_rule: iam_key_exporter_policy_* give them) and its tags named in user_tags_as_labels (always 1).",
        rows: Rows::User(|u, a, emit| {
            let mut labels: Vec<Label> = Vec::with_capacity(a.account.user_tags.len() + 2);
            if let Some(path) = &u.path {
                labels.push(("path", path));
            }
            let rule = policy::decide(&a.standards.policy, a.account, u, a.tags_known).rule;
            labels.push(("policy_rule", rule));
            for t in &a.account.user_tags {
                if let Some(value) = u.tags.get(&t.tag) {
                    labels.push((&t.label, value));
                }
            }
            emit(&labels, 1.0)
        }),
    },
    Family {
        name: "aws_iam_user_password_last_used_timestamp_seconds",
        help: "When the IAM user's console password was last used, in Unix seconds, when known.",
        rows: Rows::User(|u, _, emit| {
            if let Some(t) = u.password_last_used {
                emit(&[], t)
            }
        }),
    },
    Family {
        name: "aws_iam_user_password_enabled",
        help: "1 if the IAM user has a console password (credential_report and hybrid sources).",
        rows: Rows::User(|u, _, emit| {
            if let Some(c) = &u.console {
                emit(&[], f64::from(u8::from(c.password_enabled)))
            }
        }),
    },
    Family {
        name: "aws_iam_user_password_last_changed_timestamp_seconds",
        help: "When the IAM user's console password was last set, in Unix seconds (credential_report and hybrid sources).",
        rows: Rows::User(|u, _, emit| {
            if let Some(t) = u.console.as_ref().and_then(|c| c.password_last_changed) {
                emit(&[], t)
            }
        }),
    },
    Family {
        name: "aws_iam_user_mfa_active",
        help: "1 if the IAM user has an active MFA device (credential_report and hybrid sources).",
        rows: Rows::User(|u, _, emit| {
            if let Some(c) = &u.console {
                emit(&[], f64::from(u8::from(c.mfa_active)))
            }
        }),
    },
    Family {
        name: "aws_iam_user_signing_certificate_active",
        help: "1 if the IAM user's X.509 signing certificate 1 or 2 (label cert) is active (credential_report and hybrid sources).",
        rows: Rows::User(|u, _, emit| {
            for (cert, c) in certificates(u) {
                emit(&[("cert", cert)], f64::from(u8::from(c.active)))
            }
        }),
    },
    Family {
        name: "aws_iam_user_signing_certificate_last_rotated_timestamp_seconds",
        help: "When the IAM user's X.509 signing certificate 1 or 2 (label cert) was created or last rotated, in Unix seconds (credential_report and hybrid sources).",
        rows: Rows::User(|u, _, emit| {
            for (cert, c) in certificates(u) {
                emit(&[("cert", cert)], c.last_rotated)
            }
        }),
    },
    Family {
        name: "aws_iam_exemption_until_timestamp_seconds",
        help: "Until when a user's keys (access_key_id empty) or one key are exempt from the key alerts, by a user tag or a configured rule (label origin), with the reason; expired ones stay until removed.",
        rows: Rows::User(|u, a, emit| {
            for e in exemptions::of_user(&a.standards.exemptions, a.account, u) {
                let labels = [
                    ("access_key_id", e.access_key_id.as_deref().unwrap_or("")),
                    ("reason", e.reason.as_str()),
                    ("origin", e.origin.label()),
                ];
                emit(&labels, e.until)
            }
        }),
    },
    Family {
        name: "aws_iam_service_credential_created_timestamp_seconds",
        help: "When the IAM user's service-specific credential was created (a Bedrock API key, a CodeCommit, Keyspaces or CloudWatch Logs password: label service as AWS names it), in Unix seconds. IAM records no last use of these credentials.",
        rows: Rows::Credential(|c, _| Some(c.created)),
    },
    Family {
        name: "aws_iam_service_credential_age_seconds",
        help: "Seconds since the service-specific credential was created, at scrape time.",
        rows: Rows::Credential(|c, now| Some((now - c.created).max(0.0))),
    },
    Family {
        name: "aws_iam_service_credential_expiration_timestamp_seconds",
        help: "When the service-specific credential expires, in Unix seconds; absent when it never does (only Bedrock API keys and CloudWatch Logs credentials can have an expiration).",
        rows: Rows::Credential(|c, _| c.expires),
    },
    Family {
        name: "aws_iam_ssh_public_key_uploaded_timestamp_seconds",
        help: "When the IAM user's SSH public key (for CodeCommit) was uploaded, in Unix seconds. IAM records no last use of SSH keys.",
        rows: Rows::Ssh(|k, _| k.uploaded),
    },
    Family {
        name: "aws_iam_ssh_public_key_age_seconds",
        help: "Seconds since the SSH public key was uploaded, at scrape time.",
        rows: Rows::Ssh(|k, now| (now - k.uploaded).max(0.0)),
    },
    Family {
        name: "aws_iam_role_info",
        help: "An IAM role, with its path, the policy rule that sets its role_max_idle (iam_key_exporter_policy_role_max_idle_seconds), and managed_by=\"aws\" for a service-linked role or \"iam-key-exporter\" for a role the exporter itself assumes: the unused-role alert leaves both out (always 1).",
        rows: Rows::Role(|r, a, _, emit| {
            let rule = policy::decide_role(&a.standards.policy, a.account, r).rule;
            let mut labels: Vec<Label> = vec![("path", &r.path), ("policy_rule", rule)];
            if r.service_linked() {
                labels.push(("managed_by", "aws"));
            } else if r.exporter {
                labels.push(("managed_by", "iam-key-exporter"));
            }
            emit(&labels, 1.0)
        }),
    },
    Family {
        name: "aws_iam_role_created_timestamp_seconds",
        help: "When the IAM role was created, in Unix seconds.",
        rows: Rows::Role(|r, _, _, emit| emit(&[], r.created)),
    },
    Family {
        name: "aws_iam_role_last_used_timestamp_seconds",
        help: "When the IAM role was last used (RoleLastUsed), with the region, in Unix seconds; absent when IAM has no date: never used, or not within the 400 days IAM tracks.",
        rows: Rows::Role(|r, _, _, emit| {
            if let Some(u) = &r.last_used {
                emit(&[("region", u.region.as_deref().unwrap_or(""))], u.at)
            }
        }),
    },
    Family {
        name: "aws_iam_role_idle_seconds",
        help: "Seconds since the IAM role was last used or, without a date from IAM, since it was created, at scrape time.",
        rows: Rows::Role(|r, _, now, emit| emit(&[], (now - r.idle_since()).max(0.0))),
    },
    Family {
        name: "aws_iam_root_access_key_active",
        help: "1 if the root user's access key 1 or 2 (label key) is active (credential_report source).",
        rows: Rows::Account(|s| {
            s.root.as_ref().map_or(Vec::new(), |r| {
                vec![
                    (Some(("key", "1")), f64::from(u8::from(r.access_keys_active[0]))),
                    (Some(("key", "2")), f64::from(u8::from(r.access_keys_active[1]))),
                ]
            })
        }),
    },
    Family {
        name: "aws_iam_root_mfa_active",
        help: "1 if the root user has an active MFA device (credential_report source).",
        rows: Rows::Account(|s| {
            s.root.iter().map(|r| (None, f64::from(u8::from(r.mfa_active)))).collect()
        }),
    },
    Family {
        name: "aws_iam_credential_report_generated_timestamp_seconds",
        help: "When the credential report the data comes from was generated, in Unix seconds (credential_report source).",
        rows: Rows::Account(|s| s.report_generated.iter().map(|t| (None, *t)).collect()),
    },
];

struct Family {
    name: &'static str,
    help: &'static str,
    rows: Rows,
}

/// One extra label, name and value.
type Label<'a> = (&'a str, &'a str);
/// A key's value and, for the info metric, its service and region.
type KeySample<'a> = (f64, Option<Label<'a>>);
/// An account's samples, each with at most one extra label.
type AccountSamples = Vec<(Option<Label<'static>>, f64)>;

/// The user's signing certificates that exist, with their `cert` label (`1`, `2`).
fn certificates(u: &User) -> impl Iterator<Item = (&'static str, &Certificate)> {
    ["1", "2"]
        .into_iter()
        .zip(u.console.iter().flat_map(|c| &c.certificates))
        .filter_map(|(label, c)| Some((label, c.as_ref()?)))
}

/// Writes one sample of a user: the labels besides account and user, and the value.
type Emit<'e> = dyn FnMut(&[Label], f64) + 'e;

/// What a user's or role's samples may draw on besides it.
struct Context<'a> {
    account: &'a Account,
    standards: &'a Standards,
    /// Whether the account's users' tags were read.
    tags_known: bool,
}

/// How a family's samples come out of a snapshot.
enum Rows {
    /// At most one sample per key: its value and, for the info metric, service and region.
    Key(fn(&AccessKey, f64) -> Option<KeySample<'_>>),
    /// Any samples per user, each with labels of its own.
    User(fn(&User, &Context, &mut Emit)),
    /// At most one sample per service-specific credential.
    Credential(fn(&ServiceCredential, f64) -> Option<f64>),
    /// One sample per SSH public key.
    Ssh(fn(&SshKey, f64) -> f64),
    /// Any samples per role, each with labels of its own, at the scrape's time.
    Role(fn(&Role, &Context, f64, &mut Emit)),
    /// A few samples per account, each with at most one extra label.
    Account(fn(&Snapshot) -> AccountSamples),
}

impl Family {
    /// Writes this family's samples of one account from row `start` on, stopping once the
    /// buffer holds a chunk. Returns the row to resume at, or None when the account is done.
    fn write(
        &self,
        out: &mut Vec<u8>,
        a: &Prepared,
        standards: &Standards,
        now: f64,
        start: usize,
    ) -> Option<usize> {
        let s = &*a.snapshot;
        match self.rows {
            Rows::Key(value) => {
                for (i, k) in s.keys.iter().enumerate().skip(start) {
                    // Only after a row: yielding without progress would repeat the header.
                    if i > start && out.len() >= CHUNK {
                        return Some(i);
                    }
                    let Some((v, extra)) = value(k, now) else {
                        continue;
                    };
                    let status = k.status.as_str();
                    let key = [
                        ("user", k.user.as_str()),
                        ("access_key_id", &k.id),
                        ("status", status),
                    ];
                    match extra {
                        None => write_line(out, self.name, a.account.as_str(), &key, v),
                        Some((service, region)) => {
                            let [u, id, st] = key;
                            let labels = [u, id, st, ("service", service), ("region", region)];
                            write_line(out, self.name, a.account.as_str(), &labels, v)
                        }
                    }
                }
            }
            Rows::User(samples) => {
                let context = Context {
                    account: &a.state.account,
                    standards,
                    tags_known: s.user_tags_read,
                };
                for (i, u) in s.users.iter().enumerate().skip(start) {
                    // Only after a row: yielding without progress would repeat the header.
                    if i > start && out.len() >= CHUNK {
                        return Some(i);
                    }
                    samples(u, &context, &mut |extra, v| {
                        let mut labels: Vec<Label> = Vec::with_capacity(extra.len() + 1);
                        labels.push(("user", &u.name));
                        labels.extend_from_slice(extra);
                        write_line(out, self.name, a.account.as_str(), &labels, v);
                    });
                }
            }
            Rows::Credential(value) => {
                let all = s.service_credentials.as_deref().unwrap_or_default();
                for (i, c) in all.iter().enumerate().skip(start) {
                    if i > start && out.len() >= CHUNK {
                        return Some(i);
                    }
                    if let Some(v) = value(c, now) {
                        let labels = [
                            ("user", c.user.as_str()),
                            ("credential_id", &c.id),
                            ("service", &c.service),
                            ("status", c.status.as_str()),
                        ];
                        write_line(out, self.name, a.account.as_str(), &labels, v);
                    }
                }
            }
            Rows::Ssh(value) => {
                let all = s.ssh_keys.as_deref().unwrap_or_default();
                for (i, k) in all.iter().enumerate().skip(start) {
                    if i > start && out.len() >= CHUNK {
                        return Some(i);
                    }
                    let labels = [
                        ("user", k.user.as_str()),
                        ("ssh_key_id", &k.id),
                        ("status", k.status.as_str()),
                    ];
                    write_line(out, self.name, a.account.as_str(), &labels, value(k, now));
                }
            }
            Rows::Role(samples) => {
                let context = Context {
                    account: &a.state.account,
                    standards,
                    tags_known: s.user_tags_read,
                };
                let roles = s.roles.as_deref().unwrap_or_default();
                for (i, r) in roles.iter().enumerate().skip(start) {
                    if i > start && out.len() >= CHUNK {
                        return Some(i);
                    }
                    let mut emit = |extra: &[Label], v| {
                        let mut labels: Vec<Label> = Vec::with_capacity(extra.len() + 1);
                        labels.push(("role", &r.name));
                        labels.extend_from_slice(extra);
                        write_line(out, self.name, a.account.as_str(), &labels, v);
                    };
                    samples(r, &context, now, &mut emit);
                }
            }
            Rows::Account(samples) => {
                for (label, v) in samples(s) {
                    let labels: &[(&str, &str)] = match &label {
                        Some(l) => std::slice::from_ref(l),
                        None => &[],
                    };
                    write_line(out, self.name, a.account.as_str(), labels, v);
                }
            }
        }
        None
    }
}

/// One account's state and snapshot, and its escaped `account_id, account_name` labels.
struct Prepared {
    state: Arc<AccountState>,
    snapshot: Arc<Snapshot>,
    account: Labels,
}

/// Where the exposition goes.
#[derive(Clone, Copy, PartialEq)]
pub enum Scope {
    /// `/metrics` of the running exporter: everything.
    Server,
    /// A file written by `once`: no `process_*` (the process is gone when the file is read,
    /// and node_exporter's textfile collector would clash with its own) and no reload state.
    File,
}

/// The exposition of one scrape, as an iterator of text chunks.
pub struct Exposition {
    buf: Vec<u8>,
    accounts: Vec<Prepared>,
    standards: Arc<Standards>,
    now: f64,
    family: usize,
    account: usize,
    /// The key or user to resume at within the current account.
    row: usize,
}

/// Renders everything: exporter health and process metrics first (small), then the per-key
/// and per-user families (large, streamed). `now` is Unix seconds.
pub fn render(
    accounts: &[Arc<AccountState>],
    standards: Arc<Standards>,
    health: &Health,
    scope: Scope,
    now: f64,
) -> Exposition {
    let mut buf = Vec::with_capacity(CHUNK * 2);
    health.render(&mut buf, scope == Scope::Server);
    write_account_families(&mut buf, accounts);
    write_policy_families(&mut buf, accounts, &standards);
    if scope == Scope::Server {
        process::render(&mut buf);
    }

    let accounts = accounts
        .iter()
        .filter_map(|s| {
            let account = Labels::new()
                .with("account_id", &s.account.id)
                .with("account_name", &s.account.name);
            // A failing account's data is shown until max_staleness after its last success;
            // a healthy account's always, however long its refreshes are apart.
            let fresh = s.up || s.data_expires.is_none_or(|t| now <= t);
            s.snapshot
                .clone()
                .filter(|_| fresh)
                .map(|snapshot| Prepared {
                    state: s.clone(),
                    snapshot,
                    account,
                })
        })
        .collect();
    Exposition {
        buf,
        accounts,
        standards,
        now,
        family: 0,
        account: 0,
        row: 0,
    }
}

/// Per-account gauges: configuration facts and the state of the last refresh.
fn write_account_families(out: &mut Vec<u8>, accounts: &[Arc<AccountState>]) {
    type Value = fn(&AccountState) -> Option<f64>;
    let families: [(&str, &str, Value); 4] = [
        (
            "iam_key_exporter_account_up",
            "1 if the last refresh of the account succeeded, else 0; absent before the first.",
            |s| s.attempted.then_some(if s.up { 1.0 } else { 0.0 }),
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

    let coverage = "iam_key_exporter_account_coverage";
    write_header(out, coverage, "gauge", "1 if the account's data covers this kind of credential data (label kind: root, user_mfa, console_password, and where they are read user_tags, service_credentials, roles, ssh_public_keys), 0 if its source cannot see it or reading it failed: alerts about it cannot fire for the account.");
    for (s, l) in accounts.iter().zip(&labels) {
        for (kind, covered) in s.coverage() {
            let mut l = l.clone();
            l.add("kind", kind.label());
            write_sample(out, coverage, l.as_str(), f64::from(u8::from(covered)));
        }
    }

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

/// The policy's limits by rule, which the alert rules join to `aws_iam_user_info`'s
/// `policy_rule`, and per account the users whose rule could not be decided.
fn write_policy_families(out: &mut Vec<u8>, accounts: &[Arc<AccountState>], standards: &Standards) {
    type Limit = fn(&Limits) -> std::time::Duration;
    let limits: [(&str, &str, Limit); 5] = [
        (
            "iam_key_exporter_policy_key_max_age_seconds",
            "The policy's longest life of an active access key, by rule (policy.key_max_age): older keys must be rotated.",
            |l| l.key_max_age,
        ),
        (
            "iam_key_exporter_policy_key_max_idle_seconds",
            "The policy's longest time an active access key may go unused (never used: since creation), by rule (policy.key_max_idle).",
            |l| l.key_max_idle,
        ),
        (
            "iam_key_exporter_policy_password_max_idle_seconds",
            "The policy's longest time a console password may go unused, by rule (policy.password_max_idle).",
            |l| l.password_max_idle,
        ),
        (
            "iam_key_exporter_policy_role_max_idle_seconds",
            "The policy's longest time an IAM role may go unused (no date from IAM: since creation), by rule (policy.role_max_idle).",
            |l| l.role_max_idle,
        ),
        (
            "iam_key_exporter_policy_notice_seconds",
            "How long before a policy deadline the notice alerts fire, by rule (policy.notice).",
            |l| l.notice,
        ),
    ];
    let policy = &standards.policy;
    let rules: Vec<(Labels, &Limits)> = std::iter::once((DEFAULT_RULE, &policy.defaults))
        .chain(policy.rules.iter().map(|r| (r.name.as_str(), &r.limits)))
        .map(|(name, l)| (Labels::new().with("policy_rule", name), l))
        .collect();
    for (name, help, limit) in limits {
        write_header(out, name, "gauge", help);
        for (labels, l) in &rules {
            write_sample(out, name, labels.as_str(), limit(l).as_secs_f64());
        }
    }
    let name = "iam_key_exporter_policy_undecided_users";
    write_header(out, name, "gauge", "Users whose policy rule needs their tags, which could not be read: the default limits apply to them instead.");
    if !policy.needs_user_tags() {
        return;
    }
    for s in accounts {
        let Some(snapshot) = &s.snapshot else {
            continue;
        };
        let undecided = policy::undecided_users(policy, &s.account, snapshot);
        let labels = Labels::new()
            .with("account_id", &s.account.id)
            .with("account_name", &s.account.name);
        write_sample(out, name, labels.as_str(), undecided as f64);
    }
}

impl Iterator for Exposition {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        while self.family < SNAPSHOT_FAMILIES.len() && self.buf.len() < CHUNK {
            let family = &SNAPSHOT_FAMILIES[self.family];
            if self.account == 0 && self.row == 0 {
                write_header(&mut self.buf, family.name, "gauge", family.help);
            }
            let resume = match self.accounts.get(self.account) {
                Some(a) => family.write(&mut self.buf, a, &self.standards, self.now, self.row),
                None => None,
            };
            match resume {
                Some(row) => self.row = row,
                None => {
                    self.row = 0;
                    self.account += 1;
                    if self.account >= self.accounts.len() {
                        self.account = 0;
                        self.family += 1;
                    }
                }
            }
        }
        if self.buf.is_empty() {
            None
        } else {
            Some(std::mem::replace(
                &mut self.buf,
                Vec::with_capacity(CHUNK + CHUNK / 4),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Shard;
    use crate::inventory::sample_state as state;
    use crate::metrics::health::BuildInfo;

    #[test]
    fn every_family_appears_once_and_contiguous_wherever_chunks_end() {
        let build = BuildInfo {
            version: "t",
            revision: "t",
            rustc_version: "t",
        };
        let health = Health::new(0.0, Shard::default(), build);
        // Varying name lengths move every chunk boundary across header and row positions.
        for pad in 0..160 {
            let accounts = [state(300, pad)];
            let text: Vec<u8> = render(&accounts, Default::default(), &health, Scope::Server, 2e9)
                .flatten()
                .collect();
            let text = String::from_utf8(text).unwrap();
            let mut seen = std::collections::HashSet::new();
            let mut current = String::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# HELP ") {
                    let name = rest.split(' ').next().unwrap().to_string();
                    assert!(
                        seen.insert(name.clone()),
                        "pad {pad}: HELP for {name} twice"
                    );
                    current = name;
                } else if !line.starts_with('#') {
                    let name = line.split(['{', ' ']).next().unwrap();
                    assert_eq!(name, current, "pad {pad}: {name} outside its family");
                }
            }
            for family in [
                "aws_iam_access_key_age_seconds{",
                "aws_iam_service_credential_age_seconds{",
                "aws_iam_role_idle_seconds{",
            ] {
                assert_eq!(text.matches(family).count(), 300, "pad {pad}: {family}");
            }
        }
    }
}
