//! The sharded pub/sub link of a Redis Cluster (`--redis-cluster`).
//!
//! One RESP3 cluster connection (redis-rs) carries every SSUBSCRIBE: it
//! holds one connection per master, so each shard with local subscribers
//! has exactly one subscriber connection, and each SSUBSCRIBE names one
//! channel (one slot). Its pushes are handled as they arrive ([`on_push`]):
//! a sharded message goes straight to the channel's ring, as in [`super::link`].
//!
//! A channel's subscription can end without us asking: its slot moved to
//! another master (the old one sends SUNSUBSCRIBE), or its master died and a
//! replica took over (the connection drops, PINGs to the masters fail).
//! Such a channel is *recovering* ([`Shared::recovering`]): its live
//! messages are held, the keeper SSUBSCRIBEs it again (redis-rs routes it to
//! the slot's current owner, following MOVED), catches it up from the
//! stream history exactly as the single-Redis link does after a reconnect
//! (replay, reseed a counter that is behind, `gap` for what Redis lost),
//! then releases the held messages (duplicates dropped by seq). The link
//! counts as down, so `/readyz` answers 503, while any channel recovers or
//! a master does not answer.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use redis::{cluster_async::ClusterConnection, PushInfo, PushKind, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    cluster_target::ClusterTarget,
    link::{catch_up_one, deliver_control},
    registry::Registry,
    scripts::split_message,
    Core,
};

/// How often the keeper retries what failed and checks the masters.
const TICK: Duration = Duration::from_millis(250);
/// Live messages held per recovering channel (beyond: dropped, and the
/// catch-up announces them as a gap if the history lost them too).
const HOLD_MAX: usize = 4096;
/// The generation every confirmed subscription carries: the cluster
/// connection reconnects by itself, there is no new link to count.
const GENERATION: u64 = 1;

/// Live messages (seq, event JSON) held for a recovering channel.
type Held = Vec<(u64, Vec<u8>)>;

/// What the push handler and the keeper share.
struct Shared {
    core: Arc<Core>,
    reg: Arc<Registry>,
    /// Channels to SSUBSCRIBE again and catch up, with their held messages.
    recovering: Mutex<HashMap<String, Held>>,
    /// `recovering.len()`, read without the lock on every message.
    n_recovering: AtomicUsize,
    /// Channels this link has SSUBSCRIBEd.
    subscribed: Mutex<HashSet<String>>,
    /// Wakes the keeper (a subscription was lost).
    wake: Notify,
}

impl Shared {
    /// Marks `names` as recovering (their subscriptions are lost).
    fn lose(&self, names: impl IntoIterator<Item = String>) {
        let mut rec = self.recovering.lock();
        let mut subscribed = self.subscribed.lock();
        for name in names {
            subscribed.remove(&name);
            rec.entry(name).or_default();
        }
        self.n_recovering.store(rec.len(), Ordering::Release);
        drop((rec, subscribed));
        self.reg.set_link(GENERATION, false);
        self.wake.notify_one();
    }
}

