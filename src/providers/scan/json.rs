//! The JSON under the scanner ([`super`]): a cursor over a chunk's bytes
//! that checks each value as serde would and gives up (`None`) on anything
//! it is not sure of. Strings are read eight bytes a step.

use std::borrow::Cow;

/// Deeper than this, serde decides (its own limit is 128).
const MAX_DEPTH: u32 = 64;

/// A string as it stands in the JSON, between its quotes.
pub(super) struct Str<'a> {
    pub(super) raw: &'a str,
    pub(super) escaped: bool,
}

impl<'a> Str<'a> {
    /// The decoded text, if it needs no decoding.
    #[inline]
    pub(super) fn plain(self) -> Option<Cow<'a, str>> {
        (!self.escaped).then_some(Cow::Borrowed(self.raw))
    }

    /// Characters once decoded (the escapes were checked by the scan).
    #[inline]
    pub(super) fn chars(&self) -> u64 {
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
#[inline(always)]
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

pub(super) struct Scanner<'a> {
    b: &'a [u8],
    /// The same bytes, checked UTF-8 once for all strings.
    text: &'a str,
    i: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    #[inline]
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            b: text.as_bytes(),
            text,
            i: 0,
            depth: 0,
        }
    }

    /// Whether only whitespace is left.
    #[inline]
    pub(super) fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(w).then(|| self.i += w.len())
    }

    /// Consumes a `null` if one comes next.
    #[inline]
    pub(super) fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.word(b"null").is_some()
    }

    /// `null` (`None`), or what `f` reads.
    pub(super) fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.null() {
            true => Some(None),
            false => f(self).map(Some),
        }
    }

    #[inline]
    pub(super) fn opt_str(&mut self) -> Option<Option<Str<'a>>> {
        self.opt(Self::string)
    }

    /// `null`, or a string that needs no decoding.
    #[inline]
    pub(super) fn opt_plain(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.opt_str()? {
            None => Some(None),
            Some(s) => Some(Some(s.plain()?)),
        }
    }

    /// A non-negative integer that fits an `i64` (18 digits at most),
    /// written as serde reads one (no leading zero, no fraction).
    #[inline]
    pub(super) fn uint(&mut self) -> Option<u64> {
        self.ws();
        let start = self.i;
        let mut n = 0u64;
        while let Some(&d @ b'0'..=b'9') = self.b.get(self.i) {
            // Wrapping: past 18 digits the value is refused below anyway,
            // and a plain multiply would panic in builds with overflow checks.
            n = n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.i += 1;
        }
        let len = self.i - start;
        let leading_zero = len > 1 && self.b[start] == b'0';
        let fraction = matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'));
        (len > 0 && len <= 18 && !leading_zero && !fraction).then_some(n)
    }

    /// A string (the next value must be one).
    #[inline(always)]
    fn string(&mut self) -> Option<Str<'a>> {
        self.eat(b'"')?;
        let start = self.i;
        let mut end = stop(self.b, start);
        let mut escaped = false;
        while self.b.get(end) == Some(&b'\\') {
            escaped = true;
            self.i = end + 1;
            self.escape()?;
            end = stop(self.b, self.i);
        }
        // Else a control character (serde refuses them) or the end.
        (self.b.get(end) == Some(&b'"')).then_some(())?;
        self.i = end + 1;
        Some(Str {
            raw: self.text.get(start..end)?,
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
    pub(super) fn object(
        &mut self,
        mut each: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
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
    pub(super) fn array(&mut self, mut each: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
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
    pub(super) fn skip(&mut self) -> Option<()> {
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
