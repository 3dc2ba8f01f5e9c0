//! Commands on the selected mailbox of a desk's session: SELECT, UID search, batched fetch
//! with BODY.PEEK, keyword stores, moves with a safe fallback, search by Message-ID.
//!
//! Not here: connecting and logging in (`connection.rs`), creating and finding folders
//! (`folders.rs`), IDLE (`idle.rs`), the clocks' reads (`clock_reads.rs`).

use futures_util::TryStreamExt;

use super::{
    DeskSession, FetchedMail, ImapError, MailBytes, MailboxState, flag_text, proto, timed, uid_set,
};
use crate::budget::{MailMemory, Reserved};

/// The answers to `UID FETCH (UID FLAGS RFC822.SIZE)` for the UIDs asked: a response for
/// another UID is dropped; one without a size is news of a flag change (RFC 3501 7.4.2,
/// sent for a change made by another connection), which an answer with the size wins over;
/// a server that leaves the size out altogether gets its mail taken as small (size 0).
#[derive(Debug)]
struct SizeAnswers<'a> {
    asked: &'a [u32],
    sized: Vec<FetchedMail>,
    sizeless: Vec<FetchedMail>,
}

impl<'a> SizeAnswers<'a> {
    fn new(asked: &'a [u32]) -> SizeAnswers<'a> {
        SizeAnswers {
            asked,
            sized: Vec::with_capacity(asked.len()),
            sizeless: Vec::new(),
        }
    }

    /// One response: its UID and size, if any, and its flags (read only when kept).
    fn take(&mut self, uid: Option<u32>, size: Option<u32>, flags: impl FnOnce() -> Vec<String>) {
        let Some(uid) =
            uid.filter(|u| self.asked.binary_search(u).is_ok() || self.asked.contains(u))
        else {
            return;
        };
        let mail = |size| FetchedMail {
            uid,
            flags: flags(),
            size,
            raw: None,
        };
        match size {
            Some(size) => self.sized.push(mail(size)),
            None if !self.sizeless.iter().any(|m| m.uid == uid) => self.sizeless.push(mail(0)),
            None => {}
        }
    }

    /// One mail per UID answered, ascending; an answer with a size before one without.
    fn into_mails(self) -> Vec<FetchedMail> {
        let mut mails = self.sized;
        mails.extend(self.sizeless);
        // Stable: the first of a UID's entries (an answer with a size, when there is one)
        // is the one kept.
        mails.sort_by_key(|m| m.uid);
        mails.dedup_by_key(|m| m.uid);
        mails
    }
}

impl DeskSession {
    pub async fn select(&mut self, mailbox: &str) -> Result<MailboxState, ImapError> {
        let t = self.timeout;
        let mb = timed(t, "SELECT", self.s()?.select(mailbox))
            .await?
            .map_err(proto("select the mailbox"))?;
        self.mailbox = mailbox.to_string();
        // No PERMANENTFLAGS at all means any flag may be stored (RFC 3501 7.1).
        let keywords = mb.permanent_flags.is_empty()
            || mb
                .permanent_flags
                .iter()
                .any(|f| matches!(f, async_imap::types::Flag::MayCreate));
        self.keywords = keywords;
        Ok(MailboxState {
            keywords,
            uidvalidity: mb
                .uid_validity
                .ok_or_else(|| ImapError::NoUidValidity(mailbox.to_string()))?,
            uidnext: mb.uid_next.unwrap_or(0),
            exists: mb.exists,
        })
    }

