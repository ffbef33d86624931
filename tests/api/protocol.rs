//! The wire contract in `protocol/` checked against the real gateway.
//!
//! The JSON Schemas are loaded from `protocol/schemas/` at test time, so a
//! change to a schema or to the code that makes the shape it describes is
//! caught here: every response, SSE event and WebSocket frame the submodules
//! receive is validated. This module also checks that the schemas are valid
//! JSON Schema, that they refuse drifted shapes, and that the Markdown
//! documents every route and scope the code has.
//!
//! - [`rest`]: error envelopes and resources of the REST routes.
//! - [`streams`]: a run as SSE and as JSON, /events, history, logs, resume.
//! - [`ws`]: `/v1/ws` frames both ways.
//! - [`sse`]: the raw SSE reader the stream tests use.
//! - [`openai`]: `/v1/chat/completions` and `/v1/models`.

mod openai;
mod rest;
mod sse;
mod streams;
mod ws;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use jsonschema::{Registry, Validator};
use serde_json::{json, Value};
use weir::{
    http::{
        route::Access,
        routes::{authenticated, ROUTES},
    },
    store::SCOPES,
};

/// Where every schema's `$id` lives (identifiers, not URLs to fetch).
pub const BASE: &str = "https://weir.invalid/protocol/v1/schemas/";

/// The `protocol/` folder of this crate.
pub fn protocol_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol")
}

/// Every schema file, by file name, parsed.
pub fn schema_files() -> &'static BTreeMap<String, Value> {
    static FILES: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = protocol_dir().join("schemas");
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("protocol/schemas exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).expect("schema readable");
                let value: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
                let name = path
                    .file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned();
                files.insert(name, value);
            }
        }
        assert!(files.len() >= 10, "schemas found: {:?}", files.keys());
        files
    })
}

/// All schemas in one registry, so `$ref`s between files resolve offline.
fn registry() -> &'static Registry<'static> {
    static REGISTRY: OnceLock<Registry<'static>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let pairs = schema_files()
            .iter()
            .map(|(name, value)| (format!("{BASE}{name}"), value.clone()));
        Registry::new()
            .extend(pairs)
            .and_then(|b| b.prepare())
            .expect("schemas form a registry")
    })
}

/// A validator for `reference`: a file name, optionally with a fragment
/// (`agent.json`, `key.json#/$defs/minted`).
pub fn validator(reference: &str) -> Validator {
    let schema = json!({ "$ref": format!("{BASE}{reference}") });
    jsonschema::options()
        .offline()
        .with_registry(registry())
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {reference} does not build: {e}"))
}

/// Panics with every violation unless `instance` matches `reference`.
#[track_caller]
pub fn assert_valid(reference: &str, instance: &Value) {
    let v = validator(reference);
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("  at `{}`: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "does not match {reference}:\n{}\ninstance: {instance:#}",
        errors.join("\n")
    );
}

/// Panics unless `instance` violates `reference` (the schema has teeth).
#[track_caller]
pub fn assert_invalid(reference: &str, instance: &Value) {
    assert!(
        !validator(reference).is_valid(instance),
        "{reference} should refuse {instance:#}"
    );
}

/// A Markdown file of `protocol/`.
pub fn doc(name: &str) -> String {
    std::fs::read_to_string(protocol_dir().join(name))
        .unwrap_or_else(|e| panic!("protocol/{name}: {e}"))
}

#[test]
fn every_schema_is_valid_json_schema() {
    for (name, schema) in schema_files() {
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}: draft 2020-12"
        );
        assert_eq!(schema["$id"], format!("{BASE}{name}"), "{name}: $id");
        if let Err(e) = jsonschema::meta::validate(schema) {
            panic!("{name} is not a valid JSON Schema: {e}");
        }
        validator(name);
        // Every named definition builds too (refs inside it resolve).
        if let Some(defs) = schema["$defs"].as_object() {
            for def in defs.keys() {
                validator(&format!("{name}#/$defs/{def}"));
            }
        }
    }
}

