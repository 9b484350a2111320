//! The `ssocket` binary's tools for plug authors: `--generate NAME` and
//! `check`. Each run happens in an empty temporary working directory (so the
//! repo's config.toml is not read) with `--plugsFolder` pointing at a
//! temporary plugs folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `ssocket --plugsFolder FOLDER ARGS...` in an empty temp cwd.
fn ssocket(folder: &Path, args: &[&str]) -> Run {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssocket"));
    cmd.current_dir(cwd.path()).arg("--plugsFolder").arg(folder).args(args);
    // Keep the environment from configuring the server behind the test's back.
    for (name, _) in std::env::vars() {
        if name.starts_with("SSOCKET_") {
            cmd.env_remove(name);
        }
    }
    let Output { status, stdout, stderr } = cmd.output().expect("the binary runs");
    Run { code: status.code(), stdout: String::from_utf8(stdout).unwrap(), stderr: String::from_utf8(stderr).unwrap() }
}

fn write(folder: &Path, rel: &str, source: &str) -> PathBuf {
    let path = folder.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, source).unwrap();
    path
}

// ------------------------------------------------------------- --generate

#[test]
fn generate_writes_a_template_and_prints_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("plugs");
    std::fs::create_dir(&folder).unwrap();

    let run = ssocket(&folder, &["--generate", "chat/join"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let path = folder.join("chat/join.rhai");
    assert_eq!(run.stdout.trim(), path.display().to_string(), "prints the path");
    let source = std::fs::read_to_string(&path).unwrap();
    assert!(source.starts_with("//"), "the template is commented:\n{source}");
    assert!(source.contains("fn handle(msg, yield_msg)"), "{source}");
    assert!(source.contains("\"chat/join\""), "the template names its event:\n{source}");

    // The generated plug passes `check`.
    let run = ssocket(&folder, &["check"]);
    assert_eq!(run.code, Some(0), "stdout: {} stderr: {}", run.stdout, run.stderr);

    // A top-level name too; `.rhai` may be given.
    let run = ssocket(&folder, &["--generate", "solo.rhai"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout.trim(), folder.join("solo.rhai").display().to_string());
}

#[test]
fn generate_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path();
    let existing = write(folder, "mine.rhai", "// my work\n");
    let run = ssocket(folder, &["--generate", "mine"]);
    assert_ne!(run.code, Some(0), "refuses");
    assert!(run.stderr.contains("already exists"), "a clear message: {}", run.stderr);
    assert!(run.stderr.contains(&existing.display().to_string()), "names the file: {}", run.stderr);
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "// my work\n", "left untouched");
    assert!(run.stdout.is_empty(), "prints no path: {}", run.stdout);

    // Generated once, refused the second time.
    assert_eq!(ssocket(folder, &["--generate", "a/b"]).code, Some(0));
    let run = ssocket(folder, &["--generate", "a/b"]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
}

#[test]
fn generate_rejects_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("plugs");
    std::fs::create_dir(&folder).unwrap();
    for bad in ["../escape", "/abs", "a//b", "a b", "a/./b", "x/..", "", "_lib/x", "a/_b"] {
        let run = ssocket(&folder, &["--generate", bad]);
        assert_ne!(run.code, Some(0), "`{bad}` is refused");
        assert!(run.stderr.contains("not valid") || run.stderr.contains("module"), "`{bad}`: {}", run.stderr);
        assert!(run.stdout.is_empty(), "`{bad}`: {}", run.stdout);
    }
    assert!(!dir.path().join("escape.rhai").exists(), "nothing written outside the folder");
    let mut left = Vec::new();
    walk(&folder, &mut left);
    assert!(left.is_empty(), "nothing written: {left:?}");
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

// ------------------------------------------------------------------ check

#[test]
fn check_passes_a_clean_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path();
    write(folder, "echo.rhai", "fn echo(msg, yield_msg) { yield_msg(#{ payload: msg.payload }); }\n");
    write(folder, "_lib/greet.rhai", "fn hello(n) { `hello, ${n}` }\n");
    write(
        folder,
        "room/join.rhai",
        "import \"_lib/greet\" as g;\nimport \"std/validate\" as v;\nfn f(msg, yield_msg) { yield_msg(#{ payload: g::hello(\"x\") }); }\n",
    );
    write(folder, "notes.txt", "not a plug");
    write(folder, ".hidden.rhai", "this is ( not rhai");
    let run = ssocket(folder, &["check"]);
    assert_eq!(run.code, Some(0), "stdout: {} stderr: {}", run.stdout, run.stderr);
    assert!(run.stdout.trim().is_empty(), "no error lines: {}", run.stdout);
    assert!(run.stderr.contains("2 plugs") && run.stderr.contains("1 module"), "a summary: {}", run.stderr);
}

#[test]
fn check_reports_every_error_as_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path();
    let good = write(folder, "good.rhai", "fn f(msg, yield_msg) { yield_msg(#{ payload: 1 }); }\n");
    let syntax = write(folder, "broken.rhai", "fn f(msg, yield_msg) {\n    let x = ;\n}\n");
    let module = write(folder, "_lib/bad.rhai", "// a module\n\nfn helper( {\n");
    let escape = write(
        folder,
        "sub/escape.rhai",
        "// reaches outside\nimport \"../../secret\" as s;\nfn f(msg, yield_msg) { yield_msg(#{ payload: 1 }); }\n",
    );
    let run = ssocket(folder, &["check"]);
    assert_ne!(run.code, Some(0), "fails: stdout {} stderr {}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one line per problem:\n{}", run.stdout);
    for line in &lines {
        let mut parts = line.splitn(4, ':');
        let (file, l, c, msg) = (parts.next(), parts.next(), parts.next(), parts.next());
        assert!(file.is_some_and(|f| Path::new(f).is_file()), "file part of {line}");
        assert!(l.is_some_and(|l| l.parse::<usize>().is_ok_and(|l| l > 0)), "line part of {line}");
        assert!(c.is_some_and(|c| c.parse::<usize>().is_ok_and(|c| c > 0)), "column part of {line}");
        assert!(msg.is_some_and(|m| m.starts_with(' ') && m.len() > 1), "message part of {line}");
    }
    let find = |path: &Path| {
        let prefix = format!("{}:", path.display());
        *lines.iter().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("a line for {prefix}\n{}", run.stdout))
    };
    assert!(find(&syntax).starts_with(&format!("{}:2:", syntax.display())), "{}", find(&syntax));
    assert!(find(&module).starts_with(&format!("{}:3:", module.display())), "{}", find(&module));
    let escape_line = find(&escape);
    assert!(escape_line.starts_with(&format!("{}:2:8:", escape.display())), "{escape_line}");
    assert!(escape_line.contains("\"../../secret\""), "names the import: {escape_line}");
    assert!(!run.stdout.contains(&good.display().to_string()), "the good plug is not listed");
    assert!(run.stderr.contains("3 errors"), "a summary: {}", run.stderr);
}

#[test]
fn check_on_a_missing_folder_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let run = ssocket(&missing, &["check"]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
}
