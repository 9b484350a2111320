//! Percentile summaries of measured durations.

use std::fmt;
use std::time::Duration;

pub struct Summary {
    pub count: usize,
    pub min: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// None when there is nothing to summarise.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        Some(Summary {
            count: sorted.len(),
            min,
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max,
        })
    }
}

/// Nearest-rank percentile of sorted, non-empty samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Percentiles of samples in microseconds (sorts them); zeros when empty.
pub fn micros_percentiles(samples: &mut [u64], ps: &[f64]) -> Vec<u64> {
    samples.sort_unstable();
    ps.iter()
        .map(|&p| {
            if samples.is_empty() {
                return 0;
            }
            let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} min {} p50 {} p90 {} p99 {} max {}",
            self.count,
            ms(self.min),
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!((s.p50, s.p90, s.p99, s.max), (samples[49], samples[89], samples[98], samples[99]));
        assert!(Summary::of(&[]).is_none());
        let one = Summary::of(&[Duration::from_millis(7)]).unwrap();
        assert_eq!((one.p50, one.p99), (Duration::from_millis(7), Duration::from_millis(7)));
    }
}

/// Errors seen during a run: how many, and the first, to show the user.
#[derive(Default, Debug)]
pub struct Errors {
    pub count: u64,
    pub first: Option<String>,
}

impl Errors {
    /// Count `n` errors; `what` describes them if they are the first.
    pub fn add(&mut self, n: u64, what: impl FnOnce() -> String) {
        self.count += n;
        if self.first.is_none() && n > 0 {
            self.first = Some(what());
        }
    }

    /// The line a scenario's summary ends with when anything failed.
    pub fn first_line(&self) -> String {
        self.first.as_ref().map(|e| format!("\nfirst error: {e}")).unwrap_or_default()
    }

    /// Fold in another task's errors.
    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// What one connection of a load scenario saw: the load generators' tasks
/// each keep one and the scenario folds them together.
#[derive(Default)]
pub struct Tally {
    /// Correct messages received (replies, broadcasts) that count.
    pub count: u64,
    /// Their latencies, µs.
    pub latencies: Vec<u64>,
    /// Wrong, repeated, unexpected or missing messages.
    pub errors: Errors,
}

impl Tally {
    pub fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors.add(1, what);
    }

    /// Fold in another task's tally.
    pub fn merge(&mut self, other: Tally) {
        self.count += other.count;
        self.latencies.extend(other.latencies);
        self.errors.merge(other.errors);
    }
}
