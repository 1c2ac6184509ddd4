//! What the README promises of the command line and lifecycle, each tried for real: SIGHUP
//! and lifecycle reloads, the telemetry path, JSON logs, listen-address forms, `once`'s exit
//! code, a reload of global settings, the ExternalId reaching STS, and a proxy from the
//! environment.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

const A: &str = "111111111111";
const B: &str = "222222222222";

fn post(url: &str) -> u16 {
    agent()
        .post(url)
        .send_empty()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn sighup_reloads_and_the_lifecycle_endpoint_needs_its_flag() {
    let moto = Moto::start();
    moto.seed(A, users("a", 1, 1));
    moto.seed(B, users("b", 1, 1));
    let mut exporter = Exporter::spawn(&moto, &format!("accounts:\n  - id: \"{A}\"\n"), &[]);
    exporter.wait_listening();
    exporter.wait_ready(Duration::from_secs(30));
    assert_eq!(post(&format!("{}/-/reload", exporter.url)), 403);

    std::fs::write(
        &exporter.config,
        format!("accounts:\n  - id: \"{A}\"\n  - id: \"{B}\"\n"),
    )
    .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &exporter.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    exporter.scrape_until("B read after SIGHUP", Duration::from_secs(30), |m| {
        m.get("iam_key_exporter_account_up", &[("account_id", B)]) == Some(1.0)
    });
}

#[test]
fn a_custom_telemetry_path_and_json_logs() {
    let moto = Moto::start();
    moto.seed(A, users("a", 1, 1));
    let mut exporter = Exporter::spawn(
        &moto,
        &format!("accounts:\n  - id: \"{A}\"\n"),
        &["--web.telemetry-path=/iam/metrics", "--log.format=json"],
    );
    exporter.wait_listening();
    exporter.wait_ready(Duration::from_secs(30));
    let (status, body) = exporter.get("/iam/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("aws_iam_access_key_age_seconds{"));
    assert_eq!(exporter.get("/metrics").0, 404);
    assert!(exporter.get("/").1.contains("href=\"/iam/metrics\""));

    let log = exporter.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(log.contains("\"refreshed account\""), "{log}");
}

#[test]
fn listen_address_forms() {
    let moto = Moto::start();
    moto.seed(A, users("a", 1, 1));
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !ipv6 {
        eprintln!("no IPv6 on this machine: only the IPv4 side of each form is checked");
    }
    let v6 = |hosts: &[&'static str]| if ipv6 { hosts.to_vec() } else { Vec::new() };
    // (flag, bound host, answers at, refused at)
    let mut forms = vec![
        // The default form: one socket on [::] that takes IPv4 too.
        (
            ":0",
            if ipv6 { "[::]" } else { "0.0.0.0" },
            [vec!["127.0.0.1"], v6(&["[::1]"])].concat(),
            vec![],
        ),
        // Explicit addresses mean what they say.
        ("0.0.0.0:0", "0.0.0.0", vec!["127.0.0.1"], v6(&["[::1]"])),
    ];
    if ipv6 {
        forms.push(("[::]:0", "[::]", vec!["127.0.0.1", "[::1]"], vec![]));
        forms.push(("[::1]:0", "[::1]", vec!["[::1]"], vec!["127.0.0.1"]));
    }
    for (flag, host, answers, refused) in forms {
        let mut cmd = exporter_command(&moto);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.yaml");
        std::fs::write(&config, format!("accounts:\n  - id: \"{A}\"\n")).unwrap();
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={flag}"));
        let mut child = ChildGuard::spawn("exporter", cmd, &dir.path().join("log"));
        let bound = child.bound_address();
        let (bound_host, port) = bound.rsplit_once(':').unwrap();
        assert_eq!(bound_host, host, "{flag} bound {bound}");
        for at in answers {
            wait_for(
                &format!("{flag} answering at {at}"),
                Duration::from_secs(20),
                || {
                    child.assert_running();
                    agent()
                        .get(&format!("http://{at}:{port}/-/healthy"))
                        .call()
                        .ok()
                        .filter(|r| r.status() == 200)
                },
            );
        }
        for at in refused {
            let address = format!("{at}:{port}");
            assert!(
                std::net::TcpStream::connect(&address).is_err(),
                "{flag} (bound {bound}) also accepts connections at {address}"
            );
        }
    }
}

#[test]
fn once_exits_1_when_an_account_fails_and_still_writes_the_file() {
    let moto = Moto::start();
    moto.seed(A, users("a", 1, 1));
    moto.faults(json!([{"kind": "access_denied", "operation": "AssumeRole", "account": B}]));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!("accounts:\n  - id: \"{A}\"\n  - id: \"{B}\"\n"),
    )
    .unwrap();
    let output = dir.path().join("iam.prom");
    let out = exporter_command(&moto)
        .arg(format!("--config.file={}", config.display()))
        .args(["once", "--output"])
        .arg(&output)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Metrics::parse(&read(&output));
    assert_eq!(
        m.get("iam_key_exporter_account_up", &[("account_id", A)]),
        Some(1.0)
    );
    assert_eq!(
        m.get("iam_key_exporter_account_up", &[("account_id", B)]),
        Some(0.0)
    );
    assert!(!output.with_extension("prom.tmp").exists());
}

#[test]
fn a_reload_of_global_settings_applies_them() {
    let moto = Moto::start();
    moto.seed(A, users("a", 1, 1));
    let exporter = Exporter::start(
        &moto,
        &format!("refresh_interval: 1h\naccounts:\n  - id: \"{A}\"\n"),
    );
    exporter.wait_ready(Duration::from_secs(30));
    let lists = || moto.count(A, "ListUsers");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lists(), 1, "one refresh an hour");
    std::fs::write(
        &exporter.config,
        format!("refresh_interval: 1s\nmax_staleness: 20m\naccounts:\n  - id: \"{A}\"\n"),
    )
    .unwrap();
    assert_eq!(post(&format!("{}/-/reload", exporter.url)), 200);
    wait_for("refreshes every second", Duration::from_secs(20), || {
        (lists() >= 4).then_some(())
    });
}

#[test]
fn the_configured_external_id_reaches_sts() {
    let moto = Moto::start();
    moto.seed(A, users("a", 1, 1));
    moto.seed(B, users("b", 1, 1));
    for id in [A, B] {
        moto.post(
            "/_launcher/external_id",
            json!({"role_arn": format!("arn:aws:iam::{id}:role/IAMKeyExporterReadOnly"), "external_id": "ext-4711"}),
        );
    }
    let exporter = Exporter::start(
        &moto,
        &format!(
            "accounts:\n  - {{id: \"{A}\", external_id: ext-4711}}\n  - {{id: \"{B}\", external_id: ext-wrong}}\n"
        ),
    );
    exporter.wait_ready(Duration::from_secs(30));
    let m = exporter.scrape();
    assert_eq!(
        m.get("iam_key_exporter_account_up", &[("account_id", A)]),
        Some(1.0)
    );
    assert_eq!(
        m.get("iam_key_exporter_account_up", &[("account_id", B)]),
        Some(0.0)
    );
    assert_eq!(
        m.get(
            "iam_key_exporter_refresh_errors_total",
            &[
                ("account_id", B),
                ("stage", "assume_role"),
                ("code", "AccessDenied")
            ]
        ),
        Some(1.0)
    );
}

/// Companies that only reach AWS through a proxy set `HTTPS_PROXY` (here `HTTP_PROXY`, since
/// moto speaks plain HTTP): every AWS request goes through it, as with any AWS SDK.
#[test]
fn aws_requests_go_through_the_proxy_from_the_environment() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    let moto = Moto::start();
    moto.seed(A, users("a", 1, 1));
    let moto_address = moto.url.trim_start_matches("http://").to_string();
    // A forward proxy: records each connection's first request line and relays the bytes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorded = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = TcpStream::connect(&moto_address).unwrap();
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            recorded.lock().unwrap().push(line.trim_end().to_string());
            let mut to_moto = upstream.try_clone().unwrap();
            to_moto.write_all(line.as_bytes()).unwrap();
            let mut from_moto = upstream;
            let mut to_client = client;
            std::thread::spawn(move || std::io::copy(&mut reader, &mut to_moto));
            std::thread::spawn(move || std::io::copy(&mut from_moto, &mut to_client));
        }
    });
    let exporter = Exporter::spawn_env(
        &moto,
        &format!("accounts:\n  - id: \"{A}\"\n"),
        &[],
        &[("HTTP_PROXY", &proxy), ("NO_PROXY", "")],
    );
    exporter.wait_ready(Duration::from_secs(30));
    assert_eq!(
        exporter
            .scrape()
            .get("iam_key_exporter_account_up", &[("account_id", A)]),
        Some(1.0)
    );
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|l| l.starts_with(&format!("POST {}/", moto.url))),
        "the proxy saw no AWS request in absolute form: {seen:?}"
    );
}
