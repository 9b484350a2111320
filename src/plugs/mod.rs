//! Plugs: the `.rhai` scripts that give the server its behaviour.
//!
//! - [`call`]: a plug run for the HTTP API, its replies collected.
//! - [`direct`]: runs on the connection's own task, which lends them its
//!   writer for their waits.
//! - [`engine`]: the one Rhai `Engine` and its limits.
//! - [`host`]: the host API plugs call, one file per namespace.
//! - [`registry`]: which event runs which compiled script.
//! - [`request`]: a frame read into the values a plug sees, in one pass.
//! - [`invoke`]: one run of a plug for one message.
//! - [`pool`]: the threads plugs run on, off the async workers, and the
//!   stack every thread that runs plug code needs.
//! - [`router`]: the one place that decides where a reply goes.
//! - [`values`]: Rhai values as JSON text, for what outlives a run (the
//!   store, `conn::` state, HTTP bodies).
//! - [`modules`]: what `import` may load (plug modules, the stdlib) and
//!   which plugs depend on which modules.
//! - [`watcher`]: recompiles plugs when their files change.

pub mod call;
pub mod direct;
pub mod engine;
pub mod host;
pub mod invoke;
pub mod modules;
pub mod pool;
pub mod registry;
pub mod request;
pub mod router;
pub mod values;
pub mod watcher;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rhai::Engine;

use crate::cancel::Cancel;
use crate::client::ClientHandle;
use crate::config::Settings;
use crate::hub::Hub;
use call::{CallOutcome, CallSink};
use invoke::{Invocation, Sender};
use registry::{Lookup, Registry};
use request::Request;
use router::Router;

/// Everything needed to run plugs for messages: cheap to clone.
#[derive(Clone)]
pub struct Plugs {
    engine: Arc<Engine>,
    pool: Arc<pool::PlugPool>,
    /// `limits.timeoutMs` for each invocation (None: no limit).
    timeout: Option<std::time::Duration>,
    /// `limits.maxInFlight`: one permit per running invocation, server-wide.
    slots: Arc<tokio::sync::Semaphore>,
    /// Invocations started and not yet finished: shutdown waits for it to
    /// reach zero, memory metrics report it.
    in_flight: Arc<AtomicUsize>,
    registry: Arc<Registry>,
    router: Router,
    /// `limits.outboundQueueBytes`: the most an HTTP call's replies hold.
    call_limit: usize,
}

