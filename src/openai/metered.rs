//! Token metering of relayed streams: each event the relay forwards is
//! read for the text it carries (the completion estimate, see
//! [`crate::edge::tokens::meter`]) and for the provider's usage chunk,
//! which corrects the estimate. The relay asks every provider for that
//! chunk (`stream_options.include_usage`); a client that did not ask for it
//! does not get it.
//!
//! Only the fields counted are decoded, borrowing the text where it has no
//! escapes, so a chunk costs one small parse and no copy of its bytes
//! unless a usage chunk has to be cut out of it.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use crate::{
    edge::{Spent, TokenMeter},
    providers::sse::{data_of, events},
};

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(default, borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

fn chars(s: &Option<Cow<'_, str>>) -> u64 {
    s.as_deref().map_or(0, |s| s.chars().count() as u64)
}

/// What one event says.
enum Seen {
    Text(u64),
    /// The provider's usage chunk (no choices): (prompt, completion).
    Usage(u64, u64),
    Other,
}

fn read_event(data: &[u8]) -> Seen {
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        return Seen::Other;
    };
    if let (true, Some(u)) = (chunk.choices.is_empty(), &chunk.usage) {
        return Seen::Usage(u.prompt_tokens, u.completion_tokens);
    }
    let text = chunk
        .choices
        .iter()
        .filter_map(|c| c.delta.as_ref())
        .map(|d| {
            let calls = d.tool_calls.iter().filter_map(|t| t.function.as_ref());
            chars(&d.content)
                + chars(&d.reasoning_content)
                + calls
                    .map(|f| chars(&f.name) + chars(&f.arguments))
                    .sum::<u64>()
        })
        .sum();
    Seen::Text(text)
}

/// Charges the events of `frames` to `meter`; returns what goes to the
/// client (`frames` itself unless a usage chunk the client did not ask for
/// is cut out) and the budget spent, if one is.
pub fn meter_frames(
    frames: Bytes,
    meter: &mut TokenMeter,
    client_wants_usage: bool,
) -> (Bytes, Option<Spent>) {
    let mut spent = None;
    let mut cut: Vec<(usize, usize)> = Vec::new();
    for (a, b) in events(&frames) {
        let Some(data) = data_of(&frames[a..b]) else {
            continue;
        };
        if data.trim_ascii() == b"[DONE]" {
            continue;
        }
        let now = match read_event(data) {
            Seen::Text(0) | Seen::Other => None,
            Seen::Text(n) => meter.completion(n),
            Seen::Usage(p, c) => {
                if !client_wants_usage {
                    cut.push((a, b));
                }
                meter.step_done(Some((p, c)))
            }
        };
        spent = spent.or(now);
    }
    if cut.is_empty() {
        return (frames, spent);
    }
    let mut out = BytesMut::with_capacity(frames.len());
    let mut at = 0;
    for (a, b) in cut {
        out.extend_from_slice(&frames[at..a]);
        at = b;
    }
    out.extend_from_slice(&frames[at..]);
    (out.freeze(), spent)
}

/// Charges a whole non-streamed completion's usage (or, without one, an
/// estimate of its message text).
pub fn meter_body(body: &[u8], meter: &mut TokenMeter) {
    #[derive(Deserialize)]
    struct Whole<'a> {
        #[serde(default, borrow)]
        choices: Vec<WholeChoice<'a>>,
        #[serde(default)]
        usage: Option<Usage>,
    }
    #[derive(Deserialize)]
    struct WholeChoice<'a> {
        #[serde(default, borrow)]
        message: Option<Delta<'a>>,
    }
    let Ok(whole) = serde_json::from_slice::<Whole<'_>>(body) else {
        return;
    };
    if let Some(u) = whole.usage {
        meter.step_done(Some((u.prompt_tokens, u.completion_tokens)));
        return;
    }
    let text: u64 = whole
        .choices
        .iter()
        .filter_map(|c| c.message.as_ref())
        .map(|m| chars(&m.content))
        .sum();
    meter.completion(text);
    meter.step_done(None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{UsageKey, UsageMeter};
    use std::sync::Arc;

    fn meter(usage: &Arc<UsageMeter>) -> TokenMeter {
        let key = UsageKey {
            account: "a".into(),
            key_id: "k".into(),
            day: "2026-12-04".into(),
            model: "upstream/m".into(),
            agent_id: "".into(),
            provider: "upstream".into(),
        };
        TokenMeter::new(None, Some((usage.clone(), key)))
    }

    const TEXT: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello wor\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"ld\\n\"}}]}\n\n";
    const USAGE: &[u8] =
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\n";

    #[test]
    fn text_is_estimated_and_passes_untouched() {
        let usage = Arc::new(UsageMeter::default());
        let mut m = meter(&usage);
        let frames = Bytes::from_static(TEXT);
        let (out, spent) = meter_frames(frames.clone(), &mut m, false);
        assert_eq!(
            out.as_ptr(),
            frames.as_ptr(),
            "no copy without a usage chunk"
        );
        assert_eq!(spent, None);
        drop(m);
        // 12 characters ("Hello world\n"): 3 tokens.
        assert_eq!(usage.take()[0].1.completion_tokens, 3);
    }

    #[test]
    fn the_usage_chunk_corrects_and_is_cut_unless_asked_for() {
        let usage = Arc::new(UsageMeter::default());
        let mut m = meter(&usage);
        m.prompt(4);
        let all = [TEXT, USAGE, b"data: [DONE]\n\n"].concat();
        let (out, _) = meter_frames(Bytes::from(all.clone()), &mut m, false);
        assert_eq!(&out[..], &[TEXT, b"data: [DONE]\n\n"].concat()[..]);
        let (kept, _) = meter_frames(Bytes::from(USAGE), &mut meter(&usage), true);
        assert_eq!(&kept[..], USAGE);
        drop(m);
        let total: (i64, i64) = usage.take().iter().fold((0, 0), |acc, (_, c)| {
            (acc.0 + c.prompt_tokens, acc.1 + c.completion_tokens)
        });
        assert_eq!(
            total,
            (18, 6),
            "two usage chunks of 9 + 3, estimates corrected"
        );
    }
}
