//! The shared state of a running server, [`App`]: settings, the hub of
//! connected clients, the plugs and the INIT hook. Every part of the server
//! that needs the state takes an `App`; [`crate::server`] only starts and
//! stops it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::client::ClientHandle;
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::hub::Hub;
use crate::init::{self, InitScript};
use crate::plugs::host::Services;
use crate::plugs::pool;
use crate::plugs::watcher::{self, Watcher};
use crate::plugs::Plugs;
use crate::timers::Timers;

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
    /// The other nodes (`cluster.redis`), if any.
    pub cluster: Option<Cluster>,
    _stop_cluster: Arc<StopCluster>,
    /// How connecting clients are identified (`auth.*`).
    pub auth: Arc<crate::auth::Auth>,
    /// INIT's timers; stopped when shutdown begins, or when the last clone
    /// of the app goes (a start-up that failed after INIT).
    pub timers: Timers,
    _stop_timers: Arc<StopTimers>,
    /// Set once shutdown begins: new messages are refused while running
    /// plugs finish.
    draining: Arc<AtomicBool>,
    /// Set once the server serves (and cleared when it drains): `/readyz`.
    serving: Arc<AtomicBool>,
    /// Where it listens, once it does (INIT's `server.address()`).
    address: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
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
    #[error("{0}")]
    Config(String),
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
        if let Some(files) = settings.static_folder.as_ref().filter(|f| !f.is_dir()) {
            return Err(StartError::Config(format!(
                "staticFolder {} is not a folder: create it, or leave staticFolder empty to serve no files",
                files.display()
            )));
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
        let cluster = match settings.cluster.redis.is_empty() {
            true => None,
            false => Some(Cluster::start(&settings.cluster).map_err(StartError::Config)?),
        };
        // Any error from here on drops this, and the cluster's tasks stop.
        let _stop_cluster = Arc::new(StopCluster(cluster.clone()));
        if let Some(cluster) = &cluster {
            hub.set_id_base(cluster.id_base());
            cluster.attach(&hub, settings.limits.rooms_per_client);
        }
        let services = Services::new(&settings, cluster.as_ref()).map_err(|e| StartError::Config(e.to_string()))?;
        let auth = Arc::new(crate::auth::Auth::new(&settings.auth).map_err(StartError::Config)?);
        let plugs = Plugs::new(&settings, hub.clone(), &services);
        let timers = Timers::new();
        // Any error from here on drops this, and the timers INIT started stop.
        let _stop_timers = Arc::new(StopTimers(timers.clone()));
        let address = Arc::new(std::sync::OnceLock::new());
        let init = init::run_if_present(&settings.init_file, &plugs, &hub, &timers, &address)?;
        if let Some(script) = &init {
            // Weak: the hub must not keep INIT (and through it the hub) alive.
            let script = Arc::downgrade(script);
            hub.on_rooms(Box::new(move |event| {
                if let Some(script) = script.upgrade() {
                    script.room_event(event);
                }
            }));
        }
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
        Ok(App {
            settings: Arc::new(settings),
            hub,
            plugs,
            tls,
            init,
            cluster,
            _stop_cluster,
            auth,
            timers,
            _stop_timers,
            draining,
            serving: Arc::new(AtomicBool::new(false)),
            address,
            _watcher: watcher,
        })
    }

    /// The server's counters (`/metrics`).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.plugs.registry().metrics()
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// A client is registered: run INIT's `on_connect` callbacks.
    pub fn connected(&self, client: &ClientHandle) {
        if let Some(init) = &self.init {
            init.connected(client);
        }
    }

    /// A client is gone: run INIT's `on_disconnect` callbacks.
    pub fn disconnected(&self, client: &ClientHandle) {
        if let Some(init) = &self.init {
            init.disconnected(client);
        }
    }

    /// The listener is serving on `address`: ready for traffic.
    pub fn begin_serving(&self, address: Option<std::net::SocketAddr>) {
        if let Some(address) = address {
            let _ = self.address.set(address);
        }
        self.serving.store(true, Ordering::SeqCst);
    }

    /// Whether a load balancer should send clients here: serving, not
    /// shutting down, and (with several nodes) Redis answering. The reason
    /// when not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.is_draining() {
            return Err("shutting down");
        }
        if !self.serving.load(Ordering::SeqCst) {
            return Err("starting");
        }
        if self.cluster.as_ref().is_some_and(|c| !c.is_up()) {
            return Err("Redis is unavailable");
        }
        Ok(())
    }

    /// The metrics text, with the gauges read now.
    pub fn scrape(&self) -> String {
        self.metrics().encode(crate::metrics::Snapshot {
            connections: self.hub.len(),
            queued_bytes: self.hub.queued_bytes(),
            in_flight: self.plugs.in_flight(),
            slow_client_cutoffs: self.hub.cutoffs(),
            timer_ticks_skipped: self.timers.skipped(),
            cluster: self.cluster.as_ref().map(|c| (c.is_up(), c.dropped())),
        })
    }

    /// Refuse new messages and stop the timers (shutdown has begun).
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.timers.stop();
    }
}

/// Leaves the cluster (this node's keys go) when the last app is dropped.
struct StopCluster(Option<Cluster>);

impl Drop for StopCluster {
    fn drop(&mut self) {
        if let Some(cluster) = &self.0 {
            cluster.stop();
        }
    }
}

/// Stops the timers when dropped.
struct StopTimers(Timers);

impl Drop for StopTimers {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn failed_note(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {n} of them failed to compile (see above)")
    }
}
