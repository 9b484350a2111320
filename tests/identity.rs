//! Identity at connect (SPEC 10.1, issue 13), end to end: real WebSocket
//! clients bring a token in `?token=` or an `Authorization: Bearer` header;
//! the server verifies it (HS256 secret, RS256/ES256 public key) or lets
//! INIT's `server.on_auth` decide, and plugs see who the client is as
//! `msg.user`, `conn::user()` and in `rooms::presence`. Every refusal is an
//! HTTP 401 with `{error: "unauthorized", message}` and no WebSocket.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use ssocket::config::Settings;
use ssocket::protocol::EventType;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Error as WsError;
use warp::Filter;

/// The HS256 secret of the servers that verify HS256 tokens.
const SECRET: &str = "correct horse battery staple";

/// A fixed RSA test key pair (2048 bits, made once with `openssl genpkey
/// -algorithm RSA -pkeyopt rsa_keygen_bits:2048`): ring, under rcgen, cannot
/// generate RSA keys.
const RSA_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDt8TnmFIk2l3av
mklaAt1oJu2pHM45ROYoA82RTtDoow3sXcSPOkHK6z+TXl5ex4inrAX0tVVzcD6q
7sqjr9ipAJ4T08EOjtqcQWSeFs6Dv/r27jYW4Y+t/r7DiqXTam9JkSejbHebKryq
ezJVHoCPYrcBqUQAGz0lv+3RezmndUPnsP561e9ItleNU0NZorNSkEMbnsQ8xjbF
qvuiIJGqVnwETedujHLP7IXFFK0JeTsSSoa0VFGnY03qqVKQOBYlVfFrPV5oyYfJ
drsiAHHVf6zPMhimH+PdC3m1mK61U/EyC1tNemBIO1npCC7IcA02heY2fa3wawcF
H7/1qgR5AgMBAAECgf9SuIpocrtBP2cDpZ/aqyROETqOkHUhc9KQFsJgwgXe2tD8
W5z6LkaxRRfVI/mq+bOIl0V6zY/nkh43Ts0kGv43wv8x5Ww4o3Fc4V8ZltQ0+YlG
T4p+aeyJkQbA9HKyDU6jRNOC/TKXv0PYAPx+mxwWvTriWPZLEy0u8oq7SRvCG1bi
b363mSAbXO6+kRaHgIH7ct91JthNX3+vOH5wduglZ5jegWFXYd9LJHrZBMQz65Wk
yLHOYSLGlIEoKggoZzjpXL7o3iOpTbs35QM+qi8+ynICSF98M7Cy2jghbUqBeTc+
YFlxKZQh3BhJxtI5E+n8JckiFXu4Eh7giqZMnRECgYEA+VfLFZIBmjxTdu2yBNO6
Uor/PtwA4cMY9f7z1eDiMzdeUA1dz2MYm5n6blO8NpiM8ecssmYUasxKSopYAkln
Bqn2/nHurK8uKSkh3KbxUtseGp+in8v33UUiLNW6kwiM4yafSTJMmjmwWXu4SjYN
M4mztbGXovUFIjHJ7+VeJ+UCgYEA9EuDBTv6LaCN6PGb+TaMOf5X58D7740vQ3y8
YyMpPQ1mNq67mex+u2EMoYnMoPNDMIj6Vuw9MTI0+KCNLNViqeb+Ixcu6bs1kOZw
9/esFpuH2qwHLru9GCNLVY14OKHzAHnmDOAtttPBAABg1jDhBKQDv4gmbVi5xVW+
uYKYeQUCgYEA8Mdcr0m9Dmmu16uVOqASzt62uMbOezRhCDvYzvJIvNh81KTzr+6r
tqasdJmbqMULZhWszeFRWghIvU52yk6DlKXQg8kVh9/qnYjA0EjNxQsfOOpqqhDX
G+9EnzMM5itdkYScUJyn6E5JA0A7qD4l5VzWE2CZY51kBa86p9RAZhkCgYEAkrqk
GEm86xjLA4XSu+2ybcbBf7Ze27P+FlfeQuFEjKH2qZNrpHjyaZNR5diBao6R5Z3w
VrMP0fOo80hjYvFLkGbob6UmDUbfVofChH1jBDUodQPsUHp8ifnw7pLJCaLj9H5C
2arwaiZnfpu7jgrPrFziz3B0PCsVcVwd8Qhqkg0CgYEAgip/1vhaAuc3h7+L/wnv
dxNSL5u78XIaO1kOSRb0Wv/AfTRoq3B/zklVkZsRTBSz6M8dcUkubkSMF0nVA2aG
fKnSAJz4DhOGQOMI6Ntaty6pV//u4c6fKkJEWFuZQbt9VKNXQ4pB5tryhMeDFL/n
vrCtSnP/jZugXBGj6rL876Q=
-----END PRIVATE KEY-----
";

