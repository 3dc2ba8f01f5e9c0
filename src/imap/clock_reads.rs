//! What the desk's clocks (issue #17) read on the IMAP server: whether a clock's mails are
//! still there and `\Answered`, and in another folder (Sent, the done folder) the mails
//! that reply to them or are them, found by Message-ID, and which mails of that folder to
//! read ([`reply_search`]: in full, or what came since this session last looked). Deciding
//! what that means is `deskclock`'s.

use std::collections::{HashMap, HashSet};

use async_imap::types::Flag;

use super::{DeskSession, ImapError, proto, timed, uid_set};

impl DeskSession {
    /// Which of `uids` are still in the selected mailbox, each with whether it carries
    /// `\Answered`; a UID that is gone (expunged, moved) is absent from the map. One bool
    /// per mail rather than its flags as text.
    pub async fn answered_of(&mut self, uids: &[u32]) -> Result<HashMap<u32, bool>, ImapError> {
        if uids.is_empty() {
            return Ok(HashMap::new());
        }
        let t = self.timeout;
        let set = uid_set(uids);
        let wanted: HashSet<u32> = uids.iter().copied().collect();
        let mut flags = HashMap::with_capacity(uids.len());
        // Each answer is read as it arrives and dropped: collecting them first held about
        // 6 KB per mail (async-imap keeps each response in its own buffer), 40 MB for the
        // 6,000 open clocks of a 10,000-mail backlog (issue #16).
        self.each_fetched(
            t,
            "UID FETCH FLAGS",
            "fetch flags",
            &set,
            "(UID FLAGS)",
            |f| {
                if let Some(uid) = f.uid.filter(|u| wanted.contains(u)) {
                    flags.insert(uid, f.flags().any(|f| matches!(f, Flag::Answered)));
                }
            },
        )
        .await?;
        Ok(flags)
    }

    /// In `folder` (opened read-only with EXAMINE, so nothing there changes), the bare
    /// Message-IDs (without angle brackets) for which `wanted` holds that a mail there
    /// carries as its own Message-ID or names in In-Reply-To or References, and the search
    /// made ([`ReplySearch`]). The caller selects its own mailbox again afterwards. Which
    /// mails: [`reply_search`] of what this session saw of the folder before, `full` to
    /// search in full whatever it saw; `since_unix` bounds the dates of a full search, and
    /// `now` (Unix seconds) is kept for the next search. Headers are fetched 500 at a time.
    pub async fn message_ids_in(
        &mut self,
        folder: &str,
        wanted: impl Fn(&str) -> bool,
        since_unix: i64,
        now: i64,
        full: bool,
    ) -> Result<(HashSet<String>, ReplySearch), ImapError> {
        let t = self.timeout;
        let opened = timed(t, "EXAMINE", self.s()?.examine(folder))
            .await?
            .map_err(proto("open a folder read-only"))?;
        self.mailbox = folder.to_string();
        let last = self.looked.get(folder).copied();
        let mut search = reply_search(last.as_ref(), opened.uid_validity, since_unix, now, full);
        let found = timed(t, "UID SEARCH", self.s()?.uid_search(&search.criteria))
            .await?
            .map_err(proto("search a folder"))?;
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable();
        let mut hits = HashSet::new();
        for chunk in uids.chunks(500) {
            let set = uid_set(chunk);
            let items = "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES)])";
            self.each_fetched(
                t,
                "UID FETCH HEADER.FIELDS",
                "fetch reply headers",
                &set,
                items,
                |f| {
                    let Some(head) = f.header() else { return };
                    for id in referenced_ids(head) {
                        if wanted(&id) {
                            hits.insert(id);
                        }
                    }
                },
            )
            .await?;
        }
        search.looked_at = uids.len();
        // Marked once read (an error ends the session, and with it the marks): mail that
        // arrives after the EXAMINE has a UID at least its UIDNEXT (RFC 3501 2.3.1.1),
        // whatever date its client gave it.
        match next_mark(last, opened.uid_validity, opened.uid_next, search.full, now) {
            Some(mark) => self.looked.insert(folder.to_string(), mark),
            None => self.looked.remove(folder),
        };
        Ok((hits, search))
    }
}

