//! The hub is the only owner of "who is connected" and "who is in which
//! room". Every reply, whether a yield, a broadcast, a room send or a
//! `send_to`, reaches a socket through it. With several nodes it also has a
//! [`Backplane`] (Redis, `crate::cluster`): it tells it who comes, goes,
//! joins and leaves, and callers share fan-outs with the other nodes and
//! ask it about their clients through the hub.
//!
//! Each client's outbound queue is bounded in bytes (`limits.outboundQueueBytes`).
//! When a queue is full, a plug sending to that client waits for room
//! (backpressure: the plug runs at the pace of its readers). A client whose
//! queue stays full for [`SLOW_CLIENT_GRACE`] has stopped reading and is cut
//! off, so it can neither make the server buffer without bound nor hold up
//! everyone else. Replies to a plug's own sender wait without that cut-off.
//!
//! A broadcast or room send from a plug running on its sender's own task,
//! when that sender has no further message already read (the server keeps
//! up with it), skips the queue for receivers whose writer sleeps with
//! nothing unwritten: the frame is written straight into their socket
//! (plain TCP only), saving each a task wake-up (about a tenth of the
//! broadcast's CPU; BENCHMARKS.md, issue 16). When the server is behind,
//! messages are queued, so a late receiver writes several in one `send`;
//! without that a saturated server fell seconds behind. The caller says
//! which ([`Writes`]): the plugs know where a run goes on and whether its
//! sender has more waiting, the hub does not.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ahash::{HashMap, HashSet};
use bytes::Bytes;
use futures::task::AtomicWaker;
use rhai::Dynamic;

use crate::client::ClientHandle;
pub use crate::client::ClientId;
use crate::cluster::ClusterError;

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

/// The write half of a plain TCP connection, shared by its writer and the
/// hub (see [`OutQueue::allow_direct`]).
pub type SharedSocket = Arc<tokio::net::tcp::OwnedWriteHalf>;

/// A client's outbound queue: a deque behind a mutex, the bytes it holds,
/// the kill order of a slow consumer, and the waker of the connection's
/// task. tokio's mpsc allocates a 32-slot block per channel up front (~1.3
/// KiB); this costs nothing until used, and is one allocation per client,
/// which matters at tens of thousands of idle connections (BENCHMARKS.md,
/// idle memory).
#[derive(Default)]
pub struct OutQueue {
    state: Mutex<QueueState>,
    /// The writer found the queue empty and waits: only then does a push
    /// need to wake it (under load it rarely is, and the wake-up is the
    /// costly part of a push). Set under the lock (see `poll_next`); an
    /// atomic so `hold_wakes`, called on every poll, takes no lock.
    waiting: AtomicBool,
    /// Bytes queued and not yet handed to the socket; the writer subtracts.
    queued: AtomicUsize,
    /// Set with `QueueState::killed`: the writer checks it on every poll,
    /// without the lock.
    killed: AtomicBool,
    waker: AtomicWaker,
    /// Whether `QueueState::direct` may be set: a look without the lock,
    /// taken by the connection's task on every poll.
    direct_hint: AtomicBool,
    /// Whether a socket was shared ([`OutQueue::share_socket`]): set before
    /// the connection's task first polls, on that task, so TLS connections,
    /// which never share one, skip `allow_direct`'s lock as they sleep.
    shared: AtomicBool,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Outbound>,
    /// Set when the client leaves the hub: the writer drains what is left.
    closed: bool,
    /// Set when the hub cuts off a slow consumer: the writer drops what is
    /// queued and closes with this code at once.
    killed: Option<(u16, &'static str)>,
    /// The socket's write half, for plain TCP: a broadcast is written
    /// straight into it while `direct` holds. Dropped when the client
    /// leaves the hub.
    socket: Option<SharedSocket>,
    /// The connection's task sleeps with nothing unwritten, its writer
    /// waiting on this empty queue: until it wakes, the hub may write whole
    /// frames into the socket itself, saving the task a wake-up per
    /// message (BENCHMARKS.md, issue 16: the broadcast's CPU).
    direct: bool,
    /// The end of a frame the hub began writing and the socket did not
    /// take: the writer sends it before anything else.
    unfinished: Option<Bytes>,
}

/// What the writer gets from its queue.
#[derive(Debug)]
pub enum Next {
    Item(Outbound),
    /// Closed and drained: the client left.
    Closed,
}

impl OutQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `item`; gives it back if the queue is closed.
    fn push(&self, item: Outbound) -> Result<(), Outbound> {
        let mut state = self.lock();
        if state.closed {
            return Err(item);
        }
        state.items.push_back(item);
        drop(state);
        // After the push is visible: a writer that set `waiting` under the
        // lock before it either saw the item or is woken here.
        if self.waiting.swap(false, Ordering::SeqCst) {
            self.waker.wake();
        }
        Ok(())
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.direct = false;
        let socket = state.socket.take();
        drop(state);
        drop(socket);
        self.waker.wake();
    }

