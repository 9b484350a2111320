//! One client's connection: a writer draining the client's outbound queue
//! into the socket, and a reader that checks each message and hands good
//! ones to the plugs, both in one task. When either half ends, the client
//! is removed from the hub (which stops its plugs) and the goodbye (the
//! closing handshake, what is left to write) runs.
//!
//! Written over any byte stream ([`Socket`]) so tests can drive it without
//! a network.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::app::App;
use crate::client::{ClientHandle, ClientId};
use crate::errors::ErrorCode;
use crate::hub::{Next, OutQueue, Outbound, Registration};
use crate::plugs::request::Request;
use crate::plugs::router::error_bytes;
use crate::protocol::ProtocolError;
use crate::ws::{FrameError, Incoming, ReadError, Socket, WRITE_BATCH};

/// Close code for a client that keeps sending malformed frames (RFC 6455:
/// policy violation).
pub const CLOSE_POLICY: u16 = 1008;
/// Malformed frames in a row after which the client is closed. A few
/// mistakes get ERROR replies and the connection stays open; a client that
/// only sends garbage is cut off.
pub const MAX_BAD_FRAMES_IN_A_ROW: u32 = 32;
/// Close code for a message far above `payloadLimit`, refused by the
/// WebSocket layer before it is read (RFC 6455: message too big).
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The largest message the WebSocket layer reads for a server whose limit
/// is `payload_limit`: it refuses (close 1009) only messages far above the
/// limit; those in between are read and get a clear ERROR.
pub fn max_message(payload_limit: usize) -> usize {
    payload_limit.saturating_mul(2).max(payload_limit + 64 * 1024)
}

/// Serve the WebSocket that `upgrade` yields (once the 101 is written),
/// registered in the hub as `reg`, until either side ends. This is the
/// whole of a client's task, so what it holds is what every idle client
/// costs: the arguments stay for its life, and everything below borrows
/// them rather than holding copies.
#[allow(clippy::manual_async_fn)] // on purpose: see the comment inside
pub fn serve<IO, E>(
    upgrade: impl Future<Output = Result<IO, E>>,
    app: Arc<App>,
    reg: Registration,
    max_message: usize,
) -> impl Future<Output = ()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    E: std::fmt::Display,
{
    // An async block, not an async fn: an async fn moves its arguments
    // into locals and keeps both copies for its whole life.
    async move {
        let io = match upgrade.await {
            Ok(io) => io,
            Err(err) => {
                tracing::debug!("websocket upgrade failed: {err}");
                app.hub.remove(reg.id());
                return;
            }
        };
        let mut socket = Socket::new(io, max_message);
        run(&mut socket, &app, &reg.handle, &reg.rx).await;
    }
}

async fn run<IO>(socket: &mut Socket<IO>, app: &App, client: &ClientHandle, queue: &OutQueue)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    app.metrics().connections_total.inc();
    let id = client.id();
    tracing::debug!(client = id, "connected");
    app.connected(client);
    let ended = {
        let limits = &app.settings.limits;
        let mut state = ReaderState {
            id,
            client: client.clone(),
            slots: None,
            runner: crate::plugs::Runner::default(),
            rate: RateLimit::new(limits.messages_per_second, Instant::now()),
            bad_in_a_row: 0,
        };
        open(socket, queue, &mut state, app).await
    };
    // Forget the client first: its plugs stop and shutdown need not wait
    // for the rest of the goodbye.
    app.hub.remove(id);
    app.disconnected(client);
    // Boxed, so the goodbye's timers take memory only while a client leaves,
    // not in every connected client's task.
    Box::pin(goodbye(socket, queue, ended)).await;
    tracing::debug!(client = id, "disconnected");
}

/// Why the open part of a connection ended.
#[derive(Debug)]
enum Ended {
    /// The writer stopped.
    Writer(WriteEnd),
    Reader(ReadEnd),
}

