//! Store tests of retention ([`Store::prune`]): what goes, what must stay, and that the
//! tables stop growing when it runs.

use super::*;
use crate::store::NewClock;
use crate::store::clocks::{ClockChange, StopReason};

store_tests!(
    prune_removes_only_what_is_old_and_finished,
    prune_removes_stopped_clocks_never_open_ones,
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
            ..PruneCounts::default()
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

/// A decision on `ticket` starting or joining the desk's clock.
fn on_ticket(uid: u32, ticket: &str, now: i64) -> NewDecision {
    let mut d = decision(key("works", 1, uid), &format!("g{uid}"), now);
    d.clock = Some(NewClock {
        ticket: ticket.into(),
        due: now + 2 * DAY,
    });
    d
}

/// Stops the clock on `ticket` started at `started`, answered at `at`.
fn answered(ticket: &str, started: i64, at: i64) -> ClockChange {
    ClockChange::Stop {
        ticket: ticket.into(),
        started,
        at,
        reason: StopReason::Answered,
    }
}

/// A desk's clocks stopped before the retention period go with their mails; a clock still
/// open stays however old (it may be overdue for a year), and so do its mails.
async fn prune_removes_stopped_clocks_never_open_ones(db: Db) {
    let s = &db.store;
    // Two mails on a ticket answered at once, one on a ticket answered a day later, one on
    // a ticket never answered.
    let mut batch = vec![
        on_ticket(1, "2024-1", NOW),
        on_ticket(2, "2024-1", NOW),
        on_ticket(3, "2024-2", NOW),
        on_ticket(4, "2024-3", NOW),
    ];
    s.record_decisions(&mut batch).await.unwrap();
    s.update_clocks(
        "works",
        &[
            answered("2024-1", NOW, NOW + 100),
            answered("2024-2", NOW, NOW + DAY),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        (
            rows(s, "desk_clock").await,
            rows(s, "desk_clock_mail").await
        ),
        (3, 4)
    );
    // A day after the first answer (KEEP: a day): only its clock and its two mails go.
    let counts = s.prune(NOW + DAY + 3600, KEEP).await.unwrap();
    assert_eq!((counts.clocks, counts.clock_mails), (1, 2), "{counts:?}");
    // Long after: the other answered clock too; the open one stays with its mail.
    let counts = s.prune(NOW + 400 * DAY, KEEP).await.unwrap();
    assert_eq!((counts.clocks, counts.clock_mails), (1, 1), "{counts:?}");
    let open = s.open_clocks("works").await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].clock.ticket, "2024-3");
    assert_eq!(open[0].mails.iter().map(|m| m.uid).collect::<Vec<_>>(), [4]);
    assert_eq!(
        (
            rows(s, "desk_clock").await,
            rows(s, "desk_clock_mail").await
        ),
        (1, 1)
    );
}

/// Mail arrives every day for 30 days and is finished; with a prune each day the tables hold
/// about retention's worth of rows, not everything ever seen.
async fn prune_bounds_growth(db: Db) {
    let s = &db.store;
    const PER_DAY: u32 = 5;
    let mut most = [0i64; 7];
    for day in 0..30u32 {
        let now = NOW + i64::from(day) * DAY;
        let batch: Vec<NewDecision> = (0..PER_DAY)
            .map(|i| {
                let uid = day * PER_DAY + i + 1;
                let mut d = on_ticket(uid, &format!("2024-{uid}"), now);
                // A reply to a new sender each: a row of the reply ledger each.
                let sender = format!("s{uid}@example.in");
                d.outbox = vec![reply(&format!("o{uid}"), "works", &sender, 3600)];
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
        // Each mail's ticket answered within the hour.
        let stops: Vec<ClockChange> = (0..PER_DAY)
            .map(|i| answered(&format!("2024-{}", day * PER_DAY + i + 1), now, now + 60))
            .collect();
        s.update_clocks("works", &stops).await.unwrap();
        s.prune(now + 3 * 3600, KEEP).await.unwrap();
        for (i, table) in [
            "journal",
            "journal_action",
            "outbox",
            "sighting",
            "desk_clock",
            "desk_clock_mail",
            "reply_ledger",
        ]
        .into_iter()
        .enumerate()
        {
            most[i] = most[i].max(rows(s, table).await);
        }
    }
    let per_day = i64::from(PER_DAY);
    // Pruned 3 hours after each day's mail with a day of retention: only that day's mails,
    // clocks and replies (150 without pruning), and no sightings (a 2-hour window). The
    // actions are in the journal rows (no journal_action rows since release 0.7).
    assert_eq!(most, [per_day, 0, per_day, 0, per_day, per_day, per_day]);
    assert_eq!(rows(s, "journal").await, per_day);
}
