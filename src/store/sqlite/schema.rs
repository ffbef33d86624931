//! Connection settings and the numbered schema migrations.
//!
//! Migrations are append-only: a released entry is never edited, a change is
//! a new entry. Each one runs in the same `BEGIN IMMEDIATE` transaction that
//! records it in `schema_migrations`, so two processes opening the same data
//! dir at once (a gateway and `weir keys create`) cannot both apply it.

use rusqlite::{params, Connection, TransactionBehavior};

use super::db_err;
use crate::store::{StoreError, StoreResult};

/// `(version, name, sql)`, in order.
pub(in crate::store) const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "initial", INITIAL)];

/// `pk INTEGER PRIMARY KEY AUTOINCREMENT` everywhere a list pages by rowid:
/// an alias of the rowid is stable across VACUUM, and AUTOINCREMENT never
/// reuses a deleted row's number, so a cursor can never skip a new row.
const INITIAL: &str = "
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE keys (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    scopes TEXT NOT NULL,
    rpm INTEGER NOT NULL,
    hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX keys_account ON keys(account_id, pk);
CREATE TABLE agents (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    system TEXT NOT NULL,
    tools TEXT NOT NULL,
    tags TEXT NOT NULL,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX agents_account ON agents(account_id, pk);
CREATE TABLE tools (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    json_schema TEXT NOT NULL,
    kind TEXT NOT NULL,
    url TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX tools_account ON tools(account_id, pk);
CREATE TABLE sessions (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX sessions_agent ON sessions(agent_id, pk);
CREATE TABLE runs (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    status TEXT NOT NULL,
    stop_reason TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX runs_agent ON runs(agent_id);
CREATE TABLE events (
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    message_type TEXT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
CREATE INDEX events_session ON events(agent_id, session_id, seq);
CREATE INDEX events_run ON events(agent_id, run_id, seq);
CREATE TABLE logs (
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
";

/// Per-connection settings. WAL lets readers run beside the one writer;
/// NORMAL sync is durable across process crashes (not power loss) in WAL
/// mode and much faster than FULL; the busy timeout covers a second process
/// (e.g. `weir keys create`) writing the same file.
pub(super) fn configure(conn: &Connection, reader: bool) -> StoreResult<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(db_err)?;
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
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at TEXT NOT NULL
        );",
    )
    .map_err(db_err)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(StoreError::Unavailable(format!(
            "database schema version {current} is newer than this weir knows ({known})"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Unavailable(format!("migration {version} ({name}): {e}")))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![version, name, crate::util::now()],
        )
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}
