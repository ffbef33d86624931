//! The PostgreSQL store: the shared conformance suite (directly and over
//! HTTP), plus what only a shared database can show: migrations racing,
//! two stores on one database, concurrent patches, rows really cascaded.
//!
//! Each test makes its own database ([`ScratchDb`]); without a server they
//! skip outside CI (see `postgres::scratch`).

use std::sync::Arc;

use serde_json::json;

use super::fixtures::{acct, agent_with_activity, event, new_agent};
use super::{conformance, serve};
use crate::store::{
    postgres::{scratch::ScratchDb, PostgresStore},
    remote::RemoteStore,
    AgentPatch, Store, StoreError,
};

async fn connect(db: &ScratchDb) -> PostgresStore {
    PostgresStore::connect(&db.url).await.expect("connect")
}

/// A plain client on the scratch database, for looking under the store.
async fn raw(db: &ScratchDb) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("raw connect");
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    conformance::conformance(&connect(&db).await).await;
}

#[tokio::test]
async fn remote_store_conforms_over_http_on_postgres() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    let served = serve(Arc::new(connect(&db).await), "tok").await;
    let remote = RemoteStore::new(&served.url, Some("tok".into())).expect("client");
    conformance::conformance(&remote).await;
    served.stop().await;
}

#[tokio::test]
async fn postgres_store_keeps_webhooks() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    super::webhooks::webhooks(&connect(&db).await).await;
    super::webhooks::pruning_and_gone(&connect(&db).await).await;
}

/// Two gateways claiming from one queue at once never get the same
/// delivery, and between them get every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_claimers_never_share_a_delivery() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    let (one, two) = (connect(&db).await, connect(&db).await);
    let account = super::fixtures::acct();
    let hook = crate::store::WebhookRecord {
        id: crate::util::new_id("wh"),
        account_id: account.clone(),
        url: "https://hooks.example.com/x".into(),
        events: vec!["agent.created".into()],
        agent_id: None,
        description: String::new(),
        sealed_secret: "v1:x".into(),
        created_at: crate::util::now(),
        updated_at: crate::util::now(),
        status: "enabled".into(),
    };
    one.create_webhook(hook).await.unwrap();
    for _ in 0..60 {
        let e = super::webhooks::event(&account, "agent.created", None, 1_000);
        one.enqueue_webhook_events(vec![e]).await.unwrap();
    }
    let claim = |store: PostgresStore, who: &'static str| async move {
        let mut got = Vec::new();
        loop {
            let batch = store
                .claim_webhook_deliveries(who, 2_000, 60_000, 7)
                .await
                .unwrap();
            if batch.is_empty() {
                return got;
            }
            got.extend(batch.into_iter().map(|d| d.delivery.id));
        }
    };
    let (a, b) = tokio::join!(tokio::spawn(claim(one, "a")), tokio::spawn(claim(two, "b")));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), a.len() + b.len(), "a delivery was claimed twice");
    assert_eq!(all.len(), 60);
}

/// Several stores starting at once on an empty database: the advisory lock
/// lets one migrate and the rest find the work done; none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_migrate_once() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    let starts = (0..6).map(|_| PostgresStore::connect(&db.url));
    let stores = futures::future::join_all(starts).await;
    for s in &stores {
        assert!(s.is_ok(), "{:?}", s.as_ref().err());
    }
    let rows = raw(&db)
        .await
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("versions");
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let all: Vec<(i64, String)> = crate::store::migrate::MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name.to_owned()))
        .collect();
    assert_eq!(got, all);
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    drop(connect(&db).await);
    raw(&db)
        .await
        .execute(
            "INSERT INTO schema_migrations VALUES (999, 'future', 'x')",
            &[],
        )
        .await
        .expect("insert");
    match PostgresStore::connect(&db.url).await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("999"), "{m}"),
        other => panic!("expected refusal, got {:?}", other.map(|_| ())),
    }
}

