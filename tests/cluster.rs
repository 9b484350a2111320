//! Several nodes on one Redis (issue 14, SPEC 11): real `ssocket`
//! processes sharing a real `redis-server`, with WebSocket clients on each.
//!
//! Every test starts its own `redis-server` on a free port and its own
//! server processes (the debug binary), each in a fresh temporary working
//! directory holding the fixture plugs below, with `cluster.heartbeatMs`
//! 100 (so a dead node's keys live 500 ms). Guards kill every child on
//! every path.
//!
//! Nodes find each other through Redis a moment after they start, so a
//! test first [`settle`]s: each node broadcasts probes until every other
//! node hears them. Probes are a plug of their own (`probe`) and the
//! helpers here skip them.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Received, Reply};
use futures::future::join_all;
use serde_json::{json, Value};
use ssocket::protocol::EventType;

/// How long a process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// "Nothing more arrives" windows.
const SILENCE: Duration = Duration::from_millis(500);
/// How often polls ask again.
const POLL: Duration = Duration::from_millis(50);
/// How long nodes may take to hear each other (after start-up or a Redis
/// restart).
const SETTLE: Duration = Duration::from_secs(15);
/// How long a killed node may take to vanish (TTL is 500 ms here).
const VANISH: Duration = Duration::from_secs(6);
/// The HTTP API key of the publish test.
const API_KEY: &str = "cluster-test-key";
/// The HS256 secret of the presence test.
const JWT_SECRET: &str = "cluster-test-secret";

// ------------------------------------------------------------ fixture plugs

