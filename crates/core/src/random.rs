//! Randomness for per-request secrets and identifiers: refresh tokens, nonces, session ids and
//! token ids.
//!
//! These come from `rand`'s thread-local CSPRNG (ChaCha12, seeded from the operating system and
//! reseeded periodically), which costs no system call per value; a refresh draws four such
//! values. Long-lived keys (signing keys, data keys, the checkpoint key) are drawn from the
//! operating system directly with `getrandom`.

use rand::RngCore as _;
use uuid::Uuid;

/// Fills `bytes` from the thread's CSPRNG.
pub fn fill(bytes: &mut [u8]) {
    rand::rng().fill_bytes(bytes);
}

/// A random (version 4) UUID from the thread's CSPRNG.
pub fn uuid_v4() -> Uuid {
    let mut bytes = [0u8; 16];
    fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_and_uuids_are_version_4() {
        let (mut one, mut other) = ([0u8; 32], [0u8; 32]);
        fill(&mut one);
        fill(&mut other);
        assert_ne!(one, other);
        assert_ne!(one, [0u8; 32]);
        let id = uuid_v4();
        assert_eq!(id.get_version_num(), 4);
        assert_ne!(id, uuid_v4());
    }
}
