//! The `ssocket` binary's life cycle (issue 4): configuration from file,
//! environment and command line; start-up errors; help and version; the
//! INIT hook's place in start-up; logging and memory metrics; graceful
//! shutdown on SIGTERM and SIGINT.
//!
//! Every test runs the real binary in a fresh temporary directory (so the
//! repo's `config.toml` and any `INIT.rhai` are never read) with every
//! `SSOCKET_*` and `RUST_LOG` variable removed unless the test sets it. A
//! [`Proc`] guard kills its child on every path.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Received, Reply};
use serde_json::json;
use ssocket::config::KEYS;
use ssocket::protocol::EventType;

/// How long a server may take to print its address or a process to exit.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// "Nothing more arrives" checks.
const SILENCE: Duration = Duration::from_millis(300);

// ------------------------------------------------------------ harness

/// A fresh working directory with `plugs/echo.rhai` and `plugs/long.rhai`
/// copied from the repo's example plugs.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugs = dir.path().join("plugs");
    std::fs::create_dir(&plugs).expect("mkdir plugs");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugs");
    for name in ["echo.rhai", "long.rhai"] {
        std::fs::copy(examples.join(name), plugs.join(name)).expect("copy example plug");
    }
    dir
}

/// An empty working directory (no plugs folder).
fn emptydir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// `ssocket ARGS` in `dir`, with a clean environment.
fn ssocket(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssocket"));
    cmd.current_dir(dir).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.to_ascii_uppercase().starts_with("SSOCKET_") || text == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Start `command(port)` on a port picked by [`free_port`] and wait until it
/// listens. A released port may be taken by another process before the
/// child binds it; then pick another (up to 5 times).
fn on_free_port(mut command: impl FnMut(u16) -> Command) -> (Proc, u16, String) {
    for _ in 0..5 {
        let port = free_port();
        let mut p = Proc::spawn(command(port));
        if let Some(addr) = p.try_addr() {
            return (p, port, addr);
        }
    }
    panic!("no free port after 5 tries");
}

/// A running child. Dropping it kills the process.
struct Proc {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().expect("ssocket starts");
        let stdout = common::collect_output(child.stdout.take().expect("stdout"));
        let stderr = common::collect_output(child.stderr.take().expect("stderr"));
        Proc { child, stdout, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until stderr satisfies `pred`; false on timeout.
    fn wait_stderr(&self, wait: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if pred(&self.stderr()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address from "listening on ws://ADDR/".
    fn addr(&mut self) -> String {
        self.try_addr().unwrap_or_else(|| panic!("the port is taken; stderr:\n{}", self.stderr()))
    }

    /// The address from "listening on ws://ADDR/", or None when the server
    /// exited because its port was taken (see [`on_free_port`]).
    fn try_addr(&mut self) -> Option<String> {
        const MARK: &str = "listening on ws://";
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.stderr().contains(MARK) {
            if self.clashed() {
                return None;
            }
            if Instant::now() > deadline {
                let status = self.child.try_wait();
                panic!("no `{MARK}` line (status {status:?}); stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = self.stderr();
        let rest = &text[text.find(MARK).unwrap() + MARK.len()..];
        Some(rest[..rest.find('/').expect("ADDR/")].to_owned())
    }

    /// The server exited because it could not bind its port.
    fn clashed(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_some() && self.stderr().contains("cannot listen on")
    }

    fn url(&mut self) -> String {
        format!("ws://{}/", self.addr())
    }

    /// The exit status, waiting up to `wait`.
    fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{sig} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a process that should exit by itself printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run to completion (it must exit within `START_TIMEOUT`).
fn finish(cmd: Command) -> Finished {
    let mut p = Proc::spawn(cmd);
    let Some(status) = p.wait_exit(START_TIMEOUT) else {
        panic!("did not exit within {START_TIMEOUT:?}; stderr:\n{}", p.stderr());
    };
    Finished { status, stdout: p.stdout(), stderr: p.stderr() }
}

/// The run was refused before listening: exit code 2 (configuration
/// error), no panic, nothing served. Returns stderr.
fn config_error(cmd: Command) -> String {
    let f = finish(cmd);
    assert_eq!(f.status.code(), Some(2), "configuration errors exit 2; stderr:\n{}", f.stderr);
    assert_no_panic_nor_listen(&f.stderr);
    f.stderr
}

/// A start-up failure: non-zero exit, no panic, never listened.
fn startup_error(cmd: Command) -> String {
    let f = finish(cmd);
    assert!(!f.status.success(), "start-up errors exit non-zero; stderr:\n{}", f.stderr);
    assert_no_panic_nor_listen(&f.stderr);
    f.stderr
}

fn assert_no_panic_nor_listen(stderr: &str) {
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert!(!stderr.contains("listening on"), "did not listen: {stderr}");
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "expected `{part}` in:\n{text}");
    }
}

/// Loopback listener args: `--INSECURE.hostname 127.0.0.1 --INSECURE.port 0`.
const LOOPBACK: [&str; 4] = ["--INSECURE.hostname", "127.0.0.1", "--INSECURE.port", "0"];

/// For runs that print no address: start `command(port)` on a free port
/// and connect, retrying while the server is not up yet; on a port clash
/// (see [`on_free_port`]) pick another port.
async fn quiet_server(mut command: impl FnMut(u16) -> Command) -> (Proc, Client) {
    'ports: for _ in 0..5 {
        let port = free_port();
        let mut p = Proc::spawn(command(port));
        let url = format!("ws://127.0.0.1:{port}/");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if p.clashed() {
                continue 'ports;
            }
            match tokio_tungstenite::connect_async(&url).await {
                Ok((ws, _)) => return (p, Client { ws }),
                Err(err) if Instant::now() > deadline => panic!("cannot connect to {url}: {err}\n{}", p.stderr()),
                Err(_) => tokio::time::sleep(Duration::from_millis(30)).await,
            }
        }
    }
    panic!("no free port after 5 tries");
}

fn assert_echo(r: &Reply, payload: serde_json::Value) {
    assert_eq!((r.event_type, r.event.as_str(), &r.payload), (EventType::MESSAGE, "echo", &payload), "{r:?}");
}

// ------------------------------------------------ 1 configuration layers

#[tokio::test]
async fn later_sources_win_file_then_env_then_command_line() {
    let dir = workdir();
    let config = |port: u16| {
        let text = format!("payloadLimit = 20\n[INSECURE]\nhostname = \"127.0.0.1\"\nport = {port}\n");
        std::fs::write(dir.path().join("config.toml"), text).unwrap();
    };
    // Ports the file and the environment name; nothing listens there.
    let (a, b) = (free_port(), free_port());
    config(a);

    // All three: the command line wins.
    let (p, c, addr) = on_free_port(|c| {
        let mut cmd = ssocket(dir.path(), &["--INSECURE.port", &c.to_string()]);
        cmd.env("SSOCKET_INSECURE__PORT", b.to_string());
        cmd
    });
    assert_eq!(addr, format!("127.0.0.1:{c}"), "command line beats environment and file");
    drop(p);

    // File and environment: the environment wins, and the file's other
    // keys (hostname, payloadLimit) still apply.
    let (p, b, addr) = on_free_port(|b| {
        let mut cmd = ssocket(dir.path(), &[]);
        cmd.env("SSOCKET_INSECURE__PORT", b.to_string());
        cmd
    });
    assert_eq!(addr, format!("127.0.0.1:{b}"), "environment beats file; hostname from the file");
    let mut client = Client::connect(&format!("ws://{addr}/")).await;
    let r = client.request("echo", json!({})).await;
    assert_echo(&r, json!({}));
    let r = client.request("echo", json!({"pad": "0123456789012345678901234567890"})).await;
    assert_eq!((r.event_type, r.payload["error"].as_str()), (EventType::ERROR, Some("payload_too_large")), "{r:?}");
    drop(p);

    // File only.
    let (_p, a, addr) = on_free_port(|a| {
        config(a);
        ssocket(dir.path(), &[])
    });
    assert_eq!(addr, format!("127.0.0.1:{a}"), "config.toml in the working directory is read");
}

#[test]
fn defaults_apply_when_nothing_is_configured() {
    // Default INSECURE.hostname:port is 0.0.0.0:8080. Whether that port is
    // free here or not, the server names the address it tried.
    let dir = workdir();
    let p = Proc::spawn(ssocket(dir.path(), &[]));
    assert!(
        p.wait_stderr(START_TIMEOUT, |s| s.contains("listening on ws://0.0.0.0:8080/")
            || s.contains("cannot listen on 0.0.0.0:8080")),
        "defaults: 0.0.0.0:8080; stderr:\n{}",
        p.stderr()
    );
    assert!(!p.stderr().contains("panicked"));
}

#[test]
fn config_flag_replaces_the_working_directory_config_toml() {
    let dir = workdir();
    let a = free_port();
    std::fs::write(dir.path().join("config.toml"), format!("[INSECURE]\nhostname = \"127.0.0.1\"\nport = {a}\n"))
        .unwrap();
    let (_p, d, addr) = on_free_port(|d| {
        let text = format!("[INSECURE]\nhostname = \"127.0.0.1\"\nport = {d}\n");
        std::fs::write(dir.path().join("other.toml"), text).unwrap();
        ssocket(dir.path(), &["--config", "other.toml"])
    });
    assert_eq!(addr, format!("127.0.0.1:{d}"), "--config PATH is read instead of ./config.toml");
}

#[test]
fn environment_keys_match_case_insensitively() {
    let dir = workdir();
    let (p, b, addr) = on_free_port(|b| {
        let mut cmd = ssocket(dir.path(), &["--INSECURE.hostname", "127.0.0.1"]);
        cmd.env("SSOCKET_insecure__PORT", b.to_string());
        cmd
    });
    assert_eq!(addr, format!("127.0.0.1:{b}"), "SSOCKET_insecure__PORT sets INSECURE.port");
    drop(p);

    let mut cmd = ssocket(dir.path(), &["--INSECURE.hostname", "127.0.0.1"]);
    cmd.env("SSOCKET_INSECURE__PORT", b.to_string()).env("SSOCKET_PAYLOADLIMIT", "x");
    let err = config_error(cmd);
    assert_contains(&err, &["`payloadLimit`", "`x`", "integer", "SSOCKET_PAYLOADLIMIT"]);
}

#[tokio::test]
async fn payload_limit_override_works_with_equals_and_with_a_space() {
    for args in [&["--payloadLimit=20"][..], &["--payloadLimit", "20"][..]] {
        let dir = workdir();
        let mut all: Vec<&str> = LOOPBACK.to_vec();
        all.extend_from_slice(args);
        let mut p = Proc::spawn(ssocket(dir.path(), &all));
        let mut c = Client::connect(&p.url()).await;
        // 6-byte header + "echo" + "{}" = 12 bytes: under the limit.
        let r = c.request("echo", json!({})).await;
        assert_echo(&r, json!({}));
        // 6 + 4 + 23 = 33 bytes: over it.
        let r = c.request("echo", json!({"pad": "0123456789abc"})).await;
        assert_eq!(r.event_type, EventType::ERROR, "{args:?}: {r:?}");
        assert_eq!(r.payload["error"], "payload_too_large", "{args:?}: {r:?}");
        assert_eq!(r.payload["limit"], 20, "{args:?}: {r:?}");
    }
}

// ---------------------------------------------- 2 configuration errors

#[test]
fn unknown_keys_are_refused_with_a_suggestion_from_every_source() {
    let dir = workdir();
    // Command line.
    let err = config_error(ssocket(dir.path(), &["--payloadLimt", "10"]));
    assert_contains(&err, &["`payloadLimt`", "command line", "did you mean `payloadLimit`"]);

    // Environment.
    let mut cmd = ssocket(dir.path(), &[]);
    cmd.env("SSOCKET_PAYLOADLIMT", "10");
    let err = config_error(cmd);
    assert_contains(&err, &["PAYLOADLIMT", "SSOCKET_PAYLOADLIMT", "did you mean `payloadLimit`"]);

    // File (top level and in a section).
    std::fs::write(dir.path().join("config.toml"), "payloadLimt = 10\n").unwrap();
    let err = config_error(ssocket(dir.path(), &[]));
    assert_contains(&err, &["`payloadLimt`", "config.toml", "did you mean `payloadLimit`"]);
    std::fs::write(dir.path().join("config.toml"), "[INSECURE]\nprot = 1\n").unwrap();
    let err = config_error(ssocket(dir.path(), &[]));
    assert_contains(&err, &["`INSECURE.prot`", "config.toml", "did you mean `INSECURE.port`"]);

    // Nothing close: points at --help instead.
    let err = config_error(ssocket(emptydir().path(), &["--zzzzqqq", "1"]));
    assert_contains(&err, &["`zzzzqqq`", "--help"]);
}

#[test]
fn wrong_types_name_key_expected_type_and_value() {
    let dir = workdir();
    let err = config_error(ssocket(dir.path(), &["--INSECURE.port", "abc"]));
    assert_contains(&err, &["`INSECURE.port`", "integer", "`abc`", "command line"]);
    let err = config_error(ssocket(dir.path(), &["--INSECURE.port", "70000"]));
    assert_contains(&err, &["`INSECURE.port`", "from 0 to 65535", "`70000`"]);
    let err = config_error(ssocket(dir.path(), &["--secure", "yes"]));
    assert_contains(&err, &["`secure`", "bool", "`yes`"]);
    let mut cmd = ssocket(dir.path(), &[]);
    cmd.env("SSOCKET_SECURE", "maybe");
    let err = config_error(cmd);
    assert_contains(&err, &["`secure`", "bool", "`maybe`", "SSOCKET_SECURE"]);

    std::fs::write(dir.path().join("config.toml"), "payloadLimit = \"x\"\n").unwrap();
    let err = config_error(ssocket(dir.path(), &[]));
    assert_contains(&err, &["`payloadLimit`", "integer", "`x`", "config.toml"]);
    std::fs::write(dir.path().join("config.toml"), "[memoryMetrics]\nisOn = 1\n").unwrap();
    let err = config_error(ssocket(dir.path(), &[]));
    assert_contains(&err, &["`memoryMetrics.isOn`", "bool", "`1`"]);
}

#[test]
fn a_key_without_a_value_is_a_clear_error() {
    let dir = workdir();
    let err = config_error(ssocket(dir.path(), &["--INSECURE.port", "0", "--payloadLimit"]));
    assert_contains(&err, &["`--payloadLimit`", "needs a value"]);
    // A following flag is not taken as the value.
    let err = config_error(ssocket(dir.path(), &["--payloadLimit", "--secure", "false"]));
    assert_contains(&err, &["`--payloadLimit`", "needs a value"]);
}

// ------------------------------------------------ 3 help and version

#[test]
fn help_lists_every_key_with_type_default_and_meaning() {
    let dir = emptydir();
    for flag in ["-h", "--help"] {
        let f = finish(ssocket(dir.path(), &[flag]));
        assert!(f.status.success(), "{flag}: {:?} {}", f.status, f.stderr);
        for k in KEYS {
            let line = f
                .stdout
                .lines()
                .find(|l| l.starts_with(&format!("--{} ", k.key)))
                .unwrap_or_else(|| panic!("{flag} does not list `{}`:\n{}", k.key, f.stdout));
            assert!(line.contains(&format!("<{}>", k.kind.name())), "type of {}: {line}", k.key);
            assert!(line.contains(&format!("default: {}", k.default)), "default of {}: {line}", k.key);
            assert!(f.stdout.contains(k.doc), "meaning of {}", k.key);
        }
        // Spot checks against the spec, independent of the key table.
        assert_contains(
            &f.stdout,
            &[
                "--payloadLimit <integer>  (default: 250000)",
                "--secure <bool>  (default: false)",
                "--plugsFolder <string>  (default: ./plugs)",
                "--INSECURE.port <integer>  (default: 8080)",
                "--memoryMetrics.interval <integer>  (default: 5000)",
                "--initFile <string>  (default: ./INIT.rhai)",
                "--shutdownTimeoutMs <integer>",
            ],
        );
    }
}

#[test]
fn help_for_one_key_prints_only_that_key() {
    let dir = emptydir();
    let f = finish(ssocket(dir.path(), &["-h", "--payloadLimit"]));
    assert!(f.status.success(), "{:?} {}", f.status, f.stderr);
    assert_contains(&f.stdout, &["--payloadLimit <integer>", "250000", "Largest accepted message"]);
    for k in KEYS.iter().filter(|k| k.key != "payloadLimit") {
        assert!(!f.stdout.contains(&format!("--{} ", k.key)), "only payloadLimit, not {}:\n{}", k.key, f.stdout);
    }
    // Case-insensitive and dotted keys too.
    let f = finish(ssocket(dir.path(), &["-h", "--insecure.port"]));
    assert!(f.status.success());
    assert_contains(&f.stdout, &["--INSECURE.port <integer>", "8080"]);
    assert!(!f.stdout.contains("--payloadLimit"), "{}", f.stdout);
    // An unknown key is an error.
    let f = finish(ssocket(dir.path(), &["-h", "--nope"]));
    assert_eq!(f.status.code(), Some(2));
    assert_contains(&f.stderr, &["`nope`"]);
}

#[test]
fn version_prints_the_cargo_version() {
    let f = finish(ssocket(emptydir().path(), &["--version"]));
    assert!(f.status.success());
    assert_eq!(f.stdout.trim(), format!("ssocket {}", env!("CARGO_PKG_VERSION")));
}

// -------------------------------------------------------- 4 INIT.rhai

#[tokio::test]
async fn init_rhai_in_the_working_directory_runs_before_plugs_load() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("INIT.rhai"),
        r#"
fn INIT(server) {
    print("INIT says hello");
    server.on_connect(Fn("greet"));
}
fn greet(id) { yield_msg(#{ payload: #{ welcome: id } }); }
"#,
    )
    .unwrap();
    // A broken plug is reported while plugs load: INIT's output must come
    // before that report.
    std::fs::write(dir.path().join("plugs/broken.rhai"), "fn broken(msg, yield_msg) {\n").unwrap();
    let mut p = Proc::spawn(ssocket(dir.path(), &LOOPBACK));
    let url = p.url();
    let err = p.stderr();
    let init_at = err.find("INIT says hello").unwrap_or_else(|| panic!("INIT's print is logged:\n{err}"));
    let broken_at = err.find("broken.rhai").unwrap_or_else(|| panic!("the broken plug is reported:\n{err}"));
    let loaded_at = err.find("loaded 3 plugs").unwrap_or_else(|| panic!("plugs load:\n{err}"));
    assert!(init_at < broken_at && init_at < loaded_at, "INIT runs before plugs load:\n{err}");
    assert_eq!(err.matches("INIT says hello").count(), 1, "INIT runs once:\n{err}");

    // Its callback greets a real client.
    let mut c = Client::connect(&url).await;
    let r = c.recv().await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::MESSAGE, "connect"), "{r:?}");
    assert!(r.payload["welcome"].as_i64().is_some_and(|id| id > 0), "{r:?}");
}

#[test]
fn a_broken_init_rhai_stops_start_up_and_a_missing_one_is_fine() {
    let dir = workdir();
    std::fs::write(dir.path().join("INIT.rhai"), "fn INIT(server) {\n    let = 1;\n}\n").unwrap();
    let err = startup_error(ssocket(dir.path(), &LOOPBACK));
    assert_contains(&err, &["INIT.rhai", "line 2"]);

    std::fs::write(dir.path().join("INIT.rhai"), "fn INIT(server) {\n    throw \"no database\";\n}\n").unwrap();
    let err = startup_error(ssocket(dir.path(), &LOOPBACK));
    assert_contains(&err, &["INIT.rhai", "no database"]);

    // initFile points elsewhere: the broken ./INIT.rhai is not read.
    let mut p = Proc::spawn(ssocket(dir.path(), &[&LOOPBACK[..], &["--initFile", "./none.rhai"]].concat()));
    p.addr();
}

#[test]
fn a_failing_timer_is_logged_with_its_file_and_line_and_keeps_running() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("INIT.rhai"),
        r#"
fn INIT(server) {
    server.every(50, || {
        let n = store::incr("ticks", 1);
        print(`tick ${n}`);
        throw `bad tick ${n}`;
    });
    server.every(50, || {
        loop { }
    });
}
"#,
    )
    .unwrap();
    // No operation limit: on a fast machine the loop reached the default
    // 10,000,000 operations within the 100 ms and was stopped by that.
    let limits = ["--limits.timeoutMs", "100", "--limits.maxOperations", "0"];
    let mut p = Proc::spawn(ssocket(dir.path(), &[&LOOPBACK[..], &limits].concat()));
    p.addr();
    let logged =
        p.wait_stderr(START_TIMEOUT, |err| err.contains("tick 3") && err.contains("exceeded limits.timeoutMs"));
    let err = p.stderr();
    assert!(logged, "the throwing timer keeps ticking and the looping one is stopped by the limit:\n{err}");
    assert_contains(&err, &["./INIT.rhai: timer 1 failed: bad tick 1 (line 6, column 9)"]);
    assert_contains(&err, &["./INIT.rhai: timer 2 failed: ", "limits.timeoutMs"]);
}

