//! Commands that work on the data directly, without a running gateway.
//! They are the operator's: a key made here is bound by no other key's
//! limits (protocol/limits.md), only by the values' own ranges.

use anyhow::Context;

use crate::{
    config::{AccountsSet, KeysCreate},
    http::keys::check_scopes,
    keys,
    store::{Account, AccountLimits},
};

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
    let mut minted = keys::mint(&args.account, &args.label, args.scopes, args.rpm, None);
    let k = &mut minted.new_key;
    (k.tpm, k.daily_tokens) = (args.tpm, args.daily_tokens);
    (k.max_runs, k.max_websockets) = (args.max_runs, args.max_websockets);
    k.max_sse_streams = args.max_sse_streams;
    k.models = args
        .models
        .map(crate::http::key_body::check_models)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--models: {}", e.message))?;
    k.expires_at = args
        .ttl_secs
        .map(|ttl| crate::util::format_unix(crate::util::unix_now().saturating_add(ttl)));
    store
        .create_key(minted.new_key)
        .await
        .context("storing the key")?;
    Ok(minted.secret)
}

/// `weir accounts set`: sets the account's token budgets (a flag not given
/// keeps its current value) and returns the account.
pub async fn set_account(args: AccountsSet) -> anyhow::Result<Account> {
    let store = crate::store::open(&args.data).await?;
    let current = store
        .ensure_account(&args.account)
        .await
        .context("reading the account")?;
    let limits = AccountLimits {
        tpm: args.tpm.map_or(current.tpm, |l| l.get()),
        daily_tokens: args.daily_tokens.map_or(current.daily_tokens, |l| l.get()),
    };
    store
        .set_account_limits(&args.account, limits)
        .await
        .context("storing the account's limits")
}
