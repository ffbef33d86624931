//! The ONE pub/sub connection of a process, kept alive by [`run`].
//!
//! Per connection: SUBSCRIBE the control channel and every channel in the
//! [`Registry`], mark the link up, catch up (from the stream history) on what
//! each channel missed while the link was down, then read messages while
//! reconciling subscriptions with the registry and pinging the server. Any
//! failure drops the connection; [`run`] reconnects with capped exponential
//! backoff until shutdown, and the next connection restores every channel
//! that still has local subscribers. Messages are handed to the broadcast
//! rings as they arrive (never awaited on), so redis-rs' internal queue only
//! holds what arrives during a catch-up.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::StreamExt;
use redis::aio::{PubSub, PubSubSink};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    registry::{Local, Registry},
    scripts::split_message,
    Core,
};
use crate::bus::{BusError, Control};

/// How often an idle connection is checked with PING.
const PING_EVERY: Duration = Duration::from_secs(5);
/// First pause before reconnecting; doubles per failed attempt up to the cap.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Channels per SUBSCRIBE/UNSUBSCRIBE command.
const BATCH: usize = 512;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("the server closed the connection")]
    Closed,
}

/// Keeps the pub/sub connection until `shutdown`.
pub(super) async fn run(
    core: Arc<Core>,
    reg: Arc<Registry>,
    target: super::RedisTarget,
    shutdown: CancellationToken,
) {
    let mut generation = 0;
    let mut failures: u32 = 0;
    loop {
        // With Sentinel, every connection asks for the current master.
        let open = async { target.client().await?.get_async_pubsub().await };
        let connect = tokio::time::timeout(core.tuning.connect_timeout * 2, open);
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connect => r,
        };
        match connected {
            Ok(Ok(pubsub)) => {
                generation += 1;
                let since = Instant::now();
                let ended = serve(&core, &reg, pubsub, generation, &shutdown).await;
                reg.set_link(generation, false);
                if shutdown.is_cancelled() {
                    return;
                }
                if let Err(e) = ended {
                    tracing::warn!(error = %e, "redis pub/sub connection lost; reconnecting");
                }
                // A connection that served a while earns a quick retry; one
                // that fails at once keeps backing off (no busy loop).
                failures = if since.elapsed() > core.tuning.reconnect_max {
                    0
                } else {
                    failures + 1
                };
            }
            Ok(Err(e)) => {
                note_failure(failures, &e.to_string());
                failures += 1;
            }
            Err(_) => {
                note_failure(failures, "connect timed out");
                failures += 1;
            }
        }
        let pause = backoff(failures, core.tuning.reconnect_max);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

fn note_failure(failures: u32, error: &str) {
    // First failure and then every tenth: an outage must not flood the logs.
    if failures % 10 == 0 {
        tracing::warn!(
            error,
            attempts = failures + 1,
            "cannot reach redis for pub/sub; retrying"
        );
    } else {
        tracing::debug!(
            error,
            attempts = failures + 1,
            "cannot reach redis for pub/sub"
        );
    }
}

/// `MIN_BACKOFF * 2^failures`, at most `cap`, with up to 20% jitter so
/// gateways that lost Redis together do not reconnect in lockstep.
fn backoff(failures: u32, cap: Duration) -> Duration {
    let base = MIN_BACKOFF.saturating_mul(1 << failures.min(16)).min(cap);
    let jitter = rand::random_range(0.0..0.2);
    base.mul_f64(1.0 - jitter)
}

/// Serves one connection until it fails (`Err`) or shutdown (`Ok`).
async fn serve(
    core: &Core,
    reg: &Registry,
    pubsub: PubSub,
    generation: u64,
    shutdown: &CancellationToken,
) -> Result<(), LinkError> {
    let (mut sink, mut stream) = pubsub.split();
    let t = core.tuning.timeout;
    within(t, "SUBSCRIBE", sink.subscribe(core.names.control())).await?;
    // Before anything is numbered or caught up: is this still the server
    // the counters were last seen on?
    core.note_server().await?;
    let mut subscribed = HashSet::new();
    reconcile(core, reg, &mut sink, &mut subscribed, generation).await?;
    reg.set_link(generation, true);
    tracing::info!(
        generation,
        channels = subscribed.len(),
        "redis pub/sub connected"
    );
    if generation > 1 {
        // Invalidations sent while we were away are lost: drop every cache.
        reg.control.deliver(Control::Resync);
    }
    catch_up(core, reg).await?;
    let reader = async {
        while let Some(msg) = stream.next().await {
            deliver(core, reg, &msg);
        }
        Err::<(), _>(LinkError::Closed)
    };
    let keeper = async {
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                _ = reg.changed.notified() => {
                    reconcile(core, reg, &mut sink, &mut subscribed, generation).await?;
                }
                _ = ping.tick() => {
                    within(t, "PING", sink.ping::<redis::Value>()).await?;
                }
            }
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        r = reader => r,
        r = keeper => r,
    }
}

