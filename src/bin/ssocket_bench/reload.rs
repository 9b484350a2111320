//! Reload latency: how long after a plug file is saved does the server
//! answer with the new version?
//!
//! The scenario writes `bench_reload.rhai` into the server's plugs folder
//! N times, each time with the next version number, and after each save
//! sends requests for `bench_reload` back to back (each waits for its
//! reply) until one answers with that version. The time from the start of
//! the save to that reply is one sample. Saves are either in place or
//! atomic (a temp file renamed over, as editors do). The plug file is
//! removed at the end unless `--keep` is given.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ssocket::protocol::EventType;

use crate::client::Client;
use crate::stats::Summary;

/// The plug the scenario owns; its event is the file name without `.rhai`.
const EVENT: &str = "bench_reload";

/// A request the server never answers is a server bug: report it, do not hang.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// WebSocket URL of the running server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    url: String,
    /// The plugs folder the server watches (the benchmark writes its plug there).
    #[arg(long, value_name = "PATH")]
    plugs_folder: PathBuf,
    /// How many saves to measure.
    #[arg(long, default_value_t = 200)]
    edits: u32,
    /// Save as editors do: write a temp file, rename it over the plug.
    #[arg(long)]
    atomic: bool,
    /// Give up on one save after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Pause between polling requests; 0 sends them back to back (start the
    /// server with `--limits.messagesPerSecond 0` for that).
    #[arg(long, default_value_t = 0)]
    poll_interval_ms: u64,
    /// Leave bench_reload.rhai in the plugs folder afterwards.
    #[arg(long)]
    keep: bool,
}

fn source(version: u32) -> String {
    format!("// written by ssocket-bench reload\nfn f(msg, yield_msg) {{ yield_msg(#{{ payload: {version} }}); }}\n")
}

fn save(folder: &Path, atomic: bool, version: u32) -> Result<()> {
    let path = folder.join(format!("{EVENT}.rhai"));
    if atomic {
        let tmp = folder.join(format!(".{EVENT}.rhai.tmp"));
        std::fs::write(&tmp, source(version)).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot rename over {}", path.display()))?;
    } else {
        std::fs::write(&path, source(version)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Request the event until it answers `version`; the number of requests sent.
async fn wait_for(client: &mut Client, version: u32, timeout: Duration, poll: Duration, since: Instant) -> Result<u64> {
    let want = version.to_string();
    let mut requests = 0;
    loop {
        let reply = match tokio::time::timeout(REPLY_TIMEOUT, client.request(EVENT, "{}")).await {
            Ok(reply) => reply?,
            Err(_) => bail!("a request got no reply within {REPLY_TIMEOUT:?} (waiting for version {version})"),
        };
        requests += 1;
        if reply.event_type == EventType::MESSAGE && reply.payload == want {
            return Ok(requests);
        }
        if reply.event_type == EventType::ERROR && reply.payload.contains("rate_limited") {
            bail!(
                "the server rate-limits this client: start it with `--limits.messagesPerSecond 0`, \
                 or poll more slowly with --poll-interval-ms"
            );
        }
        if since.elapsed() > timeout {
            bail!(
                "version {version} was not served within {timeout:?}; the last answer was type {} payload {}",
                reply.event_type.0,
                reply.payload
            );
        }
        if !poll.is_zero() {
            tokio::time::sleep(poll).await;
        }
    }
}

pub async fn run(args: Args) -> Result<()> {
    if !args.plugs_folder.is_dir() {
        bail!("plugs folder {} does not exist", args.plugs_folder.display());
    }
    if args.edits == 0 {
        bail!("--edits must be at least 1");
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let poll = Duration::from_millis(args.poll_interval_ms);
    let mut client = Client::connect(&args.url).await?;

    // Version 0 first, so every measured save replaces a served version.
    save(&args.plugs_folder, args.atomic, 0)?;
    wait_for(&mut client, 0, timeout.max(Duration::from_secs(10)), poll, Instant::now())
        .await
        .context("the server never served the benchmark plug: is it watching this plugs folder?")?;

    let mut samples = Vec::with_capacity(args.edits as usize);
    let mut requests = 0;
    for version in 1..=args.edits {
        let start = Instant::now();
        save(&args.plugs_folder, args.atomic, version)?;
        requests += wait_for(&mut client, version, timeout, poll, start).await?;
        samples.push(start.elapsed());
    }
    client.close().await;
    if !args.keep {
        let _ = std::fs::remove_file(args.plugs_folder.join(format!("{EVENT}.rhai")));
    }
    let summary = Summary::of(&samples).context("no samples")?;
    let how = if args.atomic { "atomic saves" } else { "in-place saves" };
    println!("reload latency, {how}: {summary} ({requests} requests)");
    Ok(())
}
