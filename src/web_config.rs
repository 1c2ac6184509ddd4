//! The web configuration file (`--web.config.file`) in the format of the Prometheus
//! exporter-toolkit: TLS and basic authentication for every HTTP endpoint.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt            # paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional; needs client_ca_file
//!   client_ca_file: ca.crt
//!   min_version: TLS12               # TLS12 (default) or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...           # bcrypt hashes, e.g. from `htpasswd -nBC 10 ""`
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::Deserialize;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: ClientAuth,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: TlsVersion,
}

#[derive(Deserialize, Default, PartialEq)]
enum ClientAuth {
    #[default]
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Deserialize, Default, PartialEq)]
enum TlsVersion {
    #[default]
    TLS12,
    TLS13,
}

/// TLS and authentication for the HTTP server; the default is neither.
#[derive(Default)]
pub struct WebSecurity {
    pub tls: Option<TlsAcceptor>,
    users: BTreeMap<String, String>,
    /// A hash of no password anyone has, at the highest cost of the configured ones, checked
    /// for unknown users so that a wrong user name takes as long as a wrong password.
    dummy_hash: String,
    /// Authorization headers already checked against their bcrypt hash: bcrypt is slow on
    /// purpose, and a scraper sends the same header every few seconds.
    verified: Mutex<HashSet<String>>,
}

/// At most this many distinct good credentials are remembered.
const VERIFIED_CACHE: usize = 64;

pub fn load(path: &Path) -> Result<WebSecurity, ConfigError> {
    let err = |msg: String| ConfigError::new(format!("{}: {msg}", path.display()));
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read the web configuration file: {e}")))?;
    let file: File = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
    // The dummy hash costs as much as the most expensive real one: bcrypt's minimum is 4.
    let mut cost = 4;
    for (user, hash) in &file.basic_auth_users {
        match hash.parse::<bcrypt::HashParts>() {
            Ok(parts) => cost = cost.max(parts.get_cost()),
            Err(_) => {
                return Err(err(format!(
                    "basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\"`)"
                )))
            }
        }
    }
    let dummy_hash = if file.basic_auth_users.is_empty() {
        String::new()
    } else {
        let unguessable = fastrand::u64(..).to_string();
        bcrypt::hash(unguessable, cost).map_err(|e| err(format!("basic_auth_users: {e}")))?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tls = match file.tls_server_config {
        Some(t) => Some(TlsAcceptor::from(Arc::new(
            server_config(&t, dir).map_err(|m| err(format!("tls_server_config.{m}")))?,
        ))),
        None => None,
    };
    Ok(WebSecurity {
        tls,
        users: file.basic_auth_users,
        dummy_hash,
        verified: Mutex::default(),
    })
}

fn server_config(t: &TlsFile, dir: &Path) -> Result<ServerConfig, String> {
    let certs: Vec<CertificateDer> = read_pem(dir, "cert_file", &t.cert_file, |p| {
        CertificateDer::pem_file_iter(p)?.collect()
    })?;
    if certs.is_empty() {
        return Err(format!(
            "cert_file: no certificate in {}",
            t.cert_file.display()
        ));
    }
    let key = read_pem(dir, "key_file", &t.key_file, |p| {
        PrivateKeyDer::from_pem_file(p)
    })?;
    let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version {
        TlsVersion::TLS12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::TLS13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_protocol_versions(versions);
    let builder = match (&t.client_auth_type, &t.client_ca_file) {
        (ClientAuth::NoClientCert, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(
                "client_ca_file: required when client_auth_type verifies client certificates"
                    .into(),
            )
        }
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            let cas: Vec<CertificateDer> = read_pem(dir, "client_ca_file", ca, |p| {
                CertificateDer::pem_file_iter(p)?.collect()
            })?;
            for c in cas {
                roots.add(c).map_err(|e| format!("client_ca_file: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
            let verifier = if *auth == ClientAuth::VerifyClientCertIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client_ca_file: {e}"))?,
            )
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("key_file: does not match cert_file or is unusable: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Reads a PEM file (relative to the web config's directory), naming the field on error.
fn read_pem<T>(
    dir: &Path,
    field: &str,
    path: &Path,
    read: impl FnOnce(&Path) -> Result<T, rustls::pki_types::pem::Error>,
) -> Result<T, String> {
    let full = dir.join(path);
    read(&full).map_err(|e| format!("{field}: cannot read {}: {e}", full.display()))
}

impl WebSecurity {
    /// Whether a request with this `Authorization` header may be served.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some(header) = header else { return false };
        if self.verified.lock().unwrap().contains(header) {
            return true;
        }
        let Some((user, password)) = basic_credentials(header) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy_hash.as_str(), false),
        };
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known;
        if ok {
            let mut verified = self.verified.lock().unwrap();
            if verified.len() >= VERIFIED_CACHE {
                verified.clear();
            }
            verified.insert(header.to_string());
        }
        ok
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }
}

/// User and password of a `Basic` Authorization header.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_user(password: &str) -> WebSecurity {
        let mut users = BTreeMap::new();
        users.insert("prom".to_string(), bcrypt::hash(password, 4).unwrap());
        WebSecurity {
            tls: None,
            users,
            dummy_hash: bcrypt::hash("unguessable", 4).unwrap(),
            verified: Mutex::default(),
        }
    }

    fn basic(user: &str, password: &str) -> String {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}")
    }

    #[test]
    fn basic_auth() {
        let s = with_user("s3cret");
        assert!(s.authorized(Some(&basic("prom", "s3cret"))));
        assert!(s.authorized(Some(&basic("prom", "s3cret"))), "cached");
        assert!(!s.authorized(Some(&basic("prom", "wrong"))));
        assert!(!s.authorized(Some(&basic("nobody", "s3cret"))));
        assert!(!s.authorized(None));
        assert!(!s.authorized(Some("Bearer x")));
        assert!(WebSecurity::default().authorized(None));
    }
}
