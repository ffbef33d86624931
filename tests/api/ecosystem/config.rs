//! The shipped example configurations are used, so they cannot rot:
//! `config/single.toml` starts a working gateway and holds exactly the
//! built-in defaults; `config/cluster.toml` parses with only known keys.

use std::collections::BTreeMap;

use clap::CommandFactory;
use reqwest::{header, Client, StatusCode};
use weir::config::{file_env, Cli};

use super::crate_dir;
use crate::common::{Api, WeirProcess};

/// `WEIR_X` → the default of `weir serve`'s flag with that env twin.
fn serve_defaults() -> BTreeMap<String, String> {
    let cli = Cli::command();
    let serve = cli
        .get_subcommands()
        .find(|c| c.get_name() == "serve")
        .expect("serve");
    let mut out = BTreeMap::new();
    for arg in serve.get_arguments() {
        let (Some(env), Some(default)) = (arg.get_env(), arg.get_default_values().first()) else {
            continue;
        };
        out.insert(
            env.to_string_lossy().into_owned(),
            default.to_string_lossy().into_owned(),
        );
    }
    out
}

#[test]
fn single_toml_is_the_embedded_defaults() {
    let pairs = file_env(&crate_dir().join("config/single.toml")).expect("single.toml parses");
    assert!(pairs.len() >= 15, "single.toml sets {} keys", pairs.len());
    let defaults = serve_defaults();
    for (env, value) in pairs {
        let default = defaults.get(&env).unwrap_or_else(|| {
            panic!("single.toml sets {env}, which `weir serve` has no default for")
        });
        assert_eq!(
            &value, default,
            "single.toml: {env} differs from the built-in default"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_toml_serves_the_api_and_the_page() {
    let path = crate_dir().join("config/single.toml");
    // --listen and --data-dir (set by the helper) override the file.
    let proc = WeirProcess::serve()
        .args(&["--config", path.to_str().unwrap()])
        .spawn()
        .await;
    let client = Client::new();
    let page = client.get(proc.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let account = client
        .get(proc.url("/v1/account"))
        .bearer_auth(&proc.key)
        .send()
        .await
        .unwrap();
    assert_eq!(account.status(), StatusCode::OK);
    let account: serde_json::Value = account.json().await.unwrap();
    assert_eq!(account["limits"]["max_body_bytes"], 1_048_576);
    let ready = client.get(proc.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[test]
fn cluster_toml_parses_and_every_key_is_known() {
    let pairs = file_env(&crate_dir().join("config/cluster.toml")).expect("cluster.toml parses");
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    for needed in ["WEIR_REDIS_URL", "WEIR_STORE_URL", "WEIR_STORE_TOKEN"] {
        assert!(
            keys.contains(&needed),
            "cluster.toml lacks {needed}: {keys:?}"
        );
    }
}
