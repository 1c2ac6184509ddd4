//! Test support for the AWS layer: real SDK clients, built with the exporter's own settings
//! (timeouts, retries, throttling left to the pace), whose answers come from
//! `aws-smithy-mocks` rules taken in order. A call no rule expects panics, so a loop that
//! does not stop fails its test instead of hanging it.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use aws_credential_types::Credentials;
use aws_smithy_mocks::{create_mock_http_client, MockResponseInterceptor, Rule, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use tokio::time::Instant;

use super::{pace::Pace, sdk_config, Base, Iam, Meter, Outcome};
use crate::config::Config;

/// A configuration with every AWS setting at its default.
pub fn config() -> Config {
    crate::config::parse("accounts:\n  - id: \"111111111111\"\n", Path::new("t.yaml")).unwrap()
}

/// The base SDK configuration `base` builds, with the mock HTTP client and fixed credentials
/// instead of the network and the credential chain.
pub async fn base(cfg: &Config) -> Base {
    let sdk = sdk_config(cfg)
        .http_client(create_mock_http_client())
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .load()
        .await;
    Base(sdk)
}

/// Answers `rules` in order, each rule as many times as it has responses.
pub fn answers(rules: &[&Rule]) -> MockResponseInterceptor {
    rules.iter().fold(
        MockResponseInterceptor::new().rule_mode(RuleMode::Sequential),
        |m, rule| m.with_rule(rule),
    )
}

/// A meter that keeps what it hears, for tests to read.
#[derive(Default)]
pub struct Heard {
    rate: Mutex<f64>,
}

impl Heard {
    /// The rate the pace last reported.
    pub fn rate(&self) -> f64 {
        *self.rate.lock().unwrap()
    }
}

impl Meter for Heard {
    fn request(&self, _: &str, _: Outcome) {}
    fn assume_role(&self, _: bool) {}
    fn rate(&self, per_second: f64) {
        *self.rate.lock().unwrap() = per_second;
    }
}

/// An account's IAM client and pace as the exporter builds them, and what its meter hears.
pub async fn iam_with_rate(rules: &[&Rule]) -> (Iam, Arc<Heard>) {
    // The SDK keeps a retry budget per partition name for the whole process: each client a
    // name of its own, so tests running together do not spend each other's.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let account = format!("test-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let cfg = config();
    let client = Iam::config(&base(&cfg).await, &account)
        .interceptor(answers(rules))
        .build();
    let heard = Arc::new(Heard::default());
    let iam = Iam {
        client: aws_sdk_iam::Client::from_conf(client),
        pace: Pace::new(cfg.aws.requests_per_second, heard.clone()),
    };
    (iam, heard)
}

pub async fn iam(rules: &[&Rule]) -> Iam {
    iam_with_rate(rules).await.0
}

/// An IAM error as IAM sends it (Query protocol XML), for the SDK to parse and classify.
pub fn iam_error(status: u16, code: &str) -> HttpResponse {
    let body = format!(
        "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error>\
         <Type>Sender</Type><Code>{code}</Code><Message>mocked {code}</Message></Error>\
         <RequestId>4c1e6a38-mock</RequestId></ErrorResponse>"
    );
    HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body))
}

/// When each attempt was answered, on tokio's clock.
#[derive(Clone, Default)]
pub struct Attempts(Arc<Mutex<Vec<Instant>>>);

impl Attempts {
    /// `answer`, noting when it is given.
    pub fn noting<T>(&self, answer: T) -> T {
        self.0.lock().unwrap().push(Instant::now());
        answer
    }

    /// The waits between attempts.
    pub fn gaps(&self) -> Vec<std::time::Duration> {
        let at = self.0.lock().unwrap();
        at.windows(2).map(|w| w[1] - w[0]).collect()
    }
}
