//! The background loop that keeps the inventory fresh. With discovery (Organizations) and the
//! gate, this module is the only caller of the AWS layer.
//!
//! Each account has its own task, so one account's timeout or throttling never delays
//! another's schedule, and its refreshes run one after another, never overlapping. The gate
//! bounds how many accounts are read at once (`concurrency`), largest first; start times and
//! intervals are jittered so many accounts do not hit AWS in lockstep.

pub(crate) mod discovery;
mod gate;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::accounts::{self, Account, Discovered, Shard};
use crate::aws::{self, AccountReader, OrgReader};
use crate::config::{jittered, Config, Discovery};
use crate::inventory::{unix_now, AccountState, Inventory, RefreshError, Stage};
use crate::metrics::health::{Health, Held, IdentityStatus};
use discovery::Found;
use gate::Gate;

/// The running account tasks and the discovery task, owned by a supervisor task that applies
/// reloads and discovery results one at a time. A change restarts only the tasks of accounts
/// that were added or changed: unchanged accounts keep their session, schedule and data.
pub struct Refresher {
    commands: mpsc::Sender<Reload>,
    supervisor: JoinHandle<()>,
    identity: JoinHandle<()>,
}

/// How long the first round waits for every account's size before it starts anyway.
const ORDER_WAIT: Duration = Duration::from_secs(10);
/// Accounts asked their size at once (an AssumeRole and a GetAccountSummary each).
const HINTS: usize = 16;
/// The longest one account's size hint may take.
const HINT_TIMEOUT: Duration = Duration::from_secs(5);

/// A new configuration, and who to tell once it is in force (with the accounts it removed).
type Reload = (Arc<Config>, oneshot::Sender<Vec<Arc<Account>>>);

impl Refresher {
    /// Starts discovery (if configured) and the accounts' tasks: without discovery at once
    /// (every account is in the inventory when this returns, so readiness never sees an
    /// empty one), with it after the first discovery (readiness waits for that anyway).
    pub async fn start(
        cfg: Arc<Config>,
        shard: Shard,
        inventory: Arc<Inventory>,
        health: Arc<Health>,
    ) -> Self {
        let (found_tx, found_rx) = mpsc::channel(1);
        inventory.set_standards(&cfg);
        let mut supervisor = Supervisor {
            base: aws::base(&cfg).await,
            permits: Gate::new(cfg.concurrency),
            hints: Arc::new(Semaphore::new(HINTS)),
            cfg,
            shard,
            inventory,
            health,
            tasks: HashMap::new(),
            discovered: None,
            held: None,
            discovery: None,
            generation: 0,
            found_tx,
        };
        supervisor.restart_discovery().await;
        // With discovery, accounts start once the first discovery has answered (or failed):
        // an account listed in the file and also discovered then starts once, under its
        // final name, not twice.
        if supervisor.cfg.discovery.is_none() {
            supervisor.apply().await;
        }
        let identity = tokio::spawn(ask_identity(
            supervisor.base.clone(),
            supervisor.cfg.clone(),
            supervisor.health.clone(),
        ));
        let (commands, rx) = mpsc::channel(1);
        Refresher {
            commands,
            supervisor: tokio::spawn(supervisor.run(rx, found_rx)),
            identity,
        }
    }

    /// Switches to a new configuration; returns once it is in force, with the accounts that
    /// were read before and are not any more.
    pub async fn reload(&self, cfg: Arc<Config>) -> Vec<Arc<Account>> {
        let (ack, done) = oneshot::channel();
        if self.commands.send((cfg, ack)).await.is_ok() {
            done.await.unwrap_or_default()
        } else {
            Vec::new()
        }
    }

    /// Stops every task and waits until none can touch the inventory any more.
    pub async fn stop(self) {
        self.identity.abort();
        drop(self.commands);
        let _ = self.supervisor.await;
    }
}

/// Logs (and records for `/` and the identity metric) who the exporter is to AWS: the
/// principal every member role's trust policy must name. Asked again, less and less often,
/// until AWS answers.
async fn ask_identity(base: aws::Base, cfg: Arc<Config>, health: Arc<Health>) {
    let mut retry = Duration::from_secs(60);
    loop {
        match aws::caller_identity(&base, &cfg).await {
            Ok(identity) => {
                tracing::info!(arn = %identity.arn, account_id = %identity.account_id, "running as this AWS identity; member roles must trust it");
                health.set_identity(IdentityStatus::Known(identity));
                return;
            }
            Err(e) => {
                tracing::warn!(code = %e.code, error = %e.message, "cannot tell which AWS identity the exporter runs as");
                health.set_identity(IdentityStatus::Failed(e));
            }
        }
        tokio::time::sleep(jittered(retry)).await;
        retry = (retry * 2).min(Duration::from_secs(3600));
    }
}

