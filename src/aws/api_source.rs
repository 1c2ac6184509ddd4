//! The `api` source: ListUsers ▸ ListAccessKeys ▸ GetAccessKeyLastUsed, every page followed.
//!
//! The call count is the minimum the API allows: one ListUsers per page of up to 1000 users,
//! one ListAccessKeys per user (a user has at most two keys, so one page), one
//! GetAccessKeyLastUsed per key. Users are read concurrently, up to `concurrency` at once;
//! a user whose calls still fail after the SDK's retries is tried once more at the end of
//! the scan (`per_user`), so a late burst of errors does not throw a long scan away.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use futures_util::stream::{self, StreamExt};

use super::{secs, stage, AwsError, Iam};
use crate::inventory::{AccessKey, Code, KeyStatus, LastUse, RefreshError, Snapshot, Stage, User};

/// The most IAM accepts as `MaxItems`.
pub(super) const MAX_ITEMS: i32 = 1000;

pub async fn scan(iam: &Iam, concurrency: usize) -> Result<Snapshot, RefreshError> {
    let users = paginate(|marker| async move {
        let out = iam
            .pace
            .call(|| {
                iam.client
                    .list_users()
                    .max_items(MAX_ITEMS)
                    .set_marker(marker.clone())
                    .send()
            })
            .await?;
        Ok(Page {
            items: out.users,
            truncated: out.is_truncated,
            marker: out.marker,
        })
    })
    .await
    .map_err(stage(Stage::ListUsers))?;

    let mut keys = Vec::new();
    let mut vanished = HashSet::new();
    let names: Vec<String> = users.iter().map(|u| u.user_name.clone()).collect();
    for (name, found) in per_user(names, concurrency, |name| user_keys(iam, name)).await? {
        match found {
            Some(k) => keys.extend(k),
            None => {
                vanished.insert(name);
            }
        }
    }

    let users = users
        .into_iter()
        .filter(|u| !vanished.contains(&u.user_name))
        .map(|u| User {
            created: secs(&u.create_date),
            password_last_used: u.password_last_used.as_ref().map(secs),
            path: Some(u.path),
            tags: Default::default(),
            console: None,
            name: u.user_name,
        })
        .collect();
    Ok(Snapshot {
        users,
        keys,
        ..Snapshot::default()
    })
}

/// How long to wait before the second try of users whose calls failed.
const RETRY_PAUSE: Duration = Duration::from_secs(5);
/// More failed users than this in one pass is no passing trouble (a permission, the
/// network): the scan stops at once instead of calling on for every user.
const MAX_RETRIED: usize = 10;

