//! The JWK Set of the keys that verify (RFC 7517), public parts only.

use serde_json::{Value, json};

use super::keys::{Keyring, VerificationKey};

/// The JWK Set for `/.well-known/jwks.json`: every asymmetric key that verifies, with `kid`
/// (its RFC 7638 thumbprint), `alg` and `use`. HMAC keys are never listed: their secret is the
/// key.
pub fn jwks_json(keyring: &Keyring) -> Value {
    let keys: Vec<Value> = keyring
        .verification_keys()
        .filter_map(VerificationKey::public_jwk)
        .collect();
    json!({ "keys": keys })
}
