//! Metrics (SPEC 12): the server's counts, served at `GET /metrics` in
//! the OpenMetrics text format that Prometheus scrapes, and the periodic
//! memory line (`memoryMetrics`, [`memory`]).
//!
//! Label values come only from what the server itself knows: plug names
//! (the plugs folder's files), event types, error codes of
//! [`crate::errors::ErrorCode`], HTTP statuses. An event no plug answers is
//! counted as `not_found`, and a code a plug made up as `custom`, so no
//! client or plug can make the series grow without bound.
//!
//! Counting is on the echo path, so the counts are plain atomics kept side
//! by side (one plug's messages and run-time histogram share two cache
//! lines; replies by type live in this struct), not prometheus-client's
//! metric objects: those are each their own allocation and its histogram
//! takes a mutex, which cost the echo benchmark ~5% (BENCHMARKS.md,
//! "Metrics"). A scrape reads the atomics into a fresh prometheus-client
//! registry, which does the encoding.

mod memory;

pub use memory::{report, rss_bytes, run};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::errors::ErrorCode;
use crate::protocol::EventType;

/// The content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// False in a build with `RUSTFLAGS="--cfg ssocket_metrics_off"`: the
/// hot path's counting compiled out, for `bench/metrics.sh` to measure
/// what it costs. Never set in a real build.
const COUNTING: bool = !cfg!(ssocket_metrics_off);

/// Upper bounds of the run-time buckets: 50 µs × 4^k, up to 13 s.
const BUCKETS: usize = 10;
const FIRST_BUCKET_NANOS: u64 = 50_000;

/// A count that other parts of the server bump (`inc`) and a scrape reads.
#[derive(Clone, Debug, Default)]
pub struct Count(Arc<AtomicU64>);

impl Count {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One plug's messages and run times, kept with the compiled plug so that
/// counting a message is an atomic addition, not a label lookup.
#[derive(Debug, Default)]
pub struct PlugStats {
    messages: AtomicU64,
    nanos: AtomicU64,
    /// Runs per bucket (not cumulative); the last is "over 13 s".
    buckets: [AtomicU64; BUCKETS + 1],
}

/// What a plug holds: its stats, shared with the scrape.
pub type PlugMetrics = Arc<PlugStats>;

impl PlugStats {
    /// A message for this plug arrived.
    pub fn message(&self) {
        if !COUNTING {
            return;
        }
        self.messages.fetch_add(1, Ordering::Relaxed);
    }

    /// One run of the plug took `took`.
    pub fn ran(&self, took: Duration) {
        if !COUNTING {
            return;
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.buckets[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
    }
}

/// The bucket of a run of `nanos`: the first whose bound it does not pass.
fn bucket(nanos: u64) -> usize {
    let mut bound = FIRST_BUCKET_NANOS;
    for i in 0..BUCKETS {
        if nanos <= bound {
            return i;
        }
        bound *= 4;
    }
    BUCKETS
}

/// Every count the server exports. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Metrics {
    /// Replies by type byte (0..=END), then "other".
    replies: [AtomicU64; EventType::END.0 as usize + 2],
    not_found: AtomicU64,
    /// ERRORs by [`ErrorCode::ALL`]'s order, then "custom".
    errors: Vec<AtomicU64>,
    plugs: Mutex<BTreeMap<String, PlugMetrics>>,
    egress: Mutex<BTreeMap<String, u64>>,
    pub connections_total: Count,
    pub reloads: Count,
    pub compile_errors: Count,
    pub rate_limited: Count,
    /// With `cluster.redis` only: a single node has no Redis to be down.
    cluster: bool,
}

/// What a scrape reads from the server's state.
pub struct Snapshot {
    pub connections: usize,
    pub queued_bytes: usize,
    pub in_flight: usize,
    pub slow_client_cutoffs: u64,
    pub timer_ticks_skipped: u64,
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
        Metrics {
            replies: Default::default(),
            not_found: AtomicU64::new(0),
            errors: (0..=ErrorCode::ALL.len()).map(|_| AtomicU64::new(0)).collect(),
            plugs: Mutex::new(BTreeMap::new()),
            egress: Mutex::new(BTreeMap::new()),
            connections_total: Count::default(),
            reloads: Count::default(),
            compile_errors: Count::default(),
            rate_limited: Count::default(),
            cluster,
        }
    }

    /// The stats of plug `name` (the same for every compile of it).
    pub fn plug(&self, name: &str) -> PlugMetrics {
        let mut plugs = self.plugs.lock().unwrap_or_else(|e| e.into_inner());
        plugs.entry(name.to_owned()).or_default().clone()
    }

    /// A message for an event no plug answers.
    pub fn not_found(&self) {
        self.not_found.fetch_add(1, Ordering::Relaxed);
    }

