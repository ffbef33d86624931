//! The limits in force for one key: its own where it sets them, the
//! gateway's defaults ([`EdgeConfig`]) where it does not. Every check that
//! reads a per-key limit (rate, stream caps, runs, token budgets) reads it
//! from one [`KeyLimits`], so a default and a key's own value can never be
//! read two ways.

use serde::Serialize;

use crate::{
    config::EdgeConfig,
    store::{KeyRecord, KeySettings},
};

/// What one key may do, resolved. `None` token budgets are unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyLimits {
    pub rpm: u32,
    pub tpm: Option<u64>,
    pub daily_tokens: Option<u64>,
    pub max_runs: u32,
    pub max_websockets: u32,
    pub max_sse_streams: u32,
}

/// The widest value each limit may be set to through the API (and the
/// narrowest is 1): what `POST`/`PATCH /v1/keys` accept.
pub const RANGES: &[(&str, u64)] = &[
    ("rpm", 1_000_000),
    ("tpm", 100_000_000),
    ("daily_tokens", 1_000_000_000_000),
    ("max_runs", 10_000),
    ("max_websockets", 10_000),
    ("max_sse_streams", 10_000),
];

/// One limit a grant asked for above what the granting key holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {asked} is more than this key's own {field} ({held}); a key can grant at most its own limits")]
pub struct AboveOwn {
    pub field: &'static str,
    pub asked: String,
    pub held: String,
}

impl KeyLimits {
    /// `key`'s limits: its own where set, `cfg`'s defaults elsewhere.
    pub fn resolve(key: &KeyRecord, cfg: &EdgeConfig) -> Self {
        Self {
            rpm: key.rpm,
            tpm: key.tpm.or(cfg.tpm_per_key),
            daily_tokens: key.daily_tokens.or(cfg.daily_tokens_per_key),
            max_runs: key.max_runs.unwrap_or(cfg.max_runs_per_key),
            max_websockets: key.max_websockets.unwrap_or(cfg.max_ws_per_key),
            max_sse_streams: key.max_sse_streams.unwrap_or(cfg.max_sse_per_key),
        }
    }

    /// The limits a key with `s` would have.
    pub fn of_settings(s: &KeySettings, cfg: &EdgeConfig) -> Self {
        Self {
            rpm: s.rpm,
            tpm: s.tpm.or(cfg.tpm_per_key),
            daily_tokens: s.daily_tokens.or(cfg.daily_tokens_per_key),
            max_runs: s.max_runs.unwrap_or(cfg.max_runs_per_key),
            max_websockets: s.max_websockets.unwrap_or(cfg.max_ws_per_key),
            max_sse_streams: s.max_sse_streams.unwrap_or(cfg.max_sse_per_key),
        }
    }

    /// Each limit as a number, `None` for unlimited, by name (the names of
    /// [`RANGES`], in that order).
    fn fields(&self) -> [(&'static str, Option<u64>); 6] {
        [
            ("rpm", Some(self.rpm.into())),
            ("tpm", self.tpm),
            ("daily_tokens", self.daily_tokens),
            ("max_runs", Some(self.max_runs.into())),
            ("max_websockets", Some(self.max_websockets.into())),
            ("max_sse_streams", Some(self.max_sse_streams.into())),
        ]
    }

    /// The first limit of `self` above `held`'s (unlimited is above any
    /// number), among those `only` names (all when `only` is `None`).
    pub fn above(&self, held: &KeyLimits, only: Option<&[&str]>) -> Option<AboveOwn> {
        let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        for ((field, asked), (_, have)) in self.fields().into_iter().zip(held.fields()) {
            if only.is_some_and(|o| !o.contains(&field)) {
                continue;
            }
            let over = match (asked, have) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(a), Some(h)) => a > h,
            };
            if over {
                return Some(AboveOwn {
                    field,
                    asked: show(asked),
                    held: show(have),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: u32, tpm: Option<u64>) -> KeyLimits {
        KeyLimits {
            rpm,
            tpm,
            daily_tokens: None,
            max_runs: 16,
            max_websockets: 10,
            max_sse_streams: 20,
        }
    }

    #[test]
    fn above_names_the_first_limit_over_and_unlimited_is_over_any_number() {
        let held = limits(100, Some(1000));
        assert_eq!(limits(100, Some(1000)).above(&held, None), None);
        assert_eq!(limits(50, Some(10)).above(&held, None), None);
        let e = limits(101, Some(10)).above(&held, None).unwrap();
        assert_eq!((e.field, e.asked.as_str()), ("rpm", "101"));
        let e = limits(10, None).above(&held, None).unwrap();
        assert_eq!(
            (e.field, e.asked.as_str(), e.held.as_str()),
            ("tpm", "unlimited", "1000")
        );
        assert!(e.to_string().starts_with("tpm: unlimited is more than"));
        assert_eq!(
            limits(10, None).above(&limits(1, None), Some(&["tpm"])),
            None
        );
    }
}