// ------------------------------------------------------------ 6 logging

#[tokio::test]
async fn a_refused_connection_is_logged_at_log_level_1_with_the_remote_address_and_why() {
    let dir = workdir();
    let args = [&LOOPBACK[..], &["--auth.jwtSecret", "s3cret", "--auth.required", "true", "--logLevel", "1"]].concat();
    let mut p = Proc::spawn(ssocket(dir.path(), &args));
    let url = p.url();
    for (query, why) in [("", "auth.required"), ("?token=not.a.jwt", "not a well-formed JWT")] {
        match tokio_tungstenite::connect_async(format!("{url}{query}")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            Err(other) => panic!("expected HTTP 401, got {other}"),
            Ok(_) => panic!("the connection was accepted"),
        }
        let logged = p.wait_stderr(START_TIMEOUT, |err| {
            err.lines()
                .any(|l| l.contains("refused a connection") && l.contains("remote=127.0.0.1:") && l.contains(why))
        });
        assert!(logged, "the refusal is logged with the remote address and `{why}`:\n{}", p.stderr());
    }
    // At logLevel 0 it is not.
    let args = [&LOOPBACK[..], &["--auth.required", "true"]].concat();
    let mut quiet = Proc::spawn(ssocket(dir.path(), &args));
    let url = quiet.url();
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    tokio::time::sleep(SILENCE).await;
    assert!(!quiet.stderr().contains("refused a connection"), "{}", quiet.stderr());
}

