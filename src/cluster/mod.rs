//! Several nodes on one Redis (SPEC 11, `cluster.redis`). Each node keeps
//! serving its own clients from its hub; this module is the backplane the
//! hub talks to for everything that crosses nodes:
//!
//! - **Delivery.** A broadcast, room send, `send_to` a client of another
//!   node, `kick_all` or `/api/publish` is delivered locally by the hub and
//!   published once, as an [`envelope::Envelope`] holding the encoded
//!   message, on `PREFIX:all` (or `PREFIX:node:N` for one node's client).
//!   Every node subscribes to both and delivers what other nodes sent. All
//!   of a node's publishes go through one queue and one connection, so
//!   Redis keeps them in order: messages from one sender arrive in order.
//! - **Who is where.** Each node writes its clients, their identities and
//!   its rooms' members into keys of its own (`PREFIX:n:N:*`), refreshes
//!   their TTL with a heartbeat, and scores itself in `PREFIX:nodes`. A node
//!   that dies stops refreshing: it drops out of every answer within one
//!   TTL (5 heartbeats) and its keys expire. Queries read the live nodes'
//!   keys.
//! - **Ids.** A node picks a random number below 2^20 and claims it in
//!   Redis (`SET PREFIX:claim:N token NX`, refreshed by the heartbeat);
//!   client ids are `node × 2^32 + n`, unique across nodes and below 2^53
//!   (exact in JavaScript). A claim already taken means another number. The
//!   one way two nodes can share a number is a Redis that restarts empty
//!   and a node that starts before the others have claimed theirs again
//!   (one heartbeat), with a chance of (nodes / 2^20); the heartbeat sees
//!   it (the claim's old token is another node's) and logs an error.
//!
//! When Redis goes away nothing waits for it: the publish queue is bounded
//! (what does not fit is dropped and counted), failed writes mark the
//! registry for a full rewrite, the connections reconnect by themselves
//! (the heartbeat keeps trying), and warnings are logged at most once per
//! [`WARN_EVERY`]. Plugs get `cluster_unavailable` for what needed Redis.

pub mod envelope;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushKind};
use rhai::Dynamic;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc;

use crate::client::ClientId;
use crate::config::ClusterSettings;
use crate::hub::{Audience, Backplane, Hub, WeakHub};
use crate::plugs::values::{from_json, to_json};
use envelope::Envelope;

/// The longest a query (clients, members, presence, store) waits for Redis.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Publishes and registry writes waiting for Redis, at most.
pub const QUEUE_LEN: usize = 16_384;
/// Warnings about Redis are logged at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// Node numbers are below this, so client ids stay below 2^53.
pub const MAX_NODES: u64 = 1 << 20;

/// Why something that needed Redis did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// Redis cannot be reached (or did not answer in time).
    #[error("Redis is unavailable ({0}): this reached this node only")]
    Down(String),
    /// Redis answered with an error (a command of ours it would not run).
    #[error("Redis refused: {0}")]
    Refused(String),
}

/// Score node ARGV[1] now; forget nodes silent for ARGV[2] ms.
const BEAT: &str =
    "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
    redis.call('ZADD', KEYS[1], now, ARGV[1]) \
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))";

/// Nodes that beat within ARGV[1] ms.
const LIVE: &str =
    "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
    return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')";

/// The backplane: cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node: u32,
    /// This node's claim on its number (another node's token there means
    /// both took the same number).
    token: u64,
    keys: Keys,
    heartbeat: Duration,
    /// How long a node's keys live without a heartbeat.
    ttl: Duration,
    /// The runtime the connections and tasks live on; taken at shutdown.
    runtime: Mutex<Option<Runtime>>,
    handle: Handle,
    /// Commands, queries and publishes.
    conn: ConnectionManager,
    /// Subscriptions (RESP3 pushes).
    sub: ConnectionManager,
    /// Publishes and registry writes, in order, for the writer task.
    queue: mpsc::Sender<redis::Cmd>,
    /// Whether the last command reached Redis.
    up: AtomicBool,
    subscribed: AtomicBool,
    /// A registry write was lost: the next heartbeat rewrites it all.
    dirty: AtomicBool,
    /// The hub incoming messages are delivered to.
    hub: OnceLock<WeakHub>,
    /// When a warning was last logged.
    warned: Mutex<Option<Instant>>,
    /// Publishes dropped because the queue was full or Redis was down.
    dropped: AtomicU64,
    /// `limits.roomsPerClient`, for joins other nodes ask of this one.
    max_rooms: std::sync::atomic::AtomicUsize,
}

