//! Issue 5 point 1: a plug that exceeds a script limit is stopped, its
//! sender gets ERROR `limit_exceeded` naming the limit, and other clients
//! are not held up.

mod common;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use ssocket::protocol::EventType;

const PLUGS: &[(&str, &str)] = &[
    ("spin.rhai", "fn f(msg, yield_msg) { let x = 0; loop { x += 1; } }"),
    ("recurse.rhai", "fn f(msg, yield_msg) { down(0) }\nfn down(n) { down(n + 1) }"),
    ("strings.rhai", "fn f(msg, yield_msg) { let s = \"ab\"; loop { s += s; } }"),
    ("arrays.rhai", "fn f(msg, yield_msg) { let a = []; loop { a.push(1); } }"),
    // Rhai checks a map's size when the map is next read, not on `m[k] = v`.
    ("maps.rhai", "fn f(msg, yield_msg) { let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += m.len() - i + 1; } }"),
    (
        "nap.rhai",
        "fn f(msg, yield_msg) { yield_msg(#{payload: \"before\"}); sleep(60000); yield_msg(#{payload: \"after\"}); }",
    ),
    ("echo.rhai", "fn f(msg, yield_msg) { yield_msg(#{payload: msg.payload}) }"),
];

async fn server() -> TestServer {
    start_with_plugs(PLUGS, |s| {
        s.limits.timeout_ms = 1500;
        s.limits.max_operations = 2_000_000;
        s.limits.max_call_depth = 32;
        s.limits.max_string_size = 100_000;
        s.limits.max_array_size = 10_000;
        s.limits.max_map_size = 1_000;
    })
    .await
}

fn assert_limit(reply: &Reply, plug: &str, limit: &str) {
    assert_eq!(reply.event_type, EventType::ERROR, "{reply:?}");
    assert_eq!(reply.payload["error"], json!("limit_exceeded"), "{reply:?}");
    assert_eq!(reply.payload["limit"], json!(limit), "{reply:?}");
    assert_eq!(reply.payload["plug"], json!(plug), "{reply:?}");
    let message = reply.payload["message"].as_str().unwrap_or_default();
    assert!(message.contains(limit) && message.contains(plug), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_stops_its_plug_with_a_named_error() {
    let server = server().await;
    let mut c = server.client().await;
    let cases = [
        ("spin", "limits.maxOperations"),
        ("recurse", "limits.maxCallDepth"),
        ("strings", "limits.maxStringSize"),
        ("arrays", "limits.maxArraySize"),
        ("maps", "limits.maxMapSize"),
    ];
    for (plug, limit) in cases {
        let reply = c.request(plug, json!({})).await;
        assert_limit(&reply, plug, limit);
    }
    // The connection is still fine.
    assert_eq!(c.request("echo", json!(7)).await.payload, json!(7));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_limit_covers_sleep_and_busy_loops() {
    let server = start_with_plugs(PLUGS, |s| {
        s.limits.timeout_ms = 800;
        s.limits.max_operations = 0; // only the clock can stop the loop
    })
    .await;
    let mut c = server.client().await;
    let start = Instant::now();
    assert_eq!(c.request("nap", json!({})).await.payload, json!("before"));
    assert_limit(&c.recv().await, "nap", "limits.timeoutMs");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(5), "{took:?}");
    c.send("spin", json!({})).await;
    assert_limit(&c.recv().await, "spin", "limits.timeoutMs");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_plug_does_not_hold_up_other_clients() {
    let server = start_with_plugs(PLUGS, |s| {
        s.limits.timeout_ms = 3000;
        s.limits.max_operations = 0;
    })
    .await;
    let mut hog = server.client().await;
    for _ in 0..2 {
        hog.send("spin", json!({})).await;
    }
    let mut other = server.client().await;
    let start = Instant::now();
    for i in 0..20 {
        assert_eq!(other.request("echo", json!(i)).await.payload, json!(i));
    }
    assert!(start.elapsed() < Duration::from_secs(2), "echoes took {:?}", start.elapsed());
    for _ in 0..2 {
        assert_limit(&hog.recv().await, "spin", "limits.timeoutMs");
    }
    server.stop().await;
}

#[tokio::test]
async fn limit_defaults_are_those_documented() {
    let s = ssocket::config::Settings::load(None, &[], &[]).unwrap();
    let doc = |k: &str| ssocket::config::key_doc(k).unwrap().default.parse::<u64>().unwrap();
    assert_eq!(s.limits.timeout_ms, doc("limits.timeoutMs"));
    assert_eq!(s.limits.max_operations, doc("limits.maxOperations"));
    assert!(s.limits.timeout_ms > 0 && s.limits.max_operations > 0, "a public server has limits on by default");
    let _: Value = json!(null);
}
