//! Rooms and presence (SPEC 10.2, issue 13), end to end through fixture
//! plugs and real WebSocket clients: `rooms::join` / `leave` (the sender,
//! or any client by id), `members`, `presence`, `of`, `list`, `send`, room
//! yields, INIT's `on_join` / `on_leave`, disconnects that leave every
//! room, the `roomsPerClient` limit, bad room names, and the HTTP API's
//! publish to a room.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use ssocket::config::Settings;
use ssocket::protocol::EventType;

/// How long "nothing (more) arrives" checks wait.
const SILENCE: Duration = Duration::from_millis(300);

/// `room` runs one `rooms::` operation from its payload and answers
/// `{result}`; with `trap: true` a thrown error comes back as event
/// `caught` instead of an ERROR. `whoami` answers the sender's id, `name`
/// sets `conn::` state, `store_get` reads the store.
const PLUGS: &[(&str, &str)] = &[
    (
        "room.rhai",
        r#"
fn room(msg, yield_msg) {
    let p = msg.payload;
    if p.op == "yield" {
        yield_msg(p.reply);
        yield_msg(#{ payload: #{ result: "yielded" } });
        return;
    }
    if p.trap == true {
        try {
            let r = run(p);
            yield_msg(#{ payload: #{ result: r } });
        } catch (e) {
            yield_msg(#{ event: "caught", payload: e });
        }
    } else {
        let r = run(p);
        yield_msg(#{ payload: #{ result: r } });
    }
}

private fn run(p) {
    let op = p.op;
    if op == "join" {
        if p.id != () { rooms::join(p.id, p.room) } else { rooms::join(p.room) }
    } else if op == "leave" {
        if p.id != () { rooms::leave(p.id, p.room) } else { rooms::leave(p.room) }
    } else if op == "members" {
        rooms::members(p.room)
    } else if op == "presence" {
        rooms::presence(p.room)
    } else if op == "of" {
        if p.id != () { rooms::of(p.id) } else { rooms::of() }
    } else if op == "list" {
        rooms::list()
    } else if op == "send" {
        rooms::send(p.room, p.reply)
    } else if op == "join_many" {
        for i in 0..p.n { rooms::join(`${p.prefix}${i}`); }
        p.n
    } else {
        throw "unknown op " + op;
    }
}
"#,
    ),
    ("whoami.rhai", "fn whoami(msg, yield_msg) { yield_msg(#{ payload: msg.client }); }"),
    ("name.rhai", r#"fn name(msg, yield_msg) { conn::set("name", msg.payload.name); yield_msg(#{ payload: true }); }"#),
    (
        "flip.rhai",
        r#"fn flip(msg, yield_msg) {
            for i in 0..msg.payload.n { rooms::join(msg.payload.room); rooms::leave(msg.payload.room); }
            yield_msg(#{ payload: rooms::of() });
        }"#,
    ),
    ("store_get.rhai", "fn store_get(msg, yield_msg) { yield_msg(#{ payload: store::get(msg.payload.key) }); }"),
];

// ------------------------------------------------------------ helpers

async fn server() -> TestServer {
    start_with_plugs(PLUGS, |_| {}).await
}

/// A server whose INIT is `source` (plus `tweak`); keep the dir alive.
async fn start_with_init(source: &str, tweak: impl FnOnce(&mut Settings)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("INIT.rhai");
    std::fs::write(&path, source).expect("write INIT.rhai");
    let server = start_with_plugs(PLUGS, |s| {
        s.init_file = path;
        tweak(s);
    })
    .await;
    (server, dir)
}

async fn id_of(c: &mut Client) -> i64 {
    let r = c.request("whoami", json!({})).await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::MESSAGE, "whoami"), "{r:?}");
    r.payload.as_i64().expect("an id")
}

/// Run a `room` op and return its `result`; panics on anything else.
async fn op(c: &mut Client, payload: Value) -> Value {
    let r = c.request("room", payload.clone()).await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::MESSAGE, "room"), "{payload} answered {r:?}");
    r.payload["result"].clone()
}

/// Run a `room` op that must fail uncaught; returns the ERROR payload.
async fn op_error(c: &mut Client, payload: Value) -> Value {
    let r = c.request("room", payload.clone()).await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::ERROR, "room"), "{payload} answered {r:?}");
    r.payload
}

