//! A request as plugs see it: the frame checked and its JSON payload read
//! straight into Rhai values, in one pass, on the connection's reader.
//!
//! The frame's JSON used to be parsed twice, once to validate it and once
//! more (through Rhai's serde support) into the map a plug sees, and
//! Rhai's visitor reads every map key into a fresh `String` first. Here
//! keys go straight into Rhai's inline small strings and validation is the
//! parse itself: about a tenth of the echo profile (BENCHMARKS.md, hot
//! path). Values mean what they meant through Rhai's serde support:
//! integers that fit are `i64`, larger ones and fractions `f64`, `null` is
//! `()`.

use std::borrow::Cow;
use std::fmt;

use rhai::{Array, Dynamic, ImmutableString, Map};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::protocol::{self, EventType, ProtocolError};

/// One decoded request.
#[derive(Debug, Clone)]
pub struct Request {
    pub event_type: EventType,
    /// The plug's name: the event without its tag. Shared with the
    /// invocation and `msg.event` without copies.
    pub event: ImmutableString,
    /// A tagged request's tag (`chat#17` → `17`): its replies, ERROR and
    /// end marker carry the whole `chat#17`.
    pub tag: Option<ImmutableString>,
    pub payload: Dynamic,
}

impl Request {
    /// Check a frame as [`protocol::decode`] does, with the same errors,
    /// plus the request tag ([`protocol::split_tag`]), and read its
    /// payload. An empty payload reads as `{}` (SPEC 2).
    pub fn read(frame: &[u8]) -> Result<Request, ProtocolError> {
        let header = protocol::decode_header(frame)?;
        let (name, tag) = protocol::split_tag(header.event)?;
        let payload = parse(header.payload).map_err(|e| ProtocolError::PayloadNotJson(e.to_string()))?;
        Ok(Request { event_type: header.event_type, event: name.into(), tag: tag.map(Into::into), payload })
    }

    /// The event as the client sent it, tag included: the default event of
    /// replies to the sender.
    pub fn reply_event(&self) -> ImmutableString {
        match &self.tag {
            Some(tag) => format!("{}#{tag}", self.event).into(),
            None => self.event.clone(),
        }
    }
}

/// Parse `text` (JSON) into the Rhai value a plug sees as `msg.payload`.
pub fn parse(text: &str) -> Result<Dynamic, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Value.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds one JSON value as a `Dynamic`.
struct Value;

impl<'de> DeserializeSeed<'de> for Value {
    type Value = Dynamic;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Dynamic, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Value {
    type Value = Dynamic;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Dynamic, E> {
        Ok(Dynamic::from_bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Dynamic, E> {
        Ok(Dynamic::from_int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Dynamic, E> {
        Ok(i64::try_from(v).map_or_else(|_| Dynamic::from_float(v as f64), Dynamic::from_int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Dynamic, E> {
        Ok(Dynamic::from_float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Dynamic, E> {
        Ok(Dynamic::from(ImmutableString::from(v)))
    }

    fn visit_string<E>(self, v: String) -> Result<Dynamic, E> {
        Ok(Dynamic::from(ImmutableString::from(v)))
    }

    fn visit_unit<E>(self) -> Result<Dynamic, E> {
        Ok(Dynamic::UNIT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dynamic, A::Error> {
        let mut array = Array::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(Value)? {
            array.push(item);
        }
        Ok(Dynamic::from_array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Dynamic, A::Error> {
        let mut map = Map::new();
        // A repeated key keeps its last value, as serde_json does.
        while let Some(key) = access.next_key_seed(Key)? {
            let value = access.next_value_seed(Value)?;
            map.insert(key.as_ref().into(), value);
        }
        Ok(Dynamic::from_map(map))
    }
}

/// A map key, borrowed from the text unless it has escapes: Rhai keeps
/// short keys inline, so most keys are never allocated on their own.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Cow<'de, str>, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::strategies::json_value;
    use proptest::prelude::*;

    /// The reference: Rhai's own serde support, through a validating parse.
    fn via_rhai_serde(text: &str) -> Result<Dynamic, serde_json::Error> {
        serde_json::from_str::<Dynamic>(text)
    }

    fn same(text: &str) {
        let ours = parse(text).map(|v| format!("{v:?}"));
        let theirs = via_rhai_serde(text).map(|v| format!("{v:?}"));
        match (ours, theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "for {text}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "for {text}"),
            (a, b) => panic!("for {text}: ours {a:?}, Rhai's serde {b:?}"),
        }
    }

    #[test]
    fn reads_frames_as_protocol_decode_checks_them() {
        let frame = protocol::encode(&protocol::Message::new(EventType::SYNC, "ev", r#"{"a":[1]}"#)).unwrap();
        let req = Request::read(&frame).unwrap();
        assert_eq!((req.event_type, req.event.as_str()), (EventType::SYNC, "ev"));
        assert_eq!(format!("{:?}", req.payload), format!("{:?}", via_rhai_serde(r#"{"a":[1]}"#).unwrap()));
        let empty = protocol::encode(&protocol::Message::new(EventType::MESSAGE, "ev", " ")).unwrap();
        assert!(Request::read(&empty).unwrap().payload.is_map());
        for bad in [&frame[..3], &frame[..frame.len() - 1]] {
            assert_eq!(Request::read(bad).unwrap_err(), protocol::decode(bad).unwrap_err());
        }
        let not_json = protocol::encode(&protocol::Message::new(EventType::MESSAGE, "ev", "{nope")).unwrap();
        assert_eq!(Request::read(&not_json).unwrap_err(), protocol::decode(&not_json).unwrap_err());
    }

    #[test]
    fn reads_every_json_kind_as_rhai_serde_does() {
        for text in [
            r#"{"i":1,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
            r#"{"a":[1,2.5,-3,true,false,null,"s",{"b":{}}],"e":[]}"#,
            r#"{"big":18446744073709551615,"neg":-9223372036854775808,"f":1e300,"g":-0.0}"#,
            r#"{"esc\"aped key \u00e9":"va\nlue \ud83d\ude00","a very long key that does not fit inline at all":1}"#,
            r#"{"dup":1,"dup":2}"#,
            r#""just a string""#,
            "42",
            "null",
            "[[[]]]",
        ] {
            same(text);
        }
    }

    #[test]
    fn refuses_what_is_not_json_with_serde_json_messages() {
        for text in ["", "{", r#"{"a":}"#, "[1,]", "{} {}", "nul", r#"{"a":1"#, "\"unterminated", "{1:2}"] {
            same(text);
            assert!(parse(text).is_err(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn matches_rhai_serde_on_any_json(value in json_value()) {
            same(&value.to_string());
        }

        #[test]
        fn never_panics_on_any_text(text in ".{0,64}") {
            same(&text);
        }
    }
}
