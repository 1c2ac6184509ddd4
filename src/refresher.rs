//! The background loop that keeps the inventory fresh: the only caller of the AWS layer.
//!
//! Each account has its own task, so one account's timeout or throttling never delays
//! another's schedule, and its refreshes run one after another, never overlapping. A shared
//! semaphore bounds how many accounts are read at once (`concurrency`); start times and
//! intervals are jittered so many accounts do not hit AWS in lockstep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::aws::{self, AccountReader};
use crate::config::{Account, Config, REFRESH_JITTER};
use crate::health::Health;
use crate::inventory::{unix_now, AccountState, Inventory, RefreshError};

/// The running account tasks. A reload restarts only the tasks of accounts that were added or
/// changed: unchanged accounts keep their session, their schedule and their data.
pub struct Refresher {
    cfg: Arc<Config>,
    base: aws::Base,
    permits: Arc<Semaphore>,
    inventory: Arc<Inventory>,
    health: Arc<Health>,
    tasks: HashMap<String, (Arc<Account>, JoinHandle<()>)>,
}

impl Refresher {
    /// Starts refreshing every account of `cfg` in the background.
    pub async fn start(cfg: Arc<Config>, inventory: Arc<Inventory>, health: Arc<Health>) -> Self {
        let mut refresher = Refresher {
            base: aws::base(&cfg).await,
            permits: Arc::new(Semaphore::new(cfg.concurrency)),
            cfg,
            inventory,
            health,
            tasks: HashMap::new(),
        };
        refresher.spawn_missing();
        refresher
    }

    /// Switches to a new configuration.
    pub async fn reload(&mut self, cfg: Arc<Config>) {
        if self.cfg.same_settings(&cfg) {
            let wanted: HashMap<&str, &Account> =
                cfg.accounts.iter().map(|a| (a.id.as_str(), &**a)).collect();
            self.stop_where(|a| wanted.get(a.id.as_str()) != Some(&a))
                .await;
        } else {
            // Timeouts, retries, STS settings or concurrency changed: every account restarts.
            self.stop_where(|_| true).await;
            self.base = aws::base(&cfg).await;
            self.permits = Arc::new(Semaphore::new(cfg.concurrency));
        }
        self.cfg = cfg;
        self.spawn_missing();
    }

    /// Stops every account task and waits until none can touch the inventory any more.
    pub async fn stop(mut self) {
        self.stop_where(|_| true).await;
    }

    /// Makes the inventory hold exactly the configured accounts and starts the tasks missing.
    fn spawn_missing(&mut self) {
        self.inventory.retain_only(&self.cfg.accounts);
        self.health.retain_accounts(&self.cfg.accounts);
        for account in &self.cfg.accounts {
            if self.tasks.contains_key(&account.id) {
                continue;
            }
            let task = AccountTask::new(
                account,
                &self.base,
                &self.cfg,
                &self.inventory,
                &self.health,
            );
            let handle = tokio::spawn(task.run(self.permits.clone()));
            self.tasks
                .insert(account.id.clone(), (account.clone(), handle));
        }
    }

    /// Stops the tasks of the accounts matching `stop`, and waits until they have stopped.
    async fn stop_where(&mut self, stop: impl Fn(&Account) -> bool) {
        let ids: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, (account, _))| stop(account))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some((_, handle)) = self.tasks.remove(&id) {
                handle.abort();
                let _ = handle.await;
            }
        }
    }
}

/// Reads every account of `cfg` once, all in parallel up to `concurrency` (the one-shot mode).
pub async fn refresh_all_once(cfg: Arc<Config>, inventory: Arc<Inventory>, health: Arc<Health>) {
    inventory.retain_only(&cfg.accounts);
    let base = aws::base(&cfg).await;
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let mut tasks = JoinSet::new();
    for account in &cfg.accounts {
        let task = AccountTask::new(account, &base, &cfg, &inventory, &health);
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire().await;
            task.refresh().await;
        });
    }
    tasks.join_all().await;
}

struct AccountTask {
    account: Arc<Account>,
    reader: AccountReader,
    cfg: Arc<Config>,
    inventory: Arc<Inventory>,
    health: Arc<Health>,
}

impl AccountTask {
    fn new(
        account: &Arc<Account>,
        base: &aws::Base,
        cfg: &Arc<Config>,
        inventory: &Arc<Inventory>,
        health: &Arc<Health>,
    ) -> Self {
        AccountTask {
            account: account.clone(),
            reader: AccountReader::new(base, cfg, account, health.clone()),
            cfg: cfg.clone(),
            inventory: inventory.clone(),
            health: health.clone(),
        }
    }

    async fn run(self, permits: Arc<Semaphore>) {
        // Spread the first refreshes over a second or two rather than all at once.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1500))).await;
        loop {
            {
                let _permit = permits.acquire().await;
                self.refresh().await;
            }
            tokio::time::sleep(jittered(self.cfg.refresh_interval)).await;
        }
    }

    async fn refresh(&self) {
        let started = Instant::now();
        // Per-call timeouts bound each request, not a whole scan: without this an endpoint
        // that stalls every call would hold a `concurrency` permit for users × timeout.
        let limit = self.cfg.refresh_timeout;
        let result = match tokio::time::timeout(limit, self.reader.read()).await {
            Ok(r) => r,
            Err(_) => Err(RefreshError {
                stage: "refresh",
                code: "RefreshTimeout".into(),
                message: format!(
                    "the refresh did not finish within refresh_timeout ({})",
                    humantime::format_duration(limit)
                ),
            }),
        };
        let duration = started.elapsed().as_secs_f64();
        let now = unix_now();

        let previous = self.inventory.get(&self.account.id);
        let mut state = AccountState::new(self.account.clone());
        if let Some(p) = &previous {
            state.snapshot = p.snapshot.clone();
            state.last_success = p.last_success;
            state.data_expires = p.data_expires;
        }
        state.attempted = true;
        state.last_duration = Some(duration);
        state.session_expiry = self.reader.session_expiry();

        let (id, name) = (&self.account.id, &self.account.name);
        match result {
            Ok(snapshot) => {
                tracing::info!(
                    account_id = %id, account_name = %name, duration_seconds = duration,
                    users = snapshot.users.len(), keys = snapshot.keys.len(),
                    "refreshed account"
                );
                state.snapshot = Some(Arc::new(snapshot));
                state.up = true;
                state.last_success = Some(now);
            }
            Err(e) => {
                self.health
                    .refresh_errors
                    .inc(&[id, name, e.stage, &e.code]);
                // Last good data stays visible (with account_up 0) until `data_expires`; the
                // collector hides it from then on, and here it is freed.
                let stale = state.data_expires.is_none_or(|t| now > t);
                if stale {
                    state.snapshot = None;
                }
                tracing::warn!(
                    account_id = %id, account_name = %name, duration_seconds = duration,
                    stage = e.stage, code = %e.code, error = %e.message, kept_stale_data = !stale && state.snapshot.is_some(),
                    "account refresh failed"
                );
                state.last_error = Some(e);
            }
        }
        state.data_expires = state
            .last_success
            .map(|t| t + self.cfg.max_staleness.as_secs_f64());
        self.inventory.put(state);
    }
}

/// `interval` ± `REFRESH_JITTER`.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - REFRESH_JITTER + fastrand::f64() * 2.0 * REFRESH_JITTER)
}
