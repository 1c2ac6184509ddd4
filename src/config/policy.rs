//! `policy:`: how long an access key may live and sit unused, and a console password sit
//! unused, with rules that give some accounts or users limits of their own. Read here with
//! positions like every other field; deciding which rule applies to a user is `policy.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::read::{any_account, duration_setting};
use super::values;
use super::yaml::{Map, Problems, Value};
use super::{duration_text, Limits, Policy, PolicyRule, Pos};

const DAY: u64 = 86400;
/// humantime's `10y`: anything longer is a typo, not a policy.
const TEN_YEARS: Duration = Duration::from_secs(315_576_000);
const LIMIT: std::ops::RangeInclusive<Duration> = Duration::from_secs(1)..=TEN_YEARS;
/// `0s` turns the notice off.
const NOTICE: std::ops::RangeInclusive<Duration> = Duration::ZERO..=TEN_YEARS;

/// The CIS AWS Foundations Benchmark's limits, and two weeks' notice.
pub const CIS: Limits = Limits {
    key_max_age: Duration::from_secs(90 * DAY),
    key_max_idle: Duration::from_secs(45 * DAY),
    password_max_idle: Duration::from_secs(45 * DAY),
    role_max_idle: Duration::from_secs(90 * DAY),
    notice: Duration::from_secs(14 * DAY),
};

/// The name of the limits that apply when no rule matches.
pub const DEFAULT_RULE: &str = "default";

/// The limits as written in a mapping: each one given and valid, or None.
struct Written {
    key_max_age: Option<Duration>,
    key_max_idle: Option<Duration>,
    password_max_idle: Option<Duration>,
    role_max_idle: Option<Duration>,
    notice: Option<Duration>,
    /// Whether any of them is written at all, valid or not.
    any: bool,
}

const FIELDS: [&str; 5] = [
    "key_max_age",
    "key_max_idle",
    "password_max_idle",
    "role_max_idle",
    "notice",
];

impl Written {
    fn read(m: &mut Map, p: &mut Problems) -> Written {
        let any = FIELDS.iter().any(|f| m.get(f).is_some());
        Written {
            key_max_age: duration_setting(m, "key_max_age", LIMIT, p),
            key_max_idle: duration_setting(m, "key_max_idle", LIMIT, p),
            password_max_idle: duration_setting(m, "password_max_idle", LIMIT, p),
            role_max_idle: duration_setting(m, "role_max_idle", LIMIT, p),
            notice: duration_setting(m, "notice", NOTICE, p),
            any,
        }
    }

    fn over(&self, base: &Limits) -> Limits {
        Limits {
            key_max_age: self.key_max_age.unwrap_or(base.key_max_age),
            key_max_idle: self.key_max_idle.unwrap_or(base.key_max_idle),
            password_max_idle: self.password_max_idle.unwrap_or(base.password_max_idle),
            role_max_idle: self.role_max_idle.unwrap_or(base.role_max_idle),
            notice: self.notice.unwrap_or(base.notice),
        }
    }
}

/// The `policy:` section (absent: the CIS limits for everyone). Problems go to `p`, settings
/// that work but probably not as meant to `warnings`.
pub(super) fn policy(v: Option<Value>, p: &mut Problems, warnings: &mut Problems) -> Policy {
    let Some(mut m) = v.and_then(|v| v.map(p)) else {
        return Policy::default();
    };
    let defaults = Written::read(&mut m, p).over(&CIS);
    let items = m.get("rules").and_then(|v| v.list(p)).unwrap_or_default();
    m.finish(p);
    let mut rules: Vec<PolicyRule> = Vec::with_capacity(items.len());
    // The first rule that matches everyone, which hides every rule after it.
    let mut catch_all: Option<(String, Pos)> = None;
    for (i, item) in items.iter().enumerate() {
        let Some(rule) = rule(item, i, &defaults, p) else {
            continue;
        };
        let path = item.path();
        if rules.iter().any(|r| r.name == rule.name) || rule.name == DEFAULT_RULE {
            p.add(
                item.pos(),
                &format!("{path}.name"),
                format!(
                    "rule name {:?} is taken (by another rule or the defaults); names must be unique",
                    rule.name
                ),
            );
            continue;
        }
        if let Some((name, at)) = &catch_all {
            warnings.add(
                item.pos(),
                &path,
                format!(
                    "rule {:?} can never apply: rule {name:?} (line {}) matches every user \
                     before it; move this rule up or give that one a matcher",
                    rule.name, at.line
                ),
            );
        } else if rule.matches_everyone() {
            catch_all = Some((rule.name.clone(), item.pos()));
        }
        for (field, limit) in [
            ("key_max_age", rule.limits.key_max_age),
            ("key_max_idle", rule.limits.key_max_idle),
        ] {
            if rule.limits.notice >= limit {
                warnings.add(
                    item.pos(),
                    &path,
                    format!(
                        "notice ({}) is not shorter than {field} ({}) in rule {:?}: owners are \
                         told of the deadline from the day a key is created",
                        duration_text(rule.limits.notice),
                        duration_text(limit),
                        rule.name
                    ),
                );
            }
        }
        rules.push(rule);
    }
    Policy { defaults, rules }
}