impl Plugs {
    /// Build the engine with the host API over `services`, and the
    /// registry (without loading anything yet).
    pub fn new(settings: &Settings, hub: Hub, services: &host::Services) -> Plugs {
        let resolver = Arc::new(modules::PlugResolver::new(settings.plugs_folder.clone()));
        let engine = Arc::new(engine::build(resolver.clone(), &settings.limits, services));
        let registry = Arc::new(Registry::new(engine.clone(), resolver, settings, services.metrics.clone()));
        // Building a current-thread runtime starts no threads; it fails only
        // if the OS refuses basic resources, when nothing could run anyway.
        let pool = Arc::new(pool::PlugPool::new(&settings.limits).expect("the plug thread pool starts"));
        let timeout =
            (settings.limits.timeout_ms > 0).then(|| std::time::Duration::from_millis(settings.limits.timeout_ms));
        Plugs {
            engine,
            pool,
            timeout,
            slots: Arc::new(tokio::sync::Semaphore::new(settings.limits.max_in_flight)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            registry,
            router: Router::new(hub, settings.exclude_sender_on_broadcast, services.metrics.clone()),
            call_limit: settings.limits.outbound_queue_bytes,
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Invocations running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Run a job on the plug threads, counted as in flight (so shutdown
    /// waits for it and memory metrics report it).
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let in_flight = InFlight::enter(&self.in_flight);
        self.pool.spawn(move || {
            job();
            drop(in_flight);
        });
    }

    /// Run `job` on the plug threads under a server-wide slot
    /// (`limits.maxInFlight`), counted in flight, and wait for its result
    /// (None if the pool is gone).
    pub async fn run_blocking<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let global = self.slots.clone().acquire_owned().await.ok()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.spawn(move || {
            let _ = tx.send(job());
            drop(global);
        });
        rx.await.ok()
    }

    /// An invocation context for INIT's callbacks and timers, for `sender`
    /// and with `event` as the default event, under `limits.timeoutMs`.
    pub fn hook_invocation(&self, sender: Sender, event: &str, cancel: Cancel) -> Arc<Invocation> {
        let router = self.router.clone();
        let inv = Invocation::new(sender, event.into(), "INIT".into(), cancel, router, Bytes::new());
        Arc::new(inv.with_timeout(self.timeout))
    }

    /// The context INIT itself runs in: for nobody, with no time limit
    /// (it may connect to databases before the server serves).
    pub fn init_invocation(&self) -> Arc<Invocation> {
        let router = self.router.clone();
        Arc::new(Invocation::new(Sender::Nobody, "INIT".into(), "INIT".into(), Cancel::new(), router, Bytes::new()))
    }

    /// Find the plug for `event`. A plug not compiled yet (`preloadPlugs =
    /// false`) compiles on the plug threads, not on an async worker.
    async fn lookup(&self, event: &str) -> Lookup {
        if let Some(found) = self.registry.lookup_compiled(event) {
            return found;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (registry, name) = (self.registry.clone(), event.to_owned());
        self.pool.spawn(move || {
            let _ = tx.send(registry.lookup(&name));
        });
        rx.await.unwrap_or(Lookup::NotFound)
    }

    /// Start the plug for a decoded message from `client`. Waits for a slot
    /// in `client_slots` (`limits.maxInFlightPerClient`) and a server-wide
    /// one (`limits.maxInFlight`), so a busy client's socket stops being
    /// read instead of piling up threads; then returns, the plug running on
    /// the connection's runner or the plug threads and yielding through the
    /// router. Or it returns the run, for the caller to do at once on its
    /// own task, lending its writer (`plugs::direct`): when the plug has
    /// never waited and nothing of this client's is before it in the
    /// runner. `raw` is the request as received: the base of the first
    /// SYNC diff.
    pub async fn dispatch(
        &self,
        client: &ClientHandle,
        msg: Request,
        raw: Bytes,
        client_slots: &Arc<ClientSlots>,
        runner: &mut Runner,
    ) -> Option<Job> {
        let found = self.lookup(&msg.event).await;
        let plug = self.found(client, &msg, found)?;
        let inv = self.invocation(client, &msg, raw, &plug);
        let own = client_slots.acquire().await;
        let global = self.slots.clone().acquire_owned().await.ok()?;
        self.start(msg, plug, inv, (own, global), runner)
    }

    /// [`Plugs::dispatch`] when it need not wait: the plug is compiled and
    /// both slots are free, as they are for almost every message. Saves the
    /// caller a future per message. `Err` hands the message back, with
    /// nothing done yet, for `dispatch`.
    pub fn try_dispatch(
        &self,
        client: &ClientHandle,
        msg: Request,
        raw: Bytes,
        client_slots: &Arc<ClientSlots>,
        runner: &mut Runner,
    ) -> Result<Option<Job>, (Request, Bytes)> {
        let Some(found) = self.registry.lookup_compiled(&msg.event) else { return Err((msg, raw)) };
        let Some(plug) = self.found(client, &msg, found) else { return Ok(None) };
        let Some(own) = client_slots.try_acquire() else { return Err((msg, raw)) };
        let Ok(global) = self.slots.clone().try_acquire_owned() else { return Err((msg, raw)) };
        let inv = self.invocation(client, &msg, raw, &plug);
        Ok(self.start(msg, plug, inv, (own, global), runner))
    }

    /// The plug a lookup found; for none (or one that does not compile),
    /// the client's NOT_FOUND or ERROR answer is sent.
    fn found(&self, client: &ClientHandle, msg: &Request, found: Lookup) -> Option<Arc<registry::Plug>> {
        let answer = match found {
            Lookup::Found(plug) => return Some(plug),
            Lookup::NotFound => {
                self.router.metrics().not_found();
                None
            }
            Lookup::Broken(err) => {
                self.router.metrics().plug(&msg.event).message();
                Some(err.to_reply())
            }
        };
        // Replies, ERROR and NOT_FOUND carry the event as sent, tag included.
        let event = msg.reply_event();
        match answer {
            None => self.router.not_found(client.id(), &event),
            Some(error) => self.router.error(client.id(), &event, error),
        }
        if msg.tag.is_some() {
            self.router.end(client.id(), &event);
        }
        None
    }

    /// The run's context; its `limits.timeoutMs` counts from here, before
    /// any wait for a slot.
    fn invocation(&self, client: &ClientHandle, msg: &Request, raw: Bytes, plug: &registry::Plug) -> Invocation {
        let (sender, cancel) = (Sender::Client(client.clone()), client.cancel().clone());
        let tagged = msg.tag.is_some().then(|| msg.reply_event());
        Invocation::new(sender, msg.event.clone(), plug.name.clone(), cancel, self.router.clone(), raw)
            .with_timeout(self.timeout)
            .tagged(tagged)
    }

    /// Start a run holding its slots: on the runner or the plug threads, or
    /// handed back to be done on the caller's task.
    fn start(
        &self,
        msg: Request,
        plug: Arc<registry::Plug>,
        inv: Invocation,
        slots: (ClientSlot, tokio::sync::OwnedSemaphorePermit),
        runner: &mut Runner,
    ) -> Option<Job> {
        plug.metrics.message();
        let in_flight = InFlight::enter(&self.in_flight);
        let engine = self.engine.clone();
        if can_run_inline() && !plug.slow.load(Ordering::Relaxed) {
            let direct = plug.may_run_direct() && runner.is_idle();
            let inv = inv.inline(plug.clone());
            let inv = Arc::new(if direct { inv.direct() } else { inv });
            let job: Job = Box::new(move || {
                invoke::run(&engine, &plug, &inv, msg);
                plug.settle();
                drop((in_flight, slots));
            });
            if direct {
                return Some(job);
            }
            runner.run(job);
            return None;
        }
        let inv = Arc::new(inv);
        self.pool.spawn(move || {
            invoke::run(&engine, &plug, &inv, msg);
            drop((in_flight, slots));
        });
        None
    }
}

impl Plugs {
    /// Run the plug of `request` for the HTTP API as if a client with no
    /// socket had sent it, and wait for it to finish. It takes a
    /// server-wide slot like any message, runs under the same limits, and
    /// stops if the returned future is dropped (the HTTP client went away).
    pub async fn call(&self, request: Request) -> CallOutcome {
        let metrics = self.router.metrics();
        let plug = match self.lookup(&request.event).await {
            Lookup::Found(plug) => {
                plug.metrics.message();
                plug
            }
            Lookup::NotFound => {
                metrics.not_found();
                return CallOutcome::NotFound;
            }
            Lookup::Broken(err) => {
                metrics.plug(&request.event).message();
                return CallOutcome::Failed(err.to_reply());
            }
        };
        let raw = Bytes::new();
        let sink = Arc::new(CallSink::new(self.call_limit));
        let stop = CancelOnDrop(Cancel::new());
        let sender = Sender::Call(sink.clone());
        let inv =
            Invocation::new(sender, request.event.clone(), plug.name.clone(), stop.0.clone(), self.router.clone(), raw)
                .with_timeout(self.timeout);
        let Ok(global) = self.slots.clone().acquire_owned().await else { return CallOutcome::NotFound };
        let in_flight = InFlight::enter(&self.in_flight);
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let (engine, inv) = (self.engine.clone(), Arc::new(inv));
        self.pool.spawn(move || {
            invoke::run(&engine, &plug, &inv, request);
            drop((in_flight, global));
            let _ = done.send(());
        });
        let _ = finished.await;
        sink.outcome()
    }
}

/// Cancels a run when dropped: whatever waits for it (an HTTP request, a
/// WebSocket upgrade) is gone.
pub struct CancelOnDrop(Cancel);

impl CancelOnDrop {
    pub fn new() -> CancelOnDrop {
        CancelOnDrop(Cancel::new())
    }

    /// The flag it fires.
    pub fn flag(&self) -> Cancel {
        self.0.clone()
    }
}

impl Default for CancelOnDrop {
    fn default() -> Self {
        CancelOnDrop::new()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// `limits.maxInFlightPerClient` for one connection. Only the connection's
/// reader takes slots, one message at a time, so there is no queue of
/// waiters to be fair to: a count and a wake-up do, where a semaphore
/// takes a lock on every release (~1% of the echo profile).
pub struct ClientSlots {
    used: AtomicUsize,
    max: usize,
    freed: tokio::sync::Notify,
}

impl ClientSlots {
    pub fn new(max: usize) -> Arc<ClientSlots> {
        Arc::new(ClientSlots { used: AtomicUsize::new(0), max, freed: tokio::sync::Notify::new() })
    }

    /// A free slot now, if there is one.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ClientSlot> {
        if self.used.fetch_add(1, Ordering::AcqRel) < self.max {
            return Some(ClientSlot(self.clone()));
        }
        // Only the connection's reader takes slots: no waiter to wake.
        self.used.fetch_sub(1, Ordering::AcqRel);
        None
    }

    /// Wait for a free slot; it is given back when the returned guard drops.
    pub async fn acquire(self: &Arc<Self>) -> ClientSlot {
        loop {
            if self.used.fetch_add(1, Ordering::AcqRel) < self.max {
                return ClientSlot(self.clone());
            }
            self.used.fetch_sub(1, Ordering::AcqRel);
            // A release between the check and here leaves a stored wake-up,
            // so this cannot miss it.
            self.freed.notified().await;
        }
    }

    /// Slots taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One taken [`ClientSlots`] slot.
pub struct ClientSlot(Arc<ClientSlots>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

/// A plug run, for a connection's runner or its own task.
pub type Job = Box<dyn FnOnce() + Send>;

/// Runs one connection's inline plug runs, in the order its messages came,
/// in a task of its own on the async workers: no thread hand-off per
/// message, while the connection's reader stays free to notice the client
/// leaving (and cancel the run) even when a run blocks. Started at the
/// first message, so idle connections pay nothing.
#[derive(Default)]
pub struct Runner {
    /// Its queue, and how many runs are in it or running.
    queue: Option<(tokio::sync::mpsc::UnboundedSender<Job>, Arc<AtomicUsize>)>,
}

impl Runner {
    fn run(&mut self, job: Job) {
        let (queue, pending) = self.queue.get_or_insert_with(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
            let pending = Arc::new(AtomicUsize::new(0));
            let done = pending.clone();
            tokio::spawn(async move {
                while let Some(job) = rx.recv().await {
                    job();
                    done.fetch_sub(1, Ordering::Release);
                }
            });
            (tx, pending)
        });
        pending.fetch_add(1, Ordering::Relaxed);
        if let Err(tokio::sync::mpsc::error::SendError(job)) = queue.send(job) {
            pending.fetch_sub(1, Ordering::Relaxed);
            job(); // the runner is gone only if the runtime is stopping
        }
    }

    /// No run is queued or running: one started elsewhere now cannot
    /// overtake an earlier message of the client's.
    fn is_idle(&self) -> bool {
        self.queue.as_ref().is_none_or(|(_, pending)| pending.load(Ordering::Acquire) == 0)
    }
}

/// Plugs may run inline only on a multi-thread runtime, where
/// `block_in_place` can move the worker's other tasks away.
fn can_run_inline() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Counts one invocation from dispatch until its job ends (even by panic).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn client_slots_hold_back_the_one_over_the_limit_until_a_slot_frees() {
        let slots = ClientSlots::new(2);
        let a = slots.acquire().await;
        let _b = slots.acquire().await;
        assert_eq!(slots.used(), 2);
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a third slot was handed out");
        assert_eq!(slots.used(), 2);
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").unwrap();
        assert_eq!(slots.used(), 2);
    }

    #[tokio::test]
    async fn client_slots_come_back_when_guards_drop() {
        let slots = ClientSlots::new(1);
        for _ in 0..1000 {
            let slot = tokio::time::timeout(Duration::from_secs(5), slots.acquire()).await.expect("free");
            drop(slot);
        }
        assert_eq!(slots.used(), 0);
    }
}
