//! The list of accounts this replica reads: the `accounts:` entries, the accounts AWS
//! Organizations lists (filtered, named, labelled from their tags, overridden by an entry
//! with the same id), and then only this shard's part of them.
//!
//! Plain data in, plain data out: the Organizations calls are the AWS layer's, the schedule
//! is the refresher's. That keeps the rules below testable without AWS.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::config::{AccountEntry, Config, Read, RoleChoice, Source, TagLabel};

/// One account to read, with its role resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub source: Source,
    /// `None` means "read with the exporter's own credentials".
    pub role: Option<Role>,
    /// Labels for `aws_iam_account_info`: the entry's own, then those made from tags.
    pub labels: BTreeMap<String, String>,
    pub origin: Origin,
    /// The IAM user tags shown as labels of `aws_iam_user_info`.
    pub user_tags: Vec<TagLabel>,
    /// Whether the users' tags must be read: for labels, exemptions by tag or policy rules.
    pub reads_user_tags: bool,
    /// What else is read: service-specific credentials, roles.
    pub read: Read,
    /// The OUs and root above the account, nearest first, where discovery walked the
    /// organization's tree (for policy rules by OU); empty otherwise.
    pub ous: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub arn: String,
    pub external_id: Option<String>,
}

/// Where an account came from, for `iam_key_exporter_accounts{origin}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// Only in `accounts:`.
    Static,
    /// Found by discovery (whether or not an entry also lists it).
    Organizations,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Origin::Static => "static",
            Origin::Organizations => "organizations",
        }
    }
}

/// An account as AWS Organizations lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgAccount {
    pub id: String,
    pub name: String,
    /// `ACTIVE`, `SUSPENDED`, `PENDING_CLOSURE`, `CLOSED`, ... (`State`, or the older
    /// `Status` where AWS gives no `State`).
    pub state: String,
    /// The OUs and root above it, nearest first, when discovery walked the tree.
    pub ous: Vec<String>,
}

impl OrgAccount {
    pub fn is_active(&self) -> bool {
        self.state == "ACTIVE"
    }
}

/// The result of one discovery: every account in the configured part of the organization,
/// and the tags of those this replica reads (when tags become labels).
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub accounts: Vec<OrgAccount>,
    pub tags: HashMap<String, BTreeMap<String, String>>,
}

/// This replica's part of the accounts: those whose [`shard_of`] equals `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub total: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, total: 1 }
    }
}

impl Shard {
    pub fn owns(&self, account_id: &str) -> bool {
        shard_of(account_id, self.total) == self.index
    }

    /// The shard from `--shard.total` and `--shard.index` (a number, or `auto` for the
    /// trailing ordinal of `hostname`, as a StatefulSet names its pods).
    pub fn from_flags(total: u32, index: &str, hostname: &str) -> Result<Shard, ShardError> {
        if total == 0 {
            return Err(ShardError::NoShards);
        }
        let index = if index == "auto" {
            let digits = hostname
                .rsplit_once('-')
                .map(|(_, d)| d)
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            digits
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| ShardError::NoOrdinal(hostname.to_string()))?
        } else {
            index
                .parse()
                .map_err(|_| ShardError::BadIndex(index.to_string()))?
        };
        if index >= total {
            return Err(ShardError::IndexTooLarge { index, total });
        }
        Ok(Shard { index, total })
    }
}

/// The shard an account belongs to among `total`: FNV-1a (64-bit) of the 12 ASCII digits
/// of its id, modulo `total`. It depends on nothing but the id, so every replica, and anyone
/// with the README's one-liner, computes the same owner.
pub fn shard_of(account_id: &str, total: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account_id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(total.max(1))) as u32
}

/// `--shard.*` flags that cannot be used.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ShardError {
    #[error("--shard.total must be at least 1")]
    NoShards,
    #[error("--shard.index={0:?} is neither a number nor \"auto\"")]
    BadIndex(String),
    #[error("--shard.index={index} is not below --shard.total={total} (shards count from 0)")]
    IndexTooLarge { index: u32, total: u32 },
    #[error(
        "--shard.index=auto needs a hostname ending in -<number> (a StatefulSet pod such as \
         iam-key-exporter-2), but the hostname is {0:?}"
    )]
    NoOrdinal(String),
}

