//! The outbox task: drains the durable outbox through a [`Transport`], in queue order;
//! transient failures (4xx, connection trouble) are retried with backoff, permanent ones
//! (5xx) recorded as failed and never retried, and with [`Drain`] (`run --once`) it ends
//! once the outbox is empty. The policy lives here, generic over the transport; the real
//! transport (lettre, SMTP connections) is `smtp`'s, queuing mail is the pipeline's.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::budget::{MailMemory, Reserved};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{OutboxItem, SendResult, Store, StoreError};

/// Stored (base64) bytes of outgoing mail read from the outbox at once, beyond the first
/// mail (issue #13: memory bounded by bytes, not only by count).
const OUTBOX_READ_BYTES: u64 = 8 * 1024 * 1024;
/// Mails read from the outbox at once.
const OUTBOX_READ_MAILS: u32 = 50;

/// First retry delay; doubled per attempt up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// A mail that failed temporarily this many times is given up as permanently failed.
pub const GIVE_UP_AFTER_ATTEMPTS: u32 = 40;

/// Why a send attempt failed: the SMTP reply code when the server answered with one (e.g.
/// 451, 550; `None` for a connection that broke or timed out, or a mail that cannot be
/// addressed) and the whole reason in words, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// The server's three-digit reply code, if it gave one.
    pub code: Option<u16>,
    /// What went wrong, including the server's answer.
    pub message: String,
}

impl SendError {
    /// A failure without a reply code.
    pub fn new(message: impl Into<String>) -> SendError {
        SendError {
            code: None,
            message: message.into(),
        }
    }
}

/// How one send attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted for every recipient.
    Sent,
    /// Accepted for some recipients; the server refused the others for good (their
    /// addresses and its answers). Not sent again.
    SentExcept(String),
    /// Worth another try later (4xx, connection trouble, timeout).
    Transient(SendError),
    /// Refused for good (5xx, a bad address): kept as failed, never tried again.
    Permanent(SendError),
}

/// Hands one queued mail to the mail system. Never panics; every failure is an
/// [`Outcome`]. The real one is `smtp::Mailer`.
pub trait Transport: Send + Sync {
    /// Sends `item` once.
    fn send(&self, item: &OutboxItem) -> impl Future<Output = Outcome> + Send;
}

/// What the outbox task needs of the state database; [`Store`] is the real one.
pub trait OutboxStore: Send + Sync {
    /// Pending mail due at `now`, oldest first, at most `limit` mails and (beyond the first)
    /// `max_bytes` of bodies, with their reservation in `memory`, passing over the mails
    /// in `skip`; without `wait_for_memory`, `None` when they do not fit in the budget now
    /// ([`Store::outbox_due`]).
    fn due(
        &self,
        now: i64,
        limit: u32,
        max_bytes: u64,
        memory: &MailMemory,
        skip: &HashSet<String>,
        wait_for_memory: bool,
    ) -> impl Future<Output = Result<Option<(Vec<OutboxItem>, Reserved)>, StoreError>> + Send;
    /// Writes what became of attempts (each a mail id and its result) at `now`, in one
    /// transaction: all or none ([`Store::outbox_results`]).
    fn record_all(
        &self,
        results: &[(String, SendResult)],
        now: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// How many mails wait, and when the oldest was queued ([`Store::outbox_waiting`]).
    fn waiting(&self) -> impl Future<Output = Result<(u64, Option<i64>), StoreError>> + Send;
}

impl OutboxStore for Store {
    async fn due(
        &self,
        now: i64,
        limit: u32,
        max_bytes: u64,
        memory: &MailMemory,
        skip: &HashSet<String>,
        wait_for_memory: bool,
    ) -> Result<Option<(Vec<OutboxItem>, Reserved)>, StoreError> {
        self.outbox_due(now, limit, max_bytes, memory, skip, wait_for_memory)
            .await
    }

    async fn record_all(
        &self,
        results: &[(String, SendResult)],
        now: i64,
    ) -> Result<(), StoreError> {
        self.outbox_results(results, now).await
    }

    async fn waiting(&self) -> Result<(u64, Option<i64>), StoreError> {
        self.outbox_waiting().await
    }
}

/// When [`Outbox::run`] ends by itself (`ticketgate run --once`): once `after` is
/// cancelled (the desks are done), as soon as nothing is due or waiting for retry, or
/// `limit` after that.
#[derive(Debug)]
pub struct Drain {
    /// Cancelled when no more mail will be queued.
    pub after: CancellationToken,
    /// How long to keep trying after that.
    pub limit: Duration,
}

/// Delay before the attempt after `attempts` failed ones: [`FIRST_BACKOFF`] doubling to
/// [`MAX_BACKOFF`], with ±20 % jitter.
pub fn backoff(attempts: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempts.min(16)))
        .min(MAX_BACKOFF);
    let jitter = 0.8 + fastrand::f64() * 0.4;
    base.mul_f64(jitter)
}