/// The public half of [`RSA_PRIVATE_PEM`] (`openssl pkey -pubout`).
const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA7fE55hSJNpd2r5pJWgLd
aCbtqRzOOUTmKAPNkU7Q6KMN7F3EjzpByus/k15eXseIp6wF9LVVc3A+qu7Ko6/Y
qQCeE9PBDo7anEFknhbOg7/69u42FuGPrf6+w4ql02pvSZEno2x3myq8qnsyVR6A
j2K3AalEABs9Jb/t0Xs5p3VD57D+etXvSLZXjVNDWaKzUpBDG57EPMY2xar7oiCR
qlZ8BE3nboxyz+yFxRStCXk7EkqGtFRRp2NN6qlSkDgWJVXxaz1eaMmHyXa7IgBx
1X+szzIYph/j3Qt5tZiutVPxMgtbTXpgSDtZ6QguyHANNoXmNn2t8GsHBR+/9aoE
eQIDAQAB
-----END PUBLIC KEY-----
";

/// `whoami` answers what the plug knows of its sender; `presence` puts the
/// sender in a room and answers the room's presence list; `auth_calls`
/// answers how often INIT's `on_auth` ran (when it counts).
const PLUGS: &[(&str, &str)] = &[
    (
        "whoami.rhai",
        r#"fn whoami(msg, yield_msg) {
            yield_msg(#{ payload: #{
                client: msg.client,
                user: msg.user,
                has_user: "user" in msg,
                conn_user: conn::user(),
            } });
        }"#,
    ),
    (
        "presence.rhai",
        r#"fn presence(msg, yield_msg) {
            rooms::join(msg.payload.room);
            yield_msg(#{ payload: rooms::presence(msg.payload.room) });
        }"#,
    ),
    ("auth_calls.rhai", r#"fn auth_calls(msg, yield_msg) { yield_msg(#{ payload: store::get("auth_calls") }); }"#),
];

// ------------------------------------------------------------ helpers

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// An HS256 token for `claims` signed with `secret`.
fn hs256(claims: &Value, secret: &[u8]) -> String {
    signed(Algorithm::HS256, claims, secret)
}

/// An HMAC token (HS256/384/512) for `claims` signed with `secret`.
fn signed(alg: Algorithm, claims: &Value, secret: &[u8]) -> String {
    let key = EncodingKey::from_secret(secret).expect("an HMAC key");
    encode(&Header::new(alg), claims, &key).expect("token")
}

fn rs256(claims: &Value) -> String {
    rsa_signed(Algorithm::RS256, claims)
}

/// A token signed with the RSA test key under `alg` (RS*/PS*).
fn rsa_signed(alg: Algorithm, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("the RSA test key");
    encode(&Header::new(alg), claims, &key).expect("token")
}

fn es256(claims: &Value, private_pem: &str) -> String {
    let key = EncodingKey::from_ec_pem(private_pem.as_bytes()).expect("an EC key");
    encode(&Header::new(Algorithm::ES256), claims, &key).expect("token")
}

/// Base64url without padding, for hand-made tokens.
fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | *b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token: header `{"alg":"none"}`, the claims, an empty signature.
fn alg_none(claims: &Value) -> String {
    format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), b64url(claims.to_string().as_bytes()))
}

/// Claims that pass every time check.
fn good_claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "name": format!("{sub} the tester"),
        "roles": ["reader", "writer"],
        "iss": "the tests",
        "aud": "some audience",
        "iat": now(),
        "exp": now() + 3600,
    })
}

