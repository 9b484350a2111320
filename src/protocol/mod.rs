//! The wire format (SPEC section 2): one message per binary WebSocket frame.
//!
//! ```text
//! offset 0  u32 BE  total length of the message, these 4 bytes included
//! offset 4  u8      event type
//! offset 5  u8      length N of the event name
//! offset 6  N bytes event name, UTF-8
//! then      rest    payload, JSON text (UTF-8)
//! ```
//!
//! Pure: bytes in, values out. Every field is checked against the real frame
//! because the original trusted the declared length and crashed on short or
//! malformed frames; here each such frame becomes a [`ProtocolError`] that
//! the connection turns into an ERROR reply.

pub mod sync;

use std::fmt;

use crate::errors::ErrorCode;

/// Bytes before the event name: length (4), type (1), event length (1).
pub const HEADER_LEN: usize = 6;

/// The event type byte. Clients may send any value (it is informational);
/// the named constants are the ones the server gives meaning to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EventType(pub u8);

impl EventType {
    pub const MESSAGE: EventType = EventType(0);
    pub const BROADCAST: EventType = EventType(1);
    pub const AUTH: EventType = EventType(2);
    pub const SYNC: EventType = EventType(3);
    pub const ERROR: EventType = EventType(4);
    pub const NOT_FOUND: EventType = EventType(5);
    pub const CUSTOM_1: EventType = EventType(6);
    pub const CUSTOM_2: EventType = EventType(7);
    pub const CUSTOM_3: EventType = EventType(8);
    pub const CUSTOM_4: EventType = EventType(9);
    pub const CUSTOM_5: EventType = EventType(10);
    /// Server to client only: the end of a tagged request's replies
    /// (`name#tag`, see [`split_tag`]). Not among the types plugs may send.
    pub const END: EventType = EventType(11);

    /// Every named type, as scripts see them in `EventType::NAME`.
    pub const NAMED: [(&'static str, EventType); 11] = [
        ("MESSAGE", Self::MESSAGE),
        ("BROADCAST", Self::BROADCAST),
        ("AUTH", Self::AUTH),
        ("SYNC", Self::SYNC),
        ("ERROR", Self::ERROR),
        ("NOT_FOUND", Self::NOT_FOUND),
        ("CUSTOM_1", Self::CUSTOM_1),
        ("CUSTOM_2", Self::CUSTOM_2),
        ("CUSTOM_3", Self::CUSTOM_3),
        ("CUSTOM_4", Self::CUSTOM_4),
        ("CUSTOM_5", Self::CUSTOM_5),
    ];
}

/// One decoded message. `payload` is JSON text, already checked to be valid,
/// kept as text so a plug that never looks at it costs no conversion.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message {
    pub event_type: EventType,
    pub event: String,
    pub payload: String,
}

impl Message {
    pub fn new(event_type: EventType, event: impl Into<String>, payload: impl Into<String>) -> Self {
        Message { event_type, event: event.into(), payload: payload.into() }
    }
}

/// What can be wrong with a frame. The `Display` text is sent to the client,
/// so it says what was wrong in words a plug author understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("length field says {declared} bytes but the frame has {actual}")]
    LengthMismatch { declared: u64, actual: usize },
    #[error("event name length {event_len} runs past the end of the {len}-byte frame")]
    EventOverflow { event_len: usize, len: usize },
    #[error("event name is not valid UTF-8")]
    EventNotUtf8,
    #[error("payload is not valid UTF-8")]
    PayloadNotUtf8,
    #[error("payload is not valid JSON: {0}")]
    PayloadNotJson(String),
    #[error("event name is {0} bytes; at most 255 fit in the format")]
    EventTooLong(usize),
    #[error("message is {0} bytes; the length field holds at most 4294967295")]
    MessageTooLong(usize),
    #[error(
        "request tag in `{event}` {why}: write `name#tag` with a tag of 1 to 64 printable ASCII characters and no `#`"
    )]
    BadTag { event: String, why: &'static str },
}

impl ProtocolError {
    /// The stable error code clients can match on (`error` field of ERROR).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadFrame
    }
}

