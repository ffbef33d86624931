//! A run's token meter ([`crate::edge::TokenMeter`]): the budgets of the
//! key that started it (carried by its run slot, on whichever process runs
//! it) and the usage record of this process, under the run's key, agent,
//! model and provider.

use super::{
    models::{Turn, Usage},
    Engine,
};
use crate::{
    domain::RunId,
    edge::TokenMeter,
    store::Agent,
    usage::{self, UsageKey},
};

/// The provider that serves `model`: `echo` (offline) or `upstream` (until
/// a route's target answers and names itself: [`meter_for`]).
pub fn provider_of(model: &str) -> &'static str {
    if model.starts_with("upstream/") {
        "upstream"
    } else {
        "echo"
    }
}

/// The meter of run `run_id` of `agent` in `account`.
pub(super) fn meter_for(
    engine: &Engine,
    run_id: &RunId,
    account: &str,
    agent: &Agent,
) -> TokenMeter {
    let (budgets, payer) = engine.slot_payer(run_id);
    let usage = match (engine.usage.get(), payer) {
        (Some(meter), Some(payer)) => Some((
            meter.clone(),
            UsageKey {
                account: account.into(),
                key_id: payer.key_id.as_str().into(),
                day: usage::today(),
                model: agent.model.as_str().into(),
                agent_id: agent.id.as_str().into(),
                provider: provider_of(&agent.model).into(),
            },
        )),
        _ => None,
    };
    let mut meter = TokenMeter::new(budgets, usage);
    if agent.model.starts_with("upstream/") {
        // Recorded under the route's target that serves each step, once
        // one answers (ModelEvent::Served); `upstream` only if none does.
        meter.await_provider();
    }
    meter
}

/// Characters of the conversation a model call is sent (its prompt).
pub fn prompt_chars(turns: &[Turn]) -> u64 {
    let chars = |s: &str| s.chars().count() as u64;
    turns
        .iter()
        .map(|t| match t {
            Turn::System(s) | Turn::User(s) => chars(s),
            Turn::Assistant {
                content,
                tool_calls,
            } => {
                chars(content)
                    + tool_calls
                        .iter()
                        .map(|c| chars(&c.name) + chars(&c.arguments))
                        .sum::<u64>()
            }
            Turn::Tool { content, .. } => chars(content),
        })
        .sum()
}

/// The provider's own count of a call, when it gave one.
pub fn counted(usage: Usage) -> Option<(u64, u64)> {
    (usage != Usage::default()).then_some((usage.prompt_tokens, usage.completion_tokens))
}
