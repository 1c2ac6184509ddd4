//! The HTTP server: `/metrics` (or `--web.telemetry-path`), `/`, `/-/healthy`, `/-/ready`,
//! `/-/reload`. Handlers read the inventory; none calls AWS.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::cli::ListenAddress;
use crate::inventory::unix_now;
use crate::inventory::{AccountState, Inventory};
use crate::metrics::collector::{self, Scope};
use crate::metrics::exposition::CONTENT_TYPE;
use crate::metrics::health::{BuildInfo, Health, IdentityStatus, Refused};
use crate::policy;
pub use crate::web::inflight::InFlight;
use crate::web::inflight::{Admitted, STALLED};
use crate::web::keys::{self, html_escape as html};
use crate::web::security::{Auth, WebConfig};

/// A client that opens a connection and never completes the TLS handshake, or never sends
/// its request headers (also between requests on a kept-alive connection), is dropped after
/// this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Request headers larger than this are refused (431). A scraper sends well under 1 KiB; 16
/// KiB leaves room for long tokens added by proxies. Go's default (1 MB, what Prometheus
/// itself allows) would let each slow client hold a megabyte before it is even authenticated.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A connection's read buffer: the headers fit, and the exporter takes no request bodies.
const MAX_BUFFER: usize = MAX_HEADER_BYTES;

/// A connection's kernel send buffer (Linux doubles it for bookkeeping).
const SEND_BUFFER: usize = 64 * 1024;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Asks the main loop to reload the configuration; the answer is the error text on failure.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

pub struct Web {
    pub inventory: Arc<Inventory>,
    pub health: Arc<Health>,
    pub build: BuildInfo,
    pub telemetry_path: String,
    pub reload: mpsc::Sender<ReloadRequest>,
    /// `--web.enable-lifecycle`: whether /-/reload may be used.
    pub lifecycle: bool,
    /// TLS and basic auth, re-read when their files change.
    pub security: WebConfig,
    /// `--web.max-connections`.
    pub max_connections: usize,
    /// `--web.write-timeout`: how long a client may take to read one response.
    pub write_timeout: Duration,
    /// `--web.max-inflight-responses`: /metrics, /keys and /keys.json responses being
    /// rendered or sent at once; each holds a chunk of its body until the client reads it.
    pub inflight: Arc<InFlight>,
    /// Set once ready: accounts added later (a reload, a discovery) do not take a serving
    /// replica out of its Service while they get their first refresh.
    pub ready: AtomicBool,
    /// When the last successful reload was, and the accounts (`id (name)`) it stopped
    /// reading: a truncated but valid file drops accounts with no other sign.
    pub removed_by_reload: Mutex<Option<(f64, Vec<String>)>>,
}

impl Web {
    /// Ready once every account known has had a refresh attempt and, with discovery, once a
    /// discovery has succeeded (until then the account list is not known).
    fn is_ready(&self) -> bool {
        if self.ready.load(Ordering::Relaxed) {
            return true;
        }
        let discovered = self
            .health
            .discovery()
            .is_none_or(|d| d.last_success.is_some());
        let ready = discovered && self.inventory.all_attempted();
        if ready {
            self.ready.store(true, Ordering::Relaxed);
        }
        ready
    }
}

/// Opens the listening socket. `:PORT` listens on `[::]` with IPv4-mapped addresses accepted,
/// so one socket serves both IP versions; a host without IPv6 gets `0.0.0.0` instead, said in
/// the log. Needs the async runtime.
pub fn listen(address: ListenAddress) -> std::io::Result<TcpListener> {
    let port = match address {
        ListenAddress::Exact(a) => return bind(a, None),
        ListenAddress::AnyInterface(port) => port,
    };
    let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match bind(any6, Some(false)) {
        Err(e) if no_ipv6(&e) => {
            tracing::info!(error = %e, "no IPv6 on this host; listening on IPv4 only");
            bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), None)
        }
        result => result,
    }
}