/// Encode a message. Fails only for names over 255 bytes or messages over
/// 4 GiB, which the format cannot express.
pub fn encode(msg: &Message) -> Result<Vec<u8>, ProtocolError> {
    encode_parts(msg.event_type, &msg.event, msg.payload.as_bytes())
}

/// Encode from borrowed parts, so replies need not build a [`Message`].
pub fn encode_parts(event_type: EventType, event: &str, payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let event_len = u8::try_from(event.len()).map_err(|_| ProtocolError::EventTooLong(event.len()))?;
    let total = HEADER_LEN + event.len() + payload.len();
    let total32 = u32::try_from(total).map_err(|_| ProtocolError::MessageTooLong(total))?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&total32.to_be_bytes());
    out.push(event_type.0);
    out.push(event_len);
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decode and check one frame. An empty payload reads as `{}` (SPEC 2).
pub fn decode(frame: &[u8]) -> Result<Message, ProtocolError> {
    let header = decode_header(frame)?;
    check_json(header.payload)?;
    Ok(Message { event_type: header.event_type, event: header.event.to_owned(), payload: header.payload.to_owned() })
}

/// A frame's fields, borrowed from it; the payload is not checked as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub event_type: EventType,
    pub event: &'a str,
    /// `{}` when the frame's payload is empty or blank.
    pub payload: &'a str,
}

/// Check everything in a frame but the payload's JSON: for a reader that
/// parses the JSON itself (`plugs::request`) instead of twice.
pub fn decode_header(frame: &[u8]) -> Result<Header<'_>, ProtocolError> {
    if frame.len() < HEADER_LEN {
        return Err(ProtocolError::TooShort { len: frame.len() });
    }
    let declared = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as u64;
    if declared != frame.len() as u64 {
        return Err(ProtocolError::LengthMismatch { declared, actual: frame.len() });
    }
    let event_type = EventType(frame[4]);
    let event_len = frame[5] as usize;
    let event_end = HEADER_LEN + event_len;
    if event_end > frame.len() {
        return Err(ProtocolError::EventOverflow { event_len, len: frame.len() });
    }
    let event = std::str::from_utf8(&frame[HEADER_LEN..event_end]).map_err(|_| ProtocolError::EventNotUtf8)?;
    let payload = std::str::from_utf8(&frame[event_end..]).map_err(|_| ProtocolError::PayloadNotUtf8)?;
    let payload = if payload.trim().is_empty() { "{}" } else { payload };
    Ok(Header { event_type, event, payload })
}

/// The most bytes a request tag may have.
pub const MAX_TAG_LEN: usize = 64;

/// Split a request's event into the plug's name and its tag: `chat#17` is
/// plug `chat` with tag `17` (SPEC 10.3), so a client can match replies to
/// requests. The tag is 1 to [`MAX_TAG_LEN`] printable ASCII bytes
/// (`!` to `~`) with no second `#`.
pub fn split_tag(event: &str) -> Result<(&str, Option<&str>), ProtocolError> {
    let Some((name, tag)) = event.split_once('#') else { return Ok((event, None)) };
    let bad = |why| Err(ProtocolError::BadTag { event: event.to_owned(), why });
    if tag.is_empty() {
        return bad("is empty");
    }
    if tag.len() > MAX_TAG_LEN {
        return bad("is longer than 64 bytes");
    }
    if tag.contains('#') {
        return bad("has a second `#`");
    }
    if !tag.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("has a character that is not printable ASCII");
    }
    Ok((name, Some(tag)))
}