/// Keeps the sharded subscriptions until `shutdown`.
pub(super) async fn run(
    core: Arc<Core>,
    reg: Arc<Registry>,
    target: Arc<ClusterTarget>,
    shutdown: CancellationToken,
) {
    let sh = Arc::new(Shared {
        core,
        reg,
        recovering: Mutex::new(HashMap::new()),
        n_recovering: AtomicUsize::new(0),
        subscribed: Mutex::new(HashSet::new()),
        wake: Notify::new(),
    });
    let options = super::target::ConnOptions {
        connect_timeout: sh.core.tuning.connect_timeout,
        response_timeout: sh.core.tuning.timeout,
        retries: 0,
        max_delay: sh.core.tuning.reconnect_max,
    };
    let mut pause = Duration::from_millis(100);
    let mut conn = loop {
        let pushes = {
            let sh = sh.clone();
            move |p: PushInfo| -> Result<(), ()> {
                on_push(&sh, p);
                Ok(())
            }
        };
        let open = tokio::time::timeout(
            sh.core.tuning.connect_timeout * 2,
            target.pubsub(options, pushes),
        );
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = open => match r {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot reach the redis cluster for pub/sub; retrying"),
                Err(_) => tracing::warn!("redis cluster pub/sub connect timed out; retrying"),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(sh.core.tuning.reconnect_max);
    };
    tracing::info!("redis cluster sharded pub/sub connected");
    keep(&sh, &mut conn, &shutdown).await;
}

/// Masters' checks that must fail in a row before every channel is taken
/// as lost.
const MISSES_TO_LOSE: u32 = 2;

/// Reconciles, recovers and checks the masters until `shutdown`.
async fn keep(sh: &Shared, conn: &mut ClusterConnection, shutdown: &CancellationToken) {
    let mut control = false;
    let mut was_healthy = true;
    // Masters' checks failed in a row: one slow answer on a loaded machine
    // is not a lost master (it made new streams fail "bus unavailable");
    // a dead one also drops its connection, which `on_push` acts on at once.
    let mut misses = 0u32;
    let mut tick = tokio::time::interval(TICK);
    loop {
        let ticked = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sh.reg.changed.notified() => false,
            _ = sh.wake.notified() => false,
            _ = tick.tick() => true,
        };
        let t = sh.core.tuning.timeout;
        if !control {
            // Plain pub/sub is cluster-wide: any node will do; redis-rs
            // subscribes again after a reconnect.
            let control_channel = sh.core.names.control().to_owned();
            control = within(t, conn.subscribe(control_channel)).await.is_ok();
        }
        reconcile(sh, conn).await;
        recover(sh, conn).await;
        // Checked on the tick only: a wake-up stored while a slow check ran
        // would otherwise count a second miss milliseconds after the first.
        if ticked {
            misses = match masters_answer(sh).await {
                true => 0,
                false => misses + 1,
            };
        }
        let healthy = control && misses < MISSES_TO_LOSE;
        if was_healthy && !healthy {
            // A master that does not answer may have taken subscriptions
            // with it: every channel is SSUBSCRIBEd again (a no-op where it
            // still is) and caught up; those of the lost master succeed
            // once its replica is promoted.
            let all: Vec<String> = sh.subscribed.lock().iter().cloned().collect();
            sh.lose(all);
        }
        was_healthy = healthy;
        let up = healthy && sh.n_recovering.load(Ordering::Acquire) == 0;
        if sh.reg.link().up != up {
            tracing::info!(up, "redis cluster pub/sub link");
            sh.reg.set_link(GENERATION, up);
        }
    }
}

/// Whether every master answers PING, noting a changed master (failover)
/// so counters are reseeded before their next publish.
async fn masters_answer(sh: &Shared) -> bool {
    sh.core.note_server().await.is_ok()
}

async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// SSUBSCRIBEs channels that gained local subscribers, SUNSUBSCRIBEs those
/// that lost them; one channel (one slot) per command.
async fn reconcile(sh: &Shared, conn: &mut ClusterConnection) {
    let wanted = sh.reg.wanted();
    let names: HashSet<&str> = wanted.iter().map(|l| l.name.as_str()).collect();
    let (add, gone): (Vec<_>, Vec<_>) = {
        // Lock order everywhere: `recovering`, then `subscribed`.
        let rec = sh.recovering.lock();
        let subscribed = sh.subscribed.lock();
        let add = wanted
            .iter()
            .filter(|l| !subscribed.contains(&l.name) && !rec.contains_key(&l.name))
            .cloned()
            .collect();
        let gone = subscribed
            .iter()
            .chain(rec.keys())
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        (add, gone)
    };
    let t = sh.core.tuning.timeout;
    for local in add {
        let channel = sh.core.names.events(&local.name);
        match within(t, conn.ssubscribe(channel)).await {
            Ok(()) => {
                sh.subscribed.lock().insert(local.name.clone());
                local.confirmed.send_replace(GENERATION);
            }
            Err(e) => {
                tracing::debug!(channel = %local.name, error = e, "SSUBSCRIBE failed; retrying")
            }
        }
    }
    for name in gone {
        {
            let mut rec = sh.recovering.lock();
            rec.remove(&name);
            sh.n_recovering.store(rec.len(), Ordering::Release);
        }
        sh.subscribed.lock().remove(&name);
        let channel = sh.core.names.events(&name);
        if let Err(e) = within(t, conn.sunsubscribe(channel)).await {
            tracing::debug!(channel = %name, error = e, "SUNSUBSCRIBE failed");
        }
    }
}

