//! Learning tickets from the helpdesk's acknowledgement mails (issue #17, the registry's
//! `acknowledgements` source): a task of the daemon reads `[registry.acknowledgements]`'s
//! folder on `[imap]`'s server, never changing it (EXAMINE, BODY.PEEK; no STORE, MOVE,
//! EXPUNGE or APPEND), from the UID after the last one it learned from (kept per folder with
//! its UIDVALIDITY in the state database; a new UIDVALIDITY reads the folder again), every
//! `poll_seconds` and whenever a batch's lookup asks. From each acknowledgement (sender and
//! subject as configured) it learns the ticket number (the rules' ticket patterns, as for
//! desk mail), when it was created (the Date header, else INTERNALDATE) and the requester
//! (the To the helpdesk acknowledged). `check --connect` logs in and EXAMINEs the folder.
//!
//! Not here: the config and the lookups (`registry::acknowledgements`), the tables
//! (`store::acknowledged`), the IMAP commands (`imap`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::budget::MailMemory;
use crate::clock::unix_now;
use crate::imap::{DeskSession, Endpoint, ImapError};
use crate::registry::acknowledgements::{AckConfig, Acknowledgements};
use crate::registry::ticket_key;
use crate::rules::Rules;
use crate::shared::Shared;
use crate::store::{LearnedTicket, StoreError};

/// Mails fetched per round trip, and their bytes at most (acknowledgements are small; a
/// larger mail is not downloaded and teaches nothing).
const BATCH: usize = 100;
const BATCH_BYTES: u64 = 8 << 20;
const MAX_ACK_BYTES: u32 = 1 << 20;

/// Why a read of the acknowledgement folder stopped.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("{0}")]
    Imap(#[from] ImapError),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The parsing thread ended early.
    #[error("the parsing thread ended early: {0}")]
    Worker(String),
}

/// What tells an acknowledgement, as the learning task applies it.
#[derive(Debug)]
pub struct Recogniser {
    /// Senders, lower case.
    pub from: Vec<String>,
    pub subject: regex::Regex,
}

impl Recogniser {
    /// From `config`; `helpdesk` (config.toml's address) when it names no sender.
    ///
    /// # Errors
    /// The subject is not a regex (`check` refuses that first).
    pub fn new(config: &AckConfig, helpdesk: &str) -> Result<Recogniser, regex::Error> {
        let from = if config.from.is_empty() {
            vec![helpdesk.trim().to_ascii_lowercase()]
        } else {
            config.from.clone()
        };
        Ok(Recogniser {
            from,
            subject: regex::Regex::new(&config.subject)?,
        })
    }

    /// The ticket `raw` acknowledges, or `None` when it is not an acknowledgement (another
    /// sender or subject, no ticket number, no date). `arrived`: its INTERNALDATE (Unix
    /// seconds), used when the Date header is missing or unreadable.
    pub fn recognise(
        &self,
        raw: &[u8],
        arrived: Option<i64>,
        rules: &Rules,
    ) -> Option<LearnedTicket> {
        let msg = crate::facts::parser().parse(raw)?;
        let sender = msg
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())?
            .trim()
            .to_ascii_lowercase();
        if !self.from.contains(&sender) || !self.subject.is_match(msg.subject().unwrap_or("")) {
            return None;
        }
        let ticket =
            crate::facts::ticket::find_ticket(&msg, &rules.ticket_patterns, &rules.limits)?;
        let created = msg
            .date()
            .map(mail_parser::DateTime::to_timestamp)
            .filter(|t| *t > 0)
            .or(arrived)?;
        let requester = msg
            .to()
            .into_iter()
            .flat_map(|to| to.iter())
            .filter_map(|a| a.address())
            .map(|a| a.trim().to_string())
            .find(|a| !self.from.contains(&a.to_ascii_lowercase()));
        Some(LearnedTicket {
            ticket: ticket_key(&ticket.number),
            created,
            requester,
        })
    }
}

/// The learning task: reads the folder at start, every `poll_seconds`, and when a lookup
/// asks ([`Acknowledgements::wake`]), until `token` is cancelled. A failed read is logged
/// once per reason (lookups then say why); the session is opened again on the next read.
pub async fn run(shared: Arc<Shared>, ep: Arc<Endpoint>, token: CancellationToken) {
    let Some(acks) = shared
        .registry
        .as_ref()
        .and_then(|r| r.acknowledgements())
        .cloned()
    else {
        return;
    };
    let recogniser = match Recogniser::new(&acks.config, &shared.config.helpdesk) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::error!(error = %e, "acknowledgements: the subject is not a regex");
            return;
        }
    };
    let mut session: Option<DeskSession> = None;
    let mut said: Option<String> = None;
    let mut first = true;
    loop {
        acks.read_started();
        let result = tokio::select! {
            () = token.cancelled() => break,
            r = read(&shared, &ep, &acks, &recogniser, &mut session, first) => r,
        };
        match result {
            Ok(()) => {
                first = false;
                if said.take().is_some() {
                    tracing::info!(folder = %acks.config.folder, "acknowledgements read again");
                }
                acks.read_finished(None);
            }
            Err(e) => {
                session = None;
                let why = e.to_string();
                if said.as_deref() != Some(why.as_str()) {
                    tracing::warn!(
                        folder = %acks.config.folder,
                        login = %acks.config.login,
                        error = %why,
                        "cannot read the helpdesk's acknowledgements; tickets not learned yet are \"unavailable\" to rules"
                    );
                    said = Some(why.clone());
                }
                acks.read_finished(Some(why));
            }
        }
        tokio::select! {
            () = token.cancelled() => break,
            () = tokio::time::sleep(acks.config.poll) => {}
            () = acks.wake.notified() => {}
        }
    }
    acks.read_finished(Some("ticketgate is stopping".into()));
    if let Some(s) = session {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.logout()).await;
    }
}

