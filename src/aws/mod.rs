//! The AWS layer: the only part of the program that sees AWS SDK types. It turns an account
//! from the configuration into an [`AccountReader`], which yields inventory snapshots.
//!
//! Every client gets explicit connect, attempt and operation timeouts (the SDK has no read
//! timeout by default, so a stalled endpoint would hang a call forever), standard retries with
//! exponential backoff and jitter, and a retry partition of its own per account, so one
//! account's throttling cannot drain the retry budget of the others.

mod api_source;
mod authorization_details;
mod credential_report_source;
mod hybrid_source;
#[cfg(test)]
mod mock;
mod organizations;
mod pace;
mod service_credentials;
mod session;
mod ssh_keys;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_iam::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_iam::config::retry::{ClassifyRetry, RetryPartition};
use aws_sdk_iam::config::{ConfigBag, IdentityCache, Intercept, RuntimeComponents};
use aws_sdk_iam::types::SummaryKeyType;
use aws_smithy_http_client as http_client;
use aws_smithy_runtime::client::retries::classifiers::run_classifiers_on_ctx;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::retries::classifiers::{RetryAction, RetryReason};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::ErrorKind;

use crate::accounts::Account;
use crate::config::{Config, Source};
use crate::inventory::{unix, Code, Identity, RefreshError, Snapshot, Stage, Timestamp};

pub use organizations::OrgReader;
use session::Session;

/// The base AWS configuration every account's clients are built from.
#[derive(Clone)]
pub struct Base(SdkConfig);

/// Loads the base AWS configuration: credentials from the SDK default chain (environment,
/// profile, web identity / IRSA, ECS, IMDS), endpoints from the standard `AWS_ENDPOINT_URL*`
/// variables, and the exporter's timeouts and retries.
pub async fn base(cfg: &Config) -> Base {
    Base(
        sdk_config(cfg)
            .http_client(shared_https_client())
            .load()
            .await,
    )
}

/// The region, timeouts and retries every client inherits; the caller gives the HTTP client
/// (the unit tests give one whose answers are mocked).
fn sdk_config(cfg: &Config) -> aws_config::ConfigLoader {
    let t = &cfg.aws;
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(cfg.sts.region.clone()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(t.connect_timeout)
                .read_timeout(t.attempt_timeout)
                .operation_attempt_timeout(t.attempt_timeout)
                .operation_timeout(t.operation_timeout)
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(t.max_attempts)
                .with_max_backoff(t.max_backoff),
        )
}

/// One HTTPS client (connection pool, TLS configuration) for every account's IAM and STS
/// clients. Left to itself the SDK builds one per service client, each holding its own parsed
/// copy of the system's root certificates: 401 accounts took 121 MiB that way, 40 MiB with one
/// shared client. Built as the SDK builds its default one (rustls with
/// aws-lc, `HTTPS_PROXY`/`NO_PROXY` from the environment); the timeouts still come from each
/// client's configuration, which is the same for all.
fn shared_https_client() -> SharedHttpClient {
    http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            http_client::Connector::builder().tls_provider(http_client::tls::Provider::Rustls(
                http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(http_client::proxy::ProxyConfig::from_env()));
        connector.build()
    })
}

/// An AWS error reduced to what metrics and logs need: a code and words, never a Rust
/// debug dump.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
struct AwsError {
    pub code: Code,
    pub message: String,
}

impl<E, R> From<SdkError<E, R>> for AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    fn from(e: SdkError<E, R>) -> Self {
        let (code, message) = match &e {
            SdkError::ServiceError(s) => (
                Code::Aws(s.err().code().unwrap_or("Unknown").to_string()),
                s.err().message().unwrap_or("").to_string(),
            ),
            SdkError::TimeoutError(_) => (Code::Timeout, "no answer in time".into()),
            SdkError::DispatchFailure(d) if d.is_timeout() => {
                (Code::Timeout, "connecting took too long".into())
            }
            SdkError::DispatchFailure(d) if d.is_io() => (Code::ConnectionError, root_cause(&e)),
            SdkError::DispatchFailure(_) => match credentials_error(&e) {
                Some(CredentialsError::CredentialsNotLoaded(_)) => {
                    (Code::NoCredentials, NO_CREDENTIALS.into())
                }
                Some(c) => (
                    Code::CredentialsError,
                    format!("cannot get AWS credentials: {}", root_cause(c)),
                ),
                None => (Code::DispatchFailure, root_cause(&e)),
            },
            SdkError::ResponseError(_) => (
                Code::ResponseError,
                format!("the answer could not be read: {}", root_cause(&e)),
            ),
            _ => (Code::ConstructionFailure, root_cause(&e)),
        };
        AwsError { code, message }
    }
}

