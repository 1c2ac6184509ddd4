//! Discovery through AWS Organizations: which accounts exist, in which state, with which tags.
//!
//! The fewest calls for what is asked:
//! - no OU filter: ListAccounts, 20 accounts a page;
//! - with `include_ous`/`exclude_ous`: a walk down the OU tree from the included OUs (or the
//!   roots), one ListAccountsForParent and one ListOrganizationalUnitsForParent per OU
//!   (20 a page), never entering an excluded OU; ListAccounts would have to be followed by a
//!   ListParents per account and per OU level to learn where each account sits;
//! - tags only when they become labels: ListTagsForResource for each account this replica
//!   reads, nothing for the others.
//!
//! Every list follows `NextToken` until AWS stops returning one.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;

use aws_sdk_iam::config::IdentityCache;
use aws_sdk_organizations::config::retry::RetryPartition;
use aws_sdk_organizations::types::Account as SdkAccount;

use super::{default_endpoint, AwsError, Base, Meter, Reach, RequestCounter, Session};
use crate::accounts::{OrgAccount, Role};
use crate::config::{values::arn_account, Config, Discovery};
use crate::inventory::{Code, RefreshError, Stage};

/// The most any Organizations list call returns in one page.
const PAGE: i32 = 20;

/// Reads the organization, as the discovery role if one is configured.
pub struct OrgReader {
    client: aws_sdk_organizations::Client,
    session: Option<Arc<Session>>,
    reach: Reach,
    sts_reach: Reach,
}

impl OrgReader {
    /// A reader reporting its requests and sessions to `meter`.
    pub fn new(base: &Base, cfg: &Config, discovery: &Discovery, meter: Arc<dyn Meter>) -> Self {
        let counter = RequestCounter(meter);
        let mut builder = Self::config(base).interceptor(counter.clone());
        let owner = Self::owner_id(discovery);
        let session = discovery.role_arn.as_ref().map(|arn| {
            let role = Role {
                arn: arn.clone(),
                external_id: None,
            };
            Session::new(base, role, &owner, cfg, counter)
        });
        if let Some(s) = &session {
            builder = builder
                .credentials_provider(s.provider())
                .identity_cache(IdentityCache::no_cache());
        }
        OrgReader {
            client: aws_sdk_organizations::Client::from_conf(builder.build()),
            session,
            reach: Reach::new(
                base,
                cfg,
                "Organizations",
                default_endpoint(cfg, "organizations"),
            ),
            sts_reach: Reach::new(base, cfg, "STS", default_endpoint(cfg, "sts")),
        }
    }

    /// The Organizations client's settings: a retry partition of its own.
    fn config(base: &Base) -> aws_sdk_organizations::config::Builder {
        aws_sdk_organizations::config::Builder::from(&base.0)
            .retry_partition(RetryPartition::new("organizations"))
    }

    /// The account discovery calls from: the discovery role's, or none (empty) with the
    /// exporter's own credentials.
    pub fn owner_id(discovery: &Discovery) -> String {
        discovery
            .role_arn
            .as_deref()
            .map(arn_account)
            .unwrap_or_default()
            .to_string()
    }

    /// Every account in the part of the organization `d` selects, whatever its state; with
    /// the OUs above each when `with_ous` (policy rules by OU need them).
    pub async fn accounts(
        &self,
        d: &Discovery,
        with_ous: bool,
    ) -> Result<Vec<OrgAccount>, RefreshError> {
        if let Some(s) = &self.session {
            s.begin_refresh()
                .await
                .map_err(|e| self.sts_reach.explain(discovery_error(e)))?;
        }
        let found = if d.include_ous.is_empty() && d.exclude_ous.is_empty() && !with_ous {
            self.list_accounts().await
        } else {
            self.walk(d).await
        };
        found.map_err(|e| self.reach.explain(discovery_error(e)))
    }