/// What a refused upgrade answered.
#[derive(Debug)]
struct Refusal {
    status: u16,
    content_type: String,
    body: Value,
}

/// Open a WebSocket at `/` + `query` with extra request headers; the
/// client, or what the server answered instead of switching protocols.
async fn connect_with(server: &TestServer, query: &str, headers: &[(&str, &str)]) -> Result<Client, Refusal> {
    let url = format!("{}{}", server.url(), query);
    let mut request = url.as_str().into_client_request().expect("a valid request");
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    let outcome = tokio::time::timeout(REPLY_TIMEOUT, connect_async(request)).await.expect("an answer in time");
    match outcome {
        Ok((ws, response)) => {
            assert_eq!(response.status().as_u16(), 101, "{response:?}");
            Ok(Client { ws })
        }
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or_default().to_owned())
                .unwrap_or_default();
            let raw = response.body().clone().unwrap_or_default();
            let body = serde_json::from_slice(&raw)
                .unwrap_or_else(|e| panic!("a {status} answer whose body is not JSON ({e}): {raw:?}"));
            Err(Refusal { status, content_type, body })
        }
        Err(other) => panic!("the upgrade failed without an HTTP answer: {other}"),
    }
}

/// Connect with an optional `?token=`.
async fn connect_token(server: &TestServer, token: Option<&str>) -> Result<Client, Refusal> {
    let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
    connect_with(server, &query, &[]).await
}

/// Connect with an `Authorization: Bearer` header.
async fn connect_bearer(server: &TestServer, token: &str) -> Result<Client, Refusal> {
    connect_with(server, "", &[("authorization", &format!("Bearer {token}"))]).await
}

#[track_caller]
fn accepted(outcome: Result<Client, Refusal>) -> Client {
    match outcome {
        Ok(client) => client,
        Err(refusal) => panic!("expected the upgrade to succeed, got {refusal:?}"),
    }
}

