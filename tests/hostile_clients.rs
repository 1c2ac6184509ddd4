//! Clients that do not behave: many half-sent requests, oversized headers, a brute force of
//! basic-auth passwords. The exporter's memory stays bounded and a normal scrape still
//! answers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

const A: &str = "111111111111";

/// Resident memory of a process, in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Sends `request` on a new connection and returns the status line of the answer.
fn raw(address: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_thousand_half_sent_requests_keep_memory_bounded_and_scrapes_answered() {
    let moto = Moto::start();
    moto.seed(A, users("u", 50, 1));
    let exporter = Exporter::start(&moto, &format!("accounts:\n  - id: \"{A}\"\n"));
    exporter.wait_ready(Duration::from_secs(30));
    let pid = exporter.pid();
    let before = rss_mib(pid);

    // 1,000 clients each send 64 KB of headers and never finish: an exporter that buffered
    // them (hyper's default allows ~400 KB) would hold 64 MB for them alone.
    let flood = |size: usize| -> Vec<TcpStream> {
        let partial = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: {}",
            "a".repeat(size)
        );
        (0..1000)
            .map(|_| {
                let mut s = TcpStream::connect(exporter.address()).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                let _ = s.write_all(partial.as_bytes());
                s
            })
            .collect()
    };
    let oversized = flood(64 * 1024);
    std::thread::sleep(Duration::from_secs(1));
    let with_oversized = rss_mib(pid);
    drop(oversized);
    // 1,000 more send 15 KB (under the limit) and wait: more than --web.max-connections, so
    // the ones waiting longest are closed to make room.
    let hostile = flood(15_000);
    std::thread::sleep(Duration::from_secs(1));
    let during = rss_mib(pid).max(with_oversized);

    // A scraper still gets its answer, and an oversized header is refused.
    let started = std::time::Instant::now();
    let m = exporter.scrape();
    let took = started.elapsed();
    assert_eq!(m.find("aws_iam_access_key_age_seconds", &[]).len(), 50);
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    assert!(
        raw(exporter.address(), big.as_bytes()).contains(" 431 "),
        "an oversized header must be refused"
    );
    drop(hostile);
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_mib(pid);
    eprintln!(
        "RSS {before:.1} MiB idle, {with_oversized:.1} MiB with 1,000 oversized headers, \
         {during:.1} MiB at most with 1,000 half-sent requests, {after:.1} MiB after they \
         closed; a scrape took {took:?} meanwhile"
    );
    assert!(
        during < 64.0,
        "RSS {during:.1} MiB under 1,000 hostile connections"
    );
    assert!(
        after < 64.0,
        "RSS {after:.1} MiB after the hostile connections closed"
    );
}

#[test]
fn unknown_methods_are_refused_with_the_allowed_ones() {
    let moto = Moto::start();
    moto.seed(A, users("u", 1, 1));
    let exporter = Exporter::start(&moto, &format!("accounts:\n  - id: \"{A}\"\n"));
    for (method, path, status, allow) in [
        ("DELETE", "/metrics", 405, Some("GET, HEAD")),
        ("POST", "/", 405, Some("GET, HEAD")),
        ("PUT", "/-/healthy", 405, Some("GET, HEAD")),
        ("GET", "/-/reload", 405, Some("POST, PUT")),
        ("HEAD", "/metrics", 200, None),
        ("GET", "/nothing", 404, None),
    ] {
        let mut resp = agent()
            .run(
                ureq::http::Request::builder()
                    .method(method)
                    .uri(format!("{}{path}", exporter.url))
                    .body(())
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            resp.headers().get("allow").map(|v| v.to_str().unwrap()),
            allow,
            "{method} {path}"
        );
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        if method == "HEAD" {
            assert!(body.is_empty(), "HEAD has no body");
        }
    }
}

/// Opens a connection with a 4 KiB receive buffer, asks for `path` and never reads.
fn stalled_reader(address: &str, path: &str) -> TcpStream {
    let address: std::net::SocketAddr = address.parse().unwrap();
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&address.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    s
}

#[test]
fn readers_that_never_read_are_capped_cut_for_a_scraper_and_disconnected() {
    let moto = Moto::start();
    moto.seed(A, users("u", 2000, 1));
    let exporter = Exporter::start_with(
        &moto,
        &format!("source: credential_report\naccounts:\n  - id: \"{A}\"\n"),
        &[
            "--web.write-timeout",
            "10s",
            "--web.max-inflight-responses",
            "4",
        ],
    );
    exporter.wait_ready(Duration::from_secs(60));
    let size = exporter.get("/metrics").1.len();
    eprintln!("exposition: {size} bytes");
    assert!(
        size > 256 << 10,
        "the exposition ({size} bytes) must outgrow socket buffers"
    );

    // Ten clients ask and, past the status line, never read. Four hold the in-flight
    // responses; each later one waits until the response that moved longest ago has taken
    // nothing for 250 ms and takes its place (that reader's connection is closed), so none is
    // refused and at most four responses are held. (While every response is being read, a
    // newcomer is refused after 250 ms: the inflight module's unit tests.)
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut s = stalled_reader(exporter.address(), "/metrics");
        let mut status = [0u8; 12];
        s.read_exact(&mut status).unwrap();
        assert_eq!(
            &status,
            b"HTTP/1.1 200",
            "{}",
            String::from_utf8_lossy(&status)
        );
        stalled.push(s);
    }
    let (status, _) = exporter.get("/-/healthy");
    assert_eq!(status, 200, "the cap covers only inventory views");

    // A well-behaved scrape is answered in the place of one of them: not refused, and not
    // after the write timeout frees the cap.
    let (status, body) = exporter.get("/metrics");
    assert_eq!(status, 200);
    let m = Metrics::parse(&body);
    assert_eq!(m.find("aws_iam_access_key_age_seconds", &[]).len(), 2000);
    let refused_by = |m: &Metrics, reason: &str| {
        m.get("iam_key_exporter_http_refused_total", &[("reason", reason)])
            .unwrap_or(-1.0)
    };
    assert_eq!(
        (
            refused_by(&m, "stalled_cut"),
            refused_by(&m, "write_timeout")
        ),
        (7.0, 0.0),
        "six readers and the scrape each took a stalled reader's place"
    );
    assert_eq!(refused_by(&m, "inflight"), 0.0);

    // Every stalled reader is cut and counted: for a new response (the scrapes below take
    // the places of the last three) or at the write timeout.
    let m = wait_for("every stalled reader cut", Duration::from_secs(30), || {
        let m = exporter.scrape();
        let cut = refused_by(&m, "stalled_cut") + refused_by(&m, "write_timeout");
        (cut == stalled.len() as f64).then_some(m)
    });
    assert_eq!(refused_by(&m, "inflight"), 0.0);
    // Each stalled reader finds its connection closed with its response cut short.
    for mut s in stalled.iter() {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut sink = [0u8; 65536];
        let mut received = 0;
        let closed = loop {
            match s.read(&mut sink) {
                Ok(0) => break true,
                Ok(n) => received += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(closed, "a stalled reader must be disconnected");
        assert!(
            received < size,
            "the response ({received} of {size} bytes) must be cut short"
        );
    }
    assert_eq!(refused_by(&m, "login_queue"), 0.0);
}
