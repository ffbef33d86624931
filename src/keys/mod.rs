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
    store::{AccountLimits, KeyRecord, NewKey, Store, StoreError},
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
            tpm: None,
            daily_tokens: None,
            max_runs: None,
            max_websockets: None,
            max_sse_streams: None,
            expires_at: None,
            models: None,
        },
        secret,
    }
}

/// A new secret for the existing key `key_id` (a rotation): the same
/// `wk_<id>_` prefix, so the secret still names its key, and a new random
/// part. Its hash goes to the store; the secret is shown once.
pub fn new_secret_for(key_id: &str) -> (String, String) {
    let id = key_id.strip_prefix("key-").unwrap_or(key_id);
    let secret = format!("{SECRET_PREFIX}{id}_{}", random(32));
    let h = hash(&secret);
    (secret, h)
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

/// Constant-time comparison of the secret's hash with the stored hash, or
/// with the hash it had before its last rotation while that one's grace
/// period lasts (`now`: unix seconds).
pub fn verify(secret: &str, record: &KeyRecord, now: u64) -> bool {
    let presented = hash(secret);
    let current: bool = presented.as_bytes().ct_eq(record.hash.as_bytes()).into();
    let previous = match (&record.prev_hash, &record.prev_until) {
        (Some(prev), Some(until)) => {
            let same: bool = presented.as_bytes().ct_eq(prev.as_bytes()).into();
            same && unix_of(until).is_some_and(|end| now < end)
        }
        _ => false,
    };
    current | previous
}

/// Unix seconds of an RFC 3339 time (`None` if it does not parse; 0 for a
/// time before 1970).
pub fn unix_of(rfc3339: &str) -> Option<u64> {
    use time::{format_description::well_known::Rfc3339, OffsetDateTime};
    let t = OffsetDateTime::parse(rfc3339, &Rfc3339).ok()?;
    // A time before 1970 is as past as 1970 for an expiry.
    Some(u64::try_from(t.unix_timestamp()).unwrap_or(0))
}

/// Why a presented secret is not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Unknown, wrong (or a rotated-out secret past its grace) or revoked.
    Invalid,
    /// Right secret, but the key expired at this time (RFC 3339).
    Expired(String),
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
    /// One gate per key being read from the store (see [`Self::load`]).
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    used: Mutex<HashMap<String, u64>>,
    /// Accounts' token budgets, read again after [`ACCOUNT_TTL`].
    accounts: RwLock<HashMap<String, (AccountLimits, Instant)>>,
}

/// How long an account's token budgets are trusted before they are read
/// again: the operator sets them (`weir accounts set`) straight in the
/// store, so this is how long a change takes to be in force.
pub const ACCOUNT_TTL: Duration = Duration::from_secs(10);

impl KeyCache {
    /// The key record for `secret` if it is valid, not revoked and not
    /// expired; otherwise why not ([`Refused`]).
    pub async fn authenticate(
        &self,
        store: &dyn Store,
        secret: &str,
    ) -> Result<Result<Arc<KeyRecord>, Refused>, StoreError> {
        let id = key_id_of(secret);
        let record = match self.load(store, &id).await {
            Ok(r) => r,
            Err(StoreError::NotFound(_)) => return Ok(Err(Refused::Invalid)),
            Err(e) => return Err(e),
        };
        let now = crate::util::unix_now();
        if record.revoked_at.is_some() || !verify(secret, &record, now) {
            return Ok(Err(Refused::Invalid));
        }
        // An expiry that does not parse was not written by weir: refuse.
        if let Some(at) = &record.expires_at {
            if unix_of(at).is_none_or(|end| now >= end) {
                return Ok(Err(Refused::Expired(at.clone())));
            }
        }
        let mut used = self.used.lock();
        match used.get_mut(record.id.as_str()) {
            Some(t) => *t = now,
            None => {
                used.insert(record.id.to_string(), now);
            }
        }
        Ok(Ok(record))
    }

