//! A one-pass byte scanner for a relayed chunk's JSON: the fast path of
//! [`super::event::read`]. serde_json spent ~5,300 instructions on each
//! ~200-byte `chat.completion.chunk` of the relay's profile (UTF-8
//! validation per string, field matching, a `Vec` per `choices`), about a
//! quarter of a relayed request.
//!
//! It answers only when it is sure: a chunk of the usual shape, which it
//! checks as JSON while reading it. Anything else (escaped keys, a number
//! where a string goes, a duplicate field, an `error` that is not `null`,
//! deep nesting, bytes that are not UTF-8, escaped text it would have to
//! decode, …) returns `None`, and the caller parses with serde, whose
//! result or error then stands. So where it answers, it answers what serde
//! would have (a test compares the two over mutated chunks).

use super::event::{Event, Usage};

mod json;
#[cfg(test)]
mod tests;

use json::Scanner;

/// The JSON of `data`, as serde would read it into an [`Event`], or `None`
/// when the scanner is not sure (module doc). `text` (the joined
/// `delta.content`) is read only when `keep_text`.
pub fn scan(data: &[u8], keep_text: bool) -> Option<Event<'_>> {
    let text = std::str::from_utf8(data).ok()?;
    let mut s = Scanner::new(text);
    let mut e = Event::default();
    let mut seen = 0u32;
    s.object(|s, key| {
        match key {
            b"id" => {
                once(&mut seen, 0)?;
                e.id = s.opt_plain()?;
            }
            b"model" => {
                once(&mut seen, 1)?;
                e.model = s.opt_plain()?;
            }
            b"created" => {
                once(&mut seen, 2)?;
                // At most 18 digits: an i64.
                e.created = s.opt(Scanner::uint)?.map(|n| n as i64);
            }
            b"choices" => {
                once(&mut seen, 3)?;
                s.array(|s| choice(s, &mut e, keep_text))?;
            }
            b"usage" => {
                once(&mut seen, 4)?;
                e.usage = s.opt(usage)?;
            }
            // A provider's error: serde reads it (and its message).
            b"error" => {
                once(&mut seen, 5)?;
                s.null().then_some(())?;
            }
            _ => s.skip()?,
        }
        Some(())
    })?;
    s.at_end().then_some(e)
}

/// Fails on a field's second appearance (serde refuses duplicates).
fn once(seen: &mut u32, bit: u32) -> Option<()> {
    let had = *seen & (1 << bit) != 0;
    *seen |= 1 << bit;
    (!had).then_some(())
}

fn choice<'a>(s: &mut Scanner<'a>, e: &mut Event<'a>, keep_text: bool) -> Option<()> {
    e.choices += 1;
    let mut seen = 0u32;
    s.object(|s, key| {
        match key {
            b"delta" => {
                once(&mut seen, 0)?;
                if !s.null() {
                    delta(s, e, keep_text)?;
                }
            }
            b"finish_reason" => {
                once(&mut seen, 1)?;
                e.finished |= s.opt_str()?.is_some();
            }
            _ => s.skip()?,
        }
        Some(())
    })
}

fn delta<'a>(s: &mut Scanner<'a>, e: &mut Event<'a>, keep_text: bool) -> Option<()> {
    let mut seen = 0u32;
    s.object(|s, key| {
        match key {
            b"content" => {
                once(&mut seen, 0)?;
                if let Some(t) = s.opt_str()? {
                    e.text_chars += t.chars();
                    if keep_text {
                        super::event::join(&mut e.text, t.plain()?);
                    }
                }
            }
            b"reasoning_content" => {
                once(&mut seen, 1)?;
                e.text_chars += s.opt_str()?.map_or(0, |t| t.chars());
            }
            b"tool_calls" => {
                once(&mut seen, 2)?;
                if !s.null() {
                    e.tool_calls = true;
                    s.array(|s| tool_call(s, e))?;
                }
            }
            _ => s.skip()?,
        }
        Some(())
    })
}

fn tool_call(s: &mut Scanner<'_>, e: &mut Event<'_>) -> Option<()> {
    let mut seen = 0u32;
    s.object(|s, key| {
        match key {
            b"function" => {
                once(&mut seen, 0)?;
                if !s.null() {
                    let mut seen = 0u32;
                    s.object(|s, key| {
                        let bit = match key {
                            b"name" => 0,
                            b"arguments" => 1,
                            _ => return s.skip(),
                        };
                        once(&mut seen, bit)?;
                        e.text_chars += s.opt_str()?.map_or(0, |t| t.chars());
                        Some(())
                    })?;
                }
            }
            _ => s.skip()?,
        }
        Some(())
    })
}

fn usage(s: &mut Scanner<'_>) -> Option<Usage> {
    let mut u = Usage::default();
    let mut seen = 0u32;
    s.object(|s, key| {
        let (bit, to) = match key {
            b"prompt_tokens" => (0, &mut u.prompt_tokens),
            b"completion_tokens" => (1, &mut u.completion_tokens),
            _ => return s.skip(),
        };
        once(&mut seen, bit)?;
        // `null` is not a number to serde.
        *to = s.uint()?;
        Some(())
    })?;
    Some(u)
}
