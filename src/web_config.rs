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
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{self, ConfigError, Map, Problems, Value};

struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_auth_type: ClientAuth,
    client_ca_file: Option<PathBuf>,
    min_version: TlsVersion,
}

#[derive(Default, PartialEq, Clone, Copy)]
enum ClientAuth {
    #[default]
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Default, PartialEq, Clone, Copy)]
enum TlsVersion {
    #[default]
    TLS12,
    TLS13,
}

/// The whole file: the TLS server configuration (certificates read, relative to `dir`) and
/// the bcrypt hash of each user.
fn read_file(
    root: Value,
    dir: &Path,
    p: &mut Problems,
) -> Option<(Option<ServerConfig>, BTreeMap<String, String>)> {
    let mut top = root.map(p)?;
    let tls = top.get("tls_server_config").and_then(|v| tls(&v, dir, p));
    let mut users = BTreeMap::new();
    let entries = top.get("basic_auth_users").and_then(|v| v.entries(p));
    for (user, hash) in entries.unwrap_or_default() {
        let Some(text) = hash.string(p) else { continue };
        match text.parse::<bcrypt::HashParts>() {
            Ok(h) if (4..=31).contains(&h.get_cost()) => {
                users.insert(user.as_str().to_string(), text);
            }
            _ => p.add(
                hash.pos(),
                &hash.path,
                "not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
            ),
        }
    }
    top.finish(p);
    Some((tls, users))
}

fn tls(v: &Value, dir: &Path, p: &mut Problems) -> Option<ServerConfig> {
    let mut m = v.map(p)?;
    let mut files = Vec::new();
    let mut path = |key: &'static str, m: &mut Map, p: &mut Problems| {
        let v = m.get(key)?;
        let file = PathBuf::from(v.string(p)?);
        files.push((key, v.pos(), v.path.clone()));
        Some(file)
    };
    let cert_file = path("cert_file", &mut m, p);
    let key_file = path("key_file", &mut m, p);
    let client_ca_file = path("client_ca_file", &mut m, p);
    let client_auth_type = m
        .get("client_auth_type")
        .map_or(Some(ClientAuth::default()), |v| {
            v.parse(p, |s| match s {
                "NoClientCert" => Ok(ClientAuth::NoClientCert),
                "VerifyClientCertIfGiven" => Ok(ClientAuth::VerifyClientCertIfGiven),
                "RequireAndVerifyClientCert" => Ok(ClientAuth::RequireAndVerifyClientCert),
                _ => Err(format!(
                    "{s:?} is not supported: expected NoClientCert, VerifyClientCertIfGiven or \
                 RequireAndVerifyClientCert"
                )),
            })
        });
    let min_version = m
        .get("min_version")
        .map_or(Some(TlsVersion::default()), |v| {
            v.parse(p, |s| match s {
                "TLS12" => Ok(TlsVersion::TLS12),
                "TLS13" => Ok(TlsVersion::TLS13),
                _ => Err(format!("{s:?} is not supported: expected TLS12 or TLS13")),
            })
        });
    for (key, value) in [("cert_file", &cert_file), ("key_file", &key_file)] {
        if value.is_none() && !files.iter().any(|(k, _, _)| *k == key) {
            p.add(m.pos(), &format!("{}.{key}", m.path()), "missing");
        }
    }
    let (at, path) = (m.pos(), m.path().to_string());
    m.finish(p);
    let file = TlsFile {
        cert_file: cert_file?,
        key_file: key_file?,
        client_auth_type: client_auth_type?,
        client_ca_file,
        min_version: min_version?,
    };
    // A file that cannot be used is reported at the field naming it.
    server_config(&file, dir)
        .map_err(|(key, message)| {
            let (at, path) = files
                .iter()
                .find(|(k, _, _)| *k == key)
                .map_or((at, format!("{path}.{key}")), |(_, at, path)| {
                    (*at, path.clone())
                });
            p.add(at, &path, message)
        })
        .ok()
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
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let (tls, users) = config::document(&text, path, |root, p| read_file(root, dir, p))?;
    // The dummy hash costs as much as the most expensive real one (costs were checked).
    let cost = users
        .values()
        .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
        .map(|h| h.get_cost())
        .fold(4, u32::max);
    let dummy_hash = if users.is_empty() {
        String::new()
    } else {
        let unguessable = fastrand::u64(..).to_string();
        bcrypt::hash(unguessable, cost).unwrap_or_default()
    };
    Ok(WebSecurity {
        tls: tls.map(|c| TlsAcceptor::from(Arc::new(c))),
        users,
        dummy_hash,
        verified: Mutex::default(),
    })
}

/// The rustls configuration; an error names the field whose file or value is unusable.
fn server_config(t: &TlsFile, dir: &Path) -> Result<ServerConfig, (&'static str, String)> {
    let certs: Vec<CertificateDer> = read_pem(dir, "cert_file", &t.cert_file, |p| {
        CertificateDer::pem_file_iter(p)?.collect()
    })?;
    if certs.is_empty() {
        return Err((
            "cert_file",
            format!("no certificate in {}", t.cert_file.display()),
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
            return Err((
                "client_ca_file",
                "missing: client_auth_type verifies client certificates against it".into(),
            ))
        }
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            let cas: Vec<CertificateDer> = read_pem(dir, "client_ca_file", ca, |p| {
                CertificateDer::pem_file_iter(p)?.collect()
            })?;
            for c in cas {
                roots
                    .add(c)
                    .map_err(|e| ("client_ca_file", format!("unusable certificate: {e}")))?;
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
                    .map_err(|e| ("client_ca_file", format!("unusable: {e}")))?,
            )
        }
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
        (
            "key_file",
            format!("does not match cert_file or is unusable: {e}"),
        )
    })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Reads a PEM file (relative to the web config's directory), naming the field on error.
fn read_pem<T>(
    dir: &Path,
    field: &'static str,
    path: &Path,
    read: impl FnOnce(&Path) -> Result<T, rustls::pki_types::pem::Error>,
) -> Result<T, (&'static str, String)> {
    let full = dir.join(path);
    read(&full).map_err(|e| (field, format!("cannot read {}: {e}", full.display())))
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
