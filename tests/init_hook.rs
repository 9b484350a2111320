//! The start-up hook (SPEC section 7, issue 4 point 4), in process: a real
//! server from `ssocket::server::start` with `initFile` pointing at a
//! temporary `INIT.rhai`, and real WebSocket clients.
//!
//! That INIT runs before plugs load (and that `./INIT.rhai` is the default)
//! is checked at the binary level in `tests/lifecycle.rs`, where the order
//! of the log lines shows it.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use ssocket::config::Settings;
use ssocket::protocol::EventType;
use ssocket::server::start;

/// How long "nothing (more) arrives" checks wait.
const SILENCE: Duration = Duration::from_millis(300);

/// Plugs every test server has: `whoami` answers the sender's client id.
const WHOAMI: (&str, &str) = ("whoami.rhai", "fn whoami(msg, yield_msg) { yield_msg(#{ payload: msg.client }); }");
const ECHO: (&str, &str) = ("echo.rhai", "fn echo(msg, yield_msg) { yield_msg(#{ payload: msg.payload }); }");

/// A server on a temp plugs folder (whoami, echo) with `source` as its INIT.
async fn start_with_init(source: &str) -> (TestServer, tempfile::TempDir) {
    let (dir, path) = init_file(source);
    let server = start_with_plugs(&[WHOAMI, ECHO], |s| s.init_file = path).await;
    (server, dir)
}

/// Settings on a temp plugs folder with `source` as INIT, for start-up
/// failures (the returned dirs must outlive the call to `start`).
fn failing_settings(source: &str) -> (Settings, PathBuf, tempfile::TempDir, tempfile::TempDir) {
    let plugs = tempfile::tempdir().expect("temp dir");
    write_plug(plugs.path(), ECHO.0, ECHO.1);
    let (dir, path) = init_file(source);
    let mut s = settings(plugs.path());
    s.init_file = path.clone();
    (s, path, dir, plugs)
}

async fn start_err(source: &str) -> (String, PathBuf) {
    let (s, path, _dir, _plugs) = failing_settings(source);
    match start(s).await {
        Ok(running) => {
            running.stop().await;
            panic!("start-up should fail with INIT:\n{source}");
        }
        Err(err) => (err.to_string(), path),
    }
}

/// This client's id, as the server knows it.
async fn whoami(c: &mut Client) -> i64 {
    let r = c.request("whoami", json!({})).await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::MESSAGE, "whoami"), "{r:?}");
    r.payload.as_i64().expect("an id")
}

/// Read until a reply with `event` arrives; returns it and what came before.
async fn until_event(c: &mut Client, event: &str) -> (Reply, Vec<Reply>) {
    let mut before = Vec::new();
    loop {
        match c.next().await {
            Received::Reply(r) if r.event == event => return (r, before),
            Received::Reply(r) => before.push(r),
            Received::Closed(code) => panic!("closed ({code:?}) while waiting for `{event}`; got {before:?}"),
        }
    }
}

/// Everything that arrives until `SILENCE` passes with nothing.
async fn drain(c: &mut Client) -> Vec<Received> {
    let mut out = Vec::new();
    while let Some(r) = c.next_within(SILENCE).await {
        let closed = matches!(r, Received::Closed(_));
        out.push(r);
        if closed {
            break;
        }
    }
    out
}

fn events(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| match r {
            Received::Reply(r) => r.event.clone(),
            Received::Closed(code) => format!("<closed {code:?}>"),
        })
        .collect()
}

