//! Store tests: each is one async body taking a [`Db`], run on SQLite in a temp dir and, when
//! `TICKETGATE_TEST_POSTGRES_URL` is set (see scripts/postgres-test.sh), on a fresh PostgreSQL
//! database. Backend-specific checks (pragmas, kill -9) are at the end.

use super::*;

const NOW: i64 = 1_750_000_000; // 2025-06-15T15:06:40Z
const DAY: i64 = 86_400;

/// A freshly migrated store plus what is needed to open it again.
struct Db {
    store: Store,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/state/tg.db", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        Db {
            store,
            url,
            _dir: Some(dir),
        }
    }

    /// A new database on the server named by TICKETGATE_TEST_POSTGRES_URL, or None.
    async fn postgres() -> Option<Db> {
        use sqlx::Connection as _;
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);

        let base = std::env::var("TICKETGATE_TEST_POSTGRES_URL").ok()?;
        sqlx::any::install_default_drivers();
        let name = format!(
            "tg_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        let mut admin = sqlx::AnyConnection::connect(&base).await.unwrap();
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        admin.close().await.unwrap();
        let slash = base.rfind('/').unwrap();
        let url = format!("{}{name}", &base[..=slash]);
        let store = Store::open(&url).await.unwrap();
        Some(Db {
            store,
            url,
            _dir: None,
        })
    }

    async fn reopen(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }
}

/// A PostgreSQL test without a server: fails under CI, says `SKIPPED` otherwise.
fn skip_without_postgres() {
    crate::test_skip::skip(
        "TICKETGATE_TEST_POSTGRES_URL is not set: run under scripts/postgres-test.sh",
    );
}

/// Generates `sqlite::NAME` and `postgres::NAME` tests for each body `NAME(Db)`.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Db::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = super::Db::postgres().await else {
                        super::skip_without_postgres();
                        return;
                    };
                    crate::test_skip::ran_on("postgresql", stringify!($name));
                    super::$name(db).await;
                }
            )*
        }
    };
}

store_tests!(
    migrations_apply_once_and_reopen,
    record_decision_is_idempotent,
    outbox_id_dedupes_across_desks,
    reply_claim_allows_one_reply_per_period,
    reply_claim_race_queues_one,
    sightings_within_and_outside_window,
    progress_is_monotonic,
    uidvalidity_change_resets_progress_and_group_finds_old_entry,
    actions_and_mail_completion,
    failed_mails_are_set_aside,
    outbox_lifecycle,
    report_counts_per_desk_and_day,
    data_survives_reopen,
);

fn key(desk: &str, uidvalidity: u32, uid: u32) -> MailKey {
    MailKey {
        desk: desk.into(),
        uidvalidity,
        uid,
    }
}

fn decision(key: MailKey, group_key: &str, now: i64) -> NewDecision {
    NewDecision {
        key,
        message_id: Some(format!("<{group_key}@example.in>")),
        group_key: group_key.into(),
        sender: Some("user@example.in".into()),
        subject: "Payment pending".into(),
        ticket: None,
        ticket_source: None,
        broadcast: false,
        automatic: false,
        redirected: false,
        rule: Some("no-ticket".into()),
        actions: vec!["tag:$NoTicket".into(), "file:Redirected".into()],
        outbox: vec![],
        now,
    }
}

fn outgoing(id: &str, desk: &str) -> NewOutgoing {
    NewOutgoing {
        id: id.into(),
        desk: desk.into(),
        envelope_from: format!("{desk}@gem.example"),
        recipients: vec!["helpdesk@gem.example".into(), "user@example.in".into()],
        bytes: format!("Subject: {id}\r\n\r\nbody\r\n").into_bytes(),
        reply_claim: None,
    }
}

fn reply(id: &str, desk: &str, sender: &str, period_secs: i64) -> NewOutgoing {
    NewOutgoing {
        reply_claim: Some(ReplyClaim {
            sender: sender.into(),
            rule: "broadcast-advisory".into(),
            period_secs,
        }),
        ..outgoing(id, desk)
    }
}

async fn migrations_apply_once_and_reopen(db: Db) {
    let count = |store: Store| async move {
        sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .try_get::<i64, _>("n")
            .unwrap()
    };
    assert_eq!(count(db.store.clone()).await, MIGRATIONS.len() as i64);
    db.store.set_uidvalidity("works", 9).await.unwrap();
    db.store.close().await;

    let again = db.reopen().await;
    assert_eq!(count(again.clone()).await, MIGRATIONS.len() as i64);
    assert_eq!(again.desk_progress("works").await.unwrap(), Some((9, 0)));
}

