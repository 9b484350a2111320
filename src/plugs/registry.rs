//! Which event runs which compiled script.
//!
//! The table is filled by scanning the plugs folder and kept current by the
//! watcher; events are looked up in it by name and never turned into paths,
//! so no event name (such as `../../etc/passwd`) can reach a file outside
//! the folder.
//!
//! A plug whose new version does not compile keeps serving its last good
//! version; a plug that never compiled answers with its compile error.
//! Entries are `Arc`s: an invocation keeps the version it started with
//! while a reload swaps in the next.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use ahash::HashMap;
use rhai::{Engine, EvalAltResult, FnAccess, Scope, AST};
use serde_json::json;

use crate::config::Settings;
use crate::errors::ErrorCode;
use crate::metrics::{Metrics, PlugMetrics};
use crate::plugs::engine;
use crate::plugs::modules::{self, Deps, PlugResolver};

/// A compiled plug.
#[derive(Debug)]
pub struct Plug {
    /// The event it answers, e.g. `test/sub`.
    pub name: rhai::ImmutableString,
    pub path: PathBuf,
    pub ast: AST,
    /// Public two-parameter functions, run in this (name) order.
    pub handlers: Vec<String>,
    /// Every module it imports, directly or through other modules.
    pub imports: Deps,
    pub loaded_at: SystemTime,
    /// Set once a run of this version slept, waited for a slow reader or
    /// ran past the inline budget: its later runs go to the plug threads
    /// instead of running inline (see `plugs::invoke`).
    pub slow: std::sync::atomic::AtomicBool,
    /// Set when its source or a module it imports can call another service
    /// ([`may_call_out`]), and (should a call escape that) once a run of
    /// this version waited on one: its runs stay off the connection's own
    /// task, which meanwhile could not notice the client leaving
    /// (`plugs::direct`).
    pub waits: std::sync::atomic::AtomicBool,
    /// Set once a run of this version finished without waiting: only then
    /// may its runs go on the connection's own task, so a plug that waits
    /// on its first run already leaves that task free.
    pub settled: std::sync::atomic::AtomicBool,
    /// Its message counter and run-time histogram (`/metrics`).
    pub metrics: PlugMetrics,
}

impl Plug {
    /// Its runs may go on the connection's own task (`plugs::direct`): one
    /// finished without waiting, and none ever waited.
    pub fn may_run_direct(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.settled.load(Relaxed) && !self.waits.load(Relaxed) && !self.slow.load(Relaxed)
    }

    /// After an inline run: if no run of it has waited so far, it may run
    /// on the connection's task from now on.
    pub fn settle(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.settled.load(Relaxed) && !self.waits.load(Relaxed) && !self.slow.load(Relaxed) {
            self.settled.store(true, Relaxed);
        }
    }
}

/// Why a plug could not be loaded. Shown in the log, and to a client that
/// sends the plug's event while it has never compiled.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PlugError {
    #[error("{file}:{line}:{column}: {message}")]
    Compile { plug: String, file: String, line: usize, column: usize, message: String },
    #[error("{file}:{line}:{column}: function `{function}` takes {params} parameters; a plug function takes two: fn {function}(msg, yield_msg)")]
    Shape { plug: String, file: String, line: usize, column: usize, function: String, params: usize },
    #[error("{file}: cannot read: {message}")]
    Io { plug: String, file: String, message: String },
}

impl PlugError {
    /// The ERROR payload a client gets for this plug.
    pub fn to_reply(&self) -> serde_json::Value {
        match self {
            PlugError::Compile { plug, line, column, message, .. } => ErrorCode::CompileError.payload(
                &format!("plug `{plug}` does not compile: {message}"),
                json!({ "plug": plug, "line": line, "column": column }),
            ),
            PlugError::Shape { plug, .. } | PlugError::Io { plug, .. } => {
                ErrorCode::CompileError.payload(&self.to_string(), json!({ "plug": plug }))
            }
        }
    }
}

