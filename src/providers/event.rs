//! One read of a relayed chunk's JSON, shared by everything that needs
//! it: the splice (is it an error, or malformed? its `id`, `model`,
//! `created`, `finish_reason`, tool calls, and its text with
//! `mid_stream = "continue"`) and the token metering (the characters of
//! text it carries, and the provider's usage chunk). Each event used to be
//! parsed twice, once by each; the relay's profile showed the second parse.
//!
//! [`read`] tries the byte scanner ([`super::scan`]) first, which answers
//! for chunks of the usual shape at a fraction of serde's cost, and parses
//! with serde whenever the scanner is not sure; [`SCANNER`] turns the
//! scanner off (serde for every event). With serde, only the fields read
//! are decoded, borrowing strings where they have no escapes: the rest of
//! the chunk is skipped (still checked as JSON).

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

/// `false`: every event through serde (the plain path), to compare.
const SCANNER: bool = true;

/// What the relay reads of one `chat.completion.chunk`.
#[derive(Debug, Default, PartialEq)]
pub struct Event<'a> {
    pub id: Option<Cow<'a, str>>,
    pub model: Option<Cow<'a, str>>,
    pub created: Option<i64>,
    /// How many `choices` it has.
    pub choices: usize,
    /// A choice has a `finish_reason`.
    pub finished: bool,
    /// A choice's delta has `tool_calls` (even empty).
    pub tool_calls: bool,
    pub usage: Option<Usage>,
    /// Characters of completion text (content, reasoning, tool call names
    /// and arguments): what the token estimate counts.
    pub text_chars: u64,
    /// The choices' `delta.content`, joined; read only when asked (for
    /// `mid_stream = "continue"`).
    pub text: Cow<'a, str>,
}

#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

impl Event<'_> {
    /// The provider's usage chunk (no choices, a `usage`).
    pub fn usage_only(&self) -> Option<Usage> {
        self.usage.filter(|_| self.choices == 0)
    }
}

/// The event whose `data` is `data`, or why the stream fails: the
/// message of a malformed event or of a provider's `error`.
pub fn read(data: &[u8], keep_text: bool) -> Result<Event<'_>, String> {
    if SCANNER {
        if let Some(e) = super::scan::scan(data, keep_text) {
            return Ok(e);
        }
    }
    parse(data, keep_text)
}

/// [`read`] by serde alone.
pub(super) fn parse(data: &[u8], keep_text: bool) -> Result<Event<'_>, String> {
    let chunk = serde_json::from_slice::<Chunk<'_>>(data)
        .map_err(|e| format!("the provider sent a malformed event: {e}"))?;
    if let Some(err) = &chunk.error {
        let message = err.get("message").and_then(Value::as_str);
        let message = message.unwrap_or("(no message)");
        return Err(format!("the provider sent an error: {message}"));
    }
    Ok(chunk.into_event(keep_text))
}

/// `more` after `text`, borrowed while it is the only piece.
pub(super) fn join<'a>(text: &mut Cow<'a, str>, more: Cow<'a, str>) {
    match text.is_empty() {
        true => *text = more,
        false => text.to_mut().push_str(&more),
    }
}

/// The fields of one `chat.completion.chunk` that the relay reads, as
/// serde reads them.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    /// `None` when absent or `null`.
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
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

fn chars(s: &Option<Cow<'_, str>>) -> u64 {
    s.as_deref().map_or(0, |s| s.chars().count() as u64)
}

impl<'a> Chunk<'a> {
    fn into_event(self, keep_text: bool) -> Event<'a> {
        let mut e = Event {
            id: self.id,
            model: self.model,
            created: self.created,
            choices: self.choices.len(),
            usage: self.usage,
            ..Event::default()
        };
        for c in self.choices {
            e.finished |= c.finish_reason.is_some();
            let Some(d) = c.delta else { continue };
            e.tool_calls |= d.tool_calls.is_some();
            let calls = d.tool_calls.iter().flatten();
            let calls = calls.filter_map(|t| t.function.as_ref());
            e.text_chars += chars(&d.content)
                + chars(&d.reasoning_content)
                + calls
                    .map(|f| chars(&f.name) + chars(&f.arguments))
                    .sum::<u64>();
            if let (true, Some(t)) = (keep_text, d.content) {
                join(&mut e.text, t);
            }
        }
        e
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
        let n = e.text_chars;
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
        let e = read(br#"{"id":"c","choices":[{"delta":{"content":"h\u00e9","reasoning_content":"ab","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}]}"#, false).unwrap();
        assert_eq!((e.text_chars, e.usage_only().is_none()), (7, true));
        let u = read(
            br#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}"#,
            false,
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
        let nulls = read(
            br#"{"choices":[{"delta":{"content":null,"tool_calls":null}}],"usage":null}"#,
            false,
        )
        .unwrap();
        assert_eq!(nulls.text_chars, 0);
    }

    #[test]
    fn errors_and_malformed_events_say_why() {
        let err = read(br#"{"error":{"message":"overloaded"}}"#, false);
        assert_eq!(err.unwrap_err(), "the provider sent an error: overloaded");
        let err = read(br#"{"error":"x"}"#, false);
        assert_eq!(err.unwrap_err(), "the provider sent an error: (no message)");
        assert!(read(br#"{"error":null}"#, false).is_ok());
        let bad = read(b"{not json", false).unwrap_err();
        assert!(
            bad.starts_with("the provider sent a malformed event: key must be a string"),
            "{bad}"
        );
    }
}
