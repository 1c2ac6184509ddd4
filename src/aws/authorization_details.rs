//! GetAccountAuthorizationDetails: the users' tags (for `aws_iam_user_info` labels, owners,
//! exemptions and policy rules by tag) and the roles with their last use, in one pass over
//! the same pages when both are wanted.
//!
//! It returns up to 1000 entities a page with their tags: for 2,500 users that is 3 calls
//! (about 0.9 MiB), where ListUserTags would be one call per user. ListUsers does not return
//! tags, and ListRoles does not return `RoleLastUsed`.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_iam::types::EntityType;

use super::api_source::{paginate, Page, MAX_ITEMS};
use super::{secs, stage, Iam};
use crate::inventory::{RefreshError, Role, RoleUse, Stage};

/// Which entities to read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wanted {
    pub user_tags: bool,
    pub roles: bool,
}

/// What the pages gave: every tagged user's tags by name (if wanted) and every role (if
/// wanted; `exporter` still false: the caller knows its own roles).
#[derive(Default)]
pub(super) struct Details {
    pub user_tags: Option<HashMap<String, BTreeMap<String, String>>>,
    pub roles: Option<Vec<Role>>,
}

enum Entity {
    Tags(String, BTreeMap<String, String>),
    Role(Role),
}

pub(super) async fn read(iam: &Iam, wanted: Wanted) -> Result<Details, RefreshError> {
    let filter: Vec<EntityType> = [
        wanted.user_tags.then_some(EntityType::User),
        wanted.roles.then_some(EntityType::Role),
    ]
    .into_iter()
    .flatten()
    .collect();
    let entities = paginate(|marker| {
        let filter = filter.clone();
        async move {
            let out = iam
                .pace
                .call(|| {
                    iam.client
                        .get_account_authorization_details()
                        .set_filter(Some(filter.clone()))
                        .max_items(MAX_ITEMS)
                        .set_marker(marker.clone())
                        .send()
                })
                .await?;
            // Each page is cut down to what is kept as it arrives: a page of 1000 user or
            // role details (policies, groups, trust documents) is large, and all of them
            // at once would be the refresh's peak, its pages kept by the allocator long after.
            let tags = out
                .user_detail_list
                .unwrap_or_default()
                .into_iter()
                .filter_map(|u| {
                    let tags = u.tags.filter(|t| !t.is_empty())?;
                    let tags = tags.into_iter().map(|t| (t.key, t.value)).collect();
                    Some(Entity::Tags(u.user_name?, tags))
                });
            let roles = out
                .role_detail_list
                .unwrap_or_default()
                .into_iter()
                .filter_map(|r| {
                    let used = r.role_last_used.and_then(|u| {
                        Some(RoleUse {
                            at: secs(u.last_used_date.as_ref()?),
                            region: u.region.filter(|r| !r.is_empty()),
                        })
                    });
                    Some(Entity::Role(Role {
                        name: r.role_name?,
                        path: r.path.unwrap_or_else(|| "/".into()),
                        created: r.create_date.as_ref().map_or(0.0, secs),
                        last_used: used,
                        exporter: false,
                    }))
                });
            Ok(Page {
                items: tags.chain(roles).collect::<Vec<_>>(),
                truncated: out.is_truncated,
                marker: out.marker,
            })
        }
    })
    .await
    .map_err(stage(Stage::AuthorizationDetails))?;
    let mut details = Details {
        user_tags: wanted.user_tags.then(HashMap::new),
        roles: wanted.roles.then(Vec::new),
    };
    for e in entities {
        match (e, &mut details.user_tags, &mut details.roles) {
            (Entity::Tags(name, tags), Some(all), _) => {
                all.insert(name, tags);
            }
            (Entity::Role(role), _, Some(all)) => all.push(role),
            _ => {}
        }
    }
    Ok(details)
}

#[cfg(test)]
mod tests {
    use aws_sdk_iam::operation::get_account_authorization_details::GetAccountAuthorizationDetailsOutput;
    use aws_sdk_iam::types::{RoleDetail, Tag, UserDetail};
    use aws_sdk_iam::Client;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::aws::mock;
    use crate::inventory::Code;

    /// GetAccountAuthorizationDetails, asked for users and roles with `marker`, answering
    /// `users` tagged users and `roles` roles.
    fn page(
        marker: Option<&'static str>,
        (users, roles): (usize, usize),
        truncated: bool,
        next: Option<&'static str>,
    ) -> Rule {
        mock!(Client::get_account_authorization_details)
            .match_requests(move |r| {
                r.filter() == [EntityType::User, EntityType::Role]
                    && r.max_items() == Some(MAX_ITEMS)
                    && r.marker() == marker
            })
            .then_output(move || {
                let tag = Tag::builder().key("owner").value("team-a").build().unwrap();
                let at = marker.unwrap_or("first");
                let users = (0..users).map(|i| {
                    UserDetail::builder()
                        .user_name(format!("user-{at}-{i}"))
                        .tags(tag.clone())
                        .build()
                });
                let roles = (0..roles).map(|i| {
                    RoleDetail::builder()
                        .role_name(format!("role-{at}-{i}"))
                        .build()
                });
                GetAccountAuthorizationDetailsOutput::builder()
                    .set_user_detail_list(Some(users.collect()))
                    .set_role_detail_list(Some(roles.collect()))
                    .is_truncated(truncated)
                    .set_marker(next.map(String::from))
                    .build()
            })
    }

    const BOTH: Wanted = Wanted {
        user_tags: true,
        roles: true,
    };

    #[tokio::test(start_paused = true)]
    async fn pages_end_on_the_truncation_flag_not_on_the_page_size() {
        let short = page(None, (1, 1), true, Some("m1"));
        let full = page(Some("m1"), (600, 400), false, None);
        let iam = mock::iam(&[&short, &full]).await;
        let details = read(&iam, BOTH).await.unwrap();
        let tags = details.user_tags.unwrap();
        assert_eq!(tags.len(), 601);
        assert_eq!(tags["user-m1-0"]["owner"], "team-a");
        assert_eq!(details.roles.unwrap().len(), 401);
        assert_eq!((short.num_calls(), full.num_calls()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn truncated_with_a_repeated_marker_is_an_error_not_a_loop() {
        let first = page(None, (1, 0), true, Some("m1"));
        let again = page(Some("m1"), (1, 0), true, Some("m1"));
        let iam = mock::iam(&[&first, &again]).await;
        let err = read(&iam, BOTH).await.err().unwrap();
        assert_eq!(
            (err.stage, err.code),
            (Stage::AuthorizationDetails, Code::InvalidPagination)
        );
    }
}
