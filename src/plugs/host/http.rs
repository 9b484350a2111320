//! `http::` (SPEC 9.3): calling other services from plugs, through
//! [`crate::egress`] (allowlist, limits). A request waits off the async
//! workers, ends early when the plug's client leaves, and counts against
//! the plug's `limits.timeoutMs`.
//!
//! ```rhai
//! let r = http::get("https://api.example.com/items?page=1");
//! let r = http::post("https://api.example.com/items", #{name: "x"}, #{headers: #{"x-token": "t"}});
//! let r = http::request(#{method: "PUT", url: "...", body: "text", timeout_ms: 2000});
//! // r.status, r.headers (lowercase names), r.body (text), r.json (parsed, or ())
//! ```

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, ImmutableString, Map, Module, NativeCallContext, Position};

use super::{host, host_error, invocation, HostResult};
use crate::egress::{Egress, EgressError, Request, Response};
use crate::plugs::values::{from_json, to_json};

/// The option names `http::request` and the `options` maps take.
const OPTIONS: &str = "method, url, headers, body, timeout_ms";

pub fn register(engine: &mut Engine, egress: Arc<Egress>) {
    let mut m = Module::new();
    let e = egress.clone();
    host("get").set_into_module(&mut m, move |ctx: NativeCallContext, url: ImmutableString| -> HostResult<Map> {
        let options = Map::from([("url".into(), url.into())]);
        send(&ctx, &e, "get", "GET", options)
    });
    let e = egress.clone();
    host("get").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, url: ImmutableString, mut options: Map| -> HostResult<Map> {
            options.insert("url".into(), url.into());
            send(&ctx, &e, "get", "GET", options)
        },
    );
    let e = egress.clone();
    host("post").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, url: ImmutableString, body: Dynamic| -> HostResult<Map> {
            let options = Map::from([("url".into(), url.into()), ("body".into(), body)]);
            send(&ctx, &e, "post", "POST", options)
        },
    );
    let e = egress.clone();
    host("post").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, url: ImmutableString, body: Dynamic, mut options: Map| -> HostResult<Map> {
            options.insert("url".into(), url.into());
            options.insert("body".into(), body);
            send(&ctx, &e, "post", "POST", options)
        },
    );
    let e = egress;
    host("request").set_into_module(&mut m, move |ctx: NativeCallContext, options: Map| -> HostResult<Map> {
        send(&ctx, &e, "request", "GET", options)
    });
    engine.register_static_module("http", m.into());
}

/// Build the request from `options`, send it from the current run, and
/// turn the response (or failure) into what the plug sees.
fn send(ctx: &NativeCallContext, egress: &Egress, op: &str, method: &str, options: Map) -> HostResult<Map> {
    let pos = ctx.call_position();
    let inv = invocation(ctx, &format!("http::{op}"))?;
    let req = request(op, method, options).map_err(|e| fail(op, &e, pos))?;
    match inv.wait(|cancel, deadline| egress.send(req, cancel, deadline)) {
        Ok(response) => Ok(response_map(response)),
        Err(EgressError::Stopped(_)) => Err(inv.stop_error()),
        Err(err) => Err(fail(op, &err, pos)),
    }
}

/// A catchable error. The `http_*` codes lead their message (SPEC 9.3: the
/// text starts with `http_denied`); an argument error names the function.
fn fail(op: &str, err: &EgressError, pos: Position) -> Box<rhai::EvalAltResult> {
    let message = match err {
        EgressError::BadRequest(_) => format!("http::{op}: {err}"),
        _ => format!("{err} (http::{op})"),
    };
    host_error(err.code(), &message, serde_json::json!({}), pos)
}

fn bad(message: String) -> EgressError {
    EgressError::BadRequest(message)
}

/// The request an options map describes.
fn request(op: &str, default_method: &str, options: Map) -> Result<Request, EgressError> {
    let mut req =
        Request { method: reqwest::Method::GET, url: String::new(), headers: Vec::new(), body: None, timeout: None };
    let mut method = default_method.to_owned();
    for (name, value) in options {
        match name.as_str() {
            "url" => req.url = string(&name, value)?,
            "method" => method = string(&name, value)?.to_ascii_uppercase(),
            "headers" => req.headers = headers(value)?,
            "body" => req.body = body(value)?,
            "timeout_ms" => req.timeout = Some(timeout(value)?),
            other => return Err(bad(format!("unknown option `{other}`; the options are {OPTIONS}"))),
        }
    }
    if req.url.is_empty() {
        return Err(bad(format!("http::{op} needs a `url`")));
    }
    req.method =
        reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| bad(format!("`{method}` is not an HTTP method")))?;
    Ok(req)
}

fn string(name: &str, value: Dynamic) -> Result<String, EgressError> {
    let type_name = value.type_name();
    value.into_string().map_err(|_| bad(format!("option `{name}` must be a string, not {type_name}")))
}

