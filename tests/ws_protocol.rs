//! RFC 6455 framing as a client sees it on the wire, pinned down end to end
//! against a real server over a raw TCP socket: the upgrade, masked client
//! frames, fragmentation, control frames, the closing handshake, length
//! encodings, and how protocol violations end the connection.
//!
//! These tests use no WebSocket library on the client side, so they do not
//! depend on the one the server uses: they are the check that a server-side
//! framing rewrite still behaves as clients rely on. A connection the
//! server fails gets a close frame with the code RFC 6455 section 7.4.1
//! gives the failure (1002 protocol error, 1007 bad UTF-8, 1009 too big),
//! so a client can tell why; the tests print what happened
//! (`cargo test --test ws_protocol -- --nocapture`).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use ssocket::protocol::{decode, encode_parts, EventType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long any single read or write may take before the test fails.
const WAIT: Duration = Duration::from_secs(5);

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The masking key of RFC 6455 section 5.7's examples.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame as a client must send it: masked, shortest length encoding.
/// `first` is the first header byte (FIN, RSV bits, opcode).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(first, Some(MASK), payload)
}

fn frame_with(first: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=65535 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Only the header of a masked frame declaring a 64-bit `len` (no body).
fn header_64(first: u8, len: u64) -> Vec<u8> {
    let mut out = vec![first, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&MASK);
    out
}

/// A close frame's payload: code and reason.
fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// The protocol message of an echo request (SPEC section 2).
fn echo_request(payload: &Value) -> Vec<u8> {
    encode_parts(EventType::MESSAGE, "echo", payload.to_string().as_bytes()).expect("encodable")
}

/// One frame from the server.
#[derive(Debug)]
struct Frame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    /// The 7-bit length field: the length itself, or 126 / 127 for the
    /// 16-bit / 64-bit encodings.
    len7: u8,
    payload: Vec<u8>,
}

impl Frame {
    /// The close code, None for a close frame with an empty payload.
    fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE, "not a close frame: {self:?}");
        assert_ne!(self.payload.len(), 1, "a close payload is empty or at least 2 bytes");
        self.payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// What came from the server next.
#[derive(Debug)]
enum Next {
    Frame(Frame),
    Eof,
    /// The read failed (connection reset): the server dropped the socket.
    Reset(std::io::ErrorKind),
}

/// How a connection the server failed ended.
#[derive(Debug, PartialEq)]
enum Ending {
    /// A close frame (its code, None if it had none), then EOF or reset.
    Close(Option<u16>),
    Eof,
    Reset(std::io::ErrorKind),
}

