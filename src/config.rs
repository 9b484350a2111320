//! Configuration: one table of keys ([`KEYS`]) is the single source of each
//! key's name, type, default and documentation. Help output, the repo's
//! `config.toml`, the README and validation all read it, so they cannot
//! drift apart.
//!
//! Layers, later wins: built-in defaults < config file < `SSOCKET_*`
//! environment variables < command-line `--KEY VALUE` overrides.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat, Value, ValueKind};

/// The type of a configuration value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    Str,
    /// A list of strings: a TOML array in a file, comma-separated in an
    /// environment variable or on the command line (`--http.allow a,b`).
    List,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Int { .. } => "integer",
            Kind::Bool => "bool",
            Kind::Str => "string",
            Kind::List => "list",
        }
    }
}

/// One documented configuration key.
#[derive(Debug)]
pub struct KeyDoc {
    pub key: &'static str,
    pub kind: Kind,
    /// The default, written as it would be on the command line (strings
    /// unquoted, lists comma-separated).
    pub default: &'static str,
    pub doc: &'static str,
}

const PORT: Kind = Kind::Int { min: 0, max: 65535 };
const POSITIVE: Kind = Kind::Int { min: 1, max: i64::MAX };
const NON_NEGATIVE: Kind = Kind::Int { min: 0, max: i64::MAX };

