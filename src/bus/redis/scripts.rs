//! The Lua scripts the Redis bus runs, and the pure logic that reads their
//! replies (history decoding and the `history_expired` decision).
//!
//! Each channel has two keys that live and die together (same TTL, same
//! hash tag so they share a cluster slot): a counter (`…:seq`) and a stream
//! (`…:hist`) whose entry ids are `<seq>-0`, so "the history after seq N" is
//! one XRANGE from `N+1-0`. An entry holds `t` (Redis time, ms) and `e` (the
//! event JSON *without* `seq`); the pub/sub message is `<seq> <that JSON>`.
//! Both readers rebuild the event with [`BusEvent::encode`], which stays the
//! one place that decides the bytes clients see.

use std::sync::Arc;

use crate::{
    bus::{BusError, BusEvent},
    domain::AgentEvent,
};
use redis::Script;

/// Numbers, keeps and publishes one event, atomically: a subscriber that read
/// the history after SUBSCRIBE was confirmed cannot miss an event between
/// the two. It checks before it writes: a script error after INCR would leave
/// a hole in the numbering (scripts are not rolled back).
///
/// A counter below the floor (a promoted replica that was behind) is raised
/// to it first, so seq never repeats one already handed out. A retry (the
/// first attempt's outcome is unknown: it timed out, or the connection died
/// with the reply) first looks for the same event among the newest entries
/// and answers its seq instead of numbering it twice.
///
/// KEYS: seq, hist. ARGV: pub/sub channel, event JSON, max length, TTL ms,
/// trim mode (`=` exact or `~` approximate), floor, `1` on a retry, and the
/// publish command (`PUBLISH`, or `SPUBLISH` on a Redis Cluster: the channel
/// carries the keys' hash tag, so it is in the script's slot).
const PUBLISH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('WEIRNOSEQ the channel has no seq counter')
end
if ARGV[7] == '1' then
  for _, e in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 64)) do
    local f = e[2]
    for i = 1, #f - 1, 2 do
      if f[i] == 'e' and f[i + 1] == ARGV[2] then
        return tonumber(string.match(e[1], '^(%d+)'))
      end
    end
  end
end
local floor = tonumber(ARGV[6])
if floor > 0 and tonumber(redis.call('GET', KEYS[1])) < floor then
  redis.call('SET', KEYS[1], ARGV[6])
end
local seq = redis.call('INCR', KEYS[1])
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], ARGV[3], string.format('%d-0', seq),
  't', string.format('%d', ms), 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call(ARGV[8], ARGV[1], string.format('%d ', seq) .. ARGV[2])
return seq
";

/// Raises the counter to at least the floor (and past the newest history
/// entry, so XADD ids keep increasing); creates it if missing. Returns the
/// counter. KEYS: seq, hist. ARGV: floor, TTL ms.
const SEED: &str = r"
local floor = tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if last[1] then
  local s = tonumber(string.match(last[1][1], '^(%d+)'))
  if s and s > floor then floor = s end
end
if cur < floor then
  redis.call('SET', KEYS[1], string.format('%d', floor), 'PX', ARGV[2])
  return floor
end
return cur
";

/// The counter, Redis time (ms) and the history from an id (none if ARGV[1]
/// is empty), read at one instant. KEYS: seq, hist. ARGV: first id or ''.
const READ: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local entries = {}
if ARGV[1] ~= '' then
  entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+')
end
return {cur, ms, entries}
";

/// The error code the publish script answers when the counter is missing.
pub(super) const NO_SEQ: &str = "WEIRNOSEQ";

/// The scripts, hashed once (redis-rs sends EVALSHA and loads a script the
/// server does not know, e.g. after a restart).
pub(super) struct Scripts {
    pub publish: Script,
    pub seed: Script,
    pub read: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            publish: Script::new(PUBLISH),
            seed: Script::new(SEED),
            read: Script::new(READ),
        }
    }
}

/// One stream entry as XRANGE returns it: id and flat field/value pairs.
pub(super) type RawEntry = (String, Vec<Vec<u8>>);

/// What [`READ`] returns: counter, now (ms), entries.
pub(super) type ReadReply = (u64, u64, Vec<RawEntry>);

/// A decoded history entry.
pub(super) struct Entry {
    pub seq: u64,
    /// When Redis kept it (ms since the epoch).
    pub at_ms: u64,
    pub json: Vec<u8>,
}

