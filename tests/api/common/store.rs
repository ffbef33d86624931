//! Where a test gateway's data lives: SQLite in the gateway process, or a
//! separate `weir store` process (over SQLite, or over a fresh PostgreSQL
//! database when one is reachable).

use std::{path::Path, sync::Arc};

use weir::store::postgres::scratch::ScratchDb;

use super::{Api, WeirProcess};

/// Where the gateway's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// SQLite in the gateway process.
    Embedded,
    /// A separate `weir store` process reached over HTTP.
    Remote,
    /// A separate `weir store --db postgres://…` process on a fresh database
    /// (tests using it check [`postgres_available`] first).
    RemotePostgres,
}

/// The token tests give `weir store`.
pub const STORE_TOKEN: &str = "test-store-token";

/// A `weir store` child process, killed on drop.
pub struct StoreProcess {
    /// The process; dropped (killed) before the database it serves.
    _process: WeirProcess,
    pub url: String,
    /// The PostgreSQL database it serves, if any: dropped after the child
    /// is killed (fields drop in declaration order).
    _db: Option<Arc<ScratchDb>>,
}

/// Starts `weir store` over `data_dir` and waits until it answers.
pub async fn spawn_store_process(data_dir: &Path) -> StoreProcess {
    let process = WeirProcess::store().data_dir(data_dir).spawn().await;
    StoreProcess {
        url: process.base.clone(),
        _process: process,
        _db: None,
    }
}

/// Starts `weir store --db <url of db>` and waits until it answers. Several
/// may share one database.
pub async fn spawn_pg_store_process(db: Arc<ScratchDb>) -> StoreProcess {
    let process = WeirProcess::store().args(&["--db", &db.url]).spawn().await;
    StoreProcess {
        url: process.base.clone(),
        _process: process,
        _db: Some(db),
    }
}

/// Whether PostgreSQL tests can run (prints why not; panics under CI=true).
pub async fn postgres_available() -> bool {
    weir::store::postgres::scratch::available().await
}

/// `weir_store_requests_total{method}` on a gateway with `--store-url`:
/// the requests it has sent to its store process for `method`.
pub async fn store_requests(node: &WeirProcess, method: &str) -> u64 {
    let text = node.get("/metrics").await.text().await.unwrap();
    let series = format!("weir_store_requests_total{{method=\"{method}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().unwrap())
}
