//! The outbox's retry and drain policy on a paused tokio clock, with a scripted transport
//! and the real store (SQLite in a temp dir). Here: the harness, retries, draining and
//! cancelling; its connections (lanes) sending at once, recording and memory: `lanes.rs`.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;
use crate::budget::{MailMemory, Reserved};
use crate::store::{MailKey, NewDecision, NewOutgoing, OutboxRecord, OutboxStatus};

mod lanes;

const NOW: i64 = 1_750_000_000;

/// A runtime on real time for the store: sqlx guards each pool acquire with a timeout,
/// which a paused clock would fire at once while SQLite works on its own thread.
fn db_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The real store; each call runs on [`db_runtime`] from a blocking thread, and tokio does
/// not advance a paused clock while a blocking task runs: no timer fires during a query.
#[derive(Clone)]
struct RealTimeStore {
    store: Store,
    _dir: Arc<tempfile::TempDir>,
}

impl RealTimeStore {
    async fn open() -> RealTimeStore {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/tg.db", dir.path().display());
        let store = tokio::task::spawn_blocking(move || db_runtime().block_on(Store::open(&url)))
            .await
            .unwrap()
            .unwrap();
        RealTimeStore {
            store,
            _dir: Arc::new(dir),
        }
    }

    async fn call<F, R>(&self, f: impl FnOnce(Store) -> F + Send + 'static) -> R
    where
        F: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || db_runtime().block_on(f(store)))
            .await
            .unwrap()
    }

    /// Queues one mail per id, in this order, at Unix time `at`, `at + 1`, ...
    async fn queue(&self, ids: &[&str], at: i64) {
        self.queue_sized(ids, at, 0).await;
    }

    /// [`Self::queue`] with `padding` more bytes of body in each mail.
    async fn queue_sized(&self, ids: &[&str], at: i64, padding: usize) {
        let decisions: Vec<NewDecision> = ids
            .iter()
            .zip(0..)
            .map(|(id, i)| NewDecision {
                key: MailKey {
                    desk: "d".into(),
                    uidvalidity: 1,
                    uid: 1 + u32::try_from(at - NOW + 1000).unwrap() * 100 + i,
                },
                message_id: Some(format!("<{id}@example.in>")),
                group_key: (*id).into(),
                sender: Some("user@example.in".into()),
                subject: "Payment pending".into(),
                ticket: None,
                ticket_source: None,
                broadcast: false,
                automatic: false,
                redirected: true,
                rule: Some("no-ticket".into()),
                actions: vec![crate::action::Action::Redirect(
                    crate::action::Target::Helpdesk,
                )],
                outbox: vec![NewOutgoing {
                    id: (*id).into(),
                    desk: "d".into(),
                    envelope_from: "d@gem.example".into(),
                    recipients: vec!["helpdesk@gem.example".into()],
                    bytes: format!("Subject: {id}\r\n\r\nbody\r\n{}", "x".repeat(padding))
                        .into_bytes(),
                    reply_claim: None,
                }],
                clock: None,
                now: at + i64::from(i),
            })
            .collect();
        self.call(move |s| async move { s.record_decisions(&mut decisions.clone()).await })
            .await
            .unwrap();
    }

    async fn row(&self, id: &str) -> OutboxRecord {
        let id = id.to_string();
        self.call(move |s| async move { s.outbox_all().await })
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.id == id)
            .unwrap()
    }
}

impl OutboxStore for RealTimeStore {
    async fn due(
        &self,
        now: i64,
        limit: u32,
        max_bytes: u64,
        memory: &MailMemory,
        skip: &HashSet<String>,
        wait: bool,
    ) -> Result<Option<(Vec<OutboxItem>, Reserved)>, StoreError> {
        let (memory, skip) = (memory.clone(), skip.clone());
        self.call(move |s| async move {
            s.outbox_due(now, limit, max_bytes, &memory, &skip, wait)
                .await
        })
        .await
    }

