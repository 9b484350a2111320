//! One run of a plug for one message: every public two-parameter function
//! of the plug is called with `(msg, yield_msg)`, in name order, on the
//! calling thread. Each yield is routed at once, so a plug that yields in a
//! loop streams to the client as it goes.
//!
//! Where it runs: most plugs answer in microseconds, and handing each
//! message to another thread cost more than running the plug (half the
//! server's CPU went to context switches; BENCHMARKS.md). So a plug runs
//! *inline*, on the async worker that read the message, until it shows it
//! is slow: when it sleeps or waits for a slow reader, that wait goes
//! through `tokio::task::block_in_place` (the worker's other tasks move to
//! another thread), and when a run passes [`INLINE_BUDGET`] it steps off the
//! worker the same way. Either marks that plug version slow, and its later
//! runs go to the plug threads (`plugs::pool`).

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rhai::{Array, CallFnOptions, Dynamic, Engine, EvalAltResult, FnPtr, ImmutableString, Map, Position, Scope};
use serde_json::json;

use crate::cancel::Cancel;
use crate::client::{ClientHandle, ClientId};
use crate::errors::ErrorCode;
use crate::hub::Writes;
use crate::plugs::call::CallSink;
use crate::plugs::host::runtime_error;
use crate::plugs::registry::Plug;
use crate::plugs::request::Request;
use crate::plugs::router::{Reply, RouteError, Router};
use crate::protocol::EventType;

/// The state of one running invocation, shared with host functions as the
/// thread's current invocation (`CURRENT`).
pub struct Invocation {
    /// Who the run is for: MESSAGE and SYNC replies go there.
    pub sender: Sender,
    /// The default event of replies to the sender: the request's event as
    /// sent, its tag included.
    pub event: ImmutableString,
    /// The request's event without its tag: the default event of replies
    /// to others (broadcasts, rooms, `send_to`).
    pub name: ImmutableString,
    /// The plug's name, for errors and logs.
    pub plug: ImmutableString,
    /// Set when the sender disconnects (or the server stops the run): the
    /// plug stops at its next yield, host call or check of the operation
    /// counter. A client's own flag, except in `on_disconnect`, which runs
    /// after the client's flag has fired.
    pub cancel: Cancel,
    router: Router,
    /// The previous full message for SYNC diffs: starts as the raw request.
    sync_base: Mutex<Bytes>,
    /// When `limits.timeoutMs` runs out (None: no limit).
    deadline: Option<Instant>,
    /// Set when running inline on an async worker thread.
    inline: Option<InlineRun>,
    /// A tagged request: the sender gets an END message once the run is
    /// over.
    ends: bool,
    /// Running on the task of the connection that sent it, whose writer
    /// its waits drive (`plugs::direct`).
    direct: bool,
}

/// Who an invocation runs for.
#[derive(Clone)]
pub enum Sender {
    /// A connected client (or, in `on_disconnect`, one that just left).
    Client(ClientHandle),
    /// An HTTP API call: replies are collected for the HTTP response.
    Call(Arc<CallSink>),
    /// Nobody: INIT itself, or a timer. `yield_msg` has no one to answer.
    Nobody,
}

impl Sender {
    /// The id plugs see as `msg.client`; 0 for an HTTP call or nobody.
    pub fn id(&self) -> ClientId {
        match self {
            Sender::Client(handle) => handle.id(),
            Sender::Call(_) | Sender::Nobody => 0,
        }
    }
}

/// Script operations an inline run may take before it steps off the async
/// worker: about a millisecond of work. Counted in operations, not time:
/// on a busy core a thread can lose milliseconds to preemption, and a
/// wall-clock budget then demotes plugs that did almost nothing.
pub const INLINE_BUDGET_OPS: u64 = 100_000;

/// The state of a run on an async worker thread.
struct InlineRun {
    plug: Arc<Plug>,
    /// The operation count at which the next step off the worker is tried
    /// (a step can fail, if the worker's core comes back before another
    /// thread takes it).
    next_escape: std::sync::atomic::AtomicU64,
}

/// The termination token of a run stopped by `limits.timeoutMs`.
const TIMEOUT: &str = "timeout";
/// The termination token of a run whose client left.
const DISCONNECTED: &str = "client disconnected";

