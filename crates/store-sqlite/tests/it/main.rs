//! Integration tests of the SQLite store: the conformance suite, each case on a fresh file in a
//! temporary directory. Several `SqliteStore`s opened on one file stand for several processes
//! sharing it: each has its own storage thread, and their writes contend through
//! `BEGIN IMMEDIATE` and the busy timeout.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use sessiond_core::SessionId;
use sessiond_store_conformance::{AuditRow, Backend};
use sessiond_store_sqlite::{SqliteSettings, SqliteStore};

mod conformance {
    sessiond_store_conformance::conformance_suite!(crate::TestFile);
}

/// A fresh database file in a directory of its own, removed when the test ends.
#[derive(Debug)]
pub struct TestFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TestFile {
    /// A read-only connection for assertions on the rows themselves.
    fn raw(&self) -> Connection {
        let connection = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the test file");
        connection
            .busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        connection
    }
}

#[async_trait(?Send)]
impl Backend for TestFile {
    type Store = SqliteStore;

    async fn create(_test: &str) -> Option<Self> {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("sessiond.db");
        Some(Self { _dir: dir, path })
    }

    async fn store(&self) -> SqliteStore {
        let url = format!("sqlite://{}", self.path.display());
        // Opening migrates.
        SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .expect("open the store")
    }

    async fn count(&self, sql: &str, id: Option<SessionId>) -> i64 {
        let raw = self.raw();
        match id {
            Some(id) => raw.query_row(sql, [id.to_string()], |row| row.get(0)),
            None => raw.query_row(sql, [], |row| row.get(0)),
        }
        .expect("count")
    }

    async fn execute(&self, sql: &str) {
        let connection = Connection::open(&self.path).expect("open the test file");
        connection
            .busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        connection.execute(sql, []).expect("execute");
    }

    async fn audit_rows(&self) -> Vec<AuditRow> {
        let raw = self.raw();
        let mut statement = raw
            .prepare("SELECT type, severity, ip, at, details FROM audit_events ORDER BY chain_seq")
            .unwrap();
        statement
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

/// The session's moving fields live in its activity row (migration 0020): a session created
/// before it (no activity key) moves forward, gains one at its next rotation, and reads back
/// alike; a session purged takes its activity row with it.
#[tokio::test]
async fn a_session_from_before_activity_rows_moves_forward_and_is_purged_whole() {
    use sessiond_core::store::{RotationOutcome, SessionStore};
    use sessiond_store_conformance::fixtures::{T0, create, ms, rotation_of, session_for};

    let db = TestFile::create("activity").await.unwrap();
    let store = db.store().await;
    let session = session_for("alice", T0);
    let (token, _) = create(&store, &session, 5).await;
    // As a session created before migration 0020 is stored.
    db.execute(&format!(
        "UPDATE sessions SET activity = NULL WHERE id = '{}'",
        session.id
    ))
    .await;
    let rows_of = |sql: &'static str| {
        let raw = db.raw();
        raw.query_row(sql, [session.id.to_string()], |row| row.get::<_, i64>(0))
            .unwrap()
    };
    let mut presented = token.hash();
    for n in 1..=3u64 {
        let rotation = rotation_of(presented, session.id, T0.plus(ms(n * 60_000)));
        assert_eq!(
            store.rotate_refresh_token(&rotation).await.unwrap(),
            RotationOutcome::Rotated
        );
        let (_, stored) = store
            .find_refresh_token(&rotation.successor)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.last_active_at, rotation.now);
        assert_eq!(stored.idle_expires_at, rotation.idle_expires_at);
        assert_eq!(stored.access_expires_at, rotation.access_expires_at);
        assert_eq!(
            rows_of("SELECT COUNT(*) FROM sessions WHERE id = ?1 AND activity IS NOT NULL"),
            1
        );
        assert_eq!(
            rows_of(
                "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = ?1 AND length(hash) = 28"
            ),
            1,
            "one activity row, written by the first rotation"
        );
        presented = rotation.successor;
    }
    // The session's own row kept what it was created with.
    assert_eq!(
        rows_of("SELECT last_active_at FROM sessions WHERE id = ?1"),
        T0.unix_millis()
    );
    let listed = store
        .active_sessions(&session.user_id, T0.plus(ms(180_000)))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_active_at, T0.plus(ms(180_000)));

    // Long after its idle expiry the purge takes the session, its tokens and its activity row.
    let late = T0.plus(ms(100 * 3_600_000));
    assert_eq!(store.purge(late, late, 100).await.unwrap(), 1);
    assert_eq!(
        rows_of("SELECT COUNT(*) FROM refresh_tokens WHERE session_id = ?1"),
        0
    );
}
