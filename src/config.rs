//! The YAML configuration: parsing, defaults, validation, and the resolved account list.
//!
//! Field-level checks run inside `Deserialize` impls so that serde_yaml attaches the line and
//! column of the offending value to the error; the file name is added by [`load`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// A configuration file that could not be used. Its message names the file, the place and the
/// field; the caller exits with code 2 (or keeps the running configuration on reload).
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub(crate) fn new(message: String) -> Self {
        ConfigError(message)
    }
}

/// Refresh intervals vary by ± this fraction, so many accounts do not hit AWS in lockstep.
pub const REFRESH_JITTER: f64 = 0.1;

/// The validated configuration with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub refresh_interval: Duration,
    pub refresh_timeout: Duration,
    pub concurrency: usize,
    pub max_staleness: Duration,
    pub sts: Sts,
    pub aws: AwsClient,
    pub accounts: Vec<Arc<Account>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sts {
    pub region: String,
    pub session_name: String,
    pub session_duration: Duration,
    pub renew_before: Duration,
}

/// Timeouts, retries and per-account request concurrency for every AWS client.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsClient {
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
    pub max_attempts: u32,
    pub max_backoff: Duration,
    pub requests_per_account: usize,
    pub credential_report_timeout: Duration,
}

/// One account to read, with its role already resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub source: Source,
    /// `None` means "read with the exporter's own credentials".
    pub role: Option<Role>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub arn: String,
    pub external_id: Option<String>,
}

impl Config {
    /// Whether everything but the account list is the same.
    pub fn same_settings(&self, other: &Config) -> bool {
        let without_accounts = |c: &Config| Config {
            accounts: Vec::new(),
            ..c.clone()
        };
        without_accounts(self) == without_accounts(other)
    }

    /// The longest wait between the end of one refresh of an account and the start of the next.
    pub fn longest_refresh_gap(&self) -> Duration {
        self.refresh_interval.mul_f64(1.0 + REFRESH_JITTER)
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "{}: cannot read the configuration file: {e}",
            path.display()
        ))
    })?;
    parse(&text, path)
}

