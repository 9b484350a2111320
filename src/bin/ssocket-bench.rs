//! `ssocket-bench`: measurement scenarios run against a running `ssocket`
//! server. Each scenario is a subcommand with its code in its own file
//! under `src/bin/ssocket_bench/`; shared pieces (a protocol client,
//! percentile summaries, /proc readings, reporting) live beside them.
//!
//! ```text
//! ssocket-bench reload    --url ws://127.0.0.1:8080/ --plugs-folder ./plugs --edits 200
//! ssocket-bench echo      --url URL --connections C --in-flight D --payload-bytes B --duration-secs S [--warmup-secs W] [--event echo] [--server-pid PID] [--json]
//! ssocket-bench broadcast --url URL --receivers N --rate R --duration-secs S [--event broadcast] [--payload-bytes B] [--server-pid PID] [--json]
//! ssocket-bench idle      --url URL --connections C --server-pid PID [--concurrency 200] [--json]
//! ssocket-bench connect   --url URL --connections C [--concurrency K] [--json]
//! ssocket-bench soak      --url URL --server-pid PID [--connections 2000] [--duration-secs 60] [--json]
//! ssocket-bench floor     [--receivers 1000] [--rate 200] [--duration-secs 10] [--bytes 117] [--sender-cpu 0] [--json]
//! ssocket-bench publish   --url URL --key KEY [--receivers 1000] [--concurrency 4] [--duration-secs 10] [--server-pid PID] [--json]
//! ```
//!
//! `--threads N` (any position, default 1) sets the worker threads of the
//! one tokio runtime: the generator is meant to be pinned to a core with
//! `taskset`. With `--json` a load scenario prints exactly one JSON object
//! on stdout and its human summary on stderr.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "ssocket_bench/broadcast.rs"]
mod broadcast;
#[path = "ssocket_bench/client.rs"]
mod client;
#[path = "ssocket_bench/connect.rs"]
mod connect;
#[path = "ssocket_bench/echo.rs"]
mod echo;
#[path = "ssocket_bench/floor.rs"]
mod floor;
#[path = "ssocket_bench/idle.rs"]
mod idle;
#[path = "ssocket_bench/publish.rs"]
mod publish;
#[path = "ssocket_bench/reload.rs"]
mod reload;
#[path = "ssocket_bench/report.rs"]
mod report;
#[path = "ssocket_bench/soak.rs"]
mod soak;
#[path = "ssocket_bench/stats.rs"]
mod stats;
#[path = "ssocket_bench/sys.rs"]
mod sys;

#[derive(Parser, Debug)]
#[command(name = "ssocket-bench", version, about = "Benchmarks against a running ssocket server")]
struct Cli {
    /// Worker threads of the load generator's runtime.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Reload latency: save a plug N times, time each save until a request
    /// answers with the new version.
    Reload(reload::Args),
    /// Echo throughput and latency: C connections x D pipelined requests,
    /// every reply verified.
    Echo(echo::Args),
    /// Broadcast fan-out: one sender at R msg/s, N receivers, loss and latency.
    Broadcast(broadcast::Args),
    /// Server memory per idle connection (VmRSS before and after C handshakes).
    Idle(idle::Args),
    /// Handshake rate and latency: C connect-then-close, K at a time.
    Connect(connect::Args),
    /// Churn: C clients connect, start a streaming plug, read part of it and
    /// leave, for a while; then nothing may be left running.
    Soak(soak::Args),
    /// The machine's floor for a broadcast: the same fan-out as plain TCP
    /// writes from one pinned thread, no server involved.
    Floor(floor::Args),
    /// The HTTP API's fan-out: N receivers, K clients posting /api/publish.
    Publish(publish::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.threads == 0 {
        eprintln!("ssocket-bench: --threads must be at least 1");
        return ExitCode::FAILURE;
    }
    if let Err(err) = sys::raise_nofile_limit() {
        eprintln!("ssocket-bench: {err:#}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads).enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("ssocket-bench: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Spawned, so the scenario itself runs on the worker threads too (the
    // thread calling block_on is not one of them).
    let scenario = runtime.spawn(async move {
        match cli.scenario {
            Scenario::Reload(args) => reload::run(args).await,
            Scenario::Echo(args) => echo::run(args).await,
            Scenario::Broadcast(args) => broadcast::run(args).await,
            Scenario::Idle(args) => idle::run(args).await,
            Scenario::Connect(args) => connect::run(args).await,
            Scenario::Soak(args) => soak::run(args).await,
            Scenario::Floor(args) => floor::run(args).await,
            Scenario::Publish(args) => publish::run(args).await,
        }
    });
    let result = runtime.block_on(scenario).unwrap_or_else(|e| Err(anyhow::anyhow!("the scenario panicked: {e}")));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ssocket-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
