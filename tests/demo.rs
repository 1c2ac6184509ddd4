//! `make demo` end to end: scripts/demo.sh brings up moto (seeded with the demo accounts),
//! this build's exporter, Debian's Prometheus with the shipped rules (every `for:`
//! shortened) and Alertmanager; the seeded old keys and the root key of the credential-report
//! account fire in Prometheus' alerts page and in Alertmanager; every URL the script prints
//! answers 200 with what it says is there, and its amtool command lists the alerts (Debian's
//! Alertmanager has no web UI, so the script must not send anyone to one); Ctrl-C (SIGINT to the
//! script's process group, as a terminal sends it) stops every process and exits 0. And a
//! busy port stops the demo before anything is started.
//!
//! Needs what the demo needs: the moto virtualenv, `prometheus` and `prometheus-alertmanager`
//! (scripts/setup-test-env.sh, or `make test`).

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::stack::wait_for_or;
use common::*;
use serde_json::Value;

const TOO_OLD: &str = "IAMAccessKeyTooOld";
const UNUSED: &str = "IAMAccessKeyUnused";
const ROOT_KEY: &str = "IAMRootAccessKeyPresent";
/// The account of config/demo.yaml read through the credential report.
const SECURITY_TOOLING: &str = "333333333333";

/// scripts/demo.sh in its own process group, on free ports, with its state in a temporary
/// directory. Dropped while running (a failed test), it is stopped and its output printed.
struct Demo {
    child: Child,
    dir: tempfile::TempDir,
    output: PathBuf,
    moto: u16,
    exporter: u16,
    prometheus: u16,
    alertmanager: u16,
}

fn distinct_free_ports(n: usize) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    while ports.len() < n {
        ports.insert(free_port());
    }
    ports.into_iter().collect()
}

impl Demo {
    fn start(prometheus_port: Option<u16>) -> Demo {
        let ports = distinct_free_ports(4);
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("script-output.txt");
        let file = std::fs::File::create(&output).unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("scripts/demo.sh"))
            .current_dir(repo())
            .env("IKE_BIN", env!("CARGO_BIN_EXE_iam-key-exporter"))
            .env("MOTO_PORT", ports[0].to_string())
            .env("EXPORTER_PORT", ports[1].to_string())
            .env(
                "PROMETHEUS_PORT",
                prometheus_port.unwrap_or(ports[2]).to_string(),
            )
            .env("ALERTMANAGER_PORT", ports[3].to_string())
            .env("DEMO_DIR", dir.path().join("state"))
            .env_remove("DEMO_PORT")
            .env_remove("DEMO_FOR")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0); // as a terminal's foreground job: Ctrl-C reaches the group
                               // A terminal's foreground job starts with SIGINT at its default; a test run started in
                               // the background by a script (`make test &`) inherits it ignored, and bash cannot trap
                               // a signal that was ignored when it started, so Ctrl-C would do nothing.
                               // SAFETY: only signal(2), which is async-signal-safe, runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("cannot run bash scripts/demo.sh");
        Demo {
            child,
            dir,
            output,
            moto: ports[0],
            exporter: ports[1],
            prometheus: prometheus_port.unwrap_or(ports[2]),
            alertmanager: ports[3],
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    fn pgid(&self) -> u32 {
        self.child.id() // process_group(0): the script leads its own group
    }

    /// Panics with the script's output if it has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "scripts/demo.sh exited early ({status}); its output:\n{}",
                self.output()
            );
        }
    }

    fn signal_group(&self, signal: &str) {
        Command::new("kill")
            .args([signal, "--", &format!("-{}", self.pgid())])
            .status()
            .unwrap();
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for_or(timeout, || self.child.try_wait().unwrap())
    }

    fn url(port: u16, path: &str) -> String {
        format!("http://127.0.0.1:{port}{path}")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .unwrap();
            if self.wait_exit(Duration::from_secs(20)).is_none() {
                self.signal_group("-KILL");
                let _ = self.child.wait();
            }
        }
        // The children run in sessions of their own: a script killed outright leaves them.
        for (_, pid) in pids(&self.state()) {
            if process_exists(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- output of scripts/demo.sh:\n{}", self.output());
            for name in ["moto", "exporter", "prometheus", "alertmanager"] {
                let log = self.state().join(format!("{name}.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "--- last lines of {}:\n{}",
                    log.display(),
                    lines[lines.len().saturating_sub(20)..].join("\n")
                );
            }
        }
    }
}

fn get(url: &str) -> Option<String> {
    let mut resp = agent().get(url).call().ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.body_mut().read_to_string().ok()
}

