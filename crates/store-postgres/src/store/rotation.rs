//! Rotations in batches (see [`batch`](super::batch)): the rotations that arrive while earlier
//! ones are being written go to the database together, as one statement and one transaction,
//! at most [`MAX_BATCH`] of them.
//!
//! Every guarantee of a single rotation holds for each rotation of a batch (see the crate
//! documentation and `rotate_statement`):
//!
//! - A batch never holds two rotations of one session: a second one waits for a later batch,
//!   where it queues behind the first's row lock and re-checks like any concurrent rotation.
//! - The statement locks its sessions in id order, as every statement that locks several
//!   sessions does (creation with eviction, revoking a user's or a device's sessions), so
//!   batches from several instances do not deadlock one another.
//! - One rotation that loses (token spent, session revoked) loses alone: its steps match no row
//!   and the others' steps are unaffected. The outcome is per rotation.
//! - Should PostgreSQL still refuse the statement (a deadlock victim, a constraint), nothing of
//!   it was written, and each of its rotations is retried alone, so one rotation's failure is
//!   not its neighbours'. A failure to reach the database is answered to all of them at once.
//! - A caller that stops waiting (its operation timed out, its client went away) does not stop
//!   the batch: the statement commits or fails whole whoever is still listening, exactly as a
//!   single statement would.
//! - A rotation whose session another transaction holds locked (another instance rotating or
//!   revoking it) does not make its neighbours wait: the batch skips that session, and the
//!   rotation is written again alone, waiting for the lock as a single rotation always did.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use sessiond_core::audit::NewAuditEvent;
use sessiond_core::crypt::CipherSlot;
use sessiond_core::crypt::columns::SEALED_SUCCESSOR;
use sessiond_core::event::{self, NewEvent};
use sessiond_core::refresh::RefreshTokenHash;
use sessiond_core::store::{Rotation, RotationOutcome, StoreError};
use sqlx::Row;
use sqlx::postgres::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::batch::{Batch, Batcher, stopped};
use super::{AuditColumns, EventColumns};
use crate::error::shared_store_error;

/// The most rotations in one statement.
const MAX_BATCH: usize = 64;

