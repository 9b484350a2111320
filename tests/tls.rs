//! `secure = true`: wss:// end to end with a self-signed certificate made
//! here, and clear start-up errors for certificate and key files that
//! cannot be used.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{example_plugs, settings, Client, TestServer};
use serde_json::json;
use ssocket::config::Settings;
use ssocket::protocol::EventType;
use ssocket::server::start;
use tokio_tungstenite::{connect_async, connect_async_tls_with_config, Connector};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM
/// files into a temporary folder.
struct TestCert {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn make_cert() -> TestCert {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("self-signed certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    TestCert { dir, cert, key, der: made.cert.der().clone() }
}

/// Test settings serving wss on 127.0.0.1:0 with the given files.
fn secure_settings(cert: &Path, key: &Path) -> Settings {
    let mut s = settings(&example_plugs());
    s.secure = true;
    s.tls.listen.hostname = "127.0.0.1".into();
    s.tls.listen.port = 0;
    s.tls.cert_file = cert.to_path_buf();
    s.tls.key_file = key.to_path_buf();
    s
}

/// A client configuration that trusts only `cert`.
fn trusting(cert: &rustls::pki_types::CertificateDer<'static>) -> Connector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("trust the test certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Connector::Rustls(Arc::new(config))
}

async fn wss_client(url: &str, cert: &TestCert) -> Client {
    let (ws, _) = tokio::time::timeout(
        common::REPLY_TIMEOUT,
        connect_async_tls_with_config(url, None, false, Some(trusting(&cert.der))),
    )
    .await
    .expect("connects in time")
    .expect("wss connects");
    Client { ws }
}

/// The error `start` returns for these settings, as text.
async fn start_error(s: Settings) -> String {
    match start(s).await {
        Ok(running) => {
            running.stop().await;
            panic!("the server started");
        }
        Err(err) => err.to_string(),
    }
}

#[tokio::test]
async fn wss_echo_with_a_trusted_self_signed_certificate() {
    let cert = make_cert();
    // Hold the INSECURE port: a server that bound it instead of TLS fails.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut s = secure_settings(&cert.cert, &cert.key);
    s.insecure.port = taken.local_addr().expect("addr").port();
    let server = TestServer { running: start(s).await.expect("server starts"), dir: None };
    let port = server.running.addr.port();

    for host in ["localhost", "127.0.0.1"] {
        let mut c = wss_client(&format!("wss://{host}:{port}/"), &cert).await;
        let r = c.request("echo", json!({"over": "tls", "host": host})).await;
        assert_eq!(
            (r.event_type, r.event.as_str(), r.payload),
            (EventType::MESSAGE, "echo", json!({"over": "tls", "host": host}))
        );
        c.close().await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let cert = make_cert();
    let other = make_cert();
    let server =
        TestServer { running: start(secure_settings(&cert.cert, &cert.key)).await.expect("starts"), dir: None };
    let url = format!("wss://localhost:{}/", server.running.addr.port());
    let result = tokio::time::timeout(
        common::REPLY_TIMEOUT,
        connect_async_tls_with_config(&url, None, false, Some(trusting(&other.der))),
    )
    .await
    .expect("fails in time");
    assert!(result.is_err(), "an untrusted certificate was accepted");
    // The server is unaffected.
    let mut c = wss_client(&url, &cert).await;
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn plain_ws_to_the_tls_port_fails_cleanly_and_wss_keeps_working() {
    let cert = make_cert();
    let server =
        TestServer { running: start(secure_settings(&cert.cert, &cert.key)).await.expect("starts"), dir: None };
    let port = server.running.addr.port();

    let plain = tokio::time::timeout(common::REPLY_TIMEOUT, connect_async(format!("ws://127.0.0.1:{port}/")))
        .await
        .expect("a plain client gets an answer in time");
    assert!(plain.is_err(), "a plain ws:// client was served on the TLS port");

    // Garbage bytes and a silent client (handshake never finished) do not
    // stop others from connecting.
    use tokio::io::AsyncWriteExt;
    let mut garbage = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
    garbage.write_all(b"\x16\x03\x01\x00\x05hello").await.expect("write");
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");

    let mut c = wss_client(&format!("wss://localhost:{port}/"), &cert).await;
    let r = c.request("echo", json!([1, 2, 3])).await;
    assert_eq!(r.payload, json!([1, 2, 3]));
    c.close().await;
    server.stop().await;
}

#[tokio::test]
async fn stopping_closes_wss_clients_with_going_away() {
    let cert = make_cert();
    let server =
        TestServer { running: start(secure_settings(&cert.cert, &cert.key)).await.expect("starts"), dir: None };
    let mut c = wss_client(&format!("wss://localhost:{}/", server.running.addr.port()), &cert).await;
    c.ping().await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(c.next().await, common::Received::Closed(Some(ssocket::server::CLOSE_GOING_AWAY)));
    drop(c);
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("stops in time").expect("stop task");
}

#[tokio::test]
async fn a_missing_certificate_file_is_a_start_error_naming_it() {
    let cert = make_cert();
    let missing = cert.dir.path().join("nope.pem");
    let err = start_error(secure_settings(&missing, &cert.key)).await;
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("TLS.certFile"), "{err}");
}

#[tokio::test]
async fn a_certificate_file_holding_garbage_is_a_start_error_naming_it() {
    let cert = make_cert();
    let garbage = cert.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").expect("write");
    let err = start_error(secure_settings(&garbage, &cert.key)).await;
    assert!(err.contains(&garbage.display().to_string()) && err.contains("no certificate"), "{err}");

    // PEM markers around bytes that are not base64.
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").expect("write");
    let err = start_error(secure_settings(&garbage, &cert.key)).await;
    assert!(err.contains(&garbage.display().to_string()), "{err}");

    // Valid base64 that is not a certificate.
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n")
        .expect("write");
    let err = start_error(secure_settings(&garbage, &cert.key)).await;
    assert!(err.contains(&garbage.display().to_string()), "{err}");
}

#[tokio::test]
async fn a_missing_or_unusable_key_file_is_a_start_error_naming_it() {
    let cert = make_cert();
    let missing = cert.dir.path().join("missing-key.pem");
    let err = start_error(secure_settings(&cert.cert, &missing)).await;
    assert!(err.contains(&missing.display().to_string()) && err.contains("TLS.keyFile"), "{err}");

    // A key file that holds no key (here: the certificate).
    let err = start_error(secure_settings(&cert.cert, &cert.cert)).await;
    assert!(err.contains(&cert.cert.display().to_string()) && err.contains("no private key"), "{err}");

    // A key that is not the certificate's.
    let other = make_cert();
    let err = start_error(secure_settings(&cert.cert, &other.key)).await;
    assert!(err.contains(&other.key.display().to_string()) && err.contains("does not match"), "{err}");
}

#[tokio::test]
async fn tls_files_are_not_read_when_secure_is_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = secure_settings(&dir.path().join("no-cert.pem"), &dir.path().join("no-key.pem"));
    s.secure = false;
    let server = TestServer { running: start(s).await.expect("starts without TLS files"), dir: None };
    let mut c = server.client().await;
    c.ping().await;
    server.stop().await;
}
