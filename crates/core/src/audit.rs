//! Audit events: what happened to which session, for whoever must explain it later.
//!
//! Events form a SHA-256 hash chain. [`canonical_details`] writes an event's details as
//! canonical JSON, and [`chain_hash`] hashes an event's sequence number, its predecessor's
//! hash and the event itself in a length-prefixed encoding (defined in `docs/audit.md`),
//! re-encoding details read back from storage; a store writing an event builds a
//! [`CanonicalEntry`], whose hashes take the canonical details it is about to write as they are.
//! [`AuditCheckpoint`] is what pruning leaves behind: the last pruned seq and hash, with an
//! HMAC-SHA256 under the checkpoint key kept in the store. [`ChainVerifier`] checks sealed
//! events one at a time in seq order, from the checkpoint (or from seq 1 with a zero
//! `prev_hash`) to the recorded head, and names the first bad seq ([`ChainBreak`]);
//! `SessionService::verify_audit` pages the sealed events through it, and pruning verifies
//! before it deletes anything, so a checkpoint is never signed over a broken chain.
//!
//! The chain's head (seq and hash of the newest sealed event) is kept in a row of its own,
//! updated in the transaction that extends the chain, so deleting the newest sealed events is
//! detected rather than silently continued from.

use crate::primitives::sha256;
use serde_json::{Map, Value};

use crate::ids::{SessionId, UserId};
use crate::time::Timestamp;

/// How much an audit event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Routine.
    Info,
    /// Worth a look.
    Warning,
    /// Someone should act: a token was stolen or a key compromised.
    Critical,
}

#[cfg(test)]
mod refresh_audit_tests {
    use super::RefreshAudit;

    #[test]
    fn sampling_keeps_one_in_n() {
        let kept = |audit: RefreshAudit| (0..100).filter(|count| audit.records(*count)).count();
        assert_eq!(kept(RefreshAudit::Off), 0);
        assert_eq!(kept(RefreshAudit::All), 100);
        assert_eq!(kept(RefreshAudit::Sample(10)), 10);
        assert_eq!(kept(RefreshAudit::Sample(1)), 100);
    }
}

impl Severity {
    /// The stored and wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// Which refreshes leave an audit event (`session.refreshed`). Refreshes are the most frequent
/// write, so an operator may keep one in `n`; each still writes its live event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefreshAudit {
    /// None.
    Off,
    /// Every one.
    #[default]
    All,
    /// One in `n` (counted per process).
    Sample(u32),
}

impl RefreshAudit {
    /// Whether the refresh numbered `count` (from 0, per process) is recorded.
    pub fn records(self, count: u64) -> bool {
        match self {
            Self::Off => false,
            Self::All => true,
            Self::Sample(every) => count.is_multiple_of(u64::from(every.max(1))),
        }
    }
}

/// An audit event about to be appended.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    /// What happened, e.g. `session.created`, `session.revoked`, `security.reuse_detected`.
    pub kind: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// The user concerned.
    pub user_id: Option<UserId>,
    /// The session concerned.
    pub session_id: Option<SessionId>,
    /// The client address the request came from.
    pub ip: Option<String>,
    /// When it happened.
    pub at: Timestamp,
    /// Anything else worth keeping (reason, actor, ...). Never a secret.
    pub details: Map<String, Value>,
}

/// A SHA-256 digest in the audit chain.
pub type ChainHash = [u8; 32];

/// The `prev_hash` of the first event of a chain that was never pruned.
pub const GENESIS_HASH: ChainHash = [0; 32];

/// The domain separation prefix of an event's hash input.
const EVENT_DOMAIN: &[u8] = b"sessiond/audit-event/v1\0";
/// The domain separation prefix of the row key of an event's encrypted `ip`.
const IP_ROW_DOMAIN: &[u8] = b"sessiond/audit-ip-row/v1\0";
/// The domain separation prefix of a checkpoint's MAC input.
const CHECKPOINT_DOMAIN: &[u8] = b"sessiond/audit-checkpoint/v1\0";

