//! The store in this process's memory: one map behind one mutex, so every
//! operation is atomic, with the bytes it holds counted against
//! `store.maxBytes` and keys with a TTL kept in expiry order.
//!
//! Expired keys vanish at once for every reader (each operation first
//! drops what has expired, oldest first, in time proportional to what it
//! drops), so their bytes are free again before the next write is checked.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ahash::HashMap;

use super::{window, Store, StoreError, Stored};

pub struct MemoryStore {
    /// `store.maxBytes`.
    max_bytes: usize,
    /// A std mutex: held only for map operations, never across an
    /// `.await` or a script call, so no async lock is needed.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Keys plus values (JSON text), summed over every entry.
    bytes: usize,
    /// (expiry, key) of every key with a TTL: the earliest first.
    expiring: BTreeSet<(Instant, String)>,
}

struct Entry {
    data: Data,
    expires: Option<Instant>,
}

enum Data {
    Value(String),
    List(VecDeque<String>),
}

impl Data {
    fn bytes(&self) -> usize {
        match self {
            Data::Value(v) => v.len(),
            Data::List(items) => items.iter().map(String::len).sum(),
        }
    }
}

impl MemoryStore {
    pub fn new(max_bytes: usize) -> MemoryStore {
        MemoryStore { max_bytes, inner: Mutex::new(Inner::default()) }
    }

    /// Bytes held now (keys plus values).
    pub fn bytes(&self) -> usize {
        self.lock(Instant::now()).bytes
    }

    /// The map, with everything expired by `now` dropped.
    fn lock(&self, now: Instant) -> std::sync::MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.expire(now);
        inner
    }

    fn get_at(&self, key: &str, now: Instant) -> Option<Stored> {
        self.lock(now).map.get(key).map(|e| match &e.data {
            Data::Value(v) => Stored::Value(v.clone()),
            Data::List(items) => Stored::List(items.iter().cloned().collect()),
        })
    }

    fn set_at(&self, key: &str, json: String, ttl: Option<Duration>, now: Instant) -> Result<(), StoreError> {
        let mut inner = self.lock(now);
        let old = inner.map.get(key).map_or(0, |e| key.len() + e.data.bytes());
        inner.fits(self.max_bytes, old, key.len() + json.len())?;
        let expires = ttl.and_then(|t| now.checked_add(t));
        inner.put(key, Entry { data: Data::Value(json), expires });
        Ok(())
    }

    fn incr_at(&self, key: &str, by: i64, now: Instant) -> Result<i64, StoreError> {
        let mut inner = self.lock(now);
        let (current, expires) = match inner.map.get(key) {
            None => (0, None),
            Some(Entry { data: Data::Value(v), expires }) => match v.parse::<i64>() {
                Ok(n) => (n, *expires),
                Err(_) => return Err(wrong(key, "incr", "a value that is not an integer", "an integer")),
            },
            Some(Entry { data: Data::List(_), .. }) => return Err(wrong(key, "incr", "a list", "an integer")),
        };
        let next = current.checked_add(by).ok_or_else(|| {
            StoreError::BadArgument(format!("incr would take `{key}` past the integer range ({current} + {by})"))
        })?;
        let text = next.to_string();
        let old = inner.map.get(key).map_or(0, |e| key.len() + e.data.bytes());
        inner.fits(self.max_bytes, old, key.len() + text.len())?;
        inner.put(key, Entry { data: Data::Value(text), expires });
        Ok(next)
    }

    fn push_at(&self, key: &str, json: String, max_len: usize, now: Instant) -> Result<usize, StoreError> {
        let mut inner = self.lock(now);
        let added = json.len();
        let (old, dropped) = match inner.map.get(key) {
            None => (0, 0),
            Some(Entry { data: Data::List(items), .. }) => {
                let keep_old = max_len - 1; // the new item takes one place
                let dropped: usize = items.iter().take(items.len().saturating_sub(keep_old)).map(String::len).sum();
                (key.len() + items.iter().map(String::len).sum::<usize>(), dropped)
            }
            Some(Entry { data: Data::Value(_), .. }) => return Err(wrong(key, "push", "a value", "a list")),
        };
        let new = if old == 0 { key.len() + added } else { old - dropped + added };
        inner.fits(self.max_bytes, old, new)?;
        inner.bytes = inner.bytes - old + new;
        let empty = || Entry { data: Data::List(VecDeque::new()), expires: None };
        match &mut inner.map.entry(key.to_owned()).or_insert_with(empty).data {
            Data::List(items) => {
                items.push_back(json);
                while items.len() > max_len {
                    items.pop_front();
                }
                Ok(items.len())
            }
            Data::Value(_) => Err(wrong(key, "push", "a value", "a list")), // checked above
        }
    }

    fn range_at(&self, key: &str, start: i64, end: i64, now: Instant) -> Result<Vec<String>, StoreError> {
        let inner = self.lock(now);
        match inner.map.get(key) {
            None => Ok(Vec::new()),
            Some(Entry { data: Data::List(items), .. }) => {
                Ok(items.range(window(items.len(), start, end)).cloned().collect())
            }
            Some(Entry { data: Data::Value(_), .. }) => Err(wrong(key, "range", "a value", "a list")),
        }
    }

    fn keys_at(&self, prefix: &str, limit: usize, now: Instant) -> Vec<String> {
        let inner = self.lock(now);
        let mut keys: Vec<String> = inner.map.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        keys.sort_unstable();
        keys.truncate(limit);
        keys
    }
}

