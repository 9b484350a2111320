//! The host API: what plugs can call besides Rhai itself. One file per
//! namespace, each registering itself on the engine, so a new namespace is
//! one new file and one line in [`register`].
//!
//! - [`global`]: `yield_msg`, `broadcast`, `send_to`, `clients`, `sleep`,
//!   `unix_time_ms` and the `EventType::` constants.
//! - [`server`]: INIT's `Server` type (`on_connect`, `on_disconnect`,
//!   `clients`, `kick_all`).
//!
//! Host functions find the invocation they serve as the thread's current
//! one (set by [`crate::plugs::invoke`] for the length of a run), so a
//! script can write `yield_msg(x)` as a plain call, `yield_msg.call(x)` on
//! the parameter, or call it from helpers and closures: all reach the same
//! invocation.

pub mod global;
pub mod server;

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, FuncRegistration, NativeCallContext, Position};

use crate::plugs::invoke::{self, Invocation};

/// What a host function returns: a value, or an error the script sees.
pub type HostResult<T> = Result<T, Box<EvalAltResult>>;

/// Register every namespace on `engine`.
pub fn register(engine: &mut Engine) {
    global::register(engine);
    server::register(engine);
}

/// Volatile so the optimizer never runs these at compile time: each has
/// an effect outside the script.
pub(crate) fn host(name: &str) -> FuncRegistration {
    FuncRegistration::new(name).with_volatility(true).with_purity(false)
}

/// The invocation behind a host call, or a clear error when a host
/// function is called where there is none.
pub(crate) fn invocation(ctx: &NativeCallContext, name: &str) -> HostResult<Arc<Invocation>> {
    invoke::current().ok_or_else(|| {
        runtime_error(format!("`{name}` can only be used while a plug handles a message"), ctx.call_position())
    })
}

pub(crate) fn runtime_error(message: impl Into<String>, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(message.into()), pos))
}
