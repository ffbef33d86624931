//! Tests of the internal store: the conformance suite against the SQLite
//! store, the PostgreSQL store and the remote client over real HTTP, plus
//! what only one side can show (files on disk, tokens, shutdown).

#[path = "activity.rs"]
mod activity;
#[path = "approvals.rs"]
mod approvals;
#[path = "audit.rs"]
mod audit;
#[path = "conformance.rs"]
mod conformance;
#[path = "fixtures.rs"]
mod fixtures;
#[path = "isolation.rs"]
mod isolation;
#[path = "postgres_tests.rs"]
mod postgres_tests;
#[path = "server_tests.rs"]
mod server_tests;
#[path = "usage.rs"]
mod usage;
#[path = "webhooks.rs"]
mod webhooks;

use std::{sync::Arc, time::Duration};

use tokio::{sync::oneshot, task::JoinHandle};

use self::fixtures::{acct, agent_with_activity, event, new_agent};
use crate::store::{remote::RemoteStore, server::StoreServer, sqlite::SqliteStore, Store};

/// A store router served on 127.0.0.1:0 until [`Served::stop`].
pub(super) struct Served {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Served {
    /// Triggers graceful shutdown and waits (bounded) for the server to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        ended
            .expect("server stops within 5 s")
            .expect("join")
            .expect("serve");
    }
}

pub(super) async fn serve(store: Arc<dyn Store>, token: &str) -> Served {
    let listen = "127.0.0.1:0".parse().expect("addr");
    let server = StoreServer::bind_with(store, token.to_owned(), listen)
        .await
        .expect("bind");
    let url = format!("http://{}", server.local_addr());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Served {
        url,
        stop: Some(tx),
        task,
    }
}

pub(super) fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir).expect("open store")
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::conformance(&open(dir.path())).await;
}

#[tokio::test]
async fn sqlite_store_keeps_webhooks() {
    let dir = tempfile::tempdir().expect("tempdir");
    webhooks::webhooks(&open(dir.path())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    webhooks::pruning_and_gone(&open(dir.path())).await;
}

#[tokio::test]
async fn remote_store_conforms_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve(Arc::new(open(dir.path())), "tok-en").await;
    let remote =
        RemoteStore::new(&format!("{}/", served.url), Some("tok-en".into())).expect("client");
    conformance::conformance(&remote).await;
    served.stop().await;
}

#[tokio::test]
async fn data_survives_reopen_and_migrations_run_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = acct();
    let (agent, key) = {
        let store = open(dir.path());
        let agent = store
            .create_agent(&a, new_agent("durable"))
            .await
            .expect("agent");
        let minted = crate::keys::mint(&a, "k", vec!["*".into()], 60, None);
        let key = store.create_key(minted.new_key).await.expect("key");
        store
            .append_events(&a, vec![event(agent.id.as_str(), 7, "run-1", "sess-1")])
            .await
            .expect("ev");
        (agent, key)
    };
    let store = open(dir.path());
    assert_eq!(
        store.get_agent(&a, agent.id.as_str()).await,
        Ok(agent.clone())
    );
    assert_eq!(store.get_key(key.id.as_str()).await, Ok(key));
    assert_eq!(store.last_event_seq(&a, agent.id.as_str()).await, Ok(7));
    drop(store);
    let store = open(dir.path());
    let conn = rusqlite::Connection::open(store.path()).expect("raw open");
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("versions");
    let all: Vec<i64> = crate::store::migrate::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(
        versions, all,
        "each migration recorded once across three opens"
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal");
}

/// Rows written straight into a data dir: account `acct-{name}` and its
/// echo agent `agent-{name}` (the parents a raw run row needs).
fn insert_account_and_agent(conn: &rusqlite::Connection, name: &str) {
    conn.execute(
        "INSERT INTO accounts (id, created_at) VALUES (?1, 'x')",
        [format!("acct-{name}")],
    )
    .expect("account");
    conn.execute(
        "INSERT INTO agents (id, account_id, name, model, system, tools, tags, metadata,
                             status, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'echo', '', '[]', '[]', '{}', 'running', 'x', 'x')",
        [
            format!("agent-{name}"),
            format!("acct-{name}"),
            name.to_owned(),
        ],
    )
    .expect("agent");
}

/// A data dir written before migration 10 (run error codes) opens, and its
/// runs read back with `error_code: None`; a run failed afterwards keeps one.
#[tokio::test]
async fn runs_stored_before_error_codes_read_as_none() {
    use crate::store::migrate::{self, Dialect};
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut conn = rusqlite::Connection::open(dir.path().join("weir.db")).expect("raw open");
        let tx = conn.transaction().expect("tx");
        tx.execute_batch(&migrate::ledger_ddl(Dialect::Sqlite))
            .expect("ledger");
        for step in migrate::pending(Dialect::Sqlite, 0)
            .expect("from scratch")
            .into_iter()
            .filter(|m| m.version < 10)
        {
            tx.execute_batch(&step.sql).expect("old migration");
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, 'x')",
                rusqlite::params![step.version, step.name],
            )
            .expect("record");
        }
        insert_account_and_agent(&tx, "old");
        tx.execute_batch(
            "INSERT INTO runs (id, account_id, agent_id, session_id, status, stop_reason, error,
                               created_at, updated_at)
             VALUES ('run-old', 'acct-old', 'agent-old', 'sess-old', 'failed', 'error', 'boom',
                     'x', 'x');",
        )
        .expect("old rows");
        tx.commit().expect("commit");
    }
    let store = open(dir.path());
    let old = store.get_run("acct-old", "run-old").await.expect("old run");
    assert_eq!(
        (old.status, old.error.as_deref(), old.error_code),
        (crate::domain::RunStatus::Failed, Some("boom"), None)
    );
    let mut again = old.clone();
    again.error_code = Some(crate::domain::ErrorCode::WorkerLost);
    let again = store.finish_run("acct-old", again).await.expect("finish");
    assert_eq!(again.error_code, Some(crate::domain::ErrorCode::WorkerLost));
}