/// SSUBSCRIBEs each recovering channel again, catches it up from the
/// history and releases what was held meanwhile. A channel whose shard is
/// not back yet stays recovering for the next pass.
async fn recover(sh: &Shared, conn: &mut ClusterConnection) {
    let names: Vec<String> = sh.recovering.lock().keys().cloned().collect();
    let t = sh.core.tuning.timeout;
    for name in names {
        let Some(local) = sh.reg.get(&name) else {
            continue;
        };
        let channel = sh.core.names.events(&name);
        if let Err(e) = within(t, conn.ssubscribe(channel)).await {
            tracing::debug!(channel = %name, error = e, "SSUBSCRIBE again failed; retrying");
            continue;
        }
        if let Err(e) = catch_up_one(&sh.core, &local).await {
            tracing::debug!(channel = %name, error = %e, "catch-up failed; retrying");
            continue;
        }
        let mut rec = sh.recovering.lock();
        if let Some(held) = rec.remove(&name) {
            for (seq, json) in held {
                local.push(seq, &json);
            }
        }
        sh.n_recovering.store(rec.len(), Ordering::Release);
        sh.subscribed.lock().insert(name.clone());
        drop(rec);
        local.confirmed.send_replace(GENERATION);
        tracing::info!(channel = %name, "redis cluster: channel subscribed again and caught up");
    }
}

/// Handles one push of the cluster connection, in its reader task: never
/// blocks, never awaits.
fn on_push(sh: &Shared, p: PushInfo) {
    match p.kind {
        PushKind::SMessage => {
            let (Some(channel), Some(payload)) = (bytes(p.data.first()), bytes(p.data.get(1)))
            else {
                return;
            };
            let Some(name) = std::str::from_utf8(channel)
                .ok()
                .and_then(|c| sh.core.names.event_channel(c))
            else {
                return;
            };
            let Some((seq, json)) = split_message(payload) else {
                tracing::warn!(channel = name, "malformed event message on redis; skipped");
                return;
            };
            if sh.n_recovering.load(Ordering::Acquire) > 0 {
                let mut rec = sh.recovering.lock();
                if let Some(held) = rec.get_mut(name) {
                    if held.len() < HOLD_MAX {
                        held.push((seq, json.to_vec()));
                    }
                    return;
                }
            }
            if let Some(local) = sh.reg.get(name) {
                local.push(seq, json);
            }
        }
        PushKind::Message => {
            let is_control = bytes(p.data.first()) == Some(sh.core.names.control().as_bytes());
            if let (true, Some(payload)) = (is_control, bytes(p.data.get(1))) {
                deliver_control(&sh.reg, payload);
            }
        }
        PushKind::SUnsubscribe => {
            // Ours (the last subscriber left) or the server's (the slot
            // moved): only a channel still wanted and subscribed is lost.
            let Some(name) = bytes(p.data.first())
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| sh.core.names.event_channel(c))
            else {
                return;
            };
            if sh.reg.get(name).is_some() && sh.subscribed.lock().contains(name) {
                tracing::info!(
                    channel = name,
                    "redis cluster unsubscribed a channel (slot moved); subscribing again"
                );
                sh.lose([name.to_owned()]);
            }
        }
        PushKind::Disconnection => {
            tracing::warn!("redis cluster: a node connection dropped; resubscribing");
            let all: Vec<String> = sh.subscribed.lock().iter().cloned().collect();
            sh.lose(all);
        }
        _ => {}
    }
}

fn bytes(v: Option<&Value>) -> Option<&[u8]> {
    match v? {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}
