//! An OpenAI chat.completions request as an Anthropic Messages request.
//!
//! - `system` and `developer` messages, wherever they are, join (in order,
//!   separated by a blank line) into the top-level `system`: Anthropic has no
//!   system turn.
//! - `user` and `assistant` text and image parts become content blocks
//!   (`image_url` as a base64 `data:` URL or a plain URL source); audio and
//!   file parts are refused.
//! - an assistant's `tool_calls` become `tool_use` blocks (arguments parsed
//!   as the JSON object they are), and `tool` messages become `tool_result`
//!   blocks in a user turn; consecutive turns of one role merge into one, so
//!   several tool results answer one assistant turn as Anthropic requires;
//!   empty messages are left out. A last assistant turn is a prefill that
//!   the model continues; its trailing whitespace is trimmed (Anthropic
//!   refuses it there).
//! - `tools` become `{name, description, input_schema}`; `tool_choice`
//!   `auto`/`none`/`required`/a named function become `auto`/`none`/`any`/
//!   `tool`, and `parallel_tool_calls: false` is `disable_parallel_tool_use`.
//! - `max_completion_tokens` (or `max_tokens`) is `max_tokens`, which
//!   Anthropic requires: [`DEFAULT_MAX_TOKENS`] when the caller gives none.
//! - `temperature` is clamped to Anthropic's 0..=1 (OpenAI allows up to 2),
//!   `top_p` passes, `stop` is `stop_sequences`, `user` is
//!   `metadata.user_id`, `stream` is kept. `n` above 1 is refused; other
//!   OpenAI fields (penalties, seed, logprobs, response_format…) have no
//!   Messages equivalent and are dropped.

use serde_json::{json, Map, Value};

use super::TranslateError;

/// `max_tokens` when the caller sets neither `max_completion_tokens` nor
/// `max_tokens` (Anthropic has no default; every model takes at least this).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Translates `body` (an OpenAI chat.completions request) into a Messages
/// request for `model` (the provider's model name).
pub fn request_from_openai(body: &Value, model: &str) -> Result<Value, TranslateError> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("messages", "`messages` must be an array"))?;
    let (system, turns) = translate_messages(messages)?;
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    out.insert("max_tokens".into(), max_tokens(body)?.into());
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n\n").into());
    }
    out.insert("messages".into(), turns.into());
    sampling(body, &mut out)?;
    tools(body, &mut out)?;
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if let Some(stream) = body.get("stream").and_then(Value::as_bool) {
        out.insert("stream".into(), stream.into());
    }
    Ok(Value::Object(out))
}

fn max_tokens(body: &Value) -> Result<u64, TranslateError> {
    for field in ["max_completion_tokens", "max_tokens"] {
        match body.get(field) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                return v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                    TranslateError::invalid(field, format!("`{field}` must be a positive integer"))
                })
            }
        }
    }
    Ok(DEFAULT_MAX_TOKENS)
}

fn sampling(body: &Value, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    if let Some(n) = body.get("n").and_then(Value::as_u64).filter(|n| *n > 1) {
        return Err(TranslateError::invalid(
            "n",
            format!("this model gives one choice per request, not {n}"),
        ));
    }
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        out.insert("temperature".into(), t.clamp(0.0, 1.0).into());
    }
    if let Some(p) = body.get("top_p").and_then(Value::as_f64) {
        out.insert("top_p".into(), p.into());
    }
    let stops: Vec<Value> = match body.get("stop") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone().into()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.clone(),
        Some(_) => {
            return Err(TranslateError::invalid(
                "stop",
                "`stop` must be a string or an array of strings",
            ))
        }
    };
    if !stops.is_empty() {
        out.insert("stop_sequences".into(), stops.into());
    }
    Ok(())
}

fn tools(body: &Value, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    let list = match body.get("tools") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a),
        Some(_) => return Err(TranslateError::invalid("tools", "`tools` must be an array")),
    };
    if let Some(list) = list.filter(|l| !l.is_empty()) {
        let tools = list.iter().map(tool).collect::<Result<Vec<_>, _>>()?;
        out.insert("tools".into(), tools.into());
    }
    let parallel = body.get("parallel_tool_calls").and_then(Value::as_bool);
    let mut choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(c) => Some(tool_choice(c)?),
    };
    if parallel == Some(false) && out.contains_key("tools") {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = true.into();
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(())
}

fn tool(t: &Value) -> Result<Value, TranslateError> {
    let f = t
        .get("function")
        .filter(|_| t.get("type").and_then(Value::as_str) == Some("function"))
        .ok_or_else(|| TranslateError::invalid("tools", "only `function` tools are supported"))?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid("tools", "a function tool needs a `name`"))?;
    let schema = match f.get("parameters") {
        Some(p) if p.is_object() => p.clone(),
        _ => json!({"type": "object", "properties": {}}),
    };
    let mut out = json!({"name": name, "input_schema": schema});
    if let Some(d) = f.get("description").and_then(Value::as_str) {
        out["description"] = d.into();
    }
    Ok(out)
}

