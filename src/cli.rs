//! Command-line flags, named as Prometheus exporters name them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "iam-key-exporter",
    version,
    about = "Prometheus exporter for the age and use of AWS IAM access keys across many accounts"
)]
pub struct Cli {
    /// Path to the YAML configuration file.
    #[arg(
        long = "config.file",
        global = true,
        default_value = "iam-key-exporter.yaml",
        value_name = "PATH"
    )]
    pub config_file: PathBuf,

    /// Re-read the configuration file (and the web configuration file) this often and
    /// reload when their content changed, as after a Kubernetes ConfigMap update. 0 = never
    /// (SIGHUP and /-/reload still work).
    #[arg(
        long = "config.auto-reload-interval",
        default_value = "0s",
        value_parser = parse_interval,
        value_name = "DURATION"
    )]
    pub auto_reload_interval: std::time::Duration,

    /// Address to listen on for the web interface and telemetry. `:9871` means every
    /// interface, IPv6 and IPv4 (IPv4 only on a host without IPv6); `0.0.0.0:9871` only IPv4,
    /// `[::1]:9871` only that address.
    #[arg(long = "web.listen-address", default_value = ":9871", value_parser = parse_listen_address, value_name = "ADDR")]
    pub listen_address: ListenAddress,

    /// Path to a web configuration file (exporter-toolkit format) enabling TLS and/or basic
    /// authentication. Reloaded with the configuration (SIGHUP or /-/reload).
    #[arg(long = "web.config.file", global = true, value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,

    /// Maximum number of simultaneous connections; at the limit, the one that has waited
    /// longest without sending a request is closed to make room.
    #[arg(long = "web.max-connections", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_connections: u32,

    /// Longest a client may take to read one response (e.g. 60s); a client that reads slower
    /// is disconnected and its response freed.
    #[arg(
        long = "web.write-timeout",
        default_value = "60s",
        value_parser = parse_write_timeout,
        value_name = "DURATION"
    )]
    pub write_timeout: std::time::Duration,

    /// Maximum number of /metrics, /keys and /keys.json responses being sent at once; beyond
    /// it a request takes the place of one whose client has taken nothing for 250 ms, or is
    /// answered 503 with Retry-After if all are being read.
    #[arg(long = "web.max-inflight-responses", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_inflight_responses: u32,

    /// Allow reloading the configuration with a POST or PUT to /-/reload (SIGHUP always works).
    #[arg(long = "web.enable-lifecycle")]
    pub enable_lifecycle: bool,

    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        default_value = "/metrics",
        value_parser = parse_telemetry_path,
        value_name = "PATH"
    )]
    pub telemetry_path: String,

    /// How many replicas share the accounts; each reads only its shard of them.
    #[arg(
        long = "shard.total",
        global = true,
        default_value_t = 1,
        value_name = "M"
    )]
    pub shard_total: u32,

    /// This replica's shard, 0 to M-1, or `auto`: the number at the end of the hostname, as
    /// a StatefulSet names its pods (`iam-key-exporter-2` → 2).
    #[arg(
        long = "shard.index",
        global = true,
        default_value = "0",
        value_name = "N|auto"
    )]
    pub shard_index: String,

    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", global = true, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Output format of log messages.
    #[arg(long = "log.format", global = true, value_enum, default_value_t = LogFormat::Logfmt)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate the configuration file and exit: 0 if it is valid, 2 if not.
    CheckConfig,
    /// Read every account once, write the metrics to a file atomically and exit
    /// (for node_exporter's textfile collector or cron). Exits 1 if any account failed.
    Once {
        /// Where to write the exposition; it is written to a temporary file and renamed.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Read every account once and print what is wrong by the configured policy: keys too
    /// old or unused, users with two active keys, root keys, unused passwords, missing MFA;
    /// keys due soon and exempt ones apart. Exits 0 when clean, 3 with findings, 1 if an
    /// account could not be read. To audit by another policy, give another configuration file.
    Audit {
        /// `table` for a person, `json` or `csv` for tooling.
        #[arg(long, value_enum, default_value_t = crate::report::audit::Format::Table)]
        format: crate::report::audit::Format,
    },
    /// Say which rule of the configured policy applies to a user, and why: every rule in
    /// order with the first matcher that fails it. Reads nothing from AWS: give the user's
    /// path and tags, and the account's labels and OUs that discovery would find (an
    /// account listed in the file brings its own labels).
    Policy {
        /// The account id.
        #[arg(long, value_name = "ID")]
        account: String,
        /// The IAM user name.
        #[arg(long, value_name = "NAME")]
        user: String,
        /// The user's IAM path.
        #[arg(long, default_value = "/")]
        path: String,
        /// A tag of the user; repeat for more.
        #[arg(long = "user-tag", value_name = "KEY=VALUE", value_parser = pair)]
        user_tags: Vec<(String, String)>,
        /// A label of the account, as on aws_iam_account_info (`tag_environment=sandbox`).
        #[arg(long = "account-label", value_name = "NAME=VALUE", value_parser = pair)]
        account_labels: Vec<(String, String)>,
        /// An OU (or root) the account sits in, directly or below; repeat for more.
        #[arg(long = "ou", value_name = "OU_ID")]
        ous: Vec<String>,
    },
}

