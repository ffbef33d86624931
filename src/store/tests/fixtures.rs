//! Records the store tests build, in one place so every test makes them alike.

use serde_json::json;

use crate::{
    domain::{AgentEvent, EventBody, LogLevel, RunId, RunStatus},
    store::*,
};

/// A fresh account id, so tests never see each other's rows.
pub(super) fn acct() -> String {
    crate::util::new_id("acct")
}

/// A stored timestamp as a time (their text does not sort: `time` trims
/// trailing zeros of the fraction).
pub(super) fn ts(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

pub(super) fn nf(kind: &str) -> StoreError {
    StoreError::NotFound(kind.to_owned())
}

pub(super) fn params(limit: u32, offset: u64, after: Option<&str>) -> ListParams {
    ListParams {
        limit,
        offset,
        after: after.map(str::to_owned),
        ..Default::default()
    }
}

pub(super) fn new_agent(name: &str) -> NewAgent {
    NewAgent {
        name: name.to_owned(),
        model: "echo".to_owned(),
        system: "be brief".to_owned(),
        tools: Vec::new(),
        tags: vec!["a".to_owned(), "b".to_owned()],
        metadata: json!({"team": "core", "n": 1}),
        approval_required: vec!["get_time".to_owned()],
    }
}

pub(super) fn new_tool(name: &str) -> NewTool {
    NewTool {
        name: name.to_owned(),
        description: "finds things".to_owned(),
        json_schema: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
        kind: "webhook".to_owned(),
        url: Some("http://127.0.0.1:9/hook".to_owned()),
        requires_approval: false,
    }
}

/// A new running run, as the runtime hands it over (id and times set).
pub(super) fn run(agent_id: &str, session_id: &str) -> Run {
    let now = crate::util::now();
    Run {
        id: RunId::generate(),
        agent_id: agent_id.into(),
        session_id: session_id.into(),
        status: RunStatus::Running,
        stop_reason: None,
        error: None,
        error_code: None,
        created_at: now.clone(),
        updated_at: now,
    }
}

pub(super) fn event(agent_id: &str, seq: u64, run_id: &str, session_id: &str) -> EventRecord {
    let event = AgentEvent {
        id: format!("msg-{seq}").into(),
        seq: None,
        run_id: run_id.into(),
        agent_id: agent_id.into(),
        session_id: Some(session_id.into()),
        date: crate::util::now(),
        body: EventBody::AssistantMessage {
            message: "héllo \"world\"\n✓".into(),
        },
    };
    EventRecord::new(seq, event).expect("an event with a session")
}

pub(super) fn log(agent_id: &str, seq: u64) -> LogRecord {
    let line = AgentEvent::log(
        agent_id.into(),
        "run-1".into(),
        LogLevel::Info,
        "line".into(),
    );
    LogRecord::new(seq, line)
}

/// An agent of `account` with one of everything that goes when it goes: a
/// session, a run in it, one event and one log line.
pub(super) async fn agent_with_activity(
    store: &dyn Store,
    account: &str,
    name: &str,
) -> (Agent, Session, Run) {
    let agent = store
        .create_agent(account, new_agent(name))
        .await
        .expect("agent");
    let sess = store
        .create_session(account, agent.id.as_str(), "s")
        .await
        .expect("session");
    let r = store
        .create_run(account, run(agent.id.as_str(), sess.id.as_str()))
        .await
        .expect("run");
    store
        .append_events(
            account,
            vec![event(agent.id.as_str(), 1, r.id.as_str(), sess.id.as_str())],
        )
        .await
        .expect("events");
    store
        .append_logs(account, vec![log(agent.id.as_str(), 1)])
        .await
        .expect("logs");
    (agent, sess, r)
}
