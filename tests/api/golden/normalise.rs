//! What varies from run to run, replaced by stable placeholders; everything
//! else is left byte for byte.
//!
//! - ids (`agent-…`, `run-…`, `sess-…`, `msg-…`, `log-…`, `tool-…`, `key-…`,
//!   `req-…`, `chatcmpl-…`): `<agent-1>`, numbered per kind by first
//!   appearance in the file, so an id that must repeat (a run's id in each of
//!   its events, a request id in header and body) still has to. The random
//!   part is what is numbered: `chatcmpl-<suffix of run 2>` becomes
//!   `<chatcmpl-of-run-2>`;
//! - key secrets `wk_<key id>_<random>`: `wk_<key-3>_<secret>`;
//! - RFC 3339 timestamps: `<date>`; unix seconds within three days of now:
//!   `<unix>`; loopback ports: `127.0.0.1:<port>`; `<digits> ms`: `<n> ms`;
//! - a key's `last_used_at`, written in batches in the background: null or
//!   a date depending on timing, so `<date-or-null>`.
//!
//! Hand-written rather than with regexes: the crate has no regex dependency
//! and the rules are a few fixed shapes.

use std::collections::HashMap;

/// Kinds of ids, as `util::new_id` prefixes them.
const ID_KINDS: &[&str] = &[
    "chatcmpl", "agent", "run", "sess", "msg", "log", "tool", "key", "req",
];
/// Shortest random part taken for an id (key ids have 16, others 20), so
/// test-made ids like `agent-missing` stay as they are.
const MIN_RANDOM: usize = 12;
/// How far from now a 10-digit number may be to count as a unix time.
const UNIX_WINDOW: u64 = 3 * 24 * 3600;

/// Normalises a whole transcript (numbering follows the text order).
pub fn normalise(text: &str) -> String {
    let mut n = Normaliser::default();
    let out = n.run(text.as_bytes());
    let out = String::from_utf8(out).expect("placeholders keep UTF-8 boundaries");
    out.replace(
        "\"last_used_at\":\"<date>\"",
        "\"last_used_at\":<date-or-null>",
    )
    .replace("\"last_used_at\":null", "\"last_used_at\":<date-or-null>")
}

