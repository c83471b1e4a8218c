//! Revoking sessions: idempotence, exactly one audit event per session across instances, what
//! a user-wide revocation spares, and the revocations a poll still needs.

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::store::{Revocation, SessionStore};
use sessiond_core::{RevokeReason, SessionId};
use tokio::sync::Barrier;

use crate::Backend;
use crate::fixtures::{T0, by_admin, create, event_for, ms, rotation_of, session_for};

pub async fn revoking_twice_revokes_once_and_writes_one_audit_event<B: Backend>() {
    let Some(db) = B::create("revocation::revoking_twice_revokes_once").await else {
        return;
    };
    let store = db.store().await;
    let session = session_for("alice", T0);
    create(&store, &session, 5).await;
    let audit = sessiond_core::store::audit_for(|revoked: &sessiond_core::Session| {
        event_for("session.revoked", revoked, T0)
    });

    let at = T0.plus(ms(100));
    let (first, revoked_now) = store
        .revoke_session(session.id, by_admin(at), &audit)
        .await
        .unwrap()
        .expect("the session exists");
    assert!(revoked_now);
    assert_eq!(first.revoked_at, Some(at));
    assert_eq!(first.revoke_reason.as_deref(), Some("revoked_by_admin"));

    let later = Revocation {
        at: T0.plus(ms(200)),
        reason: RevokeReason::Logout,
    };
    let (second, revoked_now) = store
        .revoke_session(session.id, later, &audit)
        .await
        .unwrap()
        .unwrap();
    assert!(!revoked_now, "the second revocation changes nothing");
    assert_eq!(
        second, first,
        "and returns the session as the first left it"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM audit_events WHERE session_id = $1 AND type = 'session.revoked'",
            Some(session.id)
        )
        .await,
        1
    );
    assert!(
        store
            .revoke_session(SessionId::generate(), by_admin(at), &audit)
            .await
            .unwrap()
            .is_none(),
        "an unknown session is None"
    );
    assert!(
        store
            .session(SessionId::generate())
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn concurrent_revocations_from_two_instances_audit_each_session_once<B: Backend>() {
    let Some(db) = B::create("revocation::concurrent_revocations_from_two_instances").await else {
        return;
    };
    let instances = [db.store().await, db.store().await];
    let sessions: Vec<_> = (0..4)
        .map(|index| session_for("alice", T0.plus(ms(index))))
        .collect();
    for session in &sessions {
        create(&instances[0], session, 10).await;
    }

    // Eight single revocations of the first session and two revocations of all of alice's
    // sessions, from both instances at once.
    let contenders = 10;
    let barrier = Arc::new(Barrier::new(contenders));
    let mut singles = Vec::new();
    let mut wholesale = Vec::new();
    for contender in 0..contenders {
        let store = instances[contender % 2].clone();
        let barrier = Arc::clone(&barrier);
        let target = sessions[0].clone();
        let at = T0.plus(ms(100 + contender as u64));
        if contender < 8 {
            singles.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .revoke_session(
                        target.id,
                        by_admin(at),
                        &sessiond_core::store::audit_for(
                            move |revoked: &sessiond_core::Session| {
                                event_for("session.revoked", revoked, at)
                            },
                        ),
                    )
                    .await
            }));
        } else {
            wholesale.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .revoke_user_sessions(
                        &target.user_id,
                        None,
                        by_admin(at),
                        &sessiond_core::store::audit_for(
                            move |revoked: &sessiond_core::Session| {
                                event_for("session.revoked", revoked, at)
                            },
                        ),
                    )
                    .await
            }));
        }
    }
    let mut revocations_reported = 0;
    for task in singles {
        let (_, revoked_now) = task.await.unwrap().unwrap().unwrap();
        revocations_reported += usize::from(revoked_now);
    }
    for task in wholesale {
        revocations_reported += task.await.unwrap().unwrap().len();
    }
    assert_eq!(
        revocations_reported,
        sessions.len(),
        "each session is reported revoked exactly once"
    );
    for session in &sessions {
        assert_eq!(
            db.count(
                "SELECT count(*) FROM audit_events
                 WHERE session_id = $1 AND type = 'session.revoked'",
                Some(session.id)
            )
            .await,
            1,
            "one audit event for {}",
            session.id
        );
    }
}

pub async fn revoking_a_user_spares_the_excepted_session_expired_ones_and_other_users<
    B: Backend,