    async fn record_all(
        &self,
        results: &[(String, SendResult)],
        now: i64,
    ) -> Result<(), StoreError> {
        let results = results.to_vec();
        self.call(move |s| async move { OutboxStore::record_all(&s, &results, now).await })
            .await
    }

    async fn waiting(&self) -> Result<(u64, Option<i64>), StoreError> {
        self.call(|s| async move { s.outbox_waiting().await }).await
    }
}

/// Answers each mail with its scripted outcomes in turn (then `Sent`), and reports every
/// attempt with tokio's time.
struct Scripted {
    script: Mutex<HashMap<String, VecDeque<Outcome>>>,
    attempts: mpsc::UnboundedSender<(String, Instant)>,
}

impl Transport for Scripted {
    async fn send(&self, item: &OutboxItem) -> Outcome {
        let outcome = self
            .script
            .lock()
            .unwrap()
            .get_mut(&item.id)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Outcome::Sent);
        self.attempts
            .send((item.id.clone(), Instant::now()))
            .unwrap();
        outcome
    }
}

fn transient() -> Outcome {
    Outcome::Transient(SendError {
        code: Some(451),
        message: "transient error (451): 4.3.0 try again later".into(),
    })
}

fn permanent() -> Outcome {
    Outcome::Permanent(SendError {
        code: Some(550),
        message: "permanent error (550): 5.1.1 no such user".into(),
    })
}