/// Every key and channel name, under `cluster.prefix`.
struct Keys {
    prefix: String,
    node: u32,
}

impl Keys {
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    fn claim(&self, node: u32) -> String {
        format!("{}:claim:{node}", self.prefix)
    }
    fn all(&self) -> String {
        format!("{}:all", self.prefix)
    }
    fn inbox(&self, node: u32) -> String {
        format!("{}:node:{node}", self.prefix)
    }
    fn clients(&self, node: u32) -> String {
        format!("{}:n:{node}:c", self.prefix)
    }
    fn users(&self, node: u32) -> String {
        format!("{}:n:{node}:u", self.prefix)
    }
    fn rooms(&self, node: u32) -> String {
        format!("{}:n:{node}:rooms", self.prefix)
    }
    fn room(&self, node: u32, room: &str) -> String {
        format!("{}:n:{node}:r:{room}", self.prefix)
    }
    /// A store key.
    pub fn store(&self, key: &str) -> String {
        format!("{}:s:{key}", self.prefix)
    }
    fn mine(&self) -> u32 {
        self.node
    }
}

/// The node a client id belongs to.
pub fn node_of(id: ClientId) -> u32 {
    (id >> 32) as u32
}

impl Cluster {
    /// Connect (lazily: an unreachable Redis is not an error), take a node
    /// number and start the writer, subscriber and heartbeat tasks.
    pub fn start(settings: &ClusterSettings) -> Result<Cluster, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ssocket-redis")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Redis runtime: {e}"))?;
        let handle = runtime.handle().clone();
        let info = settings.redis.as_str().into_connection_info().map_err(|e| format!("cluster.redis: {e}"))?;
        let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(resp3);
        let client = redis::Client::open(info).map_err(|e| format!("cluster.redis: {e}"))?;
        let config = || {
            ConnectionManagerConfig::new()
                .set_number_of_retries(1)
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(QUERY_TIMEOUT))
        };
        let (pushes, incoming) = tokio::sync::broadcast::channel(QUEUE_LEN);
        let (conn, sub) = {
            let _enter = handle.enter();
            let conn = ConnectionManager::new_lazy_with_config(client.clone(), config())
                .map_err(|e| format!("cluster.redis: {e}"))?;
            let sub = ConnectionManager::new_lazy_with_config(
                client,
                config().set_push_sender(pushes).set_automatic_resubscription(),
            )
            .map_err(|e| format!("cluster.redis: {e}"))?;
            (conn, sub)
        };
        let prefix = settings.prefix.clone();
        let token = random_u64();
        let ttl = Duration::from_millis(settings.heartbeat_ms) * 5;
        let node = node_number(&handle, &conn, &Keys { prefix: prefix.clone(), node: 0 }, token, ttl);
        let node = (node.0, node.1);
        let (queue, outgoing) = mpsc::channel(QUEUE_LEN);
        let heartbeat = Duration::from_millis(settings.heartbeat_ms);
        let inner = Arc::new(Inner {
            node: node.0,
            token,
            keys: Keys { prefix, node: node.0 },
            heartbeat,
            ttl,
            runtime: Mutex::new(None),
            handle: handle.clone(),
            conn,
            sub,
            queue,
            // Assumed up until an exchange fails (and the heartbeat runs at once).
            up: AtomicBool::new(node.1),
            subscribed: AtomicBool::new(false),
            dirty: AtomicBool::new(true),
            hub: OnceLock::new(),
            warned: Mutex::new(None),
            dropped: AtomicU64::new(0),
            max_rooms: std::sync::atomic::AtomicUsize::new(usize::MAX),
        });
        handle.spawn(write(Arc::downgrade(&inner), outgoing));
        handle.spawn(receive(Arc::downgrade(&inner), incoming));
        *inner.runtime.lock().unwrap_or_else(|e| e.into_inner()) = Some(runtime);
        tracing::info!("cluster: node {} on {}", node.0, redacted(&settings.redis));
        Ok(Cluster { inner })
    }

    /// This node's number.
    pub fn node(&self) -> u32 {
        self.inner.node
    }

    /// The first client id of this node.
    pub fn id_base(&self) -> u64 {
        (self.inner.node as u64) << 32
    }

    /// Deliver what other nodes send to `hub`, and tell Redis about its
    /// clients and rooms; joins other nodes ask for keep to `max_rooms`.
    pub fn attach(&self, hub: &Hub, max_rooms: usize) {
        self.inner.max_rooms.store(max_rooms, Ordering::Relaxed);
        let _ = self.inner.hub.set(hub.downgrade());
        hub.set_backplane(Arc::new(self.clone()));
        self.inner.dirty.store(true, Ordering::SeqCst);
    }

    /// Whether the last exchange with Redis worked.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::SeqCst)
    }

    /// Publishes dropped so far (queue full or Redis down).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Run `f` on Redis from blocking code, bounded by [`QUERY_TIMEOUT`].
    pub fn query<T, F, Fut>(&self, f: F) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let fut = f(self.inner.conn.clone());
        let result =
            crate::offload::wait(&self.inner.handle, async move { tokio::time::timeout(QUERY_TIMEOUT, fut).await });
        match result {
            Some(Ok(Ok(value))) => {
                self.inner.mark_up();
                Ok(value)
            }
            Some(Ok(Err(e))) if !is_connection_error(&e) => Err(ClusterError::Refused(e.to_string())),
            Some(Ok(Err(e))) => Err(self.inner.mark_down(&e.to_string())),
            Some(Err(_)) => Err(self.inner.mark_down("no answer within 2 s")),
            None => Err(ClusterError::Down("the Redis runtime stopped".into())),
        }
    }

    /// The store's key for `key`.
    pub fn store_key(&self, key: &str) -> String {
        self.inner.keys.store(key)
    }

    /// The store's key prefix (for `keys(prefix)` scans).
    pub fn store_prefix(&self) -> String {
        self.inner.keys.store("")
    }

    /// Live nodes other than this one: those that beat within one TTL.
    fn others(&self) -> Result<Vec<u32>, ClusterError> {
        let key = self.inner.keys.nodes();
        let ttl = self.inner.ttl.as_millis() as u64;
        let me = self.inner.node;
        let nodes: Vec<u32> = self.query(move |mut c| async move {
            redis::cmd("EVAL").arg(LIVE).arg(1).arg(key).arg(ttl).query_async(&mut c).await
        })?;
        Ok(nodes.into_iter().filter(|n| *n != me).collect())
    }

    /// For each node in `nodes`, `SMEMBERS` of the key `key(node)`.
    fn members_of(&self, nodes: &[u32], key: impl Fn(u32) -> String) -> Result<Vec<Vec<String>>, ClusterError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for n in nodes {
            pipe.cmd("SMEMBERS").arg(key(*n));
        }
        self.query(move |mut c| async move { pipe.query_async(&mut c).await })
    }

    /// Stop the tasks and remove this node's keys (a clean shutdown).
    pub fn stop(&self) {
        let keys = &self.inner.keys;
        let node = keys.mine();
        let rooms_key = keys.rooms(node);
        let (nodes, clients, users, prefix) = (keys.nodes(), keys.clients(node), keys.users(node), keys.prefix.clone());
        let claim = keys.claim(node);
        let _ = self.query(move |mut c| async move {
            let rooms: Vec<String> = redis::cmd("SMEMBERS").arg(&rooms_key).query_async(&mut c).await?;
            let mut pipe = redis::pipe();
            pipe.cmd("ZREM").arg(nodes).arg(node).ignore();
            pipe.cmd("DEL").arg(clients).arg(users).arg(&rooms_key).arg(claim).ignore();
            for room in rooms {
                pipe.cmd("DEL").arg(format!("{prefix}:n:{node}:r:{room}")).ignore();
            }
            pipe.query_async::<()>(&mut c).await
        });
        if let Some(rt) = self.inner.runtime.lock().unwrap_or_else(|e| e.into_inner()).take() {
            rt.shutdown_background();
        }
    }

    /// Queue a command for the writer; refused at once while Redis is known
    /// to be down (nothing piles up for it) or the queue is full.
    fn send(&self, cmd: redis::Cmd) -> Result<(), ClusterError> {
        if !self.is_up() {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            self.inner.dirty.store(true, Ordering::SeqCst);
            return Err(ClusterError::Down("it did not answer the last attempt".into()));
        }
        self.inner.queue.try_send(cmd).map_err(|_| {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            self.inner.dirty.store(true, Ordering::SeqCst);
            self.inner.mark_down("the queue of messages for Redis is full")
        })
    }

    /// Whether another node's client is in `room` (by that node's registry).
    fn in_room(&self, client: ClientId, room: &str) -> Result<bool, ClusterError> {
        let key = self.inner.keys.room(node_of(client), room);
        self.query(move |mut c| async move { redis::cmd("SISMEMBER").arg(key).arg(client).query_async(&mut c).await })
    }

    fn publish(&self, channel: String, envelope: &Envelope<'_>) -> Result<(), ClusterError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(envelope.encode(self.inner.node));
        self.send(cmd)
    }

    fn registry(&self, cmd: redis::Cmd) {
        if self.send(cmd).is_err() {
            self.inner.dirty.store(true, Ordering::SeqCst);
        }
    }
}

