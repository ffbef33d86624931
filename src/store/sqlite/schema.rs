//! Connection settings, and how the numbered schema migrations
//! ([`crate::store::migrate`]) run on a SQLite file.
//!
//! All pending migrations run in one `BEGIN IMMEDIATE` transaction that also
//! records them in `schema_migrations`, so two processes opening the same
//! data dir at once (a gateway and `weir keys create`) cannot both apply one.

use rusqlite::{params, Connection, TransactionBehavior};

use super::db_err;
use crate::store::{
    migrate::{self, Dialect},
    StoreResult,
};

/// How long a connection waits for another's lock before `SQLITE_BUSY`.
pub(super) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Per-connection settings. WAL lets readers run beside the one writer;
/// NORMAL sync is durable across process crashes (not power loss) in WAL
/// mode and much faster than FULL; the busy timeout covers a second process
/// (e.g. `weir keys create`) writing the same file.
pub(super) fn configure(conn: &Connection, reader: bool) -> StoreResult<()> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(db_err)?;
    if reader {
        conn.execute_batch("PRAGMA query_only = ON;")
            .map_err(db_err)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Applies every migration not yet recorded; a no-op on an up-to-date file.
pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    tx.execute_batch(&migrate::ledger_ddl(Dialect::Sqlite))
        .map_err(db_err)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    for step in migrate::pending(Dialect::Sqlite, current)? {
        tx.execute_batch(&step.sql).map_err(|e| step.failed(e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![step.version, step.name, crate::util::now()],
        )
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}