/// Why the writer stopped.
#[derive(Debug, PartialEq, Eq)]
enum WriteEnd {
    /// A close frame went out (the queue closed or held a close).
    Closed,
    /// The hub cut off a slow consumer: drop what is queued, close with
    /// this code.
    Killed(u16, &'static str),
    /// The socket failed.
    Failed,
}

/// Why the reader stopped.
#[derive(Debug, PartialEq, Eq)]
enum ReadEnd {
    /// The client closed, vanished or broke the connection.
    Gone,
    /// We asked the client to close (a close frame is queued).
    Closing,
}

/// What one poll of the open connection found.
enum Step {
    Wrote(WriteEnd),
    Read(Result<Incoming, ReadError>),
}

/// Serve the client until the reader or the writer stops. The writer
/// shares the reader's task rather than having its own: an idle client
/// holds one task, not two, and a reply goes out in the same wake-up that
/// read its request (BENCHMARKS.md, issue 16).
async fn open<IO>(socket: &mut Socket<IO>, queue: &OutQueue, state: &mut ReaderState, app: &App) -> Ended
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let id = state.id;
    let limits = &app.settings.limits;
    loop {
        let step = poll_fn(|cx| {
            // Awake: the socket is this task's again (the hub may have
            // written to it while the task slept; what of its last frame
            // the socket did not take goes first).
            if let Some(rest) = queue.stop_direct() {
                socket.send_raw(&rest);
            }
            // While whole messages are already read, their replies wait to
            // go out with these in one write (plugs on this task answer
            // at once; BENCHMARKS.md, issue 16).
            if !socket.has_whole_frame() {
                if let Poll::Ready(end) = poll_write(socket, queue, cx) {
                    return Poll::Ready(Step::Wrote(end));
                }
            }
            // The writer is polled again below: what the reader queues now
            // need not wake this task once more.
            queue.hold_wakes();
            if let Poll::Ready(read) = socket.poll_next(cx) {
                return Poll::Ready(Step::Read(read));
            }
            // Write what was just queued (a pong, replies) now, not on the
            // next wake-up.
            if let Poll::Ready(end) = poll_write(socket, queue, cx) {
                return Poll::Ready(Step::Wrote(end));
            }
            // Asleep with nothing unwritten: broadcasts may go straight
            // into the socket until the next wake-up (BENCHMARKS.md).
            if socket.pending_output() == 0 && !socket.close_sent() {
                queue.allow_direct();
            }
            Poll::Pending
        })
        .await;
        let msg = match step {
            Step::Wrote(end) => return Ended::Writer(end),
            Step::Read(Ok(Incoming::Close(_))) => return Ended::Reader(ReadEnd::Gone),
            Step::Read(Ok(msg)) => msg,
            Step::Read(Err(ReadError::Frame(err))) => {
                tracing::debug!(client = id, "closing: {err}");
                let reason = match err {
                    FrameError::TooBig { .. } => "message too big (see payloadLimit)",
                    FrameError::BadUtf8 => "invalid UTF-8",
                    FrameError::Protocol(why) => why,
                };
                app.hub.close(id, err.close_code(), reason);
                return Ended::Reader(ReadEnd::Closing);
            }
            Step::Read(Err(err)) => {
                tracing::debug!(client = id, "read error: {err}");
                return Ended::Reader(ReadEnd::Gone);
            }
        };
        let verdict = if state.rate.is_unlimited() { Rate::Allowed } else { state.rate.check(Instant::now()) };
        match verdict {
            Rate::Allowed => {}
            Rate::Refused => {
                let text = format!(
                    "rate limited: more than {} messages per second (limits.messagesPerSecond); this one was dropped",
                    limits.messages_per_second
                );
                let context = json!({"limit": "limits.messagesPerSecond", "value": limits.messages_per_second});
                let event = match &msg {
                    Incoming::Binary(frame) => peek_event(frame),
                    _ => "",
                };
                app.metrics().rate_limited.inc();
                refuse(app, id, event, ErrorCode::RateLimited, &text, context);
                continue;
            }
            Rate::Flooding => {
                tracing::info!(client = id, "closing: kept sending over limits.messagesPerSecond");
                app.hub.close(id, CLOSE_POLICY, "rate limit exceeded");
                return Ended::Reader(ReadEnd::Closing);
            }
        }
        let ok = if let Incoming::Binary(frame) = msg {
            let (ok, here) = match dispatch(frame, state, app) {
                Dispatch::Now(ok, here) => (ok, here),
                Dispatch::Waiting(mut dispatch) => {
                    // The writer goes on while a dispatch waits (for an
                    // in-flight slot, say); reading waits for it.
                    let done = poll_fn(|cx| {
                        if let Poll::Ready(here) = dispatch.as_mut().poll(cx) {
                            return Poll::Ready(Ok(here));
                        }
                        poll_write(socket, queue, cx).map(Err)
                    })
                    .await;
                    match done {
                        Ok(here) => (true, here),
                        Err(end) => return Ended::Writer(end),
                    }
                }
            };
            if let Some(job) = here {
                if let Some(end) = run_here(socket, queue, job) {
                    return Ended::Writer(end);
                }
            }
            ok
        } else {
            let text = "text frames are not part of the protocol: send binary frames (see the README's wire format)";
            refuse(app, id, "", ErrorCode::TextFrame, text, json!({}));
            false
        };
        state.bad_in_a_row = if ok { 0 } else { state.bad_in_a_row + 1 };
        if state.bad_in_a_row >= MAX_BAD_FRAMES_IN_A_ROW {
            tracing::info!(client = id, "closing: {} malformed frames in a row", state.bad_in_a_row);
            app.hub.close(id, CLOSE_POLICY, "too many malformed frames");
            return Ended::Reader(ReadEnd::Closing);
        }
    }
}