/// Run a `room` op that must throw, caught by the plug; returns what it caught.
async fn op_caught(c: &mut Client, mut payload: Value) -> Value {
    payload["trap"] = json!(true);
    let r = c.request("room", payload.clone()).await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::MESSAGE, "caught"), "{payload} answered {r:?}");
    r.payload
}

async fn join(c: &mut Client, room: &str) -> Value {
    op(c, json!({"op": "join", "room": room})).await
}

async fn leave(c: &mut Client, room: &str) -> Value {
    op(c, json!({"op": "leave", "room": room})).await
}

async fn members(c: &mut Client, room: &str) -> Value {
    op(c, json!({"op": "members", "room": room})).await
}

async fn list(c: &mut Client) -> Value {
    op(c, json!({"op": "list"})).await
}

/// Ask `c` for `op` until `done` holds for its result (up to the reply
/// timeout); returns the last result.
async fn until(c: &mut Client, payload: Value, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let got = op(c, payload.clone()).await;
        if done(&got) || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read store key `key` through `c` until `done` holds for it.
async fn store_until(c: &mut Client, key: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let r = c.request("store_get", json!({"key": key})).await;
        assert_eq!(r.event_type, EventType::MESSAGE, "{r:?}");
        if done(&r.payload) || Instant::now() >= deadline {
            return r.payload;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("a string: {s}")).to_owned())
        .collect()
}

