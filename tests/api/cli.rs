//! The `weir` binary itself: `keys create` against a running gateway's data
//! dir, config files and env twins, and clear errors for bad config.

use std::process::Command;

use reqwest::Method;

use crate::common::{spawn_gateway, weir_bin, Api};

#[tokio::test]
async fn keys_create_works_while_the_gateway_runs() {
    let gw = spawn_gateway().await;
    let out = Command::new(weir_bin())
        .args([
            "keys",
            "create",
            "--scopes",
            "agents:read,chat",
            "--account",
            "cli-acct",
            "--label",
            "ci",
        ])
        .arg("--data-dir")
        .arg(&gw.data_dir)
        .output()
        .expect("run weir keys create");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let secret = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "only the key on stdout");
    let r = gw
        .req_as(secret, Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let acct: serde_json::Value = r.json().await.unwrap();
    assert_eq!(acct["id"], "cli-acct");
    assert_eq!(
        acct["key"]["scopes"],
        serde_json::json!(["agents:read", "chat"])
    );
    let r = gw
        .req_as(secret, Method::POST, "/v1/agents")
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "scopes from the CLI are enforced");
}

#[test]
fn keys_create_refuses_unknown_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(weir_bin())
        .args(["keys", "create", "--scopes", "admin"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin"));
}

#[test]
fn keys_create_grants_the_operator_scope_providers() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(weir_bin())
        .args(["keys", "create", "--scopes", "providers"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("wk_"));
}

#[test]
fn bad_config_exits_nonzero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = 3\nbogus_key = 1\n", "bogus_key"),
        ("listen = \"not-an-address\"\n", "--listen"),
        ("history_len = \"many\"\n", "--history-len"),
        ("listen = [1, 2]\n", "listen"),
        (
            "[[routes]]\nname = \"fast\"\ntargets = [{ provider = \"nope\", model = \"m\" }]\n",
            "unknown provider `nope`",
        ),
    ];
    for (toml, needle) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(weir_bin())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("WEIR_LISTEN")
            .env_remove("WEIR_HISTORY_LEN")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{toml:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "{toml:?}: stderr does not name {needle}: {err}"
        );
    }
    let out = Command::new(weir_bin())
        .arg("serve")
        .env("WEIR_LISTEN", "nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[tokio::test]
async fn config_file_and_env_twins_start_a_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::common::free_port();
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(weir_bin())
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env("WEIR_BOOTSTRAP_KEY", "wk_cfgtest_secretsecretsecret")
        .env_remove("WEIR_LISTEN")
        .env_remove("WEIR_DATA_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    crate::common::wait_healthy(&base).await;
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/account"))
        .header("x-api-key", "wk_cfgtest_secretsecretsecret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "bootstrap key from the env twin works");
    assert!(
        dir.path().join("data").join("weir.db").exists(),
        "data_dir from the file is used"
    );
    // SIGTERM drains and exits 0.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

/// `weir <args>` in a fresh data dir on a free port; its exit status must be
/// a failure, and its stderr is returned.
fn fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(weir_bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("WEIR_REDIS_URL")
        .env_remove("WEIR_REDIS_CA_FILE")
        .env_remove("WEIR_TLS_CERT")
        .env_remove("WEIR_TLS_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} must fail; stderr: {err}");
    err
}

#[test]
fn a_redis_setting_that_cannot_work_stops_start_up_naming_it() {
    let missing_ca = "/nonexistent/weir-test/ca.pem";
    for cmd in ["serve", "worker"] {
        let err = fails(&[cmd, "--redis", "not a redis url"]);
        assert!(err.contains("WEIR_REDIS_URL"), "{cmd}: {err}");
        // Not a silent fall-back to running runs locally: nothing started.
        assert!(!err.contains("listening"), "{cmd}: {err}");
        let url = "rediss://127.0.0.1:1";
        let err = fails(&[cmd, "--redis", url, "--redis-ca-file", missing_ca]);
        assert!(
            err.contains("WEIR_REDIS_CA_FILE") && err.contains(missing_ca),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn weir_worker_has_no_listener_tls_flags_to_ignore() {
    // Its probes are plain HTTP: the flags are `weir serve`'s alone.
    for flag in ["--tls-cert", "--http2"] {
        let err = fails(&["worker", "--redis", "redis://127.0.0.1:1", flag, "x"]);
        assert!(
            err.contains(&format!("unexpected argument '{flag}'")),
            "{err}"
        );
    }
}