/// A code this build does not know (a newer gateway's, during a rolling
/// upgrade on one store) reads as `None` instead of failing the run's read,
/// from the database and from JSON (the remote store's answers).
#[tokio::test]
async fn an_unknown_error_code_reads_as_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    drop(store);
    {
        let conn = rusqlite::Connection::open(dir.path().join("weir.db")).expect("raw open");
        insert_account_and_agent(&conn, "new");
        conn.execute_batch(
            "INSERT INTO runs (id, account_id, agent_id, session_id, status, stop_reason, error,
                               created_at, updated_at, error_code)
             VALUES ('run-new', 'acct-new', 'agent-new', 'sess-new', 'failed', 'error', 'later',
                     'x', 'x', 'a_code_from_the_future');",
        )
        .expect("a newer gateway's row");
    }
    let store = open(dir.path());
    let run = store.get_run("acct-new", "run-new").await.expect("read");
    assert_eq!(
        (run.error.as_deref(), run.error_code),
        (Some("later"), None)
    );
    let mut json = serde_json::to_value(&run).expect("json");
    json["error_code"] = "a_code_from_the_future".into();
    let back: crate::store::Run = serde_json::from_value(json).expect("lenient");
    assert_eq!(back.error_code, None);
}

#[tokio::test]
async fn sqlite_files_hold_no_key_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let minted = crate::keys::mint("acct-s", "label", vec!["*".into()], 60, None);
    let hash = minted.new_key.hash.clone();
    let tail = minted
        .secret
        .rsplit('_')
        .next()
        .expect("secret tail")
        .to_owned();
    {
        let store = open(dir.path());
        store.create_key(minted.new_key).await.expect("key");
    }
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("read dir") {
        bytes.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
    }
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        contains(&hash),
        "the hash is stored (so we read the right files)"
    );
    assert!(!contains(&minted.secret), "the secret is not stored");
    assert!(tail.len() >= 16 && !contains(&tail), "nor its random part");
}

/// The cascade really removes rows, not just hides them behind the agent.
#[tokio::test]
async fn deleting_an_agent_removes_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let a = acct();
    let (agent, _, _) = agent_with_activity(&store, &a, "gone").await;
    let conn = rusqlite::Connection::open(store.path()).expect("raw open");
    let count = |table: &str| -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE agent_id = ?1");
        conn.query_row(&sql, [agent.id.as_str()], |r| r.get(0))
            .expect("count")
    };
    let tables = ["sessions", "runs", "events", "logs"];
    assert_eq!(tables.map(count), [1, 1, 1, 1]);
    store
        .delete_agent(&a, agent.id.as_str())
        .await
        .expect("delete");
    assert_eq!(tables.map(count), [0, 0, 0, 0]);
}

/// Many readers and writers at once on a multi-threaded runtime: nothing
/// fails with SQLITE_BUSY and every write is visible afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_and_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::concurrent_reads_and_writes(Arc::new(open(dir.path())), 200).await;
}

/// Rough point-read throughput, embedded and over HTTP; prints req/s.
/// Run with `cargo test --release --lib get_agent_throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn get_agent_throughput() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: Arc<dyn Store> = Arc::new(open(dir.path()));
    let a = acct();
    let agent = sqlite
        .create_agent(&a, new_agent("bench"))
        .await
        .expect("agent");
    let served = serve(sqlite.clone(), "t").await;
    let remote: Arc<dyn Store> =
        Arc::new(RemoteStore::new(&served.url, Some("t".into())).expect("client"));
    for (name, store) in [("sqlite", sqlite), ("remote", remote)] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (store, a, id) = (store.clone(), a.clone(), agent.id.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while tokio::time::Instant::now() < deadline {
                    store.get_agent(&a, id.as_str()).await.expect("get");
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("task");
        }
        println!("{name}: {} get_agent/s", total / 3);
    }
    served.stop().await;
}

/// A key's `models`: exact names, the `upstream/` prefix ignored on both
/// sides, `None` any model, an empty list none.
#[test]
fn model_lists_ignore_the_upstream_prefix() {
    let list = ["upstream/gpt-4o".to_owned(), "fast".to_owned()];
    let table = [
        (Some(&list[..]), "upstream/gpt-4o", true),
        (Some(&list[..]), "gpt-4o", true),
        (Some(&list[..]), "upstream/fast", true),
        (Some(&list[..]), "fast", true),
        (Some(&list[..]), "upstream/gpt-4o-mini", false),
        (Some(&list[..]), "GPT-4o", false),
        (Some(&list[..]), "echo", false),
        (Some(&[][..]), "echo", false),
        (None, "anything", true),
    ];
    for (models, name, allowed) in table {
        assert_eq!(
            crate::store::model_allowed(models, name),
            allowed,
            "{models:?} {name}"
        );
    }
}