/// Every node gets these. Plugs that may fail catch the error and yield
/// `#{err: CODE}`; success is `#{ok: VALUE}`.
const PLUGS: &[(&str, &str)] = &[
    ("_lib/err.rhai", "fn code(e) { if type_of(e) == \"map\" { e.error } else { `${e}` } }\n"),
    ("whoami.rhai", "fn run(msg, yield_msg) { yield_msg(#{ payload: #{ client: msg.client } }); }\n"),
    // Broadcasts for the settle step (skipped by the helpers).
    ("probe.rhai", "fn run(msg, yield_msg) { yield_msg(#{ type: EventType::BROADCAST, payload: msg.payload }); }\n"),
    // A BROADCAST yield of the payload; a failure reaches the sender as an ERROR.
    ("bcast.rhai", "fn run(msg, yield_msg) { yield_msg(#{ type: EventType::BROADCAST, payload: msg.payload }); }\n"),
    // broadcast() from a plug, nothing to the sender.
    ("bcast_fn.rhai", "fn run(msg, yield_msg) { broadcast(#{ payload: msg.payload }); }\n"),
    // broadcast() with its failure caught.
    (
        "bcast_try.rhai",
        r#"import "_lib/err" as err;
fn run(msg, yield_msg) {
    try {
        broadcast(#{ payload: msg.payload });
        yield_msg(#{ payload: #{ ok: true } });
    } catch (e) {
        yield_msg(#{ payload: #{ err: err::code(e) } });
    }
}
"#,
    ),
    (
        "clients.rhai",
        r#"import "_lib/err" as err;
fn run(msg, yield_msg) {
    let ids = ();
    try { ids = clients(); } catch (e) { yield_msg(#{ payload: #{ err: err::code(e) } }); return; }
    yield_msg(#{ payload: #{ ok: ids } });
}
"#,
    ),
    // {room} joins the sender, {id, room} joins client `id`.
    (
        "join.rhai",
        r#"import "_lib/err" as err;
fn run(msg, yield_msg) {
    let p = msg.payload;
    let r = ();
    try {
        r = if p.id == () { rooms::join(p.room) } else { rooms::join(p.id, p.room) };
    } catch (e) { yield_msg(#{ payload: #{ err: err::code(e) } }); return; }
    yield_msg(#{ payload: #{ ok: r } });
}
"#,
    ),
    (
        "leave.rhai",
        r#"import "_lib/err" as err;
fn run(msg, yield_msg) {
    let p = msg.payload;
    let r = ();
    try {
        r = if p.id == () { rooms::leave(p.room) } else { rooms::leave(p.id, p.room) };
    } catch (e) { yield_msg(#{ payload: #{ err: err::code(e) } }); return; }
    yield_msg(#{ payload: #{ ok: r } });
}
"#,
    ),
    // Put client `id` in `room`, then send to the room, in one run.
    (
        "join_send.rhai",
        "fn run(msg, yield_msg) {\n    let p = msg.payload;\n    rooms::join(p.id, p.room);\n    \
         rooms::send(p.room, #{ payload: p });\n}\n",
    ),
    // The README's chat pattern: keep a history in the store, then broadcast.
    (
        "chat.rhai",
        "fn run(msg, yield_msg) {\n    store::push(\"history\", msg.payload, 50);\n    \
         broadcast(#{ payload: msg.payload });\n}\n",
    ),
    // A yielded room reply.
    ("say.rhai", "fn run(msg, yield_msg) { yield_msg(#{ room: msg.payload.room, payload: msg.payload }); }\n"),
    // rooms::send, nothing to the sender.
    ("roomsend.rhai", "fn run(msg, yield_msg) { rooms::send(msg.payload.room, #{ payload: msg.payload }); }\n"),
    (
        "room_info.rhai",
        r#"import "_lib/err" as err;
fn run(msg, yield_msg) {
    let room = msg.payload.room;
    let info = ();
    try {
        info = #{ members: rooms::members(room), presence: rooms::presence(room), list: rooms::list() };
    } catch (e) { yield_msg(#{ payload: #{ err: err::code(e) } }); return; }
    yield_msg(#{ payload: #{ ok: info } });
}
"#,
    ),
    (
        "rooms_of.rhai",
        r#"import "_lib/err" as err;
fn run(msg, yield_msg) {
    let r = ();
    try { r = rooms::of(msg.payload.id); } catch (e) { yield_msg(#{ payload: #{ err: err::code(e) } }); return; }
    yield_msg(#{ payload: #{ ok: r } });
}
"#,
    ),
    // send_to(to, #{event: "dm", payload: body}).
    (
        "sendto.rhai",
        r#"import "_lib/err" as err;
fn run(msg, yield_msg) {
    let sent = ();
    try {
        sent = send_to(msg.payload.to, #{ event: "dm", payload: msg.payload.body });
    } catch (e) { yield_msg(#{ payload: #{ err: err::code(e) } }); return; }
    yield_msg(#{ payload: #{ ok: sent } });
}
"#,
    ),
    // One store operation: {op, key, value, ttl, by, max, start, end, prefix}.
    (
        "st.rhai",
        r#"import "_lib/err" as err;
fn run(msg, yield_msg) {
    let p = msg.payload;
    let r = ();
    try {
        r = if p.op == "get" { store::get(p.key) }
            else if p.op == "set" { store::set(p.key, p.value); true }
            else if p.op == "set_ttl" { store::set(p.key, p.value, p.ttl); true }
            else if p.op == "del" { store::del(p.key) }
            else if p.op == "incr" { store::incr(p.key, p.by ?? 1) }
            else if p.op == "push" { store::push(p.key, p.value, p.max) }
            else if p.op == "range" { store::range(p.key, p.start, p.end) }
            else if p.op == "keys" { store::keys(p.prefix) }
            else { throw `unknown op ${p.op}` };
    } catch (e) { yield_msg(#{ payload: #{ err: err::code(e) } }); return; }
    yield_msg(#{ payload: #{ ok: r } });
}
"#,
    ),
];

/// INIT for the kick test: a client that connects while the store holds
/// `kick: true` makes the server disconnect everyone (`kick_all`).
const KICK_INIT: &str = r#"
fn INIT(server) {
    let handle = server;
    server.on_connect(|id| {
        if store::get("kick") == true {
            store::del("kick");
            let kicked = handle.kick_all();
            print(`kicked ${kicked} here`);
        }
    });
}
"#;

// ------------------------------------------------------------ processes

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A `redis-server` child on 127.0.0.1; killed on drop.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// A fresh Redis on a free port.
    fn start() -> Redis {
        for _ in 0..5 {
            if let Some(redis) = Redis::start_on(free_port()) {
                return redis;
            }
        }
        panic!("redis-server did not start on a free port after 5 tries");
    }

    /// A fresh (empty) Redis on `port`; None if it could not listen there.
    fn start_on(port: u16) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let mut redis = Redis { port, child: Some(child) };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(port) {
                return Some(redis);
            }
            let child = redis.child.as_mut().expect("running");
            if child.try_wait().expect("try_wait").is_some() {
                return None; // the port was taken
            }
            assert!(Instant::now() < deadline, "redis-server on port {port} never answered PING");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no goodbye to its clients.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(!ping(self.port), "Redis still answers after SIGKILL");
    }

    /// Start a fresh, empty Redis on the same port.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        let started = Redis::start_on(self.port).expect("Redis restarts on its port");
        self.child = Some(started.into_child());
    }

    fn into_child(mut self) -> Child {
        self.child.take().expect("running")
    }

    /// Every key in this Redis (`redis-cli --scan`).
    fn keys(&self) -> Vec<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--scan"])
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli --scan failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).filter(|k| !k.is_empty()).collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a Redis answers PING on `port`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// How to start one node.
#[derive(Clone)]
struct Opts {
    prefix: String,
    init: Option<&'static str>,
    heartbeat_ms: u64,
    extra: Vec<String>,
}

impl Opts {
    fn new(prefix: &str) -> Opts {
        Opts { prefix: prefix.to_owned(), init: None, heartbeat_ms: 100, extra: Vec::new() }
    }

    fn init(mut self, source: &'static str) -> Opts {
        self.init = Some(source);
        self
    }

    fn heartbeat_ms(mut self, ms: u64) -> Opts {
        self.heartbeat_ms = ms;
        self
    }

    fn arg(mut self, key: &str, value: &str) -> Opts {
        self.extra.push(key.to_owned());
        self.extra.push(value.to_owned());
        self
    }
}

/// A running `ssocket` process in its own temporary directory; killed on
/// drop.
struct Node {
    child: Child,
    stderr: Arc<Mutex<String>>,
    addr: String,
    _dir: tempfile::TempDir,
}

/// Spawn one node on `redis` (a `redis://` URL; empty: no cluster) without
/// waiting for it to listen (its `addr` is empty until then).
fn spawn_node(redis: &str, opts: &Opts) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugs = dir.path().join("plugs");
    for (path, source) in PLUGS {
        common::write_plug(&plugs, path, source);
    }
    let init: PathBuf = match opts.init {
        Some(source) => {
            let path = dir.path().join("INIT.rhai");
            std::fs::write(&path, source).expect("write INIT.rhai");
            path
        }
        None => dir.path().join("no-INIT.rhai"),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssocket"));
    cmd.current_dir(dir.path())
        .args(["--INSECURE.hostname", "127.0.0.1", "--INSECURE.port", "0"])
        .args(["--cluster.redis", redis, "--cluster.prefix", &opts.prefix])
        .args(["--cluster.heartbeatMs", &opts.heartbeat_ms.to_string()])
        .args(["--limits.messagesPerSecond", "0", "--plugsFolder"])
        .arg(&plugs)
        .arg("--initFile")
        .arg(&init)
        .args(&opts.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.to_ascii_uppercase().starts_with("SSOCKET_") || text == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    let mut child = cmd.spawn().expect("ssocket starts");
    let stderr = common::collect_output(child.stderr.take().expect("stderr"));
    Node { child, stderr, addr: String::new(), _dir: dir }
}

/// Start nodes (all at once) and wait until each listens.
fn start_nodes(redis: &str, opts: &[Opts]) -> Vec<Node> {
    let mut nodes: Vec<Node> = opts.iter().map(|o| spawn_node(redis, o)).collect();
    for node in &mut nodes {
        node.addr = wait_addr(&mut node.child, &node.stderr);
    }
    nodes
}

/// The address from "listening on ws://ADDR/".
fn wait_addr(child: &mut Child, stderr: &Mutex<String>) -> String {
    const MARK: &str = "listening on ws://";
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = stderr.lock().unwrap().clone();
        if let Some(at) = text.find(MARK) {
            let rest = &text[at + MARK.len()..];
            return rest[..rest.find('/').expect("ADDR/")].to_owned();
        }
        let status = child.try_wait().expect("try_wait");
        if status.is_some() || Instant::now() > deadline {
            panic!("no `{MARK}` line (status {status:?}); stderr:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Node {
    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// SIGKILL: the node stops without leaving the cluster.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Still running, and never panicked.
    fn assert_alive(&mut self, name: &str) {
        let status = self.child.try_wait().expect("try_wait");
        assert!(status.is_none(), "node {name} exited ({status:?}); stderr:\n{}", self.stderr());
        assert!(!self.stderr().contains("panicked"), "node {name} panicked; stderr:\n{}", self.stderr());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------ client helpers

/// The next reply that is not a probe; panics on close or timeout.
async fn next_reply(c: &mut Client) -> Reply {
    loop {
        match c.next().await {
            Received::Reply(r) if r.event == "probe" => continue,
            Received::Reply(r) => return r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }
}

/// Send and wait for the next reply that is not a probe.
async fn req(c: &mut Client, event: &str, payload: Value) -> Reply {
    c.send(event, payload).await;
    next_reply(c).await
}

/// A fixture plug's `#{ok: VALUE}`; panics on anything else.
async fn ok(c: &mut Client, event: &str, payload: Value) -> Value {
    let r = req(c, event, payload.clone()).await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::MESSAGE, event), "{event} {payload} answered {r:?}");
    match r.payload.get("ok") {
        Some(v) => v.clone(),
        None => panic!("{event} {payload} failed: {}", r.payload),
    }
}

/// A fixture plug's `#{err: CODE}`; panics on anything else.
async fn err(c: &mut Client, event: &str, payload: Value) -> String {
    let r = req(c, event, payload.clone()).await;
    match r.payload.get("err").and_then(Value::as_str) {
        Some(code) => code.to_owned(),
        None => panic!("{event} {payload} was expected to fail, answered {r:?}"),
    }
}

async fn whoami(c: &mut Client) -> u64 {
    let r = req(c, "whoami", json!({})).await;
    r.payload["client"].as_u64().unwrap_or_else(|| panic!("whoami answered {r:?}"))
}

/// Connect to a node and learn the client's id (so the node has registered it).
async fn join_node(node: &Node) -> (Client, u64) {
    let mut c = node.client().await;
    let id = whoami(&mut c).await;
    (c, id)
}

/// Ids in a JSON array, sorted.
fn ids(v: &Value) -> Vec<u64> {
    let mut out: Vec<u64> =
        v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().filter_map(Value::as_u64).collect();
    out.sort_unstable();
    out
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// Ask `event` until the `ok` answer satisfies `pred` (or `within` runs
/// out: then panic with the last answer). Returns the satisfying value.
async fn poll(
    c: &mut Client,
    event: &str,
    payload: Value,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = req(c, event, payload.clone()).await;
        if let Some(v) = r.payload.get("ok") {
            if pred(v) {
                return v.clone();
            }
        }
        assert!(Instant::now() < deadline, "{what}: still {} after {within:?}", r.payload);
        tokio::time::sleep(POLL).await;
    }
}

/// Poll `clients()` on `c` until it is exactly `want`.
async fn wait_clients(c: &mut Client, want: &[u64], within: Duration) {
    let want = sorted(want.to_vec());
    poll(c, "clients", json!({}), within, &format!("clients() == {want:?}"), |v| ids(v) == want).await;
}

/// Everything (but probes) that arrives until `wait` passes in silence.
async fn collect(c: &mut Client, wait: Duration) -> Vec<Reply> {
    let mut got = Vec::new();
    loop {
        match c.next_within(wait).await {
            None => return got,
            Some(Received::Reply(r)) if r.event == "probe" => {}
            Some(Received::Reply(r)) => got.push(r),
            Some(other) => panic!("expected replies, got {other:?} after {got:?}"),
        }
    }
}

/// What several clients receive: first (all at once) the number of
/// messages each is expected to get, however long they take; then, once
/// they are in, whatever more arrives before [`SILENCE`] passes.
async fn deliveries(clients: &mut [&mut Client], want: &[usize]) -> Vec<Vec<Reply>> {
    assert_eq!(clients.len(), want.len());
    let mut got: Vec<Vec<Reply>> = join_all(clients.iter_mut().zip(want).map(|(c, n)| async move {
        let mut got = Vec::new();
        while got.len() < *n {
            match c.next_within(common::REPLY_TIMEOUT).await {
                None => break, // fewer than expected: the caller's assertion says so
                Some(Received::Reply(r)) if r.event == "probe" => {}
                Some(Received::Reply(r)) => got.push(r),
                Some(other) => panic!("expected replies, got {other:?} after {got:?}"),
            }
        }
        got
    }))
    .await;
    let more = join_all(clients.iter_mut().map(|c| collect(c, SILENCE))).await;
    for (got, more) in got.iter_mut().zip(more) {
        got.extend(more);
    }
    got
}

/// Exactly one message arrived, and it is this one.
fn assert_one(got: &[Reply], t: EventType, event: &str, payload: &Value, who: &str) {
    let summary: Vec<_> = got.iter().map(|r| (r.event_type, r.event.clone(), r.payload.clone())).collect();
    assert_eq!(summary, vec![(t, event.to_owned(), payload.clone())], "{who} received");
}

fn assert_none(got: &[Reply], who: &str) {
    assert!(got.is_empty(), "{who} should receive nothing, got {got:?}");
}

/// Wait until every node hears every other: the first client of each node
/// broadcasts probes until the first client of every other node has one (a
/// node that hears one is subscribed and listed; a node's probe goes out
/// after its earlier registry writes, through its one ordered queue). Then
/// every client is drained.
async fn settle(clients: &mut [(usize, &mut Client)]) {
    let nodes: BTreeSet<usize> = clients.iter().map(|(n, _)| *n).collect();
    let first = |node: usize, clients: &[(usize, &mut Client)]| clients.iter().position(|(n, _)| *n == node).unwrap();
    for &from in &nodes {
        let deadline = Instant::now() + SETTLE;
        for attempt in 0.. {
            let sender = first(from, clients);
            clients[sender].1.send("probe", json!({"from": from, "attempt": attempt})).await;
            let mut heard = true;
            for &to in nodes.iter().filter(|&&n| n != from) {
                let i = first(to, clients);
                heard &= got_probe(clients[i].1, Duration::from_millis(400)).await;
            }
            if heard {
                break;
            }
            assert!(Instant::now() < deadline, "node {from}'s broadcasts never reached the other nodes");
        }
    }
    join_all(clients.iter_mut().map(|(_, c)| drain_probes(c))).await;
}

/// Whether a probe arrives within `wait` (other traffic is a test bug).
async fn got_probe(c: &mut Client, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_within(left).await {
            None => return false,
            Some(Received::Reply(r)) if r.event == "probe" && r.event_type == EventType::BROADCAST => return true,
            Some(Received::Reply(r)) if r.event == "probe" => {} // a probe that failed (Redis down): its ERROR
            Some(other) => panic!("unexpected while settling: {other:?}"),
        }
    }
}

/// Read probes until 400 ms pass in silence.
async fn drain_probes(c: &mut Client) {
    let rest = collect(c, Duration::from_millis(400)).await;
    assert!(rest.is_empty(), "unexpected while settling: {rest:?}");
}

/// An HS256 token for `claims`.
fn token(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("an HMAC key");
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), claims, &key).expect("token")
}

/// `POST /api/publish` to a node: (status, body).
async fn publish(node: &Node, body: Value) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().expect("http client");
    let resp = http
        .post(format!("http://{}/api/publish", node.addr))
        .header("authorization", format!("Bearer {API_KEY}"))
        .body(body.to_string())
        .send();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp).await.expect("an answer in time").expect("sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

/// `GET path` on a node: the status and the body.
async fn http_get(node: &Node, path: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().expect("http client");
    let resp = http.get(format!("http://{}{path}", node.addr)).send();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp).await.expect("an answer in time").expect("sent");
    (resp.status().as_u16(), resp.text().await.expect("a body"))
}

/// Poll `/readyz` until it answers `status` (up to [`SETTLE`]).
async fn wait_ready(node: &Node, status: u16, who: &str) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (got, body) = http_get(node, "/readyz").await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "node {who}: /readyz stays {got} {body}, {status} wanted");
        tokio::time::sleep(POLL).await;
    }
}

/// The node part of a client id (`node × 2^32 + n`).
fn node_part(id: u64) -> u64 {
    id >> 32
}

// ------------------------------------------------------------ delivery

#[tokio::test]
async fn a_broadcast_on_one_node_reaches_every_client_of_both_nodes_once_but_the_sender() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("bc"), Opts::new("bc")]);
    let (mut a1, _) = join_node(&nodes[0]).await;
    let (mut a2, _) = join_node(&nodes[0]).await;
    let (mut a3, _) = join_node(&nodes[0]).await;
    let (mut b1, _) = join_node(&nodes[1]).await;
    let (mut b2, _) = join_node(&nodes[1]).await;
    settle(&mut [(0, &mut a1), (0, &mut a2), (0, &mut a3), (1, &mut b1), (1, &mut b2)]).await;

    // A BROADCAST yield on A.
    a1.send("bcast", json!({"n": 1})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut a3, &mut b1, &mut b2], &[0, 1, 1, 1, 1]).await;
    assert_none(&got[0], "the sender a1");
    for (who, g) in ["a2", "a3", "b1", "b2"].iter().zip(&got[1..]) {
        assert_one(g, EventType::BROADCAST, "bcast", &json!({"n": 1}), who);
    }

    // A large one (most of payloadLimit).
    let big = json!({"big": "x".repeat(200_000)});
    a2.send("bcast", big.clone()).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut a3, &mut b1, &mut b2], &[1, 0, 1, 1, 1]).await;
    assert_none(&got[1], "the sender a2");
    for (who, g) in [("a1", &got[0]), ("a3", &got[2]), ("b1", &got[3]), ("b2", &got[4])] {
        assert_one(g, EventType::BROADCAST, "bcast", &big, who);
    }

    // broadcast() from a plug on B.
    b1.send("bcast_fn", json!({"n": 2})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut a3, &mut b1, &mut b2], &[1, 1, 1, 0, 1]).await;
    assert_none(&got[3], "the sender b1");
    for (who, g) in [("a1", &got[0]), ("a2", &got[1]), ("a3", &got[2]), ("b2", &got[4])] {
        assert_one(g, EventType::BROADCAST, "bcast_fn", &json!({"n": 2}), who);
    }
}

#[tokio::test]
async fn with_exclude_sender_off_the_sender_gets_its_broadcast_once_like_everyone() {
    let redis = Redis::start();
    let opts = Opts::new("incl").arg("--excludeSenderOnBroadcast", "false");
    let nodes = start_nodes(&redis.url(), &[opts.clone(), opts]);
    let (mut a1, _) = join_node(&nodes[0]).await;
    let (mut a2, _) = join_node(&nodes[0]).await;
    let (mut b1, _) = join_node(&nodes[1]).await;
    assert_eq!(ok(&mut a1, "join", json!({"room": "r"})).await, json!(true));
    assert_eq!(ok(&mut b1, "join", json!({"room": "r"})).await, json!(true));
    settle(&mut [(0, &mut a1), (0, &mut a2), (1, &mut b1)]).await;

    a1.send("bcast", json!({"n": 1})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1], &[1, 1, 1]).await;
    for (who, g) in ["a1 (the sender)", "a2", "b1"].iter().zip(&got) {
        assert_one(g, EventType::BROADCAST, "bcast", &json!({"n": 1}), who);
    }
    b1.send("say", json!({"room": "r", "n": 2})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1], &[1, 0, 1]).await;
    assert_one(&got[0], EventType::BROADCAST, "say", &json!({"room": "r", "n": 2}), "a1");
    assert_none(&got[1], "a2 (not a member)");
    assert_one(&got[2], EventType::BROADCAST, "say", &json!({"room": "r", "n": 2}), "b1 (the sender)");
}

#[tokio::test]
async fn room_sends_reach_the_members_on_both_nodes_only() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("rm"), Opts::new("rm")]);
    let (mut a1, _) = join_node(&nodes[0]).await;
    let (mut a2, _) = join_node(&nodes[0]).await;
    let (mut a3, _) = join_node(&nodes[0]).await;
    let (mut b1, _) = join_node(&nodes[1]).await;
    let (mut b2, _) = join_node(&nodes[1]).await;
    for c in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(ok(c, "join", json!({"room": "blue"})).await, json!(true));
    }
    assert_eq!(ok(&mut b2, "join", json!({"room": "rouge-é"})).await, json!(true));
    settle(&mut [(0, &mut a1), (0, &mut a2), (0, &mut a3), (1, &mut b1), (1, &mut b2)]).await;

    // A yielded room reply from a member on A: the other members, on both nodes.
    a1.send("say", json!({"room": "blue", "text": "hi"})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut a3, &mut b1, &mut b2], &[0, 1, 0, 1, 0]).await;
    let said = json!({"room": "blue", "text": "hi"});
    assert_none(&got[0], "the sender a1 (a member)");
    assert_one(&got[1], EventType::BROADCAST, "say", &said, "a2 (member)");
    assert_none(&got[2], "a3 (not a member)");
    assert_one(&got[3], EventType::BROADCAST, "say", &said, "b1 (member)");
    assert_none(&got[4], "b2 (in another room)");

    // rooms::send from a non-member on B.
    b2.send("roomsend", json!({"room": "blue", "n": 2})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut a3, &mut b1, &mut b2], &[1, 1, 0, 1, 0]).await;
    let sent = json!({"room": "blue", "n": 2});
    for (who, g) in [("a1", &got[0]), ("a2", &got[1]), ("b1", &got[3])] {
        assert_one(g, EventType::BROADCAST, "roomsend", &sent, who);
    }
    assert_none(&got[2], "a3 (not a member)");
    assert_none(&got[4], "the sender b2 (not a member)");

    // A room with members on B only, sent to from A.
    a3.send("roomsend", json!({"room": "rouge-é", "n": 3})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut a3, &mut b1, &mut b2], &[0, 0, 0, 0, 1]).await;
    assert_one(&got[4], EventType::BROADCAST, "roomsend", &json!({"room": "rouge-é", "n": 3}), "b2");
    for (who, g) in [("a1", &got[0]), ("a2", &got[1]), ("a3", &got[2]), ("b1", &got[3])] {
        assert_none(g, who);
    }

    // b1 leaves: the next send to the room reaches a2 only.
    assert_eq!(ok(&mut b1, "leave", json!({"room": "blue"})).await, json!(true));
    a1.send("say", json!({"room": "blue", "n": 4})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut a3, &mut b1, &mut b2], &[0, 1, 0, 0, 0]).await;
    assert_one(&got[1], EventType::BROADCAST, "say", &json!({"room": "blue", "n": 4}), "a2");
    for (who, g) in [("a1", &got[0]), ("a3", &got[2]), ("b1", &got[3]), ("b2", &got[4])] {
        assert_none(g, who);
    }
}

#[tokio::test]
async fn send_to_reaches_a_client_of_the_other_node_and_reports_unknown_ids() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("st"), Opts::new("st")]);
    let (mut a1, a1_id) = join_node(&nodes[0]).await;
    let (mut a2, _) = join_node(&nodes[0]).await;
    let (mut b1, b1_id) = join_node(&nodes[1]).await;
    settle(&mut [(0, &mut a1), (0, &mut a2), (1, &mut b1)]).await;

    let sent = ok(&mut a1, "sendto", json!({"to": b1_id, "body": {"hi": "from a1"}})).await;
    assert_eq!(sent, json!(true), "send_to a client of node B");
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1], &[0, 0, 1]).await;
    assert_none(&got[0], "a1");
    assert_none(&got[1], "a2");
    assert_one(&got[2], EventType::MESSAGE, "dm", &json!({"hi": "from a1"}), "b1");
    let sent = ok(&mut b1, "sendto", json!({"to": a1_id, "body": {"hi": "from b1"}})).await;
    assert_eq!(sent, json!(true), "send_to a client of node A");
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1], &[1, 0, 0]).await;
    assert_one(&got[0], EventType::MESSAGE, "dm", &json!({"hi": "from b1"}), "a1");
    assert_none(&got[1], "a2");
    assert_none(&got[2], "b1");

    // Unknown ids: no node 0, and no such client on node B.
    for unknown in [12_345_u64, b1_id + 1_000, (node_part(b1_id) + 1_000) << 32 | 1] {
        let sent = ok(&mut a1, "sendto", json!({"to": unknown, "body": {}})).await;
        assert_eq!(sent, json!(false), "send_to unknown id {unknown}");
    }
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1], &[0, 0, 0]).await;
    assert!(got.iter().all(Vec::is_empty), "nothing was delivered for unknown ids: {got:?}");
}