/// Errors that mean the host has no usable IPv6 (disabled in the kernel, no address, or
/// IPv4-mapped addresses refused), rather than a port in use or a permission problem.
fn no_ipv6(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT | libc::ENOPROTOOPT)
    )
}

/// A listening socket on `address`; `only_v6` sets IPV6_V6ONLY on an IPv6 socket.
fn bind(address: SocketAddr, only_v6: Option<bool>) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(v6) = only_v6 {
        socket.set_only_v6(v6)?;
    }
    // As tokio's own bind: a restarted exporter can take its port back at once.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Serves until `shutdown` turns true.
pub async fn serve(listener: TcpListener, web: Arc<Web>, mut shutdown: watch::Receiver<bool>) {
    let connections = Arc::new(Connections::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        // At the limit, the client that has waited longest without sending a request makes
        // room (slow or hostile); if every connection is busy, wait for one to end.
        while connections.count() >= web.max_connections {
            if connections.evict_oldest_idle() {
                web.health.count_refused(Refused::IdleEvicted);
            } else {
                connections.freed.notified().await;
            }
        }
        // Linux grows a send buffer up to 4 MiB by default: 500 clients that never read
        // would park 2 GiB of responses in the kernel. 64 KiB (128 KiB once doubled) still
        // sends 12 MB/s at 10 ms round trip.
        if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER) {
            tracing::debug!(%peer, error = %e, "setting the send buffer size failed");
        }
        let slot = connections.open();
        let web = web.clone();
        let tls = web.security.current().tls.clone();
        tokio::spawn(async move {
            let cancelled = slot.cancel.clone();
            let work = async {
                match tls {
                    None => serve_connection(stream, web, peer, &slot).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls_stream)) => {
                                serve_connection(tls_stream, web, peer, &slot).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                _ = work => {}
                _ = cancelled.notified() => tracing::debug!(%peer, "connection closed to make room"),
            }
        });
    }
}

/// The open connections, for `--web.max-connections`.
#[derive(Default)]
struct Connections {
    slots: Mutex<HashMap<u64, SlotState>>,
    next: std::sync::atomic::AtomicU64,
    freed: Notify,
}

struct SlotState {
    /// When it last waited for a request (its opening, or the end of its last request).
    idle_since: Option<Instant>,
    cancel: Arc<Notify>,
}

/// One connection's place; freed when its task ends, however it ends.
struct Slot {
    id: u64,
    connections: Arc<Connections>,
    cancel: Arc<Notify>,
}

impl Connections {
    fn count(&self) -> usize {
        self.slots.lock().unwrap().len()
    }

    fn open(self: &Arc<Self>) -> Slot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(Notify::new());
        self.slots.lock().unwrap().insert(
            id,
            SlotState {
                idle_since: Some(Instant::now()),
                cancel: cancel.clone(),
            },
        );
        Slot {
            id,
            connections: self.clone(),
            cancel,
        }
    }

    /// Closes the connection that has waited longest for a request; false if all are busy.
    fn evict_oldest_idle(&self) -> bool {
        let mut slots = self.slots.lock().unwrap();
        let oldest = slots
            .iter()
            .filter_map(|(id, s)| s.idle_since.map(|t| (t, *id)))
            .min();
        match oldest.and_then(|(_, id)| slots.remove(&id)) {
            Some(s) => {
                // notify_one keeps a permit if the task is not waiting yet.
                s.cancel.notify_one();
                true
            }
            None => false,
        }
    }

    fn set_idle(&self, id: u64, idle: bool) {
        if let Some(s) = self.slots.lock().unwrap().get_mut(&id) {
            s.idle_since = idle.then(Instant::now);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.slots.lock().unwrap().remove(&self.id);
        self.connections.freed.notify_one();
    }
}

