//! What is wrong with an account's long-lived credentials, by the configured policy that the
//! shipped alerts read from the metrics: for the `audit` command. Exemptions apply to the key
//! findings, as they do to the key alerts; exempt findings are kept, marked, so an auditor
//! sees every exception. Deadlines within the policy's notice are findings of their own
//! kinds, which are not failures.

use std::collections::HashMap;

use crate::exemptions::{self, Exemption};
use crate::inventory::{whole_days, AccountState, KeyStatus, Standards, Timestamp, User};
use crate::policy::{self, Standing};

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
    /// Within the notice before a key must be rotated.
    KeyTooOldSoon,
    /// Within the notice before an unused key must be disabled.
    KeyUnusedSoon,
    /// An active service-specific credential older than `key_max_age`.
    ServiceCredentialTooOld,
    /// An active Bedrock API key that never expires, or lives longer than `key_max_age`.
    BedrockKeyLongLived,
    /// An active SSH public key older than `key_max_age`.
    SshKeyTooOld,
    /// A role unused longer than `role_max_idle` (not service-linked, not the exporter's).
    RoleUnused,
}

/// A control of a compliance framework that a finding fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub framework: &'static str,
    pub id: &'static str,
}

const CIS_3: &str = "CIS AWS Foundations Benchmark v3.0.0";
const CIS_5: &str = "CIS AWS Foundations Benchmark v5.0.0";
const HUB: &str = "AWS Security Hub";
const PCI: &str = "PCI DSS v4.0";

const fn c(framework: &'static str, id: &'static str) -> Control {
    Control { framework, id }
}

