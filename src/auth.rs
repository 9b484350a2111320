//! Identity at connect (SPEC 10.1): the token a client brings (`?token=` or
//! `Authorization: Bearer`), verified as a JWT when `auth.jwtSecret`
//! (HS256) or `auth.jwtPublicKeyFile` (RS256 or ES256, by the key's kind)
//! is set. The algorithm is pinned to that one: a token with `alg: none`,
//! or an HS256 token signed with the public key's text, is refused.
//! `exp` and `nbf` are checked when present, with no leeway.
//!
//! INIT's `server.on_auth` then has the last word ([`crate::init`]); the
//! upgrade ([`crate::upgrade`]) refuses with HTTP 401 what either refuses.

use std::path::Path;

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

use crate::config::AuthSettings;

/// How this server checks identities.
pub struct Auth {
    verifier: Option<Verifier>,
    /// `auth.required`: anonymous clients are refused.
    pub required: bool,
}

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Auth {
    /// From `auth.*`; an error names the key or file that is wrong.
    pub fn new(settings: &AuthSettings) -> Result<Auth, String> {
        let verifier = match (settings.jwt_secret.is_empty(), settings.jwt_public_key_file.as_os_str().is_empty()) {
            (true, true) => None,
            (false, false) => {
                return Err("set auth.jwtSecret (HS256) or auth.jwtPublicKeyFile (RS256/ES256), not both".into())
            }
            (false, true) => {
                let key = DecodingKey::from_secret(settings.jwt_secret.as_bytes())
                    .map_err(|e| format!("auth.jwtSecret: {e}"))?;
                Some(Verifier { key, validation: validation(Algorithm::HS256) })
            }
            (true, false) => Some(public_key(&settings.jwt_public_key_file)?),
        };
        Ok(Auth { verifier, required: settings.required })
    }

    /// An `Auth` that verifies nothing and requires nothing.
    pub fn none() -> Auth {
        Auth { verifier: None, required: false }
    }

    /// Whether tokens are verified here (a key or secret is set).
    pub fn verifies(&self) -> bool {
        self.verifier.is_some()
    }

    /// The claims of a valid token, or why it is not one. Without a key or
    /// secret configured there is nothing to verify against: None.
    pub fn verify(&self, token: &str) -> Option<Result<serde_json::Value, String>> {
        let verifier = self.verifier.as_ref()?;
        Some(
            decode::<serde_json::Value>(token, &verifier.key, &verifier.validation)
                .map(|data| data.claims)
                .map_err(|e| format!("invalid token: {}", reason(&e))),
        )
    }
}

/// One algorithm, `exp` and `nbf` checked when present, no leeway, no
/// audience configured (so none is checked).
fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.leeway = 0;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = false;
    v
}

/// RS256 for an RSA public key, ES256 for an EC (P-256) one.
fn public_key(path: &Path) -> Result<Verifier, String> {
    let file = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("auth.jwtPublicKeyFile {file}: cannot read: {e}"))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(Verifier { key, validation: validation(Algorithm::RS256) });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok(Verifier { key, validation: validation(Algorithm::ES256) });
    }
    Err(format!("auth.jwtPublicKeyFile {file}: not an RSA or EC public key in PEM"))
}

/// Why a token was refused, in words.
fn reason(err: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::ExpiredSignature => "it has expired (exp)".into(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "its signature does not match".into(),
        ErrorKind::InvalidAlgorithm => "it is signed with another algorithm than this server accepts".into(),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            "it is not a well-formed JWT".into()
        }
        _ => err.to_string(),
    }
}

/// The token of a request: `?token=` in the query, else an `Authorization:
/// Bearer` header.
pub fn token<'a>(query: &'a [(String, String)], authorization: Option<&'a str>) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str())
        .filter(|t| !t.is_empty())
        .or_else(|| authorization.and_then(crate::api::bearer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn hs(secret: &str) -> Auth {
        Auth::new(&AuthSettings { jwt_secret: secret.into(), ..AuthSettings::default() }).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn hs256_tokens_are_verified() {
        let auth = hs("s3cret");
        let claims = json!({"sub": "ada", "exp": now() + 60});
        assert_eq!(auth.verify(&sign(claims.clone(), "s3cret")), Some(Ok(claims)));
        let no_exp = json!({"sub": "ada"});
        assert_eq!(auth.verify(&sign(no_exp.clone(), "s3cret")), Some(Ok(no_exp)), "exp is not required");
        let err = auth.verify(&sign(json!({"sub": "ada"}), "other")).unwrap().unwrap_err();
        assert!(err.contains("signature"), "{err}");
        let err = auth.verify(&sign(json!({"exp": now() - 10}), "s3cret")).unwrap().unwrap_err();
        assert!(err.contains("expired"), "{err}");
        let err = auth.verify(&sign(json!({"nbf": now() + 3600}), "s3cret")).unwrap().unwrap_err();
        assert!(err.contains("not valid yet"), "{err}");
        let err = auth.verify("not.a.jwt").unwrap().unwrap_err();
        assert!(err.contains("well-formed"), "{err}");
    }

    #[test]
    fn alg_none_and_tampered_claims_are_refused() {
        let auth = hs("s3cret");
        let good = sign(json!({"sub": "ada"}), "s3cret");
        let parts: Vec<&str> = good.split('.').collect();
        use base64_helper::encode_url;
        let none_header = encode_url(br#"{"alg":"none","typ":"JWT"}"#);
        let admin = encode_url(br#"{"sub":"admin"}"#);
        for token in [format!("{none_header}.{}.", parts[1]), format!("{}.{admin}.{}", parts[0], parts[2])] {
            assert!(auth.verify(&token).unwrap().is_err(), "{token}");
        }
    }

    #[test]
    fn no_key_means_nothing_to_verify() {
        assert_eq!(Auth::none().verify("anything"), None);
        let both = AuthSettings { jwt_secret: "x".into(), jwt_public_key_file: "k.pem".into(), required: false };
        assert!(Auth::new(&both).err().unwrap().contains("not both"));
        let missing = AuthSettings { jwt_public_key_file: "/nonexistent/k.pem".into(), ..AuthSettings::default() };
        assert!(Auth::new(&missing).err().unwrap().contains("/nonexistent/k.pem"));
    }

    #[test]
    fn tokens_come_from_the_query_or_a_bearer_header() {
        let q = vec![("token".to_owned(), "abc".to_owned())];
        assert_eq!(token(&q, Some("Bearer xyz")), Some("abc"), "the query wins");
        assert_eq!(token(&[], Some("Bearer xyz")), Some("xyz"));
        assert_eq!(token(&[], Some("Basic xyz")), None);
        assert_eq!(token(&[("token".into(), String::new())], None), None);
    }

    /// Base64url without padding, for hand-made tokens.
    mod base64_helper {
        pub fn encode_url(bytes: &[u8]) -> String {
            const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | *b as u32) << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