    /// UIDs at or above `first_uid`, ascending. (`UID n:*` also matches the highest UID when
    /// it is below n, RFC 3501 §6.4.8, hence the filter.)
    pub async fn uids_from(&mut self, first_uid: u32) -> Result<Vec<u32>, ImapError> {
        let t = self.timeout;
        let query = format!("UID {}:*", first_uid.max(1));
        let set = timed(t, "UID SEARCH", self.s()?.uid_search(query))
            .await?
            .map_err(proto("search new mail"))?;
        let mut uids: Vec<u32> = set.into_iter().filter(|u| *u >= first_uid).collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// Fetches a batch in two round trips: sizes and flags, then the bodies of the mails
    /// within `max_bytes` with BODY.PEEK (which leaves \Seen alone). Only the first mails of
    /// `uids` (ascending) whose bodies add up to at most `budget` bytes are fetched and
    /// returned, at least one: the bytes in flight are bounded, not only the count (issue
    /// #13). The caller goes on after the last UID returned. Before the bodies are fetched,
    /// their bytes times [`crate::budget::DECIDE_COPIES`] are reserved in `memory` (the
    /// process-wide budget): the caller holds the returned reservation until the batch is
    /// decided and written.
    pub async fn fetch(
        &mut self,
        uids: &[u32],
        max_bytes: u32,
        budget: u64,
        memory: &MailMemory,
    ) -> Result<(Vec<FetchedMail>, Reserved), ImapError> {
        if uids.is_empty() {
            return Ok((Vec::new(), Reserved::none()));
        }
        let t = self.timeout;
        let set = uid_set(uids);
        // Each response is read as it comes and let go unless it is one asked for: the
        // server mixes in news of other mail (flags set and mail moved by another
        // connection: the second connection of a catch-up, issue #16, or an officer's
        // client), and each response holds on to async-imap's read buffer while kept.
        let mut answers = SizeAnswers::new(uids);
        self.each_fetched(
            t,
            "UID FETCH",
            "fetch sizes",
            &set,
            "(UID FLAGS RFC822.SIZE)",
            |f| {
                answers.take(f.uid, f.size, || f.flags().map(flag_text).collect());
            },
        )
        .await?;
        let mut mails = answers.into_mails();
        // A mail expunged since the search is missing too; the retry's search skips it.
        if let Some(&uid) = uids
            .iter()
            .find(|u| mails.binary_search_by_key(*u, |m| m.uid).is_err())
        {
            return Err(ImapError::Incomplete { what: "size", uid });
        }
        // The prefix within the byte budget (mail over `max_bytes` is not downloaded).
        let mut total = 0u64;
        let mut keep = 0;
        for m in &mails {
            let cost = if m.size <= max_bytes {
                u64::from(m.size)
            } else {
                0
            };
            if keep > 0 && total + cost > budget {
                break;
            }
            total += cost;
            keep += 1;
        }
        mails.truncate(keep);
        let reserved = memory
            .reserve(total.saturating_mul(crate::budget::DECIDE_COPIES))
            .await;
        let small: Vec<u32> = mails
            .iter()
            .filter(|m| m.size <= max_bytes)
            .map(|m| m.uid)
            .collect();
        if !small.is_empty() {
            let set = uid_set(&small);
            // Bodies may be large: allow more time than for a plain command.
            // Each body stays in its response's buffer (MailBytes): one copy of the batch.
            let (fetch, items) = ("UID FETCH BODY.PEEK[]", "(UID BODY.PEEK[])");
            self.each_fetched(t * 4, fetch, "fetch mail", &set, items, |f| {
                let (Some(uid), true) = (f.uid, f.body().is_some()) else {
                    return;
                };
                if let Ok(i) = mails.binary_search_by_key(&uid, |m| m.uid) {
                    mails[i].raw = Some(MailBytes(f));
                }
            })
            .await?;
            // Without this, a refused body fetch would pass the mail on as oversized.
            if let Some(m) = mails
                .iter()
                .find(|m| m.size <= max_bytes && m.raw.is_none())
            {
                return Err(ImapError::Incomplete {
                    what: "body",
                    uid: m.uid,
                });
            }
        }
        Ok((mails, reserved))
    }

    /// Adds keywords or system flags (`UID STORE +FLAGS.SILENT`); idempotent.
    pub async fn add_flags(&mut self, uids: &[u32], flags: &[String]) -> Result<(), ImapError> {
        // Keywords the server does not keep are left out: system flags still go.
        let kept: Vec<String>;
        let flags = if self.keywords {
            flags
        } else {
            kept = flags
                .iter()
                .filter(|f| f.starts_with('\\'))
                .cloned()
                .collect();
            &kept
        };
        if uids.is_empty() || flags.is_empty() {
            return Ok(());
        }
        let t = self.timeout;
        let set = uid_set(uids);
        // Not `uid_store`: its stream ends at the tagged answer without looking at it, so a NO
        // or BAD would pass for success and the mail be filed without its keywords.
        let command = format!("UID STORE {set} +FLAGS.SILENT ({})", flags.join(" "));
        timed(t, "UID STORE", self.s()?.run_command_and_check_ok(&command))
            .await?
            .map_err(proto("store flags"))
    }

    /// Moves mail to `folder`: UID MOVE (RFC 6851) when offered; else UID COPY + \Deleted +
    /// UID EXPUNGE of exactly these UIDs (RFC 4315); without UIDPLUS the copies are only
    /// marked \Deleted, never expunged with a plain EXPUNGE that would remove other mail
    /// an officer marked deleted. A UID that is gone already is a no-op.
    pub async fn move_to(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        // The server's name of a folder made sure of in this session.
        let mapped = self.folders.get(folder).cloned();
        let folder = mapped.as_deref().unwrap_or(folder);
        let t = self.timeout;
        let set = uid_set(uids);
        if self.caps.r#move {
            tracing::trace!(folder, set = %set, "UID MOVE");
            timed(t, "UID MOVE", self.s()?.uid_mv(&set, folder))
                .await?
                .map_err(proto("move mail"))?;
            return Ok(());
        }
        tracing::debug!(folder, set = %set, uidplus = self.caps.uidplus, "server lacks MOVE: copying, flagging \\Deleted");
        timed(t, "UID COPY", self.s()?.uid_copy(&set, folder))
            .await?
            .map_err(proto("copy mail"))?;
        self.add_flags(uids, &["\\Deleted".to_string()]).await?;
        if self.caps.uidplus {
            timed(t, "UID EXPUNGE", async {
                self.s()?
                    .uid_expunge(&set)
                    .await
                    .map_err(proto("expunge moved mail"))?
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(proto("expunge moved mail"))
            })
            .await??;
        } else if !self.warned_no_uidplus {
            self.warned_no_uidplus = true;
            tracing::warn!(mailbox = %self.mailbox, "server lacks MOVE and UIDPLUS: filed mail stays in the inbox marked \\Deleted until an officer's client expunges it");
        }
        Ok(())
    }

