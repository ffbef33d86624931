//! Usage metering's record side: what the edge metered (requests, run
//! starts, prompt and completion tokens), summed in memory per
//! [`UsageKey`] (account, key, UTC day, model, agent, provider) and written
//! to the store in batches, where `GET /v1/usage` reads it.
//!
//! Recording never waits: [`UsageMeter::add`] adds to an in-memory sum
//! under a short lock (no await). The writer task takes the sums at least
//! once a second and adds them to the store's rows (an upsert that adds),
//! so every gateway and worker sharing one store adds to the same rows and
//! the totals are right across gateways. Token counts may be negative in a
//! delta: an estimate corrected down when the provider's own usage arrives.
//!
//! Plain requests are counted on the hot path ([`UsageMeter::count_request`])
//! in a map of their own, by key id (unique across accounts): one short
//! hash under one lock, with the day string cached ([`today`]), so a
//! count clones `Arc`s and allocates nothing once a key has been seen.

pub mod writer;

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;

/// What one row of usage is counted by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageKey {
    pub account: Arc<str>,
    pub key_id: Arc<str>,
    /// `YYYY-MM-DD`, UTC, of when the usage happened.
    pub day: Arc<str>,
    /// The model asked for (`echo`, `upstream/gpt-4o`); empty for requests
    /// that name none.
    pub model: Arc<str>,
    /// The agent whose run it was; empty outside runs.
    pub agent_id: Arc<str>,
    /// The provider that served it (`echo`, `upstream`); empty when none did.
    pub provider: Arc<str>,
}

