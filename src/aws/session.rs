//! Assumed-role sessions: one per account, reused across refreshes and renewed ahead of
//! expiry.
//!
//! A session is only used (and so only renewed) during refreshes. It is therefore renewed at
//! the first refresh that would otherwise leave it within `renew_before` of expiry before the
//! next refresh starts; the exported expiry then never comes that close unless renewal fails,
//! which is what the session-expiry alert watches for.
//!
//! The SDK's `AssumeRoleProvider` behind its lazy identity cache would also renew, but it
//! hides when it assumes, what failed and when the session ends. A refresh needs all three:
//! a failed AssumeRole must be reported as its own stage with its AWS error code, and the
//! expiry is exported so stuck renewals can be alerted on. So the session calls STS itself
//! and the IAM client asks it for credentials on every request (an in-memory check).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{self, future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sdk_iam::config::retry::RetryPartition;

use super::{AwsError, Base, Meter, RequestCounter};
use crate::accounts::Role;
use crate::config::Config;
use crate::inventory::Code;

pub struct Session {
    sts: aws_sdk_sts::Client,
    role: Role,
    session_name: String,
    duration: Duration,
    renew_before: Duration,
    /// At the start of a refresh, renew when less than this is left: `renew_before` plus the
    /// longest wait until the next refresh.
    renew_at_refresh: Duration,
    /// The account whose role it is, for the logs.
    account_id: String,
    /// Told of every AssumeRole.
    meter: Arc<dyn Meter>,
    /// An async mutex: concurrent requests wait for one AssumeRole instead of each making one.
    current: tokio::sync::Mutex<Option<Credentials>>,
    expiry: Mutex<Option<SystemTime>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        write!(f, "Session({})", self.role.arn)
    }
}

impl Session {
    /// A session for `role` in `account_id`, with an STS client of its own (its own retry
    /// partition) whose requests and AssumeRole calls go to `counter`'s meter.
    pub fn new(
        base: &Base,
        role: Role,
        account_id: &str,
        cfg: &Config,
        counter: RequestCounter,
    ) -> Arc<Self> {
        let sts = aws_sdk_sts::config::Builder::from(&base.0)
            .retry_partition(RetryPartition::new(format!("sts-{account_id}")))
            .interceptor(counter.clone())
            .build();
        let RequestCounter(meter) = counter;
        Arc::new(Session {
            sts: aws_sdk_sts::Client::from_conf(sts),
            role,
            session_name: cfg.sts.session_name.clone(),
            duration: cfg.sts.session_duration,
            renew_before: cfg.sts.renew_before,
            renew_at_refresh: cfg.sts.renew_before + cfg.longest_refresh_gap(),
            account_id: account_id.to_string(),
            meter,
            current: tokio::sync::Mutex::new(None),
            expiry: Mutex::new(None),
        })
    }

    /// The credentials provider for a client that calls as this role. Give the client no
    /// identity cache of its own (`IdentityCache::no_cache()`): the session is the cache.
    pub fn provider(self: &Arc<Self>) -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(Provider(self.clone()))
    }

    /// Called once at the start of each refresh: renews the session if it would otherwise
    /// come within `renew_before` of expiry before the next refresh.
    pub async fn begin_refresh(&self) -> Result<(), AwsError> {
        self.credentials(self.renew_at_refresh).await.map(|_| ())
    }

    /// Valid credentials for the role, assuming it again only when the current ones are
    /// missing or have less than `margin` left. Concurrent callers share one AssumeRole.
    async fn credentials(&self, margin: Duration) -> Result<Credentials, AwsError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            let fresh = c.expiry().is_none_or(|e| e > SystemTime::now() + margin);
            if fresh {
                return Ok(c.clone());
            }
        }
        let result = self.assume().await;
        self.meter.assume_role(result.is_ok());
        let creds = result?;
        *self.expiry.lock().unwrap() = creds.expiry();
        tracing::debug!(
            account_id = %self.account_id,
            role = %self.role.arn,
            expires = ?creds.expiry().map(humantime::format_rfc3339_seconds),
            "assumed role"
        );
        *current = Some(creds.clone());
        Ok(creds)
    }

    pub fn expiry(&self) -> Option<SystemTime> {
        *self.expiry.lock().unwrap()
    }

    async fn assume(&self) -> Result<Credentials, AwsError> {
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.role.arn)
            .role_session_name(&self.session_name)
            .set_external_id(self.role.external_id.clone())
            .duration_seconds(self.duration.as_secs() as i32)
            .send()
            .await?;
        let c = out.credentials.ok_or_else(|| AwsError {
            code: Code::InvalidResponse,
            message: "AssumeRole answered without credentials".into(),
        })?;
        let expiry = SystemTime::try_from(c.expiration).map_err(|_| AwsError {
            code: Code::InvalidResponse,
            message: "AssumeRole answered with an expiration outside the clock's range".into(),
        })?;
        Ok(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            Some(expiry),
            "iam-key-exporter-session",
        ))
    }
}

#[derive(Debug)]
struct Provider(Arc<Session>);

impl ProvideCredentials for Provider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        // Every IAM request asks; within a refresh only an expiring session is renewed.
        future::ProvideCredentials::new(async move {
            self.0
                .credentials(self.0.renew_before)
                .await
                .map_err(|e| provider::error::CredentialsError::provider_error(e.to_string()))
        })
    }
}
