//! TLS and HTTP/2 at the edge (issue 17), with real clients: curl's ALPN and
//! h2c negotiation, reqwest over HTTP/2 (REST, SSE, the OpenAI stream), a
//! WebSocket over HTTP/2 extended CONNECT (hyper's client), GOAWAY on
//! drain, per-key caps counting HTTP/2 streams, certificate reload with
//! streams open, and start-up errors naming a bad file. The certificates
//! come from a test CA made by [`pki`].
//!
//! - [`pki`]: the test CA (openssl).
//! - [`negotiate`]: curl `--http2` / `--http2-prior-knowledge`, `--http2 false`, start-up errors.
//! - [`routes`]: REST, SSE and OpenAI routes over h2 (TLS and h2c), stream caps.
//! - [`connect`]: WebSocket over extended CONNECT, GOAWAY on drain.
//! - [`reload`]: certificate reload on change and on SIGHUP.

mod connect;
mod negotiate;
pub mod pki;
mod reload;
mod routes;

use std::path::{Path, PathBuf};

use weir::config::ServeConfig;

use self::pki::TestPki;
use crate::common::TestGateway;

/// A gateway serving HTTPS with a certificate of the test CA; `gw.base` is
/// its `https://` URL and `gw.client` trusts the CA (HTTP/2 by ALPN).
pub struct TlsGateway {
    pub gw: TestGateway,
    pub pki: TestPki,
    /// The files the gateway reads (and reloads).
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Starts a TLS gateway whose certificate is `<pki>/live.crt` (a copy of
/// one issued as `first`).
pub async fn spawn_tls_gateway(
    tweak: impl FnOnce(&mut ServeConfig) + Send + 'static,
) -> TlsGateway {
    let pki = TestPki::new();
    let (crt, key) = pki.issue("first");
    let live = (pki.dir().join("live.crt"), pki.dir().join("live.key"));
    std::fs::copy(crt, &live.0).unwrap();
    std::fs::copy(key, &live.1).unwrap();
    let (cert, key) = live.clone();
    let mut gw = TestGateway::builder()
        .config(move |cfg| {
            cfg.transport.tls_cert = Some(cert);
            cfg.transport.tls_key = Some(key);
            tweak(cfg);
        })
        .spawn()
        .await;
    gw.base = format!("https://{}", gw.addr);
    gw.client = tls_client(&pki.ca());
    TlsGateway {
        gw,
        pki,
        cert: live.0,
        key: live.1,
    }
}

/// A reqwest client trusting `ca` (ALPN offers h2 and http/1.1).
pub fn tls_client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

/// A plain gateway whose client speaks h2c with prior knowledge.
pub async fn spawn_h2c_gateway() -> TestGateway {
    let mut gw = crate::common::spawn_gateway().await;
    gw.client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    gw
}

/// `curl -w '%{http_version}'` with `args`; `(version, status)`.
pub fn curl_version(args: &[&str], url: &str) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (v, s) = text.split_once(' ').unwrap_or((&text, ""));
    (v.to_owned(), s.to_owned())
}
