//! The global functions every plug can call without a namespace:
//! `yield_msg`, `broadcast`, `send_to`, `clients`, `sleep`, `unix_time_ms`,
//! and the `EventType::` constants.

use std::time::Duration;

use rhai::{Array, Dynamic, Engine, Module, NativeCallContext};

use super::{host, invocation, runtime_error, HostResult};
use crate::protocol::EventType;

pub fn register(engine: &mut Engine) {
    engine.register_static_module("EventType", event_type_module().into());
    host("yield_msg").register_into_engine(engine, |ctx: NativeCallContext, reply: Dynamic| -> HostResult<()> {
        invocation(&ctx, "yield_msg")?.yield_reply(reply, ctx.call_position())
    });
    host("broadcast").register_into_engine(engine, |ctx: NativeCallContext, reply: Dynamic| -> HostResult<i64> {
        invocation(&ctx, "broadcast")?.broadcast(reply, ctx.call_position())
    });
    host("send_to").register_into_engine(
        engine,
        |ctx: NativeCallContext, id: i64, reply: Dynamic| -> HostResult<bool> {
            invocation(&ctx, "send_to")?.send_to(id, reply, ctx.call_position())
        },
    );
    host("clients").register_into_engine(engine, |ctx: NativeCallContext| -> HostResult<Array> {
        invocation(&ctx, "clients")?.clients(ctx.call_position())
    });
    host("sleep").register_into_engine(engine, |ctx: NativeCallContext, ms: i64| -> HostResult<()> {
        sleep_ms(&ctx, ms as f64)
    });
    host("sleep")
        .register_into_engine(engine, |ctx: NativeCallContext, ms: f64| -> HostResult<()> { sleep_ms(&ctx, ms) });
    host("unix_time_ms").register_into_engine(engine, || -> i64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map(|d| d.as_millis() as i64).unwrap_or(0)
    });
}

/// `EventType::MESSAGE` ... `EventType::CUSTOM_5` as integer constants.
fn event_type_module() -> Module {
    let mut module = Module::new();
    for (name, t) in EventType::NAMED {
        module.set_var(name, t.0 as i64);
    }
    module
}

fn sleep_ms(ctx: &NativeCallContext, ms: f64) -> HostResult<()> {
    if !ms.is_finite() || ms < 0.0 {
        return Err(runtime_error(format!("sleep needs a number of milliseconds >= 0, not {ms}"), ctx.call_position()));
    }
    // Huge values sleep "forever" (until cancelled) instead of panicking.
    let duration = Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX);
    invocation(ctx, "sleep")?.sleep(duration)
}
