//! A route: the ordered targets (provider + its model name) a model name
//! maps to, and how hard to try them.
//!
//! The first target of a request is picked by weight (a deterministic
//! weighted round robin over a counter: weights 3 and 1 send three requests
//! in four to the first); the next attempts go down the list from there,
//! wrapping, so every target is tried before one is tried twice. A weight
//! of 0 makes a target a fallback only.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use super::{config::MidStream, provider::Provider};

/// One target of a route.
#[derive(Debug, Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    /// The provider's own name for the model.
    pub model: String,
    pub weight: u32,
}

/// What a model name resolves to.
#[derive(Debug)]
pub struct Route {
    /// The route's name (`fast`; `upstream/x` for the default provider's
    /// implicit route of a model `x`).
    pub name: String,
    pub targets: Vec<Target>,
    pub mid_stream: MidStream,
    /// Most attempts of one request before the first byte (and, with
    /// `mid_stream = "continue"`, in all).
    pub attempts: u32,
    /// How long the attempts before the first byte may take in all.
    pub deadline: Duration,
    picks: AtomicU64,
}

impl Route {
    pub fn new(
        name: &str,
        targets: Vec<Target>,
        mid_stream: MidStream,
        attempts: u32,
        deadline: Duration,
    ) -> Self {
        Self {
            name: name.to_owned(),
            targets,
            mid_stream,
            attempts: attempts.max(1),
            deadline,
            picks: AtomicU64::new(0),
        }
    }

    /// The target indexes to try, in order, `attempts` long.
    pub fn plan(&self) -> Vec<usize> {
        let n = self.targets.len();
        if n == 0 {
            return Vec::new();
        }
        let first = self.weighted_first();
        (0..self.attempts as usize)
            .map(|i| (first + i) % n)
            .collect()
    }

    fn weighted_first(&self) -> usize {
        let total: u64 = self.targets.iter().map(|t| u64::from(t.weight)).sum();
        if total == 0 || self.targets.len() == 1 {
            return 0;
        }
        let mut at = self.picks.fetch_add(1, Ordering::Relaxed) % total;
        for (i, t) in self.targets.iter().enumerate() {
            let w = u64::from(t.weight);
            if at < w {
                return i;
            }
            at -= w;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeConfig;

    fn target(weight: u32) -> Target {
        let mut cfg = ServeConfig::for_data_dir("/nonexistent");
        cfg.provider_url = Some("http://127.0.0.1:9/v1".into());
        let provider = Arc::new(Provider::from_flags(&cfg, reqwest::Client::new()).unwrap());
        Target {
            provider,
            model: "m".into(),
            weight,
        }
    }

    #[test]
    fn weights_spread_the_first_pick_and_the_rest_follow_in_order() {
        let r = Route::new(
            "r",
            vec![target(3), target(1), target(0)],
            MidStream::Error,
            3,
            Duration::from_secs(30),
        );
        let firsts: Vec<usize> = (0..8).map(|_| r.plan()[0]).collect();
        assert_eq!(firsts, [0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(r.plan(), [0, 1, 2]);
        let r = Route::new(
            "r",
            vec![target(1), target(1)],
            MidStream::Error,
            3,
            Duration::from_secs(1),
        );
        assert_eq!(r.plan(), [0, 1, 0], "attempts wrap around the targets");
        assert_eq!(r.plan(), [1, 0, 1]);
    }
}