async fn serve_connection<S>(io: S, web: Arc<Web>, peer: std::net::SocketAddr, slot: &Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connections = slot.connections.clone();
    let id = slot.id;
    let cut = slot.cancel.clone();
    let deadline = Arc::new(watch::Sender::new(None));
    let write_timeout = web.write_timeout;
    let health = web.health.clone();
    let response_deadline = deadline.clone();
    let service = hyper::service::service_fn(move |req| {
        let web = web.clone();
        let connections = connections.clone();
        let deadline = response_deadline.clone();
        let cut = cut.clone();
        async move {
            connections.set_idle(id, false);
            let resp = handle(&web, req, cut).await;
            // Waiting for its next request from now: a client that just made one is the
            // last an eviction picks.
            connections.set_idle(id, true);
            deadline.send_replace(Some(tokio::time::Instant::now() + write_timeout));
            let sending = Sending(deadline);
            Ok::<_, Infallible>(resp.map(|body| held_by(body, sending)))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_BUFFER);
    let cut_short = tokio::select! {
        served = builder.serve_connection(TokioIo::new(io), service) => match served {
            Ok(()) => false,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
                true
            }
        },
        _ = expired(deadline.subscribe()) => {
            tracing::debug!(%peer, "response not read within --web.write-timeout; connection closed");
            health.count_refused(Refused::WriteTimeout);
            true
        }
    };
    // A response dropped half-sent frees its snapshot and chunks at once, many of them when
    // stalled clients are cut off together: hand the pages back. A connection that ended
    // normally freed its chunks one by one as they were sent, and needs no trim.
    if cut_short {
        crate::metrics::process::release_freed_memory();
    }
}

/// A response being sent; ends its connection's write deadline when dropped.
struct Sending(Arc<watch::Sender<Option<tokio::time::Instant>>>);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.send_replace(None);
    }
}

/// Returns once a response has been sending past its deadline.
async fn expired(mut deadline: watch::Receiver<Option<tokio::time::Instant>>) {
    loop {
        let current = *deadline.borrow_and_update();
        let changed = match current {
            None => deadline.changed().await,
            Some(at) => tokio::select! {
                _ = tokio::time::sleep_until(at) => return,
                changed = deadline.changed() => changed,
            },
        };
        if changed.is_err() {
            return std::future::pending().await;
        }
    }
}

/// What a path serves.
#[derive(Clone, Copy, PartialEq)]
enum Route {
    Metrics,
    Landing,
    Keys,
    KeysJson,
    Healthy,
    Ready,
    Reload,
}

/// The paths the server answers besides the telemetry path.
const PATHS: [(&str, Route); 6] = [
    ("/", Route::Landing),
    ("/keys", Route::Keys),
    ("/keys.json", Route::KeysJson),
    ("/-/healthy", Route::Healthy),
    ("/-/ready", Route::Ready),
    ("/-/reload", Route::Reload),
];

/// The paths the exporter serves itself, where `--web.telemetry-path` cannot put the metrics.
pub fn own_paths() -> impl Iterator<Item = &'static str> {
    PATHS.iter().map(|(path, _)| *path)
}

impl Route {
    fn of(web: &Web, path: &str) -> Option<Route> {
        if path == web.telemetry_path {
            return Some(Route::Metrics);
        }
        PATHS.iter().find(|(p, _)| *p == path).map(|(_, r)| *r)
    }

    /// The methods it answers, as the `Allow` header lists them.
    fn allow(self) -> &'static str {
        match self {
            Route::Reload => "POST, PUT",
            _ => "GET, HEAD",
        }
    }
}

/// Answers a request; `cut` closes its connection.
async fn handle(web: &Web, req: Request<Incoming>, cut: Arc<Notify>) -> Response<Body> {
    let security = web.security.current();
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match security.authorize(header).await {
        Auth::Allowed => {}
        Auth::Denied => {
            let mut resp = text(StatusCode::UNAUTHORIZED, "Unauthorized.\n");
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"iam-key-exporter\""),
            );
            return resp;
        }
        Auth::Busy => {
            web.health.count_refused(Refused::LoginQueue);
            return retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many unverified logins at once; try again.\n",
            );
        }
    }
    let Some(route) = Route::of(web, req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "Not found.\n");
    };
    let method = req.method();
    if !route.allow().split(", ").any(|m| m == method.as_str()) {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("Method not allowed; use {}.\n", route.allow()),
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(route.allow()));
        return resp;
    }
    match route {
        Route::Metrics | Route::Keys | Route::KeysJson => inventory_view(web, route, &req, cut).await,
        Route::Landing => landing_page(web),
        Route::Healthy => text(StatusCode::OK, "Healthy.\n"),
        Route::Ready if web.is_ready() => text(StatusCode::OK, "Ready.\n"),
        Route::Ready => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: the account list is not known yet (discovery), or some accounts have not been read yet.\n",
        ),
        Route::Reload if !web.lifecycle => text(
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled (--web.enable-lifecycle); SIGHUP reloads too.\n",
        ),
        Route::Reload => reload(web).await,
    }
}

