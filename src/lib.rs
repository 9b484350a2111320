//! ssocket: a WebSocket server whose behaviour lives in Rhai scripts.
//!
//! A message arrives ([`connection`]), is decoded ([`protocol`]) and its
//! payload read into Rhai values ([`plugs::request`]), finds its plug
//! ([`plugs::registry`]), runs ([`plugs::invoke`]: inline on the async
//! worker until it proves slow, then on the plug threads) and every reply
//! the plug yields goes where
//! [`plugs::router`] says, through the [`hub`] that alone knows who is
//! connected.
//!
//! - [`protocol`]: the wire format, pure encode/decode, and the SYNC diff
//!   ([`protocol::sync`]).
//! - [`config`]: the key table, layered settings (defaults, file, env, CLI).
//! - [`errors`]: the stable error codes of ERROR messages, in one table.
//! - [`egress`]: plugs' outgoing HTTP (`http::`): allowlist, limits, client.
//! - [`hub`]: connected clients: register, send to one, broadcast (straight
//!   into a sleeping receiver's socket when the server keeps up), remove.
//! - [`client`]: one connected client's record (id, cancel flag), handed
//!   out by the hub and carried by dispatch, invocations and hooks.
//! - [`cancel`]: the flag that stops a gone client's running plugs.
//! - [`cluster`]: several nodes on one Redis: the hub's backplane.
//! - [`plugs`]: the Rhai engine and host API, the registry, request
//!   decoding, invocation and reply routing.
//! - [`init`]: the `INIT.rhai` start-up hook and its connect/disconnect
//!   callbacks.
//! - [`timers`]: INIT's `server.every` / `server.after` timers.
//! - [`logs`]: console logging and the in-memory ring of recent entries.
//! - [`metrics`]: the counters of `/metrics` and the periodic memory report.
//! - [`ops`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`files`]: `staticFolder`, an app's own files at `/`.
//! - [`offload`]: blocking code waiting on a future of our own runtimes.
//! - [`connection`]: one client's socket: its reader and writer, in one task.
//! - [`ws`]: the WebSocket protocol (RFC 6455) over the upgraded stream,
//!   holding no buffer while a client is idle; [`ws::frame`] parses and
//!   writes frames; [`ws::stream`] is the upgraded connection (for ws://
//!   the socket itself, its write half shared with the hub).
//! - [`listener`]: the accept loop (TCP_NODELAY, optional TLS handshake).
//! - [`upgrade`]: the WebSocket handshake, with socket buffers sized by us.
//! - [`http`]: the playground page, `/ssocket.js` and `/api/plugs`.
//! - [`api`]: the HTTP API: `POST /api/publish`, `POST /api/call/EVENT`.
//! - [`auth`]: identity at connect: tokens, JWT verification.
//! - [`app`]: the shared state of a running server ([`app::App`]).
//! - [`server`]: start-up and shutdown: bind (a deep accept queue, and
//!   accepting deferred until a client speaks), serve, drain.
//! - [`store`]: the `store::` key/value store behind one trait, in memory.
//! - [`tls`]: `secure = true`: PEM certificate loading and the wss:// accept
//!   loop (warp 0.4 has no TLS).
//! - [`tools`]: `--generate` and `check`, for plug authors.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod cancel;
pub mod client;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod egress;
pub mod errors;
pub mod files;
pub mod http;
pub mod hub;
pub mod init;
pub mod listener;
pub mod logs;
pub mod metrics;
pub mod offload;
pub mod ops;
pub mod plugs;
pub mod protocol;
pub mod server;
pub mod store;
pub mod timers;
pub mod tls;
pub mod tools;
pub mod upgrade;
pub mod ws;
