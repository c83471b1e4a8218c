//! Minting access tokens for a session.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value};

use super::keys::Keyring;
use crate::session::Session;
use crate::time::Timestamp;

/// Claim names sessiond sets itself; a session's custom claims may not use them.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "sid",
    "client_id",
    "tenant_id",
    "scope",
    "auth_time",
    "acr",
    "amr",
    "cnf",
];

/// The issuer-side settings of access tokens.
#[derive(Debug, Clone)]
pub struct AccessTokenIssuer {
    /// The `iss` claim.
    pub issuer: String,
    /// The `aud` claim.
    pub audience: String,
    /// The `client_id` claim that RFC 9068 requires.
    pub client_id: String,
}

/// A freshly signed access token.
#[derive(Debug)]
pub struct IssuedAccessToken {
    /// The compact JWS.
    pub token: String,
    /// Its `exp`.
    pub expires_at: Timestamp,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    jti: String,
    sid: String,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation<'a>>,
    #[serde(flatten)]
    custom: &'a Map<String, Value>,
}

/// RFC 7800's confirmation claim, here the thumbprint of a DPoP key (RFC 9449 §6.1).
#[derive(Serialize)]
struct Confirmation<'a> {
    jkt: &'a str,
}

impl AccessTokenIssuer {
    /// Signs an access token for `session` that expires at `expires_at`, with the session's
    /// own claims. A session bound to a DPoP key gets tokens that say so: `cnf.jkt`.
    pub fn issue(
        &self,
        keyring: &Keyring,
        session: &Session,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> IssuedAccessToken {
        self.issue_with_claims(keyring, session, &session.claims, now, expires_at)
    }

    /// Like [`Self::issue`], with `custom` in place of the session's claims (the session's
    /// claims with its roles' permissions added, see [`crate::permission::RolePermissions`],
    /// or narrowed to a requested scope, see [`crate::permission::narrow`]). A token whose
    /// `permissions` are not empty also carries them as its `scope` (RFC 9068 §2.2.3).
    pub fn issue_with_claims(
        &self,
        keyring: &Keyring,
        session: &Session,
        custom: &Map<String, Value>,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> IssuedAccessToken {
        let claims = Claims {
            iss: &self.issuer,
            sub: session.user_id.as_str(),
            aud: &self.audience,
            exp: expires_at.unix_seconds(),
            iat: now.unix_seconds(),
            jti: crate::random::uuid_v4().to_string(),
            sid: session.id.to_string(),
            client_id: &self.client_id,
            tenant_id: session.tenant_id.as_ref().map(|tenant| tenant.as_str()),
            scope: crate::permission::scope_claim(custom),
            cnf: session.dpop_jkt.as_deref().map(|jkt| Confirmation { jkt }),
            custom,
        };
        // Serializing a struct of strings, integers and a JSON map cannot fail.
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let header = keyring.encoded_header();
        let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = keyring.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        IssuedAccessToken {
            token,
            expires_at: Timestamp::from_unix_millis(expires_at.unix_seconds() * 1000),
        }
    }
}