// ------------------------------------------------------------ join, leave, members, of, list

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_members_of_and_list() {
    let server = server().await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    let (ia, ib) = (id_of(&mut a).await, id_of(&mut b).await);

    assert_eq!(list(&mut a).await, json!([]), "no rooms before anyone joins");
    assert_eq!(members(&mut a, "lobby").await, json!([]), "an unknown room has no members");
    assert_eq!(join(&mut a, "lobby").await, json!(true));
    assert_eq!(join(&mut a, "lobby").await, json!(false), "already in it");
    assert_eq!(members(&mut b, "lobby").await, json!([ia]));
    assert_eq!(join(&mut b, "lobby").await, json!(true));
    assert_eq!(members(&mut a, "lobby").await, json!([ia, ib]), "ascending ids");
    assert_eq!(join(&mut a, "zeta").await, json!(true));
    assert_eq!(join(&mut a, "alpha").await, json!(true));
    assert_eq!(op(&mut a, json!({"op": "of"})).await, json!(["alpha", "lobby", "zeta"]), "sorted");
    assert_eq!(op(&mut a, json!({"op": "of", "id": ib})).await, json!(["lobby"]));
    assert_eq!(op(&mut b, json!({"op": "of", "id": ia})).await, json!(["alpha", "lobby", "zeta"]));
    assert_eq!(list(&mut b).await, json!(["alpha", "lobby", "zeta"]));

    assert_eq!(leave(&mut a, "alpha").await, json!(true));
    assert_eq!(members(&mut a, "alpha").await, json!([]));
    assert_eq!(list(&mut a).await, json!(["lobby", "zeta"]), "a room exists while someone is in it");
    assert_eq!(leave(&mut a, "lobby").await, json!(true));
    assert_eq!(members(&mut a, "lobby").await, json!([ib]));
    assert_eq!(op(&mut a, json!({"op": "of"})).await, json!(["zeta"]));
    // Names are case- and byte-exact.
    assert_eq!(join(&mut a, "Zeta").await, json!(true));
    assert_eq!(list(&mut a).await, json!(["Zeta", "lobby", "zeta"]));
    // Ids that are not connected: no rooms.
    assert_eq!(op(&mut a, json!({"op": "of", "id": 999_999})).await, json!([]));
    assert_eq!(op(&mut a, json!({"op": "of", "id": -1})).await, json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_any_client_by_id() {
    let server = server().await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    let ib = id_of(&mut b).await;

    assert_eq!(op(&mut a, json!({"op": "join", "id": ib, "room": "team"})).await, json!(true));
    assert_eq!(op(&mut a, json!({"op": "join", "id": ib, "room": "team"})).await, json!(false));
    assert_eq!(members(&mut a, "team").await, json!([ib]), "b was put in, a was not");
    assert_eq!(op(&mut b, json!({"op": "of"})).await, json!(["team"]), "b sees itself in the room");
    assert_eq!(op(&mut a, json!({"op": "of"})).await, json!([]));
    assert_eq!(op(&mut a, json!({"op": "leave", "id": ib, "room": "team"})).await, json!(true));
    assert_eq!(op(&mut a, json!({"op": "leave", "id": ib, "room": "team"})).await, json!(false));
    assert_eq!(members(&mut a, "team").await, json!([]));
    // No such client: false, nothing created.
    assert_eq!(op(&mut a, json!({"op": "join", "id": 999_999, "room": "ghosts"})).await, json!(false));
    assert_eq!(op(&mut a, json!({"op": "leave", "id": 999_999, "room": "ghosts"})).await, json!(false));
    assert_eq!(list(&mut a).await, json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_a_room_one_is_not_in_is_false_and_no_error() {
    let server = server().await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    let ib = id_of(&mut b).await;
    assert_eq!(leave(&mut a, "never-existed").await, json!(false));
    assert_eq!(join(&mut b, "b-only").await, json!(true));
    assert_eq!(leave(&mut a, "b-only").await, json!(false), "a was never in it");
    assert_eq!(members(&mut a, "b-only").await, json!([ib]), "b is unaffected");
    // Caught or not, nothing was thrown: the answer is a plain result.
    let r = a.request("room", json!({"op": "leave", "room": "b-only", "trap": true})).await;
    assert_eq!((r.event.as_str(), &r.payload), ("room", &json!({"result": false})), "{r:?}");
    a.expect_silence(SILENCE).await;
    server.stop().await;
}

// ------------------------------------------------------------ delivery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_delivery_reaches_members_only_across_three_clients() {
    let server = server().await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    let mut c = server.ready_client().await;
    assert_eq!(join(&mut a, "r").await, json!(true));
    assert_eq!(join(&mut b, "r").await, json!(true));
    assert_eq!(join(&mut c, "elsewhere").await, json!(true));

    // rooms::send from a: b only (the sender is skipped), type BROADCAST.
    let sent =
        op(&mut a, json!({"op": "send", "room": "r", "reply": {"event": "chat", "payload": {"text": "hi"}}})).await;
    assert_eq!(sent, json!(1), "queued for b only");
    let got = b.recv().await;
    assert_eq!(
        (got.event_type, got.event.as_str(), &got.payload),
        (EventType::BROADCAST, "chat", &json!({"text": "hi"}))
    );

    // A yielded reply with `room`: to the room's members, type BROADCAST,
    // event defaulting to the request's.
    let r = a.request("room", json!({"op": "yield", "reply": {"room": "r", "payload": {"n": 2}}})).await;
    assert_eq!((r.event.as_str(), &r.payload), ("room", &json!({"result": "yielded"})), "a gets only its own reply");
    let got = b.recv().await;
    assert_eq!((got.event_type, got.event.as_str(), &got.payload), (EventType::BROADCAST, "room", &json!({"n": 2})));

    // b to the room: a gets it.
    assert_eq!(op(&mut b, json!({"op": "send", "room": "r", "reply": {"payload": "from b"}})).await, json!(1));
    let got = a.recv().await;
    assert_eq!((got.event_type, got.event.as_str(), &got.payload), (EventType::BROADCAST, "room", &json!("from b")));

    // c, who is in another room, sends to r without being a member.
    assert_eq!(op(&mut c, json!({"op": "send", "room": "r", "reply": {"payload": "from c"}})).await, json!(2));
    for member in [&mut a, &mut b] {
        let got = member.recv().await;
        assert_eq!((got.event.as_str(), &got.payload), ("room", &json!("from c")));
    }
    // Only members ever got anything.
    c.expect_silence(SILENCE).await;
    a.expect_silence(SILENCE).await;
    b.expect_silence(SILENCE).await;

    // After b leaves, only a (the sender, skipped) is left: the send reaches nobody.
    assert_eq!(leave(&mut b, "r").await, json!(true));
    assert_eq!(op(&mut a, json!({"op": "send", "room": "r", "reply": {"payload": "x"}})).await, json!(0));
    b.expect_silence(SILENCE).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_sends_keep_an_explicit_type_and_event() {
    let server = server().await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    join(&mut a, "r").await;
    join(&mut b, "r").await;

    let reply = json!({"event": "custom/ev", "type": 6, "payload": [1, 2]});
    assert_eq!(op(&mut a, json!({"op": "send", "room": "r", "reply": reply})).await, json!(1));
    let got = b.recv().await;
    assert_eq!((got.event_type, got.event.as_str(), &got.payload), (EventType::CUSTOM_1, "custom/ev", &json!([1, 2])));

    let reply = json!({"room": "r", "event": "y/ev", "type": 0, "payload": "typed"});
    a.request("room", json!({"op": "yield", "reply": reply})).await;
    let got = b.recv().await;
    assert_eq!((got.event_type, got.event.as_str(), &got.payload), (EventType::MESSAGE, "y/ev", &json!("typed")));
    a.expect_silence(SILENCE).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_is_included_when_exclude_sender_on_broadcast_is_off() {
    let server = start_with_plugs(PLUGS, |s| s.exclude_sender_on_broadcast = false).await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    let mut c = server.ready_client().await;
    join(&mut a, "r").await;
    join(&mut b, "r").await;

    let r = a.request("room", json!({"op": "send", "room": "r", "reply": {"payload": "all of us"}})).await;
    // a gets the room message and its own answer; their order is the plug's.
    let (first, second) = (r, a.recv().await);
    assert_eq!((first.event_type, &first.payload), (EventType::BROADCAST, &json!("all of us")), "{first:?}");
    assert_eq!(second.payload, json!({"result": 2}), "queued for both members: {second:?}");
    let got = b.recv().await;
    assert_eq!((got.event_type, &got.payload), (EventType::BROADCAST, &json!("all of us")));

    a.send("room", json!({"op": "yield", "reply": {"room": "r", "payload": "yielded to r"}})).await;
    let got = a.recv().await;
    assert_eq!(
        (got.event_type, got.event.as_str(), &got.payload),
        (EventType::BROADCAST, "room", &json!("yielded to r"))
    );
    assert_eq!(a.recv().await.payload, json!({"result": "yielded"}));
    assert_eq!(b.recv().await.payload, json!("yielded to r"));
    c.expect_silence(SILENCE).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_an_empty_room_reaches_nobody_and_answers_zero() {
    let server = server().await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    assert_eq!(op(&mut a, json!({"op": "send", "room": "empty", "reply": {"payload": 1}})).await, json!(0));
    // A room whose only member is the sender, who is skipped: 0 as well.
    join(&mut a, "solo").await;
    assert_eq!(op(&mut a, json!({"op": "send", "room": "solo", "reply": {"payload": 1}})).await, json!(0));
    a.request("room", json!({"op": "yield", "reply": {"room": "empty", "payload": 1}})).await;
    a.expect_silence(SILENCE).await;
    b.expect_silence(SILENCE).await;
    assert_eq!(list(&mut b).await, json!(["solo"]), "sending created no room");
    server.stop().await;
}

// ------------------------------------------------------------ presence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_joins_leaves_and_disconnects() {
    let server = server().await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    let mut c = server.ready_client().await;
    let (ia, ib, ic) = (id_of(&mut a).await, id_of(&mut b).await, id_of(&mut c).await);
    let entry = |id: i64| json!({"client": id, "user": null});
    let presence = json!({"op": "presence", "room": "p"});

    assert_eq!(op(&mut a, presence.clone()).await, json!([]));
    join(&mut c, "p").await;
    join(&mut a, "p").await;
    join(&mut b, "p").await;
    assert_eq!(op(&mut a, presence.clone()).await, json!([entry(ia), entry(ib), entry(ic)]), "by id");

    leave(&mut b, "p").await;
    assert_eq!(op(&mut a, presence.clone()).await, json!([entry(ia), entry(ic)]));

    c.close().await;
    let expected = json!([entry(ia)]);
    let got = until(&mut a, presence.clone(), |v| *v == expected).await;
    assert_eq!(got, expected, "a disconnected client leaves the room");
    assert_eq!(members(&mut a, "p").await, json!([ia]));

    // b is still connected, elsewhere; a leaving empties the room.
    leave(&mut a, "p").await;
    assert_eq!(op(&mut b, presence.clone()).await, json!([]));
    assert_eq!(list(&mut b).await, json!([]));
    server.stop().await;
}

// ------------------------------------------------------------ INIT hooks

/// on_join / on_leave record `join ROOM ID` / `leave ROOM ID` in the store
/// and count leaves; on_disconnect records what it still sees.
const HOOKS: &str = r#"
fn INIT(server) {
    server.on_join(|room, id| { store::push("events", `join ${room} ${id}`, 100000); });
    server.on_leave(|room, id| {
        store::push("events", `leave ${room} ${id}`, 100000);
        store::push("left_rooms", room, 100000);
        store::incr("left");
    });
    server.on_disconnect(|id| {
        store::set(`gone:${id}`, #{
            of: rooms::of(id),
            of_sender: rooms::of(),
            name: conn::get("name"),
            members_r0: rooms::members("r0"),
        });
    });
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_join_and_on_leave_fire_with_the_room_and_the_client_id() {
    let (server, _init) = start_with_init(HOOKS, |_| {}).await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    let (ia, ib) = (id_of(&mut a).await, id_of(&mut b).await);

    join(&mut a, "x").await;
    join(&mut a, "x").await; // already in: no event
    leave(&mut a, "x").await;
    leave(&mut a, "x").await; // not in: no event
    op(&mut a, json!({"op": "join", "id": ib, "room": "y"})).await; // by id: about b
    b.close().await; // leaves y

    let mut expected =
        vec![format!("join x {ia}"), format!("leave x {ia}"), format!("join y {ib}"), format!("leave y {ib}")];
    expected.sort();
    let events = store_until(&mut a, "events", |v| v.as_array().is_some_and(|e| e.len() >= 4)).await;
    let mut events = strings(&events);
    events.sort();
    assert_eq!(events, expected);
    // Nothing more comes.
    tokio::time::sleep(SILENCE).await;
    let events = store_until(&mut a, "events", |_| true).await;
    assert_eq!(strings(&events).len(), 4, "one event per change: {events}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_from_100_rooms_leaves_them_all() {
    let (server, _init) = start_with_init(HOOKS, |s| s.limits.rooms_per_client = 100).await;
    let mut x = server.ready_client().await;
    let mut watcher = server.ready_client().await;
    let ix = id_of(&mut x).await;
    let iw = id_of(&mut watcher).await;
    assert_eq!(x.request("name", json!({"name": "x-state"})).await.payload, json!(true));
    assert_eq!(op(&mut x, json!({"op": "join_many", "prefix": "r", "n": 100})).await, json!(100));
    join(&mut watcher, "r7").await; // one room the watcher shares

    let mut names: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    names.sort();
    assert_eq!(strings(&list(&mut watcher).await), names);
    assert_eq!(strings(&op(&mut x, json!({"op": "of"})).await), names);
    assert_eq!(members(&mut watcher, "r42").await, json!([ix]));
    assert_eq!(members(&mut watcher, "r7").await, json!([ix, iw]));
    let joins = store_until(&mut watcher, "events", |v| v.as_array().is_some_and(|e| e.len() >= 101)).await;
    assert_eq!(strings(&joins).len(), 101, "on_join fired for each join");

    x.close().await;
    // Every room is cleaned: only the watcher's r7 is left.
    let got = until(&mut watcher, json!({"op": "list"}), |v| *v == json!(["r7"])).await;
    assert_eq!(got, json!(["r7"]), "the disconnected client's rooms are gone");
    assert_eq!(members(&mut watcher, "r7").await, json!([iw]));
    assert_eq!(members(&mut watcher, "r42").await, json!([]));

    // on_leave fired once for each of the 100 rooms.
    let left = store_until(&mut watcher, "left", |v| *v == json!(100)).await;
    assert_eq!(left, json!(100));
    let mut left_rooms = strings(&store_until(&mut watcher, "left_rooms", |_| true).await);
    left_rooms.sort();
    assert_eq!(left_rooms, names, "one on_leave per room, each with its name");
    let events = strings(&store_until(&mut watcher, "events", |_| true).await);
    assert_eq!(events.iter().filter(|e| e.starts_with("leave ") && e.ends_with(&format!(" {ix}"))).count(), 100);

    // on_disconnect still saw the client's rooms and conn:: state, while the
    // rooms' member lists no longer had it.
    let gone = store_until(&mut watcher, &format!("gone:{ix}"), |v| !v.is_null()).await;
    assert_eq!(strings(&gone["of"]), names, "rooms::of(id) in on_disconnect: {gone}");
    assert_eq!(strings(&gone["of_sender"]), names, "rooms::of() in on_disconnect: {gone}");
    assert_eq!(gone["name"], json!("x-state"), "conn:: state in on_disconnect: {gone}");
    assert_eq!(gone["members_r0"], json!([]), "{gone}");
    // Nothing else was sent to the watcher by the cleanup.
    watcher.expect_silence(SILENCE).await;
    server.stop().await;
}

/// on_join / on_leave append `+` / `-` to one list, in the order they run.
const ORDER: &str = r#"
fn INIT(server) {
    server.on_join(|room, id| { store::push("sequence", "+", 100000); });
    server.on_leave(|room, id| { store::push("sequence", "-", 100000); });
}
"#;

/// A client that joins and leaves one room over and over: its on_join and
/// on_leave callbacks must run in the order of the changes, or hooks that
/// track who is where (set on join, delete on leave) end up wrong — a
/// leave handled before its join leaves a client "in" a room it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_join_and_on_leave_run_in_the_order_of_the_changes() {
    let (server, _init) = start_with_init(ORDER, |_| {}).await;
    let mut a = server.ready_client().await;
    const PAIRS: usize = 200;
    let r = a.request("flip", json!({"room": "r", "n": PAIRS})).await;
    assert_eq!(r.payload, json!([]), "in no room after the last leave: {r:?}");
    let sequence = store_until(&mut a, "sequence", |v| v.as_array().is_some_and(|s| s.len() >= 2 * PAIRS)).await;
    let sequence: String = strings(&sequence).concat();
    assert_eq!(sequence.len(), 2 * PAIRS, "one callback per change: {sequence}");
    assert_eq!(sequence, "+-".repeat(PAIRS), "callbacks ran out of order (`-` is a leave, `+` a join)");
    server.stop().await;
}

/// INIT and timers have no sender: the sender forms throw `no_client`; the
/// id forms work (on_connect puts every client in `everyone`).
const NO_CLIENT: &str = r#"
fn INIT(server) {
    try { rooms::join("from-init"); store::set("init_join", "joined"); } catch (e) { store::set("init_join", e); }
    try { rooms::leave("from-init"); store::set("init_leave", "left"); } catch (e) { store::set("init_leave", e.error); }
    try { rooms::of(); store::set("init_of", "listed"); } catch (e) { store::set("init_of", e.error); }
    store::set("init_list", rooms::list());
    store::set("init_join_ghost", rooms::join(123456, "ghosts"));
    server.after(1, || {
        try { rooms::join("from-timer"); store::set("timer_join", "joined"); } catch (e) { store::set("timer_join", e.error); }
        store::set("timer_send", rooms::send("nobody-here", #{ payload: 1 }));
    });
    server.on_connect(|id| { rooms::join(id, "everyone"); });
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_forms_need_a_client_and_id_forms_work_in_init() {
    let (server, _init) = start_with_init(NO_CLIENT, |_| {}).await;
    let mut a = server.ready_client().await;
    let ia = id_of(&mut a).await;
    let init_join = store_until(&mut a, "init_join", |v| !v.is_null()).await;
    assert_eq!(init_join["error"], json!("no_client"), "{init_join}");
    assert!(init_join["message"].as_str().is_some_and(|m| m.contains("rooms::join")), "{init_join}");
    assert_eq!(store_until(&mut a, "init_leave", |v| !v.is_null()).await, json!("no_client"));
    assert_eq!(store_until(&mut a, "init_of", |v| !v.is_null()).await, json!("no_client"));
    assert_eq!(store_until(&mut a, "init_list", |v| !v.is_null()).await, json!([]));
    assert_eq!(store_until(&mut a, "init_join_ghost", |v| !v.is_null()).await, json!(false));
    assert_eq!(store_until(&mut a, "timer_join", |v| !v.is_null()).await, json!("no_client"));
    assert_eq!(store_until(&mut a, "timer_send", |v| !v.is_null()).await, json!(0));

    // on_connect put the client in `everyone` by id.
    let got = until(&mut a, json!({"op": "members", "room": "everyone"}), |v| *v == json!([ia])).await;
    assert_eq!(got, json!([ia]));
    let mut b = server.ready_client().await;
    let ib = id_of(&mut b).await;
    let got = until(&mut a, json!({"op": "members", "room": "everyone"}), |v| *v == json!([ia, ib])).await;
    assert_eq!(got, json!([ia, ib]));
    server.stop().await;
}

// ------------------------------------------------------------ bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_over_long_room_names_are_bad_argument() {
    let server = server().await;
    let mut a = server.ready_client().await;
    let long = "x".repeat(129);
    // 64 two-byte characters plus one: 65 characters, 129 bytes.
    let long_multibyte = format!("{}a", "é".repeat(64));
    for room in ["", long.as_str(), long_multibyte.as_str()] {
        for op_name in ["join", "leave", "members", "presence"] {
            let err = op_error(&mut a, json!({"op": op_name, "room": room})).await;
            assert_eq!(err["error"], json!("bad_argument"), "{op_name}({} bytes): {err}", room.len());
            assert!(err["message"].as_str().is_some_and(|m| m.contains("room")), "{err}");
        }
        let err = op_error(&mut a, json!({"op": "send", "room": room, "reply": {"payload": 1}})).await;
        assert_eq!(err["error"], json!("bad_argument"), "send: {err}");
        let err = op_error(&mut a, json!({"op": "join", "id": 1, "room": room})).await;
        assert_eq!(err["error"], json!("bad_argument"), "join by id: {err}");
        // Catchable, like every host error.
        let caught = op_caught(&mut a, json!({"op": "join", "room": room})).await;
        assert_eq!(caught["error"], json!("bad_argument"), "{caught}");
        // A yielded reply to such a room fails the plug with an ERROR.
        let r = a.request("room", json!({"op": "yield", "reply": {"room": room, "payload": 1}})).await;
        assert_eq!(r.event_type, EventType::ERROR, "{r:?}");
        assert!(r.payload["message"].as_str().is_some_and(|m| m.contains("room")), "{r:?}");
    }
    assert_eq!(list(&mut a).await, json!([]), "no room was created");

    // 128 bytes is fine, in ASCII or not.
    let max = "y".repeat(128);
    let max_multibyte = "é".repeat(64);
    assert_eq!(join(&mut a, &max).await, json!(true));
    assert_eq!(join(&mut a, &max_multibyte).await, json!(true));
    assert_eq!(join(&mut a, "z").await, json!(true), "one byte is fine");
    let mut expected = vec![max.clone(), max_multibyte.clone(), "z".to_owned()];
    expected.sort();
    assert_eq!(strings(&list(&mut a).await), expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_past_rooms_per_client_is_limit_exceeded() {
    let server = start_with_plugs(PLUGS, |s| s.limits.rooms_per_client = 3).await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    let ia = id_of(&mut a).await;
    for room in ["a", "b", "c"] {
        assert_eq!(join(&mut a, room).await, json!(true));
    }
    let caught = op_caught(&mut a, json!({"op": "join", "room": "d"})).await;
    assert_eq!(caught["error"], json!("limit_exceeded"), "{caught}");
    assert_eq!(caught["limit"], json!("limits.roomsPerClient"), "{caught}");
    let err = op_error(&mut a, json!({"op": "join", "room": "d"})).await;
    assert_eq!((&err["error"], &err["limit"]), (&json!("limit_exceeded"), &json!("limits.roomsPerClient")), "{err}");
    // By id, from another client: the same bound.
    let err = op_error(&mut b, json!({"op": "join", "id": ia, "room": "d"})).await;
    assert_eq!(err["error"], json!("limit_exceeded"), "{err}");
    assert_eq!(op(&mut a, json!({"op": "of"})).await, json!(["a", "b", "c"]), "the failed joins changed nothing");
    assert_eq!(members(&mut a, "d").await, json!([]));
    // Rejoining a room one is in at the limit is not a new room: false.
    assert_eq!(join(&mut a, "b").await, json!(false));
    // Room made after a leave.
    assert_eq!(leave(&mut a, "a").await, json!(true));
    assert_eq!(join(&mut a, "d").await, json!(true));
    assert_eq!(op(&mut a, json!({"op": "of"})).await, json!(["b", "c", "d"]));
    // Another client has its own allowance.
    for room in ["a", "b", "c"] {
        assert_eq!(join(&mut b, room).await, json!(true));
    }
    server.stop().await;
}

// ------------------------------------------------------------ the HTTP API

const KEY: &str = "room-api-key";

/// POST /api/publish with the key; the status and JSON body.
async fn publish(server: &TestServer, body: Value) -> (u16, Value) {
    // reqwest is built without a crypto provider; building a client wants one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().expect("http client");
    let resp = http
        .post(format!("http://{}/api/publish", server.running.addr))
        .header("authorization", format!("Bearer {KEY}"))
        .body(body.to_string())
        .send();
    let resp = tokio::time::timeout(REPLY_TIMEOUT, resp).await.expect("an answer in time").expect("sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_publish_to_a_room_reaches_only_its_members() {
    let server = start_with_plugs(PLUGS, |s| s.api.key = KEY.into()).await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    let mut c = server.ready_client().await;
    join(&mut a, "news").await;
    join(&mut b, "news").await;
    join(&mut c, "sports").await;

    let (status, body) =
        publish(&server, json!({"event": "headline", "payload": {"title": "rooms"}, "to": {"room": "news"}})).await;
    assert_eq!((status, &body), (200, &json!({"delivered": 2})));
    for member in [&mut a, &mut b] {
        let got = member.recv().await;
        assert_eq!(
            (got.event_type, got.event.as_str(), &got.payload),
            (EventType::BROADCAST, "headline", &json!({"title": "rooms"}))
        );
    }
    c.expect_silence(SILENCE).await;

    // An explicit type is kept.
    let (status, body) =
        publish(&server, json!({"event": "score", "payload": 3, "type": 7, "to": {"room": "sports"}})).await;
    assert_eq!((status, &body), (200, &json!({"delivered": 1})));
    let got = c.recv().await;
    assert_eq!((got.event_type, got.event.as_str(), &got.payload), (EventType::CUSTOM_2, "score", &json!(3)));

    // An empty room: delivered 0.
    let (status, body) = publish(&server, json!({"event": "e", "payload": 1, "to": {"room": "nobody"}})).await;
    assert_eq!((status, &body), (200, &json!({"delivered": 0})));
    // Bad room names: 400.
    for room in [String::new(), "x".repeat(129)] {
        let (status, body) = publish(&server, json!({"event": "e", "payload": 1, "to": {"room": room}})).await;
        assert_eq!((status, &body["error"]), (400, &json!("bad_request")), "{body}");
    }
    a.expect_silence(SILENCE).await;
    b.expect_silence(SILENCE).await;
    c.expect_silence(SILENCE).await;
    server.stop().await;
}
