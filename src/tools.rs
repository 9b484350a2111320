//! Commands for plug authors that run without serving: `--generate NAME`
//! writes a starter plug, `check` compiles everything and reports errors
//! as `file:line:column: message` (for editors and CI).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::config::Settings;
use crate::hub::Hub;
use crate::plugs::registry::{collect_all_rhai, PathKind};
use crate::plugs::Plugs;

/// Why `--generate` refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GenerateError {
    #[error("plug name `{0}` is not valid: use letters, digits, `-`, `_` and `/` for sub-folders (e.g. chat/join)")]
    BadName(String),
    #[error("plug name `{0}` would be a shared module (a part starts with `_`), not a plug")]
    ModuleName(String),
    #[error("{0} already exists; not overwriting it")]
    Exists(PathBuf),
    #[error("cannot write {path}: {message}")]
    Io { path: PathBuf, message: String },
}

/// The starter plug: it works as written, and its comments teach the API.
pub fn template(name: &str) -> String {
    format!(
        r#"// {name}: answers the event "{name}".
//
// Every public function that takes two parameters runs for each message:
//   msg        #{{event, payload, type, client}}: payload is the JSON the
//              client sent, as Rhai values (maps, arrays, strings, numbers)
//   yield_msg  sends one reply at once; call it as often as you like
// A reply is #{{payload: ...}}, optionally with `event` (default: "{name}")
// and `type` (default: EventType::MESSAGE, to the sender; BROADCAST goes to
// everyone; SYNC sends only the bytes that changed).
// Also available: broadcast(reply), send_to(client_id, reply), clients(),
// sleep(ms), print(text), and modules: import "std/validate" as v;
// Helpers marked `private fn` are not run as handlers.

fn handle(msg, yield_msg) {{
    yield_msg(#{{ payload: #{{ hello: "from {name}", received: msg.payload }} }});
}}
"#
    )
}

/// Write `plugs/NAME.rhai` from the template; returns its path.
pub fn generate(folder: &Path, name: &str) -> Result<PathBuf, GenerateError> {
    let name = name.strip_suffix(".rhai").unwrap_or(name);
    let valid_part = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_');
    if name.is_empty() || name.len() > 255 || !name.split('/').all(valid_part) {
        return Err(GenerateError::BadName(name.to_owned()));
    }
    if name.split('/').any(|p| p.starts_with('_')) {
        return Err(GenerateError::ModuleName(name.to_owned()));
    }
    debug_assert!(Path::new(name).components().all(|c| matches!(c, Component::Normal(_))));
    let path = folder.join(format!("{name}.rhai"));
    if path.exists() {
        return Err(GenerateError::Exists(path));
    }
    let io = |e: std::io::Error| GenerateError::Io { path: path.clone(), message: e.to_string() };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // create_new: never overwrite, even if the file appeared since the check.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            GenerateError::Exists(path.clone())
        } else {
            io(e)
        }
    })?;
    std::io::Write::write_all(&mut file, template(name).as_bytes()).map_err(io)?;
    Ok(path)
}

/// The outcome of `check`.
pub struct CheckReport {
    pub plugs: usize,
    pub modules: usize,
    /// One line per problem: `file:line:column: message`.
    pub errors: Vec<String>,
}

/// Compile every plug and module under the plugs folder.
pub fn check(settings: &Settings) -> Result<CheckReport, String> {
    let folder = &settings.plugs_folder;
    if !folder.is_dir() {
        return Err(format!("plugs folder {} does not exist", folder.display()));
    }
    let services = crate::plugs::host::Services::local(settings).map_err(|e| e.to_string())?;
    let plugs = Plugs::new(settings, Hub::new(), &services);
    let registry: &Arc<_> = plugs.registry();
    let mut files = Vec::new();
    collect_all_rhai(folder, &mut files).map_err(|e| format!("cannot read {}: {e}", folder.display()))?;
    files.sort();
    let mut report = CheckReport { plugs: 0, modules: 0, errors: Vec::new() };
    for path in files {
        let result = match registry.classify(&path) {
            PathKind::Plug(name) => {
                report.plugs += 1;
                registry.compile(&name, &path).map(|_| ())
            }
            PathKind::Module(key) => {
                report.modules += 1;
                registry.check_module(&key, &path)
            }
            PathKind::Other => continue,
        };
        if let Err(err) = result {
            report.errors.push(err.to_string());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_writes_once_and_refuses_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate(dir.path(), "chat/join").unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("fn handle(msg, yield_msg)"));
        assert!(matches!(generate(dir.path(), "chat/join"), Err(GenerateError::Exists(_))));
        for bad in ["", "../x", "/abs", "a//b", "a b", "a/./b"] {
            assert!(matches!(generate(dir.path(), bad), Err(GenerateError::BadName(_))), "{bad}");
        }
        assert!(matches!(generate(dir.path(), "_lib/x"), Err(GenerateError::ModuleName(_))));
    }
}
