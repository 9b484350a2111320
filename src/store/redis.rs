//! The store on Redis (`cluster.redis` set), with the memory store's
//! semantics: values are the same JSON text under `PREFIX:s:KEY`, lists
//! are Redis lists, `incr` is `INCRBY` (integers are their own JSON), TTLs
//! are Redis TTLs, and `push` appends and trims in one script, so every
//! operation is atomic across nodes.
//!
//! What differs: `store.maxBytes` is not enforced (bound Redis itself with
//! its `maxmemory`), and while Redis cannot be reached every operation
//! fails with `store_unavailable`.

use std::time::Duration;

use crate::cluster::{Cluster, ClusterError};

use super::{Store, StoreError, Stored};

/// About 3,000 years: the longest TTL passed to Redis.
const MAX_TTL_MS: u128 = 100_000_000_000_000;

pub struct RedisStore {
    cluster: Cluster,
}

/// `get`: a value, a list, or nothing, in one round trip.
const GET: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'string' then return {'value', redis.call('GET', KEYS[1])} end
if t == 'list' then return {'list', redis.call('LRANGE', KEYS[1], 0, -1)} end
if t == 'none' then return {'none'} end
return {'other', t}
";

/// `push`: append, keep the items from index ARGV[2] (negative: from the
/// end) on, answer the length. The index comes as text from Rust: Lua's
/// numbers would turn a huge one into `-1e+17`, which LTRIM refuses.
const PUSH: &str = r"
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], ARGV[2], -1)
return redis.call('LLEN', KEYS[1])
";

impl RedisStore {
    pub fn new(cluster: Cluster) -> RedisStore {
        RedisStore { cluster }
    }

    fn run<T>(&self, op: &'static str, key: &str, cmd: redis::Cmd) -> Result<T, StoreError>
    where
        T: redis::FromRedisValue + Send + 'static,
    {
        let key = key.to_owned();
        self.cluster.query(move |mut c| async move { cmd.query_async::<T>(&mut c).await }).map_err(|e| match e {
            ClusterError::Down(why) => StoreError::Unavailable(why),
            ClusterError::Refused(why) => wrong_type(op, &key, &why)
                .unwrap_or_else(|| StoreError::BadArgument(format!("{op} `{key}`: Redis refused it: {why}"))),
        })
    }
}

/// Redis's answers for a key of the wrong type or a bad integer, in the
/// store's words.
fn wrong_type(op: &'static str, key: &str, why: &str) -> Option<StoreError> {
    let (holds, wants) = match op {
        "incr" if why.contains("WRONGTYPE") => ("a list", "an integer"),
        "incr" if why.contains("not an integer") => ("a value that is not an integer", "an integer"),
        "incr" if why.contains("overflow") => {
            return Some(StoreError::BadArgument(format!("incr would take `{key}` past the integer range")));
        }
        "push" if why.contains("WRONGTYPE") => ("a value", "a list"),
        "range" if why.contains("WRONGTYPE") => ("a value", "a list"),
        _ => return None,
    };
    Some(StoreError::WrongType { key: key.to_owned(), op, holds, wants })
}

fn cmd(name: &str) -> redis::Cmd {
    redis::cmd(name)
}

impl Store for RedisStore {
    fn blocks(&self) -> bool {
        true
    }

    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let mut c = cmd("EVAL");
        c.arg(GET).arg(1).arg(self.cluster.store_key(key));
        let answer: Vec<redis::Value> = self.run("get", key, c)?;
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            _ => String::new(),
        };
        Ok(match answer.first().map(text).as_deref() {
            Some("value") => answer.get(1).map(|v| Stored::Value(text(v))),
            Some("list") => match answer.get(1) {
                Some(redis::Value::Array(items)) => Some(Stored::List(items.iter().map(text).collect())),
                _ => Some(Stored::List(Vec::new())),
            },
            _ => None,
        })
    }

    fn set(&self, key: &str, json: String, ttl: Option<Duration>) -> Result<(), StoreError> {
        let mut c = cmd("SET");
        c.arg(self.cluster.store_key(key)).arg(json);
        if let Some(ttl) = ttl {
            // Redis refuses an expiry past its clock's range; a TTL of
            // thousands of years means forever, as in the memory store.
            c.arg("PX").arg(ttl.as_millis().min(MAX_TTL_MS) as u64);
        }
        self.run::<()>("set", key, c)
    }

    fn del(&self, key: &str) -> Result<bool, StoreError> {
        let mut c = cmd("DEL");
        c.arg(self.cluster.store_key(key));
        Ok(self.run::<i64>("del", key, c)? > 0)
    }

    fn incr(&self, key: &str, by: i64) -> Result<i64, StoreError> {
        let mut c = cmd("INCRBY");
        c.arg(self.cluster.store_key(key)).arg(by);
        self.run("incr", key, c)
    }

    fn push(&self, key: &str, json: String, max_len: usize) -> Result<usize, StoreError> {
        let mut c = cmd("EVAL");
        let keep_from = -(max_len.min(i64::MAX as usize) as i64);
        c.arg(PUSH).arg(1).arg(self.cluster.store_key(key)).arg(json).arg(keep_from);
        self.run::<i64>("push", key, c).map(|n| n.max(0) as usize)
    }

    fn range(&self, key: &str, start: i64, end: i64) -> Result<Vec<String>, StoreError> {
        // LRANGE is where the memory store's `window` comes from.
        let mut c = cmd("LRANGE");
        c.arg(self.cluster.store_key(key)).arg(start).arg(end);
        self.run("range", key, c)
    }

    fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let strip = self.cluster.store_prefix();
        let pattern = format!("{}*", glob_escape(&self.cluster.store_key(prefix)));
        let found: Vec<String> = self
            .cluster
            .query(move |mut c| async move {
                let mut keys = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await?;
                    keys.extend(batch);
                    cursor = next;
                    if cursor == 0 {
                        return Ok(keys);
                    }
                }
            })
            .map_err(|e| match e {
                ClusterError::Down(why) => StoreError::Unavailable(why),
                ClusterError::Refused(why) => StoreError::BadArgument(format!("keys: Redis refused it: {why}")),
            })?;
        let mut keys: Vec<String> =
            found.into_iter().filter_map(|k| k.strip_prefix(&strip).map(str::to_owned)).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.truncate(limit);
        Ok(keys)
    }
}

/// `text` with Redis glob characters escaped, for `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
        assert_eq!(glob_escape("chat:"), "chat:");
    }

    #[test]
    fn redis_errors_read_as_store_errors() {
        let e = wrong_type("incr", "k", "WRONGTYPE Operation against a key holding the wrong kind of value").unwrap();
        assert_eq!(e.code(), crate::errors::ErrorCode::WrongType);
        let e = wrong_type("incr", "k", "ERR value is not an integer or out of range").unwrap();
        assert!(e.to_string().contains("not an integer"), "{e}");
        let e = wrong_type("incr", "k", "ERR increment or decrement would overflow").unwrap();
        assert_eq!(e.code(), crate::errors::ErrorCode::BadArgument);
        assert!(wrong_type("get", "k", "connection refused").is_none());
    }
}
