//! `soak`: many clients churning for a while against streaming plugs: each
//! connects, starts a plug that yields a stream (`multiyield`), reads part
//! of it and leaves (half abruptly, half with a close handshake), over and
//! over. Afterwards the server must hold no connections and run no plugs
//! (`/api/stats`), and its memory should be back near where it started.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use ssocket::protocol::EventType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::client::{connect_light, decode_frame, frame};
use crate::report;
use crate::sys;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// WebSocket URL of the server (its `/api/stats` must be served).
    #[arg(long)]
    url: String,
    /// Clients churning at once.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    #[arg(long, default_value_t = 60.0)]
    duration_secs: f64,
    /// The streaming plug to start, sent `{"count": COUNT}`.
    #[arg(long, default_value = "multiyield")]
    event: String,
    /// Replies each request asks for (most are never read).
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Server process, for RSS before and after.
    #[arg(long)]
    server_pid: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Tally {
    cycles: AtomicU64,
    replies: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(args: Args) -> Result<()> {
    sys::check_fds(args.connections as u64)?;
    let stats_url = stats_url(&args.url)?;
    let before = fetch_stats(&stats_url).await.context("reading /api/stats before the soak")?;
    let rss_before = sys::rss_kib(args.server_pid)?;
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration_secs);
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        let (url, event, tally) = (args.url.clone(), args.event.clone(), tally.clone());
        let count = args.count;
        tasks.push(tokio::spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
            while Instant::now() < deadline {
                seed = xorshift(seed);
                let read = 1 + seed % 50;
                let polite = seed.is_multiple_of(2);
                match cycle(&url, &event, count, read, polite).await {
                    Ok(n) => {
                        tally.replies.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(err) => {
                        if tally.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("soak: {err:#}");
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                tally.cycles.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| anyhow!("a churn task failed: {e}"))?;
    }
    // Give the server a moment to notice the last departures.
    let settle = Instant::now() + Duration::from_secs(10);
    let mut after = fetch_stats(&stats_url).await?;
    while (after["connections"] != json!(0) || after["inFlight"] != json!(0)) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = fetch_stats(&stats_url).await?;
    }
    let rss_after = sys::rss_kib(args.server_pid)?;
    let (cycles, replies, errors) = (
        tally.cycles.load(Ordering::Relaxed),
        tally.replies.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    let human = format!(
        "soak: {} clients x {:.0} s: {cycles} connect/stream/leave cycles, {replies} replies read, {errors} errors\n\
         server after: {} connections, {} invocations in flight (before: {}, {})\n\
         server RSS: {rss_before} KiB before, {rss_after} KiB after",
        args.connections,
        args.duration_secs,
        after["connections"],
        after["inFlight"],
        before["connections"],
        before["inFlight"]
    );
    report::emit(
        args.json,
        &human,
        json!({
            "scenario": "soak",
            "connections": args.connections,
            "duration_secs": args.duration_secs,
            "cycles": cycles,
            "replies": replies,
            "errors": errors,
            "connections_after": after["connections"],
            "in_flight_after": after["inFlight"],
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
        }),
    );
    if after["inFlight"] != json!(0) {
        bail!("{} invocations were still running after the soak", after["inFlight"]);
    }
    Ok(())
}

/// Connect, start the stream, read `read` replies in order, leave. Returns
/// the replies read.
async fn cycle(url: &str, event: &str, count: u64, read: u64, polite: bool) -> Result<u64> {
    let mut ws = connect_light(url).await?;
    ws.send(frame(EventType::MESSAGE, event, &json!({"count": count}).to_string())?).await.context("send")?;
    let mut got = 0;
    while got < read {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(b))) => {
                let m = decode_frame(&b)?;
                let expected = json!({"name": format!("iteration {got}")});
                let payload: Value = serde_json::from_str(&m.payload)?;
                if m.event_type != EventType::MESSAGE || payload != expected {
                    bail!("reply {got}: expected {expected}, got {:?} {}", m.event_type, m.payload);
                }
                got += 1;
            }
            Some(Ok(WsMessage::Close(f))) => bail!("the server closed the connection: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("connection failed: {e}"),
            None => bail!("the server closed the connection"),
        }
    }
    if polite {
        let _ = ws.close(None).await;
    }
    Ok(got)
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// `ws://HOST:PORT/...` → (`HOST:PORT`) for a plain HTTP GET of /api/stats.
fn stats_url(url: &str) -> Result<String> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| anyhow!("soak needs a ws:// URL, got {url}"))?;
    Ok(rest.split('/').next().unwrap_or(rest).to_owned())
}

async fn fetch_stats(host: &str) -> Result<Value> {
    let mut tcp = tokio::net::TcpStream::connect(host).await.with_context(|| format!("cannot connect to {host}"))?;
    let request = format!("GET /api/stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    let body = response.split("\r\n\r\n").nth(1).ok_or_else(|| anyhow!("no body in /api/stats response"))?;
    serde_json::from_str(body).with_context(|| format!("/api/stats is not JSON (is the playground off?): {body}"))
}
