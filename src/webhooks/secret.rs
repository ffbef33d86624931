//! Signing secrets and the server key that seals them.
//!
//! A subscription's secret is `whsec_` and the base64 of 32 random bytes
//! (Standard Webhooks' form). It is shown once, when the subscription is
//! made; the store keeps it sealed with XChaCha20-Poly1305 under the
//! server key, with the subscription's id as associated data (a sealed
//! secret copied onto another subscription does not open). The 192-bit
//! random nonce makes nonce reuse under one key a non-issue.
//!
//! The server key is `--webhook-secret-key` (32 bytes, hex or base64).
//! Without it, the gateway keeps a generated key in
//! `<data dir>/webhook-secret.key` (mode 0600): fine for one gateway with
//! its SQLite file, but gateways sharing a PostgreSQL store must be given
//! the same key, or each would fail to open the others' secrets.

use std::path::Path;

use base64::{engine::general_purpose::STANDARD, Engine};
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use rand::RngCore;

/// The prefix of every signing secret.
pub const PREFIX: &str = "whsec_";
/// Random bytes in a new signing secret.
const SECRET_BYTES: usize = 32;
/// The file the generated server key is kept in, in the data dir.
pub const KEY_FILE: &str = "webhook-secret.key";
/// The version tag of a sealed secret.
const SEALED_V1: &str = "v1:";

/// A new signing secret, `whsec_<base64 of 32 random bytes>`.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

/// The HMAC key of a secret: its base64 after `whsec_` decoded.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix(PREFIX).unwrap_or(secret);
    STANDARD
        .decode(b64)
        .map_err(|e| format!("webhook secret is not base64: {e}"))
}

/// The key secrets are sealed with.
#[derive(Clone)]
pub struct ServerKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(..)")
    }
}

impl ServerKey {
    /// A key of exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != 32 {
            return Err(format!(
                "the webhook secret key must be 32 bytes, got {}",
                bytes.len()
            ));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(Self { cipher })
    }

    /// Parses 64 hex digits or the base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = match hex::decode(text) {
            Ok(b) if text.len() == 64 => b,
            _ => STANDARD.decode(text).map_err(|_| {
                "the webhook secret key must be 64 hex digits or the base64 of 32 bytes".to_owned()
            })?,
        };
        Self::from_bytes(&bytes)
    }

    /// The configured key, or the one kept in `data_dir` (made on first use).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        if let Some(text) = configured.filter(|t| !t.is_empty()) {
            return Self::parse(text)
                .map_err(anyhow::Error::msg)
                .context("WEIR_WEBHOOK_SECRET_KEY");
        }
        let path = data_dir.join(KEY_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Self::parse(&text)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("reading {}", path.display()));
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        std::fs::create_dir_all(data_dir).ok();
        write_private(&path, &hex::encode(bytes))
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "generated the webhook secret key");
        Self::from_bytes(&bytes).map_err(anyhow::Error::msg)
    }

    /// `secret` sealed, bound to the subscription `id`.
    pub fn seal(&self, id: &str, secret: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: secret.as_bytes(),
            aad: id.as_bytes(),
        };
        // Encryption only fails for messages of gigabytes.
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .expect("a secret is small");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{SEALED_V1}{}", STANDARD.encode(out))
    }

    /// The secret `sealed` holds, if this key sealed it for `id`.
    pub fn open(&self, id: &str, sealed: &str) -> Result<String, String> {
        let bad = || "the signing secret does not open with this server key".to_owned();
        let raw = sealed
            .strip_prefix(SEALED_V1)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|raw| raw.len() > 24)
            .ok_or_else(bad)?;
        let (nonce, body) = raw.split_at(24);
        let payload = Payload {
            msg: body,
            aad: id.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| bad())?;
        String::from_utf8(plain).map_err(|_| bad())
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_standard_form() {
        let s = new_secret();
        assert!(s.starts_with(PREFIX));
        assert_eq!(secret_key(&s).unwrap().len(), SECRET_BYTES);
        assert_ne!(s, new_secret());
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_id() {
        let key = ServerKey::parse(&"ab".repeat(32)).unwrap();
        let sealed = key.seal("wh-1", "whsec_abc");
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(key.open("wh-1", &sealed).unwrap(), "whsec_abc");
        assert!(key.open("wh-2", &sealed).is_err());
        let other = ServerKey::parse(&STANDARD.encode([7u8; 32])).unwrap();
        assert!(other.open("wh-1", &sealed).is_err());
        assert!(ServerKey::parse("short").is_err());
    }

    #[test]
    fn the_generated_key_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = ServerKey::load(None, dir.path()).unwrap();
        let sealed = a.seal("wh-1", "s");
        let b = ServerKey::load(None, dir.path()).unwrap();
        assert_eq!(b.open("wh-1", &sealed).unwrap(), "s");
    }
}
