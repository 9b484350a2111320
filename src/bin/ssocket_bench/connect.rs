//! Handshake rate: C connections, `--concurrency` K at a time; each opens
//! (TCP connect + WebSocket upgrade), then closes with a close handshake
//! (close frame, then reading until the server closes the TCP connection,
//! so TIME_WAIT stays on the server's side and the client's ephemeral ports
//! are not used up).
//!
//! Latency is the open alone; `handshakes_per_sec` is C over the wall time
//! of the whole phase, closes included. K worker tasks share the work, so
//! `--threads` spreads them over worker threads.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::json;

use crate::client::connect_light;
use crate::report::{emit, per_sec, r3};
use crate::stats::micros_percentiles;
use crate::sys::check_fds;

/// How long a close may take before the connection is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// WebSocket URL of the running server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    url: String,
    /// Handshakes to perform.
    #[arg(long)]
    connections: u32,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 50)]
    concurrency: u32,
    /// Print one JSON object on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

async fn worker(url: Arc<str>, next: Arc<AtomicU32>, total: u32) -> Result<Vec<u64>> {
    let mut latencies = Vec::new();
    while next.fetch_add(1, Ordering::Relaxed) < total {
        let start = Instant::now();
        let mut ws = connect_light(&url).await?;
        latencies.push(start.elapsed().as_micros() as u64);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let _ = ws.close(None).await;
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
    Ok(latencies)
}

pub async fn run(args: Args) -> Result<()> {
    if args.connections == 0 || args.concurrency == 0 {
        bail!("--connections and --concurrency must be at least 1");
    }
    let workers = args.concurrency.min(args.connections);
    check_fds(workers as u64)?;
    let url: Arc<str> = args.url.as_str().into();
    let next = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let tasks: Vec<_> =
        (0..workers).map(|_| tokio::spawn(worker(url.clone(), next.clone(), args.connections))).collect();
    let mut latencies = Vec::with_capacity(args.connections as usize);
    for task in tasks {
        latencies.extend(task.await.context("a connect task panicked")??);
    }
    let secs = started.elapsed().as_secs_f64();
    let p = micros_percentiles(&mut latencies, &[50.0, 99.0]);
    let rate = per_sec(args.connections as f64, secs);
    let human = format!(
        "connect: {} handshakes, {} at a time, in {secs:.2} s: {rate:.0} handshakes/s, latency p50 {} µs p99 {} µs",
        args.connections, workers, p[0], p[1]
    );
    emit(
        args.json,
        &human,
        json!({
            "scenario": "connect",
            "connections": args.connections,
            "concurrency": workers,
            "handshakes": args.connections,
            "handshakes_per_sec": r3(rate),
            "latency_p50_us": p[0],
            "latency_p99_us": p[1],
        }),
    );
    Ok(())
}
