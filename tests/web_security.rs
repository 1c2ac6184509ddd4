//! `--web.config.file`: TLS and basic auth on every endpoint, checked with curl (a real TLS
//! client) against a certificate made by openssl; bad web configs stop the start-up.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

const A: &str = "111111111111";

fn self_signed_cert(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args([
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .current_dir(dir)
        .output()
        .expect("openssl is needed to make a test certificate");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// curl's answer: (HTTP status, headers and body), status 0 if no HTTP answer at all.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn web_config(password: &str) -> String {
    format!(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  prometheus: '{}'\n",
        bcrypt::hash(password, 4).unwrap()
    )
}

#[test]
fn tls_and_basic_auth_protect_every_endpoint() {
    let moto = Moto::start();
    moto.seed(A, json!([{"name": "u", "keys": [{}]}]));
    let dir = tempfile::tempdir().unwrap();
    self_signed_cert(dir.path());
    let web = dir.path().join("web.yml");
    std::fs::write(&web, web_config("s3cret")).unwrap();
    let web_flag = format!("--web.config.file={}", web.display());
    let exporter = Exporter::spawn(
        &moto,
        &format!("refresh_interval: 1h\naccounts:\n  - id: \"{A}\"\n"),
        &[&web_flag, "--web.enable-lifecycle"],
    );
    let address = exporter.address();

    let url = |path: &str| format!("https://{address}{path}");
    let cacert = dir.path().join("cert.pem");
    let cacert = cacert.to_str().unwrap();
    let ready = wait_for(
        "the exporter to be ready over TLS",
        Duration::from_secs(30),
        || {
            Some(curl(&[
                "--cacert",
                cacert,
                "-u",
                "prometheus:s3cret",
                &url("/-/ready"),
            ]))
            .filter(|(s, _)| *s == 200)
        },
    );
    assert!(ready.1.contains("Ready."));

    let (status, body) = curl(&[
        "--cacert",
        cacert,
        "-u",
        "prometheus:s3cret",
        &url("/metrics"),
    ]);
    assert_eq!(status, 200);
    assert!(
        body.contains("aws_iam_access_key_created_timestamp_seconds{account_id=\"111111111111\"")
    );

    for args in [
        vec![],
        vec!["-u", "prometheus:wrong"],
        vec!["-u", "someone:s3cret"],
    ] {
        for path in ["/metrics", "/", "/-/healthy", "/-/ready"] {
            let mut all = vec!["--cacert", cacert];
            all.extend(&args);
            let u = url(path);
            all.push(&u);
            let (status, headers) = curl(&all);
            assert_eq!(status, 401, "{path} with {args:?}");
            assert!(
                headers.to_lowercase().contains("www-authenticate: basic"),
                "{headers}"
            );
        }
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    let (status, _) = curl(&[&format!("http://{address}/metrics")]);
    assert_ne!(status, 200);
    // Neither does a client that does not trust the certificate.
    let (status, _) = curl(&["-u", "prometheus:s3cret", &url("/metrics")]);
    assert_eq!(status, 0);

    // A new password takes effect (the file is watched; a reload applies it at once too);
    // the old one stops working.
    std::fs::write(&web, web_config("n3w")).unwrap();
    wait_for(
        "a reload with the new password",
        Duration::from_secs(15),
        || {
            let (status, _) = curl(&[
                "--cacert",
                cacert,
                "-u",
                "prometheus:n3w",
                "-X",
                "POST",
                &url("/-/reload"),
            ]);
            (status == 200).then_some(())
        },
    );
    assert_eq!(
        curl(&["--cacert", cacert, "-u", "prometheus:n3w", &url("/metrics")]).0,
        200
    );
    assert_eq!(
        curl(&[
            "--cacert",
            cacert,
            "-u",
            "prometheus:s3cret",
            &url("/metrics")
        ])
        .0,
        401
    );
}

#[test]
fn a_bad_web_config_stops_the_start_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("accounts:\n  - id: \"{A}\"\n")).unwrap();
    let fifo = dir.path().join("fifo.pem");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let cases = [
        (
            // Refused, not read: reading a FIFO waits for a writer forever.
            "tls_server_config:\n  cert_file: fifo.pem\n  key_file: key.pem\n",
            vec![
                ":2:14: tls_server_config.cert_file: ",
                "fifo.pem: cannot read the file: it is a named pipe (FIFO), not a regular file",
            ],
        ),
        (
            "basic_auth_users:\n  prometheus: plaintext\n",
            vec![":2:15: basic_auth_users.prometheus: ", "not a bcrypt hash"],
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: key.pem\n",
            vec![":2:14: tls_server_config.cert_file: ", "missing.pem"],
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [x]\n",
            vec![":4:3: tls_server_config.cipher_suites: unknown field `cipher_suites`"],
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Sometimes\n",
            vec![
                ":4:21: tls_server_config.client_auth_type: ",
                "\\\"Sometimes\\\" is not supported",
                "RequireAndVerifyClientCert",
            ],
        ),
    ];
    for (text, parts) in cases {
        let web = dir.path().join("web.yml");
        std::fs::write(&web, text).unwrap();
        // The test holds the port: an exporter that bound before checking would fail with
        // "cannot listen" and exit 1 instead.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let out = Command::new(env!("CARGO_BIN_EXE_iam-key-exporter"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.config.file={}", web.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}\n{stderr}");
        assert!(!stderr.contains("cannot listen"), "{stderr}");
        assert!(stderr.contains("web.yml"), "{stderr}");
        for p in parts {
            assert!(stderr.contains(p), "message lacks {p:?}: {stderr}");
        }
    }
}

#[test]
fn a_rotated_certificate_and_a_new_password_apply_without_a_reload() {
    let moto = Moto::start();
    moto.seed(A, json!([{"name": "u", "keys": [{}]}]));
    let dir = tempfile::tempdir().unwrap();
    self_signed_cert(dir.path());
    let web = dir.path().join("web.yml");
    std::fs::write(&web, web_config("s3cret")).unwrap();
    let exporter = Exporter::spawn(
        &moto,
        &format!("refresh_interval: 1h\naccounts:\n  - id: \"{A}\"\n"),
        &[&format!("--web.config.file={}", web.display())],
    );
    let url = format!("https://{}/metrics", exporter.address());
    let old_ca = dir.path().join("old.pem");
    std::fs::copy(dir.path().join("cert.pem"), &old_ca).unwrap();
    let scrape =
        |ca: &Path, user: &str| curl(&["--cacert", ca.to_str().unwrap(), "-u", user, &url]).0;
    wait_for("a scrape over TLS", Duration::from_secs(30), || {
        (scrape(&old_ca, "prometheus:s3cret") == 200).then_some(())
    });

    // cert-manager renews the certificate: new key and certificate files, no signal.
    let renewed = tempfile::tempdir().unwrap();
    self_signed_cert(renewed.path());
    replace(
        &dir.path().join("key.pem"),
        std::fs::read(renewed.path().join("key.pem")).unwrap(),
    );
    replace(
        &dir.path().join("cert.pem"),
        std::fs::read(renewed.path().join("cert.pem")).unwrap(),
    );
    let new_ca = renewed.path().join("cert.pem");
    wait_for(
        "the renewed certificate to be served",
        Duration::from_secs(15),
        || (scrape(&new_ca, "prometheus:s3cret") == 200).then_some(()),
    );
    assert_eq!(
        scrape(&old_ca, "prometheus:s3cret"),
        0,
        "the old certificate is still served"
    );

    // A password change in the web config file, likewise.
    replace(&web, web_config("n3w").as_bytes());
    wait_for("the new password to apply", Duration::from_secs(15), || {
        (scrape(&new_ca, "prometheus:n3w") == 200).then_some(())
    });
    assert_eq!(scrape(&new_ca, "prometheus:s3cret"), 401);
}

#[test]
fn a_password_brute_force_does_not_hold_up_a_scraper() {
    let moto = Moto::start();
    moto.seed(A, json!([{"name": "u", "keys": [{}]}]));
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    // Cost 10, as `htpasswd -B` makes them: tens of milliseconds per check.
    std::fs::write(
        &web,
        format!(
            "basic_auth_users:\n  prometheus: '{}'\n",
            bcrypt::hash("s3cret", 10).unwrap()
        ),
    )
    .unwrap();
    let exporter = Exporter::spawn(
        &moto,
        &format!("refresh_interval: 1h\naccounts:\n  - id: \"{A}\"\n"),
        &[&format!("--web.config.file={}", web.display())],
    );
    let url = format!("{}/metrics", exporter.url);
    let basic = |password: &str| {
        use base64::Engine;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("prometheus:{password}"));
        format!("Basic {token}")
    };
    let get = |password: &str| {
        agent()
            .get(&url)
            .header("Authorization", &basic(password))
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    wait_for("the first good scrape", Duration::from_secs(30), || {
        (get("s3cret") == 200).then_some(())
    });

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..32)
        .map(|i| {
            let stop = stop.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                let mut answers = std::collections::BTreeMap::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    use base64::Engine;
                    let token = base64::engine::general_purpose::STANDARD
                        .encode(format!("prometheus:guess-{i}-{n}"));
                    let answer = agent()
                        .get(&url)
                        .header("Authorization", &format!("Basic {token}"))
                        .call()
                        .map(|r| {
                            let retry = r.headers().get("retry-after").cloned();
                            (r.status().as_u16(), retry)
                        })
                        .unwrap_or((0, None));
                    // Turned away for now, it is told when to ask again.
                    if answer.0 == 429 {
                        assert_eq!(answer.1.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
                    }
                    *answers.entry(answer.0).or_insert(0) += 1;
                    n += 1;
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        assert_eq!(get("s3cret"), 200);
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = std::collections::BTreeMap::new();
    for a in attackers {
        for (status, n) in a.join().unwrap() {
            *answers.entry(status).or_insert(0) += n;
        }
    }
    eprintln!("brute force answers {answers:?}; slowest good scrape {slowest:?}");
    assert!(
        !answers.contains_key(&200),
        "a guessed password was accepted"
    );
    assert!(
        answers.contains_key(&429),
        "the brute force was never turned away: {answers:?}"
    );
}

/// A CA and a client certificate it signed (`{name}-ca.pem`, `{name}.pem`, `{name}.key`).
fn client_cert(dir: &Path, name: &str) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca_key, ca) = (format!("{name}-ca.key"), format!("{name}-ca.pem"));
    let (key, csr, cert) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} CA"),
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=prometheus",
    ]);
    // A version 3 certificate for client authentication: webpki refuses version 1.
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        "client.ext",
    ]);
}

