//! iam-key-exporter: wires the configuration, refresher, inventory and HTTP server together.
//! See ARCHITECTURE.md for the code map.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use iam_key_exporter::accounts::{self, Shard};
use iam_key_exporter::cli::{Cli, Command, LogLevel};
use iam_key_exporter::config::{self, Config};
use iam_key_exporter::inventory::{self, unix_now, Inventory};
use iam_key_exporter::metrics::collector::{self, Scope};
use iam_key_exporter::metrics::health::{BuildInfo, Health};
use iam_key_exporter::refresh::{self, Refresher};
use iam_key_exporter::report::audit;
use iam_key_exporter::web::security::{self, WebConfig, WebSecurity};
use iam_key_exporter::web::server as web_server;
use iam_key_exporter::{logging, policy};

const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    revision: env!("IKE_REVISION"),
    rustc_version: env!("IKE_RUSTC_VERSION"),
};

/// Exit code for configuration errors, as Prometheus tools use it.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The audit's output is its report: it logs only warnings unless asked for more.
    let quiet = matches!(
        cli.command,
        Some(Command::Audit { .. } | Command::Policy { .. })
    ) && matches.value_source("log_level") != Some(ValueSource::CommandLine);
    logging::init(
        if quiet { LogLevel::Warn } else { cli.log_level },
        cli.log_format,
    );
    let checking = matches!(cli.command, Some(Command::CheckConfig));
    let fail = |e: &dyn std::fmt::Display| {
        if checking {
            eprintln!("error: {e}");
        } else {
            tracing::error!(error = %e, "cannot start; fix this and start again");
        }
        ExitCode::from(EXIT_CONFIG)
    };

    let shard = match Shard::from_flags(cli.shard_total, &cli.shard_index, &hostname()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let (cfg, security) = match load_all(&cli.config_file, cli.web_config_file.as_deref()) {
        Ok((c, s)) => (Arc::new(c), s),
        Err(e) => return fail(&e),
    };
    for w in &cfg.warnings {
        let text = w.located(&cli.config_file);
        if checking {
            eprintln!("warning: {text}");
        } else {
            tracing::warn!(warning = %text, "configuration works, but probably not as meant");
        }
    }
    match cli.command {
        Some(Command::CheckConfig) => {
            check_config(&cli, &cfg, shard);
            ExitCode::SUCCESS
        }
        Some(Command::Once { ref output }) => run(once(cfg, shard, output)),
        Some(Command::Audit { format }) => run(audit(cfg, shard, format)),
        Some(Command::Policy {
            ref account,
            ref user,
            ref path,
            ref user_tags,
            ref account_labels,
            ref ous,
        }) => {
            let mut a = accounts::plan(&cfg, None, Shard::default())
                .into_iter()
                .find(|a| a.id == *account)
                .map_or_else(|| accounts::bare(&cfg, account), |a| (*a).clone());
            a.labels.extend(account_labels.iter().cloned());
            a.ous.extend(ous.iter().cloned());
            let u = inventory::User {
                name: user.clone(),
                created: 0.0,
                password_last_used: None,
                path: Some(path.clone()),
                tags: user_tags.iter().cloned().collect(),
                console: None,
            };
            print!("{}", policy::explain(&cfg.policy, &a, &u));
            ExitCode::SUCCESS
        }
        None => run(serve(cli, cfg, shard, security)),
    }
}

/// Runs a command's work on a new runtime. check-config and policy need none: at 100,000
/// accounts, building one after the configuration took a tenth of check-config's time.
fn run(work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    let code = runtime.block_on(work);
    // Blocking work still running (a DNS lookup, a bcrypt check) must not delay the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// The machine's hostname, for `--shard.index=auto`.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn check_config(cli: &Cli, cfg: &Config, shard: Shard) {
    let listed = cfg.accounts.len();
    let mine = accounts::listed_in_shard(cfg, shard).count();
    let mut summary = format!(
        "{}: valid, {listed} account(s) listed",
        cli.config_file.display()
    );
    if shard.total > 1 {
        summary.push_str(&format!(
            ", {mine} of them in shard {} of {}",
            shard.index, shard.total
        ));
    }
    if cfg.discovery.is_some() {
        summary.push_str(", more from AWS Organizations when running");
    }
    println!("{summary}");
    println!("{}", cfg.read.describe());
    let own = cfg.accounts.iter().filter(|a| a.read != Default::default());
    match own.count() {
        0 => {}
        n => println!("  ({n} account entries set read: of their own)"),
    }
    print!("{}", policy::summary(&cfg.policy));
    if let Some(web) = &cli.web_config_file {
        println!("{}: valid", web.display());
    }
}

