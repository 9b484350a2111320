//! Metrics (SPEC 12): counters and gauges in a Prometheus registry, served
//! at `GET /metrics` in the OpenMetrics text format that Prometheus
//! scrapes, and the periodic memory line (`memoryMetrics`, [`memory`]).
//!
//! Label values come only from what the server itself knows: plug names
//! (the plugs folder's files), event types, error codes of
//! [`crate::errors::ErrorCode`], HTTP statuses. An event no plug answers is
//! counted as `not_found`, and a code a plug made up as `custom`, so no
//! client or plug can make the series grow without bound.
//!
//! The hot path pays a few atomic additions: each plug keeps its own
//! counter and histogram handles ([`PlugMetrics`], taken when it compiles),
//! and replies are counted through a fixed table by type.

mod memory;

pub use memory::{report, rss_bytes, run};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::errors::ErrorCode;
use crate::protocol::EventType;

/// The content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlugLabel {
    plug: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// One plug's handles, kept with the compiled plug so counting a message
/// is an atomic addition, not a label lookup.
#[derive(Clone, Debug)]
pub struct PlugMetrics {
    pub messages: Counter,
    pub seconds: Histogram,
}

/// Every series the server exports. Cheap to share (`Arc`).
pub struct Metrics {
    registry: Registry,
    connections: Gauge,
    pub connections_total: Counter,
    messages: Family<EventLabel, Counter>,
    not_found: Counter,
    replies: Vec<Counter>,
    other_replies: Counter,
    errors: Family<CodeLabel, Counter>,
    plug_seconds: Family<PlugLabel, Histogram>,
    pub reloads: Counter,
    pub compile_errors: Counter,
    pub rate_limited: Counter,
    pub slow_client_cutoffs: Counter,
    queued_bytes: Gauge,
    pub timer_ticks_skipped: Counter,
    egress: Family<StatusLabel, Counter>,
    in_flight: Gauge,
    rss: Gauge,
    /// With `cluster.redis` only: a single node has no Redis to be down.
    redis_up: Option<Gauge>,
    cluster_dropped: Option<Counter>,
    /// The cluster's dropped count at the last scrape, to add the rest.
    cluster_dropped_seen: AtomicU64,
    /// Encoding at most one scrape at a time.
    encoding: Mutex<()>,
}

/// What a scrape reads from the server's state (gauges).
pub struct Snapshot {
    pub connections: usize,
    pub queued_bytes: usize,
    pub in_flight: usize,
    /// With several nodes: whether Redis answers, and messages dropped.
    pub cluster: Option<(bool, u64)>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// The series of a single node.
    pub fn new() -> Metrics {
        Metrics::build(false)
    }

    /// The series of a node of a cluster: also Redis's state.
    pub fn for_cluster() -> Metrics {
        Metrics::build(true)
    }

