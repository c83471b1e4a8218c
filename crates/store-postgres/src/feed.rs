//! The revocation feed: PostgreSQL `LISTEN/NOTIFY` between the instances sharing a database.
//!
//! Every transaction that revokes sessions also calls `pg_notify` on [`REVOCATION_CHANNEL`],
//! once per session it revoked (see `notify_revoked` in `store.rs`). PostgreSQL delivers a
//! notification only when its transaction commits, and drops it when it rolls back, so a
//! listener never hears of a revocation that did not happen. The payload is
//! `SESSION_ID REVOKED_AT_MS ACCESS_EXPIRES_AT_MS SCHEMA`.
//!
//! Channels are per database, not per schema, so the revoking transaction's `current_schema()`
//! travels in the payload and a listener ignores notifications from other schemas: two
//! deployments (or two test schemas) in one database do not revoke each other's sessions.
//!
//! Notifications sent while no connection listens are lost. The feed therefore reports
//! [`FeedEvent::Resync`] every time it starts listening (first connection and every reconnect),
//! after `LISTEN` has been issued: a revocation committed before that point is found by the
//! consumer's resync, and one committed after it is notified.
//!
//! Not yet: a heartbeat on the listening connection. A connection that dies silently (a
//! network partition rather than a closed socket) is noticed only when TCP gives up;
//! meanwhile the server's one-second poll of `revoked_since` carries revocations. That poll
//! compares `revoked_at` times written by each instance's clock, looking back 10 s, so an
//! instance whose clock runs more than 10 s behind could have its revocations missed by the
//! poll until the feed reconnects and resyncs.

use std::time::Duration;

use async_trait::async_trait;
use sessiond_core::store::{FeedEvent, RevocationFeed, RevokedSessionRef, StoreError};
use sessiond_core::{SessionId, Timestamp};
use sqlx::Row as _;
use sqlx::postgres::{PgListener, PgNotification, PgPool};
use uuid::Uuid;

use crate::error::{NoAnswer, store_error};

/// The channel every instance notifies and listens on.
pub const REVOCATION_CHANNEL: &str = "sessiond_revocations";

/// The [`RevocationFeed`] of a [`crate::PostgresStore`]: one dedicated connection from the
/// store's pool that `LISTEN`s on [`REVOCATION_CHANNEL`].
#[derive(Debug)]
pub struct PostgresRevocationFeed {
    pool: PgPool,
    connect_timeout: Duration,
    listening: Option<Listening>,
}

#[derive(Debug)]
struct Listening {
    listener: PgListener,
    schema: String,
    backend_pid: i32,
}

impl PostgresRevocationFeed {
    pub(crate) fn new(pool: PgPool, connect_timeout: Duration) -> Self {
        Self {
            pool,
            connect_timeout,
            listening: None,
        }
    }

    /// The server process id of the listening connection, while there is one (tests end it
    /// with `pg_terminate_backend` to check that a lost connection leads to a resync).
    pub fn backend_pid(&self) -> Option<i32> {
        self.listening
            .as_ref()
            .map(|listening| listening.backend_pid)
    }

    async fn listen(&self) -> Result<Listening, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(store_error)?;
        // Reconnection is done here, whole, so that every new connection is followed by a
        // `Resync`; sqlx's own silent reconnect would hide the gap.
        listener.eager_reconnect(false);
        listener
            .listen(REVOCATION_CHANNEL)
            .await
            .map_err(store_error)?;
        let row = sqlx::query("SELECT coalesce(current_schema(), ''), pg_backend_pid()")
            .fetch_one(&mut listener)
            .await
            .map_err(store_error)?;
        Ok(Listening {
            schema: row.try_get(0).map_err(store_error)?,
            backend_pid: row.try_get(1).map_err(store_error)?,
            listener,
        })
    }
}

#[async_trait]
impl RevocationFeed for PostgresRevocationFeed {
    async fn next(&mut self) -> Result<FeedEvent, StoreError> {
        loop {
            let Some(listening) = self.listening.as_mut() else {
                let listening = tokio::time::timeout(self.connect_timeout, self.listen())
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(Box::new(NoAnswer(
                            self.connect_timeout,
                        ))))
                    })?;
                self.listening = Some(listening);
                return Ok(FeedEvent::Resync);
            };
            match listening.listener.try_recv().await {
                Ok(Some(notification)) => match parse(&notification, &listening.schema) {
                    Parsed::Revoked(revoked) => return Ok(FeedEvent::Revoked(revoked)),
                    Parsed::OtherSchema => {}
                    Parsed::Unreadable => {
                        tracing::warn!(
                            payload = notification.payload(),
                            "unreadable revocation notification; resyncing"
                        );
                        return Ok(FeedEvent::Resync);
                    }
                },
                // The connection is gone (`None`), or failed in a way that leaves it unusable:
                // notifications may have been lost. Connect again, which reports a resync.
                Ok(None) => {
                    tracing::warn!("revocation feed connection lost; reconnecting");
                    self.listening = None;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "revocation feed connection failed; reconnecting");
                    self.listening = None;
                }
            }
        }
    }
}

enum Parsed {
    Revoked(RevokedSessionRef),
    OtherSchema,
    Unreadable,
}

fn parse(notification: &PgNotification, schema: &str) -> Parsed {
    let mut fields = notification.payload().splitn(4, ' ');
    let (Some(id), Some(revoked_at), Some(access_expires_at), Some(from_schema)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Parsed::Unreadable;
    };
    if from_schema != schema {
        return Parsed::OtherSchema;
    }
    match (
        Uuid::parse_str(id),
        revoked_at.parse::<i64>(),
        access_expires_at.parse::<i64>(),
    ) {
        (Ok(id), Ok(revoked_at), Ok(access_expires_at)) => Parsed::Revoked(RevokedSessionRef {
            id: SessionId::from_uuid(id),
            revoked_at: Timestamp::from_unix_millis(revoked_at),
            access_expires_at: Timestamp::from_unix_millis(access_expires_at),
        }),
        _ => Parsed::Unreadable,
    }
}