#[tokio::test]
async fn print_log_to_console_false_silences_the_console() {
    let dir = workdir();
    let (mut p, mut c) = quiet_server(|port| {
        let port = port.to_string();
        ssocket(
            dir.path(),
            &["--INSECURE.hostname", "127.0.0.1", "--INSECURE.port", &port, "--printLogToConsole", "false"],
        )
    })
    .await;
    let r = c.request("echo", json!({"quiet": true})).await;
    assert_echo(&r, json!({"quiet": true}));
    c.close().await;
    p.signal("TERM");
    let status = p.wait_exit(START_TIMEOUT).expect("exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(p.stderr(), "", "nothing on the console");
    assert_eq!(p.stdout(), "", "nothing on stdout either");
}

/// Start with `args` and `env`, connect one client and do a round trip;
/// returns the process (still running) once `wait` has passed.
async fn serve_one_client(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let dir = workdir();
    let mut cmd = ssocket(dir.path(), &[&LOOPBACK[..], args].concat());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = Proc::spawn(cmd);
    let mut c = Client::connect(&p.url()).await;
    let r = c.request("echo", json!(1)).await;
    assert_echo(&r, json!(1));
    c.close().await;
    p
}

const CONNECTED_LINE: &str = "connected client=";

#[tokio::test]
async fn log_level_0_hides_connections_and_log_level_1_shows_them() {
    let p = serve_one_client(&[], &[]).await;
    std::thread::sleep(SILENCE);
    let err = p.stderr();
    assert!(!err.contains(CONNECTED_LINE) && !err.contains("DEBUG"), "logLevel 0 has no debug lines:\n{err}");
    assert!(!err.contains("memory: rss="), "memory metrics are off by default:\n{err}");
    drop(p);

    let p = serve_one_client(&["--logLevel", "1"], &[]).await;
    assert!(
        p.wait_stderr(START_TIMEOUT, |s| s.contains(CONNECTED_LINE)),
        "logLevel 1 logs connections:\n{}",
        p.stderr()
    );
}

#[tokio::test]
async fn rust_log_wins_over_log_level() {
    let p = serve_one_client(&["--logLevel", "0"], &[("RUST_LOG", "debug")]).await;
    assert!(
        p.wait_stderr(START_TIMEOUT, |s| s.contains(CONNECTED_LINE) && s.contains("DEBUG")),
        "RUST_LOG=debug shows debug lines at logLevel 0:\n{}",
        p.stderr()
    );
    drop(p);

    // And it can quieten too: only errors, so not even the address.
    let dir = workdir();
    let (p, mut c) = quiet_server(|port| {
        let mut cmd = ssocket(dir.path(), &["--INSECURE.hostname", "127.0.0.1", "--INSECURE.port", &port.to_string()]);
        cmd.env("RUST_LOG", "error");
        cmd
    })
    .await;
    let r = c.request("echo", json!(2)).await;
    assert_echo(&r, json!(2));
    assert!(!p.stderr().contains("listening on"), "RUST_LOG=error hides info lines:\n{}", p.stderr());
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("plugs/say.rhai"),
        "fn say(msg, yield_msg) { print(`said \"${msg.payload}\"`); yield_msg(#{ payload: 1 }); }",
    )
    .expect("write plug");
    let args = [&LOOPBACK[..], &["--logFormat", "json", "--logLevel", "1"]].concat();
    let mut p = Proc::spawn(ssocket(dir.path(), &args));
    let mut c = Client::connect(&p.url()).await;
    assert_eq!(c.request("say", json!("hi")).await.payload, json!(1));
    c.close().await;
    assert!(p.wait_stderr(START_TIMEOUT, |s| s.contains("\"disconnected\"")), "a disconnect line:\n{}", p.stderr());
    let lines: Vec<serde_json::Value> = p
        .stderr()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    for line in &lines {
        for key in ["time", "level", "target", "message"] {
            assert!(line[key].is_string(), "{key} in {line}");
        }
        assert!(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&line["level"].as_str().unwrap()), "{line}");
    }
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.contains(message)))
            .unwrap_or_else(|| panic!("no line saying {message:?} in {lines:#?}"))
            .clone()
    };
    assert_eq!(find("listening on ws://")["level"], json!("INFO"));
    let connected = find("connected");
    assert!(connected["client"].is_u64(), "the client id is a field: {connected}");
    let said = find("said \"hi\"");
    assert_eq!((said["plug"].as_str(), said["target"].as_str()), (Some("say"), Some("ssocket::plug")), "{said}");
    assert_eq!(said["client"], connected["client"], "{said}");
}

