//! SPEC 9.3 end to end: `http::` from plugs against real HTTP servers this
//! test starts on 127.0.0.1 (a warp server with ordinary routes, a second
//! warp server that is never allowed, and a hand-written TCP server for the
//! odd cases: a server that never answers, raw header case, a body with no
//! length).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use serde_json::{json, Value};
use ssocket::config::Settings;
use ssocket::protocol::EventType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::Filter;
use warp::Reply as _;

/// How long a test waits for something to happen before it fails.
const WAIT: Duration = Duration::from_secs(10);

/// `http.maxResponseBytes` in the tests that check it.
const CAP: usize = 1000;

/// A password the tests put in URLs.
const SECRET: &str = "s3cr3t-pw";

/// The JSON document `/json` serves.
fn json_doc() -> Value {
    json!({"a": 1, "list": [1, 2, "x"], "nested": {"b": true, "none": null}, "f": 1.5})
}

// ------------------------------------------------------------ local servers

/// What the warp test server remembers.
struct WebState {
    /// Its own address (redirect targets).
    me: SocketAddr,
    /// The server redirects leave for (not allowed).
    outside: Option<SocketAddr>,
    /// Every path requested, in order.
    hits: Mutex<Vec<String>>,
    /// `/gate` requests being served now, and the most seen at once.
    current: AtomicUsize,
    max_seen: AtomicUsize,
    /// `/gate` requests wait for a permit the test hands out.
    gate: Semaphore,
    /// Each `/gate` request announces itself here.
    arrived: mpsc::UnboundedSender<()>,
}

struct Web {
    addr: SocketAddr,
    state: Arc<WebState>,
    arrivals: mpsc::UnboundedReceiver<()>,
}

impl Web {
    async fn start(outside: Option<SocketAddr>) -> Web {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind web server");
        let addr = listener.local_addr().expect("web addr");
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let state = Arc::new(WebState {
            me: addr,
            outside,
            hits: Mutex::new(Vec::new()),
            current: AtomicUsize::new(0),
            max_seen: AtomicUsize::new(0),
            gate: Semaphore::new(0),
            arrived,
        });
        let shared = state.clone();
        let routes =
            warp::method().and(warp::path::full()).and(warp::header::headers_cloned()).and(warp::body::bytes()).then(
                move |method: Method, path: warp::path::FullPath, headers: HeaderMap, body: Bytes| {
                    let state = shared.clone();
                    async move { handle(state, method, path.as_str().to_owned(), headers, body).await }
                },
            );
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        Web { addr, state, arrivals }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn hits(&self) -> Vec<String> {
        self.state.hits.lock().unwrap().clone()
    }

    /// Wait for the next `/gate` request to arrive.
    async fn arrival(&mut self) {
        tokio::time::timeout(WAIT, self.arrivals.recv())
            .await
            .expect("a /gate request arrives in time")
            .expect("web server alive");
    }

    /// Whether a `/gate` request arrives within `wait`.
    async fn arrives_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.arrivals.recv()).await.is_ok()
    }

    /// Let one waiting `/gate` request answer.
    fn release(&self) {
        self.state.gate.add_permits(1);
    }
}

fn respond(status: u16, content_type: &str, body: impl Into<String>) -> warp::reply::Response {
    let mut resp = body.into().into_response();
    *resp.status_mut() = StatusCode::from_u16(status).expect("status");
    resp.headers_mut().insert("content-type", HeaderValue::from_str(content_type).expect("content type"));
    resp
}

fn redirect(to: String) -> warp::reply::Response {
    let mut resp = respond(302, "text/plain", "moved");
    resp.headers_mut().insert("location", HeaderValue::from_str(&to).expect("location"));
    resp
}

async fn handle(
    state: Arc<WebState>,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
) -> warp::reply::Response {
    state.hits.lock().unwrap().push(path.clone());
    match path.as_str() {
        "/json" => respond(200, "application/json", json_doc().to_string()),
        "/text" => respond(200, "text/plain", "hello text"),
        "/echo" => {
            let mut seen: HashMap<String, String> = HashMap::new();
            for (name, value) in &headers {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                seen.entry(name.as_str().to_owned())
                    .and_modify(|v| {
                        v.push_str(", ");
                        v.push_str(&value);
                    })
                    .or_insert(value);
            }
            let doc = json!({
                "method": method.as_str(),
                "headers": seen,
                "body": String::from_utf8_lossy(&body),
            });
            respond(200, "application/json", doc.to_string())
        }
        "/status/404" => respond(404, "text/plain", "not here"),
        "/status/500" => respond(500, "application/json", r#"{"oops": true}"#),
        "/headers" => {
            let mut resp = respond(200, "text/plain", "headers");
            let h = resp.headers_mut();
            h.append("x-multi", HeaderValue::from_static("one"));
            h.append("x-multi", HeaderValue::from_static("two"));
            h.insert("x-single", HeaderValue::from_static("Value"));
            resp
        }
        "/redirect-ok" => redirect(format!("http://{}/json", state.me)),
        "/redirect-relative" => redirect("/text".to_owned()),
        "/redirect-creds-http" => redirect(format!("http://user:{SECRET}@{}/json", state.me)),
        "/redirect-creds-ftp" => redirect(format!("ftp://user:{SECRET}@{}/x", state.me)),
        "/redirect-out" => {
            let outside = state.outside.expect("an outside server");
            redirect(format!("http://{outside}/json"))
        }
        "/big" => respond(200, "text/plain", "x".repeat(CAP * 5)),
        "/exact" => respond(200, "text/plain", "y".repeat(CAP)),
        "/big-chunked" => {
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                (0..5).map(|_| Ok(Bytes::from(vec![b'z'; CAP / 2]))).collect();
            warp::reply::stream(futures::stream::iter(chunks)).into_response()
        }
        "/gate" => {
            let now = state.current.fetch_add(1, Ordering::SeqCst) + 1;
            state.max_seen.fetch_max(now, Ordering::SeqCst);
            let _ = state.arrived.send(());
            state.gate.acquire().await.expect("gate open").forget();
            state.current.fetch_sub(1, Ordering::SeqCst);
            respond(200, "application/json", r#"{"gate": "passed"}"#)
        }
        _ => respond(404, "text/plain", "no such route"),
    }
}

/// What the hand-written server saw.
#[derive(Debug, PartialEq)]
enum RawEvent {
    Accepted(String),
    Closed(String),
}

/// A TCP server speaking just enough HTTP/1.1 for the odd cases:
/// `/never` reads the request and never answers (it reports when the
/// client closes the connection), `/mixed-case` answers with header names
/// in mixed case, `/big-no-length` answers a body larger than [`CAP`] with
/// no Content-Length, ended by closing the connection.
struct Raw {
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<RawEvent>,
}

impl Raw {
    async fn start() -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw server");
        let addr = listener.local_addr().expect("raw addr");
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(raw_connection(stream, tx.clone()));
            }
        });
        Raw { addr, events }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The path of the next request that arrives (skipping closes).
    async fn next_accepted(&mut self) -> String {
        loop {
            if let RawEvent::Accepted(path) = self.next_event().await {
                return path;
            }
        }
    }

    async fn next_event(&mut self) -> RawEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("the raw server sees something in time")
            .expect("raw server alive")
    }
}