#[tokio::test]
async fn http_publish_to_one_node_reaches_all_a_room_and_a_client_of_the_other() {
    let redis = Redis::start();
    let opts = Opts::new("pub").arg("--api.key", API_KEY);
    let nodes = start_nodes(&redis.url(), &[opts.clone(), opts]);
    let (mut a1, a1_id) = join_node(&nodes[0]).await;
    let (mut a2, a2_id) = join_node(&nodes[0]).await;
    let (mut b1, b1_id) = join_node(&nodes[1]).await;
    let (mut b2, b2_id) = join_node(&nodes[1]).await;
    assert_eq!(ok(&mut a2, "join", json!({"room": "news"})).await, json!(true));
    assert_eq!(ok(&mut b1, "join", json!({"room": "news"})).await, json!(true));
    settle(&mut [(0, &mut a1), (0, &mut a2), (1, &mut b1), (1, &mut b2)]).await;
    wait_clients(&mut a1, &[a1_id, a2_id, b1_id, b2_id], SETTLE).await;

    // To everyone (the default).
    let (status, body) = publish(&nodes[0], json!({"event": "hello", "payload": {"x": 1}})).await;
    assert_eq!(status, 200, "{body}");
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2], &[1, 1, 1, 1]).await;
    for (who, g) in ["a1", "a2", "b1", "b2"].iter().zip(&got) {
        assert_one(g, EventType::BROADCAST, "hello", &json!({"x": 1}), who);
    }
    let (status, body) = publish(&nodes[0], json!({"event": "hello", "payload": {"x": 2}, "to": "all"})).await;
    assert_eq!(status, 200, "{body}");
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2], &[1, 1, 1, 1]).await;
    for (who, g) in ["a1", "a2", "b1", "b2"].iter().zip(&got) {
        assert_one(g, EventType::BROADCAST, "hello", &json!({"x": 2}), who);
    }

    // To a room with members on both nodes.
    let (status, body) =
        publish(&nodes[0], json!({"event": "room", "payload": {"y": 1}, "to": {"room": "news"}})).await;
    assert_eq!(status, 200, "{body}");
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2], &[0, 1, 1, 0]).await;
    assert_none(&got[0], "a1 (not a member)");
    assert_one(&got[1], EventType::BROADCAST, "room", &json!({"y": 1}), "a2");
    assert_one(&got[2], EventType::BROADCAST, "room", &json!({"y": 1}), "b1");
    assert_none(&got[3], "b2 (not a member)");

    // To one client of the other node.
    let (status, body) = publish(&nodes[0], json!({"event": "dm", "payload": {"z": 1}, "to": b2_id})).await;
    assert_eq!((status, &body), (200, &json!({"delivered": 1})));
    // And from B to a client of A.
    let (status, body) = publish(&nodes[1], json!({"event": "dm", "payload": {"z": 2}, "to": a1_id})).await;
    assert_eq!((status, &body), (200, &json!({"delivered": 1})));
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2], &[1, 0, 0, 1]).await;
    assert_one(&got[0], EventType::MESSAGE, "dm", &json!({"z": 2}), "a1");
    assert_none(&got[1], "a2");
    assert_none(&got[2], "b1");
    assert_one(&got[3], EventType::MESSAGE, "dm", &json!({"z": 1}), "b2");

    // To nobody.
    let (status, body) = publish(&nodes[0], json!({"event": "dm", "payload": {}, "to": b2_id + 1_000})).await;
    assert_eq!((status, &body), (200, &json!({"delivered": 0})));
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2], &[0, 0, 0, 0]).await;
    assert!(got.iter().all(Vec::is_empty), "nothing for an unknown id: {got:?}");
}