/// `/metrics`, `/keys` and `/keys.json`, at most `--web.max-inflight-responses` at once
/// (`InFlight`); `cut` closes this response's connection if it stalls and its place is needed.
async fn inventory_view(
    web: &Web,
    route: Route,
    req: &Request<Incoming>,
    cut: Arc<Notify>,
) -> Response<Body> {
    let Some((place, how)) = web.inflight.admit(cut).await else {
        tracing::debug!("too many responses in flight, all being read; answered 503");
        web.health.count_refused(Refused::InFlight);
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many responses being sent at once (--web.max-inflight-responses); try again.\n",
        );
    };
    if how == Admitted::StalledCut {
        tracing::debug!(stalled = ?STALLED, "a response not read for this long cut to make room");
        web.health.count_refused(Refused::StalledCut);
    }
    let resp = match route {
        Route::Metrics => metrics(web, req),
        _ => key_view(web, req, route == Route::KeysJson),
    };
    // The place lives as long as the body (until sent, or its connection is dropped), and
    // each chunk the client takes marks it moving.
    resp.map(|body| {
        body.map_frame(move |frame| {
            place.moved();
            frame
        })
        .boxed()
    })
}

/// The body, keeping `guard` alive until hyper drops it (sent, or the connection gone).
fn held_by<G: Send + Sync + 'static>(body: Body, guard: G) -> Body {
    body.map_frame(move |frame| {
        let _guard = &guard;
        frame
    })
    .boxed()
}

fn metrics(web: &Web, req: &Request<Incoming>) -> Response<Body> {
    let chunks = collector::render(
        &web.inventory.accounts(),
        web.inventory.standards(),
        &web.health,
        Scope::Server,
        unix_now().floor(),
    );
    let gzip = accepts_gzip(req);
    let body: Chunks = if gzip {
        Box::new(Gzip::new(chunks))
    } else {
        Box::new(chunks)
    };
    let mut resp = Response::new(streamed(body));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    resp
}

/// A body made as it is sent, one chunk at a time.
type Chunks = Box<dyn Iterator<Item = Vec<u8>> + Send + Sync>;

fn streamed(chunks: Chunks) -> Body {
    StreamBody::new(stream::iter(
        chunks.map(|c| Ok(Frame::data(Bytes::from(c)))),
    ))
    .boxed()
}

/// True when the client lists `gzip` in Accept-Encoding without `q=0`.
fn accepts_gzip<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';').map(str::trim);
            let coding = it.next().unwrap_or("");
            let refused =
                it.any(|p| p.replace(' ', "").trim_start_matches("q=").parse::<f32>() == Ok(0.0));
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Compresses a stream of chunks, yielding compressed output as it becomes available.
struct Gzip<I> {
    inner: I,
    encoder: Option<GzEncoder<Vec<u8>>>,
}

impl<I> Gzip<I> {
    fn new(inner: I) -> Self {
        Gzip {
            inner,
            encoder: Some(GzEncoder::new(Vec::new(), flate2::Compression::fast())),
        }
    }
}

impl<I: Iterator<Item = Vec<u8>>> Iterator for Gzip<I> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            let encoder = self.encoder.as_mut()?;
            match self.inner.next() {
                Some(chunk) => {
                    // Writing into a Vec cannot fail.
                    let _ = encoder.write_all(&chunk);
                    let out = std::mem::take(encoder.get_mut());
                    if !out.is_empty() {
                        return Some(out);
                    }
                }
                None => return self.encoder.take().and_then(|e| e.finish().ok()),
            }
        }
    }
}

