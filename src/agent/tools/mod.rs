//! The tools an agent can call: built-ins (`get_time`, `calculator`) and
//! webhook tools (`kind: webhook`: the arguments are POSTed as JSON to the
//! tool's `url` and the response body is the result).
//!
//! A tool failure is never a run failure: it becomes a `function_message`
//! with `status: "error"` and the model sees the error text as the result,
//! so it can recover. Webhook URLs are chosen by holders of a `tools:write`
//! key of the same account, so by default they may only reach public
//! addresses ([`egress`]; `--webhook-allow-private true` lifts that for
//! tools on the operator's own network, `--egress-allow` for some networks).

pub mod calc;
pub mod egress;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use super::models::{ToolCall, ToolSpec};
use crate::store::{Store, StoreError};

/// How long a webhook may take.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most of a webhook response kept as the result.
const WEBHOOK_BODY_LIMIT: usize = 1 << 20;

/// Names of the built-in tools.
pub const BUILTINS: &[&str] = crate::domain::BUILTIN_TOOLS;

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    GetTime,
    Calculator,
    Webhook { url: String },
}

/// A tool ready to be offered and called.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub spec: ToolSpec,
    kind: Kind,
    /// Every call waits for a person's approval (the tool record's
    /// `requires_approval`).
    pub approval: bool,
}

/// The result of one call, as a `function_message` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// The parsed arguments (the raw text when they were not JSON).
    pub args: Value,
    pub result: Value,
    pub ok: bool,
}

impl ToolOutcome {
    fn error(args: Value, message: impl Into<String>) -> Self {
        Self {
            args,
            result: Value::String(message.into()),
            ok: false,
        }
    }

    /// The result as the text the model reads in its `tool` turn.
    pub fn result_text(&self) -> String {
        match &self.result {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// The built-in tool called `name`, if there is one.
pub fn builtin(name: &str) -> Option<Tool> {
    let (kind, description, parameters) = match name {
        "get_time" => (
            Kind::GetTime,
            "Returns the current date and time (UTC, RFC 3339).",
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
        ),
        "calculator" => (
            Kind::Calculator,
            "Evaluates an arithmetic expression exactly: + - * / % ^, parentheses, pi, e, sqrt, abs, floor, ceil, round, ln.",
            json!({
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "e.g. (2 + 3) * 4 ^ 2"}},
                "required": ["expression"],
                "additionalProperties": false
            }),
        ),
        _ => return None,
    };
    Some(Tool {
        spec: ToolSpec {
            name: name.to_owned(),
            description: description.to_owned(),
            parameters,
        },
        kind,
        approval: false,
    })
}

/// The tools of one run.
#[derive(Debug, Clone, Default)]
pub struct ToolSet {
    tools: Vec<Tool>,
}

impl ToolSet {
    /// Resolves an agent's `tools` (tool ids or built-in names). Entries that
    /// cannot be resolved are skipped and returned as warnings for the log;
    /// a store outage is an error.
    pub async fn resolve(
        store: &dyn Store,
        account: &str,
        entries: &[String],
    ) -> Result<(Self, Vec<String>), StoreError> {
        let mut tools: Vec<Tool> = Vec::new();
        let mut warnings = Vec::new();
        for entry in entries {
            let tool = match builtin(entry) {
                Some(t) => Some(t),
                None => match store.get_tool(account, entry).await {
                    Ok(rec) if rec.kind == "webhook" => rec.url.clone().map(|url| Tool {
                        spec: ToolSpec {
                            name: rec.name.clone(),
                            description: rec.description.clone(),
                            parameters: rec.json_schema.clone(),
                        },
                        kind: Kind::Webhook { url },
                        approval: rec.requires_approval,
                    }),
                    Ok(rec) => builtin(&rec.name).map(|t| Tool {
                        approval: rec.requires_approval,
                        ..t
                    }),
                    Err(StoreError::NotFound(_)) => None,
                    Err(e) => return Err(e),
                },
            };
            match tool {
                Some(t) if tools.iter().any(|x| x.spec.name == t.spec.name) => {
                    warnings.push(format!(
                        "tool `{entry}` skipped: another tool is named `{}`",
                        t.spec.name
                    ))
                }
                Some(t) => tools.push(t),
                None => warnings.push(format!("tool `{entry}` not found; skipped")),
            }
        }
        Ok((Self { tools }, warnings))
    }