/// Any number of rotations as one statement, sent on its own so that it is its own (implicit)
/// transaction: committed whole or not at all.
///
/// `$1`…`$8` are one element per rotation (its `n` is its 1-based position); `$9`…`$16` are
/// the audit rows (`$16` naming each row's rotation), `$17`…`$22` the events those audit rows
/// publish (`$22` likewise). The branch that writes published events (`$published`) is in the
/// statement only for a batch that has some: a refresh's `session.refreshed` row publishes
/// none, and the branch costs every execution its executor start-up, rows or not (an empty
/// batch took 0.33–0.37 ms without it against 0.39–0.42 ms with it, on a two-core VM). Every
/// sub-statement of a `WITH` chain runs to completion on one snapshot, so each step is gated
/// on the `RETURNING` rows of the step before it:
///
/// - `locked` locks, in id order, the unrevoked sessions whose presented token is visibly
///   unspent (`FOR UPDATE`, with `$lock`). Alone (no `$lock`), a rotation of its session
///   elsewhere makes it wait here, and it re-reads the row once that one commits (a revocation
///   that committed meanwhile makes it match nothing). In a batch (`SKIP LOCKED`) a session
///   another transaction holds is left out instead, so that one contended session does not hold
///   up its neighbours, and its rotation is written again alone. The `EXISTS` only spares the
///   lock for a visibly spent token and decides nothing on its own. Sessions before tokens is
///   the crate's lock order.
/// - `spent` is the compare-and-swap, for the rotations whose session `locked` holds. It locks
///   each token row, and READ COMMITTED re-checks `spent_at IS NULL` against the newest
///   committed version after any wait, so only one transaction ever spends a token.
/// - `touched` moves each session whose token was spent (and binds it to its rotation's DPoP
///   key unless bound already), `successor` stores the successor tokens, `refreshed` writes a
///   `session.refreshed` event per rotation (then the events its audit rows publish) and
///   `audited` the audit rows, each only for the rotations `spent` changed a row for.
///
/// Every array parameter is read through a scalar subquery (`(SELECT $1::BIGINT[])`), so that
/// the planner never sees how many elements it holds. PostgreSQL plans a prepared statement
/// anew for its first executions and keeps planning it anew while those custom plans cost less
/// than the one generic plan; a custom plan that knows a batch holds one or two rotations always
/// does, and planning this statement takes about a millisecond, more than running it. With the
/// sizes hidden, custom and generic plans are alike, and from its sixth execution on a
/// connection the statement runs the generic plan without planning.
///
/// A rotation that lost thus writes nothing. The event and audit rows take their `tx` from their
/// columns' default, `pg_current_xact_id()`, as in every other transaction: one for the whole
/// batch, which the event cursor and the audit sealer order by. The statement answers one row
/// per rotation: its `n`, whether its session was locked, its token spent, its session moved
/// and its successor stored, then (on every row) how many events and audit rows the whole
/// statement wrote, and last whether its session was unrevoked and its token unspent in the
/// statement's snapshot (for a session left unlocked, whether it was skipped).
macro_rules! rotate_statement {
    ($lock:literal, $published:expr) => {
        concat!(
            "
    WITH rotation AS MATERIALIZED (
        SELECT * FROM UNNEST((SELECT $1::BIGINT[]), (SELECT $2::BIGINT[]),
                             (SELECT $3::BIGINT[]), (SELECT $4::UUID[]),
                             (SELECT $5::BYTEA[]), (SELECT $6::BYTEA[]),
                             (SELECT $7::BYTEA[]), (SELECT $8::TEXT[]))
             WITH ORDINALITY AS r (now, idle_expires_at, access_expires_at, session_id,
                                   presented, successor, sealed_successor, dpop_jkt, n)
    ), locked AS MATERIALIZED (
        SELECT s.id FROM sessions s
        WHERE s.id IN (SELECT session_id FROM rotation) AND s.revoked_at IS NULL
          AND EXISTS (SELECT 1 FROM rotation r JOIN refresh_tokens t ON t.hash = r.presented
                      WHERE r.session_id = s.id AND t.session_id = s.id
                        AND t.spent_at IS NULL)
        ORDER BY s.id
        FOR UPDATE OF s ",
            $lock,
            "
    ), spent AS (
        UPDATE refresh_tokens t
        SET spent_at = r.now, successor_hash = r.successor,
            sealed_successor = r.sealed_successor
        FROM rotation r
        WHERE t.hash = r.presented AND t.session_id = r.session_id AND t.spent_at IS NULL
          AND r.session_id IN (SELECT id FROM locked)
        RETURNING r.n, t.session_id
    ), touched AS (
        UPDATE sessions s
        SET last_active_at = r.now, idle_expires_at = r.idle_expires_at,
            expiry_check_at = LEAST(s.expiry_check_at, r.idle_expires_at),
            access_expires_at = GREATEST(s.access_expires_at, r.access_expires_at),
            dpop_jkt = COALESCE(s.dpop_jkt, r.dpop_jkt)
        FROM spent JOIN rotation r ON r.n = spent.n
        WHERE s.id = spent.session_id
        RETURNING spent.n, s.id, s.user_id
    ), successor AS (
        INSERT INTO refresh_tokens (hash, session_id, issued_at)
        SELECT r.successor, touched.id, r.now
        FROM touched JOIN rotation r ON r.n = touched.n
        ORDER BY touched.n
        RETURNING session_id
    ), refreshed AS (
        INSERT INTO events (type, user_id, session_id, at, data)
        SELECT event.type, event.user_id, event.session_id, event.at, event.data
        FROM (
            SELECT touched.n, 0::BIGINT, 'session.refreshed'::TEXT, touched.user_id,
                   touched.id, r.now, '{}'::TEXT
            FROM touched JOIN rotation r ON r.n = touched.n
",
            $published,
            "
        ) AS event (n, position, type, user_id, session_id, at, data)
        ORDER BY event.n, event.position
        RETURNING id
    ), audited AS (
        INSERT INTO audit_events (type, severity, user_id, session_id, ip, at, details)
        SELECT audit.type, audit.severity, audit.user_id, audit.session_id, audit.ip,
               audit.at, audit.details
        FROM UNNEST((SELECT $9::TEXT[]), (SELECT $10::TEXT[]), (SELECT $11::TEXT[]),
                    (SELECT $12::UUID[]), (SELECT $13::TEXT[]), (SELECT $14::BIGINT[]),
                    (SELECT $15::TEXT[]), (SELECT $16::BIGINT[]))
             WITH ORDINALITY AS audit (type, severity, user_id, session_id, ip, at, details,
                                       rotation, position)
        WHERE audit.rotation IN (SELECT n FROM touched)
        ORDER BY audit.position
        RETURNING seq
    ), events_written AS (
        SELECT count(*) AS written FROM refreshed
    ), audits_written AS (
        SELECT count(*) AS written FROM audited
    )
    SELECT r.n,
           EXISTS (SELECT 1 FROM locked WHERE locked.id = r.session_id),
           EXISTS (SELECT 1 FROM spent WHERE spent.n = r.n),
           EXISTS (SELECT 1 FROM touched WHERE touched.n = r.n),
           EXISTS (SELECT 1 FROM successor WHERE successor.session_id = r.session_id),
           events_written.written, audits_written.written,
           EXISTS (SELECT 1 FROM sessions s JOIN refresh_tokens t ON t.hash = r.presented
                   WHERE s.id = r.session_id AND s.revoked_at IS NULL
                     AND t.session_id = r.session_id AND t.spent_at IS NULL)
    FROM rotation r, events_written, audits_written
    ORDER BY r.n"
        )
    };
}

