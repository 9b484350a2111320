//! `conn::` (SPEC 9.2): values kept per connection, for the client the
//! run is for: the sender, or in `on_connect` / `on_disconnect` the client
//! concerned. Later messages of the same connection see them; they go
//! with the connection. Bounded by `limits.connStateBytes`.

use rhai::{Dynamic, Engine, ImmutableString, Map, Module, NativeCallContext};

use super::{host, host_error, invocation, HostResult};
use crate::client::ConnState;
use crate::errors::ErrorCode;
use crate::plugs::values::{from_json, to_json};

pub fn register(engine: &mut Engine, max_bytes: usize) {
    let mut m = Module::new();
    host("get").set_into_module(&mut m, |ctx: NativeCallContext, key: ImmutableString| -> HostResult<Dynamic> {
        with_state(&ctx, "get", |state| Ok(state.get(&key).map_or(Dynamic::UNIT, |json| from_json(&json))))
    });
    host("set").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, key: ImmutableString, value: Dynamic| -> HostResult<()> {
            let pos = ctx.call_position();
            let json = to_json(&value)
                .map_err(|e| host_error(ErrorCode::BadArgument, &format!("conn::set: {e}"), Default::default(), pos))?;
            with_state(&ctx, "set", |state| {
                state.set(&key, json, max_bytes).map_err(|err| {
                    let context = match err.code() {
                        ErrorCode::LimitExceeded => serde_json::json!({"limit": "limits.connStateBytes"}),
                        _ => serde_json::json!({}),
                    };
                    host_error(err.code(), &format!("conn::set: {err}"), context, pos)
                })
            })
        },
    );
    host("remove").set_into_module(&mut m, |ctx: NativeCallContext, key: ImmutableString| -> HostResult<Dynamic> {
        with_state(&ctx, "remove", |state| Ok(state.remove(&key).map_or(Dynamic::UNIT, |json| from_json(&json))))
    });
    host("all").set_into_module(&mut m, |ctx: NativeCallContext| -> HostResult<Map> {
        with_state(&ctx, "all", |state| {
            Ok(state.all().into_iter().map(|(k, json)| (k.into(), from_json(&json))).collect())
        })
    });
    host("id").set_into_module(&mut m, |ctx: NativeCallContext| -> HostResult<i64> {
        with_state(&ctx, "id", |_| Ok(()))?;
        Ok(invocation(&ctx, "conn::id")?.client_id() as i64)
    });
    host("user").set_into_module(&mut m, |ctx: NativeCallContext| -> HostResult<Dynamic> {
        with_state(&ctx, "user", |_| Ok(()))?;
        Ok(invocation(&ctx, "conn::user")?.user())
    });
    engine.register_static_module("conn", m.into());
}

/// Run `f` on the state of the client the current run is for.
fn with_state<T>(ctx: &NativeCallContext, op: &str, f: impl FnOnce(&ConnState) -> HostResult<T>) -> HostResult<T> {
    let inv = invocation(ctx, &format!("conn::{op}"))?;
    match inv.conn_state() {
        Some(state) => f(state),
        None => Err(host_error(
            ErrorCode::NoClient,
            &format!("conn::{op}: this code runs for no client (INIT or a timer), so it has no connection state"),
            Default::default(),
            ctx.call_position(),
        )),
    }
}