/// The result of looking up an event.
pub enum Lookup {
    Found(Arc<Plug>),
    /// The plug exists but has never compiled.
    Broken(PlugError),
    NotFound,
}

/// What the table holds for one event.
enum Entry {
    /// Serving; `last_error` is set when a later edit failed to compile.
    Ready {
        plug: Arc<Plug>,
        last_error: Option<PlugError>,
    },
    Broken {
        path: PathBuf,
        error: PlugError,
    },
    /// Known but not compiled yet (`preloadPlugs = false`).
    Pending(PathBuf),
}

/// One plug's state, for listings (`check`, the plugs API).
#[derive(Debug, Clone)]
pub struct PlugStatus {
    pub name: String,
    pub path: PathBuf,
    pub handlers: Vec<String>,
    pub loaded_at: Option<SystemTime>,
    pub error: Option<PlugError>,
}

pub struct Registry {
    engine: Arc<Engine>,
    resolver: Arc<PlugResolver>,
    folder: PathBuf,
    validate_shape: bool,
    preload: bool,
    /// `limits.timeoutMs`, applied to module code that runs while compiling.
    compile_timeout: Option<std::time::Duration>,
    /// `cluster.redis` is set: `store::`, `rooms::`, `send_to` and
    /// `clients` then wait on Redis too (see [`may_call_out`]).
    clustered: bool,
    /// Read on every message, written on (re)load: a read-write lock, never
    /// held across an `.await`, a compile or a script run.
    plugs: RwLock<HashMap<String, Entry>>,
    /// Reloads and compile errors; each plug's handles.
    metrics: Arc<Metrics>,
}

/// What a path in the plugs folder is.
#[derive(Debug, PartialEq, Eq)]
pub enum PathKind {
    Plug(String),
    /// A shared module, by its import path (`_lib/greet`).
    Module(String),
    Other,
}