#[tokio::test]
async fn three_nodes_a_broadcast_from_each_reaches_every_other_client_once() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("three"), Opts::new("three"), Opts::new("three")]);
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for _ in 0..2 {
            clients.push((n, join_node(node).await.0));
        }
    }
    settle(&mut clients.iter_mut().map(|(n, c)| (*n, c)).collect::<Vec<_>>()).await;

    // The first client of each node broadcasts in turn.
    for sender in [0, 2, 4] {
        clients[sender].1.send("bcast", json!({"from": sender})).await;
        let want: Vec<usize> = (0..clients.len()).map(|i| usize::from(i != sender)).collect();
        let got = deliveries(&mut clients.iter_mut().map(|(_, c)| c).collect::<Vec<_>>(), &want).await;
        for (i, g) in got.iter().enumerate() {
            let who = format!("client {i} (node {}), sender {sender}", i / 2);
            if i == sender {
                assert_none(g, &who);
            } else {
                assert_one(g, EventType::BROADCAST, "bcast", &json!({"from": sender}), &who);
            }
        }
    }
}

#[tokio::test]
async fn three_nodes_messages_from_one_sender_arrive_in_order_on_every_node() {
    const N: u64 = 200;
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("order"), Opts::new("order"), Opts::new("order")]);
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for _ in 0..2 {
            clients.push((n, join_node(node).await.0));
        }
    }
    settle(&mut clients.iter_mut().map(|(n, c)| (*n, c)).collect::<Vec<_>>()).await;

    let (sender, receivers) = clients.split_first_mut().expect("clients");
    for i in 0..N {
        sender.1.send("bcast", json!({"i": i})).await;
    }
    let got = join_all(receivers.iter_mut().map(|(_, c)| async move {
        let mut seen = Vec::new();
        while (seen.len() as u64) < N {
            let r = next_reply(c).await;
            assert_eq!((r.event_type, r.event.as_str()), (EventType::BROADCAST, "bcast"), "{r:?}");
            seen.push(r.payload["i"].as_u64().expect("i"));
        }
        seen.extend(collect(c, SILENCE).await.iter().map(|r| r.payload["i"].as_u64().unwrap_or(u64::MAX)));
        seen
    }))
    .await;
    let want: Vec<u64> = (0..N).collect();
    for (i, seen) in got.iter().enumerate() {
        assert_eq!(seen, &want, "receiver {} (node {}) saw the sender's messages out of order", i + 1, receivers[i].0);
    }
    assert_none(&collect(&mut sender.1, SILENCE).await, "the sender");
}

#[tokio::test]
async fn a_plug_that_uses_the_store_still_delivers_one_senders_messages_in_order() {
    // With cluster.redis, store:: waits on the network. The README's chat
    // example (store::push, then broadcast) must keep one sender's lines in
    // order on every node all the same (SPEC 11: "in order per sender").
    const N: u64 = 200;
    let want: Vec<u64> = (0..N).collect();
    // The control: one node with its store in memory keeps the order.
    let memory = start_nodes("", &[Opts::new("chat")]).pop().expect("memory node");
    let (mut m1, _) = join_node(&memory).await;
    let (mut m2, _) = join_node(&memory).await;
    for i in 0..N {
        m1.send("chat", json!({"i": i})).await;
    }
    let mut seen = Vec::new();
    while (seen.len() as u64) < N {
        seen.push(next_reply(&mut m2).await.payload["i"].as_u64().expect("i"));
    }
    assert_eq!(seen, want, "one node, store in memory: the lines arrive in order");
    drop(memory);

    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("chat"), Opts::new("chat")]);
    let (mut a1, _) = join_node(&nodes[0]).await;
    let (mut a2, _) = join_node(&nodes[0]).await;
    let (mut b1, _) = join_node(&nodes[1]).await;
    settle(&mut [(0, &mut a1), (0, &mut a2), (1, &mut b1)]).await;

    for i in 0..N {
        a1.send("chat", json!({"i": i})).await;
    }
    let got = join_all([&mut a2, &mut b1].into_iter().map(|c| async move {
        let mut seen = Vec::new();
        while (seen.len() as u64) < N {
            let r = next_reply(c).await;
            assert_eq!((r.event_type, r.event.as_str()), (EventType::BROADCAST, "chat"), "{r:?}");
            seen.push(r.payload["i"].as_u64().expect("i"));
        }
        seen
    }))
    .await;
    assert_eq!(got[0], want, "a2 (the sender's node) saw the sender's lines out of order");
    assert_eq!(got[1], want, "b1 (the other node) saw the sender's lines out of order");
    let history = ok(&mut a1, "st", json!({"op": "range", "key": "history", "start": 0, "end": -1})).await;
    let history: Vec<u64> = history.as_array().expect("a list").iter().filter_map(|v| v["i"].as_u64()).collect();
    assert_eq!(history, (N - 50..N).collect::<Vec<_>>(), "the history holds the last 50 lines, in order");
}

#[tokio::test]
async fn a_node_that_shuts_down_cleanly_leaves_the_cluster_at_once() {
    // Heartbeats every 10 s: the node's keys would live 50 s, so only its
    // goodbye can make it vanish within the wait below.
    let redis = Redis::start();
    let opts = Opts::new("bye").heartbeat_ms(10_000);
    let mut nodes = start_nodes(&redis.url(), &[opts.clone(), opts]);
    let (mut a1, a1_id) = join_node(&nodes[0]).await;
    let (mut b1, b1_id) = join_node(&nodes[1]).await;
    assert_eq!(ok(&mut b1, "join", json!({"room": "r"})).await, json!(true));
    settle(&mut [(0, &mut a1), (1, &mut b1)]).await;
    wait_clients(&mut a1, &[a1_id, b1_id], SETTLE).await;

    let status = Command::new("kill").arg("-TERM").arg(nodes[1].child.id().to_string()).status().expect("kill");
    assert!(status.success());
    assert_eq!(close_code(&mut b1).await, Some(1001), "b1 is closed as the server goes away");
    let exited = nodes[1].child.wait().expect("wait");
    assert!(exited.success(), "node B exits 0 on SIGTERM: {exited:?}; stderr:\n{}", nodes[1].stderr());
    wait_clients(&mut a1, &[a1_id], Duration::from_secs(10)).await;
    let info = ok(&mut a1, "room_info", json!({"room": "r"})).await;
    assert_eq!((&info["members"], &info["list"]), (&json!([]), &json!([])), "B's rooms left with it");
    // B's registry keys are gone from Redis.
    let stale: Vec<String> =
        redis.keys().into_iter().filter(|k| k.starts_with(&format!("bye:n:{}:", node_part(b1_id)))).collect();
    assert!(stale.is_empty(), "node B's registry keys remain: {stale:?}");
}

// ------------------------------------------------------------ who is where

#[tokio::test]
async fn client_ids_are_unique_across_nodes_below_2_pow_53_and_clients_spans_nodes() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("ids"), Opts::new("ids"), Opts::new("ids")]);
    let mut clients = Vec::new();
    let mut by_node: Vec<Vec<u64>> = vec![Vec::new(); nodes.len()];
    for (n, node) in nodes.iter().enumerate() {
        for _ in 0..4 {
            let (c, id) = join_node(node).await;
            by_node[n].push(id);
            clients.push((n, c));
        }
    }
    let all: Vec<u64> = sorted(by_node.concat());
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "ids are unique across nodes: {by_node:?}");
    for id in &all {
        assert!(*id > 0 && *id < 1 << 53, "id {id} is exact in JavaScript (0 < id < 2^53)");
    }
    // Ids carry their node: one node part per node, a different one on each.
    let parts: Vec<BTreeSet<u64>> = by_node.iter().map(|ids| ids.iter().map(|id| node_part(*id)).collect()).collect();
    for p in &parts {
        assert_eq!(p.len(), 1, "one node part per node: {by_node:?}");
    }
    let distinct: BTreeSet<u64> = parts.iter().flatten().copied().collect();
    assert_eq!(distinct.len(), nodes.len(), "each node has its own number: {by_node:?}");

    // clients() on every node lists the clients of all three.
    for i in [0, 4, 8] {
        wait_clients(&mut clients[i].1, &all, SETTLE).await;
    }
    // A client that leaves is gone from the other nodes' lists.
    let (_, gone) = clients.remove(5);
    gone.close().await;
    let left: Vec<u64> = all.iter().copied().filter(|id| *id != by_node[1][1]).collect();
    wait_clients(&mut clients[0].1, &left, SETTLE).await;
    wait_clients(&mut clients[7].1, &left, SETTLE).await;
}

