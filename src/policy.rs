//! Which limits apply to a user, and the deadlines they give each credential: the one place
//! that decides. The metrics carry the decision (the `policy_rule` label and each rule's
//! limits, which the shipped alert rules join), and `audit` and the key view read the same
//! decision and deadlines from here.

use std::fmt;

use crate::accounts::Account;
use crate::config::{duration_text, Limits, Policy, PolicyRule, DEFAULT_RULE};
use crate::exemptions::glob;
use crate::inventory::{AccessKey, Role, ServiceCredential, Snapshot, Timestamp, User, BEDROCK};

/// The rule that applies to a user, and its limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision<'p> {
    /// The rule's name, or `default`.
    pub rule: &'p str,
    pub limits: &'p Limits,
    /// A rule needed the user's tags, which could not be read: the defaults apply instead,
    /// so a missing permission never loosens a limit silently.
    pub undecided: bool,
}

/// Why a rule does not apply to a user: the first of its matchers that fails.
#[derive(Debug, Clone, PartialEq)]
pub enum Miss {
    Account,
    User,
    Path,
    AccountLabel(String),
    UserTag(String),
    Ou,
    /// The rule needs the user's tags and they were not read.
    TagsUnknown,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::Account => f.write_str("the rule is for another account"),
            Miss::User => f.write_str("the user name does not match"),
            Miss::Path => f.write_str("the user's IAM path does not start with the rule's path"),
            Miss::AccountLabel(l) => write!(f, "the account's label {l} differs or is missing"),
            Miss::UserTag(t) => write!(f, "the user's tag {t:?} differs or is missing"),
            Miss::Ou => f.write_str("the account is in none of the rule's OUs"),
            Miss::TagsUnknown => f.write_str("the user's tags could not be read"),
        }
    }
}

/// Whether `rule` applies to `user` of `account`; `tags_known` says whether the user's tags
/// were read.
pub fn test(
    rule: &PolicyRule,
    account: &Account,
    user: &User,
    tags_known: bool,
) -> Result<(), Miss> {
    if rule.account.as_deref().is_some_and(|a| a != account.id) {
        return Err(Miss::Account);
    }
    if rule.user.as_deref().is_some_and(|u| !glob(u, &user.name)) {
        return Err(Miss::User);
    }
    test_place(rule, account, user.path.as_deref())?;
    if !rule.user_tags.is_empty() && !tags_known {
        return Err(Miss::TagsUnknown);
    }
    for (tag, want) in &rule.user_tags {
        if !user.tags.get(tag).is_some_and(|v| glob(want, v)) {
            return Err(Miss::UserTag(tag.clone()));
        }
    }
    Ok(())
}

/// The matchers users and roles share, after `account`: `path` (a prefix of the user's or
/// role's IAM path), `account_labels` and `ous`.
fn test_place(rule: &PolicyRule, account: &Account, path: Option<&str>) -> Result<(), Miss> {
    if let Some(prefix) = &rule.path {
        if !path.is_some_and(|p| p.starts_with(prefix.as_str())) {
            return Err(Miss::Path);
        }
    }
    for (label, want) in &rule.account_labels {
        if account.labels.get(label) != Some(want) {
            return Err(Miss::AccountLabel(label.clone()));
        }
    }
    if !rule.ous.is_empty() && !account.ous.iter().any(|ou| rule.ous.contains(ou)) {
        return Err(Miss::Ou);
    }
    Ok(())
}

/// The first rule that applies to the user, else the defaults. A rule that cannot be decided
/// for want of the user's tags stops the search at the defaults.
pub fn decide<'p>(
    policy: &'p Policy,
    account: &Account,
    user: &User,
    tags_known: bool,
) -> Decision<'p> {
    for rule in &policy.rules {
        match test(rule, account, user, tags_known) {
            Ok(()) => {
                return Decision {
                    rule: &rule.name,
                    limits: &rule.limits,
                    undecided: false,
                }
            }
            Err(Miss::TagsUnknown) => {
                return Decision {
                    undecided: true,
                    ..defaults(policy)
                }
            }
            Err(_) => {}
        }
    }
    defaults(policy)
}

