//! Every event kind encodes to exactly the bytes the map-based code wrote
//! (written out by hand below, and compared with a `serde_json::Map` built
//! the old way), and decodes back to the same value.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;

const COMMON: &str = r#""agent_id":"agent-A","date":"2026-11-23T15:54:15.538Z","id":"msg-M""#;

fn event(body: EventBody) -> AgentEvent {
    AgentEvent {
        id: "msg-M".into(),
        seq: Some(5),
        run_id: "run-R".into(),
        agent_id: "agent-A".into(),
        session_id: Some("sess-S".into()),
        date: "2026-11-23T15:54:15.538Z".into(),
        body,
    }
}

/// The event as the map-based code built it: the common fields inserted
/// into a `Map`, then the body's fields, then `seq`.
fn old_encoding(e: &AgentEvent, fields: Value) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("id".into(), e.id.as_str().into());
    m.insert("run_id".into(), e.run_id.as_str().into());
    m.insert("agent_id".into(), e.agent_id.as_str().into());
    if let Some(s) = &e.session_id {
        m.insert("session_id".into(), s.as_str().into());
    }
    m.insert("date".into(), e.date.clone().into());
    m.insert("message_type".into(), e.message_type().as_str().into());
    let Value::Object(fields) = fields else {
        panic!("fields are an object")
    };
    m.extend(fields);
    if let Some(seq) = e.seq {
        m.insert("seq".into(), seq.into());
    }
    serde_json::to_vec(&m).unwrap()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

/// Each kind with the fields the old code gave it and the bytes it wrote.
fn cases() -> Vec<(AgentEvent, Value, String)> {
    let tail = r#""run_id":"run-R","seq":5,"session_id":"sess-S""#;
    let call = FunctionCall {
        args: json!({"tz": "UTC", "a": [1, {"z": 1, "b": null}]}),
        function: "get_time".into(),
        result: json!("2026-11-23T15:54:15Z"),
        status: FunctionStatus::Success,
    };
    vec![
        (
            event(EventBody::UserMessage {
                message: "hi \"there\"\n".into(),
            }),
            json!({"message": "hi \"there\"\n"}),
            format!(
                r#"{{{COMMON},"message":"hi \"there\"\n","message_type":"user_message",{tail}}}"#
            ),
        ),
        (
            event(EventBody::InternalMonologue {
                message: "hmm é ✓".into(),
            }),
            json!({"message": "hmm é ✓"}),
            format!(
                r#"{{{COMMON},"message":"hmm é ✓","message_type":"internal_monologue",{tail}}}"#
            ),
        ),
        (
            event(EventBody::FunctionMessage { message: call }),
            json!({"message": {"function": "get_time", "args": {"tz": "UTC", "a": [1, {"z": 1, "b": null}]}, "result": "2026-11-23T15:54:15Z", "status": "success"}}),
            format!(
                r#"{{{COMMON},"message":{{"args":{{"a":[1,{{"b":null,"z":1}}],"tz":"UTC"}},"function":"get_time","result":"2026-11-23T15:54:15Z","status":"success"}},"message_type":"function_message",{tail}}}"#
            ),
        ),
        (
            event(EventBody::AssistantDelta { delta: "Yo".into() }),
            json!({"delta": "Yo"}),
            format!(
                r#"{{"agent_id":"agent-A","date":"2026-11-23T15:54:15.538Z","delta":"Yo","id":"msg-M","message_type":"assistant_delta",{tail}}}"#
            ),
        ),
        (
            event(EventBody::AssistantMessage {
                message: "You said: \"hello\"".into(),
            }),
            json!({"message": "You said: \"hello\""}),
            format!(
                r#"{{{COMMON},"message":"You said: \"hello\"","message_type":"assistant_message",{tail}}}"#
            ),
        ),
        (
            event(EventBody::Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
            }),
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
            format!(
                r#"{{"agent_id":"agent-A","completion_tokens":4,"date":"2026-11-23T15:54:15.538Z","id":"msg-M","message_type":"usage","prompt_tokens":3,{tail},"total_tokens":7}}"#
            ),
        ),
        (
            event(EventBody::Error {
                code: ErrorCode::UpstreamTimeout,
                message: "slow".into(),
            }),
            json!({"code": "upstream_timeout", "message": "slow"}),
            format!(
                r#"{{"agent_id":"agent-A","code":"upstream_timeout","date":"2026-11-23T15:54:15.538Z","id":"msg-M","message":"slow","message_type":"error",{tail}}}"#
            ),
        ),
        (
            event(EventBody::Done {
                stop_reason: StopReason::EndTurn,
            }),
            json!({"stop_reason": "end_turn"}),
            format!(r#"{{{COMMON},"message_type":"done",{tail},"stop_reason":"end_turn"}}"#),
        ),
    ]
}

