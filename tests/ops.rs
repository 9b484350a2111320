//! SPEC 12 end to end: `/metrics`, `/healthz`, `/readyz`, the
//! `staticFolder` and the playground's place beside it, against a real
//! server on 127.0.0.1:0. HTTP requests go over a plain TCP stream, byte
//! for byte as written, because a URL library would tidy away the `..` and
//! `%2e%2e` that the traversal tests must send.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use ssocket::protocol::{encode_parts, EventType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PLUGS: &[(&str, &str)] = &[
    ("echo.rhai", "fn echo(msg, yield_msg) { yield_msg(#{ payload: msg.payload }); }"),
    ("throws.rhai", "fn throws(msg, yield_msg) { throw \"boom\"; }"),
    ("custom.rhai", "fn custom(msg, yield_msg) { throw #{ error: \"my_own_code\", message: \"mine\" }; }"),
    ("broken.rhai", "fn broken(msg, yield_msg) {\n    let = ;\n}\n"),
];

/// An HTTP answer as read off the wire.
#[derive(Debug)]
struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// `GET target` exactly as given (no normalisation), `Connection: close`.
async fn get(server: &TestServer, target: &str) -> Http {
    get_at(&server.running.addr.to_string(), target).await
}

async fn get_at(addr: &str, target: &str) -> Http {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read answer");
        raw
    };
    let raw = tokio::time::timeout(REPLY_TIMEOUT, fetch).await.unwrap_or_else(|_| panic!("GET {target}: no answer"));
    parse(&raw).unwrap_or_else(|| panic!("GET {target}: not an HTTP answer: {:?}", String::from_utf8_lossy(&raw)))
}

fn parse(raw: &[u8]) -> Option<Http> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = unchunk(&body)?;
    }
    Some(Http { status, headers, body })
}

fn unchunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// The scrape's text, checked for the OpenMetrics content type and ending.
async fn scrape(server: &TestServer) -> String {
    let r = get(server, "/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")), "{r:?}");
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "a whole OpenMetrics exposition: {text}");
    text
}

/// The value of the series `name{labels}` exactly as written in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// The series (names with labels) a scrape holds, values left out.
fn series(text: &str) -> BTreeSet<String> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned())).collect()
}

// ------------------------------------------------------------ /metrics

