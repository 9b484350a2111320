//! What operators and their tools ask a running server (SPEC 12):
//! `GET /metrics` (Prometheus), `GET /healthz` (the process answers) and
//! `GET /readyz` (send it traffic: 503 while starting, shutting down, or
//! with `cluster.redis` set and Redis unreachable). Always on, playground
//! or not.

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::app::App;

pub fn routes(app: App) -> BoxedFilter<(Box<dyn Reply>,)> {
    let scrape_app = app.clone();
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        let body = scrape_app.scrape();
        Box::new(warp::reply::with_header(body, "content-type", crate::metrics::CONTENT_TYPE)) as Box<dyn Reply>
    });
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| Box::new(warp::reply::json(&json!({ "status": "ok" }))) as Box<dyn Reply>);
    let ready = warp::path!("readyz").and(warp::get()).map(move || {
        let (status, body) = match app.readiness() {
            Ok(()) => (StatusCode::OK, json!({ "status": "ready" })),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "unavailable", "reason": why })),
        };
        Box::new(warp::reply::with_status(warp::reply::json(&body), status)) as Box<dyn Reply>
    });
    metrics.or(health).unify().or(ready).unify().boxed()
}
