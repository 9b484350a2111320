//! Plug-level tests of the host API (`store::`, `conn::`, `http::`): fixture
//! plugs run through the plug runtime and the hub directly, with no socket
//! and no HTTP server: a message is dispatched for a registered client and
//! its replies are read from the client's outbound queue.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ssocket::config::Settings;
use ssocket::hub::{Hub, Outbound, Registration};
use ssocket::plugs::host::Services;
use ssocket::plugs::request::Request;
use ssocket::plugs::{ClientSlots, Plugs, Runner};
use ssocket::protocol::{decode, encode_parts, EventType};

/// A plug runtime on a temp folder, and clients registered with its hub.
struct Bench {
    plugs: Plugs,
    hub: Hub,
    dir: tempfile::TempDir,
}

/// One registered client: its queue and the reader-side state dispatch needs.
struct Peer {
    reg: Registration,
    slots: Arc<ClientSlots>,
    runner: Runner,
}

impl Bench {
    fn new(files: &[(&str, &str)], tweak: impl FnOnce(&mut Settings)) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        for (name, source) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, source).unwrap();
        }
        let mut settings = Settings { plugs_folder: dir.path().to_path_buf(), ..Settings::default() };
        tweak(&mut settings);
        let hub = Hub::new();
        let plugs = Plugs::new(&settings, hub.clone(), &Services::local(&settings).unwrap());
        plugs.registry().load_all().unwrap();
        Bench { plugs, hub, dir }
    }

    fn client(&self) -> Peer {
        Peer { reg: self.hub.register(), slots: ClientSlots::new(8), runner: Runner::default() }
    }

    /// Send `event` with `payload` from `peer` and wait for the run to
    /// finish; whether dispatch handed the run back to be done on the
    /// connection's own task (`plugs::direct`).
    async fn dispatch(&self, peer: &mut Peer, event: &str, payload: Value) -> bool {
        let frame = encode_parts(EventType::MESSAGE, event, payload.to_string().as_bytes()).unwrap();
        let request = Request::read(&frame).unwrap();
        let here = self.plugs.dispatch(&peer.reg.handle, request, frame.into(), &peer.slots, &mut peer.runner).await;
        let direct = here.is_some();
        if let Some(run) = here {
            run(); // the connection's own task: this one
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.plugs.in_flight() > 0 {
            assert!(Instant::now() < deadline, "the plug did not finish");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        direct
    }

    /// Send `event` with `payload` from `peer`; every message it got back
    /// once the run has finished.
    async fn send(&self, peer: &mut Peer, event: &str, payload: Value) -> Vec<(EventType, Value)> {
        self.dispatch(peer, event, payload).await;
        let mut out = Vec::new();
        while let Some(item) = peer.reg.rx.try_recv() {
            if let Outbound::Binary(bytes) = item {
                let msg = decode(&bytes).unwrap();
                out.push((msg.event_type, serde_json::from_str(&msg.payload).unwrap()));
            }
        }
        out
    }

    /// The one reply's payload; panics on anything else.
    async fn ask(&self, peer: &mut Peer, event: &str, payload: Value) -> Value {
        let mut got = self.send(peer, event, payload).await;
        assert_eq!(got.len(), 1, "one reply expected: {got:?}");
        let (t, payload) = got.remove(0);
        assert_eq!(t, EventType::MESSAGE, "{payload}");
        payload
    }

    /// The one ERROR's payload; panics on anything else.
    async fn error(&self, peer: &mut Peer, event: &str, payload: Value) -> Value {
        let got = self.send(peer, event, payload).await;
        match got.as_slice() {
            [(EventType::ERROR, p)] => p.clone(),
            other => panic!("one ERROR expected, got {other:?}"),
        }
    }

    fn rewrite(&self, name: &str, source: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, source).unwrap();
        self.plugs.registry().apply_changes(&[path]);
    }

    fn folder(&self) -> &Path {
        self.dir.path()
    }
}