    /// Let the hub write broadcasts straight into `socket` (plain TCP; see
    /// [`OutQueue::allow_direct`]).
    pub fn share_socket(&self, socket: SharedSocket) {
        let mut state = self.lock();
        if !state.closed {
            state.socket = Some(socket);
            self.shared.store(true, Ordering::Relaxed);
        }
    }

    /// Called by the connection's task as it goes to sleep with nothing
    /// unwritten and its writer waiting on this queue: until the task wakes
    /// ([`OutQueue::stop_direct`]), the hub writes broadcasts straight into
    /// the socket instead of queueing them and waking the task.
    pub fn allow_direct(&self) {
        if !self.shared.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.lock();
        if state.socket.is_some()
            && state.items.is_empty()
            && state.unfinished.is_none()
            && !state.closed
            && state.killed.is_none()
            && self.waiting.load(Ordering::SeqCst)
        {
            state.direct = true;
            self.direct_hint.store(true, Ordering::Relaxed);
        }
    }

    /// Called by the connection's task first thing when it wakes: from here
    /// on only it writes to the socket (a write the hub has begun finishes
    /// first: it holds the lock). What the socket did not take of the
    /// hub's last frame, which must go out before anything else.
    pub fn stop_direct(&self) -> Option<Bytes> {
        // Only this task sets the hint, so a `false` here is not stale.
        if !self.direct_hint.load(Ordering::Relaxed) {
            return None;
        }
        let mut state = self.lock();
        state.direct = false;
        self.direct_hint.store(false, Ordering::Relaxed);
        state.unfinished.take()
    }

    /// Write `frame` (the whole WebSocket frame of `msg`) straight into the
    /// socket if the writer allows it; whether it went, in whole or in part
    /// (the rest left for the writer). A full socket or a failed write ends
    /// direct writes until the writer allows them again.
    fn write_direct(&self, frame: &[u8]) -> bool {
        let mut state = self.lock();
        if !state.direct || !state.items.is_empty() || state.closed || state.killed.is_some() {
            return false;
        }
        let Some(socket) = &state.socket else { return false };
        match socket.try_write(frame) {
            Ok(n) if n == frame.len() => true,
            Ok(n) => {
                state.direct = false;
                state.unfinished = Some(Bytes::copy_from_slice(&frame[n..]));
                drop(state);
                self.waker.wake();
                true
            }
            Err(_) => {
                // Full, or failed: the writer meets the same when it writes.
                state.direct = false;
                false
            }
        }
    }

    fn kill(&self, code: u16, reason: &'static str) {
        self.lock().killed = Some((code, reason));
        self.killed.store(true, Ordering::Release);
        // Always: the writer may be waiting on the socket, not the queue.
        self.waker.wake();
    }