const GREETER: &str = r#"
fn INIT(server) {
    server.on_connect(Fn("greet"));
    server.on_disconnect(Fn("bye"));
}
fn greet(id) {
    yield_msg(#{ payload: #{ hello: id } });
    broadcast(#{ event: "joined", payload: #{ id: id } });
}
fn bye(id) {
    broadcast(#{ event: "left", payload: #{ id: id } });
}
"#;

#[tokio::test]
async fn on_connect_greets_the_new_client_and_tells_the_others() {
    let (server, _init) = start_with_init(GREETER).await;

    let mut a = server.client().await;
    let (greeting, before) = until_event(&mut a, "connect").await;
    assert!(before.is_empty(), "nothing precedes the greeting: {before:?}");
    assert_eq!(greeting.event_type, EventType::MESSAGE, "yield_msg in on_connect goes to the new client: {greeting:?}");
    let a_id = whoami(&mut a).await;
    assert_eq!(greeting.payload, json!({"hello": a_id}), "the callback receives the client's id");

    let mut b = server.client().await;
    let (greeting_b, _) = until_event(&mut b, "connect").await;
    let b_id = whoami(&mut b).await;
    assert_ne!(a_id, b_id);
    assert_eq!(greeting_b.payload, json!({"hello": b_id}));

    let (joined, skipped) = until_event(&mut a, "joined").await;
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!((joined.event_type, joined.payload.clone()), (EventType::BROADCAST, json!({"id": b_id})));

    // The new client got its greeting once (INIT ran once, so one callback)
    // and not its own "joined" broadcast.
    let rest_b = drain(&mut b).await;
    assert!(rest_b.is_empty(), "b got more than its greeting: {:?}", events(&rest_b));
    let rest_a = drain(&mut a).await;
    assert!(rest_a.is_empty(), "a got more than one greeting and one `joined`: {:?}", events(&rest_a));

    b.close().await;
    let (left, skipped) = until_event(&mut a, "left").await;
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!((left.event_type, left.payload), (EventType::BROADCAST, json!({"id": b_id})));
    server.stop().await;
}

#[tokio::test]
async fn callbacks_can_sleep_and_send_to() {
    let init = r#"
fn INIT(server) {
    server.on_connect(Fn("welcome"));
}
fn welcome(id) {
    let started = unix_time_ms();
    sleep(250);
    let slept = unix_time_ms() - started;
    for other in clients() {
        if other != id {
            send_to(other, #{ event: "newcomer", payload: #{ id: id } });
        }
    }
    send_to(id, #{ event: "direct", payload: #{ slept: slept } });
}
"#;
    let (server, _init) = start_with_init(init).await;
    let mut a = server.client().await;
    let started = Instant::now();
    let (direct, _) = until_event(&mut a, "direct").await;
    assert!(started.elapsed() >= Duration::from_millis(240), "sleep in a callback waits: {:?}", started.elapsed());
    assert!(direct.payload["slept"].as_i64().is_some_and(|ms| ms >= 240), "{direct:?}");
    let a_id = whoami(&mut a).await;

    let mut b = server.client().await;
    let b_id = whoami(&mut b).await;
    let (newcomer, _) = until_event(&mut a, "newcomer").await;
    assert_eq!((newcomer.event_type, newcomer.payload), (EventType::MESSAGE, json!({"id": b_id})));
    let (direct_b, _) = until_event(&mut b, "direct").await;
    assert_eq!(direct_b.event_type, EventType::MESSAGE);
    // send_to reached only its target: a got no "direct" for b, b no "newcomer".
    let rest = drain(&mut a).await;
    assert!(rest.is_empty(), "{:?}", events(&rest));
    let rest = drain(&mut b).await;
    assert!(rest.is_empty(), "{:?}", events(&rest));
    assert_ne!(a_id, b_id);
    server.stop().await;
}

#[tokio::test]
async fn server_clients_is_empty_during_init_and_lists_clients_later() {
    // A closure captures the start-up count and a copy of the server handle,
    // so a callback can report both. (Capturing `server` itself fails: the
    // closure would hold the value `server.on_connect` has locked, and Rhai
    // reports "Data race detected on argument #1 of function 'on_connect'".)
    let init = r#"
fn INIT(server) {
    let at_start = server.clients().len();
    let handle = server;
    server.on_connect(|id| {
        yield_msg(#{ event: "clients", payload: #{ at_start: at_start, now: handle.clients(), id: id } });
    });
}
"#;
    let (server, _init) = start_with_init(init).await;
    let mut a = server.client().await;
    let (first, _) = until_event(&mut a, "clients").await;
    let a_id = whoami(&mut a).await;
    assert_eq!(first.payload, json!({"at_start": 0, "now": [a_id], "id": a_id}));
    let mut b = server.client().await;
    let (second, _) = until_event(&mut b, "clients").await;
    let b_id = whoami(&mut b).await;
    assert_eq!(second.payload, json!({"at_start": 0, "now": [a_id, b_id], "id": b_id}));
    server.stop().await;
}

#[tokio::test]
async fn kick_all_disconnects_every_client() {
    // The third client to connect makes the server disconnect everyone.
    let init = r#"
fn INIT(server) {
    let handle = server;
    server.on_connect(|id| {
        if handle.clients().len() >= 3 {
            let kicked = handle.kick_all();
            print(`kicked ${kicked}`);
        }
    });
}
"#;
    let (server, _init) = start_with_init(init).await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    assert!(drain(&mut a).await.is_empty(), "two clients are not kicked");
    let mut c = server.client().await;
    for (name, client) in [("a", &mut a), ("b", &mut b), ("c", &mut c)] {
        let got = client.next().await;
        assert_eq!(got, Received::Closed(Some(ssocket::init::CLOSE_KICKED)), "client {name}");
    }
    assert!(server.wait_connected(0, Duration::from_secs(5)).await, "the hub is empty after kick_all");
    // The server still serves newcomers (one alone is not kicked).
    let mut d = server.client().await;
    let r = d.request("echo", json!({"after": "kick"})).await;
    assert_eq!(r.payload, json!({"after": "kick"}));
    server.stop().await;
}

#[tokio::test]
async fn a_missing_init_file_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("INIT.rhai");
    let server = start_with_plugs(&[ECHO], |s| s.init_file = missing).await;
    assert!(server.running.app.init.is_none());
    let mut c = server.client().await;
    let r = c.request("echo", json!({"x": 1})).await;
    assert_eq!(r.payload, json!({"x": 1}));
    let rest = drain(&mut c).await;
    assert!(rest.is_empty(), "no INIT, no greeting: {:?}", events(&rest));
    server.stop().await;
}

#[tokio::test]
async fn a_syntax_error_stops_start_up_naming_file_and_line() {
    let (err, path) = start_err("fn INIT(server) {\n    let x = 1;\n    let = ;\n}\n").await;
    assert!(err.contains(&path.display().to_string()), "names the file: {err}");
    assert!(err.contains("line 3"), "names the line: {err}");
}

#[tokio::test]
async fn an_init_that_throws_stops_start_up_with_the_thrown_text() {
    let (err, path) = start_err("fn INIT(server) {\n    throw \"database unreachable\";\n}\n").await;
    assert!(err.contains(&path.display().to_string()), "names the file: {err}");
    assert!(err.contains("database unreachable"), "carries the thrown text: {err}");
}

#[tokio::test]
async fn a_runtime_error_in_init_stops_start_up() {
    let (err, path) = start_err("fn INIT(server) {\n    let x = 1;\n    x.no_such_method();\n}\n").await;
    assert!(err.contains(&path.display().to_string()), "names the file: {err}");
    assert!(err.contains("no_such_method"), "says what failed: {err}");
}

#[tokio::test]
async fn an_init_file_without_fn_init_is_a_clear_error() {
    let (err, path) = start_err("fn init(server) { }\nfn setup() { }\n").await;
    assert!(err.contains(&path.display().to_string()), "names the file: {err}");
    assert!(err.contains("fn INIT(server)"), "says what is missing: {err}");
}

#[tokio::test]
async fn init_runs_once_and_its_errors_in_callbacks_do_not_stop_the_server() {
    // A callback that throws is logged; the client is served anyway.
    let init = r#"
fn INIT(server) {
    server.on_connect(Fn("boom"));
    server.on_connect(Fn("hi"));
}
fn boom(id) { throw "callback failed"; }
fn hi(id) { yield_msg(#{ payload: "hi" }); }
"#;
    let (server, _init) = start_with_init(init).await;
    let mut c = server.client().await;
    let (hi, _) = until_event(&mut c, "connect").await;
    assert_eq!(hi.payload, Value::from("hi"));
    let r = c.request("echo", json!([1, 2])).await;
    assert_eq!(r.payload, json!([1, 2]));
    let rest = drain(&mut c).await;
    assert!(rest.is_empty(), "one greeting per registered callback: {:?}", events(&rest));
    server.stop().await;
}

#[tokio::test]
async fn init_itself_can_sleep_broadcast_send_to_and_list_clients() {
    // INIT stands for "connect to a database before serving": it may take
    // its time, and the host API works (with nobody connected yet).
    let init = r#"
fn INIT(server) {
    let t0 = unix_time_ms();
    sleep(200);
    let report = #{
        slept: unix_time_ms() - t0,
        broadcast_to: broadcast(#{ event: "x", payload: 1 }),
        sent: send_to(1, #{ payload: 1 }),
        clients: clients(),
        server_clients: server.clients(),
    };
    server.on_connect(|id| yield_msg(#{ event: "report", payload: report }));
}
"#;
    let started = Instant::now();
    let (server, _init) = start_with_init(init).await;
    assert!(started.elapsed() >= Duration::from_millis(190), "start waits for INIT: {:?}", started.elapsed());
    let mut c = server.client().await;
    let (report, _) = until_event(&mut c, "report").await;
    assert!(report.payload["slept"].as_i64().is_some_and(|ms| ms >= 190), "{report:?}");
    assert_eq!(report.payload["broadcast_to"], 0, "{report:?}");
    assert_eq!(report.payload["sent"], false, "{report:?}");
    assert_eq!(report.payload["clients"], json!([]), "{report:?}");
    assert_eq!(report.payload["server_clients"], json!([]), "{report:?}");
    server.stop().await;
}

#[tokio::test]
async fn yield_msg_in_init_is_a_clear_error() {
    let (err, path) = start_err("fn INIT(server) {\n    yield_msg(#{ payload: 1 });\n}\n").await;
    assert!(err.contains(&path.display().to_string()), "names the file: {err}");
    assert!(err.contains("yield_msg") && err.contains("on_connect"), "says why and what to do: {err}");
}

/// INIT callbacks count as invocations in flight, so shutdown waits for
/// them: a client whose `on_connect` is still running when the server stops
/// gets its greeting before close 1001.
#[tokio::test]

async fn shutdown_waits_for_running_init_callbacks() {
    let init = r#"
fn INIT(server) { server.on_connect(Fn("slow")); }
fn slow(id) { sleep(400); yield_msg(#{ payload: "late greeting" }); }
"#;
    let (server, _init) = start_with_init(init).await;
    let mut a = server.client().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.running.app.plugs.in_flight(), 1, "the running callback is in flight");
    let stop = tokio::spawn(server.stop());
    let (greeting, _) = until_event(&mut a, "connect").await;
    assert_eq!(greeting.payload, json!("late greeting"));
    assert_eq!(a.next().await, Received::Closed(Some(1001)));
    stop.await.unwrap();
}