>() {
    let Some(db) = B::create("revocation::revoking_a_user_spares").await else {
        return;
    };
    let store = db.store().await;
    let current = session_for("alice", T0.plus(ms(2)));
    let other = session_for("alice", T0.plus(ms(1)));
    let newest = session_for("alice", T0.plus(ms(3)));
    let mut expired = session_for("alice", T0);
    expired.idle_expires_at = T0.plus(ms(50));
    let bob = session_for("bob", T0);
    for session in [&current, &other, &newest, &expired, &bob] {
        create(&store, session, 10).await;
    }

    let at = T0.plus(ms(100));
    let revoked = store
        .revoke_user_sessions(
            &current.user_id,
            Some(current.id),
            Revocation {
                at,
                reason: RevokeReason::RevokedByUser,
            },
            &sessiond_core::store::audit_for(move |revoked: &sessiond_core::Session| {
                event_for("session.revoked", revoked, at)
            }),
        )
        .await
        .unwrap();
    let ids: Vec<_> = revoked.iter().map(|session| session.id).collect();
    assert_eq!(ids, [newest.id, other.id], "most recently active first");
    assert!(revoked.iter().all(|session| session.revoked_at == Some(at)
        && session.revoke_reason.as_deref() == Some("revoked_by_user")));
    for spared in [&current, &expired, &bob] {
        let stored = store.session(spared.id).await.unwrap().unwrap();
        assert_eq!(stored.revoked_at, None);
        assert_eq!(db.audit_events_of(spared.id).await, 1, "only its creation");
    }
}

pub async fn revoked_since_lists_recent_revocations_whose_access_tokens_still_live<B: Backend>() {
    let Some(db) = B::create("revocation::revoked_since").await else {
        return;
    };
    let store = db.store().await;
    let early = session_for("alice", T0);
    let late = session_for("alice", T0);
    let mut short_lived = session_for("alice", T0);
    short_lived.access_expires_at = T0.plus(ms(500));
    let untouched = session_for("alice", T0);
    for session in [&early, &late, &short_lived, &untouched] {
        create(&store, session, 10).await;
    }
    let audit = sessiond_core::store::audit_for(|revoked: &sessiond_core::Session| {
        event_for("session.revoked", revoked, T0)
    });
    store
        .revoke_session(early.id, by_admin(T0.plus(ms(100))), &audit)
        .await
        .unwrap();
    store
        .revoke_session(late.id, by_admin(T0.plus(ms(300))), &audit)
        .await
        .unwrap();
    store
        .revoke_session(short_lived.id, by_admin(T0.plus(ms(300))), &audit)
        .await
        .unwrap();

    let now = T0.plus(ms(1_000));
    let feed = store.revoked_since(T0.plus(ms(200)), now).await.unwrap();
    assert_eq!(
        feed.len(),
        1,
        "early is too old and short_lived's tokens are dead"
    );
    assert_eq!(feed[0].id, late.id);
    assert_eq!(feed[0].revoked_at, T0.plus(ms(300)));
    assert_eq!(feed[0].access_expires_at, late.access_expires_at);
    let mut everything: Vec<_> = store
        .revoked_since(T0, T0)
        .await
        .unwrap()
        .into_iter()
        .map(|revoked| revoked.id)
        .collect();
    everything.sort();
    let mut expected = vec![early.id, late.id, short_lived.id];
    expected.sort();
    assert_eq!(everything, expected, "since is inclusive");
}

pub async fn mixed_writes_of_one_user_on_two_instances_never_deadlock<B: Backend>() {
    let Some(db) = B::create("revocation::mixed_writes_never_deadlock").await else {
        return;
    };
    let instances = [db.store().await, db.store().await];
    let mut live = Vec::new();
    for index in 0..6 {
        let session = session_for("alice", T0.plus(ms(index)));
        let (token, _) = create(&instances[0], &session, 100).await;
        live.push((session, token));
    }

    // Creations with eviction, rotations, single and wholesale revocations of one user's
    // sessions, all at once: every one of them must succeed (no deadlock, no timeout).
    let barrier = Arc::new(Barrier::new(24));
    let mut tasks = Vec::new();
    for index in 0..24u64 {
        let store = instances[(index % 2) as usize].clone();
        let barrier = Arc::clone(&barrier);
        let (session, token) = live[(index % 6) as usize].clone();
        let now = T0.plus(ms(1_000 + index));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let audit = sessiond_core::store::audit_for(move |revoked: &sessiond_core::Session| {
                event_for("session.revoked", revoked, now)
            });
            match index % 4 {
                0 => {
                    let fresh = session_for("alice", now);
                    let token = sessiond_core::refresh::RefreshToken::generate(now);
                    let created = event_for("session.created", &fresh, now);
                    store
                        .create_session(&fresh, &token.hash(), 4, &created, &audit, &created)
                        .await
                        .map(drop)
                }
                1 => store
                    .rotate_refresh_token(&rotation_of(token.hash(), session.id, now))
                    .await
                    .map(drop),
                2 => store
                    .revoke_session(session.id, by_admin(now), &audit)
                    .await
                    .map(drop),
                _ => store
                    .revoke_user_sessions(&session.user_id, Some(session.id), by_admin(now), &audit)
                    .await
                    .map(drop),
            }
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    })
    .await
    .expect("the writes finish");
    for result in all {
        result.expect("no write fails");
    }
    assert_eq!(
        db.count(
            "SELECT count(*) FROM (SELECT session_id FROM audit_events
             WHERE type = 'session.revoked' GROUP BY session_id HAVING count(*) > 1) twice",
            None
        )
        .await,
        0,
        "no session was audited as revoked twice"
    );
}
