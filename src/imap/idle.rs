//! Waiting for new mail in a desk's session: IDLE (RFC 2177) with a wall-clock refresh, or
//! a NOOP poll when the server has no IDLE; mail announced outside IDLE counts too.
//!
//! Not here: what the caller does after waking (`watcher`), other commands (`commands.rs`).

use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::UnsolicitedResponse;
use tokio_util::sync::CancellationToken;

use super::{DeskSession, ImapError, Wake, proto, timed};

impl DeskSession {
    /// Waits for new mail: IDLE (re-issued every `idle_refresh`, RFC 2177) when offered, else
    /// a NOOP every `poll_every`. Returns promptly, after leaving IDLE, when cancelled;
    /// `nudge` wakes it early (another desk found work for this one).
    pub async fn wait(
        &mut self,
        cancel: &CancellationToken,
        nudge: &tokio::sync::Notify,
        idle_refresh: Duration,
        poll_every: Duration,
    ) -> Result<Wake, ImapError> {
        if !self.caps.idle {
            tokio::select! {
                () = cancel.cancelled() => return Ok(Wake::Cancelled),
                () = nudge.notified() => return Ok(Wake::Changed),
                () = tokio::time::sleep(poll_every) => {}
            }
            let t = self.timeout;
            timed(t, "NOOP", self.s()?.noop())
                .await?
                .map_err(proto("poll the mailbox"))?;
            return Ok(Wake::Changed);
        }
        // Mail that arrived while other commands ran was announced then: async-imap keeps
        // such announcements aside instead of waking IDLE.
        if self.announced_new_mail() {
            return Ok(Wake::Changed);
        }
        let session = self.session.take().ok_or(ImapError::Closed("start IDLE"))?;
        let announced = session.unsolicited_responses.clone();
        let mut idle = session.idle();
        timed(self.timeout, "IDLE", idle.init())
            .await?
            .map_err(proto("start IDLE"))?;
        // ... or just before the server confirmed IDLE.
        let outcome = if new_mail_announced(|| announced.try_recv().ok()) {
            Wake::Changed
        } else {
            let (fut, stop) = idle.wait_with_timeout(idle_refresh);
            tokio::pin!(fut);
            // async-imap restarts its timeout on every response, and Dovecot sends
            // `* OK Still here` every imap_idle_notify_interval (2 min): its timeout alone would
            // never fire. The refresh is a wall-clock deadline that keepalives do not extend.
            let refresh = tokio::time::sleep(idle_refresh);
            tokio::select! {
                r = &mut fut => match r.map_err(proto("wait in IDLE"))? {
                    IdleResponse::NewData(_) | IdleResponse::ManualInterrupt => Wake::Changed,
                    IdleResponse::Timeout => Wake::Timeout,
                },
                () = refresh => {
                    drop(stop);
                    let _ = fut.await;
                    Wake::Timeout
                }
                () = nudge.notified() => {
                    drop(stop);
                    let _ = fut.await;
                    Wake::Changed
                }
                () = cancel.cancelled() => {
                    drop(stop);
                    let _ = fut.await;
                    Wake::Cancelled
                }
            }
        };
        let session = timed(self.timeout, "DONE", idle.done())
            .await?
            .map_err(proto("leave IDLE"))?;
        self.session = Some(session);
        Ok(outcome)
    }

    /// True when the server announced new mail (EXISTS/RECENT) outside IDLE since the last
    /// check; also when the announcements overflowed async-imap's buffer, so that one may
    /// have been dropped. Empties the buffer.
    fn announced_new_mail(&mut self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| new_mail_announced(|| s.unsolicited_responses.try_recv().ok()))
    }
}

/// async-imap keeps at most this many announcements; more are dropped.
const ANNOUNCEMENTS_KEPT: usize = 100;

/// Reads announcements to the end (`next` yields the next one kept, if any); true when
/// one announced new mail or some may have been lost.
fn new_mail_announced(mut next: impl FnMut() -> Option<UnsolicitedResponse>) -> bool {
    let mut count = 0;
    let mut new_mail = false;
    while let Some(r) = next() {
        count += 1;
        new_mail |= matches!(
            r,
            UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
        );
    }
    new_mail || count >= ANNOUNCEMENTS_KEPT
}
