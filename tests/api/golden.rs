//! Golden copies of weir's wire bytes, so that a refactor of the internals
//! (typed events, error codes and channels, a new route table) can prove it
//! changed nothing a client sees.
//!
//! Each test drives a real gateway over real sockets through a scenario and
//! writes what went over the wire into a [`Transcript`]: requests, status
//! lines, the response headers clients depend on, bodies byte for byte (SSE
//! line layout included), WebSocket frames and close codes. The transcript
//! is then normalised ([`normalise`]: ids, timestamps, unix seconds, ports
//! and durations become stable placeholders, ids numbered by first
//! appearance so that "the same id in two places" is still checked) and
//! compared with its file under `tests/golden/`.
//!
//! `WEIR_GOLDEN=record cargo test --test api golden` (re)writes the files;
//! otherwise a difference fails the test with the first differing line and
//! the whole actual transcript saved beside the build (path in the message).
//!
//! Besides the bytes, the scenarios assert what must hold between transports
//! whatever the bytes are: a run's live SSE frames equal its replay from the
//! store, every WebSocket `agent_response` is the same event, history pages
//! hold the same JSON.
//!
//! - [`events`]: an echo run on every SSE route, WebSocket, history (`sse_echo_run.txt`, `history.txt`).
//! - [`endings`]: every other way a run ends, tool errors, log levels (`events_endings.txt`).
//! - [`ws`]: every WebSocket server frame and close (`ws_frames.txt`).
//! - [`errors_rest`]: every error code in the weir envelope (`errors_rest.txt`).
//! - [`errors_openai`]: the OpenAI-shaped errors (`errors_openai.txt`).
//! - [`openai`]: completions, chunks and `/v1/models` (`openai.txt`).
//! - [`rest`]: REST success bodies (`rest.txt`).
//!
//! Support: [`transcript`] (the format, HTTP and SSE capture), [`socket`]
//! (WebSocket frames), [`normalise`] (placeholders), [`errors_edge`]
//! (gateways with caps, a slow or missing store, no Redis).

mod endings;
mod errors_edge;
mod errors_openai;
mod errors_rest;
mod events;
mod normalise;
mod openai;
mod rest;
mod socket;
mod transcript;
mod ws;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use crate::common::{poll, Api, TestGateway};
pub use transcript::Transcript;
use transcript::{Key, Req};

/// Where the golden files live.
fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// True when the files are to be (re)written rather than compared.
fn recording() -> bool {
    std::env::var("WEIR_GOLDEN").is_ok_and(|v| v == "record")
}

/// Normalises `transcript` and records it as `tests/golden/<name>`, or
/// compares it with that file and fails with a readable difference.
pub fn check(name: &str, transcript: Transcript) {
    let actual = normalise::normalise(&transcript.into_text());
    let path = golden_dir().join(name);
    if recording() {
        std::fs::create_dir_all(golden_dir()).expect("create tests/golden");
        std::fs::write(&path, &actual).expect("write golden file");
        eprintln!("recorded {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; record it with `WEIR_GOLDEN=record cargo test --test api golden`",
            path.display()
        )
    });
    if expected == actual {
        return;
    }
    let saved = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("golden")
        .join(name);
    let _ = std::fs::create_dir_all(saved.parent().expect("a parent"));
    let _ = std::fs::write(&saved, &actual);
    panic!(
        "{} differs from what the gateway sent now:\n{}\nthe whole actual transcript: {}\n\
         (if the change is intended: WEIR_GOLDEN=record cargo test --test api golden)",
        path.display(),
        difference(&expected, &actual),
        saved.display()
    );
}

/// A key with every scope and a rate limit no scenario reaches.
pub async fn main_key(gw: &TestGateway) -> Key {
    Key {
        label: "main",
        secret: gw.mint_key("default", &["*"]).await,
    }
}

/// Waits until `runs` runs of the agent have written their last log line
/// ("run ended", written just after `done`), so the next run's lines cannot
/// interleave with it and every log `seq` is the same from one recording to
/// the next.
pub async fn settled(gw: &TestGateway, key: &Key, agent: &str, runs: usize) {
    let ended = poll(Duration::from_secs(5), || async {
        let r = gw
            .req_as(
                &key.secret,
                reqwest::Method::GET,
                &format!("/v1/agents/{agent}/logs?limit=1000"),
            )
            .send()
            .await
            .expect("logs");
        let page: Value = r.json().await.expect("logs JSON");
        let ended = page["data"]
            .as_array()
            .expect("log lines")
            .iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("run ended"))
            })
            .count();
        (ended >= runs).then_some(ended)
    })
    .await;
    let ended = ended.unwrap_or_else(|| panic!("agent {agent}: {runs} runs did not end"));
    assert_eq!(ended, runs, "more runs ended than started");
}

/// The WebSocket text of the event whose JSON is `data`: `type` spliced in
/// first, as the bus encodes it once for every socket.
pub fn as_ws_frame(data: &str) -> String {
    let rest = data.strip_prefix('{').expect("an event object");
    if rest == "}" {
        return r#"{"type":"agent_response"}"#.to_owned();
    }
    format!(r#"{{"type":"agent_response",{rest}"#)
}

/// A JSON field of an SSE frame's data.
pub fn field(frame: &str, name: &str) -> Value {
    let v: Value = serde_json::from_str(transcript::data(frame)).expect("event JSON");
    v[name].clone()
}

/// Sends `req` without recording it (set-up and polling).
pub async fn quietly(gw: &TestGateway, req: Req) -> transcript::Captured {
    Transcript::new("unrecorded").http(gw, req).await
}

/// The first differing line, with a little context before it and a few
/// lines of each side from there.
fn difference(expected: &str, actual: &str) -> String {
    let want: Vec<&str> = expected.split('\n').collect();
    let got: Vec<&str> = actual.split('\n').collect();
    let first = want
        .iter()
        .zip(&got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let mut out = format!(
        "first difference at line {} (expected {} lines, got {})\n",
        first + 1,
        want.len(),
        got.len()
    );
    for line in &want[first.saturating_sub(3)..first] {
        out.push_str(&format!("    {line}\n"));
    }
    let side = |lines: &[&str], mark: char, out: &mut String| {
        for line in lines.iter().skip(first).take(4) {
            out.push_str(&format!("  {mark} {line}\n"));
        }
        if lines.len() <= first {
            out.push_str(&format!("  {mark} <end of file>\n"));
        }
    };
    out.push_str("expected:\n");
    side(&want, '-', &mut out);
    out.push_str("actual:\n");
    side(&got, '+', &mut out);
    out
}

#[test]
fn golden_difference_names_the_first_differing_line() {
    let d = difference("a\nb\nc\n", "a\nb\nX\n");
    assert!(d.starts_with("first difference at line 3"), "{d}");
    assert!(d.contains("  - c\n") && d.contains("  + X\n"), "{d}");
    let d = difference("a", "a\nmore");
    assert!(d.contains("line 2") && d.contains("- <end of file>"), "{d}");
}
