//! Plugs' outgoing HTTP (`http::`, SPEC 9.3): an allowlist checked on every
//! request and every redirect, a time limit per request, a cap on response
//! bodies and on requests in flight server-wide.
//!
//! Requests run on a small runtime of their own ("ssocket-http", started at
//! the first request), and the plug's thread blocks on the result: a plug
//! runs on a plug thread, or inline inside `block_in_place`, so no async
//! worker waits. The wait ends early when the plug's client leaves or its
//! `limits.timeoutMs` runs out, and dropping the request closes its
//! connection.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::{redirect, Url};
use tokio::runtime::Runtime;

use crate::cancel::Cancel;
use crate::config::HttpSettings;
use crate::errors::ErrorCode;

/// Most redirects one request follows.
pub const MAX_REDIRECTS: usize = 10;

/// One request a plug makes.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The body and the content type it implies (a header can override).
    pub body: Option<(Vec<u8>, &'static str)>,
    /// This request's limit instead of `http.timeoutMs`.
    pub timeout: Option<Duration>,
}

/// What came back. Any status is a response, not an error.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lowercase names; repeated headers joined with ", ".
    pub headers: Vec<(String, String)>,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
}

/// Why a request failed. All but [`EgressError::Stopped`] are catchable in
/// the plug, with the code of [`EgressError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("http_denied: {0}")]
    Denied(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("http_timeout: {url} did not answer within {ms} ms")]
    Timeout { url: String, ms: u128 },
    #[error("http_failed: {0}")]
    Failed(String),
    #[error("http_too_large: the response from {url} is larger than http.maxResponseBytes ({max} bytes)")]
    TooLarge { url: String, max: usize },
    /// The plug's client left, or its own time limit ran out first.
    #[error("stopped")]
    Stopped(Stop),
}

/// Why a wait was cut short from outside the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Cancelled,
    Deadline,
}

impl EgressError {
    pub fn code(&self) -> ErrorCode {
        match self {
            EgressError::Denied(_) => ErrorCode::HttpDenied,
            EgressError::BadRequest(_) => ErrorCode::BadArgument,
            EgressError::Timeout { .. } => ErrorCode::HttpTimeout,
            EgressError::Failed(_) | EgressError::Stopped(_) => ErrorCode::HttpFailed,
            EgressError::TooLarge { .. } => ErrorCode::HttpTooLarge,
        }
    }
}

/// Where requests may go: `http.allow`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// scheme, host, port: exactly this origin.
    Origin(String, String, u16),
    /// This host, any http(s) scheme and port.
    Host(String),
    /// Hosts ending in `.suffix` (`*.example.com`), any http(s) scheme and port.
    Subdomains(String),
}

/// An `http.allow` entry that is neither an origin nor a host pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("http.allow entry `{entry}` {why}")]
pub struct AllowError {
    pub entry: String,
    pub why: String,
}

