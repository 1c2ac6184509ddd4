//! The YAML configuration: its schema, defaults and validation.
//!
//! A file is read node by node (`yaml.rs`), so every problem in it is reported at once, each
//! with its line, column and field, and validation stays linear in the size of the file.
//! What comes out is plain settings: turning them into the list of accounts to read
//! (static entries, discovery, sharding) is the `accounts` module's job.

mod policy;
mod read;
mod tree;
pub(crate) mod values;
mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Refresh intervals vary by ± this fraction, so many accounts do not hit AWS in lockstep.
pub const REFRESH_JITTER: f64 = 0.1;

/// `interval` ± [`REFRESH_JITTER`].
pub fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - REFRESH_JITTER + fastrand::f64() * 2.0 * REFRESH_JITTER)
}

/// A duration as policies are written: `90d` when it is whole days, else `1h30m` style.
pub fn duration_text(d: Duration) -> String {
    match d.as_secs() {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        _ => yaml::human(d),
    }
}

/// The validated configuration with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub refresh_interval: Duration,
    pub refresh_timeout: Duration,
    pub concurrency: usize,
    pub max_staleness: Duration,
    pub sts: Sts,
    pub aws: AwsClient,
    pub defaults: Defaults,
    /// The `accounts:` entries, in file order.
    pub accounts: Vec<AccountEntry>,
    pub discovery: Option<Discovery>,
    /// IAM user tags shown as labels of `aws_iam_user_info` (accounts may say otherwise).
    pub user_tags: Vec<TagLabel>,
    pub exemptions: Exemptions,
    pub policy: Policy,
    /// What is read besides users and access keys (`read:`; accounts may say otherwise).
    pub read: Read,
    /// Settings that work, but probably not as meant: logged at load, shown by check-config.
    pub warnings: Vec<Problem>,
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
    /// The most IAM requests per second per account; the pace starts there.
    pub requests_per_second: f64,
    pub credential_report_timeout: Duration,
}

/// How an account is read when its entry (or discovery) does not say otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub role_name: String,
    pub external_id: Option<String>,
    pub source: Source,
}

/// One entry of `accounts:` as written; unset fields fall back to [`Defaults`], or for an
/// account that discovery also finds, to what AWS Organizations says (its name).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountEntry {
    pub id: String,
    pub name: Option<String>,
    pub source: Option<Source>,
    pub role: RoleChoice,
    pub external_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `user_tags_as_labels` of this account, instead of the global one.
    pub user_tags: Option<Vec<TagLabel>>,
    /// `read:` of this account: each field given replaces the global one.
    pub read: ReadOverride,
}

/// What an account's refresh reads besides its users and access keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// ListServiceSpecificCredentials for all users: one call per 1000 credentials.
    pub service_credentials: bool,
    /// The roles with their last use, from GetAccountAuthorizationDetails: one call per
    /// 1000 roles (shared with the users' tags when both are read).
    pub roles: bool,
    /// How often the roles are read again; in between, the last read stands. Global only.
    pub roles_interval: Duration,
    /// ListSSHPublicKeys: one call per user, so off unless asked for.
    pub ssh_public_keys: bool,
    /// How often every user's SSH keys are read again; in between, only new users'. Global
    /// only: an account's `read:` cannot set it.
    pub ssh_public_keys_interval: Duration,
}

/// Both slow reads' default interval: IAM updates a role's last use about daily, and the
/// policy's limits are days.
pub const SLOW_READ_INTERVAL: Duration = Duration::from_secs(6 * 3600);

impl Default for Read {
    fn default() -> Self {
        Read {
            service_credentials: true,
            roles: true,
            roles_interval: SLOW_READ_INTERVAL,
            ssh_public_keys: false,
            ssh_public_keys_interval: SLOW_READ_INTERVAL,
        }
    }
}

/// An account's `read:`, the fields it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOverride {
    pub service_credentials: Option<bool>,
    pub roles: Option<bool>,
    pub ssh_public_keys: Option<bool>,
}