impl Backplane for Cluster {
    fn share(&self, to: Audience<'_>, except: Option<ClientId>, frame: &Bytes) -> Result<(), ClusterError> {
        let envelope = match to {
            Audience::All => Envelope::All { except, frame },
            Audience::Room(room) => Envelope::Room { room, except, frame },
        };
        self.publish(self.inner.keys.all(), &envelope)
    }

    fn send_to(&self, client: ClientId, frame: &Bytes) -> Result<bool, ClusterError> {
        if !self.is_connected(client)? {
            return Ok(false);
        }
        self.publish(self.inner.keys.inbox(node_of(client)), &Envelope::To { client, frame })?;
        Ok(true)
    }

    fn kick_all(&self) -> Result<(), ClusterError> {
        self.publish(self.inner.keys.all(), &Envelope::KickAll)
    }

    fn join(&self, client: ClientId, room: &str) -> Result<bool, ClusterError> {
        if !self.is_connected(client)? || self.in_room(client, room)? {
            return Ok(false);
        }
        self.publish(self.inner.keys.inbox(node_of(client)), &Envelope::Join { client, room })?;
        Ok(true)
    }

    fn leave(&self, client: ClientId, room: &str) -> Result<bool, ClusterError> {
        if !self.is_connected(client)? || !self.in_room(client, room)? {
            return Ok(false);
        }
        self.publish(self.inner.keys.inbox(node_of(client)), &Envelope::Leave { client, room })?;
        Ok(true)
    }

