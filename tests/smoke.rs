mod common;
use common::*;
use serde_json::json;
use ssocket::protocol::EventType;

#[tokio::test]
async fn echo_answers() {
    let server = start_examples().await;
    let mut c = server.client().await;
    let r = c.request("echo", json!({"hello": "world"})).await;
    assert_eq!((r.event_type, r.event.as_str(), r.payload), (EventType::MESSAGE, "echo", json!({"hello": "world"})));
    server.stop().await;
}
