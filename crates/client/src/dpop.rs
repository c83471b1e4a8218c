//! DPoP (RFC 9449): [`DpopKey`], the ES256 key a session is bound to, and its proofs; the
//! latest `DPoP-Nonce` of each server; and how a request carries a token (`Bearer`, or `DPoP`
//! with a proof for a token bound to a key).
//!
//! A session is bound to the key's RFC 7638 thumbprint, either at creation (the application's
//! backend passes [`DpopKey::thumbprint`] as `dpop_jkt` of `POST /v1/sessions`) or at the first
//! refresh that carries a proof. From then on every refresh needs a proof signed by that key,
//! and its access tokens carry the thumbprint (`cnf.jkt`), so a copied refresh or access token
//! is useless without the private key.
//!
//! Whether a token goes as `DPoP` is read from the token itself (its `cnf.jkt` claim), so a
//! pair from the store, from another process or from a sign-in is sent the right way without
//! the client keeping any extra state.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::{Error, SecretString};

/// The header a proof goes in, and the one a server sends its nonce in.
pub(crate) const DPOP: &str = "dpop";
const DPOP_NONCE: &str = "dpop-nonce";
/// The most servers whose nonces are kept; beyond it the book starts over (a nonce that is
/// missing costs one more request, never a failure).
const MAX_NONCES: usize = 64;

/// An ES256 (ECDSA P-256) key for DPoP: signs proofs; its thumbprint is what a session is bound
/// to.
///
/// A session bound to a key can be refreshed only with that key: an application that keeps its
/// tokens across runs ([`EncryptedFileStore`](crate::EncryptedFileStore)) must keep the key too,
/// where it keeps its secrets ([`to_pkcs8_der`](Self::to_pkcs8_der),
/// [`from_pkcs8_der`](Self::from_pkcs8_der)). `Debug` shows the thumbprint only.
pub struct DpopKey {
    key_pair: EcdsaKeyPair,
    /// The public key as a JWK, members in the order of RFC 7638 (and of the proof header).
    jwk: Value,
    thumbprint: String,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl DpopKey {
    /// A fresh key from the operating system's random source.
    ///
    /// # Errors
    /// [`Error::Dpop`] when the key cannot be generated.
    pub fn generate() -> Result<Self, Error> {
        let key_pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| Error::Dpop("cannot generate a P-256 key"))?;
        Ok(Self::of(key_pair))
    }

    /// The key of a PKCS #8 document (DER), as [`to_pkcs8_der`](Self::to_pkcs8_der) wrote it.
    ///
    /// # Errors
    /// [`Error::Dpop`] when `der` is not a P-256 private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| Error::Dpop("not a PKCS #8 P-256 private key"))?;
        Ok(Self::of(key_pair))
    }

    /// The private key as a PKCS #8 document (DER), to keep with the tokens; wiped from memory
    /// when dropped.
    ///
    /// # Errors
    /// [`Error::Dpop`] when the key cannot be serialised.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let document = self
            .key_pair
            .to_pkcs8v1()
            .map_err(|_| Error::Dpop("cannot serialise the key"))?;
        Ok(Zeroizing::new(document.as_ref().to_vec()))
    }

    fn of(key_pair: EcdsaKeyPair) -> Self {
        // The uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = key_pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let thumbprint = URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()));
        Self {
            key_pair,
            jwk: json!({ "crv": "P-256", "kty": "EC", "x": x, "y": y }),
            thumbprint,
        }
    }

    /// The key's RFC 7638 SHA-256 thumbprint, base64url: the `dpop_jkt` to create a session
    /// with, and the `cnf.jkt` of its access tokens.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A proof (the `DPoP` header's value) for `method` on `url` (its query and fragment are
    /// left out), hashing `access_token` into `ath` for a request to a resource, with the
    /// server's `nonce` when it asked for one.
    ///
    /// # Errors
    /// [`Error::Dpop`] when signing fails.
    pub fn proof(
        &self,
        method: &Method,
        url: &Url,
        access_token: Option<&SecretString>,
        nonce: Option<&str>,
    ) -> Result<String, Error> {
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|_| Error::Dpop("no randomness for a proof id"))?;
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut claims = Map::new();
        claims.insert("jti".into(), URL_SAFE_NO_PAD.encode(jti).into());
        claims.insert("htm".into(), method.as_str().into());
        claims.insert("htu".into(), proof_url(url).into());
        claims.insert("iat".into(), iat.into());
        if let Some(token) = access_token {
            let hash = digest(&SHA256, token.expose().as_bytes());
            claims.insert("ath".into(), URL_SAFE_NO_PAD.encode(hash).into());
        }
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), nonce.into());
        }
        let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        // The FIXED algorithm signs as r || s, the JWS form (RFC 7518 §3.4).
        let signature = self
            .key_pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| Error::Dpop("cannot sign a proof"))?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// The `htu` of a request to `url`: without query and fragment (RFC 9449 §4.2). `Url` has
