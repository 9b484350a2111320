//! The repo's example plugs and `INIT.rhai`, run as a user would run them:
//! the counter, the nickname, fetch (denied by default), the clock timer
//! and the chat with rooms, who-is-online and history.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use ssocket::protocol::EventType;

/// The example plugs with the repo's own INIT.rhai.
async fn start() -> TestServer {
    start_examples_with(|s| s.init_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("INIT.rhai")).await
}

/// Read until a message of `event` arrives; panics on close or timeout.
async fn until(c: &mut Client, event: &str) -> Reply {
    loop {
        let r = c.recv().await;
        if r.event == event {
            return r;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_counts_for_everyone() {
    let server = start().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    assert_eq!(a.request("counter", json!({"reset": true})).await.payload, json!({"count": 1}));
    assert_eq!(b.request("counter", json!({})).await.payload, json!({"count": 2}));
    assert_eq!(a.request("counter", json!({})).await.payload, json!({"count": 3}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nickname_is_kept_per_connection() {
    let server = start().await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    let r = a.request("nickname", json!({"name": "Ada"})).await;
    assert_eq!(r.payload["name"], "Ada");
    assert_eq!(a.request("nickname", json!({})).await.payload["name"], "Ada");
    assert_eq!(b.request("nickname", json!({})).await.payload["name"], Value::Null);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_is_denied_until_allowed() {
    let server = start().await;
    let mut c = server.client().await;
    let r = c.request("fetch", json!({"url": "http://127.0.0.1:1/"})).await;
    assert_eq!(r.payload["failed"], "http_denied", "{r:?}");
    server.stop().await;

    // Allowed: this server's own /api/stats.
    let server = start_examples_with(|s| s.http.allow = vec!["127.0.0.1".into()]).await;
    let mut c = server.client().await;
    let url = format!("http://{}/api/stats", server.running.addr);
    let r = c.request("fetch", json!({ "url": url })).await;
    assert_eq!(r.payload["status"], 200, "{r:?}");
    assert!(r.payload["json"]["connections"].as_u64().is_some_and(|n| n >= 1), "{r:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_ticks_for_subscribers_only() {
    let server = start().await;
    let (mut a, mut b) = (server.client().await, server.ready_client().await);
    assert_eq!(a.request("clock", json!({})).await.payload["subscribed"], true);
    let tick = until(&mut a, "clock").await;
    assert_eq!(tick.event_type, EventType::BROADCAST);
    assert!(tick.payload["now"].as_i64().is_some_and(|t| t > 0), "{tick:?}");
    b.expect_silence(Duration::from_millis(1200)).await;
    // The answer shares its event with the ticks: skip ticks until it comes.
    a.send("clock", json!({"stop": true})).await;
    loop {
        let r = until(&mut a, "clock").await;
        if r.event_type == EventType::MESSAGE {
            assert_eq!(r.payload["subscribed"], false, "{r:?}");
            break;
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_rooms_with_who_is_online_history_and_notices() {
    let server = start().await;
    let mut ada = server.client().await;
    let mut bob = server.client().await;
    let mut eve = server.ready_client().await;

    let r = ada.request("chat/join", json!({"room": "lobby", "name": "Ada"})).await;
    let ada_id = r.payload["you"]["client"].as_u64().unwrap();
    assert_eq!(r.payload["online"], json!([{"client": ada_id, "name": "Ada"}]));
    assert_eq!(r.payload["history"], json!([]));

    bob.send("chat/join", json!({"room": "lobby", "name": "Bob"})).await;
    let joined = until(&mut bob, "chat/join").await;
    let bob_id = joined.payload["you"]["client"].as_u64().unwrap();
    let names: Vec<&str> =
        joined.payload["online"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Ada", "Bob"]);
    let notice = until(&mut ada, "chat/joined").await;
    assert_eq!(notice.payload, json!({"room": "lobby", "client": bob_id, "name": "Bob"}));

    ada.send("chat/say", json!({"room": "lobby", "text": "hello"})).await;
    let echoed = until(&mut ada, "chat/say").await;
    assert_eq!((echoed.payload["text"].as_str(), echoed.payload["name"].as_str()), (Some("hello"), Some("Ada")));
    let heard = until(&mut bob, "chat/message").await;
    assert_eq!(heard.payload["text"], "hello");
    eve.expect_silence(Duration::from_millis(300)).await;

    // Not in the room: a clear error, nobody hears it.
    let e = eve.request("chat/say", json!({"room": "lobby", "text": "psst"})).await;
    assert_eq!((e.event_type, e.payload["error"].as_str()), (EventType::ERROR, Some("not_in_room")), "{e:?}");

    // Who is where.
    let who = eve.request("chat/who", json!({})).await;
    assert_eq!(who.payload["lobby"].as_array().map(Vec::len), Some(2), "{who:?}");

    // A later member gets the history.
    let r = eve.request("chat/join", json!({"room": "lobby", "name": "Eve"})).await;
    assert_eq!(r.payload["history"].as_array().map(|h| h.len()), Some(1), "{r:?}");
    assert_eq!(r.payload["history"][0]["text"], "hello");

    // Bob disconnects: the room is told, and he is no longer online.
    bob.close().await;
    let left = until(&mut ada, "chat/left").await;
    assert_eq!(left.payload, json!({"room": "lobby", "client": bob_id, "name": "Bob"}));
    let who = ada.request("chat/who", json!({"room": "lobby"})).await;
    let names: Vec<&str> =
        who.payload["online"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Ada", "Eve"]);
    let r = ada.request("chat/leave", json!({"room": "lobby"})).await;
    assert_eq!(r.payload, json!({"room": "lobby", "left": true}));
    while until(&mut eve, "chat/left").await.payload["client"] != ada_id {} // Bob's came first
    server.stop().await;
}
