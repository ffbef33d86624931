//! [`RunQueue`]: the run queue's Redis commands. One stream
//! (`<prefix>{runs}`) with one consumer group (`workers`); an entry is one
//! [`Job`] as JSON in the field `job`. Beside it, short-lived markers per
//! run: `<prefix>{runs}:run:<id>:queued` (set with the XADD, in the same
//! script: the shared hash tag keeps both in one Redis Cluster slot),
//! `…:started` (a worker began executing it) and `…:cancel` (cancelled
//! before a worker took it).
//!
//! Reading blocks (XREADGROUP BLOCK), so it has a connection of its own: on
//! the shared multiplexed connection a blocked read would hold up every other
//! command behind it.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use redis::{
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamClaimOptions, StreamPendingCountReply,
        StreamReadOptions, StreamReadReply,
    },
    AsyncCommands, RedisResult,
};

use crate::{
    agent::Job,
    bus::{
        redis::{ConnOptions, RedisBusConfig, RedisConn, RedisSetupError},
        BusError,
    },
    domain::RunId,
};

/// The consumer group every worker reads in.
const GROUP: &str = "workers";
/// How long a blocked read waits before it returns empty (and the loop
/// checks for shutdown).
pub const BLOCK: Duration = Duration::from_secs(2);
/// How long the markers live: far longer than any run, short enough that
/// they do not pile up.
const MARKER_TTL_SECS: u64 = 24 * 3600;
/// XADD guarded by the run's `queued` marker: a retried enqueue adds nothing.
const ENQUEUE: &str = "if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then \
    redis.call('XADD', KEYS[1], '*', 'job', ARGV[1]) end return 0";

/// An entry taken from the stream: its id and its job (`None` when the entry
/// could not be read as a job; it is acknowledged and dropped).
pub struct Entry {
    pub id: String,
    pub job: Option<Job>,
}

/// The run queue on Redis.
pub struct RunQueue {
    /// Short commands (XADD, XACK, markers, claims).
    conn: RedisConn,
    /// Blocking reads only.
    reader: RedisConn,
    stream: String,
    prefix: String,
    timeout: Duration,
    /// The group is known to exist (made once by whoever queues or reads
    /// first, so entries queued before any worker started are kept for it).
    grouped: AtomicBool,
}

impl RunQueue {
    /// Builds the queue's connections (opened lazily: Redis may be down).
    /// Fails only on a setting that cannot work.
    pub fn new(cfg: &RedisBusConfig) -> Result<Self, RedisSetupError> {
        let target = cfg.client()?;
        let base = cfg.conn_options();
        let conn = target.connection(base);
        let reader = target.connection(ConnOptions {
            response_timeout: BLOCK + cfg.timeout,
            ..base
        });
        Ok(Self {
            conn: conn.map_err(RedisSetupError::Url)?,
            reader: reader.map_err(RedisSetupError::Url)?,
            stream: format!("{}{{runs}}", cfg.prefix),
            prefix: cfg.prefix.clone(),
            timeout: cfg.timeout,
            grouped: AtomicBool::new(false),
        })
    }

    fn marker(&self, run_id: &RunId, what: &str) -> String {
        format!("{}{{runs}}:run:{run_id}:{what}", self.prefix)
    }

