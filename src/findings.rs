//! What is wrong with an account's long-lived credentials, by the same rules the shipped
//! alerts use: for the `audit` command and the key view. Exemptions apply to the key
//! findings, as they do to the key alerts; exempt findings are kept, marked, so an auditor
//! sees every exception.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::Exemptions;
use crate::exemptions::{self, Exemption};
use crate::inventory::{whole_days, AccountState, KeyStatus, Timestamp, User};

/// The alert rules' defaults.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub key_age: Duration,
    pub key_idle: Duration,
    pub password_idle: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        const DAY: u64 = 86400;
        Thresholds {
            key_age: Duration::from_secs(90 * DAY),
            key_idle: Duration::from_secs(45 * DAY),
            password_idle: Duration::from_secs(45 * DAY),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    RootAccessKey,
    RootWithoutMfa,
    KeyTooOld,
    KeyUnused,
    KeyNeverUsed,
    TwoActiveKeys,
    PasswordUnused,
    ConsoleWithoutMfa,
}

impl Kind {
    /// The name in every output format.
    pub fn name(self) -> &'static str {
        match self {
            Kind::RootAccessKey => "root_access_key",
            Kind::RootWithoutMfa => "root_without_mfa",
            Kind::KeyTooOld => "key_too_old",
            Kind::KeyUnused => "key_unused",
            Kind::KeyNeverUsed => "key_never_used",
            Kind::TwoActiveKeys => "two_active_keys",
            Kind::PasswordUnused => "password_unused",
            Kind::ConsoleWithoutMfa => "console_without_mfa",
        }
    }

    /// Whether an exemption can cover it (the key findings, as the key alerts).
    fn exemptible(self) -> bool {
        matches!(
            self,
            Kind::KeyTooOld | Kind::KeyUnused | Kind::KeyNeverUsed | Kind::TwoActiveKeys
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: Kind,
    /// The IAM user, or `<root>`.
    pub user: String,
    pub access_key_id: Option<String>,
    /// Whole days: the key's age, its idle time, or the password's idle time.
    pub days: Option<u64>,
    pub exemption: Option<Exemption>,
}

pub const ROOT: &str = "<root>";

/// Every finding of one account, in a stable order (kind, user, key).
pub fn of_account(
    state: &AccountState,
    exemptions: &Exemptions,
    t: &Thresholds,
    now: Timestamp,
) -> Vec<Finding> {
    let Some(s) = &state.snapshot else {
        return Vec::new();
    };
    let days = |secs: f64| Some(whole_days(secs));
    let mut out = Vec::new();
    let mut add = |kind, user: &str, key: Option<&str>, d: Option<u64>| {
        out.push(Finding {
            kind,
            user: user.to_string(),
            access_key_id: key.map(str::to_string),
            days: d,
            exemption: None,
        })
    };
    if let Some(root) = &s.root {
        if root.access_keys_active.contains(&true) {
            add(Kind::RootAccessKey, ROOT, None, None);
        }
        if !root.mfa_active {
            add(Kind::RootWithoutMfa, ROOT, None, None);
        }
    }
    for k in s.keys.iter().filter(|k| k.status == KeyStatus::Active) {
        let age = now - k.created;
        if age > t.key_age.as_secs_f64() {
            add(Kind::KeyTooOld, &k.user, Some(&k.id), days(age));
        }
        match &k.last_used {
            Some(u) if now - u.at > t.key_idle.as_secs_f64() => {
                add(Kind::KeyUnused, &k.user, Some(&k.id), days(now - u.at))
            }
            None if age > t.key_idle.as_secs_f64() => {
                add(Kind::KeyNeverUsed, &k.user, Some(&k.id), days(age))
            }
            _ => {}
        }
    }
    let mut active: HashMap<&str, usize> = HashMap::new();
    for k in s.keys.iter().filter(|k| k.status == KeyStatus::Active) {
        *active.entry(&k.user).or_default() += 1;
    }
    for u in &s.users {
        if active.get(u.name.as_str()).is_some_and(|n| *n > 1) {
            add(Kind::TwoActiveKeys, &u.name, None, None);
        }
        let Some(console) = u.console.as_ref().filter(|c| c.password_enabled) else {
            continue;
        };
        let since = u.password_last_used.or(console.password_last_changed);
        if let Some(since) = since.filter(|s| now - s > t.password_idle.as_secs_f64()) {
            add(Kind::PasswordUnused, &u.name, None, days(now - since));
        }
        if !console.mfa_active {
            add(Kind::ConsoleWithoutMfa, &u.name, None, None);
        }
    }
    let users: HashMap<&str, &User> = s.users.iter().map(|u| (u.name.as_str(), u)).collect();
    for f in out.iter_mut().filter(|f| f.kind.exemptible()) {
        let Some(user) = users.get(f.user.as_str()) else {
            continue;
        };
        let all = exemptions::of_user(exemptions, &state.account, user);
        f.exemption = match &f.access_key_id {
            Some(id) => exemptions::covering(&all, id, now).cloned(),
            None => all
                .iter()
                .find(|e| e.access_key_id.is_none() && e.active(now))
                .cloned(),
        };
    }
    out.sort_by(|a, b| {
        (a.kind, &a.user, &a.access_key_id).cmp(&(b.kind, &b.user, &b.access_key_id))
    });
    out
}
