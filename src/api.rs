//! The HTTP API (SPEC 9.5): the outside world calling in, on the WebSocket
//! port, off unless `api.key` is set.
//!
//! - `POST /api/publish` `{event, payload, type?, to?}` sends a message to
//!   every client, one client, or a room, and answers `{"delivered": n}`.
//! - `POST /api/call/EVENT` runs plug EVENT with the body as its payload,
//!   as a client with no socket would, and answers `{"replies": [...]}`.
//!
//! Every request needs `Authorization: Bearer <api.key>`, compared in
//! constant time. Every error is a JSON `{error, message}` with its HTTP
//! status: 401 key, 400 body, 404 event, 413 size, 422 plug failure, 503
//! shutting down.

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::app::App;
use crate::errors::ErrorCode;
use crate::hub::Audience;
use crate::plugs::call::CallOutcome;
use crate::plugs::request::Request;
use crate::plugs::router::check_room;
use crate::protocol::{encode_parts, EventType};

/// `POST /api/publish` and `POST /api/call/...`.
pub fn routes(app: App) -> BoxedFilter<(Box<dyn Reply>,)> {
    let publish_app = app.clone();
    let publish = warp::path!("api" / "publish")
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::stream())
        .then(move |auth: Option<String>, body| {
            let app = publish_app.clone();
            async move { into_reply(publish(&app, auth, body).await) }
        });
    let call = warp::path("api")
        .and(warp::path("call"))
        .and(warp::path::tail())
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::stream())
        .then(move |tail: warp::path::Tail, auth: Option<String>, body| {
            let app = app.clone();
            async move { into_reply(call(&app, tail.as_str(), auth, body).await) }
        });
    publish.or(call).unify().boxed()
}

/// A JSON answer with its status.
type Answer = (StatusCode, Value);

fn into_reply(answer: Result<Answer, Answer>) -> Box<dyn Reply> {
    let (status, body) = answer.unwrap_or_else(|err| err);
    Box::new(warp::reply::with_status(warp::reply::json(&body), status))
}

fn error(status: StatusCode, code: ErrorCode, message: &str) -> Answer {
    (status, code.payload(message, json!({})))
}

/// The checks every API request passes first: the API is on, the server
/// is not stopping, the key is right, the body fits `payloadLimit`.
async fn admit<S, B>(app: &App, auth: Option<String>, body: S) -> Result<Bytes, Answer>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let key = &app.settings.api.key;
    if key.is_empty() {
        return Err(error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "the HTTP API is off: set api.key to turn it on",
        ));
    }
    if app.is_draining() {
        let text = "the server is shutting down and takes no new requests";
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ShuttingDown, text));
    }
    let given = auth.as_deref().and_then(bearer);
    match given {
        None => {
            let text = "this API needs an `Authorization: Bearer <api.key>` header";
            return Err(error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, text));
        }
        Some(given) if !same_key(given.as_bytes(), key.as_bytes()) => {
            return Err(error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "wrong API key"));
        }
        Some(_) => {}
    }
    read_body(body, app.settings.payload_limit).await
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme's name
/// in any case, as HTTP has it).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Compare keys in time that depends only on their lengths, so a wrong
/// key's timing says nothing about how much of it was right.
fn same_key(given: &[u8], key: &[u8]) -> bool {
    let mut equal = subtle::Choice::from(u8::from(given.len() == key.len()));
    for i in 0..given.len().max(key.len()) {
        equal &= given.get(i).unwrap_or(&0).ct_eq(key.get(i).unwrap_or(&0));
    }
    equal.into()
}

/// The whole body, unless it passes `limit` bytes (413).
async fn read_body<S, B>(mut body: S, limit: usize) -> Result<Bytes, Answer>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &format!("cannot read the body: {e}"))
        })?;
        if out.len() + chunk.remaining() > limit {
            let text = format!("the body is larger than payloadLimit ({limit} bytes)");
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge.payload(&text, json!({"limit": limit})),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(Bytes::from(out))
}

fn bad_request(message: String) -> Answer {
    error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &message)
}

