//! The one place that decides where a reply goes (SPEC section 3):
//! MESSAGE and unknown types to the sender, BROADCAST to everyone (minus
//! the sender when `excludeSenderOnBroadcast`), SYNC to the sender as a
//! byte difference against the previous message of the invocation.
//!
//! Replies are encoded once; a broadcast shares the same bytes with every
//! recipient.

use bytes::Bytes;
use rhai::{Dynamic, Map};
use serde_json::json;

use crate::hub::{ClientId, Hub};
use crate::protocol::{encode_parts, sync, EventType};

/// A reply a plug produced, checked and with its JSON payload rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub event_type: EventType,
    pub event: String,
    pub payload: String,
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
    #[error("reply `type` must be an integer from 0 to 255 (see EventType::...), not {0}")]
    BadType(String),
    #[error("reply payload cannot be turned into JSON: {0}")]
    NotJson(String),
}

impl Reply {
    /// Read a reply map; `event` defaults to the request's event, `type`
    /// to MESSAGE.
    pub fn from_dynamic(value: Dynamic, default_event: &str) -> Result<Reply, ReplyError> {
        let type_name = value.type_name();
        let mut map: Map = value.try_cast().ok_or_else(|| ReplyError::NotAMap(type_name.to_owned()))?;
        let payload = map.remove("payload").ok_or(ReplyError::NoPayload)?;
        let event = match map.remove("event") {
            None => default_event.to_owned(),
            Some(e) if e.is_string() => e.into_string().unwrap_or_default(),
            Some(e) => return Err(ReplyError::BadEvent(e.type_name().to_owned())),
        };
        if event.len() > 255 {
            return Err(ReplyError::EventTooLong(event.len()));
        }
        let event_type = match map.remove("type") {
            None => EventType::MESSAGE,
            Some(t) => t
                .as_int()
                .ok()
                .and_then(|n| u8::try_from(n).ok())
                .map(EventType)
                .ok_or_else(|| ReplyError::BadType(t.to_string()))?,
        };
        let payload = serde_json::to_string(&payload).map_err(|e| ReplyError::NotJson(e.to_string()))?;
        Ok(Reply { event_type, event, payload })
    }

    /// The encoded message. Cannot fail: the event length was checked and
    /// payloads are far below 4 GiB (the engine limits string sizes).
    pub fn encode(&self) -> Bytes {
        encode_parts(self.event_type, &self.event, self.payload.as_bytes())
            .map(Bytes::from)
            .unwrap_or_else(|e| error_bytes(&self.event, "script_error", &e.to_string(), json!({})))
    }
}

/// The base of an invocation's next SYNC difference: the bytes of the last
/// full message the client holds.
pub type SyncBase = Bytes;

/// Routes replies through the hub.
#[derive(Clone)]
pub struct Router {
    hub: Hub,
    exclude_sender: bool,
}

/// The sender is gone: the plug should stop.
#[derive(Debug, PartialEq, Eq)]
pub struct Gone;

impl Router {
    pub fn new(hub: Hub, exclude_sender: bool) -> Router {
        Router { hub, exclude_sender }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Deliver one yielded reply from `sender`'s invocation. Replies to the
    /// sender wait while its queue is full; `pause` waits a moment and says
    /// whether to give up.
    pub fn route(
        &self,
        sender: ClientId,
        reply: &Reply,
        sync_base: &mut SyncBase,
        pause: impl FnMut() -> bool,
    ) -> Result<(), Gone> {
        let bytes = match reply.event_type {
            EventType::BROADCAST => {
                self.broadcast(sender, reply.encode(), pause);
                return Ok(());
            }
            EventType::SYNC => {
                let full = reply.encode();
                let patch = sync::diff(sync_base, &full);
                *sync_base = full;
                let msg = encode_parts(EventType::SYNC, &reply.event, patch.as_bytes()).map(Bytes::from);
                msg.unwrap_or_else(|e| error_bytes(&reply.event, "script_error", &e.to_string(), json!({})))
            }
            _ => reply.encode(),
        };
        self.hub.send_waiting(sender, bytes, pause).map_err(|_| Gone)
    }

    /// A broadcast caused by `sender`, under the `excludeSenderOnBroadcast`
    /// rule, waiting (through `pause`) for readers whose queue is full.
    pub fn broadcast(&self, sender: ClientId, bytes: Bytes, pause: impl FnMut() -> bool) -> usize {
        self.hub.broadcast_waiting(bytes, self.exclude_sender.then_some(sender), pause)
    }

    /// `send_to` from a plug: waits for room, cuts off a reader that is stuck.
    pub fn send_to(&self, id: ClientId, bytes: Bytes, pause: impl FnMut() -> bool) -> bool {
        self.hub.send_to_waiting(id, bytes, pause)
    }

    pub fn to_client(&self, id: ClientId, bytes: Bytes) -> Result<(), Gone> {
        if self.hub.send_to(id, bytes) {
            Ok(())
        } else {
            Err(Gone)
        }
    }

    pub fn not_found(&self, client: ClientId, event: &str) {
        let bytes = encode_parts(EventType::NOT_FOUND, event, b"{}").map(Bytes::from);
        let _ =
            self.to_client(client, bytes.unwrap_or_else(|e| error_bytes("", "bad_frame", &e.to_string(), json!({}))));
    }

    /// Send an ERROR whose payload is the given JSON object.
    pub fn error(&self, client: ClientId, event: &str, payload: serde_json::Value) {
        let _ = self.to_client(client, error_from_value(event, &payload));
    }
}

/// An ERROR message: `{"error": code, "message": text, ...context}`.
pub fn error_bytes(event: &str, code: &str, message: &str, context: serde_json::Value) -> Bytes {
    let mut payload = json!({ "error": code, "message": message });
    if let (Some(obj), serde_json::Value::Object(extra)) = (payload.as_object_mut(), context) {
        obj.extend(extra);
    }
    error_from_value(event, &payload)
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
        assert_eq!(
            r,
            Reply { event_type: EventType::MESSAGE, event: "req".into(), payload: r#"{"a":1,"b":[true,null]}"#.into() }
        );
        let r = reply(r#"#{payload: 1, event: "x", type: 3}"#).unwrap();
        assert_eq!((r.event_type, r.event.as_str()), (EventType::SYNC, "x"));
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
        let bytes = error_bytes("e", "script_error", "boom", json!({"plug": "p", "line": 3}));
        let msg = decode(&bytes).unwrap();
        assert_eq!(msg.event_type, EventType::ERROR);
        let v: serde_json::Value = serde_json::from_str(&msg.payload).unwrap();
        assert_eq!(v, json!({"error": "script_error", "message": "boom", "plug": "p", "line": 3}));
    }

    #[test]
    fn sync_replies_chain_their_base() {
        let hub = Hub::new();
        let client = hub.register();
        let router = Router::new(hub, true);
        let request = Bytes::from_static(b"\0\0\0\x0a\x00\x04sync");
        let mut base = request.clone();
        let r = Reply { event_type: EventType::SYNC, event: "sync".into(), payload: "{\"a\":1}".into() };
        router.route(client.id, &r, &mut base, || true).unwrap();
        router.route(client.id, &r, &mut base, || true).unwrap();
        let mut held = request.to_vec();
        for _ in 0..2 {
            let Some(crate::hub::Outbound::Binary(b)) = client.rx.try_recv() else { panic!("no message") };
            let patch = decode(&b).unwrap();
            held = sync::apply(&held, &patch.payload).unwrap();
            assert_eq!(decode(&held).unwrap().payload, "{\"a\":1}");
        }
    }
}
