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

use super::{default_endpoint, AwsError, Base, Owner, Reach, RequestCounter, Session};
use crate::accounts::{OrgAccount, Role};
use crate::config::{values::arn_account, Config, Discovery};
use crate::health::Health;
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
    pub fn new(base: &Base, cfg: &Config, discovery: &Discovery, health: Arc<Health>) -> Self {
        let counter = RequestCounter {
            owner: Self::owner(discovery),
            health: health.clone(),
        };
        let mut builder = Self::config(base).interceptor(counter.clone());
        let session = discovery.role_arn.as_ref().map(|arn| {
            let role = Role {
                arn: arn.clone(),
                external_id: None,
            };
            Session::new(base, role, cfg, counter, health)
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

    /// The labels discovery's requests are counted under: the discovery role's account (or
    /// none, with the exporter's own credentials) and no account name.
    pub fn owner_id(discovery: &Discovery) -> String {
        Self::owner(discovery).account_id
    }

    fn owner(discovery: &Discovery) -> Owner {
        Owner {
            account_id: discovery
                .role_arn
                .as_deref()
                .map(arn_account)
                .unwrap_or_default()
                .to_string(),
            account_name: String::new(),
        }
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
