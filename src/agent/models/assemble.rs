//! Assembly of an OpenAI-compatible stream into one step: content deltas are
//! concatenated, tool-call deltas (keyed by `index`, with the id and name in
//! the first piece and the arguments spread over many) are merged into whole
//! calls, and usage is taken from the `stream_options.include_usage` chunk.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{StepOutput, ToolCall, Usage};

/// One `chat.completion.chunk`, leniently: every field may be missing.
#[derive(Debug, Default, Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<ChunkUsage>,
    /// Some providers report a mid-stream failure as `{"error":{…}}`.
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChunkUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: Option<u64>,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Accumulates the chunks of one streamed completion.
#[derive(Debug, Default)]
pub struct Assembler {
    content: String,
    calls: BTreeMap<u32, PartialCall>,
    last_index: Option<u32>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
}

impl Assembler {
    /// Folds `chunk` in and returns the content delta it carried, if any.
    pub fn apply(&mut self, chunk: Chunk) -> Option<String> {
        if let Some(u) = chunk.usage {
            self.usage = Some(Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u
                    .total_tokens
                    .unwrap_or(u.prompt_tokens + u.completion_tokens),
            });
        }
        // Only the first choice matters: weir never asks for `n > 1`.
        let choice = chunk.choices.into_iter().find(|c| c.index == 0)?;
        if choice.finish_reason.is_some() {
            self.finish_reason = choice.finish_reason;
        }
        for d in choice.delta.tool_calls.unwrap_or_default() {
            self.apply_call(d);
        }
        match choice.delta.content {
            Some(text) if !text.is_empty() => {
                self.content.push_str(&text);
                Some(text)
            }
            _ => None,
        }
    }

    fn apply_call(&mut self, d: ToolCallDelta) {
        // Providers that omit `index` start a new call with each `id`.
        let index = d
            .index
            .unwrap_or_else(|| match (d.id.is_some(), self.last_index) {
                (false, Some(last)) => last,
                _ => self.calls.keys().next_back().map_or(0, |k| k + 1),
            });
        self.last_index = Some(index);
        let call = self.calls.entry(index).or_default();
        if let Some(id) = d.id.filter(|id| !id.is_empty()) {
            if call.id.is_empty() {
                call.id = id;
            }
        }
        if let Some(f) = d.function {
            // Strings are concatenated, as the official SDKs accumulate deltas.
            if let Some(name) = f.name {
                call.name.push_str(&name);
            }
            if let Some(args) = f.arguments {
                call.arguments.push_str(&args);
            }
        }
    }

    /// Whether the stream said it was finished (a `finish_reason` arrived).
    pub fn finished(&self) -> bool {
        self.finish_reason.is_some()
    }

    /// The step's output. Calls without a name are dropped (nothing could run
    /// them); calls without an id get one so tool results can refer to them.
    pub fn finish(self) -> StepOutput {
        let tool_calls = self
            .calls
            .into_iter()
            .filter(|(_, c)| !c.name.is_empty())
            .map(|(index, c)| ToolCall {
                id: if c.id.is_empty() {
                    format!("call_{index}")
                } else {
                    c.id
                },
                name: c.name,
                arguments: if c.arguments.trim().is_empty() {
                    "{}".into()
                } else {
                    c.arguments
                },
            })
            .collect();
        StepOutput {
            content: self.content,
            tool_calls,
            usage: self.usage.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(v: serde_json::Value) -> Chunk {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn assembles_two_interleaved_tool_calls_and_usage() {
        let mut a = Assembler::default();
        let pieces = [
            serde_json::json!({"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_time","arguments":""}}]},"finish_reason":null}]}),
            serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"calc","arguments":"{\"expr"}}]}}]}),
            serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}),
            serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"ession\":\"1+1\"}"}}]}}]}),
            serde_json::json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
            serde_json::json!({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}),
        ];
        for p in pieces {
            assert_eq!(a.apply(chunk(p)), None);
        }
        assert!(a.finished());
        let out = a.finish();
        assert_eq!(out.content, "");
        assert_eq!(
            out.tool_calls,
            vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "get_time".into(),
                    arguments: "{}".into()
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "calc".into(),
                    arguments: "{\"expression\":\"1+1\"}".into()
                },
            ]
        );
        assert_eq!(
            out.usage,
            Usage {
                prompt_tokens: 7,
                completion_tokens: 3,
                total_tokens: 10
            }
        );
    }

    #[test]
    fn content_deltas_concatenate_and_are_returned() {
        let mut a = Assembler::default();
        assert_eq!(
            a.apply(chunk(
                serde_json::json!({"choices":[{"delta":{"role":"assistant","content":""}}]})
            )),
            None
        );
        assert_eq!(
            a.apply(chunk(
                serde_json::json!({"choices":[{"delta":{"content":"Hel"}}]})
            ))
            .as_deref(),
            Some("Hel")
        );
        assert_eq!(
            a.apply(chunk(
                serde_json::json!({"choices":[{"delta":{"content":"lo"}}]})
            ))
            .as_deref(),
            Some("lo")
        );
        assert!(!a.finished());
        let out = a.finish();
        assert_eq!(out.content, "Hello");
        assert!(out.tool_calls.is_empty());
        assert_eq!(out.usage, Usage::default());
    }

    #[test]
    fn calls_without_index_or_id_still_assemble() {
        let mut a = Assembler::default();
        a.apply(chunk(serde_json::json!({"choices":[{"delta":{"tool_calls":[{"id":"x","function":{"name":"get_time"}}]}}]})));
        a.apply(chunk(serde_json::json!({"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}]}}]})));
        a.apply(chunk(serde_json::json!({"choices":[{"delta":{"tool_calls":[{"function":{"name":"calc"}}]}}]})));
        a.apply(chunk(serde_json::json!({"choices":[{"delta":{"tool_calls":[{"index":7,"function":{"arguments":""}}]}}]})));
        let out = a.finish();
        // The nameless call at index 7 is dropped; the second chunk continued call 0.
        assert_eq!(out.tool_calls.len(), 1);
        assert_eq!(out.tool_calls[0].id, "x");
        assert_eq!(out.tool_calls[0].name, "get_timecalc");
        assert_eq!(out.tool_calls[0].arguments, "{\"a\":1}");
    }
}