/// The alerts of Prometheus' classic alerts page: rule name → (header row's state class,
/// "N active", the instances' states). Debian's Prometheus 2.42 renders each rule as a
/// header row `<tr class="alert alert-danger alert_header">` (danger = firing, warning =
/// pending, success = inactive) followed by its instances' table.
fn classic_alerts(html: &str) -> Vec<(String, String, usize, Vec<String>)> {
    let mut out = Vec::new();
    let parts: Vec<&str> = html.split("<tr class=\"alert alert-").collect();
    for part in &parts[1..] {
        let Some(class) = part.split(' ').next() else {
            continue;
        };
        if !part.starts_with(&format!("{class} alert_header")) {
            continue;
        }
        let name = between(part, "<b>", "</b>").unwrap_or_default();
        let active = between(part, "</b> (", " active)")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let states = part
            .split("state_indicator text-uppercase\">")
            .skip(1)
            .filter_map(|s| s.split('<').next())
            .map(str::to_string)
            .collect();
        out.push((name.to_string(), class.to_string(), active, states));
    }
    out
}

/// The URLs the demo's output names (without the trailing punctuation of a sentence),
/// apart from those inside the `amtool ...` commands it suggests, and those commands.
fn printed_links(output: &str) -> (BTreeSet<String>, Vec<String>) {
    let mut urls = BTreeSet::new();
    let mut commands = Vec::new();
    for line in output.lines() {
        if line.trim_start().starts_with("amtool ") {
            commands.push(line.trim().to_string());
            continue;
        }
        for (i, _) in line.match_indices("http://") {
            let url: String = line[i..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, ')' | '(' | ',' | '"'))
                .collect();
            urls.insert(url.trim_end_matches(['.', ':']).to_string());
        }
    }
    (urls, commands)
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

