//! Echo throughput and latency: C connections, each keeping D requests in
//! flight (pipelined), every reply checked against what was sent.
//!
//! Each request's payload is `{"i":N,"pad":"xxx…"}`, padded to about
//! `--payload-bytes`, with N the connection's own sequence number. A reply
//! must be a MESSAGE for the same event whose payload equals, byte for byte,
//! the payload sent with its N; anything else (wrong type or event, an
//! unknown or repeated N, different bytes, an ERROR) counts as an error.
//! Replies may arrive in any order (the server runs up to
//! `limits.maxInFlightPerClient` plugs of one client at once).
//!
//! Timeline: all connections open, then `--warmup-secs` unmeasured, then
//! `--duration-secs` measured: replies received in that window are counted
//! and their latencies (send to receive) kept. When the window ends no new
//! requests go out and the outstanding ones are awaited (up to 5 s; a
//! request never answered is an error). With `--server-pid`, the server's
//! CPU time (utime + stime from /proc) over the measured window gives
//! `cpu_cores` and `replies_per_core_second`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use ssocket::protocol::EventType;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::client::{connect_light, decode_frame, frame, Ws};
use crate::report::{emit, per_sec, positive, r3};
use crate::stats::{micros_percentiles, Tally};
use crate::sys::{check_fds, CpuMark};

/// After the window, how long outstanding requests may take to be answered.
const DRAIN: Duration = Duration::from_secs(5);
/// Connections opened at once while setting up.
const OPEN_CONCURRENCY: usize = 200;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// WebSocket URL of the running server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    url: String,
    /// Connections, each its own pipelined request stream.
    #[arg(long, default_value_t = 1)]
    connections: u32,
    /// Requests each connection keeps in flight.
    #[arg(long, default_value_t = 1)]
    in_flight: u32,
    /// Approximate payload size in bytes (JSON, at least ~20).
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Unmeasured load before the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// The event to request (its plug must echo the payload back).
    #[arg(long, default_value = "echo")]
    event: String,
    /// The server's process id: report its CPU use over the window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

/// The shared part of every payload: everything after the sequence number.
struct Payload {
    /// `,"pad":"xxx…"}`
    tail: String,
}

impl Payload {
    fn new(bytes: usize) -> Payload {
        // `{"i":` + digits (~4) + `,"pad":"` + pad + `"}` is pad + ~17 bytes.
        let pad = bytes.saturating_sub(17);
        Payload { tail: format!(",\"pad\":\"{}\"}}", "x".repeat(pad)) }
    }

    fn write(&self, seq: u64, out: &mut String) {
        use std::fmt::Write;
        out.clear();
        let _ = write!(out, "{{\"i\":{seq}{}", self.tail);
    }

    /// The sequence number of a payload in our format.
    fn seq_of(payload: &str) -> Option<u64> {
        let rest = payload.strip_prefix("{\"i\":")?;
        let end = rest.find(|c: char| !c.is_ascii_digit())?;
        rest[..end].parse().ok()
    }
}

struct Window {
    start: Instant,
    end: Instant,
}

/// Drive one connection: keep `depth` requests in flight until the window
/// ends, then wait for the outstanding ones.
async fn drive(mut ws: Ws, event: Arc<str>, payload: Arc<Payload>, depth: u32, window: Arc<Window>) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut pending: HashMap<u64, Instant> = HashMap::with_capacity(depth as usize * 2);
    let mut buf = String::new();
    let mut next_seq = 0u64;
    // Requests sent and not yet answered (by anything, an ERROR included).
    let mut outstanding = 0u64;

    // The next request: its frame, with its send time recorded.
    let mut next = |pending: &mut HashMap<u64, Instant>, buf: &mut String| {
        payload.write(next_seq, buf);
        pending.insert(next_seq, Instant::now());
        next_seq += 1;
        frame(EventType::MESSAGE, &event, buf)
    };
    for _ in 0..depth {
        ws.feed(next(&mut pending, &mut buf)?).await.context("send")?;
        outstanding += 1;
    }
    ws.flush().await.context("send")?;

    let drain_deadline = window.end + DRAIN;
    while outstanding > 0 {
        let first = match tokio::time::timeout_at(drain_deadline, ws.next()).await {
            Ok(item) => item,
            Err(_) => {
                let n = outstanding;
                tally.errors.add(n, || format!("{n} requests got no reply within {DRAIN:?}"));
                break;
            }
        };
        // Handle this message and every one already buffered, then flush
        // the new requests together.
        let mut item = Some(first);
        let mut to_send = 0u32;
        while let Some(got) = item.take() {
            let bytes = match got {
                None => bail!("the server closed the connection"),
                Some(Err(e)) => bail!("connection failed: {e}"),
                Some(Ok(WsMessage::Close(f))) => bail!("the server closed the connection: {f:?}"),
                Some(Ok(WsMessage::Binary(b))) => b,
                Some(Ok(_)) => {
                    item = ws.next().now_or_never();
                    continue;
                }
            };
            let now = Instant::now();
            // More replies than requests (a plug that yields twice) must not
            // underflow: check() reports the extra one as an error.
            outstanding = outstanding.saturating_sub(1);
            check(&bytes, &event, &payload, &mut pending, &mut buf, now, &window, &mut tally);
            if now < window.end {
                to_send += 1;
            }
            item = ws.next().now_or_never();
        }
        for _ in 0..to_send {
            ws.feed(next(&mut pending, &mut buf)?).await.context("send")?;
            outstanding += 1;
        }
        if to_send > 0 {
            ws.flush().await.context("send")?;
        }
    }
    let _ = ws.close(None).await;
    Ok(tally)
}

