//! TLS for the transport figures: a throwaway CA and a server certificate
//! for 127.0.0.1 made with the `openssl` command (ECDSA P-256, what ACME
//! issuers hand out by default), the gateway flags that serve it, and the
//! clients that trust it: every reqwest client this tool builds starts from
//! [`client_builder`], which adds each CA made in this process.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex, OnceLock},
};

use anyhow::{bail, Context};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// A CA and a certificate it signed for 127.0.0.1, in a temp dir.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// Makes the CA and the certificate, and trusts the CA from now on.
    pub fn make() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        std::fs::write(
            d.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )?;
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        for step in [
            format!("req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=weir-load-CA"),
            format!("req {ec} -keyout leaf.key -out leaf.csr -subj /CN=127.0.0.1"),
            "x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out leaf.crt \
             -days 2 -extfile leaf.ext"
                .to_owned(),
        ] {
            openssl(d, &step)?;
        }
        let pki = Self {
            ca: d.join("ca.crt"),
            cert: d.join("leaf.crt"),
            key: d.join("leaf.key"),
            _dir: dir,
        };
        trust(&pki.ca)?;
        Ok(pki)
    }

    /// The `weir serve` flags that serve this certificate.
    pub fn gateway_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

fn openssl(dir: &Path, args: &str) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .context("the openssl command (apt-get install openssl)")?;
    if !out.status.success() {
        bail!("openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Every CA made in this process (DER).
fn trusted() -> &'static Mutex<Vec<CertificateDer<'static>>> {
    static CAS: OnceLock<Mutex<Vec<CertificateDer<'static>>>> = OnceLock::new();
    CAS.get_or_init(Default::default)
}

fn trust(ca: &Path) -> anyhow::Result<()> {
    let der = CertificateDer::from_pem_file(ca).context("reading the test CA")?;
    trusted().lock().unwrap().push(der);
    Ok(())
}

/// A reqwest builder that trusts the CAs made in this process.
pub fn client_builder() -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder();
    for der in trusted().lock().unwrap().iter() {
        if let Ok(c) = reqwest::Certificate::from_der(der) {
            b = b.add_root_certificate(c);
        }
    }
    b
}

/// A rustls client trusting the CAs made here, offering `alpn`; `resume`
/// off makes every handshake a full one.
pub fn connector(alpn: &[&[u8]], resume: bool) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for der in trusted().lock().unwrap().iter() {
        let _ = roots.add(der.clone());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the default versions are supported")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    TlsConnector::from(Arc::new(config))
}

/// The name every test certificate is for.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1").expect("an IP address is a server name")
}
