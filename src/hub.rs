//! The hub is the only owner of "who is connected". Every reply, whether a
//! yield, a broadcast or a `send_to`, reaches a socket through it, so a
//! later cross-node backplane replaces this one piece.
//!
//! Each client's outbound queue is bounded in bytes (`limits.outboundQueueBytes`).
//! When a queue is full, a plug sending to that client waits for room
//! (backpressure: the plug runs at the pace of its readers). A client whose
//! queue stays full for [`SLOW_CLIENT_GRACE`] has stopped reading and is cut
//! off, so it can neither make the server buffer without bound nor hold up
//! everyone else. Replies to a plug's own sender wait without that cut-off.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::HashMap;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::client::ClientHandle;
pub use crate::client::ClientId;

/// How long a send waits for a full queue to drain before the client is
/// taken to have stopped reading.
pub const SLOW_CLIENT_GRACE: Duration = Duration::from_secs(3);

/// Close code for a client whose outbound queue overflowed (it stopped
/// reading). Private-use range of RFC 6455; sent best effort, since such a
/// client is by definition not reading.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// What the writer half of a connection sends: an encoded message, or a
/// close with a code and reason.
#[derive(Debug, Clone)]
pub enum Outbound {
    Binary(Bytes),
    Close(u16, &'static str),
}

/// A client's outbound queue: a deque behind a mutex, with a `Notify` to
/// wake the writer. tokio's mpsc allocates a 32-slot block per channel up
/// front (~1.3 KiB); this costs nothing until used, which matters at tens of
/// thousands of idle connections (BENCHMARKS.md, idle memory).
#[derive(Default)]
pub struct OutQueue {
    state: Mutex<QueueState>,
    notify: Notify,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Outbound>,
    /// Set when the client leaves the hub: the writer drains what is left.
    closed: bool,
    /// The writer found the queue empty and is about to wait: only then does
    /// a push need to wake it (under load it rarely is, and `notify_one` is
    /// the costly part of a push).
    waiting: bool,
}

impl OutQueue {
    /// Queue `item`; gives it back if the queue is closed.
    fn push(&self, item: Outbound) -> Result<(), Outbound> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return Err(item);
        }
        state.items.push_back(item);
        let wake = std::mem::take(&mut state.waiting);
        drop(state);
        if wake {
            // notify_one keeps a permit if the writer has not started
            // waiting yet, so the wake-up is not lost.
            self.notify.notify_one();
        }
        Ok(())
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.notify.notify_one();
    }

    /// The next item, waiting for one; None once closed and drained.
    pub async fn recv(&self) -> Option<Outbound> {
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(item) = state.items.pop_front() {
                    return Some(item);
                }
                if state.closed {
                    return None;
                }
                state.waiting = true;
            }
            self.notify.notified().await;
        }
    }

    /// The next item if one is queued now.
    pub fn try_recv(&self) -> Option<Outbound> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).items.pop_front()
    }
}

/// Tells a connection's writer to give up on its queue and close at once.
#[derive(Default)]
pub struct Kill {
    notify: Notify,
    reason: Mutex<Option<(u16, &'static str)>>,
}

impl Kill {
    /// Resolves once the client is killed; returns the close code and reason.
    pub async fn killed(&self) -> (u16, &'static str) {
        loop {
            if let Some(reason) = *self.reason.lock().unwrap_or_else(|e| e.into_inner()) {
                return reason;
            }
            self.notify.notified().await;
        }
    }