#[tokio::test]
async fn metrics_count_connections_messages_replies_errors_and_run_times_by_plug() {
    let server = start_with_plugs(PLUGS, |_| {}).await;
    let mut a = server.ready_client().await;
    let _b = server.ready_client().await;
    for i in 0..3 {
        let r = a.request("echo", json!({ "i": i })).await;
        assert_eq!(r.payload, json!({ "i": i }));
    }
    // A tagged request: its reply, then END.
    a.send("echo#7", json!(0)).await;
    assert_eq!(a.recv().await.event_type, EventType::MESSAGE);
    assert_eq!(a.recv().await.event_type, EventType::END);
    assert_eq!(a.request("nobody", json!({})).await.event_type, EventType::NOT_FOUND);
    assert_eq!(a.request("throws", json!({})).await.payload["error"], json!("script_error"));
    assert_eq!(a.request("broken", json!({})).await.payload["error"], json!("compile_error"));
    assert_eq!(a.request("custom", json!({})).await.payload["error"], json!("my_own_code"));

    let text = scrape(&server).await;
    assert_eq!(must(&text, "ssocket_connections"), 2.0);
    assert_eq!(must(&text, "ssocket_connections_opened_total"), 2.0);
    assert_eq!(must(&text, r#"ssocket_messages_received_total{event="echo"}"#), 4.0);
    assert_eq!(must(&text, r#"ssocket_messages_received_total{event="throws"}"#), 1.0);
    // The ping of each ready_client, and "nobody".
    assert_eq!(must(&text, r#"ssocket_messages_received_total{event="not_found"}"#), 3.0);
    assert_eq!(must(&text, r#"ssocket_replies_total{type="MESSAGE"}"#), 4.0);
    assert_eq!(must(&text, r#"ssocket_replies_total{type="END"}"#), 1.0);
    assert_eq!(must(&text, r#"ssocket_replies_total{type="NOT_FOUND"}"#), 3.0);
    assert_eq!(must(&text, r#"ssocket_replies_total{type="ERROR"}"#), 3.0);
    assert_eq!(must(&text, r#"ssocket_errors_total{code="script_error"}"#), 1.0);
    assert_eq!(must(&text, r#"ssocket_errors_total{code="compile_error"}"#), 1.0);
    assert_eq!(must(&text, r#"ssocket_errors_total{code="custom"}"#), 1.0);
    assert_eq!(must(&text, r#"ssocket_errors_total{code="rate_limited"}"#), 0.0, "every code is listed, at 0");
    assert!(!text.contains("my_own_code"), "a plug's own code is not a label: {text}");
    assert_eq!(must(&text, r#"ssocket_plug_run_seconds_count{plug="echo"}"#), 4.0);
    assert!(must(&text, r#"ssocket_plug_run_seconds_sum{plug="echo"}"#) > 0.0, "{text}");
    assert_eq!(must(&text, r#"ssocket_plug_run_seconds_bucket{le="+Inf",plug="echo"}"#), 4.0);
    assert!(must(&text, "ssocket_plug_compile_errors_total") >= 1.0, "broken.rhai failed to compile: {text}");
    assert!(must(&text, "ssocket_resident_memory_bytes") > 1_000_000.0, "{text}");
    for name in [
        "ssocket_plug_reloads_total",
        "ssocket_rate_limited_total",
        "ssocket_slow_client_cutoffs_total",
        "ssocket_outbound_queued_bytes",
        "ssocket_timer_ticks_skipped_total",
        "ssocket_plugs_in_flight",
    ] {
        assert!(value(&text, name).is_some(), "{name} is exported: {text}");
    }
    assert!(value(&text, "ssocket_redis_up").is_none(), "no Redis series without cluster.redis: {text}");
    // Each HELP line says what a series means.
    for l in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(l.split(' ').count() > 4, "a HELP with a sentence: {l}");
    }

    a.close().await;
    assert!(server.wait_connected(1, REPLY_TIMEOUT).await);
    let text = scrape(&server).await;
    assert_eq!(must(&text, "ssocket_connections"), 1.0);
    assert_eq!(must(&text, "ssocket_connections_opened_total"), 2.0);
    server.stop().await;
}

#[tokio::test]
async fn rate_limits_reloads_and_timer_skips_are_counted() {
    let (_init_dir, init) = init_file(
        r#"fn INIT(server) {
    server.every(20, || sleep(200));
}"#,
    );
    let server = start_with_plugs(PLUGS, |s| {
        s.limits.messages_per_second = 5;
        s.init_file = init;
    })
    .await;
    let mut c = server.client().await;
    // A burst of 5 passes, the rest is refused (not yet enough to be cut off).
    for _ in 0..9 {
        c.send("echo", json!({})).await;
    }
    let mut limited = 0;
    for _ in 0..9 {
        let r = c.recv().await;
        if r.payload.get("error") == Some(&json!("rate_limited")) {
            limited += 1;
        }
    }
    assert!(limited > 0, "some messages were over the limit");
    write_plug(&server.plugs_dir(), "echo.rhai", "fn echo(msg, yield_msg) { yield_msg(#{ payload: 2 }); }");
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        text = scrape(&server).await;
        if value(&text, "ssocket_plug_reloads_total") >= Some(1.0)
            && value(&text, "ssocket_timer_ticks_skipped_total") >= Some(1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(must(&text, "ssocket_plug_reloads_total") >= 1.0, "{text}");
    assert!(must(&text, "ssocket_timer_ticks_skipped_total") >= 1.0, "{text}");
    assert_eq!(must(&text, "ssocket_rate_limited_total"), f64::from(limited));
    assert_eq!(must(&text, r#"ssocket_errors_total{code="rate_limited"}"#), f64::from(limited));
    server.stop().await;
}

#[tokio::test]
async fn a_hundred_thousand_distinct_unknown_events_add_no_series() {
    const N: usize = 100_000;
    let server = start_with_plugs(PLUGS, |s| s.limits.messages_per_second = 0).await;
    let mut c = server.ready_client().await;
    let before = scrape(&server).await;
    let Client { ws } = server.ready_client().await;
    let (mut sink, mut stream) = futures::StreamExt::split(ws);
    let writer = tokio::spawn(async move {
        use futures::SinkExt;
        for i in 0..N {
            let frame = encode_parts(EventType::MESSAGE, &format!("unknown-{i}"), b"{}").expect("encodable");
            sink.feed(tokio_tungstenite::tungstenite::Message::binary(frame)).await.expect("send");
            if i % 1000 == 999 {
                sink.flush().await.expect("flush");
            }
        }
        sink.flush().await.expect("flush");
        sink
    });
    let mut not_found = 0;
    {
        use futures::StreamExt;
        while not_found < N {
            let item = tokio::time::timeout(REPLY_TIMEOUT, stream.next()).await.expect("replies keep coming");
            let Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) = item else { panic!("closed: {item:?}") };
            let m = ssocket::protocol::decode(&b).expect("well-formed");
            assert_eq!(m.event_type, EventType::NOT_FOUND, "{m:?}");
            not_found += 1;
        }
    }
    let _sink = writer.await.expect("writer");
    let after = scrape(&server).await;
    assert_eq!(series(&before), series(&after), "the set of series is unchanged");
    assert_eq!(
        must(&after, r#"ssocket_messages_received_total{event="not_found"}"#)
            - must(&before, r#"ssocket_messages_received_total{event="not_found"}"#),
        N as f64 + 1.0,
        "every unknown event and the flooding client's own ping counted as not_found"
    );
    assert!(!after.contains("unknown-"), "no event name a client chose is a label");
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn metrics_answer_while_thousands_of_clients_connect_and_disconnect() {
    const CLIENTS: usize = 2_000;
    const AT_ONCE: usize = 100;
    let server = start_with_plugs(PLUGS, |_| {}).await;
    let url = server.url();
    let addr = server.running.addr.to_string();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut scrapes = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let r = get_at(&addr, "/metrics").await;
                assert_eq!(r.status, 200, "{r:?}");
                let text = r.text();
                assert!(text.ends_with("# EOF\n"), "{text}");
                let connected = must(&text, "ssocket_connections");
                assert!((0.0..=CLIENTS as f64).contains(&connected), "{connected}");
                scrapes += 1;
            }
            scrapes
        })
    };
    let mut waves = Vec::new();
    for wave in 0..CLIENTS / AT_ONCE {
        let url = url.clone();
        waves.push(tokio::spawn(async move {
            let clients = futures::future::join_all((0..AT_ONCE).map(|_| Client::connect(&url))).await;
            for (i, mut c) in clients.into_iter().enumerate() {
                if (wave + i) % 2 == 0 {
                    c.send("echo", json!({ "wave": wave })).await;
                    assert_eq!(c.recv().await.payload, json!({ "wave": wave }));
                    c.close().await;
                } else {
                    drop(c); // gone without a close handshake
                }
            }
        }));
        if waves.len() >= 4 {
            waves.remove(0).await.expect("wave");
        }
    }
    for w in waves {
        w.await.expect("wave");
    }
    assert!(server.wait_connected(0, Duration::from_secs(20)).await, "every client left");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let scrapes = scraper.await.expect("scraper");
    assert!(scrapes > 0);
    let text = scrape(&server).await;
    assert_eq!(must(&text, "ssocket_connections"), 0.0);
    assert_eq!(must(&text, "ssocket_connections_opened_total"), CLIENTS as f64);
    assert_eq!(must(&text, r#"ssocket_messages_received_total{event="echo"}"#), (CLIENTS / 2) as f64);
    server.stop().await;
}

// ------------------------------------------------------------ health

#[tokio::test]
async fn healthz_answers_and_readyz_turns_503_when_shutting_down() {
    let server = start_with_plugs(PLUGS, |_| {}).await;
    let h = get(&server, "/healthz").await;
    assert_eq!((h.status, h.json()), (200, json!({ "status": "ok" })));
    assert!(h.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{h:?}");
    let r = get(&server, "/readyz").await;
    assert_eq!((r.status, r.json()), (200, json!({ "status": "ready" })));

    server.running.app.begin_draining();
    let r = get(&server, "/readyz").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json(), json!({ "status": "unavailable", "reason": "shutting down" }));
    assert_eq!(get(&server, "/healthz").await.status, 200, "the process still answers");
    server.stop().await;
}

#[tokio::test]
async fn readiness_says_starting_until_the_server_listens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = ssocket::app::App::new(settings(dir.path())).expect("app");
    assert_eq!(app.readiness(), Err("starting"));
    app.begin_serving(None);
    assert_eq!(app.readiness(), Ok(()));
}

#[tokio::test]
async fn operators_routes_are_there_with_the_playground_off_and_only_answer_get() {
    let server = start_with_plugs(PLUGS, |s| s.playground = false).await;
    assert_eq!(get(&server, "/healthz").await.status, 200);
    assert_eq!(get(&server, "/readyz").await.status, 200);
    assert!(scrape(&server).await.contains("ssocket_connections"));
    let addr = server.running.addr.to_string();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(
            format!("POST /metrics HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let r = parse(&raw).expect("an answer");
    assert!(r.status == 405 || r.status == 404, "{r:?}");
    server.stop().await;
}

// ------------------------------------------------------------ static files

/// A site: pages of several types, a subfolder with and without an index,
/// a secret beside it and symlinks pointing at it.
fn site() -> (tempfile::TempDir, tempfile::TempDir) {
    let outside = tempfile::tempdir().expect("temp dir");
    std::fs::write(outside.path().join("secret.txt"), "TOP SECRET").expect("secret");
    let site = tempfile::tempdir().expect("temp dir");
    let root = site.path();
    let files: &[(&str, &str)] = &[
        ("index.html", "<!doctype html><title>home</title>"),
        ("style.css", "body { color: red }"),
        ("app.js", "export const x = 1;"),
        ("data.json", "{\"a\": 1}"),
        ("logo.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>"),
        ("notes.txt", "plain"),
        ("docs/index.html", "<p>docs</p>"),
        ("docs/page one.html", "<p>one</p>"),
        ("empty/readme.md", "# no index"),
    ];
    for (path, body) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, body).expect("write");
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).expect("dir symlink");
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("secret.txt")).expect("file symlink");
        std::os::unix::fs::symlink(root.join("notes.txt"), root.join("inside.txt")).expect("inner symlink");
    }
    (site, outside)
}

async fn static_server(root: &Path, playground: bool) -> TestServer {
    let root = root.to_path_buf();
    start_with_plugs(PLUGS, move |s| {
        s.static_folder = Some(root);
        s.playground = playground;
    })
    .await
}

#[tokio::test]
async fn static_files_have_their_content_types_and_folders_their_index() {
    let (site, _outside) = site();
    let server = static_server(site.path(), true).await;
    let cases: &[(&str, &str, &str)] = &[
        ("/", "text/html", "<title>home</title>"),
        ("/index.html", "text/html", "<title>home</title>"),
        ("/style.css", "text/css", "color: red"),
        ("/app.js", "javascript", "export const x"),
        ("/data.json", "application/json", "\"a\": 1"),
        ("/logo.svg", "image/svg+xml", "<svg"),
        ("/notes.txt", "text/plain", "plain"),
        ("/docs/", "text/html", "<p>docs</p>"),
        ("/docs/page%20one.html", "text/html", "<p>one</p>"),
        ("/inside.txt", "text/plain", "plain"),
    ];
    for (path, kind, body) in cases {
        let r = get(&server, path).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(r.header("content-type").is_some_and(|t| t.contains(kind)), "{path}: {kind} wanted: {r:?}");
        assert!(r.text().contains(body), "{path}: {r:?}");
    }
    // The WebSocket still lives at `/`.
    let mut c = server.ready_client().await;
    assert_eq!(c.request("echo", json!(1)).await.payload, json!(1));
    server.stop().await;
}

#[tokio::test]
async fn nothing_outside_the_static_folder_can_be_reached() {
    let (site, _outside) = site();
    let server = static_server(site.path(), true).await;
    let attempts = [
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2E%2E/etc/passwd",
        "/docs/%2e%2e/%2e%2e/etc/passwd",
        "/..%2fsecret.txt",
        "/docs/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/%252e%252e/secret.txt",
        "/.%2e/secret.txt",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/escape/secret.txt",
        "/secret.txt",
        "/docs/%00",
    ];
    for path in attempts {
        let r = get(&server, path).await;
        assert!(r.status == 404 || r.status == 400, "{path}: {r:?}");
        assert!(!r.text().contains("TOP SECRET"), "{path} leaked the secret");
        assert!(!r.text().contains("root:"), "{path} leaked /etc/passwd");
    }
    for missing in ["/missing.html", "/docs/missing", "/empty/", "/style.css/x"] {
        assert_eq!(get(&server, missing).await.status, 404, "{missing}");
    }
    // Still serving afterwards.
    assert_eq!(get(&server, "/style.css").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn with_a_static_folder_the_playground_moves_to_slash_playground() {
    let (site, _outside) = site();
    let server = static_server(site.path(), true).await;
    let p = get(&server, "/playground").await;
    assert_eq!(p.status, 200, "{p:?}");
    assert_eq!(p.text(), ssocket::http::PLAYGROUND_HTML);
    let js = get(&server, "/ssocket.js").await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").is_some_and(|t| t.contains("javascript")), "{js:?}");
    assert!(get(&server, "/").await.text().contains("<title>home</title>"), "/ is the app's page");
    assert_eq!(get(&server, "/api/plugs").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn the_playground_disabled_is_404_with_or_without_a_static_folder() {
    let plain = start_with_plugs(PLUGS, |s| s.playground = false).await;
    let root = get(&plain, "/").await;
    assert_eq!(root.status, 400, "`/` is only the WebSocket: {root:?}");
    for path in ["/playground", "/ssocket.js", "/api/plugs", "/api/rooms"] {
        assert_eq!(get(&plain, path).await.status, 404, "{path} with the playground off");
    }
    plain.stop().await;

    let (site, _outside) = site();
    let server = static_server(site.path(), false).await;
    assert_eq!(get(&server, "/playground").await.status, 404);
    assert_eq!(get(&server, "/api/plugs").await.status, 404);
    assert!(get(&server, "/").await.text().contains("<title>home</title>"));
    // The app's page still gets its client module.
    assert_eq!(get(&server, "/ssocket.js").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_static_folder_that_does_not_exist_is_refused_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = settings(dir.path());
    s.static_folder = Some(dir.path().join("no-such-folder"));
    let err = match ssocket::server::start(s).await {
        Ok(_) => panic!("a missing staticFolder must not start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("staticFolder") && err.contains("no-such-folder"), "{err}");
}

// ------------------------------------------------------------ server.address()

#[tokio::test]
async fn a_timer_reads_the_servers_own_metrics_through_server_address() {
    let (_init_dir, init) = init_file(
        r#"fn INIT(server) {
    let handle = server;
    server.every(50, || {
        let addr = handle.address();
        let r = http::get(`http://${addr}/metrics`);
        let line = r.body.split("\n").filter(|l| l.starts_with("ssocket_connections ")).pop();
        store::set("seen", #{ addr: addr, status: r.status, line: line });
    });
}"#,
    );
    let server = start_with_plugs(
        &[("seen.rhai", "fn seen(msg, yield_msg) { yield_msg(#{ payload: store::get(\"seen\") }); }")],
        |s| {
            s.init_file = init;
            s.http.allow = vec!["127.0.0.1".into()];
        },
    )
    .await;
    let mut c = server.ready_client().await;
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    let seen = loop {
        let r = c.request("seen", json!({})).await;
        if r.payload.get("line") == Some(&json!("ssocket_connections 1")) {
            break r.payload;
        }
        assert!(tokio::time::Instant::now() < deadline, "the timer never saw one connection: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen["addr"], json!(server.running.addr.to_string()));
    assert_eq!(seen["status"], json!(200));
    server.stop().await;
}
