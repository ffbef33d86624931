//! How the numbered schema migrations ([`crate::store::migrate`], shared
//! with SQLite) run on a PostgreSQL database.
//!
//! Several `weir store` processes may start against one database at once.
//! Each runs every pending migration in one transaction that first takes a
//! transaction-scoped advisory lock ([`MIGRATION_LOCK`]): the second process
//! waits for the first to commit, then finds nothing left to do. Without the
//! lock both would race on `CREATE TABLE` and one would fail on start-up.

use deadpool_postgres::Object;

use super::db_err;
use crate::store::{
    migrate::{self, Dialect},
    StoreResult,
};

/// The advisory lock key migrations hold (`weirmigr` in ASCII), chosen so it
/// cannot collide with small numbers other software on the database may use.
pub(super) const MIGRATION_LOCK: i64 = 0x7765_6972_6d69_6772;

/// Applies every migration not yet recorded, under [`MIGRATION_LOCK`]; a
/// no-op (one lock, one read) on an up-to-date database.
pub(super) async fn migrate(client: &mut Object) -> StoreResult<()> {
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_err)?;
    tx.batch_execute(&migrate::ledger_ddl(Dialect::Postgres))
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
    for step in migrate::pending(Dialect::Postgres, current)? {
        tx.batch_execute(&step.sql)
            .await
            .map_err(|e| step.failed(e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&step.version, &step.name, &crate::util::now()],
        )
        .await
        .map_err(db_err)?;
        let (version, name) = (step.version, step.name);
        tracing::info!(version, name, "postgres migration applied");
    }
    tx.commit().await.map_err(db_err)
}