    fn fire(&self, code: u16, reason: &'static str) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some((code, reason));
        // notify_one keeps a permit if the writer is not waiting yet.
        self.notify.notify_one();
    }
}

/// A connected client as the hub sees it.
struct Entry {
    /// Feeds the connection's writer task.
    tx: Arc<OutQueue>,
    /// Bytes in `tx` not yet handed to the socket; the writer subtracts.
    queued: Arc<AtomicUsize>,
    /// The client's record; its cancel flag fires when the entry goes.
    handle: ClientHandle,
    kill: Arc<Kill>,
}

impl Drop for Entry {
    /// Leaving the hub closes the queue: the writer sends what is queued
    /// (a close frame, say) and ends.
    fn drop(&mut self) {
        self.tx.close();
    }
}

/// The outcome of offering a message to one client's queue.
enum Offer {
    Queued,
    Gone,
    Full,
}

impl Entry {
    fn offer(&self, msg: &Bytes, limit: usize) -> Offer {
        let len = msg.len();
        let before = self.queued.fetch_add(len, Ordering::SeqCst);
        // An empty queue takes any one message, so a single large reply
        // cannot be refused forever.
        if before > 0 && before + len > limit {
            self.queued.fetch_sub(len, Ordering::SeqCst);
            return Offer::Full;
        }
        match self.tx.push(Outbound::Binary(msg.clone())) {
            Ok(()) => Offer::Queued,
            Err(_) => {
                self.queued.fetch_sub(len, Ordering::SeqCst);
                Offer::Gone
            }
        }
    }
}

/// Cheap to clone: a handle on the shared table.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    /// A std mutex: it is held only for map operations and channel sends,
    /// never across an `.await`, and is cheaper than an async lock.
    clients: Mutex<HashMap<ClientId, Entry>>,
    /// Source of ids; starts at 1 so 0 never names a client.
    next_id: AtomicU64,
    /// `limits.outboundQueueBytes`.
    queue_limit: usize,
}

/// What a newly registered client gets back.
pub struct Registration {
    pub handle: ClientHandle,
    pub rx: Arc<OutQueue>,
    /// The writer subtracts what it has handed to the socket.
    pub queued: Arc<AtomicUsize>,
    pub kill: Arc<Kill>,
}

impl Registration {
    pub fn id(&self) -> ClientId {
        self.handle.id()
    }
}

