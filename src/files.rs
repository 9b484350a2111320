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
    let inside = warp::path::tail()
        .and_then(move |tail: warp::path::Tail| {
            let root = check.clone();
            async move {
                if stays_inside(&root, tail.as_str()) {
                    Ok(())
                } else {
                    tracing::debug!("static: refused {:?}: it leaves staticFolder", tail.as_str());
                    Err(warp::reject::not_found())
                }
            }
        })
        .untuple_one();
    let files =
        inside.and(warp::fs::dir(root.as_ref().clone())).map(|file: warp::fs::File| Box::new(file) as Box<dyn Reply>);
    Some(files.boxed())
}

/// Whether URL path `tail` names something inside `root` (canonical):
/// no `..`, `.` or backslash segments once percent-decoded, and if it
/// exists, its real path (symlinks resolved) is below `root`.
pub fn stays_inside(root: &Path, tail: &str) -> bool {
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
        Err(_) => true, // missing: the file server answers 404
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
        assert!(stays_inside(&root, "sub/a.txt"));
        assert!(stays_inside(&root, ""));
        assert!(stays_inside(&root, "missing.html"));
        for bad in
            ["../etc/passwd", "sub/../../x", "%2e%2e/x", "%2E%2E%2fx", "sub/%2e%2e/%2e%2e/x", ".", "a\\..\\b", "%00"]
        {
            assert!(!stays_inside(&root, bad), "{bad}");
        }
        #[cfg(unix)]
        assert!(!stays_inside(&root, "escape/secret"), "a symlink out of the folder");
    }
}