async fn raw_connection(mut stream: TcpStream, events: mpsc::UnboundedSender<RawEvent>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let _ = events.send(RawEvent::Accepted(path.clone()));
    match path.as_str() {
        "/never" => {
            // Keep reading (and never write) until the client goes away.
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = events.send(RawEvent::Closed(path));
        }
        "/mixed-case" => {
            let response = "HTTP/1.1 200 OK\r\nX-Mixed-Case: Yes\r\nContent-Type: Text/Plain\r\n\
                            Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        "/big-no-length" => {
            let mut response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n".to_vec();
            response.extend(std::iter::repeat_n(b'w', CAP * 5));
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
        }
        _ => {
            let response = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(response.as_bytes()).await;
        }
    }
}

// ------------------------------------------------------------------- plugs

/// A helper both `fetch` and `raw` use: the request the payload describes.
const PERFORM: &str = r#"
private fn perform(p) {
    switch p.op {
        "get" => http::get(p.url),
        "get_opts" => http::get(p.url, p.options),
        "post" => http::post(p.url, p.body),
        "post_opts" => http::post(p.url, p.body, p.options),
        "request" => http::request(p.options),
        _ => { throw `unknown op ${p.op}`; }
    }
}
"#;

/// `fetch` catches what `http::` throws and yields it as `caught`.
const FETCH: &str = r#"
fn fetch(msg, yield_msg) {
    try {
        let r = perform(msg.payload);
        yield_msg(#{ payload: #{ ok: r } });
    } catch (e) {
        yield_msg(#{ payload: #{ caught: e } });
    }
}
"#;

/// `raw` lets it through: the client gets an ERROR.
const RAW: &str = r#"
fn raw(msg, yield_msg) {
    let r = perform(msg.payload);
    yield_msg(#{ payload: #{ ok: r } });
}
"#;

/// `check` tests the caught error inside the plug, as a plug author would.
const CHECK: &str = r#"
fn check(msg, yield_msg) {
    try {
        http::get(msg.payload.url);
        yield_msg(#{ payload: #{ threw: false } });
    } catch (e) {
        yield_msg(#{ payload: #{
            threw: true,
            code_is_denied: e.error == "http_denied",
            message_starts_with_code: e.message.starts_with("http_denied"),
        } });
    }
}
"#;

const ECHO: &str = "fn echo(msg, yield_msg) { yield_msg(#{ payload: msg.payload }); }";

/// Calls out only when asked to, after a first reply, through a module it
/// finds only while running (a path computed then). A plug whose source or
/// imports show a call out never runs on its connection's task; nothing
/// shows this one's, so its first call out happens there.
const MAYBE: &str = r#"
fn maybe(msg, yield_msg) {
    yield_msg(#{ payload: "before" });
    if "url" in msg.payload {
        let path = "_lib/" + "call";
        import path as net;
        yield_msg(#{ payload: net::status(msg.payload.url) });
    }
}
"#;
const CALL: &str = "fn status(url) { http::get(url).status }";

/// Where the test's servers are, for `http.allow`.
struct Places {
    web: String,
    outside: String,
    raw: String,
}

struct Fixture {
    server: TestServer,
    web: Web,
    outside: Web,
    raw: Raw,
}

/// Start the local servers, then ssocket with the plugs above and the
/// settings `tweak` picks (it sees the servers' origins).
async fn fixture(tweak: impl FnOnce(&mut Settings, &Places)) -> Fixture {
    let outside = Web::start(None).await;
    let web = Web::start(Some(outside.addr)).await;
    let raw = Raw::start().await;
    let places = Places { web: web.origin(), outside: outside.origin(), raw: raw.origin() };
    let fetch = format!("{PERFORM}\n{FETCH}");
    let raw_plug = format!("{PERFORM}\n{RAW}");
    let plugs: Vec<(&str, &str)> = vec![
        ("fetch.rhai", &fetch),
        ("raw.rhai", &raw_plug),
        ("check.rhai", CHECK),
        ("echo.rhai", ECHO),
        ("maybe.rhai", MAYBE),
        ("_lib/call.rhai", CALL),
    ];
    let server = start_with_plugs(&plugs, |s| tweak(s, &places)).await;
    Fixture { server, web, outside, raw }
}

/// Run `fetch` with `request` and return its payload (`ok` or `caught`).
async fn fetch(c: &mut Client, request: Value) -> Value {
    let r = c.request("fetch", request).await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::MESSAGE, "fetch"), "{r:?}");
    r.payload
}

/// The response map of a successful `fetch`.
fn response(payload: &Value) -> &Value {
    assert!(payload.get("ok").is_some(), "expected a response, got {payload}");
    &payload["ok"]
}

/// The error a `fetch` caught: its code is `code`; `http_*` messages start
/// with the code. Returns the message.
fn caught(payload: &Value, code: &str) -> String {
    let e = payload.get("caught").unwrap_or_else(|| panic!("expected a caught {code} error, got {payload}"));
    assert_eq!(e["error"], json!(code), "caught {e}");
    let message = e["message"].as_str().unwrap_or_else(|| panic!("the error has a message: {e}")).to_owned();
    if code.starts_with("http_") {
        assert!(message.starts_with(code), "the message starts with {code}: {message}");
    }
    message
}

/// An uncaught failure: the ERROR payload for the `raw` plug.
async fn raw_error(c: &mut Client, request: Value, code: &str) -> Value {
    let r = c.request("raw", request).await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::ERROR, "raw"), "{r:?}");
    assert_eq!(r.payload["error"], json!(code), "{r:?}");
    assert_eq!(r.payload["plug"], json!("raw"), "{r:?}");
    assert_eq!(r.payload["function"], json!("raw"), "{r:?}");
    assert!(r.payload["line"].as_u64().is_some_and(|l| l >= 1), "a line: {r:?}");
    assert!(r.payload["message"].as_str().is_some_and(|m| !m.is_empty()), "a message: {r:?}");
    r.payload
}