/// `KEY=VALUE`.
fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Logfmt,
    Json,
}

/// Where the web interface listens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ListenAddress {
    /// Go-style `:PORT`: every interface. Prometheus exporters mean both IP versions by it,
    /// and an IPv6-only pod network can scrape only what listens on IPv6.
    AnyInterface(u16),
    /// `HOST:PORT`: exactly that address (`0.0.0.0:PORT` is IPv4 only).
    Exact(SocketAddr),
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::AnyInterface(port) => write!(f, ":{port}"),
            ListenAddress::Exact(a) => write!(f, "{a}"),
        }
    }
}

/// Accepts Go-style `:PORT` as well as `HOST:PORT`.
fn parse_listen_address(s: &str) -> Result<ListenAddress, String> {
    let bad = || format!("{s:?} is not a listen address like :9871, 127.0.0.1:9871 or [::]:9871");
    match s.strip_prefix(':') {
        Some(port) => port
            .parse()
            .map(ListenAddress::AnyInterface)
            .map_err(|_| bad()),
        None => s.parse().map(ListenAddress::Exact).map_err(|_| bad()),
    }
}

/// A duration flag of at least a second; `why` says what a shorter one would do.
fn at_least_a_second(s: &str, why: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|_| format!("{s:?} is not a duration like 30s or 1m"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{s:?} is shorter than 1s; {why}"));
    }
    Ok(d)
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Ok(d),
        _ => at_least_a_second(s, "use 1s or more, or 0s for never"),
    }
}

fn parse_write_timeout(s: &str) -> Result<std::time::Duration, String> {
    at_least_a_second(s, "a large scrape could not be read in time")
}

fn parse_telemetry_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with / (like /metrics)"));
    }
    let own: Vec<&str> = crate::web::server::own_paths().collect();
    if s.starts_with("/-/") || own.contains(&s) {
        return Err(format!(
            "{s:?} is one of the exporter's own paths ({}, everything under /-/); pick another, like /metrics",
            own.join(", ")
        ));
    }
    if s.contains(['?', '#', ' ']) {
        return Err(format!(
            "{s:?} must be a plain path, without ?, # or spaces"
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_listen_address_is_every_interface_on_9871() {
        let cli = Cli::try_parse_from(["iam-key-exporter"]).unwrap();
        assert_eq!(cli.listen_address, ListenAddress::AnyInterface(9871));
        assert_eq!(
            parse_listen_address("0.0.0.0:9871"),
            Ok(ListenAddress::Exact("0.0.0.0:9871".parse().unwrap()))
        );
        assert!(parse_listen_address(":http").is_err());
    }

    #[test]
    fn a_write_timeout_under_a_second_is_refused_with_the_flag_named() {
        let cli = Cli::try_parse_from(["iam-key-exporter"]).unwrap();
        assert_eq!(cli.write_timeout, std::time::Duration::from_secs(60));
        let e = Cli::try_parse_from(["iam-key-exporter", "--web.write-timeout", "500ms"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--web.write-timeout") && e.contains("shorter than 1s"),
            "{e}"
        );
        let e = Cli::try_parse_from(["iam-key-exporter", "--web.max-inflight-responses", "0"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--web.max-inflight-responses"), "{e}");
    }
}
