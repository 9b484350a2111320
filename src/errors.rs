//! Every stable error code a client can receive in an ERROR message's
//! `error` field (and a plug can catch from a host function), in one
//! table. Codes are public API: clients match on them, so a code is added
//! here, documented in the README's error table (a test checks), and never
//! renamed.

use serde_json::{json, Value};

/// A stable error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame is malformed (length, event name, UTF-8, JSON).
    BadFrame,
    /// A text frame arrived; the protocol is binary.
    TextFrame,
    /// The message is larger than `payloadLimit`.
    PayloadTooLarge,
    /// A plug failed: a runtime error, a `throw`, a bad reply.
    ScriptError,
    /// A plug has never compiled, or breaks `validateFunctionShape`.
    CompileError,
    /// A plug was stopped by a limit, or a host call would pass one.
    LimitExceeded,
    /// The client sent more than `limits.messagesPerSecond`.
    RateLimited,
    /// The server is stopping and takes no new messages.
    ShuttingDown,
    /// A host function got an argument it cannot use (an empty key, a TTL
    /// of 0, a value with no JSON form, ...).
    BadArgument,
    /// A store key holds another kind of value than the operation needs.
    WrongType,
    /// The store cannot be reached (Redis is down).
    StoreUnavailable,
    /// Code that runs for no client (INIT, a timer) used something that
    /// needs one (`yield_msg`, `conn::`).
    NoClient,
    /// An `http::` request to a place `http.allow` does not list (or a
    /// redirect there, or a URL with credentials or another scheme).
    HttpDenied,
    /// An `http::` request took longer than its time limit.
    HttpTimeout,
    /// An `http::` request failed on the network (refused, DNS, TLS, reset).
    HttpFailed,
    /// An `http::` response was larger than `http.maxResponseBytes`.
    HttpTooLarge,
    /// The HTTP API (or, later, a WebSocket upgrade) got no key or a wrong one.
    Unauthorized,
    /// An HTTP API request whose body or path is malformed.
    BadRequest,
    /// An HTTP API request for an event no plug answers, or the API is off.
    NotFound,
    /// With several nodes: Redis cannot be reached, so what crosses nodes
    /// (a broadcast's other nodes, `clients()`, presence) did not happen.
    ClusterUnavailable,
}

impl ErrorCode {
    /// Every code, for documentation checks.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadFrame,
        ErrorCode::TextFrame,
        ErrorCode::PayloadTooLarge,
        ErrorCode::ScriptError,
        ErrorCode::CompileError,
        ErrorCode::LimitExceeded,
        ErrorCode::RateLimited,
        ErrorCode::ShuttingDown,
        ErrorCode::BadArgument,
        ErrorCode::WrongType,
        ErrorCode::StoreUnavailable,
        ErrorCode::NoClient,
        ErrorCode::HttpDenied,
        ErrorCode::HttpTimeout,
        ErrorCode::HttpFailed,
        ErrorCode::HttpTooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::ClusterUnavailable,
    ];

    /// The code as clients see it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::TextFrame => "text_frame",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::ScriptError => "script_error",
            ErrorCode::CompileError => "compile_error",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::BadArgument => "bad_argument",
            ErrorCode::WrongType => "wrong_type",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::NoClient => "no_client",
            ErrorCode::HttpDenied => "http_denied",
            ErrorCode::HttpTimeout => "http_timeout",
            ErrorCode::HttpFailed => "http_failed",
            ErrorCode::HttpTooLarge => "http_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ClusterUnavailable => "cluster_unavailable",
        }
    }

    /// An ERROR payload: `{"error": code, "message": text, ...context}`.
    /// `context` fields other than an object's are ignored.
    pub fn payload(self, message: &str, context: Value) -> Value {
        let mut payload = json!({ "error": self.as_str(), "message": message });
        if let (Some(obj), Value::Object(extra)) = (payload.as_object_mut(), context) {
            obj.extend(extra);
        }
        payload
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{s}");
            assert!(seen.insert(s), "{s} twice");
        }
    }

    #[test]
    fn payload_merges_context() {
        let p = ErrorCode::RateLimited.payload("slow down", json!({"limit": "x"}));
        assert_eq!(p, json!({"error": "rate_limited", "message": "slow down", "limit": "x"}));
    }
}