/// How a statement takes its sessions' locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Locking {
    /// A batch: a session another transaction holds locked is skipped, not waited for, and its
    /// rotation is written again on its own.
    Skip,
    /// A rotation written on its own: it waits for its session's lock.
    Wait,
}

/// The branch of the rotation statement's `refreshed` step that writes the events its audit
/// rows publish (`$17`…`$22`).
macro_rules! published_events {
    () => {
        "
            UNION ALL
            SELECT published.rotation, published.position, published.type, published.user_id,
                   published.session_id, published.at, published.data
            FROM UNNEST((SELECT $17::TEXT[]), (SELECT $18::TEXT[]), (SELECT $19::UUID[]),
                        (SELECT $20::BIGINT[]), (SELECT $21::TEXT[]), (SELECT $22::BIGINT[]))
                 WITH ORDINALITY AS published (type, user_id, session_id, at, data, rotation,
                                               position)
            WHERE published.rotation IN (SELECT n FROM touched)"
    };
}

impl Locking {
    /// The statement for a batch locking this way, with the branch that writes published
    /// events only when one of its audit rows publishes some (`publishes`).
    fn statement(self, publishes: bool) -> &'static str {
        match (self, publishes) {
            (Self::Skip, true) => rotate_statement!("SKIP LOCKED", published_events!()),
            (Self::Skip, false) => rotate_statement!("SKIP LOCKED", ""),
            (Self::Wait, true) => rotate_statement!("", published_events!()),
            (Self::Wait, false) => rotate_statement!("", ""),
        }
    }
}

/// A rotation waiting for its batch, with its columns prepared by the caller.
pub(super) struct Pending {
    now: i64,
    idle_expires_at: i64,
    access_expires_at: i64,
    session: Uuid,
    presented: RefreshTokenHash,
    successor: RefreshTokenHash,
    sealed_successor: Zeroizing<Vec<u8>>,
    bind_dpop_jkt: Option<String>,
    audit: Option<NewAuditEvent>,
    /// The events `audit` publishes.
    published: Vec<NewEvent>,
    reply: oneshot::Sender<Result<RotationOutcome, StoreError>>,
}

/// The rotations of one store, batched.
pub(super) struct Rotations {
    pool: PgPool,
    /// The store's cipher, which seals the audit rows' addresses.
    cipher: Arc<CipherSlot>,
}

impl Rotations {
    /// Starts batching rotations on `pool`.
    pub(super) fn start(pool: PgPool, cipher: Arc<CipherSlot>) -> Batcher<Self> {
        Batcher::start(Self { pool, cipher })
    }
}