/// The rule that applies to a role: the first whose account matchers (`account`,
/// `account_labels`, `ous`) match and whose `path`, if any, prefixes the role's path. Rules
/// that name users (`user`, `user_tags`) are about users and never apply to a role.
pub fn decide_role<'p>(policy: &'p Policy, account: &Account, role: &Role) -> Decision<'p> {
    let applies = |r: &&PolicyRule| {
        r.user.is_none()
            && r.user_tags.is_empty()
            && r.account.as_deref().is_none_or(|a| a == account.id)
            && test_place(r, account, Some(&role.path)).is_ok()
    };
    policy.rules.iter().find(applies).map_or_else(
        || defaults(policy),
        |r| Decision {
            rule: &r.name,
            limits: &r.limits,
            undecided: false,
        },
    )
}

/// The users of an account whose rule needs their tags, which were not read: the defaults
/// apply to them instead.
pub fn undecided_users(policy: &Policy, account: &Account, snapshot: &Snapshot) -> usize {
    if snapshot.user_tags_read || !policy.needs_user_tags() {
        return 0;
    }
    snapshot
        .users
        .iter()
        .filter(|u| decide(policy, account, u, false).undecided)
        .count()
}

/// The defaults, for a user no rule applies to.
pub fn defaults(policy: &Policy) -> Decision<'_> {
    Decision {
        rule: DEFAULT_RULE,
        limits: &policy.defaults,
        undecided: false,
    }
}

/// `key_max_age 90d, key_max_idle 45d, password_max_idle 45d, role_max_idle 90d, notice 14d`.
pub fn limits_text(l: &Limits) -> String {
    let d = duration_text;
    format!(
        "key_max_age {}, key_max_idle {}, password_max_idle {}, role_max_idle {}, notice {}",
        d(l.key_max_age),
        d(l.key_max_idle),
        d(l.password_max_idle),
        d(l.role_max_idle),
        d(l.notice)
    )
}

/// The policy in force, for `check-config`: the defaults, then each rule's limits.
pub fn summary(policy: &Policy) -> String {
    let mut out = format!(
        "policy: {}: {}\n",
        DEFAULT_RULE,
        limits_text(&policy.defaults)
    );
    for r in &policy.rules {
        out.push_str(&format!(
            "policy: rule {}: {}\n",
            r.name,
            limits_text(&r.limits)
        ));
    }
    out
}

/// Which rule applies to `user` and why, for `iam-key-exporter policy`: each rule in order,
/// up to the one that applies, with the first matcher that fails it.
pub fn explain(policy: &Policy, account: &Account, user: &User) -> String {
    let mut out = format!(
        "user {} (path {}) in account {} ({}):\n",
        user.name,
        user.path.as_deref().unwrap_or("/"),
        account.id,
        account.name
    );
    for rule in &policy.rules {
        match test(rule, account, user, true) {
            Ok(()) => {
                out.push_str(&format!("  rule {}: applies\n", rule.name));
                out.push_str(&format!(
                    "limits of rule {}: {}\n",
                    rule.name,
                    limits_text(&rule.limits)
                ));
                return out;
            }
            Err(miss) => out.push_str(&format!("  rule {}: does not apply: {miss}\n", rule.name)),
        }
    }
    out.push_str(&format!(
        "no rule applies; the defaults: {}\n",
        limits_text(&policy.defaults)
    ));
    out
}

/// When an active access key must be rotated and when, unless used, disabled. The alerts
/// fire once now is past these; the notice alerts `notice` before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyDeadlines {
    pub rotate_by: Timestamp,
    pub disable_by: Timestamp,
}

pub fn key_deadlines(key: &AccessKey, limits: &Limits) -> KeyDeadlines {
    KeyDeadlines {
        rotate_by: rotate_by(key.created, limits),
        disable_by: key.idle_since() + limits.key_max_idle.as_secs_f64(),
    }
}

