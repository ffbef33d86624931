//! A tiny connection pool: a free list of SQLite connections guarded by a
//! semaphore, each lent to exactly one task at a time.
//!
//! SQLite calls block, so in general they run in `spawn_blocking`. Moving
//! the connection itself into the blocking task (instead of locking a mutex
//! around it) means no lock is ever held across an `.await`, and a panicking
//! task still gives its connection back through [`Lease`]'s `Drop`.
//!
//! [`Pool::run_quick`] is the exception, for single-row lookups by key. Such
//! a lookup takes a few microseconds, while a `spawn_blocking` round trip
//! (queue, wake a pool thread, wake the task again) costs several times that
//! in CPU: measured on the 2-core box, `get_agent` from 64 concurrent tasks
//! ran at ~55k/s through `spawn_blocking` and ~245k/s inline. So when a
//! connection is free *right now* the lookup runs on the calling worker,
//! which blocks it for about as long as parsing a small JSON body would;
//! otherwise it waits like any other call. Lists, writes and anything whose
//! cost grows with the data always go through `spawn_blocking`.

use std::sync::Arc;

use parking_lot::Mutex;
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

impl Lease {
    fn call<T>(&mut self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        match self.conn.as_mut() {
            Some(conn) => f(conn),
            None => Err(StoreError::Unavailable("store connection lost".into())),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.free.lock().push(conn);
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
        let mut lease = self
            .lease(permit)
            .ok_or_else(|| StoreError::Unavailable("no free store connection".into()))?;
        tokio::task::spawn_blocking(move || lease.call(f))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Runs a single-row lookup inline if a connection is free now, else
    /// like [`Pool::run`] (see the module docs for why).
    pub(super) async fn run_quick<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let lease = self
            .permits
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|permit| self.lease(permit));
        match lease {
            Some(mut lease) => lease.call(f),
            None => self.run(f).await,
        }
    }

    fn lease(&self, permit: OwnedSemaphorePermit) -> Option<Lease> {
        let conn = self.free.lock().pop()?;
        Some(Lease {
            conn: Some(conn),
            free: self.free.clone(),
            _permit: permit,
        })
    }
}