impl Allowlist {
    /// Parse `http.allow`, naming the first bad entry.
    pub fn parse(entries: &[String]) -> Result<Allowlist, AllowError> {
        let rules = entries.iter().map(|e| rule(e).map_err(|why| AllowError { entry: e.clone(), why }));
        Ok(Allowlist { rules: rules.collect::<Result<_, _>>()? })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Check a URL a request (or a redirect) goes to.
    pub fn check(&self, url: &Url) -> Result<(), EgressError> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(EgressError::Denied(format!("{}: only http and https URLs can be requested", redacted(url))));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressError::Denied(format!(
                "{}: URLs with a user name or password are refused; send credentials in a header",
                redacted(url)
            )));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(0);
        let allowed = self.rules.iter().any(|rule| match rule {
            Rule::Origin(s, h, p) => s == scheme && *h == host && *p == port,
            Rule::Host(h) => *h == host,
            Rule::Subdomains(suffix) => {
                host.len() > suffix.len() + 1 && host.ends_with(suffix) && {
                    host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                }
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(EgressError::Denied(format!("{scheme}://{host}:{port} is not in http.allow")))
        }
    }
}

fn rule(entry: &str) -> Result<Rule, String> {
    let entry = entry.trim();
    if entry.contains("://") {
        let url = Url::parse(entry).map_err(|e| format!("is not a valid origin: {e}"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err("must be an http:// or https:// origin".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not hold a user name or password".into());
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err("is an origin with a path; write only scheme://host[:port]".into());
        }
        let host = url.host_str().ok_or("has no host")?.to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or("has no port")?;
        return Ok(Rule::Origin(url.scheme().to_owned(), host, port));
    }
    let (wild, host) = match entry.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, entry),
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':' || b == b'[' || b == b']')
        && !host.starts_with('.')
        && !host.ends_with('.');
    if !valid {
        return Err(
            "is neither an origin (https://api.example.com) nor a host pattern (api.example.com, *.example.com)".into(),
        );
    }
    let host = host.to_ascii_lowercase();
    Ok(if wild { Rule::Subdomains(host) } else { Rule::Host(host) })
}

/// A URL without its user name and password, for messages.
fn redacted(url: &Url) -> String {
    let mut clean = url.clone();
    if clean.set_username("").is_ok() && clean.set_password(None).is_ok() {
        return clean.to_string();
    }
    redacted_text(url.as_str())
}

/// URL-ish text with anything between `://` and an `@` before the path
/// replaced: for text that did not parse, and URLs whose user name cannot
/// be cleared (such as `ftp:` ones).
fn redacted_text(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else { return shorten(text) };
    let rest = &text[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => shorten(&format!("{}***{}", &text[..start], &rest[at..])),
        None => shorten(text),
    }
}

/// The client plugs' requests go through.
pub struct Egress {
    allow: Arc<Allowlist>,
    timeout: Duration,
    max_bytes: usize,
    /// `http.maxConcurrent` requests in flight server-wide.
    permits: Arc<tokio::sync::Semaphore>,
    /// Started at the first request: a server whose plugs call nothing
    /// runs no extra thread.
    client: OnceLock<Result<Client, String>>,
    /// Requests by outcome (`/metrics`).
    metrics: Arc<crate::metrics::Metrics>,
}

/// The runtime requests run on, and the reqwest client (its connection
/// pool lives on that runtime).
struct Client {
    runtime: Option<Runtime>,
    http: reqwest::Client,
}

impl Drop for Client {
    /// A runtime dropped inside an async context must shut down in the
    /// background.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A redirect the allowlist refused; found again in reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RedirectRefused(String);

/// A request that redirected more than [`MAX_REDIRECTS`] times.
#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_REDIRECTS} redirects")]
struct TooManyRedirects;

impl Egress {
    pub fn new(settings: &HttpSettings, metrics: Arc<crate::metrics::Metrics>) -> Result<Egress, AllowError> {
        Ok(Egress {
            allow: Arc::new(Allowlist::parse(&settings.allow)?),
            timeout: Duration::from_millis(settings.timeout_ms),
            max_bytes: settings.max_response_bytes,
            permits: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent)),
            client: OnceLock::new(),
            metrics,
        })
    }

    /// Requests in flight now.
    pub fn in_flight(&self, max_concurrent: usize) -> usize {
        max_concurrent.saturating_sub(self.permits.available_permits())
    }

    /// Send `req` and wait for the whole response, blocking this thread.
    /// `cancel` and `deadline` (the plug's client and time limit) cut the
    /// wait short with [`EgressError::Stopped`]. Must not be called on an
    /// async worker (use `block_in_place`).
    pub fn send(&self, req: Request, cancel: &Cancel, deadline: Option<Instant>) -> Result<Response, EgressError> {
        let result = self.exchange(req, cancel, deadline);
        self.metrics.egress(
            match &result {
                Ok(response) => response.status.to_string(),
                Err(EgressError::Denied(_)) => "denied".into(),
                Err(EgressError::BadRequest(_)) => "bad_request".into(),
                Err(EgressError::Timeout { .. }) => "timeout".into(),
                Err(EgressError::Failed(_)) => "failed".into(),
                Err(EgressError::TooLarge { .. }) => "too_large".into(),
                Err(EgressError::Stopped(_)) => "stopped".into(),
            }
            .as_str(),
        );
        result
    }

