//! Token metering of relayed streams: each event the relay forwards is
//! read for the text it carries (the completion estimate, see
//! [`crate::edge::tokens::meter`]) and for the provider's usage chunk,
//! which corrects the estimate. The relay asks every provider for that
//! chunk (`stream_options.include_usage`); a client that did not ask for it
//! does not get it.
//!
//! The splice reads each event once ([`crate::providers::event`]) and
//! hands its counts along with the frames, so metering parses nothing on
//! a stream; only a non-streamed answer is read here.

use std::borrow::Cow;

use bytes::BytesMut;
use serde::Deserialize;

use crate::{
    edge::{Spent, TokenMeter},
    providers::event::Frames,
};

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

/// Charges the events of `frames` to `meter`; returns what goes to the
/// client (the bytes themselves unless a usage chunk the client did not
/// ask for is cut out) and the budget spent, if one is.
pub fn meter_frames(
    frames: Frames,
    meter: &mut TokenMeter,
    client_wants_usage: bool,
) -> (bytes::Bytes, Option<Spent>) {
    let text = |meter: &mut TokenMeter, n: u64| (n > 0).then(|| meter.completion(n)).flatten();
    let mut spent = text(meter, frames.text);
    for u in &frames.usage {
        let now = meter.step_done(Some((u.prompt, u.completion)));
        spent = spent.or(now).or(text(meter, u.text_after));
    }
    if client_wants_usage || frames.usage.is_empty() {
        return (frames.bytes, spent);
    }
    let b = &frames.bytes;
    let mut out = BytesMut::with_capacity(b.len());
    let mut at = 0;
    for u in &frames.usage {
        out.extend_from_slice(&b[at..u.start]);
        at = u.end;
    }
    out.extend_from_slice(&b[at..]);
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
        message: Option<Message<'a>>,
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
        .map(|m| m.content.as_deref().map_or(0, |s| s.chars().count() as u64))
        .sum();
    meter.completion(text);
    meter.step_done(None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        providers::{
            event,
            sse::{data_of, events},
        },
        usage::{UsageKey, UsageMeter},
    };
    use bytes::Bytes;
    use std::sync::Arc;

    /// `bytes` read as the splice reads them.
    fn read(bytes: Bytes) -> Frames {
        let mut f = Frames::default();
        for (a, b) in events(&bytes) {
            let data = data_of(&bytes[a..b]).unwrap();
            if let Ok(e) = event::read(data, false) {
                f.count(&e, a, b);
            }
        }
        f.bytes = bytes;
        f
    }

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
        let (out, spent) = meter_frames(read(frames.clone()), &mut m, false);
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
        let (out, _) = meter_frames(read(Bytes::from(all.clone())), &mut m, false);
        assert_eq!(&out[..], &[TEXT, b"data: [DONE]\n\n"].concat()[..]);
        let (kept, _) = meter_frames(read(Bytes::from(USAGE)), &mut meter(&usage), true);
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