fn rule(item: &Value, i: usize, defaults: &Limits, p: &mut Problems) -> Option<PolicyRule> {
    let mut r = item.map(p)?;
    let name = r
        .get("name")
        .and_then(|v| v.parse(p, values::rule_name))
        .unwrap_or_else(|| format!("rule-{}", i + 1));
    let account = r.get("account").and_then(|v| v.parse(p, any_account));
    let user = r.get("user").and_then(|v| v.parse(p, values::user_pattern));
    let path = r.get("path").and_then(|v| v.parse(p, values::iam_path));
    let account_labels = pairs(&mut r, "account_labels", values::label_name, p);
    let user_tags = pairs(&mut r, "user_tags", values::tag_key, p);
    let ous = r
        .get("ous")
        .and_then(|v| v.list(p))
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.parse(p, values::ou_id))
        .collect();
    let written = Written::read(&mut r, p);
    let at = r.pos();
    let path_text = r.path().to_string();
    r.finish(p);
    if !written.any {
        p.add(
            at,
            &path_text,
            "sets no limit: give it key_max_age, key_max_idle, password_max_idle, role_max_idle \
             or notice",
        );
        return None;
    }
    Some(PolicyRule {
        name,
        account: account.flatten(),
        user,
        path,
        account_labels,
        user_tags,
        ous,
        limits: written.over(defaults),
    })
}

/// A mapping of names to values (`account_labels`, `user_tags`), each name checked.
fn pairs(
    m: &mut Map,
    key: &'static str,
    check: fn(&str) -> Result<String, String>,
    p: &mut Problems,
) -> BTreeMap<String, String> {
    let entries = m.get(key).and_then(|v| v.entries(p)).unwrap_or_default();
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        match check(&k.text) {
            Ok(name) => {
                if let Some(value) = v.string(p) {
                    out.insert(name, value);
                }
            }
            Err(e) => p.add(k.at, &v.path(), e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use std::path::Path;

    const ONE: &str = "accounts: [{id: \"111111111111\"}]\n";

    #[test]
    fn without_a_policy_the_cis_limits_apply_to_everyone() {
        let c = parse(ONE, Path::new("t.yaml")).unwrap();
        assert_eq!(c.policy.defaults, CIS);
        assert!(c.policy.rules.is_empty());
    }

    #[test]
    fn rules_take_unset_limits_from_the_defaults() {
        let c = parse(
            &format!(
                "policy:\n  key_max_age: 60d\n  notice: 7d\n  rules:\n    - {{user_tags: {{kind: service}}, key_max_age: 365d}}\n    - {{name: ci, account: \"*\", user: ci-*, key_max_idle: 10d}}\n{ONE}"
            ),
            Path::new("t.yaml"),
        )
        .unwrap();
        let [a, b] = &c.policy.rules[..] else {
            panic!("{:?}", c.policy.rules)
        };
        assert_eq!(a.name, "rule-1");
        assert_eq!(a.limits.key_max_age, Duration::from_secs(365 * DAY));
        assert_eq!(a.limits.key_max_idle, CIS.key_max_idle);
        assert_eq!(a.limits.notice, Duration::from_secs(7 * DAY));
        assert_eq!(b.name, "ci");
        assert_eq!(b.account, None, "\"*\" is every account");
        assert_eq!(b.limits.key_max_age, Duration::from_secs(60 * DAY));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}