async fn record_decision_is_idempotent(db: Db) {
    let s = &db.store;
    let k = key("works", 1, 10);
    let mut d = decision(k.clone(), "g1", NOW);
    d.outbox = vec![outgoing("redirect:g1", "works")];
    let first = s.record_decision(&d).await.unwrap();
    assert_eq!(
        first,
        Recorded {
            first_time: true,
            queued: vec!["redirect:g1".into()]
        }
    );

    // A second call (e.g. after a crash before completion) changes nothing, even with a
    // different decision, and reports what the first queued.
    let mut again = decision(k.clone(), "g1", NOW + 60);
    again.actions = vec!["tag:$Other".into()];
    again.outbox = vec![outgoing("redirect:g1", "works"), outgoing("extra", "works")];
    let second = s.record_decision(&again).await.unwrap();
    assert_eq!(
        second,
        Recorded {
            first_time: false,
            queued: vec!["redirect:g1".into()]
        }
    );

    let entry = s.journal(&k).await.unwrap().unwrap();
    assert_eq!(entry.status, MailStatus::Decided);
    assert_eq!(entry.decided_at, NOW);
    assert_eq!(entry.group_key, "g1");
    assert_eq!(entry.message_id.as_deref(), Some("<g1@example.in>"));
    assert_eq!(entry.rule.as_deref(), Some("no-ticket"));
    assert_eq!(
        entry.actions,
        vec![
            ("tag:$NoTicket".to_string(), false),
            ("file:Redirected".to_string(), false)
        ]
    );
    assert_eq!(entry.queued, vec!["redirect:g1".to_string()]);
    assert_eq!(s.outbox_depth().await.unwrap(), 1);
    assert!(s.journal(&key("works", 1, 11)).await.unwrap().is_none());
}

async fn outbox_id_dedupes_across_desks(db: Db) {
    let s = &db.store;
    let desks = ["works", "finance", "legal"];
    let mut queued = Vec::new();
    for (i, desk) in desks.iter().enumerate() {
        let mut d = decision(key(desk, 5, 100 + i as u32), "bcast", NOW + i as i64);
        d.broadcast = true;
        d.outbox = vec![outgoing("redirect:bcast", desk)];
        queued.push(s.record_decision(&d).await.unwrap().queued);
    }
    assert_eq!(
        queued,
        vec![vec!["redirect:bcast".to_string()], vec![], vec![]]
    );
    let all = s.outbox_all().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].mail, key("works", 5, 100));
    assert_eq!(all[0].desk, "works");
    assert_eq!(all[0].status, OutboxStatus::Pending);
    // The other desks' journals record the decision but no queued mail.
    let legal = s.journal(&key("legal", 5, 102)).await.unwrap().unwrap();
    assert!(legal.broadcast);
    assert!(legal.queued.is_empty());
}

async fn reply_claim_allows_one_reply_per_period(db: Db) {
    let s = &db.store;
    let period = 7 * DAY;
    let mut a = decision(key("works", 1, 1), "m1", NOW);
    a.outbox = vec![
        outgoing("redirect:m1", "works"),
        reply("reply:m1", "works", "User@Example.IN", period),
    ];
    let got = s.record_decision(&a).await.unwrap();
    assert_eq!(got.queued, vec!["redirect:m1", "reply:m1"]);
    assert_eq!(
        s.last_reply("user@example.in", "broadcast-advisory")
            .await
            .unwrap(),
        Some(NOW)
    );
    assert!(
        s.replied_since("USER@example.in", "broadcast-advisory", NOW - period)
            .await
            .unwrap()
    );
    assert!(
        !s.replied_since("user@example.in", "broadcast-advisory", NOW)
            .await
            .unwrap()
    );
    assert!(
        !s.replied_since("user@example.in", "other-rule", 0)
            .await
            .unwrap()
    );

    // One second before the period ends: refused; the rest of the decision is recorded.
    let mut b = decision(key("works", 1, 2), "m2", NOW + period - 1);
    b.outbox = vec![
        reply("reply:m2", "works", "user@example.in", period),
        outgoing("redirect:m2", "works"),
    ];
    let got = s.record_decision(&b).await.unwrap();
    assert_eq!(got.queued, vec!["redirect:m2"]);
    assert!(s.journal(&b.key).await.unwrap().is_some());

    // Two replies in one decision for the same sender and rule: one.
    let mut c = decision(key("works", 1, 3), "m3", NOW + period);
    c.outbox = vec![
        reply("reply:m3a", "works", "user@example.in", period),
        reply("reply:m3b", "works", "user@example.in", period),
    ];
    let got = s.record_decision(&c).await.unwrap();
    assert_eq!(got.queued, vec!["reply:m3a"]);
    assert_eq!(
        s.last_reply("user@example.in", "broadcast-advisory")
            .await
            .unwrap(),
        Some(NOW + period)
    );
    let ids: Vec<String> = s
        .outbox_all()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        ids,
        vec!["redirect:m1", "reply:m1", "redirect:m2", "reply:m3a"]
    );
}

