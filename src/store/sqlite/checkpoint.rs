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
//! only wakes a thread, each time the WAL has grown by the usual threshold,
//! and the thread checkpoints on a connection of its own. A PASSIVE
//! checkpoint runs beside the writer (WAL allows it: the writer appends
//! while the checkpointer copies frames it has finished with), so no commit
//! waits for the copy or the fsyncs.
//!
//! The WAL starts over only when a write finds it wholly copied, which a
//! writer that never pauses may not give the thread. So the writer keeps a
//! backstop: once the WAL holds many times the usual amount it runs a
//! RESTART checkpoint itself (copies everything and waits for readers to
//! leave the WAL; the next write starts it over), and `journal_size_limit`
//! gives the disk back afterwards. The WAL stays bounded either way.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use rusqlite::{hooks::Wal, wal::CheckpointMode, Connection};

use super::db_err;
use crate::store::StoreResult;

/// WAL growth, in pages, that wakes the checkpointer: SQLite's own default
/// auto-checkpoint threshold.
pub(super) const WAKE_AT: i32 = 1000;

/// WAL pages past which the writer checkpoints itself (about 64 MiB of
/// 4 KiB pages): the thread has fallen far behind, or the writer never
/// paused long enough for the WAL to start over.
pub(super) const BACKSTOP_AT: i32 = 16 * WAKE_AT;

/// What the WAL file is cut back to when it starts over (bytes).
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// The wake-up signal shared by the writer's hook and the thread.
#[derive(Default)]
pub(super) struct Signal {
    state: Mutex<State>,
    cond: Condvar,
    /// Checkpoints the thread has run (for tests and the debug log).
    done: AtomicU64,
    /// Set by the hook past the backstop, for [`Checkpointer::after_write`].
    restart: AtomicBool,
}

#[derive(Default)]
struct State {
    wanted: bool,
    stopped: bool,
    /// The thread is checkpointing.
    running: bool,
    /// The writer is checkpointing (the backstop): the thread waits.
    held: bool,
}

impl Signal {
    fn wake(&self) {
        let mut s = self.state.lock();
        if !s.wanted {
            s.wanted = true;
            self.cond.notify_all();
        }
    }

    /// Waits for a wake-up while the writer does not hold checkpoints, and
    /// marks the thread running; false once the store is closed.
    fn wait(&self) -> bool {
        let mut s = self.state.lock();
        while (!s.wanted || s.held) && !s.stopped {
            self.cond.wait(&mut s);
        }
        s.wanted = false;
        s.running = !s.stopped;
        s.running
    }

    fn ran(&self) {
        self.state.lock().running = false;
        self.cond.notify_all();
    }

    /// Runs `f` (the writer's own checkpoint) once the thread's checkpoint,
    /// if one is running, has ended, the thread held off meanwhile: two
    /// checkpoints at once refuse each other (SQLite's checkpoint lock).
    fn holding<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut s = self.state.lock();
            s.held = true;
            while s.running {
                self.cond.wait(&mut s);
            }
        }
        let out = f();
        self.state.lock().held = false;
        self.cond.notify_all();
        out
    }

    fn stop(&self) {
        self.state.lock().stopped = true;
        self.cond.notify_all();
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
        Self::start_with(path, writer, WAKE_AT, BACKSTOP_AT)
    }

    fn start_with(
        path: &Path,
        writer: &mut Connection,
        wake_at: i32,
        backstop_at: i32,
    ) -> StoreResult<Self> {
        let signal = Arc::new(Signal::default());
        install(writer, signal.clone(), wake_at, backstop_at)?;
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

    /// What the writer runs after each write of its own: the backstop's
    /// RESTART checkpoint, once the hook asked for it (see the module doc).
    /// It waits for a checkpoint the thread is running to end, as a commit
    /// waited for SQLite's own.
    pub(super) fn after_write(&self) -> impl Fn(&Connection) + Send + 'static {
        let signal = self.signal.clone();
        move |writer| restart_if_asked(&signal, writer)
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
        let result = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE);
        signal.ran();
        match result {
            Ok((log, copied)) => {
                signal.done.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(log, copied, "wal checkpoint");
            }
            // A disk error, or another process checkpointing: the WAL's
            // growth wakes the thread again, and the backstop bounds it.
            Err(e) => tracing::debug!(error = %e, "wal checkpoint failed"),
        }
    }
}

