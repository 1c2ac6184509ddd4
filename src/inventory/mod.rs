//! What is known about each account: immutable snapshots of IAM data plus the state of the
//! last refresh. Plain Rust types only; nothing here knows about the AWS SDK.
//!
//! The refresher replaces an account's whole [`AccountState`] in one pointer swap, so a scrape
//! sees either the old or the new data of an account, never a mix, and keys that vanished
//! from IAM vanish from the next scrape.

pub mod credential_report;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::accounts::Account;
use crate::config::{Config, Policy};
use crate::exemptions::Rules;

/// Seconds since the Unix epoch.
pub type Timestamp = f64;

pub fn unix(t: SystemTime) -> Timestamp {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn unix_now() -> Timestamp {
    unix(SystemTime::now())
}

pub const DAY: f64 = 86400.0;

/// Whole days in `seconds` (a negative span is 0 days).
pub fn whole_days(seconds: f64) -> u64 {
    (seconds.max(0.0) / DAY).floor() as u64
}

/// The UTC date of `t`: `2027-03-31`.
pub fn date(t: Timestamp) -> String {
    let at = UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
    humantime::format_rfc3339_seconds(at).to_string()[..10].to_string()
}

/// One account's IAM users and access keys, as read in one refresh.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub users: Vec<User>,
    pub keys: Vec<AccessKey>,
    /// The root user; only the credential report shows it.
    pub root: Option<Root>,
    /// When the credential report was generated (credential_report source only).
    pub report_generated: Option<Timestamp>,
    /// Whether the users' tags were read (they are only when needed, and the call may be
    /// denied): without them, no rule or exemption by tag can be decided.
    pub user_tags_read: bool,
    /// The users' service-specific credentials (Bedrock API keys, CodeCommit and Keyspaces
    /// passwords, ...); None when they were not read (not configured, or the call failed):
    /// absent, never "none".
    pub service_credentials: Option<Vec<ServiceCredential>>,
    /// The account's IAM roles, None when they were not read.
    pub roles: Option<Vec<Role>>,
    /// The users' SSH public keys (CodeCommit), None when they were not read.
    pub ssh_keys: Option<Vec<SshKey>>,
}

impl Snapshot {
    /// Users by name, keys and credentials by user then id, roles by name: the order of
    /// every snapshot (`AccountReader::read` puts it in, once all its parts are read), so
    /// that scrapes and diffs of the exposition are stable.
    pub fn sorted(mut self) -> Self {
        self.users.sort_by(|a, b| a.name.cmp(&b.name));
        self.keys
            .sort_by(|a, b| (&a.user, &a.id).cmp(&(&b.user, &b.id)));
        if let Some(c) = &mut self.service_credentials {
            c.sort_by(|a, b| (&a.user, &a.id).cmp(&(&b.user, &b.id)));
        }
        if let Some(r) = &mut self.roles {
            r.sort_by(|a, b| a.name.cmp(&b.name));
        }
        if let Some(k) = &mut self.ssh_keys {
            k.sort_by(|a, b| (&a.user, &a.id).cmp(&(&b.user, &b.id)));
        }
        self
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub created: Timestamp,
    pub password_last_used: Option<Timestamp>,
    /// The IAM path (`/`, `/team/payments/`), where a source knows it.
    pub path: Option<String>,
    /// The user's tags, where they were read (only when labels or exemptions need them).
    pub tags: BTreeMap<String, String>,
    /// From the credential report only: console password, MFA, signing certificates.
    pub console: Option<Console>,
}

/// What the credential report says of a user beyond access keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Console {
    pub password_enabled: bool,
    pub password_last_changed: Option<Timestamp>,
    pub mfa_active: bool,
    /// X.509 signing certificates 1 and 2: active, and when last rotated.
    pub certificates: [Option<Certificate>; 2],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Certificate {
    pub active: bool,
    pub last_rotated: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Root {
    pub mfa_active: bool,
    /// Whether the root user's access keys 1 and 2 are active.
    pub access_keys_active: [bool; 2],
}

#[derive(Debug, Clone)]
pub struct AccessKey {
    pub user: String,
    pub id: String,
    pub status: KeyStatus,
    pub created: Timestamp,
    pub last_used: Option<LastUse>,
}

impl AccessKey {
    /// Since when the key has been idle: its last use or, never used, its creation. Every
    /// output counts idle time from here.
    pub fn idle_since(&self) -> Timestamp {
        self.last_used.as_ref().map_or(self.created, |u| u.at)
    }
}

/// An access key's status as IAM reports it (the `status` label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Inactive,
    /// IAM's third status, for a key it expired itself.
    Expired,
    /// A status this version does not know yet, shown as IAM wrote it rather than guessed.
    Other(String),
}

impl KeyStatus {
    pub fn parse(s: &str) -> KeyStatus {
        match s {
            "Active" => KeyStatus::Active,
            "Inactive" => KeyStatus::Inactive,
            "Expired" => KeyStatus::Expired,
            other => KeyStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
            KeyStatus::Expired => "Expired",
            KeyStatus::Other(s) => s,
        }
    }
}

/// A service-specific credential: a password or API key an IAM user has for one AWS service
/// (`bedrock.amazonaws.com`, `codecommit.amazonaws.com`, ...). IAM records no last use of
/// these, so none is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCredential {
    pub user: String,
    /// `ACCA…`, the ServiceSpecificCredentialId.
    pub id: String,
    /// As AWS names it: `bedrock.amazonaws.com`.
    pub service: String,
    /// Active, Inactive or Expired, as IAM reports it.
    pub status: KeyStatus,
    pub created: Timestamp,
    /// When it stops working, where AWS sets one (Bedrock API keys and CloudWatch Logs
    /// credentials may have one; CodeCommit and Keyspaces passwords never do).
    pub expires: Option<Timestamp>,
}

