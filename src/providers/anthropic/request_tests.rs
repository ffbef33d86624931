//! The request translation, field by field.

use serde_json::{json, Value};

use super::*;

fn translate(body: Value) -> Value {
    request_from_openai(&body, "claude-test").unwrap()
}

fn invalid_param(body: Value) -> String {
    match request_from_openai(&body, "claude-test") {
        Err(TranslateError::Invalid { param, .. }) => param,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn plain_chat_gets_model_default_max_tokens_and_system() {
    let out = translate(json!({
        "model": "upstream/fast",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "Hello"}
        ],
        "stream": true
    }));
    assert_eq!(
        out,
        json!({
            "model": "claude-test",
            "max_tokens": DEFAULT_MAX_TOKENS,
            "system": "Be brief.\n\nUse French.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
            "stream": true
        })
    );
}

#[test]
fn empty_turns_are_left_out_and_same_roles_merge() {
    let out = translate(json!({"messages": [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": ""}]}
    ]}));
    assert_eq!(
        out["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}])
    );
}

#[test]
fn a_prefill_loses_its_trailing_whitespace() {
    let prefill = |text: &str| {
        translate(json!({"messages": [
            {"role": "user", "content": "Count"},
            {"role": "assistant", "content": text}
        ]}))["messages"]
            .clone()
    };
    assert_eq!(
        prefill("one, two, ")[1],
        json!({"role": "assistant", "content": [{"type": "text", "text": "one, two,"}]})
    );
    assert_eq!(
        prefill("  \n").as_array().unwrap().len(),
        1,
        "nothing left: no prefill"
    );
}

#[test]
fn sampling_fields_are_translated() {
    let out = translate(json!({
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 100, "max_tokens": 7,
        "temperature": 1.6, "top_p": 0.5, "stop": "END", "user": "u-1",
        "seed": 3, "presence_penalty": 1.0, "stream_options": {"include_usage": true}
    }));
    assert_eq!(out["max_tokens"], 100, "max_completion_tokens wins");
    assert_eq!(out["temperature"], 1.0, "clamped to Anthropic's range");
    assert_eq!(out["top_p"], 0.5);
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(out["metadata"], json!({"user_id": "u-1"}));
    for dropped in [
        "seed",
        "presence_penalty",
        "stream_options",
        "stream",
        "stop",
        "user",
    ] {
        assert!(
            out.get(dropped).is_none(),
            "{dropped} is not a Messages field"
        );
    }
    let out = translate(json!({"messages": [], "max_tokens": 7, "stop": ["a", "b"]}));
    assert_eq!(out["max_tokens"], 7);
    assert_eq!(out["stop_sequences"], json!(["a", "b"]));
}

#[test]
fn images_become_image_blocks() {
    let out = translate(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}}
    ]}]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
        ])
    );
}

#[test]
fn tool_calls_and_results_round_trip() {
    let out = translate(json!({"messages": [
        {"role": "user", "content": "Weather in SF and NYC?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"SF\"}"}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "15C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "20C"}]},
        {"role": "user", "content": "Thanks"}
    ]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in SF and NYC?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "SF"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "20C"},
                {"type": "text", "text": "Thanks"}
            ]}
        ])
    );
}

#[test]
fn tools_and_tool_choice() {
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}
    }}, {"type": "function", "function": {"name": "ping"}}]);
    let out = translate(json!({"messages": [], "tools": tools, "tool_choice": "required"}));
    assert_eq!(
        out["tools"],
        json!([
            {"name": "get_weather", "description": "Weather now",
             "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}},
            {"name": "ping", "input_schema": {"type": "object", "properties": {}}}
        ])
    );
    assert_eq!(out["tool_choice"], json!({"type": "any"}));
    let table = [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (
            json!({"type": "function", "function": {"name": "ping"}}),
            json!({"type": "tool", "name": "ping"}),
        ),
    ];
    for (choice, want) in table {
        let out = translate(json!({"messages": [], "tools": tools, "tool_choice": choice}));
        assert_eq!(out["tool_choice"], want);
    }
    let out = translate(json!({"messages": [], "tools": tools, "parallel_tool_calls": false}));
    assert_eq!(
        out["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    let out = translate(json!({"messages": [], "parallel_tool_calls": false}));
    assert!(
        out.get("tool_choice").is_none(),
        "no tools, nothing to disable"
    );
}

#[test]
fn untranslatable_requests_name_their_field() {
    let table = [
        (json!({}), "messages"),
        (json!({"messages": [], "n": 2}), "n"),
        (json!({"messages": [], "max_tokens": 0}), "max_tokens"),
        (json!({"messages": [], "stop": 5}), "stop"),
        (
            json!({"messages": [], "tools": [{"type": "web_search"}]}),
            "tools",
        ),
        (
            json!({"messages": [], "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "function", "content": "x"}]}),
            "messages[0]",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "messages[0]",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [
                {"id": "a", "function": {"name": "f", "arguments": "[1]"}}]}]}),
            "messages[0]",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0]",
        ),
    ];
    for (body, param) in table {
        assert_eq!(invalid_param(body.clone()), param, "{body}");
    }
}
