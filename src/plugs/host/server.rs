//! INIT's `server` parameter, the Rhai type `Server`: registers callbacks
//! for clients connecting and disconnecting, lists clients and can
//! disconnect them all. [`crate::init`] runs INIT and fires the callbacks.

use std::sync::{Arc, Mutex};

use rhai::{Array, Dynamic, Engine, FnPtr};

use crate::hub::Hub;

/// Close code for `server.kick_all()` (RFC 6455: normal closure).
pub const CLOSE_KICKED: u16 = 1000;

/// Callbacks registered by INIT.
#[derive(Default)]
pub struct Hooks {
    pub on_connect: Mutex<Vec<FnPtr>>,
    pub on_disconnect: Mutex<Vec<FnPtr>>,
}

/// What INIT's `server` parameter is (the Rhai type `Server`).
#[derive(Clone)]
pub struct ServerHandle {
    pub hooks: Arc<Hooks>,
    pub hub: Hub,
}

/// Register the `Server` type and its methods on the engine.
pub fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<ServerHandle>("Server")
        .register_fn("on_connect", |s: &mut ServerHandle, f: FnPtr| push(&s.hooks.on_connect, f))
        .register_fn("on_disconnect", |s: &mut ServerHandle, f: FnPtr| push(&s.hooks.on_disconnect, f))
        .register_fn("clients", |s: &mut ServerHandle| -> Array {
            s.hub.ids().into_iter().map(|id| Dynamic::from(id as i64)).collect()
        })
        .register_fn("kick_all", |s: &mut ServerHandle| -> i64 {
            let ids = s.hub.ids();
            for id in &ids {
                s.hub.close(*id, CLOSE_KICKED, "disconnected by the server");
            }
            ids.len() as i64
        });
}

fn push(list: &Mutex<Vec<FnPtr>>, f: FnPtr) {
    list.lock().unwrap_or_else(|e| e.into_inner()).push(f);
}
