//! The HTTP API's fan-out: N receivers connected over WebSocket, and K
//! HTTP clients posting `POST /api/publish` (to all) back to back for
//! `--duration-secs`. Reports publishes per second, what the receivers got
//! (every publish must reach every receiver exactly once) and the server's
//! CPU.
//!
//! Each publish's payload is `{"seq":k,"t":micros}`, the format the
//! broadcast scenario's receivers check; they run unchanged here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::broadcast::{receive, Done, STRAGGLERS};
use crate::client::{connect_light, round_trip, Ws};
use crate::report::{emit, per_sec, positive, r3};
use crate::stats::{micros_percentiles, Tally};
use crate::sys::{check_fds, unix_micros, CpuMark};

/// Connections opened at once while setting up.
const OPEN_CONCURRENCY: usize = 200;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// WebSocket URL of the running server (the API is on the same port).
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    url: String,
    /// The server's `api.key`.
    #[arg(long)]
    key: String,
    /// Receiving WebSocket connections.
    #[arg(long, default_value_t = 1000)]
    receivers: u32,
    /// HTTP clients posting at once, each waiting for its answer before the next.
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// How long to publish, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// The event published.
    #[arg(long, default_value = "news")]
    event: String,
    /// The server's process id: report its CPU use over the window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

/// Post until `end`; each publish gets the next sequence number.
async fn publisher(
    http: reqwest::Client,
    url: String,
    key: String,
    event: String,
    seq: Arc<AtomicU64>,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < end {
        let k = seq.fetch_add(1, Ordering::Relaxed);
        let body = json!({"event": event, "payload": {"seq": k, "t": unix_micros()}}).to_string();
        let started = Instant::now();
        let answer = http.post(&url).bearer_auth(&key).body(body).send().await;
        match answer {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                tally.count += 1;
                tally.latencies.push(started.elapsed().as_micros() as u64);
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tally.error(|| format!("publish answered {status}: {text:.200}"));
            }
            Err(e) => tally.error(|| format!("publish failed: {e}")),
        }
    }
    tally
}

pub async fn run(args: Args) -> Result<()> {
    if args.receivers == 0 || args.concurrency == 0 || !positive(args.duration_secs) {
        bail!("--receivers, --concurrency and --duration-secs must be positive");
    }
    check_fds(args.receivers as u64 + args.concurrency as u64)?;
    let api = args.url.replacen("ws://", "http://", 1).trim_end_matches('/').to_owned() + "/api/publish";

    let url = args.url.clone();
    let opened: Vec<Result<Ws>> = futures::stream::iter(0..args.receivers)
        .map(|_| async {
            let mut ws = connect_light(&url).await?;
            round_trip(&mut ws).await?;
            Ok(ws)
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let receivers = opened.into_iter().collect::<Result<Vec<Ws>>>()?;
    let event: Arc<str> = args.event.as_str().into();
    let (done_tx, done_rx) = watch::channel::<Done>(None);
    let tasks: Vec<_> =
        receivers.into_iter().map(|ws| tokio::spawn(receive(ws, event.clone(), done_rx.clone()))).collect();

    // reqwest needs a rustls provider even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().context("HTTP client")?;
    let seq = Arc::new(AtomicU64::new(0));
    let mark = args.server_pid.map(CpuMark::now).transpose()?;
    let end = Instant::now() + Duration::from_secs_f64(args.duration_secs);
    let posting: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (http, api, key, event, seq) =
                (http.clone(), api.clone(), args.key.clone(), args.event.clone(), seq.clone());
            tokio::spawn(publisher(http, api, key, event, seq, end))
        })
        .collect();
    let mut posted = Tally::default();
    for task in posting {
        posted.merge(task.await.context("a publisher panicked")?);
    }
    let cpu = mark.map(|m| m.since()).transpose()?;
    let sent = seq.load(Ordering::Relaxed);
    let _ = done_tx.send(Some((sent, Instant::now() + STRAGGLERS)));

    let mut received = Tally::default();
    for task in tasks {
        received.merge(task.await.context("a receiver task panicked")??);
    }
    let expected = sent * args.receivers as u64;
    let lost = expected.saturating_sub(received.count);
    let rate = per_sec(posted.count as f64, args.duration_secs);
    let req = micros_percentiles(&mut posted.latencies, &[50.0, 99.0]);
    let fan = micros_percentiles(&mut received.latencies, &[50.0, 99.0]);
    let errors = posted.errors.count + received.errors.count;
    let mut human = format!(
        "publish: {} receivers, {} HTTP clients for {:.1} s: {} publishes ({rate:.0}/s), {} delivered, {lost} lost, \
         {errors} errors, request p50 {} µs p99 {} µs, fan-out p50 {} µs p99 {} µs",
        args.receivers,
        args.concurrency,
        args.duration_secs,
        posted.count,
        received.count,
        req[0],
        req[1],
        fan[0],
        fan[1]
    );
    if let Some(c) = &cpu {
        human += &format!("; server CPU {:.2} cores ({:.2} s)", c.cores, c.seconds);
    }
    human += &posted.errors.first_line();
    human += &received.errors.first_line();
    emit(
        args.json,
        &human,
        json!({
            "scenario": "publish",
            "receivers": args.receivers,
            "concurrency": args.concurrency,
            "duration_secs": args.duration_secs,
            "publishes": posted.count,
            "publishes_per_sec": r3(rate),
            "sent": sent,
            "delivered": received.count,
            "lost": lost,
            "errors": errors,
            "request_p50_us": req[0],
            "request_p99_us": req[1],
            "fanout_p50_us": fan[0],
            "fanout_p99_us": fan[1],
            "cpu_seconds": cpu.as_ref().map(|c| r3(c.seconds)),
            "cpu_cores": cpu.as_ref().map(|c| r3(c.cores)),
        }),
    );
    Ok(())
}