async fn reply_claim_race_queues_one(db: Db) {
    // Copies of one broadcast decided on two desks at the same moment, each wanting to send
    // the advisory to the same sender. On PostgreSQL the two transactions really overlap (the
    // pool has several connections); on SQLite they are serialized by its single connection.
    let s = &db.store;
    for round in 0..10u32 {
        let sender = format!("sender{round}@example.in");
        let mut a = decision(key("works", 1, round), &format!("g{round}"), NOW);
        a.outbox = vec![reply(
            &format!("reply:works:{round}"),
            "works",
            &sender,
            DAY,
        )];
        let mut b = decision(key("finance", 1, round), &format!("g{round}"), NOW);
        b.outbox = vec![reply(
            &format!("reply:finance:{round}"),
            "finance",
            &sender,
            DAY,
        )];
        let (ra, rb) = tokio::join!(s.record_decision(&a), s.record_decision(&b));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra.first_time && rb.first_time);
        assert_eq!(
            ra.queued.len() + rb.queued.len(),
            1,
            "round {round}: {ra:?} {rb:?}"
        );
    }
    assert_eq!(s.outbox_depth().await.unwrap(), 10);
}

async fn sightings_within_and_outside_window(db: Db) {
    let s = &db.store;
    let window = 300;
    assert_eq!(
        s.sight("g", &key("a", 1, 7), 100, window).await.unwrap(),
        vec!["a"]
    );
    assert_eq!(
        s.sight("g", &key("b", 1, 3), 150, window).await.unwrap(),
        vec!["a", "b"]
    );
    // Same desk twice (e.g. the message delivered twice) is still one desk.
    assert_eq!(
        s.sight("g", &key("b", 1, 4), 160, window).await.unwrap(),
        vec!["a", "b"]
    );
    assert_eq!(
        s.sight("g", &key("c", 2, 9), 400, window).await.unwrap(),
        vec!["a", "b", "c"]
    );
    // At 460 the window starts at 160: a (100) and b's first copy (150) are out, b's second
    // copy (160) is in.
    assert_eq!(
        s.sight("g", &key("d", 1, 1), 460, window).await.unwrap(),
        vec!["b", "c", "d"]
    );
    // Seeing the same mail again keeps its first time, yet the desk itself always counts.
    assert_eq!(
        s.sight("g", &key("a", 1, 7), 5000, window).await.unwrap(),
        vec!["a"]
    );
    assert_eq!(
        s.sight("g", &key("e", 1, 1), 5000, window).await.unwrap(),
        vec!["e"]
    );
    // Another message is independent.
    assert_eq!(
        s.sight("h", &key("a", 1, 8), 460, window).await.unwrap(),
        vec!["a"]
    );

    assert_eq!(
        s.sightings("g").await.unwrap(),
        vec![
            key("a", 1, 7),
            key("b", 1, 3),
            key("b", 1, 4),
            key("c", 2, 9),
            key("d", 1, 1),
            key("e", 1, 1)
        ]
    );
    assert!(s.sightings("none").await.unwrap().is_empty());
    assert_eq!(s.prune_sightings(160).await.unwrap(), 2);
    assert_eq!(s.sightings("g").await.unwrap().len(), 4);
}

