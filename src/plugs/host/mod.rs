//! The host API: what plugs can call besides Rhai itself. One file per
//! namespace, each registering itself on the engine, so a new namespace is
//! one new file and one line in [`register`].
//!
//! - [`global`]: `yield_msg`, `broadcast`, `send_to`, `clients`, `sleep`,
//!   `unix_time_ms` and the `EventType::` constants.
//! - [`server`]: INIT's `Server` type (`on_connect`, `on_disconnect`,
//!   `clients`, `kick_all`).
//! - [`store`]: `store::`, the shared key/value store.
//! - [`conn`]: `conn::`, per-connection state.
//! - [`http`]: `http::`, calling other services.
//! - [`rooms`]: `rooms::`, groups of clients and who is in them.
//!
//! A host function that fails throws a map like an ERROR payload,
//! `#{error: "limit_exceeded", message: "...", limit: "store.maxBytes"}`:
//! a plug can `catch` it and test `e.error`, and an uncaught one reaches
//! the client with that code.
//!
//! Host functions find the invocation they serve as the thread's current
//! one (set by [`crate::plugs::invoke`] for the length of a run), so a
//! script can write `yield_msg(x)` as a plain call, `yield_msg.call(x)` on
//! the parameter, or call it from helpers and closures: all reach the same
//! invocation.

pub mod conn;
pub mod global;
pub mod http;
pub mod rooms;
pub mod server;
pub mod store;

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, FuncRegistration, Map, NativeCallContext, Position};

use crate::errors::ErrorCode;
use crate::plugs::invoke::{self, Invocation};

/// What a host function returns: a value, or an error the script sees.
pub type HostResult<T> = Result<T, Box<EvalAltResult>>;

/// The server's services host functions reach: shared by every run, so
/// they are captured when the engine is built rather than looked up.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn crate::store::Store>,
    /// `limits.connStateBytes`.
    pub conn_state_bytes: usize,
    pub egress: Arc<crate::egress::Egress>,
    /// `limits.roomsPerClient`.
    pub rooms_per_client: usize,
    /// The server's counters (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Services {
    /// What a single node uses: the store in memory. Fails on an
    /// `http.allow` entry that is neither an origin nor a host pattern.
    pub fn local(settings: &crate::config::Settings) -> Result<Services, crate::egress::AllowError> {
        Services::new(settings, None)
    }

    /// The store on `cluster`'s Redis when there is one, else in memory.
    pub fn new(
        settings: &crate::config::Settings,
        cluster: Option<&crate::cluster::Cluster>,
    ) -> Result<Services, crate::egress::AllowError> {
        let store: Arc<dyn crate::store::Store> = match cluster {
            Some(cluster) => Arc::new(crate::store::redis::RedisStore::new(cluster.clone())),
            None => Arc::new(crate::store::memory::MemoryStore::new(settings.store.max_bytes)),
        };
        let metrics = Arc::new(match cluster {
            Some(_) => crate::metrics::Metrics::for_cluster(),
            None => crate::metrics::Metrics::new(),
        });
        Ok(Services {
            store,
            conn_state_bytes: settings.limits.conn_state_bytes,
            egress: Arc::new(crate::egress::Egress::new(&settings.http, metrics.clone())?),
            rooms_per_client: settings.limits.rooms_per_client,
            metrics,
        })
    }
}

/// Register every namespace on `engine`.
pub fn register(engine: &mut Engine, services: &Services) {
    global::register(engine);
    server::register(engine);
    store::register(engine, services.store.clone());
    conn::register(engine, services.conn_state_bytes);
    http::register(engine, services.egress.clone());
    rooms::register(engine, services.rooms_per_client);
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

/// A catchable error with a stable code: the thrown value is a map
/// `#{error, message, ...context}`, the shape of an ERROR payload.
pub(crate) fn host_error(
    code: ErrorCode,
    message: &str,
    context: serde_json::Value,
    pos: Position,
) -> Box<EvalAltResult> {
    let payload = code.payload(message, context);
    let value = rhai::serde::to_dynamic(&payload).unwrap_or_else(|_| {
        let mut map = Map::new();
        map.insert("error".into(), code.as_str().into());
        map.insert("message".into(), message.into());
        map.into()
    });
    Box::new(EvalAltResult::ErrorRuntime(value, pos))
}
