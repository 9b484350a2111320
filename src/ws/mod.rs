//! The server's side of a WebSocket (RFC 6455) over any byte stream, made
//! to hold nothing while a client is idle.
//!
//! Why not tungstenite here: it gives every connection a read buffer for
//! its whole life (1 KiB at least, or fewer bytes per read and a fifth
//! less throughput), its state sits behind a lock once split, and its
//! futures made each client's task 1.6 KiB: 4.1 KiB per idle client in all
//! (BENCHMARKS.md, issue 16). Here a read goes into a buffer on the stack
//! of the poll that does it; only bytes of a frame not yet whole (or read
//! past a message that must wait for its dispatch) are kept, on the heap,
//! until used. Output is gathered into one buffer that exists while there
//! is something to write. The clients (tests, the bench binary) still use
//! tokio-tungstenite.

pub mod frame;
pub mod stream;

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use frame::FrameError;
use frame::{Header, Opcode};

/// Bytes read at a time, into the stack of the poll that reads.
const READ_CHUNK: usize = 16 * 1024;
/// Output gathered before it is written: small replies go out in batches,
/// and a client that stops reading holds at most about this much (plus one
/// message) here; the rest waits in its queue, where the slow-consumer
/// limit sees it.
pub const WRITE_BATCH: usize = 16 * 1024;
/// Room made ahead for a frame that has begun to arrive, at most: a client
/// that sends only a header declaring a large frame gets no more memory
/// than the bytes it actually sends.
const RESERVE_AHEAD: usize = 64 * 1024;
/// Pongs are queued only while less than this is waiting to be written: a
/// client that sends pings and never reads cannot grow our output. RFC
/// 6455 section 5.5.3 lets an endpoint answer only the latest ping.
const PONG_BACKLOG: usize = 4 * 1024;

/// A whole message or a close, as the connection sees it. Pings are
/// answered here; pongs are dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Binary(Bytes),
    /// A text message, valid UTF-8.
    Text(Bytes),
    /// The client's close frame (its code, if any); our reply is queued.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The client broke the protocol: close with [`FrameError::close_code`].
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("connection closed without a close frame")]
    Eof,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A message sent in fragments, while its fragments arrive.
struct Fragments {
    opcode: Opcode,
    data: Vec<u8>,
}

/// One server-side WebSocket.
pub struct Socket<IO> {
    io: IO,
    /// The largest frame or message read; larger ones are refused (1009).
    max_message: usize,
    /// Input read and not yet used, from `input_at` on. Empty (and
    /// unallocated) while the client is idle.
    input: Vec<u8>,
    input_at: usize,
    fragments: Option<Box<Fragments>>,
    /// Output not yet written, from `output_at` on; unallocated when empty.
    output: Vec<u8>,
    output_at: usize,
    close_sent: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Socket<IO> {
    pub fn new(io: IO, max_message: usize) -> Socket<IO> {
        Socket {
            io,
            max_message,
            input: Vec::new(),
            input_at: 0,
            fragments: None,
            output: Vec::new(),
            output_at: 0,
            close_sent: false,
        }
    }

    /// The next message or close. A protocol error, EOF or I/O error ends
    /// reading; on a [`ReadError::Frame`] the caller should
    /// [`Socket::send_close`] with its code.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, ReadError>> {
        loop {
            if self.input_at < self.input.len() {
                let mut held = std::mem::take(&mut self.input);
                let (mut at, mut need) = (self.input_at, 0);
                let found = self.take_frames(&held, &mut at, &mut need);
                // Keep what is left; free the buffer once all is used.
                if at == held.len() {
                    self.input_at = 0;
                } else {
                    if at > held.len() / 2 {
                        held.drain(..at);
                        at = 0;
                    }
                    // Room for the rest of the frame, once (not per read).
                    held.reserve_exact(need.saturating_sub(held.len() - at).min(RESERVE_AHEAD));
                    self.input = held;
                    self.input_at = at;
                }
                if let Some(found) = found? {
                    return Poll::Ready(Ok(found));
                }
            }
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            let read = buf.filled();
            if read.is_empty() {
                return Poll::Ready(Err(ReadError::Eof));
            }
            if self.input_at < self.input.len() {
                // The start of a frame is held: the rest joins it.
                self.input.extend_from_slice(read);
                continue;
            }
            // The common case: whole frames in what was just read, used
            // from the stack; only a remainder is kept.
            let (mut at, mut need) = (0, 0);
            let found = self.take_frames(read, &mut at, &mut need);
            if at < read.len() {
                self.input.clear();
                self.input.reserve_exact(need.min(RESERVE_AHEAD).max(read.len() - at));
                self.input.extend_from_slice(&read[at..]);
                self.input_at = 0;
            }
            if let Some(found) = found? {
                return Poll::Ready(Ok(found));
            }
        }
    }

