//! How a load scenario reports: a human summary, and with `--json` exactly
//! one JSON object on stdout (the summary then goes to stderr, so stdout
//! stays machine-readable).

use serde_json::Value;

pub fn emit(json: bool, human: &str, value: Value) {
    if json {
        eprintln!("{human}");
        println!("{value}");
    } else {
        println!("{human}");
    }
}

/// A rate per second, 0 for an empty window.
pub fn per_sec(count: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        count / secs
    } else {
        0.0
    }
}

/// Round for JSON: rates and cores to three decimals.
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A finite number above zero (a usable duration or rate).
pub fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}