/// The fields of a stored audit event that its hash covers, as the store holds them. Every
/// field is kept as text, so that a row no longer decodable as a domain value (an edited type,
/// a broken JSON object) can still be hashed and reported rather than failing the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// What happened (`session.created`, ...).
    pub kind: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// The user concerned.
    pub user_id: Option<String>,
    /// The session concerned, as a lower-case hyphenated UUID.
    pub session_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// When it happened.
    pub at: Timestamp,
    /// The details, a JSON object as stored (see [`canonical_details`]).
    pub details: String,
}

/// An audit event the sealer has placed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedAuditEvent {
    /// Its position in the chain: 1, 2, 3, ... with no gap, in commit order.
    pub seq: u64,
    /// What it records.
    pub entry: AuditEntry,
    /// The hash of the event at `seq - 1` (or of the checkpoint, or [`GENESIS_HASH`]).
    pub prev_hash: ChainHash,
    /// [`chain_hash`] of this event.
    pub hash: ChainHash,
}

/// The details object in canonical JSON: keys sorted by their UTF-8 bytes at every level, no
/// whitespace, strings and numbers as `serde_json` writes them. Stores write details in this
/// form, and the chain hashes this form, so a row's details hash the same however they are
/// read back.
pub fn canonical_details(details: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(64);
    write_canonical_object(details, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_canonical_object(map: &Map<String, Value>, out: &mut String) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_unstable_by(|left, right| left.as_bytes().cmp(right.as_bytes()));
    out.push('{');
    for (index, key) in keys.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(key.as_str()).to_string());
        out.push(':');
        write_canonical(&map[key], out);
    }
    out.push('}');
}

/// The canonical form of stored details text: re-encoded canonically when it is a JSON object,
/// hashed as it is otherwise (so a corrupted row still gets a hash, which will not match).
fn canonical_details_text(details: &str) -> std::borrow::Cow<'_, str> {
    match serde_json::from_str::<Value>(details) {
        Ok(Value::Object(map)) => std::borrow::Cow::Owned(canonical_details(&map)),
        _ => std::borrow::Cow::Borrowed(details),
    }
}

/// The hash of the event at `seq` holding `entry`, chained to `prev_hash`.
///
/// It is SHA-256 over this encoding (version 1), where `str(s)` is the length of `s` in bytes
/// as a 4-byte big-endian integer followed by its UTF-8 bytes, `opt(None)` is the byte `0x00`
/// and `opt(Some(s))` is `0x01` followed by `str(s)`:
///
/// ```text
/// "sessiond/audit-event/v1" 0x00
/// prev_hash (32 bytes)
/// seq (8 bytes, big-endian)
/// str(type) str(severity) opt(user_id) opt(session_id) opt(ip)
/// at (milliseconds since the epoch, 8 bytes, big-endian two's complement)
/// str(details in canonical JSON, see canonical_details)
/// ```
///
/// Length prefixes make the encoding injective: no two different events encode alike.
pub fn chain_hash(seq: u64, prev_hash: &ChainHash, entry: &AuditEntry) -> ChainHash {
    hash_event(
        seq,
        prev_hash,
        entry,
        &canonical_details_text(&entry.details),
    )
}

/// [`chain_hash`] with `details`, the entry's details in canonical JSON, given.
fn hash_event(seq: u64, prev_hash: &ChainHash, entry: &AuditEntry, details: &str) -> ChainHash {
    // Encoded whole, then hashed at once: one digest call rather than one per field.
    let mut input = Vec::with_capacity(ENCODED_FIELDS + details.len());
    input.extend_from_slice(EVENT_DOMAIN);
    input.extend_from_slice(prev_hash);
    input.extend_from_slice(&seq.to_be_bytes());
    text(&mut input, &entry.kind);
    text(&mut input, &entry.severity);
    optional(&mut input, entry.user_id.as_deref());
    optional(&mut input, entry.session_id.as_deref());
    optional(&mut input, entry.ip.as_deref());
    input.extend_from_slice(&entry.at.unix_millis().to_be_bytes());
    text(&mut input, details);
    sha256(&input)
}

