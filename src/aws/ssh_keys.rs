//! SSH public keys (CodeCommit): ListSSHPublicKeys has no all-users form, so it costs one
//! call per user. Nothing else IAM returns says when a user's SSH keys change (they are in
//! neither the credential report nor GetAccountAuthorizationDetails), so every user's keys
//! are read again only every `ssh_public_keys_interval`; in between, a refresh reads only
//! the users it has not seen yet and forgets those that are gone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::api_source::{paginate, per_user, Listing, Page, MAX_ITEMS};
use super::{secs, stage, Iam};
use crate::inventory::{KeyStatus, RefreshError, SshKey, Stage};

/// What the last reads found, kept between refreshes.
#[derive(Default)]
pub(super) struct Known {
    /// When every user's keys were last read.
    read_at: Option<Instant>,
    by_user: HashMap<String, Vec<SshKey>>,
}

/// The SSH keys of `users`: from memory where they are fresh enough, else read.
pub(super) async fn read(
    iam: &Iam,
    known: &Mutex<Known>,
    users: &[String],
    interval: Duration,
    concurrency: usize,
) -> Result<Vec<SshKey>, RefreshError> {
    let (all_due, wanted) = {
        let known = known.lock().unwrap();
        let due = known.read_at.is_none_or(|t| t.elapsed() >= interval);
        let wanted: Vec<String> = users
            .iter()
            .filter(|u| due || !known.by_user.contains_key(*u))
            .cloned()
            .collect();
        (due, wanted)
    };
    let started = Instant::now();
    let found = per_user(wanted, concurrency, |name| user_keys(iam, name)).await?;
    let mut known = known.lock().unwrap();
    if all_due {
        known.by_user.clear();
        known.read_at = Some(started);
    }
    for (name, keys) in found {
        // A user deleted since it was listed has no keys to keep.
        if let Some(keys) = keys {
            known.by_user.insert(name, keys);
        }
    }
    let current: std::collections::HashSet<&String> = users.iter().collect();
    known.by_user.retain(|name, _| current.contains(name));
    Ok(known.by_user.values().flatten().cloned().collect())
}

/// One user's SSH keys, or None if the user is gone.
async fn user_keys(iam: &Iam, user: String) -> Result<Option<Vec<SshKey>>, RefreshError> {
    let listed = paginate(|marker| {
        let user = user.clone();
        async move {
            let out = iam
                .pace
                .call(|| {
                    iam.client
                        .list_ssh_public_keys()
                        .user_name(&user)
                        .max_items(MAX_ITEMS)
                        .set_marker(marker.clone())
                        .send()
                })
                .await
                .map_err(Listing::from_sdk)?;
            let items = out
                .ssh_public_keys
                .unwrap_or_default()
                .into_iter()
                .map(|k| SshKey {
                    status: KeyStatus::parse(k.status.as_str()),
                    uploaded: secs(&k.upload_date),
                    user: k.user_name,
                    id: k.ssh_public_key_id,
                })
                .collect();
            Ok(Page {
                items,
                truncated: out.is_truncated,
                marker: out.marker,
            })
        }
    })
    .await;
    match listed {
        Ok(keys) => Ok(Some(keys)),
        Err(Listing::Gone) => Ok(None),
        Err(Listing::Failed(e)) => Err(stage(Stage::ListSshPublicKeys)(e)),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_iam::operation::list_ssh_public_keys::ListSshPublicKeysOutput;
    use aws_sdk_iam::types::{SshPublicKeyMetadata, StatusType};
    use aws_sdk_iam::Client;
    use aws_smithy_mocks::{mock, Rule};
    use aws_smithy_types::DateTime;

    use super::*;
    use crate::aws::mock;
    use crate::inventory::Code;

    /// ListSSHPublicKeys for alice, asked with `marker`, answering the keys `ids`.
    fn page(
        marker: Option<&'static str>,
        ids: &'static [&'static str],
        truncated: bool,
        next: Option<&'static str>,
    ) -> Rule {
        mock!(Client::list_ssh_public_keys)
            .match_requests(move |r| {
                r.user_name() == Some("alice")
                    && r.max_items() == Some(MAX_ITEMS)
                    && r.marker() == marker
            })
            .then_output(move || {
                let keys = ids.iter().map(|id| {
                    SshPublicKeyMetadata::builder()
                        .user_name("alice")
                        .ssh_public_key_id(*id)
                        .status(StatusType::Active)
                        .upload_date(DateTime::from_secs(1_700_000_000))
                        .build()
                        .unwrap()
                });
                ListSshPublicKeysOutput::builder()
                    .set_ssh_public_keys(Some(keys.collect()))
                    .is_truncated(truncated)
                    .set_marker(next.map(String::from))
                    .build()
            })
    }

    fn ids(keys: &[SshKey]) -> Vec<&str> {
        keys.iter().map(|k| k.id.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn pages_end_on_the_truncation_flag() {
        let first = page(None, &["APKA1"], true, Some("m1"));
        let last = page(Some("m1"), &["APKA2"], false, None);
        let iam = mock::iam(&[&first, &last]).await;
        let keys = user_keys(&iam, "alice".into()).await.unwrap().unwrap();
        assert_eq!(ids(&keys), ["APKA1", "APKA2"]);

        let missing = page(None, &["APKA1"], true, None);
        let iam = mock::iam(&[&missing]).await;
        let err = user_keys(&iam, "alice".into()).await.unwrap_err();
        assert_eq!(
            (err.stage, err.code),
            (Stage::ListSshPublicKeys, Code::InvalidPagination)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_deleted_since_listed_has_no_keys_and_is_no_error() {
        let gone = mock!(Client::list_ssh_public_keys)
            .then_http_response(|| mock::iam_error(404, "NoSuchEntity"));
        let iam = mock::iam(&[&gone]).await;
        assert!(user_keys(&iam, "alice".into()).await.unwrap().is_none());
        assert_eq!(gone.num_calls(), 1);
    }
}
