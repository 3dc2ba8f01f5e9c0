//! Filing a catch-up's full groups on a second connection to the desk (issue #16): while
//! the server stores keywords and moves one group on it, the desk's own connection goes
//! on fetching the next batches. One filing at a time, in order, so the desk's progress
//! still passes only filed mail. A server that will not take a second login (a limit on
//! connections per user) gets the group on the desk's own connection, as before, for the
//! rest of the watcher's life; one that could not be reached (a timeout, a lost
//! connection) for the rest of the session, and is tried again in the next.
//!
//! Not here: what filing a group does (`pipeline::file`), when a group is full and the
//! catch-up loop itself (`watcher`).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use crate::config::Desk;
use crate::imap::{DeskSession, Endpoint, ImapError};
use crate::pipeline::{self, Plan};
use crate::shared::Shared;

use super::error::{At, DeskError, DeskOp};
use super::{Fetcher, Trouble};

/// Whether catch-ups may open a second connection to the desk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Second {
    /// Yes (the default).
    #[default]
    Allowed,
    /// Not in this session: opening one failed for a passing reason.
    NotThisSession,
    /// Never again for this desk: the server refused the login (a connection limit).
    Refused,
}

impl Second {
    /// A new session of the desk's own connection: a passing failure is forgotten.
    pub(super) fn new_session(&mut self) {
        if *self == Second::NotThisSession {
            *self = Second::Allowed;
        }
    }

    pub(super) fn allowed(self) -> bool {
        self == Second::Allowed
    }

    /// After a second connection could not be opened: a refused login is the server's
    /// policy (a limit on connections per user), and asking again would only be refused
    /// again; anything else (a timeout, a lost connection, a failed SELECT) may pass.
    fn after(error: &ImapError) -> Second {
        if matches!(error, ImapError::Login { .. }) {
            Second::Refused
        } else {
            Second::NotThisSession
        }
    }
}

/// A group being filed on the second connection; it owns that connection until it ends.
pub(super) type Filing<'a> = Pin<Box<dyn Future<Output = Filed> + Send + 'a>>;

/// How a [`Filing`] ended.
#[derive(Debug)]
pub(super) enum Filed {
    /// The group is filed and the desk's progress is at `up_to`; `session` can file the
    /// next group.
    Done { session: DeskSession, up_to: u32 },
    /// No second connection (`error` says why): the group is still to be filed, on the
    /// desk's own connection.
    NoConnection {
        plans: Vec<Plan>,
        up_to: u32,
        error: ImapError,
    },
    /// Filing failed: the session ends as if the desk's own connection had failed.
    Failed(DeskError),
}

/// The second connection of a desk's session: the group being filed on it, or, between
/// groups, the connection itself (kept for the next group; logged out by [`Filer::close`]).
#[derive(Default)]
pub(super) struct Filer<'a> {
    filing: Option<Filing<'a>>,
    idle: Option<DeskSession>,
}

impl std::fmt::Debug for Filer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filer")
            .field("filing", &self.filing.is_some())
            .field("idle", &self.idle.is_some())
            .finish()
    }
}

impl<'a> Filer<'a> {
    /// Starts filing `plans` (moving the desk's progress to `up_to`) on the idle second
    /// connection or a new one. The filing before must have ended ([`Filer::ended`]).
    pub(super) fn start(
        &mut self,
        ep: &'a Endpoint,
        shared: &'a Shared,
        desk: &'a Desk,
        uidvalidity: u32,
        plans: Vec<Plan>,
        up_to: u32,
    ) {
        let idle = self.idle.take();
        // On the connection left by the filing before, or on a new one: logged in as the
        // desk and its mailbox selected, which must still have `uidvalidity`.
        self.filing = Some(Box::pin(async move {
            let mut session = match idle {
                Some(s) => s,
                None => match connect(ep, desk).await {
                    Ok((s, now)) if now == uidvalidity => {
                        tracing::debug!(desk = %desk.name, mails = plans.len(), "filing on a second connection");
                        s
                    }
                    Ok((s, now)) => {
                        let _ = s.logout().await;
                        let error = ImapError::UidValidityChanged {
                            mailbox: desk.mailbox.clone(),
                            was: uidvalidity,
                            now,
                        };
                        return Filed::Failed(DeskError::new(DeskOp::Select, error));
                    }
                    Err(error) => {
                        return Filed::NoConnection {
                            plans,
                            up_to,
                            error,
                        };
                    }
                },
            };
            match pipeline::file(&mut session, shared, desk, uidvalidity, &plans, up_to).await {
                Ok(()) => Filed::Done { session, up_to },
                Err(e) => Filed::Failed(DeskError::new(DeskOp::File, e)),
            }
        }));
    }

    /// Runs `work` to its end while the filing in flight (if any) goes on beside it;
    /// returns `work`'s output and how the filing ended, if it ended meanwhile.
    pub(super) async fn beside<T>(&mut self, work: impl Future<Output = T>) -> (T, Option<Filed>) {
        beside(work, &mut self.filing).await
    }

    /// The end of the filing in flight, if any, once it has ended.
    pub(super) async fn ended(&mut self) -> Option<Filed> {
        match self.filing.take() {
            Some(f) => Some(f.await),
            None => None,
        }
    }