    fn build(cluster: bool) -> Metrics {
        let mut registry = Registry::with_prefix("ssocket");
        let connections = Gauge::default();
        registry.register("connections", "Clients connected now", connections.clone());
        let connections_total = Counter::default();
        registry.register("connections_opened", "Clients that connected since the start", connections_total.clone());
        let messages = Family::<EventLabel, Counter>::default();
        registry.register(
            "messages_received",
            "Messages received, by the plug's event (not_found: no plug answers it)",
            messages.clone(),
        );
        let not_found = messages.get_or_create(&EventLabel { event: "not_found".into() }).clone();
        let replies_family = Family::<TypeLabel, Counter>::default();
        registry.register("replies", "Messages plugs and the server sent to clients, by type", replies_family.clone());
        let replies: Vec<Counter> = (0..=EventType::END.0)
            .map(|t| replies_family.get_or_create(&TypeLabel { r#type: EventType(t).to_string() }).clone())
            .collect();
        let other_replies = replies_family.get_or_create(&TypeLabel { r#type: "other".into() }).clone();
        let errors = Family::<CodeLabel, Counter>::default();
        registry.register(
            "errors",
            "ERROR messages sent to clients, by code (custom: a code a plug chose)",
            errors.clone(),
        );
        let plug_seconds = Family::<PlugLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 4.0, 10))
        });
        registry.register("plug_run_seconds", "How long plug invocations ran, by plug", plug_seconds.clone());
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let reloads = counter(&mut registry, "plug_reloads", "Plug files (re)compiled after a change on disk");
        let compile_errors = counter(&mut registry, "plug_compile_errors", "Plug compiles that failed");
        let rate_limited = counter(&mut registry, "rate_limited", "Messages dropped over limits.messagesPerSecond");
        let slow_client_cutoffs =
            counter(&mut registry, "slow_client_cutoffs", "Clients cut off because they stopped reading (4008)");
        let queued_bytes = gauge(&mut registry, "outbound_queued_bytes", "Bytes queued for clients, not yet written");
        let timer_ticks_skipped =
            counter(&mut registry, "timer_ticks_skipped", "INIT timer ticks skipped: the last run was still going");
        let egress = Family::<StatusLabel, Counter>::default();
        registry.register(
            "http_egress_requests",
            "http:: requests from plugs, by HTTP status or failure (denied, timeout, failed, too_large)",
            egress.clone(),
        );
        let in_flight = gauge(&mut registry, "plugs_in_flight", "Plug invocations running now");
        let rss = gauge(&mut registry, "resident_memory_bytes", "Resident memory of the process");
        let redis_up = cluster.then(|| gauge(&mut registry, "redis_up", "1 while Redis answers, else 0"));
        let cluster_dropped = cluster.then(|| {
            counter(&mut registry, "cluster_dropped", "Cross-node messages dropped while Redis was unavailable")
        });
        for code in ErrorCode::ALL {
            let _ = errors.get_or_create(&CodeLabel { code: code.as_str().into() });
        }
        Metrics {
            registry,
            connections,
            connections_total,
            messages,
            not_found,
            replies,
            other_replies,
            errors,
            plug_seconds,
            reloads,
            compile_errors,
            rate_limited,
            slow_client_cutoffs,
            queued_bytes,
            timer_ticks_skipped,
            egress,
            in_flight,
            rss,
            redis_up,
            cluster_dropped,
            cluster_dropped_seen: AtomicU64::new(0),
            encoding: Mutex::new(()),
        }
    }

    /// The handles of plug `name` (its messages and run times).
    pub fn plug(&self, name: &str) -> PlugMetrics {
        PlugMetrics {
            messages: self.messages.get_or_create(&EventLabel { event: name.into() }).clone(),
            seconds: self.plug_seconds.get_or_create(&PlugLabel { plug: name.into() }).clone(),
        }
    }

    /// A message for an event no plug answers.
    pub fn not_found(&self) {
        self.not_found.inc();
    }

    /// A message of type `t` sent to a client.
    pub fn reply(&self, t: EventType) {
        self.replies.get(t.0 as usize).unwrap_or(&self.other_replies).inc();
    }

    /// An ERROR's code (one of ours or a plug's); the message itself is
    /// counted by [`Metrics::reply`] where it is sent.
    pub fn error(&self, code: &str) {
        let known = ErrorCode::ALL.iter().any(|c| c.as_str() == code);
        let code = if known { code } else { "custom" };
        self.errors.get_or_create(&CodeLabel { code: code.into() }).inc();
    }

    /// An encoded message sent to a client (its type is byte 4).
    pub fn sent(&self, frame: &[u8]) {
        if let Some(t) = frame.get(4) {
            self.reply(EventType(*t));
        }
    }

    /// An `http::` request's outcome: its status, or how it failed.
    pub fn egress(&self, outcome: &str) {
        self.egress.get_or_create(&StatusLabel { status: outcome.into() }).inc();
    }

    /// The text a scrape answers, with the gauges read from `now`.
    pub fn encode(&self, now: Snapshot) -> String {
        let _one = self.encoding.lock().unwrap_or_else(|e| e.into_inner());
        self.connections.set(now.connections as i64);
        self.queued_bytes.set(now.queued_bytes as i64);
        self.in_flight.set(now.in_flight as i64);
        self.rss.set(rss_bytes().unwrap_or(0) as i64);
        if let Some((up, dropped)) = now.cluster {
            let seen = self.cluster_dropped_seen.swap(dropped, Ordering::SeqCst);
            if let (Some(redis_up), Some(cluster_dropped)) = (&self.redis_up, &self.cluster_dropped) {
                redis_up.set(i64::from(up));
                cluster_dropped.inc_by(dropped.saturating_sub(seen));
            }
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &Metrics) -> String {
        m.encode(Snapshot { connections: 3, queued_bytes: 10, in_flight: 1, cluster: None })
    }

    #[test]
    fn series_stay_bounded_whatever_clients_and_plugs_send() {
        let m = Metrics::new();
        for _ in 0..1000 {
            m.not_found();
        }
        m.plug("echo").messages.inc();
        for code in ["made_up_1", "made_up_2", "limit_exceeded"] {
            m.error(code);
        }
        m.reply(EventType(200));
        let text = scrape(&m);
        assert!(text.contains(r#"ssocket_messages_received_total{event="not_found"} 1000"#), "{text}");
        assert!(text.contains(r#"ssocket_messages_received_total{event="echo"} 1"#), "{text}");
        assert!(text.contains(r#"ssocket_errors_total{code="custom"} 2"#), "{text}");
        assert!(text.contains(r#"ssocket_errors_total{code="limit_exceeded"} 1"#), "{text}");
        assert!(text.contains(r#"ssocket_replies_total{type="other"} 1"#), "{text}");

        assert!(text.contains("ssocket_connections 3"), "{text}");
        assert!(!text.contains("made_up"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn plug_run_times_are_a_histogram() {
        let m = Metrics::new();
        let p = m.plug("slow");
        p.seconds.observe(0.0001);
        p.seconds.observe(2.0);
        let text = scrape(&m);
        assert!(text.contains(r#"ssocket_plug_run_seconds_count{plug="slow"} 2"#), "{text}");
        assert!(text.contains(r#"ssocket_plug_run_seconds_bucket{le="0.0002",plug="slow"} 1"#), "{text}");
    }

    #[test]
    fn cluster_drops_add_up_across_scrapes() {
        let m = Metrics::for_cluster();
        m.encode(Snapshot { connections: 0, queued_bytes: 0, in_flight: 0, cluster: Some((false, 5)) });
        let text = m.encode(Snapshot { connections: 0, queued_bytes: 0, in_flight: 0, cluster: Some((true, 7)) });
        assert!(text.contains("ssocket_cluster_dropped_total 7"), "{text}");
        assert!(text.contains("ssocket_redis_up 1"), "{text}");
        let single = scrape(&Metrics::new());
        assert!(
            !single.contains("redis_up") && !single.contains("cluster_dropped"),
            "a single node has no Redis: {single}"
        );
    }
}
