//! The per-user session limit, sequentially and under concurrent creation on two instances.

use std::collections::HashSet;
use std::sync::Arc;

use sessiond_core::store::SessionStore;
use tokio::sync::Barrier;

use crate::Backend;
use crate::fixtures::{T0, create, ms, rotation_of, session_for};

pub async fn the_least_recently_active_sessions_are_evicted_past_the_limit<B: Backend>() {
    let Some(db) = B::create("limits::the_least_recently_active_sessions_are_evicted").await else {
        return;
    };
    let store = db.store().await;
    let oldest = session_for("alice", T0);
    let middle = session_for("alice", T0.plus(ms(10)));
    let (oldest_token, _) = create(&store, &oldest, 2).await;
    create(&store, &middle, 2).await;
    // A refresh makes the oldest session the most recently active one.
    store
        .rotate_refresh_token(&rotation_of(
            oldest_token.hash(),
            oldest.id,
            T0.plus(ms(20)),
        ))
        .await
        .unwrap();
    create(&store, &session_for("bob", T0.plus(ms(25))), 2).await;

    let newest = session_for("alice", T0.plus(ms(30)));
    let (_, evicted) = create(&store, &newest, 2).await;
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].id, middle.id, "the least recently active goes");
    assert_eq!(evicted[0].revoked_at, Some(newest.created_at));
    assert_eq!(evicted[0].revoke_reason.as_deref(), Some("session_limit"));
    assert_eq!(
        db.count(
            "SELECT count(*) FROM audit_events WHERE session_id = $1 AND type = 'session.evicted'",
            Some(middle.id)
        )
        .await,
        1
    );
    let active: Vec<_> = store
        .active_sessions(&newest.user_id, newest.created_at)
        .await
        .unwrap()
        .into_iter()
        .map(|session| session.id)
        .collect();
    assert_eq!(active, [newest.id, oldest.id], "most recently active first");
    assert_eq!(
        store
            .active_sessions(&session_for("bob", T0).user_id, newest.created_at)
            .await
            .unwrap()
            .len(),
        1,
        "other users are untouched"
    );
}

pub async fn twelve_concurrent_creations_on_two_instances_keep_exactly_three_active<B: Backend>() {
    let Some(db) = B::create("limits::twelve_concurrent_creations").await else {
        return;
    };
    let instances = [db.store().await, db.store().await];
    let creations = 12;
    let barrier = Arc::new(Barrier::new(creations));
    let mut tasks = Vec::new();
    for index in 0..creations {
        let store = instances[index % 2].clone();
        let barrier = Arc::clone(&barrier);
        let session = session_for("alice", T0.plus(ms(index as u64)));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let (_, evicted) = create(&store, &session, 3).await;
            evicted
        }));
    }
    let mut evicted_ids = Vec::new();
    for task in tasks {
        evicted_ids.extend(task.await.unwrap().into_iter().map(|session| session.id));
    }
    let distinct: HashSet<_> = evicted_ids.iter().copied().collect();
    assert_eq!(evicted_ids.len(), 9, "every eviction is reported once");
    assert_eq!(distinct.len(), 9);

    let later = T0.plus(ms(1_000));
    let active = instances[0]
        .active_sessions(&session_for("alice", T0).user_id, later)
        .await
        .unwrap();
    assert_eq!(active.len(), 3, "exactly the limit stays active");
    assert!(active.iter().all(|session| !distinct.contains(&session.id)));
    assert_eq!(db.count("SELECT count(*) FROM sessions", None).await, 12);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM sessions WHERE revoke_reason = 'session_limit'",
            None
        )
        .await,
        9
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM audit_events WHERE type = 'session.evicted'",
            None
        )
        .await,
        9,
        "one eviction event per evicted session"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM (SELECT session_id FROM audit_events
             WHERE type = 'session.evicted' GROUP BY session_id HAVING count(*) > 1) twice",
            None
        )
        .await,
        0
    );
}