/// An AWS client's requests, sessions and pace, counted in the exporter's own metrics under
/// the labels of whom it works for: an account (id and name), or discovery (the account of
/// its role, no name).
struct Metered {
    health: Arc<Health>,
    owner: [String; 2],
}

impl Metered {
    fn account(health: &Arc<Health>, account: &Account) -> Arc<Self> {
        Arc::new(Metered {
            health: health.clone(),
            owner: [account.id.clone(), account.name.clone()],
        })
    }

    fn discovery(health: &Arc<Health>, discovery: &Discovery) -> Arc<Self> {
        Arc::new(Metered {
            health: health.clone(),
            owner: [OrgReader::owner_id(discovery), String::new()],
        })
    }

    fn owner(&self) -> [&str; 2] {
        [&self.owner[0], &self.owner[1]]
    }
}

impl aws::Meter for Metered {
    fn request(&self, operation: &str, outcome: aws::Outcome) {
        self.health
            .count_request(self.owner(), operation, outcome.as_str());
    }

    fn assume_role(&self, succeeded: bool) {
        let outcome = if succeeded { "ok" } else { "error" };
        self.health.count_assume_role(self.owner(), outcome);
    }

    fn rate(&self, per_second: f64) {
        self.health.set_request_rate(self.owner(), per_second);
    }
}

struct Supervisor {
    cfg: Arc<Config>,
    shard: Shard,
    base: aws::Base,
    permits: Arc<Gate>,
    /// Size hints asked at once (GetAccountSummary, before an account's first refresh).
    hints: Arc<Semaphore>,
    inventory: Arc<Inventory>,
    health: Arc<Health>,
    tasks: HashMap<String, (Arc<Account>, JoinHandle<()>)>,
    /// The last successful discovery under the current discovery settings' task, or an
    /// earlier one until that task succeeds.
    discovered: Option<Discovered>,
    /// Discovery results held back in a row by the shrink guard; None until a result under
    /// the current discovery settings has been applied, since until then there is no list of
    /// theirs to compare with (a changed scope is applied as the operator wrote it).
    held: Option<u32>,
    discovery: Option<JoinHandle<()>>,
    generation: u64,
    found_tx: mpsc::Sender<Found>,
}

