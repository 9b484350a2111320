//! The one place that decides where a reply goes (SPEC section 3):
//! MESSAGE and unknown types to the sender, BROADCAST to everyone (minus
//! the sender when `excludeSenderOnBroadcast`), SYNC to the sender as a
//! byte difference against the previous message of the invocation.
//!
//! Replies are encoded once; a broadcast shares the same bytes with every
//! recipient.

use bytes::Bytes;
use rhai::{Dynamic, ImmutableString, Map};
use serde_json::json;

use std::sync::Arc;

use crate::cluster::ClusterError;
use crate::errors::ErrorCode;
use crate::hub::{Audience, ClientId, Hub, Writes};
use crate::metrics::Metrics;
use crate::protocol::{encode_parts, sync, EventType, ProtocolError, HEADER_LEN};

/// A reply a plug produced, checked and encoded: the payload's JSON is
/// written straight into the message (no second buffer, no copy), and a
/// broadcast shares these bytes with every recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The whole message in the wire format.
    frame: Vec<u8>,
}

/// What is wrong with a value a plug tried to send. The text reaches the
/// plug author in an ERROR reply.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReplyError {
    #[error("a reply must be a map like #{{payload: ...}}, not {0}")]
    NotAMap(String),
    #[error("a reply needs a `payload` field (e.g. #{{payload: #{{ok: true}}}})")]
    NoPayload,
    #[error("reply `event` must be a string, not {0}")]
    BadEvent(String),
    #[error("reply event name is {0} bytes; at most 255 fit in the format")]
    EventTooLong(usize),
    #[error("reply `type` must be an integer from 0 to 255 but 11 (END, the server's), see EventType::..., not {0}")]
    BadType(String),
    #[error("reply payload cannot be turned into JSON: {0}")]
    NotJson(String),
    #[error("reply is {0} bytes; a message holds at most 4 GiB")]
    TooLong(usize),
    #[error("{0}")]
    BadRoom(String),
}

/// The longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 128;

/// Room names are 1 to [`MAX_ROOM_LEN`] bytes.
pub fn check_room(room: &str) -> Result<(), String> {
    if room.is_empty() {
        return Err("a room name cannot be empty".into());
    }
    if room.len() > MAX_ROOM_LEN {
        return Err(format!("a room name is at most {MAX_ROOM_LEN} bytes; this one is {}", room.len()));
    }
    Ok(())
}

impl Reply {
    /// Read a reply map; `event` defaults to `default_event`, `type` to
    /// MESSAGE. A `room` field is ignored: see [`Reply::from_yield`].
    pub fn from_dynamic(value: Dynamic, default_event: &str) -> Result<Reply, ReplyError> {
        Reply::read(value, default_event, default_event, false).map(|(reply, _)| reply)
    }

    /// Read a yielded reply, which may name a `room` to go to (then its
    /// type defaults to BROADCAST). Its event defaults to `to_sender` when
    /// it goes to the sender, else (a room, a BROADCAST) to `to_others`:
    /// a request's tag is the sender's business only.
    pub fn from_yield(
        value: Dynamic,
        to_sender: &str,
        to_others: &str,
    ) -> Result<(Reply, Option<ImmutableString>), ReplyError> {
        Reply::read(value, to_sender, to_others, true)
    }

