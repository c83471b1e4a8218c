//! Refresh tokens: minting, hashing, sealing the successor pair, and the rotation rule.
//!
//! A refresh token is `sdr_` followed by 44 bytes in base64url: a 12-byte *locator*, then 32
//! bytes (256 bits) from the CSPRNG. The locator is the time the token was issued
//! (milliseconds since the epoch, 6 bytes, big-endian) followed by 6 random bytes. Every token
//! is minted so, the first of a session and each successor alike. The locator is no secret: it
//! carries none of the token's randomness, and tells the token's holder no more than when the
//! token was issued, which the holder knows.
//!
//! Storage sees only the token's [`RefreshTokenHash`]: its locator (12 bytes) followed by the
//! first 20 bytes of the SHA-256 of the whole token. A copy of the database thus yields no
//! usable token, and keys sort in the order their tokens were issued: a rotation inserts its
//! successor at the right edge of the token index, on the page every other rotation of the
//! moment writes too, and tokens issued together, which come back to be spent together (their
//! access tokens expire together), share pages when they are spent. Keys in no order would put
//! each successor and each spent token on a page of its own chosen at random: one more page to
//! read, log and checkpoint per refresh, and ever more of them as the store grows.
//!
//! Tokens minted by earlier releases are still accepted and looked up under the keys they were
//! stored with: those whose locator named a *chain* of a session's tokens and a position in it
//! (the same shape as today's), and those of `sdr_` and 32 random bytes (43 characters),
//! stored under their bare SHA-256. The successor of either is minted as any other.
//!
//! For the reuse grace window, and for as long as the successor is unused (see
//! [`decide_refresh`]), the successor pair must be handed out again, yet it must not be
//! stored in the clear. It is sealed with AES-256-GCM under a key derived from the *presented*
//! token, which the store never sees: only a caller holding the spent token can open its
//! successor, and a database dump alone cannot.
//!
//! What is sealed is the pair packed (`pack_pair`): its two times, then each token as the
//! bytes its base64url segments stand for (the refresh token's after its `sdr_`, the access
//! token's three), about 30 % fewer than the pair's JSON, which a pair sealed before packing
//! is and still opens as. The pair lives in the database for its replay window, one per
//! refresh, so this is most of what refreshing adds to the file for that long.

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, RefreshRejection};
use crate::policy::Policy;
use crate::primitives::{Aes256Gcm, Sha256, sha256};
use crate::session::Session;
use crate::time::Timestamp;

const PREFIX: &str = "sdr_";
/// The bytes of a locator that give the time its token was issued, in milliseconds (until the
/// year 10889); the rest of the locator is random.
const TIME_BYTES: usize = 6;
/// The bytes of a key that [`RefreshTokenHash::stamp`] gives.
const STAMP_BYTES: usize = 8;
/// The locator, at the start of both the token and its key.
const LOCATOR_BYTES: usize = 12;
/// The base64url characters that encode the locator (12 bytes, no bits to spare).
const LOCATOR_CHARS: usize = LOCATOR_BYTES / 3 * 4;
const RANDOM_BYTES: usize = 32;
const TOKEN_BYTES: usize = LOCATOR_BYTES + RANDOM_BYTES;
/// Length of a well-formed token: the prefix and 59 base64url characters.
const TOKEN_LEN: usize = PREFIX.len() + 59;
/// Length of a token minted before locators: the prefix and 43 base64url characters.
const BARE_TOKEN_LEN: usize = PREFIX.len() + 43;
const NONCE_LEN: usize = 12;
/// The first byte of a packed pair ([`pack_pair`]); a pair sealed as JSON begins with `{`.
const PACKED_PAIR: u8 = 2;

/// base64url without padding that, as before locators, accepts any character in the last place:
/// a token that does not decode canonically was not issued, and its lookup finds nothing.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// A refresh token in the clear. Never logged: its `Debug` output is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RefreshToken {
    text: String,
    /// Its key ([`RefreshToken::hash`]), computed once: a refresh needs it for the lookup and
    /// again to seal the successor. Stored in the clear anyway, so not wiped.
    #[zeroize(skip)]
    hash: RefreshTokenHash,
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

