//! The stdlib (`scripts-stdlib/`, imported as `std/NAME`) through real
//! plugs on a real server: every function documented in a module's header
//! and doc comments gives the documented result.
//!
//! Each fixture plug calls one module function chosen by the request:
//! `{"op": "slugify", "args": ["Hello, World!"]}` answers the result.

mod common;

use common::*;
use serde_json::{json, Value};
use ssocket::protocol::EventType;

/// A plug that imports `std/{module}` as `m` and dispatches `ops`
/// (`(name, arity)`) on `msg.payload.op` with `msg.payload.args`.
fn fixture(module: &str, ops: &[(&str, usize)]) -> String {
    let mut arms = String::new();
    for (op, arity) in ops {
        let args: Vec<String> = (0..*arity).map(|i| format!("a[{i}]")).collect();
        arms.push_str(&format!("        \"{op}\" => m::{op}({}),\n", args.join(", ")));
    }
    format!(
        "import \"std/{module}\" as m;\n\
         fn f(msg, yield_msg) {{\n\
         \x20   let a = msg.payload.args;\n\
         \x20   let r = switch msg.payload.op {{\n{arms}\
         \x20       _ => throw `unknown op ${{msg.payload.op}}`\n\
         \x20   }};\n\
         \x20   yield_msg(#{{ payload: r }});\n\
         }}\n"
    )
}

const TEXT_OPS: &[(&str, usize)] =
    &[("slugify", 1), ("truncate", 2), ("capitalize", 1), ("template", 2), ("pad_left", 3)];
const COLLECTIONS_OPS: &[(&str, usize)] = &[
    ("chunk", 2),
    ("uniq", 1),
    ("pluck", 2),
    ("group_by", 2),
    ("index_by", 2),
    ("count_by", 2),
    ("sort_by", 2),
    ("sum", 1),
    ("take", 2),
];
const TIME_OPS: &[(&str, usize)] = &[("now_ms", 0), ("elapsed_ms", 1), ("iso8601", 1)];
const VALIDATE_OPS: &[(&str, usize)] = &[("check", 2), ("errors", 2), ("require", 2), ("int_in", 4), ("describe", 1)];