    fn exchange(&self, req: Request, cancel: &Cancel, deadline: Option<Instant>) -> Result<Response, EgressError> {
        let url = Url::parse(&req.url)
            .map_err(|e| EgressError::BadRequest(format!("`{}` is not a URL: {e}", redacted_text(&req.url))))?;
        self.allow.check(&url)?;
        let client = self.client()?;
        let runtime = client.runtime.as_ref().ok_or_else(|| EgressError::Failed("the HTTP runtime stopped".into()))?;
        let timeout = req.timeout.unwrap_or(self.timeout);
        let fetch = fetch(client.http.clone(), url, req, self.max_bytes, self.permits.clone(), timeout);
        let cancel = cancel.clone();
        let exchange = async move {
            let deadline = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = fetch => result,
                () = cancel.cancelled() => Err(EgressError::Stopped(Stop::Cancelled)),
                () = deadline => Err(EgressError::Stopped(Stop::Deadline)),
            }
        };
        // Not `block_on`: this thread may be inside another runtime (INIT
        // runs during the server's start-up).
        crate::offload::wait(runtime.handle(), exchange)
            .unwrap_or_else(|| Err(EgressError::Failed("the HTTP runtime stopped".into())))
    }

    fn client(&self) -> Result<&Client, EgressError> {
        let client = self.client.get_or_init(|| build_client(self.allow.clone()));
        client.as_ref().map_err(|e| EgressError::Failed(format!("cannot start the HTTP client: {e}")))
    }
}

