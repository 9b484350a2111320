//! The server: warp routes, the listener, start-up and shutdown.
//!
//! [`run`] takes an already-bound listener and a shutdown future, so tests
//! bind `127.0.0.1:0` and learn the address; [`start`] does the binding and
//! spawns the server for callers that want a handle.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warp::Filter;

use crate::cancel::Cancel;
use crate::config::Settings;
use crate::hub::{ClientId, Hub};
use crate::init::{self, InitScript};
use crate::plugs::pool;
use crate::plugs::watcher::{self, Watcher};
use crate::plugs::Plugs;

/// Close code sent to every client when the server stops (RFC 6455: going away).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Shared state of a running server: cheap to clone.
#[derive(Clone)]
pub struct App {
    pub settings: Arc<Settings>,
    pub hub: Hub,
    pub plugs: Plugs,
    /// The TLS configuration, loaded at start-up when `secure`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The INIT hook's callbacks, if `INIT.rhai` exists.
    pub init: Option<Arc<InitScript>>,
    /// Set once shutdown begins: new messages are refused while running
    /// plugs finish.
    draining: Arc<AtomicBool>,
    /// Live reload runs while this lives. A mutex only to make it `Sync`.
    _watcher: Option<Arc<Mutex<Watcher>>>,
}

/// Why the server could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "plugs folder {0} does not exist: create it, or run `ssocket --generate NAME` to write a first plug there"
    )]
    NoPlugsFolder(String),
    #[error("cannot read plugs folder {path}: {message}")]
    PlugsFolder { path: String, message: String },
    #[error("cannot listen on {addr}: {message}")]
    Bind { addr: String, message: String },
    #[error("TLS file {file}: {message}")]
    Tls { file: String, message: String },
    #[error("start-up hook {0}")]
    Init(#[from] init::InitError),
}

impl App {
    /// Build the state and load the plugs (when `preloadPlugs`).
    pub fn new(settings: Settings) -> Result<App, StartError> {
        let folder = settings.plugs_folder.clone();
        if !folder.is_dir() {
            return Err(StartError::NoPlugsFolder(folder.display().to_string()));
        }
        let tls = if settings.secure {
            Some(
                crate::tls::load(&settings.tls.cert_file, &settings.tls.key_file)
                    .map_err(|e| StartError::Tls { file: e.file.display().to_string(), message: e.message })?,
            )
        } else {
            None
        };
        let hub = Hub::with_queue_limit(settings.limits.outbound_queue_bytes);
        let plugs = Plugs::new(&settings, hub.clone());
        let init = init::run_if_present(&settings.init_file, &plugs, &hub)?.map(Arc::new);
        let (loaded, errors) = plugs
            .registry()
            .load_all()
            .map_err(|e| StartError::PlugsFolder { path: folder.display().to_string(), message: e.to_string() })?;
        let verb = if settings.preload_plugs { "loaded" } else { "found (compiled at first use)" };
        tracing::info!("{verb} {loaded} plugs in {}{}", folder.display(), failed_note(errors.len()));
        let watcher = match watcher::watch(plugs.registry().clone(), pool::stack_bytes(&settings.limits)) {
            Ok(w) => Some(Arc::new(Mutex::new(w))),
            Err(err) => {
                tracing::warn!("live reload is off: cannot watch {}: {err}", folder.display());
                None
            }
        };
        let draining = Arc::new(AtomicBool::new(false));
        Ok(App { settings: Arc::new(settings), hub, plugs, tls, init, draining, _watcher: watcher })
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// A client is registered: run INIT's `on_connect` callbacks.
    pub fn connected(&self, id: ClientId, cancel: Cancel) {
        if let Some(init) = &self.init {
            init.connected(id, cancel);
        }
    }

    /// A client is gone: run INIT's `on_disconnect` callbacks.
    pub fn disconnected(&self, id: ClientId) {
        if let Some(init) = &self.init {
            init.disconnected(id);
        }
    }

    /// Stop taking messages, let running plugs finish (up to
    /// `shutdownTimeoutMs`), then close every client with 1001.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = Duration::from_millis(self.settings.shutdown_timeout_ms);
        if !wait_until(deadline, || self.plugs.in_flight() == 0).await {
            tracing::warn!("{} plugs still running after {deadline:?}; stopping them", self.plugs.in_flight());
        }
        for id in self.hub.ids() {
            self.hub.close(id, CLOSE_GOING_AWAY, "server shutting down");
        }
        wait_until(Duration::from_secs(2), || self.hub.is_empty()).await;
    }
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

fn failed_note(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {n} of them failed to compile (see above)")
    }
}

/// The WebSocket endpoint at `/`, then the plain HTTP routes of [`crate::http`].
pub fn routes(app: App) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    crate::upgrade::route(app.clone()).or(crate::http::routes(app))
}

/// Serve on `listener` until `shutdown` resolves; then stop accepting, let
/// running plugs finish and close every client with 1001 (warp's graceful
/// shutdown does not cover upgraded WebSockets, so [`App::drain`] does).
pub async fn run(listener: TcpListener, app: App, shutdown: impl Future<Output = ()> + Send + 'static) {
    let metrics = app.settings.memory_metrics_on.then(|| tokio::spawn(crate::metrics::run(app.clone())));
    crate::listener::serve(listener, app.tls.clone(), app.clone(), shutdown).await;
    app.drain().await;
    if let Some(task) = metrics {
        task.abort();
    }
}

/// Bind to the configured address: `TLS` when `secure`, else `INSECURE`.
pub async fn bind(settings: &Settings) -> Result<TcpListener, StartError> {
    let listen = if settings.secure { &settings.tls.listen } else { &settings.insecure };
    let addr = format!("{}:{}", listen.hostname, listen.port);
    TcpListener::bind(&addr).await.map_err(|e| StartError::Bind { addr, message: e.to_string() })
}

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
