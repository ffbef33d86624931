//! WAL checkpoints on a thread of their own, off the write path.
//!
//! By default SQLite checkpoints inside the commit that takes the WAL past
//! 1,000 pages: that commit copies the pages into the database file and
//! syncs both files before it returns. The store has one writer, so every
//! write queued behind it waits too. Under the agent path at 200 runs/s
//! that was about five checkpoints a second, each with two fsyncs of 1–4 ms
//! (strace), and it was the p99 of a run's first event (issue 22: a run's
//! row and its first events were then writes the run awaited).
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
use std::time::Duration;

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

/// How long the backstop's RESTART waits for a reader still in the WAL
/// (another process's long read, a backup) before giving up: it holds the
/// write lock meanwhile, and is asked for again only after more growth.
const RESTART_PATIENCE: Duration = Duration::from_millis(50);

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
    /// Says the checkpoint ended however it ended (a panic included), so
    /// the writer's backstop never waits for a thread that is gone.
    struct Ran<'a>(&'a Signal);
    impl Drop for Ran<'_> {
        fn drop(&mut self) {
            self.0.ran();
        }
    }
    while signal.wait() {
        let ran = Ran(signal);
        let result = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE);
        drop(ran);
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
        let restart = || {
            writer.busy_timeout(RESTART_PATIENCE)?;
            let done = writer.wal_checkpoint_v2(None::<&str>, CheckpointMode::RESTART);
            writer.busy_timeout(super::schema::BUSY_TIMEOUT)?;
            done
        };
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
    // The WAL's size when the thread was last woken, and when the writer
    // was last asked for the backstop; zero again once the WAL starts over.
    let (mut woken_at, mut asked_at) = (0, 0);
    writer
        .wal_hook(Some(move |_: &mut Wal, pages| {
            if pages < woken_at {
                woken_at = 0;
            }
            if pages < asked_at {
                asked_at = 0;
            }
            if pages >= backstop_at {
                // Not here: inside the hook the commit still holds the
                // locks a RESTART needs (it fails at once with BUSY). Asked
                // again only after more growth if it did not take.
                if asked_at == 0 || pages - asked_at >= wake_at {
                    asked_at = pages;
                    signal.restart.store(true, Ordering::Relaxed);
                }
            } else if pages - woken_at >= wake_at {
                woken_at = pages;
                signal.wake();
            }
            Ok(())
        }))
        .map_err(db_err)
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
