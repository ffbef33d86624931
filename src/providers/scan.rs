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

use std::borrow::Cow;

use super::event::{Event, Usage};

/// Deeper than this, serde decides (its own limit is 128).
const MAX_DEPTH: u32 = 64;

/// A string as it stands in the JSON, between its quotes.
struct Str<'a> {
    raw: &'a str,
    escaped: bool,
}

impl<'a> Str<'a> {
    /// The decoded text, if it needs no decoding.
    fn plain(self) -> Option<Cow<'a, str>> {
        (!self.escaped).then_some(Cow::Borrowed(self.raw))
    }

    /// Characters once decoded (the escapes were checked by the scan).
    fn chars(&self) -> u64 {
        if !self.escaped {
            return self.raw.chars().count() as u64;
        }
        let (b, mut i, mut n) = (self.raw.as_bytes(), 0, 0);
        while i < b.len() {
            let (step, chars) = match (b[i], b.get(i + 1)) {
                // A surrogate pair (checked by the scan): one character.
                (b'\\', Some(b'u')) if matches!(b[i + 2], b'd' | b'D') && b[i + 3] >= b'8' => {
                    (12, 1)
                }
                (b'\\', Some(b'u')) => (6, 1),
                (b'\\', _) => (2, 1),
                // Continuation bytes are not characters.
                (c, _) => (1, u64::from(c & 0xc0 != 0x80)),
            };
            i += step;
            n += chars;
        }
        n
    }
}

/// The index of the first `"`, `\` or control character in `b` at or
/// after `i` (`b.len()` if none): eight bytes a step, as serde_json's
/// `skip_to_escape` does.
#[inline]
fn stop(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    let has = |x: u64, c: u8| {
        let y = x ^ (ONES * u64::from(c));
        y.wrapping_sub(ONES) & !y
    };
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let control = x.wrapping_sub(ONES * 0x20) & !x;
        // The lowest flagged byte is a true match (higher ones may not be).
        let hits = (control | has(x, b'"') | has(x, b'\\')) & (ONES << 7);
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + b[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(b.len() - i)
}

/// The JSON of `data`, as serde would read it into an [`Event`], or `None`
/// when the scanner is not sure (module doc). `text` (the joined
/// `delta.content`) is read only when `keep_text`.
pub fn scan(data: &[u8], keep_text: bool) -> Option<Event<'_>> {
    let text = std::str::from_utf8(data).ok()?;
    let mut s = Scanner {
        b: text.as_bytes(),
        text,
        i: 0,
        depth: 0,
    };
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
    s.ws();
    (s.i == s.b.len()).then_some(e)
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

struct Scanner<'a> {
    b: &'a [u8],
    /// The same bytes, checked UTF-8 once for all strings.
    text: &'a str,
    i: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(w).then(|| self.i += w.len())
    }

    /// Consumes a `null` if one comes next.
    fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.word(b"null").is_some()
    }

    /// `null` (`None`), or what `f` reads.
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.null() {
            true => Some(None),
            false => f(self).map(Some),
        }
    }

    fn opt_str(&mut self) -> Option<Option<Str<'a>>> {
        self.opt(Self::string)
    }

    /// `null`, or a string that needs no decoding.
    fn opt_plain(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.opt_str()? {
            None => Some(None),
            Some(s) => Some(Some(s.plain()?)),
        }
    }

    /// A non-negative integer that fits an `i64` (18 digits at most),
    /// written as serde reads one (no leading zero, no fraction).
    fn uint(&mut self) -> Option<u64> {
        self.ws();
        let start = self.i;
        let mut n = 0u64;
        while let Some(&d @ b'0'..=b'9') = self.b.get(self.i) {
            n = n * 10 + u64::from(d - b'0');
            self.i += 1;
        }
        let len = self.i - start;
        let leading_zero = len > 1 && self.b[start] == b'0';
        let fraction = matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'));
        (len > 0 && len <= 18 && !leading_zero && !fraction).then_some(n)
    }

    /// A string (the next value must be one).
    #[inline]
    fn string(&mut self) -> Option<Str<'a>> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i = stop(self.b, self.i);
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    self.escape()?;
                }
                // serde refuses control characters in strings.
                _ => return None,
            }
        }
        self.i += 1;
        Some(Str {
            raw: &self.text[start..self.i - 1],
            escaped,
        })
    }

    /// After a `\`: one escape; a `\u` surrogate pair is one character, a
    /// lone surrogate is left to serde.
    fn escape(&mut self) -> Option<()> {
        match *self.b.get(self.i)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
            b'u' => match self.hex4()? {
                0xd800..=0xdbff => {
                    self.word(b"\\u")?;
                    self.i -= 1;
                    (0xdc00..=0xdfff).contains(&self.hex4()?).then_some(())?;
                }
                0xdc00..=0xdfff => return None,
                _ => {}
            },
            _ => return None,
        }
        Some(())
    }

    /// At a `u`: it and four hex digits.
    fn hex4(&mut self) -> Option<u32> {
        let digits = std::str::from_utf8(self.b.get(self.i + 1..self.i + 5)?).ok()?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 5;
        u32::from_str_radix(digits, 16).ok()
    }

    /// An object, `each` called at every value with its (unescaped) key.
    fn object(&mut self, mut each: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.nest()?;
        if self.peek()? != b'}' {
            loop {
                let key = self.string()?;
                if key.escaped {
                    return None;
                }
                self.eat(b':')?;
                each(self, key.raw.as_bytes())?;
                if self.peek()? == b'}' {
                    break;
                }
                self.eat(b',')?;
            }
        }
        self.i += 1;
        self.depth -= 1;
        Some(())
    }

    /// An array, `each` called at every element.
    fn array(&mut self, mut each: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.nest()?;
        if self.peek()? != b']' {
            loop {
                each(self)?;
                if self.peek()? == b']' {
                    break;
                }
                self.eat(b',')?;
            }
        }
        self.i += 1;
        self.depth -= 1;
        Some(())
    }

    fn nest(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// Any value, checked and not read.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.skip()),
            b'[' => self.array(Self::skip),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => self.number(),
        }
    }

    /// A JSON number, as serde's grammar has it.
    fn number(&mut self) -> Option<()> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        // `01` is not a number to serde.
        (!matches!(self.b.get(self.i), Some(b'0'..=b'9'))).then_some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