/// `POST /api/publish`.
async fn publish<S, B>(app: &App, auth: Option<String>, body: S) -> Result<Answer, Answer>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let body = admit(app, auth, body).await?;
    let request: Value =
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("the body is not valid JSON: {e}")))?;
    let publish = Publish::from_json(request).map_err(bad_request)?;
    let bytes = encode_parts(publish.event_type, &publish.event, publish.payload.to_string().as_bytes())
        .map_err(|e| bad_request(e.to_string()))?;
    let bytes = Bytes::from(bytes);
    let (delivered, cluster) = match &publish.to {
        Target::All => share(app, Audience::All, bytes),
        Target::Room(room) => share(app, Audience::Room(room), bytes),
        Target::Client(id) if app.hub.handle(*id).is_some() => (usize::from(app.hub.send_to(*id, bytes)), Ok(())),
        Target::Client(id) => match app.hub.backplane().cloned() {
            // Another node's client: asking Redis waits, so not on this worker.
            Some(backplane) => {
                let id = *id;
                let asked = tokio::task::spawn_blocking(move || backplane.send_to(id, &bytes)).await;
                match asked {
                    Ok(Ok(sent)) => (usize::from(sent), Ok(())),
                    Ok(Err(e)) => (0, Err(e)),
                    Err(_) => (0, Err(crate::cluster::ClusterError::Down("the lookup did not finish".into()))),
                }
            }
            None => (0, Ok(())),
        },
    };
    match cluster {
        Ok(()) => Ok((StatusCode::OK, json!({ "delivered": delivered }))),
        Err(e) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ClusterUnavailable.payload(&e.to_string(), json!({ "delivered": delivered })),
        )),
    }
}

/// Deliver to this node's audience and share with the other nodes: how
/// many here, and whether the other nodes could be reached.
fn share(app: &App, to: Audience<'_>, bytes: Bytes) -> (usize, Result<(), crate::cluster::ClusterError>) {
    let shared = app.hub.backplane().map_or(Ok(()), |b| b.share(to, None, &bytes));
    (app.hub.fan_out(to, bytes, None), shared)
}

/// A checked publish request.
#[derive(Debug, PartialEq)]
struct Publish {
    event: String,
    payload: Value,
    event_type: EventType,
    to: Target,
}

#[derive(Debug, PartialEq)]
enum Target {
    All,
    Client(u64),
    Room(String),
}

impl Publish {
    fn from_json(value: Value) -> Result<Publish, String> {
        let Value::Object(mut fields) = value else {
            return Err("the body must be a JSON object: {\"event\", \"payload\", \"type\"?, \"to\"?}".into());
        };
        let event = match fields.remove("event") {
            Some(Value::String(e)) if !e.is_empty() && e.len() <= 255 => e,
            Some(Value::String(e)) => return Err(format!("`event` must be 1 to 255 bytes, not {}", e.len())),
            Some(_) => return Err("`event` must be a string".into()),
            None => return Err("the body needs an `event`".into()),
        };
        let payload = fields.remove("payload").unwrap_or_else(|| json!({}));
        let to = match fields.remove("to") {
            None => Target::All,
            Some(Value::String(s)) if s == "all" => Target::All,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|id| id > 0) => Target::Client(n.as_u64().unwrap_or(0)),
            Some(Value::Object(o)) if o.len() == 1 && o.get("room").is_some_and(Value::is_string) => {
                let room = o.get("room").and_then(Value::as_str).unwrap_or_default().to_owned();
                check_room(&room)?;
                Target::Room(room)
            }
            Some(other) => {
                return Err(format!("`to` must be \"all\", a client id or {{\"room\": \"name\"}}, not {other}"))
            }
        };
        let default_type = if matches!(to, Target::Client(_)) { EventType::MESSAGE } else { EventType::BROADCAST };
        let event_type = match fields.remove("type") {
            None => default_type,
            Some(t) => t
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .map(EventType)
                .ok_or_else(|| format!("`type` must be an integer from 0 to 255, not {t}"))?,
        };
        if let Some(unknown) = fields.keys().next() {
            return Err(format!("unknown field `{unknown}`; the fields are event, payload, type, to"));
        }
        if event_type == EventType::SYNC {
            return Err("`type` 3 (SYNC) is a difference against the receiver's previous message, which a publish \
                        has not: publish the whole payload as MESSAGE (0) or BROADCAST (1)"
                .into());
        }
        Ok(Publish { event, payload, event_type, to })
    }
}

