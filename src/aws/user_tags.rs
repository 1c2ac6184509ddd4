//! IAM user tags, for `aws_iam_user_info` labels and exemptions by tag.
//!
//! GetAccountAuthorizationDetails with `Filter=User` returns up to 1000 users a page with
//! their tags: for 2,500 users that is 3 calls (about 0.9 MiB), where ListUserTags would be
//! one call per user (2,500 calls, about as many bytes). ListUsers does not return tags.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_iam::types::EntityType;

use super::api_source::{paginate, Page, MAX_ITEMS};
use super::{stage, Iam};
use crate::inventory::{RefreshError, Stage};

/// Every user's tags, by user name.
pub(super) async fn user_tags(
    iam: &Iam,
) -> Result<HashMap<String, BTreeMap<String, String>>, RefreshError> {
    let users = paginate(|marker| async move {
        let out = iam
            .pace
            .call(|| {
                iam.client
                    .get_account_authorization_details()
                    .filter(EntityType::User)
                    .max_items(MAX_ITEMS)
                    .set_marker(marker.clone())
                    .send()
            })
            .await?;
        // Each page is cut down to the tagged users' names and tags as it arrives: a page of
        // 1000 user details (policies, groups, ARNs) is large, and all of them at once would
        // be the refresh's peak, its pages kept by the allocator long after.
        let tagged = out
            .user_detail_list
            .unwrap_or_default()
            .into_iter()
            .filter_map(|u| {
                let tags = u.tags.filter(|t| !t.is_empty())?;
                let tags = tags.into_iter().map(|t| (t.key, t.value)).collect();
                Some((u.user_name?, tags))
            })
            .collect();
        Ok(Page {
            items: tagged,
            truncated: out.is_truncated,
            marker: out.marker,
        })
    })
    .await
    .map_err(stage(Stage::UserTags))?;
    Ok(users.into_iter().collect())
}
