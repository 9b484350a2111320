//! TLS (`secure = true`): load the PEM certificate chain and key at
//! start-up, then accept, handshake and hand each connection to the warp
//! routes through hyper-util.
//!
//! warp 0.4 has no TLS of its own, so this is the loop warp's server runs
//! internally with a tokio-rustls handshake in front. Each handshake runs in
//! its own task under [`HANDSHAKE_TIMEOUT`]: a slow or broken client never
//! holds up accepting, and its failure is logged at debug level only.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::server::{routes, App};

/// A client that has not finished its TLS handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for plain HTTP exchanges in flight (upgraded
/// WebSockets are closed by the server separately).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A certificate or key that cannot be used, and which file it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub file: PathBuf,
    pub message: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for TlsError {}

fn fail(file: &Path, message: impl Into<String>) -> TlsError {
    TlsError { file: file.to_path_buf(), message: message.into() }
}

/// Read a certificate chain (`TLS.certFile`) and private key
/// (`TLS.keyFile`), both PEM, into a server configuration offering
/// HTTP/1.1 (the only protocol WebSockets upgrade from here).
pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Load the key on its own first, so an unusable key names the key file.
    provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| fail(key_file, format!("unusable private key (TLS.keyFile): {e}")))?;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(cert_file, format!("no TLS protocol version available: {e}")))?
        .with_no_client_auth();
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => fail(
            key_file,
            format!("private key (TLS.keyFile) does not match the certificate in {}: {e}", cert_file.display()),
        ),
        rustls::Error::InvalidCertificate(e) => {
            fail(cert_file, format!("the first certificate is not valid X.509 (TLS.certFile): {e:?}"))
        }
        e => fail(cert_file, format!("unusable certificate (TLS.certFile): {e}")),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_file(file: &Path, what: &str, key: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            format!("; set {key} to a PEM file, or turn `secure` off")
        } else {
            String::new()
        };
        fail(file, format!("cannot read the {what} ({key}): {e}{hint}"))
    })
}

fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(file, "certificate file", "TLS.certFile")?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| fail(file, format!("not a valid PEM certificate chain (TLS.certFile): {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            file,
            "no certificate found (TLS.certFile): expected PEM `-----BEGIN CERTIFICATE-----` sections",
        ));
    }
    Ok(certs)
}

fn read_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(file, "private key file", "TLS.keyFile")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => fail(
            file,
            "no private key found (TLS.keyFile): expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` section",
        ),
        e => fail(file, format!("not a valid PEM private key (TLS.keyFile): {e}")),
    })
}

/// Serve the app's routes over TLS on `listener` until `shutdown` resolves.
/// Then stop accepting and give HTTP exchanges in flight a moment to end;
/// the caller closes the WebSockets.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(config);
    let filter = routes(app);
    let graceful = GracefulShutdown::new();
    // Dropped on shutdown: handshakes still running give up at once.
    let (stopping, stopped) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    if !is_connection_error(&err) {
                        // Probably out of file descriptors: wait for some to free up.
                        tracing::error!("accept error: {err}");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let svc = TowerToHyperService::new(warp::service(filter.clone()));
        let watcher = graceful.watcher();
        let mut stop = stopped.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let tls = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!("TLS handshake with {peer} failed: {err}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake with {peer} timed out");
                        return;
                    }
                },
                _ = stop.changed() => return,
            };
            let builder = Builder::new(TokioExecutor::new()).http1_only();
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!("connection from {peer} ended with an error: {err}");
            }
        });
    }
    drop(listener);
    drop(stopping);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::debug!("some TLS connections were still open after {DRAIN_TIMEOUT:?}");
    }
}

/// Errors from `accept` that concern one connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