/// An SSH public key a user uploaded for CodeCommit. IAM records no use of it.
#[derive(Debug, Clone, PartialEq)]
pub struct SshKey {
    pub user: String,
    /// `APKA…`, the SSHPublicKeyId.
    pub id: String,
    pub status: KeyStatus,
    pub uploaded: Timestamp,
}

/// Who the exporter is to AWS (sts:GetCallerIdentity): the principal member roles must trust.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub account_id: String,
    pub arn: String,
}

/// Bedrock's long-term API keys are service-specific credentials of this service.
pub const BEDROCK: &str = "bedrock.amazonaws.com";

/// An IAM role and its last use as IAM tracks it (`RoleLastUsed`: the last 400 days only).
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub name: String,
    pub path: String,
    pub created: Timestamp,
    /// None: not used within IAM's 400-day window, or never.
    pub last_used: Option<RoleUse>,
    /// A role the exporter itself assumes (its member or discovery role): it is in use by
    /// definition, so no alert judges it.
    pub exporter: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoleUse {
    pub at: Timestamp,
    pub region: Option<String>,
}

impl Role {
    /// Since when the role has been idle: its last use or, without one, its creation (a role
    /// older than IAM's window and without a date has not been used for at least that long).
    pub fn idle_since(&self) -> Timestamp {
        self.last_used.as_ref().map_or(self.created, |u| u.at)
    }

    /// Roles AWS services create and own (`/aws-service-role/`): deleting one is the
    /// service's business, so no alert judges them.
    pub fn service_linked(&self) -> bool {
        self.path.starts_with("/aws-service-role/")
    }

    /// Whether an idle alert may judge this role.
    pub fn judged(&self) -> bool {
        !self.service_linked() && !self.exporter
    }
}

#[derive(Debug, Clone)]
pub struct LastUse {
    pub at: Timestamp,
    /// None where AWS says `N/A` or `not_supported`.
    pub service: Option<String>,
    pub region: Option<String>,
}

/// Why a refresh failed: the step that failed and the AWS error code, for metrics and logs.
/// Shown as `AccessDenied (list_users): <message>`, as `/`, the audit and logs show it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} ({}): {message}", stage.as_str())]
pub struct RefreshError {
    pub stage: Stage,
    pub code: Code,
    pub message: String,
}

impl RefreshError {
    /// A refresh or a discovery that outlived `refresh_timeout` and was abandoned.
    pub fn timed_out(stage: Stage, what: &str, limit: std::time::Duration) -> RefreshError {
        RefreshError {
            stage,
            code: Code::RefreshTimeout,
            message: format!(
                "{what} did not finish within refresh_timeout ({})",
                humantime::format_duration(limit)
            ),
        }
    }
}