/// Do a plug run on this task, lending it the writer for its waits
/// (`plugs::direct`). Its replies go out on the writer's next poll, in the
/// same wake-up. Some when the writer ended meanwhile.
fn run_here<IO>(socket: &mut Socket<IO>, queue: &OutQueue, job: crate::plugs::Job) -> Option<WriteEnd>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    // Another message of this client's already read: the server is behind it.
    let caught_up = !socket.has_whole_frame();
    let mut ended = None;
    let mut drain = |wait: Duration| {
        if ended.is_some() {
            return false;
        }
        ended = if wait.is_zero() {
            // What the socket takes now. The wakers this registers are
            // replaced by the connection's own when the writer is next
            // polled, right after the run.
            match poll_write(socket, queue, &mut Context::from_waker(std::task::Waker::noop())) {
                Poll::Ready(end) => Some(end),
                Poll::Pending => None,
            }
        } else {
            // Block this thread (the worker's other tasks move to another
            // one) while the writer runs for `wait`.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    tokio::time::timeout(wait, poll_fn(|cx| poll_write(socket, queue, cx))).await.ok()
                })
            })
        };
        ended.is_none()
    };
    crate::plugs::direct::with_caught_up(caught_up, || crate::plugs::direct::lend(&mut drain, job));
    ended
}

/// Move the client's queue into the socket: up to [`WRITE_BATCH`] bytes
/// gathered, then written in one go, while the socket takes them. Ready
/// when the writer is done: a close frame went out, the hub cut the client
/// off, or the socket failed.
fn poll_write<IO>(socket: &mut Socket<IO>, queue: &OutQueue, cx: &mut Context<'_>) -> Poll<WriteEnd>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    if let Poll::Ready((code, reason)) = queue.poll_killed(cx) {
        return Poll::Ready(WriteEnd::Killed(code, reason));
    }
    loop {
        // Always, even with nothing of ours unwritten: a TLS stream may hold
        // bytes of its own from a flush that could not finish (for plain
        // TCP this is a no-op).
        match socket.poll_flush(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(WriteEnd::Failed),
            Poll::Ready(Ok(())) => {}
        }
        if socket.close_sent() {
            return Poll::Ready(WriteEnd::Closed);
        }
        let mut next = match queue.poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Next::Closed) => {
                // The client left the hub with nothing more to say.
                socket.send_close(None, "");
                continue;
            }
            Poll::Ready(Next::Item(item)) => Some(item),
        };
        // Payload bytes queued, plus room for frame headers.
        let queued = queue.queued();
        socket.reserve_output(queued.saturating_add(queued / 8 + 16).min(WRITE_BATCH + 64));
        // Everything already queued, up to a batch, then one write: one
        // syscall for a burst of yields instead of one per message.
        while let Some(item) = next.take() {
            match item {
                Outbound::Binary(bytes) => {
                    queue.sent(bytes.len());
                    socket.send_binary(&bytes);
                }
                Outbound::Close(code, reason) => {
                    socket.send_close(Some(code), reason);
                    break;
                }
            }
            if socket.pending_output() < WRITE_BATCH {
                next = queue.try_recv();
            }
        }
    }
}

