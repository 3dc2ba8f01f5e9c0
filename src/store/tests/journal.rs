//! Store tests of the mail journal: recording decisions (with their action records),
//! completion, setting aside, desk progress, sightings, the report.

use std::collections::HashMap;

use super::*;

store_tests!(
    record_decisions_is_idempotent,
    action_records_round_trip,
    sightings_within_and_outside_window,
    progress_is_monotonic,
    uidvalidity_change_resets_progress,
    mails_completed_in_batches,
    failed_mails_are_set_aside,
    report_counts_per_desk_and_day,
);

async fn record_decisions_is_idempotent(db: Db) {
    let s = &db.store;
    let k = key("works", 1, 10);
    let mut d = decision(k.clone(), "g1", NOW);
    d.outbox = vec![outgoing("redirect:g1", "works")];
    let first = record(s, &d).await;
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
    again.actions = vec![Action::Tag("$Other".into())];
    again.outbox = vec![outgoing("redirect:g1", "works"), outgoing("extra", "works")];
    let second = record(s, &again).await;
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
    assert_eq!(entry.actions, Ok(d.actions.clone()));
    assert_eq!(entry.queued, vec!["redirect:g1".to_string()]);
    assert_eq!(depth(s).await, 1);
    assert!(s.journal(&key("works", 1, 11)).await.unwrap().is_none());

    // A batch: results in order; a mail already journaled and the same mail twice in one
    // call are recorded once; more mails than one statement takes (ROWS_PER_INSERT).
    let mut batch = vec![again.clone()];
    for uid in 100..100 + ROWS_PER_INSERT as u32 + 3 {
        let mut d = decision(key("works", 1, uid), &format!("b{uid}"), NOW);
        d.outbox = vec![outgoing(&format!("redirect:b{uid}"), "works")];
        batch.push(d);
    }
    batch.push(batch[1].clone());
    let results = s.record_decisions(&mut batch.clone()).await.unwrap();
    assert_eq!(results.len(), batch.len());
    assert!(!results[0].first_time);
    assert_eq!(results[0].queued, vec!["redirect:g1".to_string()]);
    for (d, r) in batch[1..batch.len() - 1].iter().zip(&results[1..]) {
        assert!(r.first_time, "{}", d.key);
        assert_eq!(r.queued, vec![d.outbox[0].id.clone()]);
        let entry = s.journal(&d.key).await.unwrap().unwrap();
        assert_eq!(entry.actions, Ok(d.actions.clone()));
    }
    assert_eq!(
        results.last().unwrap(),
        &Recorded {
            first_time: false,
            queued: vec!["redirect:b100".into()]
        }
    );
    assert_eq!(depth(s).await, 1 + ROWS_PER_INSERT as u64 + 3);
    assert!(s.record_decisions(&mut []).await.unwrap().is_empty());

    // The same mail twice in one statement with different decisions: the first is journaled,
    // with its actions.
    let twice = key("works", 1, 500);
    let first = decision(twice.clone(), "t1", NOW);
    let mut second = decision(twice.clone(), "t2", NOW + 1);
    second.actions = vec![Action::Tag("$Second".into())];
    let results = s
        .record_decisions(&mut [first.clone(), second])
        .await
        .unwrap();
    assert!(results[0].first_time && !results[1].first_time);
    let entry = s.journal(&twice).await.unwrap().unwrap();
    assert_eq!(
        (entry.group_key.as_str(), entry.actions),
        ("t1", Ok(first.actions))
    );
    let recovered = s.journaled_actions("works", 1, &[500]).await.unwrap();
    assert_eq!(recovered[&500], Ok(decision(twice, "t1", NOW).actions));
}

