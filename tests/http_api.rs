//! SPEC 9.5 end to end: the HTTP API (`POST /api/publish`, `POST
//! /api/call/EVENT`) with a real HTTP client against a real server on
//! 127.0.0.1:0, and real WebSocket clients receiving what it publishes.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use ssocket::config::Settings;
use ssocket::protocol::EventType;

const KEY: &str = "test-key-0123456789";

/// How long "nothing arrives" checks wait.
const SILENCE: Duration = Duration::from_millis(300);

const PLUGS: &[(&str, &str)] = &[
    ("whoami.rhai", "fn whoami(msg, yield_msg) { yield_msg(#{ payload: #{ client: msg.client } }); }"),
    ("echo.rhai", "fn echo(msg, yield_msg) { yield_msg(#{ payload: msg.payload }); }"),
    (
        "multi.rhai",
        r#"fn multi(msg, yield_msg) {
    yield_msg(#{ payload: #{ n: 1, got: msg.payload } });
    yield_msg(#{ payload: #{ n: 2 }, event: "other" });
    yield_msg(#{ payload: [3, "three"], type: EventType::CUSTOM_2 });
}"#,
    ),
    ("test/sub.rhai", "fn sub(msg, yield_msg) { yield_msg(#{ payload: #{ sub: true, got: msg.payload } }); }"),
    (
        "inspect.rhai",
        "fn inspect(msg, yield_msg) { yield_msg(#{ payload: #{ payload: msg.payload, client: msg.client, \
         event: msg.event, type: msg.type } }); }",
    ),
    (
        "announce.rhai",
        r#"fn announce(msg, yield_msg) {
    yield_msg(#{ payload: #{ to: "all" }, type: EventType::BROADCAST });
    let n = broadcast(#{ payload: #{ via: "broadcast()" }, event: "news" });
    yield_msg(#{ payload: #{ sent: n } });
}"#,
    ),
    (
        "state.rhai",
        r#"fn state(msg, yield_msg) {
    let before = conn::get("k");
    conn::set("k", msg.payload.v);
    yield_msg(#{ payload: #{ before: before, after: conn::get("k"), id: conn::id() } });
}"#,
    ),
    ("throws.rhai", "fn throws(msg, yield_msg) {\n    let x = 1;\n    throw \"boom\";\n}\n"),
    ("broken.rhai", "fn broken(msg, yield_msg) {\n    let = ;\n}\n"),
    (
        "sleepy.rhai",
        "fn sleepy(msg, yield_msg) { yield_msg(#{ payload: \"started\" }); sleep(60000); yield_msg(#{ payload: \"late\" }); }",
    ),
    ("sync.rhai", "fn whole(msg, yield_msg) { yield_msg(#{ payload: #{ whole: [1, 2, 3] }, type: EventType::SYNC }); }"),
];

async fn server_with(tweak: impl FnOnce(&mut Settings)) -> TestServer {
    start_with_plugs(PLUGS, |s| {
        s.api.key = KEY.into();
        tweak(s);
    })
    .await
}

async fn server() -> TestServer {
    server_with(|_| {}).await
}

/// What the API answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: &TestServer) -> Api {
        // reqwest is built without a crypto provider; plain http needs none,
        // but building a client wants one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().no_proxy().build().expect("http client");
        Api { http, base: format!("http://{}", server.running.addr) }
    }

    /// POST `path` with `auth` as the Authorization header (if any).
    async fn post_raw(&self, path: &str, auth: Option<&str>, body: impl Into<reqwest::Body>) -> Answer {
        let mut req = self.http.post(format!("{}{}", self.base, path)).body(body);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let resp = tokio::time::timeout(REPLY_TIMEOUT, req.send()).await.expect("an answer in time").expect("sent");
        let status = resp.status().as_u16();
        let content_type =
            resp.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_owned()).unwrap_or_default();
        let text = resp.text().await.expect("a body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: the answer is not JSON ({e}): {text}"));
        Answer { status, content_type, body }
    }

    /// POST with the right key.
    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.post_raw(path, Some(&format!("Bearer {KEY}")), body).await
    }

    async fn publish(&self, request: Value) -> Answer {
        self.post("/api/publish", request.to_string()).await
    }

    async fn call(&self, event: &str, payload: Value) -> Answer {
        self.post(&format!("/api/call/{event}"), payload.to_string()).await
    }
}

/// A 200 with a JSON body.
fn ok(a: &Answer) -> &Value {
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.content_type.starts_with("application/json"), "{a:?}");
    &a.body
}