/// Parses configuration text; `path` is used only in messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let file: File =
        serde_yaml::from_str(text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    file.resolve()
        .map_err(|msg| ConfigError(format!("{}: {msg}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "defaults::refresh_interval")]
    refresh_interval: HumanDuration,
    #[serde(default = "defaults::refresh_timeout")]
    refresh_timeout: HumanDuration,
    #[serde(default = "defaults::concurrency")]
    concurrency: Positive,
    #[serde(default = "defaults::max_staleness")]
    max_staleness: HumanDuration,
    #[serde(default)]
    source: Source,
    #[serde(default)]
    sts: StsFile,
    #[serde(default)]
    aws: AwsFile,
    #[serde(default)]
    defaults: DefaultsFile,
    #[serde(default)]
    accounts: Accounts,
}

/// Where an account's key data comes from.
#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// ListUsers ▸ ListAccessKeys ▸ GetAccessKeyLastUsed: current, one call per user and key.
    #[default]
    Api,
    /// The IAM credential report: a constant few calls per account, up to 4 hours old, and
    /// the only view of the root user's keys and of MFA.
    CredentialReport,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StsFile {
    region: Region,
    session_name: SessionName,
    session_duration: SessionDuration,
    renew_before: HumanDuration,
}

impl Default for StsFile {
    fn default() -> Self {
        StsFile {
            region: Region("us-east-1".into()),
            session_name: SessionName("iam-key-exporter".into()),
            session_duration: SessionDuration(Duration::from_secs(3600)),
            renew_before: HumanDuration(Duration::from_secs(300)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AwsFile {
    connect_timeout: HumanDuration,
    attempt_timeout: HumanDuration,
    operation_timeout: HumanDuration,
    max_attempts: Positive,
    max_backoff: HumanDuration,
    requests_per_account: Positive,
    credential_report_timeout: HumanDuration,
}

impl Default for AwsFile {
    fn default() -> Self {
        AwsFile {
            connect_timeout: HumanDuration(Duration::from_secs(3)),
            attempt_timeout: HumanDuration(Duration::from_secs(20)),
            operation_timeout: HumanDuration(Duration::from_secs(90)),
            max_attempts: Positive(6),
            max_backoff: HumanDuration(Duration::from_secs(20)),
            requests_per_account: Positive(4),
            credential_report_timeout: HumanDuration(Duration::from_secs(300)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsFile {
    #[serde(default = "defaults::role_name")]
    role_name: RoleName,
    external_id: Option<ExternalId>,
}

impl Default for DefaultsFile {
    fn default() -> Self {
        DefaultsFile {
            role_name: defaults::role_name(),
            external_id: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountFile {
    id: AccountId,
    name: Option<String>,
    role_arn: Option<RoleArn>,
    role_name: Option<RoleName>,
    external_id: Option<ExternalId>,
    source: Option<Source>,
    #[serde(default = "defaults::yes")]
    assume_role: bool,
    #[serde(default)]
    labels: BTreeMap<LabelName, String>,
}

mod defaults {
    use super::*;
    pub fn refresh_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(15 * 60))
    }
    pub fn refresh_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(10 * 60))
    }
    pub fn max_staleness() -> HumanDuration {
        HumanDuration(Duration::from_secs(2 * 3600))
    }
    pub fn concurrency() -> Positive {
        Positive(8)
    }
    pub fn role_name() -> RoleName {
        RoleName("IAMKeyExporterReadOnly".into())
    }
    pub fn yes() -> bool {
        true
    }
}

impl File {
    /// Checks that span fields and fills in each account's role.
    fn resolve(self) -> Result<Config, String> {
        if self.accounts.0.is_empty() {
            return Err("accounts: missing; name at least one account to read".into());
        }
        let sts = Sts {
            region: self.sts.region.0,
            session_name: self.sts.session_name.0,
            session_duration: self.sts.session_duration.0,
            renew_before: self.sts.renew_before.0,
        };
        if sts.renew_before >= sts.session_duration {
            return Err("sts.renew_before must be shorter than sts.session_duration".into());
        }
        let aws = AwsClient {
            connect_timeout: self.aws.connect_timeout.0,
            attempt_timeout: self.aws.attempt_timeout.0,
            operation_timeout: self.aws.operation_timeout.0,
            max_attempts: self.aws.max_attempts.0 as u32,
            max_backoff: self.aws.max_backoff.0,
            requests_per_account: self.aws.requests_per_account.0,
            credential_report_timeout: self.aws.credential_report_timeout.0,
        };
        if aws.attempt_timeout > aws.operation_timeout {
            return Err("aws.attempt_timeout must not be longer than aws.operation_timeout".into());
        }
        let partition = partition_of(&sts.region);
        let accounts = self
            .accounts
            .0
            .into_iter()
            .map(|a| {
                let role = a.assume_role.then(|| Role {
                    arn: match (a.role_arn, a.role_name) {
                        (Some(arn), _) => arn.0,
                        (None, name) => format!(
                            "arn:{partition}:iam::{}:role/{}",
                            a.id.0,
                            name.unwrap_or_else(|| self.defaults.role_name.clone()).0
                        ),
                    },
                    external_id: a
                        .external_id
                        .or_else(|| self.defaults.external_id.clone())
                        .map(|e| e.0),
                });
                Arc::new(Account {
                    name: a.name.unwrap_or_else(|| a.id.0.clone()),
                    source: a.source.unwrap_or(self.source),
                    id: a.id.0,
                    role,
                    labels: a.labels.into_iter().map(|(k, v)| (k.0, v)).collect(),
                })
            })
            .collect();
        Ok(Config {
            refresh_interval: self.refresh_interval.0,
            refresh_timeout: self.refresh_timeout.0,
            concurrency: self.concurrency.0,
            max_staleness: self.max_staleness.0,
            sts,
            aws,
            accounts,
        })
    }
}

/// The ARN partition that STS in `region` belongs to.
fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

// ---------------------------------------------------------------------------------------------
// Value types that validate themselves while being deserialized.

/// Deserializes a string and converts it with `check`, whose error names what was expected.
/// The check runs inside the visitor so serde_yaml attaches the value's path and position.
fn checked_string<'de, D: Deserializer<'de>, T>(
    d: D,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct V<F>(F);
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.0)(s).map_err(E::custom)
        }
    }
    d.deserialize_str(V(check))
}

#[derive(Clone, Copy)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| parse_duration(s).map(HumanDuration))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s.trim()) {
        Ok(v) if !v.is_zero() => Ok(v),
        Ok(_) => Err(format!("duration {s:?} must be longer than zero")),
        Err(_) => Err(format!(
            "invalid duration {s:?}: expected a number and a unit, like 90s, 15m or 1h"
        )),
    }
}

/// An AssumeRole DurationSeconds: what STS accepts.
#[derive(Clone, Copy)]
struct SessionDuration(Duration);

impl<'de> Deserialize<'de> for SessionDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            let v = parse_duration(s)?;
            if (900..=43200).contains(&v.as_secs()) {
                Ok(SessionDuration(v))
            } else {
                Err(format!("{s:?} is outside what STS allows (15m to 12h)"))
            }
        })
    }
}

/// An ExternalId as STS accepts it: 2-1224 of `A-Za-z0-9 +=,.@:/-_`.
#[derive(Clone)]
struct ExternalId(String);

impl<'de> Deserialize<'de> for ExternalId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            aws_name("external id", s, 2..=1224, "+=,.@:/-_").map(ExternalId)
        })
    }
}