/// Verify one reply and record it.
#[allow(clippy::too_many_arguments)]
fn check(
    bytes: &[u8],
    event: &str,
    payload: &Payload,
    pending: &mut HashMap<u64, Instant>,
    buf: &mut String,
    now: Instant,
    window: &Window,
    tally: &mut Tally,
) {
    let msg = match decode_frame(bytes) {
        Ok(m) => m,
        Err(e) => return tally.error(|| e.to_string()),
    };
    if msg.event_type != EventType::MESSAGE || msg.event != event {
        let hint = if msg.payload.contains("rate_limited") {
            " (start the server with `--limits.messagesPerSecond 0`)"
        } else {
            ""
        };
        return tally.error(|| {
            format!(
                "unexpected reply: type {} event {:?} payload {:.200}{hint}",
                msg.event_type.0, msg.event, msg.payload
            )
        });
    }
    let Some(seq) = Payload::seq_of(&msg.payload) else {
        return tally.error(|| format!("reply payload not in the sent format: {:.200}", msg.payload));
    };
    let Some(sent) = pending.remove(&seq) else {
        return tally.error(|| format!("reply for request {seq}, which is not outstanding"));
    };
    payload.write(seq, buf);
    if msg.payload != *buf {
        return tally.error(|| format!("reply {seq} differs from the request: got {:.200}", msg.payload));
    }
    if now >= window.start && now <= window.end {
        tally.count += 1;
        tally.latencies.push(now.duration_since(sent).as_micros() as u64);
    }
}

pub async fn run(args: Args) -> Result<()> {
    if args.connections == 0 || args.in_flight == 0 {
        bail!("--connections and --in-flight must be at least 1");
    }
    if !positive(args.duration_secs) || !(positive(args.warmup_secs) || args.warmup_secs == 0.0) {
        bail!("--duration-secs must be positive and --warmup-secs not negative");
    }
    check_fds(args.connections as u64)?;

    let url = args.url.clone();
    let opened: Vec<Result<Ws>> = futures::stream::iter(0..args.connections)
        .map(|_| connect_light(&url))
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let conns = opened.into_iter().collect::<Result<Vec<Ws>>>()?;

    let event: Arc<str> = args.event.as_str().into();
    let payload = Arc::new(Payload::new(args.payload_bytes));
    let start = Instant::now() + Duration::from_secs_f64(args.warmup_secs);
    let window = Arc::new(Window { start, end: start + Duration::from_secs_f64(args.duration_secs) });
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|ws| tokio::spawn(drive(ws, event.clone(), payload.clone(), args.in_flight, window.clone())))
        .collect();

    let cpu = match args.server_pid {
        Some(pid) => {
            tokio::time::sleep_until(window.start).await;
            let mark = CpuMark::now(pid)?;
            tokio::time::sleep_until(window.end).await;
            Some(mark.since()?)
        }
        None => None,
    };

    let mut total = Tally::default();
    // Fairness: the fewest and the most replies one connection got in the window.
    let (mut fewest, mut most) = (u64::MAX, 0u64);
    for task in tasks {
        let t = task.await.context("a connection task panicked")??;
        fewest = fewest.min(t.count);
        most = most.max(t.count);
        total.merge(t);
    }
    let p = micros_percentiles(&mut total.latencies, &[50.0, 99.0, 99.9]);
    let rate = per_sec(total.count as f64, args.duration_secs);
    let mut human = format!(
        "echo: {} connections x {} in flight, {} B payload, {:.1} s: {} replies, {:.0} replies/s, \
         latency p50 {} µs p99 {} µs p99.9 {} µs, per connection {}..{}, {} errors",
        args.connections,
        args.in_flight,
        args.payload_bytes,
        args.duration_secs,
        total.count,
        rate,
        p[0],
        p[1],
        p[2],
        fewest,
        most,
        total.errors.count
    );
    if let Some(c) = &cpu {
        human += &format!(
            "; server CPU {:.2} cores ({:.2} s), {:.0} replies per core-second",
            c.cores,
            c.seconds,
            per_sec(total.count as f64, c.seconds)
        );
    }
    human += &total.errors.first_line();
    emit(
        args.json,
        &human,
        json!({
            "scenario": "echo",
            "connections": args.connections,
            "in_flight": args.in_flight,
            "payload_bytes": args.payload_bytes,
            "duration_secs": args.duration_secs,
            "warmup_secs": args.warmup_secs,
            "replies": total.count,
            "replies_per_sec": r3(rate),
            "latency_p50_us": p[0],
            "latency_p99_us": p[1],
            "latency_p999_us": p[2],
            "per_connection_min": fewest,
            "per_connection_max": most,
            "errors": total.errors.count,
            "cpu_seconds": cpu.as_ref().map(|c| r3(c.seconds)),
            "cpu_cores": cpu.as_ref().map(|c| r3(c.cores)),
            "replies_per_core_second": cpu.as_ref().map(|c| r3(per_sec(total.count as f64, c.seconds))),
        }),
    );
    Ok(())
}