#[test]
fn an_unknown_log_format_is_refused_naming_the_choices() {
    let dir = workdir();
    let err = config_error(ssocket(dir.path(), &["--logFormat", "xml"]));
    assert_contains(&err, &["logFormat", "xml", "text", "json"]);
}

// ------------------------------------------------------ 7 memory metrics

/// The `memory:` lines of `stderr`.
fn memory_lines(stderr: &str) -> Vec<String> {
    stderr.lines().filter(|l| l.contains("memory: rss=")).map(str::to_owned).collect()
}

#[tokio::test]
async fn memory_metrics_report_rss_connections_plugs_and_in_flight() {
    let dir = workdir();
    let args = [&LOOPBACK[..], &["--memoryMetrics.isOn", "true", "--memoryMetrics.interval", "100"]].concat();
    let mut p = Proc::spawn(ssocket(dir.path(), &args));
    let url = p.url();
    assert!(
        p.wait_stderr(Duration::from_millis(1500), |s| memory_lines(s).len() >= 2),
        "at least two reports within 1.5 s at 100 ms:\n{}",
        p.stderr()
    );
    let first = memory_lines(&p.stderr())[0].clone();
    assert_contains(&first, &["memory: rss=", " connections=0", " plugs=2", " in_flight=0"]);
    let rss = first.split("rss=").nth(1).unwrap().split(" MiB").next().unwrap();
    assert!(rss.parse::<f64>().is_ok_and(|mb| mb > 0.0), "rss is a positive number of MiB: {first}");

    // A connected client and a running plug show up.
    let mut c = Client::connect(&url).await;
    c.send("long", json!({"ms": 600})).await;
    assert!(
        p.wait_stderr(Duration::from_secs(3), |s| memory_lines(s)
            .iter()
            .any(|l| l.contains(" connections=1 ") && l.contains(" in_flight=1 "))),
        "a report shows the client and the running plug:\n{}",
        p.stderr()
    );
    let r = c.recv().await;
    assert_eq!(r.event, "long");
}