/// Every key the server knows, with names and case as in the original.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc { key: "payloadLimit", kind: POSITIVE, default: "250000", doc: "Largest accepted message in bytes (header, event name and payload); larger messages get an ERROR `payload_too_large` and run no plug." },
    KeyDoc { key: "preloadPlugs", kind: Kind::Bool, default: "true", doc: "Compile every plug at start-up, so errors show at once and the first request pays no compile cost." },
    KeyDoc { key: "excludeSenderOnBroadcast", kind: Kind::Bool, default: "true", doc: "Broadcasts skip the client whose message caused them." },
    KeyDoc { key: "secure", kind: Kind::Bool, default: "false", doc: "Serve TLS (wss) with the TLS section instead of INSECURE." },
    KeyDoc { key: "plugsFolder", kind: Kind::Str, default: "./plugs", doc: "Folder of plugs, scanned recursively; `plugs/a/b.rhai` answers event `a/b`." },
    KeyDoc { key: "initFile", kind: Kind::Str, default: "./INIT.rhai", doc: "Start-up hook: if this file exists, its `fn INIT(server)` runs once before plugs load (see the README's INIT section)." },
    KeyDoc { key: "shutdownTimeoutMs", kind: NON_NEGATIVE, default: "5000", doc: "On SIGINT/SIGTERM, how long running plugs may take to finish before clients are closed (code 1001)." },
    KeyDoc { key: "playground", kind: Kind::Bool, default: "true", doc: "Serve the playground page at `/` (`/playground` with a staticFolder), the JS client at `/ssocket.js` the plug list at `/api/plugs`, counters at `/api/stats` and the rooms at `/api/rooms` on the WebSocket port. Turn off in production." },
    KeyDoc { key: "staticFolder", kind: Kind::Str, default: "", doc: "Serve this folder's files at `/` (an app's own page beside its plugs; `index.html` for folders, content types by file name, nothing outside the folder). The playground then moves to `/playground`. Empty: no files." },
    KeyDoc { key: "logFormat", kind: Kind::Str, default: "text", doc: "`text`: log lines for people; `json`: one JSON object per line (`time`, `level`, `target`, `message`, and fields such as `plug` and `client`) for log collectors." },
    KeyDoc { key: "printLogToConsole", kind: Kind::Bool, default: "true", doc: "Print log lines to the console (stderr)." },
    KeyDoc { key: "logLevel", kind: Kind::Int { min: 0, max: 4 }, default: "0", doc: "Log verbosity: 0 = start-up, plug print(), warnings and errors; 1 = also connections and plug failures; 2 = also other crates' info; 3 = ssocket trace; 4 = everything. RUST_LOG, when set, wins." },
    KeyDoc { key: "logSizeLimit", kind: NON_NEGATIVE, default: "1", doc: "How many recent log entries are kept in memory." },
    KeyDoc { key: "INSECURE.port", kind: PORT, default: "8080", doc: "Port of the plain ws:// listener (0 picks a free port)." },
    KeyDoc { key: "INSECURE.hostname", kind: Kind::Str, default: "0.0.0.0", doc: "Address the ws:// listener binds to." },
    KeyDoc { key: "TLS.port", kind: PORT, default: "8080", doc: "Port of the wss:// listener when `secure` is true." },
    KeyDoc { key: "TLS.hostname", kind: Kind::Str, default: "0.0.0.0", doc: "Address the wss:// listener binds to." },
    KeyDoc { key: "TLS.certFile", kind: Kind::Str, default: "./cert.pem", doc: "TLS certificate chain (PEM)." },
    KeyDoc { key: "TLS.keyFile", kind: Kind::Str, default: "./key.pem", doc: "TLS private key (PEM)." },
    KeyDoc { key: "validateFunctionShape", kind: Kind::Bool, default: "false", doc: "Reject, when a plug loads, public functions that do not take exactly two parameters." },
    KeyDoc { key: "maxConnections", kind: NON_NEGATIVE, default: "10000", doc: "Most clients connected at once; further upgrades get HTTP 503. 0 = no limit." },
    KeyDoc { key: "limits.timeoutMs", kind: NON_NEGATIVE, default: "10000", doc: "Wall-clock time one plug invocation may run, sleeps included; past it the plug stops and the sender gets ERROR `limit_exceeded`. 0 = no limit." },
    KeyDoc { key: "limits.maxOperations", kind: NON_NEGATIVE, default: "10000000", doc: "Script operations one handler call may perform (Rhai counts expressions and statements); it also bounds memory a loop can fill, since Rhai checks map sizes only when a map is next read. 0 = no limit." },
    KeyDoc { key: "limits.maxCallDepth", kind: Kind::Int { min: 1, max: 256 }, default: "64", doc: "Nested function calls a plug may make (recursion depth)." },
    KeyDoc { key: "limits.maxStringSize", kind: NON_NEGATIVE, default: "4194304", doc: "Largest string a plug may build, in bytes. 0 = no limit." },
    KeyDoc { key: "limits.maxArraySize", kind: NON_NEGATIVE, default: "100000", doc: "Most items in one array a plug may build, items of nested arrays included. With limits.maxMapSize it also bounds how deeply values can nest, and each thread that runs plugs reserves 4 KiB of stack (address space, not memory) per level of that bound. 0 = no limit, which lets a plug nest values deep enough to crash the server." },
    KeyDoc { key: "limits.maxMapSize", kind: NON_NEGATIVE, default: "10000", doc: "Most entries in one map a plug may build, entries of nested maps included; see limits.maxArraySize for nesting. 0 = no limit, which lets a plug nest values deep enough to crash the server." },
    KeyDoc { key: "limits.maxInFlightPerClient", kind: POSITIVE, default: "8", doc: "Plug invocations one client may have running; further messages wait unread (backpressure on that client's socket)." },
    KeyDoc { key: "limits.maxInFlight", kind: POSITIVE, default: "256", doc: "Plug invocations running in the whole server; further messages wait, so no client can exhaust the plug threads." },
    KeyDoc { key: "limits.outboundQueueBytes", kind: POSITIVE, default: "16777216", doc: "Bytes queued for one client. A client that stops reading until its queue is full is disconnected (close code 4008); a plug yielding to its own slow client waits instead." },
    KeyDoc { key: "limits.messagesPerSecond", kind: NON_NEGATIVE, default: "500", doc: "Messages per second one client may send (bursts up to one second's worth); excess messages get ERROR `rate_limited`, and a client that keeps flooding is closed with code 1008. 0 = no limit." },
    KeyDoc { key: "limits.connStateBytes", kind: POSITIVE, default: "65536", doc: "Bytes of `conn::` state one connection may hold (keys plus values as JSON); a `conn::set` past it throws a catchable `limit_exceeded` error." },
    KeyDoc { key: "limits.roomsPerClient", kind: POSITIVE, default: "100", doc: "Rooms one client may be in at once; `rooms::join` past it throws a catchable `limit_exceeded` error." },
    KeyDoc { key: "store.maxBytes", kind: POSITIVE, default: "67108864", doc: "Bytes the `store::` key/value store may hold in all (keys plus values as JSON); a write past it throws a catchable `limit_exceeded` error. Expired keys free their bytes." },
    KeyDoc { key: "http.allow", kind: Kind::List, default: "", doc: "Where plugs may send HTTP requests with `http::`: origins (`https://api.example.com`, `http://127.0.0.1:9000`) and host patterns (`api.example.com`, `*.example.com`: that host or its subdomains, http or https, any port). Empty: plugs may call nothing." },
    KeyDoc { key: "http.timeoutMs", kind: POSITIVE, default: "10000", doc: "Most time one `http::` request may take, connecting and reading the body included (a plug's `timeout_ms` option may set another); the plug's own `limits.timeoutMs` still applies." },
    KeyDoc { key: "http.maxResponseBytes", kind: POSITIVE, default: "1048576", doc: "Largest response body `http::` accepts; a larger one is an `http_too_large` error, never truncated." },
    KeyDoc { key: "http.maxConcurrent", kind: POSITIVE, default: "64", doc: "`http::` requests in flight in the whole server; further requests wait (under their time limits)." },
    KeyDoc { key: "auth.jwtSecret", kind: Kind::Str, default: "", doc: "Verify clients' tokens (`?token=` or `Authorization: Bearer`) as HS256 JWTs signed with this secret; a bad, expired or not-yet-valid token is refused with HTTP 401, a valid one's claims are the client's identity. Empty: no HS256." },
    KeyDoc { key: "auth.jwtPublicKeyFile", kind: Kind::Str, default: "", doc: "Verify clients' tokens as JWTs signed by this public key (PEM): RS256 for an RSA key, ES256 for an EC P-256 key, and no other algorithm. Set this or auth.jwtSecret, not both. Empty: none." },
    KeyDoc { key: "auth.required", kind: Kind::Bool, default: "false", doc: "Refuse (HTTP 401) clients that end up anonymous: no valid token, and no identity from INIT's `server.on_auth`." },
    KeyDoc { key: "api.key", kind: Kind::Str, default: "", doc: "Turns on the HTTP API (`POST /api/publish`, `POST /api/call/EVENT`) for requests with `Authorization: Bearer <api.key>`. Empty: the API is off (404)." },
    KeyDoc { key: "cluster.redis", kind: Kind::Str, default: "", doc: "Join the nodes that share this Redis (`redis://host:port[/db]`, `redis://:password@host:port`): broadcasts, rooms, `send_to`, `kick_all`, `/api/publish`, `clients()`, members, presence and `store::` then span every node. Empty: one node, no Redis needed." },
    KeyDoc { key: "cluster.prefix", kind: Kind::Str, default: "ssocket", doc: "Prefix of every Redis key and channel this server uses, so several apps (or test runs) can share one Redis." },
    KeyDoc { key: "cluster.heartbeatMs", kind: Kind::Int { min: 50, max: 60_000 }, default: "1000", doc: "How often a node tells Redis it is alive. A node that stops for 5 heartbeats vanishes from `clients()`, members and presence on the others." },
    KeyDoc { key: "memoryMetrics.isOn", kind: Kind::Bool, default: "false", doc: "Periodically log memory use." },
    KeyDoc { key: "memoryMetrics.interval", kind: POSITIVE, default: "5000", doc: "Milliseconds between memory logs." },
];