    /// A message of type `t` sent to a client.
    pub fn reply(&self, t: EventType) {
        if !COUNTING {
            return;
        }
        let other = self.replies.len() - 1;
        self.replies[usize::from(t.0).min(other)].fetch_add(1, Ordering::Relaxed);
    }

    /// An ERROR's code (one of ours or a plug's); the message itself is
    /// counted by [`Metrics::reply`] where it is sent.
    pub fn error(&self, code: &str) {
        let i = ErrorCode::ALL.iter().position(|c| c.as_str() == code).unwrap_or(ErrorCode::ALL.len());
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }

    /// An encoded message sent to a client (its type is byte 4).
    pub fn sent(&self, frame: &[u8]) {
        if let Some(t) = frame.get(4) {
            self.reply(EventType(*t));
        }
    }

    /// An `http::` request's outcome: its status, or how it failed.
    pub fn egress(&self, outcome: &str) {
        let mut egress = self.egress.lock().unwrap_or_else(|e| e.into_inner());
        *egress.entry(outcome.to_owned()).or_default() += 1;
    }

    /// The text a scrape answers, with the gauges read from `now`.
    pub fn encode(&self, now: Snapshot) -> String {
        let count = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut r = Registry::with_prefix("ssocket");
        r.register("connections", "Clients connected now", ConstGauge::new(now.connections as i64));
        let opened = ConstCounter::new(self.connections_total.get());
        r.register("connections_opened", "Clients that connected since the start", opened);
        let plugs: Vec<(String, PlugMetrics)> = {
            let plugs = self.plugs.lock().unwrap_or_else(|e| e.into_inner());
            plugs.iter().map(|(name, stats)| (name.clone(), stats.clone())).collect()
        };
        let mut received: Vec<(String, u64)> = plugs.iter().map(|(n, s)| (n.clone(), count(&s.messages))).collect();
        received.push(("not_found".into(), count(&self.not_found)));
        r.register(
            "messages_received",
            "Messages received, by the plug's event (not_found: no plug answers it)",
            Counters { label: "event", values: received },
        );
        let replies = (0..self.replies.len())
            .map(|t| {
                let name = match t {
                    t if t == self.replies.len() - 1 => "other".to_owned(),
                    t if t == usize::from(EventType::END.0) => "END".to_owned(),
                    t => EventType(t as u8).to_string(),
                };
                (name, count(&self.replies[t]))
            })
            .collect();
        r.register(
            "replies",
            "Messages plugs and the server sent to clients, by type (a broadcast or room send counts once)",
            Counters { label: "type", values: replies },
        );
        let errors = ErrorCode::ALL
            .iter()
            .map(|c| c.as_str().to_owned())
            .chain(["custom".to_owned()])
            .zip(self.errors.iter().map(count))
            .collect();
        r.register(
            "errors",
            "ERROR messages sent to clients, by code (custom: a code a plug chose)",
            Counters { label: "code", values: errors },
        );
        r.register("plug_run_seconds", "How long plug invocations ran, by plug", RunTimes(plugs));
        r.register("plug_reloads", "Plug files (re)compiled after a change on disk", self.reloads.counter());
        r.register("plug_compile_errors", "Plug compiles that failed", self.compile_errors.counter());
        r.register("rate_limited", "Messages dropped over limits.messagesPerSecond", self.rate_limited.counter());
        r.register(
            "slow_client_cutoffs",
            "Clients cut off because they stopped reading (4008)",
            ConstCounter::new(now.slow_client_cutoffs),
        );
        r.register(
            "outbound_queued_bytes",
            "Bytes queued for clients, not yet written",
            ConstGauge::new(now.queued_bytes as i64),
        );
        r.register(
            "timer_ticks_skipped",
            "INIT timer ticks skipped: the last run was still going",
            ConstCounter::new(now.timer_ticks_skipped),
        );
        let egress =
            self.egress.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect();
        r.register(
            "http_egress_requests",
            "http:: requests from plugs, by HTTP status or failure (denied, timeout, failed, too_large)",
            Counters { label: "status", values: egress },
        );
        r.register("plugs_in_flight", "Plug invocations running now", ConstGauge::new(now.in_flight as i64));
        let rss = rss_bytes().unwrap_or(0) as i64;
        r.register("resident_memory_bytes", "Resident memory of the process", ConstGauge::new(rss));
        if let (true, Some((up, dropped))) = (self.cluster, now.cluster) {
            r.register("redis_up", "1 while Redis answers, else 0", ConstGauge::new(i64::from(up)));
            r.register(
                "cluster_dropped",
                "Cross-node messages dropped while Redis was unavailable",
                ConstCounter::new(dropped),
            );
        }
        let mut out = String::new();
        let _ = encode(&mut out, &r);
        out
    }
}

impl Count {
    fn counter(&self) -> ConstCounter {
        ConstCounter::new(self.get())
    }
}

/// A counter family read at scrape time: one label, a value per label value.
#[derive(Debug)]
struct Counters {
    label: &'static str,
    values: Vec<(String, u64)>,
}

impl EncodeMetric for Counters {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (value, n) in &self.values {
            let labels = [(self.label, value.as_str())];
            ConstCounter::new(*n).encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// The run-time histograms, one per plug.
#[derive(Debug)]
struct RunTimes(Vec<(String, PlugMetrics)>);

impl EncodeMetric for RunTimes {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (plug, stats) in &self.0 {
            let labels = [("plug", plug.as_str())];
            let mut bound = FIRST_BUCKET_NANOS as f64 / 1e9;
            let mut buckets = Vec::with_capacity(BUCKETS + 1);
            for (i, n) in stats.buckets.iter().enumerate() {
                let upper = if i == BUCKETS { f64::INFINITY } else { bound };
                buckets.push((upper, n.load(Ordering::Relaxed)));
                bound *= 4.0;
            }
            // Count from the buckets, so a run landing mid-scrape cannot
            // make the count disagree with them.
            let runs = buckets.iter().map(|(_, n)| n).sum();
            let sum = stats.nanos.load(Ordering::Relaxed) as f64 / 1e9;
            encoder.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, runs, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            connections: 3,
            queued_bytes: 10,
            in_flight: 1,
            slow_client_cutoffs: 4,
            timer_ticks_skipped: 5,
            cluster: None,
        }
    }

