//! Ids and timestamps, in one place so every record formats them alike.

use rand::{distr::Alphanumeric, Rng};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// A new id like `agent-3fK9x2…`: a kind prefix and 20 random alphanumerics
/// (about 119 bits), so ids are unguessable across accounts.
pub fn new_id(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 21);
    s.push_str(prefix);
    s.push('-');
    s.extend(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(20)
            .map(char::from),
    );
    s
}

/// RFC 3339 in UTC with exactly three fraction digits, so timestamps sort
/// correctly as strings.
const MILLIS: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// The current time, e.g. `2026-11-23T15:04:05.120Z`.
pub fn now() -> String {
    format_millis(OffsetDateTime::now_utc())
}

/// `t` as [`now`] writes times (UTC, three fraction digits), so it compares
/// with stored timestamps as text.
pub fn format_millis(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(MILLIS)
        .unwrap_or_default()
}

/// Unix seconds as RFC 3339 in UTC.
pub fn format_unix(secs: u64) -> String {
    OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = super::new_id("agent");
        let b = super::new_id("agent");
        assert!(a.starts_with("agent-") && a.len() == 26);
        assert_ne!(a, b);
    }

    #[test]
    fn now_is_rfc3339() {
        let n = super::now();
        assert!(n.ends_with('Z') && n.contains('T'), "{n}");
        assert_eq!(n.len(), "2026-11-23T15:04:05.120Z".len(), "{n}");
        assert!(
            time::OffsetDateTime::parse(&n, &time::format_description::well_known::Rfc3339).is_ok()
        );
        assert_eq!(super::format_unix(0), "1970-01-01T00:00:00Z");
    }
}
