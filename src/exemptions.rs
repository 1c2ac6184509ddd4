//! Which keys the key alerts leave alone, and until when: a user tag
//! (`iam-key-exporter:exempt-until: 2027-03-31 break-glass`) or a rule in the configuration.
//! Every exemption has an end; an expired one no longer exempts but stays visible, so
//! auditors see every exception that was made.

use crate::accounts::Account;
use std::collections::HashMap;

use crate::config::{values::until_date, ExemptionRule, Exemptions};
use crate::inventory::{date, Timestamp, User, DAY};

/// One exemption of a user (all its keys) or of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemption {
    /// None: every key of the user.
    pub access_key_id: Option<String>,
    pub reason: String,
    /// The end, in Unix seconds: exempt while now is before it.
    pub until: Timestamp,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Tag,
    Config,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Origin::Tag => "tag",
            Origin::Config => "config",
        }
    }
}

impl Exemption {
    pub fn active(&self, now: Timestamp) -> bool {
        now < self.until
    }

    fn covers(&self, key_id: &str) -> bool {
        self.access_key_id.as_deref().is_none_or(|id| id == key_id)
    }

    /// The end date as written (`2027-03-31`), the day before `until`.
    pub fn until_date(&self) -> String {
        date(self.until - DAY)
    }
}

/// The configuration's exemptions, indexed once when it is loaded: trying every rule against
/// every user on every scrape took 2.7 s per render with 10k rules naming users and 100k
/// keys (71 ms indexed, `benches/render.rs`). A plain user name is one hash lookup; only rules
/// with `*` or `?` are tried one by one, which is why `check-config` warns past
/// [`EXEMPTION_PATTERNS_WARN`](crate::config::EXEMPTION_PATTERNS_WARN) of them.
#[derive(Debug, Default)]
pub struct Rules {
    tag: Option<String>,
    rules: Vec<ExemptionRule>,
    /// Plain user name → its rules, as indices into `rules` in file order.
    by_name: HashMap<String, Vec<usize>>,
    /// The rules whose user is a pattern, in file order.
    patterns: Vec<usize>,
}

impl Rules {
    pub fn new(exemptions: &Exemptions) -> Rules {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut patterns = Vec::new();
        for (i, r) in exemptions.rules.iter().enumerate() {
            if r.is_pattern() {
                patterns.push(i);
            } else {
                by_name.entry(r.user.clone()).or_default().push(i);
            }
        }
        Rules {
            tag: exemptions.tag.clone(),
            rules: exemptions.rules.clone(),
            by_name,
            patterns,
        }
    }
}

/// Every exemption of `user` in `account`, active or expired: from the tag, then the rules.
pub fn of_user(exemptions: &Rules, account: &Account, user: &User) -> Vec<Exemption> {
    let tag = exemptions
        .tag
        .as_ref()
        .and_then(|t| user.tags.get(t))
        .map(|value| from_tag(value));
    let all = &exemptions.rules;
    let in_account = |i: &&usize| all[**i].account.as_deref().is_none_or(|a| a == account.id);
    let named = exemptions.by_name.get(&user.name).into_iter().flatten();
    let patterned = exemptions
        .patterns
        .iter()
        .filter(|i| in_account(i) && glob(&all[**i].user, &user.name));
    let mut matched: Vec<usize> = named.filter(in_account).chain(patterned).copied().collect();
    // File order, as the merge below and the order of the series depend on it.
    matched.sort_unstable();
    let mut list: Vec<Exemption> = tag.into_iter().collect();
    for r in matched.into_iter().map(|i| &all[i]) {
        add_rule(&mut list, r);
    }
    list
}

/// Adds a matching configured rule to a user's exemptions. Rules that overlap with one
/// reason for one key are one exemption, ending with the last of them: two would be two
/// series with the same labels, of which Prometheus keeps either one, so alerts and `/keys`
/// could disagree about the end.
fn add_rule(list: &mut Vec<Exemption>, r: &ExemptionRule) {
    let same = list.iter_mut().find(|e| {
        e.origin == Origin::Config && e.access_key_id == r.access_key_id && e.reason == r.reason
    });
    match same {
        Some(e) => e.until = e.until.max(r.until),
        None => list.push(Exemption {
            access_key_id: r.access_key_id.clone(),
            reason: r.reason.clone(),
            until: r.until,
            origin: Origin::Config,
        }),
    }
}

/// The active exemption that covers key `key_id`, if any.
pub fn covering<'a>(list: &'a [Exemption], key_id: &str, now: Timestamp) -> Option<&'a Exemption> {
    list.iter().find(|e| e.covers(key_id) && e.active(now))
}

/// A tag value: a date (`2027-03-31`), optionally followed by the reason. One that cannot be
/// read exempts nothing (it ended in 1970) and says why.
fn from_tag(value: &str) -> Exemption {
    let (date, reason) = value.split_once(' ').unwrap_or((value, ""));
    match until_date(date.trim()) {
        Ok(until) => Exemption {
            access_key_id: None,
            reason: reason.trim().to_string(),
            until,
            origin: Origin::Tag,
        },
        Err(_) => Exemption {
            access_key_id: None,
            reason: format!("unreadable date in the tag: {value:?}"),
            until: 0.0,
            origin: Origin::Tag,
        },
    }
}

