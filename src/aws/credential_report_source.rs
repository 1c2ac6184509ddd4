//! The `credential_report` source: GenerateCredentialReport ▸ poll ▸ GetCredentialReport,
//! then the CSV is parsed by [`crate::credential_report`].
//!
//! A constant few calls per account whatever its size: while a report younger than four
//! hours exists, GenerateCredentialReport answers COMPLETE at once without generating a new
//! one, so a refresh is usually exactly Generate + Get. A new report is polled for with
//! exponential backoff and jitter, never in a tight loop.

use std::time::{Duration, Instant};

use super::{secs, stage, AwsError};
use crate::credential_report;
use crate::inventory::{RefreshError, Snapshot, Stage};

const FIRST_POLL: Duration = Duration::from_secs(1);
const MAX_POLL: Duration = Duration::from_secs(15);

pub async fn read(iam: &aws_sdk_iam::Client, timeout: Duration) -> Result<Snapshot, RefreshError> {
    let deadline = Instant::now() + timeout;
    let mut delay = FIRST_POLL;
    loop {
        let complete = match iam.generate_credential_report().send().await {
            Ok(out) => out.state.is_some_and(|s| s.as_str() == "COMPLETE"),
            // Too many Generate calls in a short time: wait, like for a report in progress.
            Err(e) => match AwsError::from(e) {
                e if e.code == "LimitExceeded" => false,
                e => return Err(stage(Stage::GenerateCredentialReport)(e)),
            },
        };
        if complete {
            match iam.get_credential_report().send().await {
                Ok(out) => {
                    let generated =
                        out.generated_time
                            .as_ref()
                            .map(secs)
                            .ok_or_else(|| RefreshError {
                                stage: Stage::GetCredentialReport,
                                code: "InvalidResponse".into(),
                                message: "GetCredentialReport answered without GeneratedTime"
                                    .into(),
                            })?;
                    let content = out.content.map(|b| b.into_inner()).unwrap_or_default();
                    return credential_report::parse(&content, generated).map_err(|e| {
                        RefreshError {
                            stage: Stage::ParseCredentialReport,
                            code: "MalformedReport".into(),
                            message: e.0,
                        }
                    });
                }
                // The report went away or is being replaced between the two calls: generate
                // (or wait for) a new one.
                Err(e) => match AwsError::from(e) {
                    e if matches!(
                        e.code.as_str(),
                        "ReportInProgress" | "ReportNotPresent" | "ReportExpired"
                    ) => {}
                    e => return Err(stage(Stage::GetCredentialReport)(e)),
                },
            }
        }
        // Full jitter on an exponential delay.
        let wait = delay.mul_f64(0.5 + fastrand::f64() * 0.5);
        if Instant::now() + wait > deadline {
            return Err(RefreshError {
                stage: Stage::GenerateCredentialReport,
                code: "ReportTimeout".into(),
                message: format!(
                    "the credential report was not ready within {} (aws.credential_report_timeout)",
                    humantime::format_duration(timeout)
                ),
            });
        }
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(MAX_POLL);
    }
}
