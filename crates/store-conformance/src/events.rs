//! Live events: each change's event in the change's order, filters, and resuming from a cursor.

use std::time::{Duration, Instant};

use sessiond_core::UserId;
use sessiond_core::event::{EventCursor, EventFilter, StoredEvent};
use sessiond_core::store::{EventStore, Rotation, RotationOutcome, SessionStore};

use crate::Backend;
use crate::fixtures::{T0, by_admin, create, event_for, ms, rotation_of, session_for};

const SESSION_KINDS: [&str; 3] = ["session.created", "session.refreshed", "session.revoked"];

/// The events after `after` that pass `filter`, once at least `expected` are readable: a
/// networked store returns an event only once its position is final, which other transactions
/// on a shared server can delay for a moment.
async fn events_once_final(
    store: &impl EventStore,
    after: EventCursor,
    filter: &EventFilter,
    expected: usize,
) -> Vec<StoredEvent> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = store.events_after(after, filter, 100).await.unwrap();
        if events.len() >= expected {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The type and user of each of `user`'s session events, as a filter by user selects them.
async fn session_events_of(store: &impl EventStore, user: &UserId) -> Vec<(&'static str, UserId)> {
    let of_user = EventFilter {
        user_id: Some(user.clone()),
        kinds: Some(SESSION_KINDS.to_vec()),
    };
    store
        .events_after(EventCursor::START, &of_user, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|event| (event.kind, event.user_id))
        .collect()
}

pub async fn each_change_writes_its_event_in_order_and_filters_select_them<B: Backend>() {
    let Some(db) = B::create("events::each_change_writes_its_event_in_order").await else {
        return;
    };
    let store = db.store().await;
    assert_eq!(
        store.latest_event_cursor().await.unwrap(),
        EventCursor::START
    );
    let alice = session_for("alice", T0);
    let bob = session_for("bob", T0.plus(ms(1)));
    let (alice_token, _) = create(&store, &alice, 5).await;
    create(&store, &bob, 5).await;
    assert_eq!(
        store
            .rotate_refresh_token(&rotation_of(alice_token.hash(), alice.id, T0.plus(ms(2))))
            .await
            .unwrap(),
        RotationOutcome::Rotated
    );
    let audit = sessiond_core::store::audit_for(|revoked: &sessiond_core::Session| {
        event_for("session.revoked", revoked, T0.plus(ms(3)))
    });
    store
        .revoke_session(bob.id, by_admin(T0.plus(ms(3))), &audit)
        .await
        .unwrap();
    // A lost rotation changes nothing, so it announces nothing.
    assert_eq!(
        store
            .rotate_refresh_token(&rotation_of(alice_token.hash(), alice.id, T0.plus(ms(4))))
            .await
            .unwrap(),
        RotationOutcome::Lost
    );

    let sessions_only = EventFilter {
        user_id: None,
        kinds: Some(SESSION_KINDS.to_vec()),
    };
    let events = events_once_final(&store, EventCursor::START, &sessions_only, 4).await;
    let seen: Vec<_> = events
        .iter()
        .map(|event| (event.kind, event.session_id))
        .collect();
    assert_eq!(
        seen,
        [
            ("session.created", Some(alice.id)),
            ("session.created", Some(bob.id)),
            ("session.refreshed", Some(alice.id)),
            ("session.revoked", Some(bob.id)),
        ],
        "one event per change, in the changes' order"
    );
    assert!(
        events
            .windows(2)
            .all(|pair| pair[0].cursor < pair[1].cursor),
        "cursors grow"
    );

    assert_eq!(
        session_events_of(&store, &bob.user_id).await,
        [
            ("session.created", bob.user_id.clone()),
            ("session.revoked", bob.user_id.clone()),
        ]
    );
    assert_eq!(
        session_events_of(&store, &alice.user_id).await,
        [
            ("session.created", alice.user_id.clone()),
            ("session.refreshed", alice.user_id.clone()),
        ],
        "a rotation's event is its session's user's"
    );

    let resumed = store
        .events_after(events[1].cursor, &sessions_only, 100)
        .await
        .unwrap();
    assert_eq!(
        resumed.iter().map(|event| event.cursor).collect::<Vec<_>>(),
        [events[2].cursor, events[3].cursor],
        "a reader resuming from a cursor gets what came after it, once"
    );
    let everything = store
        .events_after(EventCursor::START, &EventFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(
        store.latest_event_cursor().await.unwrap(),
        everything.last().unwrap().cursor,
        "the latest cursor is the newest event's"
    );
    assert!(
        store
            .events_after(
                everything.last().unwrap().cursor,
                &EventFilter::default(),
                100
            )
            .await
            .unwrap()
            .is_empty()
    );
}

/// A rotation writes its `session.refreshed` event, then the events its audit row publishes
/// (none for a `session.refreshed` row), whether it is written alone or beside rotations whose
/// rows publish nothing or something else.
pub async fn a_rotation_writes_the_events_its_audit_row_publishes<B: Backend>() {
    let Some(db) = B::create("events::a_rotation_writes_the_events_its_audit_row_publishes").await
    else {
        return;
    };
    let store = db.store().await;
    let users = ["plain", "flagged", "reused", "unaudited"];
    let mut sessions = Vec::new();
    for (index, user) in (0_u64..).zip(users) {
        let session = session_for(user, T0.plus(ms(index)));
        let (token, _) = create(&store, &session, 5).await;
        sessions.push((session, token));
    }
    let at = T0.plus(ms(10));
    let rotations: Vec<_> = sessions
        .iter()
        .zip([
            Some("session.refreshed"),
            Some(sessiond_core::event::ANOMALY),
            Some(sessiond_core::event::REUSE_DETECTED),
            None,
        ])
        .map(|((session, token), audit)| Rotation {
            audit: audit.map(|kind| event_for(kind, session, at)),
            ..rotation_of(token.hash(), session.id, at)
        })
        .collect();
    // Alone, then all at once (a store that batches concurrent rotations writes these
    // together, one statement for rows that publish and rows that do not).
    assert_eq!(
        store.rotate_refresh_token(&rotations[1]).await.unwrap(),
        RotationOutcome::Rotated
    );
    let outcomes = futures_util::future::join_all(
        [&rotations[0], &rotations[2], &rotations[3]]
            .map(|rotation| store.rotate_refresh_token(rotation)),
    )
    .await;
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, Ok(RotationOutcome::Rotated))),
        "{outcomes:?}"
    );

    // Each creation writes `session.created` and, for a device new to its user, `device.new`.
    let created = 2 * users.len();
    let events = events_once_final(
        &store,
        EventCursor::START,
        &EventFilter::default(),
        created + 7,
    )
    .await;
    let mut written: Vec<(String, Vec<&str>)> = sessions
        .iter()
        .map(|(session, _)| {
            let kinds = events
                .iter()
                .filter(|event| event.session_id == Some(session.id))
                .map(|event| event.kind)
                .collect();
            (session.user_id.as_str().to_owned(), kinds)
        })
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            (
                "flagged".to_owned(),
                vec!["session.created", "session.refreshed", "security.anomaly"]
            ),
            (
                "plain".to_owned(),
                vec!["session.created", "session.refreshed"]
            ),
            (
                "reused".to_owned(),
                vec![
                    "session.created",
                    "session.refreshed",
                    "security.reuse_detected",
                    "session.revoked"
                ]
            ),
            (
                "unaudited".to_owned(),
                vec!["session.created", "session.refreshed"]
            ),
        ],
        "each rotation's events, in order"
    );
    assert_eq!(events.len(), created + 7, "no other event: {events:?}");
}

