//! RFC 6455 frames as a server sees them, without I/O: parse a client's
//! frame header, unmask its payload, check a close frame, and write the
//! server's (unmasked) frames.

/// The opcodes of RFC 6455 section 5.2 that carry meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0,
            Opcode::Text => 1,
            Opcode::Binary => 2,
            Opcode::Close => 8,
            Opcode::Ping => 9,
            Opcode::Pong => 10,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A client frame's header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: Opcode,
    pub mask: [u8; 4],
    /// Payload length.
    pub len: usize,
    /// Header length: where the payload starts.
    pub size: usize,
}

/// Why a client's input is refused; each maps to a close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The client broke the protocol (close 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8 (close 1007).
    #[error("invalid UTF-8 in a text message or close reason")]
    BadUtf8,
    /// A frame or message larger than the server reads (close 1009).
    #[error("message of {size} bytes is over the {max} bytes the server reads")]
    TooBig { size: u64, max: usize },
}

impl FrameError {
    /// The close code RFC 6455 section 7.4.1 gives this failure.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Protocol(_) => 1002,
            FrameError::BadUtf8 => 1007,
            FrameError::TooBig { .. } => 1009,
        }
    }
}

/// The longest header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER: usize = 14;
/// Control frames carry at most this much (RFC 6455 section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Parse the header at the start of `buf`: `None` while it is incomplete.
/// Refuses what a server must not accept from a client (unmasked frames,
/// reserved bits or opcodes, long or fragmented control frames) and any
/// frame longer than `max` before its payload is read.
pub fn parse_header(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set (no extension was agreed)"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_bits(b0 & 0x0f).ok_or(FrameError::Protocol("unknown opcode"))?;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Protocol("unmasked frame from a client"));
    }
    let (len, at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(FrameError::Protocol("frame length with its top bit set"));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::Protocol("fragmented control frame"));
        }
        if len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(FrameError::Protocol("control frame over 125 bytes"));
        }
    }
    if len > max as u64 {
        return Err(FrameError::TooBig { size: len, max });
    }
    let Some(mask) = buf.get(at..at + 4) else { return Ok(None) };
    let mask = mask.try_into().expect("4 bytes");
    Ok(Some(Header { fin, opcode, mask, len: len as usize, size: at + 4 }))
}

/// Append `payload` to `dst`, unmasked with `mask`.
pub fn unmask_into(dst: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    let start = dst.len();
    dst.extend_from_slice(payload);
    let out = &mut dst[start..];
    // Eight bytes at a time: the mask repeats every four, so a u64 of it
    // twice lines up with every 8-byte chunk.
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = out.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Append a server frame (final, unmasked) with `payload` to `out`.
pub fn write_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    let len = payload.len();
    out.reserve(10 + len);
    out.push(0x80 | opcode.bits());
    if len < 126 {
        out.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Append a close frame with `code` and `reason` (none: an empty close).
pub fn write_close(out: &mut Vec<u8>, code: Option<u16>, reason: &str) {
    let mut payload = Vec::with_capacity(2 + reason.len());
    if let Some(code) = code {
        payload.extend_from_slice(&code.to_be_bytes());
        // A close frame holds 125 bytes: cut the reason on a char boundary.
        let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..end]);
    }
    write_frame(out, Opcode::Close, &payload);
}