fn get(url: String) -> Value {
    json!({"op": "get", "url": url})
}

/// The server still serves: the same client and a new one both get echoes.
async fn assert_still_serving(server: &TestServer, c: &mut Client) {
    let r = c.request("echo", json!({"same": "client"})).await;
    assert_eq!((r.event_type, r.payload), (EventType::MESSAGE, json!({"same": "client"})));
    let mut other = server.client().await;
    let r = other.request("echo", json!({"other": "client"})).await;
    assert_eq!((r.event_type, r.payload), (EventType::MESSAGE, json!({"other": "client"})));
}

fn allow_web(s: &mut Settings, p: &Places) {
    s.http.allow = vec![p.web.clone(), p.raw.clone()];
}

/// As [`allow_web`], with time limits long enough that only a client
/// leaving ends a call to `/never`.
fn allow_web_long_waits(s: &mut Settings, p: &Places) {
    allow_web(s, p);
    s.http.timeout_ms = 60_000;
    s.limits.timeout_ms = 60_000;
}

/// `leaver`'s plug is waiting on the raw server's `/never`: the client
/// leaves, and the call is cancelled (its connection closed).
async fn leave_mid_call(f: &mut Fixture, leaver: Client) {
    leaver.close().await;
    wait_until(|| f.server.running.app.plugs.in_flight() == 0).await;
    assert_eq!(f.raw.next_event().await, RawEvent::Closed("/never".into()), "the call was cancelled");
}

/// Wait (up to [`WAIT`]) until `ok` holds.
/// Send `payload` to `event` and wait until the run is over; its reply.
/// A plug whose run finished without waiting has settled: its next runs
/// may go on the connection's own task (`plugs::direct`).
async fn settle(server: &TestServer, c: &mut Client, event: &str, payload: Value) -> Value {
    let reply = c.request(event, payload).await.payload;
    assert!(server.wait_plugs_idle(WAIT).await, "the {event} run did not finish within {WAIT:?}");
    reply
}

