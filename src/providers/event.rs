//! One read of a relayed chunk's JSON, shared by everything that needs
//! it: the splice (is it an error, or malformed? its `id`, `model`,
//! `created`, `finish_reason`, tool calls, and its text with
//! `mid_stream = "continue"`) and the token metering (the characters of
//! text it carries, and the provider's usage chunk). Each event used to be
//! parsed twice, once by each; the relay's profile showed the second parse.
//!
//! Only the fields read are decoded, borrowing strings where they have no
//! escapes: the rest of the chunk is skipped (still checked as JSON).

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

/// The fields of one `chat.completion.chunk` that the relay reads.
#[derive(Deserialize)]
pub struct Event<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default, borrow)]
    pub choices: Vec<Choice<'a>>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Deserialize)]
pub struct Choice<'a> {
    #[serde(default, borrow)]
    pub delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub struct Delta<'a> {
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub reasoning_content: Option<Cow<'a, str>>,
    /// `None` when absent or `null`.
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
pub struct ToolCall<'a> {
    #[serde(default, borrow)]
    pub function: Option<Function<'a>>,
}

#[derive(Deserialize)]
pub struct Function<'a> {
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Clone, Copy)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

fn chars(s: &Option<Cow<'_, str>>) -> u64 {
    s.as_deref().map_or(0, |s| s.chars().count() as u64)
}

impl Event<'_> {
    /// The provider's usage chunk (no choices, a `usage`).
    pub fn usage_only(&self) -> Option<Usage> {
        self.usage.filter(|_| self.choices.is_empty())
    }

    /// Characters of completion text (content, reasoning, tool call names
    /// and arguments): what the token estimate counts.
    pub fn text_chars(&self) -> u64 {
        self.choices
            .iter()
            .filter_map(|c| c.delta.as_ref())
            .map(|d| {
                let calls = d.tool_calls.iter().flatten();
                let calls = calls.filter_map(|t| t.function.as_ref());
                chars(&d.content)
                    + chars(&d.reasoning_content)
                    + calls
                        .map(|f| chars(&f.name) + chars(&f.arguments))
                        .sum::<u64>()
            })
            .sum()
    }
}

/// A provider's usage chunk among forwarded frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsageAt {
    /// The event's bytes in [`Frames::bytes`].
    pub start: usize,
    pub end: usize,
    pub prompt: u64,
    pub completion: u64,
    /// Characters of text in the events after it (up to the next usage
    /// chunk).
    pub text_after: u64,
}

/// Whole SSE events to forward, with what metering needs to know of them
/// (read once, by the splice).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frames {
    pub bytes: Bytes,
    /// Characters of text in the events before the first usage chunk.
    pub text: u64,
    /// The usage chunks, in order (empty, and not allocated, for all but
    /// a stream's last frames).
    pub usage: Vec<UsageAt>,
}

impl Frames {
    /// Notes what the event at `start..end` of the bytes says.
    pub fn count(&mut self, e: &Event<'_>, start: usize, end: usize) {
        if let Some(u) = e.usage_only() {
            self.usage.push(UsageAt {
                start,
                end,
                prompt: u.prompt_tokens,
                completion: u.completion_tokens,
                text_after: 0,
            });
            return;
        }
        let n = e.text_chars();
        match self.usage.last_mut() {
            Some(u) => u.text_after += n,
            None => self.text += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_usage_are_read_from_one_parse() {
        let e: Event<'_> = serde_json::from_slice(br#"{"id":"c","choices":[{"delta":{"content":"h\u00e9","reasoning_content":"ab","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}]}"#).unwrap();
        assert_eq!((e.text_chars(), e.usage_only().is_none()), (7, true));
        let u: Event<'_> = serde_json::from_slice(
            br#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}"#,
        )
        .unwrap();
        let mut f = Frames::default();
        f.count(&e, 0, 10);
        f.count(&u, 10, 20);
        f.count(&e, 20, 30);
        assert_eq!(f.text, 7);
        assert_eq!(
            f.usage,
            vec![UsageAt {
                start: 10,
                end: 20,
                prompt: 9,
                completion: 3,
                text_after: 7
            }]
        );
        let nulls: Event<'_> = serde_json::from_slice(
            br#"{"choices":[{"delta":{"content":null,"tool_calls":null}}],"usage":null}"#,
        )
        .unwrap();
        assert_eq!(nulls.text_chars(), 0);
    }
}