#[derive(Clone, Copy)]
struct Positive(usize);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            0 => Err(de::Error::custom("must be at least 1")),
            n => Ok(Positive(n as usize)),
        }
    }
}

struct AccountId(String);

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AccountId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quoted string of 12 digits")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AccountId, E> {
                if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(AccountId(s.to_string()))
                } else {
                    Err(E::custom(format!(
                        "account id {s:?} must be exactly 12 digits"
                    )))
                }
            }
            // An unquoted id is a YAML integer and would lose its leading zeros.
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<AccountId, E> {
                Err(E::custom(format!(
                    "account id {n} must be quoted, like \"{n:0>12}\" \
                     (YAML reads an unquoted id as a number and drops leading zeros)"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<AccountId, E> {
                Err(E::custom(format!(
                    "account id {n} must be a quoted string of 12 digits"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

struct RoleArn(String);

impl<'de> Deserialize<'de> for RoleArn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            let bad = || {
                format!(
                    "role ARN {s:?} does not parse: expected \
                     arn:<partition>:iam::<12-digit account id>:role/<name>"
                )
            };
            let parts: Vec<&str> = s.splitn(6, ':').collect();
            let [arn, partition, service, region, account, resource] = parts[..] else {
                return Err(bad());
            };
            let name_ok = resource
                .strip_prefix("role/")
                .is_some_and(|n| !n.is_empty() && n.split('/').all(valid_role_name));
            let ok = arn == "arn"
                && matches!(partition, "aws" | "aws-cn" | "aws-us-gov")
                && service == "iam"
                && region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && name_ok;
            if ok {
                Ok(RoleArn(s.to_string()))
            } else {
                Err(bad())
            }
        })
    }
}

/// Characters IAM allows in a role name besides letters and digits.
const ROLE_NAME_CHARS: &str = "+=,.@_-";

fn valid_role_name(n: &str) -> bool {
    aws_name("", n, 1..=64, ROLE_NAME_CHARS).is_ok()
}

/// Checks a name as AWS does: a length in `len`, letters, digits and the characters `extra`.
fn aws_name(
    what: &str,
    s: &str,
    len: std::ops::RangeInclusive<usize>,
    extra: &str,
) -> Result<String, String> {
    let ok = len.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.as_bytes().contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{what} {s:?} must be {}-{} of A-Z a-z 0-9 {extra}",
            len.start(),
            len.end()
        ))
    }
}

#[derive(Clone)]
struct RoleName(String);

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            aws_name("role name", s, 1..=64, ROLE_NAME_CHARS).map(RoleName)
        })
    }
}

struct SessionName(String);

impl<'de> Deserialize<'de> for SessionName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            aws_name("session name", s, 2..=64, "+=,.@-_").map(SessionName)
        })
    }
}

struct Region(String);

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            let ok = s.split('-').count() >= 3
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if ok {
                Ok(Region(s.to_string()))
            } else {
                Err(format!(
                    "region {s:?} is not an AWS region name like us-east-1"
                ))
            }
        })
    }
}

/// A custom label name: valid in Prometheus and not one the exporter sets itself.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct LabelName(String);

impl<'de> Deserialize<'de> for LabelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            let mut bytes = s.bytes();
            let ok = bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !s.starts_with("__");
            if !ok {
                return Err(format!(
                    "label name {s:?} is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                ));
            }
            if matches!(s, "account_id" | "account_name") {
                return Err(format!("label name {s:?} is set by the exporter itself"));
            }
            Ok(LabelName(s.to_string()))
        })
    }
}

