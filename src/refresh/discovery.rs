//! Re-discovering the organization's accounts in the background, every
//! `discovery.organizations.refresh_interval`.
//!
//! A failed discovery changes nothing: the refresher keeps reading the accounts of the last
//! good one (or only the static ones, before any). It is retried sooner than the interval,
//! with a doubling, jittered delay, so a first discovery that fails (the exporter then stays
//! not ready) does not wait an hour to try again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::accounts::{self, Discovered, Shard};
use crate::aws::OrgReader;
use crate::config::{jittered, Config, Discovery};
use crate::inventory::{unix_now, RefreshError, Stage};
use crate::metrics::health::Health;

const FIRST_RETRY: Duration = Duration::from_secs(15);

/// A discovery result for the refresher, tagged with the generation of the discovery task
/// that made it (a reload starts a new generation and the old results are ignored). None:
/// the task's first discovery failed, so the refresher should not wait for one any longer.
pub type Found = (u64, Option<Discovered>);

/// Discovers forever; returns when the refresher stops listening.
pub async fn run(
    cfg: Arc<Config>,
    shard: Shard,
    reader: OrgReader,
    health: Arc<Health>,
    found: mpsc::Sender<Found>,
    generation: u64,
) {
    let Some(d) = cfg.discovery.as_ref() else {
        return;
    };
    let mut retry = FIRST_RETRY;
    let mut first = true;
    loop {
        let result = once(&cfg, d, shard, &reader, &health).await;
        let wait = if result.is_some() {
            retry = FIRST_RETRY;
            d.refresh_interval
        } else {
            let wait = retry;
            retry = (retry * 2).min(d.refresh_interval);
            wait
        };
        if (result.is_some() || first) && found.send((generation, result)).await.is_err() {
            return;
        }
        first = false;
        tokio::time::sleep(jittered(wait)).await;
    }
}

/// One discovery, bounded by `refresh_timeout`, recorded in `health` and logged.
pub async fn once(
    cfg: &Config,
    d: &Discovery,
    shard: Shard,
    reader: &OrgReader,
    health: &Health,
) -> Option<Discovered> {
    let started = Instant::now();
    let result = tokio::time::timeout(cfg.refresh_timeout, discover(cfg, d, shard, reader))
        .await
        .unwrap_or_else(|_| {
            Err(RefreshError::timed_out(
                Stage::Discovery,
                "discovery",
                cfg.refresh_timeout,
            ))
        });
    let duration = started.elapsed().as_secs_f64();
    let owner = OrgReader::owner_id(d);
    match result {
        Ok(discovered) => {
            let by_state = accounts::by_state(cfg, &discovered.accounts);
            tracing::info!(
                accounts = discovered.accounts.len(),
                active = by_state.get("ACTIVE").copied().unwrap_or(0),
                this_shard = accounts::to_read(cfg, &discovered.accounts, shard).len(),
                duration_seconds = duration,
                "discovered accounts in AWS Organizations"
            );
            health.record_discovery(Ok(by_state), &owner, unix_now());
            Some(discovered)
        }
        Err(e) => {
            tracing::warn!(
                code = %e.code, error = %e.message, duration_seconds = duration,
                "discovery through AWS Organizations failed; keeping the last account list"
            );
            health.record_discovery(Err(e), &owner, unix_now());
            None
        }
    }
}

async fn discover(
    cfg: &Config,
    d: &Discovery,
    shard: Shard,
    reader: &OrgReader,
) -> Result<Discovered, RefreshError> {
    let accounts = reader.accounts(d, cfg.policy.needs_ous()).await?;
    let tags = if d.tags_as_labels.is_empty() {
        HashMap::new()
    } else {
        reader
            .tags(&accounts::to_read(cfg, &accounts, shard))
            .await?
    };
    Ok(Discovered { accounts, tags })
}