/// How long to wait for a client's reply to our close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);
/// How long the goodbye may take to write what is left.
const FLUSH_AT_GOODBYE: Duration = Duration::from_secs(5);
/// How long a cut-off slow consumer's close frame may take to go out.
const FLUSH_WHEN_KILLED: Duration = Duration::from_secs(1);

/// After the client left the hub: let the writer send what is left (the
/// queue is closed, so it ends with a close frame), and, when a close
/// frame went out from us, read on, discarding, until the client's close
/// reply, as the closing handshake asks. Dropping the socket with unread
/// input makes the kernel reset the connection, and the client would lose
/// our close frame and code.
async fn goodbye<IO>(socket: &mut Socket<IO>, queue: &OutQueue, ended: Ended)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut killed = false;
    let (mut writing, mut reading) = match ended {
        Ended::Writer(WriteEnd::Failed) => return,
        Ended::Writer(WriteEnd::Closed) => (true, true),
        Ended::Writer(WriteEnd::Killed(code, reason)) => {
            socket.send_close(Some(code), reason);
            killed = true;
            (true, true)
        }
        Ended::Reader(ReadEnd::Closing) => (true, true),
        Ended::Reader(ReadEnd::Gone) => (true, false),
    };
    let mut write_until = pin!(tokio::time::sleep(if killed { FLUSH_WHEN_KILLED } else { FLUSH_AT_GOODBYE }));
    let mut read_until = pin!(tokio::time::sleep(CLOSE_HANDSHAKE));
    while writing || reading {
        let step = poll_fn(|cx| {
            if writing {
                let end = if killed {
                    // Cut off: only the close frame (after what was begun).
                    socket.poll_flush(cx).map(|r| r.map_or(WriteEnd::Failed, |()| WriteEnd::Closed))
                } else {
                    poll_write(socket, queue, cx)
                };
                match end {
                    Poll::Ready(WriteEnd::Killed(code, reason)) => {
                        socket.send_close(Some(code), reason);
                        killed = true;
                        cx.waker().wake_by_ref();
                    }
                    Poll::Ready(WriteEnd::Failed) => {
                        (writing, reading) = (false, false);
                        return Poll::Ready(());
                    }
                    Poll::Ready(WriteEnd::Closed) => {
                        writing = false;
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                }
                if write_until.as_mut().poll(cx).is_ready() {
                    (writing, reading) = (false, false);
                    return Poll::Ready(());
                }
            }
            while reading {
                match socket.poll_next(cx) {
                    Poll::Ready(Ok(Incoming::Close(_))) | Poll::Ready(Err(_)) => {
                        reading = false;
                        return Poll::Ready(());
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Pending => {
                        if read_until.as_mut().poll(cx).is_ready() {
                            reading = false;
                            return Poll::Ready(());
                        }
                        break;
                    }
                }
            }
            Poll::Pending
        });
        step.await;
    }
}

/// What the reader keeps about one client.
struct ReaderState {
    id: ClientId,
    client: ClientHandle,
    /// `limits.maxInFlightPerClient` permits, from the first message on.
    slots: Option<Arc<crate::plugs::ClientSlots>>,
    /// Where this client's inline plug runs go.
    runner: crate::plugs::Runner,
    rate: RateLimit,
    bad_in_a_row: u32,
}

/// Where a binary frame's dispatch stands.
enum Dispatch<F> {
    /// Done: whether the frame was well-formed, and the plug run to do on
    /// this task, if any.
    Now(bool, Option<crate::plugs::Job>),
    /// Waiting (for a slot, or a plug compiling). Boxed: its state is held
    /// only while it waits, not by every idle client's task, and most
    /// messages never need it.
    Waiting(std::pin::Pin<Box<F>>),
}

/// Check a binary frame and dispatch its request, without waiting if it
/// can (a separate function, so what it uses is not kept in the
/// connection's future across the wait).
fn dispatch<'a>(
    frame: Bytes,
    state: &'a mut ReaderState,
    app: &'a App,
) -> Dispatch<impl Future<Output = Option<crate::plugs::Job>> + 'a> {
    let (request, frame) = match read_frame(frame, state.id, app) {
        Ok(read) => read,
        Err(ok) => return Dispatch::Now(ok, None),
    };
    let max = app.settings.limits.max_in_flight_per_client;
    let slots = state.slots.get_or_insert_with(|| crate::plugs::ClientSlots::new(max));
    match app.plugs.try_dispatch(&state.client, request, frame, slots, &mut state.runner) {
        Ok(here) => Dispatch::Now(true, here),
        Err((request, frame)) => {
            Dispatch::Waiting(Box::pin(app.plugs.dispatch(&state.client, request, frame, slots, &mut state.runner)))
        }
    }
}