impl Supervisor {
    async fn run(mut self, mut commands: mpsc::Receiver<Reload>, mut found: mpsc::Receiver<Found>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some((cfg, ack)) => {
                        let removed = self.reload(cfg).await;
                        let _ = ack.send(removed);
                    }
                    None => break,
                },
                Some((generation, discovered)) = found.recv() => {
                    if generation == self.generation {
                        if let Some(found) = discovered.filter(|f| self.admit(f)) {
                            self.discovered = Some(found);
                        }
                        self.apply().await;
                    }
                }
            }
        }
        self.stop_discovery().await;
        self.stop_where(|_| true).await;
    }

    async fn reload(&mut self, cfg: Arc<Config>) -> Vec<Arc<Account>> {
        let before: Vec<Arc<Account>> = self.tasks.values().map(|(a, _)| a.clone()).collect();
        let same_reading = self.cfg.same_reading(&cfg);
        // Policy rules by OU need a discovery that walks the tree; other policy changes
        // need no AWS call at all.
        let same_discovery = same_reading
            && self.cfg.discovery == cfg.discovery
            && self.cfg.policy.needs_ous() == cfg.policy.needs_ous();
        if !same_reading {
            // Timeouts, retries, STS settings or concurrency changed: every account restarts.
            self.stop_where(|_| true).await;
            self.base = aws::base(&cfg).await;
            self.permits = Gate::new(cfg.concurrency);
        }
        if self.cfg.discovery != cfg.discovery {
            self.held = None;
            self.health.record_shrink_guard(None);
        }
        // The policy and exemptions depend on the file alone: set here, not at every
        // discovery (the exemption index is rebuilt each time).
        self.inventory.set_standards(&cfg);
        self.cfg = cfg;
        if !same_discovery {
            if self.cfg.discovery.is_none() {
                self.discovered = None;
            }
            self.restart_discovery().await;
        }
        self.apply().await;
        before
            .into_iter()
            .filter(|a| !self.tasks.contains_key(&a.id))
            .collect()
    }

    /// Makes the running tasks and the inventory match the account list the configuration
    /// and the last discovery give.
    async fn apply(&mut self) {
        let accounts = accounts::plan(&self.cfg, self.discovered.as_ref(), self.shard);
        let wanted: HashMap<&str, &Account> =
            accounts.iter().map(|a| (a.id.as_str(), &**a)).collect();
        self.stop_where(|a| wanted.get(a.id.as_str()) != Some(&a))
            .await;
        self.inventory.retain_only(&accounts);
        if self.tasks.is_empty() {
            // Every account starts now: the first round goes largest first.
            self.permits.hold(accounts.len(), ORDER_WAIT);
        }
        let owner = self.cfg.discovery.as_ref().map(OrgReader::owner_id);
        self.health.track_accounts(&accounts, owner.as_deref());
        for account in &accounts {
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
            let handle = tokio::spawn(task.run(self.permits.clone(), self.hints.clone()));
            self.tasks
                .insert(account.id.clone(), (account.clone(), handle));
        }
    }

    /// Whether a discovery result may replace the list in force: not while it drops more
    /// of the ACTIVE accounts than `shrink_guard` allows, until enough results in a row say
    /// the same (each of them counts, whatever its own count; one that drops less starts
    /// the count over).
    fn admit(&mut self, found: &Discovered) -> bool {
        let Some(d) = &self.cfg.discovery else {
            return true;
        };
        let active = |x: &Discovered| {
            accounts::by_state(&self.cfg, &x.accounts)
                .get("ACTIVE")
                .copied()
                .unwrap_or(0)
        };
        let (Some(held), Some(applied)) = (self.held, &self.discovered) else {
            self.held = Some(0);
            self.health.record_shrink_guard(None);
            return true;
        };
        let (before, now) = (active(applied), active(found));
        let guard = d.shrink_guard;
        let consecutive = held + 1;
        let apply = if !guard.drops_too_many(before, now) {
            if held > 0 {
                tracing::info!(
                    active_before = before,
                    active_now = now,
                    "discovery no longer drops too many accounts; the held result is forgotten"
                );
            }
            true
        } else if consecutive >= guard.confirmations {
            if guard.confirmations > 1 {
                tracing::warn!(
                    active_before = before, active_now = now, discoveries = consecutive,
                    "applying a discovery that drops many accounts: {consecutive} in a row found too few"
                );
            }
            true
        } else {
            false
        };
        if apply {
            self.held = Some(0);
            self.health.record_shrink_guard(None);
            return true;
        }
        tracing::warn!(
            active_before = before, active_now = now, held = consecutive, confirmations = guard.confirmations,
            "discovery found far fewer ACTIVE accounts than the list in force; keeping that list until {} discoveries in a row say so",
            guard.confirmations
        );
        self.held = Some(consecutive);
        self.health.record_shrink_guard(Some(Held {
            applied: before,
            found: now,
            consecutive,
            confirmations: guard.confirmations,
        }));
        false
    }

    /// Starts a discovery task for the current settings, stopping the old one; its results
    /// are told apart from the old task's by a new generation.
    async fn restart_discovery(&mut self) {
        self.stop_discovery().await;
        self.generation += 1;
        self.health
            .discovery_configured(self.cfg.discovery.is_some());
        if let Some(d) = &self.cfg.discovery {
            let meter = Metered::discovery(&self.health, d);
            let reader = OrgReader::new(&self.base, &self.cfg, d, meter);
            self.discovery = Some(tokio::spawn(discovery::run(
                self.cfg.clone(),
                self.shard,
                reader,
                self.health.clone(),
                self.found_tx.clone(),
                self.generation,
            )));
        }
    }

    async fn stop_discovery(&mut self) {
        if let Some(task) = self.discovery.take() {
            task.abort();
            let _ = task.await;
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

/// Reads every account once, all in parallel up to `concurrency` (the one-shot mode), after
/// one discovery if it is configured. Returns false if that discovery failed (the static
/// accounts are read anyway).
pub async fn refresh_all_once(
    cfg: Arc<Config>,
    shard: Shard,
    inventory: Arc<Inventory>,
    health: Arc<Health>,
) -> bool {
    let base = aws::base(&cfg).await;
    health.discovery_configured(cfg.discovery.is_some());
    let mut discovered = None;
    if let Some(d) = &cfg.discovery {
        let reader = OrgReader::new(&base, &cfg, d, Metered::discovery(&health, d));
        discovered = discovery::once(&cfg, d, shard, &reader, &health).await;
    }
    let accounts = accounts::plan(&cfg, discovered.as_ref(), shard);
    inventory.retain_only(&accounts);
    inventory.set_standards(&cfg);
    health.track_accounts(&accounts, None);
    let permits = Gate::new(cfg.concurrency);
    permits.hold(accounts.len(), ORDER_WAIT);
    let hints = Arc::new(Semaphore::new(HINTS));
    let mut tasks = JoinSet::new();
    for account in &accounts {
        let task = AccountTask::new(account, &base, &cfg, &inventory, &health);
        let (permits, hints) = (permits.clone(), hints.clone());
        tasks.spawn(async move {
            let weight = task.expected_work(Some(&hints)).await;
            let _permit = permits.enter(weight).await;
            task.refresh().await;
        });
    }
    tasks.join_all().await;
    cfg.discovery.is_none() || discovered.is_some()
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
            reader: AccountReader::new(base, cfg, account, Metered::account(health, account)),
            cfg: cfg.clone(),
            inventory: inventory.clone(),
            health: health.clone(),
        }
    }

    async fn run(self, permits: Arc<Gate>, hints: Arc<Semaphore>) {
        // Spread the first refreshes over a second or two rather than all at once.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1500))).await;
        // Only the first round asks AWS for a size: an account that keeps failing would
        // otherwise assume its role twice at every refresh.
        let mut ask = Some(hints);
        loop {
            {
                let weight = self.expected_work(ask.take().as_deref()).await;
                let _permit = permits.enter(weight).await;
                self.refresh().await;
            }
            tokio::time::sleep(jittered(self.cfg.refresh_interval)).await;
        }
    }

    /// The account's size, to let the largest in first: its users at the last refresh or,
    /// without one, as GetAccountSummary counts them when `hints` allows asking (0 if
    /// unknown).
    async fn expected_work(&self, hints: Option<&Semaphore>) -> u64 {
        let last = self.inventory.get(&self.account.id);
        if let Some(snapshot) = last.as_ref().and_then(|s| s.snapshot.as_ref()) {
            return snapshot.users.len() as u64;
        }
        let Some(hints) = hints else {
            return 0;
        };
        let _asking = hints.acquire().await;
        // Only an order depends on it: an account slow to answer waits no longer than this.
        let hint = tokio::time::timeout(HINT_TIMEOUT, self.reader.size_hint()).await;
        hint.ok().flatten().unwrap_or(0)
    }

    async fn refresh(&self) {
        let started = Instant::now();
        // Per-call timeouts bound each request, not a whole scan: without this an endpoint
        // that stalls every call would hold a `concurrency` permit for users × timeout.
        let limit = self.cfg.refresh_timeout;
        let result = match tokio::time::timeout(limit, self.reader.read()).await {
            Ok(r) => r,
            Err(_) => Err(RefreshError::timed_out(
                Stage::Refresh,
                "the refresh",
                limit,
            )),
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
            Ok((snapshot, partial)) => {
                tracing::info!(
                    account_id = %id, account_name = %name, duration_seconds = duration,
                    users = snapshot.users.len(), keys = snapshot.keys.len(),
                    "refreshed account"
                );
                for e in partial {
                    self.health.count_refresh_error([id, name], &e);
                    tracing::warn!(
                        account_id = %id, account_name = %name, stage = e.stage.as_str(),
                        code = %e.code, error = %e.message,
                        "part of the account could not be read: {}", e.stage.left_out()
                    );
                    state.last_error = Some(e);
                }
                state.snapshot = Some(Arc::new(snapshot));
                state.up = true;
                state.last_success = Some(now);
            }
            Err(e) => {
                self.health.count_refresh_error([id, name], &e);
                // Last good data stays visible (with account_up 0) until `data_expires`; the
                // collector hides it from then on, and here it is freed.
                let stale = state.data_expires.is_none_or(|t| now > t);
                if stale {
                    state.snapshot = None;
                }
                tracing::warn!(
                    account_id = %id, account_name = %name, duration_seconds = duration,
                    stage = e.stage.as_str(), code = %e.code, error = %e.message, kept_stale_data = !stale && state.snapshot.is_some(),
                    "account refresh failed"
                );
                state.last_error = Some(e);
            }
        }
        state.data_expires = state
            .last_success
            .map(|t| t + self.cfg.max_staleness.as_secs_f64());
        self.inventory.put(state);
        crate::metrics::process::release_freed_memory();
    }
}