/// The backstop's RESTART, on the writer after its write, if the hook
/// asked for it.
fn restart_if_asked(signal: &Signal, writer: &Connection) {
    if signal.restart.swap(false, Ordering::Relaxed) {
        let restart = || writer.wal_checkpoint_v2(None::<&str>, CheckpointMode::RESTART);
        if let Err(e) = signal.holding(restart) {
            tracing::debug!(error = %e, "backstop wal checkpoint failed");
        }
    }
}

/// The writer's WAL hook: after each commit, with the WAL's size in pages
/// (all of it, not what the commit added).
pub(super) fn install(
    writer: &mut Connection,
    signal: Arc<Signal>,
    wake_at: i32,
    backstop_at: i32,
) -> StoreResult<()> {
    writer
        .pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(db_err)?;
    // The WAL's size when the thread was last woken.
    let mut woken_at = 0;
    writer
        .wal_hook(Some(move |_: &mut Wal, pages| {
            if pages < woken_at {
                woken_at = 0; // the WAL started over
            }
            if pages >= backstop_at {
                // The commit has happened: a failure is only logged.
                // Not here: inside the hook the commit still holds the
                // locks a RESTART needs (it fails at once with BUSY).
                signal.restart.store(true, Ordering::Relaxed);
                woken_at = 0;
            } else if pages - woken_at >= wake_at {
                woken_at = pages;
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
        assert_eq!(file_len(&path), db_before, "the hook copies nothing");
        assert!(signal.restart.load(Ordering::Relaxed), "past the backstop");
        restart_if_asked(&signal, &conn);
        assert!(
            file_len(&path) > db_before + 100 * 4096,
            "past the backstop the writer checkpoints itself after its write"
        );
        conn.execute("INSERT INTO t (b) VALUES (1)", [])
            .expect("insert");
        let wal = path.with_file_name("weir.db-wal");
        let frames: i32 = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .expect("wal size");
        assert!(
            frames < 20,
            "the WAL started over ({frames} frames, {} bytes)",
            file_len(&wal)
        );
    }

    #[test]
    fn a_writer_that_never_pauses_keeps_the_wal_bounded() {
        // A reader reading all along and a writer committing without a
        // pause: the WAL may never be wholly copied when a write starts,
        // so only the backstop lets it start over.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weir.db");
        let mut writer = super::super::connect(&path, false).expect("open");
        writer
            .execute_batch("CREATE TABLE t (b BLOB)")
            .expect("table");
        let (wake_at, backstop_at) = (20, 200);
        let ckpt = Checkpointer::start_with(&path, &mut writer, wake_at, backstop_at)
            .expect("checkpointer");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let conn = super::super::connect(&path, true).expect("reader");
                while !stop.load(Ordering::Relaxed) {
                    let n: i64 = conn
                        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                        .expect("read");
                    assert!(n >= 0);
                }
            })
        };
        let wal = path.with_file_name("weir.db-wal");
        let after_write = ckpt.after_write();
        let mut peak = 0;
        for _ in 0..10 * backstop_at {
            fill(&writer, 1);
            after_write(&writer);
            peak = peak.max(file_len(&wal));
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader thread");
        // A frame is a page and its 24-byte header. The backstop starts
        // the WAL over within a few commits of reaching it (a RESTART the
        // thread's checkpoint refuses is asked for again).
        let frame = 4096 + 24;
        assert!(
            peak <= 2 * backstop_at as u64 * frame,
            "the WAL grew to {peak} bytes past a backstop of {backstop_at} pages"
        );
        assert!(ckpt.signal().checkpoints() >= 1, "the thread checkpointed");
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