async fn progress_is_monotonic(db: Db) {
    let s = &db.store;
    assert_eq!(s.desk_progress("works").await.unwrap(), None);
    s.set_uidvalidity("works", 7).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((7, 0)));
    s.advance("works", 7, 5).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((7, 5)));
    s.advance("works", 7, 3).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((7, 5)));
    s.advance("works", 6, 99).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((7, 5)));
    s.advance("works", 7, u32::MAX).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((7, u32::MAX)));
    // Other desks are separate; advancing an unknown desk starts it.
    s.advance("legal", u32::MAX, 2).await.unwrap();
    assert_eq!(s.desk_progress("legal").await.unwrap(), Some((u32::MAX, 2)));
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((7, u32::MAX)));
}

async fn uidvalidity_change_resets_progress_and_group_finds_old_entry(db: Db) {
    let s = &db.store;
    s.set_uidvalidity("works", 1).await.unwrap();
    let old = key("works", 1, 5);
    s.record_decision(&decision(old.clone(), "<m5@x>", NOW))
        .await
        .unwrap();
    s.complete_mail(&old, NOW).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((1, 5)));

    // Re-setting the same UIDVALIDITY (every reconnect) keeps progress.
    s.set_uidvalidity("works", 1).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((1, 5)));

    // The mailbox was renumbered: progress restarts; the message is found by group key.
    s.set_uidvalidity("works", 2).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((2, 0)));
    let found = s
        .journal_by_group("works", "<m5@x>")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.key, old);
    assert_eq!(found.status, MailStatus::Done);
    assert!(
        s.journal_by_group("legal", "<m5@x>")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.journal_by_group("works", "<other@x>")
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.journal_by_group("works", "").await.unwrap().is_none());

    // The newest entry wins when the message was journaled under both numberings.
    let new = key("works", 2, 1);
    s.record_decision(&decision(new.clone(), "<m5@x>", NOW + 10))
        .await
        .unwrap();
    let found = s
        .journal_by_group("works", "<m5@x>")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.key, new);
    // A late completion under the old UIDVALIDITY does not move the new progress.
    s.advance("works", 1, 50).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((2, 0)));
}

async fn actions_and_mail_completion(db: Db) {
    let s = &db.store;
    let k = key("works", 3, 42);
    s.set_uidvalidity("works", 3).await.unwrap();
    s.record_decision(&decision(k.clone(), "g", NOW))
        .await
        .unwrap();
    s.complete_action(&k, 1).await.unwrap();
    let entry = s.journal(&k).await.unwrap().unwrap();
    assert_eq!(
        entry.actions,
        vec![
            ("tag:$NoTicket".to_string(), false),
            ("file:Redirected".to_string(), true)
        ]
    );
    let err = s.complete_action(&k, 2).await.unwrap_err();
    assert!(matches!(err, StoreError::Unknown { .. }), "{err}");
    assert!(err.to_string().contains("works/3/42"), "{err}");
    assert!(!err.is_transient());

    s.complete_action(&k, 0).await.unwrap();
    s.complete_mail(&k, NOW + 5).await.unwrap();
    let entry = s.journal(&k).await.unwrap().unwrap();
    assert_eq!(entry.status, MailStatus::Done);
    assert_eq!(entry.finished_at, Some(NOW + 5));
    assert!(entry.actions.iter().all(|(_, done)| *done));
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((3, 42)));

    // Completing twice is a no-op; completing an unknown mail is an error.
    s.complete_mail(&k, NOW + 9).await.unwrap();
    assert_eq!(
        s.journal(&k).await.unwrap().unwrap().finished_at,
        Some(NOW + 5)
    );
    let err = s
        .complete_mail(&key("works", 3, 43), NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unknown { .. }), "{err}");
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((3, 42)));
}

async fn failed_mails_are_set_aside(db: Db) {
    let s = &db.store;
    s.set_uidvalidity("works", 3).await.unwrap();
    // Failed before any decision (e.g. unparsable): journaled; progress moves on only when
    // the mail's group is filed, not here.
    let broken = key("works", 3, 7);
    s.fail_mail(&broken, "cannot parse MIME", NOW)
        .await
        .unwrap();
    let entry = s.journal(&broken).await.unwrap().unwrap();
    assert_eq!(entry.status, MailStatus::Failed);
    assert_eq!(entry.error.as_deref(), Some("cannot parse MIME"));
    assert_eq!(entry.group_key, "");
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((3, 0)));

    // Failed after a decision: the decision is kept, status becomes failed.
    let decided = key("works", 3, 8);
    s.record_decision(&decision(decided.clone(), "g8", NOW))
        .await
        .unwrap();
    let long = "x".repeat(10_000) + "é";
    s.fail_mail(&decided, &long, NOW + 1).await.unwrap();
    let entry = s.journal(&decided).await.unwrap().unwrap();
    assert_eq!(entry.status, MailStatus::Failed);
    assert_eq!(entry.group_key, "g8");
    assert_eq!(entry.error.unwrap().len(), MAX_ERROR_LEN);
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((3, 0)));

    // A mail already done stays done.
    let done = key("works", 3, 9);
    s.record_decision(&decision(done.clone(), "g9", NOW))
        .await
        .unwrap();
    s.complete_mail(&done, NOW).await.unwrap();
    s.fail_mail(&done, "late error", NOW + 2).await.unwrap();
    let entry = s.journal(&done).await.unwrap().unwrap();
    assert_eq!(entry.status, MailStatus::Done);
    assert_eq!(entry.error, None);
}