/// Room for an encoding's fields other than the details: enough for most events at once.
const ENCODED_FIELDS: usize = 384;

fn text(input: &mut Vec<u8>, value: &str) {
    let length = u32::try_from(value.len()).unwrap_or(u32::MAX);
    input.extend_from_slice(&length.to_be_bytes());
    input.extend_from_slice(value.as_bytes());
}

fn optional(input: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => input.push(0),
        Some(value) => {
            input.push(1);
            text(input, value);
        }
    }
}

impl AuditEntry {
    /// The row its `ip` is sealed for (see [`crate::crypt::aad`]): SHA-256 of
    /// `"sessiond/audit-ip-row/v1" 0x00`, then `str(type) str(severity) opt(user_id)
    /// opt(session_id)`, `at` and `str(details in canonical JSON)` encoded as in
    /// [`chain_hash`].
    ///
    /// Every field but the address itself is bound, all of them known before the row is
    /// written (its seq is not, on PostgreSQL), so a sealed address moved to another event
    /// does not open. `session_id` is the lower-case hyphenated UUID, as both stores read it
    /// back.
    pub fn ip_row(&self) -> ChainHash {
        hash_ip_row(self, &canonical_details_text(&self.details))
    }
}

/// [`AuditEntry::ip_row`] with `details`, the entry's details in canonical JSON, given.
fn hash_ip_row(entry: &AuditEntry, details: &str) -> ChainHash {
    let mut input = Vec::with_capacity(ENCODED_FIELDS + details.len());
    input.extend_from_slice(IP_ROW_DOMAIN);
    text(&mut input, &entry.kind);
    text(&mut input, &entry.severity);
    optional(&mut input, entry.user_id.as_deref());
    optional(&mut input, entry.session_id.as_deref());
    input.extend_from_slice(&entry.at.unix_millis().to_be_bytes());
    text(&mut input, details);
    sha256(&input)
}

/// An entry as a store writes it, built from its [`NewAuditEvent`]: its details are
/// [`canonical_details`]'s output by construction, so its hashes take them as they are, where
/// [`chain_hash`] and [`AuditEntry::ip_row`] parse and re-encode details read back from
/// storage. Both give the same hashes for it.
#[derive(Debug, Clone)]
pub struct CanonicalEntry {
    entry: AuditEntry,
    /// The details as [`chain_hash`] re-encodes them, when that may differ from
    /// `entry.details`: only a float may (`serde_json` parses some floats one unit in the last
    /// place off), so it is kept only for details holding one.
    reencoded: Option<String>,
}

impl CanonicalEntry {
    /// `event` as it is written, its address not yet sealed (see [`Self::set_ip`]).
    pub fn of(event: &NewAuditEvent) -> Self {
        let details = canonical_details(&event.details);
        let reencoded = event
            .details
            .values()
            .any(holds_float)
            .then(|| canonical_details_text(&details).into_owned());
        Self {
            entry: AuditEntry {
                kind: event.kind.to_owned(),
                severity: event.severity.as_str().to_owned(),
                user_id: event.user_id.as_ref().map(|user| user.as_str().to_owned()),
                session_id: event.session_id.map(|id| id.to_string()),
                ip: None,
                at: event.at,
                details,
            },
            reencoded,
        }
    }

    /// The details in the form its hashes cover.
    fn hashed_details(&self) -> &str {
        self.reencoded.as_deref().unwrap_or(&self.entry.details)
    }

