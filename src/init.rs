//! The start-up hook (SPEC section 7): `INIT.rhai` in the working directory
//! (config `initFile`) runs its `fn INIT(server)` once, before plugs load.
//! Through `server` it registers callbacks for clients connecting and
//! disconnecting, lists clients and can disconnect them all; `broadcast`,
//! `send_to` and `sleep` work in INIT and in the callbacks.
//!
//! Callbacks run on the plug threads with the client as the "sender": in
//! `on_connect`, `yield_msg` greets the new client and `broadcast` tells
//! everyone else. The `server` type itself is [`crate::plugs::host::server`].

use std::path::Path;
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Scope, AST};

use crate::cancel::Cancel;
use crate::client::ClientHandle;
use crate::hub::{Hub, RoomEvent};
pub use crate::plugs::host::server::CLOSE_KICKED;
use crate::plugs::host::server::{Hooks, ServerHandle};
use crate::plugs::invoke::{self, Sender};
use crate::plugs::Plugs;
use crate::timers::{TimerId, Timers};

/// A loaded INIT script and the callbacks it registered.
pub struct InitScript {
    /// The file, for log lines.
    file: String,
    /// To find the client a room event is about.
    hub: Hub,
    /// Keeps each client's callbacks in order.
    lanes: Arc<Lanes>,
    ast: Arc<AST>,
    hooks: Arc<Hooks>,
    engine: Arc<Engine>,
    plugs: Plugs,
}

/// Why INIT stopped the start-up.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct InitError {
    pub file: String,
    pub message: String,
}

/// Run `path`'s `INIT(server)` if the file exists; then its timers start.
pub fn run_if_present(
    path: &Path,
    plugs: &Plugs,
    hub: &Hub,
    timers: &Timers,
    address: &Arc<std::sync::OnceLock<std::net::SocketAddr>>,
) -> Result<Option<Arc<InitScript>>, InitError> {
    if !path.exists() {
        return Ok(None);
    }
    let file = path.display().to_string();
    let fail = |message: String| InitError { file: file.clone(), message };
    let source = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let engine = plugs.engine().clone();
    let ast = engine.compile_into_self_contained(&Scope::new(), &source).map_err(|e| {
        let pos = e.position();
        fail(format!("line {}, column {}: {e}", pos.line().unwrap_or(0), pos.position().unwrap_or(0)))
    })?;
    if !ast.iter_functions().any(|f| f.name == "INIT" && f.params.len() == 1) {
        return Err(fail("has no `fn INIT(server)`".into()));
    }
    // Top-level statements (imports, constants) run once, here.
    engine.run_ast(&ast).map_err(|e| fail(format!("failed: {e}")))?;
    let hooks = Arc::new(Hooks::default());
    let handle =
        ServerHandle { hooks: hooks.clone(), hub: hub.clone(), timers: timers.clone(), address: address.clone() };
    let inv = plugs.init_invocation();
    let _ = invoke::call_function(&engine, &ast, &inv, "INIT", vec![Dynamic::from(handle)])
        .map_err(|e| fail(format!("INIT failed: {}", failure("INIT", &e))))?;
    tracing::info!("ran {file}");
    let script = Arc::new(InitScript {
        file,
        hub: hub.clone(),
        lanes: Arc::new(Lanes::default()),
        ast: Arc::new(ast),
        hooks,
        engine,
        plugs: plugs.clone(),
    });
    let runner = script.clone();
    timers.start(Arc::new(move |id, f, done| runner.run_timer(id, f, done)));
    Ok(Some(script))
}

/// A callback run waiting for its client's earlier ones.
type Job = Box<dyn FnOnce() + Send>;

/// One queue of callbacks per client with callbacks pending: the first job
/// of a client starts a run on the plug threads that takes its jobs one
/// after another until none is left. Clients' queues run in parallel; an
/// idle client has no entry.
#[derive(Default)]
struct Lanes {
    /// A std mutex: held to push or pop a job, never while one runs.
    pending: Mutex<ahash::HashMap<u64, std::collections::VecDeque<Job>>>,
}

impl Lanes {
    fn run(self: &Arc<Self>, plugs: &Plugs, client: u64, job: Job) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(queue) = pending.get_mut(&client) {
                queue.push_back(job); // a run is going: it will take this one
                return;
            }
            pending.insert(client, std::collections::VecDeque::new());
        }
        let lanes = self.clone();
        plugs.spawn(move || {
            let mut next = Some(job);
            while let Some(job) = next.take() {
                job();
                let mut pending = lanes.pending.lock().unwrap_or_else(|e| e.into_inner());
                next = pending.get_mut(&client).and_then(|q| q.pop_front());
                if next.is_none() {
                    pending.remove(&client);
                }
            }
        });
    }
}

/// Why `on_auth` refused: the text it threw (a string, or a map's
/// `message`), else what went wrong.
fn refusal(function: &str, err: &EvalAltResult) -> String {
    let mut inner = err;
    while let EvalAltResult::ErrorInFunctionCall(_, _, next, _) = inner {
        inner = next;
    }
    match inner {
        EvalAltResult::ErrorRuntime(value, _) if value.is_string() => value.to_string(),
        EvalAltResult::ErrorRuntime(value, _) if value.is_map() => value
            .read_lock::<rhai::Map>()
            .and_then(|m| m.get("message").map(|m| m.to_string()))
            .unwrap_or_else(|| failure(function, err)),
        _ => failure(function, err),
    }
}