/// Validate JSON without building a value.
fn check_json(text: &str) -> Result<(), ProtocolError> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| ProtocolError::PayloadNotJson(e.to_string()))
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Self::NAMED.iter().find(|(_, t)| t == self) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Property-test inputs shared by the protocol's and the request reader's
/// tests.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;

    /// Any JSON value, nested a few levels: big unsigned integers, any
    /// finite float, any string (escapes and all).
    pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
            ".*".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".*", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::json_value;
    use super::*;
    use proptest::prelude::*;

    fn frame(event: &str, payload: &str) -> Vec<u8> {
        encode(&Message::new(EventType::MESSAGE, event, payload)).unwrap()
    }

    #[test]
    fn request_tags_split_and_are_checked() {
        assert_eq!(split_tag("chat"), Ok(("chat", None)));
        assert_eq!(split_tag("chat#17"), Ok(("chat", Some("17"))));
        assert_eq!(split_tag("a/b#x-Y_z~!"), Ok(("a/b", Some("x-Y_z~!"))));
        assert_eq!(split_tag(&format!("e#{}", "t".repeat(64))).unwrap().1.map(str::len), Some(64));
        for (bad, why) in [
            ("chat#", "is empty"),
            ("chat#a#b", "second"),
            ("chat#a b", "not printable"),
            ("chat#\u{e9}", "not printable"),
            ("chat#\n", "not printable"),
        ] {
            let err = split_tag(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
            assert_eq!(err.code(), ErrorCode::BadFrame);
        }
        assert!(split_tag(&format!("e#{}", "t".repeat(65))).unwrap_err().to_string().contains("longer than 64"));
    }

    #[test]
    fn encodes_the_documented_layout() {
        let bytes = frame("echo", "{\"a\":1}");
        assert_eq!(&bytes[..4], &(6u32 + 4 + 7).to_be_bytes());
        assert_eq!(bytes[4], 0);
        assert_eq!(bytes[5], 4);
        assert_eq!(&bytes[6..10], b"echo");
        assert_eq!(&bytes[10..], b"{\"a\":1}");
    }

    #[test]
    fn empty_payload_reads_as_empty_object() {
        let bytes = encode_parts(EventType::MESSAGE, "e", b"").unwrap();
        assert_eq!(decode(&bytes).unwrap().payload, "{}");
    }

    #[test]
    fn rejects_each_kind_of_bad_frame() {
        assert_eq!(decode(&[0, 0, 0]), Err(ProtocolError::TooShort { len: 3 }));
        let mut lie = frame("echo", "{}");
        lie[3] += 1;
        assert!(matches!(decode(&lie), Err(ProtocolError::LengthMismatch { .. })));
        let mut overflow = frame("echo", "{}");
        overflow[5] = 200;
        assert!(matches!(decode(&overflow), Err(ProtocolError::EventOverflow { event_len: 200, .. })));
        let mut bad_name = frame("echo", "{}");
        bad_name[6] = 0xff;
        assert_eq!(decode(&bad_name), Err(ProtocolError::EventNotUtf8));
        let bad_utf8 = encode_parts(EventType::MESSAGE, "e", &[b'"', 0xc3, b'"']).unwrap();
        assert_eq!(decode(&bad_utf8), Err(ProtocolError::PayloadNotUtf8));
        assert!(matches!(decode(&frame("echo", "{nope")), Err(ProtocolError::PayloadNotJson(_))));
    }

    #[test]
    fn refuses_names_the_format_cannot_hold() {
        let long = "x".repeat(256);
        assert_eq!(encode(&Message::new(EventType::MESSAGE, long, "{}")), Err(ProtocolError::EventTooLong(256)));
    }

    #[test]
    fn unknown_type_bytes_pass_through() {
        let bytes = encode(&Message::new(EventType(200), "e", "1")).unwrap();
        assert_eq!(decode(&bytes).unwrap().event_type, EventType(200));
        assert_eq!(EventType(200).to_string(), "200");
        assert_eq!(EventType::SYNC.to_string(), "SYNC");
    }

    fn event_name() -> impl Strategy<Value = String> {
        ".{0,60}".prop_filter("fits in 255 bytes", |s: &String| s.len() <= 255)
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(t in any::<u8>(), event in event_name(), payload in json_value()) {
            let msg = Message::new(EventType(t), event, payload.to_string());
            prop_assert_eq!(decode(&encode(&msg).unwrap()).unwrap(), msg);
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_with_a_truthful_length(mut bytes in prop::collection::vec(any::<u8>(), 6..300)) {
            let len = (bytes.len() as u32).to_be_bytes();
            bytes[..4].copy_from_slice(&len);
            let _ = decode(&bytes);
        }
    }
}
