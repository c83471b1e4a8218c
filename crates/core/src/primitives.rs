//! The cryptographic primitives sessiond uses besides signatures, all from one backend,
//! `aws-lc-rs`: SHA-256, HMAC-SHA256 and AES-256-GCM.
//!
//! Signatures (Ed25519, ECDSA P-256, RSA) use the same backend in [`crate::token`]. Everything
//! else (the store, the server) hashes and encrypts through this module, so that no second
//! implementation of a primitive ends up in the binary.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{digest, hmac};

/// The length of an AES-256-GCM authentication tag.
pub const GCM_TAG_LEN: usize = 16;
/// The length of an AES-256-GCM nonce.
pub const GCM_NONCE_LEN: usize = NONCE_LEN;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// A SHA-256 computed over several pieces.
#[derive(Clone)]
pub struct Sha256(digest::Context);

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256").finish_non_exhaustive()
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// An empty hash.
    pub fn new() -> Self {
        Self(digest::Context::new(&digest::SHA256))
    }

    /// Appends `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The hash of everything appended.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// An HMAC-SHA256 key, set up once.
#[derive(Clone)]
pub struct HmacSha256(hmac::Key);

impl std::fmt::Debug for HmacSha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacSha256").finish_non_exhaustive()
    }
}

impl HmacSha256 {
    /// A key of `secret` (any length; RFC 2104 hashes a longer one).
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The tag of `data`.
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.0, data).as_ref());
        out
    }

    /// Whether `tag` is the tag of `data`, compared in constant time. A tag of another length
    /// (a truncated one included) never verifies.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, data, tag).is_ok()
    }
}

/// The tag of `data` under `secret` (HMAC-SHA256).
pub fn hmac_sha256(secret: &[u8], data: &[u8]) -> [u8; 32] {
    HmacSha256::new(secret).sign(data)
}

/// An AES-256-GCM key, set up once.
pub struct Aes256Gcm(LessSafeKey);

impl std::fmt::Debug for Aes256Gcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aes256Gcm").finish_non_exhaustive()
    }
}

impl Aes256Gcm {
    /// A key of 32 bytes.
    pub fn new(key: &[u8; 32]) -> Self {
        #[allow(clippy::expect_used)]
        let key = UnboundKey::new(&AES_256_GCM, key).expect("an AES-256 key is 32 bytes");
        Self(LessSafeKey::new(key))
    }

    /// Appends `plaintext` encrypted under `nonce` with `aad`, then its tag, to `out`. The
    /// caller guarantees that `nonce` is never used twice with this key.
    pub fn seal_into(
        &self,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) {
        let start = out.len();
        out.extend_from_slice(plaintext);
        #[allow(clippy::expect_used)]
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .expect("AES-GCM encryption of a message under 64 GiB cannot fail");
        out.extend_from_slice(tag.as_ref());
    }

    /// The plaintext of `ciphertext_and_tag`, or `None` when it does not authenticate under
    /// `nonce` and `aad` (a tag of the wrong length included).
    pub fn open(
        &self,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        if ciphertext_and_tag.len() < GCM_TAG_LEN {
            return None;
        }
        let mut buffer = zeroize::Zeroizing::new(ciphertext_and_tag.to_vec());
        let len = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut buffer,
            )
            .ok()?
            .len();
        buffer.truncate(len);
        Some(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_fips_180_example() {
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex = |bytes: [u8; 32]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(sha256(b"abc")), expected);
        let mut pieces = Sha256::new();
        pieces.update(b"a");
        pieces.update(b"bc");
        assert_eq!(hex(pieces.finish()), expected);
    }

    #[test]
    fn an_hmac_tag_verifies_only_whole_and_unaltered() {
        let key = HmacSha256::new(b"key");
        let tag = key.sign(b"data");
        assert!(key.verify(b"data", &tag));
        assert!(!key.verify(b"data", &tag[..16]));
        assert!(!key.verify(b"datb", &tag));
    }

    #[test]
    fn a_sealed_message_opens_only_with_its_nonce_and_aad() {
        let key = Aes256Gcm::new(&[7u8; 32]);
        let mut sealed = Vec::new();
        key.seal_into(&[1u8; 12], b"aad", b"secret", &mut sealed);
        assert_eq!(sealed.len(), 6 + GCM_TAG_LEN);
        assert_eq!(
            key.open(&[1u8; 12], b"aad", &sealed)
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"secret"[..])
        );
        assert!(key.open(&[2u8; 12], b"aad", &sealed).is_none());
        assert!(key.open(&[1u8; 12], b"aae", &sealed).is_none());
        assert!(key.open(&[1u8; 12], b"aad", &sealed[..10]).is_none());
    }
}