/// `POST /api/call/EVENT`.
async fn call<S, B>(app: &App, tail: &str, auth: Option<String>, body: S) -> Result<Answer, Answer>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let body = admit(app, auth, body).await?;
    let event = percent_encoding::percent_decode_str(tail)
        .decode_utf8()
        .map_err(|_| bad_request("the event name in the path is not UTF-8".into()))?;
    if event.is_empty() {
        return Err(bad_request("name the plug: POST /api/call/EVENT".into()));
    }
    let text = std::str::from_utf8(&body).map_err(|_| bad_request("the body is not UTF-8".into()))?;
    let frame = encode_parts(EventType::MESSAGE, &event, text.as_bytes()).map_err(|e| bad_request(e.to_string()))?;
    let request =
        Request::read(&frame).map_err(|e| bad_request(format!("the body {}", strip_payload(&e.to_string()))))?;
    match app.plugs.call(request).await {
        CallOutcome::NotFound => {
            Err(error(StatusCode::NOT_FOUND, ErrorCode::NotFound, &format!("no plug answers the event `{event}`")))
        }
        CallOutcome::Failed(payload) => Err((StatusCode::UNPROCESSABLE_ENTITY, payload)),
        CallOutcome::Done(replies) => {
            let replies: Vec<Value> = replies
                .iter()
                .map(|r| {
                    let payload = serde_json::from_str(r.payload()).unwrap_or(Value::Null);
                    json!({ "type": r.event_type().0, "event": r.event(), "payload": payload })
                })
                .collect();
            Ok((StatusCode::OK, json!({ "replies": replies })))
        }
    }
}

/// "payload is not valid JSON: ..." reads "the body is not valid JSON".
fn strip_payload(message: &str) -> &str {
    message.strip_prefix("payload ").unwrap_or(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(same_key(b"secret", b"secret"));
        assert!(!same_key(b"secreT", b"secret"));
        assert!(!same_key(b"secret1", b"secret"));
        assert!(!same_key(b"secre", b"secret"));
        assert!(!same_key(b"", b"secret"));
    }

    #[test]
    fn publish_requests_are_checked() {
        let p = Publish::from_json(json!({"event": "news", "payload": {"a": 1}})).unwrap();
        assert_eq!(
            p,
            Publish {
                event: "news".into(),
                payload: json!({"a": 1}),
                event_type: EventType::BROADCAST,
                to: Target::All
            }
        );
        let p = Publish::from_json(json!({"event": "dm", "to": 7, "type": 6})).unwrap();
        assert_eq!((p.to, p.event_type, p.payload), (Target::Client(7), EventType::CUSTOM_1, json!({})));
        let p = Publish::from_json(json!({"event": "dm", "to": 7})).unwrap();
        assert_eq!(p.event_type, EventType::MESSAGE, "one client: MESSAGE by default");
        let p = Publish::from_json(json!({"event": "chat", "to": {"room": "lobby"}})).unwrap();
        assert_eq!((p.to, p.event_type), (Target::Room("lobby".into()), EventType::BROADCAST));
        for (bad, text) in [
            (json!([1]), "JSON object"),
            (json!({}), "needs an `event`"),
            (json!({"event": ""}), "1 to 255 bytes"),
            (json!({"event": "x".repeat(256)}), "1 to 255 bytes"),
            (json!({"event": 5}), "must be a string"),
            (json!({"event": "e", "to": "some"}), "`to` must be"),
            (json!({"event": "e", "to": -1}), "`to` must be"),
            (json!({"event": "e", "to": {"room": ""}}), "cannot be empty"),
            (json!({"event": "e", "to": {"room": "r", "x": 1}}), "`to` must be"),
            (json!({"event": "e", "type": 256}), "`type` must be"),
            (json!({"event": "e", "type": 3}), "SYNC"),
            (json!({"event": "e", "tpye": 1}), "unknown field `tpye`"),
        ] {
            let err = Publish::from_json(bad.clone()).unwrap_err();
            assert!(err.contains(text), "{bad}: {err}");
        }
    }
}