impl Read {
    /// What a refresh reads besides users and access keys, and at what cost in calls, as
    /// `check-config` prints it.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.service_credentials {
            parts.push(
                "service-specific credentials (ListServiceSpecificCredentials: 1 call per 1000 \
                 credentials)"
                    .to_string(),
            );
        }
        if self.roles {
            parts.push(format!(
                "roles (GetAccountAuthorizationDetails: 1 call per 1000 roles every {}, in the \
                 same pages as the users' tags when those are read too)",
                duration_text(self.roles_interval)
            ));
        }
        if self.ssh_public_keys {
            parts.push(format!(
                "SSH public keys (ListSSHPublicKeys: 1 call per user every {}, and per new \
                 user at the refresh that finds it)",
                duration_text(self.ssh_public_keys_interval)
            ));
        }
        match parts.is_empty() {
            true => "read: access keys and users only".to_string(),
            false => format!("read per account and refresh: {}", parts.join("; ")),
        }
    }

    pub fn with(self, o: ReadOverride) -> Read {
        Read {
            service_credentials: o.service_credentials.unwrap_or(self.service_credentials),
            roles: o.roles.unwrap_or(self.roles),
            ssh_public_keys: o.ssh_public_keys.unwrap_or(self.ssh_public_keys),
            ..self
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RoleChoice {
    /// `defaults.role_name` in the account.
    Default,
    /// `role_name`: another role name in the account.
    Name(String),
    /// `role_arn`: a full ARN.
    Arn(String),
    /// `assume_role: false`: the exporter's own credentials.
    OwnCredentials,
}

/// `discovery.organizations`: accounts found through AWS Organizations.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// Assumed to call Organizations; `None` uses the exporter's own credentials.
    pub role_arn: Option<String>,
    pub include_ous: Vec<String>,
    pub exclude_ous: Vec<String>,
    pub exclude_accounts: Vec<String>,
    pub tags_as_labels: Vec<TagLabel>,
    pub refresh_interval: Duration,
    pub shrink_guard: ShrinkGuard,
}

/// `discovery.organizations.shrink_guard`: a discovery that drops too many of the accounts
/// read is held back, the old list kept, until discoveries in a row confirm it. An empty
/// organization answered by a wrong OU id, a role without delegated access or a partial
/// outage would otherwise remove every account's series and resolve every alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShrinkGuard {
    /// A result with fewer ACTIVE accounts than the list in force, by more than this many
    /// percent of it, is held; an empty one always is.
    pub max_drop_percent: u32,
    /// How many such results in a row it takes to apply one: the last of them is applied.
    /// 1 applies every result at once (the guard is off).
    pub confirmations: u32,
}

impl Default for ShrinkGuard {
    fn default() -> Self {
        ShrinkGuard {
            max_drop_percent: 50,
            confirmations: 3,
        }
    }
}

impl ShrinkGuard {
    /// Whether going from `applied` ACTIVE accounts to `found` drops too many.
    pub fn drops_too_many(&self, applied: usize, found: usize) -> bool {
        applied > 0
            && (found == 0
                || applied.saturating_sub(found) * 100 > self.max_drop_percent as usize * applied)
    }
}

/// Keys or users that the key alerts leave alone until a date.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exemptions {
    /// The IAM user tag whose value (`2027-03-31`, optionally followed by a reason) exempts
    /// the user's keys; None turns tag exemptions off.
    pub tag: Option<String>,
    pub rules: Vec<ExemptionRule>,
}

pub const DEFAULT_EXEMPTION_TAG: &str = "iam-key-exporter:exempt-until";

/// An exemption written in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ExemptionRule {
    /// None: every account.
    pub account: Option<String>,
    /// A user name, or a pattern with `*` (any characters) and `?` (one).
    pub user: String,
    /// Only this key of the matching users; None: all their keys.
    pub access_key_id: Option<String>,
    pub reason: String,
    /// The end of the `until` day, UTC, in Unix seconds: exempt while now is before it.
    pub until: f64,
}

/// How long credentials may live and sit unused: the defaults, and rules for some accounts
/// or users (the first that matches a user wins).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub defaults: Limits,
    pub rules: Vec<PolicyRule>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            defaults: policy::CIS,
            rules: Vec::new(),
        }
    }
}

impl Policy {
    /// Whether a rule asks for the users' tags, which are then read with the keys.
    pub fn needs_user_tags(&self) -> bool {
        self.rules.iter().any(|r| !r.user_tags.is_empty())
    }

