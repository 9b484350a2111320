//! Broadcast fan-out: N receivers and one sender; the sender sends R
//! messages a second for `--duration-secs`, the server's broadcast plug
//! forwards each to every other client (type BROADCAST).
//!
//! Each message's payload is `{"seq":k,"t":micros}` (plus `"pad"` with
//! `--payload-bytes`), `t` the send time in µs since the Unix epoch; a
//! receiver's latency sample is its receive time minus `t` (one machine,
//! one clock). Receivers check every seq arrives exactly once: a repeat is
//! an error, and after the sender stops they wait up to 2 s for stragglers,
//! then `lost` = messages sent − messages received, summed over receivers.
//!
//! Pacing: a `tokio::time::interval` of 1/R s with
//! `MissedTickBehavior::Burst`. Tokio's timer has 1 ms resolution, so above
//! 1000/s ticks fire in bursts of about R/1000 per millisecond; when the
//! sender falls behind it catches up at once, so the average rate (and
//! `sent` ≈ R × duration) holds.
//!
//! Every connection does one round trip first, so the server has
//! registered all receivers before the first broadcast. With
//! `--server-pid`, the server's CPU use covers the sending window.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use ssocket::protocol::EventType;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::client::{ask, connect_light, decode_frame, frame, round_trip, Ws};
use crate::report::{emit, per_sec, positive, r3};
use crate::stats::{micros_percentiles, Tally};
use crate::sys::{check_fds, unix_micros, CpuMark};

/// How long receivers wait for stragglers after the sender stops.
pub const STRAGGLERS: Duration = Duration::from_secs(2);
/// Connections opened at once while setting up.
const OPEN_CONCURRENCY: usize = 200;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// WebSocket URL of the running server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    url: String,
    /// Receiving connections.
    #[arg(long, default_value_t = 10)]
    receivers: u32,
    /// Messages the sender sends per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long the sender sends, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// The event to send (its plug must broadcast the payload unchanged).
    #[arg(long, default_value = "broadcast")]
    event: String,
    /// Pad each payload to about this many bytes.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Spread the receivers over these servers (comma-separated WebSocket
    /// URLs, in turn), e.g. the nodes of a cluster; the sender stays on
    /// `--url`. Default: all on `--url`.
    #[arg(long, value_delimiter = ',')]
    receivers_on: Vec<String>,
    /// The pids of more processes whose CPU to report (the other nodes,
    /// Redis), comma-separated.
    #[arg(long, value_delimiter = ',')]
    also_pids: Vec<u32>,
    /// Before sending, every connection sends this event once and waits
    /// for its reply (e.g. a plug that joins a room the `--event` plug
    /// sends to).
    #[arg(long)]
    join: Option<String>,
    /// The server's process id: report its CPU use over the window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize)]
struct Stamp {
    seq: u64,
    t: u64,
}

/// Once the sender is done: how many it sent, and when to stop waiting.
pub type Done = Option<(u64, Instant)>;

/// One receiver: count each `{seq, t}` BROADCAST of `event` once, until
/// the sender is done and every message came (or stragglers' time is up).
pub async fn receive(mut ws: Ws, event: Arc<str>, mut done: watch::Receiver<Done>) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut seen: Vec<bool> = Vec::new();
    let mut finish: Done = None;
    loop {
        if let Some((sent, _)) = finish {
            if tally.count >= sent {
                break;
            }
        }
        let item = tokio::select! {
            item = ws.next() => item,
            changed = done.changed(), if finish.is_none() => {
                if changed.is_err() {
                    bail!("the sender stopped without saying how many it sent");
                }
                finish = *done.borrow();
                continue;
            }
            _ = tokio::time::sleep_until(finish.map(|(_, at)| at).unwrap_or_else(Instant::now)), if finish.is_some() => break,
        };
        let bytes = match item {
            None => bail!("the server closed a receiver's connection"),
            Some(Err(e)) => bail!("a receiver's connection failed: {e}"),
            Some(Ok(WsMessage::Close(f))) => bail!("the server closed a receiver's connection: {f:?}"),
            Some(Ok(WsMessage::Binary(b))) => b,
            Some(Ok(_)) => continue,
        };
        let now = unix_micros();
        let msg = match decode_frame(&bytes) {
            Ok(m) => m,
            Err(e) => {
                tally.error(|| e.to_string());
                continue;
            }
        };
        if msg.event_type != EventType::BROADCAST || msg.event != *event {
            tally.error(|| {
                format!(
                    "unexpected message: type {} event {:?} payload {:.200}",
                    msg.event_type.0, msg.event, msg.payload
                )
            });
            continue;
        }
        let stamp: Stamp = match serde_json::from_str(&msg.payload) {
            Ok(s) => s,
            Err(_) => {
                tally.error(|| format!("broadcast payload not in the sent format: {:.200}", msg.payload));
                continue;
            }
        };
        let i = stamp.seq as usize;
        if i >= seen.len() {
            seen.resize((i + 1).max(seen.len() * 2), false);
        }
        if seen[i] {
            tally.error(|| format!("message {} arrived twice", stamp.seq));
            continue;
        }
        seen[i] = true;
        tally.count += 1;
        tally.latencies.push(now.saturating_sub(stamp.t));
    }
    let _ = ws.close(None).await;
    Ok(tally)
}