#[tokio::test]
async fn members_presence_and_rooms_span_nodes_and_a_killed_node_vanishes() {
    let redis = Redis::start();
    let opts = Opts::new("presence").arg("--auth.jwtSecret", JWT_SECRET);
    let mut nodes = start_nodes(&redis.url(), &[opts.clone(), opts]);
    let ada = json!({"sub": "ada", "name": "Ada"});
    let bob = json!({"sub": "bob", "name": "Bob"});
    let mut a1 = Client::connect(&format!("{}?token={}", nodes[0].url(), token(&ada))).await;
    let a1_id = whoami(&mut a1).await;
    let (mut a2, a2_id) = join_node(&nodes[0]).await;
    let mut b1 = Client::connect(&format!("{}?token={}", nodes[1].url(), token(&bob))).await;
    let b1_id = whoami(&mut b1).await;
    let (mut b2, b2_id) = join_node(&nodes[1]).await;
    let (mut b3, b3_id) = join_node(&nodes[1]).await;
    for c in [&mut a1, &mut b1, &mut b2, &mut b3] {
        assert_eq!(ok(c, "join", json!({"room": "lobby"})).await, json!(true));
    }
    assert_eq!(ok(&mut b2, "join", json!({"room": "b-only"})).await, json!(true));
    settle(&mut [(0, &mut a1), (0, &mut a2), (1, &mut b1), (1, &mut b2), (1, &mut b3)]).await;

    let lobby = sorted(vec![a1_id, b1_id, b2_id, b3_id]);
    let info = poll(&mut a2, "room_info", json!({"room": "lobby"}), SETTLE, "members of lobby from A", |v| {
        ids(&v["members"]) == lobby
    })
    .await;
    let mut presence = vec![
        json!({"client": a1_id, "user": ada}),
        json!({"client": b1_id, "user": bob}),
        json!({"client": b2_id, "user": null}),
        json!({"client": b3_id, "user": null}),
    ];
    presence.sort_by_key(|p| p["client"].as_u64());
    assert_eq!(info["presence"], json!(presence), "presence of lobby from A");
    assert_eq!(info["list"], json!(["b-only", "lobby"]), "rooms::list() from A");
    // The same from B.
    let info = ok(&mut b3, "room_info", json!({"room": "lobby"})).await;
    assert_eq!(ids(&info["members"]), lobby, "members of lobby from B");
    assert_eq!(info["presence"], json!(presence), "presence of lobby from B");
    // rooms::of a client of the other node (its order has a test of its own).
    let mut of = ok(&mut a2, "rooms_of", json!({"id": b2_id})).await.as_array().expect("rooms").clone();
    of.sort_by_key(|r| r.as_str().map(str::to_owned));
    assert_eq!(json!(of), json!(["b-only", "lobby"]));
    assert_eq!(ok(&mut b3, "rooms_of", json!({"id": a1_id})).await, json!(["lobby"]));
    wait_clients(&mut a2, &[a1_id, a2_id, b1_id, b2_id, b3_id], SETTLE).await;

    // A client of B that disconnects leaves A's view.
    b3.close().await;
    let lobby = sorted(vec![a1_id, b1_id, b2_id]);
    poll(&mut a2, "room_info", json!({"room": "lobby"}), SETTLE, "b3 leaves lobby", |v| ids(&v["members"]) == lobby)
        .await;
    wait_clients(&mut a2, &[a1_id, a2_id, b1_id, b2_id], SETTLE).await;

    // Node B dies without a word: its clients, members and rooms vanish from A.
    nodes[1].kill();
    let info = poll(&mut a2, "room_info", json!({"room": "lobby"}), VANISH, "node B vanishes from lobby", |v| {
        ids(&v["members"]) == vec![a1_id]
    })
    .await;
    assert_eq!(info["presence"], json!([{"client": a1_id, "user": ada}]), "presence after B died");
    assert_eq!(info["list"], json!(["lobby"]), "rooms::list() after B died");
    wait_clients(&mut a2, &[a1_id, a2_id], VANISH).await;
    let info = ok(&mut a2, "room_info", json!({"room": "b-only"})).await;
    assert_eq!(info["members"], json!([]), "a room of B only is empty");
    assert_eq!(ok(&mut a2, "rooms_of", json!({"id": b2_id})).await, json!([]));
    assert_eq!(ok(&mut a2, "sendto", json!({"to": b1_id, "body": {}})).await, json!(false), "send_to a dead node");

    // A serves on: a broadcast reaches its other client, with no error.
    a1.send("bcast", json!({"still": "here"})).await;
    let got = deliveries(&mut [&mut a1, &mut a2], &[0, 1]).await;
    assert_none(&got[0], "the sender a1");
    assert_one(&got[1], EventType::BROADCAST, "bcast", &json!({"still": "here"}), "a2");
    nodes[0].assert_alive("A");
}

#[tokio::test]
async fn rooms_join_and_leave_of_a_client_of_another_node() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("rjoin"), Opts::new("rjoin")]);
    let (mut a1, a1_id) = join_node(&nodes[0]).await;
    let (mut a2, a2_id) = join_node(&nodes[0]).await;
    let (mut b1, b1_id) = join_node(&nodes[1]).await;
    let (mut b2, b2_id) = join_node(&nodes[1]).await;
    settle(&mut [(0, &mut a1), (0, &mut a2), (1, &mut b1), (1, &mut b2)]).await;
    wait_clients(&mut a1, &[a1_id, a2_id, b1_id, b2_id], SETTLE).await;

    // A puts B's client b1 in a room; b1's node makes it a member.
    assert_eq!(ok(&mut a1, "join", json!({"id": b1_id, "room": "vip"})).await, json!(true));
    poll(&mut b1, "rooms_of", json!({"id": b1_id}), SETTLE, "b1 is in vip on its node", |v| *v == json!(["vip"])).await;
    poll(&mut a1, "room_info", json!({"room": "vip"}), SETTLE, "A sees b1 in vip", |v| {
        ids(&v["members"]) == vec![b1_id]
    })
    .await;
    // So room sends reach it, from either node.
    a2.send("roomsend", json!({"room": "vip", "n": 1})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2], &[0, 0, 1, 0]).await;
    assert_one(&got[2], EventType::BROADCAST, "roomsend", &json!({"room": "vip", "n": 1}), "b1");
    for (who, g) in [("a1", &got[0]), ("a2", &got[1]), ("b2", &got[3])] {
        assert_none(g, who);
    }

    // A join and a send in one run arrive in that order: b2 gets the send.
    a1.send("join_send", json!({"id": b2_id, "room": "fresh"})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2], &[0, 0, 0, 1]).await;
    assert_one(&got[3], EventType::BROADCAST, "join_send", &json!({"id": b2_id, "room": "fresh"}), "b2");
    for (who, g) in [("a1", &got[0]), ("a2", &got[1]), ("b1", &got[2])] {
        assert_none(g, who);
    }

    // And out again.
    assert_eq!(ok(&mut a1, "leave", json!({"id": b1_id, "room": "vip"})).await, json!(true));
    poll(&mut b1, "rooms_of", json!({"id": b1_id}), SETTLE, "b1 left vip", |v| *v == json!([])).await;
    a2.send("roomsend", json!({"room": "vip", "n": 2})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2], &[0, 0, 0, 0]).await;
    assert!(got.iter().all(Vec::is_empty), "nobody is in vip any more: {got:?}");

    // An id no node has.
    assert_eq!(ok(&mut a1, "join", json!({"id": b1_id + 1_000, "room": "vip"})).await, json!(false));
}

#[tokio::test]
async fn rooms_join_and_leave_of_another_nodes_client_say_whether_anything_changed() {
    // README: rooms::join(id, room) is `true` if it was not in it yet,
    // `false` if it was; rooms::leave(id, room) is `false` if it was not in
    // it. On one node that holds for any client; here for another node's.
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("rjoin2"), Opts::new("rjoin2")]);
    let (mut a1, _) = join_node(&nodes[0]).await;
    let (mut a2, a2_id) = join_node(&nodes[0]).await;
    let (mut b1, b1_id) = join_node(&nodes[1]).await;
    assert_eq!(ok(&mut b1, "join", json!({"room": "r"})).await, json!(true));
    assert_eq!(ok(&mut a2, "join", json!({"room": "r"})).await, json!(true));
    settle(&mut [(0, &mut a1), (0, &mut a2), (1, &mut b1)]).await;
    poll(&mut a1, "room_info", json!({"room": "r"}), SETTLE, "A sees b1 in r", |v| {
        ids(&v["members"]) == sorted(vec![a2_id, b1_id])
    })
    .await;

    // The same node: a member joins again → false; a non-member leaves → false.
    assert_eq!(ok(&mut a1, "join", json!({"id": a2_id, "room": "r"})).await, json!(false), "local join of a member");
    assert_eq!(ok(&mut a1, "leave", json!({"id": a2_id, "room": "elsewhere"})).await, json!(false));
    // Another node's client: the same answers.
    let join_again = ok(&mut a1, "join", json!({"id": b1_id, "room": "r"})).await;
    let leave_other = ok(&mut a1, "leave", json!({"id": b1_id, "room": "elsewhere"})).await;
    assert_eq!(
        (join_again, leave_other),
        (json!(false), json!(false)),
        "(rooms::join(id, \"r\") of another node's client already in r, \
         rooms::leave(id, \"elsewhere\") of another node's client not in it)"
    );
    // Nothing changed on B.
    assert_eq!(ok(&mut b1, "rooms_of", json!({"id": b1_id})).await, json!(["r"]));
}