fn build_client(allow: Arc<Allowlist>) -> Result<Client, String> {
    // reqwest uses the process's rustls provider; the server's TLS already
    // uses ring. An error only means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ssocket-http")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let policy = redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(TooManyRedirects);
        }
        match allow.check(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(err) => {
                let why = err.to_string();
                let why = why.strip_prefix("http_denied: ").unwrap_or(&why).to_owned();
                attempt.error(RedirectRefused(format!("a redirect to {why}")))
            }
        }
    });
    let http = reqwest::Client::builder()
        .redirect(policy)
        .no_proxy()
        .user_agent(concat!("ssocket/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Client { runtime: Some(runtime), http })
}

async fn fetch(
    http: reqwest::Client,
    url: Url,
    req: Request,
    max_bytes: usize,
    permits: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
) -> Result<Response, EgressError> {
    let shown = redacted(&url);
    let mut builder = http.request(req.method, url);
    if let Some((body, content_type)) = req.body {
        if !req.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
            builder = builder.header("content-type", content_type);
        }
        builder = builder.body(body);
    }
    for (name, value) in req.headers {
        builder = builder.header(name, value);
    }
    let exchange = async {
        // Waiting for a slot (`http.maxConcurrent`) is part of the request's time.
        let _permit =
            permits.acquire_owned().await.map_err(|_| EgressError::Failed("the HTTP client is closed".into()))?;
        let mut response = builder.send().await.map_err(|e| failure(&shown, &e))?;
        if response.content_length().is_some_and(|n| n > max_bytes as u64) {
            return Err(EgressError::TooLarge { url: shown.clone(), max: max_bytes });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failure(&shown, &e))? {
            if body.len() + chunk.len() > max_bytes {
                return Err(EgressError::TooLarge { url: shown.clone(), max: max_bytes });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status: response.status().as_u16(),
            headers: headers(response.headers()),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(EgressError::Timeout { url: shown.clone(), ms: timeout.as_millis() }))
}

/// What went wrong, in words: a refused redirect is `http_denied`.
fn failure(url: &str, err: &reqwest::Error) -> EgressError {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RedirectRefused>() {
            return EgressError::Denied(format!("{url}: {refused}"));
        }
        if e.downcast_ref::<TooManyRedirects>().is_some() {
            return EgressError::Failed(format!("{url}: more than {MAX_REDIRECTS} redirects"));
        }
        source = e.source();
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    EgressError::Failed(text)
}

fn headers(map: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in map {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.iter_mut().find(|(n, _)| n == name.as_str()) {
            Some((_, joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            None => out.push((name.as_str().to_owned(), value)),
        }
    }
    out
}

/// At most 100 characters of a string, for messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> Allowlist {
        Allowlist::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn check(list: &Allowlist, url: &str) -> Result<(), EgressError> {
        list.check(&Url::parse(url).unwrap())
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let list = allow(&["https://api.example.com", "http://127.0.0.1:9000"]);
        assert!(check(&list, "https://api.example.com/v1/x?y=1").is_ok());
        assert!(check(&list, "https://API.example.com:443/").is_ok(), "case and default port");
        assert!(check(&list, "http://api.example.com/").is_err(), "other scheme");
        assert!(check(&list, "https://api.example.com:8443/").is_err(), "other port");
        assert!(check(&list, "http://127.0.0.1:9000/x").is_ok());
        assert!(check(&list, "http://127.0.0.1:9001/x").is_err());
        assert!(check(&list, "https://evil.example.com/").is_err());
    }

    #[test]
    fn host_patterns_match_hosts_and_subdomains() {
        let list = allow(&["*.example.com", "exact.org"]);
        assert!(check(&list, "https://a.example.com/").is_ok());
        assert!(check(&list, "http://a.b.example.com:8080/").is_ok());
        assert!(check(&list, "https://example.com/").is_err(), "the pattern is for subdomains");
        assert!(check(&list, "https://badexample.com/").is_err());
        assert!(check(&list, "https://example.com.evil.net/").is_err());
        assert!(check(&list, "https://exact.org/").is_ok());
        assert!(check(&list, "https://sub.exact.org/").is_err());
    }

    #[test]
    fn refuses_other_schemes_and_credentials() {
        let list = allow(&["*.example.com", "https://api.example.com"]);
        let err = check(&list, "ftp://a.example.com/x").unwrap_err();
        assert!(err.to_string().starts_with("http_denied: ") && err.to_string().contains("only http and https"));
        let err = check(&list, "https://user:secret@api.example.com/").unwrap_err();
        assert_eq!(err.code(), ErrorCode::HttpDenied);
        assert!(!err.to_string().contains("secret"), "the password is not repeated: {err}");
        assert!(check(&allow(&[]), "https://api.example.com/").is_err(), "empty allows nothing");
    }

    #[test]
    fn credentials_never_reach_a_message() {
        let list = allow(&["http://127.0.0.1:9000"]);
        for url in ["ftp://user:s3cret@127.0.0.1:9000/x", "http://user:s3cret@127.0.0.1:9000/"] {
            let err = check(&list, url).unwrap_err().to_string();
            assert!(!err.contains("s3cret") && !err.contains("user:"), "{err}");
        }
        for text in ["http://user:s3cret@127.0.0.1:99999/x", "weird://a:s3cret@b@host/p?q=1"] {
            let shown = redacted_text(text);
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert_eq!(redacted_text("http://h/p@x"), "http://h/p@x", "an @ in the path is not a user name");
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["ftp://x.example", "https://x.example/path", "https://u:p@x.example", "*", "", "a b", "*.", ".x"] {
            let err = Allowlist::parse(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.entry, bad);
            assert!(err.to_string().starts_with(&format!("http.allow entry `{bad}`")), "{err}");
        }
        assert!(Allowlist::parse(&["https://x.example/".to_string()]).is_ok(), "a trailing slash is fine");
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut map = reqwest::header::HeaderMap::new();
        map.append("set-cookie", "a=1".parse().unwrap());
        map.append("set-cookie", "b=2".parse().unwrap());
        map.append("content-type", "text/plain".parse().unwrap());
        let h = headers(&map);
        assert!(h.contains(&("set-cookie".into(), "a=1, b=2".into())));
        assert!(h.contains(&("content-type".into(), "text/plain".into())));
    }
}