/// Find a key's documentation; case-insensitive so `-h --payloadlimit` helps.
pub fn key_doc(key: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|k| k.key == key).or_else(|| KEYS.iter().find(|k| k.key.eq_ignore_ascii_case(key)))
}

/// A configuration mistake. Each names the key and what was wrong, and the
/// server does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown configuration key `{key}` ({source_name}){}", suggestion(.key))]
    UnknownKey { key: String, source_name: String },
    #[error("configuration key `{key}` expects {expected}, got `{value}` ({source_name})")]
    WrongType { key: String, expected: String, value: String, source_name: String },
    #[error("command-line option `--{0}` needs a value, as in `--{0} VALUE` or `--{0}=VALUE`")]
    MissingValue(String),
    #[error("cannot read configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
}

fn suggestion(key: &str) -> String {
    let best = KEYS
        .iter()
        .map(|k| (strsim::jaro_winkler(&key.to_ascii_lowercase(), &k.key.to_ascii_lowercase()), k.key))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((score, name)) if score > 0.8 => format!("; did you mean `{name}`?"),
        _ => "; `ssocket --help` lists every key".to_owned(),
    }
}

/// Where a layer of configuration came from, for error messages.
#[derive(Debug, Clone)]
pub struct Override {
    pub key: String,
    pub value: String,
    pub source_name: String,
}

/// The typed configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub payload_limit: usize,
    pub preload_plugs: bool,
    pub exclude_sender_on_broadcast: bool,
    pub secure: bool,
    pub plugs_folder: PathBuf,
    pub init_file: PathBuf,
    pub shutdown_timeout_ms: u64,
    pub playground: bool,
    /// `staticFolder`; None when unset.
    pub static_folder: Option<PathBuf>,
    pub log_format: LogFormat,
    pub print_log_to_console: bool,
    pub log_level: u8,
    pub log_size_limit: usize,
    pub insecure: Listen,
    pub tls: Tls,
    pub validate_function_shape: bool,
    pub max_connections: usize,
    pub limits: Limits,
    pub memory_metrics_on: bool,
    pub memory_metrics_interval_ms: u64,
    pub store: StoreSettings,
    pub http: HttpSettings,
    pub api: ApiSettings,
    pub auth: AuthSettings,
    pub cluster: ClusterSettings,
}