    fn scrape(m: &Metrics) -> String {
        m.encode(snapshot())
    }

    #[test]
    fn series_stay_bounded_whatever_clients_and_plugs_send() {
        let m = Metrics::new();
        for _ in 0..1000 {
            m.not_found();
        }
        m.plug("echo").message();
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
        assert!(text.contains("ssocket_outbound_queued_bytes 10"), "{text}");
        assert!(text.contains("ssocket_plugs_in_flight 1"), "{text}");
        assert!(text.contains("ssocket_slow_client_cutoffs_total 4"), "{text}");
        assert!(text.contains("ssocket_timer_ticks_skipped_total 5"), "{text}");
        assert!(!text.contains("made_up"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn plug_run_times_are_a_histogram() {
        let m = Metrics::new();
        let p = m.plug("slow");
        p.ran(Duration::from_micros(100));
        p.ran(Duration::from_secs(2));
        p.ran(Duration::from_secs(100));
        let text = scrape(&m);
        assert!(text.contains(r#"ssocket_plug_run_seconds_count{plug="slow"} 3"#), "{text}");
        assert!(text.contains(r#"ssocket_plug_run_seconds_sum{plug="slow"} 102.0001"#), "{text}");
        assert!(text.contains(r#"ssocket_plug_run_seconds_bucket{le="0.00005",plug="slow"} 0"#), "{text}");
        assert!(text.contains(r#"ssocket_plug_run_seconds_bucket{le="0.0002",plug="slow"} 1"#), "{text}");
        assert!(text.contains(r#"ssocket_plug_run_seconds_bucket{le="3.2768",plug="slow"} 2"#), "{text}");
        assert!(text.contains(r#"ssocket_plug_run_seconds_bucket{le="13.1072",plug="slow"} 2"#), "{text}");
        assert!(text.contains(r#"ssocket_plug_run_seconds_bucket{le="+Inf",plug="slow"} 3"#), "{text}");
    }

    #[test]
    fn run_times_fall_in_the_first_bucket_they_do_not_pass() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(50_000), 0);
        assert_eq!(bucket(50_001), 1);
        assert_eq!(bucket(200_000), 1);
        assert_eq!(bucket(13_107_200_000), BUCKETS - 1);
        assert_eq!(bucket(13_107_200_001), BUCKETS);
        assert_eq!(bucket(u64::MAX), BUCKETS);
    }

    #[test]
    fn redis_state_only_with_a_cluster() {
        let m = Metrics::for_cluster();
        let text = m.encode(Snapshot { cluster: Some((false, 5)), ..snapshot() });
        assert!(text.contains("ssocket_redis_up 0"), "{text}");
        let text = m.encode(Snapshot { cluster: Some((true, 7)), ..snapshot() });
        assert!(text.contains("ssocket_cluster_dropped_total 7"), "{text}");
        assert!(text.contains("ssocket_redis_up 1"), "{text}");
        let single = scrape(&Metrics::new());
        assert!(
            !single.contains("redis_up") && !single.contains("cluster_dropped"),
            "a single node has no Redis: {single}"
        );
    }
}