thread_local! {
    /// The `yield_msg` parameter handed to handlers: a pointer to the global
    /// `yield_msg` function, built once per thread rather than per call.
    static YIELD_FN: FnPtr = FnPtr::new("yield_msg").expect("yield_msg is a valid function name");

    /// The invocation running on this thread: host functions, closures
    /// and engine hooks (`on_progress`, `print`) all reach it here.
    static CURRENT: RefCell<Option<Arc<Invocation>>> = const { RefCell::new(None) };

    /// A scope kept for this thread's plug calls: a call rewinds it, and
    /// its storage is reused instead of allocated per message.
    static SCOPE: RefCell<Scope<'static>> = RefCell::new(Scope::new());
}

/// Run `f` with this thread's spare scope (a fresh one if it is in use).
fn with_scope<T>(f: impl FnOnce(&mut Scope<'static>) -> T) -> T {
    SCOPE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scope) => {
            let out = f(&mut scope);
            scope.clear(); // nothing a run left may outlive it
            out
        }
        Err(_) => f(&mut Scope::new()),
    })
}

/// The invocation a host function serves, if one runs on this thread.
pub(crate) fn current() -> Option<Arc<Invocation>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Polled by the engine's progress hook with the operation count: steps an
/// inline run off the async worker past its budget, and says why the run
/// must stop now, if it must (its client left, or its time ran out).
pub(crate) fn current_progress(ops: u64) -> Option<Dynamic> {
    CURRENT.with(|c| {
        let current = c.borrow();
        let inv = current.as_ref()?;
        inv.check_inline_budget(ops);
        inv.stop_reason()
    })
}

pub(crate) fn current_label() -> (ImmutableString, u64) {
    CURRENT.with(|c| c.borrow().as_ref().map(|inv| (inv.plug.clone(), inv.client_id())).unwrap_or_default())
}

/// A cross-node part that failed: catchable, after local delivery.
pub(crate) fn cluster_error(name: &str, err: crate::cluster::ClusterError, pos: Position) -> Box<EvalAltResult> {
    crate::plugs::host::host_error(ErrorCode::ClusterUnavailable, &format!("{name}: {err}"), json!({}), pos)
}

/// `yield_msg` where the run is for nobody.
fn no_client(name: &str, pos: Position) -> Box<EvalAltResult> {
    let message = format!(
        "{name}: this code runs for no client (INIT itself, or a timer), so there is nobody to answer; \
         use broadcast or send_to, or yield from an on_connect callback"
    );
    crate::plugs::host::host_error(ErrorCode::NoClient, &message, json!({}), pos)
}

fn terminated() -> Box<EvalAltResult> {
    stop(DISCONNECTED)
}

fn stop(token: &str) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(Dynamic::from(token.to_owned()), Position::NONE))
}

impl Invocation {
    pub fn new(
        sender: Sender,
        event: ImmutableString,
        plug: ImmutableString,
        cancel: Cancel,
        router: Router,
        raw: Bytes,
    ) -> Invocation {
        Invocation {
            sender,
            name: event.clone(),
            event,
            plug,
            cancel,
            router,
            sync_base: Mutex::new(raw),
            deadline: None,
            inline: None,
            ends: false,
            direct: false,
        }
    }

    /// A tagged request: replies to the sender default to `tagged` (the
    /// event as sent), and the run ends with an END message to the sender.
    pub fn tagged(mut self, tagged: Option<ImmutableString>) -> Invocation {
        if let Some(tagged) = tagged {
            self.event = tagged;
            self.ends = true;
        }
        self
    }

    /// The run is over: tell a tagged request's sender, after every reply
    /// it yielded (unless the sender is gone).
    fn finish(&self) {
        if let (true, Sender::Client(client)) = (self.ends, &self.sender) {
            if !self.cancel.is_cancelled() {
                let end = crate::plugs::router::end_bytes(&self.event);
                self.router.metrics().sent(&end);
                let _ = self.router.hub().send_waiting(client.id(), end, || self.pause());
            }
        }
    }

    /// The sender's id (`msg.client`); 0 when the run is for nobody.
    pub fn client_id(&self) -> ClientId {
        self.sender.id()
    }

    /// The identity of the client the run is for (`()`: anonymous, or
    /// nobody).
    pub fn user(&self) -> Dynamic {
        match &self.sender {
            Sender::Client(client) => client.user(),
            Sender::Call(_) | Sender::Nobody => Dynamic::UNIT,
        }
    }

    /// The `conn::` state of the client the run is for, if any.
    pub fn conn_state(&self) -> Option<&crate::client::ConnState> {
        match &self.sender {
            Sender::Client(client) => Some(client.state()),
            Sender::Call(sink) => Some(&sink.state),
            Sender::Nobody => None,
        }
    }