#[tokio::test]
async fn rooms_of_a_client_of_another_node_lists_its_rooms_sorted() {
    // README: rooms::of(id) is "the rooms a client (the sender) is in, sorted".
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("of"), Opts::new("of")]);
    let (mut a1, _) = join_node(&nodes[0]).await;
    let (mut b1, b1_id) = join_node(&nodes[1]).await;
    let rooms: Vec<String> = (0..10).map(|i| format!("room-{i}")).collect();
    for room in rooms.iter().rev() {
        assert_eq!(ok(&mut b1, "join", json!({ "room": room })).await, json!(true));
    }
    assert_eq!(ok(&mut b1, "rooms_of", json!({"id": b1_id})).await, json!(rooms), "on its own node");
    settle(&mut [(0, &mut a1), (1, &mut b1)]).await;
    let of = poll(&mut a1, "rooms_of", json!({"id": b1_id}), SETTLE, "A sees b1's ten rooms", |v| {
        v.as_array().is_some_and(|a| a.len() == rooms.len())
    })
    .await;
    assert_eq!(of, json!(rooms), "rooms::of(id) of another node's client, from A");
}

/// The close code a client gets, skipping messages before it.
async fn close_code(c: &mut Client) -> Option<u16> {
    loop {
        match c.next().await {
            Received::Reply(_) => continue,
            Received::Closed(code) => return code,
        }
    }
}

#[tokio::test]
async fn kick_all_from_one_node_closes_the_clients_of_every_node() {
    let redis = Redis::start();
    let mut nodes = start_nodes(&redis.url(), &[Opts::new("kick").init(KICK_INIT), Opts::new("kick")]);
    let (mut a1, _) = join_node(&nodes[0]).await;
    let (mut b1, _) = join_node(&nodes[1]).await;
    let (mut b2, _) = join_node(&nodes[1]).await;
    settle(&mut [(0, &mut a1), (1, &mut b1), (1, &mut b2)]).await;

    // The next client of A makes A's INIT call server.kick_all().
    assert_eq!(ok(&mut a1, "st", json!({"op": "set", "key": "kick", "value": true})).await, json!(true));
    let mut trigger = nodes[0].client().await;
    for (who, c) in [("trigger", &mut trigger), ("a1", &mut a1), ("b1", &mut b1), ("b2", &mut b2)] {
        assert_eq!(close_code(c).await, Some(ssocket::init::CLOSE_KICKED), "{who} was kicked (code 1000)");
    }
    // Both nodes serve newcomers.
    for node in &nodes {
        let (mut c, _) = join_node(node).await;
        c.expect_silence(Duration::from_millis(300)).await;
    }
    nodes[0].assert_alive("A");
    nodes[1].assert_alive("B");
}

// ------------------------------------------------------------ store

#[tokio::test]
async fn store_incr_from_clients_on_two_nodes_is_atomic() {
    const CLIENTS_PER_NODE: usize = 5;
    const EACH: usize = 100;
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("incr"), Opts::new("incr")]);
    let mut clients = Vec::new();
    for node in &nodes {
        for _ in 0..CLIENTS_PER_NODE {
            clients.push(join_node(node).await.0);
        }
    }
    let answers = join_all(clients.iter_mut().map(|c| async move {
        for _ in 0..EACH {
            c.send("st", json!({"op": "incr", "key": "hits"})).await;
        }
        let mut got = Vec::new();
        for _ in 0..EACH {
            let r = next_reply(c).await;
            got.push(r.payload["ok"].as_i64().unwrap_or_else(|| panic!("incr answered {r:?}")));
        }
        got
    }))
    .await;
    let mut all: Vec<i64> = answers.concat();
    all.sort_unstable();
    let total = (2 * CLIENTS_PER_NODE * EACH) as i64;
    assert_eq!(all, (1..=total).collect::<Vec<_>>(), "every incr saw a distinct count, 1 to {total}");
    assert_eq!(ok(&mut clients[0], "st", json!({"op": "get", "key": "hits"})).await, json!(total));
    assert_eq!(ok(&mut clients[9], "st", json!({"op": "get", "key": "hits"})).await, json!(total));
}

/// Store operations whose answers do not depend on time, each with the
/// answer the README documents (None: only compared with memory's).
fn store_script() -> Vec<(Value, Option<Value>)> {
    let profile = json!({"name": "Ada", "tags": ["x", 1], "n": 1.5, "ok": true, "none": null});
    let okv = |v: Value| Some(json!({ "ok": v }));
    let errv = |code: &str| Some(json!({ "err": code }));
    vec![
        (json!({"op": "get", "key": "missing"}), okv(json!(null))),
        (json!({"op": "set", "key": "profile", "value": profile}), okv(json!(true))),
        (json!({"op": "get", "key": "profile"}), okv(profile.clone())),
        (json!({"op": "del", "key": "profile"}), okv(json!(true))),
        (json!({"op": "del", "key": "profile"}), okv(json!(false))),
        (json!({"op": "get", "key": "profile"}), okv(json!(null))),
        (json!({"op": "incr", "key": "n", "by": 5}), okv(json!(5))),
        (json!({"op": "incr", "key": "n", "by": -2}), okv(json!(3))),
        (json!({"op": "incr", "key": "n"}), okv(json!(4))),
        (json!({"op": "get", "key": "n"}), okv(json!(4))),
        (json!({"op": "set", "key": "n", "value": 10}), okv(json!(true))),
        (json!({"op": "incr", "key": "n"}), okv(json!(11))),
        (json!({"op": "set", "key": "text", "value": "hello"}), okv(json!(true))),
        (json!({"op": "set", "key": "float", "value": 2.5}), okv(json!(true))),
        (json!({"op": "set", "key": "quoted", "value": "5"}), okv(json!(true))),
        (json!({"op": "set", "key": "big", "value": i64::MAX}), okv(json!(true))),
        (json!({"op": "push", "key": "hist", "value": 1, "max": 3}), okv(json!(1))),
        (json!({"op": "push", "key": "hist", "value": {"two": 2}, "max": 3}), okv(json!(2))),
        (json!({"op": "push", "key": "hist", "value": "three", "max": 3}), okv(json!(3))),
        (json!({"op": "push", "key": "hist", "value": [4], "max": 3}), okv(json!(3))),
        (json!({"op": "push", "key": "hist", "value": 5, "max": 3}), okv(json!(3))),
        (json!({"op": "range", "key": "hist", "start": 0, "end": -1}), okv(json!(["three", [4], 5]))),
        (json!({"op": "range", "key": "hist", "start": -2, "end": -1}), okv(json!([[4], 5]))),
        (json!({"op": "range", "key": "hist", "start": 1, "end": 100}), okv(json!([[4], 5]))),
        (json!({"op": "range", "key": "hist", "start": -100, "end": 0}), okv(json!(["three"]))),
        (json!({"op": "range", "key": "hist", "start": 5, "end": 10}), okv(json!([]))),
        (json!({"op": "range", "key": "hist", "start": 2, "end": 1}), okv(json!([]))),
        (json!({"op": "range", "key": "nothing", "start": 0, "end": -1}), okv(json!([]))),
        (json!({"op": "get", "key": "hist"}), okv(json!(["three", [4], 5]))),
        (json!({"op": "push", "key": "hist", "value": 6, "max": 1}), okv(json!(1))),
        (json!({"op": "get", "key": "hist"}), okv(json!([6]))),
        // Wrong types, as in memory.
        (json!({"op": "incr", "key": "text"}), errv("wrong_type")),
        (json!({"op": "incr", "key": "float"}), errv("wrong_type")),
        (json!({"op": "incr", "key": "quoted"}), errv("wrong_type")),
        (json!({"op": "incr", "key": "hist"}), errv("wrong_type")),
        (json!({"op": "push", "key": "text", "value": 1, "max": 3}), errv("wrong_type")),
        (json!({"op": "range", "key": "text", "start": 0, "end": -1}), errv("wrong_type")),
        (json!({"op": "get", "key": "text"}), okv(json!("hello"))),
        (json!({"op": "get", "key": "quoted"}), okv(json!("5"))),
        // Bad arguments and overflow.
        (json!({"op": "incr", "key": "big"}), errv("bad_argument")),
        (json!({"op": "get", "key": "big"}), okv(json!(i64::MAX))),
        (json!({"op": "set_ttl", "key": "t", "value": 1, "ttl": 0}), errv("bad_argument")),
        (json!({"op": "push", "key": "l", "value": 1, "max": 0}), errv("bad_argument")),
        (json!({"op": "get", "key": ""}), errv("bad_argument")),
        // Keys by prefix, sorted; glob characters are just characters.
        (json!({"op": "set", "key": "kp:b", "value": 1}), okv(json!(true))),
        (json!({"op": "set", "key": "kp:a", "value": 1}), okv(json!(true))),
        (json!({"op": "push", "key": "kp:c", "value": 1, "max": 5}), okv(json!(1))),
        (json!({"op": "set", "key": "k*x", "value": 1}), okv(json!(true))),
        (json!({"op": "set", "key": "kz", "value": 1}), okv(json!(true))),
        (json!({"op": "keys", "prefix": "kp:"}), okv(json!(["kp:a", "kp:b", "kp:c"]))),
        (json!({"op": "keys", "prefix": "k*"}), okv(json!(["k*x"]))),
        (json!({"op": "keys", "prefix": "k?"}), okv(json!([]))),
        (json!({"op": "keys", "prefix": "nomatch"}), okv(json!([]))),
        (json!({"op": "keys", "prefix": "k"}), okv(json!(["k*x", "kp:a", "kp:b", "kp:c", "kz"]))),
        (json!({"op": "keys", "prefix": ""}), None),
        (json!({"op": "del", "key": "kp:c"}), okv(json!(true))),
        (json!({"op": "keys", "prefix": "kp"}), okv(json!(["kp:a", "kp:b"]))),
    ]
}