// ---------------------------------------------------- 8 graceful shutdown

/// A client with a `long` request running gets its reply, then close 1001,
/// and the process exits 0. New connections are refused while it drains.
async fn graceful_shutdown_on(sig: &str) {
    let dir = workdir();
    let mut p = Proc::spawn(ssocket(dir.path(), &LOOPBACK));
    let url = p.url();
    let mut c = Client::connect(&url).await;
    let mut idle = Client::connect(&url).await;
    assert_echo(&idle.request("echo", json!("hi")).await, json!("hi"));
    c.send("long", json!({"ms": 800})).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let signalled = Instant::now();
    p.signal(sig);

    // Still draining: the listener is closed, the process alive.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(p.is_running(), "the running plug holds the exit");
    assert!(tokio_tungstenite::connect_async(&url).await.is_err(), "no new connections while shutting down");

    let r = c.recv().await;
    assert_eq!((r.event_type, r.event.as_str(), &r.payload), (EventType::MESSAGE, "long", &json!({})), "{r:?}");
    assert!(signalled.elapsed() >= Duration::from_millis(500), "the reply came when the plug finished");
    assert_eq!(c.next().await, Received::Closed(Some(1001)), "then close 1001");
    assert_eq!(idle.next().await, Received::Closed(Some(1001)), "idle clients get 1001 too");
    let status = p.wait_exit(START_TIMEOUT).unwrap_or_else(|| panic!("exits after {sig}:\n{}", p.stderr()));
    assert_eq!(status.code(), Some(0), "exit 0 after {sig}:\n{}", p.stderr());
    assert!(!p.stderr().contains("panicked"), "{}", p.stderr());
}

