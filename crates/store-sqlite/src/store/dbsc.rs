//! [`DbscStore`] over SQLite: the `dbsc_bindings` table, one row per bound session.

use async_trait::async_trait;
use rusqlite::params;
use sessiond_core::audit::NewAuditEvent;
use sessiond_core::store::{DbscBinding, DbscCredential, DbscStore, StoreError};
use sessiond_core::{SessionId, Timestamp};

use super::{SqliteStore, execute, query_optional};
use crate::rows::get;

#[async_trait]
impl DbscStore for SqliteStore {
    async fn bind_dbsc(
        &self,
        binding: &DbscBinding,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let (binding, audit) = (binding.clone(), audit.clone());
        self.engine
            .write(move |tx| {
                // The session's row decides: a session revoked, expired or bound by the time
                // this transaction runs is not bound.
                let bound = execute(
                    tx.connection(),
                    "INSERT INTO dbsc_bindings (session_id, public_key, credential_hash,
                         credential_expires_at, generation, bound_at)
                     SELECT id, ?2, ?3, ?4, ?5, ?6 FROM live_sessions
                     WHERE id = ?1 AND revoked_at IS NULL
                       AND idle_expires_at > ?6 AND expires_at > ?6
                     ON CONFLICT (session_id) DO NOTHING",
                    params![
                        binding.session_id.to_string(),
                        binding.public_key,
                        &binding.credential.hash[..],
                        binding.credential.expires_at.unix_millis(),
                        binding.generation,
                        binding.bound_at.unix_millis(),
                    ],
                )?;
                if bound == 0 {
                    return Ok(false);
                }
                tx.append_audit(&audit)?;
                Ok(true)
            })
            .await
    }

    async fn dbsc_binding(&self, session: SessionId) -> Result<Option<DbscBinding>, StoreError> {
        // On the storage thread: a refresh of a bound session reads it.
        self.engine
            .lookup(move |connection| {
                query_optional(
                    connection,
                    "SELECT public_key, credential_hash, credential_expires_at, generation,
                            bound_at
                     FROM dbsc_bindings WHERE session_id = ?1",
                    [session.to_string()],
                    |row| {
                        let hash: Vec<u8> = get(row, 1)?;
                        Ok(DbscBinding {
                            session_id: session,
                            public_key: get(row, 0)?,
                            credential: DbscCredential {
                                hash: hash.try_into().map_err(|_| {
                                    StoreError::Corrupt(
                                        "dbsc_bindings.credential_hash is not 32 bytes".into(),
                                    )
                                })?,
                                expires_at: Timestamp::from_unix_millis(get(row, 2)?),
                            },
                            generation: get(row, 3)?,
                            bound_at: Timestamp::from_unix_millis(get(row, 4)?),
                        })
                    },
                )
            })
            .await
    }

    async fn renew_dbsc_credential(
        &self,
        session: SessionId,
        generation: i64,
        credential: &DbscCredential,
    ) -> Result<bool, StoreError> {
        let credential = *credential;
        self.engine
            .write(move |tx| {
                let renewed = execute(
                    tx.connection(),
                    "UPDATE dbsc_bindings
                     SET credential_hash = ?1, credential_expires_at = ?2,
                         generation = generation + 1
                     WHERE session_id = ?3 AND generation = ?4",
                    params![
                        &credential.hash[..],
                        credential.expires_at.unix_millis(),
                        session.to_string(),
                        generation,
                    ],
                )?;
                Ok(renewed == 1)
            })
            .await
    }
}