/// `approval_request`, and `approval_response` with and without its
/// optional fields (absent ones are left out, not null).
fn approval_cases() -> Vec<(AgentEvent, Value)> {
    use crate::domain::ApprovalDecision;
    let args = json!({"tz": "UTC", "n": [1, {"z": 1, "b": null}]});
    vec![
        (
            event(EventBody::ApprovalRequest {
                approval_id: "appr-1".into(),
                tool: "get_time".into(),
                arguments: args.clone(),
                expires_at: "2026-11-23T16:04:15.538Z".into(),
            }),
            json!({"approval_id": "appr-1", "tool": "get_time", "arguments": args,
                   "expires_at": "2026-11-23T16:04:15.538Z"}),
        ),
        (
            event(EventBody::ApprovalResponse {
                approval_id: "appr-1".into(),
                decision: ApprovalDecision::Deny,
                key_id: Some("key-K".into()),
                reason: Some("no".into()),
            }),
            json!({"approval_id": "appr-1", "decision": "deny", "key_id": "key-K", "reason": "no"}),
        ),
        (
            event(EventBody::ApprovalResponse {
                approval_id: "appr-1".into(),
                decision: ApprovalDecision::Expired,
                key_id: None,
                reason: None,
            }),
            json!({"approval_id": "appr-1", "decision": "expired"}),
        ),
    ]
}

fn log_line() -> AgentEvent {
    AgentEvent {
        id: "log-L".into(),
        seq: Some(1),
        run_id: "run-R".into(),
        agent_id: "agent-A".into(),
        session_id: None,
        date: "2026-11-23T15:54:15.536Z".into(),
        body: EventBody::Log {
            level: LogLevel::Info,
            message: "run started".into(),
        },
    }
}

#[test]
fn every_kind_encodes_as_the_map_did_and_decodes_back() {
    let mut kinds = Vec::new();
    for (e, fields, want) in cases() {
        let got = serde_json::to_vec(&e).unwrap();
        assert_eq!(text(&got), want, "{:?}", e.message_type());
        assert_eq!(text(&got), text(&old_encoding(&e, fields)));
        assert_eq!(AgentEvent::from_json(&got).unwrap(), e);
        kinds.push(e.message_type());
    }
    let log = log_line();
    let got = serde_json::to_vec(&log).unwrap();
    let want = r#"{"agent_id":"agent-A","date":"2026-11-23T15:54:15.536Z","id":"log-L","level":"info","message":"run started","message_type":"log","run_id":"run-R","seq":1}"#;
    assert_eq!(text(&got), want);
    let fields = json!({"level": "info", "message": "run started"});
    assert_eq!(text(&got), text(&old_encoding(&log, fields)));
    assert_eq!(AgentEvent::from_json(&got).unwrap(), log);
    kinds.push(log.message_type());
    // The approval kinds came after log lines: same encoding rules, new bytes.
    for (e, fields) in approval_cases() {
        let got = serde_json::to_vec(&e).unwrap();
        assert_eq!(text(&got), text(&old_encoding(&e, fields)));
        assert_eq!(AgentEvent::from_json(&got).unwrap(), e);
        kinds.push(e.message_type());
    }
    kinds.dedup();
    assert_eq!(kinds, MessageType::ALL, "a case per kind, in order");
}

#[test]
fn every_stop_reason_and_error_code_encodes_as_text() {
    for &reason in StopReason::ALL {
        let e = event(EventBody::Done {
            stop_reason: reason,
        });
        let v: Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["stop_reason"], reason.as_str());
        assert_eq!(
            AgentEvent::from_json(&serde_json::to_vec(&e).unwrap()).unwrap(),
            e
        );
    }
    for &code in ErrorCode::ALL {
        let e = event(EventBody::Error {
            code,
            message: "m".into(),
        });
        let json = serde_json::to_vec(&e).unwrap();
        assert_eq!(
            text(&json),
            text(&old_encoding(
                &e,
                json!({"code": code.as_str(), "message": "m"})
            ))
        );
        assert_eq!(AgentEvent::from_json(&json).unwrap(), e);
    }
}

