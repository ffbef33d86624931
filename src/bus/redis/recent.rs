//! The latest events of a channel as this process delivered them, kept so a
//! resume can replay from memory instead of from the Redis stream.
//!
//! When another gateway drains, its followers come back here in a burst,
//! each with a cursor a few hundred events behind. Replaying from Redis
//! costs every reconnect one XRANGE of those entries plus a JSON decode and
//! encode of each (the frames are rebuilt), all of which this process has
//! already done once for its live subscribers: at 2,000 reconnects that was
//! about a million decodes, and it is what made live delivery slow during
//! a spread drain (BENCHMARKS.md, "Drain"). Here the same shared frames
//! are handed out again, no Redis round trip and no decode.
//!
//! The window is contiguous by construction: events enter in seq order
//! from the link (`Local::push`), and a hole (events Redis lost) empties
//! it. So a cursor inside the window is answered exactly as the Redis
//! stream would answer it, and anything else (older than the window, ahead
//! of it, past the history's age) is left to the stream.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::bus::BusEvent;

/// A bounded, contiguous window of a channel's latest events.
pub(super) struct Recent {
    events: VecDeque<(Instant, Arc<BusEvent>)>,
    cap: usize,
    ttl: Duration,
}

impl Recent {
    /// A window of at most `cap` events (the stream's length), each usable
    /// for `ttl` (the stream's age limit).
    pub fn new(cap: usize, ttl: Duration) -> Self {
        Self {
            events: VecDeque::new(),
            cap,
            ttl,
        }
    }

    /// Adds the next event; one that does not follow the last restarts
    /// the window.
    pub fn push(&mut self, ev: &Arc<BusEvent>) {
        if self.cap == 0 {
            return;
        }
        if self.events.back().is_some_and(|(_, l)| l.seq + 1 != ev.seq) {
            self.events.clear();
        }
        if self.events.len() == self.cap {
            self.events.pop_front();
        }
        self.events.push_back((Instant::now(), ev.clone()));
    }

    /// Forgets everything (events were lost: what follows is not contiguous).
    pub fn clear(&mut self) {
        self.events.clear();
    }

    /// The events after `after`, if the window holds all of them: `after`
    /// at or past its first event's predecessor, and the first one wanted
    /// younger than the history's age limit. A cursor past the last event
    /// (the client saw events another gateway delivered before this one
    /// got them) needs no replay: everything after the window comes live,
    /// and the Redis stream would not check such a cursor either.
    pub fn after(&self, after: u64) -> Option<Vec<Arc<BusEvent>>> {
        let first = self.events.front()?.1.seq;
        let last = self.events.back()?.1.seq;
        if after + 1 < first {
            return None;
        }
        if after >= last {
            return Some(Vec::new());
        }
        let skip = (after + 1 - first) as usize;
        if let Some((at, _)) = self.events.get(skip) {
            if at.elapsed() >= self.ttl {
                return None;
            }
        }
        Some(
            self.events
                .iter()
                .skip(skip)
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AgentEvent;

    fn ev(seq: u64) -> Arc<BusEvent> {
        Arc::new(BusEvent::encode(seq, &AgentEvent::test_line("run-1", seq)))
    }

    fn seqs(v: Option<Vec<Arc<BusEvent>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn answers_cursors_inside_the_window_only() {
        let mut r = Recent::new(3, Duration::from_secs(60));
        assert_eq!(seqs(r.after(0)), None, "empty: ask the stream");
        for s in 5..=8 {
            r.push(&ev(s));
        }
        // Holds 6, 7, 8.
        assert_eq!(seqs(r.after(5)), Some(vec![6, 7, 8]));
        assert_eq!(seqs(r.after(7)), Some(vec![8]));
        assert_eq!(seqs(r.after(8)), Some(vec![]));
        assert_eq!(seqs(r.after(4)), None, "older than the window");
        assert_eq!(
            seqs(r.after(9)),
            Some(vec![]),
            "ahead of what arrived here: all comes live"
        );
        // A hole restarts the window.
        r.push(&ev(11));
        assert_eq!(seqs(r.after(7)), None);
        assert_eq!(seqs(r.after(10)), Some(vec![11]));
        r.clear();
        assert_eq!(seqs(r.after(10)), None);
    }

    #[test]
    fn events_past_the_age_limit_are_left_to_the_stream() {
        let mut r = Recent::new(10, Duration::ZERO);
        r.push(&ev(1));
        r.push(&ev(2));
        assert_eq!(seqs(r.after(0)), None);
        assert_eq!(seqs(r.after(2)), Some(vec![]), "nothing to replay");
    }
}
