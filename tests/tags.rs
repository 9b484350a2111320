//! Request tags on the wire (SPEC 10.3, issue 13): a client sends event
//! `name#tag`; plug `name` runs, every reply to the sender whose event the
//! plug did not set carries `name#tag` (ERROR and NOT_FOUND too), and an
//! END message (type 11, event `name#tag`, payload `{}`) follows the last
//! of them. Replies to others carry the untagged name. Bad tags are
//! `bad_frame` ERRORs; files whose names contain `#` are not plugs.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use ssocket::protocol::{decode, encode_parts, sync, EventType};

/// How long "nothing (more) arrives" checks wait.
const SILENCE: Duration = Duration::from_millis(300);

const PLUGS: &[(&str, &str)] = &[
    ("echo.rhai", "fn echo(msg, yield_msg) { yield_msg(#{ payload: msg.payload }); }"),
    (
        "info.rhai",
        r#"fn info(msg, yield_msg) {
            yield_msg(#{ payload: #{ event: msg.event, tag: msg.tag, has_tag: "tag" in msg, type: msg.type } });
        }"#,
    ),
    (
        "multi.rhai",
        "fn multi(msg, yield_msg) { for i in 0..msg.payload.count { yield_msg(#{ payload: #{ n: i } }); } }",
    ),
    ("quiet.rhai", "fn quiet(msg, yield_msg) { let x = 1; }"),
    (
        "two.rhai",
        r#"fn a_first(msg, yield_msg) { yield_msg(#{ payload: "first handler" }); }
           fn b_second(msg, yield_msg) { yield_msg(#{ payload: "second handler" }); }"#,
    ),
    ("fail.rhai", r#"fn fail(msg, yield_msg) { yield_msg(#{ payload: "before" }); throw "boom"; }"#),
    ("fail_code.rhai", r#"fn fail_code(msg, yield_msg) { throw #{ error: "my_code", message: "custom" }; }"#),
    ("broken.rhai", "fn broken(msg, yield_msg) { let x = ; }"),
    ("forge_end.rhai", "fn forge_end(msg, yield_msg) { yield_msg(#{ type: 11, payload: #{} }); }"),
    (
        "named.rhai",
        r#"fn named(msg, yield_msg) {
            yield_msg(#{ event: "custom/event", payload: 1 });
            yield_msg(#{ payload: 2 });
            yield_msg(#{ event: "custom/event", type: EventType::CUSTOM_3, payload: 3 });
        }"#,
    ),
    ("join.rhai", "fn join(msg, yield_msg) { rooms::join(msg.payload.room); yield_msg(#{ payload: true }); }"),
    ("whoami.rhai", "fn whoami(msg, yield_msg) { yield_msg(#{ payload: msg.client }); }"),
    (
        "fanout.rhai",
        r#"fn fanout(msg, yield_msg) {
            let p = msg.payload;
            broadcast(#{ payload: "broadcast" });
            yield_msg(#{ type: EventType::BROADCAST, payload: "yield broadcast" });
            rooms::send(p.room, #{ payload: "rooms send" });
            yield_msg(#{ room: p.room, payload: "yield room" });
            send_to(p.target, #{ payload: "send_to" });
            yield_msg(#{ payload: "to me" });
        }"#,
    ),
    (
        "slow.rhai",
        r#"fn slow(msg, yield_msg) {
            let p = msg.payload;
            sleep(p.ms);
            yield_msg(#{ payload: #{ i: p.i, part: 1 } });
            yield_msg(#{ payload: #{ i: p.i, part: 2 } });
        }"#,
    ),
    (
        "sync.rhai",
        r#"fn stream_state(msg, yield_msg) {
            let state = #{ n: 0, items: [] };
            for i in 0..40 { state.items.push(`item number ${i}`); }
            yield_msg(#{ type: EventType::SYNC, payload: state });
            state.n = 1;
            state.items[3] = "changed";
            yield_msg(#{ type: EventType::SYNC, payload: state });
        }"#,
    ),
    ("test/sub.rhai", r#"fn sub(msg, yield_msg) { yield_msg(#{ payload: "sub" }); }"#),
    ("hash.rhai", r#"fn hash(msg, yield_msg) { yield_msg(#{ payload: "plain" }); }"#),
    ("hash#x.rhai", r#"fn hashx(msg, yield_msg) { yield_msg(#{ payload: "from the file with a hash" }); }"#),
    ("dir#x/inner.rhai", r#"fn inner(msg, yield_msg) { yield_msg(#{ payload: "inner" }); }"#),
];

async fn server() -> TestServer {
    start_with_plugs(PLUGS, |_| {}).await
}

/// Assert the next message is `(type, event, payload)`.
#[track_caller]
fn check(r: &Reply, t: EventType, event: &str, payload: &Value) {
    assert_eq!((r.event_type, r.event.as_str(), &r.payload), (t, event, payload), "{r:?}");
}

/// Assert the next message is the END of `event`.
async fn expect_end(c: &mut Client, event: &str) {
    let r = c.recv().await;
    check(&r, EventType::END, event, &json!({}));
}

/// Send a raw frame with `event` (any bytes the format holds) and `{}`.
async fn send_event(c: &mut Client, event: &str) {
    c.send_raw(encode_parts(EventType::MESSAGE, event, b"{}").expect("encodable")).await;
}

// ------------------------------------------------------------ replies and END

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_replies_carry_the_tag_and_end_comes_after_the_last() {
    let server = server().await;
    let mut c = server.ready_client().await;
    c.send("multi#t1", json!({"count": 3})).await;
    for n in 0..3 {
        check(&c.recv().await, EventType::MESSAGE, "multi#t1", &json!({"n": n}));
    }
    expect_end(&mut c, "multi#t1").await;
    c.expect_silence(SILENCE).await;

    // A plug in a sub-folder, and tags at the edges of the allowed set.
    for event in ["test/sub#1", "test/sub#!", "test/sub#~", "test/sub#a-B_c.9/x:y"] {
        c.send(event, json!({})).await;
        check(&c.recv().await, EventType::MESSAGE, event, &json!("sub"));
        expect_end(&mut c, event).await;
    }
    // A plug that yields nothing: END alone.
    c.send("quiet#q", json!({})).await;
    expect_end(&mut c, "quiet#q").await;
    // Several handlers: one END, after both.
    c.send("two#2", json!({})).await;
    check(&c.recv().await, EventType::MESSAGE, "two#2", &json!("first handler"));
    check(&c.recv().await, EventType::MESSAGE, "two#2", &json!("second handler"));
    expect_end(&mut c, "two#2").await;
    c.expect_silence(SILENCE).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_requests_get_no_end() {
    let server = server().await;
    let mut c = server.ready_client().await;
    c.send("multi", json!({"count": 2})).await;
    check(&c.recv().await, EventType::MESSAGE, "multi", &json!({"n": 0}));
    check(&c.recv().await, EventType::MESSAGE, "multi", &json!({"n": 1}));
    c.send("quiet", json!({})).await;
    c.send("fail", json!({})).await;
    check(&c.recv().await, EventType::MESSAGE, "fail", &json!("before"));
    assert_eq!(c.recv().await.event_type, EventType::ERROR);
    c.send("nope", json!({})).await;
    check(&c.recv().await, EventType::NOT_FOUND, "nope", &json!({}));
    c.expect_silence(SILENCE).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugs_see_the_event_without_its_tag_and_the_tag_apart() {
    let server = server().await;
    let mut c = server.ready_client().await;
    c.send_typed(EventType::CUSTOM_2, "info#abc-123", json!({})).await;
    let r = c.recv().await;
    check(
        &r,
        EventType::MESSAGE,
        "info#abc-123",
        &json!({"event": "info", "tag": "abc-123", "has_tag": true, "type": 7}),
    );
    expect_end(&mut c, "info#abc-123").await;
    let r = c.request("info", json!({})).await;
    check(&r, EventType::MESSAGE, "info", &json!({"event": "info", "tag": null, "has_tag": false, "type": 0}));
    c.expect_silence(SILENCE).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_follows_an_error_a_not_found_and_a_compile_error() {
    let server = server().await;
    let mut c = server.ready_client().await;

    c.send("fail#e1", json!({})).await;
    check(&c.recv().await, EventType::MESSAGE, "fail#e1", &json!("before"));
    let err = c.recv().await;
    assert_eq!((err.event_type, err.event.as_str()), (EventType::ERROR, "fail#e1"), "{err:?}");
    assert_eq!(err.payload["error"], json!("script_error"), "{err:?}");
    assert!(err.payload["message"].as_str().is_some_and(|m| m.contains("boom")), "{err:?}");
    expect_end(&mut c, "fail#e1").await;

    c.send("fail_code#e2", json!({})).await;
    let err = c.recv().await;
    assert_eq!((err.event_type, err.event.as_str()), (EventType::ERROR, "fail_code#e2"), "{err:?}");
    assert_eq!(err.payload["error"], json!("my_code"), "{err:?}");
    expect_end(&mut c, "fail_code#e2").await;

    c.send("nope#n1", json!({})).await;
    check(&c.recv().await, EventType::NOT_FOUND, "nope#n1", &json!({}));
    expect_end(&mut c, "nope#n1").await;
    // No name at all before the tag: nothing to run, same answer.
    c.send("#only-a-tag", json!({})).await;
    check(&c.recv().await, EventType::NOT_FOUND, "#only-a-tag", &json!({}));
    expect_end(&mut c, "#only-a-tag").await;

    c.send("broken#c1", json!({})).await;
    let err = c.recv().await;
    assert_eq!((err.event_type, err.event.as_str()), (EventType::ERROR, "broken#c1"), "{err:?}");
    assert_eq!(err.payload["error"], json!("compile_error"), "{err:?}");
    expect_end(&mut c, "broken#c1").await;

    // A plug cannot forge an END: type 11 is the server's.
    c.send("forge_end#f", json!({})).await;
    let err = c.recv().await;
    assert_eq!((err.event_type, err.event.as_str()), (EventType::ERROR, "forge_end#f"), "{err:?}");
    assert_eq!(err.payload["error"], json!("script_error"), "{err:?}");
    expect_end(&mut c, "forge_end#f").await;
    c.expect_silence(SILENCE).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_follows_a_plug_stopped_by_the_time_limit() {
    let spin = ("spin.rhai", "fn spin(msg, yield_msg) { yield_msg(#{ payload: \"started\" }); loop { } }");
    let server = start_with_plugs(&[spin], |s| {
        s.limits.timeout_ms = 200;
        s.limits.max_operations = 0;
    })
    .await;
    let mut c = server.ready_client().await;
    c.send("spin#t", json!({})).await;
    check(&c.recv().await, EventType::MESSAGE, "spin#t", &json!("started"));
    let err = c.recv().await;
    assert_eq!((err.event_type, err.event.as_str()), (EventType::ERROR, "spin#t"), "{err:?}");
    assert_eq!((&err.payload["error"], &err.payload["limit"]), (&json!("limit_exceeded"), &json!("limits.timeoutMs")));
    expect_end(&mut c, "spin#t").await;
    c.expect_silence(SILENCE).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_with_an_explicit_event_keep_it() {
    let server = server().await;
    let mut c = server.ready_client().await;
    c.send("named#k", json!({})).await;
    check(&c.recv().await, EventType::MESSAGE, "custom/event", &json!(1));
    check(&c.recv().await, EventType::MESSAGE, "named#k", &json!(2));
    check(&c.recv().await, EventType::CUSTOM_3, "custom/event", &json!(3));
    expect_end(&mut c, "named#k").await;
    c.expect_silence(SILENCE).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_others_carry_the_untagged_name() {
    let server = server().await;
    let mut a = server.ready_client().await;
    let mut b = server.ready_client().await;
    let mut c = server.ready_client().await;
    let ib = b.request("whoami", json!({})).await.payload;
    assert_eq!(b.request("join", json!({"room": "r"})).await.payload, json!(true));

    a.send("fanout#t9", json!({"target": ib, "room": "r"})).await;
    check(&a.recv().await, EventType::MESSAGE, "fanout#t9", &json!("to me"));
    expect_end(&mut a, "fanout#t9").await;

    check(&b.recv().await, EventType::BROADCAST, "fanout", &json!("broadcast"));
    check(&b.recv().await, EventType::BROADCAST, "fanout", &json!("yield broadcast"));
    check(&b.recv().await, EventType::BROADCAST, "fanout", &json!("rooms send"));
    check(&b.recv().await, EventType::BROADCAST, "fanout", &json!("yield room"));
    check(&b.recv().await, EventType::MESSAGE, "fanout", &json!("send_to"));

    check(&c.recv().await, EventType::BROADCAST, "fanout", &json!("broadcast"));
    check(&c.recv().await, EventType::BROADCAST, "fanout", &json!("yield broadcast"));
    for client in [&mut a, &mut b, &mut c] {
        client.expect_silence(SILENCE).await;
    }
    server.stop().await;
}

// ------------------------------------------------------------ many in flight

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_tagged_requests_in_flight_each_get_their_own_replies_and_end() {
    let server = start_with_plugs(PLUGS, |s| {
        s.limits.max_in_flight_per_client = 128;
        s.limits.messages_per_second = 0;
        // Smaller plug-thread stacks for a hundred sleeping plugs.
        s.limits.max_array_size = 1000;
        s.limits.max_map_size = 1000;
    })
    .await;
    let mut c = server.ready_client().await;
    const N: usize = 100;
    for i in 0..N {
        // Varying sleeps, so requests finish in another order than sent.
        let ms = (i * 37) % 61;
        c.send(&format!("slow#r{i}"), json!({"i": i, "ms": ms})).await;
    }
    // Per tag, what arrived in order.
    let mut seen: HashMap<String, Vec<Reply>> = HashMap::new();
    let mut ends = 0;
    let mut order = Vec::new();
    while ends < N {
        let r = c.recv().await;
        let tag =
            r.event.strip_prefix("slow#").unwrap_or_else(|| panic!("an event of the slow plug: {r:?}")).to_owned();
        if r.event_type == EventType::END {
            ends += 1;
            order.push(tag.clone());
        }
        seen.entry(tag).or_default().push(r);
    }
    assert_eq!(seen.len(), N, "every request answered under its own tag: {:?}", seen.keys().collect::<Vec<_>>());
    for i in 0..N {
        let tag = format!("r{i}");
        let got = seen.get(&tag).unwrap_or_else(|| panic!("nothing for {tag}"));
        let event = format!("slow#{tag}");
        assert_eq!(got.len(), 3, "{tag}: two replies and an END, got {got:?}");
        check(&got[0], EventType::MESSAGE, &event, &json!({"i": i, "part": 1}));
        check(&got[1], EventType::MESSAGE, &event, &json!({"i": i, "part": 2}));
        check(&got[2], EventType::END, &event, &json!({}));
    }
    assert_eq!(order.len(), N);
    c.expect_silence(SILENCE).await;
    server.stop().await;
}

// ------------------------------------------------------------ bad tags

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tags_are_bad_frame_errors_and_run_nothing() {
    let server = server().await;
    let mut c = server.ready_client().await;
    let too_long = format!("echo#{}", "t".repeat(65));
    let bad = [
        ("empty", "echo#".to_owned()),
        ("65 bytes", too_long),
        ("a space", "echo#a b".to_owned()),
        ("a control character", "echo#a\u{7}".to_owned()),
        ("a newline", "echo#\n".to_owned()),
        ("DEL", "echo#\u{7f}".to_owned()),
        ("non-ASCII", "echo#caf\u{e9}".to_owned()),
        ("a second #", "echo#a#b".to_owned()),
        ("only #s", "echo##".to_owned()),
    ];
    for (what, event) in &bad {
        send_event(&mut c, event).await;
        let r = c.recv().await;
        assert_eq!(r.event_type, EventType::ERROR, "{what}: {r:?}");
        assert_eq!(r.payload["error"], json!("bad_frame"), "{what}: {r:?}");
        assert_eq!(r.event, *event, "{what}: the ERROR names the event as sent");
        assert!(r.payload["message"].as_str().is_some_and(|m| m.contains("tag")), "{what}: {r:?}");
    }
    // No END and no reply for any of them; the connection is still open.
    c.expect_silence(SILENCE).await;

    // 64 bytes is fine.
    let max = format!("echo#{}", "t".repeat(64));
    c.send(&max, json!({"ok": 64})).await;
    check(&c.recv().await, EventType::MESSAGE, &max, &json!({"ok": 64}));
    expect_end(&mut c, &max).await;
    c.expect_silence(SILENCE).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plug_files_whose_names_contain_a_hash_are_not_plugs() {
    let server = server().await;
    let names = server.running.app.plugs.registry().names();
    assert!(names.iter().any(|n| n == "hash"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains('#')), "no plug name has a `#`: {names:?}");

    let mut c = server.ready_client().await;
    // `hash#x` is plug `hash` with tag `x`, never the file `hash#x.rhai`.
    c.send("hash#x", json!({})).await;
    check(&c.recv().await, EventType::MESSAGE, "hash#x", &json!("plain"));
    expect_end(&mut c, "hash#x").await;
    // A folder with `#` in its name: `dir` is no plug, so NOT_FOUND.
    c.send("dir#x/inner", json!({})).await;
    check(&c.recv().await, EventType::NOT_FOUND, "dir#x/inner", &json!({}));
    expect_end(&mut c, "dir#x/inner").await;
    c.expect_silence(SILENCE).await;

    // The playground's plug list agrees.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().expect("http client");
    let resp = http.get(format!("http://{}/api/plugs", server.running.addr)).send();
    let resp = tokio::time::timeout(REPLY_TIMEOUT, resp).await.expect("in time").expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("a body");
    assert!(text.contains("\"hash\"") && !text.contains('#'), "{text}");
    server.stop().await;
}

/// Send `event` untagged until its answer is not NOT_FOUND (or is, when
/// `found` is false); the last answer.
async fn poll_plug(c: &mut Client, event: &str, found: bool) -> Reply {
    let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let r = c.request(event, json!({})).await;
        if (r.event_type != EventType::NOT_FOUND) == found || std::time::Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reload_never_makes_a_plug_of_a_file_with_a_hash() {
    let gone = ("gone.rhai", r#"fn gone(msg, yield_msg) { yield_msg(#{ payload: "gone plain" }); }"#);
    let server = start_with_plugs(&[gone], |_| {}).await;
    let dir = server.plugs_dir();
    let mut c = server.ready_client().await;
    check(&c.request("gone", json!({})).await, EventType::MESSAGE, "gone", &json!("gone plain"));

    // Renamed to a name with `#`: the plug is gone, and nothing took its place.
    std::fs::rename(dir.join("gone.rhai"), dir.join("gone#1.rhai")).expect("rename");
    let r = poll_plug(&mut c, "gone", false).await;
    check(&r, EventType::NOT_FOUND, "gone", &json!({}));
    c.send("gone#1", json!({})).await;
    check(&c.recv().await, EventType::NOT_FOUND, "gone#1", &json!({}));
    expect_end(&mut c, "gone#1").await;

    // New files: `fresh#x.rhai` is ignored, `fresh.rhai` is plug `fresh`,
    // and `fresh#x` runs it with tag `x`.
    write_plug(&dir, "fresh#x.rhai", r#"fn f(msg, yield_msg) { yield_msg(#{ payload: "from the hash file" }); }"#);
    write_plug(&dir, "fresh.rhai", r#"fn f(msg, yield_msg) { yield_msg(#{ payload: "fresh plain" }); }"#);
    let r = poll_plug(&mut c, "fresh", true).await;
    check(&r, EventType::MESSAGE, "fresh", &json!("fresh plain"));
    c.send("fresh#x", json!({})).await;
    check(&c.recv().await, EventType::MESSAGE, "fresh#x", &json!("fresh plain"));
    expect_end(&mut c, "fresh#x").await;
    let names = server.running.app.plugs.registry().names();
    assert_eq!(names, vec!["fresh".to_owned()], "only `fresh` is a plug");
    c.expect_silence(SILENCE).await;
    server.stop().await;
}

// ------------------------------------------------------------ SYNC

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_replies_of_a_tagged_request_diff_against_the_raw_request() {
    let server = server().await;
    let mut c = server.ready_client().await;
    let request = c.send("sync#s1", json!({"from": "the client"})).await;

    let items: Vec<String> = (0..40).map(|i| format!("item number {i}")).collect();
    let first = json!({"n": 0, "items": items});
    let mut changed = items.clone();
    changed[3] = "changed".into();
    let second = json!({"n": 1, "items": changed});

    let mut held = request;
    for expected in [&first, &second] {
        let r = c.recv().await;
        assert_eq!((r.event_type, r.event.as_str()), (EventType::SYNC, "sync#s1"), "{r:?}");
        let patch = decode(&r.raw).expect("a well-formed message").payload;
        held = sync::apply(&held, &patch).unwrap_or_else(|e| panic!("the patch applies: {e:?}"));
        let full = decode(&held).expect("the patched bytes are a message");
        assert_eq!((full.event_type, full.event.as_str()), (EventType::SYNC, "sync#s1"));
        let payload: Value = serde_json::from_str(&full.payload).expect("JSON");
        assert_eq!(&payload, expected);
    }
    expect_end(&mut c, "sync#s1").await;
    c.expect_silence(SILENCE).await;

    // The same for another tag on the same connection: its own base.
    let request = c.send("sync#other", json!({})).await;
    let r = c.recv().await;
    let patch = decode(&r.raw).expect("message").payload;
    let full = decode(&sync::apply(&request, &patch).expect("applies")).expect("message");
    assert_eq!(full.event, "sync#other");
    assert_eq!(serde_json::from_str::<Value>(&full.payload).expect("JSON"), first);
    let r = c.recv().await;
    assert_eq!(r.event_type, EventType::SYNC);
    expect_end(&mut c, "sync#other").await;
    server.stop().await;
}

// ------------------------------------------------------------ mixed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_and_untagged_requests_mix_on_one_connection() {
    let server = start_with_plugs(PLUGS, |s| s.limits.max_in_flight_per_client = 16).await;
    let mut c = server.ready_client().await;
    c.send("slow#late", json!({"i": 1, "ms": 200})).await;
    c.send("echo#now", json!("quick")).await;
    c.send("echo", json!("untagged")).await;
    let mut by_event: BTreeMap<String, Vec<Reply>> = BTreeMap::new();
    // slow#late: 2 + END; echo#now: 1 + END; echo: 1.
    for _ in 0..6 {
        let r = c.recv().await;
        by_event.entry(r.event.clone()).or_default().push(r);
    }
    let late = &by_event["slow#late"];
    assert_eq!(
        late.iter().map(|r| r.event_type).collect::<Vec<_>>(),
        [EventType::MESSAGE, EventType::MESSAGE, EventType::END]
    );
    let now = &by_event["echo#now"];
    assert_eq!((now[0].event_type, &now[0].payload), (EventType::MESSAGE, &json!("quick")));
    assert_eq!(now[1].event_type, EventType::END);
    let untagged = &by_event["echo"];
    assert_eq!((untagged.len(), &untagged[0].payload), (1, &json!("untagged")));
    assert_eq!(by_event.len(), 3, "{by_event:?}");
    c.expect_silence(SILENCE).await;
    server.stop().await;
}