async fn within<T>(
    limit: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, LinkError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(LinkError::Timeout(what)),
    }
}

/// Makes the connection's subscriptions match the registry: SUBSCRIBE what
/// is wanted, UNSUBSCRIBE what is not, then mark the wanted channels
/// confirmed. One snapshot per pass: a channel that leaves and comes back
/// meanwhile is handled by the next pass (the registry signals again).
async fn reconcile(
    core: &Core,
    reg: &Registry,
    sink: &mut PubSubSink,
    subscribed: &mut HashSet<String>,
    generation: u64,
) -> Result<(), LinkError> {
    let wanted = reg.wanted();
    let names: HashSet<&str> = wanted.iter().map(|l| l.name.as_str()).collect();
    let add: Vec<String> = names
        .iter()
        .filter(|n| !subscribed.contains(**n))
        .map(|n| (*n).to_owned())
        .collect();
    let gone: Vec<String> = subscribed
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .cloned()
        .collect();
    let t = core.tuning.timeout;
    for chunk in add.chunks(BATCH) {
        let channels: Vec<String> = chunk.iter().map(|c| core.names.events(c)).collect();
        within(t, "SUBSCRIBE", sink.subscribe(channels)).await?;
        subscribed.extend(chunk.iter().cloned());
    }
    for chunk in gone.chunks(BATCH) {
        let channels: Vec<String> = chunk.iter().map(|c| core.names.events(c)).collect();
        within(t, "UNSUBSCRIBE", sink.unsubscribe(channels)).await?;
        for c in chunk {
            subscribed.remove(c);
        }
    }
    for local in &wanted {
        if subscribed.contains(&local.name) {
            local.confirmed.send_replace(generation);
        }
    }
    Ok(())
}

/// After a reconnect, hands every channel what was published while the link
/// was down, from the stream history. What the history no longer holds
/// (Redis lost it in a failover or restart) is signalled with a gap; a
/// counter below what this gateway handed out (Redis lost it, or a promoted
/// replica was behind) is raised above it first, so numbering never repeats.
async fn catch_up(core: &Core, reg: &Registry) -> Result<(), LinkError> {
    for local in reg.wanted() {
        catch_up_one(core, &local).await?;
    }
    Ok(())
}

/// [`catch_up`] of one channel (also after a shard of a cluster came back).
pub(super) async fn catch_up_one(core: &Core, local: &Local) -> Result<(), BusError> {
    let from = local.position();
    let read = core.read(&local.name, from).await?;
    let high = local.high_water();
    if read.counter < high {
        core.seed(&local.name, high).await?;
    }
    let Some(mut at) = from else {
        return Ok(());
    };
    for e in &read.entries {
        if e.seq > at + 1 {
            local.lost(at + 1, e.seq - 1);
        }
        local.push(e.seq, &e.json);
        at = at.max(e.seq);
    }
    if read.counter > at {
        local.lost(at + 1, read.counter);
    }
    Ok(())
}

/// Routes one pub/sub message: an event to its local channel, or a control
/// message to the hub.
fn deliver(core: &Core, reg: &Registry, msg: &redis::Msg) {
    let channel = msg.get_channel_name();
    if let Some(name) = core.names.event_channel(channel) {
        let Some((seq, json)) = split_message(msg.get_payload_bytes()) else {
            tracing::warn!(channel, "malformed event message on redis; skipped");
            return;
        };
        if let Some(local) = reg.get(name) {
            local.push(seq, json);
        }
    } else if channel == core.names.control() {
        deliver_control(reg, msg.get_payload_bytes());
    }
}

/// Hands a control message to the hub.
pub(super) fn deliver_control(reg: &Registry, payload: &[u8]) {
    match serde_json::from_slice::<Control>(payload) {
        // Resync is local only; a published one is not ours.
        Ok(Control::Resync) => {}
        Ok(c) => reg.control.deliver(c),
        Err(e) => tracing::warn!(error = %e, "unknown control message on redis; skipped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let cap = Duration::from_secs(5);
        let first = backoff(0, cap);
        assert!(
            first <= MIN_BACKOFF && first >= MIN_BACKOFF.mul_f64(0.8),
            "{first:?}"
        );
        let fourth = backoff(3, cap);
        assert!(fourth <= Duration::from_millis(800) && fourth >= Duration::from_millis(640));
        for n in [10, 16, 40, u32::MAX] {
            let d = backoff(n, cap);
            assert!(d <= cap && d >= cap.mul_f64(0.8), "{n}: {d:?}");
        }
    }
}