/// A running outbox task and what it did.
struct Running {
    store: RealTimeStore,
    wake: Arc<Notify>,
    attempts: mpsc::UnboundedReceiver<(String, Instant)>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Running {
    fn start(
        store: &RealTimeStore,
        script: Vec<(&str, Vec<Outcome>)>,
        drain: Option<Drain>,
    ) -> Running {
        let (tx, attempts) = mpsc::unbounded_channel();
        let transport = Scripted {
            script: Mutex::new(
                script
                    .into_iter()
                    .map(|(id, o)| (id.to_string(), o.into()))
                    .collect(),
            ),
            attempts: tx,
        };
        let wake = Arc::new(Notify::new());
        let metrics = Arc::new(Metrics::new(["d"]));
        let outbox = Outbox::new(
            store.clone(),
            transport,
            Arc::clone(&wake),
            Arc::clone(&metrics),
            MailMemory::for_largest_mail(25 << 20),
        )
        .with_clock(Clock::tokio(NOW));
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let task = tokio::spawn(async move { outbox.run(token, drain).await });
        Running {
            store: store.clone(),
            wake,
            attempts,
            cancel,
            task,
            metrics,
        }
    }

    async fn next(&mut self) -> (String, Instant) {
        self.attempts.recv().await.unwrap()
    }

    /// Stops the task and waits for it: every result it got is recorded by then.
    async fn stop(self) -> RealTimeStore {
        self.cancel.cancel();
        self.task.await.unwrap();
        self.store
    }
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_backoff_then_sent() {
    let store = RealTimeStore::open().await;
    store.queue(&["m1"], NOW).await;
    let mut run = Running::start(&store, vec![("m1", vec![transient(), transient()])], None);
    let (id, first) = run.next().await;
    assert_eq!(id, "m1");
    let (id, second) = run.next().await;
    assert_eq!(id, "m1");
    let (id, third) = run.next().await;
    assert_eq!(id, "m1");
    // 5 s ±20 %, then 10 s ±20 %, each seen within the 1 s nap while mail waits.
    let gap = second - first;
    assert!(
        gap >= Duration::from_secs(4) && gap < Duration::from_secs(7),
        "{gap:?}"
    );
    let gap = third - second;
    assert!(
        gap >= Duration::from_secs(8) && gap < Duration::from_secs(13),
        "{gap:?}"
    );
    assert_eq!(run.metrics.sent.load(Relaxed), 1);
    let store = run.stop().await;
    let row = store.row("m1").await;
    assert_eq!(row.status, OutboxStatus::Sent);
    assert_eq!(row.attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_are_recorded_and_never_retried() {
    let store = RealTimeStore::open().await;
    store.queue(&["m1"], NOW).await;
    let mut run = Running::start(&store, vec![("m1", vec![permanent()])], None);
    assert_eq!(run.next().await.0, "m1");
    // An hour of rounds later, another mail goes out, and m1 was not tried again.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    store.queue(&["m2"], NOW + 3600).await;
    run.wake.notify_one();
    assert_eq!(run.next().await.0, "m2");
    assert!(run.attempts.try_recv().is_err());
    assert_eq!(run.metrics.send_failures.load(Relaxed), 1);
    let store = run.stop().await;
    let row = store.row("m1").await;
    assert_eq!(row.status, OutboxStatus::Failed);
    assert_eq!(row.attempts, 1);
    assert!(row.last_error.unwrap_or_default().contains("550"));
    assert_eq!(store.row("m2").await.status, OutboxStatus::Sent);
}

#[tokio::test(start_paused = true)]
async fn a_wake_sends_queued_mail_at_once() {
    let store = RealTimeStore::open().await;
    let mut run = Running::start(&store, vec![], None);
    // The task found nothing and sleeps (30 s when the outbox is empty).
    tokio::time::sleep(Duration::from_secs(5)).await;
    store.queue(&["m1"], NOW + 5).await;
    let queued = Instant::now();
    run.wake.notify_one();
    let (id, at) = run.next().await;
    assert_eq!(id, "m1");
    assert!(at - queued < Duration::from_secs(1), "{:?}", at - queued);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn mail_goes_out_in_queue_order_and_a_retry_waits_its_turn() {
    let store = RealTimeStore::open().await;
    // Queued c, a, b (ids in another order than the queue's).
    store.queue(&["c", "a", "b"], NOW - 10).await;
    let mut run = Running::start(&store, vec![("c", vec![transient()])], None);
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(run.next().await.0);
    }
    assert_eq!(order, ["c", "a", "b", "c"]);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn draining_ends_once_the_outbox_is_empty() {
    let store = RealTimeStore::open().await;
    store.queue(&["m1", "m2"], NOW).await;
    let done = CancellationToken::new();
    let mut run = Running::start(
        &store,
        vec![("m2", vec![transient()])],
        Some(Drain {
            after: done.clone(),
            limit: Duration::from_secs(60),
        }),
    );
    let started = Instant::now();
    done.cancel();
    // Ends by itself once m2's retry went out (about 5 s), well before the limit.
    (&mut run.task).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let sent: Vec<String> =
        std::iter::from_fn(|| run.attempts.try_recv().ok().map(|a| a.0)).collect();
    assert_eq!(sent, ["m1", "m2", "m2"]);
    assert_eq!(store.row("m1").await.status, OutboxStatus::Sent);
    assert_eq!(store.row("m2").await.status, OutboxStatus::Sent);
}

#[tokio::test(start_paused = true)]
async fn draining_gives_up_after_its_limit_and_leaves_the_mail_queued() {
    let store = RealTimeStore::open().await;
    store.queue(&["m1"], NOW).await;
    let done = CancellationToken::new();
    let run = Running::start(
        &store,
        vec![("m1", (0..30).map(|_| transient()).collect())],
        Some(Drain {
            after: done.clone(),
            limit: Duration::from_secs(60),
        }),
    );
    let started = Instant::now();
    // Not before the desks are done: an hour passes, the task runs on.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!run.task.is_finished());
    done.cancel();
    let draining = Instant::now();
    let Running { task, .. } = run;
    task.await.unwrap();
    let waited = draining.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(70),
        "{waited:?} after {:?}",
        draining - started
    );
    let row = store.row("m1").await;
    assert_eq!(row.status, OutboxStatus::Pending);
    assert!(row.attempts >= 2);
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_a_sleeping_outbox_at_once() {
    let store = RealTimeStore::open().await;
    let run = Running::start(&store, vec![], None);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cancelled = Instant::now();
    run.stop().await;
    assert!(cancelled.elapsed() < Duration::from_secs(1));
}
