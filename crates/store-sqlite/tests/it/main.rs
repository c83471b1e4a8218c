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
