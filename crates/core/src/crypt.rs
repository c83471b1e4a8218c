//! Encryption at rest: the master key, the data keys it wraps, and the [`Cipher`] stores use
//! to seal the columns that hold secrets or personal data.
//!
//! Envelope encryption. Values are encrypted with AES-256-GCM under a *data key*; data keys are
//! stored in the database only wrapped (AES-256-GCM again) under the *master key*, which never
//! reaches the database. Rotating the master key therefore re-wraps the few data keys and
//! touches no row of data, and a running server, which holds the unwrapped data keys in memory,
//! never notices.
//!
//! Every sealed value is `MAGIC || data key id (4 bytes, big-endian) || nonce (96 bits, fresh
//! from the OS CSPRNG) || ciphertext and tag`. The associated data names the column and the
//! row (see [`aad`]), so a value copied into another row, or another column, fails to open
//! instead of showing another row's data. Text columns keep the same bytes in base64 after
//! [`TEXT_PREFIX`]. A value without the prefix was written before encryption existed and is
//! read as it is (stores write every new value sealed once a cipher is installed).
//!
//! This module does no I/O: the server reads the key from its configuration, and [`unlock`]
//! talks to the database only through [`Store`].

use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::audit::{AuditEntry, CanonicalEntry};
use crate::primitives::{Aes256Gcm, hmac_sha256};

use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// The first bytes of every sealed binary value.
pub const MAGIC: &[u8; 6] = b"sdenc1";
/// The first characters of every sealed text value; the rest is base64 of the sealed bytes
/// without [`MAGIC`].
pub const TEXT_PREFIX: &str = "sdenc1:";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
const CHECK_LABEL: &[u8] = b"sessiond/master-key-check/v1";
const WRAP_LABEL: &[u8] = b"sessiond/data-key/v1\0";
/// The prefix of the labels [`MasterKey::derive`] takes, apart from the check value's.
const DERIVE_LABEL: &[u8] = b"sessiond/derived/v1\0";
const VALUE_LABEL: &[u8] = b"sessiond/at-rest/v1\0";

/// Why a key could not be read or a value could not be opened. Never carries key material or
/// plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// The configured master key is not base64 of 32 bytes.
    #[error("the master key must be base64 of 32 bytes")]
    MalformedMasterKey,
    /// A sealed value did not authenticate: it belongs to another row or column, was altered,
    /// or the key is wrong.
    #[error("an encrypted value does not open (altered, moved from another row, or wrong key)")]
    DoesNotOpen,
    /// A sealed value names a data key that is not loaded.
    #[error("an encrypted value names data key {0}, which is not loaded")]
    UnknownDataKey(u32),
    /// A sealed value is shorter than its header.
    #[error("an encrypted value is truncated")]
    Truncated,
    /// A sealed value was found but no data keys are loaded (no master key was given).
    #[error("an encrypted value was found but no master key is loaded")]
    NoCipher,
    /// A text column opened to bytes that are not UTF-8.
    #[error("an encrypted text value is not UTF-8")]
    NotText,
}

impl From<CryptError> for StoreError {
    fn from(error: CryptError) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

/// The encrypted columns, as named in associated data. Their row is the session id (as text)
/// for `sessions`, `user_id NUL device_id` for `devices` (see [`device_row`]), the `kid` for
/// `signing_keys`, and the token hash for `refresh_tokens`.
pub mod columns {
    /// `sessions.metadata` (JSON text).
    pub const SESSION_METADATA: &str = "sessions.metadata";
    /// `sessions.device_name`.
    pub const SESSION_DEVICE_NAME: &str = "sessions.device_name";
    /// `sessions.ip`.
    pub const SESSION_IP: &str = "sessions.ip";
    /// `sessions.user_agent`.
    pub const SESSION_USER_AGENT: &str = "sessions.user_agent";
    /// `devices.name`.
    pub const DEVICE_NAME: &str = "devices.name";
    /// `devices.user_agent`.
    pub const DEVICE_USER_AGENT: &str = "devices.user_agent";
    /// `devices.last_ip`.
    pub const DEVICE_LAST_IP: &str = "devices.last_ip";
    /// `signing_keys.secret`.
    pub const KEY_SECRET: &str = "signing_keys.secret";
    /// `refresh_tokens.sealed_successor` (SQLite keeps it in `successor_seals.sealed`, under
    /// this same name); its row is the spent token's hash.
    pub const SEALED_SUCCESSOR: &str = "refresh_tokens.sealed_successor";
    /// `audit_events.ip`; its row is [`crate::audit::AuditEntry::ip_row`] of the event's other fields.
    pub const AUDIT_IP: &str = "audit_events.ip";
}

/// The row key of a `devices` row in associated data: `user_id NUL device_id`.
pub fn device_row(user_id: &str, device_id: &str) -> Vec<u8> {
    let mut row = Vec::with_capacity(user_id.len() + 1 + device_id.len());
    row.extend_from_slice(user_id.as_bytes());
    row.push(0);
    row.extend_from_slice(device_id.as_bytes());
    row
}

/// The associated data of a value of `column` (`table.column`) in the row whose key is `row`.
pub fn aad(column: &str, row: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(VALUE_LABEL.len() + column.len() + 1 + row.len());
    aad.extend_from_slice(VALUE_LABEL);
    aad.extend_from_slice(column.as_bytes());
    aad.push(0);
    aad.extend_from_slice(row);
    aad
}

fn random<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut bytes = Zeroizing::new([0u8; N]);
    #[allow(clippy::expect_used)]
    getrandom::fill(bytes.as_mut()).expect("the OS CSPRNG is unavailable");
    bytes
}