/// The outbox task's parts: where mail waits, how it is sent, what wakes it, where it
/// counts, and its clock.
#[derive(Debug)]
pub struct Outbox<T, S = Store> {
    store: S,
    transport: T,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// The process-wide budget the mails being read and sent are held under.
    memory: MailMemory,
    /// Mails sent at once (`[smtp] connections`).
    lanes: usize,
}

impl<T: Transport, S: OutboxStore> Outbox<T, S> {
    /// An outbox on the system clock; `wake` is notified when the pipeline queues mail; the
    /// mails it reads and sends are held under `memory` ([`crate::budget`]).
    pub fn new(
        store: S,
        transport: T,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
        memory: MailMemory,
    ) -> Self {
        Outbox {
            store,
            transport,
            wake,
            metrics,
            clock: Clock::System,
            memory,
            lanes: 1,
        }
    }

    /// The same outbox sending up to `lanes` mails at once (`[smtp] connections`; 1, one
    /// after the other in queue order, unless this is called). A kill -9 may send as many
    /// mails again as were in flight.
    pub fn with_lanes(self, lanes: usize) -> Self {
        Outbox {
            lanes: lanes.max(1),
            ..self
        }
    }

    /// The same outbox reading Unix time from `clock` (tests: [`Clock::tokio`]).
    pub fn with_clock(self, clock: Clock) -> Self {
        Outbox { clock, ..self }
    }