/// Check one binary frame: the request in it, or Err when it was refused
/// (answered with an ERROR), true if it was well-formed all the same.
fn read_frame(frame: Bytes, id: ClientId, app: &App) -> Result<(Request, Bytes), bool> {
    if app.is_draining() {
        let text = "the server is shutting down and takes no new messages";
        refuse(app, id, peek_event(&frame), ErrorCode::ShuttingDown, text, json!({}));
        return Err(true);
    }
    let limit = app.settings.payload_limit;
    if frame.len() > limit {
        let message =
            format!("payload too large: message is {} bytes, the limit (payloadLimit) is {limit}", frame.len());
        let context = json!({"limit": limit, "size": frame.len()});
        refuse(app, id, peek_event(&frame), ErrorCode::PayloadTooLarge, &message, context);
        return Err(false);
    }
    match Request::read(&frame) {
        Ok(request) => Ok((request, frame)),
        Err(err) => {
            refuse(app, id, peek_event(&frame), err.code(), &malformed(&err), json!({}));
            Err(false)
        }
    }
}

/// Answer a message the connection refuses (malformed, too large, over
/// the rate, shutting down) with an ERROR, counted.
fn refuse(app: &App, id: ClientId, event: &str, code: ErrorCode, message: &str, context: serde_json::Value) {
    let metrics = app.metrics();
    metrics.error(code.as_str());
    metrics.reply(crate::protocol::EventType::ERROR);
    app.hub.send_to(id, error_bytes(event, code, message, context));
}

/// The verdict on one incoming message.
#[derive(Debug, PartialEq, Eq)]
enum Rate {
    Allowed,
    /// Over the rate: answer `rate_limited` and drop it.
    Refused,
    /// Over the rate for more than a second's worth of messages: close.
    Flooding,
}

/// A token bucket holding up to one second of messages, plus a leaky count
/// of refused ones, so a burst is fine, a client slightly over the rate
/// loses the excess, and one that keeps flooding is cut off.
struct RateLimit {
    /// Messages per second; 0 = unlimited.
    rate: f64,
    tokens: f64,
    /// Refused messages, draining at `rate` per second.
    excess: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_second: u32, now: Instant) -> RateLimit {
        let rate = per_second as f64;
        RateLimit { rate, tokens: rate, excess: 0.0, last: now }
    }

    /// `limits.messagesPerSecond = 0`: no need to read the clock.
    fn is_unlimited(&self) -> bool {
        self.rate == 0.0
    }

    fn check(&mut self, now: Instant) -> Rate {
        if self.is_unlimited() {
            return Rate::Allowed;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.excess = (self.excess - elapsed * self.rate).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Rate::Allowed;
        }
        self.excess += 1.0;
        if self.excess > self.rate.max(10.0) {
            Rate::Flooding
        } else {
            Rate::Refused
        }
    }
}