async fn outbox_lifecycle(db: Db) {
    let s = &db.store;
    assert_eq!(s.outbox_next_attempt().await.unwrap(), None);
    assert_eq!(s.outbox_waiting().await.unwrap().1, None);
    let binary: Vec<u8> = (0..=255u8).chain([0, 13, 10, 0xff]).collect();
    let mut d = decision(key("works", 1, 1), "g", NOW);
    d.outbox = vec![
        NewOutgoing {
            bytes: binary.clone(),
            ..outgoing("o1", "works")
        },
        outgoing("o2", "works"),
        outgoing("o3", "works"),
    ];
    s.record_decision(&d).await.unwrap();
    assert_eq!(s.outbox_depth().await.unwrap(), 3);
    assert!(s.outbox_waiting().await.unwrap().1.is_some());
    assert_eq!(s.outbox_next_attempt().await.unwrap(), Some(NOW));
    assert!(
        s.outbox_due(NOW - 1, 10, u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );

    let due = s.outbox_due(NOW, 2, u64::MAX).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].id, "o1");
    assert_eq!(due[0].bytes, binary);
    assert_eq!(due[0].attempts, 0);
    assert_eq!(due[0].envelope_from, "works@gem.example");
    assert_eq!(
        due[0].recipients,
        vec!["helpdesk@gem.example", "user@example.in"]
    );
    assert_eq!(due[1].id, "o2");
    // By bytes: the first mail always, further ones while the bodies before them stay
    // under the limit.
    let ids = |due: Vec<OutboxItem>| due.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(ids(s.outbox_due(NOW, 10, 1).await.unwrap()), ["o1"]);
    assert_eq!(ids(s.outbox_due(NOW, 10, 380).await.unwrap()), ["o1", "o2"]);

    s.outbox_retry("o1", NOW + 60, "451 try later")
        .await
        .unwrap();
    let due: Vec<String> = s
        .outbox_due(NOW + 1, 10, u64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(due, vec!["o2", "o3"]);
    assert_eq!(s.outbox_next_attempt().await.unwrap(), Some(NOW));

    s.outbox_sent("o2", None, NOW + 2).await.unwrap();
    s.outbox_failed("o3", "550 no such user", NOW + 3)
        .await
        .unwrap();
    assert_eq!(s.outbox_depth().await.unwrap(), 1);
    assert_eq!(s.outbox_next_attempt().await.unwrap(), Some(NOW + 60));
    assert!(s.outbox_waiting().await.unwrap().1.is_some());
    let due = s.outbox_due(NOW + 60, 10, u64::MAX).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, "o1");
    assert_eq!(due[0].attempts, 1);

    // Repeating a transition after the row left `pending` changes nothing.
    s.outbox_sent("o2", None, NOW + 99).await.unwrap();
    s.outbox_retry("o3", NOW + 99, "again").await.unwrap();
    let all = s.outbox_all().await.unwrap();
    type Summary<'a> = (&'a str, OutboxStatus, u32, Option<&'a str>, Option<i64>);
    let summary: Vec<Summary> = all
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.status,
                r.attempts,
                r.last_error.as_deref(),
                r.finished_at,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("o1", OutboxStatus::Pending, 1, Some("451 try later"), None),
            ("o2", OutboxStatus::Sent, 1, None, Some(NOW + 2)),
            (
                "o3",
                OutboxStatus::Failed,
                1,
                Some("550 no such user"),
                Some(NOW + 3)
            ),
        ]
    );

    let err = s.outbox_sent("nope", None, NOW).await.unwrap_err();
    assert!(matches!(err, StoreError::Unknown { .. }), "{err}");
    assert!(err.to_string().contains("\"nope\""), "{err}");
}