#[test]
fn schemas_refuse_drifted_shapes() {
    let ts = "2026-11-23T15:45:35.123Z";
    let agent = json!({
        "id": "agent-abc", "name": "a", "model": "echo", "system": "", "tools": [], "tags": [],
        "metadata": {}, "status": "running", "created_at": ts, "updated_at": ts
    });
    assert_valid("agent.json", &agent);
    let mut extra = agent.clone();
    extra["account_id"] = json!("default");
    assert_invalid("agent.json", &extra);
    let mut missing = agent.clone();
    missing.as_object_mut().unwrap().remove("tags");
    assert_invalid("agent.json", &missing);
    assert_invalid(
        "agent.json",
        &Value::Object(agent_with(&agent, "status", json!("paused"))),
    );

    let err = json!({"error": {"code": "not_found", "message": "m", "request_id": "req-1"}});
    assert_valid("error.json", &err);
    assert_invalid(
        "error.json",
        &json!({"error": {"code": "not_found", "message": "m"}}),
    );
    assert_invalid(
        "error.json",
        &json!({"error": {"code": "nope", "message": "m", "request_id": "r"}}),
    );

    let base = json!({"id": "msg-a", "seq": 3, "run_id": "run-a", "agent_id": "agent-a",
        "session_id": "sess-a", "date": ts});
    let with = |fields: Value| {
        let mut e = base.clone();
        e.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        e
    };
    assert_valid(
        "event.json",
        &with(json!({"message_type": "done", "stop_reason": "end_turn"})),
    );
    assert_invalid(
        "event.json",
        &with(json!({"message_type": "done", "stop_reason": "bored"})),
    );
    assert_invalid("event.json", &with(json!({"message_type": "done"})));
    assert_invalid(
        "event.json",
        &with(json!({"message_type": "done", "stop_reason": "end_turn", "x": 1})),
    );
    assert_invalid(
        "event.json",
        &with(json!({"message_type": "shout", "message": "hi"})),
    );
    assert_invalid(
        "event.json",
        &with(json!({"message_type": "assistant_delta", "message": "hi"})),
    );
    let fm = json!({"function": "get_time", "args": {}, "result": "now", "status": "success"});
    assert_valid(
        "event.json",
        &with(json!({"message_type": "function_message", "message": fm})),
    );
    let mut bad_fm = fm.clone();
    bad_fm["status"] = json!("ok");
    assert_invalid(
        "event.json",
        &with(json!({"message_type": "function_message", "message": bad_fm})),
    );
    // A log line has a `log-` id and no session.
    let log = json!({"id": "log-a", "seq": 1, "run_id": "run-a", "agent_id": "agent-a", "date": ts,
        "message_type": "log", "level": "info", "message": "run started"});
    assert_valid("event.json", &log);
    assert_valid("event.json#/$defs/log_line", &log);
    assert_invalid("event.json#/$defs/agent_event", &log);
    let mut log_with_session = log.clone();
    log_with_session["session_id"] = json!("sess-a");
    assert_invalid("event.json", &log_with_session);

    assert_valid("ws-server.json", &json!({"type": "pong"}));
    assert_invalid("ws-server.json", &json!({"type": "pong", "extra": true}));
    assert_invalid("ws-server.json", &json!({"type": "hello"}));
    let mut resp = with(json!({"message_type": "assistant_message", "message": "hi"}));
    resp["type"] = json!("agent_response");
    assert_valid("ws-server.json", &resp);
    resp["surprise"] = json!(1);
    assert_invalid("ws-server.json", &resp);
    assert_invalid("ws-client.json", &json!({"type": "subscribe"}));
    assert_invalid(
        "ws-client.json",
        &json!({"type": "user_message", "agent_id": "a", "message": "x", "messages": [{"role": "user", "content": "y"}]}),
    );
}

fn agent_with(agent: &Value, field: &str, value: Value) -> serde_json::Map<String, Value> {
    let mut a = agent.as_object().cloned().unwrap_or_default();
    a.insert(field.into(), value);
    a
}

/// `GET /v1/agents/{id}` as rest.md writes it (`{id}` params named freely).
fn documented_routes(rest_md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in rest_md.lines() {
        let Some(title) = line.strip_prefix("### ") else {
            continue;
        };
        let title = title.trim().trim_matches('`');
        if let Some((method, path)) = title.split_once(' ') {
            out.push((method.to_owned(), normalise(path.trim())));
        }
    }
    out
}

/// `/v1/agents/{agent_id}` → `/v1/agents/{}`.
fn normalise(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn every_route_is_documented_in_rest_md() {
    let documented = documented_routes(&doc("rest.md"));
    for r in ROUTES {
        let (method, path) = (r.verb.method(), r.path);
        let want = (method.as_str().to_owned(), normalise(path));
        assert!(
            documented.contains(&want),
            "protocol/rest.md has no `### {} {}` section",
            want.0,
            path
        );
    }
    // And nothing documented that the scope table does not know.
    for (method, path) in &documented {
        let known = ROUTES
            .iter()
            .any(|r| r.verb.method().as_str() == method && normalise(r.path) == *path);
        assert!(
            known,
            "rest.md documents `{method} {path}`, which the code does not route"
        );
    }
}

#[test]
fn auth_md_scope_table_matches_the_code() {
    let auth = doc("auth.md");
    // Rows of the route table: | `METHOD /path` | `scope` or any key |
    let mut rows = Vec::new();
    for line in auth.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let Some((method, path)) = cells[1].trim_matches('`').split_once(' ') else {
            continue;
        };
        if !["GET", "POST", "PATCH", "DELETE"].contains(&method) {
            continue;
        }
        rows.push((
            method.to_owned(),
            normalise(path),
            cells[2].trim_matches('`').to_owned(),
        ));
    }
    assert_eq!(
        rows.len(),
        authenticated().count(),
        "auth.md lists every authenticated route once: {rows:?}"
    );
    for r in authenticated() {
        let (method, path) = (r.verb.method(), r.path);
        let want = match r.access {
            Access::Public => unreachable!("authenticated routes only"),
            Access::AnyKey => "any key".to_owned(),
            Access::Scope(s) => s.to_owned(),
        };
        let row = rows
            .iter()
            .find(|(m, p, _)| m == method.as_str() && *p == normalise(path))
            .unwrap_or_else(|| panic!("auth.md has no row for {method} {path}"));
        assert_eq!(row.2, want, "auth.md scope of {method} {path}");
    }
    for scope in SCOPES {
        assert!(
            auth.contains(&format!("`{scope}`")),
            "auth.md names scope `{scope}`"
        );
    }
    let enum_scopes = &schema_files()["common.json"]["$defs"]["scope"]["enum"];
    assert_eq!(
        *enum_scopes,
        json!(SCOPES),
        "common.json scope enum = store::SCOPES"
    );
}

#[test]
fn every_error_code_is_documented() {
    let errors = doc("errors.md");
    let codes = schema_files()["error.json"]["properties"]["error"]["properties"]["code"]["enum"]
        .as_array()
        .expect("code enum");
    for code in codes {
        let code = code.as_str().expect("string code");
        assert!(
            errors.contains(&format!("`{code}`")),
            "errors.md documents `{code}`"
        );
    }
    let events = doc("events.md");
    for t in schema_files()["event.json"]["$defs"]["message_type"]["enum"]
        .as_array()
        .expect("message types")
    {
        let t = t.as_str().expect("string");
        assert!(
            events.contains(&format!("`{t}`")),
            "events.md documents `{t}`"
        );
    }
}
