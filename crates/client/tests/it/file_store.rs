//! `EncryptedFileStore`: round trip, permissions, wrong keys, interrupted writes and damaged
//! files.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sessiond_client::{
    EncryptedFileStore, FileKey, SecretString, StoreError, StoredTokens, TokenStore,
};
use tempfile::TempDir;

/// A pair named `name`, always the same for the same name.
fn tokens(name: &str) -> StoredTokens {
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_750_000_000_123);
    StoredTokens {
        access_token: SecretString::new(format!("access-{name}")),
        refresh_token: SecretString::new(format!("sdr_refresh-{name}")),
        received_at: now,
        access_token_expires_at: now + Duration::from_secs(900),
        refresh_token_expires_at: Some(now + Duration::from_secs(7 * 86_400)),
        session_id: format!("session-{name}"),
        user_id: "user".into(),
    }
}

/// Times are stored to the millisecond.
fn same_pair(left: &StoredTokens, right: &StoredTokens) -> bool {
    let millis = |time: SystemTime| {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis()
    };
    left.access_token == right.access_token
        && left.refresh_token == right.refresh_token
        && left.session_id == right.session_id
        && millis(left.received_at) == millis(right.received_at)
        && millis(left.access_token_expires_at) == millis(right.access_token_expires_at)
}

fn store_in(dir: &Path, key: u8) -> EncryptedFileStore {
    EncryptedFileStore::new(dir.join("tokens"), &FileKey::from_bytes([key; 32]))
}

fn others_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name != "tokens")
        .collect()
}

#[test]
fn a_saved_pair_loads_back_from_a_private_file_and_no_temporary_file_remains() {
    let dir = TempDir::new().expect("temp dir");
    let store = store_in(dir.path(), 1);
    assert!(store.load().expect("loads").is_none(), "no file yet");

    store.save(&tokens("a")).expect("saves");
    let loaded = store.load().expect("loads").expect("a pair");
    assert!(same_pair(&loaded, &tokens("a")));
    store.save(&tokens("b")).expect("saves again");
    assert!(same_pair(
        &store.load().expect("loads").expect("a pair"),
        &tokens("b")
    ));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(store.path())
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        others_in(dir.path()).is_empty(),
        "{:?}",
        others_in(dir.path())
    );
    let raw = fs::read(store.path()).expect("read");
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.contains("access-b") && !text.contains("sdr_refresh-b"),
        "encrypted"
    );
}

#[test]
fn the_wrong_key_is_an_error() {
    let dir = TempDir::new().expect("temp dir");
    store_in(dir.path(), 1).save(&tokens("a")).expect("saves");

    let loaded = store_in(dir.path(), 2).load();

    assert!(
        matches!(loaded, Err(StoreError::Decrypt { .. })),
        "{loaded:?}"
    );
}

#[test]
fn a_file_moved_to_another_path_does_not_decrypt() {
    let dir = TempDir::new().expect("temp dir");
    let store = store_in(dir.path(), 1);
    store.save(&tokens("a")).expect("saves");
    let moved = dir.path().join("moved");
    fs::copy(store.path(), &moved).expect("copy");

    let loaded = EncryptedFileStore::new(&moved, &FileKey::from_bytes([1; 32])).load();

    assert!(
        matches!(loaded, Err(StoreError::Decrypt { .. })),
        "{loaded:?}"
    );
}

#[test]
fn a_write_interrupted_by_a_crash_leaves_the_previous_pair_readable() {
    let dir = TempDir::new().expect("temp dir");
    let store = store_in(dir.path(), 1);
    store.save(&tokens("old")).expect("saves");
    // What a save of a new pair leaves when the process dies before its rename: a temporary
    // file next to the store, holding the first part of the new encrypted file.
    let elsewhere = TempDir::new().expect("temp dir");
    let other = store_in(elsewhere.path(), 1);
    other.save(&tokens("new")).expect("saves");
    let complete = fs::read(other.path()).expect("read");
    fs::write(
        dir.path().join(".tokens.00c0ffee00c0ffee.tmp"),
        &complete[..complete.len() / 2],
    )
    .expect("write the partial temporary file");
    fs::write(dir.path().join(".tokens.0000000000000000.tmp"), b"").expect("empty temp");

    let loaded = store.load().expect("loads").expect("a pair");
    assert!(same_pair(&loaded, &tokens("old")));

    // The next save is not disturbed by the debris.
    store.save(&tokens("next")).expect("saves");
    assert!(same_pair(
        &store.load().expect("loads").expect("a pair"),
        &tokens("next")
    ));
}

#[test]
fn a_damaged_store_file_is_an_error_never_a_panic_or_a_partial_pair() {
    let dir = TempDir::new().expect("temp dir");
    let store = store_in(dir.path(), 1);
    store.save(&tokens("a")).expect("saves");
    let good = fs::read(store.path()).expect("read");

    let mut damaged: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("header only", good[..5].to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("last byte cut", good[..good.len() - 1].to_vec()),
        ("wrong magic", [b"XXXX".as_slice(), &good[4..]].concat()),
        ("garbage", vec![0x5a; 300]),
    ];
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    damaged.push(("one bit flipped", flipped));
    let mut newer = good.clone();
    newer[4] = 9;
    damaged.push(("future version", newer));

    for (what, bytes) in damaged {
        fs::write(store.path(), &bytes).expect("write");
        let loaded = store.load();
        assert!(loaded.is_err(), "{what}: {loaded:?}");
        match (what, loaded) {
            ("future version", Err(StoreError::UnsupportedVersion { found: 9, .. }))
            | (
                "one bit flipped" | "truncated" | "last byte cut",
                Err(StoreError::Decrypt { .. }),
            )
            | (_, Err(StoreError::Corrupt { .. } | StoreError::Decrypt { .. })) => {}
            (what, other) => panic!("{what}: unexpected {other:?}"),
        }
    }
}

#[test]
fn clearing_removes_the_file_and_clearing_twice_is_fine() {
    let dir = TempDir::new().expect("temp dir");
    let store = store_in(dir.path(), 1);
    store.save(&tokens("a")).expect("saves");

    store.clear().expect("clears");
    assert!(!store.path().exists());
    assert!(store.load().expect("loads").is_none());
    store.clear().expect("clears an empty store");
}

#[test]
fn a_missing_directory_is_an_io_error() {
    let dir = TempDir::new().expect("temp dir");
    let store = EncryptedFileStore::new(
        dir.path().join("missing").join("tokens"),
        &FileKey::from_bytes([1; 32]),
    );
    assert!(matches!(
        store.save(&tokens("a")),
        Err(StoreError::Io { .. })
    ));
    assert!(store.load().expect("a missing file is no pair").is_none());
}
