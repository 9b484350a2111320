//! The one Rhai engine every plug runs on, built once at start-up with its
//! limits, its module resolver and the host API of [`crate::plugs::host`].
//!
//! The engine's hooks (`on_progress`, `print`) find the invocation they
//! serve as the thread's current one, as host functions do.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, Module, ModuleResolver, Position, Shared};

use crate::config::Limits;
use crate::plugs::host::{self, HostResult};
use crate::plugs::invoke;
use crate::plugs::modules::PlugResolver;

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
pub fn build(resolver: Arc<PlugResolver>, limits: &Limits, services: &host::Services) -> Engine {
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
    host::register(&mut engine, services);
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