const STORE: &str = r#"
fn s(msg, yield_msg) {
    let p = msg.payload;
    let r = switch p.op {
        "incr" => store::incr(p.key),
        "set" => store::set(p.key, p.value),
        "get" => store::get(p.key),
        "push" => store::push(p.key, p.value, p.max),
        "range" => store::range(p.key, p.start, p.end),
        "keys" => store::keys(p.prefix),
        "del" => store::del(p.key),
    };
    yield_msg(#{ payload: r });
}
"#;

/// A plug runs on the task of the connection that sent it (`plugs::direct`)
/// only once a run of it finished without waiting, and never again once a
/// run waited on the network: that task must stay free to notice its
/// client leaving. A new version starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugs_run_on_the_connections_task_once_settled_and_never_after_a_wait() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let call = "fn get(url) { http::get(url) }";
    // Finds the module that calls out only while running (a path computed
    // then): nothing tells beforehand, so its first call out marks it.
    let maybe = r#"
        fn maybe(msg, yield_msg) {
            if "url" in msg.payload {
                let path = "_lib/" + "call";
                import path as net;
                try { net::get(msg.payload.url); } catch {}
            }
            yield_msg(#{ payload: "ok" });
        }
    "#;
    // Calls out through a module it imports: seen when it compiles.
    let imports = r#"
        import "_lib/call" as net;
        fn imports(msg, yield_msg) {
            if "url" in msg.payload { try { net::get(msg.payload.url); } catch {} }
            yield_msg(#{ payload: "ok" });
        }
    "#;
    let calls = r#"
        fn calls(msg, yield_msg) {
            if "url" in msg.payload { try { http::get(msg.payload.url); } catch {} }
            yield_msg(#{ payload: "ok" });
        }
    "#;
    let echo = "fn echo(msg, yield_msg) { yield_msg(#{ payload: msg.payload }); }";
    let plugs = [
        ("_lib/call.rhai", call),
        ("maybe.rhai", maybe),
        ("imports.rhai", imports),
        ("calls.rhai", calls),
        ("echo.rhai", echo),
    ];
    let bench = Bench::new(&plugs, |s| {
        s.http.allow = vec![format!("http://{closed}")];
    });
    let mut a = bench.client();
    let mut echoes = Vec::new();
    for i in 0..3 {
        echoes.push(bench.dispatch(&mut a, "echo", json!(i)).await);
    }
    assert_eq!(echoes, [false, true, true], "the first run settles the plug");
    let mut b = bench.client();
    assert!(bench.dispatch(&mut b, "echo", json!("b")).await, "settled for every client");

    let url = json!({"url": format!("http://{closed}/")});
    let mut runs = Vec::new();
    for payload in [json!({}), json!({}), url.clone(), json!({}), url] {
        runs.push(bench.dispatch(&mut a, "maybe", payload).await);
    }
    assert_eq!(runs, [false, true, true, false, false], "after the call out, never again");
    let mut c = bench.client();
    assert_eq!(bench.send(&mut c, "maybe", json!({})).await, [(EventType::MESSAGE, json!("ok"))]);
    // A plug whose source, or a module it imports, calls out never goes
    // there, not even before its first call.
    for plug in ["calls", "imports"] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(bench.dispatch(&mut a, plug, json!({})).await);
        }
        assert_eq!(runs, [false, false, false], "{plug}: its source says it may call out");
    }

    bench.rewrite("echo.rhai", &echo.replace("msg.payload", "[msg.payload]"));
    assert!(!bench.dispatch(&mut a, "echo", json!(1)).await, "a new version settles again");
    assert!(bench.dispatch(&mut a, "echo", json!(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_is_shared_by_clients_and_kept_across_reloads() {
    let bench = Bench::new(&[("s.rhai", STORE)], |_| {});
    let (mut a, mut b) = (bench.client(), bench.client());
    assert_eq!(bench.ask(&mut a, "s", json!({"op": "incr", "key": "n"})).await, json!(1));
    assert_eq!(bench.ask(&mut b, "s", json!({"op": "incr", "key": "n"})).await, json!(2));
    bench.ask(&mut a, "s", json!({"op": "set", "key": "doc", "value": {"x": [1, 2.5, "s", null, true]}})).await;
    assert_eq!(
        bench.ask(&mut b, "s", json!({"op": "get", "key": "doc"})).await,
        json!({"x": [1, 2.5, "s", null, true]})
    );
    for i in 0..4 {
        bench.ask(&mut a, "s", json!({"op": "push", "key": "l", "value": i, "max": 3})).await;
    }
    assert_eq!(
        bench.ask(&mut b, "s", json!({"op": "range", "key": "l", "start": 0, "end": -1})).await,
        json!([1, 2, 3])
    );
    assert_eq!(bench.ask(&mut b, "s", json!({"op": "range", "key": "l", "start": 7, "end": 9})).await, json!([]));
    // A new version of the plug sees the same store.
    bench.rewrite("s.rhai", &STORE.replace("yield_msg(#{ payload: r });", "yield_msg(#{ payload: [r] });"));
    assert_eq!(bench.ask(&mut a, "s", json!({"op": "get", "key": "n"})).await, json!([2]));
    assert_eq!(bench.ask(&mut a, "s", json!({"op": "keys", "prefix": ""})).await, json!([["doc", "l", "n"]]));
    assert_eq!(bench.ask(&mut a, "s", json!({"op": "del", "key": "n"})).await, json!([true]));
    assert!(bench.folder().join("s.rhai").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_are_coded_catchable_and_uncaught_reach_the_sender() {
    let catcher = r#"
fn c(msg, yield_msg) {
    try {
        store::set(msg.payload.key, "a value that is far too long for this store");
        yield_msg(#{ payload: "stored" });
    } catch (e) {
        yield_msg(#{ payload: e });
    }
}
"#;
    let bench = Bench::new(&[("s.rhai", STORE), ("c.rhai", catcher)], |s| s.store.max_bytes = 32);
    let mut a = bench.client();
    let e = bench.ask(&mut a, "c", json!({"key": "k"})).await;
    assert_eq!((e["error"].as_str(), e["limit"].as_str()), (Some("limit_exceeded"), Some("store.maxBytes")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("store.maxBytes is 32 bytes"), "{e}");
    let e = bench.ask(&mut a, "c", json!({"key": ""})).await;
    assert_eq!(e["error"], "bad_argument", "{e}");
    // Uncaught: an ERROR with the code, the limit and where.
    let e = bench.error(&mut a, "s", json!({"op": "set", "key": "k", "value": "x".repeat(64)})).await;
    assert_eq!(
        (e["error"].as_str(), e["limit"].as_str(), e["plug"].as_str()),
        (Some("limit_exceeded"), Some("store.maxBytes"), Some("s")),
        "{e}"
    );
    assert!(e["line"].as_u64().is_some(), "{e}");
    let e = bench.error(&mut a, "s", json!({"op": "incr", "key": "x".repeat(1025)})).await;
    assert_eq!(e["error"], "bad_argument", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_state_belongs_to_one_client() {
    let plug = r#"
fn c(msg, yield_msg) {
    if msg.payload.set != () { conn::set("name", msg.payload.set); }
    yield_msg(#{ payload: #{ id: conn::id(), is_msg_client: conn::id() == msg.client, name: conn::get("name"), all: conn::all(), user: conn::user() } });
}
"#;
    let bench = Bench::new(&[("c.rhai", plug)], |_| {});
    let (mut a, mut b) = (bench.client(), bench.client());
    let r = bench.ask(&mut a, "c", json!({"set": "ada"})).await;
    assert_eq!((r["name"].as_str(), r["is_msg_client"].as_bool(), &r["user"]), (Some("ada"), Some(true), &Value::Null));
    assert_eq!(r["id"].as_u64(), Some(a.reg.id()));
    assert_eq!(bench.ask(&mut a, "c", json!({})).await["all"], json!({"name": "ada"}), "a later message sees it");
    assert_eq!(bench.ask(&mut b, "c", json!({})).await["name"], Value::Null, "another client does not");
    assert_eq!(a.reg.handle.state().bytes(), "name".len() + "\"ada\"".len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_state_is_bounded() {
    let big = "y".repeat(200);
    let plug = format!(
        "fn c(msg, yield_msg) {{\n    conn::set(\"small\", 1);\n    \
         try {{ conn::set(\"big\", \"{big}\"); }} catch (e) {{ yield_msg(#{{ payload: e }}); }}\n}}\n"
    );
    let bench = Bench::new(&[("c.rhai", &plug)], |s| s.limits.conn_state_bytes = 100);
    let mut a = bench.client();
    let e = bench.ask(&mut a, "c", json!({})).await;
    assert_eq!(
        (e["error"].as_str(), e["limit"].as_str()),
        (Some("limit_exceeded"), Some("limits.connStateBytes")),
        "{e}"
    );
    assert_eq!(a.reg.handle.state().all().len(), 1, "the refused value was not kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_is_denied_unless_allowed() {
    let plug = r#"
fn h(msg, yield_msg) {
    try { http::get(msg.payload.url); } catch (e) { yield_msg(#{ payload: e }); }
}
"#;
    let bench = Bench::new(&[("h.rhai", plug)], |s| s.http.allow = vec!["https://api.example.com".into()]);
    let mut a = bench.client();
    for url in
        ["https://other.example.com/x", "http://api.example.com/", "ftp://api.example.com/", "file:///etc/passwd"]
    {
        let e = bench.ask(&mut a, "h", json!({ "url": url })).await;
        assert_eq!(e["error"], "http_denied", "{url}: {e}");
        assert!(e["message"].as_str().unwrap().starts_with("http_denied"), "{url}: {e}");
    }
    let e = bench.ask(&mut a, "h", json!({"url": "not a url"})).await;
    assert_eq!(e["error"], "bad_argument", "{e}");
}

#[test]
fn a_bad_allowlist_entry_is_refused_at_start_up() {
    let mut settings = Settings::default();
    settings.http.allow.push("https://api.example.com/v1".into());
    let err = Services::local(&settings).err().expect("refused").to_string();
    assert!(err.contains("http.allow entry `https://api.example.com/v1`") && err.contains("path"), "{err}");
}