fn malformed(err: &ProtocolError) -> String {
    format!("malformed message: {err}")
}

/// The event name of a frame, if its header is readable: errors about a
/// frame carry its event so a client can tell which request failed.
fn peek_event(frame: &[u8]) -> &str {
    let len = *frame.get(5).unwrap_or(&0) as usize;
    frame.get(6..6 + len).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_passes_then_excess_is_refused_then_flooding_closes() {
        let t0 = Instant::now();
        let mut rate = RateLimit::new(20, t0);
        for _ in 0..20 {
            assert_eq!(rate.check(t0), Rate::Allowed);
        }
        for _ in 0..20 {
            assert_eq!(rate.check(t0), Rate::Refused);
        }
        assert_eq!(rate.check(t0), Rate::Flooding);
    }

    #[test]
    fn tokens_come_back_with_time() {
        let t0 = Instant::now();
        let mut rate = RateLimit::new(10, t0);
        for _ in 0..10 {
            rate.check(t0);
        }
        assert_eq!(rate.check(t0), Rate::Refused);
        let later = t0 + Duration::from_millis(500);
        for _ in 0..5 {
            assert_eq!(rate.check(later), Rate::Allowed);
        }
        assert_eq!(rate.check(later), Rate::Refused);
    }

    /// A stream whose first flush cannot finish, as a TLS stream's may not
    /// when the socket is full: it keeps bytes of its own until flushed.
    #[derive(Default)]
    struct FlushesOnSecondTry {
        written: Vec<u8>,
        refused_once: bool,
        /// A flush after the refused one finished.
        flushed: bool,
    }

    impl tokio::io::AsyncRead for FlushesOnSecondTry {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    impl tokio::io::AsyncWrite for FlushesOnSecondTry {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            if self.written.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if !self.refused_once {
                self.refused_once = true;
                cx.waker().wake_by_ref(); // as the socket turning writable would
                return Poll::Pending;
            }
            self.flushed = true;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_flush_the_stream_could_not_finish_is_tried_again_with_nothing_of_ours_left() {
        let hub = crate::hub::Hub::new();
        let reg = hub.register();
        hub.send_to(reg.id(), Bytes::from_static(b"hello"));
        let mut socket = Socket::new(FlushesOnSecondTry::default(), 1000);
        for why in ["written, but the stream's flush is pending", "then waiting for the queue"] {
            let pending = poll_fn(|cx| Poll::Ready(poll_write(&mut socket, &reg.rx, cx).is_pending())).await;
            assert!(pending, "{why}");
        }
        assert!(socket.get_ref().flushed, "the stream was flushed again");
        assert_eq!(socket.get_ref().written, [0x82, 5, b'h', b'e', b'l', b'l', b'o']);
    }

    /// The size of what `make` returns, without calling it.
    fn size_of_return<A, R>(_make: impl Fn(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// A client's task is this future: it is most of what an idle client
    /// costs (BENCHMARKS.md, issue 16: 2.6 KiB with tungstenite's futures,
    /// when a client cost 5.9 KiB in all).
    #[test]
    fn a_clients_task_stays_small() {
        type Io = crate::ws::stream::Stream;
        let size = size_of_return(|(app, reg): (Arc<App>, Registration)| {
            serve(std::future::pending::<Result<Io, hyper::Error>>(), app, reg, 0)
        });
        println!("the connection future: {size} bytes");
        assert!(size <= 640, "the connection future grew to {size} bytes");
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut rate = RateLimit::new(0, t0);
        assert!((0..10_000).all(|_| rate.check(t0) == Rate::Allowed));
    }
}
