//! The stream translation, against event sequences written from Anthropic's
//! published Messages streaming documentation (nothing can be recorded here).

use serde_json::{json, Value};

use super::*;

/// The docs' basic text stream, `ping` included.
const TEXT: &str = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}
"#;

/// The docs' tool use stream: a text block, then a `tool_use` block whose
/// input arrives as `input_json_delta`s (the first one empty).
const TOOL_USE: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-6","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let's check the weather."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisco, CA\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}
"#;

/// The docs' extended-thinking stream (thinking is not part of an OpenAI
/// chunk, so only the text shows), ending at the token limit.
const THINKING: &str = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me think."}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: content_block_start
data: {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "27 * 453 = 12,231"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 1}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null}, "usage": {"output_tokens": 100}}

event: message_stop
data: {"type": "message_stop"}
"#;

/// `(event, data)` pairs of an SSE text (one `data:` line per event here).
fn events(sse: &str) -> Vec<(String, String)> {
    sse.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let field = |name: &str| {
                e.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim_start().to_owned())
                    .unwrap_or_default()
            };
            (field("event:"), field("data:"))
        })
        .collect()
}

fn run(sse: &str, include_usage: bool) -> (StreamTranslator, Vec<Value>) {
    let mut t = StreamTranslator::new(
        "chatcmpl-1".into(),
        "upstream/claude".into(),
        1700000000,
        include_usage,
    );
    let mut out = Vec::new();
    for (event, data) in events(sse) {
        out.extend(t.on_event(&event, &data).unwrap());
    }
    (t, out)
}

fn delta(c: &Value) -> &Value {
    &c["choices"][0]["delta"]
}

#[test]
fn text_stream_gives_role_content_and_finish() {
    let (t, chunks) = run(TEXT, false);
    assert_eq!(chunks.len(), 4, "role, two texts, finish: {chunks:#?}");
    for c in &chunks {
        assert_eq!(c["id"], "chatcmpl-1");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["created"], 1700000000);
        assert_eq!(c["model"], "upstream/claude");
        assert_eq!(c["choices"][0]["index"], 0);
        assert!(c.get("usage").is_none(), "no usage field unless asked");
    }
    assert_eq!(
        *delta(&chunks[0]),
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(*delta(&chunks[1]), json!({"content": "Hello"}));
    assert_eq!(*delta(&chunks[2]), json!({"content": "!"}));
    assert_eq!(*delta(&chunks[3]), json!({}));
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert!(t.done());
    assert_eq!(t.usage(), Some((25, 15)));
    assert_eq!(t.text(), "Hello!");
}

#[test]
fn tool_use_stream_gives_tool_call_deltas() {
    let (t, chunks) = run(TOOL_USE, false);
    let deltas: Vec<&Value> = chunks.iter().map(delta).collect();
    assert_eq!(
        deltas,
        [
            &json!({"role": "assistant", "content": ""}),
            &json!({"content": "Okay, let's check the weather."}),
            &json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"San Francisco, CA\"}"}}]}),
            &json!({}),
        ]
    );
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
    let args: String = deltas[3..5]
        .iter()
        .map(|d| {
            d["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "San Francisco, CA"})
    );
    assert_eq!(t.usage(), Some((472, 89)));
}

#[test]
fn two_tool_uses_count_from_zero() {
    let sse = r#"event: message_start
data: {"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_a","name":"f","input":{}}}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_b","name":"g","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}
"#;
    let (_, chunks) = run(sse, false);
    assert_eq!(delta(&chunks[1])["tool_calls"][0]["index"], 0);
    assert_eq!(delta(&chunks[2])["tool_calls"][0]["index"], 1);
    assert_eq!(delta(&chunks[2])["tool_calls"][0]["id"], "toolu_b");
    assert_eq!(
        delta(&chunks[3])["tool_calls"][0],
        json!({"index": 1, "function": {"arguments": "{}"}})
    );
}