/// already lowercased the scheme and host and dropped a default port.
pub(crate) fn proof_url(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.into()
}

/// Whether `access_token` is bound to a key: a JWT whose payload has `cnf.jkt`. Read without
/// checking the token (the server does).
pub(crate) fn is_bound(access_token: &SecretString) -> bool {
    let Some(payload) = access_token.expose().split('.').nth(1) else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|claims| claims.pointer("/cnf/jkt").is_some_and(Value::is_string))
}

/// The latest `DPoP-Nonce` of each server, by origin.
#[derive(Debug, Default)]
pub(crate) struct Nonces(Mutex<HashMap<String, String>>);

impl Nonces {
    pub(crate) fn get(&self, url: &Url) -> Option<String> {
        let origin = url.origin().ascii_serialization();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&origin)
            .cloned()
    }

    /// Keeps the `DPoP-Nonce` of an answer from `url`, if it has one.
    pub(crate) fn note(&self, url: &Url, headers: &HeaderMap) {
        let Some(nonce) = headers
            .get(DPOP_NONCE)
            .and_then(|value| value.to_str().ok())
        else {
            return;
        };
        let mut nonces = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if nonces.len() >= MAX_NONCES {
            nonces.clear();
        }
        nonces.insert(url.origin().ascii_serialization(), nonce.to_owned());
    }
}

/// Whether a resource server's answer asks for the request again with its `DPoP-Nonce`
/// (RFC 9449 §9: `401` with a `DPoP` challenge whose error is `use_dpop_nonce`).
pub(crate) fn resource_asks_for_nonce(response: &Response) -> bool {
    response.status() == StatusCode::UNAUTHORIZED
        && response.headers().contains_key(DPOP_NONCE)
        && response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| {
                value
                    .trim_start()
                    .get(..4)
                    .is_some_and(|scheme| scheme.eq_ignore_ascii_case("dpop"))
                    && value.contains(r#"error="use_dpop_nonce""#)
            })
}

/// Puts `access_token` in `headers`: `Bearer`, or, for a token bound to a key when the client
/// has one, `DPoP` and a proof for `method` on `url` that hashes the token.
///
/// # Errors
/// [`Error::Dpop`] when the proof cannot be signed.
pub(crate) fn authorize(
    headers: &mut HeaderMap,
    key: Option<&DpopKey>,
    nonces: &Nonces,
    method: &Method,
    url: &Url,
    access_token: &SecretString,
) -> Result<(), Error> {
    let value = match key {
        Some(key) if is_bound(access_token) => {
            let proof = key.proof(method, url, Some(access_token), nonces.get(url).as_deref())?;
            headers.insert(DPOP, header_value(&proof)?);
            format!("DPoP {}", access_token.expose())
        }
        _ => {
            headers.remove(DPOP);
            format!("Bearer {}", access_token.expose())
        }
    };
    let mut value = header_value(&value)?;
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    Ok(())
}

