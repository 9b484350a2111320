//! INIT's `server` parameter, the Rhai type `Server`: registers callbacks
//! for clients connecting and disconnecting and joining and leaving rooms,
//! starts and cancels timers,
//! lists clients and can disconnect them all. [`crate::init`] runs INIT
//! and fires the callbacks; [`crate::timers`] runs the timers.

use std::sync::{Arc, Mutex};

use rhai::{Array, Dynamic, Engine, FnPtr, NativeCallContext};

use super::{host_error, HostResult};
use crate::errors::ErrorCode;
use crate::hub::Hub;
use crate::timers::{TimerError, Timers};

/// Close code for `server.kick_all()` (RFC 6455: normal closure).
pub const CLOSE_KICKED: u16 = 1000;

/// Callbacks registered by INIT.
#[derive(Default)]
pub struct Hooks {
    pub on_connect: Mutex<Vec<FnPtr>>,
    pub on_disconnect: Mutex<Vec<FnPtr>>,
    pub on_join: Mutex<Vec<FnPtr>>,
    pub on_leave: Mutex<Vec<FnPtr>>,
    /// Decides who a connecting client is; the last one registered wins.
    pub on_auth: Mutex<Option<FnPtr>>,
}

/// What INIT's `server` parameter is (the Rhai type `Server`).
#[derive(Clone)]
pub struct ServerHandle {
    pub hooks: Arc<Hooks>,
    pub hub: Hub,
    pub timers: Timers,
    /// Where the server listens, once it does (`server.address()`).
    pub address: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
}

/// Register the `Server` type and its methods on the engine.
pub fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<ServerHandle>("Server")
        .register_fn("on_connect", |s: &mut ServerHandle, f: FnPtr| push(&s.hooks.on_connect, f))
        .register_fn("on_disconnect", |s: &mut ServerHandle, f: FnPtr| push(&s.hooks.on_disconnect, f))
        .register_fn("on_join", |s: &mut ServerHandle, f: FnPtr| push(&s.hooks.on_join, f))
        .register_fn("on_leave", |s: &mut ServerHandle, f: FnPtr| push(&s.hooks.on_leave, f))
        .register_fn("on_auth", |s: &mut ServerHandle, f: FnPtr| {
            *s.hooks.on_auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
        })
        .register_fn("clients", |ctx: NativeCallContext, s: &mut ServerHandle| -> HostResult<Array> {
            match crate::plugs::invoke::current() {
                Some(inv) => inv.clients(ctx.call_position()),
                None => Ok(s.hub.ids().into_iter().map(|id| Dynamic::from(id as i64)).collect()),
            }
        })
        .register_fn("kick_all", |ctx: NativeCallContext, s: &mut ServerHandle| -> HostResult<i64> {
            let kicked = s.hub.kick_local() as i64;
            match s.hub.backplane().map(|b| b.kick_all()) {
                Some(Err(e)) => Err(crate::plugs::invoke::cluster_error("server.kick_all", e, ctx.call_position())),
                _ => Ok(kicked),
            }
        })
        .register_fn("every", |ctx: NativeCallContext, s: &mut ServerHandle, ms: i64, f: FnPtr| {
            add_timer(&ctx, s, "every", ms, true, f)
        })
        .register_fn("after", |ctx: NativeCallContext, s: &mut ServerHandle, ms: i64, f: FnPtr| {
            add_timer(&ctx, s, "after", ms, false, f)
        })
        .register_fn("address", |s: &mut ServerHandle| -> Dynamic {
            s.address.get().map_or(Dynamic::UNIT, |a| Dynamic::from(a.to_string()))
        })
        .register_fn("cancel", |s: &mut ServerHandle, id: i64| -> bool {
            u64::try_from(id).is_ok_and(|id| s.timers.cancel(id))
        });
}

/// `server.every(ms, f)` / `server.after(ms, f)`: the new timer's id.
fn add_timer(
    ctx: &NativeCallContext,
    s: &ServerHandle,
    name: &str,
    ms: i64,
    repeat: bool,
    f: FnPtr,
) -> HostResult<i64> {
    s.timers.add(ms, repeat, f).map(|id| id as i64).map_err(|err| {
        let code = match err {
            TimerError::BadPeriod(_) => ErrorCode::BadArgument,
            TimerError::TooMany => ErrorCode::LimitExceeded,
            TimerError::Stopped => ErrorCode::ShuttingDown,
        };
        host_error(code, &format!("server.{name}: {err}"), serde_json::json!({}), ctx.call_position())
    })
}

fn push(list: &Mutex<Vec<FnPtr>>, f: FnPtr) {
    list.lock().unwrap_or_else(|e| e.into_inner()).push(f);
}