/// What a session saw of a folder when the desk clocks' review last searched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderMark {
    /// The folder's UIDVALIDITY then.
    pub uidvalidity: u32,
    /// Its UIDNEXT then: every mail that came after has a UID at least this.
    pub uid_next: u32,
    /// When (Unix seconds).
    pub at: i64,
    /// When the folder was last searched in full (Unix seconds).
    pub full_at: i64,
}

/// How often the review searches a folder in full even when it could search only what
/// came since (seconds). The review also searches in full before it marks a clock overdue.
pub const FULL_SEARCH_EVERY: i64 = 3_600;

/// A search [`reply_search`] chose: its UID SEARCH criteria, whether it was the full
/// search, and (once made) how many mails it looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplySearch {
    pub criteria: String,
    pub full: bool,
    pub looked_at: usize,
}

/// The UID SEARCH for replies in a folder at `now`. In full: mails dated since
/// `since_unix` (SINCE, the internal date, a day's precision). When this session searched
/// the folder before and its UIDVALIDITY is unchanged (`uidvalidity`, from EXAMINE), the
/// mails from the UIDNEXT seen then are added, whatever their date (a client may file a
/// reply with an old one). And then, unless `full` is asked for or [`FULL_SEARCH_EVERY`]
/// has passed since the last full search, only what came since: those mails, and mails
/// dated since a day before that search (mail decided just after it may have been
/// answered just before it). A desk with an open clock months old searched months of its
/// Sent folder every round: 20,000 mails took 133-180 ms of each review (issue #16).
pub fn reply_search(
    last: Option<&FolderMark>,
    uidvalidity: Option<u32>,
    since_unix: i64,
    now: i64,
    full: bool,
) -> ReplySearch {
    let date = |unix: i64| {
        jiff::Timestamp::from_second(unix.max(0))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .strftime("%d-%b-%Y")
            .to_string()
    };
    let search = |criteria: String, full: bool| ReplySearch {
        criteria,
        full,
        looked_at: 0,
    };
    match last {
        Some(mark) if Some(mark.uidvalidity) == uidvalidity => {
            let in_full = full || !(0..FULL_SEARCH_EVERY).contains(&(now - mark.full_at));
            let since = if in_full {
                since_unix
            } else {
                since_unix.max(mark.at - 86_400)
            };
            search(
                format!("OR UID {}:* SINCE {}", mark.uid_next, date(since)),
                in_full,
            )
        }
        _ => search(format!("SINCE {}", date(since_unix)), true),
    }
}

/// What to remember of a folder after a search at `now` (`full` or not), given what was
/// remembered before and what EXAMINE reported; `None` (search in full next time) when the
/// server reported no UIDVALIDITY or UIDNEXT.
fn next_mark(
    last: Option<FolderMark>,
    uidvalidity: Option<u32>,
    uid_next: Option<u32>,
    full: bool,
    now: i64,
) -> Option<FolderMark> {
    Some(FolderMark {
        uidvalidity: uidvalidity?,
        uid_next: uid_next?,
        at: now,
        full_at: match last {
            Some(mark) if !full => mark.full_at,
            _ => now,
        },
    })
}

/// A Message-ID without angle brackets and surrounding space.
pub fn bare(id: &str) -> &str {
    id.trim().trim_start_matches('<').trim_end_matches('>')
}

