//! Test harness: the moto launcher, the real exporter binary, and a Prometheus text parser.
//! Everything talks over HTTP on 127.0.0.1.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod stack;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub const DAY: f64 = 86400.0;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An HTTP client that returns 4xx/5xx answers instead of failing on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A Unix time `days` ago, whole seconds, and the same as ISO-8601 for the launcher.
pub fn days_ago(days: f64) -> (f64, String) {
    let t = (now() - days * DAY).floor();
    let iso = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t as u64));
    (t, iso.to_string())
}

/// `n` users named `{prefix}{i:05}` for the launcher's seed, each with `keys` default keys.
pub fn users(prefix: &str, n: usize, keys: usize) -> Value {
    let keys: Vec<Value> = (0..keys).map(|_| json!({})).collect();
    Value::Array(
        (0..n)
            .map(|i| json!({"name": format!("{prefix}{i:05}"), "keys": keys}))
            .collect(),
    )
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes `content` to `path` whole: written beside it, then renamed over it, as an editor, a
/// ConfigMap or a Secret volume update does (a file written in place can be read empty
/// between its truncation and its write).
pub fn replace(path: &Path, content: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto server behind tests/moto/launcher.py (pagination, faults, seeding, counts).
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    pub fn start() -> Moto {
        let python = repo().join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/setup-test-env.sh (or `make test`) first",
            python.display()
        );
        let mut child = Command::new(python)
            .arg(repo().join("tests/moto/launcher.py"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the moto launcher");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("unexpected launcher output {line:?}"))
            .to_string();
        Moto { child, url }
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        let mut resp = agent()
            .post(&format!("{}{path}", self.url))
            .send_json(&body)
            .unwrap();
        let status = resp.status();
        let v: Value = resp.body_mut().read_json().unwrap();
        assert!(
            status.is_success(),
            "launcher {path} answered {status}: {v}"
        );
        v
    }

    pub fn get(&self, path: &str) -> Value {
        agent()
            .get(&format!("{}{path}", self.url))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    }

    /// Seeds users (launcher JSON format); returns each user's key ids in order.
    pub fn seed(&self, account: &str, users: Value) -> Vec<Vec<String>> {
        let v = self.post(
            "/_launcher/seed",
            json!({"account": account, "users": users}),
        );
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                u["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    }

    pub fn faults(&self, faults: Value) {
        self.post("/_launcher/faults", json!({ "faults": faults }));
    }

    /// Requests received for `account`, by operation.
    pub fn count(&self, account: &str, operation: &str) -> u64 {
        self.get("/_launcher/counts")[account][operation]
            .as_u64()
            .unwrap_or(0)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real exporter binary, pointed at moto through the standard AWS SDK environment.
pub struct Exporter {
    child: ChildGuard,
    pub url: String,
    _dir: tempfile::TempDir,
    pub config: PathBuf,
}

pub fn exporter_command(moto: &Moto) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iam-key-exporter"));
    // Only what a user would set to point any AWS SDK at another endpoint.
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_ENDPOINT_URL", &moto.url)
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    cmd
}

impl Exporter {
    /// Starts the exporter with `config_yaml` and `extra_args`, its log in a file (printed if
    /// the test fails), and does not wait: for tests that need TLS or their own flags.
    pub fn spawn(moto: &Moto, config_yaml: &str, extra_args: &[&str]) -> Exporter {
        Exporter::spawn_env(moto, config_yaml, extra_args, &[])
    }

    /// `spawn` with extra environment variables (such as `HOSTNAME`).
    pub fn spawn_env(
        moto: &Moto,
        config_yaml: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Exporter {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml).unwrap();
        // Port 0, then the port it bound from its start line: a port picked here and bound
        // there could be taken in between by another test running at the same time.
        let mut cmd = exporter_command(moto);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .args(extra_args)
            .envs(env.iter().copied());
        let mut child = ChildGuard::spawn("exporter", cmd, &dir.path().join("exporter.log"));
        let address = child.bound_address();
        Exporter {
            child,
            url: format!("http://{address}"),
            _dir: dir,
            config,
        }
    }

    /// Starts the exporter (reloadable over HTTP) and waits until it answers.
    pub fn start(moto: &Moto, config_yaml: &str) -> Exporter {
        Exporter::start_with(moto, config_yaml, &[])
    }

    /// `start` with more flags.
    pub fn start_with(moto: &Moto, config_yaml: &str, extra_args: &[&str]) -> Exporter {
        let mut args = vec!["--log.level=info", "--web.enable-lifecycle"];
        args.extend(extra_args);
        let mut e = Exporter::spawn(moto, config_yaml, &args);
        e.wait_listening();
        e
    }

    /// Waits until the exporter answers /-/healthy; panics with its log if it exits.
    pub fn wait_listening(&mut self) {
        wait_for("the exporter to listen", Duration::from_secs(20), || {
            self.child.assert_running();
            self.try_get("/-/healthy").filter(|(s, _)| *s == 200)
        });
    }

    /// The exporter's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` the exporter listens on.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Everything the exporter has logged so far.
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// GET a path: (status, body), or None if the server does not answer.
    pub fn try_get(&self, path: &str) -> Option<(u16, String)> {
        let mut resp = agent().get(&format!("{}{path}", self.url)).call().ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.body_mut().read_to_string().ok()?))
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .unwrap_or_else(|| panic!("exporter did not answer {path}"))
    }

    pub fn wait_ready(&self, timeout: Duration) {
        wait_for("/-/ready to answer 200", timeout, || {
            self.try_get("/-/ready").filter(|(s, _)| *s == 200)
        });
    }

    pub fn scrape(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        Metrics::parse(&body)
    }

    /// Scrapes until `f` holds, returning that scrape.
    pub fn scrape_until(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        wait_for(what, timeout, || Some(self.scrape()).filter(|m| f(m)))
    }

    /// Waits for a refresh of `account` that finished after this call: its last-success
    /// time (on success) or its duration line (on failure) changes.
    pub fn next_refresh(&self, account: &str, timeout: Duration) -> Metrics {
        let success = "iam_key_exporter_account_last_success_timestamp_seconds";
        let duration = "iam_key_exporter_account_refresh_duration_seconds";
        let before = self.scrape();
        let last = |m: &Metrics| {
            (
                m.raw_line_for(success, account),
                m.raw_line_for(duration, account),
            )
        };
        self.scrape_until(&format!("a new refresh of {account}"), timeout, |m| {
            let (s, d) = last(m);
            let (s0, d0) = last(&before);
            s != s0 || d != d0
        })
    }

    /// Sends SIGTERM and returns how long the exporter took to exit, with its status.
    pub fn terminate(mut self) -> (Duration, std::process::ExitStatus) {
        let start = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = wait_for("the exporter to exit", Duration::from_secs(30), || {
            self.child.try_wait()
        });
        (start.elapsed(), status)
    }
}

/// One sample of the text exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
pub struct Metrics {
    pub raw: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| parse_line(l).unwrap_or_else(|| panic!("unparsable line {l:?}")))
            .collect();
        Metrics {
            raw: text.to_string(),
            samples,
        }
    }

    /// Samples of `name` whose labels include every pair in `matchers`.
    pub fn find(&self, name: &str, matchers: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                matchers
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the single sample matching, or None; panics if several match.
    pub fn get(&self, name: &str, matchers: &[(&str, &str)]) -> Option<f64> {
        let found = self.find(name, matchers);
        assert!(
            found.len() <= 1,
            "{name} {matchers:?} matches {} samples",
            found.len()
        );
        found.first().map(|s| s.value)
    }

    fn raw_line_for(&self, name: &str, account: &str) -> Option<String> {
        let needle = format!("account_id=\"{account}\"");
        self.raw
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&needle))
            .map(String::from)
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (n, v) = line.split_once(' ')?;
            return Some(Sample {
                name: n.into(),
                labels: BTreeMap::new(),
                value: v.trim().parse().ok()?,
            });
        }
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        match chars.next()? {
            ',' => continue,
            '}' => break,
            _ => return None,
        }
    }
    let value: String = chars.collect();
    Some(Sample {
        name: name.into(),
        labels,
        value: value.trim().parse().ok()?,
    })
}

