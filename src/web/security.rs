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
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
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
) -> Option<(Option<Tls>, BTreeMap<String, String>)> {
    let mut top = root.map(p)?;
    let tls = top.get("tls_server_config").and_then(|v| tls(&v, dir, p));
    let mut users = BTreeMap::new();
    let entries = top.get("basic_auth_users").and_then(|v| v.entries(p));
    for (user, hash) in entries.unwrap_or_default() {
        let Some(text) = hash.string(p) else { continue };
        match text.parse::<bcrypt::HashParts>() {
            Ok(h) if (4..=31).contains(&h.get_cost()) => {
                users.insert(user.text.clone(), text);
            }
            _ => p.add(
                hash.pos(),
                &hash.path(),
                "not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
            ),
        }
    }
    top.finish(p);
    Some((tls, users))
}

/// The TLS configuration and the files it was read from.
type Tls = (ServerConfig, Vec<PathBuf>);

fn tls(v: &Value, dir: &Path, p: &mut Problems) -> Option<Tls> {
    let mut m = v.map(p)?;
    let mut files = Vec::new();
    let mut path = |key: &'static str, m: &mut Map, p: &mut Problems| {
        let v = m.get(key)?;
        let file = PathBuf::from(v.string(p)?);
        files.push((key, v.pos(), v.path()));
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
    let read_from = [
        Some(&file.cert_file),
        Some(&file.key_file),
        file.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|f| dir.join(f))
    .collect();
    // A file that cannot be used is reported at the field naming it.
    server_config(&file, dir)
        .map(|c| (c, read_from))
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
pub struct WebSecurity {
    pub tls: Option<TlsAcceptor>,
    users: BTreeMap<String, String>,
    /// A hash of no password anyone has, at the highest cost of the configured ones, checked
    /// for unknown users so that a wrong user name takes as long as a wrong password.
    dummy_hash: String,
    /// Credentials already checked against their bcrypt hash, by a digest of user, password
    /// and hash (never the header itself): bcrypt is slow on purpose, and a scraper sends the
    /// same header every few seconds.
    checked: Mutex<Checked>,
    /// bcrypt runs one at a time (as exporter-toolkit does), so a brute force costs at most
    /// one core; `waiting` bounds the queue in front of it.
    bcrypt: Semaphore,
    waiting: AtomicUsize,
    /// The certificate, key and CA files, watched for changes with the web config file.
    files: Vec<PathBuf>,
}

#[derive(Default)]
struct Checked {
    good: HashSet<[u8; 32]>,
    bad: HashSet<[u8; 32]>,
}

/// At most this many distinct good credentials are remembered; a separate, larger set of
/// bad ones, so a brute force cannot push a scraper's good credentials out.
const GOOD_CACHE: usize = 64;
const BAD_CACHE: usize = 4096;
/// More unverified credentials than this waiting for bcrypt are answered 429 at once.
const BCRYPT_QUEUE: usize = 16;

/// The answer to a request's credentials.
#[derive(Debug, PartialEq)]
pub enum Auth {
    Allowed,
    Denied,
    /// Too many unverified credentials are waiting for bcrypt (a brute force): try later.
    Busy,
}

impl Default for WebSecurity {
    fn default() -> Self {
        WebSecurity::new(None, BTreeMap::new(), String::new(), Vec::new())
    }
}

pub fn load(path: &Path) -> Result<WebSecurity, ConfigError> {
    let text = config::read_text(path)?;
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
    let (tls, mut files) = match tls {
        Some((config, files)) => (Some(TlsAcceptor::from(Arc::new(config))), files),
        None => (None, Vec::new()),
    };
    files.insert(0, path.to_path_buf());
    Ok(WebSecurity::new(tls, users, dummy_hash, files))
}

/// The rustls configuration; an error names the field whose file or value is unusable.
fn server_config(t: &TlsFile, dir: &Path) -> Result<ServerConfig, (&'static str, String)> {
    let certs: Vec<CertificateDer> = read_pem(dir, "cert_file", &t.cert_file, |pem| {
        CertificateDer::pem_slice_iter(pem).collect()
    })?;
    if certs.is_empty() {
        return Err((
            "cert_file",
            format!("no certificate in {}", t.cert_file.display()),
        ));
    }
    let key = read_pem(dir, "key_file", &t.key_file, PrivateKeyDer::from_pem_slice)?;
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
            let cas: Vec<CertificateDer> = read_pem(dir, "client_ca_file", ca, |pem| {
                CertificateDer::pem_slice_iter(pem).collect()
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

/// Reads a PEM file (relative to the web config's directory), naming the field on error;
/// like the configuration, only a regular file of bounded size, so a FIFO cannot hang it.
fn read_pem<T>(
    dir: &Path,
    field: &'static str,
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, rustls::pki_types::pem::Error>,
) -> Result<T, (&'static str, String)> {
    let full = dir.join(path);
    let pem = config::read_bytes(&full).map_err(|e| (field, e.to_string()))?;
    parse(&pem).map_err(|e| (field, format!("cannot read {}: {e}", full.display())))
}

impl WebSecurity {
    fn new(
        tls: Option<TlsAcceptor>,
        users: BTreeMap<String, String>,
        dummy_hash: String,
        files: Vec<PathBuf>,
    ) -> Self {
        WebSecurity {
            tls,
            users,
            dummy_hash,
            checked: Mutex::default(),
            bcrypt: Semaphore::new(1),
            waiting: AtomicUsize::new(0),
            files,
        }
    }

    /// Whether a request with this `Authorization` header may be served.
    pub async fn authorize(self: &Arc<Self>, header: Option<&str>) -> Auth {
        if self.users.is_empty() {
            return Auth::Allowed;
        }
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return Auth::Denied;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if let Some(known) = self.cached(&key) {
            return known;
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= BCRYPT_QUEUE {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Auth::Busy;
        }
        let permit = self.bcrypt.acquire().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        // The same credentials may have been checked while this request waited.
        if let Some(known) = self.cached(&key) {
            return known;
        }
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false)
                && known;
        drop(permit);
        let mut checked = self.checked.lock().unwrap();
        let set = if ok {
            &mut checked.good
        } else {
            &mut checked.bad
        };
        if set.len() >= if ok { GOOD_CACHE } else { BAD_CACHE } {
            set.clear();
        }
        set.insert(key);
        if ok {
            Auth::Allowed
        } else {
            Auth::Denied
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Auth> {
        let checked = self.checked.lock().unwrap();
        if checked.good.contains(key) {
            Some(Auth::Allowed)
        } else if checked.bad.contains(key) {
            Some(Auth::Denied)
        } else {
            None
        }
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }
}

/// The web configuration in force, re-read when its file or the certificate files it names
/// change (checked at most once a second, when a connection arrives), so a rotated
/// certificate (cert-manager) or a new password applies to new connections without a reload.
/// The check and the re-read run on a blocking thread, never in a request: a new bcrypt hash
/// of cost 17 takes seconds to match with a dummy, and connections keep the configuration in
/// force until the new one is ready.
pub struct WebConfig {
    path: Option<PathBuf>,
    shared: Arc<Shared>,
}

struct Shared {
    current: RwLock<Arc<WebSecurity>>,
    watch: Mutex<Watch>,
}

struct Watch {
    digest: u64,
    checked: Instant,
    /// A check is running; connections do not start another.
    checking: bool,
    /// Counts reloads: a check that began before one must not put its older result in force.
    reloads: u64,
}

const WATCH_EVERY: Duration = Duration::from_secs(1);

impl WebConfig {
    pub fn new(path: Option<PathBuf>, security: WebSecurity) -> Self {
        let digest = files_digest(&security.files);
        WebConfig {
            path,
            shared: Arc::new(Shared {
                current: RwLock::new(Arc::new(security)),
                watch: Mutex::new(Watch {
                    digest,
                    checked: Instant::now(),
                    checking: false,
                    reloads: 0,
                }),
            }),
        }
    }

    /// The security for a new connection or request; starts a check of the files when one
    /// is due, in the background.
    pub fn current(&self) -> Arc<WebSecurity> {
        let current = self.shared.current.read().unwrap().clone();
        let Some(path) = &self.path else {
            return current;
        };
        let mut watch = self.shared.watch.lock().unwrap();
        if watch.checking || watch.checked.elapsed() < WATCH_EVERY {
            return current;
        }
        watch.checking = true;
        let reloads = watch.reloads;
        drop(watch);
        let (shared, path, files) = (self.shared.clone(), path.clone(), current.files.clone());
        tokio::task::spawn_blocking(move || shared.check(&path, &files, reloads));
        current
    }

    /// Puts a freshly loaded configuration in force (a reload).
    pub fn replace(&self, security: WebSecurity) {
        let mut watch = self.shared.watch.lock().unwrap();
        watch.digest = files_digest(&security.files);
        watch.reloads += 1;
        *self.shared.current.write().unwrap() = Arc::new(security);
    }
}

impl Shared {
    /// Re-reads the web configuration if `files` changed since they were last read.
    fn check(&self, path: &Path, files: &[PathBuf], reloads: u64) {
        let digest = files_digest(files);
        let changed = digest != self.watch.lock().unwrap().digest;
        let next = changed.then(|| {
            tracing::info!(path = %path.display(), "web configuration files changed; reading them, connections keep the current ones meanwhile");
            load(path)
        });
        let mut watch = self.watch.lock().unwrap();
        watch.checking = false;
        watch.checked = Instant::now();
        if watch.reloads != reloads {
            return;
        }
        // A bad file is reported once, not at every check.
        watch.digest = digest;
        match next {
            Some(Ok(next)) => {
                watch.digest = files_digest(&next.files);
                *self.current.write().unwrap() = Arc::new(next);
                tracing::info!(path = %path.display(), "web configuration files changed; new connections use them");
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "web configuration files changed but cannot be used; keeping the current ones");
            }
            None => {}
        }
    }
}

/// A digest of the files' content; a file that cannot be read (or is no regular file, or is
/// too large) counts as empty.
pub fn files_digest(paths: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for path in paths {
        config::read_bytes(path).unwrap_or_default().hash(&mut h);
    }
    h.finish()
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

    fn with_user(password: &str, cost: u32) -> Arc<WebSecurity> {
        let mut users = BTreeMap::new();
        users.insert("prom".to_string(), bcrypt::hash(password, cost).unwrap());
        let dummy = bcrypt::hash("unguessable", cost).unwrap();
        Arc::new(WebSecurity::new(None, users, dummy, Vec::new()))
    }

    fn basic(user: &str, password: &str) -> String {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}")
    }

    #[tokio::test]
    async fn basic_auth() {
        let s = with_user("s3cret", 4);
        assert_eq!(
            s.authorize(Some(&basic("prom", "s3cret"))).await,
            Auth::Allowed
        );
        assert_eq!(
            s.authorize(Some(&basic("prom", "s3cret"))).await,
            Auth::Allowed
        );
        assert_eq!(
            s.authorize(Some(&basic("prom", "wrong"))).await,
            Auth::Denied
        );
        assert_eq!(
            s.authorize(Some(&basic("nobody", "s3cret"))).await,
            Auth::Denied
        );
        assert_eq!(s.authorize(None).await, Auth::Denied);
        assert_eq!(s.authorize(Some("Bearer x")).await, Auth::Denied);
        assert_eq!(
            Arc::new(WebSecurity::default()).authorize(None).await,
            Auth::Allowed
        );
        let checked = s.checked.lock().unwrap();
        assert_eq!((checked.good.len(), checked.bad.len()), (1, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_unknown_passwords_is_queued_then_turned_away() {
        // Cost 10: each check takes tens of milliseconds, far longer than queueing 64.
        let s = with_user("s3cret", 10);
        let tries: Vec<_> = (0..64)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.authorize(Some(&basic("prom", &format!("guess{i}"))))
                        .await
                })
            })
            .collect();
        let mut busy = 0;
        for t in tries {
            match t.await.unwrap() {
                Auth::Busy => busy += 1,
                Auth::Denied => {}
                Auth::Allowed => panic!("a wrong password was allowed"),
            }
        }
        assert!(busy > 0, "no request was turned away");
        // Known good credentials need no bcrypt at all once checked.
        assert_eq!(
            s.authorize(Some(&basic("prom", "s3cret"))).await,
            Auth::Allowed
        );
    }
}
