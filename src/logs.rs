//! Logging: `tracing` to the console (unless `printLogToConsole = false`)
//! and the last `logSizeLimit` entries kept in memory, so a running server
//! can show what happened recently without a log file.
//!
//! `logLevel` picks the filter ([`crate::config::log_filter`]); `RUST_LOG`,
//! when set, wins.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{log_filter, Settings};

/// The most recent log entries, oldest first.
pub struct LogBuffer {
    capacity: usize,
    entries: Mutex<VecDeque<String>>,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> LogBuffer {
        LogBuffer { capacity, entries: Mutex::new(VecDeque::with_capacity(capacity.min(1024))) }
    }

    pub fn push(&self, line: String) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(line);
    }

    pub fn entries(&self) -> Vec<String> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}

static RECENT: OnceLock<Arc<LogBuffer>> = OnceLock::new();

/// The recent entries kept by the process-wide logger (empty before [`init`]).
pub fn recent() -> Vec<String> {
    RECENT.get().map(|b| b.entries()).unwrap_or_default()
}

/// Install the process-wide logger. Later calls do nothing.
pub fn init(settings: &Settings) {
    let buffer = RECENT.get_or_init(|| Arc::new(LogBuffer::new(settings.log_size_limit))).clone();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log_filter(settings.log_level)));
    let console = settings.print_log_to_console.then(|| {
        use std::io::IsTerminal;
        tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr)
    });
    let _ = tracing_subscriber::registry().with(filter).with(console).with(RingLayer(buffer)).try_init();
}

/// Feeds each event, as one line, into a [`LogBuffer`].
pub struct RingLayer(pub Arc<LogBuffer>);

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = format!("{} {}:", meta.level(), meta.target());
        event.record(&mut LineVisitor(&mut line));
        self.0.push(line);
    }
}

struct LineVisitor<'a>(&'a mut String);

impl Visit for LineVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_entries() {
        let buffer = Arc::new(LogBuffer::new(2));
        let subscriber = tracing_subscriber::registry().with(RingLayer(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("one");
            tracing::warn!(client = 7, "two");
            tracing::error!("three");
        });
        let entries = buffer.entries();
        assert_eq!(entries.len(), 2);
        assert!(entries[0].starts_with("WARN") && entries[0].contains("two") && entries[0].contains("client=7"));
        assert!(entries[1].starts_with("ERROR") && entries[1].ends_with("three"));
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let buffer = LogBuffer::new(0);
        buffer.push("x".into());
        assert!(buffer.entries().is_empty());
    }
}