/// When an active credential made at `created` must be rotated: access keys,
/// service-specific credentials and SSH keys alike, at `key_max_age`.
pub fn rotate_by(created: Timestamp, limits: &Limits) -> Timestamp {
    created + limits.key_max_age.as_secs_f64()
}

/// Whether a Bedrock API key lives longer than the policy lets a key live: it has no
/// expiration, or one after it must be rotated. None for other credentials.
pub fn bedrock_too_long_lived(c: &ServiceCredential, limits: &Limits) -> Option<bool> {
    (c.service == BEDROCK).then(|| c.expires.is_none_or(|e| e > rotate_by(c.created, limits)))
}

/// When a role counts as unused: `role_max_idle` after its last use, or its creation.
pub fn role_deadline(role: &Role, limits: &Limits) -> Timestamp {
    role.idle_since() + limits.role_max_idle.as_secs_f64()
}

/// When the user's console password counts as unused, if it has one and a date to count from.
pub fn password_deadline(user: &User, limits: &Limits) -> Option<Timestamp> {
    let console = user.console.as_ref().filter(|c| c.password_enabled)?;
    let since = user.password_last_used.or(console.password_last_changed)?;
    Some(since + limits.password_max_idle.as_secs_f64())
}

/// Where `now` stands against a deadline with `notice` ahead of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    InTime,
    /// Within the notice period.
    DueSoon,
    Overdue,
}