fn headers(value: Dynamic) -> Result<Vec<(String, String)>, EgressError> {
    let type_name = value.type_name();
    let map: Map = value.try_cast().ok_or_else(|| bad(format!("option `headers` must be a map, not {type_name}")))?;
    map.into_iter()
        .map(|(name, value)| {
            let value = if value.is_string() { value.into_string().unwrap_or_default() } else { value.to_string() };
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("`{name}` is not a valid header name")))?;
            reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| bad(format!("the value of header `{name}` is not a valid header value")))?;
            Ok((name.to_string(), value))
        })
        .collect()
}

/// A string is sent as it is; a blob as bytes; anything else as JSON.
fn body(value: Dynamic) -> Result<Option<(Vec<u8>, &'static str)>, EgressError> {
    if value.is_unit() {
        return Ok(None);
    }
    if value.is_string() {
        let text = value.into_string().unwrap_or_default();
        return Ok(Some((text.into_bytes(), "text/plain; charset=utf-8")));
    }
    if value.is_blob() {
        return Ok(Some((value.cast::<rhai::Blob>(), "application/octet-stream")));
    }
    let json = to_json(&value).map_err(|e| bad(format!("option `body`: {e}")))?;
    Ok(Some((json.into_bytes(), "application/json")))
}

fn timeout(value: Dynamic) -> Result<Duration, EgressError> {
    match value.as_int() {
        Ok(ms) if ms >= 1 => Ok(Duration::from_millis(ms as u64)),
        _ => Err(bad(format!("option `timeout_ms` must be an integer of at least 1, not {value}"))),
    }
}

/// `#{status, headers, body, json}`.
fn response_map(response: Response) -> Map {
    let json = if response.body.trim().is_empty() { Dynamic::UNIT } else { json_or_unit(&response.body) };
    let headers: Map = response.headers.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    Map::from([
        ("status".into(), (response.status as i64).into()),
        ("headers".into(), headers.into()),
        ("json".into(), json),
        ("body".into(), response.body.into()),
    ])
}

fn json_or_unit(text: &str) -> Dynamic {
    match crate::plugs::request::parse(text) {
        Ok(_) => from_json(text),
        Err(_) => Dynamic::UNIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ErrorCode;

    fn opts(script: &str) -> Map {
        rhai::Engine::new().eval::<Map>(script).unwrap()
    }

    #[test]
    fn options_build_the_request() {
        let req = request(
            "request",
            "GET",
            opts(r#"#{method: "put", url: "http://x/", headers: #{"x-a": 1}, body: #{a: 1}, timeout_ms: 5}"#),
        )
        .unwrap();
        assert_eq!(req.method, reqwest::Method::PUT);
        assert_eq!(req.headers, vec![("x-a".to_owned(), "1".to_owned())]);
        assert_eq!(req.body, Some((br#"{"a":1}"#.to_vec(), "application/json")));
        assert_eq!(req.timeout, Some(Duration::from_millis(5)));
        let req = request("post", "POST", opts(r#"#{url: "http://x/", body: "hi"}"#)).unwrap();
        assert_eq!(
            (req.method, req.body),
            (reqwest::Method::POST, Some((b"hi".to_vec(), "text/plain; charset=utf-8")))
        );
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        for (script, text) in [
            (r#"#{url: "http://x/", tiemout_ms: 5}"#, "unknown option `tiemout_ms`"),
            (r#"#{method: "GET"}"#, "needs a `url`"),
            (r#"#{url: 5}"#, "option `url` must be a string"),
            (r#"#{url: "http://x/", timeout_ms: 0}"#, "at least 1"),
            (r#"#{url: "http://x/", headers: #{"bad name": "v"}}"#, "not a valid header name"),
            (r#"#{url: "http://x/", headers: #{"x": "a\nb"}}"#, "not a valid header value"),
            (r#"#{url: "http://x/", method: "GE T"}"#, "not an HTTP method"),
            (r#"#{url: "http://x/", body: Fn("f")}"#, "a function pointer"),
        ] {
            let err = request("request", "GET", opts(script)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::BadArgument, "{script}");
            assert!(err.to_string().contains(text), "{script}: {err}");
        }
    }

    #[test]
    fn responses_parse_json_bodies_only() {
        let r = response_map(Response { status: 200, headers: vec![], body: r#"{"a":[1]}"#.into() });
        assert!(r["json"].is_map());
        let r = response_map(Response { status: 404, headers: vec![], body: "<html>".into() });
        assert!(r["json"].is_unit() && r["status"].as_int() == Ok(404));
        let r = response_map(Response { status: 204, headers: vec![], body: String::new() });
        assert!(r["json"].is_unit());
    }
}