    /// The next item, or `Pending` with the task's waker kept for the next
    /// push.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut state = self.lock();
        if let Some(item) = state.items.pop_front() {
            return Poll::Ready(Next::Item(item));
        }
        if state.closed {
            return Poll::Ready(Next::Closed);
        }
        // Registered under the lock: a push after it sees `waiting`.
        self.waker.register(cx.waker());
        self.waiting.store(true, Ordering::SeqCst);
        Poll::Pending
    }

    /// The next item if one is queued now.
    pub fn try_recv(&self) -> Option<Outbound> {
        self.lock().items.pop_front()
    }

    /// Resolves once the hub has cut the client off; the close code and reason.
    pub fn poll_killed(&self, cx: &mut Context<'_>) -> Poll<(u16, &'static str)> {
        if !self.killed.load(Ordering::Acquire) {
            // Registered before the second look: a kill in between wakes us.
            self.waker.register(cx.waker());
            if !self.killed.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        match self.lock().killed {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }

    /// The connection polls its writer right after its reader: pushes until
    /// then (the reader's own replies, mostly) need not wake the task again.
    pub fn hold_wakes(&self) {
        self.waiting.store(false, Ordering::SeqCst);
    }

    /// The writer has handed `bytes` of queued messages to the socket.
    pub fn sent(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::SeqCst);
    }

    /// Bytes queued and not yet handed to the socket.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// A connected client as the hub sees it.
struct Entry {
    /// Feeds the connection's writer.
    tx: Arc<OutQueue>,
    /// The client's record; its cancel flag fires when the entry goes.
    handle: ClientHandle,
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

impl OutQueue {
    fn offer(&self, msg: &Bytes, limit: usize) -> Offer {
        let len = msg.len();
        let before = self.queued.fetch_add(len, Ordering::SeqCst);
        // An empty queue takes any one message, so a single large reply
        // cannot be refused forever.
        if before > 0 && before + len > limit {
            self.sent(len);
            return Offer::Full;
        }
        match self.push(Outbound::Binary(msg.clone())) {
            Ok(()) => Offer::Queued,
            Err(_) => {
                self.sent(len);
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
    table: Mutex<Table>,
    /// Source of ids; starts at 1 so 0 never names a client.
    next_id: AtomicU64,
    /// `limits.outboundQueueBytes`.
    queue_limit: usize,
    /// Told of every join and leave (INIT's `on_join` / `on_leave`), after
    /// the table's lock is released.
    listener: std::sync::OnceLock<RoomListener>,
    /// The other nodes, when there are any (`cluster.redis`).
    backplane: std::sync::OnceLock<Arc<dyn Backplane>>,
    /// Slow clients cut off (`/metrics`).
    cutoffs: AtomicU64,
}

/// What crosses nodes. The hub calls the first group as its own table
/// changes (they must not block: they queue); callers use the rest, which
/// may wait for Redis (off the async workers), through [`Hub::backplane`].
pub trait Backplane: Send + Sync {
    /// A client registered here.
    fn client_up(&self, id: ClientId, user: &Dynamic);
    /// A client left, and the rooms it was in (true: it was their last
    /// member here).
    fn client_down(&self, id: ClientId, rooms: &[(Arc<str>, bool)]);
    /// A client here joined `room` (`first`: the room's first member here).
    fn joined(&self, room: &str, id: ClientId, first: bool);
    /// A client here left `room` (`emptied`: it was its last member here).
    fn left(&self, room: &str, id: ClientId, emptied: bool);

    /// Deliver to an audience on the other nodes.
    fn share(&self, to: Audience<'_>, except: Option<ClientId>, frame: &Bytes) -> Result<(), ClusterError>;
    /// Deliver to a client of another node: false if none has it.
    fn send_to(&self, client: ClientId, frame: &Bytes) -> Result<bool, ClusterError>;
    /// Close every client of the other nodes.
    fn kick_all(&self) -> Result<(), ClusterError>;
    /// Put a client of another node in a room: false if none has it.
    fn join(&self, client: ClientId, room: &str) -> Result<bool, ClusterError>;
    /// Take a client of another node out of a room.
    fn leave(&self, client: ClientId, room: &str) -> Result<bool, ClusterError>;
    /// Clients of the other nodes.
    fn clients(&self) -> Result<Vec<ClientId>, ClusterError>;
    /// Members of `room` on the other nodes.
    fn members(&self, room: &str) -> Result<Vec<ClientId>, ClusterError>;
    /// Members of `room` on the other nodes, with their identities.
    fn presence(&self, room: &str) -> Result<Vec<(ClientId, Dynamic)>, ClusterError>;
    /// Rooms with members on the other nodes.
    fn rooms(&self) -> Result<Vec<String>, ClusterError>;
    /// The rooms of a client of another node.
    fn rooms_of(&self, client: ClientId) -> Result<Vec<String>, ClusterError>;
    /// Whether another node has this client.
    fn is_connected(&self, client: ClientId) -> Result<bool, ClusterError>;
}

/// Every client with its identity, and every room with its members.
pub type Snapshot = (Vec<(ClientId, Dynamic)>, Vec<(String, Vec<ClientId>)>);

/// The rooms a client left, each with whether it was their last member.
type Left = Vec<(Arc<str>, bool)>;

/// A hub that does not keep the hub alive (the backplane's way back).
#[derive(Clone)]
pub struct WeakHub(std::sync::Weak<Shared>);

impl WeakHub {
    pub fn upgrade(&self) -> Option<Hub> {
        self.0.upgrade().map(|shared| Hub { shared })
    }
}

/// Connected clients and the rooms they are in. One lock for both, so a
/// room never names a client that has left.
#[derive(Default)]
struct Table {
    clients: HashMap<ClientId, Entry>,
    /// Members of each room with at least one member. Each client's own
    /// list is its handle's (`ClientHandle::rooms`), kept in step here.
    rooms: HashMap<Arc<str>, HashSet<ClientId>>,
}

/// A client joined or left a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    Joined(Arc<str>, ClientId),
    Left(Arc<str>, ClientId),
}

/// What the hub tells of joins and leaves.
pub type RoomListener = Box<dyn Fn(RoomEvent) + Send + Sync>;

/// Who a fan-out goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// Every connected client.
    All,
    /// The members of one room.
    Room(&'a str),
}

/// How a fan-out reaches receivers whose writer sleeps with nothing
/// unwritten. The caller decides: only it knows whether the server keeps up
/// with the sender (the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Through each receiver's queue, waking its task: late receivers then
    /// write several messages in one `send`.
    Queued,
    /// Straight into such receivers' sockets ([`OutQueue::allow_direct`]),
    /// the others queued: for a plug run on its sender's own task with
    /// nothing more of that sender's read.
    Direct,
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// No such client is connected.
    NoClient,
    /// The client is in this many rooms already (`limits.roomsPerClient`).
    TooMany(usize),
}

/// What a newly registered client gets back.
pub struct Registration {
    pub handle: ClientHandle,
    /// The client's outbound queue, for its connection's writer.
    pub rx: Arc<OutQueue>,
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
        let shared = Shared {
            table: Mutex::new(Table::default()),
            next_id: AtomicU64::new(0),
            queue_limit: limit,
            listener: std::sync::OnceLock::new(),
            backplane: std::sync::OnceLock::new(),
            cutoffs: AtomicU64::new(0),
        };
        Hub { shared: Arc::new(shared) }
    }

    /// Slow clients cut off since the start.
    pub fn cutoffs(&self) -> u64 {
        self.shared.cutoffs.load(Ordering::Relaxed)
    }

    /// Bytes queued for this node's clients and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.lock().clients.values().map(|e| e.tx.queued()).sum()
    }

    /// Number clients from `base` on (`node × 2^32` with several nodes, so
    /// ids are unique across them). Before anyone registers.
    pub fn set_id_base(&self, base: u64) {
        self.shared.next_id.store(base, Ordering::SeqCst);
    }

    /// Tell `backplane` of every change from now on (set once).
    pub fn set_backplane(&self, backplane: Arc<dyn Backplane>) {
        let _ = self.shared.backplane.set(backplane);
    }

    /// The other nodes, if any.
    pub fn backplane(&self) -> Option<&Arc<dyn Backplane>> {
        self.shared.backplane.get()
    }

    pub fn downgrade(&self) -> WeakHub {
        WeakHub(Arc::downgrade(&self.shared))
    }

    /// Every client with its identity, and every room with its members:
    /// what the backplane writes afresh after losing track.
    pub fn snapshot(&self) -> Snapshot {
        let table = self.lock();
        let clients = table.clients.iter().map(|(id, e)| (*id, e.handle.user())).collect();
        let rooms = table.rooms.iter().map(|(room, ids)| (room.to_string(), ids.iter().copied().collect())).collect();
        (clients, rooms)
    }

    /// Close every client of this node (`kick_all`).
    pub fn kick_local(&self) -> usize {
        let ids = self.ids();
        for id in &ids {
            self.close(*id, crate::plugs::host::server::CLOSE_KICKED, "disconnected by the server");
        }
        ids.len()
    }

    /// Tell `listener` of every join and leave from now on (set once).
    pub fn on_rooms(&self, listener: RoomListener) {
        let _ = self.shared.listener.set(listener);
    }

    fn tell(&self, events: impl IntoIterator<Item = RoomEvent>) {
        if let Some(listener) = self.shared.listener.get() {
            events.into_iter().for_each(listener);
        }
    }

    /// A client is gone: tell the backplane and the listener.
    fn gone(&self, id: ClientId, left: Vec<(Arc<str>, bool)>) {
        if let Some(backplane) = self.backplane() {
            backplane.client_down(id, &left);
        }
        self.tell(left.into_iter().map(|(room, _)| RoomEvent::Left(room, id)));
    }

    /// Add an anonymous client and give it a fresh id and its outbound queue.
    pub fn register(&self) -> Registration {
        self.register_as(Dynamic::UNIT)
    }

    /// Add a client with identity `user` (`()`: anonymous).
    pub fn register_as(&self, user: Dynamic) -> Registration {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let tx = Arc::new(OutQueue::default());
        let rx = tx.clone();
        let handle = ClientHandle::with_user(id, user);
        let entry = Entry { tx, handle: handle.clone() };
        self.lock().clients.insert(id, entry);
        if let Some(backplane) = self.backplane() {
            backplane.client_up(id, &handle.user());
        }
        Registration { handle, rx }
    }

    /// Forget a client, stop everything running on its behalf, and take it
    /// out of its rooms (each leave is told). Its handle keeps its room
    /// list, for `on_disconnect`.
    pub fn remove(&self, id: ClientId) {
        let Some((entry, left)) = self.lock().take(id) else { return };
        entry.handle.cancel().cancel();
        drop(entry);
        self.gone(id, left);
    }

    /// The handle of a connected client.
    pub fn handle(&self, id: ClientId) -> Option<ClientHandle> {
        self.lock().clients.get(&id).map(|e| e.handle.clone())
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
        match self.lock().clients.get(&id) {
            Some(client) => client.tx.offer(msg, self.shared.queue_limit),
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
        self.fan_out(Audience::All, msg, except)
    }

    /// Queue a message for every client but `except`. Clients whose queue
    /// is full are waited for (`pause` waits a moment and says whether to
    /// give up) up to [`SLOW_CLIENT_GRACE`], then cut off.
    pub fn broadcast_waiting(&self, msg: Bytes, except: Option<ClientId>, pause: impl FnMut() -> bool) -> usize {
        self.fan_out_waiting(Audience::All, msg, except, Writes::Queued, pause)
    }

    /// [`Hub::broadcast`] to any audience.
    pub fn fan_out(&self, to: Audience<'_>, msg: Bytes, except: Option<ClientId>) -> usize {
        let (queued, full) = self.offer_all(to, &msg, except, Writes::Queued);
        full.into_iter().for_each(|id| self.drop_slow(id));
        queued
    }

    /// [`Hub::broadcast_waiting`] to any audience.
    pub fn fan_out_waiting(
        &self,
        to: Audience<'_>,
        msg: Bytes,
        except: Option<ClientId>,
        writes: Writes,
        pause: impl FnMut() -> bool,
    ) -> usize {
        let (queued, full) = self.offer_all(to, &msg, except, writes);
        queued + self.retry_full(full, &msg, pause)
    }

    /// Offer `msg` to an audience but `except`: how many took it, and the
    /// ids of those whose queue was full.
    fn offer_all(
        &self,
        to: Audience<'_>,
        msg: &Bytes,
        except: Option<ClientId>,
        writes: Writes,
    ) -> (usize, Vec<ClientId>) {
        let (mut queued, mut full) = (0, Vec::new());
        let mut tally = |id: ClientId, offer: Offer| match offer {
            Offer::Queued => queued += 1,
            Offer::Full => full.push(id),
            Offer::Gone => {}
        };
        // Receivers whose writer sleeps with nothing unwritten get the
        // message written straight into their socket, after the table's
        // lock is let go (a thousand writes under it held up every other
        // send: the p99 of a broadcast rose by half; BENCHMARKS.md).
        let mut direct = Vec::new();
        let table = self.lock();
        let mut offer = |id: ClientId, client: &Entry| {
            if Some(id) == except {
                return;
            }
            if writes == Writes::Direct && client.tx.direct_hint.load(Ordering::Relaxed) {
                direct.push((id, client.tx.clone()));
                return;
            }
            tally(id, client.tx.offer(msg, self.shared.queue_limit));
        };
        match to {
            Audience::All => table.clients.iter().for_each(|(id, client)| offer(*id, client)),
            Audience::Room(room) => {
                for id in table.rooms.get(room).into_iter().flatten() {
                    if let Some(client) = table.clients.get(id) {
                        offer(*id, client);
                    }
                }
            }
        }
        drop(table);
        if !direct.is_empty() {
            // Encoded once for all of them (the writer frames each message itself).
            let mut frame = Vec::with_capacity(msg.len() + 10);
            crate::ws::frame::write_frame(&mut frame, crate::ws::frame::Opcode::Binary, msg);
            for (id, tx) in direct {
                let offer =
                    if tx.write_direct(&frame) { Offer::Queued } else { tx.offer(msg, self.shared.queue_limit) };
                tally(id, offer);
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
            let table = self.lock();
            waiting.retain(|id| match table.clients.get(id).map(|c| c.tx.offer(msg, self.shared.queue_limit)) {
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
        let Some((client, left)) = self.lock().take(id) else { return };
        tracing::warn!(client = id, "disconnecting a slow client: its outbound queue is full");
        self.shared.cutoffs.fetch_add(1, Ordering::Relaxed);
        client.handle.cancel().cancel();
        client.tx.kill(CLOSE_SLOW_CONSUMER, "outbound queue full: the client is not reading");
        drop(client);
        self.gone(id, left);
    }

    /// Put client `id` in `room`: true if it was not in it yet. A client
    /// may be in at most `max` rooms.
    pub fn join(&self, id: ClientId, room: &str, max: usize) -> Result<bool, JoinError> {
        let joined = {
            let mut table = self.lock();
            let Some(entry) = table.clients.get(&id) else { return Err(JoinError::NoClient) };
            let mut mine = entry.handle.rooms_mut();
            if mine.contains(room) {
                return Ok(false);
            }
            if mine.len() >= max {
                return Err(JoinError::TooMany(mine.len()));
            }
            let room: Arc<str> = room.into();
            mine.insert(room.clone());
            drop(mine);
            let members = table.rooms.entry(room.clone()).or_default();
            members.insert(id);
            (room, members.len() == 1)
        };
        if let Some(backplane) = self.backplane() {
            backplane.joined(&joined.0, id, joined.1);
        }
        self.tell([RoomEvent::Joined(joined.0, id)]);
        Ok(true)
    }

    /// Take client `id` out of `room`: false if it was not in it.
    pub fn leave(&self, id: ClientId, room: &str) -> bool {
        let left = {
            let mut table = self.lock();
            let Some(entry) = table.clients.get(&id) else { return false };
            let Some(room) = entry.handle.rooms_mut().take(room) else { return false };
            let emptied = table.unlist(&room, id);
            (room, emptied)
        };
        if let Some(backplane) = self.backplane() {
            backplane.left(&left.0, id, left.1);
        }
        self.tell([RoomEvent::Left(left.0, id)]);
        true
    }

    /// Members of `room`, ascending (empty for a room nobody is in).
    pub fn members(&self, room: &str) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self.lock().rooms.get(room).into_iter().flatten().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Members of `room` with their handles (for their identities), by id.
    pub fn member_handles(&self, room: &str) -> Vec<ClientHandle> {
        let table = self.lock();
        let mut handles: Vec<ClientHandle> = table
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|id| table.clients.get(id).map(|e| e.handle.clone()))
            .collect();
        handles.sort_unstable_by_key(ClientHandle::id);
        handles
    }

    /// Rooms with at least one member, sorted.
    pub fn rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self.lock().rooms.keys().map(|r| r.to_string()).collect();
        rooms.sort_unstable();
        rooms
    }

    /// Ask one client's connection to close with `code` (after what is
    /// already queued).
    pub fn close(&self, id: ClientId, code: u16, reason: &'static str) {
        if let Some(client) = self.lock().clients.get(&id) {
            let _ = client.tx.push(Outbound::Close(code, reason));
        }
    }

    /// Connected ids, ascending.
    pub fn ids(&self) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self.lock().clients.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn len(&self) -> usize {
        self.lock().clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A poisoned lock only means a panic elsewhere mid-operation; the
        // table itself is still consistent, so keep serving.
        self.shared.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Table {
    /// Remove a client and its room memberships: the rooms it left, each
    /// with whether it was their last member.
    fn take(&mut self, id: ClientId) -> Option<(Entry, Left)> {
        let entry = self.clients.remove(&id)?;
        let rooms: Vec<Arc<str>> = entry.handle.rooms_mut().iter().cloned().collect();
        let left = rooms.into_iter().map(|room| {
            let emptied = self.unlist(&room, id);
            (room, emptied)
        });
        let left = left.collect();
        Some((entry, left))
    }

    /// Drop `id` from `room`'s members, and the room once it is empty;
    /// whether it emptied.
    fn unlist(&mut self, room: &str, id: ClientId) -> bool {
        let Some(members) = self.rooms.get_mut(room) else { return false };
        members.remove(&id);
        if members.is_empty() {
            self.rooms.remove(room);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A queue sharing the write half of a real loopback connection, as a
    /// plain ws:// client's does, and the client's end.
    async fn queue_on_a_socket() -> (Arc<OutQueue>, tokio::net::TcpStream) {
        let queue = Arc::new(OutQueue::default());
        let client = share_a_socket(&queue).await;
        (queue, client)
    }

    /// Give `queue` the write half of a new loopback connection; the
    /// client's end.
    async fn share_a_socket(queue: &OutQueue) -> tokio::net::TcpStream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        queue.share_socket(Arc::new(server.into_split().1));
        client
    }

    /// What the connection's task does as it goes to sleep: wait on the
    /// empty queue, then allow direct writes.
    fn sleep_on(queue: &OutQueue) {
        let pending = queue.poll_next(&mut Context::from_waker(std::task::Waker::noop())).is_pending();
        assert!(pending, "the queue is empty");
        queue.allow_direct();
    }

    async fn read_exactly(client: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        client.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn a_frame_the_socket_takes_only_in_part_leaves_its_end_for_the_writer() {
        let (queue, mut client) = queue_on_a_socket().await;
        sleep_on(&queue);
        // Larger than any loopback socket's buffers: it cannot go in whole.
        let frame: Vec<u8> = (0..32 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        assert!(queue.write_direct(&frame), "written, in part");
        assert!(!queue.write_direct(b"next"), "no more direct writes until the writer allows them");
        let rest = queue.stop_direct().expect("the end of the frame, for the writer");
        assert!(!rest.is_empty() && rest.len() < frame.len());
        let written = frame.len() - rest.len();
        assert_eq!(read_exactly(&mut client, written).await, frame[..written], "the start went out");
        assert_eq!(&rest[..], &frame[written..], "and the end is exactly what is left");
        assert_eq!(queue.stop_direct(), None, "handed over once");
    }

    #[tokio::test]
    async fn direct_writes_go_only_while_the_writer_sleeps_with_nothing_queued() {
        let (queue, mut client) = queue_on_a_socket().await;
        assert!(!queue.write_direct(b"a"), "not before the writer allows it");
        sleep_on(&queue);
        assert!(queue.write_direct(b"b"));
        assert_eq!(read_exactly(&mut client, 1).await, b"b");
        assert_eq!(queue.stop_direct(), None, "the socket took it all");
        assert!(!queue.write_direct(b"c"), "not once the writer is awake");

        // Something queued goes first: no direct write may overtake it.
        sleep_on(&queue);
        queue.push(Outbound::Binary(Bytes::from_static(b"queued"))).unwrap();
        assert!(!queue.write_direct(b"d"));
        assert!(matches!(queue.try_recv(), Some(Outbound::Binary(b)) if &b[..] == b"queued"));

        // The writer cannot allow them while something is queued.
        queue.push(Outbound::Binary(Bytes::from_static(b"e"))).unwrap();
        queue.allow_direct();
        assert!(!queue.write_direct(b"f"));
        queue.try_recv();

        // Nor after a slow consumer's cut-off, or once the client has left.
        sleep_on(&queue);
        queue.kill(CLOSE_SLOW_CONSUMER, "slow");
        assert!(!queue.write_direct(b"g"), "not after a cut-off");
        let (queue, _client) = queue_on_a_socket().await;
        sleep_on(&queue);
        queue.close();
        assert!(!queue.write_direct(b"h"), "not after the client left");
        queue.allow_direct();
        assert!(!queue.write_direct(b"i"));
    }

    #[tokio::test]
    async fn only_a_fan_out_the_caller_says_is_direct_skips_a_sleeping_writers_queue() {
        let hub = Hub::new();
        let reg = hub.register();
        let mut client = share_a_socket(&reg.rx).await;
        sleep_on(&reg.rx);

        let sent = hub.fan_out_waiting(Audience::All, Bytes::from_static(b"queued"), None, Writes::Queued, || true);
        assert_eq!(sent, 1);
        assert!(matches!(reg.rx.try_recv(), Some(Outbound::Binary(b)) if &b[..] == b"queued"), "queued, not written");

        sleep_on(&reg.rx);
        let sent = hub.fan_out_waiting(Audience::All, Bytes::from_static(b"direct"), None, Writes::Direct, || true);
        assert_eq!(sent, 1);
        assert!(reg.rx.try_recv().is_none(), "nothing queued");
        let mut frame = Vec::new();
        crate::ws::frame::write_frame(&mut frame, crate::ws::frame::Opcode::Binary, b"direct");
        assert_eq!(read_exactly(&mut client, frame.len()).await, frame, "the whole frame, in the socket");
    }

    #[test]
    fn a_queue_without_a_socket_never_allows_direct_writes() {
        let queue = OutQueue::default();
        sleep_on(&queue);
        assert!(!queue.write_direct(b"a"), "TLS connections, and tests' queues, stay on the queue");
    }

    fn recv(rx: &OutQueue) -> Option<Bytes> {
        match rx.try_recv() {
            Some(Outbound::Binary(b)) => Some(b),
            _ => None,
        }
    }

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_queue_wakes_its_writer_only_when_it_waits_and_always_for_a_kill() {
        let q = OutQueue::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let wakes = || count.0.load(Ordering::SeqCst);
        // Empty: the writer waits, and the next push wakes it once.
        assert!(q.poll_next(&mut cx).is_pending());
        q.push(Outbound::Binary(Bytes::from_static(b"a"))).unwrap();
        q.push(Outbound::Binary(Bytes::from_static(b"b"))).unwrap();
        assert_eq!(wakes(), 1);
        assert!(matches!(q.poll_next(&mut cx), Poll::Ready(Next::Item(_))));
        assert!(matches!(q.poll_next(&mut cx), Poll::Ready(Next::Item(_))));
        // The connection will poll the writer right after the reader:
        // what the reader queues meanwhile does not wake the task again.
        assert!(q.poll_next(&mut cx).is_pending());
        q.hold_wakes();
        q.push(Outbound::Binary(Bytes::from_static(b"c"))).unwrap();
        assert_eq!(wakes(), 1);
        assert!(matches!(q.poll_next(&mut cx), Poll::Ready(Next::Item(_))));
        // A kill wakes the task whatever the writer is waiting on (the
        // socket, say), not only when it waits on the queue.
        assert!(q.poll_killed(&mut cx).is_pending());
        q.push(Outbound::Binary(Bytes::from_static(b"d"))).unwrap();
        q.kill(4008, "slow");
        assert!(wakes() >= 2);
        assert_eq!(q.poll_killed(&mut cx), Poll::Ready((4008, "slow")));
        // Closed: what is queued still comes out, then Closed.
        q.close();
        assert!(matches!(q.poll_next(&mut cx), Poll::Ready(Next::Item(_))));
        assert!(matches!(q.poll_next(&mut cx), Poll::Ready(Next::Closed)));
        assert!(q.push(Outbound::Binary(Bytes::from_static(b"e"))).is_err());
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
                fast.rx.sent(5);
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
                reader.rx.sent(b.len());
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
                a.rx.sent(4); // the writer drained it
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
