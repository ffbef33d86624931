//! The numbered schema migrations of the PostgreSQL store, and how they run.
//!
//! The list mirrors SQLite's ([`crate::store::sqlite::schema::MIGRATIONS`]):
//! same version numbers, same names, the same tables, columns, keys and
//! cascades in each dialect. A unit test keeps the two lists in step, so a
//! migration added to one store and not the other fails the build's tests.
//!
//! Several `weir store` processes may start against one database at once.
//! Each runs every pending migration in one transaction that first takes a
//! transaction-scoped advisory lock ([`MIGRATION_LOCK`]): the second process
//! waits for the first to commit, then finds nothing left to do. Without the
//! lock both would race on `CREATE TABLE` and one would fail on start-up.

use deadpool_postgres::Object;

use super::db_err;
use crate::store::{StoreError, StoreResult};

/// `(version, name, sql)`, in order. Append-only, like SQLite's.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "initial", INITIAL)];

/// The advisory lock key migrations hold (`weirmigr` in ASCII), chosen so it
/// cannot collide with small numbers other software on the database may use.
pub(super) const MIGRATION_LOCK: i64 = 0x7765_6972_6d69_6772;

/// `pk BIGINT GENERATED ALWAYS AS IDENTITY` where SQLite pages by rowid:
/// never reused, so a cursor never skips a row that existed when the page was
/// read. JSON stays TEXT (not JSONB) so it comes back exactly as written and
/// costs no server-side parse; timestamps stay TEXT so they round-trip
/// byte-for-byte like SQLite's. Every foreign key that cascades has an index
/// starting with its column, or `DELETE FROM agents` would scan whole tables.
const INITIAL: &str = "
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE keys (
    pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    scopes TEXT NOT NULL,
    rpm BIGINT NOT NULL,
    hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX keys_account ON keys(account_id, pk);
CREATE TABLE agents (
    pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX sessions_agent ON sessions(agent_id, pk);
CREATE TABLE runs (
    pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    seq BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    message_type TEXT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX events_session ON events(agent_id, session_id, seq);
CREATE INDEX events_run ON events(agent_id, run_id, seq);
CREATE TABLE logs (
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
";

/// Applies every migration not yet recorded, under [`MIGRATION_LOCK`]; a
/// no-op (one lock, one read) on an up-to-date database.
pub(super) async fn migrate(client: &mut Object) -> StoreResult<()> {
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at TEXT NOT NULL
        );",
    )
    .await
    .map_err(db_err)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )
        .await
        .map_err(db_err)?
        .try_get(0)
        .map_err(db_err)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(StoreError::Unavailable(format!(
            "database schema version {current} is newer than this weir knows ({known})"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration {version} ({name}): {e}")))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[version, name, &crate::util::now()],
        )
        .await
        .map_err(db_err)?;
        tracing::info!(version, name, "postgres migration applied");
    }
    tx.commit().await.map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both stores must know the same migrations by number and name, so a
    /// database of either kind at version N has the same tables.
    #[test]
    fn migrations_match_sqlite_by_number_and_name() {
        let ours: Vec<_> = MIGRATIONS.iter().map(|m| (m.0, m.1)).collect();
        let sqlite: Vec<_> = crate::store::sqlite::schema::MIGRATIONS
            .iter()
            .map(|m| (m.0, m.1))
            .collect();
        assert_eq!(ours, sqlite);
    }

    /// Same tables in both dialects (by name, in the same order).
    #[test]
    fn migrations_create_the_same_tables_as_sqlite() {
        fn tables(sql: &str) -> Vec<String> {
            sql.split("CREATE TABLE ")
                .skip(1)
                .filter_map(|t| t.split_whitespace().next())
                .map(str::to_owned)
                .collect()
        }
        for (pg, lite) in MIGRATIONS
            .iter()
            .zip(crate::store::sqlite::schema::MIGRATIONS)
        {
            assert_eq!(tables(pg.2), tables(lite.2), "migration {}", pg.0);
        }
    }
}