/// AES-256-GCM of `plaintext` under `cipher` with a fresh nonce: `nonce || ciphertext`.
fn encrypt(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    let mut nonce = [0u8; NONCE_LEN];
    crate::random::fill(&mut nonce);
    out.extend_from_slice(nonce.as_ref());
    cipher.seal_into(&nonce, aad, plaintext, out);
}

fn decrypt(
    cipher: &Aes256Gcm,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptError::Truncated);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptError::Truncated)?;
    cipher
        .open(nonce, aad, ciphertext)
        .ok_or(CryptError::DoesNotOpen)
}

/// The master key: 32 bytes that wrap the data keys. Zeroized on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A new key from the OS CSPRNG.
    pub fn generate() -> Self {
        Self(random())
    }

    /// Reads a key written as base64 (standard or URL-safe, padded or not) of 32 bytes.
    ///
    /// # Errors
    /// [`CryptError::MalformedMasterKey`]; the message never repeats the text.
    pub fn from_base64(text: &str) -> Result<Self, CryptError> {
        let text = text.trim();
        let decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .map(Zeroizing::new)
            .ok_or(CryptError::MalformedMasterKey)?;
        let bytes: [u8; KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| CryptError::MalformedMasterKey)?;
        Ok(Self(Zeroizing::new(bytes)))
    }

    /// The key as standard base64, to write into a key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    /// The key-check value stored in the database: HMAC-SHA256 of a fixed label under the key.
    /// It tells whether a key is the right one and reveals nothing about it.
    pub fn check_value(&self) -> Vec<u8> {
        hmac_sha256(self.0.as_ref(), CHECK_LABEL).to_vec()
    }

    /// A 32-byte secret for one purpose, named by `label`: HMAC-SHA256 under the key of a
    /// domain-separated label. Every process holding the master key derives the same secret,
    /// and a secret says nothing of the key nor of the secrets of other labels.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; KEY_LEN]> {
        let mut input = DERIVE_LABEL.to_vec();
        input.extend_from_slice(label.as_bytes());
        Zeroizing::new(hmac_sha256(self.0.as_ref(), &input))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0)
    }

    fn wrap_aad(id: u32) -> Vec<u8> {
        let mut aad = WRAP_LABEL.to_vec();
        aad.extend_from_slice(&id.to_be_bytes());
        aad
    }

    /// `key` encrypted under this master key, with its id bound as associated data.
    pub fn wrap(&self, key: &DataKey, created_at: Timestamp) -> WrappedDataKey {
        let mut wrapped = Vec::with_capacity(NONCE_LEN + KEY_LEN + TAG_LEN);
        encrypt(
            &self.cipher(),
            &Self::wrap_aad(key.id),
            key.key.as_ref(),
            &mut wrapped,
        );
        WrappedDataKey {
            id: key.id,
            wrapped,
            created_at,
        }
    }

    /// The data key inside `wrapped`.
    ///
    /// # Errors
    /// [`CryptError::DoesNotOpen`] when this is not the key that wrapped it.
    pub fn unwrap(&self, wrapped: &WrappedDataKey) -> Result<DataKey, CryptError> {
        let plain = decrypt(
            &self.cipher(),
            &Self::wrap_aad(wrapped.id),
            &wrapped.wrapped,
        )?;
        let key: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptError::DoesNotOpen)?;
        Ok(DataKey {
            id: wrapped.id,
            key: Zeroizing::new(key),
        })
    }
}