/// A raw WebSocket client connection.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connect and upgrade by hand (the key and accept of RFC 6455 section 1.3).
    async fn open(server: &TestServer) -> Conn {
        Conn::open_with(server, &[]).await
    }

    /// As [`Conn::open`], sending `early` in the same write as the request,
    /// before the 101 arrives.
    async fn open_with(server: &TestServer, early: &[u8]) -> Conn {
        let tcp = timeout(WAIT, TcpStream::connect(server.running.addr)).await.expect("connect").expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let mut conn = Conn { tcp, buf: Vec::new() };
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            server.running.addr
        );
        conn.send(&[request.as_bytes(), early].concat()).await;
        let end = loop {
            if let Some(i) = conn.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(conn.fill().await > 0, "EOF during the handshake: {:?}", String::from_utf8_lossy(&conn.buf));
        };
        let head = String::from_utf8(conn.buf.drain(..end).collect()).expect("ASCII response").to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101 "), "{head}");
        for header in ["upgrade: websocket\r\n", "connection: upgrade\r\n"] {
            assert!(head.contains(header), "missing {header:?} in {head}");
        }
        assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"), "{head}");
        conn
    }

    async fn send(&mut self, bytes: &[u8]) {
        timeout(WAIT, async {
            self.tcp.write_all(bytes).await?;
            self.tcp.flush().await
        })
        .await
        .expect("write timed out")
        .expect("write");
    }

    /// Read more into the buffer; 0 at EOF.
    async fn fill(&mut self) -> usize {
        self.try_fill().await.expect("read")
    }

    async fn try_fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = timeout(WAIT, self.tcp.read(&mut chunk)).await.expect("nothing from the server within 5 s")?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Wait until `n` bytes are buffered; false on EOF (mid-frame EOF fails).
    async fn want(&mut self, n: usize) -> std::io::Result<bool> {
        while self.buf.len() < n {
            if self.try_fill().await? == 0 {
                assert!(self.buf.is_empty(), "EOF inside a frame: {:?}", self.buf);
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn next(&mut self) -> Next {
        match self.read_frame().await {
            Ok(Some(frame)) => Next::Frame(frame),
            Ok(None) => Next::Eof,
            Err(e) => Next::Reset(e.kind()),
        }
    }

    async fn read_frame(&mut self) -> std::io::Result<Option<Frame>> {
        if !self.want(2).await? {
            return Ok(None);
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        let len7 = b1 & 0x7f;
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let masked = b1 & 0x80 != 0;
        let head = 2 + ext + if masked { 4 } else { 0 };
        self.want(head).await?;
        let len = match len7 {
            126 => u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize,
            127 => usize::try_from(u64::from_be_bytes(self.buf[2..10].try_into().unwrap())).unwrap(),
            n => n as usize,
        };
        self.want(head + len).await?;
        let payload = self.buf[head..head + len].to_vec();
        self.buf.drain(..head + len);
        Ok(Some(Frame { fin: b0 & 0x80 != 0, rsv: b0 & 0x70, opcode: b0 & 0x0f, masked, len7, payload }))
    }

    /// The next frame; fails on EOF or reset.
    async fn frame(&mut self) -> Frame {
        match self.next().await {
            Next::Frame(f) => {
                assert!(!f.masked, "server frames are never masked: {f:?}");
                assert_eq!(f.rsv, 0, "no extension was negotiated: {f:?}");
                f
            }
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame, which must be a whole binary message; decoded.
    async fn message(&mut self) -> (EventType, String, Value) {
        let f = self.frame().await;
        assert_eq!((f.opcode, f.fin), (OP_BINARY, true), "expected one binary frame: {f:?}");
        let msg = decode(&f.payload).expect("a well-formed message");
        (msg.event_type, msg.event, serde_json::from_str(&msg.payload).expect("JSON payload"))
    }

    /// The next message must be the echo of `payload`.
    async fn expect_echo(&mut self, payload: &Value) {
        assert_eq!(self.message().await, (EventType::MESSAGE, "echo".into(), payload.clone()));
    }

    /// An echo round trip: the connection is open and served.
    async fn assert_echo_works(&mut self) {
        let payload = json!({"still": "open"});
        self.send(&frame(FIN | OP_BINARY, &echo_request(&payload))).await;
        self.expect_echo(&payload).await;
    }

    /// Nothing more may come but EOF (or a reset).
    async fn expect_end(&mut self) -> Ending {
        match self.next().await {
            Next::Eof => Ending::Eof,
            Next::Reset(kind) => Ending::Reset(kind),
            Next::Frame(f) => panic!("expected the connection to end, got {f:?}"),
        }
    }

    /// How the server ended the connection: an optional close frame, then
    /// EOF. Any data frame instead fails.
    async fn ending(&mut self) -> Ending {
        match self.next().await {
            Next::Eof => Ending::Eof,
            Next::Reset(kind) => Ending::Reset(kind),
            Next::Frame(f) if f.opcode == OP_CLOSE => {
                let code = f.close_code();
                // Answer as a client should; the server may be gone already.
                let reply = frame(FIN | OP_CLOSE, &f.payload[..f.payload.len().min(2)]);
                let _ = self.tcp.write_all(&reply).await;
                let end = timeout(Duration::from_secs(1), self.expect_end()).await;
                end.expect("EOF soon after the client's close reply");
                Ending::Close(code)
            }
            Next::Frame(f) => panic!("expected the connection to be closed, got {f:?}"),
        }
    }
}

/// Send `bytes` on a fresh connection; the server must fail the connection
/// (RFC 6455 section 7.1.7) with a close frame with one of `codes`, then
/// EOF. Other clients are unaffected. Returns what happened, printed for
/// the record.
async fn assert_fails(case: &str, codes: &[u16], bytes: &[u8]) -> Ending {
    let server = start_examples().await;
    let mut c = Conn::open(&server).await;
    c.assert_echo_works().await;
    c.send(bytes).await;
    let ending = c.ending().await;
    println!("RECORD {case}: {ending:?}");
    match ending {
        Ending::Close(Some(code)) => assert!(codes.contains(&code), "{case}: close code {code}, expected {codes:?}"),
        other => panic!("{case}: expected a close frame with one of {codes:?}, got {other:?}"),
    }
    Conn::open(&server).await.assert_echo_works().await;
    server.stop().await;
    ending
}

// ------------------------------------------------------------ data frames

#[tokio::test]
async fn an_echo_request_in_one_masked_binary_frame_gets_one_unmasked_binary_reply() {
    let server = start_examples().await;
    let mut c = Conn::open(&server).await;
    let payload = json!({"hello": "world", "n": [1, 2, 3]});
    c.send(&frame(FIN | OP_BINARY, &echo_request(&payload))).await;
    let f = c.frame().await;
    assert_eq!((f.fin, f.rsv, f.opcode, f.masked), (true, 0, OP_BINARY, false));
    let msg = decode(&f.payload).expect("well-formed");
    assert_eq!((msg.event_type, msg.event.as_str()), (EventType::MESSAGE, "echo"));
    assert_eq!(serde_json::from_str::<Value>(&msg.payload).unwrap(), payload);
    server.stop().await;
}

/// A client may send its first message without waiting for the 101: the
/// server reads it along with the request, and the WebSocket gets it.
#[tokio::test]
async fn a_request_sent_in_the_same_write_as_the_handshake_is_answered() {
    let server = start_examples().await;
    let payload = json!({"early": true});
    let mut c = Conn::open_with(&server, &frame(FIN | OP_BINARY, &echo_request(&payload))).await;
    let f = c.frame().await;
    let msg = decode(&f.payload).expect("well-formed");
    assert_eq!(serde_json::from_str::<Value>(&msg.payload).unwrap(), payload);
    server.stop().await;
}

/// The echo request for `payload` in three frames: binary, continuation,
/// continuation (FIN only on the last).
fn fragments(payload: &Value) -> [Vec<u8>; 3] {
    let msg = echo_request(payload);
    let (a, rest) = msg.split_at(4);
    let (b, c) = rest.split_at(rest.len() / 2);
    [frame(OP_BINARY, a), frame(OP_CONT, b), frame(FIN | OP_CONT, c)]
}

#[tokio::test]
async fn a_request_in_three_fragments_gets_the_same_reply() {
    let server = start_examples().await;
    let mut c = Conn::open(&server).await;
    let payload = json!({"fragmented": "yes", "pad": "x".repeat(40)});
    for part in fragments(&payload) {
        c.send(&part).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.expect_echo(&payload).await;
    // All three in one write, too.
    c.send(&fragments(&payload).concat()).await;
    c.expect_echo(&payload).await;
    server.stop().await;
}

#[tokio::test]
async fn a_ping_between_fragments_is_answered_at_once_and_the_message_completes() {
    let server = start_examples().await;
    let mut c = Conn::open(&server).await;
    let payload = json!({"interleaved": true});
    let [first, second, last] = fragments(&payload);
    c.send(&[first, frame(FIN | OP_PING, b"mid-message"), second].concat()).await;
    // The pong comes while the message is still incomplete.
    let pong = c.frame().await;
    assert_eq!((pong.fin, pong.opcode, pong.payload.as_slice()), (true, OP_PONG, &b"mid-message"[..]));
    c.send(&last).await;
    c.expect_echo(&payload).await;
    server.stop().await;
}

#[tokio::test]
async fn a_125_byte_ping_gets_its_pong_and_an_unsolicited_pong_is_ignored() {
    let server = start_examples().await;
    let mut c = Conn::open(&server).await;
    let data: Vec<u8> = (0..125u8).collect();
    c.send(&frame(FIN | OP_PING, &data)).await;
    let pong = c.frame().await;
    assert_eq!((pong.fin, pong.opcode, pong.len7), (true, OP_PONG, 125));
    assert_eq!(pong.payload, data);
    // An empty ping too.
    c.send(&frame(FIN | OP_PING, b"")).await;
    let pong = c.frame().await;
    assert_eq!((pong.opcode, pong.payload.len()), (OP_PONG, 0));
    // A pong nobody asked for gets no answer: the next frame is the echo.
    c.send(&frame(FIN | OP_PONG, b"unsolicited")).await;
    c.assert_echo_works().await;
    server.stop().await;
}

#[tokio::test]
async fn requests_arrive_whole_however_tcp_splits_or_joins_them() {
    let server = start_examples().await;
    let mut c = Conn::open(&server).await;
    // Two frames in one write.
    let (one, two) = (json!({"n": 1}), json!({"n": 2}));
    c.send(&[frame(FIN | OP_BINARY, &echo_request(&one)), frame(FIN | OP_BINARY, &echo_request(&two))].concat()).await;
    let mut got = vec![c.message().await, c.message().await];
    got.sort_by_key(|(_, _, p)| p["n"].as_i64());
    assert_eq!(got, [(EventType::MESSAGE, "echo".into(), one), (EventType::MESSAGE, "echo".into(), two)]);
    // One byte per write.
    let payload = json!({"trickled": "one byte at a time"});
    for byte in frame(FIN | OP_BINARY, &echo_request(&payload)) {
        c.send(&[byte]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    c.expect_echo(&payload).await;
    server.stop().await;
}

// ------------------------------------------------------------ closing

#[tokio::test]
async fn a_close_with_code_1000_is_answered_with_a_close_then_eof() {
    let server = start_examples().await;
    let mut c = Conn::open(&server).await;
    c.assert_echo_works().await;
    c.send(&frame(FIN | OP_CLOSE, &close_payload(1000, "bye"))).await;
    let f = c.frame().await;
    assert_eq!((f.fin, f.opcode), (true, OP_CLOSE), "{f:?}");
    let reason = String::from_utf8_lossy(f.payload.get(2..).unwrap_or_default());
    println!("RECORD close 1000 \"bye\": reply code {:?}, reason {reason:?}", f.close_code());
    assert_eq!(f.close_code(), Some(1000), "the code is echoed");
    assert!(std::str::from_utf8(&f.payload[2..]).is_ok(), "a close reason is UTF-8");
    let end = timeout(Duration::from_secs(3), c.expect_end()).await.expect("EOF within 3 s");
    assert_eq!(end, Ending::Eof);
    server.stop().await;
}

#[tokio::test]
async fn an_empty_close_is_answered_with_a_close_then_eof() {
    let server = start_examples().await;
    let mut c = Conn::open(&server).await;
    c.send(&frame(FIN | OP_CLOSE, b"")).await;
    let f = c.frame().await;
    assert_eq!((f.fin, f.opcode), (true, OP_CLOSE), "{f:?}");
    let code = f.close_code();
    println!("RECORD empty close: reply code {code:?}, payload {:?}", f.payload);
    // No code to echo: an empty close or a normal closure.
    assert!(code.is_none() || code == Some(1000), "reply code {code:?}");
    let end = timeout(Duration::from_secs(3), c.expect_end()).await.expect("EOF within 3 s");
    assert_eq!(end, Ending::Eof);
    server.stop().await;
}

// ------------------------------------------------------------ protocol errors

#[tokio::test]
async fn an_unmasked_client_frame_closes_the_connection() {
    let payload = echo_request(&json!({"unmasked": true}));
    assert_fails("unmasked frame", &[1002], &frame_with(FIN | OP_BINARY, None, &payload)).await;
}

#[tokio::test]
async fn a_frame_with_rsv1_set_closes_the_connection() {
    let payload = echo_request(&json!({"rsv1": true}));
    assert_fails("RSV1 set", &[1002], &frame(FIN | RSV1 | OP_BINARY, &payload)).await;
}

#[tokio::test]
async fn a_reserved_opcode_closes_the_connection() {
    assert_fails("reserved opcode 3", &[1002], &frame(FIN | 0x3, b"what")).await;
}

#[tokio::test]
async fn a_ping_over_125_bytes_closes_the_connection() {
    assert_fails("ping of 126 bytes", &[1002], &frame(FIN | OP_PING, &[b'p'; 126])).await;
}

#[tokio::test]
async fn a_fragmented_ping_closes_the_connection() {
    assert_fails("ping without FIN", &[1002], &frame(OP_PING, b"half")).await;
}

#[tokio::test]
async fn a_continuation_with_no_message_started_closes_the_connection() {
    let payload = echo_request(&json!({}));
    assert_fails("stray continuation", &[1002], &frame(FIN | OP_CONT, &payload)).await;
}

#[tokio::test]
async fn a_new_message_inside_a_fragmented_one_closes_the_connection() {
    let [first, _, _] = fragments(&json!({"a": 1}));
    let bytes = [first, frame(FIN | OP_BINARY, &echo_request(&json!({"b": 2})))].concat();
    assert_fails("binary frame inside a fragmented message", &[1002], &bytes).await;
}

#[tokio::test]
async fn a_valid_text_frame_gets_an_error_and_the_connection_stays() {
    let server = start_examples().await;
    let mut c = Conn::open(&server).await;
    c.send(&frame(FIN | OP_TEXT, "{\"event\":\"echo\", \"ü\": 1}".as_bytes())).await;
    let (event_type, event, payload) = c.message().await;
    assert_eq!((event_type, event.as_str(), &payload["error"]), (EventType::ERROR, "", &json!("text_frame")));
    assert!(payload["message"].as_str().is_some_and(|m| m.contains("binary")), "{payload}");
    c.assert_echo_works().await;
    server.stop().await;
}

#[tokio::test]
async fn a_text_frame_with_invalid_utf8_closes_the_connection() {
    assert_fails("text frame with invalid UTF-8", &[1007], &frame(FIN | OP_TEXT, b"{\"a\":\"\xc3\x28\"}")).await;
}

// ------------------------------------------------------------ lengths

#[tokio::test]
async fn a_frame_declared_far_over_the_payload_limit_closes_with_1009_before_its_body() {
    let server = start_examples_with(|s| s.payload_limit = 1000).await;
    let mut c = Conn::open(&server).await;
    c.assert_echo_works().await;
    // Only the header: the server must refuse without waiting for the body.
    c.send(&header_64(FIN | OP_BINARY, 10 * 1024 * 1024)).await;
    let ending = c.ending().await;
    println!("RECORD 10 MiB declared, payloadLimit 1000: {ending:?}");
    assert_eq!(ending, Ending::Close(Some(1009)));
    Conn::open(&server).await.assert_echo_works().await;
    server.stop().await;
}

#[tokio::test]
async fn a_64_bit_length_with_the_top_bit_set_closes_the_connection() {
    // RFC 6455 section 5.2: the most significant bit MUST be 0.
    let header = header_64(FIN | OP_BINARY, (1 << 63) | 16);
    assert_fails("64-bit length with the top bit set", &[1002], &header).await;
}

#[tokio::test]
async fn messages_needing_16_and_64_bit_lengths_round_trip_with_the_shortest_encoding() {
    let server = start_examples().await;
    let mut c = Conn::open(&server).await;
    for (pad, len7) in [(200, 126), (70_000, 127)] {
        let payload = json!({"pad": "y".repeat(pad)});
        let request = frame(FIN | OP_BINARY, &echo_request(&payload));
        assert_eq!(request[1] & 0x7f, len7, "the request uses the encoding under test");
        c.send(&request).await;
        let f = c.frame().await;
        assert_eq!((f.fin, f.opcode, f.len7), (true, OP_BINARY, len7), "reply of {} bytes", f.payload.len());
        match len7 {
            126 => assert!((126..=65535).contains(&f.payload.len())),
            _ => assert!(f.payload.len() > 65535),
        }
        let msg = decode(&f.payload).expect("a whole, well-formed message");
        assert_eq!(serde_json::from_str::<Value>(&msg.payload).unwrap(), payload);
    }
    // A 125-byte message still uses the 7-bit length.
    let payload = json!("z".repeat(125 - 6 - 4 - 2));
    let request = echo_request(&payload);
    assert_eq!(request.len(), 125);
    c.send(&frame(FIN | OP_BINARY, &request)).await;
    let f = c.frame().await;
    assert_eq!((f.opcode, f.len7, f.payload.len()), (OP_BINARY, 125, 125));
    server.stop().await;
}

// ------------------------------------------------------------ abrupt ends

#[tokio::test]
async fn clients_vanishing_mid_frame_leave_the_server_healthy() {
    let server = start_examples().await;
    let request = frame(FIN | OP_BINARY, &echo_request(&json!({"pad": "q".repeat(300)})));
    let mut survivor = Conn::open(&server).await;
    survivor.assert_echo_works().await;
    for cut in [1, 3, 8 + 100] {
        let mut c = Conn::open(&server).await;
        c.assert_echo_works().await;
        c.send(&request[..cut]).await;
        drop(c);
    }
    assert!(server.wait_connected(1, WAIT).await, "the vanished clients are forgotten");
    survivor.assert_echo_works().await;
    Conn::open(&server).await.assert_echo_works().await;
    server.stop().await;
}