/// Every `<id>` in the Message-ID, In-Reply-To and References fields of `head` (unfolded
/// or not), bare.
fn referenced_ids(head: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(head);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let id = &rest[open + 1..open + close];
        if !id.is_empty() && !id.contains(char::is_whitespace) {
            out.push(id.to_string());
        }
        rest = &rest[open + close + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_every_reply_header() {
        let head = b"Message-ID: <r1@desk.in>\r\nIn-Reply-To: <a@x.in>\r\nReferences: <z@x.in>\r\n <a@x.in> <b@x.in>\r\n\r\n";
        assert_eq!(
            referenced_ids(head),
            ["r1@desk.in", "a@x.in", "z@x.in", "a@x.in", "b@x.in"]
        );
        assert_eq!(bare(" <a@x.in> "), "a@x.in");
        assert!(referenced_ids(b"Subject: a < b\r\n").is_empty());
    }

    /// 2026-11-30 12:00:00 UTC.
    const NOON: i64 = 1_796_040_000;
    const DAY: i64 = 86_400;

    #[test]
    fn a_folder_is_searched_in_full_then_for_what_came_since_and_in_full_each_hour() {
        let oldest = NOON - 90 * DAY;
        let search = |last: Option<&FolderMark>, uidvalidity, since, now, full| {
            let s = reply_search(last, uidvalidity, since, now, full);
            (s.criteria, s.full)
        };
        // First search of the session: everything since a day before the oldest clock.
        assert_eq!(
            search(None, Some(7), oldest - DAY, NOON, false),
            ("SINCE 31-Aug-2026".to_string(), true)
        );
        let mark = next_mark(None, Some(7), Some(120), true, NOON).unwrap();
        assert_eq!(
            mark,
            FolderMark {
                uidvalidity: 7,
                uid_next: 120,
                at: NOON,
                full_at: NOON
            }
        );
        // A minute later: mail from UIDNEXT on (whatever its date), or dated since a day
        // before the last search.
        assert_eq!(
            search(Some(&mark), Some(7), oldest - DAY, NOON + 60, false),
            ("OR UID 120:* SINCE 29-Nov-2026".to_string(), false)
        );
        // The oldest clock is younger than that day: its own start bounds the dates.
        assert_eq!(
            search(Some(&mark), Some(7), NOON - 3_600, NOON + 60, false),
            ("OR UID 120:* SINCE 30-Nov-2026".to_string(), false)
        );
        // In full, asked for (a clock is about to be marked overdue) or an hour after the
        // last full search: every date again, and the mail from UIDNEXT on as well.
        let full_again = ("OR UID 120:* SINCE 31-Aug-2026".to_string(), true);
        assert_eq!(
            search(Some(&mark), Some(7), oldest - DAY, NOON + 60, true),
            full_again
        );
        // An incremental search keeps the time of the last full one; a full one renews it.
        let later = next_mark(Some(mark), Some(7), Some(130), false, NOON + 3_000).unwrap();
        assert_eq!(
            (later.uid_next, later.at, later.full_at),
            (130, NOON + 3_000, NOON)
        );
        let almost = search(Some(&later), Some(7), oldest - DAY, NOON + 3_599, false);
        assert!(!almost.1, "{almost:?}");
        assert_eq!(
            search(Some(&later), Some(7), oldest - DAY, NOON + 3_600, false),
            ("OR UID 130:* SINCE 31-Aug-2026".to_string(), true)
        );
        let renewed = next_mark(Some(later), Some(7), Some(131), true, NOON + 3_600).unwrap();
        assert_eq!(renewed.full_at, NOON + 3_600);
        // In full, without the UID part: another UIDVALIDITY (the folder recreated), none
        // reported; in full with it: a clock set back.
        let full = ("SINCE 31-Aug-2026".to_string(), true);
        assert_eq!(
            search(Some(&mark), Some(8), oldest - DAY, NOON + 60, false),
            full
        );
        assert_eq!(
            search(Some(&mark), None, oldest - DAY, NOON + 60, false),
            full
        );
        assert_eq!(
            search(Some(&mark), Some(7), oldest - DAY, NOON - 60, false),
            full_again
        );
        assert_eq!(next_mark(Some(mark), None, Some(5), false, NOON), None);
        assert_eq!(next_mark(Some(mark), Some(7), None, false, NOON), None);
    }
}