/// An error answer: its status, JSON content type, and `{error, message}`.
fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert!(a.content_type.starts_with("application/json"), "errors are JSON: {a:?}");
    assert_eq!(a.body["error"], json!(code), "{a:?}");
    assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()), "errors have a message: {a:?}");
}

/// The replies of a successful call.
fn replies(a: &Answer) -> Vec<Value> {
    ok(a)["replies"].as_array().unwrap_or_else(|| panic!("replies is an array: {a:?}")).clone()
}

/// A client's id, as a plug sees it.
async fn id_of(c: &mut Client) -> u64 {
    let r = c.request("whoami", json!({})).await;
    r.payload["client"].as_u64().unwrap_or_else(|| panic!("an id: {r:?}"))
}

async fn assert_gets(c: &mut Client, t: EventType, event: &str, payload: &Value) {
    let r = c.recv().await;
    assert_eq!((r.event_type, r.event.as_str(), &r.payload), (t, event, payload), "{r:?}");
}

// ------------------------------------------------------------- the key

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_off_without_a_key() {
    let server = start_with_plugs(PLUGS, |_| {}).await;
    assert!(server.running.app.settings.api.key.is_empty(), "off by default");
    let api = Api::new(&server);
    let mut c = server.ready_client().await;
    let publish = json!({"event": "news", "payload": {}}).to_string();
    for auth in [None, Some("Bearer "), Some("Bearer x")] {
        let a = api.post_raw("/api/publish", auth, publish.clone()).await;
        assert_error(&a, 404, "not_found");
        let a = api.post_raw("/api/call/echo", auth, "{}").await;
        assert_error(&a, 404, "not_found");
    }
    c.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_key_is_unauthorized() {
    let server = server().await;
    let api = Api::new(&server);
    let mut c = server.ready_client().await;
    let publish = json!({"event": "news", "payload": {"secret": false}}).to_string();
    let wrong = [
        None,
        Some("".to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some("Bearer wrong".to_owned()),
        Some(format!("Bearer {}", &KEY[..KEY.len() - 1])),
        Some(format!("Bearer {KEY}x")),
        Some(format!("Bearer {}", KEY.to_uppercase())),
        Some(format!("Basic {KEY}")),
        Some(KEY.to_owned()),
    ];
    for auth in &wrong {
        let a = api.post_raw("/api/publish", auth.as_deref(), publish.clone()).await;
        assert_error(&a, 401, "unauthorized");
        let a = api.post_raw("/api/call/echo", auth.as_deref(), "{}").await;
        assert_error(&a, 401, "unauthorized");
        // The key is checked before the event: no way to probe for plugs.
        let a = api.post_raw("/api/call/no-such-plug", auth.as_deref(), "{}").await;
        assert_error(&a, 401, "unauthorized");
    }
    c.expect_silence(SILENCE).await;

    let a = api.post_raw("/api/publish", Some(&format!("Bearer {KEY}")), publish.clone()).await;
    assert_eq!(ok(&a), &json!({"delivered": 1}));
    assert_gets(&mut c, EventType::BROADCAST, "news", &json!({"secret": false})).await;
    // The scheme's name is case-insensitive, as in HTTP.
    let a = api.post_raw("/api/publish", Some(&format!("bearer {KEY}")), publish).await;
    assert_eq!(ok(&a), &json!({"delivered": 1}));
    assert_gets(&mut c, EventType::BROADCAST, "news", &json!({"secret": false})).await;
}

// ------------------------------------------------------------- publish

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_every_connected_client_as_a_broadcast() {
    let server = server().await;
    let api = Api::new(&server);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.ready_client().await);
    }
    assert!(server.wait_connected(3, REPLY_TIMEOUT).await);

    let payload = json!({"headline": "hello", "n": [1, 2.5, null, true]});
    let a = api.publish(json!({"event": "news", "payload": payload})).await;
    assert_eq!(ok(&a), &json!({"delivered": 3}));
    for c in clients.iter_mut() {
        assert_gets(c, EventType::BROADCAST, "news", &payload).await;
    }

    // "to": "all" is the default written out; an explicit type is used.
    let a = api.publish(json!({"event": "custom", "payload": "text", "to": "all", "type": 6})).await;
    assert_eq!(ok(&a), &json!({"delivered": 3}));
    for c in clients.iter_mut() {
        assert_gets(c, EventType::CUSTOM_1, "custom", &json!("text")).await;
    }

    // No payload: {}.
    let a = api.publish(json!({"event": "bare"})).await;
    assert_eq!(ok(&a), &json!({"delivered": 3}));
    for c in clients.iter_mut() {
        assert_gets(c, EventType::BROADCAST, "bare", &json!({})).await;
    }
    for c in clients.iter_mut() {
        c.expect_silence(SILENCE).await;
    }

    // One client leaves: the count follows.
    let gone = clients.pop().expect("a client");
    gone.close().await;
    assert!(server.wait_connected(2, REPLY_TIMEOUT).await);
    let a = api.publish(json!({"event": "news", "payload": 2})).await;
    assert_eq!(ok(&a), &json!({"delivered": 2}));
    for c in clients.iter_mut() {
        assert_gets(c, EventType::BROADCAST, "news", &json!(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_no_clients_delivers_nothing() {
    let server = server().await;
    let api = Api::new(&server);
    let a = api.publish(json!({"event": "news", "payload": {}})).await;
    assert_eq!(ok(&a), &json!({"delivered": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_one_client_reaches_only_it() {
    let server = server().await;
    let api = Api::new(&server);
    let mut a_client = server.ready_client().await;
    let mut b_client = server.ready_client().await;
    let a_id = id_of(&mut a_client).await;
    let b_id = id_of(&mut b_client).await;
    assert_ne!(a_id, b_id);

    let a = api.publish(json!({"event": "dm", "payload": {"for": "b"}, "to": b_id})).await;
    assert_eq!(ok(&a), &json!({"delivered": 1}));
    assert_gets(&mut b_client, EventType::MESSAGE, "dm", &json!({"for": "b"})).await;
    a_client.expect_silence(SILENCE).await;

    let a = api.publish(json!({"event": "dm", "payload": [1], "to": a_id, "type": 7})).await;
    assert_eq!(ok(&a), &json!({"delivered": 1}));
    assert_gets(&mut a_client, EventType::CUSTOM_2, "dm", &json!([1])).await;
    let a = api.publish(json!({"event": "dm", "payload": "b", "to": b_id, "type": 1})).await;
    assert_eq!(ok(&a), &json!({"delivered": 1}));
    assert_gets(&mut b_client, EventType::BROADCAST, "dm", &json!("b")).await;

    // An id nobody has.
    let unknown = a_id.max(b_id) + 1000;
    let a = api.publish(json!({"event": "dm", "payload": {}, "to": unknown})).await;
    assert_eq!(ok(&a), &json!({"delivered": 0}));
    a_client.expect_silence(SILENCE).await;
    b_client.expect_silence(SILENCE).await;

    // A client that left is unknown too.
    b_client.close().await;
    assert!(server.wait_connected(1, REPLY_TIMEOUT).await);
    let a = api.publish(json!({"event": "dm", "payload": {}, "to": b_id})).await;
    assert_eq!(ok(&a), &json!({"delivered": 0}));
    a_client.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_bad_input() {
    let server = server().await;
    let api = Api::new(&server);
    let mut c = server.ready_client().await;
    let bodies = [
        "".to_owned(),
        "not json".to_owned(),
        "{\"event\": \"news\"".to_owned(),
        json!([{"event": "news"}]).to_string(),
        json!("news").to_string(),
        json!({"payload": {}}).to_string(),
        json!({"event": "", "payload": {}}).to_string(),
        json!({"event": 5, "payload": {}}).to_string(),
        json!({"event": "x".repeat(256), "payload": {}}).to_string(),
        json!({"event": "news", "payload": {}, "tpye": 1}).to_string(),
        json!({"event": "news", "payload": {}, "type": "BROADCAST"}).to_string(),
        json!({"event": "news", "payload": {}, "type": 256}).to_string(),
        json!({"event": "news", "payload": {}, "to": "everyone"}).to_string(),
        json!({"event": "news", "payload": {}, "to": -1}).to_string(),
    ];
    for body in bodies {
        let a = api.post("/api/publish", body.clone()).await;
        assert_error(&a, 400, "bad_request");
        assert!(a.body.get("delivered").is_none(), "{body}: {a:?}");
    }
    // Not UTF-8 at all.
    let a = api.post("/api/publish", vec![0xffu8, 0xfe, b'{']).await;
    assert_error(&a, 400, "bad_request");
    c.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_payload_limit_is_413() {
    let server = server_with(|s| s.payload_limit = 300).await;
    let api = Api::new(&server);
    let mut c = server.ready_client().await;

    let big = json!({"event": "news", "payload": "x".repeat(1000)});
    let a = api.publish(big).await;
    assert_error(&a, 413, "payload_too_large");
    let a = api.call("echo", json!({"text": "x".repeat(1000)})).await;
    assert_error(&a, 413, "payload_too_large");
    c.expect_silence(SILENCE).await;

    // Under the limit is fine.
    let a = api.publish(json!({"event": "news", "payload": "small"})).await;
    assert_eq!(ok(&a), &json!({"delivered": 1}));
    assert_gets(&mut c, EventType::BROADCAST, "news", &json!("small")).await;
    let a = api.call("echo", json!({"text": "small"})).await;
    assert_eq!(replies(&a), [json!({"type": 0, "event": "echo", "payload": {"text": "small"}})]);
}

// ---------------------------------------------------------------- call

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_answers_the_replies_in_yield_order() {
    let server = server().await;
    let api = Api::new(&server);
    let a = api.call("multi", json!({"q": "x"})).await;
    assert_eq!(
        replies(&a),
        [
            json!({"type": 0, "event": "multi", "payload": {"n": 1, "got": {"q": "x"}}}),
            json!({"type": 0, "event": "other", "payload": {"n": 2}}),
            json!({"type": 7, "event": "multi", "payload": [3, "three"]}),
        ]
    );
    let a = api.call("echo", json!([1, "two", null])).await;
    assert_eq!(replies(&a), [json!({"type": 0, "event": "echo", "payload": [1, "two", null]})]);
    // A SYNC yield comes back whole.
    let a = api.call("sync", json!({})).await;
    assert_eq!(replies(&a), [json!({"type": 3, "event": "sync", "payload": {"whole": [1, 2, 3]}})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_runs_plugs_in_sub_folders() {
    let server = server().await;
    let api = Api::new(&server);
    let a = api.call("test/sub", json!({"deep": 1})).await;
    assert_eq!(replies(&a), [json!({"type": 0, "event": "test/sub", "payload": {"sub": true, "got": {"deep": 1}}})]);
    // The slash may be percent-encoded.
    let a = api.call("test%2Fsub", json!(2)).await;
    assert_eq!(replies(&a), [json!({"type": 0, "event": "test/sub", "payload": {"sub": true, "got": 2}})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_passes_the_body_as_payload_for_client_zero() {
    let server = server().await;
    let api = Api::new(&server);
    let a = api.post("/api/call/inspect", "").await;
    assert_eq!(
        replies(&a),
        [
            json!({"type": 0, "event": "inspect", "payload": {"payload": {}, "client": 0, "event": "inspect", "type": 0}})
        ],
        "an empty body is {{}}"
    );
    let a = api.call("inspect", json!({"a": {"b": [true]}})).await;
    assert_eq!(replies(&a)[0]["payload"]["payload"], json!({"a": {"b": [true]}}));
    assert_eq!(replies(&a)[0]["payload"]["client"], json!(0));
    for body in [json!(42), json!("text"), json!(null), json!([])] {
        let a = api.call("inspect", body.clone()).await;
        assert_eq!(replies(&a)[0]["payload"]["payload"], body, "{a:?}");
    }
    // The call's own client id, also through conn::id().
    let a = api.call("state", json!({"v": 1})).await;
    assert_eq!(replies(&a)[0]["payload"]["id"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_from_a_call_go_to_websocket_clients() {
    let server = server().await;
    let api = Api::new(&server);
    let mut c1 = server.ready_client().await;
    let mut c2 = server.ready_client().await;
    assert!(server.wait_connected(2, REPLY_TIMEOUT).await);

    let a = api.call("announce", json!({})).await;
    assert_eq!(replies(&a), [json!({"type": 0, "event": "announce", "payload": {"sent": 2}})]);
    for c in [&mut c1, &mut c2] {
        assert_gets(c, EventType::BROADCAST, "announce", &json!({"to": "all"})).await;
        assert_gets(c, EventType::BROADCAST, "news", &json!({"via": "broadcast()"})).await;
        c.expect_silence(SILENCE).await;
    }
    // A call's MESSAGE replies go only into the answer.
    let a = api.call("echo", json!({"private": true})).await;
    assert_eq!(replies(&a).len(), 1);
    c1.expect_silence(SILENCE).await;
    c2.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_state_lives_for_one_call() {
    let server = server().await;
    let api = Api::new(&server);
    for v in [json!("first"), json!({"second": 2})] {
        let a = api.call("state", json!({"v": v})).await;
        assert_eq!(
            replies(&a),
            [json!({"type": 0, "event": "state", "payload": {"before": null, "after": v, "id": 0}})],
            "conn:: starts empty in each call and works within it"
        );
    }
    // And a WebSocket client's state is its own.
    let mut c = server.ready_client().await;
    let r = c.request("state", json!({"v": "ws"})).await;
    assert_eq!((&r.payload["before"], &r.payload["after"]), (&Value::Null, &json!("ws")), "{r:?}");
    let a = api.call("state", json!({"v": 3})).await;
    assert_eq!(replies(&a)[0]["payload"]["before"], Value::Null);
    let r = c.request("state", json!({"v": "ws2"})).await;
    assert_eq!(r.payload["before"], json!("ws"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plug_answers_422_with_the_error_payload() {
    let server = server().await;
    let api = Api::new(&server);

    let a = api.call("throws", json!({})).await;
    assert_error(&a, 422, "script_error");
    assert_eq!(a.body["plug"], json!("throws"), "{a:?}");
    assert_eq!(a.body["function"], json!("throws"), "{a:?}");
    assert_eq!(a.body["line"], json!(3), "{a:?}");
    assert!(a.body["message"].as_str().unwrap().contains("boom"), "{a:?}");
    assert!(a.body.get("replies").is_none(), "{a:?}");

    // The same payload a WebSocket client gets.
    let mut c = server.client().await;
    let r = c.request("throws", json!({})).await;
    assert_eq!(r.event_type, EventType::ERROR);
    assert_eq!(r.payload, a.body, "the API answers the ERROR payload");

    let a = api.call("broken", json!({})).await;
    assert_error(&a, 422, "compile_error");
    assert_eq!(a.body["plug"], json!("broken"), "{a:?}");
    assert_eq!(a.body["line"], json!(2), "{a:?}");
    let r = c.request("broken", json!({})).await;
    assert_eq!(r.payload, a.body, "the API answers the ERROR payload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_refuses_unknown_events_and_bad_bodies() {
    let server = server().await;
    let api = Api::new(&server);
    for event in ["no-such-plug", "test/nope", "test", "_hidden", "..%2F..%2Fetc%2Fpasswd"] {
        let a = api.call(event, json!({})).await;
        assert_error(&a, 404, "not_found");
    }
    for body in ["{nope", "[1, 2", "'single'", "undefined"] {
        let a = api.post("/api/call/echo", body).await;
        assert_error(&a, 400, "bad_request");
    }
    let a = api.post("/api/call/echo", vec![b'"', 0xff, b'"']).await;
    assert_error(&a, 400, "bad_request");
    // No event at all.
    let a = api.post("/api/call/", "{}").await;
    assert_error(&a, 400, "bad_request");
    // Still serving.
    let a = api.call("echo", json!({"ok": 1})).await;
    assert_eq!(replies(&a), [json!({"type": 0, "event": "echo", "payload": {"ok": 1}})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_limits_timeout_ms_is_422_limit_exceeded() {
    let server = server_with(|s| s.limits.timeout_ms = 300).await;
    let api = Api::new(&server);
    let a = api.call("sleepy", json!({})).await;
    assert_error(&a, 422, "limit_exceeded");
    assert_eq!(a.body["limit"], json!("limits.timeoutMs"), "{a:?}");
    assert_eq!(a.body["plug"], json!("sleepy"), "{a:?}");
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    while server.running.app.plugs.in_flight() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the call's run ends");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let a = api.call("echo", json!(1)).await;
    assert_eq!(replies(&a).len(), 1);
}

/// A caller that gives up stops the plug it started (it would otherwise
/// run to `limits.timeoutMs` for nobody).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_hangs_up_stops_its_plug() {
    let server = server_with(|s| s.limits.timeout_ms = 60_000).await;
    let api = Api::new(&server);
    let url = format!("{}/api/call/sleepy", api.base);
    let call = api.http.post(url).header("authorization", format!("Bearer {KEY}")).body("{}").send();
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    let waited = tokio::spawn(call);
    while server.running.app.plugs.in_flight() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the call starts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Hang up: the request future (and its connection) is dropped.
    waited.abort();
    let _ = waited.await;
    while server.running.app.plugs.in_flight() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the plug stops when its caller leaves");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_503_while_shutting_down() {
    let server = server().await;
    let api = Api::new(&server);
    let a = api.call("echo", json!(1)).await;
    assert_eq!(replies(&a).len(), 1);

    server.running.app.begin_draining();
    let a = api.publish(json!({"event": "news", "payload": {}})).await;
    assert_error(&a, 503, "shutting_down");
    let a = api.call("echo", json!(1)).await;
    assert_error(&a, 503, "shutting_down");
    server.stop().await;
}
