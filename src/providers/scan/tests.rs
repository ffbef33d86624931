//! The scanner against serde: where it answers, serde answers the same.

use super::scan;
use crate::providers::event::{parse, Event};

/// Chunks of the shapes providers send.
const CHUNKS: &[&str] = &[
    r#"{"id":"chatcmpl-fake","object":"chat.completion.chunk","created":0,"model":"fake","choices":[{"index":0,"delta":{"role":"assistant","content":"tok0 "},"finish_reason":null}]}"#,
    r#"{"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1733400000,"model":"fake","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    r#"{"id":"c","object":"chat.completion.chunk","created":0,"model":"fake","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":16,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":0}}}"#,
    r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":"}}]},"finish_reason":null}]}"#,
    r#"{"id":"c","choices":[{"delta":{"reasoning_content":"think é","content":null,"tool_calls":null},"logprobs":{"content":[{"token":"a","logprob":-0.5e-3,"bytes":[97],"top_logprobs":[]}]},"finish_reason":null}],"usage":null,"system_fingerprint":"fp_1","x":[true,false,null,1.5E+2,-0,{}]}"#,
    r#"{"choices":[{"delta":{"content":"Grüße 👋 日本"}},{"delta":{"content":"two"},"finish_reason":"length"}]}"#,
    r#"{"choices":[{"delta":{"content":"line\nbreak \"q\" \u00e9 \ud83d\ude00 \/ \t"}}]}"#,
    r#" { "id" : "c" , "choices" : [ { "delta" : { "content" : "spaced" } , "finish_reason" : null } ] , "error" : null } "#,
    r#"{"choices":[{"delta":null,"finish_reason":null}],"created":null,"id":null,"model":null}"#,
    r#"{"choices":[{"delta":{"tool_calls":[]}},{"delta":{"tool_calls":[{"function":null},{}]}}]}"#,
    r#"{}"#,
];

fn fast(data: &[u8], keep_text: bool) -> Option<Event<'_>> {
    scan(data, keep_text)
}

#[test]
fn usual_chunks_are_scanned_as_serde_reads_them() {
    for c in CHUNKS {
        let e = fast(c.as_bytes(), false).unwrap_or_else(|| panic!("not scanned: {c}"));
        assert_eq!(Ok(e), parse(c.as_bytes(), false), "{c}");
        // Escaped text is decoded by serde.
        let kept = fast(c.as_bytes(), true);
        assert_eq!(kept.is_none(), c.contains(r#"\u00e9"#), "{c}");
        if let Some(kept) = kept {
            assert_eq!(Ok(kept), parse(c.as_bytes(), true), "{c}");
        }
    }
}

#[test]
fn what_it_reads() {
    let e = fast(CHUNKS[0].as_bytes(), true).unwrap();
    assert_eq!(
        (e.id.as_deref(), e.model.as_deref(), e.created),
        (Some("chatcmpl-fake"), Some("fake"), Some(0))
    );
    assert_eq!((e.choices, e.finished, e.tool_calls), (1, false, false));
    assert_eq!((e.text_chars, &*e.text), (5, "tok0 "));
    assert!(fast(CHUNKS[1].as_bytes(), false).unwrap().finished);
    let u = fast(CHUNKS[2].as_bytes(), false)
        .unwrap()
        .usage_only()
        .unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 16));
    let t = fast(CHUNKS[3].as_bytes(), false).unwrap();
    // "get_weather" and `{"city":` (the escapes are one character each).
    assert_eq!((t.tool_calls, t.text_chars), (true, 11 + 8));
    let r = fast(CHUNKS[4].as_bytes(), false).unwrap();
    assert_eq!((r.text_chars, r.tool_calls, r.usage), (7, false, None));
    let two = fast(CHUNKS[5].as_bytes(), true).unwrap();
    assert_eq!((&*two.text, two.text_chars), ("Grüße 👋 日本two", 13));
    assert!(two.finished);
    // \n, \", \u00e9, one character for the surrogate pair, \/ and \t.
    let esc = fast(CHUNKS[6].as_bytes(), false).unwrap();
    assert_eq!(esc.text_chars, 22);
}

#[test]
fn anything_unusual_is_left_to_serde() {
    let left = [
        r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        r#"{"error":"x"}"#,
        r#"{"id":"a","id":"b"}"#,
        r#"{"i\u0064":"a"}"#,
        r#"{"id":"\u0061"}"#,
        r#"{"id":5}"#,
        r#"{"created":1.5}"#,
        r#"{"created":-1}"#,
        r#"{"created":1e3}"#,
        r#"{"created":01}"#,
        r#"{"created":12345678901234567890}"#,
        r#"{"created":99999999999999999999999}"#,
        r#"{"usage":{"prompt_tokens":184467440737095516160}}"#,
        r#"{"choices":null}"#,
        r#"{"choices":[null]}"#,
        r#"{"choices":[[]]}"#,
        r#"{"choices":[{"delta":[]}]}"#,
        r#"{"choices":[{"finish_reason":1}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[null]}}]}"#,
        r#"{"usage":{"prompt_tokens":null}}"#,
        r#"{"usage":{"prompt_tokens":-1}}"#,
        r#"{"choices":[{"delta":{"content":"\ud83d"}}]}"#,
        r#"{"choices":[{"delta":{"content":"\udc00"}}]}"#,
        r#"{"choices":[{"delta":{"content":"\x"}}]}"#,
        r#"{"choices":[{"delta":{"content":"\u12g4"}}]}"#,
        "{\"choices\":[{\"delta\":{\"content\":\"a\tb\"}}]}",
        r#"[]"#,
        r#"null"#,
        r#"{"a":1,}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":-}"#,
        r#"{"a":tru}"#,
        r#"{"a":1} x"#,
        r#"{"a":1"#,
        r#"{a:1}"#,
        r#"{not json"#,
        "",
    ];
    for l in left {
        assert!(fast(l.as_bytes(), false).is_none(), "scanned: {l}");
    }
    assert!(fast(b"{\"a\":\"\xff\"}", false).is_none(), "not UTF-8");
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(70), "]".repeat(70));
    assert!(fast(deep.as_bytes(), false).is_none());
    let fine = format!("{{\"a\":{}{}}}", "[".repeat(20), "]".repeat(20));
    assert!(fast(fine.as_bytes(), false).is_some());
}

/// Bytes that change a JSON document's meaning.
const SPECIAL: &[u8] = b"\"\\{}[],:0-1.eEnu \x01\xc3\xff";

#[test]
fn mutated_chunks_scan_as_serde_reads_them_or_not_at_all() {
    let (mut scanned, mut total) = (0, 0);
    let mut check = |d: &[u8]| {
        for keep in [false, true] {
            total += 1;
            if let Some(e) = fast(d, keep) {
                scanned += 1;
                let want = parse(d, keep);
                assert_eq!(Ok(e), want, "{}", String::from_utf8_lossy(d));
            }
        }
    };
    for c in CHUNKS.iter().map(|c| c.as_bytes()) {
        for i in 0..=c.len() {
            check(&c[..i]);
            if i < c.len() {
                check(&[&c[..i], &c[i + 1..]].concat());
            }
            for &b in SPECIAL {
                check(&[&c[..i], &[b], &c[i..]].concat());
                if i < c.len() {
                    check(&[&c[..i], &[b], &c[i + 1..]].concat());
                }
            }
        }
    }
    // Most mutations break the JSON; enough of them must still scan for
    // the comparison to mean something.
    assert!(scanned > total / 20, "{scanned} of {total}");
}
