//! The usage writer: one task that, every [`FLUSH`], takes the meter's
//! sums and adds them to the store's rows in one call.
//!
//! A failed write puts the sums back into the meter
//! ([`super::UsageMeter::put_back`]): they are retried with the next
//! flush, together with what was metered since, so nothing is lost while
//! the store is down (up to [`super::MAX_PENDING`] keys). On
//! [`UsageWriter::close`] (after the drain, when nothing meters any more)
//! it writes what is left and ends.
//!
//! Delivery is at least once: a write that failed after the store applied
//! it (an answer lost to a timeout) is put back and written again, so an
//! outage can count some usage twice, never lose it silently.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{UsageCounts, UsageKey, UsageMeter};
use crate::store::{Store, UsageRow};

/// How often the sums are written: usage shows in `GET /v1/usage` at most
/// this long after it was metered (protocol/limits.md).
pub const FLUSH: Duration = Duration::from_secs(1);

/// Tries of the last write on close before the sums are given up.
const LAST_TRIES: u32 = 3;

/// How long [`UsageWriter::close`] waits for the last write.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The running writer; [`UsageWriter::close`] ends it.
pub struct UsageWriter {
    closed: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts the writer of `meter`'s sums into `store`.
pub fn start(meter: Arc<UsageMeter>, store: Arc<dyn Store>) -> UsageWriter {
    let closed = CancellationToken::new();
    let task = tokio::spawn(run(meter, store, closed.clone()));
    UsageWriter { closed, task }
}

impl UsageWriter {
    /// Writes what is still pending and waits (a bounded time) for it.
    pub async fn close(self) {
        self.closed.cancel();
        if tokio::time::timeout(CLOSE_WAIT, self.task).await.is_err() {
            tracing::error!("usage writer did not finish its last write in time; sums lost");
        }
    }
}

async fn run(meter: Arc<UsageMeter>, store: Arc<dyn Store>, closed: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = closed.cancelled() => true,
        };
        if !last {
            flush(&meter, store.as_ref()).await;
            continue;
        }
        for attempt in 1..=LAST_TRIES {
            if flush(&meter, store.as_ref()).await {
                return;
            }
            if attempt < LAST_TRIES {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let lost = meter.take().len();
        tracing::error!(keys = lost, "usage lost on shutdown: the store refused it");
        return;
    }
}

/// Takes the pending sums and writes them; on failure puts them back.
/// Whether the meter's sums up to now are stored.
async fn flush(meter: &UsageMeter, store: &dyn Store) -> bool {
    let taken = meter.take();
    if taken.is_empty() {
        return true;
    }
    let rows = taken.iter().map(row).collect();
    match store.add_usage(rows).await {
        Ok(()) => true,
        Err(e) => {
            let keys = taken.len();
            let dropped = meter.put_back(taken);
            if dropped > 0 {
                tracing::error!(error = %e, dropped, "usage dropped: the store is down and too many sums are pending");
            } else {
                tracing::warn!(error = %e, keys, "writing usage failed; kept for the next flush");
            }
            false
        }
    }
}

fn row((k, c): &(UsageKey, UsageCounts)) -> UsageRow {
    UsageRow {
        account_id: k.account.to_string(),
        key_id: k.key_id.to_string(),
        day: k.day.to_string(),
        model: k.model.to_string(),
        agent_id: k.agent_id.to_string(),
        provider: k.provider.to_string(),
        requests: c.requests,
        runs: c.runs,
        prompt_tokens: c.prompt_tokens,
        completion_tokens: c.completion_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        remote::RemoteStore, server::StoreServer, sqlite::SqliteStore, ListParams, UsageGroup,
        UsageQuery,
    };

    fn requests(n: i64) -> UsageCounts {
        UsageCounts {
            requests: n,
            ..Default::default()
        }
    }

    async fn requests_of(store: &dyn Store, key: &str) -> i64 {
        let day = super::super::today().to_string();
        let q = UsageQuery {
            from: day.clone(),
            to: day,
            group_by: UsageGroup::Key,
        };
        let page = store
            .list_usage("acct", q, ListParams::default())
            .await
            .expect("list");
        page.data
            .iter()
            .filter(|l| l.value.as_deref() == Some(key))
            .map(|l| l.requests)
            .sum()
    }

    /// The store is down for the first flushes (nobody listens at its
    /// address), then comes up there: every request metered meanwhile
    /// arrives, once; the last ones are written by `close`.
    #[tokio::test]
    async fn sums_wait_out_a_store_outage_and_the_last_are_written_on_close() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let remote: Arc<dyn Store> = Arc::new(
            RemoteStore::new(&format!("http://{addr}"), Some("tok".into())).expect("client"),
        );
        let meter = Arc::new(UsageMeter::default());
        let writer = start(meter.clone(), remote.clone());
        meter.count_request("acct", "key-1");
        meter.count_request("acct", "key-1");
        tokio::time::sleep(FLUSH * 2 + Duration::from_millis(300)).await;
        // The sums are in the meter, or for a moment in a failing write.
        let mut pending = 0;
        for _ in 0..100 {
            let taken = meter.take();
            pending = taken.iter().map(|(_, c)| c.requests).sum::<i64>();
            meter.put_back(taken);
            if pending == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pending, 2, "kept while the store is down");

        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("sqlite"));
        let server = StoreServer::bind_with(sqlite.clone(), "tok".into(), addr)
            .await
            .expect("bind the store where the writer looks");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        meter.add(
            &UsageKey {
                account: "acct".into(),
                key_id: "key-1".into(),
                day: super::super::today(),
                model: "".into(),
                agent_id: "".into(),
                provider: "".into(),
            },
            requests(3),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while requests_of(sqlite.as_ref(), "key-1").await != 5 {
            assert!(tokio::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        meter.count_request("acct", "key-2");
        writer.close().await;
        assert_eq!(
            requests_of(sqlite.as_ref(), "key-2").await,
            1,
            "written on close"
        );
        assert_eq!(requests_of(sqlite.as_ref(), "key-1").await, 5, "each once");
        let _ = stop.send(());
        let _ = served.await;
    }
}