#[derive(Default)]
struct Normaliser {
    /// Random part → (kind it was first seen with, number).
    labels: HashMap<String, (&'static str, usize)>,
    counts: HashMap<&'static str, usize>,
}

impl Normaliser {
    fn run(&mut self, s: &[u8]) -> Vec<u8> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            let boundary = i == 0 || !is_word(s[i - 1]);
            let found = if boundary {
                self.secret(s, i)
                    .or_else(|| date(s, i))
                    .or_else(|| port(s, i))
                    .or_else(|| self.id(s, i))
                    .or_else(|| number(s, i, now))
            } else {
                None
            };
            match found {
                Some((len, text)) => {
                    out.extend_from_slice(text.as_bytes());
                    i += len;
                }
                None => {
                    out.push(s[i]);
                    i += 1;
                }
            }
        }
        out
    }

    fn label(&mut self, kind: &'static str, random: &[u8]) -> (&'static str, usize) {
        let random = String::from_utf8_lossy(random).into_owned();
        if let Some(l) = self.labels.get(&random) {
            return *l;
        }
        let n = self.counts.entry(kind).or_insert(0);
        *n += 1;
        let l = (kind, *n);
        self.labels.insert(random, l);
        l
    }

    /// `wk_<16>_<32>` → `wk_<key-N>_<secret>`.
    fn secret(&mut self, s: &[u8], i: usize) -> Option<(usize, String)> {
        let rest = s[i..].strip_prefix(b"wk_")?;
        let id = alnum_run(rest);
        let after = rest.get(id..)?.strip_prefix(b"_")?;
        let secret = alnum_run(after);
        if id != 16 || secret != 32 || after.get(secret).is_some_and(|b| is_word(*b)) {
            return None;
        }
        let (kind, n) = self.label("key", &rest[..id]);
        Some((3 + id + 1 + secret, format!("wk_<{kind}-{n}>_<secret>")))
    }

    /// `<kind>-<random>` → `<kind-N>` (or `<kind-of-first-kind-N>`).
    fn id(&mut self, s: &[u8], i: usize) -> Option<(usize, String)> {
        for kind in ID_KINDS {
            let Some(rest) = s[i..]
                .strip_prefix(kind.as_bytes())
                .and_then(|r| r.strip_prefix(b"-"))
            else {
                continue;
            };
            let len = alnum_run(rest);
            if !(MIN_RANDOM..=64).contains(&len) || rest.get(len).is_some_and(|b| is_word(*b)) {
                continue;
            }
            let (first, n) = self.label(kind, &rest[..len]);
            let text = if first == *kind {
                format!("<{kind}-{n}>")
            } else {
                format!("<{kind}-of-{first}-{n}>")
            };
            return Some((kind.len() + 1 + len, text));
        }
        None
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn alnum_run(s: &[u8]) -> usize {
    s.iter().take_while(|b| b.is_ascii_alphanumeric()).count()
}

fn digits(s: &[u8]) -> usize {
    s.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` → `<date>`.
fn date(s: &[u8], i: usize) -> Option<(usize, String)> {
    let shape = b"dddd-dd-ddTdd:dd:dd";
    let t = s.get(i..i + shape.len())?;
    let fits = shape.iter().zip(t).all(|(want, got)| {
        if *want == b'd' {
            got.is_ascii_digit()
        } else {
            want == got
        }
    });
    if !fits {
        return None;
    }
    let mut len = shape.len();
    if s.get(i + len) == Some(&b'.') {
        let frac = digits(&s[i + len + 1..]);
        if frac == 0 {
            return None;
        }
        len += 1 + frac;
    }
    (s.get(i + len) == Some(&b'Z')).then(|| (len + 1, "<date>".to_owned()))
}

/// `127.0.0.1:<port>` / `localhost:<port>`.
fn port(s: &[u8], i: usize) -> Option<(usize, String)> {
    for host in ["127.0.0.1:", "localhost:"] {
        if let Some(rest) = s[i..].strip_prefix(host.as_bytes()) {
            let n = digits(rest);
            if n > 0 {
                return Some((host.len() + n, format!("{host}<port>")));
            }
        }
    }
    None
}

/// Unix seconds near now → `<unix>`; `<digits> ms` → `<n> ms`.
fn number(s: &[u8], i: usize, now: u64) -> Option<(usize, String)> {
    let n = digits(&s[i..]);
    if n == 0 || (i > 0 && s[i - 1] == b'.') {
        return None;
    }
    let rest = &s[i + n..];
    if rest.starts_with(b" ms") && !rest.get(3).is_some_and(|b| is_word(*b)) {
        return Some((n + 3, "<n> ms".to_owned()));
    }
    if n != 10 || rest.first() == Some(&b'.') {
        return None;
    }
    let v: u64 = std::str::from_utf8(&s[i..i + n]).ok()?.parse().ok()?;
    (v.abs_diff(now) <= UNIX_WINDOW).then(|| (n, "<unix>".to_owned()))
}

#[test]
fn golden_placeholders_number_ids_by_first_appearance() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let text = format!(
        "{{\"id\":\"run-AAAAAAAAAAAAAAAAAAAA\",\"agent\":\"agent-BBBBBBBBBBBBBBBBBBBB\",\
         \"again\":\"run-AAAAAAAAAAAAAAAAAAAA\",\"other\":\"run-CCCCCCCCCCCCCCCCCCCC\"}} \
         chatcmpl-CCCCCCCCCCCCCCCCCCCC agent-missing /v1/agents/agent-BBBBBBBBBBBBBBBBBBBB \
         key-DDDDDDDDDDDDDDDD wk_DDDDDDDDDDDDDDDD_EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE \
         2026-11-23T15:04:05.120Z 1970-01-01T00:00:00Z created\":{now},\"old\":1700000000 \
         http://127.0.0.1:43121/v1 after 12 ms, in 0 ms; max_steps 10 \
         \"last_used_at\":null"
    );
    assert_eq!(
        normalise(&text),
        "{\"id\":\"<run-1>\",\"agent\":\"<agent-1>\",\"again\":\"<run-1>\",\"other\":\"<run-2>\"} \
         <chatcmpl-of-run-2> agent-missing /v1/agents/<agent-1> \
         <key-1> wk_<key-1>_<secret> \
         <date> <date> created\":<unix>,\"old\":1700000000 \
         http://127.0.0.1:<port>/v1 after <n> ms, in <n> ms; max_steps 10 \
         \"last_used_at\":<date-or-null>"
    );
}