const KEY_AGE: &[Control] = &[
    c(CIS_3, "1.14"),
    c(CIS_5, "1.13"),
    c(HUB, "IAM.3"),
    c(PCI, "8.3.9"),
    c(PCI, "8.6.3"),
];
const UNUSED: &[Control] = &[
    c(CIS_3, "1.12"),
    c(CIS_5, "1.11"),
    c(HUB, "IAM.22"),
    c(PCI, "8.2.6"),
];
const TWO_KEYS: &[Control] = &[c(CIS_3, "1.13"), c(CIS_5, "1.12")];
const ROOT_KEY: &[Control] = &[c(CIS_3, "1.4"), c(CIS_5, "1.3"), c(HUB, "IAM.4")];
const ROOT_MFA: &[Control] = &[c(CIS_3, "1.5"), c(CIS_5, "1.4"), c(HUB, "IAM.9")];
const USER_MFA: &[Control] = &[c(CIS_3, "1.10"), c(CIS_5, "1.9"), c(HUB, "IAM.5")];

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
            Kind::KeyTooOldSoon => "key_too_old_soon",
            Kind::KeyUnusedSoon => "key_unused_soon",
            Kind::ServiceCredentialTooOld => "service_credential_too_old",
            Kind::BedrockKeyLongLived => "bedrock_key_long_lived",
            Kind::SshKeyTooOld => "ssh_key_too_old",
            Kind::RoleUnused => "role_unused",
        }
    }

    /// Not a failure yet: a deadline within the policy's notice.
    pub fn is_notice(self) -> bool {
        matches!(self, Kind::KeyTooOldSoon | Kind::KeyUnusedSoon)
    }

    /// The controls it fails (or, for a notice, is about to), by framework and version.
    pub fn controls(self) -> &'static [Control] {
        match self {
            Kind::KeyTooOld | Kind::KeyTooOldSoon => KEY_AGE,
            Kind::KeyUnused | Kind::KeyNeverUsed | Kind::KeyUnusedSoon | Kind::PasswordUnused => {
                UNUSED
            }
            Kind::TwoActiveKeys => TWO_KEYS,
            Kind::RootAccessKey => ROOT_KEY,
            Kind::RootWithoutMfa => ROOT_MFA,
            Kind::ConsoleWithoutMfa => USER_MFA,
            // No benchmark names these credentials yet.
            Kind::ServiceCredentialTooOld
            | Kind::BedrockKeyLongLived
            | Kind::SshKeyTooOld
            | Kind::RoleUnused => &[],
        }
    }

    /// The controls in one line, as the alerts' `controls` annotation and the audit's
    /// table and CSV write them: `CIS AWS Foundations Benchmark v3.0.0 1.14; ...`.
    pub fn controls_text(self) -> String {
        self.controls()
            .iter()
            .map(|c| format!("{} {}", c.framework, c.id))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether an exemption can cover it (the key findings, as the key alerts).
    fn exemptible(self) -> bool {
        matches!(
            self,
            Kind::KeyTooOld
                | Kind::KeyUnused
                | Kind::KeyNeverUsed
                | Kind::TwoActiveKeys
                | Kind::KeyTooOldSoon
                | Kind::KeyUnusedSoon
                | Kind::ServiceCredentialTooOld
                | Kind::BedrockKeyLongLived
                | Kind::SshKeyTooOld
        )
    }

    /// A finding about a service-specific credential or an SSH key: its id is not an access
    /// key's.
    pub fn is_other_credential(self) -> bool {
        matches!(
            self,
            Kind::ServiceCredentialTooOld | Kind::BedrockKeyLongLived | Kind::SshKeyTooOld
        )
    }

    /// A finding about a role: its `user` is the role's name.
    pub fn is_role(self) -> bool {
        self == Kind::RoleUnused
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: Kind,
    /// The IAM user, `<root>`, or for a role finding the role.
    pub user: String,
    /// The access key, service-specific credential or SSH key.
    pub credential_id: Option<String>,
    /// Whole days: the key's or credential's age, its idle time, or the password's or role's
    /// idle time.
    pub days: Option<u64>,
    /// The policy's deadline that passed (or, for a notice, is coming), and the rule that
    /// set it; for findings that have one.
    pub deadline: Option<(Timestamp, String)>,
    pub exemption: Option<Exemption>,
}

pub const ROOT: &str = "<root>";

/// Every finding of one account, in a stable order (kind, user, key).
pub fn of_account(state: &AccountState, standards: &Standards, now: Timestamp) -> Vec<Finding> {
    let Some(s) = &state.snapshot else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut add = |kind,
                   user: &str,
                   key: Option<&str>,
                   days: Option<f64>,
                   deadline: Option<(Timestamp, &str)>| {
        out.push(Finding {
            kind,
            user: user.to_string(),
            credential_id: key.map(str::to_string),
            days: days.map(whole_days),
            deadline: deadline.map(|(t, rule)| (t, rule.to_string())),
            exemption: None,
        })
    };
    if let Some(root) = &s.root {
        if root.access_keys_active.contains(&true) {
            add(Kind::RootAccessKey, ROOT, None, None, None);
        }
        if !root.mfa_active {
            add(Kind::RootWithoutMfa, ROOT, None, None, None);
        }
    }
    let users: HashMap<&str, &User> = s.users.iter().map(|u| (u.name.as_str(), u)).collect();
    let decide = |u: &User| policy::decide(&standards.policy, &state.account, u, s.user_tags_read);
    // A credential's user, by name: the defaults if the user is gone from the listing.
    let decide_for = |name: &str| {
        users
            .get(name)
            .map_or_else(|| policy::defaults(&standards.policy), |u| decide(u))
    };
    let mut active: HashMap<&str, usize> = HashMap::new();
    for k in s.keys.iter().filter(|k| k.status == KeyStatus::Active) {
        *active.entry(&k.user).or_default() += 1;
        let d = decide_for(&k.user);
        let due = policy::key_deadlines(k, d.limits);
        let key = Some(k.id.as_str());
        let unused = if k.last_used.is_some() {
            Kind::KeyUnused
        } else {
            Kind::KeyNeverUsed
        };
        let checks = [
            (
                due.rotate_by,
                Kind::KeyTooOld,
                Kind::KeyTooOldSoon,
                now - k.created,
            ),
            (
                due.disable_by,
                unused,
                Kind::KeyUnusedSoon,
                now - k.idle_since(),
            ),
        ];
        for (deadline, overdue, soon, days) in checks {
            let kind = match policy::standing(deadline, d.limits, now) {
                Standing::Overdue => overdue,
                Standing::DueSoon => soon,
                Standing::InTime => continue,
            };
            add(kind, &k.user, key, Some(days), Some((deadline, d.rule)));
        }
    }
    for u in &s.users {
        if active.get(u.name.as_str()).is_some_and(|n| *n > 1) {
            add(Kind::TwoActiveKeys, &u.name, None, None, None);
        }
        let Some(console) = u.console.as_ref().filter(|c| c.password_enabled) else {
            continue;
        };
        let d = decide(u);
        if let Some(deadline) = policy::password_deadline(u, d.limits).filter(|t| now > *t) {
            let idle = now - (deadline - d.limits.password_max_idle.as_secs_f64());
            add(
                Kind::PasswordUnused,
                &u.name,
                None,
                Some(idle),
                Some((deadline, d.rule)),
            );
        }
        if !console.mfa_active {
            add(Kind::ConsoleWithoutMfa, &u.name, None, None, None);
        }
    }
    // Service-specific credentials and SSH keys: judged by age, as access keys are.
    let service = s.service_credentials.iter().flatten().map(|c| {
        (
            Kind::ServiceCredentialTooOld,
            &c.user,
            &c.id,
            &c.status,
            c.created,
            Some(c),
        )
    });
    let ssh = s.ssh_keys.iter().flatten().map(|k| {
        (
            Kind::SshKeyTooOld,
            &k.user,
            &k.id,
            &k.status,
            k.uploaded,
            None,
        )
    });
    for (kind, user, id, status, created, credential) in service.chain(ssh) {
        if *status != KeyStatus::Active {
            continue;
        }
        let d = decide_for(user);
        let deadline = policy::rotate_by(created, d.limits);
        if now > deadline {
            let age = Some(now - created);
            add(kind, user, Some(id), age, Some((deadline, d.rule)));
        }
        if credential.and_then(|c| policy::bedrock_too_long_lived(c, d.limits)) == Some(true) {
            add(Kind::BedrockKeyLongLived, user, Some(id), None, None);
        }
    }
    for r in s.roles.iter().flatten().filter(|r| r.judged()) {
        let d = policy::decide_role(&standards.policy, &state.account, r);
        let deadline = policy::role_deadline(r, d.limits);
        if now > deadline {
            let idle = Some(now - r.idle_since());
            add(
                Kind::RoleUnused,
                &r.name,
                None,
                idle,
                Some((deadline, d.rule)),
            );
        }
    }
    for f in out.iter_mut().filter(|f| f.kind.exemptible()) {
        let Some(user) = users.get(f.user.as_str()) else {
            continue;
        };
        let all = exemptions::of_user(&standards.exemptions, &state.account, user);
        f.exemption = match &f.credential_id {
            Some(id) => exemptions::covering(&all, id, now).cloned(),
            None => all
                .iter()
                .find(|e| e.access_key_id.is_none() && e.active(now))
                .cloned(),
        };
    }
    out.sort_by(|a, b| {
        (a.kind, &a.user, &a.credential_id).cmp(&(b.kind, &b.user, &b.credential_id))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped alerts' `controls` annotations say what the audit says, word for word.
    #[test]
    fn the_alerts_name_the_controls_the_audit_names() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/prometheus/iam-key-exporter.rules.yml"
        );
        let rules: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let alerts = [
            ("IAMAccessKeyTooOld", Kind::KeyTooOld),
            ("IAMAccessKeyTooOldSoon", Kind::KeyTooOldSoon),
            ("IAMAccessKeyUnused", Kind::KeyUnused),
            ("IAMAccessKeyUnusedSoon", Kind::KeyUnusedSoon),
            ("IAMUserMultipleActiveKeys", Kind::TwoActiveKeys),
            ("IAMRootAccessKeyPresent", Kind::RootAccessKey),
            ("IAMUserPasswordUnused", Kind::PasswordUnused),
            ("IAMUserWithoutMFA", Kind::ConsoleWithoutMfa),
            ("IAMRootWithoutMFA", Kind::RootWithoutMfa),
        ];
        let mut seen = 0;
        for group in rules["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                let Some(name) = rule["alert"].as_str() else {
                    continue;
                };
                let Some((_, kind)) = alerts.iter().find(|(a, _)| *a == name) else {
                    continue;
                };
                assert_eq!(
                    rule["annotations"]["controls"].as_str(),
                    Some(kind.controls_text().as_str()),
                    "{name}"
                );
                seen += 1;
            }
        }
        assert_eq!(seen, alerts.len(), "an alert of the table is not shipped");
        assert_eq!(Kind::KeyNeverUsed.controls(), Kind::KeyUnused.controls());
    }
}
