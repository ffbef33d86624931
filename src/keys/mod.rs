//! API key secrets and the gateway's key cache.
//!
//! A secret looks like `wk_<key id suffix>_<32 random chars>`. The key id is
//! readable from the secret, so auth finds the record by id (a cache hit on a
//! warm key: no store round trip) and then compares SHA-256 hashes in
//! constant time. Only the hash is ever stored.
//!
//! [`control`] applies the bus's control messages (revocations, resyncs)
//! to the key cache.

pub mod control;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::{Mutex, RwLock};
use rand::{distr::Alphanumeric, Rng};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    domain::ErrorCode,
    store::{KeyRecord, NewKey, Store, StoreError},
};

const SECRET_PREFIX: &str = "wk_";

/// A freshly minted key: the record to store and the secret to show once.
pub struct Minted {
    pub new_key: NewKey,
    pub secret: String,
}

/// Makes a key for `account`. If `secret` is given (the bootstrap key), that
/// exact secret is used; it must have the `wk_<id>_<secret>` form or any
/// other form, in which case its id is derived from its hash.
pub fn mint(
    account: &str,
    label: &str,
    scopes: Vec<String>,
    rpm: u32,
    secret: Option<&str>,
) -> Minted {
    let secret = match secret {
        Some(s) => s.to_owned(),
        None => {
            let id = random(16);
            format!("{SECRET_PREFIX}{id}_{}", random(32))
        }
    };
    Minted {
        new_key: NewKey {
            id: key_id_of(&secret).into(),
            account_id: account.to_owned(),
            label: label.to_owned(),
            scopes,
            rpm,
            hash: hash(&secret),
        },
        secret,
    }
}

fn random(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// Hex SHA-256 of a secret.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The key id a secret claims: `key-<id>` for `wk_<id>_…`, else one derived
/// from the hash (so arbitrary bootstrap secrets still work).
pub fn key_id_of(secret: &str) -> String {
    if let Some(rest) = secret.strip_prefix(SECRET_PREFIX) {
        if let Some((id, _)) = rest.split_once('_') {
            if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return format!("key-{id}");
            }
        }
    }
    format!("key-h{}", &hash(secret)[..16])
}

/// Constant-time comparison of the secret's hash with the stored hash.
pub fn verify(secret: &str, record: &KeyRecord) -> bool {
    let presented = hash(secret);
    presented.as_bytes().ct_eq(record.hash.as_bytes()).into()
}

/// A key used for what its scopes do not allow.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("this key lacks the `{scope}` scope")]
pub struct MissingScope {
    pub scope: String,
}

impl MissingScope {
    /// The code a client is shown, whatever the transport.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::Forbidden
    }
}

/// Fails unless `key` grants `scope` (directly or through `*`).
pub fn require(key: &KeyRecord, scope: &str) -> Result<(), MissingScope> {
    match key.has_scope(scope) {
        true => Ok(()),
        false => Err(MissingScope {
            scope: scope.to_owned(),
        }),
    }
}

/// How long a cached key is trusted before it is read again. Revocation
/// through this gateway evicts at once; this bounds how long a revocation
/// made elsewhere (another gateway without a shared bus) can go unseen.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// Keys by id, so a warm key costs no store round trip. `last_used_at` is
/// recorded in memory and flushed in batches.
#[derive(Default)]
pub struct KeyCache {
    by_id: RwLock<HashMap<String, (Arc<KeyRecord>, Instant)>>,
    used: Mutex<HashMap<String, u64>>,
}

impl KeyCache {
    /// The key record for `secret` if it is valid and not revoked.
    /// `Ok(None)` means unknown, wrong or revoked.
    pub async fn authenticate(
        &self,
        store: &dyn Store,
        secret: &str,
    ) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let id = key_id_of(secret);
        let cached = self
            .by_id
            .read()
            .get(&id)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(r, _)| r.clone());
        let record = match cached {
            Some(r) => r,
            None => match store.get_key(&id).await {
                Ok(r) => {
                    let r = Arc::new(r);
                    self.by_id
                        .write()
                        .insert(id.clone(), (r.clone(), Instant::now()));
                    r
                }
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        if record.revoked_at.is_some() || !verify(secret, &record) {
            return Ok(None);
        }
        let now = crate::util::unix_now();
        let mut used = self.used.lock();
        match used.get_mut(record.id.as_str()) {
            Some(t) => *t = now,
            None => {
                used.insert(record.id.to_string(), now);
            }
        }
        Ok(Some(record))
    }

    /// Drops a key from the cache (revocation); the next use reloads it.
    pub fn evict(&self, key_id: &str) {
        self.by_id.write().remove(key_id);
    }

    /// Drops every cached key (revocations may have been missed, see
    /// [`crate::bus::Control::Resync`]); each is reloaded on its next use.
    pub fn clear(&self) {
        self.by_id.write().clear();
    }

    #[cfg(test)]
    pub(crate) fn insert_for_test(&self, key_id: &str) {
        let record = KeyRecord {
            id: key_id.into(),
            account_id: "acct".into(),
            label: String::new(),
            scopes: vec![],
            rpm: 1,
            hash: String::new(),
            created_at: String::new(),
            last_used_at: None,
            revoked_at: None,
        };
        let mut map = self.by_id.write();
        map.insert(key_id.to_owned(), (Arc::new(record), Instant::now()));
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, key_id: &str) -> bool {
        self.by_id.read().contains_key(key_id)
    }

    /// Takes the pending `last_used_at` updates (RFC 3339) for a batched store write.
    pub fn take_usage(&self) -> Vec<(String, String)> {
        let used = std::mem::take(&mut *self.used.lock());
        used.into_iter()
            .map(|(id, secs)| (id, crate::util::format_unix(secs)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secret_names_its_id_and_verifies() {
        let m = mint("acct", "l", vec!["*".into()], 120, None);
        assert_eq!(m.new_key.id, key_id_of(&m.secret).as_str());
        let rec = KeyRecord {
            id: m.new_key.id.clone(),
            account_id: "acct".into(),
            label: String::new(),
            scopes: vec![],
            rpm: 1,
            hash: m.new_key.hash.clone(),
            created_at: String::new(),
            last_used_at: None,
            revoked_at: None,
        };
        assert!(verify(&m.secret, &rec));
        assert!(!verify("wk_x_y", &rec));
        assert!(!m.new_key.hash.contains(&m.secret));
    }

    #[test]
    fn arbitrary_bootstrap_secret_gets_a_stable_id() {
        assert_eq!(key_id_of("s3cret"), key_id_of("s3cret"));
        assert_ne!(key_id_of("s3cret"), key_id_of("other"));
    }
}