/// Whether `name` matches `pattern`, where `*` is any run of characters and `?` one. On
/// bytes, allocating nothing (it runs for every user and pattern rule on every scrape): IAM user
/// names and the patterns `config` accepts are ASCII.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    // The classic two-pointer match, backtracking only to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == b'?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == b'*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("break-glass-*", "break-glass-admin"));
        assert!(glob("*", "anyone"));
        assert!(glob("ci-?", "ci-1"));
        assert!(!glob("ci-?", "ci-10"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
    }

    #[test]
    fn overlapping_rules_with_one_reason_are_one_exemption_ending_last() {
        let rule = |user: &str, key: Option<&str>, reason: &str, until: &str| ExemptionRule {
            account: None,
            user: user.into(),
            access_key_id: key.map(Into::into),
            reason: reason.into(),
            until: until_date(until).unwrap(),
        };
        let exemptions = Exemptions {
            tag: Some("exempt".into()),
            rules: vec![
                rule("break-glass-*", None, "emergency", "2027-03-31"),
                rule("break-glass-1", None, "emergency", "2028-06-30"),
                rule("*", None, "emergency", "2026-01-31"),
                rule(
                    "break-glass-1",
                    Some("AKIAEXAMPLE000000001"),
                    "emergency",
                    "2029-01-31",
                ),
                rule("break-glass-1", None, "audit", "2027-01-31"),
            ],
        };
        let account = account("111111111111");
        let user = User {
            name: "break-glass-1".into(),
            created: 0.0,
            password_last_used: None,
            path: None,
            tags: [("exempt".to_string(), "2027-12-31 tagged".to_string())].into(),
            console: None,
        };
        let list = of_user(&Rules::new(&exemptions), &account, &user);
        let got: Vec<(Option<&str>, &str, String, Origin)> = list
            .iter()
            .map(|e| {
                (
                    e.access_key_id.as_deref(),
                    e.reason.as_str(),
                    e.until_date(),
                    e.origin,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (None, "tagged", "2027-12-31".to_string(), Origin::Tag),
                (None, "emergency", "2028-06-30".to_string(), Origin::Config),
                (
                    Some("AKIAEXAMPLE000000001"),
                    "emergency",
                    "2029-01-31".to_string(),
                    Origin::Config
                ),
                (None, "audit", "2027-01-31".to_string(), Origin::Config),
            ]
        );
    }

    /// The linear scan that `Rules` replaced: every rule tried against the user.
    fn linear(exemptions: &Exemptions, account: &Account, user: &User) -> Vec<Exemption> {
        let mut list: Vec<Exemption> = exemptions
            .tag
            .as_ref()
            .and_then(|t| user.tags.get(t))
            .map(|value| from_tag(value))
            .into_iter()
            .collect();
        for r in exemptions.rules.iter().filter(|r| {
            r.account.as_deref().is_none_or(|a| a == account.id) && glob(&r.user, &user.name)
        }) {
            add_rule(&mut list, r);
        }
        list
    }

    fn account(id: &str) -> Account {
        Account {
            id: id.into(),
            name: "prod".into(),
            source: Default::default(),
            role: None,
            labels: Default::default(),
            origin: crate::accounts::Origin::Static,
            user_tags: Vec::new(),
            reads_user_tags: true,
            read: Default::default(),
            ous: Vec::new(),
        }
    }

    #[test]
    fn the_index_finds_what_trying_every_rule_finds() {
        let names = [
            "ci-1",
            "ci-10",
            "break-glass-1",
            "break-glass-admin",
            "alice",
            "bob",
            "svc-a.b",
            "x",
        ];
        let patterns = [
            "ci-?",
            "ci-*",
            "*",
            "break-glass-*",
            "*-1",
            "?lice",
            "b*b",
            "nobody*",
        ];
        let accounts = [None, Some("111111111111"), Some("222222222222")];
        let users: Vec<&str> = names.iter().chain(&patterns).copied().collect();
        let mut rules = Vec::new();
        for (u, user) in users.iter().enumerate() {
            for (a, account) in accounts.iter().enumerate() {
                for reason in ["emergency", "audit"] {
                    let n = rules.len();
                    rules.push(ExemptionRule {
                        account: account.map(Into::into),
                        user: user.to_string(),
                        access_key_id: (n % 3 == 0)
                            .then(|| format!("AKIAEXAMPLE{:09}", (u + a) % 4)),
                        reason: reason.into(),
                        until: 1e9 + (n * 7919 % 101) as f64 * DAY,
                    });
                }
            }
        }
        // Interleave plain and pattern rules and both accounts, so file order matters.
        let len = rules.len();
        let order: Vec<usize> = (0..len).map(|i| i * 37 % len).collect();
        let rules: Vec<ExemptionRule> = order.into_iter().map(|i| rules[i].clone()).collect();
        let exemptions = Exemptions {
            tag: Some("exempt".into()),
            rules,
        };
        let index = Rules::new(&exemptions);
        let mut compared = 0;
        for id in ["111111111111", "222222222222", "333333333333"] {
            let account = account(id);
            for name in names.iter().chain(&["ci-", "break-glass-", "nobody", "b"]) {
                for tagged in [false, true] {
                    let user = User {
                        name: name.to_string(),
                        created: 0.0,
                        password_last_used: None,
                        path: None,
                        tags: tagged
                            .then(|| ("exempt".to_string(), "2027-12-31 tagged".to_string()))
                            .into_iter()
                            .collect(),
                        console: None,
                    };
                    let want = linear(&exemptions, &account, &user);
                    assert_eq!(of_user(&index, &account, &user), want, "{name} in {id}");
                    compared += want.len();
                }
            }
        }
        assert!(compared > 300, "the table exempts little: {compared}");
    }

    #[test]
    fn tag_values() {
        let e = from_tag("2027-03-31 break-glass, reviewed quarterly");
        assert_eq!(e.reason, "break-glass, reviewed quarterly");
        assert_eq!(e.until_date(), "2027-03-31");
        assert!(e.active(until_date("2027-03-31").unwrap() - 1.0));
        assert!(!e.active(until_date("2027-03-31").unwrap()));
        let bad = from_tag("someday");
        assert!(!bad.active(0.5) && bad.reason.contains("someday"));
    }
}