pub fn standing(deadline: Timestamp, limits: &Limits, now: Timestamp) -> Standing {
    // Strictly past, as the alert rules compare (`age > limit`).
    if now > deadline {
        Standing::Overdue
    } else if now > deadline - limits.notice.as_secs_f64() {
        Standing::DueSoon
    } else {
        Standing::InTime
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::Path;

    fn account(id: &str, labels: &[(&str, &str)], ous: &[&str]) -> Account {
        Account {
            id: id.into(),
            name: id.into(),
            source: Default::default(),
            role: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            origin: crate::accounts::Origin::Static,
            user_tags: Vec::new(),
            reads_user_tags: true,
            read: Default::default(),
            ous: ous.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn user(name: &str, path: &str, tags: &[(&str, &str)]) -> User {
        User {
            name: name.into(),
            created: 0.0,
            password_last_used: None,
            path: Some(path.into()),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            console: None,
        }
    }

    /// The README's example policy.
    fn example() -> Policy {
        config::parse(
            r#"
policy:
  key_max_age: 90d
  key_max_idle: 45d
  password_max_idle: 45d
  notice: 14d
  rules:
    - {name: sandbox, account_labels: {tag_environment: sandbox}, key_max_age: 180d}
    - {name: service, user_tags: {kind: service}, key_max_age: 365d, key_max_idle: 90d}
    - {name: ci, account: "111111111111", user: "ci-*", key_max_age: 30d}
    - {name: breakglass, path: /breakglass/, key_max_idle: 365d}
    - {name: payments-ou, ous: [ou-ab12-cdef3456], notice: 30d}
accounts: [{id: "111111111111"}]
"#,
            Path::new("t.yaml"),
        )
        .unwrap()
        .policy
    }

    fn role(name: &str, path: &str) -> Role {
        Role {
            name: name.into(),
            path: path.into(),
            created: 0.0,
            last_used: None,
            exporter: false,
        }
    }

    #[test]
    fn a_role_gets_the_first_rule_that_is_not_about_users() {
        let p = example();
        let plain = account("111111111111", &[], &[]);
        let sandbox = account("222222222222", &[("tag_environment", "sandbox")], &[]);
        let rule = |a: &Account, r: &Role| decide_role(&p, a, r).rule.to_string();
        assert_eq!(rule(&sandbox, &role("deploy", "/")), "sandbox");
        // `service` (user_tags) and `ci` (user) are about users: skipped.
        assert_eq!(rule(&plain, &role("ci-1", "/")), "default");
        assert_eq!(rule(&plain, &role("x", "/breakglass/ops/")), "breakglass");
        assert_eq!(
            rule(
                &account("333333333333", &[], &["ou-ab12-cdef3456"]),
                &role("x", "/")
            ),
            "payments-ou"
        );
    }

    #[test]
    fn bedrock_keys_may_not_outlive_the_key_age_and_others_are_not_judged_so() {
        let limits = example().defaults;
        let day = 86400.0;
        let cred = |service: &str, expires: Option<f64>| ServiceCredential {
            user: "u".into(),
            id: "ACCAEXAMPLE0000000001".into(),
            service: service.into(),
            status: crate::inventory::KeyStatus::Active,
            created: 1000.0 * day,
            expires,
        };
        let long = |c: &ServiceCredential| bedrock_too_long_lived(c, &limits);
        assert_eq!(long(&cred(BEDROCK, None)), Some(true), "never expires");
        assert_eq!(long(&cred(BEDROCK, Some(1090.0 * day))), Some(false));
        assert_eq!(long(&cred(BEDROCK, Some(1091.0 * day))), Some(true));
        assert_eq!(long(&cred("codecommit.amazonaws.com", None)), None);
        assert_eq!(
            rotate_by(cred(BEDROCK, None).created, &limits),
            1090.0 * day
        );
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let p = example();
        let plain = account("111111111111", &[], &[]);
        let sandbox = account("222222222222", &[("tag_environment", "sandbox")], &[]);
        let rule = |a: &Account, u: &User| decide(&p, a, u, true).rule.to_string();
        assert_eq!(rule(&plain, &user("alice", "/", &[])), "default");
        assert_eq!(
            rule(&sandbox, &user("ci-1", "/", &[("kind", "service")])),
            "sandbox"
        );
        assert_eq!(
            rule(&plain, &user("ci-1", "/", &[("kind", "service")])),
            "service"
        );
        assert_eq!(rule(&plain, &user("ci-1", "/", &[])), "ci");
        assert_eq!(
            rule(&account("333333333333", &[], &[]), &user("ci-1", "/", &[])),
            "default"
        );
        assert_eq!(
            rule(&plain, &user("bob", "/breakglass/eu/", &[])),
            "breakglass"
        );
        let in_ou = account("444444444444", &[], &["ou-ab12-cdef3456", "r-ab12"]);
        assert_eq!(rule(&in_ou, &user("bob", "/", &[])), "payments-ou");
        let d = decide(&p, &plain, &user("ci-1", "/", &[]), true);
        assert_eq!(d.limits.key_max_age.as_secs(), 30 * 86400);
        assert_eq!(
            d.limits.key_max_idle.as_secs(),
            45 * 86400,
            "from the defaults"
        );
    }

    #[test]
    fn unknown_tags_fall_back_to_the_defaults_and_say_so() {
        let p = example();
        let d = decide(
            &p,
            &account("111111111111", &[], &[]),
            &user("ci-1", "/", &[]),
            false,
        );
        assert_eq!((d.rule, d.undecided), ("default", true));
        // A rule before the tag rule still decides.
        let sandbox = account("222222222222", &[("tag_environment", "sandbox")], &[]);
        let d = decide(&p, &sandbox, &user("x", "/", &[]), false);
        assert_eq!((d.rule, d.undecided), ("sandbox", false));
    }

    #[test]
    fn standing_against_a_deadline() {
        let l = example().defaults;
        let day = 86400.0;
        assert_eq!(standing(100.0 * day, &l, 80.0 * day), Standing::InTime);
        assert_eq!(standing(100.0 * day, &l, 90.0 * day), Standing::DueSoon);
        assert_eq!(standing(100.0 * day, &l, 100.0 * day), Standing::DueSoon);
        assert_eq!(standing(100.0 * day, &l, 100.5 * day), Standing::Overdue);
    }
}