#[test]
fn seq_is_written_only_when_numbered() {
    let mut e = event(EventBody::Done {
        stop_reason: StopReason::Cancelled,
    });
    e.seq = None;
    let unnumbered = e.to_json_with_seq(None);
    assert!(!text(&unnumbered).contains("\"seq\""));
    assert_eq!(text(&unnumbered), text(&serde_json::to_vec(&e).unwrap()));
    let decoded = AgentEvent::from_json(&unnumbered).unwrap();
    assert_eq!(decoded.seq, None);
    let numbered = e.to_json_with_seq(Some(42));
    assert!(text(&numbered).contains(r#""run_id":"run-R","seq":42,"session_id""#));
    assert_eq!(AgentEvent::from_json(&numbered).unwrap().seq, Some(42));
}

#[test]
fn new_events_get_fresh_ids_and_dates() {
    let e = AgentEvent::new(
        "agent-A".into(),
        "run-R".into(),
        "sess-S".into(),
        EventBody::AssistantDelta { delta: "x".into() },
    );
    assert!(e.id.as_str().starts_with("msg-") && e.seq.is_none());
    assert_eq!(e.date.len(), "2026-11-23T15:54:15.538Z".len());
    let l = AgentEvent::log("agent-A".into(), "run-R".into(), LogLevel::Warn, "w".into());
    assert!(l.id.as_str().starts_with("log-") && l.session_id.is_none());
    assert_eq!(l.message_type(), MessageType::Log);
}

#[test]
fn decoding_refuses_what_is_not_an_event() {
    for bad in [
        r#"[]"#,
        r#"{"message_type":"log"}"#,
        r#"{"agent_id":"a","date":"d","id":"i","run_id":"r","message_type":"shout"}"#,
        r#"{"agent_id":"a","date":"d","id":"i","run_id":"r","message_type":"done","stop_reason":"bored"}"#,
    ] {
        assert!(AgentEvent::from_json(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn the_schema_names_every_kind() {
    let schema = serde_json::to_string(&<EventBody as utoipa::PartialSchema>::schema()).unwrap();
    for kind in MessageType::ALL {
        assert!(schema.contains(&format!("\"{kind}\"")), "{kind}");
    }
}

proptest! {
    /// Any text, any numbers, any JSON in a tool call: the same bytes as the map.
    #[test]
    fn arbitrary_fields_encode_as_the_map_did(
        message in any::<String>(),
        n in any::<u64>(),
        key in "[a-z_]{0,12}",
        seq in proptest::option::of(1u64..u64::MAX),
    ) {
        let call = FunctionCall {
            args: json!({key.clone(): message.clone(), "n": n}),
            function: message.clone(),
            result: Value::from(message.clone()),
            status: FunctionStatus::Error,
        };
        let bodies = [
            (EventBody::AssistantMessage { message: message.clone() }, json!({"message": message})),
            (EventBody::Usage { prompt_tokens: n, completion_tokens: n / 2, total_tokens: n / 3 },
             json!({"prompt_tokens": n, "completion_tokens": n / 2, "total_tokens": n / 3})),
            (EventBody::FunctionMessage { message: call.clone() },
             json!({"message": {"function": message, "args": call.args, "result": message, "status": "error"}})),
        ];
        for (body, fields) in bodies {
            let mut e = event(body);
            e.seq = seq;
            let got = serde_json::to_vec(&e).unwrap();
            let old = old_encoding(&e, fields);
            prop_assert_eq!(text(&got), text(&old));
            prop_assert_eq!(AgentEvent::from_json(&got).unwrap(), e);
        }
    }
}

#[test]
fn the_event_schema_has_the_common_fields() {
    let json = |s| {
        let mut v = serde_json::to_value(s).unwrap();
        crate::domain::schema::lift(&mut v);
        v
    };
    let event = json(<AgentEvent as utoipa::PartialSchema>::schema());
    assert_eq!(
        event["allOf"][0]["$ref"],
        "#/components/schemas/EventFields"
    );
    assert_eq!(event["unevaluatedProperties"], false, "closed: {event}");
    let fields = json(<super::super::EventFields as utoipa::PartialSchema>::schema());
    // Every event on the wire has been numbered: `seq` is required there.
    assert_eq!(
        fields["required"],
        json!(["id", "seq", "run_id", "agent_id", "date", "message_type"])
    );
    assert_eq!(
        fields["allOf"][0]["else"]["properties"]["session_id"]["$ref"],
        "#/components/schemas/SessionId"
    );
    assert_eq!(fields["allOf"][1]["$ref"], "#/components/schemas/EventBody");
}