/// One read: EXAMINE, the UIDs after the last learned one, their bodies (BODY.PEEK) and
/// arrival dates in batches, each batch's tickets and new last UID stored together.
async fn read(
    shared: &Shared,
    ep: &Endpoint,
    acks: &Acknowledgements,
    recogniser: &Arc<Recogniser>,
    session: &mut Option<DeskSession>,
    first: bool,
) -> Result<(), AckError> {
    let cfg = &acks.config;
    let s = match session {
        Some(s) => s,
        None => session.insert(DeskSession::connect(ep, &cfg.login, cfg.password.expose()).await?),
    };
    let st = s.examine(&cfg.folder).await?;
    let progress = shared.store.ack_progress(&cfg.folder).await?;
    let mut next = match progress {
        Some((v, last)) if v == st.uidvalidity => last.saturating_add(1),
        Some((v, _)) => {
            tracing::info!(folder = %cfg.folder, old = v, new = st.uidvalidity, "acknowledgement folder has a new UIDVALIDITY: reading it again from the start");
            1
        }
        None => 1,
    };
    if first {
        tracing::info!(folder = %cfg.folder, uidvalidity = st.uidvalidity, from_uid = next, "reading the helpdesk's acknowledgements");
    }
    let own = MailMemory::new(BATCH_BYTES.saturating_mul(crate::budget::DECIDE_COPIES));
    let uids = s.uids_from(next).await?;
    let (mut read, mut learned) = (0usize, 0usize);
    let mut rest: &[u32] = &uids;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(BATCH)];
        // Not under the daemon's shared budget: a desk's decision can wait for this read
        // (a ticket not learned yet) while holding its own reservation, and the read would
        // then wait for that one. Its bytes are bounded by BATCH_BYTES anyway.
        let (mails, _reserved) = s.fetch(chunk, MAX_ACK_BYTES, BATCH_BYTES, &own).await?;
        let Some(last) = mails.last().map(|m| m.uid) else {
            break;
        };
        let uids: Vec<u32> = mails.iter().map(|m| m.uid).collect();
        let dates = s.internal_dates(&uids).await?;
        let policy = shared.policy();
        // Parsing runs on the blocking pool, never on the runtime's worker (issue #13).
        let count = mails.len();
        let tickets: Vec<LearnedTicket> = {
            let recogniser = Arc::clone(recogniser);
            tokio::task::spawn_blocking(move || {
                mails
                    .iter()
                    .filter_map(|m| {
                        let raw = m.raw.as_deref()?;
                        recogniser.recognise(raw, dates.get(&m.uid).copied(), &policy.rules)
                    })
                    .collect()
            })
            .await
            .map_err(|e| AckError::Worker(e.to_string()))?
        };
        shared
            .store
            .learn_tickets(&cfg.folder, (st.uidvalidity, last), &tickets, unix_now())
            .await?;
        read += count;
        learned += tickets.len();
        for t in &tickets {
            tracing::debug!(ticket = %t.ticket, created = t.created, requester = ?t.requester, "ticket learned from an acknowledgement");
        }
        next = last.saturating_add(1);
        rest = &rest[rest.partition_point(|u| *u < next)..];
    }
    if read > 0 {
        tracing::info!(folder = %cfg.folder, read, learned, last_uid = next - 1, "acknowledgements read");
    }
    Ok(())
}

/// `check --connect`: logs in as the acknowledgements' login and EXAMINEs the folder; a
/// line saying what was found. `None` when no acknowledgements are configured.
pub async fn probe(cfg: &crate::config::Config, ep: &Endpoint) -> Option<Result<String, String>> {
    let acks = cfg.registry.as_ref()?.acknowledgements()?;
    Some(
        async {
            let mut s = DeskSession::connect(ep, &acks.login, acks.password.expose())
                .await
                .map_err(|e| e.to_string())?;
            let st = s
                .examine(&acks.folder)
                .await
                .map_err(|e| format!("cannot examine {}: {e}", acks.folder))?;
            let _ = s.logout().await;
            Ok(format!(
                "{} of {} has {} mail(s), UIDVALIDITY {} (examined read-only)",
                acks.folder, acks.login, st.exists, st.uidvalidity
            ))
        }
        .await,
    )
}