/// Reads the configuration and, if given, the web configuration: both valid, or an error.
fn load_all(
    config_file: &Path,
    web_config_file: Option<&Path>,
) -> Result<(Config, WebSecurity), config::ConfigError> {
    let cfg = config::load(config_file)?;
    let security = match web_config_file {
        Some(path) => security::load(path)?,
        None => WebSecurity::default(),
    };
    Ok((cfg, security))
}

/// [`load_all`] on a blocking thread: a web configuration with a costly bcrypt hash takes
/// seconds to load, and the runtime's threads serve requests meanwhile.
async fn reload_all(cli: &Cli) -> Result<(Config, WebSecurity), config::ConfigError> {
    let (config_file, web_config_file) = (cli.config_file.clone(), cli.web_config_file.clone());
    tokio::task::spawn_blocking(move || load_all(&config_file, web_config_file.as_deref()))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Reads every account once and writes the exposition to `output` atomically.
async fn once(cfg: Arc<Config>, shard: Shard, output: &Path) -> ExitCode {
    let inventory = Arc::new(Inventory::default());
    let health = Arc::new(Health::new(unix_now(), shard, BUILD));
    let discovered = refresh::refresh_all_once(cfg, shard, inventory.clone(), health.clone()).await;
    let accounts = inventory.accounts();
    let failed = accounts.iter().filter(|s| !s.up).count();

    let tmp = output.with_extension("prom.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let now = unix_now().floor();
        for chunk in collector::render(&accounts, inventory.standards(), &health, Scope::File, now)
        {
            f.write_all(&chunk)?;
        }
        f.into_inner()?.sync_all()?;
        std::fs::rename(&tmp, output)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        tracing::error!(path = %output.display(), error = %e, "cannot write the metrics file");
        return ExitCode::FAILURE;
    }
    tracing::info!(path = %output.display(), accounts = accounts.len(), failed, "wrote metrics");
    if failed > 0 || !discovered {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads every account once and prints the findings (`audit`), with a progress line on a
/// terminal.
async fn audit(cfg: Arc<Config>, shard: Shard, format: audit::Format) -> ExitCode {
    let inventory = Arc::new(Inventory::default());
    let health = Arc::new(Health::new(unix_now(), shard, BUILD));
    let progress = std::io::stderr().is_terminal().then(|| {
        let inventory = inventory.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let accounts = inventory.accounts();
                let done = accounts.iter().filter(|s| s.attempted).count();
                eprint!("\rreading accounts: {done} of {} ", accounts.len());
            }
        })
    });
    refresh::refresh_all_once(cfg, shard, inventory.clone(), health.clone()).await;
    if let Some(p) = progress {
        p.abort();
        eprint!("\r\x1b[K");
    }
    let discovery_error = health
        .discovery()
        .and_then(|d| d.last_error)
        .map(|e| e.to_string());
    let mut out = std::io::stdout().lock();
    let written = audit::write(
        &mut out,
        format,
        &inventory.accounts(),
        &inventory.standards(),
        discovery_error.as_deref(),
        unix_now(),
    );
    match written.and_then(|code| out.flush().map(|_| code)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!(error = %e, "cannot write the audit");
            ExitCode::from(audit::INCOMPLETE)
        }
    }
}