    /// Whether the agent's tool called `name` needs approval for every call.
    pub fn requires_approval(&self, name: &str) -> bool {
        self.tools.iter().any(|t| t.approval && t.spec.name == name)
    }

    /// What the model is offered.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec.clone()).collect()
    }

    /// Runs `call`: the agent's tool of that name, else a built-in of that
    /// name (the echo model calls `get_time` whether or not it is listed).
    pub async fn call(&self, hooks: &egress::Webhooks, call: &ToolCall) -> ToolOutcome {
        let args = match serde_json::from_str::<Value>(&call.arguments) {
            Ok(v) => v,
            Err(e) => {
                let raw = Value::String(call.arguments.clone());
                return ToolOutcome::error(raw, format!("arguments are not valid JSON: {e}"));
            }
        };
        let tool = self
            .tools
            .iter()
            .find(|t| t.spec.name == call.name)
            .cloned()
            .or_else(|| builtin(&call.name));
        let Some(tool) = tool else {
            return ToolOutcome::error(args, format!("unknown tool `{}`", call.name));
        };
        match &tool.kind {
            Kind::GetTime => ToolOutcome {
                args,
                result: Value::String(crate::util::now()),
                ok: true,
            },
            Kind::Calculator => calculator(args),
            Kind::Webhook { url } => webhook(hooks, url, args).await,
        }
    }
}

/// A reqwest error with its causes ("error sending request" alone does not
/// say that the address was refused or the name did not resolve), without
/// the URL (the model and the event stream see this text).
fn chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

fn calculator(args: Value) -> ToolOutcome {
    let Some(expr) = args.get("expression").and_then(Value::as_str) else {
        return ToolOutcome::error(args, "`expression` (a string) is required");
    };
    match calc::eval(expr) {
        Ok(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => ToolOutcome {
            args,
            result: Value::from(v as i64),
            ok: true,
        },
        Ok(v) => ToolOutcome {
            args,
            result: Value::from(v),
            ok: true,
        },
        Err(e) => ToolOutcome::error(args, e.to_string()),
    }
}

async fn webhook(hooks: &egress::Webhooks, url: &str, args: Value) -> ToolOutcome {
    let url = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return ToolOutcome::error(args, format!("webhook URL is not valid: {e}")),
    };
    // IP literals are connected to without resolving, so the resolver's
    // guard never sees them; names are checked as they resolve.
    if let Err(e) = hooks.check(&url) {
        return ToolOutcome::error(args, e);
    }
    let send = hooks
        .client
        .post(url)
        .timeout(WEBHOOK_TIMEOUT)
        .json(&args)
        .send();
    let resp = match send.await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return ToolOutcome::error(
                args,
                format!("webhook timed out after {} s", WEBHOOK_TIMEOUT.as_secs()),
            )
        }
        Err(e) => return ToolOutcome::error(args, format!("webhook failed: {}", chain(e))),
    };
    let status = resp.status();
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) if body.len() + c.len() <= WEBHOOK_BODY_LIMIT => body.extend_from_slice(&c),
            Ok(_) => return ToolOutcome::error(args, "webhook response exceeds 1 MiB"),
            Err(e) => return ToolOutcome::error(args, format!("webhook failed: {}", chain(e))),
        }
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        let excerpt: String = text.chars().take(500).collect();
        return ToolOutcome::error(
            args,
            format!("webhook answered {}: {excerpt}", status.as_u16()),
        );
    }
    let result = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    ToolOutcome {
        args,
        result,
        ok: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &str) -> ToolCall {
        ToolCall {
            id: "c".into(),
            name: name.into(),
            arguments: args.into(),
        }
    }

    #[tokio::test]
    async fn builtins_answer_and_fail_softly() {
        let set = ToolSet::default();
        let client = egress::Webhooks::new(false, &[]);
        let out = set
            .call(&client, &call("calculator", r#"{"expression":"6*7"}"#))
            .await;
        assert!(out.ok);
        assert_eq!(out.result, json!(42));
        let out = set
            .call(&client, &call("calculator", r#"{"expression":"1/0"}"#))
            .await;
        assert!(!out.ok);
        let out = set.call(&client, &call("get_time", "{}")).await;
        assert!(out.ok && out.result_text().ends_with('Z'));
        let out = set.call(&client, &call("nope", "{}")).await;
        assert_eq!(out.result, json!("unknown tool `nope`"));
        let out = set.call(&client, &call("get_time", "{oops")).await;
        assert!(!out.ok);
        assert_eq!(out.args, json!("{oops"));
    }
}
