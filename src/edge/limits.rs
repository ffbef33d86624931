//! Size limits on what a request may carry besides its body: the request
//! head (line plus headers) and the nesting depth of a JSON body.
//!
//! hyper already refuses more than 100 headers or a head over ~400 KiB with a
//! bare 431 before weir sees the request; [`check_head`] is the configured,
//! much smaller, head size (the HTTP layer answers it with the envelope). JSON depth is
//! checked by a byte scan before parsing: serde_json's own recursion limit
//! (128) would catch a deeper body too, but with a parser error that does not
//! say what is wrong, and API bodies are never that deep.

use axum::http::{HeaderMap, Uri};

use crate::domain::ErrorCode;

/// Deepest nesting of arrays and objects accepted in a JSON body or frame
/// (an agent's metadata or a tool's JSON Schema nest a few levels; 64 leaves
/// room for deep schemas).
pub const MAX_JSON_DEPTH: usize = 64;

/// A request head over the configured size.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the request line and headers exceed {max} bytes")]
pub struct HeadTooLarge {
    pub max: usize,
}

impl HeadTooLarge {
    /// The code a client is shown (a 431).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::HeadersTooLarge
    }
}

/// Fails when the request line and headers together exceed `max` bytes
/// (counted as sent: name, `: `, value, CRLF).
pub fn check_head(uri: &Uri, headers: &HeaderMap, max: usize) -> Result<(), HeadTooLarge> {
    let head = written_len(uri)
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    match head > max {
        true => Err(HeadTooLarge { max }),
        false => Ok(()),
    }
}

/// How long `v` is written out, without writing it anywhere (a request's
/// URI is measured on every request).
fn written_len(v: &impl std::fmt::Display) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = std::fmt::write(&mut c, format_args!("{v}"));
    c.0
}

/// The deepest nesting of `[`/`{` in `json` (strings skipped), stopping early
/// once it passes `max`.
pub fn json_depth(json: &[u8], max: usize) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    if deepest > max {
                        return deepest;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Fails with a message naming the limit when `json` nests deeper than
/// [`MAX_JSON_DEPTH`].
pub fn check_json_depth(json: &[u8]) -> Result<(), String> {
    if json_depth(json, MAX_JSON_DEPTH) > MAX_JSON_DEPTH {
        return Err(format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_nesting_and_skips_strings() {
        assert_eq!(json_depth(b"1", 64), 0);
        assert_eq!(json_depth(br#"{"a":[1,{"b":[]}]}"#, 64), 4);
        assert_eq!(json_depth(br#"{"a":"[[[[{{{\"]]"}"#, 64), 1);
        assert_eq!(json_depth(br#"[["\\"],[[]]]"#, 64), 3);
        let deep = "[".repeat(100_000);
        assert_eq!(json_depth(deep.as_bytes(), 64), 65, "stops early");
        assert!(
            check_json_depth(format!("{}{}", "[".repeat(64), "]".repeat(64)).as_bytes()).is_ok()
        );
        let e = check_json_depth(format!("{}{}", "[".repeat(65), "]".repeat(65)).as_bytes());
        assert!(e.unwrap_err().contains("64 levels"));
    }

    #[test]
    fn a_uri_is_measured_as_written() {
        for u in ["/v1/agents?limit=5&api_key=k", "http://h:80/p?q", "*", "/"] {
            let uri: Uri = u.parse().unwrap();
            assert_eq!(written_len(&uri), uri.to_string().len(), "{u}");
        }
    }
}