    /// The row its `ip` is sealed for: [`AuditEntry::ip_row`].
    pub fn ip_row(&self) -> ChainHash {
        hash_ip_row(&self.entry, self.hashed_details())
    }

    /// Sets its `ip`, the address sealed for [`Self::ip_row`].
    pub fn set_ip(&mut self, ip: Option<String>) {
        self.entry.ip = ip;
    }

    /// Its hash at `seq` after `prev_hash`: [`chain_hash`].
    pub fn chain_hash(&self, seq: u64, prev_hash: &ChainHash) -> ChainHash {
        hash_event(seq, prev_hash, &self.entry, self.hashed_details())
    }

    /// The entry.
    pub fn entry(&self) -> &AuditEntry {
        &self.entry
    }

    /// The entry, to keep.
    pub fn into_entry(self) -> AuditEntry {
        self.entry
    }
}

/// Whether `value` is or holds a floating-point number.
fn holds_float(value: &Value) -> bool {
    match value {
        Value::Number(number) => number.is_f64(),
        Value::Array(items) => items.iter().any(holds_float),
        Value::Object(map) => map.values().any(holds_float),
        Value::Null | Value::Bool(_) | Value::String(_) => false,
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Where a pruned chain resumes: the position and hash of the last event deleted, signed so
/// that nobody without the checkpoint key can make a shorter chain look complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// The seq of the last pruned event; the chain resumes at `seq + 1`.
    pub seq: u64,
    /// That event's hash: the `prev_hash` of the event at `seq + 1`.
    pub hash: ChainHash,
    /// When the prefix was pruned.
    pub at: Timestamp,
    /// HMAC-SHA256 under the checkpoint key of `"sessiond/audit-checkpoint/v1" 0x00`, `seq`
    /// (8 bytes big-endian), `hash` and `at` (8 bytes big-endian).
    pub mac: ChainHash,
}

impl AuditCheckpoint {
    /// The checkpoint after pruning through `seq`, whose event hashed to `hash`, signed with
    /// `key`.
    pub fn sign(seq: u64, hash: ChainHash, at: Timestamp, key: &[u8]) -> Self {
        let mac = checkpoint_mac(seq, &hash, at, key);
        Self { seq, hash, at, mac }
    }

    /// Whether the MAC is right for `key`, compared in constant time.
    pub fn is_authentic(&self, key: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        let expected = checkpoint_mac(self.seq, &self.hash, self.at, key);
        bool::from(expected.ct_eq(&self.mac))
    }
}

fn checkpoint_mac(seq: u64, hash: &ChainHash, at: Timestamp, key: &[u8]) -> ChainHash {
    let mut message = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 8 + hash.len() + 8);
    message.extend_from_slice(CHECKPOINT_DOMAIN);
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash);
    message.extend_from_slice(&at.unix_millis().to_be_bytes());
    crate::primitives::hmac_sha256(key, &message)
}

/// The secret that signs checkpoints: 256 random bits.
pub fn generate_checkpoint_key() -> CheckpointKey {
    let mut key = zeroize::Zeroizing::new(vec![0_u8; 32]);
    getrandom::fill(key.as_mut_slice()).expect("the OS CSPRNG is unavailable");
    key
}

/// Where and why verification stopped: the first sequence number at which the stored chain
/// differs from one that was only ever appended to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct ChainBreak {
    /// The first bad sequence number.
    pub seq: u64,
    /// What is wrong there.
    pub reason: String,
}

/// What a verified chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// The checkpoint the chain starts from, if it was pruned.
    pub checkpoint: Option<u64>,
    /// How many events were checked.
    pub events: u64,
    /// The seq of the newest event (or of the checkpoint; 0 for an empty chain).
    pub head_seq: u64,
    /// Its hash: record it elsewhere to detect, later, a chain rewritten from the start.
    pub head_hash: ChainHash,
}

/// Checks a chain one event at a time, in seq order, from its checkpoint or from genesis.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    checkpoint: Option<u64>,
    last_seq: u64,
    last_hash: ChainHash,
    events: u64,
}