impl Batcher<Rotations> {
    /// Queues `rotation` and waits for its outcome.
    pub(super) async fn rotate(
        &self,
        cipher: &CipherSlot,
        rotation: &Rotation,
    ) -> Result<RotationOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let published = rotation
            .audit
            .iter()
            .flat_map(event::events_of_audit)
            .collect();
        self.queue(Pending {
            now: rotation.now.unix_millis(),
            idle_expires_at: rotation.idle_expires_at.unix_millis(),
            access_expires_at: rotation.access_expires_at.unix_millis(),
            session: *rotation.session_id.as_uuid(),
            presented: rotation.presented,
            successor: rotation.successor,
            sealed_successor: cipher.seal_bytes(
                SEALED_SUCCESSOR,
                &rotation.presented.0,
                &rotation.sealed_successor,
            ),
            bind_dpop_jkt: rotation.bind_dpop_jkt.clone(),
            audit: rotation.audit.clone(),
            published,
            reply,
        })
        .await?;
        outcome.await.map_err(|_| stopped())?
    }
}

impl Batch for Rotations {
    type Item = Pending;

    /// Up to [`MAX_BATCH`] rotations, at most one per session, in the order they arrived.
    fn take(&self, waiting: &mut VecDeque<Pending>) -> Vec<Pending> {
        let mut batch = Vec::new();
        let mut sessions = HashSet::new();
        let mut left = VecDeque::new();
        while let Some(pending) = waiting.pop_front() {
            if batch.len() < MAX_BATCH && sessions.insert(pending.session) {
                batch.push(pending);
            } else {
                left.push_back(pending);
            }
        }
        *waiting = left;
        batch
    }

    /// A rotation whose session was skipped, or whose statement PostgreSQL refused, is written
    /// again alone, so that a failure is only answered to the rotation it belongs to and a wait
    /// only held by the rotation that needs it.
    async fn send(self: Arc<Self>, batch: Vec<Pending>) {
        match write(&self.pool, &self.cipher, &batch, Locking::Skip).await {
            Ok(outcomes) => {
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    match outcome {
                        Outcome::Skipped => Arc::clone(&self).write_alone(pending),
                        Outcome::Done(outcome) => {
                            // A caller that stopped waiting no longer needs the answer.
                            let _ = pending.reply.send(outcome.map_err(StoreError::Corrupt));
                        }
                    }
                }
            }
            Err(WriteError::Driver(sqlx::Error::Database(_))) if batch.len() > 1 => {
                for pending in batch {
                    Arc::clone(&self).write_alone(pending);
                }
            }
            Err(error) => answer_error(batch, error),
        }
    }
}

impl Rotations {
    /// Writes one rotation on its own, on a task of its own, waiting for its session's lock.
    fn write_alone(self: Arc<Self>, pending: Pending) {
        tokio::spawn(async move {
            let batch = std::slice::from_ref(&pending);
            let outcome = match write(&self.pool, &self.cipher, batch, Locking::Wait).await {
                Ok(mut outcomes) => match outcomes.pop() {
                    Some(Outcome::Done(outcome)) => outcome.map_err(StoreError::Corrupt),
                    // A rotation that waits for its lock is never skipped; should it be all the
                    // same, the rotation wrote nothing.
                    Some(Outcome::Skipped) | None => Ok(RotationOutcome::Lost),
                },
                Err(error) => {
                    answer_error(vec![pending], error);
                    return;
                }
            };
            let _ = pending.reply.send(outcome);
        });
    }
}

/// What became of one rotation of a statement.
enum Outcome {
    /// Its outcome, or what was inconsistent about it.
    Done(Result<RotationOutcome, String>),
    /// Its session was held by another transaction and skipped: nothing was written for it.
    Skipped,
}

/// Answers each rotation of `batch` with the statement's error.
fn answer_error(batch: Vec<Pending>, error: WriteError) {
    match error {
        WriteError::Driver(error) => {
            let error = Arc::new(error);
            for pending in batch {
                let _ = pending.reply.send(Err(shared_store_error(&error)));
            }
        }
        WriteError::Inconsistent(message) => {
            for pending in batch {
                let _ = pending
                    .reply
                    .send(Err(StoreError::Corrupt(message.clone())));
            }
        }
    }
}

/// Why a batch was not written as asked.
enum WriteError {
    /// The driver or the database refused; nothing was written.
    Driver(sqlx::Error),
    /// The statement committed but did not write what its gating allows (a trigger added by
    /// hand, say): said rather than answered as rotations half done.
    Inconsistent(String),
}

