//! Certificate reload without a restart: with streams open, new files are
//! picked up by polling (and by SIGHUP, in a real `weir serve` process);
//! connections already open go on, new ones get the new certificate; a bad
//! file keeps the old certificate and says so in the log.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;

use super::{pki::TestPki, spawn_tls_gateway};
use crate::common::{free_port, signal, weir_bin, Api, BOOTSTRAP_KEY};

const WAIT: Duration = Duration::from_secs(10);

/// The leaf certificate a new TLS connection to `addr` is served (checked
/// against `ca`).
async fn served(addr: std::net::SocketAddr, ca: &Path) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .ok()?;
    let leaf = tls.get_ref().1.peer_certificates()?.first()?.to_vec();
    Some(leaf)
}

fn der(pem: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem).unwrap().to_vec()
}

/// Puts `crt`/`key` in place of the live files as a deploy tool would: each
/// written aside, then renamed over the old one.
fn install(crt: &Path, key: &Path, live_crt: &Path, live_key: &Path) {
    for (from, to) in [(crt, live_crt), (key, live_key)] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}

/// Polls until new connections are served `want` (10 s at most).
async fn wait_served(addr: std::net::SocketAddr, ca: &Path, want: &[u8]) {
    for _ in 0..100 {
        if served(addr, ca).await.as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the new certificate was not served within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_served_to_new_connections_while_streams_go_on() {
    let t = spawn_tls_gateway(|c| c.transport.tls_reload_secs = 1).await;
    let (gw, ca) = (&t.gw, t.pki.ca());
    let first = der(&t.pki.dir().join("first.crt"));
    assert_eq!(served(gw.addr, &ca).await.as_deref(), Some(&first[..]));
    // A stream open across the reloads, on an HTTP/2 connection made before.
    let agent = gw.create_agent("reload").await;
    let stream = gw.get(&format!("/v1/agents/{agent}/events")).await;
    assert_eq!(stream.status(), 200);
    let mut events = stream.bytes_stream().eventsource();

    let (crt, key) = t.pki.issue("second");
    install(&crt, &key, &t.cert, &t.key);
    wait_served(gw.addr, &ca, &der(&crt)).await;

    // A broken certificate file: the second certificate stays in use.
    std::fs::write(&t.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(served(gw.addr, &ca).await, Some(der(&crt)), "old pair kept");
    // Then a good pair again.
    let (crt3, key3) = t.pki.issue("third");
    install(&crt3, &key3, &t.cert, &t.key);
    wait_served(gw.addr, &ca, &der(&crt3)).await;

    // The stream opened before all this still delivers.
    let r = gw
        .post(
            &format!("/v1/agents/{agent}/messages"),
            json!({"message": "still here"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    loop {
        let e = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("well-formed");
        if e.event == "done" {
            break;
        }
    }
}

/// `weir serve` with TLS as a child process, its stderr collected.
struct TlsProcess {
    child: Child,
    addr: std::net::SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    _data: tempfile::TempDir,
}

impl TlsProcess {
    async fn start(cert: &Path, key: &Path, ca: &Path) -> Self {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(weir_bin())
            .args(["serve", "--tls-reload-secs", "0"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .env_remove("WEIR_CONFIG")
            .env("WEIR_LISTEN", format!("127.0.0.1:{port}"))
            .env("WEIR_DATA_DIR", data.path())
            .env("WEIR_BOOTSTRAP_KEY", BOOTSTRAP_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        for _ in 0..200 {
            if served(addr, ca).await.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            addr,
            stderr,
            _data: data,
        }
    }

    fn hangup(&self) {
        assert!(signal(self.child.id(), "HUP"), "SIGHUP delivered");
    }

    async fn wait_for_line(&self, needle: &str) {
        for _ in 0..100 {
            if self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no `{needle}` in the log:\n{}",
            self.stderr.lock().unwrap().join("\n")
        );
    }
}

impl Drop for TlsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_file_is_logged_and_the_old_certificate_kept() {
    let pki = TestPki::new();
    let (crt, key) = pki.issue("first");
    let live = (pki.dir().join("live.crt"), pki.dir().join("live.key"));
    install(&crt, &key, &live.0, &live.1);
    let p = TlsProcess::start(&live.0, &live.1, &pki.ca()).await;
    assert_eq!(served(p.addr, &pki.ca()).await, Some(der(&crt)));

    // Polling is off (0): only SIGHUP reloads.
    let (crt2, key2) = pki.issue("second");
    install(&crt2, &key2, &live.0, &live.1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served(p.addr, &pki.ca()).await, Some(der(&crt)), "not yet");
    p.hangup();
    wait_served(p.addr, &pki.ca(), &der(&crt2)).await;
    p.wait_for_line("TLS certificate reloaded").await;

    // A key that does not belong to the certificate: logged, old pair kept.
    let (_, other_key) = pki.issue("other");
    std::fs::copy(&other_key, &live.1).unwrap();
    p.hangup();
    p.wait_for_line("TLS reload failed").await;
    let line = p
        .stderr
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("TLS reload failed"))
        .cloned()
        .unwrap();
    assert!(
        line.contains("live.key") && line.contains("keeping"),
        "{line}"
    );
    assert_eq!(served(p.addr, &pki.ca()).await, Some(der(&crt2)));
}