const NO_CREDENTIALS: &str = "no AWS credentials found (checked the environment variables, \
    the shared config and credentials files (AWS_PROFILE), web identity (EKS IRSA), ECS \
    container credentials and EC2 instance metadata)";

/// The innermost cause of an error, in its own words ("Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn credentials_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a CredentialsError> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<CredentialsError>() {
            return Some(found);
        }
        cause = c.source();
    }
    None
}

/// Where a client's calls go and how long they may take, to say so when they fail.
#[derive(Clone)]
struct Reach {
    endpoint: String,
    timeouts: crate::config::AwsClient,
}

impl Reach {
    /// The endpoint of `service_id` (as the SDK names it, e.g. `IAM`): `AWS_ENDPOINT_URL_<ID>`,
    /// then `AWS_ENDPOINT_URL`, then AWS's own (`default`).
    fn new(base: &Base, cfg: &Config, service_id: &str, default: String) -> Self {
        let env = format!("AWS_ENDPOINT_URL_{}", service_id.to_uppercase());
        let endpoint = std::env::var(&env)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| base.0.endpoint_url().map(str::to_string))
            .unwrap_or(default);
        Reach {
            endpoint,
            timeouts: cfg.aws.clone(),
        }
    }

    /// Says where and how long for failures that got no answer.
    fn explain(&self, mut e: RefreshError) -> RefreshError {
        let (endpoint, t) = (&self.endpoint, &self.timeouts);
        let human = |d| humantime::format_duration(d);
        e.message = match e.code {
            Code::Timeout => format!(
                "{endpoint}: {} (aws.connect_timeout {}, aws.attempt_timeout {}, \
                 aws.operation_timeout {}, aws.max_attempts {})",
                e.message,
                human(t.connect_timeout),
                human(t.attempt_timeout),
                human(t.operation_timeout),
                t.max_attempts
            ),
            Code::ConnectionError => format!("cannot connect to {endpoint}: {}", e.message),
            Code::ResponseError | Code::DispatchFailure => format!("{endpoint}: {}", e.message),
            _ => return e,
        };
        e
    }
}

/// An account's IAM client and the pace its requests keep.
struct Iam {
    client: aws_sdk_iam::Client,
    pace: pace::Pace,
}

impl Iam {
    /// An account's IAM client settings: a retry partition of its own, and throttling left
    /// to the pace.
    fn config(base: &Base, account_id: &str) -> aws_sdk_iam::config::Builder {
        aws_sdk_iam::config::Builder::from(&base.0)
            .retry_partition(RetryPartition::new(format!("iam-{account_id}")))
            .retry_classifier(pace::LeaveThrottlingToPace)
    }
}

/// Reads one account: its session (if it assumes a role) and its IAM client, both reused
/// across refreshes.
pub struct AccountReader {
    iam: Iam,
    session: Option<Arc<Session>>,
    iam_reach: Reach,
    sts_reach: Reach,
    source: Source,
    reads_user_tags: bool,
    read: crate::config::Read,
    /// The names of the roles this exporter assumes in the account (its member role, the
    /// discovery role): in use by definition, never judged idle.
    own_roles: Vec<String>,
    /// Whether the size hint began the coming refresh's session: the refresh then does
    /// not begin it again (a session shorter than the refresh interval would be assumed
    /// twice).
    session_begun: std::sync::atomic::AtomicBool,
    /// The roles as last read and when, kept from one refresh to the next: they are read
    /// again every `read.roles_interval`.
    roles: std::sync::Mutex<Option<(std::time::Instant, Vec<crate::inventory::Role>)>>,
    /// The users' SSH keys as last read, kept from one refresh to the next.
    ssh_keys: std::sync::Mutex<ssh_keys::Known>,
    /// Key ids the `hybrid` source has learned, kept from one refresh to the next.
    known_keys: hybrid_source::KnownKeys,
    requests_per_account: usize,
    report_timeout: std::time::Duration,
}

impl AccountReader {
    /// A reader for `account`, reporting its requests, sessions and pace to `meter`.
    pub fn new(base: &Base, cfg: &Config, account: &Account, meter: Arc<dyn Meter>) -> Self {
        let counter = RequestCounter(meter.clone());
        let mut iam = Iam::config(base, &account.id).interceptor(counter.clone());
        let session = account
            .role
            .as_ref()
            .map(|role| Session::new(base, role.clone(), &account.id, cfg, counter));
        if let Some(s) = &session {
            iam = iam
                .credentials_provider(s.provider())
                .identity_cache(IdentityCache::no_cache());
        }
        let discovery_role = cfg.discovery.as_ref().and_then(|d| d.role_arn.as_deref());
        let own_roles = account
            .role
            .iter()
            .map(|r| r.arn.as_str())
            .chain(discovery_role)
            .filter(|arn| crate::config::values::arn_account(arn) == account.id)
            .filter_map(|arn| arn.rsplit('/').next())
            .map(str::to_string)
            .collect();
        AccountReader {
            iam: Iam {
                client: aws_sdk_iam::Client::from_conf(iam.build()),
                pace: pace::Pace::new(cfg.aws.requests_per_second, meter),
            },
            session,
            iam_reach: Reach::new(base, cfg, "IAM", default_endpoint(cfg, "iam")),
            sts_reach: Reach::new(base, cfg, "STS", default_endpoint(cfg, "sts")),
            source: account.source,
            reads_user_tags: account.reads_user_tags,
            read: account.read,
            own_roles,
            session_begun: Default::default(),
            roles: Default::default(),
            ssh_keys: Default::default(),
            known_keys: Default::default(),
            requests_per_account: cfg.aws.requests_per_account,
            report_timeout: cfg.aws.credential_report_timeout,
        }
    }

