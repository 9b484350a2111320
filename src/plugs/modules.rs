//! Where `import` finds modules, and which plugs depend on which modules.
//!
//! - `import "std/NAME"`: a module of `scripts-stdlib/`, built into the
//!   binary so an installed `ssocket` has it anywhere.
//! - `import "_lib/greet"`: `_lib/greet.rhai` under the plugs folder. Paths
//!   are relative to the plugs folder; absolute paths and `..` are refused,
//!   so a plug cannot load a script from elsewhere on the machine.
//!
//! Plugs are compiled self-contained (every import resolved at compile
//! time), so a bad import is a compile error of the plug and a running plug
//! never touches the disk. While a plug compiles, every module it reaches,
//! directly or through other modules, is recorded: changing a module then
//! recompiles exactly the plugs that depend on it.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, Shared};

/// The stdlib, embedded at build time: `(name, source)`.
pub const STDLIB: &[(&str, &str)] = &[
    ("collections", include_str!("../../scripts-stdlib/collections.rhai")),
    ("text", include_str!("../../scripts-stdlib/text.rhai")),
    ("time", include_str!("../../scripts-stdlib/time.rhai")),
    ("validate", include_str!("../../scripts-stdlib/validate.rhai")),
];

/// The set of module paths (as written in `import`) a compile reached.
pub type Deps = BTreeSet<String>;

thread_local! {
    /// One set per compile in progress on this thread (module compiles nest
    /// inside plug compiles); each resolved path is added to every open set.
    static RECORDING: RefCell<Vec<Deps>> = const { RefCell::new(Vec::new()) };
}

/// Run `f`, returning what it produced and every module path it resolved.
pub fn recording<T>(f: impl FnOnce() -> T) -> (T, Deps) {
    RECORDING.with(|r| r.borrow_mut().push(Deps::new()));
    let out = f();
    let deps = RECORDING.with(|r| r.borrow_mut().pop()).unwrap_or_default();
    (out, deps)
}

fn record(paths: impl IntoIterator<Item = String> + Clone) {
    RECORDING.with(|r| {
        for set in r.borrow_mut().iter_mut() {
            set.extend(paths.clone());
        }
    });
}

/// A compiled module and the modules it reached itself.
struct Cached {
    module: Shared<Module>,
    deps: Deps,
}

/// The engine's module resolver.
pub struct PlugResolver {
    folder: PathBuf,
    /// Compiled modules by import path. Cleared for a module (and whatever
    /// reached it) when its file changes.
    cache: Mutex<HashMap<String, Cached>>,
}

impl PlugResolver {
    pub fn new(folder: PathBuf) -> PlugResolver {
        PlugResolver { folder, cache: Mutex::new(HashMap::new()) }
    }

    /// Forget `path` and every cached module that reached it.
    pub fn invalidate(&self, path: &str) {
        self.lock().retain(|key, cached| key != path && !cached.deps.contains(path));
    }

    /// Cached modules inside the folder `dir` (an import-path prefix such
    /// as `_lib`), for when that folder is moved away or deleted.
    pub fn cached_under(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        self.lock().keys().filter(|key| key.starts_with(&prefix)).cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load(&self, engine: &Engine, path: &str, pos: Position) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let source = module_source(&self.folder, path, pos)?;
        let ast = engine.compile(&source).map_err(|e| {
            let (line, col) = (e.1.line().unwrap_or(0), e.1.position().unwrap_or(0));
            import_error(path, &format!("does not compile: {} (line {line}, column {col})", e.0), pos)
        })?;
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| import_error(path, &format!("failed while loading: {e}"), pos))?;
        Ok(Shared::new(module))
    }
}

