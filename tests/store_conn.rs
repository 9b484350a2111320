//! `store::` and `conn::` (SPEC 9.1 and 9.2), end to end: real servers on
//! temporary plugs folders, fixture plugs written inline, real WebSocket
//! clients.
//!
//! Most tests drive the store through one generic plug, `kv`, whose
//! payload names the operation (`{"op": "set", "key": "a", "value": 1}`),
//! and `conn::` through another, `c`. With `"guarded": true` the plug
//! catches a host error and answers `{"caught": e}` (the thrown map);
//! without, the error reaches the client as an ERROR message.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use ssocket::protocol::EventType;

/// How long "nothing (more) happens" checks wait.
const SILENCE: Duration = Duration::from_millis(300);
/// How long polls for something that should happen wait.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// One store operation per message. `payload.make` builds values JSON
/// cannot carry (function pointers, closures).
const KV_SRC: &str = r#"
fn kv(msg, yield_msg) {
    let p = msg.payload;
    if p.guarded == true {
        let out = ();
        try {
            out = #{ ok: run(p) };
        } catch (e) {
            out = #{ caught: e };
        }
        yield_msg(#{ payload: out });
    } else {
        yield_msg(#{ payload: #{ ok: run(p) } });
    }
}

private fn value(p) {
    switch p.make {
        "fnptr" => Fn("f"),
        "closure" => |x| x + 1,
        "nested_fnptr" => #{ list: [1, Fn("f")] },
        _ => p.value,
    }
}

private fn run(p) {
    switch p.op {
        "get" => store::get(p.key),
        "set" => { store::set(p.key, value(p)); "done" }
        "set_ttl" => { store::set(p.key, value(p), p.ttl); "done" }
        "del" => store::del(p.key),
        "incr" => store::incr(p.key),
        "incr_by" => store::incr(p.key, p.by),
        "push" => store::push(p.key, value(p), p.max_len),
        "range" => store::range(p.key, p.start, p.end),
        "keys" => store::keys(p.prefix),
        "keys_all" => store::keys(),
        _ => throw `unknown op ${p.op}`,
    }
}
"#;
const KV: (&str, &str) = ("kv.rhai", KV_SRC);

/// One `conn::` operation per message, like `kv`.
const CONN_SRC: &str = r#"
fn c(msg, yield_msg) {
    let p = msg.payload;
    if p.guarded == true {
        let out = ();
        try {
            out = #{ ok: run(p, msg) };
        } catch (e) {
            out = #{ caught: e };
        }
        yield_msg(#{ payload: out });
    } else {
        yield_msg(#{ payload: #{ ok: run(p, msg) } });
    }
}

private fn run(p, msg) {
    switch p.op {
        "get" => conn::get(p.key),
        "set" => { conn::set(p.key, if p.make == "fnptr" { Fn("f") } else { p.value }); "done" }
        "remove" => conn::remove(p.key),
        "all" => conn::all(),
        "who" => #{ id: conn::id(), client: msg.client, user: conn::user() },
        _ => throw `unknown op ${p.op}`,
    }
}
"#;
const CONN: (&str, &str) = ("c.rhai", CONN_SRC);

/// Writes straight from the handler, so an uncaught error's line is known:
/// line 3 of the source (the first line is empty).
const FILL_SRC: &str = r#"
fn fill(msg, yield_msg) {
    store::set(msg.payload.key, msg.payload.value);
    yield_msg(#{ payload: "stored" });
}
"#;
const FILL: (&str, &str) = ("fill.rhai", FILL_SRC);
const FILL_LINE: u64 = 3;

const ECHO: (&str, &str) = ("echo.rhai", "fn echo(msg, yield_msg) { yield_msg(#{ payload: msg.payload }); }");

// ---------------------------------------------------------------- helpers

/// Send `payload` to `event` and expect a MESSAGE reply; its payload.
async fn ask(c: &mut Client, event: &str, payload: Value) -> Value {
    let r = c.request(event, payload.clone()).await;
    assert_eq!(
        (r.event_type, r.event.as_str()),
        (EventType::MESSAGE, event),
        "`{event}` with {payload} answered {:?}",
        r.payload
    );
    r.payload
}

/// A `kv` operation that must succeed: its result.
async fn kv(c: &mut Client, payload: Value) -> Value {
    let out = ask(c, "kv", payload.clone()).await;
    assert!(out.get("caught").is_none(), "{payload} failed: {out}");
    out["ok"].clone()
}

/// A `c` (conn::) operation that must succeed: its result.
async fn conn(c: &mut Client, payload: Value) -> Value {
    let out = ask(c, "c", payload.clone()).await;
    assert!(out.get("caught").is_none(), "{payload} failed: {out}");
    out["ok"].clone()
}

/// `payload` with `"guarded": true`, sent to `event`: the error the plug
/// caught (panics if it succeeded).
async fn caught(c: &mut Client, event: &str, mut payload: Value) -> Value {
    payload["guarded"] = json!(true);
    let out = ask(c, event, payload.clone()).await;
    match out.get("caught") {
        Some(e) => e.clone(),
        None => panic!("{payload} should have failed, got {out}"),
    }
}

/// `payload` sent to `event` without catching: the ERROR payload.
async fn uncaught(c: &mut Client, event: &str, payload: Value) -> Value {
    let r = c.request(event, payload.clone()).await;
    assert_eq!(
        (r.event_type, r.event.as_str()),
        (EventType::ERROR, event),
        "{payload} should reach the client as an ERROR, got {:?}",
        r.payload
    );
    r.payload
}

/// Check a caught host error and the ERROR payload of the same failure
/// uncaught: both carry `code`, and a message containing `says`.
async fn expect_error(c: &mut Client, event: &str, payload: Value, code: &str, says: &str) -> (Value, Value) {
    let e = caught(c, event, payload.clone()).await;
    assert_eq!(e["error"], json!(code), "caught error of {payload}: {e}");
    let message = e["message"].as_str().unwrap_or_else(|| panic!("a message in {e}"));
    assert!(message.contains(says), "the message of {payload} should say `{says}`: {message}");

    let err = uncaught(c, event, payload.clone()).await;
    assert_eq!(err["error"], json!(code), "ERROR payload of {payload}: {err}");
    assert_eq!(err["plug"], json!(event), "{err}");
    assert_eq!(err["function"], json!(event), "{err}");
    assert!(err["line"].as_u64().is_some_and(|l| l > 0), "the ERROR names a line: {err}");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "the ERROR message of {payload} should say `{says}`: {message}");
    (e, err)
}

/// Ask `event` with `payload` until `done` holds for the reply payload.
async fn poll(c: &mut Client, event: &str, payload: Value, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + POLL_TIMEOUT;
    loop {
        let got = ask(c, event, payload.clone()).await;
        if done(&got) {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "`{event}` {payload} never got there; last: {got}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The other client still gets its echo: nothing above hurt it.
async fn echo_works(c: &mut Client) {
    let r = c.request("echo", json!({"still": "here"})).await;
    assert_eq!((r.event_type, r.payload), (EventType::MESSAGE, json!({"still": "here"})));
}

/// Read until a reply with `event` arrives.
async fn until_event(c: &mut Client, event: &str) -> Reply {
    loop {
        match c.next().await {
            Received::Reply(r) if r.event == event => return r,
            Received::Reply(_) => continue,
            Received::Closed(code) => panic!("closed ({code:?}) while waiting for `{event}`"),
        }
    }
}

// ---------------------------------------------------------------- store::

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_round_trips_every_json_kind() {
    let server = start_with_plugs(&[KV], |_| {}).await;
    let mut c = server.client().await;

    let values = [
        ("kind:map", json!({"name": "ada", "tags": ["x", "y"], "nested": {"deep": [1, {"k": null}]}})),
        ("kind:array", json!([1, "two", 3.5, false, null, [], {}])),
        ("kind:string", json!("héllo \"world\" \n ✓")),
        ("kind:empty_string", json!("")),
        ("kind:int", json!(42)),
        ("kind:negative", json!(-7)),
        ("kind:big_int", json!(i64::MAX)),
        ("kind:float", json!(2.5)),
        ("kind:small_float", json!(-0.125)),
        ("kind:true", json!(true)),
        ("kind:false", json!(false)),
        ("kind:null", Value::Null),
        ("kind:empty_map", json!({})),
        ("kind:empty_array", json!([])),
    ];
    for (key, value) in &values {
        assert_eq!(kv(&mut c, json!({"op": "set", "key": key, "value": value})).await, json!("done"));
    }
    for (key, value) in &values {
        assert_eq!(&kv(&mut c, json!({"op": "get", "key": key})).await, value, "{key} reads back as written");
    }

    // keys(prefix) lists them, sorted, the unit value included (it is
    // stored as null, not absent); keys() lists everything.
    let mut expected: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
    expected.sort_unstable();
    assert_eq!(kv(&mut c, json!({"op": "keys", "prefix": "kind:"})).await, json!(expected));
    kv(&mut c, json!({"op": "set", "key": "other", "value": 1})).await;
    assert_eq!(kv(&mut c, json!({"op": "keys", "prefix": "kind:"})).await, json!(expected), "prefix filters");
    let mut all = expected.clone();
    all.push("other");
    all.sort_unstable();
    assert_eq!(kv(&mut c, json!({"op": "keys_all"})).await, json!(all));
    assert_eq!(kv(&mut c, json!({"op": "keys", "prefix": "nothing:"})).await, json!([]));

    // A missing key reads as (), i.e. null.
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "missing"})).await, Value::Null);

    // Overwriting replaces; del says whether the key existed.
    kv(&mut c, json!({"op": "set", "key": "kind:int", "value": {"now": "a map"}})).await;
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "kind:int"})).await, json!({"now": "a map"}));
    assert_eq!(kv(&mut c, json!({"op": "del", "key": "kind:int"})).await, json!(true));
    assert_eq!(kv(&mut c, json!({"op": "del", "key": "kind:int"})).await, json!(false));
    assert_eq!(kv(&mut c, json!({"op": "del", "key": "never"})).await, json!(false));
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "kind:int"})).await, Value::Null);
    assert_eq!(kv(&mut c, json!({"op": "del", "key": "kind:null"})).await, json!(true), "a null value exists");
    let keys = kv(&mut c, json!({"op": "keys", "prefix": "kind:"})).await;
    let keys: Vec<&str> = keys.as_array().expect("an array").iter().filter_map(Value::as_str).collect();
    assert!(!keys.contains(&"kind:int") && !keys.contains(&"kind:null"), "deleted keys are gone: {keys:?}");
    assert_eq!(keys.len(), values.len() - 2, "{keys:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_values_keep_their_rhai_types() {
    // Values built in Rhai (not from JSON) come back as the same Rhai
    // types; a char is stored as a one-letter string.
    let plug = r#"
fn types(msg, yield_msg) {
    store::set("typed", #{ i: 1, f: 1.5, s: "x", b: true, u: (), a: [1, "a"], m: #{ k: 2 }, c: 'c' });
    let v = store::get("typed");
    let out = #{};
    for k in v.keys() {
        out[k] = type_of(v[k]);
    }
    out.whole = type_of(v);
    out.value = v;
    yield_msg(#{ payload: out });
}
"#;
    let server = start_with_plugs(&[("types.rhai", plug)], |_| {}).await;
    let mut c = server.client().await;
    let got = ask(&mut c, "types", json!({})).await;
    assert_eq!(
        got,
        json!({
            "i": "i64", "f": "f64", "s": "string", "b": "bool", "u": "()", "a": "array", "m": "map",
            "c": "string", "whole": "map",
            "value": {"i": 1, "f": 1.5, "s": "x", "b": true, "u": null, "a": [1, "a"], "m": {"k": 2}, "c": "c"},
        })
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_counts_from_zero_with_and_without_by() {
    let server = start_with_plugs(&[KV], |_| {}).await;
    let mut c = server.client().await;
    assert_eq!(kv(&mut c, json!({"op": "incr", "key": "n"})).await, json!(1), "a missing key is 0");
    assert_eq!(kv(&mut c, json!({"op": "incr", "key": "n"})).await, json!(2));
    assert_eq!(kv(&mut c, json!({"op": "incr_by", "key": "n", "by": 10})).await, json!(12));
    assert_eq!(kv(&mut c, json!({"op": "incr_by", "key": "n", "by": -20})).await, json!(-8));
    assert_eq!(kv(&mut c, json!({"op": "incr_by", "key": "n", "by": 0})).await, json!(-8));
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "n"})).await, json!(-8), "get reads the integer");
    assert_eq!(kv(&mut c, json!({"op": "incr_by", "key": "fresh", "by": 5})).await, json!(5));
    // An integer set by `set` can be incremented.
    kv(&mut c, json!({"op": "set", "key": "set_int", "value": 41})).await;
    assert_eq!(kv(&mut c, json!({"op": "incr", "key": "set_int"})).await, json!(42));
    // Past the integer range is an error, not a wrap, and changes nothing.
    kv(&mut c, json!({"op": "set", "key": "max", "value": i64::MAX})).await;
    let e = caught(&mut c, "kv", json!({"op": "incr", "key": "max"})).await;
    assert!(e["error"].as_str().is_some_and(|code| !code.is_empty()), "{e}");
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "max"})).await, json!(i64::MAX));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_keeps_the_last_max_len_items_and_range_follows_lrange() {
    let server = start_with_plugs(&[KV], |_| {}).await;
    let mut c = server.client().await;
    let items = [json!({"n": 0}), json!("one"), json!(2), json!([3]), json!(4.5)];
    let mut lengths = Vec::new();
    for item in &items {
        lengths.push(kv(&mut c, json!({"op": "push", "key": "l", "value": item, "max_len": 3})).await);
    }
    assert_eq!(lengths, [json!(1), json!(2), json!(3), json!(3), json!(3)], "push returns the new length");
    let range = |start: i64, end: i64| json!({"op": "range", "key": "l", "start": start, "end": end});
    assert_eq!(kv(&mut c, range(0, -1)).await, json!([2, [3], 4.5]), "only the last 3 are kept, oldest first");
    assert_eq!(kv(&mut c, range(-2, -1)).await, json!([[3], 4.5]), "negative indexes count from the end");
    assert_eq!(kv(&mut c, range(1, 1)).await, json!([[3]]), "end is inclusive");
    assert_eq!(kv(&mut c, range(0, 100)).await, json!([2, [3], 4.5]), "end clamps");
    assert_eq!(kv(&mut c, range(-100, 0)).await, json!([2]), "start clamps");
    assert_eq!(kv(&mut c, range(3, 10)).await, json!([]), "out of bounds is empty, not an error");
    assert_eq!(kv(&mut c, range(2, 1)).await, json!([]), "start after end is empty");
    assert_eq!(kv(&mut c, range(0, -4)).await, json!([]));
    let missing = json!({"op": "range", "key": "no_list", "start": 0, "end": -1});
    assert_eq!(kv(&mut c, missing).await, json!([]), "a missing list is empty");
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "l"})).await, json!([2, [3], 4.5]), "get reads a list whole");
    // A smaller max_len trims more.
    assert_eq!(kv(&mut c, json!({"op": "push", "key": "l", "value": "last", "max_len": 1})).await, json!(1));
    assert_eq!(kv(&mut c, range(0, -1)).await, json!(["last"]));
    assert_eq!(kv(&mut c, json!({"op": "keys", "prefix": ""})).await, json!(["l"]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_survives_a_plug_reload() {
    let v1 = r#"
fn rw(msg, yield_msg) {
    if msg.payload.write != () {
        store::set("reload:k", msg.payload.write);
        store::push("reload:l", msg.payload.write, 10);
    }
    yield_msg(#{ payload: #{ version: 1, value: store::get("reload:k"), list: store::range("reload:l", 0, -1) } });
}
"#;
    let server = start_with_plugs(&[("rw.rhai", v1)], |_| {}).await;
    let mut c = server.client().await;
    let written = json!({"kept": [1, 2, {"across": "reloads"}]});
    let got = ask(&mut c, "rw", json!({"write": written})).await;
    assert_eq!(got, json!({"version": 1, "value": written, "list": [written]}));

    // Rewrite the same plug: it only reads, and says it is version 2.
    let v2 = r#"
fn rw(msg, yield_msg) {
    yield_msg(#{ payload: #{ version: 2, value: store::get("reload:k"), list: store::range("reload:l", 0, -1) } });
}
"#;
    write_plug(&server.plugs_dir(), "rw.rhai", v2);
    let got = poll(&mut c, "rw", json!({}), |v| v["version"] == json!(2)).await;
    assert_eq!(got, json!({"version": 2, "value": written, "list": [written]}), "the reload kept the store");

    // A new client after the reload sees it too.
    let mut d = server.client().await;
    assert_eq!(ask(&mut d, "rw", json!({})).await["value"], written);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_shared_across_plugs_and_connections() {
    let writer = r#"
fn writer(msg, yield_msg) {
    store::set("shared:from_writer", #{ by: msg.client, what: msg.payload });
    yield_msg(#{ payload: store::incr("shared:count") });
}
"#;
    let reader = r#"
fn reader(msg, yield_msg) {
    yield_msg(#{ payload: #{ from_writer: store::get("shared:from_writer"), from_kv: store::get("shared:from_kv"), count: store::get("shared:count") } });
}
"#;
    let server = start_with_plugs(&[KV, ("writer.rhai", writer), ("reader.rhai", reader)], |_| {}).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    assert_eq!(ask(&mut a, "writer", json!("hello")).await, json!(1));
    let a_id = ask(&mut a, "reader", json!({})).await["from_writer"]["by"].clone();
    assert!(a_id.as_i64().is_some(), "{a_id}");

    // b reads a's write through another plug, writes through kv, and a
    // reads that back through `reader`.
    assert_eq!(
        kv(&mut b, json!({"op": "get", "key": "shared:from_writer"})).await,
        json!({"by": a_id, "what": "hello"})
    );
    kv(&mut b, json!({"op": "set", "key": "shared:from_kv", "value": [true]})).await;
    assert_eq!(ask(&mut b, "writer", json!("from b")).await, json!(2), "one counter for both clients");
    let seen_by_a = ask(&mut a, "reader", json!({})).await;
    assert_eq!(seen_by_a["from_kv"], json!([true]));
    assert_eq!(seen_by_a["count"], json!(2));
    assert_eq!(seen_by_a["from_writer"]["what"], json!("from b"));
    assert_ne!(seen_by_a["from_writer"]["by"], a_id, "b's write replaced a's");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_a_ttl_expire() {
    let server = start_with_plugs(&[KV], |_| {}).await;
    let mut c = server.client().await;
    kv(&mut c, json!({"op": "set_ttl", "key": "ttl:short", "value": {"soon": "gone"}, "ttl": 100})).await;
    kv(&mut c, json!({"op": "set_ttl", "key": "ttl:long", "value": "stays", "ttl": 60_000})).await;
    kv(&mut c, json!({"op": "set", "key": "ttl:forever", "value": 1})).await;
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "ttl:short"})).await, json!({"soon": "gone"}), "present at first");
    assert_eq!(
        kv(&mut c, json!({"op": "keys", "prefix": "ttl:"})).await,
        json!(["ttl:forever", "ttl:long", "ttl:short"])
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "ttl:short"})).await, Value::Null, "expired: get is null");
    assert_eq!(kv(&mut c, json!({"op": "keys", "prefix": "ttl:"})).await, json!(["ttl:forever", "ttl:long"]));
    assert_eq!(kv(&mut c, json!({"op": "del", "key": "ttl:short"})).await, json!(false), "an expired key is gone");
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "ttl:long"})).await, json!("stays"));
    // The key can be written again, and starts afresh.
    assert_eq!(kv(&mut c, json!({"op": "incr", "key": "ttl:short"})).await, json!(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_free_their_bytes() {
    let server = start_with_plugs(&[KV], |s| s.store.max_bytes = 200).await;
    let mut c = server.client().await;
    let value = "v".repeat(120);
    kv(&mut c, json!({"op": "set_ttl", "key": "brief", "value": value, "ttl": 100})).await;
    let e = caught(&mut c, "kv", json!({"op": "set", "key": "next", "value": value})).await;
    assert_eq!(e["error"], json!("limit_exceeded"), "both do not fit: {e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    kv(&mut c, json!({"op": "set", "key": "next", "value": value})).await;
    assert_eq!(kv(&mut c, json!({"op": "keys_all"})).await, json!(["next"]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_lists_at_most_10000() {
    let plug = r#"
fn many(msg, yield_msg) {
    for i in 0..10005 {
        store::set(`many:${i}`, i);
    }
    let all = store::keys("many:");
    yield_msg(#{ payload: #{ len: all.len(), first: all[0], second: all[1], no_prefix: store::keys().len() } });
}
"#;
    let server = start_with_plugs(&[("many.rhai", plug)], |_| {}).await;
    let mut c = server.client().await;
    let got = ask(&mut c, "many", json!({})).await;
    // Sorted as strings: many:0, many:1, many:10, ...
    assert_eq!(got, json!({"len": 10_000, "first": "many:0", "second": "many:1", "no_prefix": 10_000}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_incr_from_many_clients_loses_nothing() {
    const CLIENTS: usize = 20;
    const EACH: usize = 50;
    let server = start_with_plugs(&[KV], |s| s.limits.messages_per_second = 0).await;
    let url = server.url();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await;
            // Every message first, then every reply: they run concurrently
            // with the other clients'.
            for _ in 0..EACH {
                c.send("kv", json!({"op": "incr", "key": "hits"})).await;
            }
            let mut seen = Vec::new();
            for _ in 0..EACH {
                let r = c.recv().await;
                assert_eq!(r.event_type, EventType::MESSAGE, "{r:?}");
                seen.push(r.payload["ok"].as_i64().expect("incr returns an integer"));
            }
            c.close().await;
            seen
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    // Atomic: every incr saw a different value, 1 to 1000 with no gap.
    all.sort_unstable();
    let expected: Vec<i64> = (1..=(CLIENTS * EACH) as i64).collect();
    assert_eq!(all, expected, "each incr returned a distinct new value");
    let mut c = server.client().await;
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "hits"})).await, json!(CLIENTS * EACH));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_max_bytes_refuses_writes_past_it_and_they_change_nothing() {
    let server = start_with_plugs(&[KV, FILL, ECHO], |s| s.store.max_bytes = 200).await;
    let mut c = server.client().await;
    let mut other = server.client().await;
    let big = "x".repeat(300);
    kv(&mut c, json!({"op": "set", "key": "small", "value": "abc"})).await;

    // Uncaught: an ERROR naming the limit, the plug, the function, the line.
    let err = uncaught(&mut c, "fill", json!({"key": "big", "value": big})).await;
    assert_eq!(err["error"], json!("limit_exceeded"), "{err}");
    assert_eq!(err["limit"], json!("store.maxBytes"), "{err}");
    assert_eq!((err["plug"].clone(), err["function"].clone()), (json!("fill"), json!("fill")), "{err}");
    assert_eq!(err["line"], json!(FILL_LINE), "{err}");
    assert!(err["message"].as_str().is_some_and(|m| m.contains("store.maxBytes")), "{err}");
    // The failed write ended the plug: no "stored" reply follows.
    c.expect_silence(SILENCE).await;

    // Caught: the same code and limit in the thrown map.
    let e = caught(&mut c, "kv", json!({"op": "set", "key": "big", "value": big})).await;
    assert_eq!((e["error"].clone(), e["limit"].clone()), (json!("limit_exceeded"), json!("store.maxBytes")), "{e}");
    // Replacing an existing small value with a big one fails the same way.
    let e = caught(&mut c, "kv", json!({"op": "set", "key": "small", "value": big})).await;
    assert_eq!((e["error"].clone(), e["limit"].clone()), (json!("limit_exceeded"), json!("store.maxBytes")), "{e}");
    let e = caught(&mut c, "kv", json!({"op": "push", "key": "list", "value": big, "max_len": 5})).await;
    assert_eq!((e["error"].clone(), e["limit"].clone()), (json!("limit_exceeded"), json!("store.maxBytes")), "{e}");

    // The failed writes changed nothing.
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "big"})).await, Value::Null);
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "small"})).await, json!("abc"));
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "list"})).await, Value::Null);
    assert_eq!(kv(&mut c, json!({"op": "keys_all"})).await, json!(["small"]));

    // Writes that fit still work, and freeing space lets a bigger one in.
    let medium = "m".repeat(120);
    kv(&mut c, json!({"op": "set", "key": "medium", "value": medium})).await;
    let e = caught(&mut c, "kv", json!({"op": "set", "key": "medium2", "value": medium})).await;
    assert_eq!(e["error"], json!("limit_exceeded"), "two of them do not fit in 200 bytes: {e}");
    assert_eq!(kv(&mut c, json!({"op": "del", "key": "medium"})).await, json!(true));
    kv(&mut c, json!({"op": "set", "key": "medium2", "value": medium})).await;
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "medium2"})).await, json!(medium));

    // Neither client was hurt.
    echo_works(&mut other).await;
    echo_works(&mut c).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_bad_argument_errors_and_change_nothing() {
    let server = start_with_plugs(&[KV, ECHO], |_| {}).await;
    let mut c = server.client().await;
    let mut other = server.client().await;
    kv(&mut c, json!({"op": "set", "key": "k", "value": "before"})).await;
    kv(&mut c, json!({"op": "push", "key": "list", "value": 1, "max_len": 5})).await;

    let long_key = "k".repeat(1025);
    let cases = [
        (json!({"op": "set", "key": "k", "make": "fnptr"}), "function pointer"),
        (json!({"op": "set", "key": "k", "make": "closure"}), "function pointer"),
        (json!({"op": "set", "key": "k", "make": "nested_fnptr"}), "value.list[1]"),
        (json!({"op": "set_ttl", "key": "k", "make": "fnptr", "ttl": 1000}), "function pointer"),
        (json!({"op": "push", "key": "list", "make": "fnptr", "max_len": 5}), "function pointer"),
        (json!({"op": "set", "key": long_key, "value": 1}), "1024"),
        (json!({"op": "get", "key": long_key}), "1024"),
        (json!({"op": "incr", "key": long_key}), "1024"),
        (json!({"op": "set", "key": "", "value": 1}), "empty"),
        (json!({"op": "get", "key": ""}), "empty"),
        (json!({"op": "del", "key": ""}), "empty"),
        (json!({"op": "incr", "key": ""}), "empty"),
        (json!({"op": "push", "key": "", "value": 1, "max_len": 5}), "empty"),
        (json!({"op": "range", "key": "", "start": 0, "end": -1}), "empty"),
        (json!({"op": "set_ttl", "key": "k", "value": "after", "ttl": 0}), "TTL"),
        (json!({"op": "set_ttl", "key": "k", "value": "after", "ttl": -5}), "TTL"),
        (json!({"op": "push", "key": "list", "value": 2, "max_len": 0}), "max_len"),
        (json!({"op": "push", "key": "list", "value": 2, "max_len": -1}), "max_len"),
    ];
    for (payload, says) in cases {
        expect_error(&mut c, "kv", payload, "bad_argument", says).await;
    }

    // None of them changed anything.
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "k"})).await, json!("before"));
    assert_eq!(kv(&mut c, json!({"op": "range", "key": "list", "start": 0, "end": -1})).await, json!([1]));
    assert_eq!(kv(&mut c, json!({"op": "keys_all"})).await, json!(["k", "list"]));
    // A key of exactly 1024 bytes is fine.
    let max_key = "k".repeat(1024);
    kv(&mut c, json!({"op": "set", "key": max_key, "value": "edge"})).await;
    assert_eq!(kv(&mut c, json!({"op": "get", "key": max_key})).await, json!("edge"));

    echo_works(&mut other).await;
    echo_works(&mut c).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_the_wrong_kind_of_value_are_wrong_type_errors() {
    let server = start_with_plugs(&[KV, ECHO], |_| {}).await;
    let mut c = server.client().await;
    let mut other = server.client().await;
    kv(&mut c, json!({"op": "set", "key": "text", "value": "not a number"})).await;
    kv(&mut c, json!({"op": "set", "key": "float", "value": 1.5})).await;
    kv(&mut c, json!({"op": "set", "key": "value", "value": {"a": 1}})).await;
    kv(&mut c, json!({"op": "push", "key": "list", "value": "x", "max_len": 5})).await;

    let cases = [
        (json!({"op": "incr", "key": "text"}), "text"),
        (json!({"op": "incr_by", "key": "text", "by": 2}), "text"),
        (json!({"op": "incr", "key": "float"}), "float"),
        (json!({"op": "incr", "key": "list"}), "list"),
        (json!({"op": "push", "key": "value", "value": 1, "max_len": 5}), "value"),
        (json!({"op": "push", "key": "text", "value": 1, "max_len": 5}), "text"),
        (json!({"op": "range", "key": "value", "start": 0, "end": -1}), "value"),
    ];
    for (payload, key) in cases {
        // The message names the key.
        expect_error(&mut c, "kv", payload, "wrong_type", &format!("`{key}`")).await;
    }
    // Nothing changed.
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "text"})).await, json!("not a number"));
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "float"})).await, json!(1.5));
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "value"})).await, json!({"a": 1}));
    assert_eq!(kv(&mut c, json!({"op": "get", "key": "list"})).await, json!(["x"]));
    // range out of bounds on a real list is no error.
    assert_eq!(kv(&mut c, json!({"op": "range", "key": "list", "start": 5, "end": 9})).await, json!([]));

    echo_works(&mut other).await;
    echo_works(&mut c).await;
    server.stop().await;
}