    /// One full read of the account: its users and access keys, and what else it reads
    /// (users' tags, service-specific credentials, SSH keys, roles). If one of those others
    /// fails, the keys still count and the error comes back beside them, that kind left out
    /// (absent, never empty): without tags, owners are unknown and no user is exempt, so
    /// alerts fire rather than hide.
    pub async fn read(&self) -> Result<(Snapshot, Vec<RefreshError>), RefreshError> {
        let begun = self.session_begun.swap(false, Ordering::Relaxed);
        if let Some(s) = self.session.as_ref().filter(|_| !begun) {
            s.begin_refresh()
                .await
                .map_err(|e| self.explain(stage(Stage::AssumeRole)(e)))?;
        }
        let mut snapshot = self.read_keys().await.map_err(|e| self.explain(e))?;
        let mut partial = Vec::new();
        let mut step = |result: Result<(), RefreshError>| {
            if let Err(e) = result {
                partial.push(self.explain(e));
            }
        };
        if self.read.service_credentials {
            let all = service_credentials::all(&self.iam).await;
            step(all.map(|c| snapshot.service_credentials = Some(c)));
        }
        if self.read.ssh_public_keys {
            step(self.read_ssh_keys(&mut snapshot).await);
        }
        step(self.read_details(&mut snapshot).await);
        Ok((snapshot.sorted(), partial))
    }

    /// How many IAM users the account has (GetAccountSummary), to read the largest
    /// accounts first; None if it cannot be asked (a missing permission costs only the
    /// order).
    pub async fn size_hint(&self) -> Option<u64> {
        if let Some(s) = &self.session {
            s.begin_refresh().await.ok()?;
            self.session_begun.store(true, Ordering::Relaxed);
        }
        let out = self
            .iam
            .pace
            .call(|| self.iam.client.get_account_summary().send())
            .await;
        match out {
            Ok(out) => {
                let users = out.summary_map?.get(&SummaryKeyType::Users).copied()?;
                u64::try_from(users).ok()
            }
            Err(e) => {
                let e = AwsError::from(e);
                tracing::debug!(code = %e.code, error = %e.message, "GetAccountSummary failed: no size to order the first refresh by");
                None
            }
        }
    }

    /// Says where and how long for failures that got no answer.
    fn explain(&self, e: RefreshError) -> RefreshError {
        match e.stage {
            Stage::AssumeRole => self.sts_reach.explain(e),
            _ => self.iam_reach.explain(e),
        }
    }

    async fn read_ssh_keys(&self, snapshot: &mut Snapshot) -> Result<(), RefreshError> {
        let users: Vec<String> = snapshot.users.iter().map(|u| u.name.clone()).collect();
        let keys = ssh_keys::read(
            &self.iam,
            &self.ssh_keys,
            &users,
            self.read.ssh_public_keys_interval,
            self.requests_per_account,
        );
        snapshot.ssh_keys = Some(keys.await?);
        Ok(())
    }