impl ModuleResolver for PlugResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        if let Some(hit) = self.lock().get(path) {
            record(std::iter::once(path.to_owned()).chain(hit.deps.iter().cloned()));
            return Ok(hit.module.clone());
        }
        record(std::iter::once(path.to_owned()));
        // A module is cached only once it has loaded, so an import cycle
        // (a module reaching itself) would recurse until the stack overflows
        // and abort the process: refuse it, and overly deep chains, instead.
        let _loading = Loading::enter(path).map_err(|why| import_error(path, &why, pos))?;
        let (module, deps) = recording(|| self.load(engine, path, pos));
        let module = module?;
        record(deps.iter().cloned());
        self.lock().insert(path.to_owned(), Cached { module: module.clone(), deps });
        Ok(module)
    }
}

/// How deeply module imports may nest (module A imports B imports C ...).
pub const MAX_IMPORT_DEPTH: usize = 16;

thread_local! {
    /// The modules being loaded on this thread, outermost first.
    static LOADING: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Marks a module as being loaded on this thread until dropped.
struct Loading;

impl Loading {
    fn enter(path: &str) -> Result<Loading, String> {
        LOADING.with(|l| {
            let mut l = l.borrow_mut();
            if let Some(start) = l.iter().position(|p| p == path) {
                let chain: Vec<&str> = l[start..].iter().map(String::as_str).chain([path]).collect();
                return Err(format!("is an import cycle: {}", chain.join(" -> ")));
            }
            if l.len() >= MAX_IMPORT_DEPTH {
                return Err(format!("nests modules more than {MAX_IMPORT_DEPTH} deep: {} -> {path}", l.join(" -> ")));
            }
            l.push(path.to_owned());
            Ok(Loading)
        })
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        LOADING.with(|l| l.borrow_mut().pop());
    }
}

fn stdlib_source(name: &str, pos: Position) -> Result<&'static str, Box<EvalAltResult>> {
    STDLIB.iter().find(|(n, _)| *n == name).map(|(_, src)| *src).ok_or_else(|| {
        let names: Vec<String> = STDLIB.iter().map(|(n, _)| format!("std/{n}")).collect();
        import_error(&format!("std/{name}"), &format!("no such stdlib module; there are {}", names.join(", ")), pos)
    })
}

/// The text behind an import path: a stdlib module's, or its file's in
/// `folder`.
pub fn module_source(folder: &Path, path: &str, pos: Position) -> Result<String, Box<EvalAltResult>> {
    match path.strip_prefix("std/") {
        Some(name) => Ok(stdlib_source(name, pos)?.to_owned()),
        None => {
            let file = module_file(folder, path).map_err(|why| import_error(path, &why, pos))?;
            std::fs::read_to_string(&file)
                .map_err(|e| import_error(path, &format!("cannot read {}: {e}", file.display()), pos))
        }
    }
}

/// The file behind an import path, if the path stays inside the folder.
pub fn module_file(folder: &Path, path: &str) -> Result<PathBuf, String> {
    let rel = Path::new(path);
    if path.is_empty() {
        return Err("is empty".into());
    }
    if rel.is_absolute() {
        return Err("is absolute; imports are relative to the plugs folder (e.g. \"_lib/name\") or \"std/NAME\"".into());
    }
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err("leaves the plugs folder (`..` or `.`); imports are relative to the plugs folder".into());
    }
    Ok(folder.join(format!("{path}.rhai")))
}

fn import_error(path: &str, why: &str, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(format!("import \"{path}\" {why}").into(), pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_paths_stay_inside_the_folder() {
        let f = Path::new("/p");
        assert_eq!(module_file(f, "_lib/greet").unwrap(), PathBuf::from("/p/_lib/greet.rhai"));
        assert!(module_file(f, "../x").unwrap_err().contains("leaves"));
        assert!(module_file(f, "_lib/../../x").unwrap_err().contains("leaves"));
        assert!(module_file(f, "/etc/passwd").unwrap_err().contains("absolute"));
        assert!(module_file(f, "./x").unwrap_err().contains("leaves"));
    }

    #[test]
    fn every_stdlib_file_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts-stdlib");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rhai") {
                let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
                assert!(STDLIB.iter().any(|(n, _)| *n == name), "scripts-stdlib/{name}.rhai is not in STDLIB");
            }
        }
    }
}
