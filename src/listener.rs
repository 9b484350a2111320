//! The accept loop for ws:// and wss:// alike: accept, set `TCP_NODELAY`,
//! run the TLS handshake when there is one, and serve the warp routes on
//! the connection through hyper-util (as warp's own server does inside).
//!
//! Why not `warp::serve`: it leaves Nagle's algorithm on, and replies are
//! small writes that then wait for the client's delayed ACK (a 200-request
//! echo load ran latency-bound at a third of its speed; BENCHMARKS.md); and
//! warp 0.4 has no TLS. Each TLS handshake runs in its own task under
//! [`HANDSHAKE_TIMEOUT`], so a slow or broken client never holds up
//! accepting, and its failure is logged at debug level only.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
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
    let graceful = GracefulShutdown::new();
    // Dropped on shutdown: handshakes still running give up at once.
    let (stopping, stopped) = tokio::sync::watch::channel(());
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
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let mut stop = stopped.clone();
        tokio::spawn(async move {
            let io: Box<dyn Io> = match acceptor {
                None => Box::new(tcp),
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(tls)) => Box::new(tls),
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
                    }
                }
            };
            // HTTP/1.1 with upgrades (WebSockets use HTTP/1.1).
            let builder = Builder::new(TokioExecutor::new()).http1_only();
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!("connection from {peer} ended with an error: {err}");
            }
        });
    }
    drop(listener);
    drop(stopping);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::debug!("some connections were still open after {DRAIN_TIMEOUT:?}");
    }
}

/// A plain or TLS stream, boxed so one code path serves both.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Errors from `accept` that concern one connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
