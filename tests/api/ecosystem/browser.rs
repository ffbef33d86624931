//! The chat page in real headless Chromium: `tests/browser/chat.mjs`
//! (playwright-core driving Debian's `/usr/bin/chromium`) against two real
//! gateways: one serving the page, one on another origin allowing it with
//! `--cors-origin`. The script cuts every connection mid-reply through its
//! own proxy and checks that the reply and the log tail resume.
//!
//! Without Chromium this test prints why and passes, unless `CI` is set:
//! there it fails (`.ci/run` installs Chromium and the npm package).

use std::{path::Path, process::Stdio, time::Duration};

use tokio::process::Command;

use super::{crate_dir, in_ci};
use crate::common::{free_port, spawn_gateway, TestGateway};

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Installs playwright-core from the lock file if it is missing.
async fn ensure_node_modules(dir: &Path) {
    if dir
        .join("node_modules/playwright-core/package.json")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_page_in_headless_chromium() {
    let chromium = chromium();
    if !Path::new(&chromium).exists() {
        assert!(
            !in_ci(),
            "CI is set but {chromium} is missing: `.ci/run` installs Debian's chromium"
        );
        eprintln!("SKIPPED chat_page_in_headless_chromium: {chromium} not found (apt-get install chromium; CI runs it)");
        return;
    }
    let dir = crate_dir().join("tests/browser");
    ensure_node_modules(&dir).await;

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

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let run = Command::new("node")
        .arg(dir.join("chat.mjs"))
        .env("WEIR_URL", &page_gw.base)
        .env("WEIR_KEY", &page_gw.key)
        .env("WEIR_CORS_URL", &cors_gw.base)
        .env("PROXY_PORT", proxy_port.to_string())
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT_DIR", &shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
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
    assert!(stdout.contains("browser test passed"), "{stdout}");
}
