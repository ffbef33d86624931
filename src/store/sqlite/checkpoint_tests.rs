//! Tests of the checkpoint thread and the writer's hook, on real SQLite
//! files (see the module doc of [`super`]).

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

/// A fresh database file with one table, and its writer connection (the
/// directory goes when its guard is dropped).
fn database() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weir.db");
    let conn = super::super::connect(&path, false).expect("open");
    conn.execute_batch("CREATE TABLE t (b BLOB)")
        .expect("table");
    (dir, path, conn)
}

#[test]
fn the_writer_only_wakes_the_checkpointer_until_the_backstop() {
    let (_dir, path, mut conn) = database();
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
    let (_dir, path, mut writer) = database();
    let (wake_at, backstop_at) = (20, 200);
    let ckpt =
        Checkpointer::start_with(&path, &mut writer, wake_at, backstop_at).expect("checkpointer");
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
fn a_backstop_held_up_by_a_long_read_gives_up_soon_and_waits_for_growth() {
    let (_dir, path, mut conn) = database();
    let signal = Arc::new(Signal::default());
    install(&mut conn, signal.clone(), 20, 100).expect("hook");
    // Another process's long read: a snapshot held in the WAL.
    fill(&conn, 10);
    let reader = super::super::connect(&path, true).expect("reader");
    reader.execute_batch("BEGIN").expect("begin");
    let n: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("read");
    assert_eq!(n, 10);
    fill(&conn, 100);
    assert!(signal.restart.load(Ordering::Relaxed));
    let t0 = Instant::now();
    restart_if_asked(&signal, &conn);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the RESTART waited {:?} for the reader (the busy timeout is 5 s)",
        t0.elapsed()
    );
    // Not asked again on the next commit, only after more growth.
    fill(&conn, 1);
    assert!(!signal.restart.load(Ordering::Relaxed));
    fill(&conn, 20);
    assert!(signal.restart.load(Ordering::Relaxed));
    reader.execute_batch("COMMIT").expect("end the read");
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
