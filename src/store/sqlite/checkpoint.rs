//! WAL checkpoints on a thread of their own, off the write path.
//!
//! By default SQLite checkpoints inside the commit that takes the WAL past
//! 1,000 pages: that commit copies the pages into the database file and
//! syncs both files before it returns. The store has one writer, so every
//! write queued behind it waits too. Under the agent path at 200 runs/s
//! that was about five checkpoints a second, each with two fsyncs of 1–4 ms
//! (strace), and it was the p99 of a run's first event (issue 22: a run's
//! row and its first events are writes the run awaits).
//!
//! Here the writer's WAL hook (which replaces SQLite's auto-checkpoint)
//! only wakes a thread that checkpoints on a connection of its own. A
//! PASSIVE checkpoint runs beside the writer (WAL allows it: the writer
//! appends while the checkpointer copies frames it has finished with), so
//! no commit waits for the copy or the fsyncs. The writer checkpoints itself
//! only as a backstop, once the WAL holds many times the usual amount (the
//! thread stuck on a slow disk), so the WAL stays bounded either way.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use rusqlite::{hooks::Wal, wal::CheckpointMode, Connection};

use super::db_err;
use crate::store::StoreResult;

/// WAL pages at which the checkpointer is woken: SQLite's own default
/// auto-checkpoint threshold.
pub(super) const WAKE_AT: i32 = 1000;

/// WAL pages past which the writer checkpoints itself (about 64 MiB of
/// 4 KiB pages): the thread has fallen far behind.
pub(super) const BACKSTOP_AT: i32 = 16 * WAKE_AT;

/// The wake-up signal shared by the writer's hook and the thread.
#[derive(Default)]
pub(super) struct Signal {
    state: Mutex<State>,
    cond: Condvar,
    /// Checkpoints the thread has run (for tests and the debug log).
    done: AtomicU64,
}

#[derive(Default)]
struct State {
    wanted: bool,
    stopped: bool,
}

impl Signal {
    fn wake(&self) {
        let mut s = self.state.lock();
        if !s.wanted {
            s.wanted = true;
            self.cond.notify_one();
        }
    }

    /// Waits for a wake-up; false once the store is closed.
    fn wait(&self) -> bool {
        let mut s = self.state.lock();
        while !s.wanted && !s.stopped {
            self.cond.wait(&mut s);
        }
        s.wanted = false;
        !s.stopped
    }

    fn stop(&self) {
        self.state.lock().stopped = true;
        self.cond.notify_one();
    }

    #[cfg(test)]
    pub(super) fn checkpoints(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

/// The checkpoint thread of one store; stops when dropped (with the store).
pub(super) struct Checkpointer {
    signal: Arc<Signal>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `path` and hands the
    /// writer's hook to `writer`.
    pub(super) fn start(path: &Path, writer: &mut Connection) -> StoreResult<Self> {
        let signal = Arc::new(Signal::default());
        install(writer, signal.clone(), WAKE_AT, BACKSTOP_AT)?;
        let conn = super::connect(path, false)?;
        let thread_signal = signal.clone();
        std::thread::Builder::new()
            .name("weir-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &thread_signal))
            .map_err(|e| {
                crate::store::StoreError::Unavailable(format!("cannot start checkpointer: {e}"))
            })?;
        Ok(Self { signal })
    }

    #[cfg(test)]
    pub(super) fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.signal.stop();
    }
}

fn run(conn: &Connection, signal: &Signal) {
    while signal.wait() {
        match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            Ok((log, copied)) => {
                signal.done.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(log, copied, "wal checkpoint");
            }
            // Busy (another checkpoint running) or a disk error: the next
            // commit past the threshold wakes the thread again, and the
            // backstop bounds the WAL meanwhile.
            Err(e) => tracing::debug!(error = %e, "wal checkpoint failed"),
        }
    }
}

/// The writer's WAL hook: after each commit, with the WAL's size in pages.
pub(super) fn install(
    writer: &mut Connection,
    signal: Arc<Signal>,
    wake_at: i32,
    backstop_at: i32,
) -> StoreResult<()> {
    writer
        .wal_hook(Some(move |wal: &mut Wal, pages| {
            if pages >= backstop_at {
                // PASSIVE as SQLite's own auto-checkpoint is; its result is
                // ignored as SQLite's is (the commit has happened).
                if let Err(e) = wal.checkpoint() {
                    tracing::debug!(error = %e, pages, "backstop wal checkpoint failed");
                }
            } else if pages >= wake_at {
                signal.wake();
            }
            Ok(())
        }))
        .map_err(db_err)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Commits `n` transactions of one 4 KiB blob each (a page or more of
    /// WAL apiece).
    fn fill(conn: &Connection, n: usize) {
        for _ in 0..n {
            conn.execute("INSERT INTO t (b) VALUES (zeroblob(4096))", [])
                .expect("insert");
        }
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_writer_only_wakes_the_checkpointer_until_the_backstop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weir.db");
        let mut conn = super::super::connect(&path, false).expect("open");
        conn.execute_batch("CREATE TABLE t (b BLOB)")
            .expect("table");
        let db_before = file_len(&path);
        let signal = Arc::new(Signal::default());
        install(&mut conn, signal.clone(), 20, 200).expect("hook");

        fill(&conn, 40);
        assert!(
            signal.state.lock().wanted,
            "past wake_at, the thread is woken"
        );
        assert_eq!(
            file_len(&path),
            db_before,
            "no commit copied the WAL into the database file"
        );

        fill(&conn, 200);
        assert!(
            file_len(&path) > db_before + 100 * 4096,
            "past the backstop the writer checkpoints itself"
        );
    }

    #[test]
    fn the_store_checkpoints_on_its_thread_and_stops_it_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = super::super::SqliteStore::open(dir.path()).expect("open");
        let path = store.path().to_owned();
        let signal = store.checkpoint.signal().clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let db_before = file_len(&path);
        rt.block_on(store.write(|c| {
            c.execute_batch("CREATE TABLE t (b BLOB)").map_err(db_err)?;
            fill(c, 3 * WAKE_AT as usize / 2);
            Ok(())
        }))
        .expect("write");

        eventually("a checkpoint on the thread", || signal.checkpoints() >= 1);
        eventually("the WAL copied into the database file", || {
            file_len(&path) > db_before + WAKE_AT as u64 * 4096
        });
        drop(store);
        // The thread's clone goes when it exits, the hook's with the writer.
        eventually("the thread to exit", || Arc::strong_count(&signal) == 1);
    }
}