    fn read(
        value: Dynamic,
        to_sender: &str,
        to_others: &str,
        rooms: bool,
    ) -> Result<(Reply, Option<ImmutableString>), ReplyError> {
        let type_name = value.type_name();
        let map: Map = value.try_cast().ok_or_else(|| ReplyError::NotAMap(type_name.to_owned()))?;
        // One pass over the map takes the four fields a reply may have
        // (others are ignored): four `remove`s cost a key search each.
        let (mut payload, mut event, mut room, mut event_type) = (None, None, None, None);
        for (key, value) in map {
            match key.as_str() {
                "payload" => payload = Some(value),
                "event" => event = Some(value),
                "room" => room = Some(value),
                "type" => event_type = Some(value),
                _ => {}
            }
        }
        let payload = payload.ok_or(ReplyError::NoPayload)?;
        let event = match event {
            None => None,
            Some(e) if e.is_string() => Some(e.into_immutable_string().unwrap_or_default()),
            Some(e) => return Err(ReplyError::BadEvent(e.type_name().to_owned())),
        };
        let room = match room {
            Some(r) if rooms && r.is_string() => {
                let room = r.into_immutable_string().unwrap_or_default();
                check_room(&room).map_err(ReplyError::BadRoom)?;
                Some(room)
            }
            Some(r) if rooms => {
                return Err(ReplyError::BadRoom(format!("reply `room` must be a string, not {}", r.type_name())))
            }
            _ => None,
        };
        let event_type = match event_type {
            None if room.is_some() => EventType::BROADCAST,
            None => EventType::MESSAGE,
            Some(t) => t
                .as_int()
                .ok()
                .and_then(|n| u8::try_from(n).ok())
                .map(EventType)
                .filter(|t| *t != EventType::END)
                .ok_or_else(|| ReplyError::BadType(t.to_string()))?,
        };
        let shared = room.is_some() || event_type == EventType::BROADCAST;
        let event = event.as_deref().unwrap_or(if shared { to_others } else { to_sender });
        if event.len() > 255 {
            return Err(ReplyError::EventTooLong(event.len()));
        }
        Ok((Reply::new(event_type, event, &payload)?, room))
    }

    /// Encode a reply with `payload` rendered as JSON. The JSON is written
    /// to a reusable per-thread buffer first, so the message gets exactly
    /// its size: queued replies are bounded by their length
    /// (`limits.outboundQueueBytes`), and spare capacity would escape that.
    pub fn new(event_type: EventType, event: &str, payload: &Dynamic) -> Result<Reply, ReplyError> {
        JSON_SCRATCH.with(|cell| {
            let mut scratch = cell.try_borrow_mut().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
            scratch.clear();
            let written = serde_json::to_writer(&mut scratch, payload).map_err(|e| ReplyError::NotJson(e.to_string()));
            // encode_parts allocates the message at exactly its size.
            let frame = written.and_then(|()| {
                encode_parts(event_type, event, &scratch).map(|frame| Reply { frame }).map_err(|e| match e {
                    ProtocolError::EventTooLong(n) => ReplyError::EventTooLong(n),
                    _ => ReplyError::TooLong(HEADER_LEN + event.len() + scratch.len()),
                })
            });
            // Keep the buffer for the next reply unless one huge reply grew it.
            if scratch.capacity() <= MAX_SCRATCH {
                if let Ok(mut slot) = cell.try_borrow_mut() {
                    *slot = scratch;
                }
            }
            frame
        })
    }

    pub fn event_type(&self) -> EventType {
        EventType(self.frame[4])
    }

    pub fn set_event_type(&mut self, event_type: EventType) {
        self.frame[4] = event_type.0;
    }

    pub fn event(&self) -> &str {
        let end = HEADER_LEN + self.frame[5] as usize;
        std::str::from_utf8(&self.frame[HEADER_LEN..end]).unwrap_or_default()
    }

    /// The payload's JSON text.
    pub fn payload(&self) -> &str {
        let start = HEADER_LEN + self.frame[5] as usize;
        std::str::from_utf8(&self.frame[start..]).unwrap_or_default()
    }

    /// The encoded message's length in bytes.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// The encoded message.
    pub fn encode(self) -> Bytes {
        Bytes::from(self.frame)
    }
}