#[tokio::test]
async fn store_on_redis_answers_as_the_memory_store_does_from_either_node() {
    let redis = Redis::start();
    let mut nodes = start_nodes(&redis.url(), &[Opts::new("sem"), Opts::new("sem")]);
    // A single node with no cluster.redis keeps its store in memory.
    let memory = start_nodes("", &[Opts::new("sem")]).pop().expect("memory node");
    let (mut a, _) = join_node(&nodes[0]).await;
    let (mut b, _) = join_node(&nodes[1]).await;
    let (mut m, _) = join_node(&memory).await;

    // Each operation on the memory store, and on Redis from A and B in turn.
    for (i, (op, documented)) in store_script().into_iter().enumerate() {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        let on_redis = req(c, "st", op.clone()).await.payload;
        let in_memory = req(&mut m, "st", op.clone()).await.payload;
        if let Some(documented) = documented {
            assert_eq!(in_memory, documented, "memory store: {op}");
        }
        assert_eq!(on_redis, in_memory, "Redis (left, node {}) and memory (right) answer {op} alike", i % 2);
    }
    nodes[0].assert_alive("A");
    nodes[1].assert_alive("B");
}

#[tokio::test]
async fn store_on_redis_takes_every_argument_the_memory_store_takes() {
    // Any TTL and max_len of at least 1 and any range indexes are valid
    // (README, store::); the memory store takes them all.
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("args")]);
    let memory = start_nodes("", &[Opts::new("args")]).pop().expect("memory node");
    let (mut r, _) = join_node(&nodes[0]).await;
    let (mut m, _) = join_node(&memory).await;
    let script = [
        json!({"op": "push", "key": "l", "value": 1, "max": 3}),
        json!({"op": "push", "key": "l", "value": 2, "max": 100_000_000_000_000_000_i64}),
        json!({"op": "push", "key": "l", "value": 3, "max": i64::MAX}),
        json!({"op": "range", "key": "l", "start": i64::MIN, "end": i64::MAX}),
        json!({"op": "set_ttl", "key": "t", "value": 1, "ttl": i64::MAX}),
        json!({"op": "get", "key": "t"}),
    ];
    let mut differ = Vec::new();
    for op in script {
        let on_redis = req(&mut r, "st", op.clone()).await.payload;
        let in_memory = req(&mut m, "st", op.clone()).await.payload;
        assert!(in_memory.get("ok").is_some(), "memory store: {op} answered {in_memory}");
        if on_redis != in_memory {
            differ.push(format!("{op}: Redis {on_redis}, memory {in_memory}"));
        }
    }
    assert!(differ.is_empty(), "the Redis store answers otherwise:\n{}", differ.join("\n"));
}

#[tokio::test]
async fn store_ttls_on_redis_expire_for_every_node() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("ttl"), Opts::new("ttl")]);
    let (mut a, _) = join_node(&nodes[0]).await;
    let (mut b, _) = join_node(&nodes[1]).await;
    let st = |op: &str, key: &str, extra: Value| {
        let mut v = json!({"op": op, "key": key});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    };
    assert_eq!(ok(&mut a, "st", st("set_ttl", "short", json!({"value": "v", "ttl": 300}))).await, json!(true));
    assert_eq!(ok(&mut a, "st", st("set_ttl", "later", json!({"value": "v", "ttl": 60_000}))).await, json!(true));
    assert_eq!(ok(&mut a, "st", st("set", "forever", json!({"value": "v"}))).await, json!(true));
    // A set without a TTL clears an earlier one.
    assert_eq!(ok(&mut a, "st", st("set_ttl", "cleared", json!({"value": 1, "ttl": 300}))).await, json!(true));
    assert_eq!(ok(&mut b, "st", st("set", "cleared", json!({"value": 2}))).await, json!(true));
    // incr and push keep a key's TTL.
    assert_eq!(ok(&mut a, "st", st("set_ttl", "counted", json!({"value": 1, "ttl": 300}))).await, json!(true));
    let counted = ok(&mut b, "st", st("incr", "counted", json!({}))).await;
    assert_eq!(ok(&mut b, "st", st("get", "later", json!({}))).await, json!("v"), "B reads A's key with a TTL");

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(ok(&mut b, "st", st("get", "short", json!({}))).await, json!(null), "300 ms TTL, read from B");
    assert_eq!(ok(&mut a, "st", st("get", "short", json!({}))).await, json!(null), "300 ms TTL, read from A");
    assert_eq!(ok(&mut b, "st", st("get", "later", json!({}))).await, json!("v"));
    assert_eq!(ok(&mut b, "st", st("get", "forever", json!({}))).await, json!("v"));
    assert_eq!(ok(&mut a, "st", st("get", "cleared", json!({}))).await, json!(2), "set without TTL keeps it");
    let mut left = vec!["cleared", "forever", "later"];
    if counted == json!(2) {
        // The incr came before the expiry (as it does but on a starved
        // machine): it kept the TTL.
        assert_eq!(ok(&mut a, "st", st("get", "counted", json!({}))).await, json!(null), "incr keeps the TTL");
    } else {
        left.insert(1, "counted");
    }
    let keys = ok(&mut a, "st", json!({"op": "keys", "prefix": ""})).await;
    assert_eq!(keys, json!(left), "expired keys are gone from keys()");
}

// ------------------------------------------------------------ faults

#[tokio::test]
async fn redis_killed_then_restarted_local_delivery_goes_on_and_cross_node_delivery_comes_back() {
    let mut redis = Redis::start();
    let opts = Opts::new("fault").arg("--api.key", API_KEY);
    let mut nodes = start_nodes(&redis.url(), &[opts.clone(), opts.clone()]);
    let (mut a1, a1_id) = join_node(&nodes[0]).await;
    let (mut a2, a2_id) = join_node(&nodes[0]).await;
    let (mut b1, b1_id) = join_node(&nodes[1]).await;
    let (mut b2, b2_id) = join_node(&nodes[1]).await;
    let (mut gone, gone_id) = join_node(&nodes[1]).await;
    assert_eq!(ok(&mut b1, "join", json!({"room": "r"})).await, json!(true));
    settle(&mut [(0, &mut a1), (0, &mut a2), (1, &mut b1), (1, &mut b2), (1, &mut gone)]).await;
    wait_clients(&mut a1, &[a1_id, a2_id, b1_id, b2_id, gone_id], SETTLE).await;
    assert_eq!(ok(&mut a1, "st", json!({"op": "incr", "key": "before"})).await, json!(1));
    wait_ready(&nodes[0], 200, "A").await;
    assert!(http_get(&nodes[0], "/metrics").await.1.contains("\nssocket_redis_up 1\n"));

    redis.kill();
    // store:: fails with a catchable store_unavailable on both nodes (once
    // each node has noticed).
    for (who, c) in [("A", &mut a1), ("B", &mut b1)] {
        let deadline = Instant::now() + SETTLE;
        loop {
            let r = req(c, "st", json!({"op": "get", "key": "before"})).await;
            if r.payload == json!({"err": "store_unavailable"}) {
                break;
            }
            assert!(Instant::now() < deadline, "node {who}: store::get still answers {r:?} with Redis down");
            tokio::time::sleep(POLL).await;
        }
    }
    assert_eq!(err(&mut a1, "st", json!({"op": "incr", "key": "before"})).await, "store_unavailable");
    // Load balancers hear it; the process is alive all the same.
    for (who, node) in [("A", &nodes[0]), ("B", &nodes[1])] {
        let body = wait_ready(node, 503, who).await;
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body, json!({"status": "unavailable", "reason": "Redis is unavailable"}));
        assert_eq!(http_get(node, "/healthz").await.0, 200);
        assert!(http_get(node, "/metrics").await.1.contains("\nssocket_redis_up 0\n"), "node {who}");
    }
    // clients(), members and presence cannot ask the other nodes.
    assert_eq!(err(&mut a1, "clients", json!({})).await, "cluster_unavailable");
    assert_eq!(err(&mut b2, "room_info", json!({"room": "r"})).await, "cluster_unavailable");

    // A broadcast reaches the sender's node; the sender is told the rest did not happen.
    a1.send("bcast", json!({"n": "down-a"})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2], &[1, 1, 0, 0]).await;
    assert_eq!(got[0].len(), 1, "the sender a1 gets one ERROR: {:?}", got[0]);
    assert_eq!((got[0][0].event_type, got[0][0].event.as_str()), (EventType::ERROR, "bcast"), "{:?}", got[0]);
    assert_eq!(got[0][0].payload["error"], json!("cluster_unavailable"), "{:?}", got[0]);
    assert_one(&got[1], EventType::BROADCAST, "bcast", &json!({"n": "down-a"}), "a2 (same node)");
    assert_none(&got[2], "b1 (other node, Redis down)");
    assert_none(&got[3], "b2 (other node, Redis down)");
    // The same from B, caught by the plug.
    assert_eq!(err(&mut b1, "bcast_try", json!({"n": "down-b"})).await, "cluster_unavailable");
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2], &[0, 0, 0, 1]).await;
    assert_one(&got[3], EventType::BROADCAST, "bcast_try", &json!({"n": "down-b"}), "b2 (same node)");
    for (who, g) in [("a1", &got[0]), ("a2", &got[1]), ("b1", &got[2])] {
        assert_none(g, who);
    }
    // send_to: a client of this node still gets it; another node's cannot be reached.
    assert_eq!(ok(&mut a1, "sendto", json!({"to": a2_id, "body": {"local": true}})).await, json!(true));
    let got = deliveries(&mut [&mut a2], &[1]).await;
    assert_one(&got[0], EventType::MESSAGE, "dm", &json!({"local": true}), "a2");
    assert_eq!(err(&mut a1, "sendto", json!({"to": b1_id, "body": {}})).await, "cluster_unavailable");
    // /api/publish: 503 cluster_unavailable, after delivering to this node's clients.
    let (status, body) = publish(&nodes[0], json!({"event": "news", "payload": {"down": true}})).await;
    assert_eq!((status, &body["error"], &body["delivered"]), (503, &json!("cluster_unavailable"), &json!(2)), "{body}");
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2], &[1, 1, 0, 0]).await;
    assert_one(&got[0], EventType::BROADCAST, "news", &json!({"down": true}), "a1");
    assert_one(&got[1], EventType::BROADCAST, "news", &json!({"down": true}), "a2");
    assert_none(&got[2], "b1");
    assert_none(&got[3], "b2");

    // Clients come, join and go on B meanwhile.
    let (mut late, late_id) = join_node(&nodes[1]).await;
    assert_eq!(ok(&mut late, "join", json!({"room": "late"})).await, json!(true));
    gone.close().await;
    nodes[0].assert_alive("A");
    nodes[1].assert_alive("B");

    // Redis comes back (empty, on the same port): the nodes reconnect by
    // themselves and write their registries afresh.
    redis.restart();
    let everyone = [a1_id, a2_id, b1_id, b2_id, late_id];
    wait_clients(&mut a1, &everyone, SETTLE).await;
    wait_clients(&mut b2, &everyone, SETTLE).await;
    wait_ready(&nodes[0], 200, "A").await;
    wait_ready(&nodes[1], 200, "B").await;
    poll(&mut a1, "room_info", json!({"room": "r"}), SETTLE, "A sees b1 in r again", |v| {
        ids(&v["members"]) == vec![b1_id]
    })
    .await;
    poll(&mut a1, "room_info", json!({"room": "late"}), SETTLE, "A sees the room joined while Redis was down", |v| {
        ids(&v["members"]) == vec![late_id]
    })
    .await;
    settle(&mut [(0, &mut a1), (0, &mut a2), (1, &mut b1), (1, &mut b2), (1, &mut late)]).await;
    a1.send("bcast", json!({"n": "up"})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1, &mut b2, &mut late], &[0, 1, 1, 1, 1]).await;
    assert_none(&got[0], "the sender a1");
    for (who, g) in [("a2", &got[1]), ("b1", &got[2]), ("b2", &got[3]), ("late", &got[4])] {
        assert_one(g, EventType::BROADCAST, "bcast", &json!({"n": "up"}), who);
    }
    assert_eq!(ok(&mut b1, "sendto", json!({"to": a2_id, "body": {"back": true}})).await, json!(true));
    let got = deliveries(&mut [&mut a2], &[1]).await;
    assert_one(&got[0], EventType::MESSAGE, "dm", &json!({"back": true}), "a2");
    // The store works again (the restarted Redis is empty).
    assert_eq!(ok(&mut a1, "st", json!({"op": "get", "key": "before"})).await, json!(null));
    assert_eq!(ok(&mut a1, "st", json!({"op": "incr", "key": "after"})).await, json!(1));
    assert_eq!(ok(&mut b1, "st", json!({"op": "incr", "key": "after"})).await, json!(2));

    // A node that starts now gets a number of its own (the restarted Redis
    // forgot the counter; the nodes told it theirs).
    let node_c = start_nodes(&redis.url(), &[opts]).pop().expect("node C");
    let (mut c1, c1_id) = join_node(&node_c).await;
    let parts = [node_part(a1_id), node_part(b1_id)];
    assert!(!parts.contains(&node_part(c1_id)), "node C's ids {c1_id} clash with A's or B's ({parts:?})");
    settle(&mut [(0, &mut a1), (1, &mut b1), (2, &mut c1)]).await;
    wait_clients(&mut c1, &[a1_id, a2_id, b1_id, b2_id, late_id, c1_id], SETTLE).await;
    nodes[0].assert_alive("A");
    nodes[1].assert_alive("B");
}