async fn wait_until(mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_returns_status_headers_body_and_json() {
    let f = fixture(allow_web).await;
    let mut c = f.server.client().await;

    let p = fetch(&mut c, get(f.web.url("/json"))).await;
    let r = response(&p);
    assert_eq!(r["status"], json!(200), "{r}");
    assert_eq!(r["headers"]["content-type"], json!("application/json"), "{r}");
    let body = r["body"].as_str().expect("body is text");
    assert_eq!(serde_json::from_str::<Value>(body).expect("body is the JSON text"), json_doc());
    assert_eq!(r["json"], json_doc(), "json is the parsed body");

    let p = fetch(&mut c, get(f.web.url("/text"))).await;
    let r = response(&p);
    assert_eq!((&r["status"], &r["body"]), (&json!(200), &json!("hello text")), "{r}");
    assert_eq!(r["json"], Value::Null, "json is () for a body that is not JSON: {r}");
    assert_eq!(r["headers"]["content-type"], json!("text/plain"), "{r}");

    // A non-2xx status is a normal return, not an error.
    let p = fetch(&mut c, get(f.web.url("/status/404"))).await;
    let r = response(&p);
    assert_eq!((&r["status"], &r["body"], &r["json"]), (&json!(404), &json!("not here"), &Value::Null), "{r}");
    let p = fetch(&mut c, get(f.web.url("/status/500"))).await;
    let r = response(&p);
    assert_eq!((&r["status"], &r["json"]), (&json!(500), &json!({"oops": true})), "{r}");

    // http::request with only a url is a GET; the result has exactly these fields.
    let p = fetch(&mut c, json!({"op": "request", "options": {"url": f.web.url("/json")}})).await;
    let r = response(&p);
    let mut keys: Vec<&str> = r.as_object().expect("a map").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["body", "headers", "json", "status"], "{r}");
    assert_eq!(r["json"], json_doc());

    // An uncaught success is an ordinary reply too.
    let r = c.request("raw", get(f.web.url("/text"))).await;
    assert_eq!((r.event_type, &r.payload["ok"]["body"]), (EventType::MESSAGE, &json!("hello text")), "{r:?}");

    assert_eq!(f.web.hits(), ["/json", "/text", "/status/404", "/status/500", "/json", "/text"]);
    assert_still_serving(&f.server, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_are_lowercase_and_repeated_headers_joined() {
    let f = fixture(allow_web).await;
    let mut c = f.server.client().await;

    // The raw server writes the names in mixed case on the wire.
    let p = fetch(&mut c, get(f.raw.url("/mixed-case"))).await;
    let r = response(&p);
    let headers = r["headers"].as_object().expect("headers is a map");
    for name in headers.keys() {
        assert_eq!(name, &name.to_ascii_lowercase(), "header names are lowercase: {r}");
    }
    assert_eq!(headers.get("x-mixed-case"), Some(&json!("Yes")), "{r}");
    assert_eq!(headers.get("content-type"), Some(&json!("Text/Plain")), "values keep their case: {r}");
    assert_eq!(headers.get("set-cookie"), Some(&json!("a=1, b=2")), "{r}");
    assert_eq!(r["body"], json!("ok"));

    let p = fetch(&mut c, get(f.web.url("/headers"))).await;
    let r = response(&p);
    assert_eq!(r["headers"]["x-multi"], json!("one, two"), "{r}");
    assert_eq!(r["headers"]["x-single"], json!("Value"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_sends_maps_as_json_and_strings_as_they_are() {
    let f = fixture(allow_web).await;
    let mut c = f.server.client().await;

    let body = json!({"name": "x", "list": [1, true, null], "deep": {"k": "v"}});
    let p = fetch(&mut c, json!({"op": "post", "url": f.web.url("/echo"), "body": body})).await;
    let echo = &response(&p)["json"];
    assert_eq!(echo["method"], json!("POST"), "{echo}");
    assert_eq!(echo["headers"]["content-type"], json!("application/json"), "{echo}");
    let sent: Value = serde_json::from_str(echo["body"].as_str().expect("body")).expect("the body is JSON");
    assert_eq!(sent, body);

    // An array is JSON too.
    let p = fetch(&mut c, json!({"op": "post", "url": f.web.url("/echo"), "body": [1, "two"]})).await;
    let echo = &response(&p)["json"];
    assert_eq!(echo["headers"]["content-type"], json!("application/json"), "{echo}");
    assert_eq!(serde_json::from_str::<Value>(echo["body"].as_str().unwrap()).unwrap(), json!([1, "two"]));

    // A string goes as it is, not as a JSON string.
    let text = "plain {not json} \"text\"\nline 2";
    let p = fetch(&mut c, json!({"op": "post", "url": f.web.url("/echo"), "body": text})).await;
    let echo = &response(&p)["json"];
    assert_eq!(echo["method"], json!("POST"));
    assert_eq!(echo["body"], json!(text), "{echo}");
    assert_ne!(echo["headers"]["content-type"], json!("application/json"), "{echo}");

    // Custom headers arrive; a content-type header replaces the default one.
    let options =
        json!({"headers": {"x-token": "t-123", "X-Other": "Two", "content-type": "application/vnd.test+json"}});
    let p = fetch(&mut c, json!({"op": "post_opts", "url": f.web.url("/echo"), "body": {"a": 1}, "options": options}))
        .await;
    let echo = &response(&p)["json"];
    assert_eq!(echo["headers"]["x-token"], json!("t-123"), "{echo}");
    assert_eq!(echo["headers"]["x-other"], json!("Two"), "{echo}");
    assert_eq!(echo["headers"]["content-type"], json!("application/vnd.test+json"), "{echo}");
    assert_eq!(echo["body"], json!(r#"{"a":1}"#));

    // Headers on a GET.
    let options = json!({"headers": {"x-trace": "abc"}});
    let p = fetch(&mut c, json!({"op": "get_opts", "url": f.web.url("/echo"), "options": options})).await;
    let echo = &response(&p)["json"];
    assert_eq!((&echo["method"], &echo["headers"]["x-trace"]), (&json!("GET"), &json!("abc")), "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_method_option_picks_the_method() {
    let f = fixture(allow_web).await;
    let mut c = f.server.client().await;

    let options = json!({"method": "PUT", "url": f.web.url("/echo"), "body": "new value"});
    let p = fetch(&mut c, json!({"op": "request", "options": options})).await;
    let echo = &response(&p)["json"];
    assert_eq!((&echo["method"], &echo["body"]), (&json!("PUT"), &json!("new value")), "{echo}");

    let options = json!({"method": "delete", "url": f.web.url("/echo")});
    let p = fetch(&mut c, json!({"op": "request", "options": options})).await;
    assert_eq!(response(&p)["json"]["method"], json!("DELETE"), "{p}");

    let options = json!({"method": "PATCH", "url": f.web.url("/echo"), "body": {"p": 1}});
    let p = fetch(&mut c, json!({"op": "request", "options": options})).await;
    let echo = &response(&p)["json"];
    assert_eq!((&echo["method"], &echo["headers"]["content-type"]), (&json!("PATCH"), &json!("application/json")));

    // `post` with a method option.
    let options = json!({"method": "PUT"});
    let p = fetch(&mut c, json!({"op": "post_opts", "url": f.web.url("/echo"), "body": "b", "options": options})).await;
    assert_eq!(response(&p)["json"]["method"], json!("PUT"), "{p}");

    // A method that is not one is a bad argument.
    let options = json!({"method": "GE T", "url": f.web.url("/echo")});
    let p = fetch(&mut c, json!({"op": "request", "options": options})).await;
    caught(&p, "bad_argument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_is_denied_by_default() {
    let f = fixture(|_, _| {}).await;
    assert!(f.server.running.app.settings.http.allow.is_empty(), "the default allows nothing");
    let mut c = f.server.client().await;

    for url in [f.web.url("/json"), f.raw.url("/never"), "http://127.0.0.1:9/".into(), "https://example.com/".into()] {
        let p = fetch(&mut c, get(url.clone())).await;
        caught(&p, "http_denied");
        // The check a plug author writes.
        let r = c.request("check", json!({"url": url})).await;
        assert_eq!(
            r.payload,
            json!({"threw": true, "code_is_denied": true, "message_starts_with_code": true}),
            "{url}: {r:?}"
        );
    }
    let p = fetch(&mut c, json!({"op": "post", "url": f.web.url("/echo"), "body": {"a": 1}})).await;
    caught(&p, "http_denied");

    // Uncaught, it reaches the client as an ERROR.
    let e = raw_error(&mut c, get(f.web.url("/json")), "http_denied").await;
    assert!(e["message"].as_str().unwrap().contains("http_denied"), "{e}");

    assert!(f.web.hits().is_empty(), "a denied request never reaches the server: {:?}", f.web.hits());
    assert_still_serving(&f.server, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_permits_that_origin_only() {
    let f = fixture(|s, p| s.http.allow = vec![p.web.clone()]).await;
    let mut c = f.server.client().await;

    let p = fetch(&mut c, get(f.web.url("/json"))).await;
    assert_eq!(response(&p)["json"], json_doc());

    // Another port on the same host.
    let p = fetch(&mut c, get(f.outside.url("/json"))).await;
    caught(&p, "http_denied");
    let p = fetch(&mut c, get(f.raw.url("/mixed-case"))).await;
    caught(&p, "http_denied");
    // The same port under another scheme or host name.
    let p = fetch(&mut c, get(format!("https://{}/json", f.web.addr))).await;
    caught(&p, "http_denied");
    let p = fetch(&mut c, get(format!("http://localhost:{}/json", f.web.addr.port()))).await;
    caught(&p, "http_denied");

    assert!(f.outside.hits().is_empty(), "{:?}", f.outside.hits());
    assert_eq!(f.web.hits(), ["/json"]);
    assert_still_serving(&f.server, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_schemes_and_credentials_in_urls_are_denied() {
    let f = fixture(allow_web).await;
    let mut c = f.server.client().await;
    let port = f.web.addr.port();

    for url in [format!("ftp://127.0.0.1:{port}/x"), "file:///etc/passwd".into(), format!("ws://127.0.0.1:{port}/")] {
        let p = fetch(&mut c, get(url.clone())).await;
        let message = caught(&p, "http_denied");
        assert!(!message.contains("root:"), "{url}: {message}");
    }

    // Credentials in an allowed URL: denied, and the password is not repeated.
    let url = format!("http://user:{SECRET}@127.0.0.1:{port}/json");
    let p = fetch(&mut c, get(url.clone())).await;
    let message = caught(&p, "http_denied");
    assert!(!message.contains(SECRET), "the password is not in the message: {message}");
    let p = fetch(&mut c, get(format!("http://user@127.0.0.1:{port}/json"))).await;
    caught(&p, "http_denied");
    let e = raw_error(&mut c, get(url), "http_denied").await;
    assert!(!e.to_string().contains(SECRET), "the password is not in the ERROR: {e}");
    // A redirect to a URL with credentials, even on an allowed origin.
    let p = fetch(&mut c, get(f.web.url("/redirect-creds-http"))).await;
    caught(&p, "http_denied");
    assert_eq!(f.web.hits(), ["/redirect-creds-http"], "the redirect was not followed");
    assert_still_serving(&f.server, &mut c).await;
}

/// Whatever the scheme, whether the plug or a redirect names the URL, and
/// even when the URL does not parse, a password written in the URL does
/// not come back in the error text (which reaches the client and the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_any_url_is_never_repeated() {
    let f = fixture(allow_web).await;
    let mut c = f.server.client().await;
    let port = f.web.addr.port();
    let cases = [
        (format!("http://user:{SECRET}@127.0.0.1:{port}/x"), "http_denied"),
        (format!("https://user:{SECRET}@127.0.0.1:{port}/x"), "http_denied"),
        (format!("ftp://user:{SECRET}@127.0.0.1:{port}/x"), "http_denied"),
        (format!("http://user:{SECRET}@127.0.0.1:99999/x"), "bad_argument"),
        (f.web.url("/redirect-creds-http"), "http_denied"),
        (f.web.url("/redirect-creds-ftp"), "http_denied"),
    ];
    let mut leaks = Vec::new();
    for (url, code) in cases {
        let p = fetch(&mut c, get(url.clone())).await;
        let message = caught(&p, code);
        if message.contains(SECRET) {
            leaks.push(format!("{url} -> {message}"));
        }
    }
    assert!(leaks.is_empty(), "the password is in the error message:\n{}", leaks.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_options_are_bad_arguments() {
    let f = fixture(allow_web).await;
    let mut c = f.server.client().await;

    for url in ["not a url", "http://", "://nothing", "127.0.0.1:80/path"] {
        let p = fetch(&mut c, get(url.into())).await;
        caught(&p, "bad_argument");
    }
    let p = fetch(&mut c, json!({"op": "request", "options": {"method": "GET"}})).await;
    caught(&p, "bad_argument");

    let options = json!({"url": f.web.url("/json"), "tiemout_ms": 5});
    let p = fetch(&mut c, json!({"op": "request", "options": options})).await;
    let message = caught(&p, "bad_argument");
    assert!(message.contains("tiemout_ms"), "the message names the unknown option: {message}");

    let options = json!({"tiemout_ms": 5});
    let p = fetch(&mut c, json!({"op": "get_opts", "url": f.web.url("/json"), "options": options})).await;
    caught(&p, "bad_argument");

    for options in [
        json!({"url": f.web.url("/json"), "timeout_ms": 0}),
        json!({"url": f.web.url("/json"), "timeout_ms": "soon"}),
        json!({"url": f.web.url("/json"), "headers": "x-a: 1"}),
        json!({"url": f.web.url("/json"), "headers": {"bad name": "v"}}),
        json!({"url": 5}),
    ] {
        let p = fetch(&mut c, json!({"op": "request", "options": options.clone()})).await;
        caught(&p, "bad_argument");
    }

    let e = raw_error(&mut c, get("not a url".into()), "bad_argument").await;
    assert_eq!(e["plug"], json!("raw"));
    assert!(f.web.hits().is_empty(), "{:?}", f.web.hits());
    assert_still_serving(&f.server, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_only_inside_the_allowlist() {
    let f = fixture(allow_web).await;
    let mut c = f.server.client().await;

    let p = fetch(&mut c, get(f.web.url("/redirect-ok"))).await;
    let r = response(&p);
    assert_eq!((&r["status"], &r["json"]), (&json!(200), &json_doc()), "{r}");
    let p = fetch(&mut c, get(f.web.url("/redirect-relative"))).await;
    assert_eq!(response(&p)["body"], json!("hello text"), "{p}");
    assert_eq!(f.web.hits(), ["/redirect-ok", "/json", "/redirect-relative", "/text"]);

    let p = fetch(&mut c, get(f.web.url("/redirect-out"))).await;
    caught(&p, "http_denied");
    raw_error(&mut c, get(f.web.url("/redirect-out")), "http_denied").await;
    assert!(f.outside.hits().is_empty(), "the redirect was not followed: {:?}", f.outside.hits());
    assert_still_serving(&f.server, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_allowed_origin_is_followed() {
    let f = fixture(|s, p| s.http.allow = vec![p.web.clone(), p.outside.clone()]).await;
    let mut c = f.server.client().await;
    let p = fetch(&mut c, get(f.web.url("/redirect-out"))).await;
    assert_eq!(response(&p)["json"], json_doc(), "{p}");
    assert_eq!((f.web.hits(), f.outside.hits()), (vec!["/redirect-out".to_owned()], vec!["/json".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_response_bytes_is_http_too_large() {
    let f = fixture(|s, p| {
        allow_web(s, p);
        s.http.max_response_bytes = CAP;
    })
    .await;
    let mut c = f.server.client().await;

    // With a Content-Length, chunked, and ended by closing the connection.
    for url in [f.web.url("/big"), f.web.url("/big-chunked"), f.raw.url("/big-no-length")] {
        let p = fetch(&mut c, get(url.clone())).await;
        caught(&p, "http_too_large");
    }
    raw_error(&mut c, get(f.web.url("/big")), "http_too_large").await;

    // Exactly the cap is fine, and whole.
    let p = fetch(&mut c, get(f.web.url("/exact"))).await;
    let r = response(&p);
    assert_eq!(r["body"].as_str().map(str::len), Some(CAP), "{r}");
    assert_still_serving(&f.server, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_after_http_timeout_ms() {
    let mut f = fixture(|s, p| {
        allow_web(s, p);
        s.http.timeout_ms = 300;
    })
    .await;
    let mut c = f.server.client().await;

    let p = fetch(&mut c, get(f.raw.url("/never"))).await;
    caught(&p, "http_timeout");
    assert_eq!(f.raw.next_event().await, RawEvent::Accepted("/never".into()));
    raw_error(&mut c, get(f.raw.url("/never")), "http_timeout").await;

    // A plug's own timeout_ms may give a request longer than http.timeoutMs.
    let options = json!({"timeout_ms": 5000});
    let p = fetch(&mut c, json!({"op": "get_opts", "url": f.web.url("/json"), "options": options})).await;
    assert_eq!(response(&p)["json"], json_doc());
    assert_still_serving(&f.server, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_ms_option_bounds_one_request() {
    let mut f = fixture(|s, p| {
        allow_web(s, p);
        s.http.timeout_ms = 60_000;
    })
    .await;
    let mut c = f.server.client().await;

    let options = json!({"timeout_ms": 300});
    let p = fetch(&mut c, json!({"op": "get_opts", "url": f.raw.url("/never"), "options": options})).await;
    caught(&p, "http_timeout");
    assert_eq!(f.raw.next_event().await, RawEvent::Accepted("/never".into()));

    let options = json!({"url": f.raw.url("/never"), "timeout_ms": 300, "method": "POST", "body": "x"});
    let p = fetch(&mut c, json!({"op": "request", "options": options})).await;
    caught(&p, "http_timeout");
    assert_still_serving(&f.server, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_http_failed() {
    // A port nobody listens on: bind one, note it, close it.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let f = fixture(move |s, p| s.http.allow = vec![p.web.clone(), format!("http://{closed}")]).await;
    let mut c = f.server.client().await;

    let p = fetch(&mut c, get(format!("http://{closed}/json"))).await;
    caught(&p, "http_failed");
    raw_error(&mut c, get(format!("http://{closed}/json")), "http_failed").await;
    assert_still_serving(&f.server, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugs_own_time_limit_bounds_a_request() {
    let mut f = fixture(|s, p| {
        allow_web(s, p);
        s.http.timeout_ms = 60_000;
        s.limits.timeout_ms = 300;
    })
    .await;
    let mut c = f.server.client().await;

    // Uncaught, and in a plug that catches: the limit stops the plug anyway.
    for plug in ["raw", "fetch"] {
        let r = c.request(plug, get(f.raw.url("/never"))).await;
        assert_eq!((r.event_type, r.event.as_str()), (EventType::ERROR, plug), "{r:?}");
        assert_eq!(r.payload["error"], json!("limit_exceeded"), "{r:?}");
        assert_eq!(r.payload["limit"], json!("limits.timeoutMs"), "{r:?}");
        assert_eq!(r.payload["plug"], json!(plug), "{r:?}");
        assert_eq!(f.raw.next_accepted().await, "/never", "the request went out");
    }
    let server = &f.server;
    wait_until(|| server.running.app.plugs.in_flight() == 0).await;
    assert_still_serving(server, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_its_plugs_request() {
    let mut f = fixture(allow_web_long_waits).await;
    let server = &f.server;
    let mut leaver = server.client().await;
    leaver.send("fetch", get(f.raw.url("/never"))).await;
    assert_eq!(f.raw.next_event().await, RawEvent::Accepted("/never".into()));
    wait_until(|| server.running.app.plugs.in_flight() == 1).await;

    // Meanwhile another client is served.
    let mut other = server.client().await;
    let r = other.request("echo", json!({"while": "waiting"})).await;
    assert_eq!((r.event_type, r.payload), (EventType::MESSAGE, json!({"while": "waiting"})));
    assert_eq!(server.running.app.plugs.in_flight(), 1, "the request is still waiting");

    leave_mid_call(&mut f, leaver).await;
    assert_still_serving(&f.server, &mut other).await;
}

/// A plug that never called out runs on its connection's own task
/// (`plugs::direct`). When it calls out after all, what it yielded before
/// reaches the client while the call goes on; from then on its runs leave
/// that task free, so a client leaving mid-call still cancels the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plug_calling_out_for_the_first_time_sends_what_it_yielded_before() {
    let mut f = fixture(allow_web_long_waits).await;
    let server = &f.server;
    let mut c = server.client().await;
    assert_eq!(settle(server, &mut c, "maybe", json!({})).await, json!("before"));

    c.send("maybe", json!({"url": f.web.url("/gate")})).await;
    f.web.arrival().await;
    assert_eq!(c.recv().await.payload, json!("before"), "while the gate is closed");
    f.web.release();
    assert_eq!(c.recv().await.payload, json!(200));

    let mut leaver = server.client().await;
    leaver.send("maybe", json!({"url": f.raw.url("/never")})).await;
    assert_eq!(leaver.recv().await.payload, json!("before"));
    assert_eq!(f.raw.next_event().await, RawEvent::Accepted("/never".into()));
    leave_mid_call(&mut f, leaver).await;
    assert_still_serving(&f.server, &mut c).await;
}

/// A message to a plug that could run on the connection's own task does
/// not overtake the client's earlier one still waiting on the runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_messages_keep_their_order_whichever_task_runs_them() {
    let mut f = fixture(allow_web).await;
    let server = &f.server;
    let mut c = server.client().await;
    assert_eq!(settle(server, &mut c, "echo", json!("settle")).await, json!("settle"));
    c.send("fetch", get(f.web.url("/gate"))).await;
    c.send("echo", json!("after")).await;
    f.web.arrival().await;
    c.expect_silence(Duration::from_millis(200)).await;
    f.web.release();
    assert_gate_passed(&mut c).await;
    assert_eq!(c.recv().await.payload, json!("after"));
}

/// More plugs wait on the network than the server has async workers (the
/// tests run it on 2), and another client is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_plugs_do_not_hold_up_the_async_workers() {
    let mut f = fixture(allow_web).await;
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let mut c = f.server.client().await;
        c.send("fetch", get(f.web.url("/gate"))).await;
        waiting.push(c);
    }
    for _ in 0..4 {
        f.web.arrival().await;
    }
    let mut other = f.server.client().await;
    for i in 0..3 {
        let r = other.request("echo", json!({"i": i})).await;
        assert_eq!((r.event_type, r.payload), (EventType::MESSAGE, json!({"i": i})));
    }
    assert_eq!(f.web.state.current.load(Ordering::SeqCst), 4, "all four are still waiting");
    for _ in 0..4 {
        f.web.release();
    }
    for c in waiting.iter_mut() {
        assert_gate_passed(c).await;
    }
}

/// Two clients' plugs fetch `/gate`, which answers only when the test lets
/// it; returns the two clients after both sent.
async fn two_gate_requests(f: &Fixture) -> (Client, Client) {
    let mut a = f.server.client().await;
    let mut b = f.server.client().await;
    a.send("fetch", get(f.web.url("/gate"))).await;
    b.send("fetch", get(f.web.url("/gate"))).await;
    (a, b)
}

async fn assert_gate_passed(c: &mut Client) {
    let r = c.recv().await;
    assert_eq!(r.event_type, EventType::MESSAGE, "{r:?}");
    let resp = response(&r.payload);
    assert_eq!((&resp["status"], &resp["json"]), (&json!(200), &json!({"gate": "passed"})), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_one_makes_the_second_request_wait() {
    let mut f = fixture(|s, p| {
        allow_web(s, p);
        s.http.max_concurrent = 1;
    })
    .await;
    let (mut a, mut b) = two_gate_requests(&f).await;
    f.web.arrival().await;
    // Both plugs are running; only one request reaches the server.
    wait_until(|| f.server.running.app.plugs.in_flight() == 2).await;
    assert!(!f.web.arrives_within(Duration::from_millis(500)).await, "a second request went out");
    assert_eq!(f.web.state.current.load(Ordering::SeqCst), 1);
    f.web.release();
    f.web.arrival().await;
    f.web.release();
    // Each client gets its answer, whichever went first.
    assert_gate_passed(&mut a).await;
    assert_gate_passed(&mut b).await;
    assert_eq!(f.web.state.max_seen.load(Ordering::SeqCst), 1, "never two requests at once");
    assert_eq!(f.web.hits(), ["/gate", "/gate"]);
    assert_still_serving(&f.server, &mut a).await;
}

/// "Further requests wait (under their time limits)": a request waiting
/// for a slot still ends at its own time limit (`http.timeoutMs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_slot_still_times_out() {
    let mut f = fixture(|s, p| {
        allow_web(s, p);
        s.http.max_concurrent = 1;
        s.http.timeout_ms = 500;
        s.limits.timeout_ms = 60_000;
    })
    .await;
    // The first request holds the only slot (its own limit is long).
    let mut holder = f.server.client().await;
    let options = json!({"timeout_ms": 60_000});
    holder.send("fetch", json!({"op": "get_opts", "url": f.web.url("/gate"), "options": options})).await;
    f.web.arrival().await;

    let mut waiter = f.server.client().await;
    waiter.send("fetch", get(f.web.url("/json"))).await;
    let got = waiter.next_within(Duration::from_secs(5)).await;
    // Let the first one finish either way, so the test ends cleanly.
    f.web.release();
    let r = match got {
        Some(Received::Reply(r)) => r,
        other => panic!("a request with http.timeoutMs = 500 waiting for a slot got no answer within 5 s: {other:?}"),
    };
    caught(&r.payload, "http_timeout");
    assert_gate_passed(&mut holder).await;
    assert_eq!(f.web.hits(), ["/gate"], "the waiting request never went out");
}

/// The control for the test above: with room for two, both requests are
/// at the server together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_two_lets_two_requests_out_together() {
    let mut f = fixture(|s, p| {
        allow_web(s, p);
        s.http.max_concurrent = 2;
    })
    .await;
    let (mut a, mut b) = two_gate_requests(&f).await;
    f.web.arrival().await;
    f.web.arrival().await;
    assert_eq!(f.web.state.current.load(Ordering::SeqCst), 2);
    f.web.release();
    f.web.release();
    assert_gate_passed(&mut a).await;
    assert_gate_passed(&mut b).await;
    assert_eq!(f.web.state.max_seen.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_requests_leave_other_clients_alone() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let f = fixture(move |s, p| {
        s.http.allow = vec![p.web.clone(), p.raw.clone(), format!("http://{closed}")];
        s.http.timeout_ms = 300;
        s.http.max_response_bytes = CAP;
    })
    .await;
    let mut bystander = f.server.client().await;
    let r = bystander.request("echo", json!({"n": 0})).await;
    assert_eq!(r.payload, json!({"n": 0}));

    let mut c = f.server.client().await;
    let cases = [
        (f.outside.url("/json"), "http_denied"),
        (f.web.url("/redirect-out"), "http_denied"),
        ("ftp://127.0.0.1/".into(), "http_denied"),
        ("nope".into(), "bad_argument"),
        (f.raw.url("/never"), "http_timeout"),
        (format!("http://{closed}/"), "http_failed"),
        (f.web.url("/big"), "http_too_large"),
    ];
    for (i, (url, code)) in cases.into_iter().enumerate() {
        let p = fetch(&mut c, get(url.clone())).await;
        caught(&p, code);
        raw_error(&mut c, get(url), code).await;
        // The bystander is still answered, and got nothing it did not ask for.
        let r = bystander.request("echo", json!({"n": i + 1})).await;
        assert_eq!((r.event_type, r.payload), (EventType::MESSAGE, json!({"n": i + 1})));
    }
    bystander.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(f.server.connected(), 2);
    let p = fetch(&mut c, get(f.web.url("/json"))).await;
    assert_eq!(response(&p)["json"], json_doc());
    assert_still_serving(&f.server, &mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_can_call_http_before_the_server_serves() {
    // INIT runs inside the server's start-up (on an async runtime's thread):
    // http:: must work there too, and a timer callback may call it later.
    let web = Web::start(None).await;
    let origin = web.origin();
    let (_dir, path) = init_file(&format!(
        r#"
fn INIT(server) {{
    let r = http::get("{origin}/json");
    store::set("at_start", r.status);
    server.after(10, || {{ store::set("from_timer", http::get("{origin}/text").status); }});
}}
"#
    ));
    let get = ("get.rhai", "fn get(msg, yield_msg) { yield_msg(#{ payload: store::get(msg.payload.key) }); }");
    let server = start_with_plugs(&[get], |s| {
        s.init_file = path;
        s.http.allow = vec![origin.clone()];
    })
    .await;
    let mut c = server.client().await;
    assert_eq!(c.request("get", json!({"key": "at_start"})).await.payload, json!(200));
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.request("get", json!({"key": "from_timer"})).await.payload != json!(200) {
        assert!(tokio::time::Instant::now() < deadline, "the timer's request did not land");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