/// Sends `batch` as one statement locking as `locking` says, and reads each rotation's outcome.
async fn write(
    pool: &PgPool,
    cipher: &CipherSlot,
    batch: &[Pending],
    locking: Locking,
) -> Result<Vec<Outcome>, WriteError> {
    let mut audit_events = Vec::new();
    let mut audit_rotations = Vec::new();
    let mut published_events = Vec::new();
    let mut published_rotations = Vec::new();
    for (n, pending) in (1_i64..).zip(batch) {
        if let Some(audit) = &pending.audit {
            audit_events.push(audit);
            audit_rotations.push(n);
        }
        for published in &pending.published {
            published_events.push(published);
            published_rotations.push(n);
        }
    }
    let audit = AuditColumns::of(audit_events.into_iter(), cipher);
    let published = EventColumns::of(published_events.into_iter())
        .map_err(|error| WriteError::Inconsistent(error.to_string()))?;
    let column = |value: fn(&Pending) -> i64| batch.iter().map(value).collect::<Vec<i64>>();
    let bytes = |value: fn(&Pending) -> &[u8]| batch.iter().map(value).collect::<Vec<&[u8]>>();
    let nows = column(|pending| pending.now);
    let idle_expiries = column(|pending| pending.idle_expires_at);
    let access_expiries = column(|pending| pending.access_expires_at);
    let sessions: Vec<Uuid> = batch.iter().map(|pending| pending.session).collect();
    let presented = bytes(|pending| &pending.presented.0);
    let successors = bytes(|pending| &pending.successor.0);
    let sealed = bytes(|pending| &pending.sealed_successor);
    let jkts: Vec<Option<&str>> = batch
        .iter()
        .map(|pending| pending.bind_dpop_jkt.as_deref())
        .collect();
    let publishes = !published_rotations.is_empty();
    let query = sqlx::query(locking.statement(publishes))
        .bind(&nows)
        .bind(&idle_expiries)
        .bind(&access_expiries)
        .bind(&sessions)
        .bind(&presented)
        .bind(&successors)
        .bind(&sealed)
        .bind(&jkts);
    let mut query = audit.bind_to(query).bind(&audit_rotations);
    if publishes {
        query = published.bind_to(query).bind(&published_rotations);
    }
    let rows = query.fetch_all(pool).await.map_err(WriteError::Driver)?;
    if rows.len() != batch.len() {
        return Err(WriteError::Inconsistent(format!(
            "a batch of {} rotations was answered with {} rows",
            batch.len(),
            rows.len()
        )));
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    let (mut events_expected, mut audits_expected) = (0_i64, 0_i64);
    let (mut events_written, mut audits_written) = (0_i64, 0_i64);
    for (row, pending) in rows.iter().zip(batch) {
        let steps: (bool, bool, bool, bool) = (
            row.try_get(1).map_err(WriteError::Driver)?,
            row.try_get(2).map_err(WriteError::Driver)?,
            row.try_get(3).map_err(WriteError::Driver)?,
            row.try_get(4).map_err(WriteError::Driver)?,
        );
        events_written = row.try_get(5).map_err(WriteError::Driver)?;
        audits_written = row.try_get(6).map_err(WriteError::Driver)?;
        let eligible: bool = row.try_get(7).map_err(WriteError::Driver)?;
        if steps == (false, false, false, false) && eligible && locking == Locking::Skip {
            outcomes.push(Outcome::Skipped);
            continue;
        }
        outcomes.push(Outcome::Done(match steps {
            (true, true, true, true) => {
                events_expected += 1 + i64::try_from(pending.published.len()).unwrap_or(i64::MAX);
                audits_expected += i64::from(pending.audit.is_some());
                Ok(RotationOutcome::Rotated)
            }
            // Nothing matched, or the session was locked but the token had been spent by a
            // rotation that committed while this one waited: nothing was written for it.
            (false, false, false, false) | (true, false, false, false) => Ok(RotationOutcome::Lost),
            // The gating leaves no other outcome; should one appear all the same (a trigger
            // added by hand, say), say so rather than answer for a rotation half done.
            (locked, spent, touched, inserted) => Err(format!(
                "a rotation committed having locked its session: {locked}, spent its token: \
                 {spent}, moved its session: {touched}, stored its successor: {inserted}"
            )),
        }));
    }
    if (events_written, audits_written) != (events_expected, audits_expected) {
        return Err(WriteError::Inconsistent(format!(
            "a batch of rotations committed {events_written} events and {audits_written} \
             audit events where its rotations called for {events_expected} and \
             {audits_expected}"
        )));
    }
    Ok(outcomes)
}