#[tokio::test]
async fn a_node_that_starts_just_after_redis_restarted_gets_a_number_no_live_node_has() {
    // A restarted Redis has forgotten the node counter and the node list;
    // the running nodes tell it theirs at their next heartbeat (here 60 s
    // away, as it may be up to heartbeatMs anywhere). A node starting in
    // between must still not take a running node's number: client ids are
    // unique across nodes (SPEC 11).
    let mut redis = Redis::start();
    let slow = Opts::new("renumber").heartbeat_ms(60_000);
    let nodes = start_nodes(&redis.url(), &[slow.clone(), slow]);
    let (mut a1, a1_id) = join_node(&nodes[0]).await;
    let (mut b1, b1_id) = join_node(&nodes[1]).await;
    settle(&mut [(0, &mut a1), (1, &mut b1)]).await;
    assert_ne!(node_part(a1_id), node_part(b1_id));

    redis.kill();
    redis.restart();
    let node_c = start_nodes(&redis.url(), &[Opts::new("renumber")]).pop().expect("node C");
    let (_c1, c1_id) = join_node(&node_c).await;
    let taken = [node_part(a1_id), node_part(b1_id)];
    assert!(
        !taken.contains(&node_part(c1_id)),
        "node C took node number {} (client id {c1_id}), which a running node has (A: {a1_id}, B: {b1_id})",
        node_part(c1_id)
    );
}

#[tokio::test]
async fn nodes_start_without_redis_serve_locally_and_join_up_once_it_appears() {
    // Nothing listens on this port yet.
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut nodes = start_nodes(&url, &[Opts::new("late"), Opts::new("late")]);
    let (mut a1, a1_id) = join_node(&nodes[0]).await;
    let (mut a2, a2_id) = join_node(&nodes[0]).await;
    let (mut b1, b1_id) = join_node(&nodes[1]).await;
    assert_eq!(http_get(&nodes[0], "/readyz").await.0, 503, "not ready without Redis");
    let all = sorted(vec![a1_id, a2_id, b1_id]);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 3, "distinct ids: {all:?}");
    assert!(all.iter().all(|id| *id < 1 << 53), "ids below 2^53: {all:?}");

    // Local delivery works; the sender hears the cross-node part failed.
    a1.send("bcast", json!({"n": "alone"})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1], &[1, 1, 0]).await;
    assert_eq!(got[0].len(), 1, "a1 gets one ERROR: {:?}", got[0]);
    assert_eq!(got[0][0].event_type, EventType::ERROR, "{:?}", got[0]);
    assert_eq!(got[0][0].payload["error"], json!("cluster_unavailable"), "{:?}", got[0]);
    assert_one(&got[1], EventType::BROADCAST, "bcast", &json!({"n": "alone"}), "a2");
    assert_none(&got[2], "b1");
    assert_eq!(err(&mut b1, "st", json!({"op": "incr", "key": "k"})).await, "store_unavailable");
    nodes[0].assert_alive("A");
    nodes[1].assert_alive("B");

    // Redis starts: the nodes find it and each other.
    let _redis = Redis::start_on(port).expect("Redis starts on the port the nodes were given");
    settle(&mut [(0, &mut a1), (0, &mut a2), (1, &mut b1)]).await;
    wait_ready(&nodes[0], 200, "A").await;
    wait_clients(&mut a1, &all, SETTLE).await;
    wait_clients(&mut b1, &all, SETTLE).await;
    a1.send("bcast", json!({"n": "together"})).await;
    let got = deliveries(&mut [&mut a1, &mut a2, &mut b1], &[0, 1, 1]).await;
    assert_none(&got[0], "the sender a1");
    assert_one(&got[1], EventType::BROADCAST, "bcast", &json!({"n": "together"}), "a2");
    assert_one(&got[2], EventType::BROADCAST, "bcast", &json!({"n": "together"}), "b1");
    assert_eq!(ok(&mut b1, "st", json!({"op": "incr", "key": "k"})).await, json!(1));
    assert_eq!(ok(&mut a2, "st", json!({"op": "incr", "key": "k"})).await, json!(2));
    nodes[0].assert_alive("A");
    nodes[1].assert_alive("B");
}

// ------------------------------------------------------------ namespaces

#[tokio::test]
async fn clusters_with_different_prefixes_on_one_redis_do_not_see_each_other() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &[Opts::new("p1"), Opts::new("p1"), Opts::new("p2"), Opts::new("p2")]);
    let (mut a, a_id) = join_node(&nodes[0]).await;
    let (mut b, b_id) = join_node(&nodes[1]).await;
    let (mut c, c_id) = join_node(&nodes[2]).await;
    let (mut d, d_id) = join_node(&nodes[3]).await;
    settle(&mut [(0, &mut a), (1, &mut b)]).await;
    settle(&mut [(2, &mut c), (3, &mut d)]).await;

    a.send("bcast", json!({"from": "p1"})).await;
    let got = deliveries(&mut [&mut a, &mut b, &mut c, &mut d], &[0, 1, 0, 0]).await;
    assert_none(&got[0], "the sender");
    assert_one(&got[1], EventType::BROADCAST, "bcast", &json!({"from": "p1"}), "b (p1)");
    assert_none(&got[2], "c (p2)");
    assert_none(&got[3], "d (p2)");
    c.send("bcast", json!({"from": "p2"})).await;
    let got = deliveries(&mut [&mut a, &mut b, &mut c, &mut d], &[0, 0, 0, 1]).await;
    assert_none(&got[0], "a (p1)");
    assert_none(&got[1], "b (p1)");
    assert_none(&got[2], "the sender");
    assert_one(&got[3], EventType::BROADCAST, "bcast", &json!({"from": "p2"}), "d (p2)");

    wait_clients(&mut a, &[a_id, b_id], SETTLE).await;
    wait_clients(&mut d, &[c_id, d_id], SETTLE).await;

    // Each cluster has its own store.
    assert_eq!(ok(&mut a, "st", json!({"op": "set", "key": "shared", "value": "p1"})).await, json!(true));
    assert_eq!(ok(&mut c, "st", json!({"op": "get", "key": "shared"})).await, json!(null));
    assert_eq!(ok(&mut d, "st", json!({"op": "set", "key": "shared", "value": "p2"})).await, json!(true));
    assert_eq!(ok(&mut b, "st", json!({"op": "get", "key": "shared"})).await, json!("p1"));
    assert_eq!(ok(&mut c, "st", json!({"op": "keys", "prefix": ""})).await, json!(["shared"]));

    // Every key either cluster wrote is under its prefix.
    let keys = redis.keys();
    assert!(keys.iter().any(|k| k.starts_with("p1:")) && keys.iter().any(|k| k.starts_with("p2:")), "{keys:?}");
    let stray: Vec<&String> = keys.iter().filter(|k| !k.starts_with("p1:") && !k.starts_with("p2:")).collect();
    assert!(stray.is_empty(), "keys outside the prefixes: {stray:?}");
}