thread_local! {
    /// Where replies' JSON is rendered before it is copied into a message.
    static JSON_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest render buffer a thread keeps between replies: plug threads
/// can number in the hundreds (`limits.maxInFlight`), so a few large
/// replies must not leave each holding a large buffer.
const MAX_SCRATCH: usize = 16 * 1024;

/// The base of an invocation's next SYNC difference: the bytes of the last
/// full message the client holds.
pub type SyncBase = Bytes;

/// Routes replies through the hub.
#[derive(Clone)]
pub struct Router {
    hub: Hub,
    exclude_sender: bool,
    /// Replies by type, ERRORs by code.
    metrics: Arc<Metrics>,
}

/// The sender is gone: the plug should stop.
#[derive(Debug, PartialEq, Eq)]
pub struct Gone;

/// Why a yield did not go (all) the way.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The sender is gone: the plug should stop.
    Gone,
    /// A broadcast reached this node's clients only.
    Cluster(ClusterError),
}

impl Router {
    pub fn new(hub: Hub, exclude_sender: bool, metrics: Arc<Metrics>) -> Router {
        Router { hub, exclude_sender, metrics }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Deliver one yielded reply from `sender`'s invocation. Replies to the
    /// sender wait while its queue is full; `pause` waits a moment and says
    /// whether to give up. `writes` is for a broadcast.
    pub fn route(
        &self,
        sender: ClientId,
        reply: Reply,
        sync_base: &mut SyncBase,
        writes: Writes,
        pause: impl FnMut() -> bool,
    ) -> Result<(), RouteError> {
        let bytes = match reply.event_type() {
            EventType::BROADCAST => {
                let sent = self.broadcast(sender, reply.encode(), writes, pause);
                return sent.map(|_| ()).map_err(RouteError::Cluster);
            }
            EventType::SYNC => {
                let event = reply.event().to_owned();
                let full = reply.encode();
                let patch = sync::diff(sync_base, &full);
                *sync_base = full;
                let msg = encode_parts(EventType::SYNC, &event, patch.as_bytes()).map(Bytes::from);
                msg.unwrap_or_else(|e| error_bytes(&event, ErrorCode::ScriptError, &e.to_string(), json!({})))
            }
            _ => reply.encode(),
        };
        self.metrics.sent(&bytes);
        self.hub.send_waiting(sender, bytes, pause).map_err(|_| RouteError::Gone)
    }

    /// A broadcast caused by `sender`, under the `excludeSenderOnBroadcast`
    /// rule, waiting (through `pause`) for readers whose queue is full: how
    /// many clients of this node it was queued for. With several nodes it is
    /// also shared with the others; an error says that part failed (this
    /// node's clients have it all the same). `writes` is for this node's
    /// receivers ([`Writes`]).
    pub fn broadcast(
        &self,
        sender: ClientId,
        bytes: Bytes,
        writes: Writes,
        pause: impl FnMut() -> bool,
    ) -> Result<usize, ClusterError> {
        self.fan_out(Audience::All, sender, bytes, writes, pause)
    }

    /// A send to `room` caused by `sender` (a room yield, `rooms::send`),
    /// as [`Router::broadcast`] to the room's members.
    pub fn room_send(
        &self,
        sender: ClientId,
        room: &str,
        bytes: Bytes,
        writes: Writes,
        pause: impl FnMut() -> bool,
    ) -> Result<usize, ClusterError> {
        self.fan_out(Audience::Room(room), sender, bytes, writes, pause)
    }

    fn fan_out(
        &self,
        to: Audience<'_>,
        sender: ClientId,
        bytes: Bytes,
        writes: Writes,
        pause: impl FnMut() -> bool,
    ) -> Result<usize, ClusterError> {
        let except = self.exclude_sender.then_some(sender);
        self.metrics.sent(&bytes);
        let shared = self.hub.backplane().map(|b| b.share(to, except, &bytes));
        let queued = self.hub.fan_out_waiting(to, bytes, except, writes, pause);
        shared.unwrap_or(Ok(())).map(|()| queued)
    }

    /// `send_to` from a plug to a client of this node: waits for room, cuts
    /// off a reader that is stuck. None when no client here has that id (it
    /// may be another node's).
    pub fn send_to_local(&self, id: ClientId, bytes: Bytes, pause: impl FnMut() -> bool) -> Option<bool> {
        self.hub.handle(id)?;
        self.metrics.sent(&bytes);
        Some(self.hub.send_to_waiting(id, bytes, pause))
    }

    pub fn to_client(&self, id: ClientId, bytes: Bytes) -> Result<(), Gone> {
        self.metrics.sent(&bytes);
        if self.hub.send_to(id, bytes) {
            Ok(())
        } else {
            Err(Gone)
        }
    }

    /// The end of a tagged request that ran no plug (not found, broken).
    pub fn end(&self, client: ClientId, event: &str) {
        let _ = self.to_client(client, end_bytes(event));
    }

    pub fn not_found(&self, client: ClientId, event: &str) {
        let bytes = encode_parts(EventType::NOT_FOUND, event, b"{}").map(Bytes::from);
        let _ = self.to_client(
            client,
            bytes.unwrap_or_else(|e| error_bytes("", ErrorCode::BadFrame, &e.to_string(), json!({}))),
        );
    }

    /// Send an ERROR whose payload is the given JSON object.
    pub fn error(&self, client: ClientId, event: &str, payload: serde_json::Value) {
        self.metrics.error(payload.get("error").and_then(|c| c.as_str()).unwrap_or_default());
        let _ = self.to_client(client, error_from_value(event, &payload));
    }
}

/// The END message of a tagged request: type END, the tagged event, `{}`.
pub fn end_bytes(event: &str) -> Bytes {
    Bytes::from(encode_parts(EventType::END, event, b"{}").unwrap_or_default())
}

/// An ERROR message: `{"error": code, "message": text, ...context}`.
pub fn error_bytes(event: &str, code: ErrorCode, message: &str, context: serde_json::Value) -> Bytes {
    error_from_value(event, &code.payload(message, context))
}

fn error_from_value(event: &str, payload: &serde_json::Value) -> Bytes {
    // An event name too long to echo back is replaced by "" rather than
    // losing the error.
    let event = if event.len() <= 255 { event } else { "" };
    let text = payload.to_string();
    Bytes::from(encode_parts(EventType::ERROR, event, text.as_bytes()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode;
    use rhai::Engine;

    fn reply(script: &str) -> Result<Reply, ReplyError> {
        let value: Dynamic = Engine::new().eval(script).unwrap();
        Reply::from_dynamic(value, "req")
    }

    #[test]
    fn defaults_event_and_type() {
        let r = reply("#{payload: #{a: 1, b: [true, ()]}}").unwrap();
        assert_eq!((r.event_type(), r.event(), r.payload()), (EventType::MESSAGE, "req", r#"{"a":1,"b":[true,null]}"#));
        let msg = decode(&r.encode()).unwrap();
        assert_eq!(msg, crate::protocol::Message::new(EventType::MESSAGE, "req", r#"{"a":1,"b":[true,null]}"#));
        let mut r = reply(r#"#{payload: 1, event: "x", type: 3}"#).unwrap();
        assert_eq!((r.event_type(), r.event(), r.payload()), (EventType::SYNC, "x", "1"));
        r.set_event_type(EventType::BROADCAST);
        assert_eq!(decode(&r.encode()).unwrap(), crate::protocol::Message::new(EventType::BROADCAST, "x", "1"));
    }

    #[test]
    fn every_field_is_read_and_others_are_ignored() {
        let value: Dynamic = Engine::new()
            .eval(r#"#{zz: 0, type: 3, room: "lobby", note: "x", payload: [1], event: "ev", aa: ()}"#)
            .unwrap();
        let (r, room) = Reply::from_yield(value, "to-sender", "to-others").unwrap();
        assert_eq!((r.event_type(), r.event(), r.payload()), (EventType::SYNC, "ev", "[1]"));
        assert_eq!(room.as_deref(), Some("lobby"));
        // Without `type` a reply to a room is a BROADCAST with the others' event.
        let value: Dynamic = Engine::new().eval(r#"#{room: "lobby", payload: 2}"#).unwrap();
        let (r, _) = Reply::from_yield(value, "to-sender", "to-others").unwrap();
        assert_eq!((r.event_type(), r.event()), (EventType::BROADCAST, "to-others"));
        // `from_dynamic` ignores `room` (its callers have no rooms).
        let value: Dynamic = Engine::new().eval(r#"#{room: 5, payload: 2}"#).unwrap();
        assert!(Reply::from_dynamic(value, "req").is_ok());
    }

    #[test]
    fn replies_are_exact_size_whatever_came_before() {
        let big = Dynamic::from("x".repeat(100_000));
        let r = Reply::new(EventType::MESSAGE, "e", &big).unwrap();
        assert_eq!(r.payload().len(), 100_002);
        let bytes = r.encode();
        assert_eq!(decode(&bytes).unwrap().payload.len(), 100_002);
        let small = Reply::new(EventType::MESSAGE, "e", &Dynamic::from(1_i64)).unwrap();
        assert_eq!(small.payload(), "1");
        // Exact size: queues are bounded by length, so capacity must match.
        let frame = small.frame;
        assert_eq!((frame.len(), frame.capacity()), (HEADER_LEN + 1 + 1, HEADER_LEN + 1 + 1));
    }

    #[test]
    fn explains_bad_replies() {
        assert_eq!(reply("42"), Err(ReplyError::NotAMap("i64".into())));
        assert_eq!(reply("#{event: \"x\"}"), Err(ReplyError::NoPayload));
        assert_eq!(reply("#{payload: 1, event: 5}"), Err(ReplyError::BadEvent("i64".into())));
        assert_eq!(reply("#{payload: 1, type: 256}"), Err(ReplyError::BadType("256".into())));
        assert_eq!(reply("#{payload: 1, type: \"SYNC\"}"), Err(ReplyError::BadType("SYNC".into())));
        assert!(matches!(
            reply("let e = \"x\"; e.pad(300, \"x\"); #{payload: 1, event: e}"),
            Err(ReplyError::EventTooLong(300))
        ));
    }

    #[test]
    fn error_payloads_carry_code_message_and_context() {
        let bytes = error_bytes("e", ErrorCode::ScriptError, "boom", json!({"plug": "p", "line": 3}));
        let msg = decode(&bytes).unwrap();
        assert_eq!(msg.event_type, EventType::ERROR);
        let v: serde_json::Value = serde_json::from_str(&msg.payload).unwrap();
        assert_eq!(v, json!({"error": "script_error", "message": "boom", "plug": "p", "line": 3}));
    }

    #[test]
    fn sync_replies_chain_their_base() {
        let hub = Hub::new();
        let client = hub.register();
        let router = Router::new(hub, true, Arc::new(Metrics::new()));
        let request = Bytes::from_static(b"\0\0\0\x0a\x00\x04sync");
        let mut base = request.clone();
        let r =
            Reply::new(EventType::SYNC, "sync", &Dynamic::from_map(Map::from([("a".into(), Dynamic::from(1_i64))])));
        let r = r.unwrap();
        router.route(client.id(), r.clone(), &mut base, Writes::Queued, || true).unwrap();
        router.route(client.id(), r, &mut base, Writes::Queued, || true).unwrap();
        let mut held = request.to_vec();
        for _ in 0..2 {
            let Some(crate::hub::Outbound::Binary(b)) = client.rx.try_recv() else { panic!("no message") };
            let patch = decode(&b).unwrap();
            held = sync::apply(&held, &patch.payload).unwrap();
            assert_eq!(decode(&held).unwrap().payload, "{\"a\":1}");
        }
    }
}
