//! One client's connection: a writer task draining the client's outbound
//! queue into the socket, and a reader loop that checks each frame and
//! hands good messages to the plugs. When either half ends, the other is
//! stopped and the client is removed from the hub (which stops its plugs).
//!
//! Written over a generic `Stream`/`Sink` so tests can drive it without a
//! socket.

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use warp::ws::Message as WsMessage;

use crate::hub::{ClientId, Outbound};
use crate::plugs::router::error_bytes;
use crate::protocol::{self, ProtocolError};
use crate::server::App;

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

/// Serve one upgraded WebSocket until either side ends.
pub async fn serve<S>(socket: S, app: App)
where
    S: Stream<Item = Result<WsMessage, warp::Error>> + Sink<WsMessage> + Send + 'static,
{
    let reg = app.hub.register();
    let id = reg.id;
    tracing::debug!(client = id, "connected");
    app.connected(id, reg.cancel.clone());
    let (sink, stream) = socket.split();
    let mut writer = tokio::spawn(write_loop(sink, reg.rx));
    let reader = read_loop(stream, id, reg.cancel, &app);
    let writer_done = tokio::select! {
        _ = reader => false,
        _ = &mut writer => true,
    };
    app.hub.remove(id);
    app.disconnected(id);
    // The queue's sender is gone with the hub entry, so the writer flushes
    // what is queued (a close frame, say) and ends by itself; bound the wait
    // so a peer that stopped reading cannot hold the task. (A finished
    // JoinHandle must not be polled again, hence `writer_done`.)
    if !writer_done && tokio::time::timeout(std::time::Duration::from_secs(5), &mut writer).await.is_err() {
        writer.abort();
    }
    tracing::debug!(client = id, "disconnected");
}

async fn write_loop<W>(mut sink: W, mut rx: mpsc::UnboundedReceiver<Outbound>)
where
    W: Sink<WsMessage> + Unpin,
{
    while let Some(first) = rx.recv().await {
        // Feed everything already queued, then flush once: one syscall for
        // a burst of yields instead of one per message.
        let mut next = Some(first);
        while let Some(out) = next {
            let frame = match out {
                Outbound::Binary(bytes) => WsMessage::binary(bytes),
                Outbound::Close(code, reason) => {
                    let _ = sink.send(WsMessage::close_with(code, reason)).await;
                    return;
                }
            };
            if sink.feed(frame).await.is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

async fn read_loop<R>(mut stream: R, id: ClientId, cancel: crate::cancel::Cancel, app: &App)
where
    R: Stream<Item = Result<WsMessage, warp::Error>> + Unpin,
{
    let mut bad_in_a_row = 0u32;
    while let Some(item) = stream.next().await {
        let msg = match item {
            Ok(msg) => msg,
            Err(err) => {
                tracing::debug!(client = id, "read error: {err}");
                if is_too_big(&err) {
                    app.hub.close(id, CLOSE_TOO_BIG, "message too big (see payloadLimit)");
                }
                return;
            }
        };
        let ok = if msg.is_binary() {
            handle_frame(msg.into_bytes(), id, &cancel, app)
        } else if msg.is_text() {
            let text = "text frames are not part of the protocol: send binary frames (see the README's wire format)";
            app.hub.send_to(id, error_bytes("", "text_frame", text, json!({})));
            false
        } else if msg.is_close() {
            return;
        } else {
            true // ping and pong: the WebSocket layer answers pings itself
        };
        bad_in_a_row = if ok { 0 } else { bad_in_a_row + 1 };
        if bad_in_a_row >= MAX_BAD_FRAMES_IN_A_ROW {
            tracing::info!(client = id, "closing: {bad_in_a_row} malformed frames in a row");
            app.hub.close(id, CLOSE_POLICY, "too many malformed frames");
            return;
        }
    }
}

/// Check one binary frame and dispatch it. False when it was malformed.
fn handle_frame(frame: Bytes, id: ClientId, cancel: &crate::cancel::Cancel, app: &App) -> bool {
    if app.is_draining() {
        let text = "the server is shutting down and takes no new messages";
        app.hub.send_to(id, error_bytes(peek_event(&frame), "shutting_down", text, json!({})));
        return true;
    }
    let limit = app.settings.payload_limit;
    if frame.len() > limit {
        let message =
            format!("payload too large: message is {} bytes, the limit (payloadLimit) is {limit}", frame.len());
        let context = json!({"limit": limit, "size": frame.len()});
        app.hub.send_to(id, error_bytes(peek_event(&frame), "payload_too_large", &message, context));
        return false;
    }
    match protocol::decode(&frame) {
        Ok(msg) => {
            app.plugs.dispatch(id, cancel.clone(), msg, frame);
            true
        }
        Err(err) => {
            app.hub.send_to(id, error_bytes(peek_event(&frame), err.code(), &malformed(&err), json!({})));
            false
        }
    }
}

/// Whether a read failed because the frame or message is larger than the
/// WebSocket layer accepts. warp's error type is opaque, so this reads the
/// text of tungstenite's `Error::Capacity` ("Space limit exceeded: ...").
fn is_too_big(err: &warp::Error) -> bool {
    let text = err.to_string();
    text.starts_with("Space limit exceeded") || text.contains("Message too long")
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