/// `/keys` and `/keys.json`: a page of the inventory's credentials, rendered as it is sent.
fn key_view(web: &Web, req: &Request<Incoming>, as_json: bool) -> Response<Body> {
    let page = keys::Page::select(
        web.inventory.accounts(),
        web.inventory.standards(),
        keys::Query::parse(req.uri().query()),
        unix_now(),
    );
    let (chunks, content_type): (Chunks, _) = if as_json {
        (Box::new(page.json()), "application/json")
    } else {
        (Box::new(page.html()), "text/html; charset=utf-8")
    };
    let mut resp = Response::new(streamed(chunks));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

async fn reload(web: &Web) -> Response<Body> {
    let (tx, rx) = oneshot::channel();
    if web.reload.send(tx).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Shutting down.\n");
    }
    match rx.await {
        Ok(Ok(())) => text(StatusCode::OK, "Configuration reloaded.\n"),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("Reload failed; the running configuration is kept.\n{e}\n"),
        ),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "Shutting down.\n"),
    }
}

fn landing_page(web: &Web) -> Response<Body> {
    let mut rows = String::new();
    let now = unix_now();
    let standards = web.inventory.standards();
    for s in web.inventory.accounts() {
        let state = match (s.attempted, s.up) {
            (false, _) => "pending",
            (true, true) => "up",
            (true, false) => "down",
        };
        let last = s.last_success.map_or("never".to_string(), |t| {
            format!("{}s ago", (now - t).max(0.0).round())
        });
        let mut error = s
            .last_error
            .as_ref()
            .map_or(String::new(), |e| e.to_string());
        let undecided = s.snapshot.as_ref().map_or(0, |snap| {
            policy::undecided_users(&standards.policy, &s.account, snap)
        });
        if undecided > 0 {
            error.push_str(&format!(
                " ({undecided} users get the policy's default limits: a rule needs their tags, which could not be read)"
            ));
        }
        let keys = s.snapshot.as_ref().map_or(0, |snap| snap.keys.len());
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"{state}\">{state}</td><td>{keys}</td><td>{last}</td><td>{}</td><td>{}</td></tr>\n",
            html(&s.account.id),
            html(&s.account.name),
            html(&not_covered(&s)),
            html(&error),
        ));
    }
    let discovery = web.health.discovery().map_or(String::new(), |d| {
        let state = match (d.attempted, d.up) {
            (false, _) => "pending".to_string(),
            (true, true) => "up".to_string(),
            (true, false) => "down".to_string(),
        };
        let last = d.last_success.map_or("never".to_string(), |t| {
            format!("{}s ago", (now - t).max(0.0).round())
        });
        let found: Vec<String> = d.by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let error = d
            .last_error
            .as_ref()
            .map_or(String::new(), |e| format!("; last error: {e}"));
        let held = d.held.map_or(String::new(), |h| {
            let left = h.confirmations - h.consecutive;
            format!(
                "<p class=\"down\">Account list held back: {} found {} ACTIVE \
                 account(s) where the list in force has {}, a drop of more than \
                 shrink_guard.max_drop. The accounts of the list in force are still read; the new \
                 list is applied if {left} more discovery(ies) in a row find so few \
                 (shrink_guard.confirmations: {}). A wrong OU id, a role that cannot see the organization or an outage of AWS \
                 Organizations looks like this.</p>\n",
                if h.consecutive == 1 {
                    "the last discovery".to_string()
                } else {
                    format!("the last {} discoveries in a row", h.consecutive)
                },
                h.found,
                h.applied,
                h.confirmations
            )
        });
        format!(
            "<p>Discovery (AWS Organizations): <span class=\"{state}\">{state}</span>, last success {last}, found {}{}</p>\n{held}",
            html(&found.join(", ")),
            html(&error)
        )
    });
    let identity = match web.health.identity() {
        IdentityStatus::Known(id) => format!(
            "<p>AWS identity: <code>{}</code> (account {}); member roles must trust it.</p>\n",
            html(&id.arn),
            html(&id.account_id)
        ),
        IdentityStatus::Failed(e) => format!(
            "<p>AWS identity: <span class=\"down\">unknown</span>: {}</p>\n",
            html(&format!("{}: {}", e.code, e.message))
        ),
        IdentityStatus::Unknown => {
            "<p>AWS identity: <span class=\"pending\">asking</span></p>\n".into()
        }
    };
    let removed = match &*web.removed_by_reload.lock().unwrap() {
        Some((at, accounts)) if !accounts.is_empty() => format!(
            "<p>The reload {}s ago <span class=\"down\">removed {} account(s)</span>, no longer read: {}.</p>\n",
            (now - at).max(0.0).round(),
            accounts.len(),
            html(&accounts.join(", "))
        ),
        _ => String::new(),
    };
    let shard = web.health.shard;
    let sharding = if shard.total > 1 {
        format!(
            "<p>Shard {} of {} (indexes from 0).</p>\n",
            shard.index, shard.total
        )
    } else {
        String::new()
    };
    let rules: Vec<&str> = standards
        .policy
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let policy = format!(
        "<p>Policy: {}{}.</p>\n",
        html(&policy::limits_text(&standards.policy.defaults)),
        if rules.is_empty() {
            String::new()
        } else {
            html(&format!(" by default; rules {}", rules.join(", ")))
        }
    );
    let page = format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>IAM Key Exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