    /// Run on the current async worker thread (see the module docs).
    pub fn inline(mut self, plug: Arc<Plug>) -> Invocation {
        self.inline = Some(InlineRun { plug, next_escape: std::sync::atomic::AtomicU64::new(INLINE_BUDGET_OPS) });
        self
    }

    /// Run on the task of the connection that sent it (see
    /// `plugs::direct`); only for an inline run.
    pub fn direct(mut self) -> Invocation {
        self.direct = self.inline.is_some();
        self
    }

    /// Run `wait`, a blocking wait on the network that ends early on this
    /// run's cancel flag or deadline (an HTTP request, Redis), off the
    /// async worker. Unlike a sleep it does not mark the plug slow: its
    /// runs stay in the connection's queue, one after another, so a
    /// sender's messages keep their order (a chat on a Redis store). It
    /// marks the plug as waiting: its later runs leave the connection's
    /// task free to notice the client leaving meanwhile.
    pub(crate) fn wait<T>(&self, wait: impl FnOnce(&Cancel, Option<Instant>) -> T) -> T {
        match &self.inline {
            Some(run) => {
                run.plug.waits.store(true, std::sync::atomic::Ordering::Relaxed);
                self.flush_before_wait();
                tokio::task::block_in_place(|| wait(&self.cancel, self.deadline))
            }
            None => wait(&self.cancel, self.deadline),
        }
    }

    /// On the connection's task, before waiting: write what was yielded so
    /// far (what the socket takes now), so the client has it meanwhile.
    fn flush_before_wait(&self) {
        if self.direct && crate::plugs::direct::drain(Duration::ZERO) == Some(false) {
            self.cancel.cancel(); // the writer ended: the client is gone
        }
    }

    /// How this run's fan-outs reach sleeping receivers.
    fn writes(&self) -> Writes {
        crate::plugs::direct::writes(self.direct)
    }

    /// The error that stops this run now that its client has left or its
    /// time has run out.
    pub(crate) fn stop_error(&self) -> Box<EvalAltResult> {
        self.check_alive().err().unwrap_or_else(terminated)
    }

    /// Run `wait` (a sleep) without stalling the async runtime if this run
    /// is inline; the plug is then marked slow.
    fn blocking<T>(&self, wait: impl FnOnce() -> T) -> T {
        match &self.inline {
            Some(run) => {
                run.plug.slow.store(true, std::sync::atomic::Ordering::Relaxed);
                self.flush_before_wait();
                tokio::task::block_in_place(wait)
            }
            None => wait(),
        }
    }