/// `cluster.*`: several nodes on one Redis.
#[derive(Clone)]
pub struct ClusterSettings {
    /// Empty: a single node.
    pub redis: String,
    pub prefix: String,
    pub heartbeat_ms: u64,
}

impl std::fmt::Debug for ClusterSettings {
    /// The URL may hold a password: only whether it is set is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redis = if self.redis.is_empty() { "(single node)" } else { "(set)" };
        f.debug_struct("ClusterSettings")
            .field("redis", &redis)
            .field("prefix", &self.prefix)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .finish()
    }
}

/// `auth.*`: identity at connect.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// HS256 secret; empty when unset.
    pub jwt_secret: String,
    /// RS256/ES256 public key (PEM); empty when unset.
    pub jwt_public_key_file: PathBuf,
    pub required: bool,
}

impl std::fmt::Debug for AuthSettings {
    /// The secret is not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = if self.jwt_secret.is_empty() { "(unset)" } else { "(set)" };
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &secret)
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("required", &self.required)
            .finish()
    }
}

/// `logFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `store.*`.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub max_bytes: usize,
}

/// `http.*`: plugs' outgoing requests.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Origins and host patterns, as configured (checked at start-up).
    pub allow: Vec<String>,
    pub timeout_ms: u64,
    pub max_response_bytes: usize,
    pub max_concurrent: usize,
}

/// `api.*`: the HTTP API.
#[derive(Clone, Default)]
pub struct ApiSettings {
    /// The bearer key; empty when the API is off.
    pub key: String,
}

impl std::fmt::Debug for ApiSettings {
    /// The key is a secret: settings are printed in logs and test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = if self.key.is_empty() { "(off)" } else { "(set)" };
        f.debug_struct("ApiSettings").field("key", &key).finish()
    }
}

/// Per-invocation script limits (`limits.*`); 0 means no limit where allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub timeout_ms: u64,
    pub max_operations: u64,
    pub max_call_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub max_in_flight_per_client: usize,
    pub max_in_flight: usize,
    pub outbound_queue_bytes: usize,
    pub messages_per_second: u32,
    pub conn_state_bytes: usize,
    pub rooms_per_client: usize,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub port: u16,
    pub hostname: String,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub listen: Listen,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::load(None, &[], &[]).expect("built-in defaults are valid")
    }
}

