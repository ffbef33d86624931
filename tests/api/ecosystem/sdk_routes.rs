//! The official openai Python SDK reading routed streams (issue 19): one
//! spliced across two providers by `mid_stream = "continue"` reads as one
//! completion; one cut with `mid_stream = "error"` raises in the SDK instead
//! of ending as if complete. Skipped without a Python that has `openai`
//! (WEIR_PYTHON).

use std::time::Duration;

use tokio::process::Command;

use super::examples::sdk_python;
use crate::{
    fake_provider::{FakeProvider, PART},
    routing::{gateway, route},
};

/// Streams `model` with the SDK; prints the text, then `[ids] n`, then
/// `[ok]` or `[error] <class>`.
const SCRIPT: &str = r#"
import os, sys
from openai import OpenAI
client = OpenAI(base_url=os.environ["WEIR_URL"] + "/v1", api_key=os.environ["WEIR_KEY"])
text, ids = "", set()
try:
    for chunk in client.chat.completions.create(model=sys.argv[1], stream=True,
            messages=[{"role": "user", "content": "hi"}]):
        ids.add((chunk.id, chunk.model))
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    print(text); print(f"[ids] {len(ids)}"); print("[ok]")
except Exception as e:
    print(text); print(f"[ids] {len(ids)}"); print(f"[error] {type(e).__name__}")
"#;

async fn sdk(python: &str, base: &str, key: &str, model: &str) -> String {
    let out = Command::new(python)
        .args(["-c", SCRIPT, model])
        .env("WEIR_URL", base)
        .env("WEIR_KEY", key)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the SDK finished")
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_reads_a_spliced_stream_as_one_and_a_cut_one_as_an_error() {
    let Some(python) = sdk_python("the_openai_sdk_reads_a_spliced_stream_as_one") else {
        return;
    };
    let (a, b) = (FakeProvider::start().await, FakeProvider::start().await);
    let routes = route("cont", "fake-drop", "fake-text", "continue")
        + &route("cut", "fake-drop", "fake-text", "error");
    let gw = gateway(&a, &b, "", &routes).await;
    let out = sdk(&python, &gw.base, &gw.key, "cont").await;
    let partial = PART[..2].concat();
    assert_eq!(out, format!("{partial}Hello world\n[ids] 1\n[ok]\n"));
    let out = sdk(&python, &gw.base, &gw.key, "cut").await;
    assert!(
        out.starts_with(&format!("{partial}\n[ids] 1\n[error] ")),
        "{out}"
    );
}
