//! Reading a folder that must not change (the helpdesk's acknowledgements, issue #17):
//! EXAMINE opens it read-only, and INTERNALDATE is fetched for mail without a usable Date.
//! With [`DeskSession::uids_from`] and [`DeskSession::fetch`] (FLAGS, RFC822.SIZE and
//! BODY.PEEK[] only) nothing a reader does sets a flag or moves a mail.
//!
//! Not here: SELECT and the commands that change a desk's mailbox (`commands.rs`).

use std::collections::HashMap;

use super::{DeskSession, ImapError, MailboxState, proto, timed, uid_set};

impl DeskSession {
    /// Opens `folder` read-only (EXAMINE, RFC 3501 6.3.2): no flag changes, \Recent kept.
    pub async fn examine(&mut self, folder: &str) -> Result<MailboxState, ImapError> {
        let t = self.timeout;
        let mb = timed(t, "EXAMINE", self.s()?.examine(folder))
            .await?
            .map_err(proto("open a folder read-only"))?;
        self.mailbox = folder.to_string();
        // Nothing is ever stored in an examined folder.
        self.keywords = false;
        Ok(MailboxState {
            keywords: false,
            uidvalidity: mb
                .uid_validity
                .ok_or_else(|| ImapError::NoUidValidity(folder.to_string()))?,
            uidnext: mb.uid_next.unwrap_or(0),
            exists: mb.exists,
        })
    }

    /// The INTERNALDATE (when the server received it; Unix seconds) of `uids`; a UID that
    /// is gone is absent.
    pub async fn internal_dates(&mut self, uids: &[u32]) -> Result<HashMap<u32, i64>, ImapError> {
        if uids.is_empty() {
            return Ok(HashMap::new());
        }
        let t = self.timeout;
        let set = uid_set(uids);
        let mut dates = HashMap::with_capacity(uids.len());
        let (fetch, op) = ("UID FETCH INTERNALDATE", "fetch arrival dates");
        self.each_fetched(t, fetch, op, &set, "(UID INTERNALDATE)", |f| {
            if let (Some(uid), Some(date)) = (f.uid, f.internal_date()) {
                dates.insert(uid, date.timestamp());
            }
        })
        .await?;
        Ok(dates)
    }
}