    /// An inline run past its budget (`ops` operations so far) steps off
    /// the async worker: the worker's core moves to another thread while
    /// this one pauses briefly, and the script goes on here, outside the
    /// runtime.
    fn check_inline_budget(&self, ops: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(run) = &self.inline else { return };
        if ops < run.next_escape.load(Relaxed) {
            return;
        }
        run.next_escape.store(ops + INLINE_BUDGET_OPS, Relaxed);
        run.plug.slow.store(true, Relaxed);
        tracing::debug!(plug = %self.plug, "{ops} operations inline; moving off the async worker");
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_micros(200)));
    }

    /// Limit the run to `timeout` from now (`limits.timeoutMs`).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Invocation {
        self.deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self
    }

    fn stop_reason(&self) -> Option<Dynamic> {
        if self.cancel.is_cancelled() {
            Some(Dynamic::from(DISCONNECTED))
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Dynamic::from(TIMEOUT))
        } else {
            None
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    fn check_alive(&self) -> Result<(), Box<EvalAltResult>> {
        match self.stop_reason() {
            Some(reason) => Err(Box::new(EvalAltResult::ErrorTerminated(reason, Position::NONE))),
            None => Ok(()),
        }
    }

    /// Only the cancel flag is checked here, not the clock: a yield is a
    /// script operation too, and the progress hook checks the deadline
    /// every 256 of them.
    fn reply(&self, value: Dynamic, pos: Position) -> Result<Reply, Box<EvalAltResult>> {
        if self.cancel.is_cancelled() {
            return Err(terminated());
        }
        Reply::from_dynamic(value, &self.name).map_err(|e| runtime_error(e.to_string(), pos))
    }

    /// `yield_msg(reply)`: to the sender, or to a room if it names one.
    pub fn yield_reply(&self, value: Dynamic, pos: Position) -> Result<(), Box<EvalAltResult>> {
        if self.cancel.is_cancelled() {
            return Err(terminated());
        }
        let (reply, room) =
            Reply::from_yield(value, &self.event, &self.name).map_err(|e| runtime_error(e.to_string(), pos))?;
        if let Some(room) = room {
            whole("yield_msg to a room", &reply, pos)?;
            let sent = self.router.room_send(self.client_id(), &room, reply.encode(), self.writes(), || self.pause());
            return sent.map(|_| ()).map_err(|e| cluster_error("yield_msg", e, pos));
        }
        let client = match &self.sender {
            Sender::Client(client) => client,
            Sender::Call(sink) => return self.collect(sink, reply, pos),
            Sender::Nobody => return Err(no_client("yield_msg", pos)),
        };
        let mut base = self.sync_base.lock().unwrap_or_else(|e| e.into_inner());
        self.router.route(client.id(), reply, &mut base, self.writes(), || self.pause()).map_err(|e| match e {
            RouteError::Cluster(e) => cluster_error("yield_msg", e, pos),
            RouteError::Gone => self.check_alive().err().unwrap_or_else(terminated),
        })
    }

    /// A yield of an HTTP call: broadcasts go out, the rest (SYNC replies
    /// whole) is kept for the response.
    fn collect(&self, sink: &CallSink, reply: Reply, pos: Position) -> Result<(), Box<EvalAltResult>> {
        if reply.event_type() == EventType::BROADCAST {
            let sent = self.router.broadcast(0, reply.encode(), Writes::Queued, || self.pause());
            return sent.map(|_| ()).map_err(|e| cluster_error("yield_msg", e, pos));
        }
        if sink.push(reply) {
            return Ok(());
        }
        let message = "yield_msg: the replies of this HTTP call passed limits.outboundQueueBytes";
        let context = json!({"limit": "limits.outboundQueueBytes"});
        Err(crate::plugs::host::host_error(ErrorCode::LimitExceeded, message, context, pos))
    }

    /// Wait a moment for a full queue to drain (woken at once if the sender
    /// disconnects); true when the run must stop instead.
    fn pause(&self) -> bool {
        const PAUSE: Duration = Duration::from_millis(1);
        if let (true, Some(run)) = (self.direct, &self.inline) {
            // On the connection's task, whose own queue may be the full
            // one: write it meanwhile rather than sleep.
            run.plug.slow.store(true, std::sync::atomic::Ordering::Relaxed);
            match crate::plugs::direct::drain(PAUSE) {
                Some(true) => return self.stop_reason().is_some(),
                Some(false) => {
                    self.cancel.cancel(); // the writer ended: the client is gone
                    return true;
                }
                None => {} // nothing lent (a test doing the run itself): sleep
            }
        }
        self.blocking(|| self.cancel.sleep(PAUSE)) || self.stop_reason().is_some()
    }

    /// `broadcast(reply)`: as a BROADCAST yield, whatever the reply's type.
    pub fn broadcast(&self, value: Dynamic, pos: Position) -> Result<i64, Box<EvalAltResult>> {
        let mut reply = self.reply(value, pos)?;
        whole("broadcast", &reply, pos)?;
        if reply.event_type() == EventType::MESSAGE {
            reply.set_event_type(EventType::BROADCAST);
        }
        let sent = self.router.broadcast(self.client_id(), reply.encode(), self.writes(), || self.pause());
        sent.map(|n| n as i64).map_err(|e| cluster_error("broadcast", e, pos))
    }

    /// `rooms::send(room, reply)`: as a room yield; the type defaults to
    /// BROADCAST. How many clients it was queued for.
    pub fn room_send(&self, room: &str, value: Dynamic, pos: Position) -> Result<i64, Box<EvalAltResult>> {
        let mut reply = self.reply(value, pos)?;
        whole("rooms::send", &reply, pos)?;
        if reply.event_type() == EventType::MESSAGE {
            reply.set_event_type(EventType::BROADCAST);
        }
        let sent = self.router.room_send(self.client_id(), room, reply.encode(), self.writes(), || self.pause());
        sent.map(|n| n as i64).map_err(|e| cluster_error("rooms::send", e, pos))
    }

    /// `send_to(id, reply)`: false when no such client is connected (here
    /// or, with several nodes, on any node).
    pub fn send_to(&self, id: i64, value: Dynamic, pos: Position) -> Result<bool, Box<EvalAltResult>> {
        let reply = self.reply(value, pos)?;
        whole("send_to", &reply, pos)?;
        let Ok(id) = u64::try_from(id) else { return Ok(false) };
        let bytes = reply.encode();
        if let Some(sent) = self.router.send_to_local(id, bytes.clone(), || self.pause()) {
            return Ok(sent);
        }
        match self.router.hub().backplane() {
            Some(backplane) => {
                self.router.metrics().sent(&bytes);
                self.wait(|_, _| backplane.send_to(id, &bytes)).map_err(|e| cluster_error("send_to", e, pos))
            }
            None => Ok(false),
        }
    }

    /// `clients()`: ids of connected clients, of every node, ascending.
    pub fn clients(&self, pos: Position) -> Result<Array, Box<EvalAltResult>> {
        let mut ids = self.router.hub().ids();
        if let Some(backplane) = self.router.hub().backplane() {
            ids.extend(self.wait(|_, _| backplane.clients()).map_err(|e| cluster_error("clients", e, pos))?);
            ids.sort_unstable();
            ids.dedup();
        }
        Ok(ids.into_iter().map(|id| Dynamic::from(id as i64)).collect())
    }

    /// `sleep(ms)`: ends early, with termination, if the sender leaves or
    /// the run's time limit comes first.
    pub fn sleep(&self, duration: Duration) -> Result<(), Box<EvalAltResult>> {
        self.check_alive()?;
        let remaining = self.deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let (nap, times_out) = match remaining {
            Some(left) if left < duration => (left, true),
            _ => (duration, false),
        };
        if self.blocking(|| self.cancel.sleep(nap)) {
            Err(terminated())
        } else if times_out {
            Err(stop(TIMEOUT))
        } else {
            Ok(())
        }
    }
}

