//! One client's connection: a writer draining the client's outbound queue
//! into the socket, and a reader loop that checks each frame and hands good
//! messages to the plugs, both in one task. When either half ends, the
//! other is stopped and the client is removed from the hub (which stops its
//! plugs).
//!
//! Written over a generic `Stream`/`Sink` so tests can drive it without a
//! socket.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use crate::app::App;
use crate::client::{ClientHandle, ClientId};
use crate::errors::ErrorCode;
use crate::hub::{Next, OutQueue, Outbound, Registration};
use crate::plugs::request::Request;
use crate::plugs::router::error_bytes;
use crate::protocol::ProtocolError;

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

/// Serve one upgraded WebSocket, registered in the hub as `reg`, until
/// either side ends.
pub fn serve<S>(socket: S, app: App, reg: Registration) -> impl Future<Output = ()> + Send
where
    S: Stream<Item = Result<WsMessage, WsError>> + Sink<WsMessage> + Send + 'static,
{
    // Split before the future exists: an async fn keeps its arguments for
    // its whole life, and the socket is a third of a KiB of every client's
    // task.
    let (sink, stream) = socket.split();
    serve_split(sink, stream, app, reg)
}

async fn serve_split<W, R>(sink: W, mut stream: R, app: App, reg: Registration)
where
    W: Sink<WsMessage> + Unpin,
    R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
{
    app.metrics().connections_total.inc();
    let (id, client) = (reg.id(), reg.handle);
    tracing::debug!(client = id, "connected");
    app.connected(&client);
    // The writer shares the reader's task rather than having its own: an
    // idle client holds one task, not two, and a reply goes out in the same
    // wake-up that read its request, with no second task to schedule
    // (BENCHMARKS.md, issue 16).
    let queue = reg.rx.clone();
    let mut writer = pin!(write_loop(sink, reg.rx));
    let ended = {
        let mut reader = pin!(read_loop(&mut stream, &client, &app));
        poll_fn(|cx| {
            if writer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ended::Writer);
            }
            // The writer is polled again below: what the reader queues now
            // need not wake this task once more.
            queue.hold_wakes();
            if let Poll::Ready(end) = reader.as_mut().poll(cx) {
                return Poll::Ready(Ended::Reader(end));
            }
            // Write what the reader has just queued now, not on the next
            // wake-up: the writer polled first drained the earlier replies.
            if writer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ended::Writer);
            }
            Poll::Pending
        })
        .await
    };
    // Forget the client first: its plugs stop and shutdown need not wait
    // for the rest of the goodbye.
    app.hub.remove(id);
    app.disconnected(&client);
    // Boxed, so the goodbye's timers take memory only while a client leaves,
    // not in every connected client's task.
    Box::pin(goodbye(&mut stream, writer, ended)).await;
    tracing::debug!(client = id, "disconnected");
}

/// Which half of the connection stopped first.
enum Ended {
    /// The writer: the queue closed or the client was killed (a close frame
    /// went out).
    Writer,
    Reader(ReadEnd),
}

/// After the client left the hub: finish the closing handshake and let the
/// writer flush what is queued (a close frame, say).
async fn goodbye<R, W>(stream: &mut R, mut writer: Pin<&mut W>, ended: Ended)
where
    R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    W: Future<Output = ()>,
{
    let (mut writer_done, closing) = match ended {
        Ended::Writer => (true, true),
        Ended::Reader(end) => (false, end == ReadEnd::Closing),
    };
    if closing {
        // A close frame went (or is going) out: read on, discarding, until
        // the client's close reply, as the closing handshake asks, while the
        // writer sends what is left. Dropping the socket with unread input
        // makes the kernel reset the connection, and the client would lose
        // our close frame and code.
        let drain = async { while let Some(Ok(_)) = stream.next().await {} };
        let mut drain = pin!(tokio::time::timeout(CLOSE_HANDSHAKE, drain));
        loop {
            tokio::select! {
                _ = &mut drain => break,
                () = writer.as_mut(), if !writer_done => writer_done = true,
            }
        }
    }
    // The queue's sender is gone with the hub entry, so the writer flushes
    // what is queued and ends by itself; bound the wait so a peer that
    // stopped reading cannot hold the task (dropping the writer stops it).
    if !writer_done {
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }
}

/// Drain the client's queue into the socket until the queue closes, or,
/// if the hub kills the client (slow consumer), drop what is queued and
/// close at once.
async fn write_loop<W>(mut sink: W, rx: Arc<OutQueue>)
where
    W: Sink<WsMessage> + Unpin,
{
    let killed = tokio::select! {
        _ = drain(&mut sink, &rx) => None,
        reason = poll_fn(|cx| rx.poll_killed(cx)) => Some(reason),
    };
    if let Some((code, reason)) = killed {
        // Best effort: a client that stopped reading may never see it.
        // Boxed, like every goodbye: its timer is not held while connected.
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), sink.send(close_frame(code, reason)))).await;
        return;
    }
    let _ = sink.close().await;
}