impl Registry {
    pub fn new(
        engine: Arc<Engine>,
        resolver: Arc<PlugResolver>,
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> Registry {
        Registry {
            engine,
            resolver,
            folder: settings.plugs_folder.clone(),
            validate_shape: settings.validate_function_shape,
            preload: settings.preload_plugs,
            compile_timeout: (settings.limits.timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(settings.limits.timeout_ms)),
            clustered: !settings.cluster.redis.is_empty(),
            plugs: RwLock::new(HashMap::default()),
            metrics,
        }
    }

    /// The counters (`/metrics`).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Scan the folder and (with `preloadPlugs`) compile every plug. Returns
    /// the number of plugs found and the compile errors (each also logged).
    pub fn load_all(&self) -> std::io::Result<(usize, Vec<PlugError>)> {
        let mut files = Vec::new();
        collect_rhai(&self.folder, &mut files)?;
        let mut errors = Vec::new();
        let mut table = HashMap::default();
        for path in files {
            let PathKind::Plug(name) = self.classify(&path) else { continue };
            let entry = if self.preload { self.compile_entry(&name, &path, None) } else { Entry::Pending(path) };
            if let Entry::Broken { error, .. } = &entry {
                errors.push(error.clone());
            }
            table.insert(name, entry);
        }
        let found = table.len();
        *self.plugs.write().unwrap_or_else(|e| e.into_inner()) = table;
        Ok((found, errors))
    }

    pub fn lookup(&self, event: &str) -> Lookup {
        let pending = match self.peek(event) {
            Ok(found) => return found,
            Err(path) => path,
        };
        // First use of a plug not preloaded: compile it outside the lock.
        let entry = self.compile_entry(event, &pending, None);
        let result = match &entry {
            Entry::Ready { plug, .. } => Lookup::Found(plug.clone()),
            Entry::Broken { error, .. } => Lookup::Broken(error.clone()),
            Entry::Pending(_) => Lookup::NotFound,
        };
        let mut table = self.write();
        if matches!(table.get(event), Some(Entry::Pending(_))) {
            table.insert(event.to_owned(), entry);
        }
        result
    }

    /// [`Registry::lookup`] without compiling: `None` when the plug is
    /// still pending. One lock and one hash per message on the hot path.
    pub fn lookup_compiled(&self, event: &str) -> Option<Lookup> {
        self.peek(event).ok()
    }

    /// What the table holds for `event`, or the file of a pending plug.
    fn peek(&self, event: &str) -> Result<Lookup, PathBuf> {
        Ok(match self.read().get(event) {
            Some(Entry::Ready { plug, .. }) => Lookup::Found(plug.clone()),
            Some(Entry::Broken { error, .. }) => Lookup::Broken(error.clone()),
            Some(Entry::Pending(path)) => return Err(path.clone()),
            None => Lookup::NotFound,
        })
    }

    /// Names of known plugs, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Every plug's state, sorted by name.
    pub fn statuses(&self) -> Vec<PlugStatus> {
        let mut out: Vec<PlugStatus> = self
            .read()
            .iter()
            .map(|(name, entry)| match entry {
                Entry::Ready { plug, last_error } => PlugStatus {
                    name: name.clone(),
                    path: plug.path.clone(),
                    handlers: plug.handlers.clone(),
                    loaded_at: Some(plug.loaded_at),
                    error: last_error.clone(),
                },
                Entry::Broken { path, error } => PlugStatus {
                    name: name.clone(),
                    path: path.clone(),
                    handlers: vec![],
                    loaded_at: None,
                    error: Some(error.clone()),
                },
                Entry::Pending(path) => PlugStatus {
                    name: name.clone(),
                    path: path.clone(),
                    handlers: vec![],
                    loaded_at: None,
                    error: None,
                },
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Bring the table up to date after `paths` changed on disk (files or
    /// folders; created, modified, renamed or deleted).
    pub fn apply_changes(&self, paths: &[PathBuf]) {
        let mut changed_modules = Vec::new();
        for path in paths {
            if path.is_dir() {
                self.rescan_dir(path, &mut changed_modules);
                continue;
            }
            match self.classify(path) {
                PathKind::Plug(name) if path.is_file() => self.reload(&name, path),
                PathKind::Plug(name) => self.unload(&name),
                PathKind::Module(key) => changed_modules.push(key),
                // A folder that went away (deleted or renamed): drop the plugs
                // in it, and forget the modules in it so nothing compiles
                // against a module that is no longer there.
                PathKind::Other if !path.exists() => {
                    self.unload_under(path);
                    if let Some(prefix) = relative_key(&self.folder, path) {
                        changed_modules.extend(self.resolver.cached_under(&prefix));
                    }
                }
                PathKind::Other => {}
            }
        }
        if !changed_modules.is_empty() {
            self.modules_changed(&changed_modules);
        }
    }

    /// Re-read everything (after the watcher lost track, say).
    pub fn rescan(&self) {
        let mut modules = Vec::new();
        self.rescan_dir(&self.folder.clone(), &mut modules);
        let gone: Vec<String> =
            self.read().iter().filter(|(_, e)| !entry_path(e).exists()).map(|(name, _)| name.clone()).collect();
        for name in gone {
            self.unload(&name);
        }
        self.modules_changed(&modules);
    }

    fn rescan_dir(&self, dir: &Path, modules: &mut Vec<String>) {
        let mut files = Vec::new();
        if let Err(e) = collect_all_rhai(dir, &mut files) {
            tracing::warn!("cannot scan {}: {e}", dir.display());
        }
        for file in files {
            match self.classify(&file) {
                PathKind::Plug(name) => self.reload(&name, &file),
                PathKind::Module(key) => modules.push(key),
                PathKind::Other => {}
            }
        }
    }

    fn reload(&self, name: &str, path: &Path) {
        let previous = match self.read().get(name) {
            Some(Entry::Ready { plug, .. }) => Some(plug.clone()),
            _ => None,
        };
        let entry = self.compile_entry(name, path, previous);
        self.metrics.reloads.inc();
        if let Entry::Ready { last_error: None, .. } = &entry {
            tracing::info!("loaded plug `{name}` from {}", path.display());
        }
        self.write().insert(name.to_owned(), entry);
    }

    fn unload(&self, name: &str) {
        if self.write().remove(name).is_some() {
            tracing::info!("unloaded plug `{name}`");
        }
    }

    fn unload_under(&self, dir: &Path) {
        let names: Vec<String> =
            self.read().iter().filter(|(_, e)| entry_path(e).starts_with(dir)).map(|(n, _)| n.clone()).collect();
        for name in names {
            self.unload(&name);
        }
    }

    /// Recompile every plug that reached one of `keys`, and every plug whose
    /// latest version failed (it may have failed on a module that now
    /// exists; its last good version's imports say nothing about that).
    fn modules_changed(&self, keys: &[String]) {
        for key in keys {
            self.resolver.invalidate(key);
        }
        let targets: Vec<(String, PathBuf)> = self
            .read()
            .iter()
            .filter_map(|(name, entry)| match entry {
                Entry::Ready { plug, last_error }
                    if last_error.is_some() || keys.iter().any(|k| plug.imports.contains(k)) =>
                {
                    Some((name.clone(), plug.path.clone()))
                }
                Entry::Broken { path, .. } => Some((name.clone(), path.clone())),
                _ => None,
            })
            .collect();
        for (name, path) in targets {
            self.reload(&name, &path);
        }
    }

    /// Compile into a table entry, keeping `previous` serving on failure.
    fn compile_entry(&self, name: &str, path: &Path, previous: Option<Arc<Plug>>) -> Entry {
        match self.compile(name, path) {
            Ok(plug) => Entry::Ready { plug: Arc::new(plug), last_error: None },
            Err(error) => {
                self.metrics.compile_errors.inc();
                tracing::error!("{error}");
                match previous {
                    Some(plug) => {
                        tracing::warn!("plug `{name}` keeps serving its last good version");
                        Entry::Ready { plug, last_error: Some(error) }
                    }
                    None => Entry::Broken { path: path.to_path_buf(), error },
                }
            }
        }
    }

    /// Compile one plug file, resolving its imports now.
    pub fn compile(&self, name: &str, path: &Path) -> Result<Plug, PlugError> {
        let (file, source) = read_source(name, path)?;
        let (ast, imports) = modules::recording(|| {
            engine::with_compile_deadline(self.compile_timeout, || {
                self.engine.compile_into_self_contained(&Scope::new(), &source)
            })
        });
        let ast = ast.map_err(|e| compile_error(name, &file, &source, &e))?;
        let mut handlers = Vec::new();
        for f in ast.iter_functions() {
            if f.access == FnAccess::Private || f.name.starts_with("anon$") {
                continue;
            }
            if f.params.len() == 2 {
                handlers.push(f.name.to_owned());
            } else if self.validate_shape {
                let (line, column) = find_fn(&source, f.name);
                let (function, params) = (f.name.to_owned(), f.params.len());
                return Err(PlugError::Shape { plug: name.to_owned(), file, line, column, function, params });
            }
        }
        // A plug with nothing to run would leave every request unanswered.
        // It is also what an in-place save looks like when it is read between
        // the truncation and the write (an empty file): as an error, the last
        // good version keeps serving until the write's own event reloads it.
        if handlers.is_empty() {
            let message = "has no handler: a plug needs a public function with two parameters, \
                           fn NAME(msg, yield_msg)"
                .to_owned();
            return Err(PlugError::Compile { plug: name.to_owned(), file, line: 1, column: 1, message });
        }
        handlers.sort();
        handlers.dedup();
        Ok(Plug {
            // A plug that can sleep starts on the plug threads: a sleep inline
            // would hold up the other messages of its client meanwhile.
            slow: std::sync::atomic::AtomicBool::new(source.contains("sleep")),
            // Likewise a plug that can call out, itself or through a module
            // it imports, never runs on its connection's task, not even for
            // the first call of a plug whose runs call out only now and then.
            waits: std::sync::atomic::AtomicBool::new(
                may_call_out(&source, self.clustered)
                    || imports.iter().any(|module| {
                        modules::module_source(&self.folder, module, rhai::Position::NONE)
                            .is_ok_and(|text| may_call_out(&text, self.clustered))
                    }),
            ),
            settled: std::sync::atomic::AtomicBool::new(false),
            name: name.into(),
            path: path.to_path_buf(),
            ast,
            handlers,
            imports,
            loaded_at: SystemTime::now(),
            metrics: self.metrics.plug(name),
        })
    }

    /// Compile a shared module file on its own (for `ssocket check`).
    pub fn check_module(&self, key: &str, path: &Path) -> Result<(), PlugError> {
        let (file, source) = read_source(key, path)?;
        engine::with_compile_deadline(self.compile_timeout, || {
            self.engine.compile_into_self_contained(&Scope::new(), &source)
        })
        .map(|_| ())
        .map_err(|e| compile_error(key, &file, &source, &e))
    }

    /// What a path below the folder is: plug, module (`_` prefix on the file
    /// or a folder), or neither (hidden, not `.rhai`, outside the folder).
    pub fn classify(&self, path: &Path) -> PathKind {
        let Ok(rel) = path.strip_prefix(&self.folder) else { return PathKind::Other };
        let Some(name) = event_name(&self.folder, path) else { return PathKind::Other };
        if path.extension().is_none_or(|e| e != "rhai") {
            return PathKind::Other;
        }
        let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        // `#` starts a request tag in an event name: such files are not plugs.
        if parts.iter().any(|p| p.starts_with('.') || p.contains('#')) {
            PathKind::Other
        } else if parts.iter().any(|p| p.starts_with('_')) {
            PathKind::Module(name)
        } else {
            PathKind::Plug(name)
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.plugs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.plugs.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn entry_path(entry: &Entry) -> &Path {
    match entry {
        Entry::Ready { plug, .. } => &plug.path,
        Entry::Broken { path, .. } | Entry::Pending(path) => path,
    }
}

/// Rhai errors as `file:line:column: message`. Import errors come without
/// a position (Rhai resolves imports after parsing), so they point at the
/// first `import "PATH"` in the source.
fn compile_error(name: &str, file: &str, source: &str, err: &EvalAltResult) -> PlugError {
    let pos = err.position();
    let message = match err {
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        EvalAltResult::ErrorParsing(parse, _) => parse.to_string(),
        other => other.to_string(),
    };
    let (mut line, mut column) = (pos.line().unwrap_or(0), pos.position().unwrap_or(0));
    if line == 0 {
        if let Some(path) = message.strip_prefix("import \"").and_then(|m| m.split('"').next()) {
            (line, column) = find_text(source, &format!("\"{path}\""));
        }
    }
    PlugError::Compile { plug: name.to_owned(), file: file.to_owned(), line, column, message }
}

/// 1-based line and column of the first `needle`, or (0, 0).
fn find_text(source: &str, needle: &str) -> (usize, usize) {
    source.lines().enumerate().find_map(|(i, line)| line.find(needle).map(|col| (i + 1, col + 1))).unwrap_or((0, 0))
}

/// Line and column of `fn NAME` in the source, for shape errors.
fn find_fn(source: &str, name: &str) -> (usize, usize) {
    find_text(source, &format!("fn {name}"))
}

/// Every `.rhai` plug file below `dir`, skipping hidden entries and
/// `_`-prefixed ones (modules).
fn collect_rhai(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    walk(dir, out, &|name| name.starts_with('.') || name.starts_with('_'))
}

/// Every `.rhai` file below `dir` (plugs and modules), skipping hidden ones.
pub fn collect_all_rhai(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    walk(dir, out, &|name| name.starts_with('.'))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, skip: &dyn Fn(&str) -> bool) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if skip(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, out, skip)?;
        } else if path.extension().is_some_and(|e| e == "rhai") {
            out.push(path);
        }
    }
    Ok(())
}

/// A path below the folder as `/`-joined components, extension kept:
/// `plugs/_lib` → `_lib`.
fn relative_key(folder: &Path, path: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = path
        .strip_prefix(folder)
        .ok()?
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    parts.filter(|p| !p.is_empty()).map(|p| p.join("/"))
}

/// `plugs/test/sub.rhai` → `test/sub`. None for paths that are not plain
/// UTF-8 components below the folder.
pub fn event_name(folder: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(folder).ok()?.with_extension("");
    let parts: Option<Vec<&str>> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let name = parts?.join("/");
    (!name.is_empty() && name.len() <= 255).then_some(name)
}

/// Whether `source` mentions a call that waits on another service
/// (`Invocation::wait`): `http::` always; `store::`, `rooms::`, `send_to`
/// and `clients` when they go through Redis. A word in a comment or string
/// counts too, which only keeps the plug off its connection's task. A call
/// this misses would still mark the plug at its first wait
/// (`Invocation::wait`), after sending what the run yielded before.
fn may_call_out(source: &str, clustered: bool) -> bool {
    source.contains("http::")
        || (clustered && ["store::", "rooms::", "send_to", "clients"].iter().any(|w| source.contains(w)))
}

/// A plug or module file's text, with its displayed path for errors.
fn read_source(key: &str, path: &Path) -> Result<(String, String), PlugError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => Ok((file, source)),
        Err(e) => Err(PlugError::Io { plug: key.to_owned(), file, message: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugs_that_can_call_out_are_told_from_their_source() {
        let http = "fn f(msg, yield_msg) { if msg.payload.go { http::get(msg.payload.url); } }";
        assert!(may_call_out(http, false) && may_call_out(http, true));
        let store = "fn f(msg, yield_msg) { yield_msg(#{ payload: store::incr(\"n\") }); }";
        assert!(!may_call_out(store, false), "the memory store answers at once");
        assert!(may_call_out(store, true), "the Redis store waits");
        for clustered in ["rooms::join(\"r\")", "send_to(1, #{})", "let ids = clients();"] {
            assert!(!may_call_out(clustered, false) && may_call_out(clustered, true), "{clustered}");
        }
        let quick = "fn f(msg, yield_msg) { yield_msg(#{ payload: conn::get(\"name\") }); broadcast(#{}); }";
        assert!(!may_call_out(quick, false) && !may_call_out(quick, true));
    }

    #[test]
    fn event_names_come_from_relative_paths() {
        let f = Path::new("/p");
        assert_eq!(event_name(f, Path::new("/p/echo.rhai")).as_deref(), Some("echo"));
        assert_eq!(event_name(f, Path::new("/p/test/sub.rhai")).as_deref(), Some("test/sub"));
        assert_eq!(event_name(f, Path::new("/q/x.rhai")), None);
    }

    #[test]
    fn classifies_plugs_modules_and_the_rest() {
        let mut s = Settings::load(None, &[], &[]).unwrap();
        s.plugs_folder = PathBuf::from("/p");
        let resolver = Arc::new(PlugResolver::new(s.plugs_folder.clone()));
        let reg = Registry::new(Arc::new(Engine::new()), resolver, &s, Arc::new(Metrics::new()));
        assert_eq!(reg.classify(Path::new("/p/a/b.rhai")), PathKind::Plug("a/b".into()));
        assert_eq!(reg.classify(Path::new("/p/_lib/g.rhai")), PathKind::Module("_lib/g".into()));
        assert_eq!(reg.classify(Path::new("/p/a/_g.rhai")), PathKind::Module("a/_g".into()));
        assert_eq!(reg.classify(Path::new("/p/a/.b.rhai.swp")), PathKind::Other);
        assert_eq!(reg.classify(Path::new("/p/a/b.rhai~")), PathKind::Other);
        assert_eq!(reg.classify(Path::new("/p/.hidden/b.rhai")), PathKind::Other);
        assert_eq!(reg.classify(Path::new("/p/a#1.rhai")), PathKind::Other, "# starts a tag");
        assert_eq!(reg.classify(Path::new("/elsewhere/b.rhai")), PathKind::Other);
    }
}