.up{{color:#080}}.down{{color:#b00}}.pending{{color:#888}}</style></head>
<body><h1>IAM Key Exporter</h1>
<p>Version {version} (revision {revision}). <a href="{path}">Metrics</a> ·
<a href="/keys">Access keys</a> · <a href="/-/healthy">Health</a> · <a href="/-/ready">Readiness</a></p>
{identity}{sharding}{discovery}{policy}{removed}<table><tr><th>Account</th><th>Name</th><th>State</th><th>Keys</th><th>Last success</th><th>Not covered</th><th>Last error</th></tr>
{rows}</table></body></html>
"#,
        version = html(web.build.version),
        revision = html(web.build.revision),
        path = html(&web.telemetry_path),
    );
    let mut resp = Response::new(Full::new(Bytes::from(page)).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// What an account's data does not cover, in words: the alerts about it cannot fire there.
fn not_covered(s: &AccountState) -> String {
    let (source, failed): (Vec<_>, Vec<_>) = s
        .coverage()
        .into_iter()
        .filter(|(_, covered)| !covered)
        .map(|(kind, _)| kind)
        .partition(|kind| kind.set_by_source());
    let mut parts = Vec::new();
    if !source.is_empty() {
        let kinds: Vec<_> = source.iter().map(|k| k.describe()).collect();
        parts.push(format!(
            "{}: not covered by this source ({})",
            kinds.join(", "),
            s.account.source.name()
        ));
    }
    if !failed.is_empty() {
        let kinds: Vec<_> = failed.iter().map(|k| k.describe()).collect();
        parts.push(format!("{}: reading them failed", kinds.join(", ")));
    }
    parts.join("; ")
}

/// A refusal for now: the client may ask again in a second (`Retry-After: 1`).
fn retry_later(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = text(status, body);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(accept: &str) -> Request<()> {
        Request::builder()
            .header(header::ACCEPT_ENCODING, accept)
            .body(())
            .unwrap()
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&req("gzip")));
        assert!(accepts_gzip(&req("deflate, gzip;q=0.5")));
        assert!(!accepts_gzip(&req("gzip;q=0")));
        assert!(!accepts_gzip(&req("identity")));
    }

    #[test]
    fn gzip_stream_round_trips() {
        use std::io::Read;
        let chunks = vec![b"hello ".to_vec(), b"world".to_vec()];
        let compressed: Vec<u8> = Gzip::new(chunks.into_iter()).flatten().collect();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
    }
}