/// A SYNC message is a difference against the previous message of the
/// same stream, which only a yield to the sender has (SPEC 5). Sent to
/// others it would reach clients as a patch they cannot apply, so it is
/// refused.
fn whole(what: &str, reply: &Reply, pos: Position) -> Result<(), Box<EvalAltResult>> {
    if reply.event_type() != EventType::SYNC {
        return Ok(());
    }
    let message = format!(
        "{what}: a SYNC message is a difference against the receiver's previous one, which only a yield to the \
         sender has; send the whole payload as MESSAGE or BROADCAST"
    );
    Err(crate::plugs::host::host_error(ErrorCode::BadArgument, &message, json!({}), pos))
}

/// Run every handler of `plug` for `msg`. Failures become an ERROR reply to
/// the sender; a disconnect just ends the run.
pub fn run(engine: &Engine, plug: &Plug, inv: &Arc<Invocation>, msg: Request) {
    let started = Instant::now();
    let mut map = Map::new();
    map.insert("event".into(), msg.event.into());
    if let Some(tag) = msg.tag {
        map.insert("tag".into(), tag.into());
    }
    map.insert("payload".into(), msg.payload);
    map.insert("type".into(), (msg.event_type.0 as i64).into());
    map.insert("client".into(), (inv.client_id() as i64).into());
    if let Sender::Client(client) = &inv.sender {
        if !client.is_anonymous() {
            map.insert("user".into(), client.user());
        }
    }
    let msg_value = Dynamic::from_map(map);

    let _current = CurrentGuard::set(inv.clone());
    let yield_fn = YIELD_FN.with(|f| f.clone());
    let mut msg_value = Some(msg_value);
    let last = plug.handlers.len().saturating_sub(1);
    for (i, name) in plug.handlers.iter().enumerate() {
        if inv.cancel.is_cancelled() {
            return;
        }
        // The last handler takes the message itself; earlier ones a copy.
        let msg = if i == last { msg_value.take() } else { msg_value.clone() }.unwrap_or_default();
        // Host functions find the invocation through `CURRENT`, not a call
        // tag: a tag is a boxed value built and dropped per call.
        let options = CallFnOptions::new().eval_ast(true).rewind_scope(true);
        let result = with_scope(|scope| {
            engine.call_fn_with_options::<Dynamic>(options, scope, &plug.ast, name, (msg, yield_fn.clone()))
        });
        if let Err(err) = result {
            if inv.cancel.is_cancelled() {
                return;
            }
            report(inv, name, &err);
            break;
        }
    }
    plug.metrics.ran(started.elapsed());
    inv.finish();
}