async fn report_counts_per_desk_and_day(db: Db) {
    let s = &db.store;
    let day0 = NOW - NOW % DAY; // 2025-06-15T00:00:00Z
    let mut uid = 0;
    let mut add = |desk: &str, at: i64, f: &dyn Fn(&mut NewDecision)| {
        uid += 1;
        let mut d = decision(key(desk, 1, uid), &format!("g{uid}"), at);
        f(&mut d);
        d
    };
    let decisions = vec![
        add("works", day0 - 1, &|_| {}), // previous day, before `since`
        add("works", day0, &|d| d.ticket = Some("2025-1234567".into())),
        add("works", day0 + 10, &|d| d.redirected = true),
        add("works", day0 + DAY - 1, &|d| {
            d.broadcast = true;
            d.ticket = Some("2025-7654321".into());
        }),
        add("finance", day0 + 5, &|d| d.automatic = true),
        add("works", day0 + DAY, &|d| d.redirected = true),
    ];
    for d in &decisions {
        s.record_decision(d).await.unwrap();
    }
    s.fail_mail(&key("finance", 1, 99), "cannot fetch", day0 + 7)
        .await
        .unwrap();
    s.fail_mail(&decisions[2].key, "cannot send", day0 + 11)
        .await
        .unwrap();

    let utc = jiff::tz::TimeZone::UTC;
    let rows = s.report(day0, &utc).await.unwrap();
    let row = |desk: &str, day: &str, counts: [u64; 6]| ReportRow {
        desk: desk.into(),
        day: day.into(),
        mails: counts[0],
        tickets: counts[1],
        redirected: counts[2],
        broadcast: counts[3],
        automatic: counts[4],
        errors: counts[5],
    };
    assert_eq!(
        rows,
        vec![
            row("finance", "2025-06-15", [2, 0, 0, 0, 1, 1]),
            row("works", "2025-06-15", [3, 2, 1, 1, 0, 1]),
            row("works", "2025-06-16", [1, 0, 1, 0, 0, 0]),
        ]
    );
    let all = s.report(0, &utc).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].day, "2025-06-14");
    // In India (UTC+05:30) the last second of the 14th (UTC) is the 15th, and the last
    // second of the 15th is the 16th.
    let ist = crate::clock::time_zone("Asia/Kolkata").unwrap();
    assert_eq!(
        s.report(0, &ist).await.unwrap(),
        vec![
            row("finance", "2025-06-15", [2, 0, 0, 0, 1, 1]),
            row("works", "2025-06-15", [3, 1, 1, 0, 0, 1]),
            row("works", "2025-06-16", [2, 1, 1, 1, 0, 0]),
        ]
    );
    let text = format_report(&rows);
    assert!(
        text.lines()
            .last()
            .unwrap()
            .split_whitespace()
            .eq(["total", "6", "2", "2", "1", "1", "2"]),
        "{text}"
    );
}

async fn data_survives_reopen(db: Db) {
    let k = key("works", 4, 4);
    let mut d = decision(k.clone(), "g", NOW);
    d.outbox = vec![outgoing("o", "works")];
    db.store.record_decision(&d).await.unwrap();
    db.store.complete_action(&k, 0).await.unwrap();
    db.store.sight("g", &k, NOW, 60).await.unwrap();
    db.store.close().await;

    let s = db.reopen().await;
    let entry = s.journal(&k).await.unwrap().unwrap();
    assert_eq!(entry.actions[0], ("tag:$NoTicket".to_string(), true));
    assert_eq!(entry.queued, vec!["o"]);
    assert_eq!(s.outbox_due(NOW, 10, u64::MAX).await.unwrap()[0].id, "o");
    assert_eq!(s.sightings("g").await.unwrap(), vec![k]);
}

#[test]
fn embedded_migrations_match_directory() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
            let (version, description) = stem.split_once('_').unwrap();
            (
                version.parse().unwrap(),
                description.replace('_', " "),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    let embedded: Vec<(i64, String, String)> = MIGRATIONS
        .iter()
        .map(|&(v, d, sql)| (v, d.to_owned(), sql.to_owned()))
        .collect();
    assert_eq!(embedded, files, "update MIGRATIONS in src/store/mod.rs");
}