#[test]
fn include_usage_adds_a_usage_chunk_and_null_usage_before() {
    let (_, chunks) = run(TEXT, true);
    let (last, rest) = chunks.split_last().unwrap();
    assert!(rest
        .iter()
        .all(|c| c["usage"] == Value::Null && c.get("usage").is_some()));
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["id"], "chatcmpl-1");
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40})
    );
}

#[test]
fn thinking_is_left_out_and_cache_counts_in_the_prompt() {
    let (t, chunks) = run(THINKING, true);
    let texts: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| delta(c).get("content"))
        .collect();
    assert_eq!(texts, [&json!(""), &json!("27 * 453 = 12,231")]);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], 14);
    assert_eq!(t.usage(), Some((14, 100)));
}

#[test]
fn error_after_200_is_reported() {
    let mut t = StreamTranslator::new("c".into(), "m".into(), 0, false);
    let (event, data) = events(TEXT).swap_remove(0);
    assert_eq!(
        t.on_event(&event, &data).unwrap().len(),
        1,
        "the role chunk went out"
    );
    let err = t
        .on_event(
            "error",
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
        )
        .unwrap_err();
    assert_eq!(
        err,
        AnthropicError::Upstream {
            kind: "overloaded_error".into(),
            message: "Overloaded".into()
        }
    );
    assert_eq!(err.status().as_u16(), 529);
    assert!(!t.done(), "an error is not a clean end");
}

#[test]
fn pings_unknown_events_and_late_events_give_nothing() {
    let mut t = StreamTranslator::new("c".into(), "m".into(), 0, false);
    assert_eq!(
        t.on_event("ping", r#"{"type": "ping"}"#).unwrap(),
        Vec::<Value>::new()
    );
    assert!(t
        .on_event("new_kind", r#"{"type": "new_kind"}"#)
        .unwrap()
        .is_empty());
    assert!(t.on_event("", r#"{"type": "ping"}"#).unwrap().is_empty());
    let stop = t.on_event("", r#"{"type": "message_stop"}"#).unwrap();
    assert_eq!(
        stop[0]["choices"][0]["finish_reason"], "stop",
        "a finish even without message_delta"
    );
    assert!(t.done());
    assert!(
        t.on_event("message_delta", "{}").unwrap().is_empty(),
        "nothing after message_stop"
    );
}

#[test]
fn malformed_events_are_errors() {
    let table = [
        ("content_block_delta", "not json"),
        (
            "content_block_start",
            r#"{"type":"content_block_start","content_block":{"type":"text"}}"#,
        ),
        (
            "content_block_start",
            r#"{"index":0,"content_block":{"type":"tool_use","name":"f"}}"#,
        ),
        (
            "content_block_delta",
            r#"{"index":3,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
        ),
        (
            "content_block_delta",
            r#"{"index":3,"delta":{"type":"text_delta","text":"x"}}"#,
        ),
        ("error", r#"{"type":"error"}"#),
    ];
    for (event, data) in table {
        let mut t = StreamTranslator::new("c".into(), "m".into(), 0, false);
        let err = t.on_event(event, data).unwrap_err();
        assert!(
            matches!(err, AnthropicError::Malformed(_)),
            "{event} {data}: {err:?}"
        );
    }
}

#[test]
fn a_continuation_sends_no_second_role_chunk() {
    let mut t =
        StreamTranslator::new("chatcmpl-1".into(), "upstream/claude".into(), 1, false).continuing();
    let mut chunks = Vec::new();
    for (event, data) in events(TEXT) {
        chunks.extend(t.on_event(&event, &data).unwrap());
    }
    assert!(
        chunks.iter().all(|c| delta(c).get("role").is_none()),
        "{chunks:#?}"
    );
    assert_eq!(delta(&chunks[0]), &json!({"content": "Hello"}));
    assert_eq!(
        chunks[0]["id"], "chatcmpl-1",
        "the same id across the switch"
    );
    assert!(t.done());
}