impl ChainVerifier {
    /// Starts at `checkpoint` (checked against `key`), or at genesis when there is none.
    ///
    /// # Errors
    /// [`ChainBreak`] at the checkpoint's seq when its MAC is wrong.
    pub fn new(checkpoint: Option<&AuditCheckpoint>, key: &[u8]) -> Result<Self, ChainBreak> {
        match checkpoint {
            None => Ok(Self {
                checkpoint: None,
                last_seq: 0,
                last_hash: GENESIS_HASH,
                events: 0,
            }),
            Some(checkpoint) if checkpoint.is_authentic(key) => Ok(Self {
                checkpoint: Some(checkpoint.seq),
                last_seq: checkpoint.seq,
                last_hash: checkpoint.hash,
                events: 0,
            }),
            Some(checkpoint) => Err(ChainBreak {
                seq: checkpoint.seq,
                reason: "the checkpoint's signature does not match".to_owned(),
            }),
        }
    }

    /// Checks the next event read in seq order.
    ///
    /// # Errors
    /// [`ChainBreak`] naming the first bad seq: a missing or repeated seq, a `prev_hash`
    /// other than the hash before it, or a hash other than that of its contents.
    pub fn check(&mut self, event: &SealedAuditEvent) -> Result<(), ChainBreak> {
        let expected = self.last_seq + 1;
        if event.seq != expected {
            let reason = if event.seq > expected {
                format!(
                    "the event is missing (the next one stored is {})",
                    event.seq
                )
            } else {
                format!("seq {} appears out of order", event.seq)
            };
            return Err(ChainBreak {
                seq: expected,
                reason,
            });
        }
        if event.prev_hash != self.last_hash {
            return Err(ChainBreak {
                seq: event.seq,
                reason: format!(
                    "prev_hash is not the hash of seq {} (an event was removed, inserted or \
                     moved before it)",
                    self.last_seq
                ),
            });
        }
        if chain_hash(event.seq, &event.prev_hash, &event.entry) != event.hash {
            return Err(ChainBreak {
                seq: event.seq,
                reason: "the hash does not match the event's contents (it was edited)".to_owned(),
            });
        }
        self.last_seq = event.seq;
        self.last_hash = event.hash;
        self.events += 1;
        Ok(())
    }

    /// The seq of the last event checked (or of the checkpoint).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Ends the check at the chain's recorded head, once every event up to it was checked.
    ///
    /// # Errors
    /// [`ChainBreak`] when the events end before the head (the newest ones were deleted) or
    /// go past it, or when the last one is not the one the head recorded.
    pub fn finish(self, head_seq: u64, head_hash: &ChainHash) -> Result<ChainSummary, ChainBreak> {
        if head_seq > self.last_seq {
            return Err(ChainBreak {
                seq: self.last_seq + 1,
                reason: format!(
                    "the event is missing (the chain's recorded head is seq {head_seq})"
                ),
            });
        }
        if head_seq < self.last_seq {
            return Err(ChainBreak {
                seq: head_seq + 1,
                reason: format!("the event is past the chain's recorded head (seq {head_seq})"),
            });
        }
        if *head_hash != self.last_hash {
            return Err(ChainBreak {
                seq: head_seq,
                reason: "the event is not the one the chain's head recorded".to_owned(),
            });
        }
        Ok(self.summary())
    }

    /// The chain checked so far, head unchecked.
    pub fn summary(&self) -> ChainSummary {
        ChainSummary {
            checkpoint: self.checkpoint,
            events: self.events,
            head_seq: self.last_seq,
            head_hash: self.last_hash,
        }
    }
}