    /// Use whole frames of `buf` from `at` until one completes a message or
    /// a close (`Some`) or the rest is not a whole frame (`None`); `at`
    /// moves past what was used, and `need` is the size of the frame begun
    /// at `at` when its header is whole.
    fn take_frames(&mut self, buf: &[u8], at: &mut usize, need: &mut usize) -> Result<Option<Incoming>, FrameError> {
        while let Some(header) = frame::parse_header(&buf[*at..], self.max_message)? {
            let start = *at + header.size;
            let Some(payload) = buf.get(start..start + header.len) else {
                *need = header.size + header.len;
                return Ok(None);
            };
            *at = start + header.len;
            if let Some(found) = self.frame(header, payload)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// One whole frame: a message or close if it completes one.
    fn frame(&mut self, header: Header, payload: &[u8]) -> Result<Option<Incoming>, FrameError> {
        let mut unmasked = Vec::with_capacity(payload.len());
        frame::unmask_into(&mut unmasked, payload, header.mask);
        match header.opcode {
            Opcode::Ping => {
                if !self.close_sent && self.pending_output() < PONG_BACKLOG {
                    frame::write_frame(&mut self.output, Opcode::Pong, &unmasked);
                }
                Ok(None)
            }
            Opcode::Pong => Ok(None),
            Opcode::Close => {
                let code = frame::close_code(&unmasked)?;
                if !self.close_sent {
                    // Echo the code, as RFC 6455 section 5.5.1 suggests.
                    frame::write_close(&mut self.output, code, "");
                    self.close_sent = true;
                }
                Ok(Some(Incoming::Close(code)))
            }
            Opcode::Continuation => {
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(FrameError::Protocol("continuation frame with no message started"));
                };
                let size = fragments.data.len() + unmasked.len();
                if size > self.max_message {
                    return Err(FrameError::TooBig { size: size as u64, max: self.max_message });
                }
                fragments.data.extend_from_slice(&unmasked);
                if !header.fin {
                    return Ok(None);
                }
                let Fragments { opcode, data } = *self.fragments.take().expect("checked above");
                message(opcode, data).map(Some)
            }
            Opcode::Text | Opcode::Binary => {
                if self.fragments.is_some() {
                    return Err(FrameError::Protocol("new message before the fragmented one ended"));
                }
                if !header.fin {
                    self.fragments = Some(Box::new(Fragments { opcode: header.opcode, data: unmasked }));
                    return Ok(None);
                }
                message(header.opcode, unmasked).map(Some)
            }
        }
    }

    /// A whole frame is read and waiting: a caller that uses it before
    /// writing sends the replies to several pipelined messages in one write.
    /// (Not when only part of one is here: its rest may wait for a reply.)
    pub fn has_whole_frame(&self) -> bool {
        let rest = &self.input[self.input_at..];
        matches!(frame::parse_header(rest, self.max_message), Ok(Some(h)) if rest.len() >= h.size + h.len)
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Bytes waiting to be written.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.output_at
    }

    /// Whether a close frame was sent (or queued): nothing more goes out.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Make room for `bytes` more of output at once: gathering a batch
    /// frame by frame would grow the buffer a dozen times.
    pub fn reserve_output(&mut self, bytes: usize) {
        self.output.reserve(bytes);
    }

    /// Queue a binary message; dropped after a close frame.
    pub fn send_binary(&mut self, payload: &[u8]) {
        if !self.close_sent {
            frame::write_frame(&mut self.output, Opcode::Binary, payload);
        }
    }

    /// Queue bytes already framed (the end of a frame the hub began
    /// writing into the socket), ahead of anything queued after them.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// Queue a close frame (once).
    pub fn send_close(&mut self, code: Option<u16>, reason: &str) {
        if !self.close_sent {
            frame::write_close(&mut self.output, code, reason);
            self.close_sent = true;
        }
    }

    /// Write what is queued; frees the output buffer once all is written.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.output_at < self.output.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.output[self.output_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.output_at += n;
        }
        if !self.output.is_empty() {
            self.output = Vec::new();
            self.output_at = 0;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

/// A whole message: text must be UTF-8.
fn message(opcode: Opcode, data: Vec<u8>) -> Result<Incoming, FrameError> {
    if opcode == Opcode::Text {
        std::str::from_utf8(&data).map_err(|_| FrameError::BadUtf8)?;
        return Ok(Incoming::Text(data.into()));
    }
    Ok(Incoming::Binary(data.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        frame::tests::client_frame(first, payload, [0x37, 0xfa, 0x21, 0x3d])
    }

    async fn next<IO: AsyncRead + AsyncWrite + Unpin>(s: &mut Socket<IO>) -> Result<Incoming, ReadError> {
        poll_fn(|cx| s.poll_next(cx)).await
    }

    async fn flush<IO: AsyncRead + AsyncWrite + Unpin>(s: &mut Socket<IO>) {
        poll_fn(|cx| s.poll_flush(cx)).await.unwrap();
    }

    #[tokio::test]
    async fn frames_split_anywhere_arrive_whole_and_in_order() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut socket = Socket::new(server, 1 << 20);
        let mut wire = Vec::new();
        let sizes = [0usize, 1, 125, 126, 5000, 65536, 70_000];
        for (i, len) in sizes.iter().enumerate() {
            wire.extend(client_frame(0x82, &vec![i as u8; *len]));
        }
        // A fragmented one with a ping between its parts.
        wire.extend(client_frame(0x01, b"hel"));
        wire.extend(client_frame(0x89, b"are you there"));
        wire.extend(client_frame(0x80, "lo ✓".as_bytes()));
        let writer = tokio::spawn(async move {
            for piece in wire.chunks(7) {
                client.write_all(piece).await.unwrap();
            }
            client
        });
        for (i, len) in sizes.iter().enumerate() {
            assert_eq!(next(&mut socket).await.unwrap(), Incoming::Binary(vec![i as u8; *len].into()));
            assert!(socket.input.capacity() <= 2 * (70_000 + 14 + READ_CHUNK), "{}", socket.input.capacity());
        }
        assert_eq!(next(&mut socket).await.unwrap(), Incoming::Text("hello ✓".as_bytes().to_vec().into()));
        flush(&mut socket).await;
        let mut client = writer.await.unwrap();
        let mut pong = [0u8; 15];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong[..2], &[0x8a, 13]);
        assert_eq!(&pong[2..], b"are you there");
        assert_eq!(socket.input.capacity(), 0, "nothing held once all is used");
        assert!(socket.fragments.is_none());
    }

    #[tokio::test]
    async fn a_close_is_echoed_once_and_nothing_follows_it() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut socket = Socket::new(server, 1000);
        client.write_all(&client_frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e'])).await.unwrap();
        assert_eq!(next(&mut socket).await.unwrap(), Incoming::Close(Some(1000)));
        socket.send_binary(b"too late");
        socket.send_close(Some(1001), "ignored: one close only");
        flush(&mut socket).await;
        drop(socket);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [0x88, 2, 0x03, 0xe8]);
    }