impl Settings {
    /// Layer defaults, the file (when given; it must exist), environment
    /// pairs and command-line overrides.
    pub fn load(file: Option<&Path>, env: &[(String, String)], cli: &[Override]) -> Result<Settings, ConfigError> {
        let mut builder = Config::builder();
        for k in KEYS {
            builder = builder
                .set_default(k.key, parse_value(k, k.default, "default").expect("defaults parse"))
                .expect("default keys are valid");
        }
        let path = file.map(Path::to_path_buf).unwrap_or_default();
        let file_name = path.display().to_string();
        if file.is_some() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::File { path: path.clone(), message: e.to_string() })?;
            check_file_keys(&text, &path)?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
        }
        for o in env_overrides(env)?.iter().chain(cli) {
            let doc = key_doc(&o.key)
                .ok_or_else(|| ConfigError::UnknownKey { key: o.key.clone(), source_name: o.source_name.clone() })?;
            let value = parse_value(doc, &o.value, &o.source_name)?;
            builder = builder.set_override(doc.key, value).expect("known keys are valid");
        }
        let cfg = builder.build().map_err(|e| ConfigError::File { path, message: e.to_string() })?;
        Settings::from_config(&cfg, &file_name)
    }

    fn from_config(cfg: &Config, file_name: &str) -> Result<Settings, ConfigError> {
        let r = Reader { cfg, file_name };
        Ok(Settings {
            payload_limit: r.int("payloadLimit")? as usize,
            preload_plugs: r.bool("preloadPlugs")?,
            exclude_sender_on_broadcast: r.bool("excludeSenderOnBroadcast")?,
            secure: r.bool("secure")?,
            plugs_folder: PathBuf::from(r.string("plugsFolder")?),
            init_file: PathBuf::from(r.string("initFile")?),
            shutdown_timeout_ms: r.int("shutdownTimeoutMs")? as u64,
            playground: r.bool("playground")?,
            static_folder: Some(r.string("staticFolder")?).filter(|s| !s.is_empty()).map(PathBuf::from),
            log_format: r.log_format("logFormat")?,
            print_log_to_console: r.bool("printLogToConsole")?,
            log_level: r.int("logLevel")? as u8,
            log_size_limit: r.int("logSizeLimit")? as usize,
            insecure: Listen { port: r.int("INSECURE.port")? as u16, hostname: r.string("INSECURE.hostname")? },
            tls: Tls {
                listen: Listen { port: r.int("TLS.port")? as u16, hostname: r.string("TLS.hostname")? },
                cert_file: PathBuf::from(r.string("TLS.certFile")?),
                key_file: PathBuf::from(r.string("TLS.keyFile")?),
            },
            validate_function_shape: r.bool("validateFunctionShape")?,
            max_connections: r.int("maxConnections")? as usize,
            limits: Limits {
                timeout_ms: r.int("limits.timeoutMs")? as u64,
                max_operations: r.int("limits.maxOperations")? as u64,
                max_call_depth: r.int("limits.maxCallDepth")? as usize,
                max_string_size: r.int("limits.maxStringSize")? as usize,
                max_array_size: r.int("limits.maxArraySize")? as usize,
                max_map_size: r.int("limits.maxMapSize")? as usize,
                max_in_flight_per_client: r.int("limits.maxInFlightPerClient")? as usize,
                max_in_flight: r.int("limits.maxInFlight")? as usize,
                outbound_queue_bytes: r.int("limits.outboundQueueBytes")? as usize,
                messages_per_second: r.int("limits.messagesPerSecond")?.min(u32::MAX as i64) as u32,
                conn_state_bytes: r.int("limits.connStateBytes")? as usize,
                rooms_per_client: r.int("limits.roomsPerClient")? as usize,
            },
            memory_metrics_on: r.bool("memoryMetrics.isOn")?,
            memory_metrics_interval_ms: r.int("memoryMetrics.interval")? as u64,
            store: StoreSettings { max_bytes: r.int("store.maxBytes")? as usize },
            http: HttpSettings {
                allow: r.list("http.allow")?,
                timeout_ms: r.int("http.timeoutMs")? as u64,
                max_response_bytes: r.int("http.maxResponseBytes")? as usize,
                max_concurrent: r.int("http.maxConcurrent")? as usize,
            },
            api: ApiSettings { key: r.string("api.key")? },
            cluster: ClusterSettings {
                redis: r.string("cluster.redis")?,
                prefix: r.string("cluster.prefix")?,
                heartbeat_ms: r.int("cluster.heartbeatMs")? as u64,
            },
            auth: AuthSettings {
                jwt_secret: r.string("auth.jwtSecret")?,
                jwt_public_key_file: PathBuf::from(r.string("auth.jwtPublicKeyFile")?),
                required: r.bool("auth.required")?,
            },
        })
    }
}

/// Reads typed keys and checks each value against the key's [`Kind`], so a
/// file value of the wrong type names the key, the type and the value.
struct Reader<'a> {
    cfg: &'a Config,
    file_name: &'a str,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Value {
        self.cfg.get::<Value>(key).expect("every key has a default")
    }

    fn wrong(&self, key: &str, value: &Value) -> ConfigError {
        let doc = key_doc(key).expect("reader keys are documented");
        ConfigError::WrongType {
            key: key.to_owned(),
            expected: expected(doc.kind),
            value: value.to_string(),
            source_name: self.file_name.to_owned(),
        }
    }

    fn int(&self, key: &str) -> Result<i64, ConfigError> {
        let v = self.get(key);
        let n = match v.kind {
            ValueKind::I64(n) => Some(n),
            ValueKind::U64(n) => i64::try_from(n).ok(),
            ValueKind::I128(n) => i64::try_from(n).ok(),
            ValueKind::U128(n) => i64::try_from(n).ok(),
            _ => None,
        };
        match (n, key_doc(key).map(|d| d.kind)) {
            (Some(n), Some(Kind::Int { min, max })) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.wrong(key, &v)),
        }
    }

    fn bool(&self, key: &str) -> Result<bool, ConfigError> {
        let v = self.get(key);
        match v.kind {
            ValueKind::Boolean(b) => Ok(b),
            _ => Err(self.wrong(key, &v)),
        }
    }

    fn string(&self, key: &str) -> Result<String, ConfigError> {
        let v = self.get(key);
        match &v.kind {
            ValueKind::String(s) => Ok(s.clone()),
            _ => Err(self.wrong(key, &v)),
        }
    }

    /// `text` or `json`.
    fn log_format(&self, key: &str) -> Result<LogFormat, ConfigError> {
        match self.string(key)?.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(ConfigError::WrongType {
                key: key.to_owned(),
                expected: "`text` or `json`".to_owned(),
                value: other.to_owned(),
                source_name: self.file_name.to_owned(),
            }),
        }
    }

    /// A list of strings; every item must be a string.
    fn list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        let v = self.get(key);
        let ValueKind::Array(items) = &v.kind else { return Err(self.wrong(key, &v)) };
        items
            .iter()
            .map(|item| match &item.kind {
                ValueKind::String(s) => Ok(s.clone()),
                _ => Err(self.wrong(key, &v)),
            })
            .collect()
    }
}