#[tokio::test]
async fn sqlite_is_wal_with_full_sync() {
    let db = Db::sqlite().await;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&db.store.pool)
        .await
        .unwrap()
        .get(0);
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&db.store.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "FULL");
}

#[tokio::test]
async fn sqlite_memory_works() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    s.set_uidvalidity("works", 3).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((3, 0)));
    assert_eq!(s.target(), "sqlite::memory:");
}

#[tokio::test]
async fn sqlite_open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let url = format!("sqlite://{}/sub/tg.db", blocker.display());
    let err = Store::open(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Path { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&blocker.join("sub").display().to_string()),
        "{err}"
    );

    // A file that is not a database.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'j'; 4096]).unwrap();
    let err = Store::open(&format!("sqlite://{}", junk.display()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&junk.display().to_string()),
        "{err}"
    );
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("not a database"), "{cause}");
}

#[tokio::test]
async fn postgres_errors_hide_the_password() {
    // Nothing listens on port 1: the connection is refused at once.
    let err = Store::open("postgres://tg:s3cret@127.0.0.1:1/tg")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("postgres://tg:***@127.0.0.1:1/tg"), "{text}");
    assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
    assert!(err.is_transient(), "{err:?}");
}

/// PostgreSQL over TLS: scripts/postgres-test.sh serves a certificate for IP 127.0.0.1 signed
/// by its own CA (TICKETGATE_TEST_POSTGRES_CA). With `sslmode=verify-full` and that CA the
/// store opens and the session is encrypted; with another CA, or by a name the certificate
/// does not hold (localhost), it is refused. (Observed: sqlx's rustls `verify-ca` checks the
/// name too, so only `verify-full` is documented.)
#[tokio::test]
async fn postgres_over_tls_verify_full() {
    use sqlx::Connection as _;
    let Ok(base) = std::env::var("TICKETGATE_TEST_POSTGRES_URL") else {
        skip_without_postgres();
        return;
    };
    crate::test_skip::ran_on("postgresql", "postgres_over_tls_verify_full");
    let ca = std::env::var("TICKETGATE_TEST_POSTGRES_CA")
        .expect("scripts/postgres-test.sh exports TICKETGATE_TEST_POSTGRES_CA with the URL");
    let other_ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");
    let with = |url: &str, mode: &str, ca: &str| format!("{url}?sslmode={mode}&sslrootcert={ca}");

    let good = with(&base, "verify-full", &ca);
    let store = Store::open(&good).await;
    assert!(store.is_ok(), "{:?}", store.err());
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&good).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(encrypted, "the session must be TLS");
    conn.close().await.unwrap();

    let err = Store::open(&with(&base, "verify-full", other_ca))
        .await
        .err()
        .map(|e| format!("{e:#}"));
    assert!(
        err.is_some(),
        "a server certificate from another CA was accepted"
    );
    let by_name = base.replace("127.0.0.1", "localhost");
    let err = Store::open(&with(&by_name, "verify-full", &ca))
        .await
        .err()
        .map(|e| format!("{e:#}"));
    assert!(
        err.is_some(),
        "verify-full accepted a name the certificate does not hold"
    );
}

/// Committed data survives the process dying without any shutdown: a child process (this test
/// binary, running `abort_child`) records a decision and aborts; the parent then reads it.
#[tokio::test]
async fn sqlite_commit_survives_abort() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/tg.db", dir.path().display());
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store::tests::abort_child"])
        .args(["--nocapture", "--test-threads=1"])
        .env("TICKETGATE_ABORT_CHILD_DB", &url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die by abort: {status:?}");
    let s = Store::open(&url).await.unwrap();
    let entry = s.journal(&key("works", 1, 1)).await.unwrap().unwrap();
    assert_eq!(entry.queued, vec!["redirect"]);
    assert_eq!(s.outbox_depth().await.unwrap(), 1);
}

/// The child half of `sqlite_commit_survives_abort`; does nothing unless that test runs it.
#[tokio::test]
async fn abort_child() {
    let Ok(url) = std::env::var("TICKETGATE_ABORT_CHILD_DB") else {
        return;
    };
    let s = Store::open(&url).await.unwrap();
    let mut d = decision(key("works", 1, 1), "g", NOW);
    d.outbox = vec![outgoing("redirect", "works")];
    s.record_decision(&d).await.unwrap();
    std::process::abort();
}