/// What failed, as the `code` label and the logs name it: AWS's own error code, or the
/// exporter's name for a failure AWS did not answer (its names are listed in the README's
/// error codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// AWS's code as it answered it: `AccessDenied`, `Throttling`, `NoSuchEntity`, ...
    Aws(String),
    /// No answer within the configured timeouts.
    Timeout,
    /// The endpoint could not be reached (refused, reset, no route).
    ConnectionError,
    /// The AWS SDK's credential chain found nothing.
    NoCredentials,
    /// A credential source was found but failed.
    CredentialsError,
    /// An answer that could not be read.
    ResponseError,
    /// The request could not be sent, for another reason than the above.
    DispatchFailure,
    /// The request could not be built.
    ConstructionFailure,
    /// An answer AWS should not give: a field it always sends is missing.
    InvalidResponse,
    /// `IsTruncated` with a marker missing or repeated.
    InvalidPagination,
    /// A credential report that does not parse.
    MalformedReport,
    /// AWS did not finish a credential report within `aws.credential_report_timeout`.
    ReportTimeout,
    /// The refresh (or discovery) outlived `refresh_timeout`.
    RefreshTimeout,
}

impl Code {
    pub fn as_str(&self) -> &str {
        match self {
            Code::Aws(code) => code,
            Code::Timeout => "Timeout",
            Code::ConnectionError => "ConnectionError",
            Code::NoCredentials => "NoCredentials",
            Code::CredentialsError => "CredentialsError",
            Code::ResponseError => "ResponseError",
            Code::DispatchFailure => "DispatchFailure",
            Code::ConstructionFailure => "ConstructionFailure",
            Code::InvalidResponse => "InvalidResponse",
            Code::InvalidPagination => "InvalidPagination",
            Code::MalformedReport => "MalformedReport",
            Code::ReportTimeout => "ReportTimeout",
            Code::RefreshTimeout => "RefreshTimeout",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step of a refresh (or of discovery) that failed: the `stage` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The whole refresh outlived `refresh_timeout`.
    Refresh,
    AssumeRole,
    ListUsers,
    ListAccessKeys,
    GetAccessKeyLastUsed,
    GenerateCredentialReport,
    GetCredentialReport,
    ParseCredentialReport,
    /// GetAccountAuthorizationDetails, for the users' tags and the roles.
    AuthorizationDetails,
    ListServiceSpecificCredentials,
    ListSshPublicKeys,
    /// Listing the organization's accounts or their tags.
    Discovery,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Refresh => "refresh",
            Stage::AssumeRole => "assume_role",
            Stage::ListUsers => "list_users",
            Stage::ListAccessKeys => "list_access_keys",
            Stage::GetAccessKeyLastUsed => "get_access_key_last_used",
            Stage::GenerateCredentialReport => "generate_credential_report",
            Stage::GetCredentialReport => "get_credential_report",
            Stage::ParseCredentialReport => "parse_credential_report",
            Stage::AuthorizationDetails => "get_account_authorization_details",
            Stage::ListServiceSpecificCredentials => "list_service_specific_credentials",
            Stage::ListSshPublicKeys => "list_ssh_public_keys",
            Stage::Discovery => "discovery",
        }
    }

    /// What an account's data lacks when this stage alone fails (keys are still read).
    pub fn left_out(self) -> &'static str {
        match self {
            Stage::AuthorizationDetails => {
                "no users' tags (owners unknown, no user exempt by tag), and no roles if they \
                 were due"
            }
            Stage::ListServiceSpecificCredentials => "no service-specific credentials",
            Stage::ListSshPublicKeys => "no SSH public keys",
            _ => "nothing more",
        }
    }
}

/// Everything the collector and the landing page show about one account.
#[derive(Debug, Clone)]
pub struct AccountState {
    pub account: Arc<Account>,
    /// The last successful snapshot, kept through failures until it is older than
    /// `max_staleness`.
    pub snapshot: Option<Arc<Snapshot>>,
    pub up: bool,
    pub attempted: bool,
    pub last_success: Option<Timestamp>,
    /// When the snapshot becomes too old to show: the last success plus `max_staleness`.
    pub data_expires: Option<Timestamp>,
    pub last_duration: Option<f64>,
    pub last_error: Option<RefreshError>,
    pub session_expiry: Option<Timestamp>,
}

