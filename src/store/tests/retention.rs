//! Store tests of retention ([`Store::prune`]): what goes, what must stay, and that the
//! tables stop growing when it runs.

use super::*;

store_tests!(
    prune_removes_only_what_is_old_and_finished,
    prune_bounds_growth
);

async fn rows(s: &Store, table: &str) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&s.pool)
        .await
        .unwrap()
        .try_get::<i64, _>("n")
        .unwrap()
}

const KEEP: Keep = Keep {
    sightings_secs: 2 * 3600,
    finished_secs: DAY as u64,
};

async fn prune_removes_only_what_is_old_and_finished(db: Db) {
    let s = &db.store;
    // done, set aside after deciding, still decided, done with its mail still pending,
    // done with its mail sent, done with its mail given up.
    let [done, failed, decided, waiting, sent, refused] =
        [1, 2, 3, 4, 5, 6].map(|uid| key("works", 1, uid));
    let mut batch = Vec::new();
    for (k, mail) in [
        (&done, None),
        (&failed, None),
        (&decided, None),
        (&waiting, Some("o-waiting")),
        (&sent, Some("o-sent")),
        (&refused, Some("o-refused")),
    ] {
        let mut d = decision(k.clone(), &format!("g{}", k.uid), NOW);
        d.outbox = mail.map(|id| outgoing(id, "works")).into_iter().collect();
        batch.push(d);
    }
    s.record_decisions(&mut batch.clone()).await.unwrap();
    let sightings: Vec<(String, MailKey)> = batch
        .iter()
        .map(|d| (d.group_key.clone(), d.key.clone()))
        .collect();
    let sightings: Vec<(&str, &MailKey)> = sightings.iter().map(|(g, k)| (g.as_str(), k)).collect();
    s.sight_all(&sightings, NOW, 7200).await.unwrap();
    s.complete_mails(
        &[done.clone(), waiting.clone(), sent.clone(), refused.clone()],
        NOW,
    )
    .await
    .unwrap();
    s.fail_mail(&failed, "cannot move", NOW).await.unwrap();
    // Two mails journaled by a release before 0.7: their actions are journal_action rows.
    for k in [&done, &decided] {
        as_before_0_7(
            s,
            k,
            &[r#"{"kind":"tag","arg":"$NoTicket"}"#, "file:Redirected"],
        )
        .await;
    }
    s.outbox_sent("o-sent", None, NOW).await.unwrap();
    s.outbox_failed("o-refused", "550 no", NOW).await.unwrap();
    // Tickets the helpdesk acknowledged: one long before the retention period, one now.
    let learned = |ticket: &str, created: i64| crate::store::LearnedTicket {
        ticket: ticket.to_string(),
        created,
        requester: None,
    };
    s.learn_tickets(
        "INBOX",
        (1, 2),
        &[learned("2024-1", NOW - 3 * DAY), learned("2024-2", NOW)],
        NOW,
    )
    .await
    .unwrap();

    assert_eq!(
        s.prune(NOW + 3600, KEEP).await.unwrap(),
        PruneCounts::default()
    );
    assert_eq!(
        s.prune(NOW + 3 * 3600, KEEP).await.unwrap(),
        PruneCounts {
            sightings: 6,
            ..PruneCounts::default()
        }
    );
    let counts = s.prune(NOW + 2 * DAY, KEEP).await.unwrap();
    assert_eq!(
        counts,
        PruneCounts {
            sightings: 0,
            journal: 4,
            actions: 2,
            outbox: 2,
        }
    );
    assert_eq!(counts.total(), 8);
    for k in [&done, &failed, &sent, &refused] {
        assert!(s.journal(k).await.unwrap().is_none(), "{k}");
    }
    // Never a mail not finished, nor one whose mail still waits, nor a pending mail.
    for k in [&decided, &waiting] {
        let entry = s.journal(k).await.unwrap().unwrap();
        assert_eq!(entry.actions.unwrap().len(), 2, "{k}");
    }
    assert_eq!(rows(s, "journal_action").await, 2);
    let left: Vec<String> = s
        .outbox_all()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, ["o-waiting"]);
    assert_eq!(
        s.prune(NOW + 400 * DAY, KEEP).await.unwrap(),
        PruneCounts::default()
    );
    // Learned tickets stay: the acknowledgements are not read again, and a forgotten ticket
    // would be answered "unknown" to a desk mail that cites it.
    let mut kept: Vec<String> = s
        .learned_tickets(&["2024-1".into(), "2024-2".into()])
        .await
        .unwrap()
        .into_keys()
        .collect();
    kept.sort();
    assert_eq!(kept, ["2024-1", "2024-2"]);
}

/// Mail arrives every day for 30 days and is finished; with a prune each day the tables hold
/// about retention's worth of rows, not everything ever seen.
async fn prune_bounds_growth(db: Db) {
    let s = &db.store;
    const PER_DAY: u32 = 5;
    let mut most = [0i64; 4];
    for day in 0..30u32 {
        let now = NOW + i64::from(day) * DAY;
        let batch: Vec<NewDecision> = (0..PER_DAY)
            .map(|i| {
                let uid = day * PER_DAY + i + 1;
                let mut d = decision(key("works", 1, uid), &format!("g{uid}"), now);
                d.outbox = vec![outgoing(&format!("o{uid}"), "works")];
                d
            })
            .collect();
        s.record_decisions(&mut batch.clone()).await.unwrap();
        let keys: Vec<MailKey> = batch.iter().map(|d| d.key.clone()).collect();
        let sightings: Vec<(&str, &MailKey)> = batch
            .iter()
            .map(|d| (d.group_key.as_str(), &d.key))
            .collect();
        s.sight_all(&sightings, now, 7200).await.unwrap();
        s.complete_mails(&keys, now).await.unwrap();
        for d in &batch {
            s.outbox_sent(&d.outbox[0].id, None, now).await.unwrap();
        }
        s.prune(now + 3 * 3600, KEEP).await.unwrap();
        for (i, table) in ["journal", "journal_action", "outbox", "sighting"]
            .into_iter()
            .enumerate()
        {
            most[i] = most[i].max(rows(s, table).await);
        }
    }
    let per_day = i64::from(PER_DAY);
    // Pruned 3 hours after each day's mail with a day of retention: only that day's mails
    // (150 without pruning), and no sightings (a 2-hour window). The actions are in the
    // journal rows (no journal_action rows since release 0.7).
    assert_eq!(most, [per_day, 0, per_day, 0]);
    assert_eq!(rows(s, "journal").await, per_day);
}