    #[tokio::test]
    async fn protocol_errors_end_reading_with_their_close_code() {
        let cases: [(Vec<u8>, u16); 5] = [
            (client_frame(0x80, b"x"), 1002), // continuation, nothing started
            ([client_frame(0x02, b"a"), client_frame(0x82, b"b")].concat(), 1002), // new message mid-fragments
            (client_frame(0x81, &[0xff, 0xfe]), 1007), // text, not UTF-8
            ([client_frame(0x02, &[0; 600]), client_frame(0x80, &[0; 600])].concat(), 1009), // fragments over the limit
            (client_frame(0x82, &[0; 1001]), 1009),
        ];
        for (wire, code) in cases {
            let (mut client, server) = tokio::io::duplex(4096);
            let mut socket = Socket::new(server, 1000);
            client.write_all(&wire).await.unwrap();
            match next(&mut socket).await {
                Err(ReadError::Frame(err)) => assert_eq!(err.close_code(), code, "{err}"),
                other => panic!("expected a frame error with {code}, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_pings_and_never_reads_cannot_grow_our_output() {
        let (mut client, server) = tokio::io::duplex(256);
        let mut socket = Socket::new(server, 1000);
        let pings: Vec<u8> = (0..2000).flat_map(|_| client_frame(0x89, &[b'p'; 125])).collect();
        let writer = tokio::spawn(async move {
            client.write_all(&pings).await.unwrap();
            client.write_all(&client_frame(0x82, b"after")).await.unwrap();
            client // kept open, never read
        });
        assert_eq!(next(&mut socket).await.unwrap(), Incoming::Binary(b"after".to_vec().into()));
        assert!(socket.pending_output() < PONG_BACKLOG + 127, "{} bytes of pongs", socket.pending_output());
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_header_declaring_a_large_frame_buys_no_more_than_the_bytes_sent() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut socket = Socket::new(server, 1 << 30);
        let frame = client_frame(0x82, &vec![1; 100 << 20]);
        client.write_all(&frame[..1000]).await.unwrap();
        let pending = poll_fn(|cx| Poll::Ready(socket.poll_next(cx).is_pending())).await;
        assert!(pending, "a frame of 100 MiB is not whole after 1,000 bytes");
        assert!(socket.input.capacity() <= RESERVE_AHEAD + READ_CHUNK, "{} bytes held", socket.input.capacity());
    }

    /// What lets the connection answer pipelined messages in one write,
    /// without ever holding a reply for the rest of a frame not yet sent.
    #[tokio::test]
    async fn a_whole_frame_waiting_is_told_from_part_of_one() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut socket = Socket::new(server, 1000);
        assert!(!socket.has_whole_frame(), "nothing read yet");
        let third = client_frame(0x82, b"three");
        let wire = [client_frame(0x82, b"one"), client_frame(0x82, b"two"), third[..4].to_vec()].concat();
        client.write_all(&wire).await.unwrap();
        assert_eq!(next(&mut socket).await.unwrap(), Incoming::Binary(b"one".to_vec().into()));
        assert!(socket.has_whole_frame(), "`two` came in the same read");
        assert_eq!(next(&mut socket).await.unwrap(), Incoming::Binary(b"two".to_vec().into()));
        assert!(!socket.has_whole_frame(), "only part of `three`");
        client.write_all(&third[4..]).await.unwrap();
        assert_eq!(next(&mut socket).await.unwrap(), Incoming::Binary(b"three".to_vec().into()));
        assert!(!socket.has_whole_frame());
    }

    #[tokio::test]
    async fn eof_mid_frame_is_eof() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut socket = Socket::new(server, 1000);
        client.write_all(&client_frame(0x82, b"half a frame")[..5]).await.unwrap();
        drop(client);
        assert!(matches!(next(&mut socket).await, Err(ReadError::Eof)));
    }

    #[tokio::test]
    async fn output_is_batched_and_freed_once_written() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut socket = Socket::new(server, 1000);
        socket.send_binary(b"one");
        socket.send_binary(&[7; 300]);
        assert_eq!(socket.pending_output(), 5 + 304);
        flush(&mut socket).await;
        assert_eq!(socket.pending_output(), 0);
        assert_eq!(socket.output.capacity(), 0);
        let mut got = vec![0; 309];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..5], &[0x82, 3, b'o', b'n', b'e']);
        assert_eq!(&got[5..9], &[0x82, 126, 1, 44]);
    }
}