fn expected(kind: Kind) -> String {
    match kind {
        Kind::Int { min, max } if max == i64::MAX => format!("an integer of at least {min}"),
        Kind::Int { min, max } => format!("an integer from {min} to {max}"),
        Kind::Bool => "a bool (true or false)".to_owned(),
        Kind::Str => "a string".to_owned(),
        Kind::List => "a list of strings (a TOML array; comma-separated on the command line)".to_owned(),
    }
}

/// A list value's items: comma-separated, trimmed, empty ones dropped.
fn split_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Convert text (from the command line, the environment or a default) to
/// the key's type.
fn parse_value(doc: &KeyDoc, text: &str, source_name: &str) -> Result<Value, ConfigError> {
    let wrong = || ConfigError::WrongType {
        key: doc.key.to_owned(),
        expected: expected(doc.kind),
        value: text.to_owned(),
        source_name: source_name.to_owned(),
    };
    Ok(match doc.kind {
        Kind::Int { min, max } => {
            let n: i64 = text.trim().parse().map_err(|_| wrong())?;
            if !(min..=max).contains(&n) {
                return Err(wrong());
            }
            Value::from(n)
        }
        Kind::Bool => Value::from(text.trim().parse::<bool>().map_err(|_| wrong())?),
        Kind::Str => Value::from(text.to_owned()),
        Kind::List => Value::from(split_list(text)),
    })
}

/// Every dotted key in a TOML file must be a known key.
fn check_file_keys(text: &str, path: &Path) -> Result<(), ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File { path: path.to_path_buf(), message: e.to_string() })?;
    let mut keys = Vec::new();
    flatten("", &table, &mut keys);
    match keys.into_iter().find(|k| !KEYS.iter().any(|d| d.key == k)) {
        Some(key) => Err(ConfigError::UnknownKey { key, source_name: path.display().to_string() }),
        None => Ok(()),
    }
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            _ => out.push(key),
        }
    }
}

/// `SSOCKET_INSECURE__PORT=6969` is `INSECURE.port`: the prefix is dropped,
/// `__` is a dot, and the key matches case-insensitively.
fn env_overrides(env: &[(String, String)]) -> Result<Vec<Override>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("SSOCKET_") else { continue };
        let dotted = rest.replace("__", ".");
        let source_name = format!("environment variable {name}");
        let key = KEYS
            .iter()
            .find(|k| k.key.eq_ignore_ascii_case(&dotted))
            .ok_or_else(|| ConfigError::UnknownKey { key: dotted.clone(), source_name: source_name.clone() })?;
        out.push(Override { key: key.key.to_owned(), value: value.clone(), source_name });
    }
    Ok(out)
}

/// The command line split into what clap parses and the `--KEY VALUE`
/// overrides, which clap cannot declare because the keys are dotted.
#[derive(Debug, Default, PartialEq)]
pub struct SplitArgs {
    pub clap_args: Vec<String>,
    /// Overrides in order; `None` when the key had no value (used by `-h --KEY`).
    pub overrides: Vec<(String, Option<String>)>,
}

/// Flags that belong to clap; every other `--NAME` is a configuration key.
const CLI_FLAGS: &[&str] = &["config", "generate", "help", "version"];

pub fn split_args(args: impl IntoIterator<Item = String>) -> SplitArgs {
    let mut out = SplitArgs::default();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let Some(name) = arg.strip_prefix("--").filter(|n| !n.is_empty()) else {
            out.clap_args.push(arg);
            continue;
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (name.to_owned(), None),
        };
        if CLI_FLAGS.contains(&name.as_str()) {
            out.clap_args.push(arg);
            continue;
        }
        let value = inline.or_else(|| args.next_if(|next| !next.starts_with("--")));
        out.overrides.push((name, value));
    }
    out
}

/// Turn split overrides into checked [`Override`]s.
pub fn cli_overrides(pairs: &[(String, Option<String>)]) -> Result<Vec<Override>, ConfigError> {
    pairs
        .iter()
        .map(|(key, value)| {
            let value = value.clone().ok_or_else(|| ConfigError::MissingValue(key.clone()))?;
            Ok(Override { key: key.clone(), value, source_name: "command line".to_owned() })
        })
        .collect()
}

/// The help text for one key.
pub fn describe(doc: &KeyDoc) -> String {
    format!("--{} <{}>  (default: {})\n    {}", doc.key, doc.kind.name(), shown_default(doc), doc.doc)
}