    fn client_up(&self, id: ClientId, user: &Dynamic) {
        let node = self.inner.node;
        let ttl = self.inner.ttl.as_millis() as u64;
        let mut cmd = redis::cmd("SADD");
        cmd.arg(self.inner.keys.clients(node)).arg(id);
        self.registry(cmd);
        self.registry(pexpire(self.inner.keys.clients(node), ttl));
        if !user.is_unit() {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(self.inner.keys.users(node)).arg(id).arg(to_json(user).unwrap_or_else(|_| "null".into()));
            self.registry(cmd);
            self.registry(pexpire(self.inner.keys.users(node), ttl));
        }
    }

    fn client_down(&self, id: ClientId, rooms: &[(Arc<str>, bool)]) {
        let node = self.inner.node;
        let mut cmd = redis::cmd("SREM");
        cmd.arg(self.inner.keys.clients(node)).arg(id);
        self.registry(cmd);
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(self.inner.keys.users(node)).arg(id);
        self.registry(cmd);
        for (room, emptied) in rooms {
            self.left(room, id, *emptied);
        }
    }

    fn joined(&self, room: &str, id: ClientId, first: bool) {
        let (node, ttl) = (self.inner.node, self.inner.ttl.as_millis() as u64);
        let mut cmd = redis::cmd("SADD");
        cmd.arg(self.inner.keys.room(node, room)).arg(id);
        self.registry(cmd);
        self.registry(pexpire(self.inner.keys.room(node, room), ttl));
        if first {
            let mut cmd = redis::cmd("SADD");
            cmd.arg(self.inner.keys.rooms(node)).arg(room);
            self.registry(cmd);
            self.registry(pexpire(self.inner.keys.rooms(node), ttl));
        }
    }

