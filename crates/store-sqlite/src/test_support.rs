//! What the unit tests of several modules share.

use rusqlite::Connection;
use rusqlite::types::FromSql;

/// The first column of every row `sql` reads, in order.
pub(crate) fn column<T: FromSql>(connection: &Connection, sql: &str) -> Vec<T> {
    let mut statement = connection.prepare(sql).expect("prepare");
    statement
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}