/// The code of a client's close frame (`None` for an empty one), checked
/// as RFC 6455 section 7.4 asks.
pub fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(FrameError::Protocol("close frame with a reserved or unknown code"));
            }
            std::str::from_utf8(reason).map_err(|_| FrameError::BadUtf8)?;
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client frame as a client library writes it.
    pub(in crate::ws) fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 65535 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn a_masked_binary_frame_parses_and_unmasks() {
        let frame = client_frame(0x82, b"hello, world", [1, 2, 3, 4]);
        let header = parse_header(&frame, 1000).unwrap().unwrap();
        assert_eq!(header, Header { fin: true, opcode: Opcode::Binary, mask: [1, 2, 3, 4], len: 12, size: 6 });
        let mut out = Vec::new();
        unmask_into(&mut out, &frame[header.size..], header.mask);
        assert_eq!(out, b"hello, world");
    }

    #[test]
    fn incomplete_headers_ask_for_more_at_every_length() {
        for len in [0usize, 5, 200, 70_000] {
            let frame = client_frame(0x82, &vec![7; len], [9, 8, 7, 6]);
            let size = parse_header(&frame, 100_000).unwrap().unwrap().size;
            for cut in 0..size {
                assert_eq!(parse_header(&frame[..cut], 100_000), Ok(None), "len {len}, cut {cut}");
            }
        }
    }

    #[test]
    fn what_a_server_must_refuse() {
        let refused = |bytes: &[u8]| parse_header(bytes, 1 << 20).unwrap_err();
        assert_eq!(refused(&[0x82, 0x00]), FrameError::Protocol("unmasked frame from a client"));
        assert_eq!(refused(&[0xc2, 0x80]), FrameError::Protocol("reserved bits set (no extension was agreed)"));
        assert_eq!(refused(&[0x83, 0x80]), FrameError::Protocol("unknown opcode"));
        assert_eq!(refused(&[0x8b, 0x80]), FrameError::Protocol("unknown opcode"));
        assert_eq!(refused(&[0x09, 0x80]), FrameError::Protocol("fragmented control frame"));
        assert_eq!(refused(&[0x89, 0x80 | 126, 0, 126]), FrameError::Protocol("control frame over 125 bytes"));
        let top_bit = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(refused(&top_bit), FrameError::Protocol("frame length with its top bit set"));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_header_alone() {
        let header = [0x82, 0x80 | 127, 0, 0, 0, 0, 0x10, 0, 0, 0];
        assert_eq!(parse_header(&header, 1000), Err(FrameError::TooBig { size: 0x1000_0000, max: 1000 }));
        assert_eq!(FrameError::TooBig { size: 1, max: 0 }.close_code(), 1009);
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        for (len, header) in [(0usize, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            write_frame(&mut out, Opcode::Binary, &vec![1; len]);
            assert_eq!(out.len(), header + len, "len {len}");
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1] & 0x80, 0, "a server does not mask");
        }
    }

    #[test]
    fn close_frames_carry_code_and_a_reason_cut_to_fit() {
        let mut out = Vec::new();
        write_close(&mut out, Some(1008), "too many malformed frames");
        assert_eq!(&out[..4], &[0x88, 27, 0x03, 0xf0]);
        assert_eq!(&out[4..], b"too many malformed frames");
        let mut out = Vec::new();
        write_close(&mut out, Some(1000), &"é".repeat(100));
        assert_eq!(out[1], 124, "cut to at most 125 bytes, at a char boundary");
        assert!(std::str::from_utf8(&out[4..]).is_ok());
        let mut out = Vec::new();
        write_close(&mut out, None, "ignored");
        assert_eq!(out, [0x88, 0]);
    }

    #[test]
    fn client_close_codes_are_checked() {
        assert_eq!(close_code(&[]), Ok(None));
        assert_eq!(close_code(&[0x03, 0xe8, b'o', b'k']), Ok(Some(1000)));
        assert_eq!(close_code(&[0x0f, 0xa0]), Ok(Some(4000)));
        assert!(matches!(close_code(&[0x03]), Err(FrameError::Protocol(_))));
        for reserved in [999u16, 1004, 1005, 1006, 1015, 2000, 5000] {
            assert!(matches!(close_code(&reserved.to_be_bytes()), Err(FrameError::Protocol(_))), "{reserved}");
        }
        assert_eq!(close_code(&[0x03, 0xe8, 0xff]), Err(FrameError::BadUtf8));
    }

    proptest! {
        #[test]
        fn any_client_frame_round_trips(
            payload in proptest::collection::vec(any::<u8>(), 0..70_000),
            mask in any::<[u8; 4]>(),
            opcode in prop_oneof![Just(0u8), Just(1), Just(2)],
            fin in any::<bool>(),
        ) {
            let first = opcode | if fin { 0x80 } else { 0 };
            let frame = client_frame(first, &payload, mask);
            let header = parse_header(&frame, 100_000).unwrap().unwrap();
            prop_assert_eq!(header.fin, fin);
            prop_assert_eq!(header.len, payload.len());
            prop_assert_eq!(header.size + header.len, frame.len());
            let mut out = vec![0xaa];
            unmask_into(&mut out, &frame[header.size..], header.mask);
            prop_assert_eq!(&out[1..], &payload[..]);
        }
    }
}
