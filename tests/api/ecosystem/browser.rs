//! The chat page in real headless Chromium: `tests/browser/chat.mjs`
//! (playwright-core driving Debian's `/usr/bin/chromium`) against two real
//! gateways: one serving the page, one on another origin allowing it with
//! `--cors-origin`. The script cuts every connection mid-reply through its
//! own proxy and checks that the reply and the log tail resume.
//!
//! `tests/browser/streams.mjs` opens 12 EventSource streams and a fetch
//! chat stream from one page, over HTTPS (HTTP/2) and over plain HTTP/1.1,
//! and checks that all of them work over the first and that the browser's
//! 6-connection limit stalls the rest over the second.
//!
//! Without Chromium these tests print why and pass, unless `CI` is set:
//! there they fail (`.ci/run` installs Chromium and the npm package).

use std::{path::Path, process::Stdio, time::Duration};

use tokio::process::Command;

use super::{crate_dir, in_ci};
use crate::common::{free_port, spawn_gateway, TestGateway};

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Installs `dir`'s npm packages from its lock file if `marker` (one of
/// them) is missing.
pub(super) async fn ensure_node_modules(dir: &Path, marker: &str) {
    if dir
        .join(format!("node_modules/{marker}/package.json"))
        .exists()
    {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .output()
        .await
        .expect("npm is installed");
    assert!(
        out.status.success(),
        "npm ci in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Chromium's path, or `None` (the test is skipped; CI fails instead).
fn chromium_or_skip(test: &str) -> Option<String> {
    let chromium = chromium();
    if Path::new(&chromium).exists() {
        return Some(chromium);
    }
    assert!(
        !in_ci(),
        "CI is set but {chromium} is missing: `.ci/run` installs Debian's chromium"
    );
    eprintln!("SKIPPED {test}: {chromium} not found (apt-get install chromium; CI runs it)");
    None
}

/// Runs `tests/browser/<script>` with `env` (120 s at most) and checks that
/// it printed `<pass>`.
#[allow(clippy::print_stdout)] // the script's log, shown with --nocapture
async fn run_script(script: &str, env: &[(&str, &str)], pass: &str, shots: &Path) {
    let dir = crate_dir().join("tests/browser");
    ensure_node_modules(&dir, "playwright-core").await;
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the browser test finished within 120 s")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser test failed (screenshots in {}):\n{stdout}\n{stderr}",
        shots.display()
    );
    assert!(stdout.contains(pass), "{stdout}");
}

fn screenshot_dir() -> std::path::PathBuf {
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    shots
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_page_in_headless_chromium() {
    let Some(chromium) = chromium_or_skip("chat_page_in_headless_chromium") else {
        return;
    };
    let page_gw = spawn_gateway().await;
    // The page is served through the script's proxy on this port; the second
    // gateway allows exactly that origin.
    let proxy_port = free_port();
    let origin = format!("http://127.0.0.1:{proxy_port}");
    let cors_gw = TestGateway::builder()
        .config(move |cfg| {
            cfg.cors_origin = Some(origin);
        })
        .spawn()
        .await;
    let shots = screenshot_dir();
    let port = proxy_port.to_string();
    let env = [
        ("WEIR_URL", page_gw.base.as_str()),
        ("WEIR_KEY", page_gw.key.as_str()),
        ("WEIR_CORS_URL", cors_gw.base.as_str()),
        ("PROXY_PORT", port.as_str()),
        ("CHROMIUM", chromium.as_str()),
        ("SCREENSHOT_DIR", shots.to_str().unwrap()),
    ];
    run_script("chat.mjs", &env, "browser test passed", &shots).await;
}

/// 12 EventSource streams and a chat stream from one page: all work over
/// HTTP/2 (HTTPS with the test CA's certificate), at most 6 over HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_streams_in_headless_chromium_need_http2() {
    let Some(chromium) = chromium_or_skip("twelve_streams_in_headless_chromium_need_http2") else {
        return;
    };
    let tls = crate::transport::spawn_tls_gateway(|_| {}).await;
    let plain = spawn_gateway().await;
    let ca = tls.pki.ca();
    let env = [
        ("WEIR_H2_URL", tls.gw.base.as_str()),
        ("WEIR_H1_URL", plain.base.as_str()),
        ("WEIR_KEY", plain.key.as_str()),
        ("NODE_EXTRA_CA_CERTS", ca.to_str().unwrap()),
        ("CHROMIUM", chromium.as_str()),
    ];
    run_script(
        "streams.mjs",
        &env,
        "streams browser test passed",
        &screenshot_dir(),
    )
    .await;
}