/// Which sealed audit events a reader wants, in seq order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events after this seq (0: from the first).
    pub after_seq: u64,
    /// Only this user's.
    pub user_id: Option<UserId>,
    /// Only this session's.
    pub session_id: Option<SessionId>,
    /// Only this type.
    pub kind: Option<String>,
    /// Only events that happened at or after this instant.
    pub since: Option<Timestamp>,
}

/// The secret that signs checkpoints, wiped from memory when dropped.
pub type CheckpointKey = zeroize::Zeroizing<Vec<u8>>;

/// The chain's state outside its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChain {
    /// The seq of the newest sealed event (0 before the first).
    pub head_seq: u64,
    /// Its hash ([`GENESIS_HASH`] before the first).
    pub head_hash: ChainHash,
    /// The checkpoint of the last pruning.
    pub checkpoint: Option<AuditCheckpoint>,
}

/// Builds the checkpoint for a pruned prefix from the seq and hash of its last event.
pub type CheckpointFor<'a> = &'a CheckpointFn;

/// Signs the checkpoint of a pruned prefix; shared, so a store may call it on its own thread.
pub type CheckpointFn = std::sync::Arc<dyn Fn(u64, ChainHash) -> AuditCheckpoint + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn an_events_ip_row_binds_every_other_field_and_not_the_address() {
        let base = entry(1);
        let row = base.ip_row();
        let mut other_address = base.clone();
        other_address.ip = Some("198.51.100.1".into());
        assert_eq!(other_address.ip_row(), row);
        // Details hash in canonical form, however the store gives them back.
        let mut reordered = base.clone();
        reordered.details = "{\"b\": 1, \"a\": 2}".into();
        let mut canonical = base.clone();
        canonical.details = "{\"a\":2,\"b\":1}".into();
        assert_eq!(reordered.ip_row(), canonical.ip_row());
        let changes: [fn(&mut AuditEntry); 6] = [
            |entry| entry.kind = "session.revoked".into(),
            |entry| entry.severity = "warning".into(),
            |entry| entry.user_id = None,
            |entry| entry.session_id = Some("00000000-0000-0000-0000-000000000001".into()),
            |entry| entry.at = Timestamp::from_unix_millis(entry.at.unix_millis() + 1),
            |entry| entry.details = "{\"reason\":\"x\"}".into(),
        ];
        for change in changes {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(changed.ip_row(), row, "{changed:?}");
        }
    }

    /// The encoding `chain_hash` and `ip_row` document, hashed independently (Python's
    /// `hashlib` over the bytes the doc comments give).
    #[test]
    fn the_hashes_match_their_documented_encoding() {
        let entry = AuditEntry {
            kind: "session.refreshed".to_owned(),
            severity: "info".to_owned(),
            user_id: Some("alice".to_owned()),
            session_id: Some("00000000-0000-0000-0000-000000000007".to_owned()),
            ip: Some("sealed".to_owned()),
            at: Timestamp::from_unix_millis(1_000),
            details: r#"{"b": "x", "a": 1}"#.to_owned(),
        };
        assert_eq!(
            hex(&chain_hash(3, &[7; 32], &entry)),
            "d72359a0fbfc3521bd11519e8a770da957d742eae110a87fa87b552fa853d992"
        );
        let without_session = AuditEntry {
            session_id: None,
            ..entry
        };
        assert_eq!(
            hex(&without_session.ip_row()),
            "8bd6b4d40579a09efe38641f5de2f523923c72b9330471f5235ced7e3915a915"
        );
    }

    /// JSON values of every kind, floats and nesting included.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,4}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn an_entry_as_written_hashes_as_its_row_read_back() {
        use proptest::prelude::*;
        let cases = (
            prop::collection::btree_map(".{0,6}", json_value(), 0..5),
            any::<u64>(),
            any::<[u8; 32]>(),
        );
        crate::proptesting::check(cases, |(details, seq, prev_hash)| {
            let event = NewAuditEvent {
                kind: "session.refreshed",
                severity: Severity::Info,
                user_id: Some(UserId::parse("alice".to_owned(), "user_id").expect("valid")),
                session_id: Some(SessionId::from_uuid(uuid::Uuid::from_u128(7))),
                ip: None,
                at: Timestamp::from_unix_millis(1_000),
                details: details.into_iter().collect(),
            };
            let mut written = CanonicalEntry::of(&event);
            written.set_ip(Some("sealed address".to_owned()));
            let read_back = written.entry().clone();
            prop_assert_eq!(written.ip_row(), read_back.ip_row());
            prop_assert_eq!(
                written.chain_hash(seq, &prev_hash),
                chain_hash(seq, &prev_hash, &read_back)
            );
            Ok(())
        });
    }

    fn entry(index: u64) -> AuditEntry {
        AuditEntry {
            kind: "session.created".to_owned(),
            severity: "info".to_owned(),
            user_id: Some(format!("user-{index}")),
            session_id: None,
            ip: Some("192.0.2.1".to_owned()),
            at: Timestamp::from_unix_millis(1_000 + i64::try_from(index).expect("small")),
            details: r#"{"b":1,"a":"x"}"#.to_owned(),
        }
    }

    fn chain(from: u64, prev: ChainHash, count: u64) -> Vec<SealedAuditEvent> {
        let mut prev_hash = prev;
        (from..from + count)
            .map(|seq| {
                let entry = entry(seq);
                let hash = chain_hash(seq, &prev_hash, &entry);
                let event = SealedAuditEvent {
                    seq,
                    entry,
                    prev_hash,
                    hash,
                };
                prev_hash = hash;
                event
            })
            .collect()
    }

    fn verify(
        checkpoint: Option<&AuditCheckpoint>,
        events: &[SealedAuditEvent],
    ) -> Result<ChainSummary, ChainBreak> {
        let mut verifier = ChainVerifier::new(checkpoint, KEY)?;
        for event in events {
            verifier.check(event)?;
        }
        Ok(verifier.summary())
    }

    #[test]
    fn canonical_details_sort_keys_at_every_level_without_whitespace() {
        let details: Map<String, Value> = serde_json::from_str(
            r#"{"z": {"b": [1, {"y": 2, "x": "é\n"}], "a": null}, "a": true}"#,
        )
        .expect("json");
        assert_eq!(
            canonical_details(&details),
            r#"{"a":true,"z":{"a":null,"b":[1,{"x":"é\n","y":2}]}}"#
        );
    }

    #[test]
    fn the_hash_covers_every_field_and_the_details_in_canonical_form() {
        let base = entry(1);
        let hash = chain_hash(1, &GENESIS_HASH, &base);
        let reordered = AuditEntry {
            details: r#"{ "a": "x", "b": 1 }"#.to_owned(),
            ..base.clone()
        };
        assert_eq!(chain_hash(1, &GENESIS_HASH, &reordered), hash);
        let variants = [
            AuditEntry {
                kind: "session.revoked".to_owned(),
                ..base.clone()
            },
            AuditEntry {
                user_id: None,
                ..base.clone()
            },
            AuditEntry {
                user_id: Some(String::new()),
                ..base.clone()
            },
            AuditEntry {
                at: Timestamp::from_unix_millis(2),
                ..base.clone()
            },
            AuditEntry {
                details: r#"{"a":"y","b":1}"#.to_owned(),
                ..base.clone()
            },
        ];
        for variant in &variants {
            assert_ne!(chain_hash(1, &GENESIS_HASH, variant), hash, "{variant:?}");
        }
        assert_ne!(chain_hash(2, &GENESIS_HASH, &base), hash);
        assert_ne!(chain_hash(1, &[1; 32], &base), hash);
    }

    #[test]
    fn an_untouched_chain_verifies_and_reports_its_head() {
        let events = chain(1, GENESIS_HASH, 5);
        let summary = verify(None, &events).expect("intact");
        assert_eq!(summary.events, 5);
        assert_eq!(summary.head_seq, 5);
        assert_eq!(summary.head_hash, events[4].hash);
        assert_eq!(verify(None, &[]).expect("empty").head_seq, 0);
    }

    #[test]
    fn the_recorded_head_catches_the_newest_events_deleted() {
        let events = chain(1, GENESIS_HASH, 5);
        let check = |count: usize, head_seq: u64, head_hash: &ChainHash| {
            let mut verifier = ChainVerifier::new(None, KEY).expect("genesis");
            for event in &events[..count] {
                verifier.check(event).expect("intact");
            }
            verifier
                .finish(head_seq, head_hash)
                .map(|summary| summary.head_seq)
        };
        assert_eq!(check(5, 5, &events[4].hash), Ok(5));
        assert_eq!(check(4, 5, &events[4].hash).expect_err("deleted").seq, 5);
        assert_eq!(check(5, 4, &events[3].hash).expect_err("beyond").seq, 5);
        assert_eq!(check(5, 5, &events[3].hash).expect_err("other").seq, 5);
    }

    #[test]
    fn an_edited_event_is_named() {
        let mut events = chain(1, GENESIS_HASH, 5);
        events[2].entry.details = r#"{"a":"forged","b":1}"#.to_owned();
        assert_eq!(verify(None, &events).expect_err("edited").seq, 3);
    }

    #[test]
    fn a_deleted_event_is_named() {
        let mut events = chain(1, GENESIS_HASH, 5);
        events.remove(1);
        assert_eq!(verify(None, &events).expect_err("deleted").seq, 2);
        let mut first_gone = chain(1, GENESIS_HASH, 3);
        first_gone.remove(0);
        assert_eq!(verify(None, &first_gone).expect_err("deleted").seq, 1);
    }

    #[test]
    fn an_inserted_event_is_named_even_with_later_seqs_renumbered() {
        let mut events = chain(1, GENESIS_HASH, 5);
        let forged_entry = entry(99);
        let forged = SealedAuditEvent {
            seq: 3,
            hash: chain_hash(3, &events[1].hash, &forged_entry),
            prev_hash: events[1].hash,
            entry: forged_entry,
        };
        for event in &mut events[2..] {
            event.seq += 1;
        }
        events.insert(2, forged);
        assert_eq!(verify(None, &events).expect_err("inserted").seq, 4);
    }

    #[test]
    fn swapped_events_are_named_at_the_first_of_them() {
        let mut events = chain(1, GENESIS_HASH, 5);
        events.swap(1, 3);
        events[1].seq = 2;
        events[3].seq = 4;
        assert_eq!(verify(None, &events).expect_err("swapped").seq, 2);
    }

    #[test]
    fn a_chain_resumes_from_a_signed_checkpoint_and_a_forged_one_is_refused() {
        let all = chain(1, GENESIS_HASH, 6);
        let checkpoint = AuditCheckpoint::sign(3, all[2].hash, Timestamp::from_unix_millis(5), KEY);
        let summary = verify(Some(&checkpoint), &all[3..]).expect("resumes");
        assert_eq!(
            (summary.checkpoint, summary.events, summary.head_seq),
            (Some(3), 3, 6)
        );

        // Pruning one more event and re-signing needs the key.
        let forged = AuditCheckpoint {
            seq: 4,
            hash: all[3].hash,
            ..checkpoint.clone()
        };
        assert_eq!(verify(Some(&forged), &all[4..]).expect_err("forged").seq, 4);
        let wrong_key = AuditCheckpoint::sign(4, all[3].hash, checkpoint.at, b"guess");
        assert_eq!(
            verify(Some(&wrong_key), &all[4..]).expect_err("forged").seq,
            4
        );
        // Events pruned beyond the checkpoint are missing.
        assert_eq!(
            verify(Some(&checkpoint), &all[4..]).expect_err("gap").seq,
            4
        );
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
