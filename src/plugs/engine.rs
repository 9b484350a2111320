//! The one Rhai engine every plug runs on, built once at start-up, and the
//! host API it offers scripts.
//!
//! Host functions find the invocation they serve as the thread's current
//! one (set by [`crate::plugs::invoke`] for the length of a run), so a
//! script can write `yield_msg(x)` as a plain call, `yield_msg.call(x)` on
//! the parameter, or call it from helpers and closures: all reach the same
//! invocation. Hooks (`on_progress`, `print`) find it the same way.

use std::sync::Arc;
use std::time::Duration;

use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FuncRegistration, Module, ModuleResolver, NativeCallContext, Position,
    Shared,
};

use crate::config::Limits;
use crate::plugs::invoke::{self, Invocation};
use crate::plugs::modules::PlugResolver;
use crate::protocol::EventType;

type HostResult<T> = Result<T, Box<EvalAltResult>>;

/// Nesting of expressions (top level, inside functions). Rhai's defaults
/// are lower in debug builds than in release; one value for both keeps
/// tests honest. The plug pool's thread stacks are sized for these and for
/// `limits.maxCallDepth`.
pub const MAX_EXPR_DEPTHS: (usize, usize) = (64, 48);

/// How many script operations pass between checks of the cancel flag and
/// the deadline.
const CANCEL_CHECK_EVERY: u64 = 256;

/// The engine, resolving imports through `resolver` (shared so the
/// registry can invalidate its cache when a module file changes).
pub fn build(resolver: Arc<PlugResolver>, limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine.set_module_resolver(SharedResolver(resolver));
    engine.set_max_call_levels(limits.max_call_depth);
    engine.set_max_expr_depths(MAX_EXPR_DEPTHS.0, MAX_EXPR_DEPTHS.1);
    engine.set_max_operations(limits.max_operations);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    // Plugs get no way to run code from strings.
    engine.disable_symbol("eval");
    engine.on_progress(|ops| {
        if ops % CANCEL_CHECK_EVERY == 0 {
            invoke::current_progress(ops).or_else(compile_stop_reason)
        } else {
            None
        }
    });
    engine.on_print(|text| {
        let (plug, client) = invoke::current_label();
        tracing::info!(target: "ssocket::plug", plug = plug.as_str(), client, "{text}");
    });
    engine.on_debug(|text, _source, pos| {
        let (plug, client) = invoke::current_label();
        tracing::debug!(target: "ssocket::plug", plug = plug.as_str(), client, line = pos.line(), "{text}");
    });
    engine.register_static_module("EventType", event_type_module().into());
    register_host_api(&mut engine);
    crate::init::register(&mut engine);
    engine
}

thread_local! {
    /// When a compile on this thread must give up: a module's top-level
    /// code runs while plugs that import it compile, and must not hang the
    /// watcher (or start-up) with an endless loop.
    static COMPILE_DEADLINE: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

fn compile_stop_reason() -> Option<Dynamic> {
    let deadline = COMPILE_DEADLINE.with(|d| d.get())?;
    (std::time::Instant::now() >= deadline).then(|| Dynamic::from("compile timeout"))
}

/// Run `f` (a compile) with a deadline of `timeout` from now for script
/// code it runs (modules' top-level statements).
pub fn with_compile_deadline<T>(timeout: Option<Duration>, f: impl FnOnce() -> T) -> T {
    let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
    let previous = COMPILE_DEADLINE.with(|d| d.replace(deadline));
    let out = f();
    COMPILE_DEADLINE.with(|d| d.set(previous));
    out
}

/// Lets the engine own a resolver that the registry also holds.
struct SharedResolver(Arc<PlugResolver>);

impl ModuleResolver for SharedResolver {
    fn resolve(&self, engine: &Engine, source: Option<&str>, path: &str, pos: Position) -> HostResult<Shared<Module>> {
        self.0.resolve(engine, source, path, pos)
    }
}

/// `EventType::MESSAGE` ... `EventType::CUSTOM_5` as integer constants.
fn event_type_module() -> Module {
    let mut module = Module::new();
    for (name, t) in EventType::NAMED {
        module.set_var(name, t.0 as i64);
    }
    module
}

/// The invocation behind a host call, or a clear error when a host
/// function is called where there is none.
fn invocation(ctx: &NativeCallContext, name: &str) -> HostResult<Arc<Invocation>> {
    invoke::current().ok_or_else(|| {
        runtime_error(format!("`{name}` can only be used while a plug handles a message"), ctx.call_position())
    })
}

pub(crate) fn runtime_error(message: impl Into<String>, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(message.into()), pos))
}

/// Volatile so the optimizer never runs these at compile time: each has
/// an effect outside the script.
fn host(name: &str) -> FuncRegistration {
    FuncRegistration::new(name).with_volatility(true).with_purity(false)
}

fn register_host_api(engine: &mut Engine) {
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
        Ok(invocation(&ctx, "clients")?.clients())
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

fn sleep_ms(ctx: &NativeCallContext, ms: f64) -> HostResult<()> {
    if !ms.is_finite() || ms < 0.0 {
        return Err(runtime_error(format!("sleep needs a number of milliseconds >= 0, not {ms}"), ctx.call_position()));
    }
    // Huge values sleep "forever" (until cancelled) instead of panicking.
    let duration = Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX);
    invocation(ctx, "sleep")?.sleep(duration)
}