    /// Takes note of how a filing ended, if one did: the desk's progress is at its group's
    /// end (`last`) and its connection kept for the next group; without a second
    /// connection the group is filed on the desk's own (`s`), and catch-ups file there for
    /// the rest of the session or, after a refused login, for good.
    pub(super) async fn settle(
        &mut self,
        filed: Option<Filed>,
        at: &Fetcher<'_>,
        s: &mut DeskSession,
        trouble: &mut Trouble,
        last: &mut u32,
    ) -> Result<(), DeskError> {
        let Some(filed) = filed else {
            return Ok(());
        };
        let up_to = match filed {
            Filed::Done { session, up_to } => {
                self.idle = Some(session);
                up_to
            }
            Filed::NoConnection {
                plans,
                up_to,
                error,
            } => {
                trouble.second = Second::after(&error);
                if trouble.second == Second::Refused {
                    tracing::info!(desk = %at.desk.name, error = %error, "no second connection to the desk: its catch-ups file on its own connection");
                } else {
                    tracing::info!(desk = %at.desk.name, error = %error, "no second connection to the desk for now: this session's catch-ups file on its own connection");
                }
                pipeline::file(s, at.shared, at.desk, at.uidvalidity, &plans, up_to)
                    .await
                    .at(DeskOp::File)?;
                up_to
            }
            Filed::Failed(e) => return Err(e),
        };
        *last = up_to;
        trouble.stalled = 0;
        Ok(())
    }

    /// Waits for the filing in flight, if any, and logs the second connection out.
    pub(super) async fn close(&mut self) {
        if let Some(Filed::Done { session, .. }) = self.ended().await {
            self.idle = Some(session);
        }
        if let Some(session) = self.idle.take() {
            let _ = session.logout().await;
        }
    }
}

async fn connect(ep: &Endpoint, desk: &Desk) -> Result<(DeskSession, u32), ImapError> {
    let mut s = DeskSession::connect(ep, &desk.login, desk.password.expose()).await?;
    match s.select(&desk.mailbox).await {
        Ok(state) => Ok((s, state.uidvalidity)),
        Err(e) => {
            let _ = s.logout().await;
            Err(e)
        }
    }
}

/// Runs `work` to its end while `filing` (if any) goes on beside it; returns `work`'s
/// output and how the filing ended, if it ended meanwhile (`filing` is then `None`).
async fn beside<T>(
    work: impl Future<Output = T>,
    filing: &mut Option<Filing<'_>>,
) -> (T, Option<Filed>) {
    let mut work = std::pin::pin!(work);
    let mut ended = None;
    let out = std::future::poll_fn(|cx| {
        if let Some(f) = filing.as_mut()
            && let Poll::Ready(filed) = f.as_mut().poll(cx)
        {
            *filing = None;
            ended = Some(filed);
        }
        work.as_mut().poll(cx)
    })
    .await;
    (out, ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn failed() -> Filed {
        Filed::Failed(DeskError::new(
            DeskOp::File,
            ImapError::Closed("file the group"),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_filing_that_ends_first_is_handed_back_with_the_work() {
        let mut filing: Option<Filing<'_>> = Some(Box::pin(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            failed()
        }));
        let (out, ended) = beside(
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                7
            },
            &mut filing,
        )
        .await;
        assert_eq!(out, 7);
        assert!(matches!(ended, Some(Filed::Failed(_))), "{ended:?}");
        assert!(filing.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_filing_that_outlasts_the_work_goes_on_afterwards() {
        let mut filing: Option<Filing<'_>> = Some(Box::pin(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            failed()
        }));
        let started = tokio::time::Instant::now();
        let (out, ended) = beside(
            async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                "fetched"
            },
            &mut filing,
        )
        .await;
        assert_eq!(out, "fetched");
        assert!(ended.is_none());
        assert_eq!(started.elapsed(), Duration::from_millis(10));
        // It was polled beside the work (its timer started then), and ends on its own time.
        let Some(f) = filing.take() else {
            panic!("the filing was dropped")
        };
        assert!(matches!(f.await, Filed::Failed(_)));
        assert_eq!(started.elapsed(), Duration::from_millis(50));
    }

    #[test]
    fn a_refused_login_ends_second_connections_and_a_passing_failure_only_this_session() {
        let refused = ImapError::Login {
            login: "order.process".into(),
            reason: "[LIMIT] Maximum number of connections from user+IP exceeded".into(),
        };
        let mut second = Second::after(&refused);
        assert_eq!(second, Second::Refused);
        second.new_session();
        assert!(!second.allowed(), "a refusal holds across sessions");

        let mut second = Second::after(&ImapError::Timeout("connect"));
        assert_eq!(second, Second::NotThisSession);
        assert!(!second.allowed());
        second.new_session();
        assert!(second.allowed(), "tried again in the next session");
        assert!(Second::default().allowed());
    }

    #[tokio::test]
    async fn without_a_filing_the_work_runs_alone() {
        let mut filing: Option<Filing<'_>> = None;
        let (out, ended) = beside(async { 3 }, &mut filing).await;
        assert_eq!((out, ended.is_none()), (3, true));
    }
}
