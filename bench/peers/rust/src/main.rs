//! Plain-Rust peer of ssocket's wire protocol (SPEC.md section 2), written the
//! way a user would write it with tokio + tokio-tungstenite: the ceiling the
//! scripted server is compared against.
//!
//! Events: "echo" replies MESSAGE with the same event and payload to the
//! sender; "broadcast" sends the payload as BROADCAST to every other client,
//! encoded once per broadcast; any other event gets NOT_FOUND, as in
//! ssocket (the generator's readiness probe relies on it). Usage: ssocket-peer-rust [PORT] (or env PORT).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const MESSAGE: u8 = 0;
const BROADCAST: u8 = 1;
const ERROR: u8 = 4;
const NOT_FOUND: u8 = 5;

type Clients = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

/// One protocol message: length, type, event, JSON payload.
fn encode(kind: u8, event: &str, payload: &[u8]) -> Bytes {
    let total = 4 + 1 + 1 + event.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.push(kind);
    out.push(event.len() as u8);
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// Checks every field against the frame; returns (event, parsed payload).
fn decode(frame: &[u8]) -> Result<(&str, serde_json::Value), &'static str> {
    if frame.len() < 6 {
        return Err("short");
    }
    let total = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if total != frame.len() {
        return Err("length");
    }
    let n = frame[5] as usize;
    if 6 + n > frame.len() {
        return Err("event length");
    }
    let event = std::str::from_utf8(&frame[6..6 + n]).map_err(|_| "event utf-8")?;
    let payload = serde_json::from_slice(&frame[6 + n..]).map_err(|_| "json")?;
    Ok((event, payload))
}

async fn serve(stream: TcpStream, id: u64, clients: Clients) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    clients.lock().unwrap().insert(id, tx.clone());
    // Writes whatever is queued, then flushes once: one syscall for a burst.
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.feed(msg).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(more).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(msg)) = source.next().await {
        let Message::Binary(frame) = msg else {
            if msg.is_close() {
                break;
            }
            continue;
        };
        match decode(&frame) {
            Ok((event, payload)) => {
                let body = serde_json::to_vec(&payload).unwrap();
                match event {
                    "echo" => {
                        let _ = tx.send(Message::Binary(encode(MESSAGE, event, &body)));
                    }
                    "broadcast" => {
                        // Encoded once; each client gets a cheap clone of the bytes.
                        let out = encode(BROADCAST, event, &body);
                        let clients = clients.lock().unwrap();
                        for (other, sender) in clients.iter() {
                            if *other != id {
                                let _ = sender.send(Message::Binary(out.clone()));
                            }
                        }
                    }
                    _ => {
                        let _ = tx.send(Message::Binary(encode(NOT_FOUND, event, b"{}")));
                    }
                }
            }
            Err(what) => {
                let body = serde_json::to_vec(&serde_json::json!({ "error": what })).unwrap();
                let _ = tx.send(Message::Binary(encode(ERROR, "error", &body)));
            }
        }
    }
    clients.lock().unwrap().remove(&id);
    drop(tx);
    writer.abort();
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    eprintln!("listening on ws://127.0.0.1:{port}/");
    let clients: Clients = Arc::default();
    let next = AtomicU64::new(0);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let id = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(stream, id, clients.clone()));
    }
}