    fn left(&self, room: &str, id: ClientId, emptied: bool) {
        let node = self.inner.node;
        let mut cmd = redis::cmd("SREM");
        cmd.arg(self.inner.keys.room(node, room)).arg(id);
        self.registry(cmd);
        if emptied {
            let mut cmd = redis::cmd("SREM");
            cmd.arg(self.inner.keys.rooms(node)).arg(room);
            self.registry(cmd);
        }
    }

    fn clients(&self) -> Result<Vec<ClientId>, ClusterError> {
        let others = self.others()?;
        let sets = self.members_of(&others, |n| self.inner.keys.clients(n))?;
        Ok(sets.into_iter().flatten().filter_map(|id| id.parse().ok()).collect())
    }

    fn members(&self, room: &str) -> Result<Vec<ClientId>, ClusterError> {
        let others = self.others()?;
        let sets = self.members_of(&others, |n| self.inner.keys.room(n, room))?;
        Ok(sets.into_iter().flatten().filter_map(|id| id.parse().ok()).collect())
    }

    fn presence(&self, room: &str) -> Result<Vec<(ClientId, Dynamic)>, ClusterError> {
        let others = self.others()?;
        let sets = self.members_of(&others, |n| self.inner.keys.room(n, room))?;
        let mut out = Vec::new();
        let mut pipe = redis::pipe();
        let mut asked = Vec::new();
        for (node, ids) in others.iter().zip(sets) {
            let ids: Vec<ClientId> = ids.iter().filter_map(|id| id.parse().ok()).collect();
            if ids.is_empty() {
                continue;
            }
            pipe.cmd("HMGET").arg(self.inner.keys.users(*node)).arg(&ids);
            asked.push(ids);
        }
        if asked.is_empty() {
            return Ok(out);
        }
        let users: Vec<Vec<Option<String>>> = self.query(move |mut c| async move { pipe.query_async(&mut c).await })?;
        for (ids, users) in asked.into_iter().zip(users) {
            for (id, user) in ids.into_iter().zip(users) {
                out.push((id, user.map_or(Dynamic::UNIT, |json| from_json(&json))));
            }
        }
        Ok(out)
    }

    fn rooms(&self) -> Result<Vec<String>, ClusterError> {
        let others = self.others()?;
        Ok(self.members_of(&others, |n| self.inner.keys.rooms(n))?.into_iter().flatten().collect())
    }