    /// Whether a rule asks where accounts sit in the organization.
    pub fn needs_ous(&self) -> bool {
        self.rules.iter().any(|r| !r.ous.is_empty())
    }
}

pub use policy::DEFAULT_RULE;

/// The limits that apply to a user's credentials.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// An active access key older than this must be rotated.
    pub key_max_age: Duration,
    /// An active access key unused this long (never used: since creation) must be disabled.
    pub key_max_idle: Duration,
    /// A console password unused this long (never used: since it was set).
    pub password_max_idle: Duration,
    /// A role unused this long (no use within IAM's window: since creation) should go.
    pub role_max_idle: Duration,
    /// Owners hear of a deadline this long before it passes.
    pub notice: Duration,
}

/// A rule of `policy.rules`: its matchers (all given must match) and the limits it gives,
/// those it does not set taken from the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRule {
    pub name: String,
    /// None: every account.
    pub account: Option<String>,
    /// A user name, or a pattern with `*` and `?`.
    pub user: Option<String>,
    /// A prefix of the user's IAM path.
    pub path: Option<String>,
    /// Labels the account carries on `aws_iam_account_info` (configured or `tag_*`).
    pub account_labels: BTreeMap<String, String>,
    /// IAM user tags, each value a pattern with `*` and `?`.
    pub user_tags: BTreeMap<String, String>,
    /// OU or root ids: the account must sit in one of them, directly or below.
    pub ous: Vec<String>,
    pub limits: Limits,
}

impl PolicyRule {
    pub fn matches_everyone(&self) -> bool {
        self.account.is_none()
            && self
                .user
                .as_deref()
                .is_none_or(|u| u.bytes().all(|b| b == b'*'))
            && self.path.as_deref().is_none_or(|p| p == "/")
            && self.account_labels.is_empty()
            && self.user_tags.is_empty()
            && self.ous.is_empty()
    }
}

impl ExemptionRule {
    /// Whether the user is a pattern (`*`, `?`) rather than one name: a pattern is tried
    /// against every user on every scrape, a name is one lookup.
    pub fn is_pattern(&self) -> bool {
        self.user.contains(['*', '?'])
    }
}

/// The most exemption rules with a user pattern whose cost per scrape stays small: 1,000
/// patterns add about 1 s to a 100k-key scrape (`cargo bench --bench render`), far below
/// Prometheus' 10 s default scrape timeout. `check-config` warns past it.
pub const EXEMPTION_PATTERNS_WARN: usize = 1_000;

/// An account tag shown as a label of `aws_iam_account_info`.
#[derive(Debug, Clone, PartialEq)]
pub struct TagLabel {
    pub tag: String,
    /// `tag_` and the tag key with every character a label name cannot hold made `_`.
    pub label: String,
}

/// Where an account's key data comes from.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// ListUsers ▸ ListAccessKeys ▸ GetAccessKeyLastUsed: current, one call per user and key.
    #[default]
    Api,
    /// The IAM credential report: a constant few calls per account, up to 4 hours old, and
    /// the only view of the root user's keys and of MFA.
    CredentialReport,
    /// The credential report, with real key ids learned from ListAccessKeys once per user.
    Hybrid,
}

impl Source {
    pub const NAMES: &'static str = "api, credential_report or hybrid";

    /// As the configuration writes it.
    pub fn name(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::CredentialReport => "credential_report",
            Source::Hybrid => "hybrid",
        }
    }

    fn parse(s: &str) -> Result<Source, String> {
        match s {
            "api" => Ok(Source::Api),
            "credential_report" => Ok(Source::CredentialReport),
            "hybrid" => Ok(Source::Hybrid),
            _ => Err(format!("unknown source {s:?}: expected {}", Source::NAMES)),
        }
    }
}

impl Config {
    /// Whether every account would be read the same way under `other` (timeouts, retries,
    /// STS, schedule); the account list itself may differ.
    pub fn same_reading(&self, other: &Config) -> bool {
        (
            self.refresh_interval,
            self.refresh_timeout,
            self.concurrency,
            self.max_staleness,
            &self.sts,
            &self.aws,
        ) == (
            other.refresh_interval,
            other.refresh_timeout,
            other.concurrency,
            other.max_staleness,
            &other.sts,
            &other.aws,
        )
    }