/// Two stores (two pools, as two `weir store` processes would have) on one
/// database: what one writes the other reads, and an event `seq` can be
/// stored once only, whichever store both writers go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_share_one_database() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    let (one, two) = (connect(&db).await, connect(&db).await);
    let a = acct();
    let agent = one
        .create_agent(&a, new_agent("shared"))
        .await
        .expect("agent");
    assert_eq!(
        two.get_agent(&a, agent.id.as_str()).await,
        Ok(agent.clone())
    );
    let patch = AgentPatch {
        name: Some("renamed".into()),
        ..AgentPatch::default()
    };
    two.update_agent(&a, agent.id.as_str(), patch)
        .await
        .expect("patch");
    assert_eq!(
        one.get_agent(&a, agent.id.as_str())
            .await
            .expect("get")
            .name,
        "renamed"
    );

    let mut wins = 0;
    for seq in 1..=20 {
        let ev = |_| vec![event(agent.id.as_str(), seq, "run-1", "sess-1")];
        let (x, y) = tokio::join!(one.append_events(&a, ev(1)), two.append_events(&a, ev(2)));
        for r in [x, y] {
            match r {
                Ok(()) => wins += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    }
    assert_eq!(wins, 20, "each seq stored exactly once");
    assert_eq!(two.last_event_seq(&a, agent.id.as_str()).await, Ok(20));
    one.delete_agent(&a, agent.id.as_str())
        .await
        .expect("delete");
    assert!(matches!(
        two.get_agent(&a, agent.id.as_str()).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Patches of different fields racing from two stores never undo each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_keep_both_fields() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    let (one, two) = (Arc::new(connect(&db).await), Arc::new(connect(&db).await));
    let a = acct();
    let agent = one.create_agent(&a, new_agent("p")).await.expect("agent");
    let mut tasks = Vec::new();
    for (i, store) in [one.clone(), two.clone()].into_iter().enumerate() {
        let (a, id) = (a.clone(), agent.id.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..30 {
                let patch = match i {
                    0 => AgentPatch {
                        name: Some(format!("name-{n}")),
                        ..AgentPatch::default()
                    },
                    _ => AgentPatch {
                        metadata: Some(json!({"n": n})),
                        ..AgentPatch::default()
                    },
                };
                store
                    .update_agent(&a, id.as_str(), patch)
                    .await
                    .expect("patch");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let got = two.get_agent(&a, agent.id.as_str()).await.expect("get");
    assert_eq!(
        (got.name.as_str(), got.metadata),
        ("name-29", json!({"n": 29}))
    );
}

/// The cascade really removes rows, not just hides them behind the agent.
#[tokio::test]
async fn deleting_an_agent_removes_its_rows() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    let store = connect(&db).await;
    let a = acct();
    let (agent, _, _) = agent_with_activity(&store, &a, "gone").await;
    let client = raw(&db).await;
    let count = |table: &'static str| {
        let (client, id) = (&client, agent.id.clone());
        async move {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE agent_id = $1");
            let n: i64 = client.query_one(&sql, &[&id]).await.expect("count").get(0);
            n
        }
    };
    let tables = ["sessions", "runs", "events", "logs"];
    let before = futures::future::join_all(tables.map(count)).await;
    assert_eq!(before, [1, 1, 1, 1]);
    store
        .delete_agent(&a, agent.id.as_str())
        .await
        .expect("delete");
    let after = futures::future::join_all(tables.map(count)).await;
    assert_eq!(after, [0, 0, 0, 0]);
}

/// Many readers and writers at once through one pool: every write lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_and_writes() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    conformance::concurrent_reads_and_writes(Arc::new(connect(&db).await), 50).await;
}

/// What SQLite stores and PostgreSQL TEXT cannot (a NUL character) is a
/// clean `Invalid`, not a 503.
#[tokio::test]
async fn nul_characters_are_invalid() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    let store = connect(&db).await;
    let got = store.create_agent(&acct(), new_agent("a\0b")).await;
    assert!(matches!(got, Err(StoreError::Invalid(_))), "{got:?}");
}

/// Bad URLs are `Invalid`; a server that is not there fails fast as
/// `Unavailable`, and `open_local` refuses anything but postgres URLs.
#[tokio::test]
async fn bad_or_unreachable_databases_fail_cleanly() {
    assert!(matches!(
        PostgresStore::connect("postgres://u@h:notaport/db").await,
        Err(StoreError::Invalid(_))
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let started = std::time::Instant::now();
    let down = PostgresStore::connect(&format!("postgres://postgres@127.0.0.1:{port}/x")).await;
    match down {
        Err(StoreError::Unavailable(m)) => {
            assert!(m.contains(&format!("127.0.0.1:{port}/x")), "{m}");
            assert_eq!(m.matches("error connecting to server").count(), 1, "{m}");
            assert!(
                m.to_lowercase().contains("refused"),
                "the cause is named: {m}"
            );
        }
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let dir = tempfile::tempdir().expect("tempdir");
    let err = crate::store::open_local(dir.path(), Some("mysql://x/y"))
        .await
        .map(|_| ())
        .expect_err("refused");
    assert!(format!("{err:#}").contains("postgres://"), "{err:#}");
}