fn pids(state: &Path) -> Vec<(String, u32)> {
    std::fs::read_to_string(state.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, pid) = l.split_once(' ')?;
            Some((name.to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn demo_stack_comes_up_alerts_fire_and_ctrl_c_stops_everything() {
    let started = Instant::now();
    let mut demo = Demo::start(None);

    // Alertmanager has the old keys and the root key of the credential-report account.
    let am_url = Demo::url(demo.alertmanager, "/api/v2/alerts");
    let alerts: Vec<Value> = wait_for_or(Duration::from_secs(100), || {
        demo.assert_running();
        let alerts: Vec<Value> = serde_json::from_str(&get(&am_url)?).ok()?;
        let names: BTreeSet<&str> = alerts
            .iter()
            .filter(|a| a["status"]["state"] == "active")
            .filter_map(|a| a["labels"]["alertname"].as_str())
            .collect();
        (names.contains(TOO_OLD) && names.contains(ROOT_KEY) && names.contains(UNUSED))
            .then_some(alerts.clone())
    })
    .unwrap_or_else(|| panic!("Alertmanager never listed {TOO_OLD}, {UNUSED} and {ROOT_KEY}"));
    let at_alertmanager = started.elapsed();
    let root: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == ROOT_KEY)
        .collect();
    assert_eq!(root.len(), 1, "{root:#?}");
    assert_eq!(root[0]["labels"]["account_id"], SECURITY_TOOLING);
    assert_eq!(root[0]["labels"]["account_name"], "security-tooling");
    let old_accounts: BTreeSet<&str> = alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == TOO_OLD)
        .filter_map(|a| a["labels"]["account_name"].as_str())
        .collect();
    assert_eq!(
        old_accounts,
        BTreeSet::from(["production", "security-tooling", "staging"]),
        "old keys in every demo account"
    );

    // Prometheus' alerts page (the URL the script prints) shows them firing.
    let page_url = Demo::url(demo.prometheus, "/classic/alerts");
    let page = wait_for_or(Duration::from_secs(30), || {
        demo.assert_running();
        let page = classic_alerts(&get(&page_url)?);
        [TOO_OLD, UNUSED, ROOT_KEY]
            .iter()
            .all(|name| {
                page.iter().any(|(n, class, active, states)| {
                    n == name
                        && class == "danger"
                        && *active >= 1
                        && states.len() == *active
                        && states.iter().all(|s| s == "firing")
                })
            })
            .then_some(page)
    })
    .unwrap_or_else(|| panic!("{page_url} never showed {TOO_OLD}, {UNUSED}, {ROOT_KEY} firing"));
    // Nothing about the exporter itself fires: every account is read.
    for (name, class, _, _) in &page {
        if name.starts_with("IAMKeyExporter") {
            assert_ne!(class, "danger", "{name} fires in the demo: {page:?}");
        }
    }

    // The script says so, with the URLs to open: every URL it prints (and the amtool
    // command it suggests) answers, and shows what the script says it shows.
    let said = wait_for_or(Duration::from_secs(15), || {
        demo.assert_running();
        let out = demo.output();
        (out.contains("firing in Prometheus (") && out.contains("in Alertmanager (")).then_some(out)
    })
    .unwrap_or_else(|| panic!("the script never said the alerts fire:\n{}", demo.output()));
    assert!(
        !said.contains("cargo build"),
        "IKE_BIN must skip the build:\n{said}"
    );
    let (urls, amtool) = printed_links(&said);
    for (port, path) in [
        (demo.exporter, "/"),
        (demo.prometheus, "/classic/alerts"),
        (demo.alertmanager, "/api/v2/alerts"),
    ] {
        let url = Demo::url(port, path);
        assert!(
            urls.contains(&url),
            "the script does not print {url}:\n{said}"
        );
    }
    for url in &urls {
        let expected: &[&str] = match url.strip_prefix("http://127.0.0.1:") {
            Some(rest) if rest == format!("{}/", demo.exporter) => &["security-tooling", "production"],
            Some(rest) if rest == format!("{}/keys", demo.exporter) => &["legacy-backup", "ci-deploy"],
            Some(rest) if rest == format!("{}/metrics", demo.exporter) => {
                &["aws_iam_access_key_age_seconds{", "aws_iam_root_access_key_active{"]
            }
            Some(rest) if rest == format!("{}/classic/alerts", demo.prometheus) => &[TOO_OLD, ROOT_KEY],
            Some(rest) if rest == format!("{}/classic/targets", demo.prometheus) => &["iam-key-exporter"],
            Some(rest) if rest == format!("{}/api/v2/alerts", demo.alertmanager) => {
                &[TOO_OLD, UNUSED, ROOT_KEY, "\"state\":\"active\""]
            }
            _ => panic!("the script prints {url}, which this test does not know: say here what it must show\n{said}"),
        };
        let mut resp = agent()
            .get(url)
            .call()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(status, 200, "{url} (printed by the demo): {body}");
        for text in expected {
            assert!(
                body.contains(text),
                "{url} (printed by the demo) lacks {text:?}:\n{body}"
            );
        }
    }
    assert_eq!(
        amtool.len(),
        1,
        "the script suggests one amtool command:\n{said}"
    );
    let words: Vec<&str> = amtool[0].split_whitespace().collect();
    let out = Command::new(words[0]).args(&words[1..]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {}",
        amtool[0],
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [TOO_OLD, UNUSED, ROOT_KEY] {
        assert!(
            table.contains(name),
            "{} does not list {name}:\n{table}",
            amtool[0]
        );
    }

    // Every child the script wrote down is running.
    let children = pids(&demo.state());
    let names: BTreeSet<&str> = children.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["alertmanager", "exporter", "moto", "prometheus"]),
        "{children:?}"
    );
    for (name, pid) in &children {
        assert!(process_exists(*pid), "{name} ({pid}) is not running");
    }

    // Ctrl-C: exit 0, and nothing left behind.
    let stop = Instant::now();
    demo.signal_group("-INT");
    let status = demo
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the demo did not stop within 30 s of SIGINT"));
    let stopped_in = stop.elapsed();
    assert!(
        status.success(),
        "Ctrl-C must stop the demo with exit 0, got {status}:\n{}",
        demo.output()
    );
    assert!(
        !demo.output().contains("Traceback"),
        "Ctrl-C must stop the demo quietly:\n{}",
        demo.output()
    );
    for (name, pid) in &children {
        assert!(
            !process_exists(*pid),
            "{name} ({pid}) survived the demo's exit"
        );
    }
    let group_left = Command::new("kill")
        .args(["-0", "--", &format!("-{}", demo.pgid())])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!group_left, "processes of the demo's group are left behind");
    for port in [demo.moto, demo.exporter, demo.prometheus, demo.alertmanager] {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is still taken after the demo stopped"
        );
    }
    eprintln!(
        "alerts in Alertmanager {:.1}s after the script started; stopped {:.1}s after SIGINT; test {:.1}s",
        at_alertmanager.as_secs_f64(),
        stopped_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_busy_port_stops_the_demo_before_anything_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut demo = Demo::start(Some(port));
    let status = demo
        .wait_exit(Duration::from_secs(20))
        .expect("the demo did not give up on a busy port");
    let out = demo.output();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "port {port} (Prometheus, PROMETHEUS_PORT) is already in use"
        )),
        "the message must name the port and its variable:\n{out}"
    );
    assert!(
        out.contains("PROMETHEUS_PORT="),
        "and say how to pick another:\n{out}"
    );
    assert!(
        !demo.state().exists(),
        "nothing may be set up or started:\n{out}"
    );
}
