//! TLS at the edge: rustls with the aws-lc-rs provider (already built for
//! reqwest and the Redis client, so no second crypto library), TLS 1.2 and
//! 1.3 only, ALPN `h2` then `http/1.1`.
//!
//! Browsers speak HTTP/2 only over TLS, and HTTP/2 is what lets one page
//! hold more than ~6 SSE streams to an origin (protocol/transport.md), so
//! the gateway terminates TLS itself rather than asking for a proxy.
//!
//! # Reload
//!
//! The certificate and key are read at start-up (a missing or bad file is
//! an error naming it) and again whenever either file changes (polled every
//! `tls_reload_secs`, comparing size, mtime and inode, so a file replaced by
//! a rename counts) or the process gets SIGHUP. The new pair is swapped into
//! the [`Certs`] resolver that every handshake asks: connections already
//! open keep the session they negotiated and are never touched, new ones get
//! the new certificate. A pair that fails to load (half-written, mismatched
//! key, not PEM) is logged and the old one stays; the next change is tried
//! again.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// ALPN protocols offered, in order of preference.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate file {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("TLS key file {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("TLS key file {key} does not match certificate {cert}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the certificate and key live and how the listener uses them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Seconds between checks of the files for a change; `None`: SIGHUP only.
    pub poll: Option<Duration>,
    /// Whether ALPN offers `h2` (off: `http/1.1` only).
    pub http2: bool,
}

/// The TLS side of the listener: the acceptor and the resolver it reads
/// the current certificate from.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    certs: Arc<Certs>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.certs.files.cert)
            .finish()
    }
}

impl Tls {
    /// Loads the pair (an error names the file) and builds the acceptor.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamp = Stamp::of(&files);
        let key = load_pair(&files, &provider)?;
        let certs = Arc::new(Certs {
            current: RwLock::new(Arc::new(key)),
            stamp: std::sync::Mutex::new(stamp),
            provider: provider.clone(),
            files,
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = if certs.files.http2 {
            vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
        } else {
            vec![ALPN_HTTP11.to_vec()]
        };
        // Stateless resumption: a returning browser skips the full handshake.
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certs,
        })
    }

    /// Reloads the pair if either file changed since the last attempt (or
    /// always, with `force`); a failure keeps the old pair and is logged.
    /// Returns whether a new pair is in use.
    pub fn reload(&self, force: bool) -> bool {
        self.certs.reload(force)
    }

    /// Watches for changes and SIGHUP until `stop` (module doc).
    pub async fn watch(self, stop: CancellationToken) {
        let mut hup = hangup();
        let poll = self.certs.files.poll;
        loop {
            let forced = tokio::select! {
                _ = stop.cancelled() => return,
                _ = sleep_or_never(poll) => false,
                Some(()) = recv(&mut hup) => true,
            };
            if forced {
                tracing::info!("SIGHUP: reloading the TLS certificate");
            }
            self.reload(forced);
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: TLS reload by file change only");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

#[allow(clippy::unused_async)] // the non-unix form never resolves
async fn recv(hup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(s) = hup {
        return s.recv().await;
    }
    let _ = hup;
    std::future::pending().await
}

async fn sleep_or_never(poll: Option<Duration>) {
    match poll {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The certificate every handshake gets: the last pair that loaded.
struct Certs {
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as last tried, so a bad pair is reported once per change.
    stamp: std::sync::Mutex<Stamp>,
    provider: Arc<CryptoProvider>,
    files: TlsFiles,
}

impl fmt::Debug for Certs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certs").field("files", &self.files).finish()
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

impl Certs {
    fn reload(&self, force: bool) -> bool {
        let stamp = Stamp::of(&self.files);
        {
            let mut last = self
                .stamp
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !force && *last == stamp {
                return false;
            }
            *last = stamp;
        }
        match load_pair(&self.files, &self.provider) {
            Ok(key) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed: keeping the certificate in use");
                false
            }
        }
    }
}

/// Size, mtime and inode of both files: what tells a change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp([Option<(u64, SystemTime, u64)>; 2]);

impl Stamp {
    fn of(files: &TlsFiles) -> Self {
        Self([file_stamp(&files.cert), file_stamp(&files.key)])
    }
}

fn file_stamp(path: &Path) -> Option<(u64, SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let ino = 0;
    Some((meta.len(), meta.modified().ok()?, ino))
}

/// Reads the chain and key and checks that they belong together.
fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: files.cert.clone(),
        message,
    };
    let key_err = |message: String| TlsError::Key {
        path: files.key.clone(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| key_err(e.to_string()))?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_err(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signer);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(e) => Err(TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            message: e.to_string(),
        }),
    }
}
