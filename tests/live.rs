//! End-to-end tests of live plugs (issue 3): a real server watching a
//! temporary plugs folder, and ONE client connection kept open through each
//! test's whole sequence of edits. Reloads are awaited by re-sending the
//! request until the expected answer comes ([`eventually`]), never by long
//! fixed sleeps.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use ssocket::protocol::EventType;

/// How long a reload may take before a test fails.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between re-sent requests while waiting for a reload.
const POLL: Duration = Duration::from_millis(30);

/// A plug that answers `tag` as a string.
fn version(tag: &str) -> String {
    format!("fn f(msg, yield_msg) {{ yield_msg(#{{ payload: \"{tag}\" }}); }}\n")
}

/// Answers the client's id: lets a test prove it kept the same connection.
const WHOAMI: (&str, &str) = ("whoami.rhai", "fn f(msg, yield_msg) { yield_msg(#{ payload: msg.client }); }\n");

/// Send `event` until the reply satisfies `pred` (re-sending every ~30 ms),
/// for up to 5 s; returns the reply that satisfied it. Each request waits
/// for its one reply before the next is sent, so replies never pile up.
async fn eventually(c: &mut Client, event: &str, payload: Value, pred: impl Fn(&Reply) -> bool) -> Reply {
    let start = Instant::now();
    loop {
        let r = c.request(event, payload.clone()).await;
        if pred(&r) {
            return r;
        }
        if start.elapsed() > RELOAD_TIMEOUT {
            panic!("`{event}` did not reach the expected answer within {RELOAD_TIMEOUT:?}; last reply: {r:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

fn is_message(r: &Reply, payload: Value) -> bool {
    r.event_type == EventType::MESSAGE && r.payload == payload
}

fn is_not_found(r: &Reply) -> bool {
    r.event_type == EventType::NOT_FOUND
}

fn is_compile_error(r: &Reply) -> bool {
    r.event_type == EventType::ERROR && r.payload["error"] == "compile_error"
}

/// Wait until `event` answers `tag`.
async fn serves(c: &mut Client, event: &str, tag: &str) -> Reply {
    eventually(c, event, json!({}), |r| is_message(r, json!(tag))).await
}

/// Wait until `event` answers NOT_FOUND.
async fn gone(c: &mut Client, event: &str) -> Reply {
    let r = eventually(c, event, json!({}), is_not_found).await;
    assert_eq!((r.event.as_str(), &r.payload), (event, &json!({})), "NOT_FOUND names the event, payload {{}}");
    r
}

/// Once the watcher has loaded a plug written after `writes`, it has also
/// handled every change before it (changes are applied in order): write a
/// fresh marker plug and wait for it. Used before asserting that something
/// did NOT change.
async fn settle(c: &mut Client, dir: &Path) {
    let n = MARKER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("marker-{n}");
    write_plug(dir, &format!("{tag}.rhai"), &version(&tag));
    serves(c, &tag, &tag).await;
}

static MARKER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The session a test runs in: the server, its plugs folder and the one
/// client whose connection must survive everything.
struct Session {
    server: TestServer,
    client: Client,
    id: Value,
}

impl Session {
    async fn start(plugs: &[(&str, &str)], tweak: impl FnOnce(&mut ssocket::config::Settings)) -> Session {
        let mut all = plugs.to_vec();
        all.push(WHOAMI);
        let server = start_with_plugs(&all, tweak).await;
        let mut client = server.client().await;
        let r = client.request("whoami", json!({})).await;
        assert_eq!(r.event_type, EventType::MESSAGE, "whoami answers: {r:?}");
        let id = r.payload;
        Session { server, client, id }
    }

    /// See [`settle`].
    async fn settle(&mut self) {
        let dir = self.dir();
        settle(&mut self.client, &dir).await;
    }

    fn dir(&self) -> std::path::PathBuf {
        self.server.plugs_dir()
    }

    fn write(&self, path: &str, source: &str) {
        write_plug(&self.dir(), path, source);
    }

    /// An editor's atomic save: write a temporary file, rename it over.
    fn atomic_save(&self, path: &str, temp: &str, source: &str) {
        let tmp = self.dir().join(temp);
        std::fs::write(&tmp, source).expect("write temp");
        std::fs::rename(&tmp, self.dir().join(path)).expect("rename over");
    }

    /// The connection never closed: same client id, still served, and the
    /// server holds exactly this one client.
    async fn assert_same_connection(mut self) {
        let r = self.client.request("whoami", json!({})).await;
        assert_eq!((r.event_type, &r.payload), (EventType::MESSAGE, &self.id), "same connection throughout");
        self.client.ping().await;
        assert_eq!(self.server.connected(), 1, "the one client is still connected");
        if let Some(got) = self.client.next_within(Duration::from_millis(50)).await {
            panic!("nothing more was expected, got {got:?}");
        }
        self.client.close().await;
        self.server.stop().await;
    }
}

// ------------------------------------------------------------ 1 file changes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_edits_and_atomic_saves_are_served() {
    let mut s = Session::start(&[("x.rhai", &version("v1"))], |_| {}).await;
    serves(&mut s.client, "x", "v1").await;

    // In place.
    s.write("x.rhai", &version("v2"));
    serves(&mut s.client, "x", "v2").await;

    // Atomic save through a hidden temp file.
    s.atomic_save("x.rhai", ".x.rhai.tmp", &version("v3"));
    serves(&mut s.client, "x", "v3").await;

    // Atomic save through a backup-style name.
    s.atomic_save("x.rhai", "x.rhai~", &version("v4"));
    serves(&mut s.client, "x", "v4").await;

    // vim with `backupcopy=no`: move the original away, write a new file,
    // delete the backup.
    let dir = s.dir();
    std::fs::rename(dir.join("x.rhai"), dir.join("x.rhai~")).unwrap();
    std::fs::write(dir.join("x.rhai"), version("v5")).unwrap();
    std::fs::remove_file(dir.join("x.rhai~")).unwrap();
    serves(&mut s.client, "x", "v5").await;

    // Truncate then write (two events in one burst) ends on the content.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.join("x.rhai")).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        f.write_all(version("v6").as_bytes()).unwrap();
    }
    serves(&mut s.client, "x", "v6").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_plugs_are_routable() {
    let mut s = Session::start(&[], |_| {}).await;
    gone(&mut s.client, "fresh").await;
    s.write("fresh.rhai", &version("new"));
    serves(&mut s.client, "fresh", "new").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_plug_answers_under_its_new_name_only() {
    let mut s = Session::start(&[("a.rhai", &version("A"))], |_| {}).await;
    serves(&mut s.client, "a", "A").await;
    std::fs::rename(s.dir().join("a.rhai"), s.dir().join("b.rhai")).unwrap();
    serves(&mut s.client, "b", "A").await;
    gone(&mut s.client, "a").await;

    // Renamed into a sub-folder that already exists, and edited there.
    std::fs::create_dir(s.dir().join("inner")).unwrap();
    s.settle().await;
    std::fs::rename(s.dir().join("b.rhai"), s.dir().join("inner/c.rhai")).unwrap();
    serves(&mut s.client, "inner/c", "A").await;
    gone(&mut s.client, "b").await;
    s.write("inner/c.rhai", &version("C2"));
    serves(&mut s.client, "inner/c", "C2").await;

    // Renamed to a name that is not a plug (`.rhai` dropped): gone.
    std::fs::rename(s.dir().join("inner/c.rhai"), s.dir().join("inner/c.rhai.bak")).unwrap();
    gone(&mut s.client, "inner/c").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_plug_answers_not_found() {
    let mut s =
        Session::start(&[("doomed.rhai", &version("here")), ("sub/doomed.rhai", &version("here too"))], |_| {}).await;
    serves(&mut s.client, "doomed", "here").await;
    serves(&mut s.client, "sub/doomed", "here too").await;
    std::fs::remove_file(s.dir().join("doomed.rhai")).unwrap();
    gone(&mut s.client, "doomed").await;
    // A whole folder deleted.
    std::fs::remove_dir_all(s.dir().join("sub")).unwrap();
    gone(&mut s.client, "sub/doomed").await;
    // And re-created: served again.
    s.write("doomed.rhai", &version("back"));
    serves(&mut s.client, "doomed", "back").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sub_folders_are_watched() {
    let mut s = Session::start(&[], |_| {}).await;
    std::fs::create_dir(s.dir().join("sub")).unwrap();
    std::fs::write(s.dir().join("sub/name.rhai"), version("sub1")).unwrap();
    serves(&mut s.client, "sub/name", "sub1").await;
    // The new folder is watched: edits inside it are seen.
    s.write("sub/name.rhai", &version("sub2"));
    serves(&mut s.client, "sub/name", "sub2").await;

    // Several levels at once (mkdir -p and write right away).
    std::fs::create_dir_all(s.dir().join("deep/er/still")).unwrap();
    std::fs::write(s.dir().join("deep/er/still/x.rhai"), version("deep1")).unwrap();
    serves(&mut s.client, "deep/er/still/x", "deep1").await;
    s.write("deep/er/still/x.rhai", &version("deep2"));
    serves(&mut s.client, "deep/er/still/x", "deep2").await;
    s.write("deep/er/y.rhai", &version("y"));
    serves(&mut s.client, "deep/er/y", "y").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_folder_moves_its_plugs() {
    let mut s = Session::start(&[("old/x.rhai", &version("x1")), ("old/deeper/y.rhai", &version("y1"))], |_| {}).await;
    serves(&mut s.client, "old/x", "x1").await;
    serves(&mut s.client, "old/deeper/y", "y1").await;
    std::fs::rename(s.dir().join("old"), s.dir().join("new")).unwrap();
    serves(&mut s.client, "new/x", "x1").await;
    serves(&mut s.client, "new/deeper/y", "y1").await;
    gone(&mut s.client, "old/x").await;
    gone(&mut s.client, "old/deeper/y").await;

    // Edits inside the moved folder reach the plugs under their new names.
    s.write("new/x.rhai", &version("x2"));
    serves(&mut s.client, "new/x", "x2").await;
    s.write("new/deeper/y.rhai", &version("y2"));
    serves(&mut s.client, "new/deeper/y", "y2").await;
    s.write("new/deeper/z.rhai", &version("z"));
    serves(&mut s.client, "new/deeper/z", "z").await;
    gone(&mut s.client, "old/x").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_temp_and_swap_files_are_ignored() {
    let mut s = Session::start(&[("x.rhai", &version("v1"))], |_| {}).await;
    serves(&mut s.client, "x", "v1").await;
    let dir = s.dir();
    let junk = ["x.rhai.swp", ".x.rhai.swp", "4913", "x.rhai~", ".x.rhai.tmp", "#x.rhai#", "x.rhai.orig"];
    for name in junk {
        std::fs::write(dir.join(name), "this is not rhai {{{").unwrap();
    }
    s.settle().await;
    serves(&mut s.client, "x", "v1").await;
    for event in ["x.rhai", ".x", "4913", "x.rhai~", ".x.rhai", "x.rhai.swp", "#x", "x.rhai.orig"] {
        let r = s.client.request(event, json!({})).await;
        assert!(is_not_found(&r), "`{event}` is not a plug: {r:?}");
        if event.contains('#') {
            // A tagged request (for plug "" here) ends with END.
            let end = s.client.recv().await;
            assert_eq!((end.event_type, end.event.as_str()), (EventType::END, event), "{end:?}");
        }
    }
    for name in junk {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    s.settle().await;
    serves(&mut s.client, "x", "v1").await;
    let names = s.server.running.app.plugs.registry().names();
    assert!(names.iter().all(|n| n == "x" || n == "whoami" || n.starts_with("marker-")), "{names:?}");
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_folder_is_not_recompiled() {
    // Reloading reads the plug's file and rescanning opens folders: neither
    // may count as a change, or the server recompiles forever.
    let mut s = Session::start(
        &[("x.rhai", &version("v1")), ("sub/y.rhai", &version("y")), ("_lib/m.rhai", "fn v() { 1 }\n")],
        |_| {},
    )
    .await;
    s.write("x.rhai", &version("v2"));
    serves(&mut s.client, "x", "v2").await;
    std::fs::create_dir(s.dir().join("fresh")).unwrap();
    s.write("fresh/z.rhai", &version("z"));
    serves(&mut s.client, "fresh/z", "z").await;
    s.write("_lib/m.rhai", "fn v() { 2 }\n");
    s.settle().await;
    let loaded = |s: &Session| -> Vec<(String, Option<std::time::SystemTime>)> {
        let statuses = s.server.running.app.plugs.registry().statuses();
        statuses.into_iter().map(|p| (p.name, p.loaded_at)).collect()
    };
    let before = loaded(&s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(loaded(&s), before, "nothing was recompiled while nothing changed");
    s.assert_same_connection().await;
}

// ---------------------------------------------------------- 2 compile errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_edit_keeps_the_last_good_version_until_fixed() {
    let mut s = Session::start(&[("x.rhai", &version("good1"))], |_| {}).await;
    serves(&mut s.client, "x", "good1").await;
    s.write("x.rhai", "fn f(msg, yield_msg) {\n    let a = ;\n}\n");
    s.settle().await;
    // Still the old version, and the error is known with file, line, column.
    serves(&mut s.client, "x", "good1").await;
    let status = s.server.running.app.plugs.registry().statuses().into_iter().find(|p| p.name == "x").unwrap();
    let err = status.error.expect("the failed edit is recorded").to_string();
    let file = s.dir().join("x.rhai").display().to_string();
    assert!(err.starts_with(&format!("{file}:2:")), "file:line:column: message, got {err}");

    // A runtime-only problem compiles, so it is served (and fails at run time).
    s.write("x.rhai", "fn f(msg, yield_msg) { yield_msg(#{ payload: 1 / 0 }); }\n");
    let r = eventually(&mut s.client, "x", json!({}), |r| r.event_type == EventType::ERROR).await;
    assert_eq!(r.payload["error"], "script_error", "{r:?}");

    s.write("x.rhai", &version("good2"));
    serves(&mut s.client, "x", "good2").await;
    let status = s.server.running.app.plugs.registry().statuses().into_iter().find(|p| p.name == "x").unwrap();
    assert!(status.error.is_none(), "a good version clears the error: {:?}", status.error);
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_compiled_plug_answers_compile_error() {
    let broken = "// broken from the start\nfn f(msg, yield_msg) {\n    yield_msg(#{ payload: ) });\n}\n";
    let mut s = Session::start(&[("bad.rhai", broken)], |_| {}).await;
    let r = s.client.request("bad", json!({})).await;
    assert!(is_compile_error(&r), "{r:?}");
    assert_eq!(r.event, "bad");
    assert_eq!(r.payload["plug"], "bad");
    assert_eq!(r.payload["line"], 3, "{r:?}");
    assert!(r.payload["column"].as_u64().is_some_and(|c| c > 0), "{r:?}");
    assert!(r.payload["message"].as_str().unwrap().contains("bad"), "{r:?}");

    // One created broken while the server runs: compile_error, not NOT_FOUND.
    s.write("later.rhai", "fn f(msg, yield_msg) {\n  yield_msg(\n");
    let r = eventually(&mut s.client, "later", json!({}), |r| !is_not_found(r)).await;
    assert!(is_compile_error(&r), "{r:?}");
    assert_eq!((r.payload["plug"].as_str(), r.payload["line"].as_u64().is_some()), (Some("later"), true), "{r:?}");

    // Fixing either brings it in.
    s.write("bad.rhai", &version("fixed"));
    serves(&mut s.client, "bad", "fixed").await;
    s.write("later.rhai", &version("fixed later"));
    serves(&mut s.client, "later", "fixed later").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plug_without_handlers_is_an_error_not_silence() {
    let mut s =
        Session::start(&[("x.rhai", &version("v1")), ("helpers_only.rhai", "fn helper(a) { a }\n")], |_| {}).await;
    let r = s.client.request("helpers_only", json!({})).await;
    assert!(is_compile_error(&r), "{r:?}");
    assert!(r.payload["message"].as_str().unwrap().contains("no handler"), "{r:?}");
    // An empty file is what an in-place save looks like between its
    // truncation and its write: the last good version keeps serving.
    s.write("x.rhai", "");
    s.settle().await;
    serves(&mut s.client, "x", "v1").await;
    s.write("x.rhai", &version("v2"));
    serves(&mut s.client, "x", "v2").await;
    // A new empty file answers compile_error until it gets content.
    s.write("blank.rhai", "");
    let r = eventually(&mut s.client, "blank", json!({}), |r| !is_not_found(r)).await;
    assert!(is_compile_error(&r), "{r:?}");
    s.write("blank.rhai", &version("filled"));
    serves(&mut s.client, "blank", "filled").await;
    s.assert_same_connection().await;
}

// ------------------------------------------------------- 3 versions in flight

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_invocation_finishes_on_its_version() {
    // Answers [version, tag]; with `wait`, sleeps 800 ms and answers again.
    let slow = |v: &str| {
        format!(
            "fn f(msg, yield_msg) {{\n  yield_msg(#{{ payload: [\"{v}\", msg.payload.tag] }});\n  \
             if msg.payload.wait {{ sleep(800); yield_msg(#{{ payload: [\"{v}\", msg.payload.tag] }}); }}\n}}\n"
        )
    };
    let mut s = Session::start(&[("slow.rhai", &slow("v1"))], |_| {}).await;
    s.client.send("slow", json!({"wait": true, "tag": "long"})).await;
    assert_eq!(s.client.recv().await.payload, json!(["v1", "long"]));
    s.write("slow.rhai", &slow("v2"));
    // New messages get v2 while the first run is still sleeping.
    let quick = json!({"wait": false, "tag": "quick"});
    s.client.send("slow", quick.clone()).await;
    let mut saw_v2 = false;
    let second = loop {
        let r = s.client.recv().await;
        if r.payload[1] == "long" {
            break r;
        }
        assert_eq!(r.payload[1], "quick", "{r:?}");
        if r.payload[0] == "v2" {
            saw_v2 = true;
        } else {
            assert!(!saw_v2, "once v2 is served, new messages never get v1 again: {r:?}");
            tokio::time::sleep(POLL).await;
            s.client.send("slow", quick.clone()).await;
        }
    };
    assert_eq!(second.payload, json!(["v1", "long"]), "the running invocation ends on the version it started with");
    assert!(saw_v2, "v2 was served while the v1 invocation was still running");
    let r = s.client.request("slow", quick).await;
    assert_eq!(r.payload, json!(["v2", "quick"]));
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_saves_in_a_second_end_on_the_last() {
    let mut s = Session::start(&[("hot.rhai", &version("0"))], |_| {}).await;
    serves(&mut s.client, "hot", "0").await;
    let started = Instant::now();
    for i in 1..=100 {
        if i % 2 == 0 {
            s.write("hot.rhai", &version(&i.to_string()));
        } else {
            s.atomic_save("hot.rhai", ".hot.rhai.tmp", &version(&i.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    assert!(started.elapsed() < Duration::from_millis(1500), "the saves took {:?}", started.elapsed());
    serves(&mut s.client, "hot", "100").await;
    // And it stays there.
    s.settle().await;
    for _ in 0..5 {
        let r = s.client.request("hot", json!({})).await;
        assert!(is_message(&r, json!("100")), "{r:?}");
    }
    s.assert_same_connection().await;
}

// ------------------------------------------------------------- 4 modules

const MOD_B1: &str = "fn word() { \"b1\" }\n";
const MOD_B2: &str = "fn word() { \"b2\" }\n";
const MOD_A1: &str = "import \"_lib/b\" as b;\nfn phrase() { \"a1+\" + b::word() }\n";
const MOD_A2: &str = "import \"_lib/b\" as b;\nfn phrase() { \"a2+\" + b::word() }\n";
const PLUG_VIA_A: &str = "import \"_lib/a\" as a;\nfn f(msg, yield_msg) { yield_msg(#{ payload: a::phrase() }); }\n";
const PLUG_VIA_B: &str = "import \"_lib/b\" as b;\nfn f(msg, yield_msg) { yield_msg(#{ payload: b::word() }); }\n";
const GREET: &str = "fn hello(name) { `hello, ${name}` }\n";
const PLUG_GREET: &str =
    "import \"_lib/greet\" as g;\nfn f(msg, yield_msg) { yield_msg(#{ payload: g::hello(msg.payload.name) }); }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_changes_recompile_direct_and_indirect_importers() {
    let mut s = Session::start(
        &[
            ("_lib/b.rhai", MOD_B1),
            ("_lib/a.rhai", MOD_A1),
            ("_lib/greet.rhai", GREET),
            ("via_a.rhai", PLUG_VIA_A),
            ("via_b.rhai", PLUG_VIA_B),
            ("greet.rhai", PLUG_GREET),
            ("plain.rhai", &version("plain")),
        ],
        |_| {},
    )
    .await;
    let r = s.client.request("greet", json!({"name": "ada"})).await;
    assert!(is_message(&r, json!("hello, ada")), "{r:?}");
    serves(&mut s.client, "via_a", "a1+b1").await;
    serves(&mut s.client, "via_b", "b1").await;

    // Modules are never routable.
    for event in ["_lib/greet", "_lib/a", "_lib/b", "_lib"] {
        let r = s.client.request(event, json!({})).await;
        assert!(is_not_found(&r), "`{event}` is a module, not a plug: {r:?}");
    }

    // Edit B: the plug importing it directly and the one reaching it through A.
    s.write("_lib/b.rhai", MOD_B2);
    serves(&mut s.client, "via_a", "a1+b2").await;
    serves(&mut s.client, "via_b", "b2").await;

    // Edit A (atomic save): only the plug through A changes.
    s.atomic_save("_lib/a.rhai", "_lib/.a.rhai.tmp", MOD_A2);
    serves(&mut s.client, "via_a", "a2+b2").await;
    serves(&mut s.client, "via_b", "b2").await;

    // A module that stops compiling: importers keep their last good version.
    s.write("_lib/b.rhai", "fn word() { \"b3\" \n");
    s.settle().await;
    serves(&mut s.client, "via_a", "a2+b2").await;
    serves(&mut s.client, "via_b", "b2").await;
    s.write("_lib/b.rhai", "fn word() { \"b4\" }\n");
    serves(&mut s.client, "via_a", "a2+b4").await;
    serves(&mut s.client, "via_b", "b4").await;
    serves(&mut s.client, "plain", "plain").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_folders_and_late_modules() {
    let mut s = Session::start(
        &[("uses_late.rhai", "import \"_late/m\" as m;\nfn f(msg, yield_msg) { yield_msg(#{ payload: m::v() }); }\n")],
        |_| {},
    )
    .await;
    // The import cannot be resolved yet: a compile error that names it.
    let r = s.client.request("uses_late", json!({})).await;
    assert!(is_compile_error(&r), "{r:?}");
    assert!(r.payload["message"].as_str().unwrap().contains("_late/m"), "{r:?}");

    // A new module folder, created while running: the plug now compiles.
    std::fs::create_dir(s.dir().join("_late")).unwrap();
    std::fs::write(s.dir().join("_late/m.rhai"), "fn v() { \"late\" }\n").unwrap();
    serves(&mut s.client, "uses_late", "late").await;
    let r = s.client.request("_late/m", json!({})).await;
    assert!(is_not_found(&r), "{r:?}");

    // A `_`-prefixed file inside a plug folder is a module too.
    s.write("room/_helpers.rhai", "fn n() { 7 }\n");
    s.write(
        "room/join.rhai",
        "import \"room/_helpers\" as h;\nfn f(msg, yield_msg) { yield_msg(#{ payload: h::n() }); }\n",
    );
    let r = eventually(&mut s.client, "room/join", json!({}), |r| is_message(r, json!(7))).await;
    assert_eq!(r.event, "room/join");
    let r = s.client.request("room/_helpers", json!({})).await;
    assert!(is_not_found(&r), "{r:?}");
    s.write("room/_helpers.rhai", "fn n() { 8 }\n");
    eventually(&mut s.client, "room/join", json!({}), |r| is_message(r, json!(8))).await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_module_that_appears_brings_in_the_new_version() {
    let uses = "import \"_lib/a\" as a;\nfn f(msg, yield_msg) { yield_msg(#{ payload: a::v() }); }\n";
    let mut s = Session::start(&[("_lib/a.rhai", "fn v() { \"a1\" }\n"), ("p.rhai", uses)], |_| {}).await;
    serves(&mut s.client, "p", "a1").await;
    // A now imports a module that does not exist yet: p keeps serving a1.
    s.write("_lib/a.rhai", "import \"_lib/c\" as c;\nfn v() { \"a2+\" + c::w() }\n");
    s.settle().await;
    serves(&mut s.client, "p", "a1").await;
    // Creating it makes the whole chain compile: p serves the new version.
    s.write("_lib/c.rhai", "fn w() { \"c1\" }\n");
    serves(&mut s.client, "p", "a2+c1").await;
    s.write("_lib/c.rhai", "fn w() { \"c2\" }\n");
    serves(&mut s.client, "p", "a2+c2").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_folder_moved_away_is_gone_for_new_compiles() {
    let uses = |tail: &str| {
        format!("import \"_lib/g\" as g;\nfn f(msg, yield_msg) {{ yield_msg(#{{ payload: g::v() + \"{tail}\" }}); }}\n")
    };
    let mut s = Session::start(&[("_lib/g.rhai", "fn v() { \"g\" }\n"), ("p.rhai", &uses(""))], |_| {}).await;
    serves(&mut s.client, "p", "g").await;
    std::fs::rename(s.dir().join("_lib"), s.dir().join("_old")).unwrap();
    s.settle().await;
    // `_lib/g` no longer exists: an edit of p cannot compile against it.
    s.write("p.rhai", &uses("!"));
    s.settle().await;
    serves(&mut s.client, "p", "g").await;
    let status = s.server.running.app.plugs.registry().statuses().into_iter().find(|p| p.name == "p").unwrap();
    assert!(status.error.is_some_and(|e| e.to_string().contains("_lib/g")), "the failed edit names the import");
    // The folder comes back: p compiles again with its edit.
    std::fs::rename(s.dir().join("_old"), s.dir().join("_lib")).unwrap();
    serves(&mut s.client, "p", "g!").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_cycles_are_compile_errors_not_crashes() {
    let uses = "import \"_lib/a\" as a;\nfn f(msg, yield_msg) { yield_msg(#{ payload: a::v() }); }\n";
    let mut s = Session::start(
        &[
            ("_lib/a.rhai", "import \"_lib/b\" as b;\nfn v() { b::w() }\n"),
            ("_lib/b.rhai", "fn w() { \"b1\" }\n"),
            ("_lib/me.rhai", "import \"_lib/me\" as me;\nfn v() { 1 }\n"),
            ("p.rhai", uses),
            ("selfish.rhai", "import \"_lib/me\" as me;\nfn f(msg, yield_msg) { yield_msg(#{ payload: me::v() }); }\n"),
        ],
        |_| {},
    )
    .await;
    // A module importing itself, present at start-up.
    let r = s.client.request("selfish", json!({})).await;
    assert!(is_compile_error(&r), "{r:?}");
    assert!(r.payload["message"].as_str().unwrap().contains("cycle"), "{r:?}");
    serves(&mut s.client, "p", "b1").await;
    // B edited to import A: a cycle made live. p keeps its last good version.
    s.write("_lib/b.rhai", "import \"_lib/a\" as a;\nfn w() { \"b2\" }\n");
    s.settle().await;
    serves(&mut s.client, "p", "b1").await;
    let status = s.server.running.app.plugs.registry().statuses().into_iter().find(|p| p.name == "p").unwrap();
    let err = status.error.expect("the cycle is reported").to_string();
    assert!(err.contains("_lib/a -> _lib/b -> _lib/a"), "{err}");
    // Broken the cycle: the new version.
    s.write("_lib/b.rhai", "fn w() { \"b3\" }\n");
    serves(&mut s.client, "p", "b3").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_chains_are_limited_in_depth() {
    // _chain/m1 imports m2 ... imports mN; each adds one.
    let chain = |n: usize| -> Vec<(String, String)> {
        (1..=n)
            .map(|i| {
                let src = if i < n {
                    format!("import \"_chain{n}/m{}\" as m;\nfn v() {{ m::v() + 1 }}\n", i + 1)
                } else {
                    "fn v() { 1 }\n".to_owned()
                };
                (format!("_chain{n}/m{i}.rhai"), src)
            })
            .collect()
    };
    let plug = |n: usize| {
        (
            format!("deep{n}.rhai"),
            format!("import \"_chain{n}/m1\" as m;\nfn f(msg, yield_msg) {{ yield_msg(#{{ payload: m::v() }}); }}\n"),
        )
    };
    let max = ssocket::plugs::modules::MAX_IMPORT_DEPTH;
    let mut files = chain(max);
    files.extend(chain(max + 1));
    files.push(plug(max));
    files.push(plug(max + 1));
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, s)| (p.as_str(), s.as_str())).collect();
    let mut s = Session::start(&refs, |_| {}).await;
    let r = s.client.request(&format!("deep{max}"), json!({})).await;
    assert!(is_message(&r, json!(max)), "{max} nested modules are fine: {r:?}");
    let r = s.client.request(&format!("deep{}", max + 1), json!({})).await;
    assert!(is_compile_error(&r), "{r:?}");
    assert!(r.payload["message"].as_str().unwrap().contains(&format!("more than {max} deep")), "{r:?}");
    s.assert_same_connection().await;
}

/// A module whose top-level code never ends is a compile error of its
/// importers, stopped by `limit`, and the watcher keeps working.
async fn endless_module_is_contained(limit: impl FnOnce(&mut ssocket::config::Settings)) {
    let spin = "let n = 0;\nloop { n += 1; }\nfn v() { 1 }\n";
    let uses = "import \"_lib/spin\" as s;\nfn f(msg, yield_msg) { yield_msg(#{ payload: s::v() }); }\n";
    let mut s = Session::start(&[("x.rhai", &version("v1"))], limit).await;
    s.write("_lib/spin.rhai", spin);
    s.write("spinner.rhai", uses);
    let r = eventually(&mut s.client, "spinner", json!({}), |r| !is_not_found(r)).await;
    assert!(is_compile_error(&r), "{r:?}");
    // The watcher is still alive.
    s.write("x.rhai", &version("v2"));
    serves(&mut s.client, "x", "v2").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_never_finishes_loading_does_not_stall_reloads() {
    endless_module_is_contained(|st| st.limits.max_operations = 200_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_never_finishes_loading_is_stopped_by_the_clock() {
    // No operations limit: only `limits.timeoutMs` can end the module's loop.
    endless_module_is_contained(|st| {
        st.limits.max_operations = 0;
        st.limits.timeout_ms = 500;
    })
    .await;
}

// ---------------------------------------------------- 5, 6 stdlib and escapes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdlib_imports_and_confined_imports() {
    let std_plug =
        "import \"std/text\" as t;\nfn f(msg, yield_msg) { yield_msg(#{ payload: t::capitalize(\"ada\") }); }\n";
    let mut s = Session::start(
        &[
            ("std_user.rhai", std_plug),
            ("up.rhai", "import \"../x\" as x;\nfn f(msg, yield_msg) { yield_msg(#{ payload: 1 }); }\n"),
            ("abs.rhai", "import \"/etc/passwd\" as x;\nfn f(msg, yield_msg) { yield_msg(#{ payload: 1 }); }\n"),
            ("sneaky.rhai", "\nimport \"_lib/../../x\" as x;\nfn f(msg, yield_msg) { yield_msg(#{ payload: 1 }); }\n"),
        ],
        |_| {},
    )
    .await;
    // A file outside the folder that `../x` would reach.
    std::fs::write(s.dir().parent().unwrap().join("x.rhai"), "fn v() { 1 }\n").ok();
    let r = s.client.request("std_user", json!({})).await;
    assert!(is_message(&r, json!("Ada")), "{r:?}");
    for (event, import, line) in [("up", "../x", 1), ("abs", "/etc/passwd", 1), ("sneaky", "_lib/../../x", 2)] {
        let r = s.client.request(event, json!({})).await;
        assert!(is_compile_error(&r), "{event}: {r:?}");
        let message = r.payload["message"].as_str().unwrap();
        assert!(message.contains(&format!("\"{import}\"")), "{event}: the error names the import: {message}");
        assert_eq!(r.payload["line"], line, "{event}: {r:?}");
    }
    // Edited live into an escape: still refused (the last good version stays).
    s.write(
        "std_user.rhai",
        "import \"../../etc/hosts\" as x;\nfn f(msg, yield_msg) { yield_msg(#{ payload: 2 }); }\n",
    );
    s.settle().await;
    serves(&mut s.client, "std_user", "Ada").await;
    s.assert_same_connection().await;
}

// ------------------------------------------------------------ 7 settings

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_preload_broken_plugs_do_not_stop_start_up() {
    let mut s = Session::start(
        &[("good.rhai", &version("good")), ("broken.rhai", "fn f(msg, yield_msg) {\n  yield_msg(#{ payload: 1 }\n")],
        |st| st.preload_plugs = false,
    )
    .await;
    let statuses = s.server.running.app.plugs.registry().statuses();
    let broken = statuses.iter().find(|p| p.name == "broken").unwrap();
    assert!(broken.loaded_at.is_none() && broken.error.is_none(), "not compiled before first use: {broken:?}");
    let r = s.client.request("broken", json!({})).await;
    assert!(is_compile_error(&r), "{r:?}");
    assert_eq!((r.payload["plug"].as_str(), r.payload["line"].as_u64().is_some()), (Some("broken"), true), "{r:?}");
    serves(&mut s.client, "good", "good").await;
    // Live reload works the same without preloading.
    s.write("broken.rhai", &version("mended"));
    serves(&mut s.client, "broken", "mended").await;
    s.write("good.rhai", &version("better"));
    serves(&mut s.client, "good", "better").await;
    s.assert_same_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_reports_errors_at_start() {
    let plugs = [("good.rhai", version("good")), ("broken.rhai", "fn f(msg, yield_msg) {\n".to_owned())];
    let dir = tempfile::tempdir().unwrap();
    for (p, src) in &plugs {
        write_plug(dir.path(), p, src);
    }
    let mut st = settings(dir.path());
    st.preload_plugs = true;
    let app = ssocket::app::App::new(st).expect("a broken plug does not stop start-up");
    let statuses = app.plugs.registry().statuses();
    let broken = statuses.iter().find(|p| p.name == "broken").unwrap();
    assert!(broken.error.is_some(), "compiled (and failed) at start: {broken:?}");
    let good = statuses.iter().find(|p| p.name == "good").unwrap();
    assert!(good.loaded_at.is_some() && good.error.is_none(), "{good:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_function_shape() {
    let wrong = "fn f(msg, yield_msg) { yield_msg(#{ payload: helper(1) }); }\n\nfn helper(x) { x + 1 }\n";
    let private = "fn f(msg, yield_msg) { yield_msg(#{ payload: helper(1) }); }\nprivate fn helper(x) { x + 1 }\n";
    let mut s =
        Session::start(&[("wrong.rhai", wrong), ("private.rhai", private)], |st| st.validate_function_shape = true)
            .await;
    let r = s.client.request("wrong", json!({})).await;
    assert!(is_compile_error(&r), "{r:?}");
    let message = r.payload["message"].as_str().unwrap();
    assert!(message.contains("helper") && message.contains(":3:"), "names the function and its place: {message}");
    assert_eq!(r.payload["plug"], "wrong");
    let r = s.client.request("private", json!({})).await;
    assert!(is_message(&r, json!(2)), "private helpers are fine: {r:?}");
    // Fixed live.
    s.write("wrong.rhai", private);
    eventually(&mut s.client, "wrong", json!({}), |r| is_message(r, json!(2))).await;
    // Broken live: a plug that served keeps its last good version.
    s.write("wrong.rhai", "fn f(msg, yield_msg) { yield_msg(#{ payload: 3 }); }\nfn g(a, b, c) {}\n");
    s.settle().await;
    eventually(&mut s.client, "wrong", json!({}), |r| is_message(r, json!(2))).await;
    s.assert_same_connection().await;

    // Without the setting the same plug runs (helper is not a handler).
    let mut s = Session::start(&[("wrong.rhai", wrong)], |st| st.validate_function_shape = false).await;
    let r = s.client.request("wrong", json!({})).await;
    assert!(is_message(&r, json!(2)), "{r:?}");
    s.assert_same_connection().await;
}

// ------------------------------------------------------------ 8 template

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_template_works_as_is() {
    let mut s = Session::start(&[], |_| {}).await;
    let path = ssocket::tools::generate(&s.dir(), "chat/join").expect("generates");
    assert_eq!(path, s.dir().join("chat/join.rhai"));
    let r = eventually(&mut s.client, "chat/join", json!({"n": 1}), |r| !is_not_found(r)).await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::MESSAGE, "chat/join"), "{r:?}");
    assert_eq!(r.payload["received"], json!({"n": 1}), "{r:?}");
    let path = ssocket::tools::generate(&s.dir(), "solo").expect("generates");
    assert!(path.ends_with("solo.rhai"));
    let r = eventually(&mut s.client, "solo", json!({}), |r| !is_not_found(r)).await;
    assert_eq!(r.event_type, EventType::MESSAGE, "{r:?}");
    assert!(matches!(ssocket::tools::generate(&s.dir(), "solo"), Err(ssocket::tools::GenerateError::Exists(_))));
    s.assert_same_connection().await;
}