fn wrong(key: &str, op: &'static str, holds: &'static str, wants: &'static str) -> StoreError {
    StoreError::WrongType { key: key.to_owned(), op, holds, wants }
}

impl Inner {
    /// Drop every key whose time has come.
    fn expire(&mut self, now: Instant) {
        while let Some(first) = self.expiring.first() {
            if first.0 > now {
                break;
            }
            let (_, key) = self.expiring.pop_first().expect("just seen");
            if let Some(entry) = self.map.remove(&key) {
                self.bytes -= key.len() + entry.data.bytes();
            }
        }
    }

    /// Whether replacing `old` bytes with `new` keeps the store within `max`.
    fn fits(&self, max: usize, old: usize, new: usize) -> Result<(), StoreError> {
        let after = self.bytes - old + new;
        if new > old && after > max {
            return Err(StoreError::Full { max_bytes: max, used: self.bytes, needed: new - old });
        }
        Ok(())
    }

    /// Insert or replace `key`, keeping the byte count and expiry index.
    fn put(&mut self, key: &str, entry: Entry) {
        self.remove(key);
        self.bytes += key.len() + entry.data.bytes();
        if let Some(at) = entry.expires {
            self.expiring.insert((at, key.to_owned()));
        }
        self.map.insert(key.to_owned(), entry);
    }

    fn remove(&mut self, key: &str) -> bool {
        let Some(old) = self.map.remove(key) else { return false };
        self.bytes -= key.len() + old.data.bytes();
        if let Some(at) = old.expires {
            self.expiring.remove(&(at, key.to_owned()));
        }
        true
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        Ok(self.get_at(key, Instant::now()))
    }

    fn set(&self, key: &str, json: String, ttl: Option<Duration>) -> Result<(), StoreError> {
        self.set_at(key, json, ttl, Instant::now())
    }