/// The accounts this replica reads, in id order.
pub fn plan(cfg: &Config, discovered: Option<&Discovered>, shard: Shard) -> Vec<Arc<Account>> {
    let mut out: BTreeMap<&str, Account> = BTreeMap::new();
    let entries: HashMap<&str, &AccountEntry> =
        cfg.accounts.iter().map(|e| (e.id.as_str(), e)).collect();
    let excluded = excluded(cfg);
    let mut inactive: HashSet<&str> = HashSet::new();
    if let (Some(found), Some(d)) = (discovered, &cfg.discovery) {
        for org in &found.accounts {
            if !org.is_active() {
                inactive.insert(&org.id);
                continue;
            }
            if excluded.contains(org.id.as_str()) || !shard.owns(&org.id) {
                continue;
            }
            let tags = found.tags.get(&org.id);
            let tag_labels = d.tags_as_labels.iter().filter_map(|t| {
                let value = tags?.get(&t.tag)?;
                Some((t.label.clone(), value.clone()))
            });
            let mut account = resolve(cfg, &org.id, entries.get(org.id.as_str()).copied());
            if entries
                .get(org.id.as_str())
                .is_none_or(|e| e.name.is_none())
            {
                account.name = org.name.clone();
            }
            account.labels.extend(tag_labels);
            account.ous = org.ous.clone();
            account.origin = Origin::Organizations;
            out.insert(&org.id, account);
        }
    }
    for entry in listed_in_shard(cfg, shard) {
        // Organizations knows better than the file whether an account can still be read.
        if out.contains_key(entry.id.as_str()) || inactive.contains(entry.id.as_str()) {
            continue;
        }
        out.insert(&entry.id, resolve(cfg, &entry.id, Some(entry)));
    }
    out.into_values().map(Arc::new).collect()
}

/// The file's accounts in this replica's shard: what `plan` reads without discovery (and
/// what `check-config` counts without building them).
pub fn listed_in_shard(cfg: &Config, shard: Shard) -> impl Iterator<Item = &AccountEntry> {
    cfg.accounts.iter().filter(move |e| shard.owns(&e.id))
}

/// The ids of the discovered accounts this replica will read: whose tags it needs.
pub fn to_read<'a>(cfg: &Config, found: &'a [OrgAccount], shard: Shard) -> Vec<&'a str> {
    let excluded = excluded(cfg);
    found
        .iter()
        .filter(|a| a.is_active() && shard.owns(&a.id) && !excluded.contains(a.id.as_str()))
        .map(|a| a.id.as_str())
        .collect()
}

/// How many discovered accounts (not excluded by id) are in each state.
pub fn by_state(cfg: &Config, found: &[OrgAccount]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let excluded = excluded(cfg);
    for a in found.iter().filter(|a| !excluded.contains(a.id.as_str())) {
        *counts.entry(a.state.clone()).or_insert(0) += 1;
    }
    counts
}

/// `exclude_accounts` as a set: lists of thousands of ids stay linear.
fn excluded(cfg: &Config) -> HashSet<&str> {
    cfg.discovery
        .iter()
        .flat_map(|d| d.exclude_accounts.iter().map(String::as_str))
        .collect()
}

/// An account listed nowhere, as the defaults would read it.
pub fn bare(cfg: &Config, id: &str) -> Account {
    resolve(cfg, id, None)
}