#[tokio::test]
async fn sigterm_lets_running_plugs_finish_then_closes_with_1001_and_exits_0() {
    graceful_shutdown_on("TERM").await;
}

#[tokio::test]
async fn sigint_lets_running_plugs_finish_then_closes_with_1001_and_exits_0() {
    graceful_shutdown_on("INT").await;
}

#[tokio::test]
async fn shutdown_timeout_bounds_how_long_plugs_may_run() {
    let dir = workdir();
    let mut p = Proc::spawn(ssocket(dir.path(), &[&LOOPBACK[..], &["--shutdownTimeoutMs", "300"]].concat()));
    let mut c = Client::connect(&p.url()).await;
    c.send("long", json!({"ms": 10000})).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let signalled = Instant::now();
    p.signal("TERM");
    assert_eq!(c.next().await, Received::Closed(Some(1001)), "closed with 1001 without the plug's reply");
    let status = p.wait_exit(Duration::from_secs(3)).unwrap_or_else(|| panic!("exits within 3 s:\n{}", p.stderr()));
    assert!(signalled.elapsed() < Duration::from_secs(3));
    assert!(signalled.elapsed() >= Duration::from_millis(250), "waited for shutdownTimeoutMs first");
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
}

// ----------------------------------------------------- 9 start-up errors