impl AccountState {
    pub fn new(account: Arc<Account>) -> Self {
        AccountState {
            account,
            snapshot: None,
            up: false,
            attempted: false,
            last_success: None,
            data_expires: None,
            last_duration: None,
            last_error: None,
            session_expiry: None,
        }
    }
}

/// What the data is judged by, from the configuration: the policy's limits and the
/// exemptions. Kept beside the accounts, not in them, so a reload that changes only these
/// applies at the next scrape and reads nothing from AWS.
#[derive(Debug, Default)]
pub struct Standards {
    pub policy: Policy,
    pub exemptions: Rules,
}

/// The shared store: account id → current state. The lock is held only to read or swap
/// pointers, never across I/O or rendering.
#[derive(Default)]
pub struct Inventory {
    accounts: RwLock<BTreeMap<String, Arc<AccountState>>>,
    standards: RwLock<Arc<Standards>>,
    /// Whether an account list has been put in force: until then (with discovery, until the
    /// first discovery's list is applied) an empty map means "not known yet", not "none".
    listed: std::sync::atomic::AtomicBool,
}

impl Inventory {
    /// Every account's current state, in account-id order.
    pub fn accounts(&self) -> Vec<Arc<AccountState>> {
        self.accounts.read().unwrap().values().cloned().collect()
    }

    pub fn standards(&self) -> Arc<Standards> {
        self.standards.read().unwrap().clone()
    }

    pub fn set_standards(&self, cfg: &Config) {
        *self.standards.write().unwrap() = Arc::new(Standards {
            policy: cfg.policy.clone(),
            exemptions: Rules::new(&cfg.exemptions),
        });
    }

    pub fn get(&self, id: &str) -> Option<Arc<AccountState>> {
        self.accounts.read().unwrap().get(id).cloned()
    }

    pub fn put(&self, state: AccountState) {
        let id = state.account.id.clone();
        self.accounts.write().unwrap().insert(id, Arc::new(state));
    }

    /// Makes the store hold exactly `accounts`: an account that stays keeps its state (also
    /// when its name, labels or role changed: its IAM data is the same), one whose source
    /// changed or that is new starts empty, removed ones are dropped.
    pub fn retain_only(&self, accounts: &[Arc<Account>]) {
        let mut map = self.accounts.write().unwrap();
        let mut next = BTreeMap::new();
        for account in accounts {
            let state = match map.remove(&account.id) {
                Some(s) if *s.account == **account => s,
                Some(s) if s.account.source == account.source => Arc::new(AccountState {
                    account: account.clone(),
                    ..(*s).clone()
                }),
                _ => Arc::new(AccountState::new(account.clone())),
            };
            next.insert(account.id.clone(), state);
        }
        *map = next;
        self.listed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// True once an account list is in force and every account in it has finished at least
    /// one refresh attempt.
    pub fn all_attempted(&self) -> bool {
        self.listed.load(std::sync::atomic::Ordering::Acquire)
            && self.accounts.read().unwrap().values().all(|s| s.attempted)
    }
}

/// A kind of credential data that a source may not see: the `kind` label of
/// `iam_key_exporter_account_coverage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    Root,
    UserMfa,
    ConsolePassword,
    UserTags,
    ServiceCredentials,
    Roles,
    SshPublicKeys,
}

impl Coverage {
    pub fn label(self) -> &'static str {
        match self {
            Coverage::Root => "root",
            Coverage::UserMfa => "user_mfa",
            Coverage::ConsolePassword => "console_password",
            Coverage::UserTags => "user_tags",
            Coverage::ServiceCredentials => "service_credentials",
            Coverage::Roles => "roles",
            Coverage::SshPublicKeys => "ssh_public_keys",
        }
    }

    /// Whether the source decides it (the `api` source never sees it), rather than a read
    /// that may fail.
    pub fn set_by_source(self) -> bool {
        matches!(
            self,
            Coverage::Root | Coverage::UserMfa | Coverage::ConsolePassword
        )
    }

    /// For people: `/` lists the kinds an account's data lacks.
    pub fn describe(self) -> &'static str {
        match self {
            Coverage::Root => "the root user",
            Coverage::UserMfa => "users' MFA",
            Coverage::ConsolePassword => "console passwords",
            Coverage::UserTags => "users' tags",
            Coverage::ServiceCredentials => "service-specific credentials",
            Coverage::Roles => "roles",
            Coverage::SshPublicKeys => "SSH public keys",
        }
    }
}