    /// The cached record of `id`, if still fresh ([`CACHE_TTL`]).
    fn cached(&self, id: &str) -> Option<Arc<KeyRecord>> {
        self.by_id
            .read()
            .get(id)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(r, _)| r.clone())
    }

    /// The record of `id`: cached, or read once from the store however many
    /// connections ask at the same moment. Concurrent lookups of one key
    /// queue on that key's gate; the first reads the store, the others then
    /// find its result in the cache (a reconnect burst after another
    /// gateway's drain costs one store read per key, not one per connection).
    async fn load(&self, store: &dyn Store, id: &str) -> Result<Arc<KeyRecord>, StoreError> {
        if let Some(r) = self.cached(id) {
            return Ok(r);
        }
        let gate = self
            .loading
            .lock()
            .entry(id.to_owned())
            .or_default()
            .clone();
        let turn = gate.lock().await;
        let loaded = match self.cached(id) {
            Some(r) => Ok(r),
            None => store.get_key(id).await.map(|r| {
                let r = Arc::new(r);
                let mut by_id = self.by_id.write();
                by_id.insert(id.to_owned(), (r.clone(), Instant::now()));
                r
            }),
        };
        drop(turn);
        // The last one through removes the gate (the map holds one count).
        let mut loading = self.loading.lock();
        if Arc::strong_count(&gate) == 2 {
            loading.remove(id);
        }
        loaded
    }

    /// The token budgets of `account` (cached for [`ACCOUNT_TTL`]). When
    /// the store cannot say, the last ones known stay in force; with none
    /// known, none apply (logged).
    pub async fn account_limits(&self, store: &dyn Store, account: &str) -> AccountLimits {
        let cached = self.accounts.read().get(account).copied();
        if let Some((limits, at)) = cached {
            if at.elapsed() < ACCOUNT_TTL {
                return limits;
            }
        }
        match store.get_account(account).await {
            Ok(a) => {
                let limits = AccountLimits {
                    tpm: a.tpm,
                    daily_tokens: a.daily_tokens,
                };
                let mut accounts = self.accounts.write();
                accounts.insert(account.to_owned(), (limits, Instant::now()));
                limits
            }
            Err(e) => {
                tracing::warn!(error = %e, %account, "account budgets unreadable; the last known stay in force");
                cached.map(|(l, _)| l).unwrap_or_default()
            }
        }
    }

    /// Drops a key from the cache (revoked or changed); the next use reloads it.
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
        let m = mint("acct", "", vec![], 1, None);
        let record = KeyRecord {
            id: key_id.into(),
            ..KeyRecord::created(m.new_key, String::new())
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
        let hash = m.new_key.hash.clone();
        let rec = KeyRecord::created(m.new_key, String::new());
        assert!(verify(&m.secret, &rec, 0));
        assert!(!verify("wk_x_y", &rec, 0));
        assert!(!hash.contains(&m.secret));
    }

    #[test]
    fn a_rotated_secret_keeps_its_id_and_the_old_one_works_until_the_grace_ends() {
        let m = mint("acct", "l", vec!["*".into()], 120, None);
        let mut rec = KeyRecord::created(m.new_key, String::new());
        let (new, new_hash) = new_secret_for(rec.id.as_str());
        assert_eq!(key_id_of(&new), rec.id.as_str());
        rec.prev_hash = Some(std::mem::replace(&mut rec.hash, new_hash));
        rec.prev_until = Some(crate::util::format_unix(1000));
        assert!(verify(&new, &rec, 999) && verify(&new, &rec, 1000));
        assert!(verify(&m.secret, &rec, 999), "in the grace period");
        assert!(!verify(&m.secret, &rec, 1000), "after it");
        assert_eq!(unix_of("1970-01-01T00:16:40.500Z"), Some(1000));
        assert_eq!(
            unix_of("0196-06-21T03:53:33Z"),
            Some(0),
            "before 1970 is as past"
        );
    }

    #[test]
    fn arbitrary_bootstrap_secret_gets_a_stable_id() {
        assert_eq!(key_id_of("s3cret"), key_id_of("s3cret"));
        assert_ne!(key_id_of("s3cret"), key_id_of("other"));
    }
}