#[test]
fn port_in_use_names_the_address_and_exits_non_zero() {
    let dir = workdir();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let started = Instant::now();
    let err = startup_error(ssocket(dir.path(), &["--INSECURE.hostname", "127.0.0.1", "--INSECURE.port", &port]));
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
    assert_contains(&err, &[&format!("127.0.0.1:{port}"), "cannot listen"]);
    drop(taken);
}

#[test]
fn an_address_not_on_this_machine_is_named_and_exits_non_zero() {
    let dir = workdir();
    // TEST-NET-1 (RFC 5737): never one of this machine's addresses.
    let err = startup_error(ssocket(dir.path(), &["--INSECURE.hostname", "192.0.2.1", "--INSECURE.port", "0"]));
    assert_contains(&err, &["192.0.2.1:0", "cannot listen", "assign requested address"]);
}

#[test]
fn a_missing_plugs_folder_is_named_with_a_way_out() {
    let dir = emptydir();
    let err = startup_error(ssocket(dir.path(), &LOOPBACK));
    assert_contains(&err, &["./plugs", "--generate", "create it"]);
    let err = startup_error(ssocket(dir.path(), &[&LOOPBACK[..], &["--plugsFolder", "my/scripts"]].concat()));
    assert_contains(&err, &["my/scripts", "--generate"]);
    // Start-up errors reach the console even when logging to it is off.
    let err = startup_error(ssocket(dir.path(), &[&LOOPBACK[..], &["--printLogToConsole", "false"]].concat()));
    assert_contains(&err, &["./plugs", "--generate"]);
}

