//! Commands that work on the data directly, without a running gateway.

use anyhow::Context;

use crate::{config::KeysCreate, http::keys::check_scopes, keys};

/// `weir keys create`: mints a key in the data dir or remote store and
/// returns its secret. Safe while a gateway runs on the same data (SQLite WAL).
pub async fn create_key(args: KeysCreate) -> anyhow::Result<String> {
    check_scopes(&args.scopes, None).map_err(|e| anyhow::anyhow!("--scopes: {}", e.message))?;
    if args.rpm == 0 {
        anyhow::bail!("--rpm: must be at least 1");
    }
    let store = crate::store::open(&args.data).await?;
    store
        .ensure_account(&args.account)
        .await
        .context("creating the account")?;
    let minted = keys::mint(&args.account, &args.label, args.scopes, args.rpm, None);
    store
        .create_key(minted.new_key)
        .await
        .context("storing the key")?;
    Ok(minted.secret)
}
