//! Shared end-to-end test support: a real server on 127.0.0.1:0 and a real
//! WebSocket client speaking the binary protocol.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use ssocket::config::Settings;
use ssocket::protocol::{decode, encode_parts, EventType, Message};
use ssocket::server::{start, Running};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

/// A child process's output pipe, read line by line on a thread into a
/// string the test can look at while the process runs.
pub fn collect_output(pipe: impl std::io::Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(pipe);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    out
}

/// How long a test waits for a reply before it fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The repo's example plugs.
pub fn example_plugs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugs")
}

/// Settings for tests: built-in defaults, port 0 on loopback, the given
/// folder, and no INIT hook (the repo's own `INIT.rhai` is an example app;
/// tests that want one set `init_file`).
pub fn settings(plugs: &Path) -> Settings {
    let mut s = Settings::load(None, &[], &[]).expect("defaults");
    s.insecure.hostname = "127.0.0.1".into();
    s.insecure.port = 0;
    s.plugs_folder = plugs.to_path_buf();
    s.init_file = plugs.join("no-INIT-in-tests.rhai");
    s
}

/// A running server, and the temporary plugs folder it may own.
pub struct TestServer {
    pub running: Running,
    pub dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("ws://{}/", self.running.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// A client the server has registered: one round trip has completed, so
    /// broadcasts and `clients()` already include it.
    pub async fn ready_client(&self) -> Client {
        let mut c = self.client().await;
        c.ping().await;
        c
    }

    /// Connected clients as the server's hub counts them.
    pub fn connected(&self) -> usize {
        self.running.app.hub.len()
    }

    /// Wait (up to `wait`) until the hub holds `n` clients; false if it never does.
    pub async fn wait_connected(&self, n: usize, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if self.connected() == n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.connected() == n
    }

    /// Wait (up to `wait`) until no plug run is in flight; false if one
    /// still is.
    pub async fn wait_plugs_idle(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while self.running.app.plugs.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.running.app.plugs.in_flight() == 0
    }

    /// The plugs folder (for tests that edit plugs).
    pub fn plugs_dir(&self) -> PathBuf {
        self.running.app.settings.plugs_folder.clone()
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// Start on the repo's example plugs.
pub async fn start_examples() -> TestServer {
    start_examples_with(|_| {}).await
}

pub async fn start_examples_with(tweak: impl FnOnce(&mut Settings)) -> TestServer {
    let mut s = settings(&example_plugs());
    tweak(&mut s);
    TestServer { running: start(s).await.expect("server starts"), dir: None }
}

/// Start on a temporary folder holding the given `(relative path, source)` plugs.
pub async fn start_with_plugs(plugs: &[(&str, &str)], tweak: impl FnOnce(&mut Settings)) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, source) in plugs {
        write_plug(dir.path(), path, source);
    }
    let mut s = settings(dir.path());
    tweak(&mut s);
    TestServer { running: start(s).await.expect("server starts"), dir: Some(dir) }
}

/// Write `source` as an INIT file in a fresh temp dir; returns the dir (keep
/// it alive) and the file's path, for `settings.init_file`.
pub fn init_file(source: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("INIT.rhai");
    std::fs::write(&path, source).expect("write INIT.rhai");
    (dir, path)
}

pub fn write_plug(folder: &Path, path: &str, source: &str) {
    let full = folder.join(path);
    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    std::fs::write(full, source).expect("write plug");
}

/// A decoded reply with its payload parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub event_type: EventType,
    pub event: String,
    pub payload: Value,
    /// The frame as received (SYNC patchers need the bytes).
    pub raw: Vec<u8>,
}

/// What a client received instead of a binary message.
#[derive(Debug, PartialEq)]
pub enum Received {
    Reply(Reply),
    Closed(Option<u16>),
}

/// An event no plug can answer: files whose name starts with `_` are not plugs.
pub const PING_EVENT: &str = "__ping__";

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = connect_async(url).await.expect("websocket connects");
        Client { ws }
    }

    /// Encode and send a message; returns the bytes sent.
    pub async fn send(&mut self, event: &str, payload: Value) -> Vec<u8> {
        self.send_typed(EventType::MESSAGE, event, payload).await
    }

    pub async fn send_typed(&mut self, t: EventType, event: &str, payload: Value) -> Vec<u8> {
        let bytes = encode_parts(t, event, payload.to_string().as_bytes()).expect("encodable");
        self.send_raw(bytes.clone()).await;
        bytes
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(WsMessage::binary(bytes)).await.expect("send");
    }

    /// Send a binary frame, tolerating a connection the server already
    /// closed; false when the send failed.
    pub async fn try_send_raw(&mut self, bytes: Vec<u8>) -> bool {
        self.ws.send(WsMessage::binary(bytes)).await.is_ok()
    }

    /// A round trip through the server on any plugs folder: an event that
    /// can never be a plug (names starting with `_` are skipped) answers
    /// NOT_FOUND.
    pub async fn ping(&mut self) {
        let r = self.request(PING_EVENT, Value::Object(Default::default())).await;
        assert_eq!((r.event_type, r.event.as_str()), (EventType::NOT_FOUND, PING_EVENT), "ping answered {r:?}");
    }

    /// Close the connection (a close handshake, then drop).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(WsMessage::text(text)).await.expect("send text");
    }

    /// The next message or close; panics after [`REPLY_TIMEOUT`].
    pub async fn next(&mut self) -> Received {
        self.next_within(REPLY_TIMEOUT).await.expect("a message within the timeout")
    }

    /// The next message or close, or None if nothing came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Received> {
        loop {
            let item = match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => return None,
                Ok(item) => item,
            };
            match item {
                None => return Some(Received::Closed(None)),
                Some(Err(_)) => return Some(Received::Closed(None)),
                Some(Ok(WsMessage::Binary(b))) => {
                    let msg = decode(&b).expect("server sends well-formed messages");
                    return Some(Received::Reply(to_reply(msg, b.to_vec())));
                }
                Some(Ok(WsMessage::Close(frame))) => return Some(Received::Closed(frame.map(|f| f.code.into()))),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next binary reply; panics on close or timeout.
    pub async fn recv(&mut self) -> Reply {
        match self.next().await {
            Received::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// Assert nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(got) = self.next_within(wait).await {
            panic!("expected nothing, got {got:?}");
        }
    }

    /// Send and wait for one reply.
    pub async fn request(&mut self, event: &str, payload: Value) -> Reply {
        self.send(event, payload).await;
        self.recv().await
    }
}

fn to_reply(msg: Message, raw: Vec<u8>) -> Reply {
    let payload = serde_json::from_str(&msg.payload).expect("payload is JSON");
    Reply { event_type: msg.event_type, event: msg.event, payload, raw }
}
