//! The WebSocket upgrade at `/`, done here instead of by warp's `ws()`
//! filter so the connection can be ours.
//!
//! warp 0.4 builds tokio-tungstenite with its default 128 KiB read buffer,
//! zero-filled on every read and kept for the life of the connection: 137
//! KiB of RSS per idle client and a third of the throughput at 1,000 busy
//! ones (measured, BENCHMARKS.md). So this filter checks the handshake
//! headers itself, takes hyper's `OnUpgrade` from the request and serves
//! the upgraded stream with [`crate::ws`], which holds no buffer while a
//! client is idle. warp still does the routing and the HTTP, with or
//! without TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use rhai::{Dynamic, Map};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::http::{HeaderMap, StatusCode};
use warp::{Filter, Rejection, Reply};

use crate::app::App;
use crate::errors::ErrorCode;
use crate::plugs::values::from_json;

/// The peer's address, put on each request by the accept loop
/// ([`crate::listener`]) for `on_auth` and refusal logs.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// What the handshake request says about the client.
struct Upgrade {
    key: String,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    remote: Option<SocketAddr>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// `GET /` with WebSocket upgrade headers: refuse with 503 beyond
/// `maxConnections` and 401 whom identity checks refuse, else answer 101
/// and serve the socket.
pub fn route(app: App) -> impl Filter<Extract = (Box<dyn Reply>,), Error = Rejection> + Clone {
    // Shared, not cloned, per connection: every client's task holds it for
    // its whole life, and an `App` is 192 bytes.
    let app = Arc::new(app);
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::path::end()
        .and(warp::get())
        .and(warp::header::<String>("connection"))
        .and(warp::header::exact_ignore_case("upgrade", "websocket"))
        .and(warp::header::exact("sec-websocket-version", "13"))
        .and(warp::header::<String>("sec-websocket-key"))
        .and(warp::header::headers_cloned())
        .and(query)
        .and(warp::ext::optional::<RemoteAddr>())
        .and(warp::ext::optional::<hyper::upgrade::OnUpgrade>())
        .and_then(
            move |connection: String,
                  key: String,
                  headers: HeaderMap,
                  query: String,
                  remote: Option<RemoteAddr>,
                  on_upgrade: Option<hyper::upgrade::OnUpgrade>| {
                let app = app.clone();
                async move {
                    if !connection.to_ascii_lowercase().contains("upgrade") {
                        return Err(warp::reject::not_found());
                    }
                    let query = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
                    let upgrade = Upgrade { key, headers, query, remote: remote.map(|r| r.0), on_upgrade };
                    Ok(accept(app, upgrade).await)
                }
            },
        )
}

async fn accept(app: Arc<App>, upgrade: Upgrade) -> Box<dyn Reply> {
    let max = app.settings.max_connections;
    if max > 0 && app.hub.len() >= max {
        tracing::warn!("refused a connection: maxConnections ({max}) reached");
        let body = format!("server full: maxConnections ({max}) reached; try again later\n");
        return Box::new(warp::reply::with_status(body, StatusCode::SERVICE_UNAVAILABLE));
    }
    let user = match identify(&app, &upgrade).await {
        Ok(user) => user,
        Err(reason) => {
            let remote = upgrade.remote.map(|r| r.to_string()).unwrap_or_else(|| "unknown".into());
            tracing::debug!(remote = %remote, "refused a connection: {reason}");
            let body = ErrorCode::Unauthorized.payload(&reason, serde_json::json!({}));
            return Box::new(warp::reply::with_status(warp::reply::json(&body), StatusCode::UNAUTHORIZED));
        }
    };
    let Some(on_upgrade) = upgrade.on_upgrade else {
        return Box::new(warp::reply::with_status("connection cannot be upgraded\n", StatusCode::BAD_REQUEST));
    };
    let key = upgrade.key;
    let max_message = crate::connection::max_message(app.settings.payload_limit);
    // In the hub before the 101 goes out: a client that sees its socket open
    // is already counted, and reached by any broadcast sent after that.
    // What is sent to it before its task runs waits in its queue.
    let reg = app.hub.register_as(user);
    // The upgrade completes once the 101 below has been written. A plain
    // TCP socket is shared with the hub, for broadcasts written straight
    // into it (crate::ws::stream).
    let queue = reg.rx.clone();
    let upgraded = async move {
        let stream = crate::ws::stream::Stream::new(on_upgrade.await?);
        if let Some(socket) = stream.shared_socket() {
            queue.share_socket(socket);
        }
        Ok::<_, hyper::Error>(stream)
    };
    tokio::spawn(crate::connection::serve(upgraded, app, reg, max_message));
    let reply = warp::reply::with_status(warp::reply(), StatusCode::SWITCHING_PROTOCOLS);
    let reply = warp::reply::with_header(reply, "connection", "upgrade");
    let reply = warp::reply::with_header(reply, "upgrade", "websocket");
    Box::new(warp::reply::with_header(reply, "sec-websocket-accept", derive_accept_key(key.as_bytes())))
}

/// Who the client is (SPEC 10.1): its token's claims when tokens are
/// verified, then INIT's `on_auth` decides if it is registered; `()` is
/// anonymous. The reason when it is refused.
async fn identify(app: &App, upgrade: &Upgrade) -> Result<Dynamic, String> {
    let authorization = upgrade.headers.get("authorization").and_then(|v| v.to_str().ok());
    let token = crate::auth::token(&upgrade.query, authorization);
    let claims = match token.and_then(|t| app.auth.verify(t)) {
        Some(Ok(claims)) => Some(claims),
        Some(Err(why)) => return Err(why),
        None => None,
    };
    let identity = match &app.init {
        Some(init) if init.has_on_auth() => init.authenticate(auth_request(upgrade, token, claims.as_ref())).await?,
        _ => claims.map(|c| from_json(&c.to_string())).unwrap_or(Dynamic::UNIT),
    };
    if app.auth.required && identity.is_unit() {
        return Err("this server accepts only identified clients (auth.required): bring a valid token".into());
    }
    Ok(identity)
}

/// `on_auth`'s `req`: `#{headers, query, path, remote, token, claims}`,
/// header names lowercase.
fn auth_request(upgrade: &Upgrade, token: Option<&str>, claims: Option<&serde_json::Value>) -> Map {
    let headers: Map = upgrade
        .headers
        .iter()
        .map(|(name, value)| {
            (name.as_str().into(), Dynamic::from(String::from_utf8_lossy(value.as_bytes()).into_owned()))
        })
        .collect();
    let query: Map = upgrade.query.iter().map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone()))).collect();
    let remote = upgrade.remote.map_or(Dynamic::UNIT, |r| Dynamic::from(r.to_string()));
    Map::from([
        ("headers".into(), headers.into()),
        ("query".into(), query.into()),
        ("path".into(), Dynamic::from("/")),
        ("remote".into(), remote),
        ("token".into(), token.map_or(Dynamic::UNIT, |t| Dynamic::from(t.to_owned()))),
        ("claims".into(), claims.map_or(Dynamic::UNIT, |c| from_json(&c.to_string()))),
    ])
}