/// Runs `promtool check metrics` on an exposition; returns its combined output on failure.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: run scripts/setup-test-env.sh (or `make test`) first");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        let mut msg = String::from_utf8_lossy(&out.stdout).to_string();
        msg.push_str(&String::from_utf8_lossy(&out.stderr));
        Err(msg)
    }
}

/// Reads a whole file as a string, for assertions on written outputs.
pub fn read(path: &Path) -> String {
    let mut s = String::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// A child process (Prometheus, Alertmanager, ...) killed and reaped on drop, with its
/// stdout and stderr in a log file whose tail is printed when the test fails.
pub struct ChildGuard {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> ChildGuard {
        let file = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        ChildGuard {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    /// The address the exporter bound, from its start line (`address=127.0.0.1:41234`, or
    /// `"address":"..."` in JSON logs); panics with the log if it exits first.
    pub fn bound_address(&mut self) -> String {
        self.logged_address("starting iam-key-exporter")
    }

    /// The `address=` of the first log line containing `line_with`: the port a child told
    /// to listen on port 0 bound (Prometheus and Alertmanager log `msg="Listening on"`).
    pub fn logged_address(&mut self, line_with: &str) -> String {
        wait_for(
            "the log line with the bound address",
            Duration::from_secs(20),
            || {
                self.assert_running();
                let log = self.log();
                let line = log.lines().find(|l| l.contains(line_with))?;
                let (_, rest) = line
                    .split_once("address=")
                    .or_else(|| line.split_once("\"address\":"))?;
                let value = rest.split([' ', ',', '}']).next()?;
                Some(value.trim_matches('"').to_string())
            },
        )
    }

    /// Panics with the log if the process has exited: call it inside `wait_for` loops so a
    /// child that died (bad flag, bad config) fails the test at once, with the reason.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}); its log:\n{}",
                self.name,
                self.log_tail(200)
            );
        }
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the {} log ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}