    /// UIDs of the mail with this Message-ID in the selected mailbox.
    pub async fn search_message_id(&mut self, message_id: &str) -> Result<Vec<u32>, ImapError> {
        if message_id.is_empty()
            || message_id
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Ok(Vec::new());
        }
        let t = self.timeout;
        let query = format!(
            "HEADER Message-ID \"{}\"",
            message_id.trim_start_matches('<').trim_end_matches('>')
        );
        let found = timed(t, "UID SEARCH", self.s()?.uid_search(query))
            .await?
            .map_err(proto("search a message id"))?;
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable();
        Ok(uids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(f: &[&str]) -> impl FnOnce() -> Vec<String> {
        let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
        move || f
    }

    #[test]
    fn news_of_other_mail_is_dropped_and_an_answer_with_a_size_wins() {
        let asked = [3, 5, 9];
        let mut a = SizeAnswers::new(&asked);
        // News of mail filed by another connection: other UIDs, and no UID at all.
        a.take(Some(4), None, flags(&["$Ticket"]));
        a.take(None, None, flags(&["$Ticket"]));
        // News of a flag change on an asked mail, before its answer.
        a.take(Some(5), None, flags(&["$Ticket"]));
        a.take(Some(9), Some(900), flags(&[]));
        a.take(Some(5), Some(500), flags(&["\\Seen"]));
        a.take(Some(3), Some(300), flags(&[]));
        // Again after it, and an answer repeated.
        a.take(Some(5), None, flags(&["$NoTicket"]));
        a.take(Some(3), Some(300), flags(&[]));
        let got: Vec<(u32, u32, Vec<String>)> = a
            .into_mails()
            .into_iter()
            .map(|m| (m.uid, m.size, m.flags))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, 300, vec![]),
                (5, 500, vec!["\\Seen".to_string()]),
                (9, 900, vec![]),
            ]
        );
    }

    #[test]
    fn a_server_that_leaves_out_the_size_gets_its_mail_taken_as_small() {
        let asked = [7];
        let mut a = SizeAnswers::new(&asked);
        a.take(Some(7), None, flags(&["\\Flagged"]));
        a.take(Some(7), None, flags(&[]));
        let got: Vec<(u32, u32, Vec<String>)> = a
            .into_mails()
            .into_iter()
            .map(|m| (m.uid, m.size, m.flags))
            .collect();
        assert_eq!(got, vec![(7, 0, vec!["\\Flagged".to_string()])]);
    }

    #[test]
    fn a_mail_not_answered_is_missing() {
        let asked = [1, 2];
        let mut a = SizeAnswers::new(&asked);
        a.take(Some(2), Some(20), flags(&[]));
        assert_eq!(
            a.into_mails().iter().map(|m| m.uid).collect::<Vec<_>>(),
            vec![2]
        );
    }
}