/// A data key in the clear, as held in memory. Zeroized on drop; `Debug` shows its id only.
pub struct DataKey {
    id: u32,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// A new data key from the OS CSPRNG.
    pub fn generate(id: u32) -> Self {
        Self { id, key: random() }
    }

    /// Its id, which prefixes every value it seals.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// A data key as stored: wrapped under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    /// The id sealed values name.
    pub id: u32,
    /// `nonce || AES-256-GCM(master key, data key)`.
    pub wrapped: Vec<u8>,
    /// When it was generated.
    pub created_at: Timestamp,
}

/// Seals and opens values under the loaded data keys; the newest one seals.
pub struct Cipher {
    keys: Vec<(u32, Aes256Gcm)>,
    current: usize,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher")
            .field(
                "data_key_ids",
                &self.keys.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Cipher {
    /// A cipher over `keys`, sealing with the one of the highest id; `None` when empty.
    pub fn new(keys: &[DataKey]) -> Option<Self> {
        let current = keys
            .iter()
            .enumerate()
            .max_by_key(|(_, key)| key.id)
            .map(|(index, _)| index)?;
        Some(Self {
            keys: keys
                .iter()
                .map(|key| (key.id, Aes256Gcm::new(&key.key)))
                .collect(),
            current,
        })
    }

    /// `plaintext` sealed for `aad` (see [`aad`]).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let (id, cipher) = &self.keys[self.current];
        let mut sealed =
            Vec::with_capacity(MAGIC.len() + ID_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&id.to_be_bytes());
        encrypt(cipher, aad, plaintext, &mut sealed);
        sealed
    }

    /// Opens a value sealed by [`Cipher::seal`] for the same `aad`.
    ///
    /// # Errors
    /// [`CryptError`] when it is not a sealed value, names an unknown key, or does not open.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptError> {
        let body = sealed.strip_prefix(MAGIC).ok_or(CryptError::Truncated)?;
        if body.len() < ID_LEN {
            return Err(CryptError::Truncated);
        }
        let (id, rest) = body.split_at(ID_LEN);
        let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(key_id, _)| *key_id == id)
            .ok_or(CryptError::UnknownDataKey(id))?;
        decrypt(cipher, aad, rest)
    }

    /// `text` sealed for `aad`, as text: [`TEXT_PREFIX`] and base64.
    pub fn seal_text(&self, aad: &[u8], text: &str) -> String {
        let sealed = self.seal(aad, text.as_bytes());
        let mut out = String::with_capacity(TEXT_PREFIX.len() + sealed.len() * 4 / 3 + 4);
        out.push_str(TEXT_PREFIX);
        STANDARD_NO_PAD.encode_string(&sealed[MAGIC.len()..], &mut out);
        out
    }

    /// Opens a value sealed by [`Cipher::seal_text`] for the same `aad`.
    ///
    /// # Errors
    /// As [`Cipher::open`], and [`CryptError::NotText`].
    pub fn open_text(&self, aad: &[u8], sealed: &str) -> Result<String, CryptError> {
        let body = sealed
            .strip_prefix(TEXT_PREFIX)
            .ok_or(CryptError::Truncated)?;
        let mut bytes = Zeroizing::new(MAGIC.to_vec());
        STANDARD_NO_PAD
            .decode_vec(body, &mut bytes)
            .map_err(|_| CryptError::Truncated)?;
        let plain = self.open(aad, &bytes)?;
        String::from_utf8(plain.to_vec()).map_err(|_| CryptError::NotText)
    }
}

/// The cipher a store seals with, installed once the server has unlocked the data keys. Until
/// one is installed (a store's own tests, a database being upgraded) values are written as they
/// are; reading accepts both sealed values and values written before encryption existed.
#[derive(Debug, Default)]
pub struct CipherSlot(RwLock<Option<Arc<Cipher>>>);

impl CipherSlot {
    /// Seals every value written from now on with `cipher`.
    pub fn install(&self, cipher: Arc<Cipher>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(cipher);
    }