    fn del(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.lock(Instant::now()).remove(key))
    }

    fn incr(&self, key: &str, by: i64) -> Result<i64, StoreError> {
        self.incr_at(key, by, Instant::now())
    }

    fn push(&self, key: &str, json: String, max_len: usize) -> Result<usize, StoreError> {
        self.push_at(key, json, max_len, Instant::now())
    }

    fn range(&self, key: &str, start: i64, end: i64) -> Result<Vec<String>, StoreError> {
        self.range_at(key, start, end, Instant::now())
    }

    fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self.keys_at(prefix, limit, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ErrorCode;
    use std::sync::Arc;

    fn value(s: &str) -> Option<Stored> {
        Some(Stored::Value(s.to_owned()))
    }

    #[test]
    fn set_get_del() {
        let s = MemoryStore::new(1 << 20);
        assert_eq!(s.get("a").unwrap(), None);
        s.set("a", "1".into(), None).unwrap();
        s.set("a", r#"{"x":2}"#.into(), None).unwrap();
        assert_eq!(s.get("a").unwrap(), value(r#"{"x":2}"#));
        assert_eq!(s.bytes(), 1 + 7);
        assert!(s.del("a").unwrap());
        assert!(!s.del("a").unwrap());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn keys_expire_at_their_ttl() {
        let s = MemoryStore::new(1 << 20);
        let t0 = Instant::now();
        s.set_at("short", "1".into(), Some(Duration::from_millis(10)), t0).unwrap();
        s.set_at("long", "2".into(), Some(Duration::from_millis(1000)), t0).unwrap();
        s.set_at("forever", "3".into(), None, t0).unwrap();
        let later = t0 + Duration::from_millis(10);
        assert_eq!(s.get_at("short", later), None, "gone at its TTL");
        assert_eq!(s.keys_at("", 10, later), vec!["forever", "long"]);
        assert_eq!(s.lock(later).bytes, "long".len() + 1 + "forever".len() + 1, "its bytes are free");
        // A later set without a TTL keeps the key forever; one with a TTL
        // replaces the old expiry.
        s.set_at("long", "4".into(), None, later).unwrap();
        s.set_at("forever", "5".into(), Some(Duration::from_millis(5)), later).unwrap();
        let much_later = t0 + Duration::from_secs(10);
        assert_eq!(s.get_at("long", much_later), value("4"));
        assert_eq!(s.get_at("forever", much_later), None);
        assert!(s.lock(much_later).expiring.is_empty());
    }

    #[test]
    fn incr_counts_from_zero_keeps_ttl_and_refuses_other_values() {
        let s = MemoryStore::new(1 << 20);
        let t0 = Instant::now();
        assert_eq!(s.incr_at("n", 1, t0).unwrap(), 1);
        assert_eq!(s.incr_at("n", -11, t0).unwrap(), -10);
        s.set_at("t", "5".into(), Some(Duration::from_millis(50)), t0).unwrap();
        assert_eq!(s.incr_at("t", 1, t0).unwrap(), 6);
        assert_eq!(s.get_at("t", t0 + Duration::from_millis(50)), None, "incr kept the TTL");
        s.set_at("s", "\"text\"".into(), None, t0).unwrap();
        assert_eq!(s.incr_at("s", 1, t0).unwrap_err().code(), ErrorCode::WrongType);
        s.set_at("f", "1.5".into(), None, t0).unwrap();
        assert_eq!(s.incr_at("f", 1, t0).unwrap_err().code(), ErrorCode::WrongType);
        s.set_at("max", i64::MAX.to_string(), None, t0).unwrap();
        assert_eq!(s.incr_at("max", 1, t0).unwrap_err().code(), ErrorCode::BadArgument);
        s.push_at("l", "1".into(), 3, t0).unwrap();
        assert_eq!(s.incr_at("l", 1, t0).unwrap_err().code(), ErrorCode::WrongType);
    }

    #[test]
    fn push_keeps_the_last_items_and_range_reads_them() {
        let s = MemoryStore::new(1 << 20);
        for i in 0..5 {
            s.push("l", i.to_string(), 3).unwrap();
        }
        assert_eq!(s.range("l", 0, -1).unwrap(), vec!["2", "3", "4"]);
        assert_eq!(s.range("l", -1, -1).unwrap(), vec!["4"]);
        assert_eq!(s.range("l", 5, 10).unwrap(), Vec::<String>::new(), "out of bounds is empty");
        assert_eq!(s.range("missing", 0, -1).unwrap(), Vec::<String>::new());
        assert_eq!(s.get("l").unwrap(), Some(Stored::List(vec!["2".into(), "3".into(), "4".into()])));
        assert_eq!(s.bytes(), 1 + 3);
        assert_eq!(s.push("l", "5".into(), 1).unwrap(), 1, "a smaller max_len trims more");
        assert_eq!(s.range("l", 0, -1).unwrap(), vec!["5"]);
        s.set("v", "1".into(), None).unwrap();
        assert_eq!(s.push("v", "1".into(), 3).unwrap_err().code(), ErrorCode::WrongType);
        assert_eq!(s.range("v", 0, 1).unwrap_err().code(), ErrorCode::WrongType);
    }

    #[test]
    fn writes_past_max_bytes_are_refused_and_change_nothing() {
        let s = MemoryStore::new(10);
        s.set("k", "12345678".into(), None).unwrap(); // 9 bytes
        let err = s.set("j", "1".into(), None).unwrap_err();
        assert_eq!((err.code(), err.limit()), (ErrorCode::LimitExceeded, Some("store.maxBytes")));
        assert!(err.to_string().contains("store.maxBytes is 10 bytes"), "{err}");
        assert_eq!(s.get("j").unwrap(), None);
        s.set("k", "1".into(), None).unwrap(); // shrinking is fine
        assert_eq!(s.bytes(), 2);
        assert_eq!(s.push("l", "1234567".into(), 10).unwrap(), 1);
        assert_eq!(s.push("l", "1".into(), 10).unwrap_err().code(), ErrorCode::LimitExceeded);
        assert_eq!(s.push("l", "1234567".into(), 1).unwrap(), 1, "a push that trims as much as it adds fits");
        assert!(s.del("l").unwrap());
        assert_eq!(s.bytes(), 2);
    }

    #[test]
    fn keys_by_prefix_sorted_and_capped() {
        let s = MemoryStore::new(1 << 20);
        for k in ["b:2", "a:1", "b:1", "c"] {
            s.set(k, "0".into(), None).unwrap();
        }
        assert_eq!(s.keys("b:", 10).unwrap(), vec!["b:1", "b:2"]);
        assert_eq!(s.keys("", 2).unwrap(), vec!["a:1", "b:1"]);
    }

    #[test]
    fn incr_is_atomic_across_threads() {
        let s = Arc::new(MemoryStore::new(1 << 20));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.incr("n", 1).unwrap();
                        s.push("l", "1".into(), 100).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.get("n").unwrap(), value("8000"));
        assert_eq!(s.range("l", 0, -1).unwrap().len(), 100);
        assert_eq!(s.bytes(), 1 + 4 + 1 + 100);
    }
}