/// Every kind of action and of target is stored as a record and read back equal; records
/// of older releases (journal_action rows, JSON or text) are read with their targets; a
/// record that cannot be read makes the entry's actions an error naming it, not a shorter
/// list.
async fn action_records_round_trip(db: Db) {
    let s = &db.store;
    let k = key("works", 1, 1);
    let mut d = decision(k.clone(), "g", NOW);
    d.actions = crate::store::actions::tests::every_action();
    record(s, &d).await;
    assert_eq!(s.journal(&k).await.unwrap().unwrap().actions, Ok(d.actions));

    // A damaged record: the entry's actions are the error, naming the element.
    sqlx::query("UPDATE journal SET actions = $1 WHERE uid = 1")
        .bind(r#"[{"kind":"seen"},{"kind":"explode"}]"#)
        .execute(&s.pool)
        .await
        .unwrap();
    let err = s.journal(&k).await.unwrap().unwrap().actions.unwrap_err();
    assert_eq!((err.key, err.position), (k, 1));
    assert_eq!(err.record, r#"{"kind":"explode"}"#);

    // Rows as releases before 0.7 wrote them: JSON since 0.3, text before.
    let legacy = key("works", 1, 2);
    record(s, &decision(legacy.clone(), "g2", NOW)).await;
    as_before_0_7(
        s,
        &legacy,
        &[
            "forward:desk:bid-ra",
            "redirect:x@y.in",
            r#"{"kind":"seen"}"#,
        ],
    )
    .await;
    assert_eq!(
        s.journal(&legacy).await.unwrap().unwrap().actions,
        Ok(vec![
            Action::Forward(crate::action::Target::Desk("bid-ra".into())),
            Action::Redirect(crate::action::Target::Address("x@y.in".into())),
            Action::MarkSeen,
        ])
    );

    as_before_0_7(s, &legacy, &["forward:desk:bid-ra", "explode:now"]).await;
    let err = s
        .journal(&legacy)
        .await
        .unwrap()
        .unwrap()
        .actions
        .unwrap_err();
    assert_eq!(err.key, legacy);
    assert_eq!(err.position, 1);
    assert_eq!(err.record, "explode:now");
    assert!(err.to_string().contains("explode:now"), "{err}");
    assert!(err.to_string().contains("works/1/2"), "{err}");
}

async fn sightings_within_and_outside_window(db: Db) {
    let s = &db.store;
    let window = 300;
    let sight = |g: &'static str, k: MailKey, now: i64| async move {
        let mut got = s.sight_all(&[(g, &k)], now, window).await.unwrap();
        assert_eq!(got.len(), 1);
        got.pop().unwrap()
    };
    assert_eq!(sight("g", key("a", 1, 7), 100).await, vec!["a"]);
    assert_eq!(sight("g", key("b", 1, 3), 150).await, vec!["a", "b"]);
    // Same desk twice (e.g. the message delivered twice) is still one desk.
    assert_eq!(sight("g", key("b", 1, 4), 160).await, vec!["a", "b"]);
    assert_eq!(sight("g", key("c", 2, 9), 400).await, vec!["a", "b", "c"]);
    // At 460 the window starts at 160: a (100) and b's first copy (150) are out, b's second
    // copy (160) is in.
    assert_eq!(sight("g", key("d", 1, 1), 460).await, vec!["b", "c", "d"]);
    // Seeing the same mail again keeps its first time, yet the desk itself always counts.
    assert_eq!(sight("g", key("a", 1, 7), 5000).await, vec!["a"]);
    assert_eq!(sight("g", key("e", 1, 1), 5000).await, vec!["e"]);
    // Another message is independent.
    assert_eq!(sight("h", key("a", 1, 8), 460).await, vec!["a"]);

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

    // A batch: every sighting is recorded before any is counted, so copies of one message
    // in one batch see each other; results in the order given.
    let (x, y, z) = (key("x", 1, 1), key("y", 1, 1), key("z", 1, 1));
    let got = s
        .sight_all(&[("m", &x), ("n", &z), ("m", &y)], 6000, window)
        .await
        .unwrap();
    assert_eq!(got, vec![vec!["x", "y"], vec!["z"], vec!["x", "y"]]);
    assert!(s.sight_all(&[], 6000, window).await.unwrap().is_empty());
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

async fn uidvalidity_change_resets_progress(db: Db) {
    let s = &db.store;
    s.set_uidvalidity("works", 1).await.unwrap();
    let old = key("works", 1, 5);
    record(s, &decision(old.clone(), "<m5@x>", NOW)).await;
    s.complete_mails(std::slice::from_ref(&old), NOW)
        .await
        .unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((1, 5)));

    // Re-setting the same UIDVALIDITY (every reconnect) keeps progress.
    s.set_uidvalidity("works", 1).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((1, 5)));

    // The mailbox was renumbered: progress restarts; the old entry stays under its key and
    // the same UID under the new numbering is a new mail.
    s.set_uidvalidity("works", 2).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((2, 0)));
    assert_eq!(
        s.journal(&old).await.unwrap().unwrap().status,
        MailStatus::Done
    );
    assert!(
        s.journal_statuses("works", 2, &[5])
            .await
            .unwrap()
            .is_empty()
    );
    let new = key("works", 2, 5);
    assert!(
        record(s, &decision(new.clone(), "<m5@x>", NOW + 10))
            .await
            .first_time
    );
    assert_eq!(
        s.journal_statuses("works", 2, &[5]).await.unwrap(),
        HashMap::from([(5, MailStatus::Decided)])
    );
    // A late completion under the old UIDVALIDITY does not move the new progress.
    s.advance("works", 1, 50).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((2, 0)));
}