    fn rooms_of(&self, client: ClientId) -> Result<Vec<String>, ClusterError> {
        let node = node_of(client);
        if !self.others()?.contains(&node) {
            return Ok(Vec::new());
        }
        let rooms: Vec<String> =
            self.members_of(&[node], |n| self.inner.keys.rooms(n))?.into_iter().flatten().collect();
        if rooms.is_empty() {
            return Ok(rooms);
        }
        let mut pipe = redis::pipe();
        for room in &rooms {
            pipe.cmd("SISMEMBER").arg(self.inner.keys.room(node, room)).arg(client);
        }
        let member: Vec<bool> = self.query(move |mut c| async move { pipe.query_async(&mut c).await })?;
        let mut rooms: Vec<String> = rooms.into_iter().zip(member).filter(|(_, m)| *m).map(|(r, _)| r).collect();
        rooms.sort_unstable();
        Ok(rooms)
    }

    fn is_connected(&self, client: ClientId) -> Result<bool, ClusterError> {
        let node = node_of(client);
        if node == self.inner.node || !self.others()?.contains(&node) {
            return Ok(false);
        }
        let key = self.inner.keys.clients(node);
        self.query(move |mut c| async move { redis::cmd("SISMEMBER").arg(key).arg(client).query_async(&mut c).await })
    }
}

fn pexpire(key: String, ms: u64) -> redis::Cmd {
    let mut cmd = redis::cmd("PEXPIRE");
    cmd.arg(key).arg(ms);
    cmd
}

impl Inner {
    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::SeqCst) {
            tracing::info!("cluster: Redis is reachable; cross-node delivery is on");
        }
    }

    /// Note a failure; log it unless one was logged lately.
    fn mark_down(&self, why: &str) -> ClusterError {
        self.up.store(false, Ordering::SeqCst);
        self.dirty.store(true, Ordering::SeqCst);
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(
                "cluster: Redis is unavailable ({why}); serving this node's clients only until it is back \
                 ({} cross-node messages dropped so far)",
                self.dropped.load(Ordering::Relaxed)
            );
        }
        ClusterError::Down(why.to_owned())
    }

    fn hub(&self) -> Option<Hub> {
        self.hub.get().and_then(WeakHub::upgrade)
    }
}

/// Whether a Redis error means "cannot reach Redis" (rather than a bad
/// command).
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// A random node number nobody has claimed, claimed for `token`; or, when
/// Redis cannot be reached, an unclaimed random one (the heartbeat claims
/// it later). And whether Redis answered.
fn node_number(handle: &Handle, conn: &ConnectionManager, keys: &Keys, token: u64, ttl: Duration) -> (u32, bool) {
    let claims: Vec<(u32, String)> = (0..100)
        .map(|i| {
            let n = (random_u64().wrapping_add(i) % (MAX_NODES - 1) + 1) as u32;
            (n, keys.claim(n))
        })
        .collect();
    let mut conn = conn.clone();
    let taken = crate::offload::wait(handle, async move {
        tokio::time::timeout(QUERY_TIMEOUT, async move {
            for (n, claim) in claims {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&claim)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .query_async(&mut conn)
                    .await?;
                if set.is_some() {
                    return Ok(n);
                }
            }
            Err(redis::RedisError::from((redis::ErrorKind::Client, "no free node number")))
        })
        .await
    });
    match taken {
        Some(Ok(Ok(n))) => (n, true),
        other => {
            let why = match other {
                Some(Ok(Err(e))) => e.to_string(),
                _ => "no answer".to_owned(),
            };
            let n = (random_u64() % (MAX_NODES - 1) + 1) as u32;
            tracing::warn!(
                "cluster: cannot reach Redis at start-up ({why}); this node takes the random number {n} and \
                 serves its own clients until Redis is back"
            );
            (n, false)
        }
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = ahash::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// `redis://user:password@host` without the password, for the log.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// The writer: publishes and registry writes, in order, pipelined; and,
/// between batches, the heartbeat. One task does both so that a rewrite of
/// the registry (a snapshot of the hub) falls between writes, never across
/// one: a write queued before the snapshot runs after it and agrees with
/// it, one queued after it is newer.
async fn write(inner: std::sync::Weak<Inner>, mut outgoing: mpsc::Receiver<redis::Cmd>) {
    let Some(period) = inner.upgrade().map(|i| i.heartbeat) else { return };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            _ = tick.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                if let Err(e) = heartbeat(&inner).await {
                    inner.mark_down(&e.to_string());
                }
                continue;
            }
            cmd = outgoing.recv() => match cmd {
                Some(cmd) => cmd,
                None => return,
            },
        };
        let Some(inner) = inner.upgrade() else { return };
        let mut pipe = redis::pipe();
        pipe.add_command(first).ignore();
        while pipe.len() < 256 {
            match outgoing.try_recv() {
                Ok(cmd) => {
                    pipe.add_command(cmd).ignore();
                }
                Err(_) => break,
            }
        }
        let n = pipe.len() as u64;
        let mut conn = inner.conn.clone();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => inner.mark_up(),
            Err(e) if is_connection_error(&e) => {
                inner.dropped.fetch_add(n, Ordering::Relaxed);
                inner.mark_down(&e.to_string());
            }
            Err(e) => tracing::warn!("cluster: Redis refused a command: {e}"),
        }
    }
}