async fn serve(cli: Cli, cfg: Arc<Config>, shard: Shard, security: WebSecurity) -> ExitCode {
    let listener = match web_server::listen(cli.listen_address) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(address = %cli.listen_address, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    // The bound address, not the flag: `:0` gets its port here, and the log says whether
    // `:PORT` became `[::]` or `0.0.0.0`.
    let bound = listener
        .local_addr()
        .map_or_else(|_| cli.listen_address.to_string(), |a| a.to_string());
    tracing::info!(
        version = BUILD.version,
        address = %bound,
        tls = security.tls.is_some(),
        basic_auth = security.requires_auth(),
        config = %cli.config_file.display(),
        accounts = cfg.accounts.len(),
        discovery = cfg.discovery.is_some(),
        shard = shard.index,
        shards = shard.total,
        "starting iam-key-exporter"
    );

    // Signal handlers first: a SIGHUP during start-up must not kill the process.
    let mut sigterm = signal(SignalKind::terminate()).expect("cannot watch SIGTERM");
    let mut sighup = signal(SignalKind::hangup()).expect("cannot watch SIGHUP");
    let inventory = Arc::new(Inventory::default());
    let health = Arc::new(Health::new(unix_now(), shard, BUILD));
    let refresher = Refresher::start(cfg, shard, inventory.clone(), health.clone()).await;
    let (reload_tx, mut reload_rx) = mpsc::channel::<web_server::ReloadRequest>(4);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let web = Arc::new(web_server::Web {
        inventory: inventory.clone(),
        health: health.clone(),
        build: BUILD,
        telemetry_path: cli.telemetry_path.clone(),
        reload: reload_tx,
        lifecycle: cli.enable_lifecycle,
        security: WebConfig::new(cli.web_config_file.clone(), security),
        max_connections: cli.max_connections as usize,
        write_timeout: cli.write_timeout,
        inflight: web_server::InFlight::new(cli.max_inflight_responses as usize),
        ready: Default::default(),
        removed_by_reload: Default::default(),
    });
    let server = tokio::spawn(web_server::serve(listener, web.clone(), shutdown_rx));

    // Files are compared by content: a ConfigMap update swaps symlinks, so times lie.
    let mut loaded = files_digest(&cli);
    let mut auto_reload = (!cli.auto_reload_interval.is_zero())
        .then(|| tokio::time::interval(cli.auto_reload_interval));
    loop {
        let reply = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => None,
            Some(reply) = reload_rx.recv() => Some(reply),
            _ = tick(&mut auto_reload) => {
                let now = files_digest(&cli);
                if now == loaded {
                    continue;
                }
                tracing::info!("configuration files changed; reloading");
                None
            }
        };
        // Remembered before loading, so a bad file is reported once, not at every tick.
        loaded = files_digest(&cli);
        let result = match reload_all(&cli).await {
            Ok((next, security)) => {
                for w in &next.warnings {
                    tracing::warn!(warning = %w.located(&cli.config_file), "configuration works, but probably not as meant");
                }
                web.security.replace(security);
                let removed: Vec<String> = refresher
                    .reload(Arc::new(next))
                    .await
                    .iter()
                    .map(|a| {
                        if a.name == a.id {
                            a.id.clone()
                        } else {
                            format!("{} ({})", a.id, a.name)
                        }
                    })
                    .collect();
                let config = cli.config_file.display();
                if removed.is_empty() {
                    tracing::info!(%config, "configuration reloaded");
                } else {
                    tracing::warn!(%config, removed = %removed.join(", "), "configuration reloaded; it no longer lists these accounts, which are not read any more");
                }
                *web.removed_by_reload.lock().unwrap() = Some((unix_now(), removed));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed; keeping the running configuration");
                Err(e.to_string())
            }
        };
        health.record_reload(result.is_ok(), unix_now());
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }

    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let stop = async {
        refresher.stop().await;
        let _ = server.await;
    };
    if tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .is_err()
    {
        tracing::warn!("shutdown took longer than 5s; exiting anyway");
    }
    ExitCode::SUCCESS
}

/// The next tick of the auto-reload timer, or never when auto-reload is off.
async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A digest of the configuration files' content.
fn files_digest(cli: &Cli) -> u64 {
    let paths: Vec<_> = std::iter::once(&cli.config_file)
        .chain(&cli.web_config_file)
        .cloned()
        .collect();
    security::files_digest(&paths)
}