/// An account with the entry's settings (if any) over the defaults; named after its id
/// unless the entry names it.
fn resolve(cfg: &Config, id: &str, entry: Option<&AccountEntry>) -> Account {
    let d = &cfg.defaults;
    let user_tags = entry
        .and_then(|e| e.user_tags.as_ref())
        .unwrap_or(&cfg.user_tags);
    let external_id = entry
        .and_then(|e| e.external_id.clone())
        .or_else(|| d.external_id.clone());
    let role_named = |name: &str| Role {
        arn: format!("arn:{}:iam::{id}:role/{name}", cfg.partition()),
        external_id: external_id.clone(),
    };
    let role = match entry.map_or(&RoleChoice::Default, |e| &e.role) {
        RoleChoice::Default => Some(role_named(&d.role_name)),
        RoleChoice::Name(name) => Some(role_named(name)),
        RoleChoice::Arn(arn) => Some(Role {
            arn: arn.clone(),
            external_id: external_id.clone(),
        }),
        RoleChoice::OwnCredentials => None,
    };
    Account {
        id: id.to_string(),
        name: entry
            .and_then(|e| e.name.clone())
            .unwrap_or_else(|| id.to_string()),
        source: entry.and_then(|e| e.source).unwrap_or(d.source),
        role,
        labels: entry.map(|e| e.labels.clone()).unwrap_or_default(),
        origin: Origin::Static,
        user_tags: user_tags.clone(),
        reads_user_tags: !user_tags.is_empty()
            || cfg.exemptions.tag.is_some()
            || cfg.policy.needs_user_tags(),
        read: cfg.read.with(entry.map(|e| e.read).unwrap_or_default()),
        ous: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::Path;

    fn cfg(yaml: &str) -> Config {
        config::parse(yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn org(id: &str, name: &str, state: &str) -> OrgAccount {
        OrgAccount {
            id: id.into(),
            name: name.into(),
            state: state.into(),
            ous: Vec::new(),
        }
    }

    #[test]
    fn counted_in_a_shard_as_planned() {
        let mut yaml = String::from("accounts:\n");
        for i in 0..300 {
            yaml.push_str(&format!(
                "  - id: \"{:012}\"\n",
                210_000_000_000u64 + i * 7919
            ));
        }
        let cfg = cfg(&yaml);
        for index in 0..3 {
            let shard = Shard { index, total: 3 };
            let planned = plan(&cfg, None, shard).len();
            assert!(planned > 50, "{planned}");
            assert_eq!(listed_in_shard(&cfg, shard).count(), planned);
        }
    }

    #[test]
    fn shard_hash_is_fnv1a_of_the_id() {
        // The README's Python one-liner gives the same numbers.
        assert_eq!(shard_of("111111111111", 3), 0);
        assert_eq!(shard_of("222222222222", 3), 0);
        assert_eq!(shard_of("333333333333", 3), 1);
        assert_eq!(shard_of("123456789012", 3), 2);
        assert_eq!(shard_of("123456789012", 1), 0);
        let ids: Vec<String> = (0..3000)
            .map(|i| format!("{:012}", 210_000_000_000u64 + i * 7919))
            .collect();
        let mut counts = [0; 3];
        for id in &ids {
            counts[shard_of(id, 3) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (900..1100).contains(c)), "{counts:?}");
    }

    #[test]
    fn shard_flags() {
        assert_eq!(
            Shard::from_flags(3, "auto", "iam-key-exporter-2"),
            Ok(Shard { index: 2, total: 3 })
        );
        assert_eq!(
            Shard::from_flags(3, "1", "x"),
            Ok(Shard { index: 1, total: 3 })
        );
        assert_eq!(
            Shard::from_flags(3, "3", "x"),
            Err(ShardError::IndexTooLarge { index: 3, total: 3 })
        );
        assert_eq!(Shard::from_flags(0, "0", "x"), Err(ShardError::NoShards));
        assert!(matches!(
            Shard::from_flags(3, "auto", "exporter"),
            Err(ShardError::NoOrdinal(_))
        ));
        assert!(matches!(
            Shard::from_flags(3, "auto", "exporter-"),
            Err(ShardError::NoOrdinal(_))
        ));
    }

    #[test]
    fn discovered_accounts_merge_with_entries() {
        let c = cfg(r#"
defaults: {role_name: Audit}
discovery:
  organizations:
    exclude_accounts: ["444444444444"]
    tags_as_labels: [team, cost-center]
accounts:
  - {id: "111111111111", labels: {env: prod}, source: credential_report}
  - {id: "222222222222", name: renamed}
  - {id: "555555555555", name: static-only, assume_role: false}
  - {id: "666666666666", name: suspended-but-listed}
"#);
        let found = Discovered {
            accounts: vec![
                org("111111111111", "payments", "ACTIVE"),
                org("222222222222", "search", "ACTIVE"),
                org("333333333333", "sandbox", "ACTIVE"),
                org("444444444444", "excluded", "ACTIVE"),
                org("666666666666", "old", "SUSPENDED"),
                org("777777777777", "closing", "PENDING_CLOSURE"),
            ],
            tags: HashMap::from([(
                "111111111111".to_string(),
                BTreeMap::from([
                    ("team".to_string(), "payments".to_string()),
                    ("cost-center".to_string(), "42".to_string()),
                    ("other".to_string(), "x".to_string()),
                ]),
            )]),
        };
        let all = plan(&c, Some(&found), Shard::default());
        let ids: Vec<&str> = all.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "111111111111",
                "222222222222",
                "333333333333",
                "555555555555"
            ]
        );
        let a = &all[0];
        assert_eq!(
            a.name, "payments",
            "named by Organizations unless the entry names it"
        );
        assert_eq!(a.source, Source::CredentialReport);
        assert_eq!(a.origin, Origin::Organizations);
        assert_eq!(
            a.labels,
            BTreeMap::from([
                ("env".to_string(), "prod".to_string()),
                ("tag_cost_center".to_string(), "42".to_string()),
                ("tag_team".to_string(), "payments".to_string()),
            ])
        );
        assert_eq!(
            a.role.as_ref().unwrap().arn,
            "arn:aws:iam::111111111111:role/Audit"
        );
        assert_eq!(all[1].name, "renamed");
        assert_eq!(all[3].origin, Origin::Static);
        assert_eq!(all[3].role, None);

        let counts = by_state(&c, &found.accounts);
        assert_eq!(counts["ACTIVE"], 3, "the excluded account is not counted");
        assert_eq!(counts["SUSPENDED"], 1);
        assert_eq!(counts["PENDING_CLOSURE"], 1);

        // Before the first discovery, the entries alone.
        let ids: Vec<String> = plan(&c, None, Shard::default())
            .iter()
            .map(|a| a.id.clone())
            .collect();
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn shards_split_without_overlap() {
        let c = cfg("discovery: {organizations: {}}\n");
        let found = Discovered {
            accounts: (0..60)
                .map(|i| org(&format!("{:012}", 100_000_000_000u64 + i), "a", "ACTIVE"))
                .collect(),
            tags: HashMap::new(),
        };
        let mut seen = Vec::new();
        for index in 0..3 {
            let shard = Shard { index, total: 3 };
            let part = plan(&c, Some(&found), shard);
            assert_eq!(part.len(), to_read(&c, &found.accounts, shard).len());
            seen.extend(part.iter().map(|a| a.id.clone()));
        }
        seen.sort();
        let mut all: Vec<String> = found.accounts.iter().map(|a| a.id.clone()).collect();
        all.sort();
        assert_eq!(seen, all);
    }
}
