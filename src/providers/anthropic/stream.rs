//! The Messages SSE stream as OpenAI `chat.completion.chunk`s.
//!
//! One [`StreamTranslator`] per response, fed each SSE event in order:
//! - `message_start` gives the role chunk (`{"role":"assistant","content":""}`)
//!   and the prompt's token count;
//! - a `text` block's `text_delta`s are `content` deltas;
//! - a `tool_use` block is one OpenAI tool call: its `content_block_start`
//!   gives `index` (tool calls counted from 0, not Anthropic's block index),
//!   `id`, `type` and `function.name` with empty `arguments`, and each
//!   `input_json_delta` gives more `function.arguments`;
//! - `message_delta` gives the chunk with `finish_reason` and the final
//!   output count (Anthropic's counts there are cumulative);
//! - `message_stop` ends it: with `stream_options.include_usage`, a last
//!   chunk with empty `choices` and `usage` (every chunk before carries
//!   `"usage": null`, as OpenAI's do);
//! - `ping`, `content_block_stop`, thinking and citation deltas, blocks of
//!   other types and unknown events (the docs ask clients to tolerate new
//!   ones) give nothing;
//! - `error` (a failure after the 200, e.g. `overloaded_error`) is an
//!   [`AnthropicError`] for the relay to report.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{finish_reason, prompt_tokens, usage_json, AnthropicError};

/// Turns one Anthropic stream into OpenAI chunks.
#[derive(Debug)]
pub struct StreamTranslator {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    prompt: Option<u64>,
    completion: u64,
    /// Anthropic block index -> OpenAI tool call index, for `tool_use` blocks.
    tools: HashMap<u64, usize>,
    /// Indexes of the `text` blocks.
    texts: Vec<u64>,
    /// The text streamed so far (a fallback target continues from it).
    text: String,
    finished: bool,
    done: bool,
    /// Set by [`Self::continuing`]: no role chunk.
    continued: bool,
}

impl StreamTranslator {
    /// `id`, `model` and `created` are what every chunk carries (the
    /// gateway's, not Anthropic's `msg_…` id, so that they stay the same if
    /// the response moves to another target).
    pub fn new(id: String, model: String, created: i64, include_usage: bool) -> Self {
        Self {
            id,
            model,
            created,
            include_usage,
            prompt: None,
            completion: 0,
            tools: HashMap::new(),
            texts: Vec::new(),
            text: String::new(),
            finished: false,
            done: false,
            continued: false,
        }
    }

    /// A translator for a response that goes on from another target's (a
    /// mid-stream fallback): the client has had the role chunk already, so
    /// `message_start` gives none.
    pub fn continuing(mut self) -> Self {
        self.continued = true;
        self
    }

    /// The chunks one SSE event gives (often none). `event` is the SSE
    /// `event:` name; the data's own `type` is used when it is empty.
    pub fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<Value>, AnthropicError> {
        if self.done {
            return Ok(vec![]);
        }
        let data: Value = serde_json::from_str(data)
            .map_err(|e| AnthropicError::Malformed(format!("`{event}` data is not JSON: {e}")))?;
        let kind = match event {
            "" | "message" => data.get("type").and_then(Value::as_str).unwrap_or_default(),
            e => e,
        };
        match kind {
            "message_start" => Ok(self.message_start(&data)),
            "content_block_start" => self.block_start(&data),
            "content_block_delta" => self.block_delta(&data),
            "message_delta" => Ok(self.message_delta(&data)),
            "message_stop" => Ok(self.message_stop()),
            "error" => Err(AnthropicError::from_body(&data)),
            _ => Ok(vec![]),
        }
    }

    /// `(prompt_tokens, completion_tokens)` once `message_start` has said
    /// how long the prompt was.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.prompt.map(|p| (p, self.completion))
    }

    /// Whether `message_stop` was seen: the stream ended as it should.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The assistant text streamed so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn message_start(&mut self, data: &Value) -> Vec<Value> {
        let usage = &data["message"]["usage"];
        self.prompt = prompt_tokens(usage);
        self.completion = usage["output_tokens"].as_u64().unwrap_or(0);
        if self.continued {
            return vec![];
        }
        vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
    }

    fn block_start(&mut self, data: &Value) -> Result<Vec<Value>, AnthropicError> {
        let index = block_index(data)?;
        let block = &data["content_block"];
        match block["type"].as_str() {
            Some("text") => {
                self.texts.push(index);
                let text = block["text"].as_str().unwrap_or_default();
                Ok(self.text_chunk(text))
            }
            Some("tool_use") => {
                let call = self.tools.len();
                self.tools.insert(index, call);
                let (id, name) = (block["id"].as_str(), block["name"].as_str());
                let (Some(id), Some(name)) = (id, name) else {
                    return Err(AnthropicError::Malformed(format!(
                        "a tool_use block without id or name: {block}"
                    )));
                };
                let call = json!({"index": call, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}});
                Ok(vec![self.chunk(json!({"tool_calls": [call]}), None)])
            }
            _ => Ok(vec![]),
        }
    }

    fn block_delta(&mut self, data: &Value) -> Result<Vec<Value>, AnthropicError> {
        let index = block_index(data)?;
        let delta = &data["delta"];
        match delta["type"].as_str() {
            Some("text_delta") if self.texts.contains(&index) => {
                Ok(self.text_chunk(delta["text"].as_str().unwrap_or_default()))
            }
            Some("input_json_delta") => {
                let Some(&call) = self.tools.get(&index) else {
                    return Err(AnthropicError::Malformed(format!(
                        "input_json_delta for block {index}, not a tool_use"
                    )));
                };
                let part = delta["partial_json"].as_str().unwrap_or_default();
                if part.is_empty() {
                    return Ok(vec![]);
                }
                let call = json!({"index": call, "function": {"arguments": part}});
                Ok(vec![self.chunk(json!({"tool_calls": [call]}), None)])
            }
            Some("text_delta") => Err(AnthropicError::Malformed(format!(
                "text_delta for block {index}, not a text block"
            ))),
            _ => Ok(vec![]),
        }
    }

    fn message_delta(&mut self, data: &Value) -> Vec<Value> {
        let usage = &data["usage"];
        if let Some(n) = usage["output_tokens"].as_u64() {
            self.completion = n;
        }
        if let Some(p) = prompt_tokens(usage) {
            self.prompt = Some(p);
        }
        let stop = data["delta"]["stop_reason"].as_str();
        self.finish(stop)
    }

    fn message_stop(&mut self) -> Vec<Value> {
        self.done = true;
        let mut out = self.finish(None);
        if self.include_usage {
            let (p, c) = self.usage().unwrap_or((0, self.completion));
            let mut last = self.chunk(Value::Null, None);
            last["choices"] = json!([]);
            last["usage"] = usage_json(p, c);
            out.push(last);
        }
        out
    }

    /// The `finish_reason` chunk, once (a stream without `message_delta`
    /// still finishes, as a plain stop).
    fn finish(&mut self, stop: Option<&str>) -> Vec<Value> {
        if std::mem::replace(&mut self.finished, true) {
            return vec![];
        }
        vec![self.chunk(json!({}), Some(finish_reason(stop)))]
    }

    fn text_chunk(&mut self, text: &str) -> Vec<Value> {
        if text.is_empty() {
            return vec![];
        }
        self.text.push_str(text);
        vec![self.chunk(json!({ "content": text }), None)]
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        let mut c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }
}

fn block_index(data: &Value) -> Result<u64, AnthropicError> {
    data["index"].as_u64().ok_or_else(|| {
        AnthropicError::Malformed(format!("a content block event without index: {data}"))
    })
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