/// Assert a refusal is a 401 with a JSON `{error: "unauthorized", message}`;
/// returns the message.
#[track_caller]
fn refused(outcome: Result<Client, Refusal>) -> String {
    let refusal = match outcome {
        Ok(_) => panic!("expected HTTP 401, but the upgrade succeeded"),
        Err(refusal) => refusal,
    };
    assert_eq!(refusal.status, 401, "{refusal:?}");
    assert!(refusal.content_type.starts_with("application/json"), "{refusal:?}");
    assert_eq!(refusal.body["error"], json!("unauthorized"), "{refusal:?}");
    let message = refusal.body["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "a refusal says why: {refusal:?}");
    message
}

/// What `whoami` answers for this client.
async fn whoami(c: &mut Client) -> Value {
    let r = c.request("whoami", json!({})).await;
    assert_eq!((r.event_type, r.event.as_str()), (EventType::MESSAGE, "whoami"), "{r:?}");
    r.payload
}

/// Assert the client is anonymous to plugs; returns its id.
async fn assert_anonymous(c: &mut Client) -> i64 {
    let me = whoami(c).await;
    assert_eq!(me["user"], Value::Null, "{me}");
    assert_eq!(me["has_user"], json!(false), "msg.user is absent when anonymous: {me}");
    assert_eq!(me["conn_user"], Value::Null, "{me}");
    me["client"].as_i64().expect("an id")
}

/// Assert plugs see `user` as this client's identity.
async fn assert_user(c: &mut Client, user: &Value) {
    let me = whoami(c).await;
    assert_eq!(&me["user"], user, "msg.user: {me}");
    assert_eq!(me["has_user"], json!(true), "{me}");
    assert_eq!(&me["conn_user"], user, "conn::user(): {me}");
}

async fn hs_server() -> TestServer {
    start_with_plugs(PLUGS, |s| s.auth.jwt_secret = SECRET.into()).await
}

/// Write a PEM file for `auth.jwtPublicKeyFile`; keep the dir alive.
fn pem_file(pem: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("public.pem");
    std::fs::write(&path, pem).expect("write the public key");
    (dir, path)
}

/// A server whose INIT is `source` (plus `tweak`); keep the dir alive.
async fn start_with_init(source: &str, tweak: impl FnOnce(&mut Settings)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("INIT.rhai");
    std::fs::write(&path, source).expect("write INIT.rhai");
    let server = start_with_plugs(PLUGS, |s| {
        s.init_file = path;
        tweak(s);
    })
    .await;
    (server, dir)
}

// ------------------------------------------------------------ HS256

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_hs256_token_in_the_query_is_the_identity_plugs_see() {
    let server = hs_server().await;
    let claims = good_claims("ada");
    let mut c = accepted(connect_token(&server, Some(&hs256(&claims, SECRET.as_bytes()))).await);
    assert_user(&mut c, &claims).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_hs256_token_in_a_bearer_header_is_the_identity_plugs_see() {
    let server = hs_server().await;
    let claims = good_claims("grace");
    let token = hs256(&claims, SECRET.as_bytes());
    let mut c = accepted(connect_bearer(&server, &token).await);
    assert_user(&mut c, &claims).await;
    // The scheme's name in any case, as HTTP has it.
    let other = good_claims("linus");
    let mut d = accepted(
        connect_with(&server, "", &[("authorization", &format!("bearer {}", hs256(&other, SECRET.as_bytes())))]).await,
    );
    assert_user(&mut d, &other).await;
    // Each connection keeps its own identity.
    assert_user(&mut c, &claims).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_without_exp_are_accepted_and_a_future_exp_passes() {
    let server = hs_server().await;
    let claims = json!({"sub": "no-exp", "n": 1});
    let mut c = accepted(connect_token(&server, Some(&hs256(&claims, SECRET.as_bytes()))).await);
    assert_user(&mut c, &claims).await;
    let claims = json!({"sub": "nbf-past", "nbf": now() - 60, "exp": now() + 60});
    let mut d = accepted(connect_token(&server, Some(&hs256(&claims, SECRET.as_bytes()))).await);
    assert_user(&mut d, &claims).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_client_is_anonymous_when_not_required() {
    // With a secret configured, and with no auth settings at all.
    let server = hs_server().await;
    let mut c = accepted(connect_token(&server, None).await);
    assert_anonymous(&mut c).await;
    server.stop().await;

    let server = start_with_plugs(PLUGS, |_| {}).await;
    let mut c = accepted(connect_token(&server, None).await);
    assert_anonymous(&mut c).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_401_and_never_become_a_websocket() {
    let server = hs_server().await;
    let good = hs256(&good_claims("ada"), SECRET.as_bytes());
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64url(br#"{"sub":"admin"}"#), parts[2]);
    let cases: Vec<(&str, String, &str)> = vec![
        ("not a JWT at all", "garbage".into(), "well-formed"),
        ("three parts that are not base64 JSON", "a.b.c".into(), "well-formed"),
        ("two parts", format!("{}.{}", parts[0], parts[1]), "well-formed"),
        ("signed with another key", hs256(&good_claims("ada"), b"another secret"), "signature"),
        ("claims changed after signing", tampered, "signature"),
        ("expired", hs256(&json!({"sub": "ada", "exp": now() - 60}), SECRET.as_bytes()), "expired"),
        ("not valid yet", hs256(&json!({"sub": "ada", "nbf": now() + 3600}), SECRET.as_bytes()), "not valid yet"),
        ("alg none", alg_none(&good_claims("ada")), ""),
        ("HS512 with the right secret", signed(Algorithm::HS512, &good_claims("ada"), SECRET.as_bytes()), "algorithm"),
        ("HS384 with the right secret", signed(Algorithm::HS384, &good_claims("ada"), SECRET.as_bytes()), "algorithm"),
        (
            "alg None",
            format!(
                "{}.{}.",
                b64url(br#"{"alg":"None","typ":"JWT"}"#),
                b64url(good_claims("ada").to_string().as_bytes())
            ),
            "",
        ),
        ("alg none with the good signature", format!("{}.{}.{}", b64url(br#"{"alg":"none"}"#), parts[1], parts[2]), ""),
    ];
    for (what, token, why) in &cases {
        let message = refused(connect_token(&server, Some(token)).await);
        assert!(message.contains(why), "{what}: the message should say `{why}`: {message}");
        let message = refused(connect_bearer(&server, token).await);
        assert!(message.contains(why), "{what} (bearer): the message should say `{why}`: {message}");
    }
    assert_eq!(server.connected(), 0, "no refused client was registered");
    // The server is unaffected: a good token still connects.
    let mut c = accepted(connect_token(&server, Some(&good)).await);
    assert_eq!(whoami(&mut c).await["user"]["sub"], json!("ada"));
    assert_eq!(server.connected(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_required_refuses_a_missing_token_and_accepts_a_valid_one() {
    let server = start_with_plugs(PLUGS, |s| {
        s.auth.jwt_secret = SECRET.into();
        s.auth.required = true;
    })
    .await;
    let message = refused(connect_token(&server, None).await);
    assert!(message.contains("auth.required"), "{message}");
    // An empty token is no token.
    refused(connect_with(&server, "?token=", &[]).await);
    refused(connect_with(&server, "", &[("authorization", "Basic dXNlcjpwYXNz")]).await);
    refused(connect_token(&server, Some("garbage")).await);
    assert_eq!(server.connected(), 0);
    let claims = good_claims("ada");
    let mut c = accepted(connect_token(&server, Some(&hs256(&claims, SECRET.as_bytes()))).await);
    assert_user(&mut c, &claims).await;
    server.stop().await;
}

// ------------------------------------------------------------ RS256 / ES256

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rs256_server_accepts_rs256_and_refuses_algorithm_confusion() {
    let (_keys, path) = pem_file(RSA_PUBLIC_PEM);
    let server = start_with_plugs(PLUGS, |s| s.auth.jwt_public_key_file = path).await;
    let claims = good_claims("rsa-user");
    let mut c = accepted(connect_token(&server, Some(&rs256(&claims))).await);
    assert_user(&mut c, &claims).await;
    let mut d = accepted(connect_bearer(&server, &rs256(&claims)).await);
    assert_user(&mut d, &claims).await;

    // HS256 with the public key's text as the HMAC secret: the classic
    // algorithm-confusion forgery.
    let forged = hs256(&good_claims("admin"), RSA_PUBLIC_PEM.as_bytes());
    refused(connect_token(&server, Some(&forged)).await);
    refused(connect_bearer(&server, &forged).await);
    let forged_trimmed = hs256(&good_claims("admin"), RSA_PUBLIC_PEM.trim().as_bytes());
    refused(connect_token(&server, Some(&forged_trimmed)).await);
    // The right key under another RSA algorithm: the algorithm is pinned.
    for alg in [Algorithm::RS512, Algorithm::RS384, Algorithm::PS256] {
        let message = refused(connect_token(&server, Some(&rsa_signed(alg, &claims))).await);
        assert!(message.contains("algorithm"), "{alg:?}: {message}");
    }
    // alg none, an ES256 token, an expired RS256 token.
    refused(connect_token(&server, Some(&alg_none(&good_claims("admin")))).await);
    let ec = rcgen::KeyPair::generate().expect("an EC key");
    refused(connect_token(&server, Some(&es256(&good_claims("admin"), &ec.serialize_pem()))).await);
    let message = refused(connect_token(&server, Some(&rs256(&json!({"sub": "x", "exp": now() - 60})))).await);
    assert!(message.contains("expired"), "{message}");
    assert_eq!(server.connected(), 2, "only the two good clients");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_es256_server_accepts_tokens_of_its_ec_key_only() {
    let key = rcgen::KeyPair::generate().expect("an EC P-256 key");
    let (_keys, path) = pem_file(&key.public_key_pem());
    let server = start_with_plugs(PLUGS, |s| s.auth.jwt_public_key_file = path).await;
    let claims = good_claims("ec-user");
    let mut c = accepted(connect_token(&server, Some(&es256(&claims, &key.serialize_pem()))).await);
    assert_user(&mut c, &claims).await;

    // Another EC key's signature, HS256 with the public key text, an
    // RS256 token, alg none: all refused.
    let other = rcgen::KeyPair::generate().expect("another EC key");
    let message = refused(connect_token(&server, Some(&es256(&claims, &other.serialize_pem()))).await);
    assert!(message.contains("signature"), "{message}");
    refused(connect_token(&server, Some(&hs256(&claims, key.public_key_pem().as_bytes()))).await);
    refused(connect_token(&server, Some(&rs256(&claims))).await);
    refused(connect_token(&server, Some(&alg_none(&claims))).await);
    // Anonymous is still fine (not required).
    let mut anon = accepted(connect_token(&server, None).await);
    assert_anonymous(&mut anon).await;
    server.stop().await;
}

// ------------------------------------------------------------ on_auth

/// on_auth by `?mode=`: `seen` accepts with the whole `req` as identity,
/// `anon` accepts anonymously, `throw` / `throw_map` refuse, `number`
/// returns something that is neither, `spin` loops forever, `nap` sleeps
/// past any limit. Every call is counted in the store.
const ON_AUTH: &str = r#"
fn INIT(server) {
    server.on_auth(|req| {
        store::incr("auth_calls");
        let mode = req.query.mode;
        if mode == "anon" { return (); }
        if mode == "throw" { throw "go away: " + req.query.why; }
        if mode == "throw_map" { throw #{ error: "nope", message: "a map refusal" }; }
        if mode == "number" { return 42; }
        if mode == "spin" { let n = 0; loop { n += 1; } }
        if mode == "nap" { sleep(60000); }
        #{ seen: req, via: "on_auth" }
    });
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_auth_sees_headers_query_path_remote_token_and_claims() {
    let (server, _init) = start_with_init(ON_AUTH, |s| s.auth.jwt_secret = SECRET.into()).await;
    let claims = good_claims("ada");
    let token = hs256(&claims, SECRET.as_bytes());
    let query = format!("?mode=seen&extra=a%20b&token={token}");
    let mut c = accepted(connect_with(&server, &query, &[("X-Test-Header", "Hello There")]).await);
    let me = whoami(&mut c).await;
    let user = &me["user"];
    assert_eq!(user["via"], json!("on_auth"), "the identity is what on_auth returned: {me}");
    assert_eq!(&me["conn_user"], user);
    let req = &user["seen"];
    assert_eq!(req["path"], json!("/"), "{req}");
    assert_eq!(req["query"], json!({"mode": "seen", "extra": "a b", "token": token}), "{req}");
    assert_eq!(req["token"], json!(token), "{req}");
    assert_eq!(req["claims"], claims, "claims of the verified token: {req}");
    let remote = req["remote"].as_str().unwrap_or_default();
    assert!(remote.starts_with("127.0.0.1:") && remote.len() > "127.0.0.1:".len(), "remote: {req}");
    let headers = req["headers"].as_object().unwrap_or_else(|| panic!("headers is a map: {req}"));
    assert_eq!(headers.get("x-test-header"), Some(&json!("Hello There")), "{req}");
    assert!(headers.contains_key("host") && headers.contains_key("sec-websocket-key"), "{req}");
    assert!(headers.keys().all(|k| *k == k.to_ascii_lowercase()), "header names are lowercase: {req}");

    // A bearer token: req.token has it, the query has none.
    let mut d = accepted(connect_with(&server, "?mode=seen", &[("Authorization", &format!("Bearer {token}"))]).await);
    let req = whoami(&mut d).await["user"]["seen"].clone();
    assert_eq!(req["token"], json!(token), "{req}");
    assert_eq!(req["claims"], claims, "{req}");
    assert_eq!(req["query"], json!({"mode": "seen"}), "{req}");
    assert_eq!(req["headers"]["authorization"], json!(format!("Bearer {token}")), "{req}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_auth_without_a_secret_gets_the_raw_token_and_no_claims() {
    let (server, _init) = start_with_init(ON_AUTH, |_| {}).await;
    let mut c = accepted(connect_with(&server, "?mode=seen&token=session-42", &[]).await);
    let req = whoami(&mut c).await["user"]["seen"].clone();
    assert_eq!(req["token"], json!("session-42"), "{req}");
    assert_eq!(req["claims"], Value::Null, "nothing was verified: {req}");
    let mut d = accepted(connect_with(&server, "?mode=seen", &[]).await);
    let req = whoami(&mut d).await["user"]["seen"].clone();
    assert_eq!((&req["token"], &req["claims"]), (&Value::Null, &Value::Null), "{req}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_auth_returning_unit_accepts_anonymously() {
    let (server, _init) = start_with_init(ON_AUTH, |s| s.auth.jwt_secret = SECRET.into()).await;
    let mut c = accepted(connect_with(&server, "?mode=anon", &[]).await);
    assert_anonymous(&mut c).await;
    // on_auth decides even over a valid token's claims.
    let token = hs256(&good_claims("ada"), SECRET.as_bytes());
    let mut d = accepted(connect_with(&server, &format!("?mode=anon&token={token}"), &[]).await);
    assert_anonymous(&mut d).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_auth_returning_unit_is_refused_under_auth_required() {
    let (server, _init) = start_with_init(ON_AUTH, |s| s.auth.required = true).await;
    let message = refused(connect_with(&server, "?mode=anon", &[]).await);
    assert!(message.contains("auth.required"), "{message}");
    let mut c = accepted(connect_with(&server, "?mode=seen", &[]).await);
    assert_eq!(whoami(&mut c).await["user"]["via"], json!("on_auth"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_auth_that_throws_refuses_with_the_thrown_text() {
    let (server, _init) = start_with_init(ON_AUTH, |_| {}).await;
    let message = refused(connect_with(&server, "?mode=throw&why=banned-user-17", &[]).await);
    assert!(message.contains("go away: banned-user-17"), "{message}");
    let message = refused(connect_with(&server, "?mode=throw_map", &[]).await);
    assert!(message.contains("a map refusal"), "{message}");
    let message = refused(connect_with(&server, "?mode=number", &[]).await);
    assert!(message.contains("on_auth"), "a wrong return value is a refusal that says so: {message}");
    assert_eq!(server.connected(), 0);
    // The server is unaffected.
    let mut c = accepted(connect_with(&server, "?mode=anon", &[]).await);
    assert_anonymous(&mut c).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_refused_before_on_auth_runs() {
    let (server, _init) = start_with_init(ON_AUTH, |s| s.auth.jwt_secret = SECRET.into()).await;
    let bad = hs256(&good_claims("ada"), b"not the secret");
    let message = refused(connect_with(&server, &format!("?mode=seen&token={bad}"), &[]).await);
    assert!(message.contains("signature"), "{message}");
    refused(connect_with(&server, &format!("?mode=seen&token={}", alg_none(&good_claims("x"))), &[]).await);
    let mut c = accepted(connect_with(&server, "?mode=anon", &[]).await);
    let r = c.request("auth_calls", json!({})).await;
    assert_eq!(r.payload, json!(1), "on_auth ran only for the client with no bad token: {r:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_auth_past_the_time_limit_is_refused_and_the_server_keeps_serving() {
    let (server, _init) = start_with_init(ON_AUTH, |s| {
        s.limits.timeout_ms = 200;
        // Only the clock may stop the busy loop.
        s.limits.max_operations = 0;
    })
    .await;
    let spinning = connect_with(&server, "?mode=spin", &[]);
    let napping = connect_with(&server, "?mode=nap", &[]);
    let (spinning, napping) = tokio::join!(spinning, napping);
    let message = refused(spinning);
    assert!(message.contains("limits.timeoutMs"), "a busy loop is stopped by the time limit: {message}");
    let message = refused(napping);
    assert!(message.contains("limits.timeoutMs"), "a sleep is stopped by the time limit: {message}");
    assert_eq!(server.connected(), 0);

    // Unaffected: other clients connect and are served.
    let mut a = accepted(connect_with(&server, "?mode=seen", &[]).await);
    let mut b = accepted(connect_with(&server, "?mode=anon", &[]).await);
    assert_eq!(whoami(&mut a).await["user"]["via"], json!("on_auth"));
    assert_anonymous(&mut b).await;
    // And again: a stuck on_auth does not stop others from connecting meanwhile.
    let stuck = tokio::spawn({
        let url = server.url();
        async move {
            let request = format!("{url}?mode=spin").into_client_request().expect("request");
            connect_async(request).await.map(|_| ())
        }
    });
    let mut c = accepted(connect_with(&server, "?mode=anon", &[]).await);
    assert_anonymous(&mut c).await;
    match tokio::time::timeout(REPLY_TIMEOUT, stuck).await.expect("answered in time").expect("task") {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        other => panic!("the spinning client should be refused: {other:?}"),
    }
    assert_eq!(server.connected(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_auth_runs_under_the_operation_limit_too() {
    let (server, _init) = start_with_init(ON_AUTH, |s| s.limits.max_operations = 10_000).await;
    let message = refused(connect_with(&server, "?mode=spin", &[]).await);
    assert!(message.contains("limits.maxOperations"), "{message}");
    let mut c = accepted(connect_with(&server, "?mode=anon", &[]).await);
    assert_anonymous(&mut c).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_auth_can_check_a_session_with_a_backend_over_http() {
    // A legacy backend: /session/abc is Ada, anything else 404.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
    let backend = listener.local_addr().expect("backend addr");
    let routes = warp::path!("session" / String).map(|sid: String| {
        if sid == "abc" {
            warp::reply::with_status(
                warp::reply::json(&json!({"name": "Ada", "user_id": 7})),
                warp::http::StatusCode::OK,
            )
        } else {
            warp::reply::with_status(warp::reply::json(&json!({"error": "no"})), warp::http::StatusCode::NOT_FOUND)
        }
    });
    tokio::spawn(warp::serve(routes).incoming(listener).run());

    let init = format!(
        r#"
fn INIT(server) {{
    server.on_auth(|req| {{
        let sid = req.query.sid;
        if sid == () {{ return (); }}
        let r = http::get(`http://{backend}/session/${{sid}}`);
        if r.status != 200 {{ throw "unknown session"; }}
        #{{ name: r.json.name, id: r.json.user_id }}
    }});
}}
"#
    );
    let (server, _init) = start_with_init(&init, |s| s.http.allow = vec![format!("http://{backend}")]).await;
    let mut ada = accepted(connect_with(&server, "?sid=abc", &[]).await);
    assert_user(&mut ada, &json!({"name": "Ada", "id": 7})).await;
    let message = refused(connect_with(&server, "?sid=zzz", &[]).await);
    assert!(message.contains("unknown session"), "{message}");
    let mut anon = accepted(connect_with(&server, "", &[]).await);
    assert_anonymous(&mut anon).await;
    server.stop().await;
}

// ------------------------------------------------------------ presence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_each_member_with_its_identity() {
    let server = hs_server().await;
    let claims = good_claims("ada");
    let mut ada = accepted(connect_token(&server, Some(&hs256(&claims, SECRET.as_bytes()))).await);
    let mut anon = accepted(connect_token(&server, None).await);
    let ada_id = whoami(&mut ada).await["client"].as_i64().expect("id");
    let anon_id = assert_anonymous(&mut anon).await;

    let r = ada.request("presence", json!({"room": "lobby"})).await;
    assert_eq!(r.payload, json!([{"client": ada_id, "user": claims}]), "{r:?}");
    let r = anon.request("presence", json!({"room": "lobby"})).await;
    let mut expected = vec![json!({"client": ada_id, "user": claims}), json!({"client": anon_id, "user": null})];
    expected.sort_by_key(|m| m["client"].as_i64());
    assert_eq!(r.payload, Value::Array(expected), "members by id, anonymous ones with user null: {r:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_under_load_leave_no_trace() {
    // Many refused upgrades in a row: none registers, none keeps a socket.
    let server = start_with_plugs(PLUGS, |s| {
        s.auth.jwt_secret = SECRET.into();
        s.auth.required = true;
    })
    .await;
    for i in 0..20 {
        let token = if i % 2 == 0 { "nope".to_owned() } else { hs256(&good_claims("x"), b"wrong") };
        refused(connect_token(&server, Some(&token)).await);
    }
    assert!(server.wait_connected(0, Duration::from_millis(300)).await);
    let claims = good_claims("last");
    let mut c = accepted(connect_token(&server, Some(&hs256(&claims, SECRET.as_bytes()))).await);
    assert_user(&mut c, &claims).await;
    assert_eq!(server.connected(), 1);
    server.stop().await;
}
