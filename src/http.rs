//! Plain HTTP on the WebSocket port (a GET that is not an upgrade): the
//! playground page at `/` (`/playground` with a `staticFolder`), the JS client module at `/ssocket.js`, a JSON
//! list of plugs at `/api/plugs`, counters at `/api/stats` and who is in
//! which room at `/api/rooms`. All are off
//! when `playground` is false, for production.

use std::time::UNIX_EPOCH;

use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

use crate::app::App;

/// The page: plain HTML and JS, no build step.
pub const PLAYGROUND_HTML: &str = include_str!("../clients/playground/index.html");
/// The client library, served as an ES module.
pub const CLIENT_JS: &str = include_str!("../clients/js/ssocket.js");

/// The routes: the playground's when it is on; `/ssocket.js` also for a
/// `staticFolder`'s pages.
pub fn routes(app: App) -> BoxedFilter<(Box<dyn Reply>,)> {
    let js = warp::path!("ssocket.js").and(warp::get()).map(|| {
        Box::new(warp::reply::with_header(CLIENT_JS, "content-type", "text/javascript; charset=utf-8"))
            as Box<dyn Reply>
    });
    if !app.settings.playground {
        if app.settings.static_folder.is_some() {
            return js.boxed();
        }
        return warp::any().and_then(|| async { Err::<Box<dyn Reply>, _>(warp::reject::not_found()) }).boxed();
    }
    // With a staticFolder, `/` is the app's own page and the playground
    // moves aside.
    let at = match app.settings.static_folder {
        Some(_) => warp::path("playground").and(warp::path::end()).boxed(),
        None => warp::path::end().boxed(),
    };
    let page = at.and(warp::get()).map(|| Box::new(warp::reply::html(PLAYGROUND_HTML)) as Box<dyn Reply>);
    let plugs_app = app.clone();
    let api = warp::path!("api" / "plugs")
        .and(warp::get())
        .map(move || Box::new(warp::reply::json(&plugs_json(&plugs_app))) as Box<dyn Reply>);
    let stats_app = app.clone();
    let stats = warp::path!("api" / "stats")
        .and(warp::get())
        .map(move || Box::new(warp::reply::json(&stats_json(&stats_app))) as Box<dyn Reply>);
    let rooms_app = app.clone();
    let rooms = warp::path!("api" / "rooms")
        .and(warp::get())
        .map(move || Box::new(warp::reply::json(&rooms_json(&rooms_app))) as Box<dyn Reply>);
    page.or(js).unify().or(api).unify().or(stats).unify().or(rooms).unify().boxed()
}

/// `{connections, inFlight, plugs, rssBytes, timers, timerTicksSkipped}`:
/// what the memory metrics log,
/// for tools (the soak test checks nothing is left running).
pub fn stats_json(app: &App) -> Value {
    json!({
        "connections": app.hub.len(),
        "inFlight": app.plugs.in_flight(),
        "plugs": app.plugs.registry().names().len(),
        "rssBytes": crate::metrics::rss_bytes(),
        "timers": app.timers.len(),
        "timerTicksSkipped": app.timers.skipped(),
    })
}

/// `{"rooms": [{room, members: [{client, user}]}]}`, rooms sorted, members
/// by id: the playground's "who is in which room" view.
pub fn rooms_json(app: &App) -> Value {
    let rooms: Vec<Value> = app
        .hub
        .rooms()
        .into_iter()
        .map(|room| {
            let members: Vec<Value> = app
                .hub
                .member_handles(&room)
                .into_iter()
                .map(|h| json!({ "client": h.id(), "user": serde_json::to_value(h.user()).unwrap_or(Value::Null) }))
                .collect();
            json!({ "room": room, "members": members })
        })
        .collect();
    json!({ "rooms": rooms })
}

/// `[{event, functions, file, loadedAt, error}]`: `loadedAt` in ms since
/// 1970 (null if not compiled yet), `error` the last compile error's ERROR
/// payload (null if none).
pub fn plugs_json(app: &App) -> Value {
    let folder = app.plugs.registry().folder().to_path_buf();
    let plugs: Vec<Value> = app
        .plugs
        .registry()
        .statuses()
        .into_iter()
        .map(|s| {
            let loaded_at = s.loaded_at.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_millis() as u64);
            let file = s.path.strip_prefix(&folder).unwrap_or(&s.path).display().to_string();
            json!({
                "event": s.name,
                "functions": s.handlers,
                "file": file,
                "loadedAt": loaded_at,
                "error": s.error.map(|e| e.to_reply()),
            })
        })
        .collect();
    Value::Array(plugs)
}
