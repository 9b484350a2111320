//! Which event runs which compiled script.
//!
//! The table is filled by scanning the plugs folder; events are looked up
//! in it by name and never turned into paths, so no event name (such as
//! `../../etc/passwd`) can reach a file outside the folder.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};

use rhai::{Engine, FnAccess, AST};
use serde_json::json;

use crate::config::Settings;

/// A compiled plug.
#[derive(Debug)]
pub struct Plug {
    /// The event it answers, e.g. `test/sub`.
    pub name: String,
    pub path: PathBuf,
    pub ast: AST,
    /// Public two-parameter functions, run in this (name) order.
    pub handlers: Vec<String>,
}

/// Why a plug could not be loaded. Shown in the log, and to a client that
/// sends the plug's event while it has never compiled.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PlugError {
    #[error("{file}:{line}:{column}: {message}")]
    Compile { plug: String, file: String, line: usize, column: usize, message: String },
    #[error("{file}: function `{function}` takes {params} parameters; a plug function takes two: fn {function}(msg, yield_msg)")]
    Shape { plug: String, file: String, function: String, params: usize },
    #[error("{file}: cannot read: {message}")]
    Io { plug: String, file: String, message: String },
}

impl PlugError {
    /// The ERROR payload a client gets for this plug.
    pub fn to_reply(&self) -> serde_json::Value {
        match self {
            PlugError::Compile { plug, line, column, message, .. } => json!({
                "error": "compile_error",
                "message": format!("plug `{plug}` does not compile: {message}"),
                "plug": plug, "line": line, "column": column,
            }),
            PlugError::Shape { plug, .. } | PlugError::Io { plug, .. } => json!({
                "error": "compile_error", "message": self.to_string(), "plug": plug,
            }),
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

enum Entry {
    Ready(Arc<Plug>),
    Broken(PlugError),
}

pub struct Registry {
    engine: Arc<Engine>,
    folder: PathBuf,
    validate_shape: bool,
    /// Read on every message, written on (re)load: a read-write lock, never
    /// held across an `.await` or a script run.
    plugs: RwLock<HashMap<String, Entry>>,
}

impl Registry {
    pub fn new(engine: Arc<Engine>, settings: &Settings) -> Registry {
        Registry {
            engine,
            folder: settings.plugs_folder.clone(),
            validate_shape: settings.validate_function_shape,
            plugs: RwLock::new(HashMap::new()),
        }
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Compile every plug under the folder. Returns the number loaded and
    /// the errors (each also logged).
    pub fn load_all(&self) -> std::io::Result<(usize, Vec<PlugError>)> {
        let mut files = Vec::new();
        collect_plugs(&self.folder, &mut files)?;
        let mut errors = Vec::new();
        let mut table = HashMap::new();
        for path in files {
            let Some(name) = event_name(&self.folder, &path) else { continue };
            match self.compile(&name, &path) {
                Ok(plug) => {
                    table.insert(name, Entry::Ready(Arc::new(plug)));
                }
                Err(err) => {
                    tracing::error!("{err}");
                    errors.push(err.clone());
                    table.insert(name, Entry::Broken(err));
                }
            }
        }
        let loaded = table.len() - errors.len();
        *self.plugs.write().unwrap_or_else(|e| e.into_inner()) = table;
        Ok((loaded, errors))
    }

    pub fn lookup(&self, event: &str) -> Lookup {
        match self.plugs.read().unwrap_or_else(|e| e.into_inner()).get(event) {
            Some(Entry::Ready(plug)) => Lookup::Found(plug.clone()),
            Some(Entry::Broken(err)) => Lookup::Broken(err.clone()),
            None => Lookup::NotFound,
        }
    }

    /// Names of loaded plugs, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.plugs.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        names.sort();
        names
    }

    /// Compile one plug file.
    pub fn compile(&self, name: &str, path: &Path) -> Result<Plug, PlugError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path)
            .map_err(|e| PlugError::Io { plug: name.to_owned(), file: file.clone(), message: e.to_string() })?;
        let ast = self.engine.compile(&source).map_err(|e| PlugError::Compile {
            plug: name.to_owned(),
            file: file.clone(),
            line: e.1.line().unwrap_or(0),
            column: e.1.position().unwrap_or(0),
            message: e.0.to_string(),
        })?;
        let mut handlers = Vec::new();
        for f in ast.iter_functions() {
            if f.access == FnAccess::Private || f.name.starts_with("anon$") {
                continue;
            }
            if f.params.len() == 2 {
                handlers.push(f.name.to_owned());
            } else if self.validate_shape {
                return Err(PlugError::Shape { plug: name.to_owned(), file, function: f.name.to_owned(), params: f.params.len() });
            }
        }
        handlers.sort();
        handlers.dedup();
        Ok(Plug { name: name.to_owned(), path: path.to_path_buf(), ast, handlers })
    }
}

/// Every `.rhai` file below `dir`, skipping hidden entries and those whose
/// name starts with `_` (shared modules, not plugs).
fn collect_plugs(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_plugs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rhai") {
            out.push(path);
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_come_from_relative_paths() {
        let f = Path::new("/p");
        assert_eq!(event_name(f, Path::new("/p/echo.rhai")).as_deref(), Some("echo"));
        assert_eq!(event_name(f, Path::new("/p/test/sub.rhai")).as_deref(), Some("test/sub"));
        assert_eq!(event_name(f, Path::new("/q/x.rhai")), None);
    }
}