impl AccountState {
    /// Which kinds of credential data the account's data covers, so that an alert that
    /// stays silent is told from one that cannot fire. The `api` source sees neither the
    /// root user nor MFA nor whether a console password exists (only its last use); the
    /// users' tags count once a snapshot is there and only where they are needed (labels,
    /// exemptions by tag), and so do service-specific credentials and roles where the
    /// account reads them.
    pub fn coverage(&self) -> Vec<(Coverage, bool)> {
        let report = self.account.source != crate::config::Source::Api;
        let mut out = vec![
            (Coverage::Root, report),
            (Coverage::UserMfa, report),
            (Coverage::ConsolePassword, report),
        ];
        if let Some(snapshot) = self
            .snapshot
            .as_ref()
            .filter(|_| self.account.reads_user_tags)
        {
            out.push((Coverage::UserTags, snapshot.user_tags_read));
        }
        if let Some(snapshot) = &self.snapshot {
            let read = &self.account.read;
            if read.service_credentials {
                let covered = snapshot.service_credentials.is_some();
                out.push((Coverage::ServiceCredentials, covered));
            }
            if read.roles {
                out.push((Coverage::Roles, snapshot.roles.is_some()));
            }
            if read.ssh_public_keys {
                out.push((Coverage::SshPublicKeys, snapshot.ssh_keys.is_some()));
            }
        }
        out
    }
}

/// An account of `users` users, each with an access key, a Bedrock API key and a role, their
/// names padded with `name_pad` letters (to move where a renderer's chunks end).
#[cfg(test)]
pub(crate) fn sample_state(users: usize, name_pad: usize) -> Arc<AccountState> {
    let mut snapshot = Snapshot {
        service_credentials: Some(Vec::new()),
        roles: Some(Vec::new()),
        ..Snapshot::default()
    };
    for i in 0..users {
        let pad = "r".repeat(name_pad);
        snapshot.roles.as_mut().unwrap().push(Role {
            name: format!("{pad}{i}"),
            path: "/".into(),
            created: 1e9,
            last_used: None,
            exporter: false,
        });
        let name = format!("{}{i}", "u".repeat(name_pad));
        snapshot.users.push(User {
            name: name.clone(),
            created: 1e9,
            password_last_used: None,
            path: None,
            tags: Default::default(),
            console: None,
        });
        snapshot
            .service_credentials
            .as_mut()
            .unwrap()
            .push(ServiceCredential {
                user: name.clone(),
                id: format!("ACCA{i:017}"),
                service: BEDROCK.into(),
                status: KeyStatus::Active,
                created: 1e9,
                expires: Some(2e9),
            });
        snapshot.keys.push(AccessKey {
            user: name,
            id: format!("AKIA{i:016}"),
            status: KeyStatus::Active,
            created: 1e9,
            last_used: None,
        });
    }
    let account = Account {
        id: "111111111111".into(),
        name: "a".into(),
        source: Default::default(),
        role: None,
        labels: Default::default(),
        origin: crate::accounts::Origin::Static,
        user_tags: Vec::new(),
        reads_user_tags: false,
        read: Default::default(),
        ous: Vec::new(),
    };
    let mut s = AccountState::new(Arc::new(account));
    s.snapshot = Some(Arc::new(snapshot));
    Arc::new(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readiness asks this: an inventory whose list is not in force yet (discovery has
    /// answered, the supervisor has not applied it) is not "every account attempted".
    #[test]
    fn nothing_is_attempted_before_a_list_is_in_force() {
        let inventory = Inventory::default();
        assert!(!inventory.all_attempted(), "empty because not listed yet");
        inventory.retain_only(&[]);
        assert!(inventory.all_attempted(), "an empty list in force");
    }
}
