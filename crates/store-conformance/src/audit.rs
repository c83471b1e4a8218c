//! The audit chain at the store level: instances sealing at once build one chain, and the
//! chain they form verifies; client addresses are stored sealed and the chain covers them as
//! stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond_core::Timestamp;
use sessiond_core::audit::{AuditQuery, ChainVerifier, SealedAuditEvent};
use sessiond_core::crypt::{Cipher, DataKey, TEXT_PREFIX};
use sessiond_core::store::{AuditStore, EncryptionStore};

use crate::Backend;
use crate::fixtures::{T0, event_for, session_for};

/// Seals until `expected` events are sealed; other tests' transactions on a shared database
/// server can hold sealing back for a moment.
pub async fn seal_until<B: Backend>(store: &impl AuditStore, db: &B, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        store.seal_audit(1_000).await.unwrap();
        let sealed = db
            .count(
                "SELECT count(*) FROM audit_events WHERE chain_seq IS NOT NULL",
                None,
            )
            .await;
        if sealed >= expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {sealed} of {expected} sealed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn instances_sealing_at_once_build_one_chain_that_verifies<B: Backend>() {
    let Some(db) = B::create("audit::instances_sealing_at_once_build_one_chain").await else {
        return;
    };
    let first = db.store().await;
    let second = db.store().await;
    let session = session_for("alice", T0);
    for _ in 0..10 {
        let events: Vec<_> = (0..20)
            .map(|_| event_for("session.created", &session, T0))
            .collect();
        first.append_audit(&events).await.unwrap();
        let (a, b) = tokio::join!(first.seal_audit(7), second.seal_audit(7));
        a.unwrap();
        b.unwrap();
    }
    seal_until(&first, &db, 200).await;

    let chain = second.audit_chain().await.unwrap();
    assert_eq!(chain.head_seq, 200);
    let mut verifier = ChainVerifier::new(None, b"unused without a checkpoint").unwrap();
    for event in first
        .audit_events(&AuditQuery::default(), 1_000)
        .await
        .unwrap()
    {
        verifier.check(&event).unwrap();
    }
    verifier.finish(chain.head_seq, &chain.head_hash).unwrap();
}

/// Regression: `GET /v1/audit?since=9223372036854775808` answered 500, because a seq past
/// `i64::MAX` (the largest a database column holds) failed as corrupt data. No event has one,
/// so none comes after it.
pub async fn a_query_after_a_seq_beyond_any_stored_one_finds_nothing<B: Backend>() {
    let Some(db) = B::create("audit::a_query_after_a_seq_beyond_any_stored_one").await else {
        return;
    };
    let store = db.store().await;
    let session = session_for("alice", T0);
    let events: Vec<_> = (0..3)
        .map(|_| event_for("session.created", &session, T0))
        .collect();
    store.append_audit(&events).await.unwrap();
    seal_until(&store, &db, 3).await;
    for after_seq in [2, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        let query = AuditQuery {
            after_seq,
            ..AuditQuery::default()
        };
        let found = store.audit_events(&query, 1_000).await.unwrap();
        let expected = usize::from(after_seq == 2);
        assert_eq!(found.len(), expected, "after {after_seq}");
    }
}

/// Checks the chain `events` form up to the store's recorded head.
async fn assert_chain_verifies(store: &impl AuditStore, events: &[SealedAuditEvent]) {
    let chain = store.audit_chain().await.unwrap();
    let mut verifier = ChainVerifier::new(None, b"unused without a checkpoint").unwrap();
    for event in events {
        verifier.check(event).unwrap();
    }
    verifier.finish(chain.head_seq, &chain.head_hash).unwrap();
}

pub async fn audit_addresses_are_stored_sealed_and_old_plaintext_ones_still_read<B: Backend>() {
    let Some(db) = B::create("audit::audit_addresses_are_stored_sealed").await else {
        return;
    };
    let store = db.store().await;
    let session = session_for("alice", T0);
    // Written before encryption existed: stored and read as it is.
    let mut legacy = event_for("session.created", &session, T0);
    legacy.ip = Some("192.0.2.1".into());
    store.append_audit(&[legacy]).await.unwrap();

    let cipher = Arc::new(Cipher::new(&[DataKey::generate(1)]).unwrap());
    store.install_cipher(cipher.clone());
    let mut sealed = event_for("security.anomaly", &session, T0);
    sealed.ip = Some("198.51.100.23".into());
    sealed.details.insert("action".into(), "notified".into());
    let without_address = event_for("session.revoked", &session, T0);
    store
        .append_audit(&[sealed, without_address])
        .await
        .unwrap();
    seal_until(&store, &db, 3).await;

    let rows = db.audit_rows().await;
    assert_eq!(rows[0].2.as_deref(), Some("192.0.2.1"));
    let stored = rows[1].2.clone().unwrap();
    assert!(stored.starts_with(TEXT_PREFIX), "{stored}");
    assert!(!stored.contains("198.51.100"), "{stored}");
    assert_eq!(rows[2].2, None);

    // Another instance holding the same data key reads every address; the chain, which
    // covers the addresses as stored, verifies across old and new rows.
    let other = db.store().await;
    other.install_cipher(cipher);
    let events = other
        .audit_events(&AuditQuery::default(), 10)
        .await
        .unwrap();
    let opened: Vec<Option<String>> = events
        .iter()
        .map(|event| other.open_audit_ip(&event.entry).unwrap())
        .collect();
    assert_eq!(
        opened,
        [Some("192.0.2.1".into()), Some("198.51.100.23".into()), None]
    );
    assert_chain_verifies(&other, &events).await;

    // A sealed address opens for its own event only, and only with the data key.
    let mut moved = events[1].entry.clone();
    moved.at = Timestamp::from_unix_millis(moved.at.unix_millis() + 1);
    assert!(other.open_audit_ip(&moved).is_err());
    let mut moved = events[1].entry.clone();
    moved.details = "{}".into();
    assert!(other.open_audit_ip(&moved).is_err());
    let keyless = db.store().await;
    assert!(keyless.open_audit_ip(&events[1].entry).is_err());
    assert_eq!(
        keyless.open_audit_ip(&events[0].entry).unwrap().as_deref(),
        Some("192.0.2.1")
    );
}