// ---------------------------------------------------------------- conn::

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_state_lasts_across_messages_of_one_connection_only() {
    let server = start_with_plugs(&[CONN], |_| {}).await;
    let mut a = server.client().await;
    let mut b = server.client().await;

    let values = [
        ("map", json!({"x": [1, 2], "y": {"z": null}})),
        ("array", json!([1, "a", false])),
        ("string", json!("ünïcode")),
        ("int", json!(-3)),
        ("float", json!(0.75)),
        ("bool", json!(true)),
        ("null", Value::Null),
    ];
    for (key, value) in &values {
        assert_eq!(conn(&mut a, json!({"op": "set", "key": key, "value": value})).await, json!("done"));
    }
    // Later messages of the same connection see it.
    for (key, value) in &values {
        assert_eq!(&conn(&mut a, json!({"op": "get", "key": key})).await, value, "{key}");
    }
    let all: serde_json::Map<String, Value> = values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    assert_eq!(conn(&mut a, json!({"op": "all"})).await, Value::Object(all.clone()), "conn::all() is every value");

    // Another connection does not.
    assert_eq!(conn(&mut b, json!({"op": "get", "key": "map"})).await, Value::Null);
    assert_eq!(conn(&mut b, json!({"op": "all"})).await, json!({}));
    conn(&mut b, json!({"op": "set", "key": "map", "value": "b's own"})).await;
    assert_eq!(conn(&mut b, json!({"op": "get", "key": "map"})).await, json!("b's own"));
    assert_eq!(conn(&mut a, json!({"op": "get", "key": "map"})).await, values[0].1, "b's write is not a's");

    // remove returns the removed value, then ().
    assert_eq!(conn(&mut a, json!({"op": "remove", "key": "array"})).await, json!([1, "a", false]));
    assert_eq!(conn(&mut a, json!({"op": "remove", "key": "array"})).await, Value::Null);
    assert_eq!(conn(&mut a, json!({"op": "get", "key": "array"})).await, Value::Null);
    assert_eq!(conn(&mut a, json!({"op": "remove", "key": "never"})).await, Value::Null);
    let mut rest = all;
    rest.remove("array");
    assert_eq!(conn(&mut a, json!({"op": "all"})).await, Value::Object(rest));

    // Setting again replaces.
    conn(&mut a, json!({"op": "set", "key": "int", "value": 4})).await;
    assert_eq!(conn(&mut a, json!({"op": "get", "key": "int"})).await, json!(4));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_id_is_the_sender_and_user_is_null() {
    let server = start_with_plugs(&[CONN], |_| {}).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let who_a = conn(&mut a, json!({"op": "who"})).await;
    let who_b = conn(&mut b, json!({"op": "who"})).await;
    for who in [&who_a, &who_b] {
        assert!(who["id"].as_i64().is_some(), "{who}");
        assert_eq!(who["id"], who["client"], "conn::id() is msg.client: {who}");
        assert_eq!(who["user"], Value::Null, "no identity: conn::user() is (): {who}");
    }
    assert_ne!(who_a["id"], who_b["id"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_state_is_dropped_with_the_connection() {
    let server = start_with_plugs(&[CONN], |_| {}).await;
    let mut a = server.client().await;
    conn(&mut a, json!({"op": "set", "key": "session", "value": {"cart": [1, 2, 3]}})).await;
    let a_id = conn(&mut a, json!({"op": "who"})).await["id"].clone();
    a.close().await;
    assert!(server.wait_connected(0, POLL_TIMEOUT).await, "a is gone");

    let mut fresh = server.client().await;
    assert_eq!(conn(&mut fresh, json!({"op": "all"})).await, json!({}), "a new connection starts empty");
    assert_eq!(conn(&mut fresh, json!({"op": "get", "key": "session"})).await, Value::Null);
    assert_ne!(conn(&mut fresh, json!({"op": "who"})).await["id"], a_id);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_state_is_the_clients_in_on_connect_and_on_disconnect() {
    let init = r#"
fn INIT(server) {
    server.on_connect(|id| {
        conn::set("joined", true);
        conn::set("id_at_connect", id);
        conn::set("conn_id", conn::id());
        yield_msg(#{ payload: "ready" });
    });
    server.on_disconnect(|id| {
        store::set(`left:${id}`, #{ nick: conn::get("nick"), all: conn::all(), conn_id: conn::id() });
    });
}
"#;
    let (_init_dir, path) = init_file(init);
    let server = start_with_plugs(&[CONN, KV], |s| s.init_file = path).await;

    let mut a = server.client().await;
    let ready = until_event(&mut a, "connect").await;
    assert_eq!(ready.payload, json!("ready"));
    let a_id = conn(&mut a, json!({"op": "who"})).await["id"].clone();
    // What on_connect set, a plug of the same connection reads.
    assert_eq!(conn(&mut a, json!({"op": "get", "key": "joined"})).await, json!(true));
    assert_eq!(
        conn(&mut a, json!({"op": "all"})).await,
        json!({"joined": true, "id_at_connect": a_id, "conn_id": a_id}),
        "on_connect ran for this client"
    );
    conn(&mut a, json!({"op": "set", "key": "nick", "value": "ada"})).await;

    let mut b = server.client().await;
    until_event(&mut b, "connect").await;
    let b_id = conn(&mut b, json!({"op": "who"})).await["id"].clone();
    assert_eq!(
        conn(&mut b, json!({"op": "all"})).await,
        json!({"joined": true, "id_at_connect": b_id, "conn_id": b_id}),
        "b's on_connect set b's state, and a's nick is not there"
    );

    a.close().await;
    let key = format!("left:{a_id}");
    let left = poll(&mut b, "kv", json!({"op": "get", "key": key}), |v| !v["ok"].is_null()).await;
    assert_eq!(
        left["ok"],
        json!({
            "nick": "ada",
            "all": {"joined": true, "id_at_connect": a_id, "conn_id": a_id, "nick": "ada"},
            "conn_id": a_id,
        }),
        "on_disconnect saw the leaving client's state"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_state_bytes_bounds_each_connection() {
    let server = start_with_plugs(&[CONN, ECHO], |s| s.limits.conn_state_bytes = 64).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    conn(&mut a, json!({"op": "set", "key": "small", "value": "abc"})).await;
    let big = "x".repeat(100);

    let e = caught(&mut a, "c", json!({"op": "set", "key": "big", "value": big})).await;
    assert_eq!(
        (e["error"].clone(), e["limit"].clone()),
        (json!("limit_exceeded"), json!("limits.connStateBytes")),
        "{e}"
    );
    assert!(e["message"].as_str().is_some_and(|m| m.contains("limits.connStateBytes")), "{e}");
    let err = uncaught(&mut a, "c", json!({"op": "set", "key": "small", "value": big})).await;
    assert_eq!(err["error"], json!("limit_exceeded"), "{err}");
    assert_eq!(err["limit"], json!("limits.connStateBytes"), "{err}");
    assert_eq!((err["plug"].clone(), err["function"].clone()), (json!("c"), json!("c")), "{err}");
    assert!(err["line"].as_u64().is_some(), "{err}");

    // Nothing changed; smaller values still fit.
    assert_eq!(conn(&mut a, json!({"op": "all"})).await, json!({"small": "abc"}));
    conn(&mut a, json!({"op": "set", "key": "more", "value": "x".repeat(40)})).await;
    let e = caught(&mut a, "c", json!({"op": "set", "key": "again", "value": "x".repeat(20)})).await;
    assert_eq!(e["error"], json!("limit_exceeded"), "the bound is on the whole connection: {e}");
    assert_eq!(conn(&mut a, json!({"op": "remove", "key": "more"})).await, json!("x".repeat(40)));
    conn(&mut a, json!({"op": "set", "key": "again", "value": "x".repeat(20)})).await;

    // The bound is per connection: b has its own 64 bytes.
    conn(&mut b, json!({"op": "set", "key": "b", "value": "y".repeat(40)})).await;
    assert_eq!(conn(&mut b, json!({"op": "get", "key": "b"})).await, json!("y".repeat(40)));
    echo_works(&mut b).await;
    echo_works(&mut a).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_set_refuses_values_without_json_and_bad_keys() {
    let server = start_with_plugs(&[CONN, ECHO], |_| {}).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    conn(&mut a, json!({"op": "set", "key": "k", "value": 1})).await;
    expect_error(&mut a, "c", json!({"op": "set", "key": "k", "make": "fnptr"}), "bad_argument", "function pointer")
        .await;
    expect_error(&mut a, "c", json!({"op": "set", "key": "", "value": 1}), "bad_argument", "1024").await;
    expect_error(&mut a, "c", json!({"op": "set", "key": "k".repeat(1025), "value": 1}), "bad_argument", "1024").await;
    assert_eq!(conn(&mut a, json!({"op": "all"})).await, json!({"k": 1}), "nothing changed");
    echo_works(&mut b).await;
    server.stop().await;
}

/// INIT that records, in the store, what each `conn::` call in INIT
/// itself and in a timer callback threw.
const NO_CLIENT_INIT: &str = r#"
fn INIT(server) {
    store::set("init:get", attempt(|| conn::get("a")));
    store::set("init:set", attempt(|| conn::set("a", 1)));
    store::set("init:remove", attempt(|| conn::remove("a")));
    store::set("init:all", attempt(|| conn::all()));
    store::set("init:id", attempt(|| conn::id()));
    store::set("init:user", attempt(|| conn::user()));
    server.after(20, || {
        store::set("timer:get", attempt(|| conn::get("a")));
        store::set("timer:set", attempt(|| conn::set("a", 1)));
        store::set("timer:remove", attempt(|| conn::remove("a")));
        store::set("timer:all", attempt(|| conn::all()));
        store::set("timer:id", attempt(|| conn::id()));
        store::set("timer:user", attempt(|| conn::user()));
        store::set("timer:done", true);
    });
}

// The error caught from `f`, or what it returned.
fn attempt(f) {
    try {
        return #{ returned: f.call() };
    } catch (e) {
        return e;
    }
}
"#;

/// Start with [`NO_CLIENT_INIT`], wait for its timer, and return what the
/// call named `what` (`get`, `set`, ... `user`) threw in INIT and in the
/// timer.
async fn no_client_results(whats: &[&str]) -> Vec<(String, Value)> {
    let (_init_dir, path) = init_file(NO_CLIENT_INIT);
    let server = start_with_plugs(&[KV, ECHO], |s| s.init_file = path).await;
    let mut c = server.client().await;
    poll(&mut c, "kv", json!({"op": "get", "key": "timer:done"}), |v| v["ok"] == json!(true)).await;
    let mut out = Vec::new();
    for place in ["init", "timer"] {
        for what in whats {
            let key = format!("{place}:{what}");
            let got = kv(&mut c, json!({"op": "get", "key": key})).await;
            out.push((key, got));
        }
    }
    // None of it hurt clients.
    echo_works(&mut c).await;
    server.stop().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_state_in_init_or_a_timer_is_a_no_client_error() {
    for (key, got) in no_client_results(&["get", "set", "remove", "all"]).await {
        assert_eq!(got["error"], json!("no_client"), "{key}: {got}");
        assert!(got["message"].as_str().is_some_and(|m| m.contains("no client")), "{key}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_id_and_user_in_init_or_a_timer_are_no_client_errors() {
    // SPEC 9.2 / README error table: `no_client` is for code that runs for
    // no client (INIT, a timer) and uses `yield_msg` or `conn::`.
    let wrong: Vec<String> = no_client_results(&["id", "user"])
        .await
        .into_iter()
        .filter(|(_, got)| got["error"] != json!("no_client"))
        .map(|(key, got)| format!("{key} gave {got}"))
        .collect();
    assert!(wrong.is_empty(), "conn::id() and conn::user() should throw no_client for no client: {wrong:?}");
}
