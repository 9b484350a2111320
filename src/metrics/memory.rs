//! `memoryMetrics`: a periodic log line with resident memory, connections,
//! plugs and invocations in flight, for watching a server's health without
//! a metrics stack.

use std::time::Duration;

use crate::app::App;

/// Resident set size of this process in bytes (Linux; None elsewhere).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One report line.
pub fn report(app: &App) -> String {
    let rss = rss_bytes().map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "unknown".into());
    format!(
        "memory: rss={rss} connections={} plugs={} in_flight={} timers={} timer_ticks_skipped={}",
        app.hub.len(),
        app.plugs.registry().names().len(),
        app.plugs.in_flight(),
        app.timers.len(),
        app.timers.skipped()
    )
}

/// Log [`report`] every `memoryMetrics.interval` ms, forever.
pub async fn run(app: App) {
    let mut tick = tokio::time::interval(Duration::from_millis(app.settings.memory_metrics_interval_ms.max(1)));
    tick.tick().await;
    loop {
        tick.tick().await;
        tracing::info!("{}", report(&app));
    }
}
