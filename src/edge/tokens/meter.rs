//! [`TokenMeter`]: what one run or relay charges, as it streams.
//!
//! Tokens are estimated as the text goes by, one token per four characters
//! (rounded up over the whole text, not per piece): the prompt when a model
//! call starts, the completion as each piece of it streams. When the
//! provider's own count arrives (its usage at the end of a step), the
//! difference is charged too, so a budget ends up charged what the provider
//! counted. An estimate above the provider's count is not refunded to the
//! budget (a budget errs on the side of stopping) but the usage record
//! shows the provider's count. Every charge goes to the budgets at once and
//! to the usage record at least once a second and when the meter is dropped
//! (a run that ends, a client that hangs up), so tokens streamed before a
//! disconnect are charged.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Budgets, Spent};
use crate::usage::{UsageCounts, UsageKey, UsageMeter};

/// Characters per estimated token.
pub const CHARS_PER_TOKEN: u64 = 4;
/// Longest a charge waits in the meter before it reaches the usage record.
const USAGE_EVERY: Duration = Duration::from_secs(1);

/// Tokens of `chars` characters: a quarter, rounded up.
pub fn estimate(chars: u64) -> u64 {
    chars.div_ceil(CHARS_PER_TOKEN)
}

/// One run's or relay's token meter.
pub struct TokenMeter {
    budgets: Option<Arc<Budgets>>,
    usage: Option<(Arc<UsageMeter>, UsageKey)>,
    /// Charged and not yet in the usage record.
    unrecorded: UsageCounts,
    recorded_at: Instant,
    /// The current model call's estimates so far.
    step_prompt: u64,
    step_chars: u64,
    step_completion: u64,
    /// Usage waits for the provider's name ([`Self::await_provider`]).
    held: bool,
}

impl TokenMeter {
    /// A meter charging `budgets` (if any) and recording usage under `key`
    /// in `usage` (if given).
    pub fn new(budgets: Option<Arc<Budgets>>, usage: Option<(Arc<UsageMeter>, UsageKey)>) -> Self {
        Self {
            budgets,
            usage,
            unrecorded: UsageCounts::default(),
            recorded_at: Instant::now(),
            step_prompt: 0,
            step_chars: 0,
            step_completion: 0,
            held: false,
        }
    }

    /// Keeps what is charged out of the usage record until
    /// [`Self::served_by`] names the provider (an agent on a route, whose
    /// target is known once one answers), so none of it is filed under a
    /// placeholder; dropped before that, it is recorded as it is.
    pub fn await_provider(&mut self) {
        self.held = true;
    }

    /// The current model call is served by `provider`: it is recorded under
    /// that name from now on, with the call's estimates so far (those of
    /// earlier calls stay under the provider that served them).
    pub fn served_by(&mut self, provider: &str) {
        let Some((_, key)) = &mut self.usage else {
            return;
        };
        if std::mem::take(&mut self.held) {
            key.provider = provider.into();
            return;
        }
        if &*key.provider == provider {
            return;
        }
        let (p, c) = (self.step_prompt as i64, self.step_completion as i64);
        self.unrecorded.prompt_tokens -= p;
        self.unrecorded.completion_tokens -= c;
        self.record(false);
        if let Some((_, key)) = &mut self.usage {
            key.provider = provider.into();
        }
        self.unrecorded.prompt_tokens += p;
        self.unrecorded.completion_tokens += c;
    }

    /// Whether the meter charges any budget.
    pub fn has_budget(&self) -> bool {
        self.budgets.is_some()
    }

    /// From now on, usage is recorded under `provider` (a relay that
    /// moved to another target); what was charged so far stays under the
    /// previous one.
    pub fn set_provider(&mut self, provider: &str) {
        self.record(false);
        if let Some((_, key)) = &mut self.usage {
            key.provider = provider.into();
        }
    }

    /// Counts one run start in the usage record.
    pub fn run_started(&mut self) {
        self.unrecorded.runs += 1;
    }

    /// A model call starts with a prompt of `chars` characters.
    pub fn prompt(&mut self, chars: u64) -> Option<Spent> {
        let n = estimate(chars);
        self.step_prompt += n;
        self.unrecorded.prompt_tokens += n as i64;
        self.charge(n)
    }

