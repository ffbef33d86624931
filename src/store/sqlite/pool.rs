//! A tiny connection pool: a free list of SQLite connections guarded by a
//! semaphore, each lent to exactly one `spawn_blocking` task at a time.
//!
//! SQLite calls block, so they must not run on the async workers. Moving the
//! connection itself into the blocking task (instead of locking a mutex
//! around it) means no lock is ever held across an `.await`, and a panicking
//! task still gives its connection back through [`Lease`]'s `Drop`.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::store::{StoreError, StoreResult};

/// A fixed set of connections; `run` waits for a free one.
pub(super) struct Pool {
    free: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

/// A connection on loan. Returns itself to the free list before its permit
/// is released (fields drop after `Drop::drop`), so a permit always finds a
/// connection.
struct Lease {
    conn: Option<Connection>,
    free: Arc<Mutex<Vec<Connection>>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // A poisoned free list is still a valid Vec: push/pop cannot
            // leave it half-changed.
            self.free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}

impl Pool {
    pub(super) fn new(conns: Vec<Connection>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(conns.len())),
            free: Arc::new(Mutex::new(conns)),
        }
    }

    /// Runs `f` on a free connection in the blocking thread pool.
    pub(super) async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("store is closed".into()))?;
        let conn = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or_else(|| StoreError::Unavailable("no free store connection".into()))?;
        let mut lease = Lease {
            conn: Some(conn),
            free: self.free.clone(),
            _permit: permit,
        };
        tokio::task::spawn_blocking(move || match lease.conn.as_mut() {
            Some(conn) => f(conn),
            None => Err(StoreError::Unavailable("store connection lost".into())),
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}
