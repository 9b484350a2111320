//! `staticFolder`: an app's own files served at `/` next to its plugs
//! (the playground then moves to `/playground`). Content types come from
//! file names, a folder answers its `index.html`, and nothing outside the
//! folder can be reached: `..` segments (plain or percent-encoded) are
//! refused, and so is any path whose real location (symlinks followed)
//! leaves the folder. A missing file is 404.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

/// The folder's files, or nothing when `folder` is not set.
pub fn routes(folder: Option<PathBuf>) -> Option<BoxedFilter<(Box<dyn Reply>,)>> {
    let folder = folder?;
    let root = Arc::new(folder.canonicalize().unwrap_or_else(|_| folder.clone()));
    let check = root.clone();
    // `peek`, not `tail`: the file server must still see the path.
    let inside = warp::path::peek()
        .and_then(move |tail: warp::path::Peek| {
            let root = check.clone();
            async move {
                if reachable(&root, tail.as_str()) {
                    Ok(())
                } else {
                    tracing::debug!("static: {:?} is not a file inside staticFolder", tail.as_str());
                    Err(warp::reject::not_found())
                }
            }
        })
        .untuple_one();
    let files =
        inside.and(warp::fs::dir(root.as_ref().clone())).map(|file: warp::fs::File| Box::new(file) as Box<dyn Reply>);
    Some(files.boxed())
}

/// Whether URL path `tail` names something that exists inside `root`
/// (canonical): no `..`, `.` or backslash segments once percent-decoded,
/// and its real path (symlinks resolved) below `root`. Anything else is a
/// 404, including a path through a file (`/style.css/x`), which the file
/// server alone would answer with a 500.
pub fn reachable(root: &Path, tail: &str) -> bool {
    let Ok(decoded) = percent_encoding::percent_decode_str(tail).decode_utf8() else { return false };
    let mut path = root.to_path_buf();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment == ".." || segment == "." || segment.contains('\\') || segment.contains('\0') {
            return false;
        }
        path.push(segment);
    }
    if !path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_) | Component::Prefix(_))) {
        return false;
    }
    match path.canonicalize() {
        Ok(real) => real.starts_with(root),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
        assert!(reachable(&root, "sub/a.txt"));
        assert!(reachable(&root, ""));
        assert!(reachable(&root, "sub/"));
        assert!(!reachable(&root, "missing.html"));
        assert!(!reachable(&root, "sub/a.txt/x"), "a path through a file");
        for bad in
            ["../etc/passwd", "sub/../../x", "%2e%2e/x", "%2E%2E%2fx", "sub/%2e%2e/%2e%2e/x", ".", "a\\..\\b", "%00"]
        {
            assert!(!reachable(&root, bad), "{bad}");
        }
        #[cfg(unix)]
        assert!(!reachable(&root, "escape/secret"), "a symlink out of the folder");
    }
}