/// Decodes XRANGE entries; a malformed one is skipped with a warning (it
/// cannot have come from [`PUBLISH`]).
pub(super) fn entries(raw: Vec<RawEntry>) -> Vec<Entry> {
    raw.into_iter()
        .filter_map(|(id, fields)| {
            let seq = id.split('-').next()?.parse().ok();
            let (mut at_ms, mut json) = (None, None);
            let mut it = fields.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                match k.as_slice() {
                    b"t" => at_ms = std::str::from_utf8(&v).ok().and_then(|t| t.parse().ok()),
                    b"e" => json = Some(v),
                    _ => {}
                }
            }
            match (seq, at_ms, json) {
                (Some(seq), Some(at_ms), Some(json)) => Some(Entry { seq, at_ms, json }),
                _ => {
                    tracing::warn!(%id, "malformed history entry in Redis; skipped");
                    None
                }
            }
        })
        .collect()
}

/// Checks that `entries` (everything kept after `after`, oldest first) is the
/// whole story since `after`: the first must be `after + 1`, and no older
/// than the TTL. Otherwise the history expired; `oldest` is the first seq
/// still replayable.
pub(super) fn check_history(
    after: u64,
    cur: u64,
    now_ms: u64,
    ttl_ms: u64,
    entries: &[Entry],
) -> Result<(), BusError> {
    if after >= cur {
        return Ok(());
    }
    let cutoff = now_ms.saturating_sub(ttl_ms);
    let complete = entries
        .first()
        .is_some_and(|e| e.seq == after + 1 && e.at_ms >= cutoff);
    if complete {
        return Ok(());
    }
    let oldest = entries
        .iter()
        .find(|e| e.at_ms >= cutoff)
        .map_or(cur + 1, |e| e.seq);
    Err(BusError::HistoryExpired { after, oldest })
}

/// Rebuilds an event from its seq and its JSON without `seq`.
pub(super) fn decode(seq: u64, json: &[u8]) -> Option<Arc<BusEvent>> {
    match AgentEvent::from_json(json) {
        Ok(event) => Some(Arc::new(BusEvent::encode(seq, &event))),
        Err(e) => {
            tracing::warn!(seq, error = %e, "undecodable event from Redis; skipped");
            None
        }
    }
}

/// Splits a pub/sub payload `<seq> <json>`.
pub(super) fn split_message(payload: &[u8]) -> Option<(u64, &[u8])> {
    let space = payload.iter().position(|&b| b == b' ')?;
    let seq = std::str::from_utf8(&payload[..space]).ok()?.parse().ok()?;
    Some((seq, &payload[space + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, at_ms: u64) -> Entry {
        Entry {
            seq,
            at_ms,
            json: b"{}".to_vec(),
        }
    }

    #[test]
    fn history_is_complete_only_from_the_next_seq_and_within_the_ttl() {
        // Nothing after the cursor: fine, whatever is kept.
        assert!(check_history(5, 5, 1000, 10, &[]).is_ok());
        assert!(check_history(9, 5, 1000, 10, &[]).is_ok());
        assert!(check_history(2, 5, 1000, 100, &[e(3, 950), e(4, 990)]).is_ok());
        // Trimmed by length: 3 is gone.
        assert_eq!(
            check_history(2, 5, 1000, 100, &[e(4, 990), e(5, 995)]),
            Err(BusError::HistoryExpired {
                after: 2,
                oldest: 4
            })
        );
        // Too old: 3 was kept past the TTL, 4 is the oldest still valid.
        assert_eq!(
            check_history(2, 4, 1000, 100, &[e(3, 800), e(4, 950)]),
            Err(BusError::HistoryExpired {
                after: 2,
                oldest: 4
            })
        );
        // Counter seeded past the history (or Redis lost it): nothing to replay.
        assert_eq!(
            check_history(2, 7, 1000, 100, &[]),
            Err(BusError::HistoryExpired {
                after: 2,
                oldest: 8
            })
        );
    }

    #[test]
    fn messages_and_entries_decode() {
        assert_eq!(split_message(b"42 {}"), Some((42, &b"{}"[..])));
        assert_eq!(split_message(b"x {}"), None);
        assert_eq!(split_message(b"42"), None);
        let stored = br#"{"agent_id":"agent-a","date":"d","id":"log-1","level":"info","message":"m","message_type":"log","run_id":"run-1"}"#;
        let raw = vec![
            (
                "7-0".to_owned(),
                vec![
                    b"t".to_vec(),
                    b"123".to_vec(),
                    b"e".to_vec(),
                    stored.to_vec(),
                ],
            ),
            ("8-0".to_owned(), vec![b"e".to_vec()]),
        ];
        let got = entries(raw);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].seq, got[0].at_ms), (7, 123));
        let ev = decode(7, &got[0].json).unwrap();
        let want = br#"{"agent_id":"agent-a","date":"d","id":"log-1","level":"info","message":"m","message_type":"log","run_id":"run-1","seq":7}"#;
        assert_eq!(&ev.json[..], &want[..]);
        assert!(decode(1, b"[1]").is_none());
        assert!(decode(1, br#"{"a":1}"#).is_none(), "not an event");
    }
}
