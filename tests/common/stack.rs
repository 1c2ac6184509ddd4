//! The Prometheus stack of the end-to-end tests: Debian's `prometheus` and
//! `prometheus-alertmanager`, a webhook receiver for Alertmanager's notifications, and the
//! shipped alert rules.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::{agent, repo, wait_for, ChildGuard};

/// How Prometheus and Alertmanager log the address they bound (told to listen on port 0).
const LISTENING: &str = "msg=\"Listening on\"";

/// Like `wait_for`, but returns None on timeout so the caller can say what it saw last.
pub fn wait_for_or<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// deploy/prometheus/iam-key-exporter.rules.yml as shipped.
pub struct ShippedRules {
    pub text: String,
    /// alertname → the rule
    pub alerts: BTreeMap<String, serde_yaml::Value>,
}

impl ShippedRules {
    pub fn load() -> ShippedRules {
        let path = repo().join("deploy/prometheus/iam-key-exporter.rules.yml");
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let mut alerts = BTreeMap::new();
        for group in parsed["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                if let Some(name) = rule["alert"].as_str() {
                    alerts.insert(name.to_string(), rule.clone());
                }
            }
        }
        ShippedRules { text, alerts }
    }

    /// The shipped file with every `for:` and `keep_firing_for:` set to 0s, because the
    /// test cannot wait the real durations (1h for the key alerts). Only those lines change:
    /// expressions, labels and annotations are the shipped text, which is checked here by
    /// comparing both files parsed, minus `for` and `keep_firing_for`.
    pub fn with_for_zero(&self) -> String {
        let mut changed = 0;
        let mut out: String = self
            .text
            .lines()
            .map(|line| {
                let trimmed = line.trim_start();
                let indent = &line[..line.len() - trimmed.len()];
                if trimmed.starts_with("for:") {
                    changed += 1;
                    format!("{indent}for: 0s")
                } else if trimmed.starts_with("keep_firing_for:") {
                    format!("{indent}keep_firing_for: 0s")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        out.push('\n');
        assert!(changed > 0, "no `for:` in the shipped rules");
        let strip = |text: &str| {
            let mut v: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
            let mut fors = Vec::new();
            for group in v["groups"].as_sequence_mut().unwrap() {
                for rule in group["rules"].as_sequence_mut().unwrap() {
                    let rule = rule.as_mapping_mut().unwrap();
                    rule.remove("keep_firing_for");
                    if let Some(f) = rule.remove("for") {
                        fors.push(f);
                    }
                }
            }
            (v, fors)
        };
        let (shipped, shipped_fors) = strip(&self.text);
        let (rewritten, fors) = strip(&out);
        assert_eq!(
            shipped, rewritten,
            "the `for:` rewrite changed more than `for`"
        );
        assert_eq!(fors.len(), changed);
        assert_eq!(shipped_fors.len(), changed);
        out
    }

    /// A received alert carries the shipped severity and runbook_url, and a rendered summary
    /// and description, both naming the alert's value of each label in `named`. Returns the
    /// description.
    pub fn assert_annotations(&self, alert: &Value, named: &[&str]) -> String {
        let labels = &alert["labels"];
        let ann = &alert["annotations"];
        let name = labels["alertname"].as_str().unwrap();
        let rule = self
            .alerts
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not a shipped alert: {alert:#}"));
        assert!(
            labels["severity"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: no severity\n{alert:#}"
        );
        assert_eq!(
            labels["severity"].as_str(),
            rule["labels"]["severity"].as_str(),
            "{name}: severity\n{alert:#}"
        );
        assert_eq!(
            ann["runbook_url"].as_str(),
            rule["annotations"]["runbook_url"].as_str(),
            "{name}: runbook_url\n{alert:#}"
        );
        for field in ["summary", "description"] {
            let text = ann[field].as_str().unwrap_or("");
            assert!(!text.trim().is_empty(), "{name}: no {field}\n{alert:#}");
            assert!(
                !text.contains("{{") && !text.contains("<no value>"),
                "{name}: {field} template not rendered: {text:?}"
            );
            for label in named {
                let value = labels[label].as_str().unwrap();
                assert!(
                    text.contains(value),
                    "{name}: {field} does not name {label} {value}: {text:?}"
                );
            }
        }
        ann["description"].as_str().unwrap().to_string()
    }
}

/// deploy/alertmanager/alertmanager.example.yml as shipped: the example routing tree.
pub struct ShippedRouting {
    pub text: String,
}

impl ShippedRouting {
    pub fn load() -> ShippedRouting {
        let path = repo().join("deploy/alertmanager/alertmanager.example.yml");
        ShippedRouting {
            text: std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    /// The receivers' names, in the file's order.
    pub fn receivers(&self) -> Vec<String> {
        let v: serde_yaml::Value = serde_yaml::from_str(&self.text).unwrap();
        v["receivers"]
            .as_sequence()
            .expect("no receivers")
            .iter()
            .map(|r| {
                r["name"]
                    .as_str()
                    .expect("a receiver without name")
                    .to_string()
            })
            .collect()
    }

    /// The shipped file with each receiver's webhook `url` replaced by `urls[receiver]`, and
    /// every `group_wait` and `group_interval` set to 1s (the test cannot wait 30 s before a
    /// first notification, or 5 min before the next of a group). Only those lines change:
    /// the routing tree, its matchers, grouping and receivers are the shipped text, which is
    /// checked here by comparing both files parsed, minus those fields. Every receiver must
    /// have only webhook configurations (anything else could not be pointed at the test).
    pub fn for_test(&self, urls: &BTreeMap<String, String>) -> String {
        let mut receiver: Option<String> = None;
        let mut in_receivers = false;
        let (mut timers, mut replaced) = (0, BTreeMap::<String, usize>::new());
        let mut out: String = self
            .text
            .lines()
            .map(|line| {
                let trimmed = line.trim_start();
                let indent = &line[..line.len() - trimmed.len()];
                if !line.starts_with([' ', '#', '-']) && !line.trim().is_empty() {
                    in_receivers = line.starts_with("receivers:");
                }
                if let Some(name) = trimmed.strip_prefix("- name:").filter(|_| in_receivers) {
                    receiver = Some(name.trim().trim_matches(['"', '\'']).to_string());
                }
                for key in ["group_wait:", "group_interval:"] {
                    if trimmed.starts_with(key) {
                        timers += 1;
                        return format!("{indent}{key} 1s");
                    }
                }
                for prefix in ["- url:", "url:"] {
                    if in_receivers && trimmed.starts_with(prefix) {
                        let name = receiver.clone().expect("a url before any receiver name");
                        let url = urls
                            .get(&name)
                            .unwrap_or_else(|| panic!("no test URL for receiver {name}"));
                        *replaced.entry(name).or_default() += 1;
                        return format!("{indent}{prefix} \"{url}\"");
                    }
                }
                line.to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        out.push('\n');
        assert!(
            timers > 0,
            "no group_wait/group_interval in the shipped routing"
        );
        let names: Vec<String> = self.receivers();
        for name in &names {
            assert_eq!(
                replaced.get(name),
                Some(&1),
                "receiver {name}: expected exactly one webhook url"
            );
        }
        // Parsed, minus the rewritten fields, both files must be equal.
        let strip = |text: &str| {
            let mut v: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
            fn routes(r: &mut serde_yaml::Value) {
                let m = r.as_mapping_mut().unwrap();
                m.remove("group_wait");
                m.remove("group_interval");
                for child in m
                    .get_mut("routes")
                    .and_then(|c| c.as_sequence_mut())
                    .into_iter()
                    .flatten()
                {
                    routes(child);
                }
            }
            routes(&mut v["route"]);
            let mut urls = BTreeMap::new();
            for r in v["receivers"].as_sequence_mut().unwrap() {
                let name = r["name"].as_str().unwrap().to_string();
                let keys: Vec<String> = r
                    .as_mapping()
                    .unwrap()
                    .keys()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect();
                assert_eq!(
                    keys,
                    ["name", "webhook_configs"],
                    "receiver {name}: only webhook_configs can be pointed at the test"
                );
                for w in r["webhook_configs"].as_sequence_mut().unwrap() {
                    let url = w.as_mapping_mut().unwrap().remove("url").unwrap();
                    urls.insert(name.clone(), url.as_str().unwrap().to_string());
                }
            }
            (v, urls)
        };
        let (shipped, _) = strip(&self.text);
        let (rewritten, got_urls) = strip(&out);
        assert_eq!(
            shipped, rewritten,
            "the test's rewrite of the routing changed more than the URLs and timers"
        );
        let want: BTreeMap<String, String> =
            names.iter().map(|n| (n.clone(), urls[n].clone())).collect();
        assert_eq!(got_urls, want, "receivers' URLs after the rewrite");
        out
    }
}

// ----------------------------------------------------------------------------------------
// The webhook receiver

/// Alertmanager's webhook receiver: a one-thread HTTP/1.1 server on 127.0.0.1 that records
/// each POSTed JSON body.
pub struct Webhook {
    pub url: String,
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (bodies, errors, stop) = (bodies.clone(), errors.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    match serve(stream) {
                        Ok(Some(body)) => bodies.lock().unwrap().push(body),
                        Ok(None) => {}
                        Err(e) => errors.lock().unwrap().push(e),
                    }
                }
            })
        };
        Webhook {
            url: format!("http://{addr}/alerts"),
            addr,
            bodies,
            errors,
            stop,
            thread: Some(thread),
        }
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Every alert of every notification, in order of arrival.
    pub fn alerts(&self) -> Vec<Value> {
        self.bodies()
            .iter()
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request and answers it, closing the connection. A POST's body is returned,
/// parsed as JSON.
fn serve(stream: TcpStream) -> Result<Option<Value>, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut request_line = String::new();
    if reader
        .read_line(&mut request_line)
        .map_err(|e| e.to_string())?
        == 0
    {
        return Ok(None); // a connection closed without a request (the wake-up in drop)
    }
    let mut content_length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse::<usize>().ok();
            }
        }
    }
    let result = if request_line.starts_with("POST ") {
        let len =
            content_length.ok_or_else(|| format!("{}: no Content-Length", request_line.trim()))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| format!("{}: body is not JSON: {e}", request_line.trim()))
    } else {
        Ok(None)
    };
    let mut stream = reader.into_inner();
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    result
}

// ----------------------------------------------------------------------------------------
// Prometheus and Alertmanager

/// Debian's `prometheus`, scraping the exporter every second and evaluating `rules` every
/// second, sending alerts to `alertmanager`.
pub struct Prometheus {
    child: Mutex<ChildGuard>, // first: killed before the directory is removed
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(exporter: &str, alertmanager: &str, rules: &str) -> Prometheus {
        Prometheus::start_jobs(&[("iam-key-exporter", &[exporter])], alertmanager, rules)
    }

    /// Prometheus with one scrape job per `(job, targets)`.
    pub fn start_jobs(jobs: &[(&str, &[&str])], alertmanager: &str, rules: &str) -> Prometheus {
        Prometheus::start_to(jobs, &[alertmanager], rules)
    }

    /// Prometheus with one scrape job per `(job, targets)`, sending every alert to each of
    /// `alertmanagers` (`host:port`).
    pub fn start_to(jobs: &[(&str, &[&str])], alertmanagers: &[&str], rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("iam-key-exporter.rules.yml");
        std::fs::write(&rules_path, rules).unwrap();
        let config = dir.path().join("prometheus.yml");
        let mut scrape = String::new();
        for (job, targets) in jobs {
            let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
            scrape.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ));
        }
        std::fs::write(
            &config,
            format!(
                r#"
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
alerting:
  alertmanagers:
    - static_configs:
        - targets: [{alertmanagers}]
scrape_configs:
{scrape}"#,
                rules = rules_path.display(),
                alertmanagers = alertmanagers
                    .iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .unwrap();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0");
        let mut child = ChildGuard::spawn("prometheus", cmd, &dir.path().join("prometheus.log"));
        let url = format!("http://{}", child.logged_address(LISTENING));
        let p = Prometheus {
            child: Mutex::new(child),
            url,
            _dir: dir,
        };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            p.child.lock().unwrap().assert_running();
            http_ok(&format!("{}/-/ready", p.url))
        });
        p
    }

    /// The whole answer of an instant query (status, data or error).
    pub fn query(&self, expr: &str) -> Value {
        self.child.lock().unwrap().assert_running();
        agent()
            .get(&format!("{}/api/v1/query", self.url))
            .query("query", expr)
            .call()
            .unwrap_or_else(|e| panic!("Prometheus did not answer {expr}: {e}"))
            .body_mut()
            .read_json()
            .unwrap()
    }

    /// The result of an instant query that must succeed.
    pub fn query_data(&self, expr: &str) -> Vec<Value> {
        let r = self.query(expr);
        assert_eq!(r["status"], "success", "{expr}: {r}");
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Active alerts with their current annotations (/api/v1/alerts).
    pub fn alerts(&self) -> Vec<Value> {
        let r: Value = agent()
            .get(&format!("{}/api/v1/alerts", self.url))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        r["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    pub fn label_values(&self, label: &str, selector: &str) -> Vec<Value> {
        let r: Value = agent()
            .get(&format!("{}/api/v1/label/{label}/values", self.url))
            .query("match[]", selector)
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        assert_eq!(
            r["status"], "success",
            "label values {label} {selector}: {r}"
        );
        r["data"].as_array().cloned().unwrap_or_default()
    }
}

/// Debian's `prometheus-alertmanager`, alone (no cluster), sending every alert to `webhook`
/// as its own notification, quickly, resolved ones included.
pub struct Alertmanager {
    _child: ChildGuard, // first: killed before the directory is removed
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Alertmanager sending every alert to `webhook` as its own notification.
    pub fn start(webhook: &str) -> Alertmanager {
        Alertmanager::start_with(&format!(
            r#"
route:
  receiver: webhook
  group_by: ["..."]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: "{webhook}"
        send_resolved: true
"#
        ))
    }

    /// Alertmanager with the configuration `yaml`.
    pub fn start_with(yaml: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, yaml).unwrap();
        let mut cmd = Command::new("prometheus-alertmanager");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--cluster.listen-address=");
        let mut child =
            ChildGuard::spawn("alertmanager", cmd, &dir.path().join("alertmanager.log"));
        let url = format!("http://{}", child.logged_address(LISTENING));
        wait_for("Alertmanager to be ready", Duration::from_secs(60), || {
            child.assert_running();
            http_ok(&format!("{url}/-/ready"))
        });
        Alertmanager {
            _child: child,
            url,
            _dir: dir,
        }
    }
}

pub fn http_ok(url: &str) -> Option<()> {
    let resp = agent().get(url).call().ok()?;
    resp.status().is_success().then_some(())
}