/// Send at `rate` until `end`; the number sent, and sender-side errors.
/// The connection is handed back open: closing it at once could cut off
/// the last broadcasts, which the server may still be running.
async fn send(mut ws: Ws, event: &str, rate: f64, end: Instant, pad: &str) -> Result<(u64, Tally, Ws)> {
    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            at = tick.tick() => {
                if at >= end {
                    break;
                }
                let payload = if pad.is_empty() {
                    format!("{{\"seq\":{sent},\"t\":{}}}", unix_micros())
                } else {
                    format!("{{\"pad\":\"{pad}\",\"seq\":{sent},\"t\":{}}}", unix_micros())
                };
                ws.send(frame(EventType::MESSAGE, event, &payload)?).await.context("the sender's send failed")?;
                sent += 1;
            }
            item = ws.next() => match item {
                None => bail!("the server closed the sender's connection"),
                Some(Err(e)) => bail!("the sender's connection failed: {e}"),
                Some(Ok(WsMessage::Close(f))) => bail!("the server closed the sender's connection: {f:?}"),
                Some(Ok(WsMessage::Binary(b))) => {
                    // With excludeSenderOnBroadcast off the sender gets its
                    // own broadcasts: not an error. Anything else is.
                    let m = decode_frame(&b)?;
                    if m.event_type != EventType::BROADCAST || m.event != event {
                        let hint = if m.payload.contains("rate_limited") {
                            " (start the server with `--limits.messagesPerSecond 0`)"
                        } else {
                            ""
                        };
                        tally.error(|| format!("the sender got type {} event {:?} payload {:.200}{hint}", m.event_type.0, m.event, m.payload));
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }
    Ok((sent, tally, ws))
}

/// Send `event` once and wait for its reply (an ERROR or NOT_FOUND fails).
async fn join_with(ws: &mut Ws, event: &str) -> Result<()> {
    let m = ask(ws, event).await.with_context(|| format!("--join {event}"))?;
    if m.event_type == EventType::ERROR || m.event_type == EventType::NOT_FOUND {
        bail!("--join {event} answered type {}: {:.200}", m.event_type.0, m.payload);
    }
    Ok(())
}

pub async fn run(args: Args) -> Result<()> {
    if args.receivers == 0 || !positive(args.rate) || !positive(args.duration_secs) {
        bail!("--receivers, --rate and --duration-secs must be positive");
    }
    check_fds(args.receivers as u64 + 1)?;

    let url = args.url.clone();
    let join = args.join.as_deref();
    let spread = if args.receivers_on.is_empty() { vec![url.clone()] } else { args.receivers_on.clone() };
    let spread = &spread;
    let opened: Vec<Result<Ws>> = futures::stream::iter(0..args.receivers)
        .map(|i| async move {
            let mut ws = connect_light(&spread[i as usize % spread.len()]).await?;
            round_trip(&mut ws).await?;
            if let Some(event) = join {
                join_with(&mut ws, event).await?;
            }
            Ok(ws)
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let receivers = opened.into_iter().collect::<Result<Vec<Ws>>>()?;
    let mut sender = connect_light(&url).await?;
    round_trip(&mut sender).await?;
    if let Some(event) = join {
        join_with(&mut sender, event).await?;
    }

    let event: Arc<str> = args.event.as_str().into();
    let (done_tx, done_rx) = watch::channel::<Done>(None);
    let tasks: Vec<_> =
        receivers.into_iter().map(|ws| tokio::spawn(receive(ws, event.clone(), done_rx.clone()))).collect();

    let pad = "x".repeat(args.payload_bytes.saturating_sub(44));
    let mark = args.server_pid.map(CpuMark::now).transpose()?;
    let also: Vec<CpuMark> = args.also_pids.iter().map(|pid| CpuMark::now(*pid)).collect::<Result<_>>()?;
    let end = Instant::now() + Duration::from_secs_f64(args.duration_secs);
    let sending = send(sender, &args.event, args.rate, end, &pad).await;
    let cpu = mark.map(|m| m.since()).transpose()?;
    let also_cores: Vec<f64> = also.into_iter().map(|m| m.since().map(|c| r3(c.cores))).collect::<Result<_>>()?;
    let (sent, mut total, mut sender) = match sending {
        Ok(r) => r,
        Err(e) => {
            let _ = done_tx.send(Some((0, Instant::now())));
            return Err(e);
        }
    };
    let _ = done_tx.send(Some((sent, Instant::now() + STRAGGLERS)));

    // The sender's tally holds only its errors: its count stays 0.
    for task in tasks {
        total.merge(task.await.context("a receiver task panicked")??);
    }
    let delivered = total.count;
    let _ = sender.close(None).await;
    let expected = sent * args.receivers as u64;
    let lost = expected.saturating_sub(delivered);
    let p = micros_percentiles(&mut total.latencies, &[50.0, 99.0]);
    let rate = per_sec(delivered as f64, args.duration_secs);
    let mut human = format!(
        "broadcast: {} receivers, {} msg/s for {:.1} s: {sent} sent, {delivered} delivered ({rate:.0}/s), \
         {lost} lost, {} errors, fan-out latency p50 {} µs p99 {} µs",
        args.receivers, args.rate, args.duration_secs, total.errors.count, p[0], p[1]
    );
    if let Some(c) = &cpu {
        human += &format!("; server CPU {:.2} cores ({:.2} s)", c.cores, c.seconds);
    }
    human += &total.errors.first_line();
    emit(
        args.json,
        &human,
        json!({
            "scenario": "broadcast",
            "receivers": args.receivers,
            "rate": args.rate,
            "duration_secs": args.duration_secs,
            "payload_bytes": args.payload_bytes,
            "sent": sent,
            "delivered": delivered,
            "delivered_per_sec": r3(rate),
            "lost": lost,
            "errors": total.errors.count,
            "latency_p50_us": p[0],
            "latency_p99_us": p[1],
            "cpu_seconds": cpu.as_ref().map(|c| r3(c.seconds)),
            "cpu_cores": cpu.as_ref().map(|c| r3(c.cores)),
            "also_pids": args.also_pids,
            "also_cpu_cores": also_cores,
        }),
    );
    Ok(())
}