    /// The users' tags and the roles, from GetAccountAuthorizationDetails in one pass; the
    /// roles only every `read.roles_interval`, their last read standing in between.
    async fn read_details(&self, snapshot: &mut Snapshot) -> Result<(), RefreshError> {
        let fresh_roles = self.roles.lock().unwrap().as_ref().and_then(|(at, roles)| {
            (at.elapsed() < self.read.roles_interval).then(|| roles.clone())
        });
        let wanted = authorization_details::Wanted {
            user_tags: self.reads_user_tags,
            roles: self.read.roles && fresh_roles.is_none(),
        };
        snapshot.roles = fresh_roles.filter(|_| self.read.roles);
        if !wanted.user_tags && !wanted.roles {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let details = authorization_details::read(&self.iam, wanted).await?;
        if let Some(mut tags) = details.user_tags {
            for u in &mut snapshot.users {
                u.tags = tags.remove(&u.name).unwrap_or_default();
            }
            snapshot.user_tags_read = true;
        }
        if let Some(mut roles) = details.roles {
            for r in &mut roles {
                r.exporter = self.own_roles.contains(&r.name);
            }
            *self.roles.lock().unwrap() = Some((started, roles.clone()));
            snapshot.roles = Some(roles);
        }
        Ok(())
    }

    async fn read_keys(&self) -> Result<Snapshot, RefreshError> {
        match self.source {
            Source::Api => api_source::scan(&self.iam, self.requests_per_account).await,
            Source::CredentialReport => {
                credential_report_source::read(&self.iam, self.report_timeout).await
            }
            Source::Hybrid => {
                hybrid_source::read(
                    &self.iam,
                    &self.known_keys,
                    self.report_timeout,
                    self.requests_per_account,
                )
                .await
            }
        }
    }

    /// When the current assumed-role session expires, if there is one.
    pub fn session_expiry(&self) -> Option<Timestamp> {
        self.session.as_ref().and_then(|s| s.expiry()).map(unix)
    }
}

/// Asks STS who the exporter's own credentials belong to.
pub async fn caller_identity(base: &Base, cfg: &Config) -> Result<Identity, RefreshError> {
    let sts = aws_sdk_sts::config::Builder::from(&base.0)
        .retry_partition(RetryPartition::new("sts-identity"))
        .build();
    let reach = Reach::new(base, cfg, "STS", default_endpoint(cfg, "sts"));
    let out = aws_sdk_sts::Client::from_conf(sts)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| reach.explain(stage(Stage::AssumeRole)(e.into())))?;
    Ok(Identity {
        account_id: out.account.unwrap_or_default(),
        arn: out.arn.unwrap_or_default(),
    })
}

/// AWS's own endpoint of `service` (`iam`, `sts`, `organizations`) in the partition of the
/// configured STS region, for messages.
fn default_endpoint(cfg: &Config, service: &str) -> String {
    let region = cfg.sts.region.as_str();
    let (suffix, global) = match cfg.partition() {
        "aws-cn" => ("amazonaws.com.cn", ["cn-north-1", "cn-northwest-1"]),
        "aws-us-gov" => ("amazonaws.com", ["us-gov", "us-gov-west-1"]),
        _ => ("amazonaws.com", ["", "us-east-1"]),
    };
    match service {
        "iam" if global[0].is_empty() => format!("https://iam.{suffix}"),
        "iam" => format!("https://iam.{}.{suffix}", global[0]),
        "organizations" => format!("https://organizations.{}.{suffix}", global[1]),
        _ => format!("https://{service}.{region}.{suffix}"),
    }
}

/// Turns an AWS error into the refresh error of `stage`.
fn stage(stage: Stage) -> impl Fn(AwsError) -> RefreshError {
    move |e| RefreshError {
        stage,
        code: e.code,
        message: e.message,
    }
}

fn secs(t: &aws_smithy_types::DateTime) -> f64 {
    t.as_secs_f64()
}

/// What the AWS layer reports as it works, to whoever keeps count (the refresher hands each
/// reader one that writes the exporter's own metrics under the account's labels): the layer
/// itself keeps no counters and knows no metric.
pub trait Meter: Send + Sync {
    /// One request attempt (a retry is another), by operation.
    fn request(&self, operation: &str, outcome: Outcome);
    /// One AssumeRole call to open or renew a session, and whether it succeeded.
    fn assume_role(&self, succeeded: bool);
    /// The IAM requests per second the account's pace allows from now on.
    fn rate(&self, per_second: f64);
}

/// How a request attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// As the SDK's own retry classifiers judge it, for every protocol and code it knows.
    Throttled,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Throttled => "throttled",
            Outcome::Error => "error",
        }
    }
}

/// Reports every request attempt, retries included, to the client's meter.
#[derive(Clone)]
struct RequestCounter(Arc<dyn Meter>);

impl fmt::Debug for RequestCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestCounter")
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
        let succeeded = context.response().is_some_and(|r| r.status().is_success());
        // The SDK's own retry classifiers say whether this attempt was throttled, for every
        // protocol and every code the SDK knows (IAM's Query XML, Organizations' JSON).
        let outcome = if succeeded {
            Outcome::Ok
        } else {
            // Leaving out the pacer's own classifier, which forbids the SDK's retry of a
            // throttled attempt but does not make it any less throttled.
            let classifiers = components
                .retry_classifiers()
                .filter(|c| c.name() != pace::NAME);
            match run_classifiers_on_ctx(classifiers, context.inner()) {
                RetryAction::RetryIndicated(RetryReason::RetryableError {
                    kind: ErrorKind::ThrottlingError,
                    ..
                }) => Outcome::Throttled,
                _ => Outcome::Error,
            }
        };
        self.0.request(operation, outcome);
        Ok(())
    }
}
