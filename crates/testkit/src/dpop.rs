//! DPoP proofs (RFC 9449) as clients make them, and as attackers bend them: [`DpopKey`] is a
//! client's key pair (ES256 or Ed25519, from aws-lc-rs), and [`ProofBuilder`] a proof whose
//! header and claims a test may change at will before it is signed, or left unsigned
//! (`alg: none`), or signed with HMAC (HS256) instead.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sessiond_core::Timestamp;

/// A client's DPoP key pair.
pub struct DpopKey {
    pair: Pair,
}

enum Pair {
    Es256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("alg", &self.alg())
            .field("jkt", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

impl DpopKey {
    /// A fresh P-256 key (`alg: ES256`), what browsers and most clients use.
    ///
    /// # Panics
    /// When the OS random source fails.
    pub fn es256() -> Self {
        #[allow(clippy::expect_used)]
        let pair =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key generation");
        Self {
            pair: Pair::Es256(pair),
        }
    }

    /// A fresh Ed25519 key (`alg: EdDSA`).
    ///
    /// # Panics
    /// When the OS random source fails.
    pub fn ed25519() -> Self {
        #[allow(clippy::expect_used)]
        let pair = Ed25519KeyPair::generate().expect("Ed25519 key generation");
        Self {
            pair: Pair::Ed25519(pair),
        }
    }

    /// The JOSE algorithm of the key's signatures.
    pub fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Es256(_) => "ES256",
            Pair::Ed25519(_) => "EdDSA",
        }
    }

    /// The public key as a JWK, its required members only.
    pub fn public_jwk(&self) -> Value {
        match &self.pair {
            Pair::Es256(pair) => {
                // The uncompressed point: 0x04, then x and y, 32 bytes each.
                let point = pair.public_key().as_ref();
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                })
            }
            Pair::Ed25519(pair) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            }),
        }
    }

    /// The key's JWK SHA-256 thumbprint (RFC 7638), base64url: what `dpop_jkt` and `cnf.jkt`
    /// hold. Computed here independently of the server's own code.
    pub fn thumbprint(&self) -> String {
        let jwk = self.public_jwk();
        let member = |name: &str| jwk[name].as_str().unwrap_or_default().to_owned();
        // The required members in lexicographic order, no whitespace.
        let canonical = match self.pair {
            Pair::Es256(_) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                member("x"),
                member("y")
            ),
            Pair::Ed25519(_) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, member("x")),
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    /// A proof for `method` on `url` issued at `now`, with a fresh `jti`, as a client sends on
    /// a refresh. Add [`ProofBuilder::access_token`] for a resource request.
    pub fn proof(&self, method: &str, url: &str, now: Timestamp) -> String {
        self.builder(method, url, now).sign()
    }

    /// A proof to change before signing: header `typ`, `alg` and `jwk`; claims `jti` (fresh),
    /// `htm`, `htu` and `iat` (`now` in seconds).
    pub fn builder(&self, method: &str, url: &str, now: Timestamp) -> ProofBuilder<'_> {
        let mut header = Map::new();
        header.insert("typ".into(), json!("dpop+jwt"));
        header.insert("alg".into(), json!(self.alg()));
        header.insert("jwk".into(), self.public_jwk());
        let mut claims = Map::new();
        claims.insert("jti".into(), json!(fresh_jti()));
        claims.insert("htm".into(), json!(method));
        claims.insert("htu".into(), json!(url));
        claims.insert("iat".into(), json!(now.unix_seconds()));
        ProofBuilder {
            key: self,
            header,
            claims,
        }
    }

    fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        match &self.pair {
            Pair::Es256(pair) => {
                #[allow(clippy::expect_used)]
                let signature = pair
                    .sign(&SystemRandom::new(), message)
                    .expect("ES256 signing");
                signature.as_ref().to_vec()
            }
            Pair::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }
}

/// A DPoP proof being made: any header member or claim may be set or removed before it is
/// signed.
#[derive(Debug)]
pub struct ProofBuilder<'a> {
    key: &'a DpopKey,
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

impl ProofBuilder<'_> {
    /// Adds `ath`, the hash of the access token the proof goes with (RFC 9449 §4.2).
    #[must_use]
    pub fn access_token(self, token: &str) -> Self {
        self.claim("ath", json!(access_token_hash(token)))
    }

    /// Adds the server's `nonce`.
    #[must_use]
    pub fn nonce(self, nonce: &str) -> Self {
        self.claim("nonce", json!(nonce))
    }

    /// Sets the `jti`, to replay one.
    #[must_use]
    pub fn jti(self, jti: &str) -> Self {
        self.claim("jti", json!(jti))
    }

    /// Sets (or replaces) a claim.
    #[must_use]
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    /// Removes a claim.
    #[must_use]
    pub fn without_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Sets (or replaces) a header member.
    #[must_use]
    pub fn header(mut self, name: &str, value: Value) -> Self {
        self.header.insert(name.into(), value);
        self
    }

    /// Removes a header member.
    #[must_use]
    pub fn without_header(mut self, name: &str) -> Self {
        self.header.remove(name);
        self
    }

    /// The signing input: base64url header, a dot, base64url claims.
    fn signing_input(&self) -> String {
        let encode = |object: &Map<String, Value>| {
            URL_SAFE_NO_PAD.encode(Value::Object(object.clone()).to_string())
        };
        format!("{}.{}", encode(&self.header), encode(&self.claims))
    }

    /// The compact JWS, signed with the key whatever the header's `alg` says.
    pub fn sign(self) -> String {
        let input = self.signing_input();
        let signature = self.key.sign_bytes(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The proof with `alg: none` and an empty signature (RFC 7519 §6's unsecured JWT).
    pub fn unsigned(self) -> String {
        let input = self.header("alg", json!("none")).signing_input();
        format!("{input}.")
    }

    /// The proof with `alg: HS256`, its MAC keyed with `secret`: what an attacker who hopes the
    /// server takes the public key for an HMAC secret would send.
    pub fn hs256(self, secret: &[u8]) -> String {
        let input = self.header("alg", json!("HS256")).signing_input();
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }
}

/// The `ath` of an access token: base64url of its SHA-256.
pub fn access_token_hash(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// 128 random bits, base64url.
fn fresh_jti() -> String {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0_u8; 16];
    #[allow(clippy::expect_used)]
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random source");
    URL_SAFE_NO_PAD.encode(bytes)
}
