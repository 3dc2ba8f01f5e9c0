//! Store tests of the outbox and the reply ledger: dedupe, reply claims, the lifecycle of
//! an outgoing mail, bodies as bytes (and the base64 bodies of older releases).

use base64::Engine as _;

use super::*;

store_tests!(
    outbox_id_dedupes_across_desks,
    reply_claim_allows_one_reply_per_period,
    reply_claim_race_queues_one,
    outbox_lifecycle,
    several_send_results_are_written_all_or_none,
    outbox_bodies_are_bytes_and_old_rows_stay_readable,
);

/// One result at a time, as the tests write them; the daemon writes a group
/// ([`Store::outbox_results`]).
impl Store {
    /// [`Store::outbox_results`] of one mail sent (to some recipients only, with
    /// `refused`).
    pub(in crate::store::tests) async fn outbox_sent(
        &self,
        id: &str,
        refused: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let sent = SendResult::Sent {
            refused: refused.map(str::to_string),
        };
        self.outbox_results(&[(id.to_string(), sent)], now).await
    }

    /// [`Store::outbox_results`] of one transient failure, to be tried again at
    /// `next_attempt_at`.
    pub(in crate::store::tests) async fn outbox_retry(
        &self,
        id: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let retry = SendResult::Retry {
            at: next_attempt_at,
            error: error.to_string(),
        };
        self.outbox_results(&[(id.to_string(), retry)], next_attempt_at)
            .await
    }

    /// [`Store::outbox_results`] of one permanent failure.
    pub(in crate::store::tests) async fn outbox_failed(
        &self,
        id: &str,
        error: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let failed = SendResult::Failed(error.to_string());
        self.outbox_results(&[(id.to_string(), failed)], now).await
    }
}

async fn outbox_id_dedupes_across_desks(db: Db) {
    let s = &db.store;
    let desks = ["works", "finance", "legal"];
    let mut queued = Vec::new();
    for (i, desk) in desks.iter().enumerate() {
        let mut d = decision(key(desk, 5, 100 + i as u32), "bcast", NOW + i as i64);
        d.broadcast = true;
        d.outbox = vec![outgoing("redirect:bcast", desk)];
        queued.push(record(s, &d).await.queued);
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
    let got = record(s, &a).await;
    assert_eq!(got.queued, vec!["redirect:m1", "reply:m1"]);
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
    let got = record(s, &b).await;
    assert_eq!(got.queued, vec!["redirect:m2"]);
    assert!(s.journal(&b.key).await.unwrap().is_some());

    // Two replies in one decision for the same sender and rule: one.
    let mut c = decision(key("works", 1, 3), "m3", NOW + period);
    c.outbox = vec![
        reply("reply:m3a", "works", "user@example.in", period),
        reply("reply:m3b", "works", "user@example.in", period),
    ];
    let got = record(s, &c).await;
    assert_eq!(got.queued, vec!["reply:m3a"]);
    assert!(
        s.replied_since("user@example.in", "broadcast-advisory", NOW + period - 1)
            .await
            .unwrap()
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
        let (mut a1, mut b1) = ([a.clone()], [b.clone()]);
        let (ra, rb) = tokio::join!(s.record_decisions(&mut a1), s.record_decisions(&mut b1));
        let (ra, rb) = (&ra.unwrap()[0], &rb.unwrap()[0]);
        assert!(ra.first_time && rb.first_time);
        assert_eq!(
            ra.queued.len() + rb.queued.len(),
            1,
            "round {round}: {ra:?} {rb:?}"
        );
    }
    assert_eq!(depth(s).await, 10);
}

async fn outbox_lifecycle(db: Db) {
    let s = &db.store;
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
    record(s, &d).await;
    assert_eq!(depth(s).await, 3);
    assert!(s.outbox_waiting().await.unwrap().1.is_some());
    assert!(
        s.outbox_due_unbudgeted(NOW - 1, 10, u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );

    let due = s.outbox_due_unbudgeted(NOW, 2, u64::MAX).await.unwrap();
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
    // under the limit. Bodies are stored as they are: o1 is 260 bytes, o2 and o3 21 each.
    let ids = |due: Vec<OutboxItem>| due.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.outbox_due_unbudgeted(NOW, 10, 1).await.unwrap()),
        ["o1"]
    );
    assert_eq!(
        ids(s.outbox_due_unbudgeted(NOW, 10, 281).await.unwrap()),
        ["o1", "o2"]
    );
    assert_eq!(
        ids(s.outbox_due_unbudgeted(NOW, 10, 302).await.unwrap()),
        ["o1", "o2", "o3"]
    );

    // Mails being sent are passed over and count against neither limit.
    assert_eq!(
        ids(s
            .outbox_due_skipping(NOW, 1, u64::MAX, &["o1"])
            .await
            .unwrap()),
        ["o2"]
    );
    assert_eq!(
        ids(s.outbox_due_skipping(NOW, 10, 21, &["o1"]).await.unwrap()),
        ["o2"]
    );
    assert_eq!(
        ids(s.outbox_due_skipping(NOW, 10, 42, &["o2"]).await.unwrap()),
        ["o1"]
    );
    assert_eq!(
        ids(s
            .outbox_due_skipping(NOW, 2, u64::MAX, &["o2", "gone"])
            .await
            .unwrap()),
        ["o1", "o3"]
    );
    assert!(
        s.outbox_due_skipping(NOW, 10, u64::MAX, &["o1", "o2", "o3"])
            .await
            .unwrap()
            .is_empty()
    );

    s.outbox_retry("o1", NOW + 60, "451 try later")
        .await
        .unwrap();
    let due: Vec<String> = s
        .outbox_due_unbudgeted(NOW + 1, 10, u64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(due, vec!["o2", "o3"]);

    s.outbox_sent("o2", None, NOW + 2).await.unwrap();
    s.outbox_failed("o3", "550 no such user", NOW + 3)
        .await
        .unwrap();
    assert_eq!(depth(s).await, 1);
    assert!(s.outbox_waiting().await.unwrap().1.is_some());
    let due = s
        .outbox_due_unbudgeted(NOW + 60, 10, u64::MAX)
        .await
        .unwrap();
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

/// The results of several sends in one transaction: with an unknown id among them,
/// none is written; without, each row gets its own result (sent, retried, failed).
async fn several_send_results_are_written_all_or_none(db: Db) {
    let s = &db.store;
    let mut d = decision(key("works", 1, 1), "g", NOW);
    d.outbox = vec![
        outgoing("o1", "works"),
        outgoing("o2", "works"),
        outgoing("o3", "works"),
    ];
    record(s, &d).await;
    let sent = || SendResult::Sent { refused: None };
    let err = s
        .outbox_results(
            &[("o1".to_string(), sent()), ("nope".to_string(), sent())],
            NOW + 1,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unknown { .. }), "{err}");
    assert_eq!(depth(s).await, 3, "o1 is still pending");
    s.outbox_results(
        &[
            ("o1".to_string(), sent()),
            (
                "o2".to_string(),
                SendResult::Retry {
                    at: NOW + 60,
                    error: "451 later".to_string(),
                },
            ),
            (
                "o3".to_string(),
                SendResult::Failed("550 no such user".to_string()),
            ),
        ],
        NOW + 2,
    )
    .await
    .unwrap();
    let rows: Vec<_> = s
        .outbox_all()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.status, r.attempts, r.next_attempt_at, r.finished_at))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("o1".to_string(), OutboxStatus::Sent, 1, NOW, Some(NOW + 2)),
            ("o2".to_string(), OutboxStatus::Pending, 1, NOW + 60, None),
            (
                "o3".to_string(),
                OutboxStatus::Failed,
                1,
                NOW,
                Some(NOW + 2)
            ),
        ]
    );
}

