//! INIT's timers (SPEC 9.4), end to end: `server.every`, `server.after`
//! and `server.cancel` in a temporary `INIT.rhai`, callbacks that count in
//! `store::` (read back through a plug), broadcast to real WebSocket
//! clients, fail, run too long, or overlap their next tick.
//!
//! The in-memory log ring (`ssocket::logs`) is process-wide and installed
//! once, so every test of this binary that reads it calls [`init_logs`]
//! first, and looks only for lines naming its own INIT file.

mod common;

use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use ssocket::app::App;
use ssocket::protocol::EventType;
use ssocket::server::start;

/// How long "nothing (more) happens" checks wait.
const SILENCE: Duration = Duration::from_millis(300);
/// How long polls for something that should happen wait.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// `get`: the store value at `payload.key`.
const GET: (&str, &str) =
    ("get.rhai", "fn get(msg, yield_msg) { yield_msg(#{ payload: store::get(msg.payload.key) }); }");
const ECHO: (&str, &str) = ("echo.rhai", "fn echo(msg, yield_msg) { yield_msg(#{ payload: msg.payload }); }");

// ---------------------------------------------------------------- helpers

/// A server on a temp plugs folder (`get`, `echo`) with `source` as INIT.
async fn start_with_init(
    source: &str,
    tweak: impl FnOnce(&mut ssocket::config::Settings),
) -> (TestServer, tempfile::TempDir, PathBuf) {
    let (dir, path) = init_file(source);
    let init = path.clone();
    let server = start_with_plugs(&[GET, ECHO], |s| {
        s.init_file = init;
        tweak(s);
    })
    .await;
    (server, dir, path)
}

/// The store value at `key`, read through the `get` plug.
async fn get(c: &mut Client, key: &str) -> Value {
    let r = c.request("get", json!({ "key": key })).await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::MESSAGE, "get"), "{r:?}");
    r.payload
}

/// The integer at `key` (a missing key counts 0).
async fn count(c: &mut Client, key: &str) -> i64 {
    let v = get(c, key).await;
    if v.is_null() {
        return 0;
    }
    v.as_i64().unwrap_or_else(|| panic!("`{key}` holds {v}, not an integer"))
}

/// Read `key` until `done` holds for it; its value then.
async fn poll(c: &mut Client, key: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + POLL_TIMEOUT;
    loop {
        let got = get(c, key).await;
        if done(&got) {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "`{key}` never got there; last: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read the counter at `key` until it is at least `n`; its value then.
async fn poll_count(c: &mut Client, key: &str, n: i64) -> i64 {
    poll(c, key, |v| v.as_i64().is_some_and(|v| v >= n)).await.as_i64().expect("an integer")
}

/// The store value at `key`, read from the server's engine directly (for
/// after the server stopped, when no plug can answer).
fn store_get(app: &App, key: &str) -> Value {
    let value: rhai::Dynamic = app.plugs.engine().eval(&format!("store::get({key:?})")).expect("store::get runs");
    serde_json::to_value(&value).expect("JSON")
}

async fn echo_works(c: &mut Client) {
    let r = c.request("echo", json!({"still": "here"})).await;
    assert_eq!((r.event_type, r.payload), (EventType::MESSAGE, json!({"still": "here"})));
}

/// Install the process-wide logger once: nothing on the console, the last
/// 20,000 entries kept, logLevel 1 (where skipped ticks are logged).
fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut settings = ssocket::config::Settings::load(None, &[], &[]).expect("defaults");
        settings.log_size_limit = 20_000;
        settings.print_log_to_console = false;
        settings.log_level = 1;
        // RUST_LOG would win over logLevel.
        if std::env::var_os("RUST_LOG").is_some() {
            std::env::remove_var("RUST_LOG");
        }
        ssocket::logs::init(&settings);
    });
}

/// Log lines kept so far that contain every one of `parts`.
fn logged(parts: &[&str]) -> Vec<String> {
    ssocket::logs::recent().into_iter().filter(|line| parts.iter().all(|p| line.contains(p))).collect()
}

