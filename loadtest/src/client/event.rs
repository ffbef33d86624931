//! What subscribers record: event latency from the event's own `date`
//! (publish time, stamped by weir just before the bus publish), deliveries,
//! pings, and failures, shared by every subscriber task.
//!
//! `date` has millisecond resolution and is truncated, so a measured latency
//! is at most 1 ms above the true one and never below it.
//!
//! First-event latency (issue 22) starts earlier, at the publisher: it puts
//! `pub@<unix µs>@` in what it publishes (a run's message, an nchan
//! message), and each subscriber records, per publish, the delay from that
//! stamp to the first event carrying it. For a weir run that includes the
//! run's start (its store writes) before the first event goes out.

use std::{
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::hist::AtomicHist;

/// Counters of a group of subscribers.
#[derive(Default)]
pub struct Stats {
    pub latency: AtomicHist,
    /// Publish (the publisher's stamp) to a publish's first event here.
    pub first: AtomicHist,
    pub deliveries: AtomicU64,
    pub pings: AtomicU64,
    /// Connections currently open.
    pub open: AtomicI64,
    /// Connections that failed to open, or ended without being asked to.
    pub errors: AtomicU64,
    /// Generation of the ping check (see [`Stats::start_ping_check`]).
    ping_mark: AtomicU64,
    pinged: AtomicU64,
    /// The first error seen, for the report.
    pub first_error: std::sync::Mutex<Option<String>>,
    /// Highest seq seen by anyone (published events, as far as we can tell).
    pub max_seq: AtomicU64,
}

impl Stats {
    /// Starts counting connections that receive a ping from now on.
    pub fn start_ping_check(&self) {
        self.pinged.store(0, Ordering::SeqCst);
        self.ping_mark.fetch_add(1, Ordering::SeqCst);
    }

    /// Connections pinged since [`Stats::start_ping_check`].
    pub fn pinged(&self) -> u64 {
        self.pinged.load(Ordering::SeqCst)
    }

    /// Records a ping; `seen` is the connection's own last mark.
    pub fn ping(&self, seen: &mut u64) {
        self.pings.fetch_add(1, Ordering::Relaxed);
        let mark = self.ping_mark.load(Ordering::SeqCst);
        if mark != *seen {
            *seen = mark;
            if mark > 0 {
                self.pinged.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Records one event's JSON (as SSE `data` or a WebSocket text frame),
    /// and its first-event latency when it is the first this connection
    /// (`mark`) sees of a stamped publish.
    pub fn event_on(&self, json: &[u8], mark: &mut Mark) {
        self.event(json);
        // Stamps only grow, so a later event of an older publish (a run's
        // tokens echo its message) is not a first event.
        if let Some(stamp) = find_u64(json, STAMP) {
            if stamp > mark.stamp {
                mark.stamp = stamp;
                self.first.record((now_us() - stamp as i64).max(0) as u64);
            }
        }
    }

    /// Records one event's JSON (as SSE `data` or a WebSocket text frame).
    pub fn event(&self, json: &[u8]) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        if let Some(ms) = find_date_ms(json) {
            let lat = now_us() - ms * 1000;
            self.latency.record(lat.max(0) as u64);
        }
        if let Some(seq) = find_u64(json, b"\"seq\":") {
            self.max_seq.fetch_max(seq, Ordering::Relaxed);
        }
    }

    pub fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(what);
        }
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What precedes a publisher's stamp (Unix µs, then `@`).
pub const STAMP: &[u8] = b"pub@";

/// `pub@<now>@`: a stamp for what is published now.
pub fn stamp() -> String {
    format!("pub@{}@", now_us())
}

/// One connection's state: its last ping-check generation and the last
/// publish stamp it saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mark {
    pub ping: u64,
    pub stamp: u64,
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The `"date":"2026-11-23T15:04:05.120Z"` of an event, as Unix ms.
pub fn find_date_ms(json: &[u8]) -> Option<i64> {
    let at = find(json, b"\"date\":\"")? + 8;
    parse_date_ms(json.get(at..at + 24)?)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (weir's fixed-width format) as Unix ms.
pub fn parse_date_ms(s: &[u8]) -> Option<i64> {
    if s.len() != 24 || s[4] != b'-' || s[10] != b'T' || s[19] != b'.' || s[23] != b'Z' {
        return None;
    }
    let n = |a: usize, b: usize| -> Option<i64> {
        s[a..b].iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, m, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let secs = days_from_civil(y, m, d) * 86_400 + n(11, 13)? * 3600 + n(14, 16)? * 60 + n(17, 19)?;
    Some(secs * 1000 + n(20, 23)?)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The unsigned number right after `key` (e.g. `"seq":`).
pub fn find_u64(json: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(json, key)? + key.len();
    let digits = json[at..].iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&json[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_to_unix_ms() {
        assert_eq!(parse_date_ms(b"1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_date_ms(b"2026-11-23T15:04:05.120Z"),
            Some(1_795_446_245_120)
        );
        assert_eq!(parse_date_ms(b"2026-11-23 15:04:05.120Z"), None);
        let ev = br#"{"id":"msg-1","date":"2000-03-01T00:00:01.002Z","seq":42}"#;
        assert_eq!(find_date_ms(ev), Some(951_868_801_002));
        assert_eq!(find_u64(ev, b"\"seq\":"), Some(42));
    }

    #[test]
    fn a_publish_counts_once_per_connection_at_its_first_event() {
        let s = Stats::default();
        let (mut a, mut b) = (Mark::default(), Mark::default());
        let t = now_us() - 5_000;
        let first = format!(r#"{{"content":"pub@{t}@ w0","seq":1}}"#);
        let token = format!(r#"{{"content":"pub@{t}@","seq":2}}"#);
        s.event_on(first.as_bytes(), &mut a);
        s.event_on(token.as_bytes(), &mut a);
        s.event_on(token.as_bytes(), &mut b);
        // An older publish's event after a newer one's is not a first.
        let older = format!(r#"{{"content":"pub@{}@","seq":3}}"#, t - 1);
        s.event_on(older.as_bytes(), &mut a);
        let h = s.first.snapshot();
        assert_eq!(h.count(), 2);
        assert!(h.quantile_ms(0.5) >= 5.0, "{}", h.quantile_ms(0.5));
        assert_eq!(s.deliveries.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn ping_check_counts_each_connection_once() {
        let s = Stats::default();
        let (mut a, mut b) = (0, 0);
        s.ping(&mut a);
        assert_eq!(s.pinged(), 0, "pings before the check do not count");
        s.start_ping_check();
        s.ping(&mut a);
        s.ping(&mut a);
        s.ping(&mut b);
        assert_eq!(s.pinged(), 2);
    }
}