pub async fn purge_deletes_events_before_the_cutoff_in_batches_and_keeps_later_ones<B: Backend>() {
    let Some(db) = B::create("events::purge_deletes_events_before_the_cutoff").await else {
        return;
    };
    let store = db.store().await;
    // Five users' sessions a minute apart, each announced by its two events
    // (`session.created`, `device.new`).
    for minute in 0..5 {
        let session = session_for(&format!("user-{minute}"), T0.plus(ms(60_000 * minute)));
        create(&store, &session, 5).await;
    }
    // All ten, so that none becomes final only after the purge and shows among the kept.
    let all = events_once_final(&store, EventCursor::START, &EventFilter::default(), 10).await;
    assert_eq!(all.len(), 10, "{all:?}");
    let cutoff = T0.plus(ms(150_000));
    let (old, young): (Vec<_>, Vec<_>) = all.iter().partition(|event| event.at < cutoff);
    assert!(
        old.len() >= 3 && young.len() >= 2,
        "{} and {}",
        old.len(),
        young.len()
    );
    // The events before the cutoff go, at most two at a time.
    let mut purged = Vec::new();
    loop {
        let deleted = store.purge_events(cutoff, 2).await.unwrap();
        assert!(deleted <= 2, "a batch of {deleted}");
        if deleted == 0 {
            break;
        }
        purged.push(deleted);
    }
    assert_eq!(purged.iter().sum::<u64>(), old.len() as u64);
    assert!(
        purged[..purged.len() - 1]
            .iter()
            .all(|&deleted| deleted == 2)
    );
    let kept: Vec<_> = store
        .events_after(EventCursor::START, &EventFilter::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.cursor)
        .collect();
    assert_eq!(
        kept,
        young.iter().map(|event| event.cursor).collect::<Vec<_>>(),
        "the events from the cutoff on stay"
    );
}