/// What went wrong in a run of INIT's code, with the line: `message (line
/// L, column C)`.
fn failure(function: &str, err: &EvalAltResult) -> String {
    let payload = invoke::error_payload("INIT", function, err);
    let message = payload["message"].as_str().unwrap_or_default();
    let message = message.strip_prefix("plug `INIT` failed: ").unwrap_or(message);
    let message = message.strip_prefix("plug `INIT` was stopped: ").unwrap_or(message);
    match (payload["line"].as_u64(), payload["column"].as_u64()) {
        (Some(line), Some(column)) => format!("{message} (line {line}, column {column})"),
        _ => message.to_owned(),
    }
}

impl InitScript {
    /// A client connected; its callbacks stop if it leaves.
    pub fn connected(&self, client: &ClientHandle) {
        let args = [Dynamic::from(client.id() as i64)];
        let sender = Sender::Client(client.clone());
        self.fire(&self.hooks.on_connect, "connect", client.id(), sender, client.cancel().clone(), &args);
    }

    /// A client left; its callbacks run to the end (under the time limit).
    pub fn disconnected(&self, client: &ClientHandle) {
        let args = [Dynamic::from(client.id() as i64)];
        let sender = Sender::Client(client.clone());
        self.fire(&self.hooks.on_disconnect, "disconnect", client.id(), sender, Cancel::new(), &args);
    }

    /// A client joined or left a room: `on_join(room, id)` / `on_leave(room,
    /// id)`, for that client while it is connected (for nobody once it has
    /// gone).
    pub fn room_event(&self, event: RoomEvent) {
        let (list, name, room, id) = match event {
            RoomEvent::Joined(room, id) => (&self.hooks.on_join, "join", room, id),
            RoomEvent::Left(room, id) => (&self.hooks.on_leave, "leave", room, id),
        };
        if list.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            return;
        }
        let sender = self.hub.handle(id).map_or(Sender::Nobody, Sender::Client);
        let args = [Dynamic::from(room.to_string()), Dynamic::from(id as i64)];
        self.fire(list, name, id, sender, Cancel::new(), &args);
    }

    /// Run `list`'s callbacks about client `client` with `args`, after
    /// every callback already queued about that client: a client's
    /// `on_connect`, `on_join`s, `on_leave`s and `on_disconnect` run one at a
    /// time, in the order of the events. Each gets its time limit when it
    /// starts.
    fn fire(
        &self,
        list: &Mutex<Vec<FnPtr>>,
        event: &'static str,
        client: u64,
        sender: Sender,
        cancel: Cancel,
        args: &[Dynamic],
    ) {
        let callbacks = list.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for f in callbacks {
            let (engine, ast, file, plugs) =
                (self.engine.clone(), self.ast.clone(), self.file.clone(), self.plugs.clone());
            let (sender, cancel) = (sender.clone(), cancel.clone());
            let mut call_args: Vec<Dynamic> = f.curry().to_vec();
            call_args.extend(args.iter().cloned());
            let about = args.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
            self.lanes.run(
                &self.plugs,
                client,
                Box::new(move || {
                    let inv = plugs.hook_invocation(sender, event, cancel);
                    if let Err(err) = invoke::call_function(&engine, &ast, &inv, f.fn_name(), call_args) {
                        if !inv.cancel.is_cancelled() {
                            tracing::error!("{file}: on_{event}({about}) failed: {}", failure(f.fn_name(), &err));
                        }
                    }
                }),
            );
        }
    }

    /// Whether INIT registered `server.on_auth`.
    pub fn has_on_auth(&self) -> bool {
        self.hooks.on_auth.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Ask `on_auth(req)` who a connecting client is: a map (its identity)
    /// or `()` (anonymous); an error (thrown, past a limit, a wrong return)
    /// is the refusal's reason. It runs on the plug threads under the plug
    /// limits, and stops if the upgrade is abandoned (this future dropped).
    pub async fn authenticate(&self, req: rhai::Map) -> Result<Dynamic, String> {
        let Some(f) = self.hooks.on_auth.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(Dynamic::UNIT);
        };
        let (engine, ast) = (self.engine.clone(), self.ast.clone());
        let stop = crate::plugs::CancelOnDrop::new();
        let inv = self.plugs.hook_invocation(Sender::Nobody, "auth", stop.flag());
        let answer = self.plugs.run_blocking(move || {
            let mut args: Vec<Dynamic> = f.curry().to_vec();
            args.push(Dynamic::from_map(req));
            invoke::call_function(&engine, &ast, &inv, f.fn_name(), args).map_err(|e| refusal(f.fn_name(), &e))
        });
        let identity = answer.await.unwrap_or_else(|| Err("the server is stopping".into()))?;
        if identity.is_unit() || identity.is_map() {
            Ok(identity)
        } else {
            Err(format!(
                "on_auth returned {}; it must return a map (the identity) or () (anonymous)",
                identity.type_name()
            ))
        }
    }

    /// Run timer `id`'s callback on the plug threads, under the plug
    /// limits and for no client; a failure is logged with the file and
    /// line, and the timer keeps going.
    fn run_timer(&self, id: TimerId, f: FnPtr, done: Box<dyn FnOnce() + Send>) {
        let (engine, ast, file) = (self.engine.clone(), self.ast.clone(), self.file.clone());
        let inv = self.plugs.hook_invocation(Sender::Nobody, "timer", Cancel::new());
        self.plugs.spawn(move || {
            if let Err(err) = invoke::call_function(&engine, &ast, &inv, f.fn_name(), f.curry().to_vec()) {
                tracing::error!(timer = id, "{file}: timer {id} failed: {}", failure(f.fn_name(), &err));
            }
            done();
        });
    }
}