impl RefreshToken {
    /// Mints a token issued at `now`, its random bytes from the thread's CSPRNG (see
    /// [`crate::random`]).
    pub fn generate(now: Timestamp) -> Self {
        let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
        let millis = u64::try_from(now.unix_millis()).unwrap_or(0).to_be_bytes();
        bytes[..TIME_BYTES].copy_from_slice(&millis[millis.len() - TIME_BYTES..]);
        crate::random::fill(&mut bytes[TIME_BYTES..]);
        let mut locator = [0u8; LOCATOR_BYTES];
        locator.copy_from_slice(&bytes[..LOCATOR_BYTES]);
        let mut text = String::with_capacity(TOKEN_LEN);
        text.push_str(PREFIX);
        LENIENT.encode_string(bytes.as_ref(), &mut text);
        Self::new(text, Some(locator))
    }

    fn new(text: String, locator: Option<[u8; LOCATOR_BYTES]>) -> Self {
        let hash = key_of(&text, locator);
        Self { text, hash }
    }

    /// Accepts a token as presented by a client, if it has the shape of one of ours (or of one
    /// minted before locators).
    ///
    /// A token of any other shape cannot have been issued, so it is refused as unknown without
    /// a lookup.
    ///
    /// # Errors
    /// [`RefreshRejection::Unknown`] when the shape is wrong.
    pub fn parse(presented: &str) -> Result<Self, Error> {
        let unknown = || Error::RefreshRejected(RefreshRejection::Unknown);
        let encoded = presented.strip_prefix(PREFIX).ok_or_else(unknown)?;
        let base64url = encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !base64url {
            return Err(unknown());
        }
        let locator = match presented.len() {
            BARE_TOKEN_LEN => None,
            TOKEN_LEN => {
                // The locator's 12 bytes are the first 16 characters exactly: the random part
                // is never decoded.
                let mut locator = [0u8; LOCATOR_BYTES];
                match LENIENT.decode_slice(&encoded[..LOCATOR_CHARS], &mut locator) {
                    Ok(LOCATOR_BYTES) => Some(locator),
                    _ => return Err(unknown()),
                }
            }
            _ => return Err(unknown()),
        };
        Ok(Self::new(presented.to_owned(), locator))
    }

    /// The token text, to hand to its client.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The key under which the token is stored and looked up: its locator, then the first 20
    /// bytes of its SHA-256 (a token minted before locators: its SHA-256).
    pub fn hash(&self) -> RefreshTokenHash {
        self.hash
    }

    fn sealing_key(&self) -> Zeroizing<[u8; 32]> {
        // Domain-separated from the lookup hash, so knowing a stored hash reveals no key.
        let mut hasher = Sha256::new();
        hasher.update(b"sessiond/successor-seal/v1\0");
        hasher.update(self.text.as_bytes());
        Zeroizing::new(hasher.finish())
    }

    /// Encrypts `pair`, the successor issued when this token was spent, so that only a holder
    /// of this token can open it. The token's hash is bound as associated data, so a sealed
    /// value moved to another token's row fails to open.
    pub fn seal_successor(&self, pair: &IssuedPair) -> Vec<u8> {
        let key = self.sealing_key();
        let cipher = Aes256Gcm::new(&key);
        let mut nonce = [0u8; NONCE_LEN];
        crate::random::fill(&mut nonce);
        let plaintext = pack_pair(pair)
            .unwrap_or_else(|| Zeroizing::new(serde_json::to_vec(pair).unwrap_or_default()));
        let aad = self.hash();
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        sealed.extend_from_slice(&nonce);
        cipher.seal_into(&nonce, &aad.0, &plaintext, &mut sealed);
        sealed
    }

