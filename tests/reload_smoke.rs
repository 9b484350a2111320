mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_is_served() {
    let server = start_with_plugs(&[("v.rhai", "fn f(m, yield_msg) { yield_msg(#{payload: 1}) }")], |_| {}).await;
    let mut c = server.client().await;
    assert_eq!(c.request("v", json!({})).await.payload, json!(1));
    write_plug(&server.plugs_dir(), "v.rhai", "fn f(m, yield_msg) { yield_msg(#{payload: 2}) }");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.request("v", json!({})).await.payload, json!(2));
}