/// The account list. Checks that span accounts name the element and field (serde_yaml gives
/// such errors the list's position, so the index is what points at the line).
#[derive(Default)]
struct Accounts(Vec<AccountFile>);

impl<'de> Deserialize<'de> for Accounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Accounts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of accounts")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Accounts, A::Error> {
                let mut out: Vec<AccountFile> = Vec::new();
                while let Some(a) = seq.next_element::<AccountFile>()? {
                    check_account(&out, &a).map_err(de::Error::custom)?;
                    out.push(a);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "the list is empty; name at least one account to read",
                    ));
                }
                Ok(Accounts(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Checks account `a` against the accounts listed before it.
fn check_account(before: &[AccountFile], a: &AccountFile) -> Result<(), String> {
    let i = before.len();
    let name = |a: &AccountFile| a.name.clone().unwrap_or_else(|| a.id.0.clone());
    if let Some(j) = before.iter().position(|b| b.id.0 == a.id.0) {
        return Err(format!(
            "accounts[{i}].id: account id {:?} is listed twice (also accounts[{j}])",
            a.id.0
        ));
    }
    if let Some(j) = before.iter().position(|b| name(b) == name(a)) {
        return Err(format!(
            "accounts[{i}].name: account name {:?} is used twice (also accounts[{j}])",
            name(a)
        ));
    }
    if a.role_arn.is_some() && a.role_name.is_some() {
        return Err(format!(
            "accounts[{i}]: set role_arn or role_name, not both"
        ));
    }
    if !a.assume_role && (a.role_arn.is_some() || a.role_name.is_some() || a.external_id.is_some())
    {
        return Err(format!(
            "accounts[{i}]: assume_role is false, so role_arn, role_name and external_id would be ignored; remove them or the assume_role line"
        ));
    }
    match &a.role_arn {
        Some(arn) if arn.0.split(':').nth(4) != Some(a.id.0.as_str()) => Err(format!(
            "accounts[{i}].role_arn: {:?} is in another account than id {:?}",
            arn.0, a.id.0
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        parse(yaml, Path::new("test.yaml")).unwrap_err().to_string()
    }

    #[test]
    fn fills_defaults_and_resolves_roles() {
        let c = parse(
            r#"
sts: {region: us-gov-west-1}
defaults: {role_name: Audit, external_id: ext-42}
accounts:
  - {id: "111111111111", name: prod, labels: {team: platform}}
  - {id: "222222222222", role_arn: "arn:aws-us-gov:iam::222222222222:role/path/Custom"}
  - {id: "333333333333", name: tooling, assume_role: false, source: credential_report}
"#,
            Path::new("t.yaml"),
        )
        .unwrap();
        assert_eq!(c.refresh_interval, Duration::from_secs(900));
        let role = c.accounts[0].role.as_ref().unwrap();
        assert_eq!(role.arn, "arn:aws-us-gov:iam::111111111111:role/Audit");
        assert_eq!(role.external_id.as_deref(), Some("ext-42"));
        assert_eq!(c.accounts[1].name, "222222222222");
        assert_eq!(
            c.accounts[1].role.as_ref().unwrap().arn,
            "arn:aws-us-gov:iam::222222222222:role/path/Custom"
        );
        assert_eq!(c.accounts[2].role, None);
        assert_eq!(c.accounts[0].source, Source::Api);
        assert_eq!(c.accounts[2].source, Source::CredentialReport);
        assert_eq!(c.accounts[0].labels["team"], "platform");
    }

    #[test]
    fn errors_name_file_field_and_position() {
        let e = err("accounts:\n  - id: \"1234567890123\"\n");
        assert!(e.starts_with("test.yaml: accounts[0].id"), "{e}");
        assert!(
            e.contains("12 digits") && e.contains("line 2 column"),
            "{e}"
        );
        let e = err("refresh_interval: 15q\naccounts: [{id: \"111111111111\"}]\n");
        assert!(
            e.contains("refresh_interval") && e.contains("line 1"),
            "{e}"
        );
        let e = err("accounts: [{id: \"111111111111\", colour: red}]\n");
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn partition_follows_region() {
        assert_eq!(partition_of("cn-north-1"), "aws-cn");
        assert_eq!(partition_of("eu-west-1"), "aws");
    }
}
