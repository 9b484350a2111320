//! TLS (`secure = true`): load the PEM certificate chain and key at
//! start-up. warp 0.4 has no TLS of its own; [`crate::listener`] runs the
//! handshake (tokio-rustls) in front of the routes.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

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
