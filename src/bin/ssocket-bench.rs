//! `ssocket-bench`: measurement scenarios run against a running `ssocket`
//! server. Each scenario is a subcommand with its code in its own file
//! under `src/bin/ssocket_bench/`; shared pieces (a protocol client,
//! percentile summaries) live beside them.
//!
//! ```text
//! ssocket-bench reload --url ws://127.0.0.1:8080/ --plugs-folder ./plugs --edits 200
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "ssocket_bench/client.rs"]
mod client;
#[path = "ssocket_bench/reload.rs"]
mod reload;
#[path = "ssocket_bench/stats.rs"]
mod stats;

#[derive(Parser, Debug)]
#[command(name = "ssocket-bench", version, about = "Benchmarks against a running ssocket server")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Reload latency: save a plug N times, time each save until a request
    /// answers with the new version.
    Reload(reload::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("ssocket-bench: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.scenario {
            Scenario::Reload(args) => reload::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ssocket-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