async fn start() -> (TestServer, Client) {
    let text = fixture("text", TEXT_OPS);
    let collections = fixture("collections", COLLECTIONS_OPS);
    let time = fixture("time", TIME_OPS);
    let validate = fixture("validate", VALIDATE_OPS);
    let server = start_with_plugs(
        &[
            ("text.rhai", &text),
            ("collections.rhai", &collections),
            ("time.rhai", &time),
            ("validate.rhai", &validate),
            ("nope.rhai", "import \"std/nope\" as n;\nfn f(msg, yield_msg) { yield_msg(#{ payload: 1 }); }\n"),
            // Every documented usage line of the headers, as written.
            (
                "header_examples.rhai",
                r#"import "std/collections" as c;
import "std/text" as t;
import "std/time" as time;
import "std/validate" as v;
fn f(msg, yield_msg) {
    let users = [#{id: 1, name: "ada", room: "lobby"}, #{id: 2, name: "bob", room: "games"}];
    let at = time::now_ms();
    let p = v::check(#{ room: "r", user: #{ name: "n" } }, #{ room: "string", user: #{ name: "string" }, limit: "int?" });
    yield_msg(#{ payload: [
        c::chunk([1, 2, 3, 4, 5], 2), c::uniq([1, 2, 1, 3]), c::pluck(users, "name"),
        c::count_by(users, "room"), c::sum([1, 2.5]), c::take([1, 2, 3], 2),
        t::slugify("Hello, World!"), t::truncate("a long sentence", 6), t::capitalize("ada"),
        t::template("hi {name}, {n} new", #{name: "ada", n: 3}), t::pad_left("7", 3, "0"),
        time::iso8601(at).len(), time::elapsed_ms(at) >= 0, p.room
    ] });
}
"#,
            ),
        ],
        |_| {},
    )
    .await;
    let client = server.client().await;
    (server, client)
}

/// Call `module::op(args...)`; the reply's payload.
async fn call(c: &mut Client, module: &str, op: &str, args: Value) -> Reply {
    c.request(module, json!({"op": op, "args": args})).await
}

/// Call and expect a MESSAGE; its payload.
async fn ok(c: &mut Client, module: &str, op: &str, args: Value) -> Value {
    let r = call(c, module, op, args.clone()).await;
    assert_eq!(r.event_type, EventType::MESSAGE, "{module}::{op}({args}) answered {r:?}");
    r.payload
}

/// Call and expect an ERROR; its message.
async fn fails(c: &mut Client, module: &str, op: &str, args: Value) -> String {
    let r = call(c, module, op, args.clone()).await;
    assert_eq!(r.event_type, EventType::ERROR, "{module}::{op}({args}) should fail, answered {r:?}");
    assert_eq!(r.payload["error"], "script_error", "{r:?}");
    assert_eq!(r.payload["plug"], module, "the ERROR names the plug: {r:?}");
    r.payload["message"].as_str().expect("a message").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_examples_run_as_written() {
    let (server, mut c) = start().await;
    let r = c.request("header_examples", json!({})).await;
    assert_eq!(r.event_type, EventType::MESSAGE, "{r:?}");
    assert_eq!(
        r.payload,
        json!([
            [[1, 2], [3, 4], [5]],
            [1, 2, 3],
            ["ada", "bob"],
            {"lobby": 1, "games": 1},
            3.5,
            [1, 2],
            "hello-world",
            "a lon…",
            "Ada",
            "hi ada, 3 new",
            "007",
            24,
            true,
            "r"
        ])
    );
    c.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text() {
    let (server, mut client) = start().await;
    let c = &mut client;
    assert_eq!(ok(c, "text", "slugify", json!(["Hello, World!"])).await, json!("hello-world"));
    assert_eq!(ok(c, "text", "slugify", json!(["  --Rust 2024:  Edition!! "])).await, json!("rust-2024-edition"));
    assert_eq!(ok(c, "text", "slugify", json!(["Ünïcode café"])).await, json!("n-code-caf"));
    assert_eq!(ok(c, "text", "slugify", json!([""])).await, json!(""));

    assert_eq!(ok(c, "text", "truncate", json!(["a long sentence", 6])).await, json!("a lon…"));
    assert_eq!(ok(c, "text", "truncate", json!(["short", 10])).await, json!("short"));
    assert_eq!(ok(c, "text", "truncate", json!(["exact", 5])).await, json!("exact"));
    assert_eq!(ok(c, "text", "truncate", json!(["héllo wörld", 4])).await, json!("hél…"));
    assert_eq!(ok(c, "text", "truncate", json!(["abc", 1])).await, json!("…"));
    assert_eq!(ok(c, "text", "truncate", json!(["abc", 0])).await, json!(""));

    assert_eq!(ok(c, "text", "capitalize", json!(["ada"])).await, json!("Ada"));
    assert_eq!(ok(c, "text", "capitalize", json!(["élan vital"])).await, json!("Élan vital"));
    assert_eq!(ok(c, "text", "capitalize", json!([""])).await, json!(""));

    assert_eq!(
        ok(c, "text", "template", json!(["hi {name}, {n} new", {"name": "ada", "n": 3}])).await,
        json!("hi ada, 3 new")
    );
    assert_eq!(
        ok(c, "text", "template", json!(["{a}{a} {unknown}", {"a": "x"}])).await,
        json!("xx {unknown}"),
        "every occurrence replaced, unknown keys left as is"
    );

    assert_eq!(ok(c, "text", "pad_left", json!(["7", 3, "0"])).await, json!("007"));
    assert_eq!(ok(c, "text", "pad_left", json!([42, 5, " "])).await, json!("   42"));
    assert_eq!(ok(c, "text", "pad_left", json!(["1234", 3, "0"])).await, json!("1234"));
    assert_eq!(ok(c, "text", "pad_left", json!(["é", 2, "·"])).await, json!("·é"), "width counts characters");
    client.close().await;
    server.stop().await;
}

fn users() -> Value {
    json!([
        {"id": 1, "name": "ada", "room": "lobby", "age": 36},
        {"id": 2, "name": "bob", "room": "games", "age": 25},
        {"id": 3, "name": "cy", "room": "lobby", "age": 30.5},
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections() {
    let (server, mut client) = start().await;
    let c = &mut client;
    let u = users();
    assert_eq!(ok(c, "collections", "chunk", json!([[1, 2, 3, 4, 5], 2])).await, json!([[1, 2], [3, 4], [5]]));
    assert_eq!(ok(c, "collections", "chunk", json!([[1, 2], 5])).await, json!([[1, 2]]));
    assert_eq!(ok(c, "collections", "chunk", json!([[], 3])).await, json!([]));
    let m = fails(c, "collections", "chunk", json!([[1], 0])).await;
    assert!(m.contains("chunk size must be at least 1"), "{m}");

    assert_eq!(ok(c, "collections", "uniq", json!([[1, 2, 1, 3]])).await, json!([1, 2, 3]));
    assert_eq!(ok(c, "collections", "uniq", json!([["a", "b", "a"]])).await, json!(["a", "b"]));

    assert_eq!(ok(c, "collections", "pluck", json!([u, "name"])).await, json!(["ada", "bob", "cy"]));
    assert_eq!(ok(c, "collections", "pluck", json!([u, "missing"])).await, json!([null, null, null]));

    assert_eq!(
        ok(c, "collections", "group_by", json!([u, "room"])).await,
        json!({"lobby": [u[0], u[2]], "games": [u[1]]})
    );
    assert_eq!(ok(c, "collections", "index_by", json!([u, "id"])).await, json!({"1": u[0], "2": u[1], "3": u[2]}));
    assert_eq!(
        ok(c, "collections", "index_by", json!([[{"k": "a", "v": 1}, {"k": "a", "v": 2}], "k"])).await,
        json!({"a": {"k": "a", "v": 2}}),
        "a later item with the same key wins"
    );
    assert_eq!(ok(c, "collections", "count_by", json!([u, "room"])).await, json!({"lobby": 2, "games": 1}));

    assert_eq!(ok(c, "collections", "sort_by", json!([u, "age"])).await, json!([u[1], u[2], u[0]]));
    assert_eq!(ok(c, "collections", "sort_by", json!([u, "name"])).await, json!([u[0], u[1], u[2]]));

    assert_eq!(ok(c, "collections", "sum", json!([[1, 2.5]])).await, json!(3.5));
    assert_eq!(ok(c, "collections", "sum", json!([[1, 2, 3]])).await, json!(6));
    assert_eq!(ok(c, "collections", "sum", json!([[]])).await, json!(0));

    assert_eq!(ok(c, "collections", "take", json!([[1, 2, 3], 2])).await, json!([1, 2]));
    assert_eq!(ok(c, "collections", "take", json!([[1, 2, 3], 9])).await, json!([1, 2, 3]));
    assert_eq!(ok(c, "collections", "take", json!([[1, 2, 3], 0])).await, json!([]));
    assert_eq!(ok(c, "collections", "take", json!([[1, 2, 3], -1])).await, json!([]));
    client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_by_returns_a_copy() {
    let src = r#"import "std/collections" as c;
fn f(msg, yield_msg) {
    let arr = [#{n: 3}, #{n: 1}, #{n: 2}];
    let sorted = c::sort_by(arr, "n");
    yield_msg(#{ payload: [arr, sorted] });
}
"#;
    let server = start_with_plugs(&[("copy.rhai", src)], |_| {}).await;
    let mut c = server.client().await;
    let r = c.request("copy", json!({})).await;
    assert_eq!(r.payload, json!([[{"n": 3}, {"n": 1}, {"n": 2}], [{"n": 1}, {"n": 2}, {"n": 3}]]), "{r:?}");
    c.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time() {
    let (server, mut client) = start().await;
    let c = &mut client;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let got = ok(c, "time", "now_ms", json!([])).await.as_i64().expect("an integer");
    assert!((got - now).abs() < 5_000, "now_ms {got} vs {now}");
    let elapsed = ok(c, "time", "elapsed_ms", json!([now - 1_000])).await.as_i64().expect("an integer");
    assert!((1_000..10_000).contains(&elapsed), "elapsed_ms {elapsed}");

    for (ms, iso) in [
        (0_i64, "1970-01-01T00:00:00.000Z"),
        (1_700_000_000_000, "2023-11-14T22:13:20.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
        (1_234_567_890_123, "2009-02-13T23:31:30.123Z"),
        (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
    ] {
        assert_eq!(ok(c, "time", "iso8601", json!([ms])).await, json!(iso), "iso8601({ms})");
    }
    let m = fails(c, "time", "iso8601", json!([-1])).await;
    assert!(m.contains("iso8601 needs milliseconds since 1970"), "{m}");
    client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate() {
    let (server, mut client) = start().await;
    let c = &mut client;
    let schema = json!({"name": "string", "age": "int", "limit": "int?", "user": {"nick": "string"}});
    let good = json!({"name": "ada", "age": 36, "user": {"nick": "a"}, "extra": true});
    assert_eq!(ok(c, "validate", "check", json!([good, schema])).await, good, "check returns the payload");

    // The documented failure reaches the client as an ERROR naming the plug.
    let m = fails(c, "validate", "check", json!([{"name": "ada", "age": "36", "user": {"nick": "a"}}, schema])).await;
    assert!(m.contains("payload.age must be an int, got string"), "{m}");
    assert!(!m.contains("Runtime error") && !m.contains("in call to function"), "the thrown text, unwrapped: {m}");
    assert!(m.contains("validate"), "names the plug: {m}");
    let m = fails(c, "validate", "check", json!([{"name": "ada", "age": 1, "user": {"nick": 5}}, schema])).await;
    assert!(m.contains("payload.user.nick must be a string, got int"), "{m}");
    let m = fails(c, "validate", "check", json!([{"age": 1, "user": {"nick": "a"}}, schema])).await;
    assert!(m.contains("payload.name is required"), "{m}");
    let m = fails(c, "validate", "check", json!([{"name": "a", "age": 1}, schema])).await;
    assert!(m.contains("payload.user is required"), "{m}");
    let m = fails(c, "validate", "check", json!([5, schema])).await;
    assert!(m.contains("payload must be a map, got int"), "{m}");
    let m = fails(c, "validate", "check", json!([{"x": 1}, {"x": "strnig"}])).await;
    assert!(m.contains("schema has unknown type \"strnig\""), "{m}");

    // Optional fields may be missing or null; a wrong type still fails.
    let with_null = json!({"name": "a", "age": 1, "limit": null, "user": {"nick": "a"}});
    assert_eq!(ok(c, "validate", "check", json!([with_null, schema])).await, with_null);
    let m =
        fails(c, "validate", "check", json!([{"name": "a", "age": 1, "limit": "x", "user": {"nick": "a"}}, schema]))
            .await;
    assert!(m.contains("payload.limit must be an int, got string"), "{m}");

    // Every schema word.
    let all = json!({"s": "string", "i": "int", "f": "float", "n": "number", "n2": "number", "b": "bool",
                     "m": "map", "a": "array", "z": "null", "y": "any"});
    let fine =
        json!({"s": "x", "i": 1, "f": 1.5, "n": 2, "n2": 2.5, "b": false, "m": {}, "a": [], "z": null, "y": [1]});
    assert_eq!(ok(c, "validate", "errors", json!([fine, all])).await, json!([]));
    let all_wrong = json!({"s": 1, "i": 1.5, "f": 1, "n": "1", "n2": true, "b": 0, "m": [], "a": {}, "y": null});
    assert_eq!(
        ok(c, "validate", "errors", json!([all_wrong, all])).await,
        json!([
            "payload.a must be an array, got map",
            "payload.b must be a bool, got int",
            "payload.f must be a float, got int",
            "payload.i must be an int, got float",
            "payload.m must be a map, got array",
            "payload.n must be a number, got string",
            "payload.n2 must be a number, got bool",
            "payload.s must be a string, got int",
        ]),
        "errors lists every problem (maps iterate in key order)"
    );

    assert_eq!(ok(c, "validate", "require", json!([{"room": "r"}, "room"])).await, json!("r"));
    for payload in [json!({}), json!({"room": null}), json!([1])] {
        let m = fails(c, "validate", "require", json!([payload, "room"])).await;
        assert!(m.contains("payload needs field `room`"), "{m}");
    }

    assert_eq!(ok(c, "validate", "int_in", json!([5, 1, 10, "limit"])).await, json!(5));
    assert_eq!(ok(c, "validate", "int_in", json!([10, 1, 10, "limit"])).await, json!(10));
    let m = fails(c, "validate", "int_in", json!([11, 1, 10, "limit"])).await;
    assert!(m.contains("limit must be an integer from 1 to 10, got 11"), "{m}");
    let m = fails(c, "validate", "int_in", json!(["5", 1, 10, "limit"])).await;
    assert!(m.contains("limit must be an integer from 1 to 10, got string"), "{m}");

    for (value, name) in [
        (json!(1), "int"),
        (json!(1.5), "float"),
        (json!("s"), "string"),
        (json!(true), "bool"),
        (json!({}), "map"),
        (json!([]), "array"),
        (json!(null), "null"),
    ] {
        assert_eq!(ok(c, "validate", "describe", json!([value])).await, json!(name), "describe({value})");
    }
    client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stdlib_module_is_a_compile_error_listing_the_modules() {
    let (server, mut c) = start().await;
    let r = c.request("nope", json!({})).await;
    assert_eq!(r.event_type, EventType::ERROR, "{r:?}");
    assert_eq!(r.payload["error"], "compile_error", "{r:?}");
    assert_eq!((r.payload["plug"].as_str(), r.payload["line"].as_u64()), (Some("nope"), Some(1)), "{r:?}");
    let m = r.payload["message"].as_str().unwrap();
    assert!(m.contains("std/nope"), "{m}");
    for name in ["std/collections", "std/text", "std/time", "std/validate"] {
        assert!(m.contains(name), "lists {name}: {m}");
    }
    c.close().await;
    server.stop().await;
}
