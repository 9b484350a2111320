//! The `ssocket` command: read the configuration, load the plugs, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ssocket::config::{self, Settings};
use ssocket::plugs::pool;
use ssocket::server;

/// jemalloc: a message costs a few dozen small allocations (the payload as
/// Rhai values, the `msg` map, the reply). Against glibc's malloc it cut
/// 9% of the instructions per echo reply and gave ~7% more replies per
/// core-second, with the same memory per idle connection, and it hands
/// memory back after a burst of clients where glibc keeps it
/// (BENCHMARKS.md, hot path).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Flags clap parses. Configuration keys (`--INSECURE.port 6969`) are split
/// off before clap sees the arguments, because clap cannot declare dotted,
/// data-driven flags; see `config::split_args`.
#[derive(Parser, Debug)]
#[command(name = "ssocket", version, about, disable_help_flag = true)]
struct Cli {
    /// Configuration file (default: ./config.toml when it exists).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print help: every configuration key, or with `--KEY` only that key.
    #[arg(short = 'h', long = "help")]
    help: bool,
    /// Write a new plug NAME (may contain `/`) from a template, then exit.
    #[arg(long, value_name = "NAME")]
    generate: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Compile every plug and module; print errors as file:line:column: message.
    Check,
}

fn main() -> ExitCode {
    let split = config::split_args(std::env::args().skip(1));
    let cli = match Cli::try_parse_from(std::iter::once("ssocket".to_owned()).chain(split.clap_args)) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    if cli.help {
        return help(&split.overrides);
    }
    let settings = match config::cli_overrides(&split.overrides).and_then(|cli_pairs| {
        Settings::load(config::default_file(cli.config.clone()).as_deref(), &config::process_env(), &cli_pairs)
    }) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("ssocket: {err}");
            return ExitCode::from(2);
        }
    };
    // Plug code runs on this thread's successor (INIT.rhai and module code
    // at start-up, `check`) and on the runtime's threads: each gets the
    // stack the limits say plug values may need (plugs::pool).
    let stack = pool::stack_bytes(&settings.limits);
    let main = std::thread::Builder::new().name("ssocket-main".into()).stack_size(stack);
    match main.spawn(move || run(cli, settings, stack)) {
        Ok(thread) => thread.join().unwrap_or(ExitCode::FAILURE),
        Err(err) => {
            eprintln!("ssocket: cannot start the main thread: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, settings: Settings, stack: usize) -> ExitCode {
    if let Some(name) = cli.generate {
        return generate(&settings, &name);
    }
    if let Some(Command::Check) = cli.command {
        return check(&settings);
    }
    ssocket::logs::init(&settings);
    for (key, value) in
        [("limits.maxArraySize", settings.limits.max_array_size), ("limits.maxMapSize", settings.limits.max_map_size)]
    {
        if value == 0 {
            tracing::warn!(
                "{key} is 0 (no limit): a plug can nest values deeper than a thread's stack holds, and that \
                 aborts the server"
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(stack)
        // Fairness under overload: a worker's local queue holds 256 tasks
        // and sends the rest to the shared queue, which by default it looks
        // at only every 31 or so tasks, so with 1,000 busy clients some
        // waited 300 ms while others were served at once. Looking every
        // other task: p99 15 to 20 ms, the busiest client getting 1.2x the
        // replies of the least busy, throughput unchanged (BENCHMARKS.md,
        // issue 16).
        .global_queue_interval(2)
        // Rounds: tokio looks at the sockets every 61 tasks by default, and
        // the clients it finds ready then are queued ahead of older ones
        // (the newest go to the worker's own queue, the oldest overflow to
        // the shared one, and the two take turns). With 1,000 busy clients
        // that served some twice while others waited: p99 17 to 22 ms
        // against Bun's 12 to 16. Looking only after 2,000 tasks (or when
        // there is nothing to run) serves everyone ready in turn, as an
        // event loop does: p99 13 to 14 ms, the busiest client 1.1x the
        // least busy, throughput within a few percent (median -3% over 12
        // pairs, and ahead of Bun's). The price: under full load a new
        // message or timer waits for the round, at most ~16 ms, and a
        // broadcast's next message no longer overtakes the last one's
        // fan-out (p99 ~10 ms instead of 6 to 9, Bun's 10 to 17).
        // BENCHMARKS.md, issue 16.
        .event_interval(2000)
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("ssocket: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ssocket: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> Result<(), server::StartError> {
    let app = ssocket::app::App::new(settings)?;
    let listener = server::bind(&app.settings).await?;
    if let Ok(addr) = listener.local_addr() {
        let scheme = if app.settings.secure { "wss" } else { "ws" };
        tracing::info!("listening on {scheme}://{addr}/");
    }
    server::run(listener, app, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

fn generate(settings: &Settings, name: &str) -> ExitCode {
    match ssocket::tools::generate(&settings.plugs_folder, name) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ssocket: {err}");
            ExitCode::FAILURE
        }
    }
}

fn check(settings: &Settings) -> ExitCode {
    match ssocket::tools::check(settings) {
        Ok(report) => {
            for line in &report.errors {
                println!("{line}");
            }
            let n = report.errors.len();
            eprintln!(
                "checked {} plugs and {} modules: {n} error{}",
                report.plugs,
                report.modules,
                if n == 1 { "" } else { "s" }
            );
            if n == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("ssocket: {err}");
            ExitCode::FAILURE
        }
    }
}

fn help(keys: &[(String, Option<String>)]) -> ExitCode {
    if keys.is_empty() {
        println!("{}", config::help_text());
        return ExitCode::SUCCESS;
    }
    let mut code = ExitCode::SUCCESS;
    for (key, _) in keys {
        match config::key_doc(key) {
            Some(doc) => println!("{}\n", config::describe(doc)),
            None => {
                eprintln!("ssocket: unknown configuration key `{key}`; `ssocket --help` lists every key");
                code = ExitCode::from(2);
            }
        }
    }
    code
}