/// A default as help and the README show it: lists as TOML arrays, an
/// empty string as `""`.
fn shown_default(doc: &KeyDoc) -> String {
    match doc.kind {
        Kind::List => toml_literal(doc),
        Kind::Str if doc.default.is_empty() => toml_literal(doc),
        _ => doc.default.to_owned(),
    }
}

/// The `--help` text: usage, then every key.
pub fn help_text() -> String {
    let mut out = String::from(concat!(
        "ssocket ", env!("CARGO_PKG_VERSION"), ": a WebSocket server whose behaviour lives in Rhai plugs\n\n",
        "Usage: ssocket [--config PATH] [--KEY VALUE]...   serve\n",
        "       ssocket check [--config PATH] [--KEY VALUE]...   compile every plug and module, report errors\n",
        "       ssocket --generate NAME   write plugs/NAME.rhai from a template\n",
        "       ssocket -h [--KEY]      help for every key, or one\n",
        "       ssocket --version\n\n",
        "Configuration keys (set in config.toml, as SSOCKET_KEY env variables with __ for a dot, or as --KEY VALUE):\n\n",
    ));
    for doc in KEYS {
        out.push_str(&describe(doc));
        out.push_str("\n\n");
    }
    out
}

/// The tracing filter for a `logLevel`.
pub fn log_filter(level: u8) -> &'static str {
    match level {
        0 => "warn,ssocket=info",
        1 => "warn,ssocket=debug",
        2 => "info,ssocket=debug",
        3 => "info,ssocket=trace",
        _ => "trace",
    }
}

/// `config.toml` with every key, its default and its documentation.
pub fn sample_toml() -> String {
    let mut out = String::from("# ssocket configuration. Every key, with its default.\n# Generated from the key table in src/config.rs; `ssocket -h` prints the same.\n");
    // TOML needs top-level keys before any [section].
    let (top, nested): (Vec<&KeyDoc>, Vec<&KeyDoc>) = KEYS.iter().partition(|d| !d.key.contains('.'));
    let mut section = "";
    for doc in top.into_iter().chain(nested) {
        let (sec, name) = doc.key.split_once('.').unwrap_or(("", doc.key));
        if sec != section {
            out.push_str(&format!("\n[{sec}]\n"));
            section = sec;
        }
        out.push_str(&format!("# {}\n{} = {}\n", doc.doc, name, toml_literal(doc)));
    }
    out
}

/// The README's table of keys (between `<!-- keys:start -->` and `<!-- keys:end -->`).
pub fn markdown_table() -> String {
    let mut out = String::from("| key | type | default | meaning |\n|---|---|---|---|\n");
    for doc in KEYS {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} |\n",
            doc.key,
            doc.kind.name(),
            shown_default(doc),
            doc.doc.replace('|', "\\|")
        ));
    }
    out
}

fn toml_literal(doc: &KeyDoc) -> String {
    match doc.kind {
        Kind::Str => format!("{:?}", doc.default),
        Kind::List => {
            let items: Vec<String> = split_list(doc.default).iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(", "))
        }
        _ => doc.default.to_owned(),
    }
}

/// The file to read: `--config PATH`, else `./config.toml` when it exists.
pub fn default_file(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| Some(PathBuf::from("config.toml")).filter(|p| p.exists()))
}

