//! What opening an agent's channel asks the store, remembered for a short
//! while and asked once however many streams open at the same moment.
//!
//! Opening `agent:<id>` or `logs:<id>` checks that the agent is the
//! caller's, and with a cursor seeds the bus counter from the store (so an
//! old cursor after a Redis restart expires instead of skipping events).
//! When another gateway drains, its followers reconnect here in a burst,
//! mostly to the same few channels: without this memo each reconnect would
//! cost two store round trips before the bus history replays. With it the
//! first open of a channel asks the store, concurrent opens wait for that
//! answer, and later ones within [`CHECK_TTL`] replay from the bus alone.
//! The cost: an agent deleted through another gateway can still be opened
//! here (with nothing to deliver) for up to [`CHECK_TTL`]; one deleted
//! through this gateway is forgotten at once.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::domain::Channel;

/// How long a channel's check is trusted.
pub const CHECK_TTL: Duration = Duration::from_secs(10);

type Key = (String, Channel);

/// Channels recently checked against the store, by account.
#[derive(Default)]
pub struct ChannelChecks {
    /// When each was checked, and whether its bus counter was seeded then.
    done: Mutex<HashMap<Key, (Instant, bool)>>,
    /// One gate per channel being checked now.
    gates: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl ChannelChecks {
    /// Runs `check` for (`account`, `channel`) unless one that covers it
    /// (`seed`: one that seeded the counter) succeeded within
    /// [`CHECK_TTL`]; concurrent callers for one channel run it once.
    pub async fn ensure<E, F>(
        &self,
        account: &str,
        channel: &Channel,
        seed: bool,
        check: F,
    ) -> Result<(), E>
    where
        F: std::future::Future<Output = Result<(), E>>,
    {
        let key = (account.to_owned(), channel.clone());
        if self.fresh(&key, seed) {
            return Ok(());
        }
        let gate = self.gates.lock().entry(key.clone()).or_default().clone();
        let turn = gate.lock().await;
        let result = match self.fresh(&key, seed) {
            true => Ok(()),
            false => check.await.inspect(|()| {
                self.done.lock().insert(key.clone(), (Instant::now(), seed));
            }),
        };
        drop(turn);
        // The last one through removes the gate (the map holds one count).
        let mut gates = self.gates.lock();
        if Arc::strong_count(&gate) == 2 {
            gates.remove(&key);
        }
        result
    }

    /// Forgets the checks of an agent's channels (deleted through this
    /// gateway: its streams answer `agent_not_found` at once).
    pub fn forget_agent(&self, account: &str, agent: &str) {
        let mut done = self.done.lock();
        for channel in [Channel::Agent(agent.into()), Channel::Logs(agent.into())] {
            done.remove(&(account.to_owned(), channel));
        }
    }

    fn fresh(&self, key: &Key, seed: bool) -> bool {
        let mut done = self.done.lock();
        match done.get(key) {
            Some((at, _)) if at.elapsed() >= CHECK_TTL => {
                done.remove(key);
                false
            }
            Some((_, seeded)) => *seeded || !seed,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_opens_of_one_channel_check_once() {
        let checks = ChannelChecks::default();
        let calls = AtomicUsize::new(0);
        let ch = Channel::Agent("a".into());
        let check = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok::<(), ()>(())
        };
        let opens = (0..50).map(|_| checks.ensure("acct", &ch, true, check()));
        futures::future::join_all(opens).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A cursor-less open is covered by the seeded check; another
        // account is not.
        checks.ensure("acct", &ch, false, check()).await.unwrap();
        checks.ensure("other", &ch, false, check()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A failed check is not remembered.
        let failing = async { Err::<(), _>("down") };
        let other = Channel::Logs("a".into());
        assert!(checks.ensure("acct", &other, true, failing).await.is_err());
        checks.ensure("acct", &other, true, check()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(checks.gates.lock().is_empty());
    }
}
