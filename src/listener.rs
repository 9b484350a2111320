//! The accept loop for ws:// and wss:// alike: accept, set `TCP_NODELAY`,
//! run the TLS handshake when there is one, and serve the warp routes on
//! the connection with hyper's HTTP/1 (as warp's own server does inside).
//!
//! Why not `warp::serve`: it leaves Nagle's algorithm on, and replies are
//! small writes that then wait for the client's delayed ACK (a 200-request
//! echo load ran latency-bound at a third of its speed; BENCHMARKS.md); and
//! warp 0.4 has no TLS. Each TLS handshake runs in its own task under
//! [`HANDSHAKE_TIMEOUT`], so a slow or broken client never holds up
//! accepting, and its failure is logged at debug level only.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::server::routes;
use crate::upgrade::RemoteAddr;

/// A client that has not finished its TLS handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for plain HTTP exchanges in flight (upgraded
/// WebSockets are closed by the server separately).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve the app's routes on `listener` (over TLS when `tls` is given)
/// until `shutdown` resolves. Then stop accepting and give HTTP exchanges
/// in flight a moment to end; the caller closes the WebSockets.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let filter = routes(app);
    // Dropped on shutdown: handshakes still running give up at once, and
    // HTTP exchanges finish the request in flight.
    let (stopping, stopped) = watch::channel(());
    // Each connection's task holds a clone: once all are dropped, every
    // HTTP exchange has ended.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    if !is_connection_error(&err) {
                        // Probably out of file descriptors: wait for some to free up.
                        tracing::error!("accept error: {err}");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    continue;
                }
            },
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY for {peer}: {err}");
        }
        // Each request carries the peer's address (for `on_auth` and logs).
        let warp_svc = TowerToHyperService::new(warp::service(filter.clone()));
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(RemoteAddr(peer));
            hyper::service::Service::call(&warp_svc, req)
        });
        let acceptor = acceptor.clone();
        let mut stop = stopped.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            match acceptor {
                // The socket as it is, not boxed: the upgrade finds it
                // under hyper's and shares it with the hub (crate::ws::stream).
                None => serve_http(tcp, svc, stop, peer).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    let tls = tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(err)) => {
                                tracing::debug!("TLS handshake with {peer} failed: {err}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake with {peer} timed out");
                                return;
                            }
                        },
                        _ = stop.changed() => return,
                    };
                    serve_http(tls, svc, stop, peer).await
                }
            }
        });
    }
    drop(listener);
    drop(stopping);
    drop(alive);
    if tokio::time::timeout(DRAIN_TIMEOUT, all_done.recv()).await.is_err() {
        tracing::debug!("some connections were still open after {DRAIN_TIMEOUT:?}");
    }
}

/// HTTP/1.1 with upgrades (WebSockets use HTTP/1.1) on `io` until the
/// exchange ends or an upgrade takes the connection; once `stop` fires,
/// finish the request in flight and end. hyper's own HTTP/1 connection,
/// not hyper-util's `auto` one, which wraps the stream in a type of its own
/// that an upgrade cannot be unwrapped to.
async fn serve_http<I, S, B>(io: I, svc: S, mut stop: watch::Receiver<()>, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), svc).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = ended {
        tracing::debug!("connection from {peer} ended with an error: {err}");
    }
}

/// Errors from `accept` that concern one connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