    /// The installed cipher, if any.
    pub fn get(&self) -> Option<Arc<Cipher>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `text` as it is stored in `column` of row `row`.
    pub fn seal_text(&self, column: &str, row: &[u8], text: &str) -> String {
        match self.get() {
            Some(cipher) => cipher.seal_text(&aad(column, row), text),
            None => text.to_owned(),
        }
    }

    /// As [`CipherSlot::seal_text`], for a column that may be NULL.
    pub fn seal_optional_text(
        &self,
        column: &str,
        row: &[u8],
        text: Option<&str>,
    ) -> Option<String> {
        text.map(|text| self.seal_text(column, row, text))
    }

    /// An audit event's address as it is stored: `ip` sealed for `entry`'s row
    /// ([`CanonicalEntry::ip_row`], in column [`columns::AUDIT_IP`]). The row is hashed only
    /// when there is an address to seal (a refresh's event has none).
    pub fn seal_audit_ip(&self, entry: &CanonicalEntry, ip: Option<&str>) -> Option<String> {
        ip.map(|ip| self.seal_text(columns::AUDIT_IP, &entry.ip_row(), ip))
    }

    /// The text of a stored value of `column` in row `row`.
    ///
    /// # Errors
    /// [`CryptError`] when a sealed value does not open.
    pub fn open_text(
        &self,
        column: &str,
        row: &[u8],
        stored: String,
    ) -> Result<String, CryptError> {
        if !stored.starts_with(TEXT_PREFIX) {
            return Ok(stored);
        }
        self.get()
            .ok_or(CryptError::NoCipher)?
            .open_text(&aad(column, row), &stored)
    }

    /// As [`CipherSlot::open_text`], for a column that may be NULL.
    ///
    /// # Errors
    /// As [`CipherSlot::open_text`].
    pub fn open_optional_text(
        &self,
        column: &str,
        row: &[u8],
        stored: Option<String>,
    ) -> Result<Option<String>, CryptError> {
        stored
            .map(|stored| self.open_text(column, row, stored))
            .transpose()
    }

    /// An audit event's address as stored in `entry` ([`Self::seal_audit_ip`]), opened. Its row
    /// is hashed only when there is an address to open.
    ///
    /// # Errors
    /// As [`CipherSlot::open_text`].
    pub fn open_audit_ip(&self, entry: &AuditEntry) -> Result<Option<String>, CryptError> {
        entry
            .ip
            .as_ref()
            .map(|stored| self.open_text(columns::AUDIT_IP, &entry.ip_row(), stored.clone()))
            .transpose()
    }

    /// The text of a stored value of `column` in row `row`, or `None` when it does not open;
    /// then `column` is added to `unreadable`. A value that does not open is one moved from
    /// another row or column, altered, or sealed under a key not loaded: reading the rest of the
    /// row must not depend on it (see [`crate::integrity`]).
    pub fn open_text_or_note(
        &self,
        column: &'static str,
        row: &[u8],
        stored: Option<String>,
        unreadable: &mut Vec<&'static str>,
    ) -> Option<String> {
        match self.open_optional_text(column, row, stored) {
            Ok(text) => text,
            Err(_) => {
                unreadable.push(column);
                None
            }
        }
    }

    /// `bytes` as they are stored in `column` of row `row`.
    pub fn seal_bytes(&self, column: &str, row: &[u8], bytes: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self.get() {
            Some(cipher) => cipher.seal(&aad(column, row), bytes),
            None => bytes.to_vec(),
        })
    }

    /// The bytes of a stored value of `column` in row `row`.
    ///
    /// # Errors
    /// [`CryptError`] when a sealed value does not open.
    pub fn open_bytes(
        &self,
        column: &str,
        row: &[u8],
        stored: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptError> {
        let stored = Zeroizing::new(stored);
        if !stored.starts_with(MAGIC) {
            return Ok(stored);
        }
        self.get()
            .ok_or(CryptError::NoCipher)?
            .open(&aad(column, row), &stored)
    }
}

