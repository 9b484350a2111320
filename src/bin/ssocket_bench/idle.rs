//! Memory per idle connection: the server's resident memory (VmRSS of
//! /proc/PID/status) before and after opening C connections that only do
//! the WebSocket handshake and then sit idle.
//!
//! Connections open `--concurrency` at a time (default 200); once all are
//! open the scenario waits 1 s for the server to settle, reads RSS again,
//! and only then closes them. `per_connection_bytes` = (after − before) / C;
//! allocator caching makes it approximate, so use thousands of connections.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures::StreamExt;
use serde_json::json;

use crate::client::{connect_light, Ws};
use crate::report::{emit, per_sec, r3};
use crate::sys::{check_fds, rss_kib};

/// Wait between the last connection opening and the second RSS reading.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// WebSocket URL of the running server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    url: String,
    /// Idle connections to open.
    #[arg(long)]
    connections: u32,
    /// The server's process id (its memory is what is measured).
    #[arg(long)]
    server_pid: u32,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Print one JSON object on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> Result<()> {
    if args.connections == 0 || args.concurrency == 0 {
        bail!("--connections and --concurrency must be at least 1");
    }
    check_fds(args.connections as u64)?;
    let before = rss_kib(args.server_pid)?;

    let url = args.url.clone();
    let started = Instant::now();
    let opened: Vec<Result<Ws>> = futures::stream::iter(0..args.connections)
        .map(|_| connect_light(&url))
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let open_secs = started.elapsed().as_secs_f64();
    let failed = opened.iter().filter(|r| r.is_err()).count();
    let conns: Vec<Ws> = match opened.into_iter().collect::<Result<Vec<Ws>>>() {
        Ok(c) => c,
        Err(e) => bail!("{failed} of {} connections failed to open; the first: {e:#}", args.connections),
    };
    tokio::time::sleep(SETTLE).await;
    let after = rss_kib(args.server_pid)?;

    // Close with a close frame each (not waiting for the server's answer).
    futures::stream::iter(conns)
        .for_each_concurrent(args.concurrency, |mut ws| async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        })
        .await;

    let per_conn = (after as f64 - before as f64) * 1024.0 / args.connections as f64;
    let rate = per_sec(args.connections as f64, open_secs);
    let human = format!(
        "idle: {} connections opened in {open_secs:.2} s ({rate:.0}/s); server RSS {before} KiB -> {after} KiB, \
         {per_conn:.0} bytes per connection",
        args.connections
    );
    emit(
        args.json,
        &human,
        json!({
            "scenario": "idle",
            "connections": args.connections,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "per_connection_bytes": per_conn.round(),
            "connections_per_sec": r3(rate),
        }),
    );
    Ok(())
}