/// Environment pairs of this process.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars().filter(|(k, _)| k.starts_with("SSOCKET_")).collect::<HashMap<_, _>>().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(pairs: &[(&str, &str)]) -> Vec<Override> {
        pairs
            .iter()
            .map(|(k, v)| Override { key: k.to_string(), value: v.to_string(), source_name: "command line".into() })
            .collect()
    }

    fn with_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::load(Some(Path::new("/dev/null")), &[], &[]).unwrap();
        assert_eq!(s.payload_limit, 250_000);
        assert!(s.preload_plugs && s.exclude_sender_on_broadcast && !s.secure);
        assert_eq!(s.insecure.port, 8080);
        assert_eq!(s.insecure.hostname, "0.0.0.0");
        assert_eq!(s.plugs_folder, PathBuf::from("./plugs"));
        assert_eq!(s.memory_metrics_interval_ms, 5000);
    }

    #[test]
    fn later_layers_win() {
        let (_d, path) = with_file("payloadLimit = 10\n[INSECURE]\nport = 1\nhostname = \"h\"\n");
        let env = vec![("SSOCKET_INSECURE__PORT".to_string(), "2".to_string())];
        let s = Settings::load(Some(&path), &env, &[]).unwrap();
        assert_eq!((s.payload_limit, s.insecure.port, s.insecure.hostname.as_str()), (10, 2, "h"));
        let s = Settings::load(Some(&path), &env, &cli(&[("INSECURE.port", "6969")])).unwrap();
        assert_eq!(s.insecure.port, 6969);
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let err = Settings::load(None, &[], &cli(&[("payloadLimt", "1")])).unwrap_err().to_string();
        assert!(err.contains("`payloadLimt`") && err.contains("did you mean `payloadLimit`"), "{err}");
        let (_d, path) = with_file("[INSECURE]\nprot = 1\n");
        let err = Settings::load(Some(&path), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("INSECURE.prot") && err.contains("INSECURE.port"), "{err}");
        let env = vec![("SSOCKET_NOPE".to_string(), "1".to_string())];
        assert!(Settings::load(None, &env, &[]).unwrap_err().to_string().contains("SSOCKET_NOPE"));
    }

    #[test]
    fn wrong_types_name_key_type_and_value() {
        let err = Settings::load(None, &[], &cli(&[("INSECURE.port", "abc")])).unwrap_err().to_string();
        assert!(err.contains("INSECURE.port") && err.contains("integer") && err.contains("abc"), "{err}");
        let err = Settings::load(None, &[], &cli(&[("INSECURE.port", "70000")])).unwrap_err().to_string();
        assert!(err.contains("from 0 to 65535"), "{err}");
        let (_d, path) = with_file("secure = \"yes\"\n");
        let err = Settings::load(Some(&path), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("`secure`") && err.contains("bool") && err.contains("yes"), "{err}");
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let err = Settings::load(Some(Path::new("/nonexistent/c.toml")), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/c.toml"), "{err}");
    }

    #[test]
    fn splits_overrides_from_flags() {
        let args = ["--config", "c.toml", "--INSECURE.port", "6969", "--payloadLimit=10", "-h", "--secure"];
        let split = split_args(args.iter().map(|s| s.to_string()));
        assert_eq!(split.clap_args, vec!["--config", "c.toml", "-h"]);
        assert_eq!(
            split.overrides,
            vec![
                ("INSECURE.port".to_string(), Some("6969".to_string())),
                ("payloadLimit".to_string(), Some("10".to_string())),
                ("secure".to_string(), None),
            ]
        );
        assert!(matches!(cli_overrides(&split.overrides), Err(ConfigError::MissingValue(k)) if k == "secure"));
    }

    #[test]
    fn list_keys_come_from_toml_arrays_or_commas() {
        let s = Settings::load(None, &[], &[]).unwrap();
        assert!(s.http.allow.is_empty(), "nothing is allowed by default");
        let (_d, path) = with_file("[http]\nallow = [\"https://a.example\", \"*.b.example\"]\n");
        let s = Settings::load(Some(&path), &[], &[]).unwrap();
        assert_eq!(s.http.allow, vec!["https://a.example", "*.b.example"]);
        let env = vec![("SSOCKET_HTTP__ALLOW".to_string(), "http://127.0.0.1:9000, x.example".to_string())];
        let s = Settings::load(Some(&path), &env, &[]).unwrap();
        assert_eq!(s.http.allow, vec!["http://127.0.0.1:9000", "x.example"]);
        let s = Settings::load(Some(&path), &env, &cli(&[("http.allow", "a.example,,b.example ")])).unwrap();
        assert_eq!(s.http.allow, vec!["a.example", "b.example"]);
        let s = Settings::load(Some(&path), &[], &cli(&[("http.allow", "")])).unwrap();
        assert!(s.http.allow.is_empty(), "an empty value clears the list");
    }

    #[test]
    fn a_list_key_given_something_else_in_a_file_is_named() {
        for bad in ["allow = \"https://a.example\"", "allow = [1, 2]", "allow = true"] {
            let (_d, path) = with_file(&format!("[http]\n{bad}\n"));
            let err = Settings::load(Some(&path), &[], &[]).unwrap_err().to_string();
            assert!(err.contains("`http.allow`") && err.contains("list of strings"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_api_key_is_not_printed() {
        let s = Settings::load(None, &[], &cli(&[("api.key", "hunter2"), ("auth.jwtSecret", "swordfish")])).unwrap();
        assert_eq!((s.api.key.as_str(), s.auth.jwt_secret.as_str()), ("hunter2", "swordfish"));
        assert!(!format!("{s:?}").contains("hunter2") && !format!("{s:?}").contains("swordfish"));
    }

    #[test]
    fn sample_toml_covers_every_key_and_parses() {
        let text = sample_toml();
        let (_d, path) = with_file(&text);
        Settings::load(Some(&path), &[], &[]).unwrap();
        for k in KEYS {
            let name = k.key.rsplit('.').next().unwrap();
            assert!(text.contains(&format!("{name} = ")), "{}", k.key);
        }
    }
}
