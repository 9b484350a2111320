//! The machine's floor for a broadcast: what the same fan-out costs with
//! no WebSocket, no server and no scheduling at all. One thread, pinned to
//! `--sender-cpu`, writes each message with a plain blocking `write` to N
//! loopback TCP sockets (TCP_NODELAY, like every server here); receivers on
//! the generator's runtime read them back.
//!
//! It answers "how cheap can this get here": any server's broadcast CPU and
//! fan-out latency on this machine is at least this thread's. The sender's
//! CPU time (`CLOCK_THREAD_CPUTIME_ID`) includes the kernel's work done in
//! its system calls, as a server's process CPU does.
//!
//! Each message is `--bytes` long (default 117: the broadcast scenario's
//! 100-byte payloads as they cross the wire, WebSocket header included) and
//! starts with its sequence number and send time (µs since the Unix
//! epoch), so receivers check order and loss and measure latency as the
//! broadcast scenario does.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::report::{emit, per_sec, positive, r3};
use crate::stats::{micros_percentiles, Tally};
use crate::sys::{check_fds, unix_micros};

/// How long receivers wait for the last messages after the sender stops.
const STRAGGLERS: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Receiving sockets.
    #[arg(long, default_value_t = 1000)]
    receivers: u32,
    /// Messages per second, each written to every receiver.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// How long the sender sends, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Bytes per message (at least 16).
    #[arg(long, default_value_t = 117)]
    bytes: usize,
    /// The CPU the sender thread is pinned to (the server's core in
    /// bench/run.sh).
    #[arg(long, default_value_t = 0)]
    sender_cpu: usize,
    /// Print one JSON object on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

/// What the sender thread did.
struct Sent {
    /// Kept open until the receivers are done: closing would end their
    /// reads early.
    writers: Vec<TcpStream>,
    messages: u64,
    writes: u64,
    cpu_seconds: f64,
    wall_seconds: f64,
}

pub async fn run(args: Args) -> Result<()> {
    if args.receivers == 0 || !positive(args.rate) || !positive(args.duration_secs) || args.bytes < 16 {
        bail!("--receivers, --rate and --duration-secs must be positive, --bytes at least 16");
    }
    check_fds(2 * args.receivers as u64)?;
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..args.receivers {
        let reader = tokio::net::TcpStream::connect(addr).await.context("cannot connect on loopback")?;
        let (writer, _) = listener.accept()?;
        writer.set_nodelay(true)?;
        readers.push(reader);
        writers.push(writer);
    }

    let (done_tx, done_rx) = tokio::sync::watch::channel::<Option<u64>>(None);
    let tasks: Vec<_> = readers.into_iter().map(|r| tokio::spawn(receive(r, args.bytes, done_rx.clone()))).collect();

    let (rate, duration, bytes, cpu) = (args.rate, args.duration_secs, args.bytes, args.sender_cpu);
    let sender = std::thread::spawn(move || send(writers, rate, duration, bytes, cpu));
    let sent = tokio::task::spawn_blocking(move || sender.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the sender thread panicked"))??;
    let _ = done_tx.send(Some(sent.messages));

    let mut total = Tally::default();
    for task in tasks {
        let t = task.await.context("a receiver task panicked")??;
        total.merge(t);
    }
    drop(sent.writers);
    let expected = sent.messages * args.receivers as u64;
    let lost = expected.saturating_sub(total.count);
    let p = micros_percentiles(&mut total.latencies, &[50.0, 99.0]);
    let cores = per_sec(sent.cpu_seconds, sent.wall_seconds);
    let us_per_write = per_sec(sent.cpu_seconds * 1e6, sent.writes as f64);
    let mut human = format!(
        "floor: {} sockets, {} msg/s for {:.1} s, {} B each: {} writes ({:.0}/s), sender CPU {cores:.2} cores \
         ({us_per_write:.2} µs per write), {lost} lost, {} errors, fan-out latency p50 {} µs p99 {} µs",
        args.receivers,
        args.rate,
        args.duration_secs,
        args.bytes,
        sent.writes,
        per_sec(sent.writes as f64, sent.wall_seconds),
        total.errors.count,
        p[0],
        p[1]
    );
    human += &total.errors.first_line();
    emit(
        args.json,
        &human,
        json!({
            "scenario": "floor",
            "receivers": args.receivers,
            "rate": args.rate,
            "duration_secs": args.duration_secs,
            "bytes": args.bytes,
            "sent": sent.messages,
            "writes": sent.writes,
            "delivered": total.count,
            "lost": lost,
            "errors": total.errors.count,
            "latency_p50_us": p[0],
            "latency_p99_us": p[1],
            "cpu_seconds": r3(sent.cpu_seconds),
            "cpu_cores": r3(cores),
            "cpu_us_per_write": r3(us_per_write),
        }),
    );
    Ok(())
}

/// Write every message to every socket, paced at `rate`, from a thread
/// pinned to `cpu`.
fn send(mut writers: Vec<TcpStream>, rate: f64, duration: f64, bytes: usize, cpu: usize) -> Result<Sent> {
    pin_to(cpu)?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let cpu_start = thread_cpu_seconds();
    let mut message = vec![b'x'; bytes];
    let (mut messages, mut writes) = (0u64, 0u64);
    let mut next = start;
    while next < end {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        message[..8].copy_from_slice(&messages.to_be_bytes());
        message[8..16].copy_from_slice(&unix_micros().to_be_bytes());
        for w in writers.iter_mut() {
            w.write_all(&message).context("a write failed")?;
            writes += 1;
        }
        messages += 1;
        next += interval;
    }
    Ok(Sent {
        writers,
        messages,
        writes,
        cpu_seconds: thread_cpu_seconds() - cpu_start,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}

async fn receive(
    mut reader: tokio::net::TcpStream,
    bytes: usize,
    mut done: tokio::sync::watch::Receiver<Option<u64>>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut buf = vec![0u8; bytes];
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if let Some(sent) = *done.borrow() {
            if tally.count >= sent {
                break;
            }
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + STRAGGLERS);
        }
        let read = tokio::select! {
            r = reader.read_exact(&mut buf) => r,
            _ = done.changed(), if deadline.is_none() => continue,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => break,
        };
        read.context("a receiving socket failed")?;
        let now = unix_micros();
        let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
        let sent_at = u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes"));
        if seq != tally.count {
            let expected = tally.count;
            tally.error(|| format!("message {seq} arrived where {expected} was due"));
        }
        tally.count += 1;
        tally.latencies.push(now.saturating_sub(sent_at));
    }
    Ok(tally)
}

/// Pin the calling thread to one CPU.
fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only read and write that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("cannot pin the sender to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CPU time of the calling thread, user and system.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