#[test]
fn client_certificates_are_required_when_configured() {
    let moto = Moto::start();
    moto.seed(A, json!([{"name": "u", "keys": [{}]}]));
    let dir = tempfile::tempdir().unwrap();
    self_signed_cert(dir.path());
    client_cert(dir.path(), "trusted");
    client_cert(dir.path(), "stranger");
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: trusted-ca.pem\n",
    )
    .unwrap();
    let exporter = Exporter::spawn(
        &moto,
        &format!("refresh_interval: 1h\naccounts:\n  - id: \"{A}\"\n"),
        &[&format!("--web.config.file={}", web.display())],
    );
    let url = format!("https://{}/metrics", exporter.address());
    let file = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let with = |name: &str| {
        curl(&[
            "--cacert",
            &file("cert.pem"),
            "--cert",
            &file(&format!("{name}.pem")),
            "--key",
            &file(&format!("{name}.key")),
            &url,
        ])
        .0
    };
    wait_for(
        "a scrape with the trusted client certificate",
        Duration::from_secs(30),
        || (with("trusted") == 200).then_some(()),
    );
    assert_eq!(
        with("stranger"),
        0,
        "a certificate from another CA must fail the handshake"
    );
    assert_eq!(
        curl(&["--cacert", &file("cert.pem"), &url]).0,
        0,
        "no client certificate"
    );
}