fn tool_choice(c: &Value) -> Result<Value, TranslateError> {
    let named = c
        .get("function")
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str);
    match (c.as_str(), named) {
        (Some("auto"), _) => Ok(json!({"type": "auto"})),
        (Some("none"), _) => Ok(json!({"type": "none"})),
        (Some("required"), _) => Ok(json!({"type": "any"})),
        (None, Some(name)) => Ok(json!({"type": "tool", "name": name})),
        _ => Err(TranslateError::invalid(
            "tool_choice",
            "`tool_choice` must be auto, none, required or a named function",
        )),
    }
}

/// The system text, and the turns with consecutive same-role turns merged.
fn translate_messages(messages: &[Value]) -> Result<(Vec<String>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.push(text_of(m.get("content"), &param)?);
                continue;
            }
            "user" => ("user", content_blocks(m.get("content"), &param)?),
            "assistant" => ("assistant", assistant_blocks(m, &param)?),
            "tool" => ("user", vec![tool_result(m, &param)?]),
            other => {
                return Err(TranslateError::invalid(
                    param,
                    format!("role `{other}` is not supported here"),
                ))
            }
        };
        // A message with nothing in it (an assistant's empty reply) is left
        // out, as Anthropic refuses empty content; its neighbours may merge.
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    trim_prefill(&mut turns);
    let turns = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, turns))
}

/// A trailing assistant turn is a prefill (the model continues it), and
/// Anthropic refuses one that ends in whitespace: it is trimmed at the end
/// (and left out if nothing remains).
fn trim_prefill(turns: &mut Vec<(&'static str, Vec<Value>)>) {
    let Some(("assistant", blocks)) = turns.last_mut().map(|(r, b)| (*r, b)) else {
        return;
    };
    if let Some(Value::String(text)) = blocks.last_mut().and_then(|b| b.get_mut("text")) {
        let kept = text.trim_end().len();
        text.truncate(kept);
        if kept == 0 {
            blocks.pop();
        }
    }
    if blocks.is_empty() {
        turns.pop();
    }
}

/// Plain text of a content that must be text (system, tool results).
fn text_of(content: Option<&Value>, param: &str) -> Result<String, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(
                |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                    _ => Err(TranslateError::invalid(
                        param,
                        "only text parts are allowed here",
                    )),
                },
            )
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.concat()),
        Some(_) => Err(TranslateError::invalid(
            param,
            "`content` must be a string or an array of parts",
        )),
    }
}

/// A user or assistant content as blocks; empty text is left out (Anthropic
/// refuses empty text blocks).
fn content_blocks(content: Option<&Value>, param: &str) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::String(s)) => return Ok(text_block(s).into_iter().collect()),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(TranslateError::invalid(
                param,
                "`content` must be a string or an array of parts",
            ))
        }
    };
    let mut blocks = Vec::new();
    for p in parts {
        match p.get("type").and_then(Value::as_str) {
            Some("text") => blocks.extend(text_block(
                p.get("text").and_then(Value::as_str).unwrap_or_default(),
            )),
            Some("image_url") => blocks.push(image_block(p, param)?),
            // An assistant's refusal is text the model already said.
            Some("refusal") => blocks.extend(text_block(
                p.get("refusal").and_then(Value::as_str).unwrap_or_default(),
            )),
            other => {
                return Err(TranslateError::invalid(
                    param,
                    format!(
                        "content part `{}` is not supported by this provider",
                        other.unwrap_or("?")
                    ),
                ))
            }
        }
    }
    Ok(blocks)
}

fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn image_block(part: &Value, param: &str) -> Result<Value, TranslateError> {
    let url = part
        .get("image_url")
        .and_then(|i| i.get("url").or(Some(i)))
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(param, "an `image_url` part needs a `url`"))?;
    let source = match url.strip_prefix("data:") {
        Some(rest) => {
            let (media_type, data) = rest.split_once(";base64,").ok_or_else(|| {
                TranslateError::invalid(param, "an image `data:` URL must be base64")
            })?;
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        None => json!({"type": "url", "url": url}),
    };
    Ok(json!({"type": "image", "source": source}))
}

fn assistant_blocks(m: &Value, param: &str) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = content_blocks(m.get("content"), param)?;
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(calls)) => calls,
        Some(_) => {
            return Err(TranslateError::invalid(
                param,
                "`tool_calls` must be an array",
            ))
        }
    };
    for call in calls {
        let id = call.get("id").and_then(Value::as_str);
        let f = call.get("function");
        let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            return Err(TranslateError::invalid(
                param,
                "a tool call needs an `id` and a `function.name`",
            ));
        };
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let input = match args.trim() {
            "" => json!({}),
            a => serde_json::from_str::<Value>(a)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    TranslateError::invalid(param, "tool call `arguments` must be a JSON object")
                })?,
        };
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(blocks)
}

fn tool_result(m: &Value, param: &str) -> Result<Value, TranslateError> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(param, "a tool message needs a `tool_call_id`"))?;
    let content = text_of(m.get("content"), param)?;
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
