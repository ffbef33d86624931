//! The models behind agents: the offline [`echo`] model and [`upstream`]
//! OpenAI-compatible providers, behind one [`Model`] that the run loop drives
//! one step at a time.
//!
//! A step takes the conversation so far ([`Turn`]s, in OpenAI chat order) and
//! the tools on offer, and yields a stream of [`ModelEvent`]s ending in
//! [`ModelEvent::Done`] with the step's text, tool calls and usage. Dropping
//! the stream abandons the step (for upstream models, it closes the HTTP
//! request), which is how cancellation reaches the provider.

pub mod assemble;
pub mod echo;
pub mod upstream;

use std::pin::Pin;

use futures::Stream;
use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::ErrorCode;

/// One message of the conversation a model sees.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub enum Turn {
    System(String),
    User(String),
    Assistant {
        content: String,
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        call_id: String,
        content: String,
    },
}

impl Turn {
    /// The OpenAI chat-completions form of this turn.
    pub fn to_openai(&self) -> Value {
        match self {
            Turn::System(text) => json!({"role": "system", "content": text}),
            Turn::User(text) => json!({"role": "user", "content": text}),
            Turn::Assistant {
                content,
                tool_calls,
            } if tool_calls.is_empty() => {
                json!({"role": "assistant", "content": content})
            }
            Turn::Assistant {
                content,
                tool_calls,
            } => json!({
                "role": "assistant",
                "content": if content.is_empty() { Value::Null } else { Value::from(content.as_str()) },
                "tool_calls": tool_calls.iter().map(|c| json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })).collect::<Vec<_>>(),
            }),
            Turn::Tool { call_id, content } => {
                json!({"role": "tool", "tool_call_id": call_id, "content": content})
            }
        }
    }
}

/// A tool call a model asked for; `arguments` is the raw JSON text it sent.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A tool offered to the model, in the OpenAI `tools` form.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

impl ToolSpec {
    pub fn to_openai(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }
}

/// Token counts, as providers report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// What one step needs.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    pub turns: Vec<Turn>,
    pub tools: Vec<ToolSpec>,
}

/// The result of one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    /// The text the model produced (the reply when there are no tool calls).
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

/// Something a model produced while it works.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    /// A thought shown as `internal_monologue`.
    Monologue(String),
    /// A piece of the text, shown as `assistant_delta` when the run streams tokens.
    Delta(String),
    /// The provider serving the step answered (a route's target, by its
    /// name): usage, logs and metrics name it rather than `upstream`.
    Served(String),
    /// The step is over.
    Done(StepOutput),
}

/// Why a model step failed; [`ModelError::code`] is the `error` event's code.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("unknown model `{0}`: use `echo` or `upstream/<model>`")]
    Unknown(String),
    #[error("model `{0}` needs a provider: start weir with --provider-url")]
    NoProvider(String),
    #[error("provider answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("provider unreachable: {0}")]
    Connect(String),
    #[error("provider sent no token within {0} s")]
    FirstTokenTimeout(u64),
    #[error("provider stream idle for more than {0} s")]
    IdleTimeout(u64),
    #[error("provider stream broke: {0}")]
    Broken(String),
}

impl ModelError {
    /// Stable code for `error` events.
    pub fn code(&self) -> ErrorCode {
        match self {
            ModelError::Unknown(_) | ModelError::NoProvider(_) => ErrorCode::ModelUnavailable,
            ModelError::Status { .. } => ErrorCode::UpstreamError,
            ModelError::Connect(_) => ErrorCode::UpstreamUnavailable,
            ModelError::FirstTokenTimeout(_) | ModelError::IdleTimeout(_) => {
                ErrorCode::UpstreamTimeout
            }
            ModelError::Broken(_) => ErrorCode::UpstreamStreamError,
        }
    }
}

/// The events of one step.
pub type ModelStream = Pin<Box<dyn Stream<Item = Result<ModelEvent, ModelError>> + Send>>;

/// The longest `echo_delay_ms` honoured unless a test sets its own.
pub const MAX_ECHO_DELAY: std::time::Duration = std::time::Duration::from_secs(60);

/// A model an agent can run on.
#[derive(Debug, Clone)]
pub enum Model {
    Echo(echo::Echo),
    Upstream(upstream::UpstreamModel),
}

impl Model {
    /// The model named by an agent's `model` field. `metadata` tunes the echo
    /// model (`echo_delay_ms`, at most `max_echo_delay`).
    pub fn resolve(
        name: &str,
        metadata: &Value,
        providers: &crate::providers::Registry,
        max_echo_delay: std::time::Duration,
    ) -> Result<Self, ModelError> {
        if name == "echo" {
            let delay = metadata
                .get("echo_delay_ms")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(max_echo_delay.as_millis().try_into().unwrap_or(u64::MAX));
            return Ok(Model::Echo(echo::Echo::new(
                std::time::Duration::from_millis(delay),
            )));
        }
        match name.strip_prefix("upstream/") {
            Some(model) if !model.is_empty() => match providers.resolve(name) {
                Some(route) => Ok(Model::Upstream(upstream::UpstreamModel::new(route))),
                None => Err(ModelError::NoProvider(name.to_owned())),
            },
            _ => Err(ModelError::Unknown(name.to_owned())),
        }
    }

    /// Runs one step.
    pub fn step(&self, req: ModelRequest) -> ModelStream {
        match self {
            Model::Echo(m) => m.step(req),
            Model::Upstream(m) => m.step(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> crate::providers::Registry {
        crate::providers::Registry::default()
    }

    #[test]
    fn resolves_models_by_name() {
        assert!(matches!(
            Model::resolve("echo", &json!({}), &none(), MAX_ECHO_DELAY),
            Ok(Model::Echo(_))
        ));
        assert_eq!(
            Model::resolve("upstream/gpt", &json!({}), &none(), MAX_ECHO_DELAY).unwrap_err(),
            ModelError::NoProvider("upstream/gpt".into())
        );
        assert_eq!(
            Model::resolve("gpt-4", &json!({}), &none(), MAX_ECHO_DELAY).unwrap_err(),
            ModelError::Unknown("gpt-4".into())
        );
        assert!(Model::resolve("upstream/", &json!({}), &none(), MAX_ECHO_DELAY).is_err());
    }

    #[test]
    fn assistant_turn_with_calls_has_openai_shape() {
        let t = Turn::Assistant {
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "get_time".into(),
                arguments: "{}".into(),
            }],
        };
        let v = t.to_openai();
        assert_eq!(v["content"], Value::Null);
        assert_eq!(v["tool_calls"][0]["function"]["name"], "get_time");
        assert_eq!(v["tool_calls"][0]["type"], "function");
    }
}