/// Amounts added to one [`UsageKey`]'s row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub requests: i64,
    pub runs: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl UsageCounts {
    pub fn add(&mut self, o: UsageCounts) {
        self.requests += o.requests;
        self.runs += o.runs;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// The process's usage sums, waiting for the writer.
#[derive(Default)]
pub struct UsageMeter {
    pending: Mutex<HashMap<UsageKey, UsageCounts>>,
    /// Plain requests by key id, merged into the sums by [`Self::take`].
    requests: Mutex<HashMap<Arc<str>, Requests>>,
}

/// The requests of one key on one day.
struct Requests {
    account: Arc<str>,
    day: Arc<str>,
    n: i64,
}

/// The most sums [`UsageMeter::put_back`] keeps waiting while the store is
/// down; beyond it, new keys' sums are dropped (and logged by the writer).
pub const MAX_PENDING: usize = 100_000;

/// The empty dimension (no model, agent or provider), shared.
fn none() -> Arc<str> {
    static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| "".into());
    NONE.clone()
}

impl UsageMeter {
    /// Adds `counts` to `key`'s pending sum; never waits.
    pub fn add(&self, key: &UsageKey, counts: UsageCounts) {
        if counts.is_zero() {
            return;
        }
        let mut pending = self.pending.lock();
        match pending.get_mut(key) {
            Some(sum) => sum.add(counts),
            None => {
                pending.insert(key.clone(), counts);
            }
        }
    }

    /// Takes every pending sum (for the writer).
    pub fn take(&self) -> Vec<(UsageKey, UsageCounts)> {
        // One lock at a time: `count_request` nests requests → pending.
        let requests = std::mem::take(&mut *self.requests.lock());
        let mut taken = std::mem::take(&mut *self.pending.lock());
        for (key_id, r) in requests {
            let n = UsageCounts {
                requests: r.n,
                ..Default::default()
            };
            taken
                .entry(request_key(r.account, key_id, r.day))
                .or_default()
                .add(n);
        }
        taken.into_iter().filter(|(_, c)| !c.is_zero()).collect()
    }

    /// Counts one authenticated request of `key_id` (today, no model,
    /// agent or provider). Cheap: see the module doc.
    pub fn count_request(&self, account: &str, key_id: &str) {
        self.count_request_on(account, key_id, today());
    }

    /// [`Self::count_request`] on `day`.
    fn count_request_on(&self, account: &str, key_id: &str, day: Arc<str>) {
        let mut requests = self.requests.lock();
        let Some(r) = requests.get_mut(key_id) else {
            let r = Requests {
                account: account.into(),
                day,
                n: 1,
            };
            requests.insert(key_id.into(), r);
            return;
        };
        if Arc::ptr_eq(&r.day, &day) || r.day == day {
            r.n += 1;
            return;
        }
        // The day turned since the last take: the old day's count joins
        // the other sums, and this key counts on the new day.
        let old_day = std::mem::replace(&mut r.day, day);
        let n = std::mem::replace(&mut r.n, 1);
        let key = request_key(r.account.clone(), key_id.into(), old_day);
        self.add(
            &key,
            UsageCounts {
                requests: n,
                ..Default::default()
            },
        );
    }

    /// Adds sums the writer took but could not store back to the pending
    /// ones, so nothing is lost while the store is down. Sums of keys not
    /// pending any more are dropped once [`MAX_PENDING`] keys are; returns
    /// how many were.
    pub fn put_back(&self, rows: Vec<(UsageKey, UsageCounts)>) -> usize {
        let mut pending = self.pending.lock();
        let mut dropped = 0;
        for (key, counts) in rows {
            let room = pending.len() < MAX_PENDING;
            match pending.get_mut(&key) {
                Some(sum) => sum.add(counts),
                None if room => {
                    pending.insert(key, counts);
                }
                None => dropped += 1,
            }
        }
        dropped
    }
}

/// The usage key of plain requests (no model, agent or provider).
fn request_key(account: Arc<str>, key_id: Arc<str>, day: Arc<str>) -> UsageKey {
    UsageKey {
        account,
        key_id,
        day,
        model: none(),
        agent_id: none(),
        provider: none(),
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`. The string is made once a day per
/// thread: a call reads the clock, compares the day number and clones an
/// `Arc`, with no lock.
pub fn today() -> Arc<str> {
    thread_local! {
        static CACHE: std::cell::RefCell<Option<(u64, Arc<str>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs / 86_400;
    CACHE.with_borrow_mut(|cache| match cache {
        Some((d, s)) if *d == day => s.clone(),
        _ => {
            let s = day_string(secs);
            *cache = Some((day, s.clone()));
            s
        }
    })
}

/// `YYYY-MM-DD` (UTC) of a Unix time in seconds.
fn day_string(unix_secs: u64) -> Arc<str> {
    let d = time::OffsetDateTime::from_unix_timestamp(unix_secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str) -> UsageKey {
        UsageKey {
            account: "acct".into(),
            key_id: "key-1".into(),
            day: "2026-12-04".into(),
            model: model.into(),
            agent_id: "".into(),
            provider: "".into(),
        }
    }

    #[test]
    fn sums_per_key_and_corrections_net_out() {
        let m = UsageMeter::default();
        let c = |p, q| UsageCounts {
            completion_tokens: p,
            prompt_tokens: q,
            ..Default::default()
        };
        m.add(&key("echo"), c(10, 3));
        m.add(&key("echo"), c(-2, 0));
        m.add(&key("upstream/x"), c(1, 1));
        m.add(&key("zero"), UsageCounts::default());
        let mut rows = m.take();
        rows.sort_by(|a, b| a.0.model.cmp(&b.0.model));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1, c(8, 3));
        assert_eq!(rows[1].1, c(1, 1));
        assert!(m.take().is_empty(), "taken once");
    }

    #[test]
    fn requests_are_counted_per_key_and_day() {
        let m = UsageMeter::default();
        m.count_request("acct", "key-1");
        m.count_request("acct", "key-1");
        m.count_request("acct", "key-2");
        m.add(
            &request_key("acct".into(), "key-2".into(), today()),
            c_req(10),
        );
        let mut rows = m.take();
        rows.sort_by(|a, b| a.0.key_id.cmp(&b.0.key_id));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1.requests, 2);
        assert_eq!(rows[1].1.requests, 11, "merged with the other sums");
        assert_eq!(&*rows[0].0.day, &*today());
        assert_eq!(&*rows[1].0.model, "");
        assert!(m.take().is_empty(), "taken once");

        // A day turning between two takes: each day its own row.
        m.count_request_on("acct", "key-1", "2026-12-04".into());
        m.count_request_on("acct", "key-1", "2026-12-04".into());
        m.count_request_on("acct", "key-1", "2026-12-05".into());
        let mut rows = m.take();
        rows.sort_by(|a, b| a.0.day.cmp(&b.0.day));
        let days: Vec<(&str, i64)> = rows.iter().map(|(k, c)| (&*k.day, c.requests)).collect();
        assert_eq!(days, [("2026-12-04", 2), ("2026-12-05", 1)]);
    }

    fn c_req(n: i64) -> UsageCounts {
        UsageCounts {
            requests: n,
            ..Default::default()
        }
    }

    #[test]
    fn put_back_adds_and_is_bounded() {
        let m = UsageMeter::default();
        let one = UsageCounts {
            requests: 1,
            ..Default::default()
        };
        m.add(&key("a"), one);
        let taken = m.take();
        m.add(&key("a"), one);
        assert_eq!(m.put_back(taken), 0);
        assert_eq!(m.take()[0].1.requests, 2, "summed with what came since");
        let many: Vec<_> = (0..MAX_PENDING + 5)
            .map(|i| (key(&i.to_string()), one))
            .collect();
        assert_eq!(m.put_back(many), 5);
        assert_eq!(m.take().len(), MAX_PENDING);
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(&*day_string(0), "1970-01-01");
        assert_eq!(&*day_string(1_796_428_799), "2026-12-04");
        assert_eq!(&*day_string(1_796_428_800), "2026-12-05");
        assert!(Arc::ptr_eq(&today(), &today()) || today().len() == 10);
    }
}
