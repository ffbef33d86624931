//! What a client and the listener agree on: curl negotiates h2 by ALPN over
//! TLS and with prior knowledge on a plain listener, HTTP/1.1 stays
//! available on both, `--http2 false` leaves HTTP/1.1 only, and a missing
//! or bad certificate or key stops start-up with an error naming the file.

use weir::{config::ServeConfig, Gateway};

use super::{curl_version, pki::TestPki, spawn_tls_gateway};
use crate::common::{spawn_gateway, Api, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_negotiates_h2_by_alpn_over_tls() {
    let t = spawn_tls_gateway(|_| {}).await;
    let ca = t.pki.ca();
    let ca = ca.to_str().unwrap();
    let url = t.gw.url("/healthz");
    assert_eq!(
        curl_version(&["--cacert", ca, "--http2"], &url),
        ("2".into(), "200".into())
    );
    assert_eq!(
        curl_version(&["--cacert", ca, "--http1.1"], &url),
        ("1.1".into(), "200".into())
    );
    // TLS 1.2 is served too, with h2.
    let tls12 = ["--cacert", ca, "--http2", "--tlsv1.2", "--tls-max", "1.2"];
    assert_eq!(curl_version(&tls12, &url), ("2".into(), "200".into()));
    // A plain-HTTP client gets nothing useful from a TLS listener.
    let plain = curl_version(&[], &format!("http://{}/healthz", t.gw.addr));
    assert_ne!(plain.1, "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_h2c_with_prior_knowledge_and_http1_on_a_plain_listener() {
    let gw = spawn_gateway().await;
    let url = gw.url("/healthz");
    assert_eq!(
        curl_version(&["--http2-prior-knowledge"], &url),
        ("2".into(), "200".into())
    );
    assert_eq!(curl_version(&[], &url), ("1.1".into(), "200".into()));
    // An authenticated route over h2c, with the key.
    let auth = format!("authorization: Bearer {}", gw.key);
    let agents = curl_version(
        &["--http2-prior-knowledge", "-H", &auth],
        &gw.url("/v1/agents"),
    );
    assert_eq!(agents, ("2".into(), "200".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_off_leaves_http1_only() {
    let t = spawn_tls_gateway(|c| c.transport.http2 = false).await;
    let ca = t.pki.ca();
    let url = t.gw.url("/healthz");
    let got = curl_version(&["--cacert", ca.to_str().unwrap(), "--http2"], &url);
    assert_eq!(got, ("1.1".into(), "200".into()), "ALPN falls back");
    let plain = TestGateway::builder()
        .config(|c| c.transport.http2 = false)
        .spawn()
        .await;
    let got = curl_version(&["--http2-prior-knowledge"], &plain.url("/healthz"));
    assert_ne!(got, ("2".into(), "200".into()), "no h2c");
    assert_eq!(curl_version(&[], &plain.url("/healthz")).1, "200");
}

fn tls_config(dir: &std::path::Path, cert: &std::path::Path, key: &std::path::Path) -> ServeConfig {
    let mut cfg = ServeConfig::for_data_dir(dir.join("data"));
    cfg.transport.tls_cert = Some(cert.to_owned());
    cfg.transport.tls_key = Some(key.to_owned());
    cfg
}

async fn bind_error(cfg: ServeConfig) -> String {
    match Gateway::bind(cfg).await {
        Ok(_) => panic!("a bad TLS file must stop start-up"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_bad_tls_file_stops_start_up_naming_it() {
    let pki = TestPki::new();
    let (crt, key) = pki.issue("good");
    let (_, other_key) = pki.issue("other");
    let missing = pki.dir().join("nope.crt");
    let err = bind_error(tls_config(pki.dir(), &missing, &key)).await;
    assert!(err.contains("nope.crt"), "{err}");
    let garbage = pki.dir().join("garbage.key");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let err = bind_error(tls_config(pki.dir(), &crt, &garbage)).await;
    assert!(err.contains("garbage.key") && err.contains("key"), "{err}");
    let err = bind_error(tls_config(pki.dir(), &key, &key)).await;
    assert!(
        err.contains("good.key") && err.contains("certificate"),
        "{err}"
    );
    let err = bind_error(tls_config(pki.dir(), &crt, &other_key)).await;
    assert!(
        err.contains("other.key") && err.contains("does not match"),
        "{err}"
    );
}
