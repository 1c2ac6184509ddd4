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

    // Through a real IAM client whose answers are mocked.

    use aws_sdk_iam::operation::get_access_key_last_used::GetAccessKeyLastUsedOutput;
    use aws_sdk_iam::operation::list_access_keys::ListAccessKeysOutput;
    use aws_sdk_iam::operation::list_users::ListUsersOutput;
    use aws_sdk_iam::types::{AccessKeyLastUsed, AccessKeyMetadata, StatusType};
    use aws_sdk_iam::Client;
    use aws_smithy_mocks::{mock, Rule};
    use aws_smithy_types::DateTime;

    use crate::aws::mock::{self, Attempts};

    const CREATED: i64 = 1_700_000_000;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }

    fn users_output(names: &[String], truncated: bool, next: Option<&str>) -> ListUsersOutput {
        let users = names
            .iter()
            .map(|n| {
                aws_sdk_iam::types::User::builder()
                    .path("/")
                    .user_name(n)
                    .user_id(format!("AIDA{n}"))
                    .arn(format!("arn:aws:iam::111111111111:user/{n}"))
                    .create_date(DateTime::from_secs(CREATED))
                    .build()
                    .unwrap()
            })
            .collect();
        ListUsersOutput::builder()
            .set_users(Some(users))
            .is_truncated(truncated)
            .set_marker(next.map(String::from))
            .build()
            .unwrap()
    }

    /// ListUsers, asked with `marker` (and always MaxItems), answering one page.
    fn users_page(
        marker: Option<&'static str>,
        names: Vec<String>,
        truncated: bool,
        next: Option<&'static str>,
    ) -> Rule {
        mock!(Client::list_users)
            .match_requests(move |r| r.marker() == marker && r.max_items() == Some(MAX_ITEMS))
            .then_output(move || users_output(&names, truncated, next))
    }

    /// ListUsers answering its attempts with `errors` in order, then (if `then_ok`) no users.
    fn users_answering(attempts: &Attempts, errors: &[(u16, &'static str)], then_ok: bool) -> Rule {
        let answers = errors.iter().fold(
            mock!(Client::list_users).sequence(),
            |seq, &(status, code)| {
                let attempts = attempts.clone();
                seq.http_response(move || attempts.noting(mock::iam_error(status, code)))
            },
        );
        if then_ok {
            let attempts = attempts.clone();
            answers
                .output(move || attempts.noting(users_output(&[], false, None)))
                .build()
        } else {
            answers.build()
        }
    }

    fn key(user: &str, id: &str) -> AccessKeyMetadata {
        AccessKeyMetadata::builder()
            .user_name(user)
            .access_key_id(id)
            .status(StatusType::Active)
            .create_date(DateTime::from_secs(CREATED))
            .build()
    }

    /// ListAccessKeys for `user`, asked with `marker`, answering one page.
    fn keys_page(
        user: &'static str,
        marker: Option<&'static str>,
        ids: &'static [&'static str],
        truncated: bool,
        next: Option<&'static str>,
    ) -> Rule {
        mock!(Client::list_access_keys)
            .match_requests(move |r| {
                r.user_name() == Some(user)
                    && r.marker() == marker
                    && r.max_items() == Some(MAX_ITEMS)
            })
            .then_output(move || {
                ListAccessKeysOutput::builder()
                    .set_access_key_metadata(Some(ids.iter().map(|id| key(user, id)).collect()))
                    .is_truncated(truncated)
                    .set_marker(next.map(String::from))
                    .build()
                    .unwrap()
            })
    }

    #[tokio::test(start_paused = true)]
    async fn list_users_ends_on_the_truncation_flag_not_on_the_page_size() {
        // A short page that says more follow, then a full one (MaxItems users) that says none
        // do: the scan asks for no third page, and lists every user's keys.
        let short = users_page(None, names("a", 2), true, Some("m1"));
        let full = users_page(Some("m1"), names("b", 1000), false, None);
        let no_keys = mock!(Client::list_access_keys)
            .sequence()
            .output(|| {
                ListAccessKeysOutput::builder()
                    .set_access_key_metadata(Some(Vec::new()))
                    .build()
                    .unwrap()
            })
            .times(1002)
            .build();
        let iam = mock::iam(&[&short, &full, &no_keys]).await;
        let snapshot = scan(&iam, 4).await.unwrap();
        assert_eq!(snapshot.users.len(), 1002);
        assert_eq!(
            (short.num_calls(), full.num_calls(), no_keys.num_calls()),
            (1, 1, 1002)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn list_users_truncated_without_a_new_marker_is_an_error_not_a_loop() {
        let missing = users_page(None, names("a", 1), true, None);
        let iam = mock::iam(&[&missing]).await;
        let err = scan(&iam, 1).await.unwrap_err();
        assert_eq!(
            (err.stage, err.code),
            (Stage::ListUsers, Code::InvalidPagination)
        );

        let first = users_page(None, names("a", 1), true, Some("m1"));
        let again = users_page(Some("m1"), names("b", 1), true, Some("m1"));
        let iam = mock::iam(&[&first, &again]).await;
        let err = scan(&iam, 1).await.unwrap_err();
        assert_eq!(
            (err.stage, err.code),
            (Stage::ListUsers, Code::InvalidPagination)
        );
        assert_eq!((first.num_calls(), again.num_calls()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn list_access_keys_follows_the_marker_and_a_missing_one_is_an_error() {
        let first = keys_page("alice", None, &["AKIA1"], true, Some("k1"));
        let last = keys_page("alice", Some("k1"), &["AKIA2"], false, None);
        let iam = mock::iam(&[&first, &last]).await;
        let keys = list_keys(&iam, "alice").await.unwrap().unwrap();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["AKIA1", "AKIA2"]);

        let missing = keys_page("alice", None, &["AKIA1"], true, None);
        let iam = mock::iam(&[&missing]).await;
        let err = list_keys(&iam, "alice").await.unwrap_err();
        assert_eq!(
            (err.stage, err.code),
            (Stage::ListAccessKeys, Code::InvalidPagination)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn users_and_keys_deleted_during_a_scan_are_dropped_not_errors() {
        let listed = users_page(None, vec!["alice".into(), "bob".into()], false, None);
        let alice_gone = mock!(Client::list_access_keys)
            .match_requests(|r| r.user_name() == Some("alice"))
            .then_http_response(|| mock::iam_error(404, "NoSuchEntity"));
        let bob_keys = keys_page("bob", None, &["AKIAGONE", "AKIAKEPT"], false, None);
        let key_gone = mock!(Client::get_access_key_last_used)
            .match_requests(|r| r.access_key_id() == Some("AKIAGONE"))
            .then_http_response(|| mock::iam_error(404, "NoSuchEntity"));
        let key_used = mock!(Client::get_access_key_last_used)
            .match_requests(|r| r.access_key_id() == Some("AKIAKEPT"))
            .then_output(|| {
                let used = AccessKeyLastUsed::builder()
                    .last_used_date(DateTime::from_secs(CREATED + 60))
                    .service_name("s3")
                    .region("eu-west-1")
                    .build()
                    .unwrap();
                GetAccessKeyLastUsedOutput::builder()
                    .user_name("bob")
                    .access_key_last_used(used)
                    .build()
            });
        let rules = [&listed, &alice_gone, &bob_keys, &key_gone, &key_used];
        let iam = mock::iam(&rules).await;
        let snapshot = scan(&iam, 1).await.unwrap();
        let users: Vec<&str> = snapshot.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(users, ["bob"]);
        let keys: Vec<(&str, Option<&str>)> = snapshot
            .keys
            .iter()
            .map(|k| {
                (
                    k.id.as_str(),
                    k.last_used.as_ref().and_then(|u| u.service.as_deref()),
                )
            })
            .collect();
        assert_eq!(keys, [("AKIAKEPT", Some("s3"))]);
        // An answer, not a failure: nothing was asked twice.
        assert!(rules.iter().all(|r| r.num_calls() == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_are_retried_with_backoff_up_to_max_attempts() {
        let aws = mock::config().aws;
        let max = aws.max_attempts as usize;
        let errors: Vec<_> = [(500, "InternalFailure"), (503, "ServiceUnavailable")]
            .into_iter()
            .cycle()
            .take(max)
            .collect();
        let attempts = Attempts::default();
        let rule = users_answering(&attempts, &errors, false);
        let iam = mock::iam(&[&rule]).await;
        let err = scan(&iam, 1).await.unwrap_err();
        assert_eq!(
            (err.stage, err.code),
            (Stage::ListUsers, Code::Aws(errors[max - 1].1.into()))
        );
        assert_eq!(rule.num_calls(), max);
        let gaps = attempts.gaps();
        assert!(
            gaps.iter().all(|g| !g.is_zero() && *g <= aws.max_backoff),
            "a wait before every retry, at most aws.max_backoff: {gaps:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_error_then_an_answer_is_an_answer() {
        let attempts = Attempts::default();
        let errors = [(500, "InternalFailure"), (503, "ServiceUnavailable")];
        let rule = users_answering(&attempts, &errors, true);
        let iam = mock::iam(&[&rule]).await;
        scan(&iam, 1).await.unwrap();
        assert_eq!(rule.num_calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_not_retried() {
        for (status, code) in [
            (403, "AccessDenied"),
            (404, "NoSuchEntity"),
            (400, "ValidationError"),
            (400, "InvalidInput"),
        ] {
            let rule = users_answering(&Attempts::default(), &[(status, code)], false);
            let iam = mock::iam(&[&rule]).await;
            let started = tokio::time::Instant::now();
            let err = scan(&iam, 1).await.unwrap_err();
            assert_eq!(
                (err.stage, err.code),
                (Stage::ListUsers, Code::Aws(code.into()))
            );
            assert_eq!(rule.num_calls(), 1, "{code} asked once");
            assert_eq!(started.elapsed(), Duration::ZERO, "{code}: no wait");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_by_the_pace_which_slows_down() {
        let rule = users_answering(&Attempts::default(), &[(400, "Throttling"); 3], true);
        let (iam, rate) = mock::iam_with_rate(&[&rule]).await;
        scan(&iam, 1).await.unwrap();
        assert_eq!(rule.num_calls(), 4);
        // Had the SDK retried the throttles itself, the pace would not have slowed down. It
        // cut its rate to 70 % (once a second at most: the retries come at its ticks).
        let cut = mock::config().aws.requests_per_second * 0.7;
        assert!(rate.rate() < cut + 0.1, "{}", rate.rate());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_throttled_past_its_limit_returns_the_error() {
        // The first try and MAX_THROTTLED more, then the error.
        const CALLS: usize = crate::aws::pace::MAX_THROTTLED as usize + 1;
        let rule = users_answering(&Attempts::default(), &[(400, "Throttling"); CALLS], false);
        let (iam, rate) = mock::iam_with_rate(&[&rule]).await;
        let err = scan(&iam, 1).await.unwrap_err();
        assert_eq!(
            (err.stage, err.code),
            (Stage::ListUsers, Code::Aws("Throttling".into()))
        );
        assert_eq!(rule.num_calls(), CALLS);
        assert!(rate.rate() < mock::config().aws.requests_per_second);
    }
}