    /// Opens a successor sealed by [`RefreshToken::seal_successor`] of this same token.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the value was not sealed for this token or was altered.
    pub fn open_successor(&self, sealed: &[u8]) -> Result<IssuedPair, Error> {
        if sealed.len() < NONCE_LEN {
            return Err(Error::Corrupt("sealed successor is truncated".into()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| Error::Corrupt("sealed successor is truncated".into()))?;
        let key = self.sealing_key();
        let cipher = Aes256Gcm::new(&key);
        let aad = self.hash();
        let plaintext = Zeroizing::new(
            cipher
                .open(nonce, &aad.0, ciphertext)
                .ok_or_else(|| Error::Corrupt("sealed successor does not open".into()))?,
        );
        let pair = match plaintext.first() {
            Some(&PACKED_PAIR) => unpack_pair(&plaintext),
            _ => serde_json::from_slice(&plaintext).ok(),
        };
        pair.ok_or_else(|| Error::Corrupt("sealed successor is not a token pair".into()))
    }
}

/// [`RefreshToken::hash`] of the token `text` with `locator`.
fn key_of(text: &str, locator: Option<[u8; LOCATOR_BYTES]>) -> RefreshTokenHash {
    let digest = sha256(text.as_bytes());
    let Some(locator) = locator else {
        return RefreshTokenHash(digest);
    };
    let mut key = [0u8; 32];
    key[..LOCATOR_BYTES].copy_from_slice(&locator);
    key[LOCATOR_BYTES..].copy_from_slice(&digest[..32 - LOCATOR_BYTES]);
    RefreshTokenHash(key)
}

/// `pair` packed for sealing: [`PACKED_PAIR`], the access token's and the refresh token's
/// expiry (milliseconds, 8 bytes each, big-endian), then the refresh token and the access
/// token ([`pack_token`]). `None` when a token is not made of canonical base64url segments (or
/// has over 255 of them, or one of over 64 KiB): the pair is then sealed as JSON. A pair that
/// packs unpacks exactly: [`URL_SAFE_NO_PAD`] decodes only the one encoding of each byte string,
/// which is what [`unpack_pair`] writes back (a property test holds it to that).
fn pack_pair(pair: &IssuedPair) -> Option<Zeroizing<Vec<u8>>> {
    let room = packed_room(pair);
    let mut packed = Zeroizing::new(Vec::with_capacity(room));
    packed.push(PACKED_PAIR);
    packed.extend_from_slice(&pair.access_expires_at_ms.to_be_bytes());
    packed.extend_from_slice(&pair.refresh_expires_at_ms.to_be_bytes());
    pack_token(&pair.refresh_token, &mut packed)?;
    pack_token(&pair.access_token, &mut packed)?;
    Some(packed)
}

/// Appends `token`: one byte telling whether it began with `sdr_` (then left out), the number
/// of its `.`-separated segments, and each segment's bytes (base64url decoded) after their
/// length (2 bytes, big-endian).
///
/// Each segment is decoded at the end of `packed`, sized by [`pack_pair`] to hold it: a growth
/// would leave a copy of the token's bytes behind, which [`Zeroizing`] does not reach.
fn pack_token(token: &str, packed: &mut Vec<u8>) -> Option<()> {
    let (prefixed, body) = match token.strip_prefix(PREFIX) {
        Some(body) => (1, body),
        None => (0, token),
    };
    packed.push(prefixed);
    let count_at = packed.len();
    packed.push(0);
    let mut count = 0usize;
    for segment in body.split('.') {
        let length_at = packed.len();
        packed.extend_from_slice(&[0, 0]);
        URL_SAFE_NO_PAD.decode_vec(segment, packed).ok()?;
        let length = u16::try_from(packed.len() - length_at - 2).ok()?;
        packed[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
        count += 1;
    }
    packed[count_at] = u8::try_from(count).ok()?;
    Some(())
}

/// The capacity [`pack_pair`] gives its buffer: room for what `pack_token` decodes and for the
/// decoder's estimate of each segment (three bytes for every four characters, rounded up), for
/// tokens of a few segments, as a refresh token (one) and a JWT (three) are.
fn packed_room(pair: &IssuedPair) -> usize {
    17 + pair.refresh_token.len() + pair.access_token.len() + 64
}

/// The inverse of [`pack_pair`]; `None` unless `packed` is exactly one packed pair.
fn unpack_pair(packed: &[u8]) -> Option<IssuedPair> {
    let mut rest = packed.strip_prefix(&[PACKED_PAIR])?;
    let access_expires_at_ms = i64::from_be_bytes(take(&mut rest, 8)?.try_into().ok()?);
    let refresh_expires_at_ms = i64::from_be_bytes(take(&mut rest, 8)?.try_into().ok()?);
    let refresh_token = unpack_token(&mut rest)?;
    let access_token = unpack_token(&mut rest)?;
    rest.is_empty().then_some(IssuedPair {
        access_token,
        access_expires_at_ms,
        refresh_token,
        refresh_expires_at_ms,
    })
}

/// The inverse of [`pack_token`], reading from the front of `rest`.
fn unpack_token(rest: &mut &[u8]) -> Option<String> {
    let &[prefixed, count] = take(rest, 2)? else {
        return None;
    };
    // Sized for the longest token `rest` can hold, so that no growth leaves a copy behind.
    let mut token = String::with_capacity(PREFIX.len() + rest.len() * 4 / 3 + usize::from(count));
    match prefixed {
        0 => {}
        1 => token.push_str(PREFIX),
        _ => return None,
    }
    for index in 0..count {
        if index > 0 {
            token.push('.');
        }
        let length = u16::from_be_bytes(take(rest, 2)?.try_into().ok()?);
        URL_SAFE_NO_PAD.encode_string(take(rest, usize::from(length))?, &mut token);
    }
    Some(token)
}

/// The first `count` bytes of `rest`, which then starts after them.
fn take<'a>(rest: &mut &'a [u8], count: usize) -> Option<&'a [u8]> {
    if rest.len() < count {
        return None;
    }
    let (taken, after) = rest.split_at(count);
    *rest = after;
    Some(taken)
}

/// The key of a refresh token (see [`RefreshToken::hash`]): all that storage ever sees of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefreshTokenHash(pub [u8; 32]);

impl RefreshTokenHash {
    /// The first 8 bytes of this key: for a token minted with a locator, the time it was
    /// issued and 2 random bytes, which sort keys in the order their tokens were issued (see
    /// the module's documentation). Meaningless for the key of a token minted before locators.
    #[must_use]
    pub fn stamp(&self) -> [u8; STAMP_BYTES] {
        let mut stamp = [0u8; STAMP_BYTES];
        stamp.copy_from_slice(&self.0[..STAMP_BYTES]);
        stamp
    }
}

impl std::fmt::Debug for RefreshTokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A prefix is enough to tell hashes apart in a debugger without printing lookup keys.
        write!(f, "RefreshTokenHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// A token pair as issued: what a grace-window replay must return unchanged.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct IssuedPair {
    /// The signed access token.
    pub access_token: String,
    /// Its `exp`, in milliseconds since the epoch.
    pub access_expires_at_ms: i64,
    /// The refresh token in the clear.
    pub refresh_token: String,
    /// When the refresh token stops working by time alone, in milliseconds since the epoch.
    pub refresh_expires_at_ms: i64,
}

impl std::fmt::Debug for IssuedPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedPair")
            .field("access_expires_at_ms", &self.access_expires_at_ms)
            .field("refresh_expires_at_ms", &self.refresh_expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// A stored refresh token, as read back for a refresh.
#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    /// Its hash.
    pub hash: RefreshTokenHash,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it was spent by a rotation, if it was.
    pub spent_at: Option<Timestamp>,
    /// The successor pair issued when it was spent, sealed under the token itself. A store
    /// whose at-rest encryption of this value does not open (it was altered, or moved from
    /// another row) gives it as empty, which opens under no token, rather than failing the
    /// lookup: the service then refuses the replay as reuse and reports the row.
    pub sealed_successor: Option<Vec<u8>>,
    /// Whether that successor has itself been spent.
    pub successor_spent: bool,
}

/// What to do with a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Spend it and issue a successor.
    Rotate,
    /// Hand out the successor issued when it was spent moments ago (two tabs, a retry).
    ReplaySuccessor,
    /// It was spent and is presented again outside the rules: revoke the whole session.
    RevokeForReuse,
    /// Refuse it; the session is already dead.
    Refuse(RefreshRejection),
}