/// Why a waiting send gave up.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitError {
    /// The client is not connected (any more).
    Gone,
    /// The caller's `stop` said to stop waiting.
    Stopped,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub::with_queue_limit(usize::MAX)
    }
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// A hub whose clients may each have `limit` bytes queued.
    pub fn with_queue_limit(limit: usize) -> Hub {
        let shared = Shared { clients: Mutex::new(HashMap::default()), next_id: AtomicU64::new(0), queue_limit: limit };
        Hub { shared: Arc::new(shared) }
    }

    /// Add a client and give it a fresh id and its outbound queue.
    pub fn register(&self) -> Registration {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let tx = Arc::new(OutQueue::default());
        let rx = tx.clone();
        let (queued, kill, handle) = (Arc::new(AtomicUsize::new(0)), Arc::new(Kill::default()), ClientHandle::new(id));
        let entry = Entry { tx, queued: queued.clone(), handle: handle.clone(), kill: kill.clone() };
        self.lock().insert(id, entry);
        Registration { handle, rx, queued, kill }
    }

    /// Forget a client and stop everything running on its behalf.
    pub fn remove(&self, id: ClientId) {
        if let Some(entry) = self.lock().remove(&id) {
            entry.handle.cancel().cancel();
        }
    }

    /// Queue a message for one client, from someone else (a broadcast, a
    /// `send_to`): a client whose queue is full is disconnected. False when
    /// the message was not queued.
    pub fn send_to(&self, id: ClientId, msg: Bytes) -> bool {
        match self.offer(id, &msg) {
            Offer::Queued => true,
            Offer::Gone => false,
            Offer::Full => {
                self.drop_slow(id);
                false
            }
        }
    }

    fn offer(&self, id: ClientId, msg: &Bytes) -> Offer {
        match self.lock().get(&id) {
            Some(client) => client.offer(msg, self.shared.queue_limit),
            None => Offer::Gone,
        }
    }

    /// Queue a message for one client, waiting while its queue is full:
    /// for replies to the client whose message is being handled. `pause`
    /// waits a moment and says whether to stop waiting (the plug's client
    /// left or its time ran out).
    pub fn send_waiting(&self, id: ClientId, msg: Bytes, mut pause: impl FnMut() -> bool) -> Result<(), WaitError> {
        loop {
            match self.offer(id, &msg) {
                Offer::Queued => return Ok(()),
                Offer::Gone => return Err(WaitError::Gone),
                Offer::Full if pause() => return Err(WaitError::Stopped),
                Offer::Full => {}
            }
        }
    }

    /// Queue a message for every client but `except`, without waiting:
    /// clients whose queue is full are cut off. For code that cannot block.
    /// The bytes are encoded once and shared, not copied per recipient.
    /// Returns how many clients it was queued for.
    pub fn broadcast(&self, msg: Bytes, except: Option<ClientId>) -> usize {
        let (queued, full) = self.offer_all(&msg, except);
        full.into_iter().for_each(|id| self.drop_slow(id));
        queued
    }

    /// Queue a message for every client but `except`. Clients whose queue
    /// is full are waited for (`pause` waits a moment and says whether to
    /// give up) up to [`SLOW_CLIENT_GRACE`], then cut off.
    pub fn broadcast_waiting(&self, msg: Bytes, except: Option<ClientId>, pause: impl FnMut() -> bool) -> usize {
        let (queued, full) = self.offer_all(&msg, except);
        queued + self.retry_full(full, &msg, pause)
    }

    /// Offer `msg` to every client but `except`: how many took it, and the
    /// ids of those whose queue was full.
    fn offer_all(&self, msg: &Bytes, except: Option<ClientId>) -> (usize, Vec<ClientId>) {
        let mut full = Vec::new();
        let mut queued = 0;
        for (id, client) in self.lock().iter().filter(|(id, _)| Some(**id) != except) {
            match client.offer(msg, self.shared.queue_limit) {
                Offer::Queued => queued += 1,
                Offer::Full => full.push(*id),
                Offer::Gone => {}
            }
        }
        (queued, full)
    }

    /// Queue a message for one client other than the caller's sender,
    /// waiting up to [`SLOW_CLIENT_GRACE`] for room, then cutting it off.
    pub fn send_to_waiting(&self, id: ClientId, msg: Bytes, pause: impl FnMut() -> bool) -> bool {
        match self.offer(id, &msg) {
            Offer::Queued => true,
            Offer::Gone => false,
            Offer::Full => self.retry_full(vec![id], &msg, pause) == 1,
        }
    }

    /// Offer `msg` again to clients whose queue was full until it fits, the
    /// grace period ends (they are cut off) or `pause` says to give up.
    fn retry_full(&self, mut waiting: Vec<ClientId>, msg: &Bytes, mut pause: impl FnMut() -> bool) -> usize {
        let started = Instant::now();
        let mut queued = 0;
        while !waiting.is_empty() {
            if started.elapsed() >= SLOW_CLIENT_GRACE {
                for id in waiting {
                    self.drop_slow(id);
                }
                break;
            }
            if pause() {
                break; // the sender stopped; the slow clients lose this one message
            }
            let clients = self.lock();
            waiting.retain(|id| match clients.get(id).map(|c| c.offer(msg, self.shared.queue_limit)) {
                Some(Offer::Queued) => {
                    queued += 1;
                    false
                }
                Some(Offer::Full) => true,
                Some(Offer::Gone) | None => false,
            });
        }
        queued
    }

    /// Cut off a client that stopped reading: forget it, stop its plugs and
    /// tell its writer to close at once with [`CLOSE_SLOW_CONSUMER`].
    fn drop_slow(&self, id: ClientId) {
        if let Some(client) = self.lock().remove(&id) {
            tracing::warn!(client = id, "disconnecting a slow client: its outbound queue is full");
            client.handle.cancel().cancel();
            client.kill.fire(CLOSE_SLOW_CONSUMER, "outbound queue full: the client is not reading");
        }
    }

    /// Ask one client's connection to close with `code` (after what is
    /// already queued).
    pub fn close(&self, id: ClientId, code: u16, reason: &'static str) {
        if let Some(client) = self.lock().get(&id) {
            let _ = client.tx.push(Outbound::Close(code, reason));
        }
    }

    /// Connected ids, ascending.
    pub fn ids(&self) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Entry>> {
        // A poisoned lock only means a panic elsewhere mid-operation; the
        // map itself is still consistent, so keep serving.
        self.shared.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(rx: &OutQueue) -> Option<Bytes> {
        match rx.try_recv() {
            Some(Outbound::Binary(b)) => Some(b),
            _ => None,
        }
    }

    #[test]
    fn ids_are_unique_and_never_reused() {
        let hub = Hub::new();
        let a = hub.register();
        hub.remove(a.id());
        let b = hub.register();
        assert_ne!(a.id(), b.id());
        assert_eq!(hub.ids(), vec![b.id()]);
    }

    #[test]
    fn broadcast_skips_the_excluded_client() {
        let hub = Hub::new();
        let a = hub.register();
        let b = hub.register();
        assert_eq!(hub.broadcast(Bytes::from_static(b"x"), Some(a.id())), 1);
        assert!(recv(&a.rx).is_none());
        assert_eq!(recv(&b.rx).as_deref(), Some(&b"x"[..]));
        assert_eq!(hub.broadcast(Bytes::from_static(b"y"), None), 2);
        assert!(recv(&a.rx).is_some() && recv(&b.rx).is_some());
    }

    #[test]
    fn removal_cancels_and_stops_delivery() {
        let hub = Hub::new();
        let a = hub.register();
        assert!(hub.send_to(a.id(), Bytes::from_static(b"x")));
        hub.remove(a.id());
        assert!(a.handle.cancel().is_cancelled());
        assert!(!hub.send_to(a.id(), Bytes::from_static(b"x")));
    }

    #[test]
    fn a_full_queue_cuts_off_the_slow_client_only() {
        let hub = Hub::with_queue_limit(10);
        let slow = hub.register();
        let fast = hub.register();
        for _ in 0..3 {
            hub.broadcast(Bytes::from_static(b"12345"), None);
            while recv(&fast.rx).is_some() {
                fast.queued.fetch_sub(5, Ordering::SeqCst);
            }
        }
        assert!(slow.handle.cancel().is_cancelled(), "the slow client was cut off");
        assert_eq!(hub.ids(), vec![fast.id()]);
        assert!(!fast.handle.cancel().is_cancelled());
    }

    #[test]
    fn a_waiting_broadcast_waits_for_a_reader_that_drains() {
        let hub = Hub::with_queue_limit(8);
        let reader = hub.register();
        assert_eq!(hub.broadcast_waiting(Bytes::from_static(b"12345678"), None, || false), 1);
        let mut pauses = 0;
        let sent = hub.broadcast_waiting(Bytes::from_static(b"abcd"), None, || {
            pauses += 1;
            if let Some(b) = recv(&reader.rx) {
                reader.queued.fetch_sub(b.len(), Ordering::SeqCst);
            }
            false
        });
        assert_eq!((sent, pauses), (1, 1));
        assert!(!reader.handle.cancel().is_cancelled());
    }

    #[test]
    fn a_waiting_send_cuts_off_a_reader_that_never_drains() {
        let hub = Hub::with_queue_limit(4);
        let stuck = hub.register();
        assert!(hub.send_to(stuck.id(), Bytes::from_static(b"1234")));
        let started = Instant::now();
        let pause = || {
            std::thread::sleep(Duration::from_millis(20));
            false
        };
        assert!(!hub.send_to_waiting(stuck.id(), Bytes::from_static(b"5"), pause));
        assert!(started.elapsed() >= SLOW_CLIENT_GRACE);
        assert!(stuck.handle.cancel().is_cancelled() && hub.is_empty());
    }

    #[test]
    fn one_oversized_message_still_fits_an_empty_queue() {
        let hub = Hub::with_queue_limit(4);
        let a = hub.register();
        assert!(hub.send_to(a.id(), Bytes::from_static(b"much longer than four")));
        assert!(!hub.send_to(a.id(), Bytes::from_static(b"more")));
        assert!(a.handle.cancel().is_cancelled());
    }

    #[test]
    fn a_waiting_send_waits_for_room_or_gives_up() {
        let hub = Hub::with_queue_limit(4);
        let a = hub.register();
        assert!(hub.send_to(a.id(), Bytes::from_static(b"1234")));
        let mut pauses = 0;
        let result = hub.send_waiting(a.id(), Bytes::from_static(b"5"), || {
            pauses += 1;
            if pauses == 3 {
                a.queued.fetch_sub(4, Ordering::SeqCst); // the writer drained it
            }
            false
        });
        assert_eq!(result, Ok(()));
        assert_eq!(pauses, 3);
        assert!(hub.send_to(a.id(), Bytes::from_static(b"678")));
        assert_eq!(hub.send_waiting(a.id(), Bytes::from_static(b"9"), || true), Err(WaitError::Stopped));
        assert!(!a.handle.cancel().is_cancelled(), "waiting never cuts off the sender");
    }
}
