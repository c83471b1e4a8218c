//! The JWK Set of the keys that verify (RFC 7517), public parts only.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::keys::{Keyring, SigningAlgorithm};

/// The JWK Set for `/.well-known/jwks.json`. HMAC keys are never listed: their secret is the
/// key.
pub fn jwks_json(keyring: &Keyring) -> Value {
    let keys: Vec<Value> = keyring
        .ed25519_public_keys()
        .map(|(kid, public)| {
            json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(public),
                "kid": kid,
                "alg": SigningAlgorithm::EdDsa.jose_name(),
                "use": "sig",
            })
        })
        .collect();
    json!({ "keys": keys })
}