/// The rotation rule: decides what a refresh with `token` of `session` at `now` does.
pub fn decide_refresh(
    token: &RefreshTokenRecord,
    session: &Session,
    now: Timestamp,
    policy: &Policy,
) -> RefreshDecision {
    if session.revoked_at.is_some() {
        return RefreshDecision::Refuse(RefreshRejection::Revoked);
    }
    if session.is_expired(now) {
        return RefreshDecision::Refuse(RefreshRejection::Expired);
    }
    let Some(spent_at) = token.spent_at else {
        return RefreshDecision::Rotate;
    };
    // A spent token whose successor was never used says nothing of theft: its holder is the
    // client whose answer was lost, or a thief who then shares the successor with it, and
    // whichever of the two refreshes second is caught (its token is spent and its
    // successor used). So the successor is replayed while unused, within a bound; once it has
    // been used, the spent token is reuse at once.
    let replayable = !policy.reuse_grace.is_zero()
        && !token.successor_spent
        && token.sealed_successor.is_some()
        && now <= spent_at.plus(policy.replay_window());
    if replayable {
        RefreshDecision::ReplaySuccessor
    } else {
        RefreshDecision::RevokeForReuse
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::session_at;
    use std::time::Duration;

    /// When the tokens of these tests are minted.
    fn at() -> Timestamp {
        Timestamp::from_unix_millis(1_764_910_000_000)
    }

    fn pair() -> IssuedPair {
        IssuedPair {
            access_token: "a.b.c".into(),
            access_expires_at_ms: 1,
            refresh_token: RefreshToken::generate(at()).expose().to_owned(),
            refresh_expires_at_ms: 2,
        }
    }

    fn record(spent_at: Option<Timestamp>, successor_spent: bool) -> RefreshTokenRecord {
        RefreshTokenRecord {
            hash: RefreshToken::generate(at()).hash(),
            issued_at: Timestamp::from_unix_millis(0),
            spent_at,
            sealed_successor: spent_at.map(|_| vec![0; 40]),
            successor_spent,
        }
    }

    #[test]
    fn tokens_are_long_random_and_parse_back() {
        let first = RefreshToken::generate(at());
        let second = RefreshToken::generate(at());
        assert_ne!(first.expose(), second.expose());
        assert_eq!(first.expose().len(), TOKEN_LEN);
        let parsed = RefreshToken::parse(first.expose()).unwrap();
        assert_eq!(parsed.hash(), first.hash());
        assert!(!format!("{first:?}").contains(&first.expose()[4..]));
    }

    #[test]
    fn tokens_of_the_wrong_shape_are_unknown() {
        for bad in [
            "",
            "sdr_",
            "abc",
            &"x".repeat(10_000),
            "sdr_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            "xdr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            // Between the two lengths, or longer.
            "sdr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "sdr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "sdr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!",
        ] {
            assert!(matches!(
                RefreshToken::parse(bad),
                Err(Error::RefreshRejected(RefreshRejection::Unknown))
            ));
        }
    }

    #[test]
    fn a_sealed_successor_opens_only_with_its_own_token() {
        let token = RefreshToken::generate(at());
        let sealed = token.seal_successor(&pair());
        assert!(token.open_successor(&sealed).is_ok());
        let other = RefreshToken::generate(at());
        assert!(matches!(
            other.open_successor(&sealed),
            Err(Error::Corrupt(_))
        ));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(token.open_successor(&tampered).is_err());
        assert!(token.open_successor(&sealed[..5]).is_err());
    }

    /// A pair as a refresh issues it: an EdDSA access token of realistic size.
    fn realistic_pair() -> IssuedPair {
        let segment = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        IssuedPair {
            access_token: format!(
                "{}.{}.{}",
                segment(br#"{"alg":"EdDSA","kid":"k-2026-12-05","typ":"at+jwt"}"#),
                segment(&[b'x'; 380]),
                segment(&[7; 64])
            ),
            access_expires_at_ms: 1_764_900_000_123,
            refresh_token: RefreshToken::generate(at()).expose().to_owned(),
            refresh_expires_at_ms: -5,
        }
    }

    fn same(a: &IssuedPair, b: &IssuedPair) -> bool {
        a.access_token == b.access_token
            && a.refresh_token == b.refresh_token
            && a.access_expires_at_ms == b.access_expires_at_ms
            && a.refresh_expires_at_ms == b.refresh_expires_at_ms
    }

    #[test]
    fn a_pair_is_sealed_packed_and_opens_unchanged_in_about_a_third_less() {
        let token = RefreshToken::generate(at());
        let pair = realistic_pair();
        let sealed = token.seal_successor(&pair);
        assert!(same(&token.open_successor(&sealed).expect("opens"), &pair));
        let json = serde_json::to_vec(&pair).expect("json");
        assert!(
            sealed.len() * 10 < json.len() * 8,
            "{} sealed bytes against {} of JSON",
            sealed.len(),
            json.len()
        );
        // Packed is what was sealed.
        let packed = pack_pair(&pair).expect("packs");
        assert_eq!(packed[0], PACKED_PAIR);
        assert_eq!(sealed.len(), NONCE_LEN + packed.len() + 16);
        // Decoded where it stays: no growth left a copy of the tokens' bytes behind.
        assert_eq!(packed.capacity(), packed_room(&pair));
    }

    #[test]
    fn a_pair_that_does_not_pack_exactly_is_sealed_as_json() {
        let token = RefreshToken::generate(at());
        // Not base64url; and a segment with trailing bits set, which would not encode back.
        for access_token in ["not a jwt!", "a.b.c", "eyJhbGciOiJub25lIn0.e30.Ah"] {
            let mut pair = realistic_pair();
            pair.access_token = access_token.into();
            assert!(pack_pair(&pair).is_none(), "{access_token}");
            let sealed = token.seal_successor(&pair);
            assert!(
                same(&token.open_successor(&sealed).expect("opens"), &pair),
                "{access_token}"
            );
        }
    }

    #[test]
    fn a_pair_sealed_as_json_before_packing_still_opens() {
        let token = RefreshToken::generate(at());
        let pair = realistic_pair();
        let cipher = Aes256Gcm::new(&token.sealing_key());
        let nonce = [9u8; NONCE_LEN];
        let mut sealed = nonce.to_vec();
        let json = serde_json::to_vec(&pair).expect("json");
        cipher.seal_into(&nonce, &token.hash().0, &json, &mut sealed);
        assert!(same(&token.open_successor(&sealed).expect("opens"), &pair));
    }

    #[test]
    fn a_packed_pair_with_bytes_missing_or_left_over_is_no_pair() {
        let packed = pack_pair(&realistic_pair()).expect("packs");
        assert!(unpack_pair(&packed).is_some());
        for cut in [1, 9, 17, 18, 19, 21, packed.len() - 1] {
            assert!(unpack_pair(&packed[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = packed.to_vec();
        longer.push(0);
        assert!(unpack_pair(&longer).is_none());
        let mut bad_prefix = packed.to_vec();
        bad_prefix[17] = 7;
        assert!(unpack_pair(&bad_prefix).is_none());
    }

    /// A token of 1–4 segments of arbitrary bytes in base64url, with `sdr_` in front or not.
    fn canonical_token() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        (
            any::<bool>(),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..5),
        )
            .prop_map(|(prefixed, segments)| {
                let body: Vec<String> = segments
                    .iter()
                    .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
                    .collect();
                format!("{}{}", if prefixed { PREFIX } else { "" }, body.join("."))
            })
    }

    /// Segments of base64url characters between dots, canonical or not (of any length, with
    /// any trailing bits), with `sdr_` in front or not.
    fn any_token_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        (any::<bool>(), "[A-Za-z0-9_.-]{0,80}")
            .prop_map(|(prefixed, body)| format!("{}{body}", if prefixed { PREFIX } else { "" }))
    }

    fn pairs(
        token: impl Fn() -> proptest::strategy::BoxedStrategy<String>,
    ) -> impl proptest::strategy::Strategy<Value = IssuedPair> {
        use proptest::prelude::*;
        (token(), any::<i64>(), token(), any::<i64>()).prop_map(
            |(access_token, access_expires_at_ms, refresh_token, refresh_expires_at_ms)| {
                IssuedPair {
                    access_token,
                    access_expires_at_ms,
                    refresh_token,
                    refresh_expires_at_ms,
                }
            },
        )
    }

    /// `pack_pair` does not check its result: this is what lets it not.
    #[test]
    fn every_pair_that_packs_unpacks_exactly() {
        use proptest::prelude::*;
        crate::proptesting::check(pairs(|| any_token_text().boxed()), |pair| {
            if let Some(packed) = pack_pair(&pair) {
                let unpacked = unpack_pair(&packed);
                prop_assert!(unpacked.is_some_and(|unpacked| same(&unpacked, &pair)));
            }
            Ok(())
        });
    }

    #[test]
    fn every_pair_of_base64url_segments_packs_and_opens_unchanged() {
        use proptest::prelude::*;
        let token = RefreshToken::generate(at());
        crate::proptesting::check(pairs(|| canonical_token().boxed()), |pair| {
            let unpacked = pack_pair(&pair).and_then(|packed| unpack_pair(&packed));
            prop_assert!(unpacked.is_some_and(|unpacked| same(&unpacked, &pair)));
            let sealed = token.seal_successor(&pair);
            prop_assert!(same(&token.open_successor(&sealed).expect("opens"), &pair));
            Ok(())
        });
    }

    fn decoded(token: &RefreshToken) -> Vec<u8> {
        LENIENT.decode(&token.expose()[PREFIX.len()..]).unwrap()
    }

    #[test]
    fn a_token_is_its_issue_time_then_random_bytes_and_tokens_sort_as_they_were_issued() {
        let start = at();
        let later = start.plus(Duration::from_millis(1));
        let first = RefreshToken::generate(start);
        let bytes = decoded(&first);
        assert_eq!(first.expose().len(), TOKEN_LEN);
        assert_eq!(bytes.len(), TOKEN_BYTES);
        assert_eq!(
            bytes[..TIME_BYTES],
            start.unix_millis().to_be_bytes()[8 - TIME_BYTES..]
        );
        assert_eq!(first.hash().stamp(), bytes[..STAMP_BYTES]);
        // A token issued later sorts after, whatever its random bytes.
        for _ in 0..20 {
            let (earlier, next) = (RefreshToken::generate(start), RefreshToken::generate(later));
            assert!(earlier.hash().0 < next.hash().0);
        }
        // Within one millisecond the rest of the locator and the secret part are random.
        let tokens: Vec<_> = (0..50)
            .map(|_| decoded(&RefreshToken::generate(start)))
            .collect();
        let locators: std::collections::HashSet<_> = tokens
            .iter()
            .map(|t| t[TIME_BYTES..LOCATOR_BYTES].to_vec())
            .collect();
        let randoms: std::collections::HashSet<_> =
            tokens.iter().map(|t| t[LOCATOR_BYTES..].to_vec()).collect();
        assert_eq!((locators.len(), randoms.len()), (50, 50));
        assert!(
            tokens
                .iter()
                .all(|t| t[..TIME_BYTES] == bytes[..TIME_BYTES])
        );
    }

    #[test]
    fn a_key_is_the_locator_then_the_tokens_sha256() {
        let token = RefreshToken::generate(at());
        let digest = sha256(token.expose().as_bytes());
        let bytes = decoded(&token);
        assert_eq!(token.hash().0[..LOCATOR_BYTES], bytes[..LOCATOR_BYTES]);
        assert_eq!(
            token.hash().0[LOCATOR_BYTES..],
            digest[..32 - LOCATOR_BYTES]
        );
        assert_eq!(
            RefreshToken::parse(token.expose()).unwrap().hash(),
            token.hash()
        );
        // No byte of the random part is in the key.
        assert!(
            !token
                .hash()
                .0
                .windows(4)
                .any(|window| bytes[LOCATOR_BYTES..].windows(4).any(|part| part == window))
        );
    }

    #[test]
    fn a_token_whose_locator_named_a_chain_is_looked_up_under_the_key_it_was_stored_with() {
        // Earlier releases minted a session's tokens along a chain: 8 bytes naming it, then a
        // position. The shape is today's, so the key is made the same way.
        let mut bytes = [5u8; TOKEN_BYTES];
        bytes[8..LOCATOR_BYTES].copy_from_slice(&41u32.to_be_bytes());
        let text = format!("sdr_{}", LENIENT.encode(bytes));
        let token = RefreshToken::parse(&text).unwrap();
        assert_eq!(token.hash().0[..LOCATOR_BYTES], bytes[..LOCATOR_BYTES]);
        assert_eq!(
            token.hash().0[LOCATOR_BYTES..],
            sha256(text.as_bytes())[..32 - LOCATOR_BYTES]
        );
    }

    #[test]
    fn a_token_minted_before_locators_is_looked_up_by_its_sha256() {
        let bare = format!("sdr_{}", LENIENT.encode([7u8; 32]));
        assert_eq!(bare.len(), BARE_TOKEN_LEN);
        let token = RefreshToken::parse(&bare).unwrap();
        assert_eq!(token.hash().0, sha256(bare.as_bytes()));
        let sealed = token.seal_successor(&pair());
        assert!(token.open_successor(&sealed).is_ok());
    }

    #[test]
    fn an_unspent_token_of_a_live_session_rotates() {
        let policy = Policy::default();
        let now = Timestamp::from_unix_millis(1_000_000);
        let session = session_at(now, &policy);
        assert_eq!(
            decide_refresh(&record(None, false), &session, now, &policy),
            RefreshDecision::Rotate
        );
    }

    #[test]
    fn a_replay_inside_the_grace_window_gets_the_successor() {
        let policy = Policy::default();
        let now = Timestamp::from_unix_millis(1_000_000);
        let session = session_at(now, &policy);
        let spent = record(Some(now), false);
        let later = now.plus(policy.reuse_grace);
        assert_eq!(
            decide_refresh(&spent, &session, later, &policy),
            RefreshDecision::ReplaySuccessor
        );
    }

    #[test]
    fn a_replay_after_the_grace_window_revokes_the_session_when_unused_successors_are_not_replayed()
    {
        let policy = Policy {
            unused_successor_replay: Duration::ZERO,
            ..Policy::default()
        };
        let now = Timestamp::from_unix_millis(1_000_000);
        let session = session_at(now, &policy);
        let spent = record(Some(now), false);
        let later = now.plus(policy.reuse_grace + Duration::from_millis(1));
        assert_eq!(
            decide_refresh(&spent, &session, later, &policy),
            RefreshDecision::RevokeForReuse
        );
    }

    #[test]
    fn a_spent_token_whose_successor_is_unused_is_replayed_until_the_bound_then_is_reuse() {
        let policy = Policy::default();
        let now = Timestamp::from_unix_millis(1_000_000);
        let session = session_at(now, &policy);
        let spent = record(Some(now), false);
        let after_grace = now.plus(policy.reuse_grace + Duration::from_secs(1));
        assert_eq!(
            decide_refresh(&spent, &session, after_grace, &policy),
            RefreshDecision::ReplaySuccessor
        );
        let at_bound = now.plus(policy.unused_successor_replay);
        assert_eq!(
            decide_refresh(&spent, &session, at_bound, &policy),
            RefreshDecision::ReplaySuccessor
        );
        let past_bound = at_bound.plus(Duration::from_millis(1));
        assert_eq!(
            decide_refresh(&spent, &session, past_bound, &policy),
            RefreshDecision::RevokeForReuse
        );
        assert_eq!(
            decide_refresh(&record(Some(now), true), &session, after_grace, &policy),
            RefreshDecision::RevokeForReuse,
            "once the successor was used the spent token is reuse"
        );
    }

    #[test]
    fn a_grace_window_longer_than_the_unused_successor_bound_still_applies() {
        let policy = Policy {
            reuse_grace: Duration::from_secs(60),
            unused_successor_replay: Duration::from_secs(5),
            ..Policy::default()
        };
        let now = Timestamp::from_unix_millis(1_000_000);
        let session = session_at(now, &policy);
        let spent = record(Some(now), false);
        assert_eq!(
            decide_refresh(&spent, &session, now.plus(Duration::from_secs(30)), &policy),
            RefreshDecision::ReplaySuccessor
        );
        assert_eq!(
            decide_refresh(&spent, &session, now.plus(Duration::from_secs(61)), &policy),
            RefreshDecision::RevokeForReuse
        );
    }

    #[test]
    fn a_replay_after_the_successor_was_used_is_reuse_even_inside_the_window() {
        let policy = Policy::default();
        let now = Timestamp::from_unix_millis(1_000_000);
        let session = session_at(now, &policy);
        assert_eq!(
            decide_refresh(&record(Some(now), true), &session, now, &policy),
            RefreshDecision::RevokeForReuse
        );
    }

    #[test]
    fn a_zero_grace_window_turns_replays_off() {
        let policy = Policy {
            reuse_grace: Duration::ZERO,
            ..Policy::default()
        };
        let now = Timestamp::from_unix_millis(1_000_000);
        let session = session_at(now, &policy);
        assert_eq!(
            decide_refresh(&record(Some(now), false), &session, now, &policy),
            RefreshDecision::RevokeForReuse
        );
    }

    #[test]
    fn revoked_and_expired_sessions_refuse_before_anything_else() {
        let policy = Policy::default();
        let now = Timestamp::from_unix_millis(1_000_000);
        let mut session = session_at(now, &policy);
        let expired_at = session.idle_expires_at;
        assert_eq!(
            decide_refresh(&record(None, false), &session, expired_at, &policy),
            RefreshDecision::Refuse(RefreshRejection::Expired)
        );
        session.revoked_at = Some(now);
        assert_eq!(
            decide_refresh(&record(Some(now), false), &session, now, &policy),
            RefreshDecision::Refuse(RefreshRejection::Revoked)
        );
    }
}
