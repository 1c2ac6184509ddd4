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
