//! Usage as the store keeps it and `GET /v1/usage` answers it
//! (protocol/rest.md, "Usage").
//!
//! The store holds one row per (account, key, UTC day, model, agent,
//! provider) with four counters. Writers add to a row
//! ([`crate::store::Store::add_usage`], an upsert that adds), so gateways
//! and workers sharing one store sum into the same rows; readers get the
//! rows of one account and day range summed by one dimension
//! ([`UsageGroup`]), ordered by the group's value, paged with a cursor that
//! is that value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{StoreError, StoreResult};

/// Amounts to add to one stored row (what a writer sends).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageRow {
    pub account_id: String,
    pub key_id: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// Empty when none applies (a plain request).
    pub model: String,
    pub agent_id: String,
    pub provider: String,
    pub requests: i64,
    pub runs: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl UsageRow {
    /// The row's identity, in the order the table's primary key has it.
    fn ident(&self) -> (String, String, String, String, String, String) {
        (
            self.account_id.clone(),
            self.day.clone(),
            self.key_id.clone(),
            self.model.clone(),
            self.agent_id.clone(),
            self.provider.clone(),
        )
    }
}

/// Sums rows of the same identity and sorts them by the table's key: one
/// upsert may then not touch a row twice (PostgreSQL refuses that), and
/// every writer locks rows in the same order (no deadlock between two
/// gateways adding to the same rows).
pub fn merge(rows: Vec<UsageRow>) -> Vec<UsageRow> {
    let mut by_ident: BTreeMap<_, UsageRow> = BTreeMap::new();
    for r in rows {
        match by_ident.get_mut(&r.ident()) {
            Some(sum) => {
                sum.requests += r.requests;
                sum.runs += r.runs;
                sum.prompt_tokens += r.prompt_tokens;
                sum.completion_tokens += r.completion_tokens;
            }
            None => {
                by_ident.insert(r.ident(), r);
            }
        }
    }
    by_ident.into_values().collect()
}

/// The dimension `GET /v1/usage` sums by (`group_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    /// Per key id.
    Key,
    /// Per UTC day.
    Day,
    /// Per model asked for.
    Model,
    /// Per agent id.
    Agent,
    /// Per provider (`echo`, `upstream`).
    Provider,
}

impl UsageGroup {
    pub const ALL: [UsageGroup; 5] = [
        Self::Key,
        Self::Day,
        Self::Model,
        Self::Agent,
        Self::Provider,
    ];

    /// The name `group_by` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Day => "day",
            Self::Model => "model",
            Self::Agent => "agent",
            Self::Provider => "provider",
        }
    }

    /// The `usage` column it sums by (one of a fixed few, so safe to put
    /// in SQL text).
    pub fn column(self) -> &'static str {
        match self {
            Self::Key => "key_id",
            Self::Day => "day",
            Self::Model => "model",
            Self::Agent => "agent_id",
            Self::Provider => "provider",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// What [`crate::store::Store::list_usage`] reads: the days `from` to `to`
/// (both `YYYY-MM-DD`, inclusive) summed by `group_by`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageQuery {
    pub from: String,
    pub to: String,
    pub group_by: UsageGroup,
}

/// One line of `GET /v1/usage`: the sums of one value of the dimension.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// The dimension summed by (the request's `group_by`).
    pub group: UsageGroup,
    /// The key id, day (`YYYY-MM-DD`), model, agent id or provider; null
    /// for usage that has none (requests that start no run have no model,
    /// agent or provider).
    #[schema(required = true)]
    pub value: Option<String>,
    /// Authenticated HTTP requests.
    pub requests: i64,
    /// Runs started.
    pub runs: i64,
    /// Prompt tokens (estimates corrected by the provider's usage).
    pub prompt_tokens: i64,
    /// Completion tokens (likewise).
    pub completion_tokens: i64,
    /// `prompt_tokens + completion_tokens`.
    pub total_tokens: i64,
}

impl UsageRecord {
    /// A record from a group's value (`""` for none) and its four sums.
    pub fn new(group: UsageGroup, value: String, sums: [i64; 4]) -> Self {
        let [requests, runs, prompt_tokens, completion_tokens] = sums;
        Self {
            group,
            value: (!value.is_empty()).then_some(value),
            requests,
            runs,
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// The cursor of a usage page: the last group value seen, hex-encoded
/// behind a `u` (so it is never empty, even for the empty value, and
/// safe in a URL whatever the value holds).
pub fn encode_cursor(value: &str) -> String {
    let mut s = String::with_capacity(1 + 2 * value.len());
    s.push('u');
    for b in value.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The group value a cursor of [`encode_cursor`] stands for; `None` (no
/// cursor) reads from the first value on.
///
/// Any cursor of the documented shape (`u` and pairs of lower-case hex
/// digits) is accepted, as the OpenAPI document promises: it is only a
/// lower bound, so bytes that are not UTF-8 are read lossily and NULs
/// (which no value holds, and PostgreSQL text cannot) are left out.
pub fn decode_cursor(after: Option<&str>) -> StoreResult<Option<String>> {
    let Some(after) = after else { return Ok(None) };
    let bad = || StoreError::Invalid("after: not a valid cursor".into());
    let hex = after.strip_prefix('u').ok_or_else(bad)?.as_bytes();
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    if hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = hex
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let value = String::from_utf8_lossy(&bytes).replace('\0', "");
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_invalid() {
        for v in ["", "key-1", "upstream/gpt-4o", "2026-12-04", "é"] {
            let c = encode_cursor(v);
            assert!(c.starts_with('u'));
            assert_eq!(decode_cursor(Some(&c)), Ok(Some(v.to_owned())));
        }
        assert_eq!(decode_cursor(None), Ok(None));
        for bad in ["", "x", "u0", "uzz", "42", "uFF", "u+1"] {
            assert!(decode_cursor(Some(bad)).is_err(), "{bad:?}");
        }
        let lossy = decode_cursor(Some("u61ff0062")).expect("the documented shape");
        assert_eq!(lossy.as_deref(), Some("a\u{fffd}b"));
    }

    #[test]
    fn merge_sums_duplicates_and_sorts() {
        let row = |key: &str, n| UsageRow {
            account_id: "a".into(),
            key_id: key.into(),
            day: "2026-12-04".into(),
            model: String::new(),
            agent_id: String::new(),
            provider: String::new(),
            requests: n,
            runs: 0,
            prompt_tokens: n,
            completion_tokens: -n,
        };
        let merged = merge(vec![row("k2", 1), row("k1", 2), row("k2", 3)]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].key_id, "k1");
        assert_eq!((merged[1].requests, merged[1].completion_tokens), (4, -4));
    }

    #[test]
    fn groups_parse_by_name() {
        for g in UsageGroup::ALL {
            assert_eq!(UsageGroup::parse(g.as_str()), Some(g));
        }
        assert_eq!(UsageGroup::parse("account"), None);
    }
}