/// Call a script function with the host API available (`broadcast`,
/// `send_to`, `clients`, `sleep`) outside any message: the INIT hook and its
/// callbacks. `inv` gives the host functions their context; its sender is
/// the one broadcast's exclusion rule leaves out.
pub fn call_function(
    engine: &Engine,
    ast: &rhai::AST,
    inv: &Arc<Invocation>,
    name: &str,
    args: Vec<Dynamic>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let _current = CurrentGuard::set(inv.clone());
    let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
    engine.call_fn_with_options::<Dynamic>(options, &mut Scope::new(), ast, name, args)
}

/// Tell the sender which plug failed, where and why.
fn report(inv: &Invocation, function: &str, err: &EvalAltResult) {
    let payload = error_payload(&inv.plug, function, err);
    tracing::debug!(plug = %inv.plug, client = inv.client_id(), "plug failed: {}", payload["message"]);
    match &inv.sender {
        Sender::Client(client) => inv.router.error(client.id(), &inv.event, payload),
        Sender::Call(sink) => sink.fail(payload),
        Sender::Nobody => tracing::error!(plug = %inv.plug, "plug failed: {}", payload["message"]),
    }
}

/// The ERROR payload for a run of `plug`'s `function` that failed with
/// `err`: `limit_exceeded` (naming the limit), the code of a thrown map
/// like `#{error: "code", message: "..."}` (what host functions throw, and
/// what plugs may throw to choose their own code), or `script_error`; with
/// the plug, the function and, when known, the line and column.
pub fn error_payload(plug: &str, function: &str, err: &EvalAltResult) -> serde_json::Value {
    let inner = innermost(err);
    let pos = err.position();
    let thrown = match inner {
        EvalAltResult::ErrorRuntime(value, _) => coded(value),
        _ => None,
    };
    let mut payload = if let Some(limit) = exceeded_limit(inner) {
        ErrorCode::LimitExceeded
            .payload(&format!("plug `{plug}` was stopped: it exceeded {limit}"), json!({ "limit": limit }))
    } else if let Some(mut thrown) = thrown {
        let message = thrown.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
        thrown["message"] = json!(format!("plug `{plug}` failed: {message}"));
        thrown
    } else {
        let message = match inner {
            EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
            _ => err.to_string(),
        };
        let message = strip_position(&message);
        ErrorCode::ScriptError.payload(&format!("plug `{plug}` failed: {message}"), json!({}))
    };
    payload["plug"] = json!(plug);
    payload["function"] = json!(function);
    if let Some(line) = pos.line() {
        payload["line"] = json!(line);
        payload["column"] = json!(pos.position().unwrap_or(0));
    }
    payload
}

/// A thrown map with a string `error` field, as JSON: an error that
/// carries its own code.
fn coded(value: &Dynamic) -> Option<serde_json::Value> {
    if !value.is_map() {
        return None;
    }
    let json = serde_json::to_value(value).ok()?;
    json.get("error")?.as_str().filter(|code| !code.is_empty())?;
    Some(json)
}

/// The error inside "error in function call" / "error in module" wrappers.
fn innermost(err: &EvalAltResult) -> &EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) | EvalAltResult::ErrorInModule(_, inner, _) => {
            innermost(inner)
        }
        other => other,
    }
}

/// The configuration key of the limit an error reports, if it is one.
fn exceeded_limit(err: &EvalAltResult) -> Option<&'static str> {
    match err {
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == TIMEOUT => Some("limits.timeoutMs"),
        EvalAltResult::ErrorTooManyOperations(_) => Some("limits.maxOperations"),
        EvalAltResult::ErrorStackOverflow(_) => Some("limits.maxCallDepth"),
        EvalAltResult::ErrorDataTooLarge(what, _) if what.starts_with("Length of string") => {
            Some("limits.maxStringSize")
        }
        EvalAltResult::ErrorDataTooLarge(what, _) if what.starts_with("Size of array") => Some("limits.maxArraySize"),
        EvalAltResult::ErrorDataTooLarge(what, _) if what.starts_with("Size of object map") => {
            Some("limits.maxMapSize")
        }
        _ => None,
    }
}

/// Rhai appends ` (line 3, position 5)` to messages; the position is sent as
/// fields, so drop it from the text.
fn strip_position(message: &str) -> String {
    match message.rfind(" (line ") {
        Some(i) if message.ends_with(')') => message[..i].to_owned(),
        _ => message.to_owned(),
    }
}

/// Sets [`CURRENT`] for the life of a run, and clears it even on panic.
struct CurrentGuard;

impl CurrentGuard {
    fn set(inv: Arc<Invocation>) -> CurrentGuard {
        CURRENT.with(|c| *c.borrow_mut() = Some(inv));
        CurrentGuard
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}
