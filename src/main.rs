//! iam-key-exporter: wires the configuration, refresher, inventory and HTTP server together.
//! See ARCHITECTURE.md for the code map.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use iam_key_exporter::cli::{Cli, Command};
use iam_key_exporter::collector::{self, BuildInfo, Scope};
use iam_key_exporter::config::{self, Config};
use iam_key_exporter::health::Health;
use iam_key_exporter::inventory::{unix_now, Inventory};
use iam_key_exporter::refresher::{self, Refresher};
use iam_key_exporter::web_config::{self, WebSecurity};
use iam_key_exporter::{http, logging};

const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    revision: env!("IKE_REVISION"),
    rustc_version: env!("IKE_RUSTC_VERSION"),
};

/// Exit code for configuration errors, as Prometheus tools use it.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level, cli.log_format);

    let (cfg, security) = match load_all(&cli) {
        Ok((c, s)) => (Arc::new(c), s),
        Err(e) if matches!(cli.command, Some(Command::CheckConfig)) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration; fix the file and start again");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    let code = match cli.command {
        Some(Command::CheckConfig) => {
            println!(
                "{}: valid, {} account(s)",
                cli.config_file.display(),
                cfg.accounts.len()
            );
            if let Some(web) = &cli.web_config_file {
                println!("{}: valid", web.display());
            }
            ExitCode::SUCCESS
        }
        Some(Command::Once { ref output }) => runtime.block_on(once(cfg, output)),
        None => runtime.block_on(serve(cli, cfg, security)),
    };
    // Blocking work still running (a DNS lookup, a bcrypt check) must not delay the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Reads the configuration and, if given, the web configuration: both valid, or an error.
fn load_all(cli: &Cli) -> Result<(Config, WebSecurity), config::ConfigError> {
    let cfg = config::load(&cli.config_file)?;
    let security = match &cli.web_config_file {
        Some(path) => web_config::load(path)?,
        None => WebSecurity::default(),
    };
    Ok((cfg, security))
}

/// Reads every account once and writes the exposition to `output` atomically.
async fn once(cfg: Arc<Config>, output: &Path) -> ExitCode {
    let inventory = Arc::new(Inventory::default());
    let health = Arc::new(Health::new(unix_now()));
    refresher::refresh_all_once(cfg, inventory.clone(), health.clone()).await;
    let accounts = inventory.accounts();
    let failed = accounts.iter().filter(|s| !s.up).count();

    let tmp = output.with_extension("prom.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let now = unix_now().floor();
        for chunk in collector::render(&accounts, &health, &BUILD, Scope::File, now) {
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
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn serve(cli: Cli, cfg: Arc<Config>, security: WebSecurity) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(cli.listen_address).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(address = %cli.listen_address, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = BUILD.version,
        address = %cli.listen_address,
        tls = security.tls.is_some(),
        basic_auth = security.requires_auth(),
        config = %cli.config_file.display(),
        accounts = cfg.accounts.len(),
        "starting iam-key-exporter"
    );

    // Signal handlers first: a SIGHUP during start-up must not kill the process.
    let mut sigterm = signal(SignalKind::terminate()).expect("cannot watch SIGTERM");
    let mut sighup = signal(SignalKind::hangup()).expect("cannot watch SIGHUP");
    let inventory = Arc::new(Inventory::default());
    let health = Arc::new(Health::new(unix_now()));
    // The refresher fills the inventory with every account before the server can answer
    // /-/ready, so an empty inventory is never reported ready.
    let mut refresher = Refresher::start(cfg, inventory.clone(), health.clone()).await;
    let (reload_tx, mut reload_rx) = mpsc::channel::<http::ReloadRequest>(4);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let web = Arc::new(http::Web {
        inventory: inventory.clone(),
        health: health.clone(),
        build: BUILD,
        telemetry_path: cli.telemetry_path.clone(),
        reload: reload_tx,
        lifecycle: cli.enable_lifecycle,
        security: std::sync::RwLock::new(Arc::new(security)),
    });
    let server = tokio::spawn(http::serve(listener, web.clone(), shutdown_rx));

    loop {
        let reply = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => None,
            Some(reply) = reload_rx.recv() => Some(reply),
        };
        let result = match load_all(&cli) {
            Ok((next, security)) => {
                *web.security.write().unwrap() = Arc::new(security);
                refresher.reload(Arc::new(next)).await;
                tracing::info!(config = %cli.config_file.display(), "configuration reloaded");
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