    /// Runs `fut` within the command timeout; failures name Redis.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T, BusError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(BusError::Unavailable(format!("redis {what}: {e}"))),
            Err(_) => Err(BusError::Unavailable(format!("redis {what}: timed out"))),
        }
    }

    /// Creates the consumer group (and the stream) unless it exists.
    pub async fn ensure_group(&self) -> Result<(), BusError> {
        if self.grouped.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let made = tokio::time::timeout(
            self.timeout,
            c.xgroup_create_mkstream::<_, _, _, ()>(&self.stream, GROUP, "0"),
        )
        .await;
        match made {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.code() == Some("BUSYGROUP") => {}
            Ok(Err(e)) => return Err(BusError::Unavailable(format!("redis XGROUP: {e}"))),
            Err(_) => return Err(BusError::Unavailable("redis XGROUP: timed out".into())),
        }
        self.grouped.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Queues a run, once: the XADD happens only with a `queued` marker set
    /// in the same script, so it can be retried. It is retried once when the
    /// connection turns out to be dropped (the first command after Redis
    /// came back fails so, and reconnects): without the retry a run started
    /// right after a Redis restart got a 503 although Redis was up again.
    /// A run resumed after an approval is queued again, once per approval.
    pub async fn enqueue(&self, job: &Job) -> Result<(), BusError> {
        self.ensure_group().await?;
        let queued = match &job.resume {
            Some(approval) => format!("queued:{approval}"),
            None => "queued".to_owned(),
        };
        let body = serde_json::to_string(job).expect("a job serialises");
        let script = redis::Script::new(ENQUEUE);
        let mut tries = 0;
        loop {
            tries += 1;
            let mut c = self.conn.clone();
            let mut call = script.key(&self.stream);
            call.key(self.marker(&job.run.id, &queued))
                .arg(&body)
                .arg(MARKER_TTL_SECS);
            let sent = tokio::time::timeout(self.timeout, call.invoke_async::<()>(&mut c)).await;
            match sent {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) if tries < 2 && e.is_connection_dropped() => continue,
                Ok(Err(e)) => return Err(BusError::Unavailable(format!("redis XADD: {e}"))),
                Err(_) => return Err(BusError::Unavailable("redis XADD: timed out".into())),
            }
        }
    }

    /// Takes up to `count` new entries for `consumer`, waiting up to
    /// [`BLOCK`] for one.
    pub async fn read(&self, consumer: &str, count: usize) -> Result<Vec<Entry>, BusError> {
        let opts = StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(count)
            .block(BLOCK.as_millis() as usize);
        let mut c = self.reader.clone();
        let reply: RedisResult<Option<StreamReadReply>> =
            c.xread_options(&[&self.stream], &[">"], &opts).await;
        match reply {
            Ok(reply) => Ok(reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).map(entry).collect())
                .unwrap_or_default()),
            // The group is gone (Redis restarted without persistence, or
            // someone deleted the stream): make it again.
            Err(e) if e.code() == Some("NOGROUP") => {
                self.grouped.store(false, Ordering::Relaxed);
                self.ensure_group().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(BusError::Unavailable(format!("redis XREADGROUP: {e}"))),
        }
    }

    /// Acknowledges and deletes an entry: its run has ended.
    pub async fn finish(&self, id: &str) -> Result<(), BusError> {
        let mut pipe = redis::pipe();
        pipe.xack(&self.stream, GROUP, &[id])
            .ignore()
            .xdel(&self.stream, &[id])
            .ignore();
        let mut c = self.conn.clone();
        self.call("XACK", pipe.query_async::<()>(&mut c)).await
    }

    /// Renews `consumer`'s claim on `ids` (resets their idle time) and
    /// returns the ones it no longer owns: another worker reclaimed them.
    pub async fn renew(&self, consumer: &str, ids: &[String]) -> Result<Vec<String>, BusError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let mine: StreamPendingCountReply = self
            .call(
                "XPENDING",
                c.xpending_consumer_count(&self.stream, GROUP, "-", "+", 10_000, consumer),
            )
            .await?;
        let owned: std::collections::HashSet<&str> =
            mine.ids.iter().map(|p| p.id.as_str()).collect();
        let (keep, mut lost): (Vec<String>, Vec<String>) = ids
            .iter()
            .cloned()
            .partition(|id| owned.contains(id.as_str()));
        // Not mine may mean nobody's: Redis lost the entry (a restart
        // without persistence, a failover to a replica that never had it).
        // Then no other worker took the run over, and this one goes on.
        let mut orphans = Vec::new();
        for id in &lost {
            let anyone: StreamPendingCountReply = self
                .call("XPENDING", c.xpending_count(&self.stream, GROUP, id, id, 1))
                .await?;
            if anyone.ids.is_empty() {
                orphans.push(id.clone());
            }
        }
        lost.retain(|id| !orphans.contains(id));
        if !keep.is_empty() {
            let opts = StreamClaimOptions::default().with_justid();
            let _: redis::Value = self
                .call(
                    "XCLAIM",
                    c.xclaim_options(&self.stream, GROUP, consumer, 0, &keep, opts),
                )
                .await?;
        }
        Ok(lost)
    }

    /// Takes over up to `count` entries other workers left idle for longer
    /// than `min_idle` (they died, or lost Redis for that long).
    pub async fn reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, BusError> {
        let opts = StreamAutoClaimOptions::default().count(count);
        let mut c = self.conn.clone();
        let reply: StreamAutoClaimReply = self
            .call(
                "XAUTOCLAIM",
                c.xautoclaim_options(
                    &self.stream,
                    GROUP,
                    consumer,
                    min_idle.as_millis() as u64,
                    "0-0",
                    opts,
                ),
            )
            .await?;
        Ok(reply.claimed.into_iter().map(entry).collect())
    }

    /// Marks the run (or its leg after approval `resume`) started by
    /// `consumer`. False when it already was: a worker before this one
    /// began it. A resumed run is a new leg with its own marker.
    pub async fn mark_started(
        &self,
        run_id: &RunId,
        resume: Option<&str>,
        consumer: &str,
    ) -> Result<bool, BusError> {
        let what = match resume {
            Some(approval) => format!("started:{approval}"),
            None => "started".to_owned(),
        };
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::EX(MARKER_TTL_SECS));
        let mut c = self.conn.clone();
        let set: Option<String> = self
            .call(
                "SET",
                c.set_options(self.marker(run_id, &what), consumer, opts),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Takes the lock `<prefix><name>` for `hold` unless another process
    /// holds it (SET NX PX): for work one process at a time does.
    pub async fn take_lock(
        &self,
        name: &str,
        owner: &str,
        hold: std::time::Duration,
    ) -> Result<bool, BusError> {
        let ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1);
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ms));
        let mut c = self.conn.clone();
        let key = format!("{}{name}", self.prefix);
        let set: Option<String> = self.call("SET", c.set_options(key, owner, opts)).await?;
        Ok(set.is_some())
    }

    /// Marks the run cancelled, for a worker that has not taken it yet.
    pub async fn mark_cancelled(&self, run_id: &RunId) -> Result<(), BusError> {
        let mut c = self.conn.clone();
        self.call(
            "SET",
            c.set_ex::<_, _, ()>(self.marker(run_id, "cancel"), 1, MARKER_TTL_SECS),
        )
        .await
    }

    /// Whether the run was cancelled while queued.
    pub async fn is_cancelled(&self, run_id: &RunId) -> Result<bool, BusError> {
        let mut c = self.conn.clone();
        self.call("EXISTS", c.exists(self.marker(run_id, "cancel")))
            .await
    }
}

fn entry(id: redis::streams::StreamId) -> Entry {
    let job = id
        .get::<String>("job")
        .and_then(|body| serde_json::from_str(&body).ok());
    Entry { id: id.id, job }
}
