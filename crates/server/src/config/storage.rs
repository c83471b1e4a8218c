//! Storage: the database URL and SQLite's durability and size cap.

use sessiond_store_sqlite::Synchronous;

use super::*;

/// The smallest `SESSIOND_SQLITE_MAX_SIZE` accepted: room for the schema and some sessions.
const MIN_SQLITE_MAX_SIZE: u64 = 1024 * 1024;

/// `SESSIOND_SQLITE_MAX_SIZE`: bytes, or a number followed by `KiB`, `MiB` or `GiB`.
fn sqlite_max_size(value: Option<&str>) -> Result<Option<u64>, String> {
    let Some(text) = value.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(split) => text.split_at(split),
        None => (text, ""),
    };
    let multiplier: u64 = match unit.trim() {
        "" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .filter(|bytes| *bytes >= MIN_SQLITE_MAX_SIZE)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "SESSIOND_SQLITE_MAX_SIZE must be a size of at least 1MiB, in bytes or with KiB, MiB or GiB (got {text:?})"
            )
        })
}

/// SQLite's commit durability and size cap.
pub(super) struct SqliteChoice {
    pub(super) synchronous: Synchronous,
    pub(super) max_size: Option<u64>,
}

/// `SESSIOND_DATABASE_URL`: `sqlite://PATH` (by default `sqlite://sessiond.db`, with a
/// warning) or `postgres://...`.
pub(super) fn database_url(raw: &RawConfig, warnings: &mut Vec<String>) -> Result<String, String> {
    let database_url = match &raw.database_url {
        Some(url) => url.expose().to_owned(),
        None => {
            warnings.push(
                "no SESSIOND_DATABASE_URL: using sqlite://sessiond.db in the working directory"
                    .into(),
            );
            "sqlite://sessiond.db".to_owned()
        }
    };
    let postgres = is_postgres_url(&database_url);
    if !database_url.starts_with("sqlite:") && !postgres {
        return Err(format!(
            "SESSIOND_DATABASE_URL must be sqlite://PATH or postgres://... (got a {} URL)",
            database_url.split(':').next().unwrap_or("malformed")
        ));
    }
    Ok(database_url)
}

/// `SESSIOND_SQLITE_SYNCHRONOUS` and `SESSIOND_SQLITE_MAX_SIZE`.
pub(super) fn sqlite(raw: &RawConfig) -> Result<SqliteChoice, String> {
    let synchronous = match raw.sqlite_synchronous.as_deref().map(str::trim) {
        None | Some("full") => Synchronous::Full,
        Some("normal") => Synchronous::Normal,
        Some(other) => {
            return Err(format!(
                "SESSIOND_SQLITE_SYNCHRONOUS must be full or normal (got {other:?})"
            ));
        }
    };
    Ok(SqliteChoice {
        synchronous,
        max_size: sqlite_max_size(raw.sqlite_max_size.as_deref())?,
    })
}
