//! The store conformance suite: the store-level tests that every implementation of
//! [`sessiond_core::store::Store`] must pass, written once against the store traits.
//!
//! Each case is a `pub async fn` generic over a [`Backend`], the factory of fresh databases a
//! store's own test binary provides (a fresh SQLite file in a temporary directory, a fresh
//! PostgreSQL schema). [`conformance_suite!`] expands to one `#[tokio::test]` per case, so
//! a store runs the whole suite with one line in its `tests/it/main.rs`, and a case added here
//! runs on every store. Several stores opened by one `Backend` stand for several processes
//! sharing a database (two SQLite handles on one file contend through `BEGIN IMMEDIATE`; two
//! PostgreSQL pools through row and advisory locks).
//!
//! Cases assert through the store traits wherever the traits can observe a property. Where
//! they cannot (how many refresh tokens a session has, how many rows an operation wrote), a
//! case asks the backend to count rows with SQL that both schemas answer alike.

#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use sessiond_core::SessionId;
use sessiond_core::store::Store;

pub mod audit;
pub mod events;
pub mod fixtures;
pub mod integrity;
pub mod keys;
pub mod limits;
pub mod proofs;
pub mod revocation;
pub mod rotation;
pub mod storage;

/// An audit row as stored: its type, severity, IP, instant (milliseconds) and details (JSON).
pub type AuditRow = (String, String, Option<String>, i64, String);

/// A database the suite can test a store on, made fresh for each case. Its futures need not be
/// `Send`: the cases await them on the test's own task, and only stores cross tasks.
#[async_trait(?Send)]
pub trait Backend: Sized + Send + Sync + 'static {
    /// The store under test. Clones share one handle, as tasks of one process do.
    type Store: Store + Clone;

    /// A fresh, empty database for the case named `test`, or `None` when this backend cannot
    /// run here (no database configured): the case then says so once and passes.
    async fn create(test: &str) -> Option<Self>;

    /// A store opened on the database and migrated, as one more process would open it. Each
    /// call opens a separate handle (its own connections, its own storage thread).
    async fn store(&self) -> Self::Store;

    /// The count `sql` answers, its parameter `$1` (if any) bound to `id`. Used where the store
    /// traits cannot observe what a case checks; the SQL must mean the same on every schema.
    async fn count(&self, sql: &str, id: Option<SessionId>) -> i64;

    /// Every audit row, in the order it was appended.
    async fn audit_rows(&self) -> Vec<AuditRow>;

    /// Runs `sql`, a statement without parameters that both schemas understand, straight on the
    /// database: to damage rows the way the store never would.
    async fn execute(&self, sql: &str);

    /// How many refresh tokens session `id` has.
    async fn tokens_of(&self, id: SessionId) -> i64 {
        self.count(
            // A token's key is 32 bytes; the SQLite store keeps each session's activity row
            // (28 bytes) in the same table.
            "SELECT count(*) FROM refresh_tokens WHERE session_id = $1 AND length(hash) = 32",
            Some(id),
        )
        .await
    }

    /// How many audit events name session `id`.
    async fn audit_events_of(&self, id: SessionId) -> i64 {
        self.count(
            "SELECT count(*) FROM audit_events WHERE session_id = $1",
            Some(id),
        )
        .await
    }
}

/// Expands to one test per conformance case, in modules named after the suite's, for the
/// [`Backend`] given: `sessiond_store_conformance::conformance_suite!(MyBackend);`. The
/// calling crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:ty) => {
        $crate::conformance_cases! { $backend;
            rotation {
                a_created_session_is_found_by_its_token_and_each_token_rotates_once,
                a_rotation_of_a_revoked_session_writes_nothing,
                a_rotation_of_a_session_revoked_after_a_refresh_writes_nothing,
                a_rotation_naming_another_session_than_the_tokens_is_lost,
                two_rotations_of_one_token_at_once_on_one_store_yield_one_successor,
                pairs_spent_before_the_cutoff_are_forgotten_and_their_tokens_stay,
                thirty_two_concurrent_rotations_from_two_instances_yield_one_successor,
            }
            revocation {
                revoking_twice_revokes_once_and_writes_one_audit_event,
                concurrent_revocations_from_two_instances_audit_each_session_once,
                revoking_a_user_spares_the_excepted_session_expired_ones_and_other_users,
                revoked_since_lists_recent_revocations_whose_access_tokens_still_live,
                mixed_writes_of_one_user_on_two_instances_never_deadlock,
            }
            limits {
                the_least_recently_active_sessions_are_evicted_past_the_limit,
                twelve_concurrent_creations_on_two_instances_keep_exactly_three_active,
            }
            storage {
                purge_deletes_old_dead_sessions_in_batches_with_their_tokens,
                a_refreshed_session_expires_at_its_latest_idle_expiry_even_a_shortened_one,
                claims_and_metadata_round_trip_exactly_including_escaped_nul_characters,
                audit_events_are_appended_together_in_order,
            }
            keys {
                signing_keys_round_trip_in_creation_order,
                only_one_first_signing_key_wins_among_instances_starting_together,
                a_rotation_is_a_compare_and_swap_and_only_deactivated_keys_retire,
                a_staged_rotation_keeps_the_old_key_signing_until_the_new_one_starts,
                a_rotation_to_another_algorithm_replaces_the_old_algorithms_key,
                a_retired_key_keeps_its_row_without_its_secret_until_purged,
            }
            events {
                each_change_writes_its_event_in_order_and_filters_select_them,
                a_rotation_writes_the_events_its_audit_row_publishes,
                purge_deletes_events_before_the_cutoff_in_batches_and_keeps_later_ones,
            }
            audit {
                instances_sealing_at_once_build_one_chain_that_verifies,
                a_query_after_a_seq_beyond_any_stored_one_finds_nothing,
                audit_addresses_are_stored_sealed_and_old_plaintext_ones_still_read,
            }
            integrity {
                a_ciphertext_moved_from_another_row_reads_as_unreadable_and_the_session_still_revokes,
            }
            proofs {
                a_binding_is_stored_with_its_session_and_a_rotation_binds_an_unbound_one_once,
                a_proof_id_is_new_once_until_its_record_expires,
                sixteen_concurrent_uses_of_one_proof_on_two_instances_let_one_through,
                a_rotation_records_its_proof_first_and_a_replayed_one_changes_nothing,
                eight_rotations_with_one_proof_on_two_instances_let_one_through,
                purge_deletes_expired_proof_ids_in_batches_and_keeps_live_ones,
            }
        }
    };
}

/// The expansion of [`conformance_suite!`]: one module per group, one test per case.
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_cases {
    ($backend:ty; $($module:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $module {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $case() {
                        $crate::$module::$case::<$backend>().await;
                    }
                )*
            }
        )*
    };
}