/// An exporter whose web configuration file starts empty (no TLS, no users).
fn with_empty_web_config(moto: &Moto, dir: &Path) -> (Exporter, std::path::PathBuf) {
    let web = dir.join("web.yml");
    std::fs::write(&web, "# no TLS, no users yet\n").unwrap();
    let mut exporter = Exporter::spawn(
        moto,
        &format!("refresh_interval: 1h\naccounts:\n  - id: \"{A}\"\n"),
        &[&format!("--web.config.file={}", web.display())],
    );
    exporter.wait_listening();
    (exporter, web)
}

#[test]
fn requests_are_served_with_the_old_web_config_while_a_slow_new_one_is_read() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let (exporter, web) = with_empty_web_config(&moto, dir.path());
    // A hash of cost 13 (of no known password): loading it makes a dummy hash of the same
    // cost for unknown users, seconds of work (a cost-17 hash stalled every request 18 s).
    replace(
        &web,
        b"basic_auth_users:\n  prometheus: $2y$13$abcdefghijklmnopqrstuu5VhZmb0Gz3Z1Qz8Hc0vKb3U0hV2m5Wy\n",
    );
    let reading = "reading them, connections keep the current ones meanwhile";
    let in_force = "new connections use them";
    let mut served_while_reading = 0;
    wait_for(
        "the new web configuration to be in force",
        Duration::from_secs(120),
        || {
            let log = exporter.log();
            let (was_reading, was_in_force) = (log.contains(reading), log.contains(in_force));
            let status = exporter.try_get("/-/healthy").map(|(s, _)| s);
            let now_in_force = exporter.log().contains(in_force);
            if was_in_force {
                // Now a user is required.
                return (status == Some(401)).then_some(());
            }
            if status == Some(200) {
                served_while_reading += usize::from(was_reading && !now_in_force);
            } else {
                assert!(
                    now_in_force,
                    "answered {status:?} with the old configuration in force"
                );
            }
            None
        },
    );
    assert!(
        served_while_reading > 0,
        "no request was answered while the new web configuration was read:\n{}",
        exporter.log()
    );
}

#[test]
fn a_deeply_nested_web_config_is_refused_and_the_running_one_kept() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut exporter, web) = with_empty_web_config(&moto, dir.path());
    // 15,000 nested lists used to overflow the stack of the thread that read them.
    replace(
        &web,
        format!("basic_auth_users:\n{}\n", "- ".repeat(15_000)).as_bytes(),
    );
    wait_for(
        "the nested web configuration to be refused",
        Duration::from_secs(30),
        || {
            exporter.try_get("/-/healthy");
            exporter
                .log()
                .contains("web configuration files changed but cannot be used")
                .then_some(())
        },
    );
    assert!(
        exporter.log().contains("nested more than 64 deep"),
        "{}",
        exporter.log()
    );
    exporter.wait_listening();
    assert_eq!(
        exporter.get("/metrics").0,
        200,
        "the old configuration is kept"
    );
}
