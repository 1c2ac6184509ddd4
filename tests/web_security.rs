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

    // A new password takes effect on reload; the old one stops working.
    std::fs::write(&web, web_config("n3w")).unwrap();
    let (status, _) = curl(&[
        "--cacert",
        cacert,
        "-u",
        "prometheus:s3cret",
        "-X",
        "POST",
        &url("/-/reload"),
    ]);
    assert_eq!(status, 200);
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
    let cases = [
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
