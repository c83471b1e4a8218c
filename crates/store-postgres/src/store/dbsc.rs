//! [`DbscStore`] over PostgreSQL: the `dbsc_bindings` table, one row per bound session, shared
//! by every instance. Binding is one `INSERT ... ON CONFLICT DO NOTHING` (the primary key makes
//! it once per session, whichever instances race), and a renewal one `UPDATE` whose `WHERE`
//! names the generation read (the row lock makes it a compare-and-swap across instances).

use async_trait::async_trait;
use sessiond_core::audit::NewAuditEvent;
use sessiond_core::store::{DbscBinding, DbscCredential, DbscStore, StoreError};
use sessiond_core::{SessionId, Timestamp};
use sqlx::Row;

use super::{PostgresStore, insert_audit};
use crate::error::store_error;

#[async_trait]
impl DbscStore for PostgresStore {
    async fn bind_dbsc(
        &self,
        binding: &DbscBinding,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut tx = self.begin().await?;
            // `FOR SHARE` waits for a revocation of the session in flight, and then sees it.
            let bound = sqlx::query(
                "INSERT INTO dbsc_bindings (session_id, public_key, credential_hash,
                     credential_expires_at, generation, bound_at)
                 SELECT id, $2, $3, $4, $5, $6 FROM sessions
                 WHERE id = $1 AND revoked_at IS NULL
                   AND idle_expires_at > $6 AND expires_at > $6
                 FOR SHARE
                 ON CONFLICT (session_id) DO NOTHING",
            )
            .bind(binding.session_id.as_uuid())
            .bind(&binding.public_key)
            .bind(&binding.credential.hash[..])
            .bind(binding.credential.expires_at.unix_millis())
            .bind(binding.generation)
            .bind(binding.bound_at.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
            if bound == 0 {
                tx.rollback().await.map_err(store_error)?;
                return Ok(false);
            }
            insert_audit(&self.cipher, &mut tx, std::slice::from_ref(audit)).await?;
            tx.commit().await.map_err(store_error)?;
            Ok(true)
        })
        .await
    }

    async fn dbsc_binding(&self, session: SessionId) -> Result<Option<DbscBinding>, StoreError> {
        self.bounded(async {
            let row = sqlx::query(
                "SELECT public_key, credential_hash, credential_expires_at, generation, bound_at
                 FROM dbsc_bindings WHERE session_id = $1",
            )
            .bind(session.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let hash: Vec<u8> = row.try_get(1).map_err(store_error)?;
            Ok(Some(DbscBinding {
                session_id: session,
                public_key: row.try_get(0).map_err(store_error)?,
                credential: DbscCredential {
                    hash: hash.try_into().map_err(|_| {
                        StoreError::Corrupt("dbsc_bindings.credential_hash is not 32 bytes".into())
                    })?,
                    expires_at: Timestamp::from_unix_millis(row.try_get(2).map_err(store_error)?),
                },
                generation: row.try_get(3).map_err(store_error)?,
                bound_at: Timestamp::from_unix_millis(row.try_get(4).map_err(store_error)?),
            }))
        })
        .await
    }

    async fn renew_dbsc_credential(
        &self,
        session: SessionId,
        generation: i64,
        credential: &DbscCredential,
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            let renewed = sqlx::query(
                "UPDATE dbsc_bindings
                 SET credential_hash = $1, credential_expires_at = $2,
                     generation = generation + 1
                 WHERE session_id = $3 AND generation = $4",
            )
            .bind(&credential.hash[..])
            .bind(credential.expires_at.unix_millis())
            .bind(session.as_uuid())
            .bind(generation)
            .execute(&self.pool)
            .await
            .map_err(store_error)?
            .rows_affected();
            Ok(renewed == 1)
        })
        .await
    }
}
