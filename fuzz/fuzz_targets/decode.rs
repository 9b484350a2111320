//! Arbitrary bytes into `protocol::decode`. It must never panic, and every
//! frame it accepts must be a message the format can carry: an event name of
//! at most 255 bytes, a payload that is valid JSON, and one that re-encodes
//! to a frame decoding to the same message (byte for byte the same frame,
//! unless the payload was empty and read as `{}`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssocket::protocol::{decode, encode, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = decode(data) else { return };

    assert!(msg.event.len() <= 255, "event name of {} bytes", msg.event.len());
    assert!(
        serde_json::from_str::<serde::de::IgnoredAny>(&msg.payload).is_ok(),
        "accepted payload is not JSON: {:?}",
        msg.payload
    );

    let bytes = encode(&msg).expect("a decoded message must re-encode");
    let again = decode(&bytes).expect("a re-encoded message must decode");
    assert_eq!(again, msg, "decode(encode(m)) != m");

    if bytes != data {
        // Only an empty (blank) payload may change: it reads as `{}`.
        let payload = &data[HEADER_LEN + msg.event.len()..];
        let blank = std::str::from_utf8(payload).map(|p| p.trim().is_empty()).unwrap_or(false);
        assert!(blank && msg.payload == "{}", "re-encoding changed the frame: {data:?} -> {bytes:?}");
    }
});