async fn drain<W>(sink: &mut W, rx: &OutQueue)
where
    W: Sink<WsMessage> + Unpin,
{
    while let Next::Item(first) = poll_fn(|cx| rx.poll_next(cx)).await {
        // Feed everything already queued, then flush once: one syscall for
        // a burst of yields instead of one per message.
        let mut next = Some(first);
        while let Some(out) = next {
            let frame = match out {
                Outbound::Binary(bytes) => {
                    rx.sent(bytes.len());
                    WsMessage::Binary(bytes)
                }
                Outbound::Close(code, reason) => {
                    let _ = sink.send(close_frame(code, reason)).await;
                    return;
                }
            };
            if sink.feed(frame).await.is_err() {
                return;
            }
            next = rx.try_recv();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// How long to wait for a client's reply to our close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// Why the reader stopped.
#[derive(Debug, PartialEq, Eq)]
enum ReadEnd {
    /// The client closed, vanished or broke the protocol.
    Gone,
    /// We asked the client to close (a close frame is queued).
    Closing,
}

/// What the reader keeps about one client.
struct ReaderState {
    id: ClientId,
    client: ClientHandle,
    /// `limits.maxInFlightPerClient` permits.
    slots: Arc<crate::plugs::ClientSlots>,
    /// Where this client's inline plug runs go.
    runner: crate::plugs::Runner,
    rate: RateLimit,
    bad_in_a_row: u32,
}

async fn read_loop<R>(stream: &mut R, client: &ClientHandle, app: &App) -> ReadEnd
where
    R: Stream<Item = Result<WsMessage, WsError>> + Unpin,
{
    let limits = &app.settings.limits;
    let id = client.id();
    let mut state = ReaderState {
        id,
        client: client.clone(),
        slots: crate::plugs::ClientSlots::new(limits.max_in_flight_per_client),
        runner: crate::plugs::Runner::default(),
        rate: RateLimit::new(limits.messages_per_second, Instant::now()),
        bad_in_a_row: 0,
    };
    while let Some(item) = stream.next().await {
        let msg = match item {
            Ok(msg) => msg,
            Err(err) => {
                tracing::debug!(client = id, "read error: {err}");
                if is_too_big(&err) {
                    app.hub.close(id, CLOSE_TOO_BIG, "message too big (see payloadLimit)");
                    return ReadEnd::Closing;
                }
                return ReadEnd::Gone;
            }
        };
        if msg.is_close() {
            return ReadEnd::Gone;
        }
        if !(msg.is_binary() || msg.is_text()) {
            continue; // ping, pong: the WebSocket layer answers pings itself
        }
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
                    WsMessage::Binary(frame) => peek_event(frame),
                    _ => "",
                };
                app.metrics().rate_limited.inc();
                refuse(app, id, event, ErrorCode::RateLimited, &text, context);
                continue;
            }
            Rate::Flooding => {
                tracing::info!(client = id, "closing: kept sending over limits.messagesPerSecond");
                app.hub.close(id, CLOSE_POLICY, "rate limit exceeded");
                return ReadEnd::Closing;
            }
        }
        let ok = if let WsMessage::Binary(frame) = msg {
            // Boxed: a message's state (its plug lookup, slots, invocation)
            // is held only while it is dispatched, not by every idle client's
            // task (one allocation per message; BENCHMARKS.md, issue 16).
            Box::pin(handle_frame(frame, &mut state, app)).await
        } else {
            let text = "text frames are not part of the protocol: send binary frames (see the README's wire format)";
            refuse(app, id, "", ErrorCode::TextFrame, text, json!({}));
            false
        };
        state.bad_in_a_row = if ok { 0 } else { state.bad_in_a_row + 1 };
        if state.bad_in_a_row >= MAX_BAD_FRAMES_IN_A_ROW {
            tracing::info!(client = id, "closing: {} malformed frames in a row", state.bad_in_a_row);
            app.hub.close(id, CLOSE_POLICY, "too many malformed frames");
            return ReadEnd::Closing;
        }
    }
    ReadEnd::Gone
}

/// Check one binary frame and dispatch it (waiting for an in-flight slot).
/// False when it was malformed.
async fn handle_frame(frame: Bytes, state: &mut ReaderState, app: &App) -> bool {
    let id = state.id;
    if app.is_draining() {
        let text = "the server is shutting down and takes no new messages";
        refuse(app, id, peek_event(&frame), ErrorCode::ShuttingDown, text, json!({}));
        return true;
    }
    let limit = app.settings.payload_limit;
    if frame.len() > limit {
        let message =
            format!("payload too large: message is {} bytes, the limit (payloadLimit) is {limit}", frame.len());
        let context = json!({"limit": limit, "size": frame.len()});
        refuse(app, id, peek_event(&frame), ErrorCode::PayloadTooLarge, &message, context);
        return false;
    }
    match Request::read(&frame) {
        Ok(msg) => {
            app.plugs.dispatch(&state.client, msg, frame, &state.slots, &mut state.runner).await;
            true
        }
        Err(err) => {
            refuse(app, id, peek_event(&frame), err.code(), &malformed(&err), json!({}));
            false
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

/// Whether a read failed because the frame or message is larger than the
/// WebSocket layer accepts.
fn is_too_big(err: &WsError) -> bool {
    matches!(err, WsError::Capacity(_))
}

fn close_frame(code: u16, reason: &'static str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() }))
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

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut rate = RateLimit::new(0, t0);
        assert!((0..10_000).all(|_| rate.check(t0) == Rate::Allowed));
    }
}
