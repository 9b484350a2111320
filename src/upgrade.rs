//! The WebSocket upgrade at `/`, done here instead of by warp's `ws()`
//! filter so the socket's buffers can be sized.
//!
//! warp 0.4 builds tokio-tungstenite with its default 128 KiB read buffer,
//! zero-filled on every read and kept for the life of the connection: 137
//! KiB of RSS per idle client and a third of the throughput at 1,000 busy
//! ones (measured, BENCHMARKS.md). warp has no setting for it, so this
//! filter checks the handshake headers itself, takes hyper's `OnUpgrade`
//! from the request and builds the stream with [`socket_config`]. warp
//! still does the routing and the HTTP, with or without TLS.

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::app::App;

/// Bytes read from the socket at a time. Messages larger than this still
/// arrive whole (the buffer grows for them, then is reused). tungstenite
/// allocates it up front for every connection: 1 KiB instead of 4 KiB took
/// idle connections from 6.8 to 5.3 KiB with no change in echo throughput
/// (BENCHMARKS.md).
pub const READ_BUFFER: usize = 1024;
/// Outgoing bytes gathered before a write: small replies go out in batches.
pub const WRITE_BUFFER: usize = 16 * 1024;

/// The socket settings for a server whose largest message is `payload_limit`.
pub fn socket_config(payload_limit: usize) -> WebSocketConfig {
    // The WebSocket layer refuses (close 1009) only messages far above the
    // limit; those in between reach the connection and get a clear ERROR.
    let max = payload_limit.saturating_mul(2).max(payload_limit + 64 * 1024);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// `GET /` with WebSocket upgrade headers: refuse with 503 beyond
/// `maxConnections`, else answer 101 and serve the socket.
pub fn route(app: App) -> impl Filter<Extract = (Box<dyn Reply>,), Error = Rejection> + Clone {
    warp::path::end()
        .and(warp::get())
        .and(warp::header::<String>("connection"))
        .and(warp::header::exact_ignore_case("upgrade", "websocket"))
        .and(warp::header::exact("sec-websocket-version", "13"))
        .and(warp::header::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<hyper::upgrade::OnUpgrade>())
        .and_then(move |connection: String, key: String, on_upgrade: Option<hyper::upgrade::OnUpgrade>| {
            let app = app.clone();
            async move {
                if !connection.to_ascii_lowercase().contains("upgrade") {
                    return Err(warp::reject::not_found());
                }
                Ok(accept(app, &key, on_upgrade))
            }
        })
}

fn accept(app: App, key: &str, on_upgrade: Option<hyper::upgrade::OnUpgrade>) -> Box<dyn Reply> {
    let max = app.settings.max_connections;
    if max > 0 && app.hub.len() >= max {
        tracing::warn!("refused a connection: maxConnections ({max}) reached");
        let body = format!("server full: maxConnections ({max}) reached; try again later\n");
        return Box::new(warp::reply::with_status(body, StatusCode::SERVICE_UNAVAILABLE));
    }
    let Some(on_upgrade) = on_upgrade else {
        return Box::new(warp::reply::with_status("connection cannot be upgraded\n", StatusCode::BAD_REQUEST));
    };
    let config = socket_config(app.settings.payload_limit);
    // The upgrade completes once the 101 below has been written.
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                crate::connection::serve(socket, app).await;
            }
            Err(err) => tracing::debug!("websocket upgrade failed: {err}"),
        }
    });
    let reply = warp::reply::with_status(warp::reply(), StatusCode::SWITCHING_PROTOCOLS);
    let reply = warp::reply::with_header(reply, "connection", "upgrade");
    let reply = warp::reply::with_header(reply, "upgrade", "websocket");
    Box::new(warp::reply::with_header(reply, "sec-websocket-accept", derive_accept_key(key.as_bytes())))
}
