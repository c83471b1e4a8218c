//! Connections kept out of the pool for the refresh path's token lookup, the one statement
//! every refresh sends on its own.
//!
//! sqlx 0.8 pings every connection it takes back into its pool (a Sync and its ReadyForQuery),
//! whatever the pool's settings: for a lookup, a second round trip after the statement, about a
//! tenth of sessiond's CPU per refresh on PostgreSQL (measured with `perf`). A lookup therefore
//! runs on a connection of its own, taken from the pool once and detached from it, and parks it
//! here afterwards: the next lookup takes it without a ping.
//!
//! - At most [`MAX_PARKED`] such connections exist at once; when all are in use, a lookup runs
//!   on the pool as before. They count against the database's connection limit, not the pool's
//!   (the pool may open replacements up to its own size).
//! - A connection goes back only when its statement completed without an error. One whose
//!   lookup was cancelled (timed out, its client gone) or failed is dropped with the future
//!   that held it, so no connection in an unknown state is ever reused.
//! - A connection parked for [`PING_WHEN_IDLE_FOR`] or more is pinged before use, as the pool
//!   does, and dropped if it does not answer (the server restarted, say); one parked longer
//!   than [`MAX_IDLE`] or open longer than [`MAX_LIFETIME`] is dropped instead of reused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sessiond_core::store::StoreError;
use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection};

use super::PING_WHEN_IDLE_FOR;
use crate::error::store_error;

/// The most connections kept for lookups at once. Under 32 concurrent refreshes on one
/// instance, four left most lookups on the pool; sixteen did no better than eight.
pub(super) const MAX_PARKED: usize = 8;
/// A parked connection unused for this long is closed rather than reused (sqlx's pool default).
const MAX_IDLE: Duration = Duration::from_secs(600);
/// A connection open for this long is closed rather than parked again (sqlx's pool default).
const MAX_LIFETIME: Duration = Duration::from_secs(1800);

/// The lookup connections of one store.
#[derive(Default)]
pub(super) struct LookupConnections {
    idle: Mutex<Vec<Parked>>,
    /// Connections open for lookups, parked or in use.
    open: Arc<AtomicUsize>,
}

impl std::fmt::Debug for LookupConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupConnections")
            .field("open", &self.open.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

/// A lookup connection, parked or in use.
pub(super) struct Parked {
    pub(super) connection: PgConnection,
    opened: Instant,
    parked_at: Instant,
    _slot: Slot,
}

/// One of the [`MAX_PARKED`] places, given back when its connection is dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LookupConnections {
    /// A connection for one lookup: a parked one, or a new one while fewer than [`MAX_PARKED`]
    /// are open; `None` when all are in use (the caller then uses the pool).
    ///
    /// # Errors
    /// [`StoreError`] when no connection could be had from the pool.
    pub(super) async fn take(&self, pool: &PgPool) -> Result<Option<Parked>, StoreError> {
        while let Some(mut parked) = self.pop() {
            let idle_for = parked.parked_at.elapsed();
            if idle_for >= MAX_IDLE {
                continue;
            }
            if idle_for >= PING_WHEN_IDLE_FOR && parked.connection.ping().await.is_err() {
                continue;
            }
            return Ok(Some(parked));
        }
        if self.open.fetch_add(1, Ordering::AcqRel) >= MAX_PARKED {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Ok(None);
        }
        let slot = Slot(Arc::clone(&self.open));
        let connection = pool.acquire().await.map_err(store_error)?.detach();
        let now = Instant::now();
        Ok(Some(Parked {
            connection,
            opened: now,
            parked_at: now,
            _slot: slot,
        }))
    }

    /// Parks a connection whose lookup completed without an error.
    pub(super) fn park(&self, mut parked: Parked) {
        if parked.opened.elapsed() >= MAX_LIFETIME {
            return;
        }
        parked.parked_at = Instant::now();
        self.idle().push(parked);
    }

    /// Closes the parked connections (those in use close as their lookups end).
    pub(super) async fn close(&self) {
        let parked = std::mem::take(&mut *self.idle());
        for parked in parked {
            // Only a courtesy to the server.
            let _ = parked.connection.close().await;
        }
    }

    fn pop(&self) -> Option<Parked> {
        self.idle().pop()
    }

    /// The parked connections. No code holding the lock can panic, and the list stays valid
    /// if one ever did, so a poisoned lock is taken as it is.
    fn idle(&self) -> MutexGuard<'_, Vec<Parked>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
