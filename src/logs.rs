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

use crate::config::{log_filter, LogFormat, Settings};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
    let console = (settings.print_log_to_console && settings.log_format == LogFormat::Text).then(|| {
        use std::io::IsTerminal;
        tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr)
    });
    let json = (settings.print_log_to_console && settings.log_format == LogFormat::Json)
        .then(|| tracing_subscriber::fmt::layer().event_format(JsonLines).with_writer(std::io::stderr));
    let _ = tracing_subscriber::registry().with(filter).with(console).with(json).with(RingLayer(buffer)).try_init();
}

/// `logFormat = "json"`: one object per line, `{"time", "level", "target",
/// "message", ...fields}`, fields (`plug`, `client`, ...) at the top level.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        writeln!(writer, "{}", json_line(event))
    }
}

/// One event as a JSON object.
pub fn json_line(event: &Event<'_>) -> serde_json::Value {
    let mut fields = serde_json::Map::new();
    event.record(&mut JsonVisitor(&mut fields));
    let meta = event.metadata();
    let mut time = String::new();
    let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut time));
    let mut line = serde_json::Map::new();
    line.insert("time".into(), time.into());
    line.insert("level".into(), meta.level().as_str().into());
    line.insert("target".into(), meta.target().into());
    line.insert("message".into(), fields.remove("message").unwrap_or_else(|| "".into()));
    line.extend(fields);
    serde_json::Value::Object(line)
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
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
    fn json_lines_carry_time_level_target_message_and_fields() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        struct Collect(Arc<Mutex<Vec<serde_json::Value>>>);
        impl<S: Subscriber> Layer<S> for Collect {
            fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
                self.0.lock().unwrap().push(json_line(event));
            }
        }
        let subscriber = tracing_subscriber::registry().with(Collect(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "ssocket::plug", plug = "chat", client = 7_u64, "said \"hi\"");
        });
        let line = lines.lock().unwrap()[0].clone();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "ssocket::plug");
        assert_eq!(line["message"], "said \"hi\"");
        assert_eq!((line["plug"].as_str(), line["client"].as_u64()), (Some("chat"), Some(7)));
        assert!(line["time"].as_str().is_some_and(|t| t.len() >= 20 && t.contains('T')), "{line}");
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let buffer = LogBuffer::new(0);
        buffer.push("x".into());
        assert!(buffer.entries().is_empty());
    }
}
