//! Service-specific credentials (Bedrock API keys, CodeCommit and Keyspaces passwords,
//! CloudWatch Logs credentials): ListServiceSpecificCredentials with `AllUsers`, which lists
//! every user's in pages of up to 1000, so an account costs one call per 1000 credentials,
//! not one per user. `MaxItems` is always sent: without it the marker is not honoured.
//! None of them is in the credential report, and IAM keeps no last use for them.

use super::api_source::{paginate, Page, MAX_ITEMS};
use super::{secs, stage, Iam};
use crate::inventory::{KeyStatus, RefreshError, ServiceCredential, Stage};

pub(super) async fn all(iam: &Iam) -> Result<Vec<ServiceCredential>, RefreshError> {
    paginate(|marker| async move {
        let out = iam
            .pace
            .call(|| {
                iam.client
                    .list_service_specific_credentials()
                    .all_users(true)
                    .max_items(MAX_ITEMS)
                    .set_marker(marker.clone())
                    .send()
            })
            .await?;
        let items = out
            .service_specific_credentials
            .unwrap_or_default()
            .into_iter()
            .map(|c| ServiceCredential {
                status: KeyStatus::parse(c.status.as_str()),
                created: secs(&c.create_date),
                expires: c.expiration_date.as_ref().map(secs),
                user: c.user_name,
                id: c.service_specific_credential_id,
                service: c.service_name,
            })
            .collect();
        Ok(Page {
            items,
            truncated: out.is_truncated,
            marker: out.marker,
        })
    })
    .await
    .map_err(stage(Stage::ListServiceSpecificCredentials))
}

#[cfg(test)]
mod tests {
    use aws_sdk_iam::operation::list_service_specific_credentials::ListServiceSpecificCredentialsOutput;
    use aws_sdk_iam::types::{ServiceSpecificCredentialMetadata, StatusType};
    use aws_sdk_iam::Client;
    use aws_smithy_mocks::{mock, Rule};
    use aws_smithy_types::DateTime;

    use super::*;
    use crate::aws::mock;
    use crate::inventory::Code;

    /// ListServiceSpecificCredentials, asked for all users with `marker`, answering `n`
    /// credentials.
    fn page(
        marker: Option<&'static str>,
        n: usize,
        truncated: bool,
        next: Option<&'static str>,
    ) -> Rule {
        mock!(Client::list_service_specific_credentials)
            .match_requests(move |r| {
                r.all_users() == Some(true)
                    && r.max_items() == Some(MAX_ITEMS)
                    && r.marker() == marker
            })
            .then_output(move || {
                let credentials = (0..n).map(|i| {
                    ServiceSpecificCredentialMetadata::builder()
                        .user_name(format!("user-{i}"))
                        .status(StatusType::Active)
                        .create_date(DateTime::from_secs(1_700_000_000))
                        .service_specific_credential_id(format!("ACCA{}{i}", marker.unwrap_or("")))
                        .service_name("codecommit.amazonaws.com")
                        .build()
                        .unwrap()
                });
                ListServiceSpecificCredentialsOutput::builder()
                    .set_service_specific_credentials(Some(credentials.collect()))
                    .is_truncated(truncated)
                    .set_marker(next.map(String::from))
                    .build()
            })
    }

    #[tokio::test(start_paused = true)]
    async fn pages_end_on_the_truncation_flag_not_on_the_page_size() {
        let short = page(None, 1, true, Some("m1"));
        let full = page(Some("m1"), 1000, false, None);
        let iam = mock::iam(&[&short, &full]).await;
        assert_eq!(all(&iam).await.unwrap().len(), 1001);
        assert_eq!((short.num_calls(), full.num_calls()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn truncated_without_a_marker_is_an_error_not_a_loop() {
        let missing = page(None, 1, true, None);
        let iam = mock::iam(&[&missing]).await;
        let err = all(&iam).await.unwrap_err();
        assert_eq!(
            (err.stage, err.code),
            (
                Stage::ListServiceSpecificCredentials,
                Code::InvalidPagination
            )
        );
    }
}
