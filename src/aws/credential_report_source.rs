//! The `credential_report` source: GenerateCredentialReport ▸ poll ▸ GetCredentialReport,
//! then the CSV is parsed by [`crate::credential_report`].
//!
//! A constant few calls per account whatever its size: while a report younger than four
//! hours exists, GenerateCredentialReport answers COMPLETE at once without generating a new
//! one, so a refresh is usually exactly Generate + Get. A new report is polled for with
//! exponential backoff and jitter, never in a tight loop.

use std::time::Duration;

// The deadline on the clock the polls sleep on, so a test with paused time reaches it.
use tokio::time::Instant;

use aws_sdk_iam::types::ReportStateType;

use super::{secs, stage, Iam};
use crate::credential_report;
use crate::inventory::{Code, RefreshError, Snapshot, Stage};

const FIRST_POLL: Duration = Duration::from_secs(1);
const MAX_POLL: Duration = Duration::from_secs(15);

pub async fn read(iam: &Iam, timeout: Duration) -> Result<Snapshot, RefreshError> {
    let deadline = Instant::now() + timeout;
    let mut delay = FIRST_POLL;
    loop {
        let generated = iam
            .pace
            .call(|| iam.client.generate_credential_report().send())
            .await;
        let complete = match generated {
            Ok(out) => out.state == Some(ReportStateType::Complete),
            // Too many Generate calls in a short time: wait, like for a report in progress.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_limit_exceeded_exception()) =>
            {
                false
            }
            Err(e) => return Err(stage(Stage::GenerateCredentialReport)(e.into())),
        };
        if complete {
            match iam
                .pace
                .call(|| iam.client.get_credential_report().send())
                .await
            {
                Ok(out) => {
                    let generated =
                        out.generated_time
                            .as_ref()
                            .map(secs)
                            .ok_or_else(|| RefreshError {
                                stage: Stage::GetCredentialReport,
                                code: Code::InvalidResponse,
                                message: "GetCredentialReport answered without GeneratedTime"
                                    .into(),
                            })?;
                    let content = out.content.map(|b| b.into_inner()).unwrap_or_default();
                    return credential_report::parse(&content, generated).map_err(|e| {
                        RefreshError {
                            stage: Stage::ParseCredentialReport,
                            code: Code::MalformedReport,
                            message: e.0,
                        }
                    });
                }
                // The report went away or is being replaced between the two calls: generate
                // (or wait for) a new one.
                Err(e)
                    if e.as_service_error().is_some_and(|e| {
                        e.is_credential_report_not_ready_exception()
                            || e.is_credential_report_not_present_exception()
                            || e.is_credential_report_expired_exception()
                    }) => {}
                Err(e) => return Err(stage(Stage::GetCredentialReport)(e.into())),
            }
        }
        // Full jitter on an exponential delay.
        let wait = delay.mul_f64(0.5 + fastrand::f64() * 0.5);
        if Instant::now() + wait > deadline {
            return Err(RefreshError {
                stage: Stage::GenerateCredentialReport,
                code: Code::ReportTimeout,
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
