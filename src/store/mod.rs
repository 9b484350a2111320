//! `store::`, the server-wide key/value store plugs share (SPEC 9.1),
//! behind one small trait so it can live in memory ([`memory`]) or, with
//! several nodes, on Redis.
//!
//! Values cross the trait as JSON text (`plugs::values` converts), so an
//! implementation never sees Rhai types and every backend stores the same
//! bytes. Each operation is atomic with respect to the others. What a
//! caller may pass (key length, TTL, list length) is checked here, once,
//! before any backend sees it.

pub mod memory;
pub mod redis;

use std::time::Duration;

use crate::errors::ErrorCode;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most keys `keys(prefix)` returns.
pub const MAX_KEYS: usize = 10_000;

/// What a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A value, as JSON text.
    Value(String),
    /// A list made by `push`, oldest first, each item JSON text.
    List(Vec<String>),
}

/// The store's operations. Keys are checked by [`check_key`] first;
/// values are JSON text.
pub trait Store: Send + Sync {
    /// The value or list at `key`; None when missing or expired.
    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError>;
    /// Replace `key` with a value, expiring after `ttl` if given (no TTL
    /// clears an earlier one).
    fn set(&self, key: &str, json: String, ttl: Option<Duration>) -> Result<(), StoreError>;
    /// Remove `key`; whether it existed.
    fn del(&self, key: &str) -> Result<bool, StoreError>;
    /// Add `by` to the integer at `key` (missing: 0); the new value. Keeps
    /// the key's TTL.
    fn incr(&self, key: &str, by: i64) -> Result<i64, StoreError>;
    /// Append to the list at `key` (missing: a new list), keeping its last
    /// `max_len` items; the new length. Keeps the key's TTL.
    fn push(&self, key: &str, json: String, max_len: usize) -> Result<usize, StoreError>;
    /// Items `start..=end` of the list at `key`, Redis LRANGE style:
    /// negative indexes count from the end, out-of-range ones are clamped.
    fn range(&self, key: &str, start: i64, end: i64) -> Result<Vec<String>, StoreError>;
    /// Keys starting with `prefix`, sorted, at most `limit`.
    fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Whether operations wait on the network (then a plug running on an
    /// async worker steps off it first).
    fn blocks(&self) -> bool {
        false
    }
}

/// Why an operation failed. Each becomes a catchable error in the plug
/// with a stable code ([`StoreError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store.maxBytes is {max_bytes} bytes and the store holds {used}; this write needs {needed} more")]
    Full { max_bytes: usize, used: usize, needed: usize },
    #[error("`{key}` holds {holds}, and {op} needs {wants}")]
    WrongType { key: String, op: &'static str, holds: &'static str, wants: &'static str },
    #[error("{0}")]
    BadArgument(String),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Full { .. } => ErrorCode::LimitExceeded,
            StoreError::WrongType { .. } => ErrorCode::WrongType,
            StoreError::BadArgument(_) => ErrorCode::BadArgument,
            StoreError::Unavailable(_) => ErrorCode::StoreUnavailable,
        }
    }

    /// The configuration key of the limit it hit, if it is one.
    pub fn limit(&self) -> Option<&'static str> {
        matches!(self, StoreError::Full { .. }).then_some("store.maxBytes")
    }
}

/// Keys are 1 to [`MAX_KEY_BYTES`] bytes.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::BadArgument("a store key cannot be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::BadArgument(format!(
            "a store key is at most {MAX_KEY_BYTES} bytes; this one is {}",
            key.len()
        )));
    }
    Ok(())
}

/// A TTL in ms must be at least 1.
pub fn ttl(ms: i64) -> Result<Duration, StoreError> {
    if ms < 1 {
        return Err(StoreError::BadArgument(format!(
            "a TTL is a number of milliseconds of at least 1, not {ms} (to keep a key forever, set it without a TTL)"
        )));
    }
    Ok(Duration::from_millis(ms as u64))
}

/// A list's `max_len` must be at least 1.
pub fn max_len(n: i64) -> Result<usize, StoreError> {
    if n < 1 {
        return Err(StoreError::BadArgument(format!(
            "push keeps the last `max_len` items; max_len must be at least 1, not {n}"
        )));
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The `start..=end` window of a list of `len` items, LRANGE style.
pub fn window(len: usize, start: i64, end: i64) -> std::ops::Range<usize> {
    let len_i = len as i64;
    let start = if start < 0 { (start + len_i).max(0) } else { start };
    let end = if end < 0 { end + len_i } else { end.min(len_i - 1) };
    if start > end || start >= len_i {
        return 0..0;
    }
    start as usize..end as usize + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_follows_lrange() {
        assert_eq!(window(5, 0, -1), 0..5);
        assert_eq!(window(5, -2, -1), 3..5);
        assert_eq!(window(5, 1, 2), 1..3);
        assert_eq!(window(5, 3, 100), 3..5, "end clamps");
        assert_eq!(window(5, -100, 1), 0..2, "start clamps");
        assert_eq!(window(5, 5, 10), 0..0, "start past the end");
        assert_eq!(window(5, 3, 2), 0..0, "start after end");
        assert_eq!(window(5, 0, -6), 0..0);
        assert_eq!(window(0, 0, -1), 0..0, "empty list");
        assert_eq!(window(5, i64::MIN, i64::MAX), 0..5);
    }

    #[test]
    fn arguments_are_checked_with_clear_messages() {
        assert!(check_key("k").is_ok());
        assert!(check_key("").unwrap_err().to_string().contains("empty"));
        assert!(check_key(&"k".repeat(1025)).unwrap_err().to_string().contains("at most 1024 bytes"));
        assert!(check_key(&"k".repeat(1024)).is_ok());
        for bad in [0, -5] {
            let err = ttl(bad).unwrap_err();
            assert_eq!(err.code(), ErrorCode::BadArgument);
            assert!(err.to_string().contains(&format!("not {bad}")), "{err}");
        }
        assert_eq!(ttl(1).unwrap(), Duration::from_millis(1));
        assert_eq!(max_len(0).unwrap_err().code(), ErrorCode::BadArgument);
        assert_eq!(max_len(3).unwrap(), 3);
    }
}