    /// The longest wait between the end of one refresh of an account and the start of the next.
    pub fn longest_refresh_gap(&self) -> Duration {
        self.refresh_interval.mul_f64(1.0 + REFRESH_JITTER)
    }

    /// The ARN partition (`aws`, `aws-cn`, `aws-us-gov`) that STS in the configured region
    /// belongs to, for the role ARNs built from role names.
    pub fn partition(&self) -> &'static str {
        let region = self.sts.region.as_str();
        if region.starts_with("cn-") {
            "aws-cn"
        } else if region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        }
    }
}

/// A place in a file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// One thing wrong with a file, where it is, and which field.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub at: Pos,
    /// The field's path, such as `accounts[2].role_arn`.
    pub field: String,
    pub message: String,
}

impl Problem {
    /// `FILE:LINE:COLUMN: FIELD: MESSAGE`, as compilers write it.
    pub fn located(&self, path: &Path) -> String {
        let field = if self.field.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.field)
        };
        format!(
            "{}:{}:{}: {field}{}",
            path.display(),
            self.at.line,
            self.at.column,
            self.message
        )
    }
}

/// A configuration file that cannot be used. The caller exits with code 2, or keeps the
/// running configuration on reload.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the file: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A FIFO would block the reader until someone writes to it, a device may never end.
    #[error("{}: cannot read the file: it is a {kind}, not a regular file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    /// Larger than [`MAX_FILE_BYTES`].
    #[error(
        "{}: cannot read the file: it has {bytes} bytes, more than the {} MiB a configuration \
         file may have",
        path.display(),
        MAX_FILE_BYTES >> 20
    )]
    TooLarge { path: PathBuf, bytes: u64 },
    /// The file is not YAML, or uses YAML the exporter does not accept (anchors, tags).
    #[error("{}:{}:{}: not valid YAML here: {message}", path.display(), at.line, at.column)]
    Syntax {
        path: PathBuf,
        at: Pos,
        message: String,
    },
    /// The file is YAML but its content is wrong: every problem, in file order.
    #[error("{}", every_problem(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// Every problem on its own line, after their count when there are several.
fn every_problem(path: &Path, problems: &[Problem]) -> String {
    let mut text = String::new();
    if problems.len() > 1 {
        text = format!("{}: {} problems:\n", path.display(), problems.len());
    }
    let lines: Vec<String> = problems.iter().map(|p| p.located(path)).collect();
    text + &lines.join("\n")
}

/// The largest configuration (or web configuration) file read: twice a file of 100,000
/// accounts with names and labels.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse(&read_text(path)?, path)
}

/// The content of a configuration file: a regular file of at most [`MAX_FILE_BYTES`]. The
/// type is checked on the open file, opened without blocking, so a FIFO put at the path
/// neither hangs the caller nor is swapped in after the check.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let read_error = |error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    let kind = meta.file_type();
    let kind = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("directory")
    } else if kind.is_fifo() {
        Some("named pipe (FIFO)")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("device")
    } else {
        Some("socket")
    };
    if let Some(kind) = kind {
        return Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let too_large = |bytes| ConfigError::TooLarge {
        path: path.to_path_buf(),
        bytes,
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    // The file may grow between the check and the read.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read_bytes`], as UTF-8 text.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    String::from_utf8(read_bytes(path)?).map_err(|_| ConfigError::Read {
        path: path.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"),
    })
}

/// Parses configuration text; `path` is used only in messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    read::document(text, path, read::config)
}

