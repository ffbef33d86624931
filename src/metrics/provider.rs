//! A provider's metric handles for the calls every relayed request makes
//! (an attempt that opened, the time to the answer's head), registered
//! once per provider: a labelled macro call allocates its label values and
//! looks its series up in the recorder on every request. Failures, which
//! are rare, still go through the macros (`super::upstream_error`,
//! `super::provider_attempt`).

use std::{fmt, sync::OnceLock, time::Instant};

use ::metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use super::Upstream;

/// Registered on first use, once the recorder is installed.
#[derive(Default)]
pub struct ProviderMetrics {
    handles: OnceLock<Handles>,
}

struct Handles {
    ok: Counter,
    circuit: Gauge,
    /// By caller: agent, relay.
    answered: [Histogram; 2],
}

impl ProviderMetrics {
    fn handles(&self, provider: &str) -> &Handles {
        self.handles.get_or_init(|| {
            let answered = |caller: Upstream| {
                histogram!("weir_upstream_duration_seconds", "caller" => caller.label(), "provider" => provider.to_owned())
            };
            Handles {
                ok: counter!("weir_provider_attempts_total", "provider" => provider.to_owned(), "outcome" => "ok"),
                circuit: gauge!("weir_provider_circuit", "provider" => provider.to_owned()),
                answered: [answered(Upstream::Agent), answered(Upstream::Relay)],
            }
        })
    }

    /// An attempt at `provider` opened a stream: its circuit is closed.
    pub fn attempt_ok(&self, provider: &str) {
        let h = self.handles(provider);
        h.ok.increment(1);
        h.circuit.set(0.0);
    }

    /// `provider` answered (any status) `since` ago.
    pub fn answered(&self, provider: &str, caller: Upstream, since: Instant) {
        let i = match caller {
            Upstream::Agent => 0,
            Upstream::Relay => 1,
        };
        let h = &self.handles(provider).answered[i];
        h.record(since.elapsed().as_secs_f64());
    }
}

impl fmt::Debug for ProviderMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderMetrics").finish_non_exhaustive()
    }
}
