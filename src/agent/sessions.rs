//! Sessions by name: the agent's `default` session (used when a message names
//! none) and the sessions `/v1/chat/completions` names with `user`. Each is
//! made on first use; its id is cached per process, and a cached session that
//! was deleted since is made again.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::{
    domain::SessionId,
    store::{ListParams, Store, StoreError},
};

/// The name of the session a message goes to when it names none.
pub const DEFAULT_SESSION: &str = "default";

type Key = (String, String, String);

/// The per-process cache of session ids by (account, agent, name).
#[derive(Default)]
pub struct Sessions {
    // One cell per name: concurrent first messages create one session, not two.
    cells: Mutex<HashMap<Key, Arc<OnceCell<SessionId>>>>,
}

impl Sessions {
    fn cell(&self, key: &Key) -> Arc<OnceCell<SessionId>> {
        let mut map = self.cells.lock();
        map.entry(key.clone()).or_default().clone()
    }

    fn evict(&self, key: &Key, cell: &Arc<OnceCell<SessionId>>) {
        let mut map = self.cells.lock();
        if map.get(key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            map.remove(key);
        }
    }

    /// The id of the agent's session called `name`, made if missing.
    /// NotFound means the agent itself is gone.
    pub async fn by_name(
        &self,
        store: &dyn Store,
        account: &str,
        agent_id: &str,
        name: &str,
    ) -> Result<SessionId, StoreError> {
        let key = (account.to_owned(), agent_id.to_owned(), name.to_owned());
        for _ in 0..2 {
            let cell = self.cell(&key);
            let id = cell
                .get_or_try_init(|| find_or_create(store, account, agent_id, name))
                .await?
                .clone();
            match store.get_session(account, agent_id, id.as_str()).await {
                Ok(_) => return Ok(id),
                Err(StoreError::NotFound(_)) => self.evict(&key, &cell),
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(format!(
            "session `{name}` keeps disappearing"
        )))
    }
}

/// The agent's oldest session called `name`, if any.
pub async fn find(
    store: &dyn Store,
    account: &str,
    agent_id: &str,
    name: &str,
) -> Result<Option<SessionId>, StoreError> {
    let mut params = ListParams {
        limit: 1000,
        offset: 0,
        after: None,
        ..Default::default()
    };
    loop {
        let page = store
            .list_sessions(account, agent_id, params.clone())
            .await?;
        if let Some(s) = page.data.iter().find(|s| s.name == name) {
            return Ok(Some(s.id.clone()));
        }
        match page.pagination.next_cursor {
            Some(c) if !page.data.is_empty() => params.after = Some(c),
            _ => return Ok(None),
        }
    }
}

async fn find_or_create(
    store: &dyn Store,
    account: &str,
    agent_id: &str,
    name: &str,
) -> Result<SessionId, StoreError> {
    match find(store, account, agent_id, name).await? {
        Some(id) => Ok(id),
        None => Ok(store.create_session(account, agent_id, name).await?.id),
    }
}