pub(crate) use read::document;
pub(crate) use yaml::{Map, Problems, Value};

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(yaml: &str) -> Config {
        parse(yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(yaml: &str) -> String {
        parse(yaml, Path::new("test.yaml")).unwrap_err().to_string()
    }

    /// The field paths of the README's configuration table (`aws.max_attempts`,
    /// `accounts[].role_arn`, `discovery.organizations.*`).
    fn documented_fields() -> Vec<String> {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .unwrap();
        let (_, table) = readme
            .split_once("| field | default | allowed | meaning |")
            .unwrap();
        let table = table.split("\n\n").next().unwrap();
        table
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split_once('`'))
            .map(|(field, _)| field.to_string())
            .collect()
    }

    /// `value` under the field `path` (`a.b`, `accounts[].c`) in a file that is valid apart
    /// from it.
    fn file_with(path: &str, value: &str) -> String {
        let one = "id: \"111111111111\"";
        match path.split_once("[].") {
            Some(("accounts", rest)) => {
                format!("accounts:\n  - {{{one}, {}}}\n", nest(rest, value))
            }
            _ => format!("{}\naccounts:\n  - {{{one}}}\n", nest(path, value)),
        }
    }

    fn nest(path: &str, value: &str) -> String {
        match path.split_once('.') {
            Some((key, rest)) => format!("{key}: {{{}}}", nest(rest, value)),
            None => format!("{key}: {value}", key = path),
        }
    }

    /// The README's configuration table and the schema name the same fields: every field the
    /// table names is one the reader knows, and every field the reader knows at the table's
    /// levels is in the table (the reader's own list, from its unknown-field error).
    #[test]
    fn the_readme_documents_every_field_and_no_other() {
        let documented = documented_fields();
        assert!(documented.len() > 40, "{documented:?}");
        for field in documented
            .iter()
            .filter(|f| !f.ends_with('*') && !f.ends_with("[]"))
        {
            let text = match parse(&file_with(field, "\"zz\""), Path::new("t.yaml")) {
                Ok(_) => continue,
                Err(e) => e.to_string(),
            };
            assert!(
                !text.contains("unknown field"),
                "the README documents `{field}`, which the reader does not know: {text}"
            );
        }
        for level in [
            "",
            "sts",
            "aws",
            "defaults",
            "accounts[]",
            "read",
            "accounts[].read",
            "policy",
            "exemptions",
            "discovery",
        ] {
            let probe = if level.is_empty() {
                "zz_unknown".to_string()
            } else {
                format!("{level}.zz_unknown")
            };
            let text = err(&file_with(&probe, "1"));
            let (_, known) = text
                .split_once("(expected one of ")
                .unwrap_or_else(|| panic!("{level}: {text}"));
            let known = known.split(')').next().unwrap();
            for key in known.split(", ").map(|k| k.trim_matches('`')) {
                let path = if level.is_empty() {
                    key.to_string()
                } else {
                    format!("{level}.{key}")
                };
                let listed = documented.iter().any(|d| {
                    d == &path
                        || d.starts_with(&format!("{path}."))
                        || d.starts_with(&format!("{path}[]"))
                        // `accounts[].read.*`: every field below it.
                        || d.strip_suffix('*').is_some_and(|under| path.starts_with(under))
                });
                assert!(
                    listed,
                    "the reader knows `{path}`, which the README's table does not name"
                );
            }
        }
    }

    #[test]
    fn exemptions_by_tag_are_on_by_default_and_rules_may_cover_every_account() {
        let one = "accounts:\n  - id: \"111111111111\"\n";
        let c = parse_ok(one);
        assert_eq!(c.exemptions.tag.as_deref(), Some(DEFAULT_EXEMPTION_TAG));
        let c = parse_ok(&format!(
            "exemptions:\n  tag: \"\"\n  rules:\n    - {{account: \"*\", user: break-glass-*, reason: x, until: 2027-03-31}}\n{one}"
        ));
        assert_eq!(
            c.exemptions.tag, None,
            "an empty tag turns tag exemptions off"
        );
        let rule = &c.exemptions.rules[0];
        assert_eq!(rule.account, None, "\"*\" is every account");
        // Exempt through the whole of the `until` day, UTC.
        assert_eq!(rule.until, 1_806_537_600.0);
    }

    #[test]
    fn what_is_read_is_global_then_per_account_field_by_field() {
        let c = parse_ok(
            "read: {roles: false}\naccounts:\n  - {id: \"111111111111\"}\n  - {id: \"222222222222\", read: {roles: true, service_specific_credentials: false}}\n",
        );
        assert_eq!(
            c.read,
            Read {
                roles: false,
                ..Read::default()
            }
        );
        assert_eq!(c.read.with(c.accounts[0].read), c.read);
        assert_eq!(
            c.read.with(c.accounts[1].read),
            Read {
                service_credentials: false,
                ..Read::default()
            }
        );
        let e = err("read: {role: false, service_specific_credentials: maybe}\naccounts: [{id: \"111111111111\"}]\n");
        assert!(e.contains("test.yaml:1:8: read.role"), "{e}");
        assert!(e.contains("roles"), "the nearest known name: {e}");
        assert!(
            e.contains("test.yaml:1:51: read.service_specific_credentials"),
            "{e}"
        );
    }

    #[test]
    fn fills_defaults() {
        let c = parse_ok(
            r#"
sts: {region: us-gov-west-1}
defaults: {role_name: Audit, external_id: ext-42}
accounts:
  - {id: "111111111111", name: prod, labels: {team: platform}}
  - {id: "222222222222", role_arn: "arn:aws-us-gov:iam::222222222222:role/path/Custom"}
  - {id: "333333333333", name: tooling, assume_role: false, source: credential_report}
"#,
        );
        assert_eq!(c.refresh_interval, Duration::from_secs(900));
        assert_eq!(c.partition(), "aws-us-gov");
        assert_eq!(c.defaults.role_name, "Audit");
        assert_eq!(c.defaults.external_id.as_deref(), Some("ext-42"));
        assert_eq!(c.accounts[0].role, RoleChoice::Default);
        assert_eq!(c.accounts[1].name, None);
        assert_eq!(
            c.accounts[1].role,
            RoleChoice::Arn("arn:aws-us-gov:iam::222222222222:role/path/Custom".into())
        );
        assert_eq!(c.accounts[2].role, RoleChoice::OwnCredentials);
        assert_eq!(c.accounts[2].source, Some(Source::CredentialReport));
        assert_eq!(c.accounts[0].labels["team"], "platform");
        assert!(c.discovery.is_none());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn errors_name_file_position_and_field() {
        let e = err("accounts:\n  - id: \"1234567890123\"\n");
        assert!(
            e.starts_with("test.yaml:2:9: accounts[0].id: ") && e.contains("12 digits"),
            "{e}"
        );
        let e = err("refresh_interval: 15q\naccounts: [{id: \"111111111111\"}]\n");
        assert!(e.starts_with("test.yaml:1:19: refresh_interval: "), "{e}");
        let e = err("accounts: [{id: \"111111111111\", colour: red}]\n");
        assert!(
            e.contains("1:33: accounts[0].colour: unknown field `colour`"),
            "{e}"
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let e = err("concurrency: 0\nrefresh_interval: 10ms\naccounts: [{id: \"1\"}, {id: \"111111111111\", bogus: 1}]\n");
        assert!(e.starts_with("test.yaml: 4 problems:"), "{e}");
        for want in [
            "test.yaml:1:14: concurrency:",
            "test.yaml:2:19: refresh_interval:",
            "test.yaml:3:17: accounts[0].id:",
            "accounts[1].bogus: unknown field",
        ] {
            assert!(e.contains(want), "{want:?} missing in {e}");
        }
    }

    #[test]
    fn the_shrink_guard_holds_drops_beyond_max_drop_and_every_empty_result() {
        let c = parse_ok("discovery: {organizations: {}}\n");
        let guard = c.discovery.unwrap().shrink_guard;
        assert_eq!(guard, ShrinkGuard::default());
        assert!(
            !guard.drops_too_many(4, 2),
            "exactly half is not more than 50%"
        );
        assert!(guard.drops_too_many(4, 1));
        assert!(guard.drops_too_many(1, 0), "empty always counts");
        assert!(!guard.drops_too_many(0, 0), "nothing to drop");
        assert!(!guard.drops_too_many(4, 9), "growth is never held");
        let strict = ShrinkGuard {
            max_drop_percent: 0,
            confirmations: 3,
        };
        assert!(strict.drops_too_many(100, 99));
        let lax = ShrinkGuard {
            max_drop_percent: 100,
            confirmations: 3,
        };
        assert!(!lax.drops_too_many(100, 1));
        assert!(lax.drops_too_many(100, 0), "empty counts even at 100%");
    }

    #[test]
    fn the_defaults_are_consistent() {
        // Cross-field checks only point at fields that are set; the defaults must pass them.
        let c = parse_ok("accounts: [{id: \"111111111111\"}]\n");
        assert!(c.warnings.is_empty());
        assert!(c.max_staleness >= c.longest_refresh_gap() + c.refresh_timeout);
    }
}
