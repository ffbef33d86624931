//! A run's row in the store, written beside the run's start.
//!
//! A new run's row is the one store write its first delta used to wait
//! for: the handler wrote it, then started the run. On a disk whose
//! `fsync` is slow, SQLite's one writer stalls for tens of milliseconds
//! each time it checkpoints the write-ahead log itself so that the log
//! can start over (it syncs the log and the database; every few seconds
//! under the agent path's load, `crate::store::sqlite::checkpoint`), and
//! every run started meanwhile waited (issue 22).
//!
//! Now the row is written on a task of its own as the run starts
//! ([`super::local`]), and only what needs the row waits for it: the
//! run's end or park (which update it), and a read of the run by id
//! ([`super::Runtime::get_run`], [`super::Runtime::cancel_run`]), so a
//! client that read the run's id from its stream still finds the run.
//!
//! A row that cannot be written cancels the run at once (no more model or
//! tool calls) and fails it (`unavailable`): its end is published and its
//! `run.failed` webhook sent; its final status is written only if the
//! store may have committed the row despite the error (a timeout), so
//! that such a row does not stay `running`. The run's events are not held
//! back for the row (nothing in the store ties them to it): they are
//! stored as they go, `error` and `done` included, and stay in the
//! session whether or not the row is ever written.

use std::sync::Arc;

use tokio::sync::watch;

use super::run::{Failure, RunTask};
use crate::{domain::ErrorCode, store::StoreError};

/// Where a run's row is.
#[derive(Clone, Debug, PartialEq)]
enum Row {
    Pending,
    Stored,
    /// Not written, as far as the write knows; `maybe` when the store may
    /// have committed it all the same (a timeout, a lost connection).
    Failed {
        why: String,
        maybe: bool,
    },
}

/// The state of a live run's row, as its handle holds it.
#[derive(Clone)]
pub struct RowWatch {
    row: watch::Receiver<Row>,
    /// The account of a row being written: only its reads wait for it.
    account: Option<Arc<str>>,
}

/// Says how the write of a run's row ended; dropped unsaid, the row counts
/// as failed.
pub struct RowWrite(watch::Sender<Row>);

impl RowWatch {
    /// A row already in the store (a run resumed or taken from the queue).
    pub fn stored() -> Self {
        Self {
            row: watch::channel(Row::Stored).1,
            account: None,
        }
    }

    /// A row of `account`'s being written, and what says when it is.
    pub fn pending(account: &str) -> (Self, RowWrite) {
        let (tx, row) = watch::channel(Row::Pending);
        let account = Some(account.into());
        (Self { row, account }, RowWrite(tx))
    }

    /// Waits for the row; the store's error if it could not be written.
    pub async fn stored_or_failed(&self) -> Result<(), String> {
        let mut rx = self.row.clone();
        let row = rx.wait_for(|r| *r != Row::Pending).await;
        match row.as_deref() {
            Ok(Row::Failed { why, .. }) => Err(why.clone()),
            Ok(_) => Ok(()),
            Err(_) => Err(DROPPED.into()),
        }
    }

    /// Whether a read of the run by `account` that found nothing should
    /// wait for the row: it is `account`'s, and being written or just
    /// written (the read may have come just before the write ended).
    pub fn awaits(&self, account: &str) -> bool {
        self.account.as_deref() == Some(account) && !self.failed()
    }

    /// Whether the row could not be written (the run is not in the store).
    pub fn failed(&self) -> bool {
        matches!(*self.row.borrow(), Row::Failed { .. })
    }

    /// Whether the store may hold the row although its write failed: the
    /// run's end is then written all the same, once (`RunTask::save`).
    pub fn maybe_stored(&self) -> bool {
        matches!(*self.row.borrow(), Row::Failed { maybe: true, .. })
    }
}

const DROPPED: &str = "the write of the run's row was dropped";

impl RowWrite {
    /// Says how the write ended, waking whatever waits for the row.
    pub fn done<T>(self, written: &Result<T, StoreError>) {
        let row = match written {
            Ok(_) => Row::Stored,
            Err(e) => Row::Failed {
                why: e.to_string(),
                // A refusal is certain; anything else may have committed.
                maybe: !matches!(e, StoreError::Conflict(_) | StoreError::NotFound(_)),
            },
        };
        self.0.send_replace(row);
    }
}

impl Drop for RowWrite {
    fn drop(&mut self) {
        self.0.send_if_modified(|r| {
            let pending = *r == Row::Pending;
            if pending {
                let why = DROPPED.into();
                *r = Row::Failed { why, maybe: true };
            }
            pending
        });
    }
}

impl RunTask {
    /// Waits for the run's row: what ends or parks the run updates it. A
    /// row that could not be written fails the run.
    pub(super) async fn row_stored(&self) -> Result<(), Failure> {
        self.handle
            .row
            .stored_or_failed()
            .await
            .map_err(|why| Failure {
                code: ErrorCode::Unavailable,
                message: format!("the run could not be stored: {why}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pending_row_is_waited_for_and_a_dropped_write_fails_it() {
        let (row, write) = RowWatch::pending("acc");
        assert!(!row.failed() && row.awaits("acc") && !row.awaits("other"));
        let waiting = tokio::spawn({
            let row = row.clone();
            async move { row.stored_or_failed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "answered before the write ended");
        write.done(&Ok(()));
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert!(
            !row.failed() && row.awaits("acc"),
            "a read may just miss it"
        );

        let (row, write) = RowWatch::pending("acc");
        write.done(&Err::<(), _>(StoreError::Unavailable("disk full".into())));
        let why = row.stored_or_failed().await.unwrap_err();
        assert!(why.contains("disk full"), "{why}");
        assert!(row.failed() && !row.awaits("acc") && row.maybe_stored());

        let (row, write) = RowWatch::pending("acc");
        write.done(&Err::<(), _>(StoreError::Conflict("run r exists".into())));
        assert!(
            row.failed() && !row.maybe_stored(),
            "a refusal wrote nothing"
        );

        let (row, write) = RowWatch::pending("acc");
        drop(write);
        assert!(row.stored_or_failed().await.is_err() && row.failed() && row.maybe_stored());
        let stored = RowWatch::stored();
        assert_eq!(stored.stored_or_failed().await, Ok(()));
        assert!(!stored.awaits("acc"), "a stored row is found by the read");
    }
}