/// The subscriber: deliver what other nodes published.
async fn receive(inner: std::sync::Weak<Inner>, mut incoming: tokio::sync::broadcast::Receiver<redis::PushInfo>) {
    loop {
        let push = match incoming.recv().await {
            Ok(push) => push,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                if let Some(inner) = inner.upgrade() {
                    inner.mark_down(&format!("this node fell {n} messages behind"));
                }
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(inner) = inner.upgrade() else { return };
        match push.kind {
            PushKind::Message => {
                let payload = push.data.get(1).and_then(|v| match v {
                    redis::Value::BulkString(b) => Some(b.as_slice()),
                    _ => None,
                });
                if let (Some(bytes), Some(hub)) = (payload, inner.hub()) {
                    deliver(&inner, &hub, bytes);
                }
            }
            PushKind::Disconnection => {
                inner.subscribed.store(false, Ordering::SeqCst);
                inner.mark_down("the subscription's connection dropped");
            }
            PushKind::Subscribe => inner.subscribed.store(true, Ordering::SeqCst),
            _ => {}
        }
    }
}

/// Act on one envelope from another node.
fn deliver(inner: &Inner, hub: &Hub, bytes: &[u8]) {
    let (origin, envelope) = match Envelope::decode(bytes) {
        Ok(decoded) => decoded,
        Err(e) => return tracing::warn!("cluster: {e}"),
    };
    if origin == inner.node {
        return; // delivered here when it was sent
    }
    match envelope {
        Envelope::All { except, frame } => {
            hub.fan_out(Audience::All, Bytes::copy_from_slice(frame), except);
        }
        Envelope::Room { room, except, frame } => {
            hub.fan_out(Audience::Room(room), Bytes::copy_from_slice(frame), except);
        }
        Envelope::To { client, frame } => {
            hub.send_to(client, Bytes::copy_from_slice(frame));
        }
        Envelope::KickAll => {
            hub.kick_local();
        }
        Envelope::Join { client, room } => {
            if let Err(crate::hub::JoinError::TooMany(n)) =
                hub.join(client, room, inner.max_rooms.load(Ordering::Relaxed))
            {
                tracing::debug!(client, "another node's rooms::join refused: the client is in {n} rooms already");
            }
        }
        Envelope::Leave { client, room } => {
            hub.leave(client, room);
        }
    }
}

/// The heartbeat: score this node (on Redis's clock), refresh its keys'
/// TTL (rewriting them all after a lost write), and keep the subscription
/// alive.
async fn heartbeat(inner: &Inner) -> redis::RedisResult<()> {
    let keys = &inner.keys;
    let node = inner.node;
    let ttl = inner.ttl.as_millis() as u64;
    let mut conn = inner.conn.clone();
    let mut pipe = redis::pipe();
    if inner.dirty.swap(false, Ordering::SeqCst) {
        if let Err(e) = rewrite(inner, &mut conn).await {
            inner.dirty.store(true, Ordering::SeqCst);
            return Err(e);
        }
    }
    // Scored with Redis's clock, as the live-node query reads it, so the
    // nodes' own clocks need not agree. Nodes long dead leave the list.
    pipe.cmd("EVAL").arg(BEAT).arg(1).arg(keys.nodes()).arg(node).arg(ttl * 10).ignore();
    pipe.cmd("PEXPIRE").arg(keys.clients(node)).arg(ttl).ignore();
    pipe.cmd("PEXPIRE").arg(keys.users(node)).arg(ttl).ignore();
    pipe.cmd("PEXPIRE").arg(keys.rooms(node)).arg(ttl).ignore();
    if let Some(hub) = inner.hub() {
        for room in hub.rooms() {
            pipe.cmd("PEXPIRE").arg(keys.room(node, &room)).arg(ttl).ignore();
        }
    }
    // Renew the claim on our number, reading whose it was.
    pipe.cmd("SET").arg(keys.claim(node)).arg(inner.token).arg("PX").arg(ttl).arg("GET");
    let (previous,): (Option<String>,) = pipe.query_async(&mut conn).await?;
    if previous.is_some_and(|p| p != inner.token.to_string()) {
        tracing::error!(
            "cluster: another node claimed number {node} too (Redis restarted empty while both were away?): \
             client ids of the two may collide; restart one of them"
        );
    }
    inner.mark_up();
    let mut sub = inner.sub.clone();
    if !inner.subscribed.load(Ordering::SeqCst) {
        sub.subscribe(&[keys.all(), keys.inbox(node)]).await?;
        inner.subscribed.store(true, Ordering::SeqCst);
    } else {
        // Notices a dropped subscription and makes the manager reconnect.
        redis::cmd("PING").query_async::<()>(&mut sub).await?;
    }
    Ok(())
}

/// Write this node's whole registry afresh: after start-up, a lost write or
/// a Redis that restarted empty.
async fn rewrite(inner: &Inner, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    let keys = &inner.keys;
    let node = inner.node;
    let ttl = inner.ttl.as_millis() as u64;
    let old_rooms: Vec<String> = redis::cmd("SMEMBERS").arg(keys.rooms(node)).query_async(conn).await?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("DEL").arg(keys.clients(node)).arg(keys.users(node)).arg(keys.rooms(node)).ignore();
    for room in &old_rooms {
        pipe.cmd("DEL").arg(keys.room(node, room)).ignore();
    }
    if let Some(hub) = inner.hub() {
        let (clients, rooms) = hub.snapshot();
        for (id, user) in &clients {
            pipe.cmd("SADD").arg(keys.clients(node)).arg(*id).ignore();
            if !user.is_unit() {
                let json = to_json(user).unwrap_or_else(|_| "null".into());
                pipe.cmd("HSET").arg(keys.users(node)).arg(*id).arg(json).ignore();
            }
        }
        for (room, members) in &rooms {
            pipe.cmd("SADD").arg(keys.rooms(node)).arg(room).ignore();
            pipe.cmd("SADD").arg(keys.room(node, room)).arg(members).ignore();
            pipe.cmd("PEXPIRE").arg(keys.room(node, room)).arg(ttl).ignore();
        }
    }
    pipe.query_async::<()>(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_node_and_stay_exact_in_javascript() {
        let id = ((MAX_NODES - 1) << 32) + u32::MAX as u64;
        assert!(id < 1 << 53);
        assert_eq!(node_of(id), (MAX_NODES - 1) as u32);
        assert_eq!(node_of((7 << 32) + 1), 7);
    }

    #[test]
    fn passwords_stay_out_of_the_log() {
        assert_eq!(redacted("redis://user:secret@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
