//! The typed error of a failed desk session: what the watcher was doing ([`DeskOp`]), what
//! failed under it ([`DeskCause`]), both together ([`DeskError`]), and `.at(op)` to attach
//! the operation to a result.
//!
//! Not here: deciding whether to retry or reconnect (`watcher.rs`).

use crate::imap::ImapError;
use crate::pipeline::PipelineError;
use crate::store::StoreError;

/// What a desk's watcher was doing when a session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeskOp {
    /// Connecting and logging in.
    Connect,
    /// Selecting the desk's mailbox.
    Select,
    /// Reading or resetting the desk's progress in the store.
    Progress,
    /// Searching for mail after the last one handled.
    Search,
    /// Fetching a batch of mail.
    Fetch,
    /// Deciding and journaling a batch.
    Decide,
    /// Tagging and filing decided mail, marking it done.
    File,
    /// Setting aside a mail the server keeps refusing.
    SetAside,
    /// Correcting copies found to be part of a broadcast later.
    LateBroadcasts,
    /// Reviewing the desk's clocks (answered, overdue).
    Clocks,
    /// Waiting for new mail (IDLE or polling).
    Wait,
}

impl std::fmt::Display for DeskOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeskOp::Connect => "connect",
            DeskOp::Select => "select",
            DeskOp::Progress => "progress",
            DeskOp::Search => "search",
            DeskOp::Fetch => "fetch",
            DeskOp::Decide => "decide",
            DeskOp::File => "file",
            DeskOp::SetAside => "set-aside",
            DeskOp::Clocks => "clocks",
            DeskOp::LateBroadcasts => "late-broadcasts",
            DeskOp::Wait => "wait",
        })
    }
}

/// What failed under a [`DeskOp`]: the IMAP server, the state database, or the thread
/// that parses mail.
#[derive(Debug, thiserror::Error)]
pub enum DeskCause {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the mail parsing thread ended early")]
    Worker(#[source] tokio::task::JoinError),
}

impl From<PipelineError> for DeskCause {
    fn from(e: PipelineError) -> DeskCause {
        match e {
            PipelineError::Imap(e) => DeskCause::Imap(e),
            PipelineError::Store(e) => DeskCause::Store(e),
            PipelineError::Worker(e) => DeskCause::Worker(e),
        }
    }
}

/// Why a desk session ended: the operation and its cause. Displays as the cause alone
/// (the operation is a log field of its own).
#[derive(Debug)]
pub struct DeskError {
    pub(super) op: DeskOp,
    pub(super) cause: DeskCause,
}

impl DeskError {
    /// `cause` while doing `op`.
    pub fn new(op: DeskOp, cause: impl Into<DeskCause>) -> DeskError {
        DeskError {
            op,
            cause: cause.into(),
        }
    }

    /// What the watcher was doing.
    pub fn op(&self) -> DeskOp {
        self.op
    }

    /// What failed.
    pub fn cause(&self) -> &DeskCause {
        &self.cause
    }

    /// The error with its causes, `outer: inner: innermost`, for log lines and the
    /// journal (the store's "cannot ..." and the database's own words).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
    }

    /// True when the IMAP server refused a command about mail (NO or BAD to a fetch, store
    /// or move; see [`ImapError::is_refusal`]): it may refuse the same mail again, so
    /// repeated refusals switch the catch-up to mail by mail.
    pub fn is_refusal(&self) -> bool {
        matches!(&self.cause, DeskCause::Imap(e) if e.is_refusal())
    }

    /// True when a later session may succeed without anyone changing anything: a lost
    /// connection, a timeout, a busy database. The watcher retries every failed session
    /// anyway (an administrator may fix the rest); this says which failures are expected.
    pub fn is_transient(&self) -> bool {
        match &self.cause {
            DeskCause::Imap(e) => e.is_transient(),
            DeskCause::Store(e) => e.is_transient(),
            DeskCause::Worker(_) => false,
        }
    }
}

impl std::fmt::Display for DeskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cause.fmt(f)
    }
}

impl std::error::Error for DeskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

/// Attaches the operation to an IMAP, store or pipeline error: `x.await.at(DeskOp::Fetch)?`.
pub(super) trait At<T> {
    fn at(self, op: DeskOp) -> Result<T, DeskError>;
}

impl<T, E: Into<DeskCause>> At<T> for Result<T, E> {
    fn at(self, op: DeskOp) -> Result<T, DeskError> {
        self.map_err(|e| DeskError::new(op, e))
    }
}
