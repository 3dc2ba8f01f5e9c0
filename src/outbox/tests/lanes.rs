//! The outbox's connections (lanes) on a paused tokio clock: several sending at once, each
//! recording its mail before it takes the next, results written together, a refused record,
//! hanging sends, queue order with one connection, and the memory budget. The harness
//! (real store, outbox runner) is `mod.rs`'s.

use super::*;

/// What [`Slow`] and [`Counting`] saw: mails being sent at once (now and at
/// most), mails the server accepted, results recorded, the most accepted-but-unrecorded
/// mails seen when a send started, sends per mail id, the mails whose result the database
/// refused and does not hold yet, and sends started while it held none of those.
#[derive(Default)]
struct Lanes {
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
    accepted: std::sync::atomic::AtomicUsize,
    recorded: std::sync::atomic::AtomicUsize,
    /// Transactions the recorded results were written in.
    transactions: std::sync::atomic::AtomicUsize,
    worst_unrecorded: std::sync::atomic::AtomicUsize,
    sends: Mutex<HashMap<String, usize>>,
    refused: Mutex<std::collections::HashSet<String>>,
    started_while_refused: std::sync::atomic::AtomicUsize,
    /// A mail that takes this long instead (a connection that hangs until its timeout),
    /// and how many results were recorded when it ended.
    hang: Option<(String, Duration)>,
    recorded_when_hang_ended: std::sync::atomic::AtomicUsize,
    /// The budget the outbox reads under, and how much of it was held when the hang ended.
    memory: Option<MailMemory>,
    held_when_hang_ended: std::sync::atomic::AtomicU64,
    /// When each mail's send started (tokio time).
    started: Mutex<HashMap<String, Instant>>,
    /// The least of `memory` held when a send started (`None` before any).
    least_held_in_a_send: Mutex<Option<u64>>,
    /// Reads of the outbox that found mail but not the memory for it.
    short_reads: std::sync::atomic::AtomicUsize,
    /// How long writing results takes (tokio time; none unless set).
    record_takes: Option<Duration>,
}

/// A transport that takes 50 ms (tokio time) per mail and counts in [`Lanes`].
struct Slow(Arc<Lanes>);