async fn mails_completed_in_batches(db: Db) {
    let s = &db.store;
    s.set_uidvalidity("works", 3).await.unwrap();
    s.set_uidvalidity("legal", 8).await.unwrap();
    let (a, b, c) = (key("works", 3, 42), key("works", 3, 40), key("legal", 8, 7));
    for k in [&a, &b, &c] {
        record(s, &decision(k.clone(), "g", NOW)).await;
    }
    assert_eq!(
        s.journal_statuses("works", 3, &[40, 41, 42]).await.unwrap(),
        HashMap::from([(40, MailStatus::Decided), (42, MailStatus::Decided)])
    );
    s.complete_mails(&[a.clone(), c.clone(), b.clone()], NOW + 5)
        .await
        .unwrap();
    for k in [&a, &b, &c] {
        let entry = s.journal(k).await.unwrap().unwrap();
        assert_eq!(entry.status, MailStatus::Done, "{k}");
        assert_eq!(entry.finished_at, Some(NOW + 5));
    }
    // Each desk advanced to its highest UID of the batch.
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((3, 42)));
    assert_eq!(s.desk_progress("legal").await.unwrap(), Some((8, 7)));

    // Completing twice is a no-op; a batch with an unknown mail changes nothing and names it.
    let d = key("works", 3, 50);
    record(s, &decision(d.clone(), "g", NOW)).await;
    s.complete_mails(std::slice::from_ref(&a), NOW + 9)
        .await
        .unwrap();
    assert_eq!(
        s.journal(&a).await.unwrap().unwrap().finished_at,
        Some(NOW + 5)
    );
    let err = s
        .complete_mails(&[d.clone(), key("works", 3, 43)], NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unknown { .. }), "{err}");
    assert!(err.to_string().contains("works/3/43"), "{err}");
    assert!(!err.is_transient());
    assert_eq!(
        s.journal(&d).await.unwrap().unwrap().status,
        MailStatus::Decided
    );
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((3, 42)));
    s.complete_mails(&[], NOW).await.unwrap();
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
    record(s, &decision(decided.clone(), "g8", NOW)).await;
    let long = "x".repeat(10_000) + "é";
    s.fail_mail(&decided, &long, NOW + 1).await.unwrap();
    let entry = s.journal(&decided).await.unwrap().unwrap();
    assert_eq!(entry.status, MailStatus::Failed);
    assert_eq!(entry.group_key, "g8");
    assert_eq!(entry.error.unwrap().len(), MAX_ERROR_LEN);
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((3, 0)));

    // A mail already done stays done.
    let done = key("works", 3, 9);
    record(s, &decision(done.clone(), "g9", NOW)).await;
    s.complete_mails(std::slice::from_ref(&done), NOW)
        .await
        .unwrap();
    s.fail_mail(&done, "late error", NOW + 2).await.unwrap();
    let entry = s.journal(&done).await.unwrap().unwrap();
    assert_eq!(entry.status, MailStatus::Done);
    assert_eq!(entry.error, None);
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
    s.record_decisions(&mut decisions.clone()).await.unwrap();
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
