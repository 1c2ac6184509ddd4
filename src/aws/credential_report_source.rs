//! The `credential_report` source: GenerateCredentialReport ▸ poll ▸ GetCredentialReport,
//! then the CSV is parsed by [`crate::inventory::credential_report`].
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
use crate::inventory::credential_report;
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

#[cfg(test)]
mod tests {
    use aws_sdk_iam::operation::generate_credential_report::GenerateCredentialReportOutput;
    use aws_sdk_iam::operation::get_credential_report::GetCredentialReportOutput;
    use aws_sdk_iam::types::ReportFormatType;
    use aws_sdk_iam::Client;
    use aws_smithy_mocks::{mock, Rule};
    use aws_smithy_types::{Blob, DateTime};

    use super::*;
    use crate::aws::mock::{self, Attempts};

    const GENERATED: i64 = 1_764_000_000;

    fn generated(state: ReportStateType) -> GenerateCredentialReportOutput {
        GenerateCredentialReportOutput::builder()
            .state(state)
            .build()
    }

    fn generate(state: ReportStateType) -> Rule {
        mock!(Client::generate_credential_report).then_output(move || generated(state.clone()))
    }

    fn get_fails(status: u16, code: &'static str) -> Rule {
        mock!(Client::get_credential_report)
            .then_http_response(move || mock::iam_error(status, code))
    }

    fn report() -> Rule {
        mock!(Client::get_credential_report).then_output(|| {
            let csv = include_bytes!("../../tests/fixtures/credential_report/aws_typical.csv");
            GetCredentialReportOutput::builder()
                .content(Blob::new(csv.as_slice()))
                .report_format(ReportFormatType::TextCsv)
                .generated_time(DateTime::from_secs(GENERATED))
                .build()
        })
    }

    fn names(snapshot: &Snapshot) -> Vec<&str> {
        snapshot.users.iter().map(|u| u.name.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_in_progress_is_polled_with_growing_waits_until_complete() {
        let attempts = Attempts::default();
        let noted = |state: ReportStateType| {
            let attempts = attempts.clone();
            move || attempts.noting(generated(state.clone()))
        };
        let generating = mock!(Client::generate_credential_report)
            .sequence()
            .output(noted(ReportStateType::Started))
            .output(noted(ReportStateType::Inprogress))
            .output(noted(ReportStateType::Complete))
            .build();
        let get = report();
        let iam = mock::iam(&[&generating, &get]).await;
        let snapshot = read(&iam, Duration::from_secs(300)).await.unwrap();
        assert_eq!(names(&snapshot), ["alice", "ci-deploy", "legacy"]);
        assert_eq!(snapshot.report_generated, Some(GENERATED as f64));
        assert_eq!((generating.num_calls(), get.num_calls()), (3, 1));
        // Jittered between half and all of 1 s, then of 2 s.
        let gaps = attempts.gaps();
        assert!(
            (Duration::from_millis(500)..=Duration::from_secs(1)).contains(&gaps[0])
                && (Duration::from_secs(1)..=Duration::from_secs(2)).contains(&gaps[1]),
            "{gaps:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_gone_or_not_ready_at_get_is_generated_again() {
        let rules = [
            // Too many Generate calls: waited out like a report in progress.
            mock!(Client::generate_credential_report)
                .then_http_response(|| mock::iam_error(409, "LimitExceeded")),
            generate(ReportStateType::Complete),
            get_fails(410, "ReportNotPresent"),
            generate(ReportStateType::Complete),
            get_fails(410, "ReportExpired"),
            generate(ReportStateType::Complete),
            get_fails(404, "ReportInProgress"),
            generate(ReportStateType::Complete),
            report(),
        ];
        let iam = mock::iam(&rules.iter().collect::<Vec<_>>()).await;
        let snapshot = read(&iam, Duration::from_secs(300)).await.unwrap();
        assert_eq!(names(&snapshot), ["alice", "ci-deploy", "legacy"]);
        assert!(rules.iter().all(|r| r.num_calls() == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_not_ready_in_time_is_a_timeout() {
        let timeout = Duration::from_secs(60);
        let generating = mock!(Client::generate_credential_report)
            .sequence()
            .output(|| generated(ReportStateType::Inprogress))
            .repeatedly()
            .build();
        let iam = mock::iam(&[&generating]).await;
        let started = Instant::now();
        let err = read(&iam, timeout).await.unwrap_err();
        assert_eq!(
            (err.stage, err.code),
            (Stage::GenerateCredentialReport, Code::ReportTimeout)
        );
        // Given up before the deadline, when the next wait would pass it.
        let took = started.elapsed();
        assert!(took <= timeout && took > timeout - MAX_POLL, "{took:?}");
        assert!(generating.num_calls() > 3, "{}", generating.num_calls());
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_fail_the_read_at_their_stage() {
        let denied = mock!(Client::generate_credential_report)
            .then_http_response(|| mock::iam_error(403, "AccessDenied"));
        let iam = mock::iam(&[&denied]).await;
        let err = read(&iam, Duration::from_secs(300)).await.unwrap_err();
        assert_eq!(
            (err.stage, err.code),
            (
                Stage::GenerateCredentialReport,
                Code::Aws("AccessDenied".into())
            )
        );

        let complete = generate(ReportStateType::Complete);
        let denied = get_fails(403, "AccessDenied");
        let iam = mock::iam(&[&complete, &denied]).await;
        let err = read(&iam, Duration::from_secs(300)).await.unwrap_err();
        assert_eq!(
            (err.stage, err.code),
            (Stage::GetCredentialReport, Code::Aws("AccessDenied".into()))
        );
    }
}