/// Why the data keys could not be unlocked or re-wrapped.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    /// The database was encrypted under another master key.
    #[error(
        "wrong master key: the database was encrypted under another one \
         (check SESSIOND_MASTER_KEY, or set SESSIOND_MASTER_KEY_PREVIOUS during a rotation)"
    )]
    WrongMasterKey,
    /// A stored data key does not open under the key the check value accepts.
    #[error("stored data key {0} does not open under the master key")]
    DataKeyDoesNotOpen(u32),
    /// Another process changed the data keys at the same moment.
    #[error("the data keys changed during the operation; try again")]
    Conflict,
    /// Storage failed.
    #[error("storage failed")]
    Store(#[from] StoreError),
}

/// Which configured key opened the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlocked {
    /// The current master key.
    Current,
    /// The previous one: the database has not been re-wrapped under the current key yet.
    Previous,
    /// Neither: the database had no key-check value, so it is now encrypted under the current
    /// key with a new data key.
    Initialized,
}

/// Opens the database's data keys with `master` (or `previous`, during a rotation), creating
/// the first data key and the key-check value when the database has none, and installs the
/// cipher in `store`. A wrong key writes nothing.
///
/// # Errors
/// [`UnlockError::WrongMasterKey`] when neither key matches the stored check value.
pub async fn unlock(
    store: &dyn Store,
    master: &MasterKey,
    previous: Option<&MasterKey>,
    now: Timestamp,
) -> Result<(Arc<Cipher>, Unlocked), UnlockError> {
    let mut initialized = false;
    let check = match store.master_key_check().await? {
        Some(check) => check,
        None => {
            let first = DataKey::generate(1);
            // Another process starting at the same moment may win; its check value is read.
            initialized = store
                .initialize_encryption(&master.check_value(), &master.wrap(&first, now))
                .await?;
            store
                .master_key_check()
                .await?
                .ok_or(UnlockError::Conflict)?
        }
    };
    let (key, unlocked) = if check == master.check_value() {
        let how = if initialized {
            Unlocked::Initialized
        } else {
            Unlocked::Current
        };
        (master, how)
    } else if let Some(previous) = previous.filter(|key| check == key.check_value()) {
        (previous, Unlocked::Previous)
    } else {
        return Err(UnlockError::WrongMasterKey);
    };
    let keys = store
        .data_keys()
        .await?
        .iter()
        .map(|wrapped| {
            key.unwrap(wrapped)
                .map_err(|_| UnlockError::DataKeyDoesNotOpen(wrapped.id))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cipher = Arc::new(Cipher::new(&keys).ok_or(UnlockError::Conflict)?);
    store.install_cipher(cipher.clone());
    Ok((cipher, unlocked))
}

/// Re-wraps every data key from `old` to `new` and replaces the key-check value, in one
/// transaction. Rows of data are not touched, so running servers, which hold the unwrapped data
/// keys, keep working. Returns how many keys were re-wrapped; 0 when the database is already
/// under `new`.
///
/// # Errors
/// [`UnlockError::WrongMasterKey`] when `old` is not the database's key.
pub async fn rotate_master_key(
    store: &dyn Store,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, UnlockError> {
    let check = store.master_key_check().await?;
    if check.as_deref() == Some(new.check_value().as_slice()) {
        return Ok(0);
    }
    if check.as_deref() != Some(old.check_value().as_slice()) {
        return Err(UnlockError::WrongMasterKey);
    }
    let stored = store.data_keys().await?;
    let rewrapped = stored
        .iter()
        .map(|wrapped| {
            old.unwrap(wrapped)
                .map(|key| new.wrap(&key, wrapped.created_at))
                .map_err(|_| UnlockError::DataKeyDoesNotOpen(wrapped.id))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !store
        .rewrap_data_keys(&old.check_value(), &new.check_value(), &rewrapped)
        .await?
    {
        return Err(UnlockError::Conflict);
    }
    Ok(rewrapped.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Cipher {
        Cipher::new(&[DataKey::generate(1)]).unwrap()
    }

    #[test]
    fn a_value_opens_only_for_its_own_row_and_column() {
        let cipher = cipher();
        let sealed = cipher.seal(&aad("sessions.metadata", b"row-1"), b"{\"plan\":\"pro\"}");
        assert_eq!(
            &cipher
                .open(&aad("sessions.metadata", b"row-1"), &sealed)
                .unwrap()[..],
            b"{\"plan\":\"pro\"}"
        );
        assert_eq!(
            cipher.open(&aad("sessions.metadata", b"row-2"), &sealed),
            Err(CryptError::DoesNotOpen)
        );
        assert_eq!(
            cipher.open(&aad("sessions.user_agent", b"row-1"), &sealed),
            Err(CryptError::DoesNotOpen)
        );
    }

    #[test]
    fn a_derived_secret_is_the_same_for_one_key_and_label_and_differs_otherwise() {
        let key = MasterKey::generate();
        let same = MasterKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(*key.derive("dpop-nonce"), *same.derive("dpop-nonce"));
        assert_ne!(*key.derive("dpop-nonce"), *key.derive("other"));
        assert_ne!(
            *key.derive("dpop-nonce"),
            *MasterKey::generate().derive("dpop-nonce")
        );
        assert_ne!(&key.derive("")[..], &key.check_value()[..]);
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let cipher = cipher();
        let first = cipher.seal(b"a", b"same");
        let second = cipher.seal(b"a", b"same");
        assert_ne!(first, second);
        assert!(first.starts_with(MAGIC));
        assert_eq!(
            &first[MAGIC.len()..MAGIC.len() + ID_LEN],
            &1u32.to_be_bytes()
        );
    }

    #[test]
    fn altered_truncated_or_foreign_values_are_refused() {
        let cipher = cipher();
        let mut sealed = cipher.seal(b"a", b"secret");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(cipher.open(b"a", &sealed), Err(CryptError::DoesNotOpen));
        assert_eq!(cipher.open(b"a", &sealed[..12]), Err(CryptError::Truncated));
        let other = Cipher::new(&[DataKey::generate(2)]).unwrap();
        assert_eq!(
            other.open(b"a", &cipher.seal(b"a", b"x")),
            Err(CryptError::UnknownDataKey(1))
        );
    }

    #[test]
    fn text_values_round_trip_and_never_show_the_plaintext() {
        let cipher = cipher();
        let sealed = cipher.seal_text(b"row", "Mozilla/5.0 Firefox");
        assert!(sealed.starts_with(TEXT_PREFIX));
        assert!(!sealed.contains("Firefox"));
        assert_eq!(
            cipher.open_text(b"row", &sealed).unwrap(),
            "Mozilla/5.0 Firefox"
        );
        assert!(cipher.open_text(b"other", &sealed).is_err());
    }

    #[test]
    fn the_slot_reads_values_written_before_encryption_and_seals_new_ones() {
        let slot = CipherSlot::default();
        assert_eq!(slot.seal_text("t.c", b"r", "plain"), "plain");
        slot.install(Arc::new(cipher()));
        assert_eq!(
            slot.open_text("t.c", b"r", "legacy".into()).unwrap(),
            "legacy"
        );
        let sealed = slot.seal_text("t.c", b"r", "new");
        assert_ne!(sealed, "new");
        assert_eq!(slot.open_text("t.c", b"r", sealed).unwrap(), "new");
        let bytes = slot.seal_bytes("t.b", b"r", b"key material");
        assert_eq!(
            &slot.open_bytes("t.b", b"r", bytes.to_vec()).unwrap()[..],
            b"key material"
        );
        assert!(slot.open_bytes("t.b", b"s", bytes.to_vec()).is_err());
        assert_eq!(
            CipherSlot::default().open_text("t.c", b"r", slot.seal_text("t.c", b"r", "x")),
            Err(CryptError::NoCipher)
        );
    }

    #[test]
    fn a_data_key_unwraps_only_under_its_master_key() {
        let master = MasterKey::generate();
        let wrapped = master.wrap(&DataKey::generate(7), Timestamp::from_unix_millis(0));
        assert_eq!(master.unwrap(&wrapped).unwrap().id(), 7);
        assert!(MasterKey::generate().unwrap(&wrapped).is_err());
        let mut renumbered = wrapped.clone();
        renumbered.id = 8;
        assert!(master.unwrap(&renumbered).is_err());
    }

    #[test]
    fn master_keys_parse_from_base64_and_never_print() {
        let key = MasterKey::generate();
        let text = key.to_base64();
        let parsed = MasterKey::from_base64(&format!(" {}\n", text.as_str())).unwrap();
        assert_eq!(parsed.check_value(), key.check_value());
        assert_ne!(key.check_value(), MasterKey::generate().check_value());
        assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
        assert_eq!(
            MasterKey::from_base64("c2hvcnQ=").unwrap_err(),
            CryptError::MalformedMasterKey
        );
        assert!(!format!("{:?}", DataKey::generate(1)).contains('['));
    }
}
