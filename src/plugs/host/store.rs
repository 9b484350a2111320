//! `store::` (SPEC 9.1): the server-wide key/value store, the same for
//! every plug, callback and timer, and kept across plug reloads.
//!
//! Values go in as JSON (`plugs::values`): anything that maps to JSON, and
//! a clear `bad_argument` error for what does not (a function pointer).
//! Every failure is a catchable host error with a stable code.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, ImmutableString, Module, NativeCallContext};

use super::{host, host_error, HostResult};
use crate::plugs::values::{from_json, to_json};
use crate::store::{self, Store, StoreError, Stored};

pub fn register(engine: &mut Engine, store: Arc<dyn Store>) {
    let mut m = Module::new();
    let s = store.clone();
    host("get").set_into_module(&mut m, move |ctx: NativeCallContext, key: ImmutableString| -> HostResult<Dynamic> {
        let found = call(&ctx, "get", s.blocks(), || {
            store::check_key(&key)?;
            s.get(&key)
        })?;
        Ok(match found {
            None => Dynamic::UNIT,
            Some(Stored::Value(json)) => from_json(&json),
            Some(Stored::List(items)) => Dynamic::from_array(items.iter().map(|j| from_json(j)).collect()),
        })
    });
    let s = store.clone();
    host("set").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, key: ImmutableString, value: Dynamic| -> HostResult<()> {
            call(&ctx, "set", s.blocks(), || {
                store::check_key(&key)?;
                s.set(&key, json(&value)?, None)
            })
        },
    );
    let s = store.clone();
    host("set").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, key: ImmutableString, value: Dynamic, ttl_ms: i64| -> HostResult<()> {
            call(&ctx, "set", s.blocks(), || {
                store::check_key(&key)?;
                let ttl = store::ttl(ttl_ms)?;
                s.set(&key, json(&value)?, Some(ttl))
            })
        },
    );
    let s = store.clone();
    host("del").set_into_module(&mut m, move |ctx: NativeCallContext, key: ImmutableString| -> HostResult<bool> {
        call(&ctx, "del", s.blocks(), || {
            store::check_key(&key)?;
            s.del(&key)
        })
    });
    let s = store.clone();
    host("incr").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, key: ImmutableString, by: i64| -> HostResult<i64> {
            call(&ctx, "incr", s.blocks(), || {
                store::check_key(&key)?;
                s.incr(&key, by)
            })
        },
    );
    let s = store.clone();
    host("incr").set_into_module(&mut m, move |ctx: NativeCallContext, key: ImmutableString| -> HostResult<i64> {
        call(&ctx, "incr", s.blocks(), || {
            store::check_key(&key)?;
            s.incr(&key, 1)
        })
    });
    let s = store.clone();
    host("push").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, key: ImmutableString, value: Dynamic, max_len: i64| -> HostResult<i64> {
            call(&ctx, "push", s.blocks(), || {
                store::check_key(&key)?;
                let max_len = store::max_len(max_len)?;
                s.push(&key, json(&value)?, max_len).map(|n| n as i64)
            })
        },
    );
    let s = store.clone();
    host("range").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, key: ImmutableString, start: i64, end: i64| -> HostResult<Array> {
            let items = call(&ctx, "range", s.blocks(), || {
                store::check_key(&key)?;
                s.range(&key, start, end)
            })?;
            Ok(items.iter().map(|j| from_json(j)).collect())
        },
    );
    let s = store.clone();
    host("keys").set_into_module(&mut m, move |ctx: NativeCallContext, prefix: ImmutableString| -> HostResult<Array> {
        let keys = call(&ctx, "keys", s.blocks(), || s.keys(&prefix, store::MAX_KEYS))?;
        Ok(keys.into_iter().map(Dynamic::from).collect())
    });
    let s = store;
    host("keys").set_into_module(&mut m, move |ctx: NativeCallContext| -> HostResult<Array> {
        let keys = call(&ctx, "keys", s.blocks(), || s.keys("", store::MAX_KEYS))?;
        Ok(keys.into_iter().map(Dynamic::from).collect())
    });
    engine.register_static_module("store", m.into());
}

/// A value as JSON, or `bad_argument` naming what has no JSON form.
fn json(value: &Dynamic) -> Result<String, StoreError> {
    to_json(value).map_err(|e| StoreError::BadArgument(e.to_string()))
}

/// Run one store operation; a failure becomes a host error naming it. An
/// operation that waits on the network waits off the async workers.
fn call<T>(
    ctx: &NativeCallContext,
    op: &str,
    blocks: bool,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> HostResult<T> {
    let result = match crate::plugs::invoke::current() {
        Some(inv) if blocks => inv.wait(|_, _| f()),
        _ => f(),
    };
    result.map_err(|err| {
        let mut context = serde_json::json!({});
        if let Some(limit) = err.limit() {
            context["limit"] = limit.into();
        }
        host_error(err.code(), &format!("store::{op}: {err}"), context, ctx.call_position())
    })
}
