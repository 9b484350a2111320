//! Live reload: a debounced, recursive watch of the plugs folder. After a
//! burst of events settles, each touched path is re-examined as it now is
//! on disk (exists → reload, gone → unload), which handles in-place edits,
//! editors' atomic saves (write a temp file, rename over), renames, deletes
//! and new folders alike without tracking event kinds.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventHandler, EventKind, RecommendedWatcher, RecursiveMode, WatcherKind};
use notify_debouncer_mini::{new_debouncer_opt, Config, DebounceEventResult, Debouncer};

use crate::plugs::registry::Registry;

/// Quiet time after the last event before reloading: long enough to see an
/// atomic save as one change, short enough that a save feels instant.
pub const DEBOUNCE: Duration = Duration::from_millis(25);

/// Keeps the watch alive; dropping it stops live reload.
pub struct Watcher {
    _debouncer: Debouncer<ChangesOnly>,
}

/// The platform watcher minus events that only report a read (inotify's
/// open and close-without-write). The debouncer forgets event kinds, and
/// reloading a plug reads its file (and rescanning a folder opens it): left
/// in, every reload would trigger the next one, forever.
pub struct ChangesOnly(RecommendedWatcher);

/// Whether an event can mean that something on disk changed.
pub fn is_change(event: &Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

impl notify::Watcher for ChangesOnly {
    fn new<F: EventHandler>(mut handler: F, config: notify::Config) -> notify::Result<Self> {
        let filter = move |event: notify::Result<Event>| match event {
            // The kernel's queue overflowed: events were lost. The debouncer
            // keeps only paths, and this event has none, so pass it on as an
            // error, on which the registry rescans the folder.
            Ok(event) if event.need_rescan() => {
                handler.handle_event(Err(notify::Error::generic("the file watcher lost events")))
            }
            Ok(event) if !is_change(&event) => {}
            other => handler.handle_event(other),
        };
        RecommendedWatcher::new(filter, config).map(ChangesOnly)
    }

    fn watch(&mut self, path: &Path, recursive_mode: RecursiveMode) -> notify::Result<()> {
        self.0.watch(path, recursive_mode)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.0.unwatch(path)
    }

    fn configure(&mut self, option: notify::Config) -> notify::Result<bool> {
        self.0.configure(option)
    }

    fn kind() -> WatcherKind {
        RecommendedWatcher::kind()
    }
}

/// Start watching the registry's folder.
pub fn watch(registry: Arc<Registry>, stack_bytes: usize) -> notify::Result<Watcher> {
    let folder = registry.folder().to_path_buf();
    // Paths from notify are absolute; the registry compares against its
    // folder as configured, so map them back under that spelling.
    let canonical = folder.canonicalize().unwrap_or_else(|_| folder.clone());
    let watch_path = canonical.clone();
    let reload = reload_thread(registry, stack_bytes).map_err(notify::Error::io)?;
    let handler = move |result: DebounceEventResult| {
        let job = match result {
            Ok(events) => {
                let mut paths: Vec<PathBuf> = events
                    .into_iter()
                    .map(|e| match e.path.strip_prefix(&canonical) {
                        Ok(rel) => folder.join(rel),
                        Err(_) => e.path,
                    })
                    .collect();
                paths.sort();
                paths.dedup();
                Reload::Paths(paths)
            }
            Err(err) => {
                tracing::warn!("plug watcher: {err}; rescanning the plugs folder");
                Reload::Rescan
            }
        };
        if reload.send(job).is_err() {
            tracing::error!("live reload stopped: the reload thread ended (a panic while reloading?)");
        }
    };
    let mut debouncer = new_debouncer_opt::<_, ChangesOnly>(Config::default().with_timeout(DEBOUNCE), handler)?;
    debouncer.watcher().watch(&watch_path, RecursiveMode::Recursive)?;
    Ok(Watcher { _debouncer: debouncer })
}

enum Reload {
    Paths(Vec<PathBuf>),
    Rescan,
}

/// Reloading compiles plugs, which runs their modules' code and drops the
/// values old versions held: plug code, so it runs on a thread with the
/// plug stack (`pool::stack_bytes`), not on the debouncer's. The thread
/// ends when the watcher is dropped.
fn reload_thread(registry: Arc<Registry>, stack_bytes: usize) -> std::io::Result<mpsc::Sender<Reload>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new().name("ssocket-reload".into()).stack_size(stack_bytes).spawn(move || {
        for job in rx {
            match job {
                Reload::Paths(paths) => registry.apply_changes(&paths),
                Reload::Rescan => registry.rescan(),
            }
        }
    })?;
    Ok(tx)
}