/// Wait until a log line contains every one of `parts`; that line.
async fn wait_logged(parts: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + POLL_TIMEOUT;
    loop {
        if let Some(line) = logged(parts).pop() {
            return line;
        }
        assert!(tokio::time::Instant::now() < deadline, "no log line with {parts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 1-based number of the first line of `source` containing `needle`.
fn line_of(source: &str, needle: &str) -> usize {
    source.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("`{needle}` in the source")) + 1
}

/// Start-up with `source` as INIT must fail; the error's text and the file.
async fn start_err(source: &str) -> (String, PathBuf) {
    let plugs = tempfile::tempdir().expect("temp dir");
    write_plug(plugs.path(), ECHO.0, ECHO.1);
    let (_dir, path) = init_file(source);
    let mut s = settings(plugs.path());
    s.init_file = path.clone();
    match start(s).await {
        Ok(running) => {
            running.stop().await;
            panic!("start-up should fail with INIT:\n{source}");
        }
        Err(err) => (err.to_string(), path),
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_repeats_and_cancel_stops_it() {
    // `free` counts forever; `limited` cancels itself on its fifth run
    // through a copy of `server` captured by the closure.
    let init = r#"
fn INIT(server) {
    let handle = server;
    server.every(50, || { store::incr("free"); });
    let id = server.every(50, || {
        let n = store::incr("limited");
        if n == 5 {
            let me = store::get("limited_id");
            store::set("cancelled", handle.cancel(me));
            store::set("cancelled_again", handle.cancel(me));
        }
    });
    store::set("limited_id", id);
    store::set("ids_differ", id != server.every(1000000, || 0));
    store::set("unknown_cancel", server.cancel(424242));
    store::set("negative_cancel", server.cancel(-1));
}
"#;
    let before_start = Instant::now();
    let (server, _dir, _path) = start_with_init(init, |_| {}).await;
    let mut c = server.client().await;
    assert_eq!(get(&mut c, "ids_differ").await, json!(true), "each timer has its own id");
    assert_eq!(get(&mut c, "unknown_cancel").await, json!(false), "cancel of no such timer is false");
    assert_eq!(get(&mut c, "negative_cancel").await, json!(false));

    tokio::time::sleep(Duration::from_millis(600)).await;
    let free = count(&mut c, "free").await;
    let elapsed = before_start.elapsed().as_millis() as i64;
    assert!(free >= 5, "every(50) ran only {free} times in {elapsed} ms");
    assert!(free <= elapsed / 50 + 1, "every(50) ran {free} times in {elapsed} ms: more than once a period");

    // The limited timer stopped at 5: cancel returned true, then false.
    assert_eq!(poll(&mut c, "cancelled", |v| !v.is_null()).await, json!(true));
    assert_eq!(get(&mut c, "cancelled_again").await, json!(false), "a cancelled timer is gone");
    assert_eq!(count(&mut c, "limited").await, 5);
    let free_then = count(&mut c, "free").await;
    tokio::time::sleep(SILENCE).await;
    assert_eq!(count(&mut c, "limited").await, 5, "a cancelled timer runs no more");
    poll_count(&mut c, "free", free_then + 1).await;
    // Left: `free` and the idle 1,000,000 ms one.
    assert_eq!(server.running.app.timers.len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_fires_exactly_once_and_a_callback_can_start_timers() {
    let init = r#"
fn INIT(server) {
    let handle = server;
    store::set("scheduled_at", unix_time_ms());
    server.after(100, || {
        store::set("fired_at", unix_time_ms());
        store::incr("once");
        handle.after(50, || store::incr("chained"));
    });
    // Cancelled before the server even started: never fires.
    let doomed = server.after(100, || store::incr("doomed"));
    store::set("cancel_pending", server.cancel(doomed));
}
"#;
    let (server, _dir, _path) = start_with_init(init, |_| {}).await;
    let mut c = server.client().await;
    poll_count(&mut c, "once", 1).await;
    poll_count(&mut c, "chained", 1).await;
    tokio::time::sleep(SILENCE).await;
    assert_eq!(count(&mut c, "once").await, 1, "after() fires once");
    assert_eq!(count(&mut c, "chained").await, 1, "so does one started from a callback");
    assert_eq!(get(&mut c, "cancel_pending").await, json!(true));
    assert_eq!(count(&mut c, "doomed").await, 0, "a cancelled after() never fires");
    let scheduled = get(&mut c, "scheduled_at").await.as_i64().expect("ms");
    let fired = get(&mut c, "fired_at").await.as_i64().expect("ms");
    assert!(fired - scheduled >= 100, "after(100) fired {} ms after it was set", fired - scheduled);
    assert!(server.running.app.timers.is_empty(), "one-shot timers are gone once they fired");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_broadcast_reaches_every_connected_client() {
    // A named function works as well as a closure.
    let init = r#"
fn INIT(server) {
    server.every(50, Fn("tick"));
}
fn tick() {
    let n = store::incr("ticks");
    let sent = broadcast(#{ event: "tick", payload: #{ n: n } });
    store::set("last_sent_to", sent);
}
"#;
    let (server, _dir, _path) = start_with_init(init, |_| {}).await;
    // Plain clients (a ping's reply could come after a tick): they only
    // read ticks.
    let mut a = server.client().await;
    let mut b = server.client().await;

    /// Three consecutive ticks on `c`: BROADCASTs with n, n+1, n+2.
    async fn three_ticks(c: &mut Client) -> Vec<i64> {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let r = c.recv().await;
            assert_eq!((r.event_type, r.event.as_str()), (EventType::BROADCAST, "tick"), "{r:?}");
            seen.push(r.payload["n"].as_i64().expect("n"));
        }
        assert_eq!(seen, [seen[0], seen[0] + 1, seen[0] + 2], "no broadcast was missed");
        seen
    }
    let seen_a = three_ticks(&mut a).await;
    let seen_b = three_ticks(&mut b).await;
    assert!(seen_a.iter().chain(&seen_b).all(|&n| n >= 1));
    // The callback's broadcast was queued for both clients (nobody sent
    // it, so nobody is excluded).
    assert_eq!(store_get(&server.running.app, "last_sent_to"), json!(2));

    // When a leaves, b keeps getting them.
    a.close().await;
    three_ticks(&mut b).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_can_send_to_one_client() {
    // `target` stores the sender's id; the timer sends to that id only.
    let target = (
        "target.rhai",
        r#"fn target(msg, yield_msg) { store::set("target", msg.client); yield_msg(#{ payload: msg.client }); }"#,
    );
    let init = r#"
fn INIT(server) {
    server.every(50, || {
        let id = store::get("target");
        if id != () {
            store::set("sent", send_to(id, #{ event: "direct", payload: #{ to: id, clients: clients().len() } }));
        }
    });
}
"#;
    let (dir, path) = init_file(init);
    let server = start_with_plugs(&[GET, ECHO, target], |s| s.init_file = path).await;
    let mut bystander = server.ready_client().await;
    let mut a = server.client().await;
    a.send("target", json!({})).await;
    let (mut id, mut direct) = (None, None);
    while id.is_none() || direct.is_none() {
        let r = a.recv().await;
        match r.event.as_str() {
            "target" => id = r.payload.as_i64(),
            "direct" => direct = Some(r),
            _ => panic!("unexpected {r:?}"),
        }
    }
    let (id, direct) = (id.expect("an id"), direct.expect("a direct message"));
    assert_eq!((direct.event_type, direct.payload), (EventType::MESSAGE, json!({"to": id, "clients": 2})));
    // The callback records send_to's result just after sending.
    let deadline = Instant::now() + POLL_TIMEOUT;
    while store_get(&server.running.app, "sent").is_null() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store_get(&server.running.app, "sent"), json!(true), "send_to returned true");
    bystander.expect_silence(SILENCE).await;
    drop(dir);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_ticks_are_skipped_counted_and_logged() {
    init_logs();
    // Make the slow timer's id 38, which no other test here uses, to find
    // its log lines: ids count from 1 per server.
    let init = r#"
fn INIT(server) {
    for i in 0..37 { server.cancel(server.after(1000000, || 0)); }
    let id = server.every(20, || {
        store::incr("slow_runs");
        sleep(200);
    });
    store::set("slow_id", id);
}
"#;
    let (server, _dir, _path) = start_with_init(init, |_| {}).await;
    let mut c = server.client().await;
    assert_eq!(get(&mut c, "slow_id").await, json!(38));
    poll_count(&mut c, "slow_runs", 1).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let runs = count(&mut c, "slow_runs").await;
    let skipped = server.running.app.timers.skipped();
    assert!(
        (1..=8).contains(&runs),
        "every(20) with 200 ms runs ran {runs} times in about 1 s: ticks were not skipped"
    );
    assert!(skipped > 0, "skipped ticks are counted");
    // Logged at logLevel 1.
    let line = wait_logged(&["timer tick skipped", "timer=38"]).await;
    assert!(line.starts_with("DEBUG"), "{line}");
    echo_works(&mut c).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_ticks_show_in_the_metrics_report() {
    // SPEC 9.4: a skipped tick is "counted in metrics"; the metrics a
    // server reports are `metrics::report` (the memoryMetrics line).
    let init = r#"
fn INIT(server) {
    server.every(20, || { store::incr("slow_runs"); sleep(150); });
}
"#;
    let (server, _dir, _path) = start_with_init(init, |_| {}).await;
    let mut c = server.client().await;
    poll_count(&mut c, "slow_runs", 2).await;
    let skipped = server.running.app.timers.skipped();
    assert!(skipped > 0);
    let report = ssocket::metrics::report(&server.running.app);
    assert!(report.contains("skipped"), "the metrics report should count skipped timer ticks: {report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_overlong_callbacks_keep_their_timers_and_spare_clients() {
    init_logs();
    let init = r#"
fn INIT(server) {
    server.every(50, || {
        store::incr("throws");
        throw "boom from a timer";
    });
    server.every(50, || {
        store::incr("loops");
        let x = 0;
        loop { x += 1; }
    });
}
"#;
    let (server, _dir, path) = start_with_init(init, |s| {
        s.limits.timeout_ms = 200;
        s.limits.max_operations = 0; // the time limit, not the operation count, stops the loop
    })
    .await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;

    let throws = poll_count(&mut a, "throws", 3).await;
    let loops = poll_count(&mut a, "loops", 2).await;
    // They keep going after failing.
    poll_count(&mut a, "throws", throws + 3).await;
    poll_count(&mut b, "loops", loops + 2).await;

    // Clients never heard of it and are served as usual.
    echo_works(&mut a).await;
    echo_works(&mut b).await;
    a.expect_silence(SILENCE).await;
    b.expect_silence(Duration::ZERO).await;
    assert_eq!(server.connected(), 2);

    // Each failure is logged with the file and the line.
    let file = path.display().to_string();
    let throw_line = format!("line {}", line_of(init, "throw \"boom"));
    let line = wait_logged(&[&file, "boom from a timer"]).await;
    assert!(line.starts_with("ERROR"), "{line}");
    assert!(line.contains(&throw_line), "the log names the line of the throw ({throw_line}): {line}");
    // A run stopped by the time limit is logged with the file and the
    // limit (Rhai reports no position for it, as for a plug's
    // `limit_exceeded`, whose ERROR has no line either).
    let line = wait_logged(&[&file, "limits.timeoutMs"]).await;
    assert!(line.starts_with("ERROR"), "{line}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_periods_stop_the_start_up_with_a_clear_message() {
    for (source, call, value) in [
        ("fn INIT(server) {\n    server.every(0, || 1);\n}\n", "server.every", "not 0"),
        ("fn INIT(server) {\n    server.after(-1, || 1);\n}\n", "server.after", "not -1"),
        ("fn INIT(server) {\n    server.every(-250, || 1);\n}\n", "server.every", "not -250"),
    ] {
        let (err, path) = start_err(source).await;
        assert!(err.contains(&path.display().to_string()), "names the file: {err}");
        assert!(err.contains(call), "names the call `{call}`: {err}");
        assert!(err.contains("at least 1") && err.contains(value), "says what is wrong: {err}");
        assert!(err.contains("line 2"), "names the line: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_periods_are_catchable_bad_argument_errors() {
    let init = r#"
fn INIT(server) {
    let handle = server;
    store::set("init:every0", attempt(|| handle.every(0, || 1)));
    store::set("init:after_neg", attempt(|| handle.after(-1, || 1)));
    server.after(20, || {
        store::set("cb:every0", attempt(|| handle.every(0, || 1)));
        store::set("cb:after_neg", attempt(|| handle.after(-5, || 1)));
        store::set("cb:done", true);
    });
}
fn attempt(f) {
    try {
        return #{ returned: f.call() };
    } catch (e) {
        return e;
    }
}
"#;
    let (server, _dir, _path) = start_with_init(init, |_| {}).await;
    let mut c = server.client().await;
    poll(&mut c, "cb:done", |v| *v == json!(true)).await;
    for key in ["init:every0", "init:after_neg", "cb:every0", "cb:after_neg"] {
        let e = get(&mut c, key).await;
        assert_eq!(e["error"], json!("bad_argument"), "{key}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| m.contains("at least 1")), "{key}: {e}");
    }
    assert!(server.running.app.timers.is_empty(), "no timer was made");
    echo_works(&mut c).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yield_msg_in_a_timer_or_init_is_a_no_client_error() {
    let init = r#"
fn INIT(server) {
    try {
        yield_msg(#{ payload: "from INIT" });
        store::set("init:yield", "no error");
    } catch (e) {
        store::set("init:yield", e);
    }
    server.after(20, || {
        try {
            yield_msg(#{ payload: "from a timer" });
            store::set("timer:yield", "no error");
        } catch (e) {
            store::set("timer:yield", e);
        }
    });
    // Uncaught: logged, and reaches nobody.
    server.after(40, || yield_msg(#{ payload: "uncaught" }));
}
"#;
    let (server, _dir, _path) = start_with_init(init, |_| {}).await;
    let mut c = server.ready_client().await;
    let from_timer = poll(&mut c, "timer:yield", |v| !v.is_null()).await;
    assert_eq!(from_timer["error"], json!("no_client"), "{from_timer}");
    assert!(from_timer["message"].as_str().is_some_and(|m| m.contains("no client")), "{from_timer}");
    let from_init = get(&mut c, "init:yield").await;
    assert_eq!(from_init["error"], json!("no_client"), "{from_init}");
    c.expect_silence(SILENCE).await;
    echo_works(&mut c).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_stop_at_shutdown() {
    let init = r#"
fn INIT(server) {
    server.every(20, || { store::incr("ticks"); });
    server.after(600000, || { store::incr("never"); });
}
"#;
    let (server, _dir, _path) = start_with_init(init, |_| {}).await;
    let mut c = server.client().await;
    poll_count(&mut c, "ticks", 3).await;
    let app = server.running.app.clone();
    assert_eq!(app.timers.len(), 2);
    drop(c);
    server.stop().await;
    assert!(app.timers.is_empty(), "shutdown ends every timer");
    // A run that was going at the stop may still finish; then nothing more.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_stop = store_get(&app, "ticks");
    assert!(after_stop.as_i64().is_some_and(|n| n >= 3), "{after_stop}");
    tokio::time::sleep(SILENCE).await;
    assert_eq!(store_get(&app, "ticks"), after_stop, "no tick after shutdown");
    assert_eq!(store_get(&app, "never"), Value::Null);
    // And none can start.
    let refused = app.timers.add(10, true, rhai::FnPtr::new("f").expect("a name"));
    assert!(refused.is_err(), "a timer added after shutdown is refused");
    assert!(app.timers.is_empty());
}