#[test]
fn an_unreadable_config_file_is_named() {
    let dir = workdir();
    let err = config_error(ssocket(dir.path(), &["--config", "/nonexistent.toml"]));
    assert_contains(&err, &["/nonexistent.toml", "cannot read configuration file"]);

    // A directory.
    let err = config_error(ssocket(dir.path(), &["--config", "plugs"]));
    assert_contains(&err, &["plugs", "cannot read configuration file"]);

    // Not text.
    std::fs::write(dir.path().join("config.toml"), [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let err = config_error(ssocket(dir.path(), &[]));
    assert_contains(&err, &["config.toml", "cannot read configuration file"]);

    // Not TOML: names the file and the line.
    std::fs::write(dir.path().join("config.toml"), "payloadLimit = 10\nthis is not toml\n").unwrap();
    let err = config_error(ssocket(dir.path(), &[]));
    assert_contains(&err, &["config.toml", "line 2"]);

    // No read permission (meaningless as root, who reads anyway).
    let locked: PathBuf = dir.path().join("locked.toml");
    std::fs::write(&locked, "payloadLimit = 10\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&locked).is_err() {
        let err = config_error(ssocket(dir.path(), &["--config", "locked.toml"]));
        assert_contains(&err, &["locked.toml", "ermission denied"]);
    }
}

// ------------------------------------------- 10 deeply nested plug values

/// Builds a value `arrays` arrays deep inside `maps` maps deep, then walks
/// it every way Rhai walks values recursively: print, compare, debug
/// print, JSON, and drop.
const NEST: &str = r#"
fn nest(arrays, maps) {
    let a = 1;
    for i in 0..arrays { a = [take(a)]; }
    for i in 0..maps { a = #{ k: take(a) }; }
    a
}
fn walk(a) {
    let text = a.to_string();
    let same = a == a;
    let shown = a.to_debug();
    let json = a.to_json();
    #{ text: text.len(), same: same, shown: shown.len(), json: json.len() }
}
"#;

/// Rhai has no limit on how deeply values nest, and walks them recursively:
/// a plug nesting maps a few thousand levels deep used to overflow the
/// async worker's stack and abort the server. The sizes limits bound the
/// depth, and every thread that runs plug code has a stack for that bound:
/// at start-up (INIT.rhai, modules), inline on the async workers, on the
/// plug threads and on the reload thread.
#[tokio::test]
async fn values_nested_as_deep_as_the_limits_allow_do_not_crash_the_server() {
    let dir = workdir();
    let (arrays, maps) = (2990, 2990); // limits: 3,000 array items, 3,000 map entries
    let plug = |sleeps: bool| {
        format!(
            "import \"_lib/nest\" as n;\n\
             fn deep(msg, yield_msg) {{ {} let w = n::walk(n::nest({arrays}, {maps})); w.v = {}; \
             yield_msg(#{{ payload: w }}); }}",
            if sleeps { "sleep(1);" } else { "" },
            u8::from(sleeps) + 1
        )
    };
    std::fs::create_dir(dir.path().join("plugs/_lib")).unwrap();
    std::fs::write(
        dir.path().join("plugs/_lib/nest.rhai"),
        format!("{NEST}\nexport const LOADED = walk(nest({arrays}, {maps}));\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("plugs/deep.rhai"), plug(false)).unwrap();
    std::fs::write(
        dir.path().join("INIT.rhai"),
        format!(
            "{NEST}\nfn INIT(server) {{ print(`INIT walked ${{walk(nest({arrays}, {maps})).text}} characters`); }}"
        ),
    )
    .unwrap();
    let limits = ["--limits.maxArraySize", "3000", "--limits.maxMapSize", "3000", "--preloadPlugs", "true"];
    let mut p = Proc::spawn(ssocket(dir.path(), &[&LOOPBACK[..], &limits].concat()));
    let url = p.url();
    assert!(p.stderr().contains("INIT walked"), "{}", p.stderr());
    let mut c = Client::connect(&url).await;
    let expect = |r: &Reply| {
        assert_eq!(r.event_type, EventType::MESSAGE, "{r:?}");
        assert_eq!(r.payload["same"], json!(true), "{r:?}");
        assert!(r.payload["text"].as_u64().is_some_and(|n| n > 2 * arrays + 4 * maps), "{r:?}");
    };
    // Inline on an async worker.
    expect(&c.request("deep", json!({})).await);
    // A version that sleeps runs on the plug threads (a plug that can sleep
    // is slow from the start). Rewriting the module re-runs its code on the
    // reload thread.
    std::fs::write(dir.path().join("plugs/deep.rhai"), plug(true)).unwrap();
    std::fs::write(
        dir.path().join("plugs/_lib/nest.rhai"),
        format!("{NEST}\nexport const LOADED = walk(nest({arrays}, {maps}));\n// again\n"),
    )
    .unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let r = c.request("deep", json!({})).await;
        expect(&r);
        if r.payload["v"] == json!(2) {
            break;
        }
        assert!(Instant::now() < deadline, "the sleeping version never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One level more than the limits allow is refused, not a crash.
    std::fs::write(
        dir.path().join("plugs/deeper.rhai"),
        format!("import \"_lib/nest\" as n;\nfn deeper(msg, yield_msg) {{ n::nest({}, 0); }}", 3001),
    )
    .unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    let r = loop {
        let r = c.request("deeper", json!({})).await;
        if r.event_type != EventType::NOT_FOUND || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.payload["limit"], json!("limits.maxArraySize"), "{r:?}");
    assert!(p.is_running(), "{}", p.stderr());
}

#[test]
fn a_size_limit_of_zero_is_warned_about_at_start_up() {
    let dir = workdir();
    let mut p = Proc::spawn(ssocket(dir.path(), &[&LOOPBACK[..], &["--limits.maxMapSize", "0"]].concat()));
    p.addr();
    assert_contains(&p.stderr(), &["limits.maxMapSize is 0", "abort"]);
    let mut p = Proc::spawn(ssocket(dir.path(), &LOOPBACK));
    p.addr();
    assert!(!p.stderr().contains("is 0"), "{}", p.stderr());
}
