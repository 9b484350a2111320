//! The load scenarios of `ssocket-bench` against an in-process server on
//! the example plugs: each runs about a second with small numbers and must
//! see no errors, nothing lost, and some throughput.

mod common;
use common::*;
use serde_json::Value;

/// Start a server without per-client rate or connection limits.
async fn server() -> TestServer {
    start_examples_with(|s| {
        s.limits.messages_per_second = 0;
        s.max_connections = 0;
    })
    .await
}

/// Run `ssocket-bench <args> --json` (off the runtime, so the in-process
/// server keeps serving) and parse its one JSON line.
async fn bench(args: Vec<String>) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ssocket-bench")).args(&args).arg("--json").output()
    })
    .await
    .expect("join")
    .expect("ssocket-bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ssocket-bench failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(stdout.lines().count(), 1, "one JSON line expected, got: {stdout}\nstderr: {stderr}");
    serde_json::from_str(&stdout).expect("JSON on stdout")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_scenario() {
    let server = server().await;
    let pid = std::process::id().to_string();
    let url = server.url();
    let v = bench(args(&[
        "echo",
        "--url",
        &url,
        "--connections",
        "4",
        "--in-flight",
        "4",
        "--payload-bytes",
        "200",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0.2",
        "--server-pid",
        &pid,
    ]))
    .await;
    assert_eq!(v["scenario"], "echo");
    assert_eq!(num(&v, "errors"), 0.0, "{v}");
    assert!(num(&v, "replies") > 0.0 && num(&v, "replies_per_sec") > 0.0, "{v}");
    assert!(num(&v, "latency_p99_us") >= num(&v, "latency_p50_us"), "{v}");
    assert!(num(&v, "cpu_cores") > 0.0 && num(&v, "replies_per_core_second") > 0.0, "{v}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_scenario() {
    let server = server().await;
    let url = server.url();
    let v =
        bench(args(&["broadcast", "--url", &url, "--receivers", "5", "--rate", "200", "--duration-secs", "1"])).await;
    assert_eq!(v["scenario"], "broadcast");
    assert_eq!((num(&v, "errors"), num(&v, "lost")), (0.0, 0.0), "{v}");
    assert!(num(&v, "sent") > 0.0, "{v}");
    assert_eq!(num(&v, "delivered"), num(&v, "sent") * 5.0, "{v}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_scenario() {
    let server = start_examples_with(|s| {
        s.limits.messages_per_second = 0;
        s.api.key = "bench-key".into();
    })
    .await;
    let pid = std::process::id().to_string();
    let url = server.url();
    let v = bench(args(&[
        "publish",
        "--url",
        &url,
        "--key",
        "bench-key",
        "--receivers",
        "5",
        "--concurrency",
        "2",
        "--duration-secs",
        "0.5",
        "--server-pid",
        &pid,
    ]))
    .await;
    assert_eq!(v["scenario"], "publish");
    assert_eq!((num(&v, "errors"), num(&v, "lost")), (0.0, 0.0), "{v}");
    assert!(num(&v, "publishes") > 0.0 && num(&v, "publishes_per_sec") > 0.0, "{v}");
    assert_eq!(num(&v, "delivered"), num(&v, "publishes") * 5.0, "{v}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_scenario_measures_plain_tcp_fan_out() {
    let v = bench(args(&["floor", "--receivers", "5", "--rate", "100", "--duration-secs", "0.5"])).await;
    assert_eq!(v["scenario"], "floor");
    assert_eq!((num(&v, "errors"), num(&v, "lost")), (0.0, 0.0), "{v}");
    assert!(num(&v, "sent") > 0.0, "{v}");
    assert_eq!(num(&v, "writes"), num(&v, "sent") * 5.0, "{v}");
    assert_eq!(num(&v, "delivered"), num(&v, "writes"), "{v}");
    assert!(num(&v, "cpu_seconds") > 0.0 && num(&v, "cpu_us_per_write") > 0.0, "{v}");
    assert!(num(&v, "latency_p99_us") >= num(&v, "latency_p50_us"), "{v}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssocket-bench"))
        .args(["floor", "--bytes", "8"])
        .output()
        .expect("ssocket-bench runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bytes at least 16"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_scenario() {
    let server = server().await;
    let pid = std::process::id().to_string();
    let url = server.url();
    let v = bench(args(&["idle", "--url", &url, "--connections", "50", "--server-pid", &pid])).await;
    assert_eq!(v["scenario"], "idle");
    assert!(num(&v, "rss_before_kib") > 0.0 && num(&v, "rss_after_kib") > 0.0, "{v}");
    assert!(num(&v, "connections_per_sec") > 0.0, "{v}");
    assert!(v["per_connection_bytes"].is_number(), "{v}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_scenario() {
    let server = server().await;
    let url = server.url();
    let v = bench(args(&["connect", "--url", &url, "--connections", "100", "--concurrency", "10"])).await;
    assert_eq!(v["scenario"], "connect");
    assert_eq!(num(&v, "handshakes"), 100.0, "{v}");
    assert!(num(&v, "handshakes_per_sec") > 0.0 && num(&v, "latency_p50_us") > 0.0, "{v}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_fail_clearly() {
    // Nothing listens on port 1.
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ssocket-bench"))
            .args(["connect", "--url", "ws://127.0.0.1:1/", "--connections", "1"])
            .output()
    })
    .await
    .expect("join")
    .expect("ssocket-bench runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect to ws://127.0.0.1:1/"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_scenario_leaves_nothing_running() {
    let server = server().await;
    let pid = std::process::id().to_string();
    let url = server.url();
    let v = bench(args(&[
        "soak",
        "--url",
        &url,
        "--server-pid",
        &pid,
        "--connections",
        "40",
        "--duration-secs",
        "1",
        "--count",
        "5000",
    ]))
    .await;
    assert_eq!(v["scenario"], "soak");
    assert!(num(&v, "cycles") > 40.0 && num(&v, "replies") > 0.0, "{v}");
    assert_eq!((num(&v, "errors"), num(&v, "in_flight_after"), num(&v, "connections_after")), (0.0, 0.0, 0.0), "{v}");
    assert_eq!(server.connected(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_stats_reports_connections_and_running_plugs() {
    let server = server().await;
    let _c = server.ready_client().await;
    let addr = server.running.addr;
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        write!(tcp, "GET /api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).unwrap();
        text.split("\r\n\r\n").nth(1).unwrap().to_owned()
    })
    .await
    .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["connections"].as_u64(), v["inFlight"].as_u64()), (Some(1), Some(0)), "{v}");
    assert!(v["plugs"].as_u64().unwrap() >= 6 && v["rssBytes"].as_u64().unwrap() > 0, "{v}");
    server.stop().await;
}