impl Transport for Slow {
    async fn send(&self, item: &OutboxItem) -> Outcome {
        let l = &self.0;
        *l.sends.lock().unwrap().entry(item.id.clone()).or_default() += 1;
        l.started
            .lock()
            .unwrap()
            .insert(item.id.clone(), Instant::now());
        if let Some(m) = &l.memory {
            let held = m.total() - m.available();
            let mut least = l.least_held_in_a_send.lock().unwrap();
            *least = Some(least.map_or(held, |l| l.min(held)));
        }
        if !l.refused.lock().unwrap().is_empty() {
            l.started_while_refused.fetch_add(1, Relaxed);
        }
        let now = l.in_flight.fetch_add(1, Relaxed) + 1;
        l.max_in_flight.fetch_max(now, Relaxed);
        let unrecorded = l.accepted.load(Relaxed) - l.recorded.load(Relaxed);
        l.worst_unrecorded.fetch_max(unrecorded, Relaxed);
        match &l.hang {
            Some((id, took)) if *id == item.id => {
                tokio::time::sleep(*took).await;
                l.recorded_when_hang_ended
                    .store(l.recorded.load(Relaxed), Relaxed);
                if let Some(m) = &l.memory {
                    l.held_when_hang_ended
                        .store(m.total() - m.available(), Relaxed);
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        l.accepted.fetch_add(1, Relaxed);
        l.in_flight.fetch_sub(1, Relaxed);
        Outcome::Sent
    }
}

/// The real store, counting in [`Lanes`] the results it took, and refusing the first
/// `refusals` it is given (a full disk; none with 0).
struct Counting {
    store: RealTimeStore,
    lanes: Arc<Lanes>,
    refusals: std::sync::atomic::AtomicUsize,
}

impl Counting {
    fn new(store: &RealTimeStore, lanes: &Arc<Lanes>, refusals: usize) -> Counting {
        Counting {
            store: store.clone(),
            lanes: Arc::clone(lanes),
            refusals: refusals.into(),
        }
    }
}

impl OutboxStore for Counting {
    async fn due(
        &self,
        now: i64,
        limit: u32,
        max_bytes: u64,
        memory: &MailMemory,
        skip: &HashSet<String>,
        wait: bool,
    ) -> Result<Option<(Vec<OutboxItem>, Reserved)>, StoreError> {
        let due = self
            .store
            .due(now, limit, max_bytes, memory, skip, wait)
            .await?;
        if due.is_none() {
            self.lanes.short_reads.fetch_add(1, Relaxed);
        }
        Ok(due)
    }

    async fn record_all(
        &self,
        results: &[(String, SendResult)],
        now: i64,
    ) -> Result<(), StoreError> {
        let ids = results.iter().map(|(id, _)| id.clone());
        if self
            .refusals
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            self.lanes.refused.lock().unwrap().extend(ids);
            return Err(StoreError::Unknown {
                op: "record a send result",
                what: "a full disk".into(),
            });
        }
        if let Some(takes) = self.lanes.record_takes {
            tokio::time::sleep(takes).await;
        }
        self.store.record_all(results, now).await?;
        self.lanes.recorded.fetch_add(results.len(), Relaxed);
        self.lanes.transactions.fetch_add(1, Relaxed);
        let mut refused = self.lanes.refused.lock().unwrap();
        for id in ids {
            refused.remove(&id);
        }
        Ok(())
    }

    async fn waiting(&self) -> Result<(u64, Option<i64>), StoreError> {
        self.store.waiting().await
    }
}

/// Runs an outbox over `store` with [`Slow`] counting in `lanes`, three mails at a time,
/// until it has drained what is due (the desks are done from the start).
async fn drain_on_three_lanes(store: impl OutboxStore, lanes: &Arc<Lanes>) {
    drain_on_three_lanes_within(store, lanes, MailMemory::for_largest_mail(25 << 20)).await;
}

/// [`drain_on_three_lanes`] under the memory budget `memory`.
async fn drain_on_three_lanes_within(
    store: impl OutboxStore,
    lanes: &Arc<Lanes>,
    memory: MailMemory,
) {
    let (outbox, _) = on_three_lanes(store, lanes, memory);
    let desks_done = CancellationToken::new();
    desks_done.cancel();
    outbox
        .run(
            CancellationToken::new(),
            Some(Drain {
                after: desks_done,
                limit: Duration::from_secs(60),
            }),
        )
        .await;
}

/// An outbox over `store` with [`Slow`] counting in `lanes`, three mails at a time, under
/// `memory`, and what wakes it.
fn on_three_lanes<S: OutboxStore>(
    store: S,
    lanes: &Arc<Lanes>,
    memory: MailMemory,
) -> (Outbox<Slow, S>, Arc<Notify>) {
    let wake = Arc::new(Notify::new());
    let outbox = Outbox::new(
        store,
        Slow(Arc::clone(lanes)),
        Arc::clone(&wake),
        Arc::new(Metrics::new(["d"])),
        memory,
    )
    .with_clock(Clock::tokio(NOW))
    .with_lanes(3);
    (outbox, wake)
}

/// Queues `n` mails `{prefix}000`, `{prefix}001`, ... in that order, with `padding` more
/// bytes of body each, the last `n` seconds before `at`: all due at `at`. Their ids.
async fn queue_many(store: &RealTimeStore, prefix: &str, n: usize, padding: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i:03}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let n = i64::try_from(n).unwrap();
    store.queue_sized(&refs, NOW - n - 10, padding).await;
    ids
}

/// Each of `ids` was sent exactly once (and nothing else was), and is recorded as sent.
async fn assert_each_sent_once(store: &RealTimeStore, lanes: &Lanes, ids: &[impl AsRef<str>]) {
    let sends = lanes.sends.lock().unwrap().clone();
    assert_eq!(sends.len(), ids.len(), "{sends:?}");
    assert!(
        ids.iter().all(|id| sends.get(id.as_ref()) == Some(&1)),
        "{sends:?}"
    );
    for id in ids {
        let id = id.as_ref();
        assert_eq!(store.row(id).await.status, OutboxStatus::Sent, "{id}");
    }
}

#[tokio::test(start_paused = true)]
async fn several_lanes_send_at_once_and_each_records_its_mail_before_the_next() {
    let store = RealTimeStore::open().await;
    // All due at once (queued a second apart, the last 10 s ago).
    let ids = queue_many(&store, "m", 10, 0).await;
    let lanes = Arc::new(Lanes::default());
    let started = Instant::now();
    drain_on_three_lanes(Counting::new(&store, &lanes, 0), &lanes).await;
    // Three at a time: 10 mails of 50 ms in 4 rounds, not 10.
    assert_eq!(lanes.max_in_flight.load(Relaxed), 3);
    assert!(
        started.elapsed() < Duration::from_millis(10 * 50),
        "{:?}",
        started.elapsed()
    );
    // What a kill -9 can repeat: when a lane starts a mail, its own last one is recorded;
    // only the other two lanes' may not be yet.
    assert!(lanes.worst_unrecorded.load(Relaxed) <= 2);
    assert_eq!(lanes.recorded.load(Relaxed), 10);
    assert_each_sent_once(&store, &lanes, &ids).await;
}

#[tokio::test(start_paused = true)]
async fn results_of_lanes_that_finish_meanwhile_are_written_together() {
    let store = RealTimeStore::open().await;
    let ids = queue_many(&store, "m", 10, 0).await;
    // Writing results takes 10 ms: the lanes that finish meanwhile wait for the next
    // transaction, and theirs go into it together.
    let lanes = Arc::new(Lanes {
        record_takes: Some(Duration::from_millis(10)),
        ..Lanes::default()
    });
    drain_on_three_lanes(Counting::new(&store, &lanes, 0), &lanes).await;
    assert_eq!(lanes.recorded.load(Relaxed), 10);
    let transactions = lanes.transactions.load(Relaxed);
    assert!(
        (1..10).contains(&transactions),
        "{transactions} transactions"
    );
    // Still at most one unrecorded mail per lane: a lane starts its next mail only once
    // its last one is written.
    assert!(lanes.worst_unrecorded.load(Relaxed) <= 2);
    assert_each_sent_once(&store, &lanes, &ids).await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_result_stops_every_lane_and_no_mail_goes_twice() {
    let store = RealTimeStore::open().await;
    let ids = queue_many(&store, "m", 6, 0).await;
    let lanes = Arc::new(Lanes::default());
    // The results of the first round (written in one or two transactions), then the
    // retries of the next rounds, five writes refused in all.
    drain_on_three_lanes(Counting::new(&store, &lanes, 5), &lanes).await;
    // The three mails in flight when the database refused a result were sent; no other
    // mail was started until it took all three, and none was sent again.
    assert_eq!(lanes.started_while_refused.load(Relaxed), 0);
    assert_eq!(lanes.recorded.load(Relaxed), 6);
    assert_each_sent_once(&store, &lanes, &ids).await;
}

#[tokio::test(start_paused = true)]
async fn a_hanging_send_holds_up_only_its_own_lane() {
    let store = RealTimeStore::open().await;
    // More mails than one read of the outbox takes (50), the first of them hanging for
    // a minute (a connection that answers nothing until its timeout).
    // Mails of ~20 KB: the first read holds ~3 MB of the memory budget.
    let ids = queue_many(&store, "m", 80, 20 << 10).await;
    let memory = MailMemory::for_largest_mail(25 << 20);
    let lanes = Arc::new(Lanes {
        hang: Some(("m000".into(), Duration::from_secs(60))),
        memory: Some(memory.clone()),
        ..Lanes::default()
    });
    let started = Instant::now();
    drain_on_three_lanes_within(Counting::new(&store, &lanes, 0), &lanes, memory).await;
    // The other two lanes sent all 79 others meanwhile, those of the second read too
    // (80 / 2 x 50 ms is 2 s), instead of waiting with the first read's last mail.
    assert_eq!(lanes.recorded_when_hang_ended.load(Relaxed), 79);
    // Meanwhile the hanging mail held only its own share of the memory (3 copies of
    // ~20 KB), not that of the 49 others read with it.
    let held = lanes.held_when_hang_ended.load(Relaxed);
    assert!(held > 0 && held <= 3 * (21 << 10), "{held}");
    assert!(
        started.elapsed() < Duration::from_secs(61),
        "{:?}",
        started.elapsed()
    );
    // Reading the next mails while the lanes sent never took a mail in flight again.
    assert_eq!(lanes.recorded.load(Relaxed), 80);
    assert!(lanes.worst_unrecorded.load(Relaxed) <= 2);
    assert_each_sent_once(&store, &lanes, &ids).await;
}

#[tokio::test(start_paused = true)]
async fn mail_queued_while_a_send_hangs_goes_out_before_it_ends() {
    let store = RealTimeStore::open().await;
    store.queue(&["m00"], NOW - 100).await;
    let lanes = Arc::new(Lanes {
        hang: Some(("m00".into(), Duration::from_secs(60))),
        ..Lanes::default()
    });
    let memory = MailMemory::for_largest_mail(25 << 20);
    let (outbox, wake) = on_three_lanes(Counting::new(&store, &lanes, 0), &lanes, memory);
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let task = tokio::spawn(async move { outbox.run(token, None).await });
    // m00 hangs from the start; 5.5 s later (between two of the outbox's looks, once a
    // second) the pipeline queues m01 and wakes the outbox, and m02 is queued without a
    // wake (as a retry falls due).
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(lanes.sends.lock().unwrap().get("m00"), Some(&1));
    store.queue(&["m01"], NOW - 50).await;
    let woken = Instant::now();
    wake.notify_one();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started = lanes.started.lock().unwrap().get("m01").copied();
    assert!(
        started.is_some_and(|at| at - woken < Duration::from_millis(100)),
        "{:?}",
        started.map(|at| at - woken)
    );
    store.queue(&["m02"], NOW - 40).await;
    tokio::time::sleep(Duration::from_secs(55)).await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(lanes.recorded_when_hang_ended.load(Relaxed), 2);
    assert_each_sent_once(&store, &lanes, &["m00", "m01", "m02"]).await;
}

#[tokio::test(start_paused = true)]
async fn with_one_connection_mail_goes_out_in_queue_order_across_reads() {
    let store = RealTimeStore::open().await;
    // More than one read of the outbox takes (50).
    let ids: Vec<String> = (0..70).map(|i| format!("q{:02}", 69 - i)).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    store.queue(&refs, NOW - 100).await;
    let mut run = Running::start(&store, vec![], None);
    let mut order = Vec::new();
    for _ in 0..70 {
        order.push(run.next().await.0);
    }
    assert_eq!(order, ids);
    assert!(run.attempts.try_recv().is_err());
    run.stop().await;
}

/// On real time: a read waiting for memory runs on a blocking thread (the store's), and a
/// paused clock would not move the lanes' sends on meanwhile.
#[tokio::test]
async fn lanes_under_a_small_memory_budget_wait_for_it_and_never_stall() {
    let store = RealTimeStore::open().await;
    // 90 mails of ~200 KB: each read of the outbox (up to 50 mails, ~8 MB) asks more than
    // the whole budget (1 MiB), so the next read waits until the lanes have sent every
    // mail of the one before (each mail gives its share back once sent).
    let ids = queue_many(&store, "b", 90, 200 << 10).await;
    let memory = MailMemory::new(1 << 20);
    let lanes = Arc::new(Lanes {
        memory: Some(memory.clone()),
        ..Lanes::default()
    });
    let drained = tokio::time::timeout(
        Duration::from_secs(30),
        drain_on_three_lanes_within(Counting::new(&store, &lanes, 0), &lanes, memory.clone()),
    )
    .await;
    assert!(
        drained.is_ok(),
        "stalled: {:?}",
        lanes.sends.lock().unwrap().len()
    );
    assert_eq!(lanes.max_in_flight.load(Relaxed), 3);
    assert_eq!(lanes.recorded.load(Relaxed), 90);
    assert_each_sent_once(&store, &lanes, &ids).await;
    // Each mail held memory while it was sent, and everything was given back.
    assert!(
        lanes
            .least_held_in_a_send
            .lock()
            .unwrap()
            .is_some_and(|l| l > 0)
    );
    assert_eq!(memory.available(), memory.total());
}

/// On real time, as above.
#[tokio::test]
async fn a_read_short_of_memory_while_a_send_hangs_does_not_hold_up_the_desks() {
    let store = RealTimeStore::open().await;
    let memory = MailMemory::new(2 << 20);
    // m00 (300 KB, 900 KB of the 2 MiB budget while sent) hangs for 3 s.
    store.queue_sized(&["m00"], NOW - 100, 300 << 10).await;
    let lanes = Arc::new(Lanes {
        hang: Some(("m00".into(), Duration::from_secs(3))),
        memory: Some(memory.clone()),
        ..Lanes::default()
    });
    let (outbox, wake) = on_three_lanes(Counting::new(&store, &lanes, 0), &lanes, memory.clone());
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let task = tokio::spawn(async move { outbox.run(token, None).await });
    let until = |what: &'static str, done: Box<dyn Fn() -> bool + Send>| async move {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: not within 2 s");
    };
    let l = Arc::clone(&lanes);
    until(
        "m00 sent",
        Box::new(move || l.started.lock().unwrap().contains_key("m00")),
    )
    .await;
    // m01 (500 KB: 1.5 MB) does not fit beside m00 for now: the outbox's read of it comes
    // back without it instead of waiting in the budget's queue.
    store.queue_sized(&["m01"], NOW - 50, 500 << 10).await;
    wake.notify_one();
    let l = Arc::clone(&lanes);
    until(
        "a read short of memory",
        Box::new(move || l.short_reads.load(Relaxed) > 0),
    )
    .await;
    // A desk's batch of 1 MiB fits in what is free, and is not made to wait behind the
    // outbox's read until m00's send ends.
    let desk = tokio::time::timeout(Duration::from_secs(1), memory.reserve(1 << 20)).await;
    assert!(desk.is_ok(), "the desk waited for the hanging send");
    drop(desk);
    // m01 goes out once m00's memory is back.
    for _ in 0..100 {
        if lanes.recorded.load(Relaxed) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(lanes.recorded.load(Relaxed), 2);
    let started = lanes.started.lock().unwrap().clone();
    assert!(
        started["m01"] > started["m00"] + Duration::from_secs(2),
        "{started:?}"
    );
    assert_eq!(memory.available(), memory.total());
}
