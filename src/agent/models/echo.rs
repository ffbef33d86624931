//! `echo`: the built-in offline model. Deterministic, so tests and demos need
//! no provider: it thinks out loud (one monologue), calls `get_time` once when
//! the user asks for the time, then replies quoting the user, in word-sized
//! token pieces with an optional per-piece delay (agent metadata
//! `echo_delay_ms`) to simulate a slow model under load.

use std::time::Duration;

use super::{ModelEvent, ModelRequest, ModelStream, StepOutput, ToolCall, Turn, Usage};

/// The echo model; `delay` is slept before each token piece.
#[derive(Debug, Clone)]
pub struct Echo {
    delay: Duration,
}

impl Echo {
    pub fn new(delay: Duration) -> Self {
        Self { delay }
    }

    pub fn step(&self, req: ModelRequest) -> ModelStream {
        let plan = plan(&req.turns);
        let delay = self.delay;
        let prompt_tokens = req.turns.iter().map(turn_words).sum::<u64>();
        Box::pin(async_stream::stream! {
            match plan {
                Plan::CallTime { monologue, call } => {
                    yield Ok(ModelEvent::Monologue(monologue));
                    pause(delay).await;
                    let usage = usage(prompt_tokens, 1);
                    yield Ok(ModelEvent::Done(StepOutput { content: String::new(), tool_calls: vec![call], usage }));
                }
                Plan::Reply { monologue, reply } => {
                    if let Some(m) = monologue {
                        yield Ok(ModelEvent::Monologue(m));
                    }
                    let pieces = token_pieces(&reply);
                    for piece in &pieces {
                        pause(delay).await;
                        yield Ok(ModelEvent::Delta((*piece).to_owned()));
                    }
                    let usage = usage(prompt_tokens, pieces.len() as u64);
                    yield Ok(ModelEvent::Done(StepOutput { content: reply.clone(), tool_calls: Vec::new(), usage }));
                }
            }
        })
    }
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
    }
}

/// What the echo model will do for this conversation.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    CallTime {
        monologue: String,
        call: ToolCall,
    },
    Reply {
        monologue: Option<String>,
        reply: String,
    },
}

fn plan(turns: &[Turn]) -> Plan {
    let user = turns
        .iter()
        .rev()
        .find_map(|t| match t {
            Turn::User(text) => Some(text.as_str()),
            _ => None,
        })
        .unwrap_or("");
    // Tool results since the last user turn: this is the step after a call.
    let results: Vec<&str> = turns
        .iter()
        .rev()
        .take_while(|t| !matches!(t, Turn::User(_)))
        .filter_map(|t| match t {
            Turn::Tool { content, .. } => Some(content.as_str()),
            _ => None,
        })
        .collect();
    let quoted = format!("You said: \"{user}\"");
    if let Some(result) = results.first() {
        return Plan::Reply {
            monologue: None,
            reply: format!("{quoted}. The current time is {result}."),
        };
    }
    if asks_for_time(user) {
        let step = turns
            .iter()
            .filter(|t| matches!(t, Turn::Assistant { .. }))
            .count();
        return Plan::CallTime {
            monologue: "The user asks for the time; I will call get_time.".into(),
            call: ToolCall {
                id: format!("call_echo_{step}"),
                name: "get_time".into(),
                arguments: "{}".into(),
            },
        };
    }
    Plan::Reply {
        monologue: Some(format!(
            "The user wrote {} words; I will echo them back.",
            user.split_whitespace().count()
        )),
        reply: quoted,
    }
}

/// True when the word `time` appears (any case), so "what time is it?"
/// triggers a call and "sometimes" does not.
fn asks_for_time(text: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case("time"))
}

/// Splits text into word pieces that keep their trailing whitespace, so the
/// pieces concatenate back to exactly `text`.
pub fn token_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            pieces.push(&text[start..i]);
            start = i;
            in_space = false;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

fn turn_words(t: &Turn) -> u64 {
    let text = match t {
        Turn::System(s) | Turn::User(s) => s.as_str(),
        Turn::Assistant { content, .. } => content.as_str(),
        Turn::Tool { content, .. } => content.as_str(),
    };
    text.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    async fn run(turns: Vec<Turn>) -> Vec<ModelEvent> {
        let req = ModelRequest {
            turns,
            tools: Vec::new(),
        };
        Echo::new(Duration::ZERO)
            .step(req)
            .map(|e| e.expect("echo never fails"))
            .collect()
            .await
    }

    #[tokio::test]
    async fn plain_message_is_monologue_deltas_reply() {
        let ev = run(vec![
            Turn::System("be nice".into()),
            Turn::User("hello  there".into()),
        ])
        .await;
        assert!(matches!(&ev[0], ModelEvent::Monologue(m) if m.contains("2 words")));
        let deltas: String = ev
            .iter()
            .filter_map(|e| match e {
                ModelEvent::Delta(d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        let ModelEvent::Done(out) = ev.last().unwrap() else {
            panic!("no done")
        };
        assert_eq!(out.content, "You said: \"hello  there\"");
        assert_eq!(deltas, out.content);
        assert!(out.tool_calls.is_empty());
        assert_eq!(out.usage.prompt_tokens, 4);
        assert_eq!(out.usage.completion_tokens, 4);
        assert_eq!(out.usage.total_tokens, 8);
    }

    #[tokio::test]
    async fn time_question_calls_get_time_then_replies() {
        let mut turns = vec![Turn::User("What TIME is it?".into())];
        let ev = run(turns.clone()).await;
        assert_eq!(ev.len(), 2);
        let ModelEvent::Done(out) = &ev[1] else {
            panic!("no done")
        };
        assert_eq!(out.tool_calls.len(), 1);
        assert_eq!(out.tool_calls[0].name, "get_time");
        turns.push(Turn::Assistant {
            content: String::new(),
            tool_calls: out.tool_calls.clone(),
        });
        turns.push(Turn::Tool {
            call_id: out.tool_calls[0].id.clone(),
            content: "noon".into(),
        });
        let ev = run(turns).await;
        let ModelEvent::Done(out) = ev.last().unwrap() else {
            panic!("no done")
        };
        assert_eq!(
            out.content,
            "You said: \"What TIME is it?\". The current time is noon."
        );
        assert!(out.tool_calls.is_empty());
    }

    #[test]
    fn only_the_word_time_triggers_a_call() {
        assert!(asks_for_time("what's the time?"));
        assert!(!asks_for_time("sometimes I sing"));
    }

    #[test]
    fn pieces_concatenate_back() {
        for text in ["", "a", "  lead", "one two  three ", "é ü  ß"] {
            assert_eq!(token_pieces(text).concat(), text);
        }
        assert_eq!(token_pieces("a b"), vec!["a ", "b"]);
    }
}
