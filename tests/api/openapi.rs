//! `/v1/openapi.json` against the server, by a fuzzer that reads only the
//! document: schemathesis (pinned in `.ci/run`, found through
//! `WEIR_SCHEMATHESIS`) runs every check with a fixed seed against a live
//! gateway and must find no failure and no server error. What it proves:
//! every status an operation answers is documented, every request the
//! document allows is accepted and every request it forbids is refused.
//!
//! It skips only what would end its own run: revoking its own key (the
//! `DELETE /v1/keys/{id}` operation), rotating it (`POST
//! /v1/keys/{id}/rotate` with no grace ends its secret just the same) and the WebSocket upgrade. The endless
//! SSE routes are fuzzed with their streams cut short by the gateway
//! (`TestOnly::sse_cut`), and `echo_delay_ms` is capped, so fuzzed agent
//! metadata cannot stall a run.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::Command;

use crate::{
    common::{weir_bin, Api, TestGateway},
    ecosystem::in_ci,
};

/// The pinned version `.ci/run` installs.
const VERSION: &str = "4.32.5";
/// The fuzzing budget; the run as a whole stays under two minutes.
const MAX_TIME_SECS: &str = "75";
const SEED: &str = "20261204";

/// `WEIR_SCHEMATHESIS`, else the venv `.ci/run` makes under `target/`.
fn schemathesis() -> Option<PathBuf> {
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-schemathesis/bin/schemathesis");
    let path = std::env::var_os("WEIR_SCHEMATHESIS").map_or(venv, PathBuf::from);
    let version = std::process::Command::new(&path)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains(VERSION),
        "{} is not schemathesis {VERSION}: {version}",
        path.display()
    );
    Some(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_document_honest() {
    let Some(st) = schemathesis() else {
        assert!(
            !in_ci(),
            "schemathesis {VERSION} is missing: .ci/run makes target/py-schemathesis (or set WEIR_SCHEMATHESIS)"
        );
        eprintln!("SKIPPED schemathesis_finds_the_document_honest: no schemathesis {VERSION} (bash .ci/run makes target/py-schemathesis, or set WEIR_SCHEMATHESIS)");
        return;
    };
    let gw = TestGateway::builder()
        .config(|c| {
            c.test_only.sse_cut = Some(Duration::from_millis(200));
            c.test_only.max_echo_delay = Some(Duration::from_millis(5));
        })
        .spawn()
        .await;
    let key = mint_key(&gw.data_dir);
    let work = tempfile::tempdir().unwrap();
    let run = Command::new(&st)
        .current_dir(work.path())
        .args(["run", &gw.url("/v1/openapi.json")])
        .args([
            "--checks",
            "all",
            "--seed",
            SEED,
            "--max-time",
            MAX_TIME_SECS,
        ])
        .args(["--workers", "1", "--request-timeout", "10", "--no-color"])
        .args(["--generation-database", "none"])
        .args(["--exclude-operation-id", "revoke_key"])
        .args(["--exclude-operation-id", "rotate_key"])
        .args(["--exclude-operation-id", "upgrade"])
        .args(["--exclude-operation-id", "upgrade_alias"])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("schemathesis finished within its budget")
        .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let verdict = summary(&text);
    assert!(
        out.status.success() && verdict.failures == 0 && verdict.errors == 0,
        "schemathesis (exit {:?}): {} failures, {} errors\n{}\n{}",
        out.status.code(),
        verdict.failures,
        verdict.errors,
        failures_section(&text),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        verdict.cases > 100,
        "schemathesis ran only {} cases:\n{text}",
        verdict.cases
    );
}

/// A key with every scope and a rate limit the fuzzer cannot reach, made
/// by the operator CLI on the gateway's own data.
fn mint_key(data_dir: &std::path::Path) -> String {
    let out = std::process::Command::new(weir_bin())
        .args([
            "keys",
            "create",
            "--scopes",
            "*",
            "--rpm",
            "1000000",
            "--label",
            "schemathesis",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("weir keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// What the closing lines of a run say.
#[derive(Debug, Default, PartialEq)]
struct Verdict {
    failures: u64,
    errors: u64,
    cases: u64,
}

/// Reads `Test cases: N generated, …` and the last `=== … in Ns ===` line
/// (`48 failures, 2 warnings in 60.00s`, `3 errors …`, `no issues found …`).
fn summary(text: &str) -> Verdict {
    let mut v = Verdict::default();
    let count = |line: &str, word: &str| -> Option<u64> {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        words
            .windows(2)
            .find(|w| w[1].starts_with(word))
            .and_then(|w| w[0].parse().ok())
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = count(line, "generated") {
            v.cases = n;
        }
        if line.starts_with("===") && line.contains(" in ") {
            v.failures = count(line, "failure").unwrap_or(0);
            v.errors = count(line, "error").unwrap_or(0);
        }
    }
    v
}

/// The failures and the summary, for the assertion message.
fn failures_section(text: &str) -> &str {
    let start = text
        .find("FAILURES")
        .or_else(|| text.find("ERRORS"))
        .or_else(|| text.find("SUMMARY"))
        .unwrap_or(0);
    let section = &text[start..];
    // Enough to read every failure's first lines; the run can be long.
    match section.char_indices().nth(20_000) {
        Some((i, _)) => &section[..i],
        None => section,
    }
}

#[test]
fn the_summary_is_read() {
    let failed = "Test cases:\n  6706 generated, 42 found 48 unique failures, 12 skipped\n\
                  ====================== 48 failures, 2 warnings in 60.00s =======================";
    assert_eq!(
        summary(failed),
        Verdict {
            failures: 48,
            errors: 0,
            cases: 6706
        }
    );
    let errored = "  12 generated, 12 passed\n=== 1 error in 3.10s ===";
    assert_eq!(
        summary(errored),
        Verdict {
            failures: 0,
            errors: 1,
            cases: 12
        }
    );
    let clean = "  900 generated, 900 passed\n======== No issues found in 60.02s ========";
    assert_eq!(
        summary(clean),
        Verdict {
            failures: 0,
            errors: 0,
            cases: 900
        }
    );
}