    /// A piece of the completion streamed (`chars` characters of it).
    pub fn completion(&mut self, chars: u64) -> Option<Spent> {
        self.step_chars += chars;
        let total = estimate(self.step_chars);
        let n = total - self.step_completion;
        self.step_completion = total;
        self.unrecorded.completion_tokens += n as i64;
        self.charge(n)
    }

    /// The model call ended; `counted` is the provider's (prompt,
    /// completion), when it said. Charges what the estimate missed and
    /// starts the next call's estimate from zero.
    pub fn step_done(&mut self, counted: Option<(u64, u64)>) -> Option<Spent> {
        let (est_p, est_c) = (self.step_prompt, self.step_completion);
        (self.step_prompt, self.step_chars, self.step_completion) = (0, 0, 0);
        let Some((p, c)) = counted else {
            self.record(false);
            return self.budgets.as_ref().and_then(|b| b.check());
        };
        self.unrecorded.prompt_tokens += p as i64 - est_p as i64;
        self.unrecorded.completion_tokens += c as i64 - est_c as i64;
        let more = p.saturating_sub(est_p) + c.saturating_sub(est_c);
        let spent = self.charge(more);
        self.record(false);
        spent
    }

    fn charge(&mut self, n: u64) -> Option<Spent> {
        self.record(true);
        self.budgets.as_ref().and_then(|b| b.charge(n))
    }

    /// Hands what was charged to the usage record (if it waited long
    /// enough, when `lazily`).
    fn record(&mut self, lazily: bool) {
        if lazily && (self.held || self.recorded_at.elapsed() < USAGE_EVERY) {
            return;
        }
        self.recorded_at = Instant::now();
        if let Some((usage, key)) = &self.usage {
            usage.add(key, std::mem::take(&mut self.unrecorded));
        }
    }
}

impl Drop for TokenMeter {
    fn drop(&mut self) {
        self.record(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::tokens::{Payer, TokenBudgets};

    fn key() -> UsageKey {
        UsageKey {
            account: "acct".into(),
            key_id: "key-1".into(),
            day: "2026-12-04".into(),
            model: "echo".into(),
            agent_id: "agent-1".into(),
            provider: "echo".into(),
        }
    }

    #[test]
    fn estimates_round_up_over_the_whole_text_and_the_provider_count_wins() {
        let usage = Arc::new(UsageMeter::default());
        let mut m = TokenMeter::new(None, Some((usage.clone(), key())));
        m.run_started();
        m.prompt(10);
        for _ in 0..5 {
            m.completion(1); // five one-character pieces: 2 tokens, not 5
        }
        m.step_done(Some((7, 1)));
        drop(m);
        let rows = usage.take();
        assert_eq!(rows.len(), 1);
        let c = rows[0].1;
        assert_eq!((c.runs, c.prompt_tokens, c.completion_tokens), (1, 7, 1));
    }

    #[test]
    fn a_served_call_is_recorded_under_its_provider_with_its_estimates() {
        let usage = Arc::new(UsageMeter::default());
        let mut m = TokenMeter::new(None, Some((usage.clone(), key())));
        m.await_provider();
        m.run_started();
        m.prompt(40);
        m.served_by("b");
        m.completion(8);
        m.step_done(Some((12, 3)));
        // The next call moves to another target: its estimate goes along.
        m.prompt(40);
        m.served_by("c");
        m.step_done(Some((11, 1)));
        drop(m);
        let mut rows: Vec<_> = usage
            .take()
            .into_iter()
            .map(|(k, c)| {
                (
                    k.provider.to_string(),
                    c.runs,
                    c.prompt_tokens,
                    c.completion_tokens,
                )
            })
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            vec![("b".into(), 1, 12, 3), ("c".into(), 0, 11, 1)],
            "nothing under the placeholder"
        );
    }

    #[test]
    fn what_streamed_before_a_drop_is_recorded_and_budgets_stop_it() {
        let usage = Arc::new(UsageMeter::default());
        let budgets = TokenBudgets::new(None);
        let payer = Payer {
            key_id: "key-1".into(),
            account: "acct".into(),
            key_tpm: Some(10),
            ..Payer::default()
        };
        let mut m = TokenMeter::new(budgets.budgets(&payer), Some((usage.clone(), key())));
        assert!(m.has_budget());
        assert_eq!(m.completion(32), None, "8 tokens of 10");
        let spent = m.completion(8).expect("the 10th token spends the minute");
        assert_eq!(spent.limit, 10);
        drop(m);
        assert_eq!(usage.take()[0].1.completion_tokens, 10);
    }
}