/// Runs `work` for every user, `concurrency` at a time. Users whose work fails are tried
/// once more after all others, after a jittered pause; a second failure fails the scan.
pub(super) async fn per_user<T, F, Fut>(
    users: Vec<String>,
    concurrency: usize,
    work: F,
) -> Result<Vec<(String, T)>, RefreshError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, RefreshError>>,
{
    let mut done = Vec::with_capacity(users.len());
    let mut failed = Vec::new();
    // Owned names: a closure over `&str` trips the compiler's higher-ranked lifetime check.
    let mut results = stream::iter(users)
        .map(|name| {
            let attempt = work(name.clone());
            async move { (attempt.await, name) }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some((result, name)) = results.next().await {
        match result {
            Ok(v) => done.push((name, v)),
            Err(e) if failed.len() >= MAX_RETRIED => return Err(e),
            Err(e) => failed.push((name, e)),
        }
    }
    drop(results);
    if let Some((_, first)) = failed.first() {
        tracing::debug!(users = failed.len(), error = %first.message, "retrying users whose calls failed");
        tokio::time::sleep(RETRY_PAUSE.mul_f64(0.5 + fastrand::f64())).await;
    }
    for (name, _) in failed {
        let v = work(name.clone()).await?;
        done.push((name, v));
    }
    Ok(done)
}

/// One user's keys with their last use, or None if the user was deleted since ListUsers.
/// A user or key deleted while we read answers `NoSuchEntity`: it is skipped, not an error,
/// since IAM changes under a scan.
async fn user_keys(iam: &Iam, user: String) -> Result<Option<Vec<AccessKey>>, RefreshError> {
    let Some(listed) = list_keys(iam, &user).await? else {
        return Ok(None);
    };
    let mut keys = Vec::with_capacity(listed.len());
    for key in listed {
        let Some(last_used) = last_used(iam, &key.id).await? else {
            continue;
        };
        keys.push(AccessKey { last_used, ..key });
    }
    Ok(Some(keys))
}

/// A user's keys as ListAccessKeys gives them (no last use yet), or None if the user is gone.
pub(super) async fn list_keys(
    iam: &Iam,
    user: &str,
) -> Result<Option<Vec<AccessKey>>, RefreshError> {
    let listed = paginate(|marker| async move {
        let out = iam
            .pace
            .call(|| {
                iam.client
                    .list_access_keys()
                    .user_name(user)
                    .max_items(MAX_ITEMS)
                    .set_marker(marker.clone())
                    .send()
            })
            .await
            .map_err(Listing::from_sdk)?;
        Ok(Page {
            items: out.access_key_metadata,
            truncated: out.is_truncated,
            marker: out.marker,
        })
    })
    .await;
    let listed = match listed {
        Err(Listing::Gone) => return Ok(None),
        Err(Listing::Failed(e)) => return Err(stage(Stage::ListAccessKeys)(e)),
        Ok(keys) => keys,
    };
    Ok(Some(
        listed
            .into_iter()
            .filter_map(|meta| {
                Some(AccessKey {
                    user: user.to_string(),
                    status: meta
                        .status
                        .as_ref()
                        .map_or(KeyStatus::Other("Unknown".into()), |s| {
                            KeyStatus::parse(s.as_str())
                        }),
                    created: secs(meta.create_date.as_ref()?),
                    last_used: None,
                    id: meta.access_key_id?,
                })
            })
            .collect(),
    ))
}

/// A key's last use (None inside when never used), or None if the key is gone.
pub(super) async fn last_used(
    iam: &Iam,
    id: &str,
) -> Result<Option<Option<LastUse>>, RefreshError> {
    let sent = iam
        .pace
        .call(|| {
            iam.client
                .get_access_key_last_used()
                .access_key_id(id)
                .send()
        })
        .await;
    match sent {
        Ok(out) => Ok(Some(out.access_key_last_used.and_then(|u| {
            u.last_used_date.map(|at| LastUse {
                at: secs(&at),
                service: known(u.service_name),
                region: known(u.region),
            })
        }))),
        // The API models no error, but IAM answers NoSuchEntity for a deleted key.
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(stage(Stage::GetAccessKeyLastUsed)(e.into())),
    }
}

/// `NoSuchEntity`: the user or key was deleted since it was listed (IAM changes under a
/// scan). Compared by code: the SDK models it on some operations only.
fn gone<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("NoSuchEntity")
}

/// Why a user's keys could not be listed.
pub(super) enum Listing {
    /// The user was deleted since ListUsers.
    Gone,
    Failed(AwsError),
}

impl Listing {
    /// `NoSuchEntity` is a user deleted since it was listed; anything else failed.
    pub(super) fn from_sdk<E, R>(e: SdkError<E, R>) -> Listing
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        if gone(&e) {
            Listing::Gone
        } else {
            Listing::Failed(e.into())
        }
    }
}

impl From<AwsError> for Listing {
    fn from(e: AwsError) -> Self {
        Listing::Failed(e)
    }
}

pub(super) struct Page<T> {
    pub items: Vec<T>,
    pub truncated: bool,
    pub marker: Option<String>,
}

/// Follows `Marker` until the API says `IsTruncated: false`. A short page proves nothing:
/// IAM may return fewer than `MaxItems` items with more to come.
pub(super) async fn paginate<T, E, F, Fut>(mut fetch: F) -> Result<Vec<T>, E>
where
    E: From<AwsError>,
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, E>>,
{
    let mut items = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = fetch(marker.clone()).await?;
        items.extend(page.items);
        if !page.truncated {
            return Ok(items);
        }
        match page.marker {
            Some(next) if !next.is_empty() && Some(&next) != marker.as_ref() => marker = Some(next),
            _ => {
                return Err(AwsError {
                    code: Code::InvalidPagination,
                    message: "IsTruncated is true but the Marker is missing or repeats".into(),
                }
                .into())
            }
        }
    }
}

/// AWS answers `N/A` for a service or region it does not know.
fn known(s: String) -> Option<String> {
    (!s.is_empty() && s != "N/A").then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(items: &[u32], marker: Option<&str>) -> Result<Page<u32>, AwsError> {
        Ok(Page {
            items: items.to_vec(),
            truncated: marker.is_some(),
            marker: marker.map(String::from),
        })
    }

    #[tokio::test]
    async fn follows_truncation_not_page_size() {
        // A short middle page must not end the scan.
        let got = paginate(|m| async move {
            match m.as_deref() {
                None => page(&[1, 2], Some("a+/=")),
                Some("a+/=") => page(&[3], Some("b")),
                Some("b") => page(&[4, 5], None),
                other => panic!("unexpected marker {other:?}"),
            }
        })
        .await
        .unwrap();
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn repeating_marker_is_an_error_not_a_loop() {
        let err = paginate(|_| async { page(&[1], Some("same")) })
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidPagination);
    }
}