/// A body is stored and read back byte for byte (NUL, CR, high bytes, a few MB); a row
/// queued by a release before 0.3 (base64 text, no bytes) is read and sized as its bytes;
/// a sent mail's body is dropped.
async fn outbox_bodies_are_bytes_and_old_rows_stay_readable(db: Db) {
    let s = &db.store;
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut d = decision(key("works", 1, 1), "g", NOW);
    d.outbox = vec![NewOutgoing {
        bytes: big.clone(),
        ..outgoing("new", "works")
    }];
    record(s, &d).await;
    let old_body = b"Subject: old\r\n\r\n\0\xff body\r\n".to_vec();
    sqlx::query(
        "INSERT INTO outbox (id, desk, envelope_from, recipients, body_base64, status, \
         attempts, next_attempt_at, last_error, created_at, finished_at, \
         mail_desk, mail_uidvalidity, mail_uid) \
         VALUES ('old', 'works', 'works@gem.example', '[\"helpdesk@gem.example\"]', $1, \
         'pending', 0, $2, NULL, $2, NULL, 'works', 1, 2)",
    )
    .bind(base64::engine::general_purpose::STANDARD.encode(&old_body))
    .bind(NOW - 1)
    .execute(&s.pool)
    .await
    .unwrap();

    let due = s.outbox_due_unbudgeted(NOW, 10, u64::MAX).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].id, "old");
    assert_eq!(due[0].bytes, old_body);
    assert_eq!(due[0].recipients, vec!["helpdesk@gem.example"]);
    assert_eq!(due[1].id, "new");
    assert!(due[1].bytes == big, "the big body differs");
    // Sizes count bytes: the old row's decoded size, then the big body beyond the limit.
    let ids: Vec<String> = s
        .outbox_due_unbudgeted(NOW, 10, old_body.len() as u64 + 3)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["old"]);

    s.outbox_sent("old", None, NOW + 1).await.unwrap();
    s.outbox_sent("new", None, NOW + 1).await.unwrap();
    let row =
        sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE body IS NOT NULL OR body_base64 <> ''")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(row.try_get::<i64, _>("n").unwrap(), 0);
    assert_eq!(depth(s).await, 0);
}