    /// Sends whatever is due until cancelled; with `drain`, it also returns when the
    /// outbox is drained (see [`Drain`]).
    ///
    /// A result that cannot be written to the database (disk full, database gone) is kept
    /// in memory and written again until it is; meanwhile that mail is not sent again.
    pub async fn run(&self, cancel: CancellationToken, drain: Option<Drain>) {
        let mut draining_since: Option<tokio::time::Instant> = None;
        let mut unrecorded: HashMap<String, SendResult> = HashMap::new();
        let mut store_failures = 0u32;
        loop {
            let now = self.clock.now();
            let mut store_ok = true;
            if !unrecorded.is_empty() {
                let results: Vec<(String, SendResult)> =
                    std::mem::take(&mut unrecorded).into_iter().collect();
                if let Err(e) = self.store.record_all(&results, now).await {
                    store_ok = false;
                    tracing::debug!(error = %chain(e), "still cannot record send results");
                    unrecorded.extend(results);
                }
            }
            let (attempted, read_ok) = if store_ok {
                self.send_due(&cancel, &unrecorded).await
            } else {
                (Vec::new(), true)
            };
            if cancel.is_cancelled() {
                return;
            }
            store_ok &= read_ok;
            let sent_any = !attempted.is_empty();
            for (id, result, recorded) in attempted {
                if !recorded {
                    unrecorded.insert(id, result);
                    store_ok = false;
                }
            }
            if store_ok {
                store_failures = 0;
                if sent_any {
                    continue;
                }
            } else {
                store_failures = store_failures.saturating_add(1);
            }
            let (pending, oldest) = self
                .store
                .waiting()
                .await
                .unwrap_or((unrecorded.len() as u64, None));
            self.metrics.outbox_depth.store(pending, Relaxed);
            self.metrics
                .outbox_oldest
                .store(oldest.unwrap_or(0), Relaxed);
            if let Some(d) = drain.as_ref().filter(|d| d.after.is_cancelled())
                && ((pending == 0 && unrecorded.is_empty())
                    || draining_since
                        .get_or_insert_with(tokio::time::Instant::now)
                        .elapsed()
                        >= d.limit)
            {
                if pending > 0 || !unrecorded.is_empty() {
                    tracing::warn!(
                        pending,
                        unrecorded = unrecorded.len(),
                        "leaving mail in the outbox for the next run"
                    );
                }
                return;
            }
            let nap = if !store_ok {
                // The database refuses writes: back off (1 s doubling to 1 min).
                Duration::from_secs(1u64 << store_failures.min(6))
            } else if pending > 0 {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(30)
            };
            // Wakes once when the desks are done, to start draining.
            let desks_done = async {
                match &drain {
                    Some(d) if !d.after.is_cancelled() => d.after.cancelled().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(nap) => {}
                () = desks_done => {}
            }
        }
    }

    /// Sends what is due, up to `lanes` mails at once, each on its own connection, until
    /// nothing more is due (or a read found no memory for its mails once none was in
    /// flight: the caller then calls again at once), the outbox cannot be read, a result
    /// cannot be recorded or `cancel` fires; then waits for the mails in flight. Returns
    /// every attempt (mail id, result, whether the database took it) and whether every
    /// read of the outbox worked.
    ///
    /// Each lane's mail has its result recorded before the lane takes the next, so at most
    /// one mail per connection is sent but unrecorded (what a kill -9 can repeat). The
    /// results of the lanes that finish while a result is being written are written
    /// together next, in one transaction (a group commit: [`OutboxStore::record_all`]).
    /// Once the database refuses results, no further mail is started. Lanes never wait for
    /// each other's sends: when the last mail read is taken, the next ones are read while
    /// the lanes send, passing over the mails in flight and those in `unrecorded`; mail
    /// queued or falling due meanwhile is read too. So a slow or hanging send (each step
    /// bounded by `[smtp] timeout_seconds`) holds up only its own lane.
    async fn send_due(
        &self,
        cancel: &CancellationToken,
        unrecorded: &HashMap<String, SendResult>,
    ) -> (Vec<(String, SendResult, bool)>, bool) {
        // Mails read and not yet taken, each with its share of its read's memory
        // reservation.
        let mut queue: VecDeque<(OutboxItem, Reserved)> = VecDeque::new();
        let mut in_flight = FuturesUnordered::new();
        // Sent, with results not written yet; and the results being written (their lanes
        // are taken until then).
        let mut finished: Vec<(String, SendResult)> = Vec::new();
        let mut recording = None;
        let mut being_recorded = 0;
        // Never read again in this call: in flight, or sent with the result unrecorded.
        let mut held: HashSet<String> = unrecorded.keys().cloned().collect();
        let mut attempted = Vec::new();
        let (mut refused, mut more, mut read_ok) = (false, true, true);
        // The last read found mails but not the memory for them (see below).
        let mut short_of_memory = false;
        let mut reading = None;
        loop {
            let stopping = refused || cancel.is_cancelled();
            if stopping {
                // A read under way writes nothing; dropped, it gives its memory back.
                queue.clear();
                reading = None;
            }
            if recording.is_none() && !finished.is_empty() {
                let results = std::mem::take(&mut finished);
                being_recorded = results.len();
                recording = Some(Box::pin(self.record_all(results)));
            }
            while !stopping
                && in_flight.len() + finished.len() + being_recorded < self.lanes
                && let Some((item, share)) = queue.pop_front()
            {
                held.insert(item.id.clone());
                in_flight.push(self.attempt(item, share));
            }
            if reading.is_none() && more && !stopping && queue.is_empty() {
                // At most 50 mails, and beyond the first about 8 MB of them, so that a
                // few large redirects are read and sent one at a time.
                // With mails in flight, the read does not wait for memory: a request
                // waiting in the budget's queue would hold up the desks behind it for as
                // long as a send hangs. It is made again when a mail in flight is done.
                let (skip, now) = (held.clone(), self.clock.now());
                let (mails, bytes) = (OUTBOX_READ_MAILS, OUTBOX_READ_BYTES);
                let wait = in_flight.is_empty();
                reading = Some(Box::pin(async move {
                    let memory = &self.memory;
                    self.store.due(now, mails, bytes, memory, &skip, wait).await
                }));
            }
            let look_again = !stopping && read_ok && !more && !in_flight.is_empty();
            tokio::select! {
                Some(sent) = in_flight.next(), if !in_flight.is_empty() => {
                    // Its memory is back: a read that found none may fit now.
                    more |= short_of_memory;
                    short_of_memory = false;
                    finished.push(sent);
                }
                (results, ok) = unless_none(&mut recording), if recording.is_some() => {
                    recording = None;
                    being_recorded = 0;
                    for (id, result) in results {
                        if ok {
                            held.remove(&id);
                        } else {
                            refused = true;
                        }
                        attempted.push((id, result, ok));
                    }
                }
                read = unless_none(&mut reading), if reading.is_some() => {
                    reading = None;
                    match read {
                        Ok(None) => (more, short_of_memory) = (false, true),
                        Ok(Some((items, reserved))) => {
                            // Each mail holds its own share, given back once it is sent.
                            // None is in `held`: the read passed over those, and `held`
                            // cannot grow during a read (the queue is empty meanwhile).
                            let sizes: Vec<u64> = items
                                .iter()
                                .map(|i| i.bytes.len() as u64 * crate::budget::SEND_COPIES)
                                .collect();
                            more = !items.is_empty();
                            queue.extend(items.into_iter().zip(reserved.split(&sizes)));
                        }
                        Err(e) => {
                            (read_ok, more) = (false, false);
                            tracing::error!(error = %chain(e), "cannot read the outbox; retrying");
                        }
                    }
                }
                // While mails are in flight and nothing more was due: mail queued since
                // (the pipeline wakes the outbox) or a retry falling due (looked for every
                // second) is read, not left waiting for the mails in flight.
                () = self.wake.notified(), if look_again => more = true,
                () = tokio::time::sleep(Duration::from_secs(1)), if look_again => more = true,
                // Only while something is left to wait for, else `else` ends the loop.
                () = cancel.cancelled(),
                    if !stopping && (!in_flight.is_empty() || reading.is_some()) => {}
                else => break,
            }
        }
        (attempted, read_ok)
    }

    /// Sends `item`: its id and what to record. `_share` (the memory `item` was read
    /// under) is held until the send ends.
    async fn attempt(&self, item: OutboxItem, _share: Reserved) -> (String, SendResult) {
        let item = &item;
        let outcome = self.transport.send(item).await;
        if matches!(outcome, Outcome::Sent | Outcome::SentExcept(_)) {
            crate::crash::point("sent");
        }
        let result = self.judge(item, &outcome, self.clock.now());
        (item.id.clone(), result)
    }

    /// Writes `results` in one transaction ([`OutboxStore::record_all`]): them and whether
    /// the database took them.
    async fn record_all(
        &self,
        results: Vec<(String, SendResult)>,
    ) -> (Vec<(String, SendResult)>, bool) {
        let now = self.clock.now();
        match self.store.record_all(&results, now).await {
            Ok(()) => (results, true),
            Err(e) => {
                let error = chain(e);
                for (id, _) in &results {
                    tracing::error!(outbox_id = %id, error = %error, "cannot record the send result; holding it until the database takes it (the mail is not sent again meanwhile)");
                    self.metrics.errors.fetch_add(1, Relaxed);
                }
                (results, false)
            }
        }
    }

    /// What to record for `outcome` of sending `item` at `now`; logs and counts it.
    fn judge(&self, item: &OutboxItem, outcome: &Outcome, now: i64) -> SendResult {
        let metrics = &self.metrics;
        match outcome {
            Outcome::Sent => {
                tracing::info!(desk = %item.desk, outbox_id = %item.id, recipients = %item.recipients.join(","), "mail sent");
                metrics.sent.fetch_add(1, Relaxed);
                SendResult::Sent { refused: None }
            }
            Outcome::SentExcept(refused) => {
                tracing::warn!(desk = %item.desk, outbox_id = %item.id, recipients = %item.recipients.join(","), refused = %refused, "mail sent, but refused for good for some recipients (not sent to them again)");
                metrics.sent.fetch_add(1, Relaxed);
                SendResult::Sent {
                    refused: Some(refused.clone()),
                }
            }
            Outcome::Permanent(err) => {
                tracing::error!(desk = %item.desk, outbox_id = %item.id, code = err.code, error = %err, "mail refused permanently; kept in the outbox as failed");
                metrics.send_failures.fetch_add(1, Relaxed);
                SendResult::Failed(err.message.clone())
            }
            Outcome::Transient(err) if item.attempts + 1 >= GIVE_UP_AFTER_ATTEMPTS => {
                tracing::error!(desk = %item.desk, outbox_id = %item.id, code = err.code, error = %err, attempts = item.attempts + 1, "giving up after repeated temporary failures");
                metrics.send_failures.fetch_add(1, Relaxed);
                SendResult::Failed(err.message.clone())
            }
            Outcome::Transient(err) => {
                let delay = backoff(item.attempts);
                tracing::warn!(desk = %item.desk, outbox_id = %item.id, code = err.code, error = %err, retry_in_s = delay.as_secs(), "temporary send failure; will retry");
                SendResult::Retry {
                    at: now + i64::try_from(delay.as_secs()).unwrap_or(i64::MAX / 2),
                    error: err.message.clone(),
                }
            }
        }
    }
}

/// The output of the future in `f`; never ready when there is none.
async fn unless_none<F: Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// An error with its causes, `outer: inner: innermost`, for log lines.
fn chain(e: impl std::error::Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::new(e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