    /// The tags of each account in `ids`.
    pub async fn tags(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, BTreeMap<String, String>>, RefreshError> {
        let mut out = HashMap::with_capacity(ids.len());
        for id in ids {
            let tags = pages(|token| async move {
                let page = self
                    .client
                    .list_tags_for_resource()
                    .resource_id(*id)
                    .set_next_token(token)
                    .send()
                    .await?;
                Ok((page.tags.unwrap_or_default(), page.next_token))
            })
            .await
            .map_err(|e| self.reach.explain(discovery_error(e)))?;
            let tags = tags.into_iter().map(|t| (t.key, t.value)).collect();
            out.insert(id.to_string(), tags);
        }
        Ok(out)
    }

    async fn list_accounts(&self) -> Result<Vec<OrgAccount>, AwsError> {
        let accounts = pages(|token| async move {
            let page = self
                .client
                .list_accounts()
                .max_results(PAGE)
                .set_next_token(token)
                .send()
                .await?;
            Ok((page.accounts.unwrap_or_default(), page.next_token))
        })
        .await?;
        Ok(accounts.into_iter().filter_map(org_account).collect())
    }

    /// Breadth-first from the included OUs (or the roots), skipping excluded subtrees; an
    /// OU reached twice (an included OU inside another) is read once. Each OU carries the
    /// OUs above it, so every account learns its place for free; an included OU learns
    /// what is above it with one ListParents per level.
    async fn walk(&self, d: &Discovery) -> Result<Vec<OrgAccount>, AwsError> {
        let mut queue: VecDeque<(String, Arc<Vec<String>>)> = VecDeque::new();
        if d.include_ous.is_empty() {
            for root in self.roots().await? {
                queue.push_back((root, Arc::default()));
            }
        } else {
            for ou in &d.include_ous {
                queue.push_back((ou.clone(), Arc::new(self.above(ou).await?)));
            }
        }
        let mut visited = HashSet::new();
        let mut seen_accounts = HashSet::new();
        let mut out = Vec::new();
        while let Some((parent, above)) = queue.pop_front() {
            if d.exclude_ous.contains(&parent) || !visited.insert(parent.clone()) {
                continue;
            }
            let here: Arc<Vec<String>> = Arc::new(
                std::iter::once(parent.clone())
                    .chain(above.iter().cloned())
                    .collect(),
            );
            let parent = parent.as_str();
            let accounts = pages(|token| async move {
                let page = self
                    .client
                    .list_accounts_for_parent()
                    .parent_id(parent)
                    .max_results(PAGE)
                    .set_next_token(token)
                    .send()
                    .await?;
                Ok((page.accounts.unwrap_or_default(), page.next_token))
            })
            .await?;
            for mut a in accounts.into_iter().filter_map(org_account) {
                if seen_accounts.insert(a.id.clone()) {
                    a.ous = here.to_vec();
                    out.push(a);
                }
            }
            let children = pages(|token| async move {
                let page = self
                    .client
                    .list_organizational_units_for_parent()
                    .parent_id(parent)
                    .max_results(PAGE)
                    .set_next_token(token)
                    .send()
                    .await?;
                Ok((
                    page.organizational_units.unwrap_or_default(),
                    page.next_token,
                ))
            })
            .await?;
            queue.extend(
                children
                    .into_iter()
                    .filter_map(|ou| Some((ou.id?, here.clone()))),
            );
        }
        Ok(out)
    }

    /// The OUs and root above `ou`, nearest first.
    async fn above(&self, ou: &str) -> Result<Vec<String>, AwsError> {
        let mut chain = Vec::new();
        let mut child = ou.to_string();
        // An OU tree is at most five levels below the root.
        while !child.starts_with("r-") && chain.len() <= 6 {
            let id = child.as_str();
            let parents = pages(|token| async move {
                let page = self
                    .client
                    .list_parents()
                    .child_id(id)
                    .set_next_token(token)
                    .send()
                    .await?;
                Ok((page.parents.unwrap_or_default(), page.next_token))
            })
            .await?;
            let Some(parent) = parents.into_iter().find_map(|p| p.id) else {
                break;
            };
            chain.push(parent.clone());
            child = parent;
        }
        Ok(chain)
    }

    async fn roots(&self) -> Result<Vec<String>, AwsError> {
        let roots = pages(|token| async move {
            let page = self
                .client
                .list_roots()
                .max_results(PAGE)
                .set_next_token(token)
                .send()
                .await?;
            Ok((page.roots.unwrap_or_default(), page.next_token))
        })
        .await?;
        Ok(roots.into_iter().filter_map(|r| r.id).collect())
    }
}

fn discovery_error(e: AwsError) -> RefreshError {
    RefreshError {
        stage: Stage::Discovery,
        code: e.code,
        message: e.message,
    }
}

/// An account with its id; `State`, or the older `Status` where AWS gives no `State`.
fn org_account(a: SdkAccount) -> Option<OrgAccount> {
    let id = a.id?;
    let state = a
        .state
        .map(|s| s.as_str().to_string())
        .or_else(|| a.status.map(|s| s.as_str().to_string()))
        .unwrap_or_else(|| "UNKNOWN".to_string());
    Some(OrgAccount {
        name: a.name.unwrap_or_else(|| id.clone()),
        id,
        state,
        ous: Vec::new(),
    })
}

/// Follows `NextToken` until AWS returns none. A token that repeats is an error, not a loop.
async fn pages<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, AwsError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<String>), AwsError>>,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let (page, next) = fetch(token.clone()).await?;
        items.extend(page);
        match next {
            None => return Ok(items),
            Some(next) if next.is_empty() => return Ok(items),
            Some(next) if Some(&next) == token.as_ref() => {
                return Err(AwsError {
                    code: Code::InvalidPagination,
                    message: "Organizations returned the same NextToken twice".into(),
                })
            }
            Some(next) => token = Some(next),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use aws_sdk_organizations::operation::list_accounts::ListAccountsOutput;
    use aws_sdk_organizations::operation::list_accounts_for_parent::ListAccountsForParentOutput;
    use aws_sdk_organizations::operation::list_organizational_units_for_parent::ListOrganizationalUnitsForParentOutput;
    use aws_sdk_organizations::operation::list_parents::ListParentsOutput;
    use aws_sdk_organizations::operation::list_tags_for_resource::ListTagsForResourceOutput;
    use aws_sdk_organizations::types::{AccountState, OrganizationalUnit, Parent, ParentType, Tag};
    use aws_sdk_organizations::Client;
    use aws_smithy_mocks::{mock, Rule};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;
    use crate::aws::mock;

    const OU_A: &str = "ou-ab12-aaaaaaaa";
    const OU_B: &str = "ou-ab12-bbbbbbbb";

    /// The reader as the exporter builds it, with the exporter's own credentials.
    async fn org(rules: &[&Rule]) -> OrgReader {
        let cfg = mock::config();
        let base = mock::base(&cfg).await;
        let client = OrgReader::config(&base)
            .interceptor(mock::answers(rules))
            .build();
        OrgReader {
            client: aws_sdk_organizations::Client::from_conf(client),
            session: None,
            reach: Reach::new(&base, &cfg, "Organizations", "organizations".into()),
            sts_reach: Reach::new(&base, &cfg, "STS", "sts".into()),
        }
    }

    fn discovery(yaml: &str) -> Discovery {
        let text = format!("discovery:\n  organizations: {yaml}\n");
        let cfg = crate::config::parse(&text, Path::new("t.yaml")).unwrap();
        cfg.discovery.unwrap()
    }

    fn accounts(prefix: &str, n: usize) -> Vec<SdkAccount> {
        (0..n)
            .map(|i| {
                SdkAccount::builder()
                    .id(format!("{prefix}{i:04}"))
                    .name(format!("{prefix}-{i}"))
                    .state(AccountState::Active)
                    .build()
            })
            .collect()
    }

    /// ListAccounts, asked with `token` (and always the largest page), answering a page of
    /// `n` accounts.
    fn accounts_page(token: Option<&'static str>, n: usize, next: Option<&'static str>) -> Rule {
        mock!(Client::list_accounts)
            .match_requests(move |r| r.next_token() == token && r.max_results() == Some(PAGE))
            .then_output(move || {
                ListAccountsOutput::builder()
                    .set_accounts(Some(accounts(token.unwrap_or("first"), n)))
                    .set_next_token(next.map(String::from))
                    .build()
            })
    }

    fn ids(found: &[OrgAccount]) -> Vec<&str> {
        found.iter().map(|a| a.id.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn list_accounts_follows_next_token_until_there_is_none() {
        // A full page, a short one that still has a token, a full last one without.
        let pages = [
            accounts_page(None, 20, Some("t1")),
            accounts_page(Some("t1"), 3, Some("t2")),
            accounts_page(Some("t2"), 20, None),
        ];
        let reader = org(&pages.iter().collect::<Vec<_>>()).await;
        let found = reader.accounts(&discovery("{}"), false).await.unwrap();
        assert_eq!(found.len(), 43);
        assert!(pages.iter().all(|p| p.num_calls() == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeated_next_token_is_an_error_not_a_loop() {
        let first = accounts_page(None, 20, Some("t1"));
        let again = accounts_page(Some("t1"), 20, Some("t1"));
        let reader = org(&[&first, &again]).await;
        let err = reader.accounts(&discovery("{}"), false).await.unwrap_err();
        assert_eq!(
            (err.stage, err.code),
            (Stage::Discovery, Code::InvalidPagination)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_ou_walk_reads_every_page_and_places_each_account() {
        let parents = |token: Option<&'static str>,
                       parent: Option<&'static str>,
                       next: Option<&'static str>| {
            mock!(Client::list_parents)
                .match_requests(move |r| r.child_id() == Some(OU_A) && r.next_token() == token)
                .then_output(move || {
                    let parents =
                        parent.map(|id| Parent::builder().id(id).r#type(ParentType::Root).build());
                    ListParentsOutput::builder()
                        .set_parents(Some(parents.into_iter().collect()))
                        .set_next_token(next.map(String::from))
                        .build()
                })
        };
        let in_ou = |ou: &'static str,
                     token: Option<&'static str>,
                     prefix: &'static str,
                     n: usize,
                     next: Option<&'static str>| {
            mock!(Client::list_accounts_for_parent)
                .match_requests(move |r| {
                    r.parent_id() == Some(ou)
                        && r.next_token() == token
                        && r.max_results() == Some(PAGE)
                })
                .then_output(move || {
                    ListAccountsForParentOutput::builder()
                        .set_accounts(Some(accounts(prefix, n)))
                        .set_next_token(next.map(String::from))
                        .build()
                })
        };
        let children = |ou: &'static str, child: Option<&'static str>| {
            mock!(Client::list_organizational_units_for_parent)
                .match_requests(move |r| r.parent_id() == Some(ou))
                .then_output(move || {
                    let child = child.map(|id| OrganizationalUnit::builder().id(id).build());
                    ListOrganizationalUnitsForParentOutput::builder()
                        .set_organizational_units(Some(child.into_iter().collect()))
                        .build()
                })
        };
        let rules = [
            // What is above the included OU: an empty page with a token, then the root.
            parents(None, None, Some("p1")),
            parents(Some("p1"), Some("r-ab12"), None),
            in_ou(OU_A, None, "1000", 20, Some("a1")),
            in_ou(OU_A, Some("a1"), "1001", 1, None),
            children(OU_A, Some(OU_B)),
            in_ou(OU_B, None, "2000", 1, None),
            children(OU_B, None),
        ];
        let reader = org(&rules.iter().collect::<Vec<_>>()).await;
        let d = discovery(&format!("{{include_ous: [{OU_A}]}}"));
        let found = reader.accounts(&d, true).await.unwrap();
        assert_eq!(found.len(), 22);
        assert!(found[..21].iter().all(|a| a.ous == [OU_A, "r-ab12"]));
        assert_eq!(ids(&found[21..]), ["20000000"]);
        assert_eq!(found[21].ous, [OU_B, OU_A, "r-ab12"]);
        assert!(rules.iter().all(|r| r.num_calls() == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn tags_follow_next_token() {
        let page = |token: Option<&'static str>, key: &'static str, next: Option<&'static str>| {
            mock!(Client::list_tags_for_resource)
                .match_requests(move |r| {
                    r.resource_id() == Some("111111111111") && r.next_token() == token
                })
                .then_output(move || {
                    let tag = Tag::builder().key(key).value("x").build().unwrap();
                    ListTagsForResourceOutput::builder()
                        .tags(tag)
                        .set_next_token(next.map(String::from))
                        .build()
                })
        };
        let (first, last) = (
            page(None, "team", Some("t1")),
            page(Some("t1"), "env", None),
        );
        let reader = org(&[&first, &last]).await;
        let tags = reader.tags(&["111111111111"]).await.unwrap();
        let keys: Vec<&str> = tags["111111111111"].keys().map(String::as_str).collect();
        assert_eq!(keys, ["env", "team"]);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_by_the_sdk_here_there_is_no_pace() {
        let throttled_then_ok = mock!(Client::list_accounts)
            .sequence()
            .http_response(|| {
                let body = r#"{"__type":"TooManyRequestsException","Message":"mocked"}"#;
                HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::from(body))
            })
            .output(|| {
                ListAccountsOutput::builder()
                    .set_accounts(Some(accounts("1", 1)))
                    .build()
            })
            .build();
        let reader = org(&[&throttled_then_ok]).await;
        let found = reader.accounts(&discovery("{}"), false).await.unwrap();
        assert_eq!(ids(&found), ["10000"]);
        assert_eq!(throttled_then_ok.num_calls(), 2);
    }
}
