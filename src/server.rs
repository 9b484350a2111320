//! Start-up and shutdown: bind (with the listener options a storm of
//! connections needs), serve the warp routes on the listener, and drain on
//! the way out.
//!
//! [`run`] takes an already-bound listener and a shutdown future, so tests
//! bind `127.0.0.1:0` and learn the address; [`start`] does the binding and
//! spawns the server for callers that want a handle.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

// `sockopt_impl!` calls its two helpers by name, so all three are imported.
#[cfg(target_os = "linux")]
use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warp::Filter;

use crate::app::App;
pub use crate::app::StartError;
use crate::config::Settings;

/// Close code sent to every client when the server stops (RFC 6455: going away).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Stop taking messages, let running plugs finish (up to
/// `shutdownTimeoutMs`), then close every client with 1001.
pub async fn drain(app: &App) {
    app.begin_draining();
    let deadline = Duration::from_millis(app.settings.shutdown_timeout_ms);
    if !wait_until(deadline, || app.plugs.in_flight() == 0).await {
        tracing::warn!("{} plugs still running after {deadline:?}; stopping them", app.plugs.in_flight());
    }
    for id in app.hub.ids() {
        app.hub.close(id, CLOSE_GOING_AWAY, "server shutting down");
    }
    wait_until(Duration::from_secs(2), || app.hub.is_empty()).await;
}

/// Poll `done` every 10 ms until it holds or `deadline` passes.
async fn wait_until(deadline: Duration, done: impl Fn() -> bool) -> bool {
    tokio::time::timeout(deadline, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok()
}

/// The WebSocket endpoint at `/`, the HTTP API of [`crate::api`], the
/// operators' routes of [`crate::ops`], the playground's of
/// [`crate::http`], then the `staticFolder`'s files ([`crate::files`]).
pub fn routes(app: App) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let files = crate::files::routes(app.settings.static_folder.clone()).unwrap_or_else(|| {
        warp::any().and_then(|| async { Err::<Box<dyn warp::Reply>, _>(warp::reject::not_found()) }).boxed()
    });
    crate::upgrade::route(app.clone())
        .or(crate::api::routes(app.clone()))
        .or(crate::ops::routes(app.clone()))
        .or(crate::http::routes(app))
        .or(files)
}

/// Serve on `listener` until `shutdown` resolves; then stop accepting, let
/// running plugs finish and close every client with 1001 (warp's graceful
/// shutdown does not cover upgraded WebSockets, so [`drain`] does).
pub async fn run(listener: TcpListener, app: App, shutdown: impl Future<Output = ()> + Send + 'static) {
    let metrics = app.settings.memory_metrics_on.then(|| tokio::spawn(crate::metrics::run(app.clone())));
    app.begin_serving(listener.local_addr().ok());
    crate::listener::serve(listener, app.tls.clone(), app.clone(), shutdown).await;
    drain(&app).await;
    if let Some(task) = metrics {
        task.abort();
    }
}

/// Connections the kernel may hold for us before we accept them (Linux
/// caps it at `net.core.somaxconn`, 4,096 by default). `TcpListener::bind`
/// asks for 128: 200 clients connecting at once then found the queue full
/// now and then while the server was busy with the handshakes already
/// accepted, and the kernel dropped their handshakes, which clients retry
/// only after a second (10,000 connections took 1.5 s instead of 0.55 s;
/// BENCHMARKS.md, issue 16). Bun asks for 512, Node and nginx for 511.
const LISTEN_BACKLOG: u32 = 4096;

/// Bind to the configured address: `TLS` when `secure`, else `INSECURE`.
pub async fn bind(settings: &Settings) -> Result<TcpListener, StartError> {
    let listen = if settings.secure { &settings.tls.listen } else { &settings.insecure };
    let addr = format!("{}:{}", listen.hostname, listen.port);
    let failed = |message: String| StartError::Bind { addr: addr.clone(), message };
    let mut last = None;
    // As `TcpListener::bind` does: the first of the name's addresses that works.
    for candidate in tokio::net::lookup_host(&addr).await.map_err(|e| failed(e.to_string()))? {
        match listen_on(candidate) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(failed(last.map_or_else(|| "the name resolves to no address".to_string(), |e| e.to_string())))
}

fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As std and tokio do on Unix: a restarted server can bind at once,
    // while the last one's connections are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    defer_accept(&socket);
    socket.listen(LISTEN_BACKLOG)
}

/// How long the kernel holds a connection whose client has sent nothing
/// before handing it to the accept loop anyway (Linux's
/// `TCP_DEFER_ACCEPT`, in seconds). The kernel then sends its SYN-ACK
/// again and the client's ACK completes the connection: a silent client
/// reaches the accept loop a second or two late (`ss` showed it SYN-RECV,
/// then ESTAB after about 1.5 s).
#[cfg(target_os = "linux")]
const DEFER_ACCEPT_SECS: i32 = 1;

#[cfg(target_os = "linux")]
sockopt_impl!(
    /// `TCP_DEFER_ACCEPT`, which nix does not list. `sockopt_impl!` is
    /// nix's documented way to add such an option: it writes the
    /// `setsockopt` call and checks its result, and the one `unsafe` block
    /// in it is nix's code, not ours (`forbid(unsafe_code)` does not look
    /// inside another crate's macros).
    DeferAccept,
    Both,
    libc::IPPROTO_TCP,
    libc::TCP_DEFER_ACCEPT,
    i32
);

/// Wake the accept loop for a connection only once its client has sent
/// something (its HTTP request or TLS hello: WebSocket clients speak
/// first), as Bun and nginx's `deferred` do. Otherwise each connection
/// woke the server twice, once to accept and once more for its request,
/// and a storm of connections was mostly wake-ups: 10,000 connections
/// opened 200 at a time took 47 to 49 ticks of the server's CPU with it
/// off and 35 to 37 with it on (Bun 33 to 36), and 16,609 to 18,870
/// connections/s against 18,490 to 20,701 (BENCHMARKS.md, issue 16).
/// Where the option is refused the server still works, waking as before.
#[cfg(target_os = "linux")]
fn defer_accept(socket: &TcpSocket) {
    if let Err(err) = nix::sys::socket::setsockopt(socket, DeferAccept, &DEFER_ACCEPT_SECS) {
        tracing::debug!("cannot set TCP_DEFER_ACCEPT on the listener: {err}");
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_accept(_socket: &TcpSocket) {}

/// A server running in the background.
pub struct Running {
    pub addr: SocketAddr,
    pub app: App,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stop it and wait until every client is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Load plugs, bind and serve in a background task.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    let app = App::new(settings)?;
    let listener = bind(&app.settings).await?;
    let addr =
        listener.local_addr().map_err(|e| StartError::Bind { addr: "listener".into(), message: e.to_string() })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, app.clone(), async move {
        let _ = stopped.await;
    }));
    Ok(Running { addr, app, stop, task })
}