fn header_value(text: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(text).map_err(|_| Error::Dpop("a token that cannot go in a header"))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    use super::*;

    fn decode(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
    }

    /// Checks the signature with the key in the header; returns header and claims.
    fn verified(proof: &str) -> (Value, Value) {
        let parts: Vec<&str> = proof.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode(parts[0]);
        let jwk = &header["jwk"];
        let mut point = vec![4u8];
        for member in ["x", "y"] {
            point.extend(
                URL_SAFE_NO_PAD
                    .decode(jwk[member].as_str().expect("coordinate"))
                    .expect("base64url"),
            );
        }
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64url");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the signature verifies with the embedded key");
        (header, decode(parts[1]))
    }

    #[test]
    fn a_proof_is_signed_by_the_key_and_names_method_and_url_without_query() {
        let key = DpopKey::generate().expect("key");
        let url =
            Url::parse("HTTPS://Auth.Example.com:443/v1/sessions/refresh?x=1#f").expect("url");
        let (header, claims) =
            verified(&key.proof(&Method::POST, &url, None, None).expect("proof"));
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        let members: Vec<&String> = header["jwk"].as_object().expect("jwk").keys().collect();
        assert_eq!(members, ["crv", "kty", "x", "y"], "a public key only");
        assert_eq!(claims["htm"], "POST");
        assert_eq!(
            claims["htu"],
            "https://auth.example.com/v1/sessions/refresh"
        );
        assert!(claims.get("ath").is_none() && claims.get("nonce").is_none());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        assert!(claims["iat"].as_u64().expect("iat").abs_diff(now) <= 2);
        let (_, again) = verified(&key.proof(&Method::POST, &url, None, None).expect("proof"));
        assert_ne!(claims["jti"], again["jti"], "every proof has its own id");
    }

    #[test]
    fn a_resource_proof_hashes_the_token_and_carries_the_nonce() {
        let key = DpopKey::generate().expect("key");
        let token = SecretString::new("header.payload.signature");
        let url = Url::parse("http://127.0.0.1:8080/v1/sessions/current").expect("url");
        let (_, claims) = verified(
            &key.proof(&Method::GET, &url, Some(&token), Some("n-1"))
                .expect("proof"),
        );
        // SHA-256("header.payload.signature"), base64url, computed independently.
        let expected = URL_SAFE_NO_PAD.encode(digest(&SHA256, b"header.payload.signature"));
        assert_eq!(claims["ath"], expected);
        assert_eq!(claims["nonce"], "n-1");
    }

    #[test]
    fn the_thumbprint_is_rfc_7638_of_the_key_in_the_proofs_and_survives_pkcs8() {
        let key = DpopKey::generate().expect("key");
        let url = Url::parse("https://a.example/x").expect("url");
        let (header, _) = verified(&key.proof(&Method::GET, &url, None, None).expect("proof"));
        let jwk = &header["jwk"];
        let canonical = format!(
            r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().expect("crv"),
            jwk["kty"].as_str().expect("kty"),
            jwk["x"].as_str().expect("x"),
            jwk["y"].as_str().expect("y"),
        );
        assert_eq!(
            key.thumbprint(),
            URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()))
        );
        assert_eq!(key.thumbprint().len(), 43);
        let restored = DpopKey::from_pkcs8_der(&key.to_pkcs8_der().expect("der")).expect("key");
        assert_eq!(restored.thumbprint(), key.thumbprint());
        assert!(DpopKey::from_pkcs8_der(b"not a key").is_err());
        assert_eq!(
            format!("{key:?}"),
            format!("DpopKey {{ thumbprint: {:?}, .. }}", key.thumbprint())
        );
    }

    #[test]
    fn only_a_token_with_cnf_jkt_is_bound() {
        let token = |claims: &str| {
            SecretString::new(format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims)))
        };
        assert!(is_bound(&token(r#"{"cnf":{"jkt":"abc"}}"#)));
        assert!(!is_bound(&token(r#"{"sid":"s"}"#)));
        assert!(!is_bound(&token(r#"{"cnf":{"jkt":1}}"#)));
        assert!(!is_bound(&SecretString::new("opaque")));
    }

    #[test]
    fn bound_tokens_go_as_dpop_with_a_proof_and_others_as_bearer() {
        let key = DpopKey::generate().expect("key");
        let nonces = Nonces::default();
        let url = Url::parse("https://api.example/notes?page=2").expect("url");
        let mut answer = HeaderMap::new();
        answer.insert(DPOP_NONCE, HeaderValue::from_static("n-7"));
        nonces.note(&url, &answer);
        let bound = SecretString::new(format!(
            "e30.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"cnf":{"jkt":"k"}}"#)
        ));
        let mut headers = HeaderMap::new();
        authorize(
            &mut headers,
            Some(&key),
            &nonces,
            &Method::GET,
            &url,
            &bound,
        )
        .expect("headers");
        assert_eq!(
            headers[AUTHORIZATION],
            format!("DPoP {}", bound.expose()).as_str()
        );
        let (_, claims) = verified(headers[DPOP].to_str().expect("ascii"));
        assert_eq!(claims["htu"], "https://api.example/notes");
        assert_eq!(claims["nonce"], "n-7");
        let plain = SecretString::new("e30.e30.c2ln");
        authorize(
            &mut headers,
            Some(&key),
            &nonces,
            &Method::GET,
            &url,
            &plain,
        )
        .expect("headers");
        assert_eq!(headers[AUTHORIZATION], "Bearer e30.e30.c2ln");
        assert!(!headers.contains_key(DPOP));
        authorize(&mut headers, None, &nonces, &Method::GET, &url, &bound).expect("headers");
        assert!(
            headers[AUTHORIZATION]
                .to_str()
                .expect("ascii")
                .starts_with("Bearer ")
        );
    }
}
