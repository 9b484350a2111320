//! The server: warp routes, the listener, start-up and shutdown.
//!
//! [`run`] takes an already-bound listener and a shutdown future, so tests
//! bind `127.0.0.1:0` and learn the address; [`start`] does the binding and
//! spawns the server for callers that want a handle.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warp::Filter;

use crate::config::Settings;
use crate::hub::Hub;
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
}

impl App {
    /// Build the state and load the plugs (when `preloadPlugs`).
    pub fn new(settings: Settings) -> Result<App, StartError> {
        let folder = settings.plugs_folder.clone();
        if !folder.is_dir() {
            return Err(StartError::NoPlugsFolder(folder.display().to_string()));
        }
        let hub = Hub::new();
        let plugs = Plugs::new(&settings, hub.clone());
        let (loaded, errors) = plugs
            .registry()
            .load_all()
            .map_err(|e| StartError::PlugsFolder { path: folder.display().to_string(), message: e.to_string() })?;
        let verb = if settings.preload_plugs { "loaded" } else { "found (compiled at first use)" };
        tracing::info!("{verb} {loaded} plugs in {}{}", folder.display(), failed_note(errors.len()));
        let watcher = match watcher::watch(plugs.registry().clone()) {
            Ok(w) => Some(Arc::new(Mutex::new(w))),
            Err(err) => {
                tracing::warn!("live reload is off: cannot watch {}: {err}", folder.display());
                None
            }
        };
        Ok(App { settings: Arc::new(settings), hub, plugs, _watcher: watcher })
    }
}

fn failed_note(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {n} of them failed to compile (see above)")
    }
}

/// The WebSocket endpoint at `/`.
pub fn routes(app: App) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    // The WebSocket layer refuses (close 1009) only messages far above the
    // limit; those in between reach us and get a clear ERROR reply.
    let ws_limit = app.settings.payload_limit.saturating_mul(2).max(app.settings.payload_limit + 64 * 1024);
    warp::path::end().and(warp::ws()).map(move |ws: warp::ws::Ws| {
        let app = app.clone();
        ws.max_message_size(ws_limit)
            .max_frame_size(ws_limit)
            .on_upgrade(move |socket| crate::connection::serve(socket, app))
    })
}

/// Serve on `listener` until `shutdown` resolves, then close every client
/// with 1001 and wait (briefly) for them to go.
pub async fn run(listener: TcpListener, app: App, shutdown: impl Future<Output = ()> + Send + 'static) {
    warp::serve(routes(app.clone())).incoming(listener).graceful(shutdown).run().await;
    close_all(&app.hub, Duration::from_secs(5)).await;
}

/// warp's graceful shutdown does not cover upgraded WebSockets, so close
/// them here.
async fn close_all(hub: &Hub, deadline: Duration) {
    for id in hub.ids() {
        hub.close(id, CLOSE_GOING_AWAY, "server shutting down");
    }
    let _ = tokio::time::timeout(deadline, async {
        while !hub.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Bind to the configured address (`INSECURE`).
pub async fn bind(settings: &Settings) -> Result<TcpListener, StartError> {
    let addr = format!("{}:{}", settings.insecure.hostname, settings.insecure.port);
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
