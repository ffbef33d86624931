//! A non-streamed Message as an OpenAI `chat.completion`.
//!
//! `text` blocks join into `message.content` (`null` when there is none, as
//! OpenAI sends with tool calls), `tool_use` blocks become `tool_calls` with
//! their `input` serialized as `arguments`, `stop_reason` is `finish_reason`
//! and `usage` is OpenAI's (cached prompt tokens counted in). Thinking and
//! other block types have no OpenAI field and are left out.

use serde_json::{json, Value};

use super::{finish_reason, prompt_tokens, usage_json, TranslateError};

/// Translates `resp` (an Anthropic Message) into a `chat.completion` with the
/// gateway's `id`, `model` and `created`.
pub fn response_to_openai(
    resp: &Value,
    id: &str,
    model: &str,
    created: i64,
) -> Result<Value, TranslateError> {
    if resp.get("type").and_then(Value::as_str) != Some("message") {
        return Err(TranslateError::Upstream(format!(
            "expected a message, got type {}",
            resp.get("type").unwrap_or(&Value::Null)
        )));
    }
    let blocks = resp
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::Upstream("a message without content".into()))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default())
            }
            Some("tool_use") => calls.push(tool_call(b)?),
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() },
        "refusal": null,
    });
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    let stop = resp.get("stop_reason").and_then(Value::as_str);
    let mut out = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(stop)}],
    });
    if let Some(usage) = resp.get("usage") {
        let prompt = prompt_tokens(usage).unwrap_or(0);
        let completion = usage
            .get("output_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        out["usage"] = usage_json(prompt, completion);
    }
    Ok(out)
}

fn tool_call(block: &Value) -> Result<Value, TranslateError> {
    let (id, name) = (
        block.get("id").and_then(Value::as_str),
        block.get("name").and_then(Value::as_str),
    );
    let (Some(id), Some(name)) = (id, name) else {
        return Err(TranslateError::Upstream(format!(
            "a tool_use block without id or name: {block}"
        )));
    };
    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
    Ok(
        json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_message_becomes_a_completion() {
        // The docs' example response.
        let resp = json!({
            "content": [{"text": "Hi! My name is Claude.", "type": "text"}],
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "model": "claude-opus-4-6", "role": "assistant",
            "stop_reason": "end_turn", "stop_sequence": null, "type": "message",
            "usage": {"input_tokens": 2095, "output_tokens": 503}
        });
        let out = response_to_openai(&resp, "chatcmpl-9", "upstream/claude", 42).unwrap();
        assert_eq!(
            out,
            json!({
                "id": "chatcmpl-9", "object": "chat.completion", "created": 42, "model": "upstream/claude",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": null}}],
                "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598}
            })
        );
    }

    #[test]
    fn tool_use_message_becomes_tool_calls() {
        let resp = json!({
            "type": "message", "role": "assistant", "stop_reason": "tool_use",
            "content": [
                {"type": "thinking", "thinking": "…", "signature": "x"},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "SF"}}
            ],
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 3, "output_tokens": 7}
        });
        let out = response_to_openai(&resp, "c", "m", 0).unwrap();
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "toolu_01A", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"SF\"}"}}])
        );
        assert_eq!(out["usage"]["prompt_tokens"], 13);
    }

    #[test]
    fn non_messages_are_upstream_errors() {
        for resp in [
            json!({"type": "error", "error": {"type": "api_error", "message": "x"}}),
            json!({"type": "message"}),
            json!({"type": "message", "content": [{"type": "tool_use", "id": "t"}]}),
        ] {
            assert!(
                matches!(
                    response_to_openai(&resp, "c", "m", 0),
                    Err(TranslateError::Upstream(_))
                ),
                "{resp}"
            );
        }
    }
}
