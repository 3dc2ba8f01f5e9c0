//! Store tests of the desks' clocks: started and joined with the decisions' batch (one
//! lookup per batch), read back per desk in pages, a stopped clock not joined again.

use super::*;
use crate::store::NewClock;
use crate::store::clocks::{ClockChange, StopReason};

store_tests!(
    clocks_start_once_per_ticket_and_are_joined_within_and_across_batches,
    open_clocks_read_back_every_column_as_written,
    open_clocks_come_in_pages_each_clock_once,
    the_message_ids_of_open_clocks_come_once_each_in_pages,
    a_clock_falls_due_when_one_is_due_and_not_yet_overdue
);

fn on_ticket(uid: u32, ticket: &str, now: i64) -> NewDecision {
    let mut d = decision(key("works", 1, uid), &format!("g{uid}"), now);
    d.clock = Some(NewClock {
        ticket: ticket.into(),
        due: now + 48 * 3600,
    });
    d
}

/// (ticket, started, UIDs of its mails) of each clock.
fn summary(clocks: &[crate::store::clocks::OpenClock]) -> Vec<(&str, i64, Vec<u32>)> {
    clocks
        .iter()
        .map(|c| {
            (
                c.clock.ticket.as_str(),
                c.clock.started,
                c.mails.iter().map(|m| m.uid).collect(),
            )
        })
        .collect()
}

async fn clocks_start_once_per_ticket_and_are_joined_within_and_across_batches(db: Db) {
    let s = &db.store;
    // One batch: two mails on T1 (the second joins the first's clock), one on T2, and one
    // without a clock.
    let mut batch = vec![
        on_ticket(1, "2024-1", NOW),
        on_ticket(2, "2024-1", NOW + 5),
        on_ticket(3, "2024-2", NOW + 5),
        decision(key("works", 1, 4), "g4", NOW + 5),
    ];
    s.record_decisions(&mut batch).await.unwrap();
    let clocks = s.open_clocks("works").await.unwrap();
    assert_eq!(
        summary(&clocks),
        [("2024-1", NOW, vec![1, 2]), ("2024-2", NOW + 5, vec![3])]
    );
    assert_eq!(clocks[0].clock.due, NOW + 48 * 3600);

    // A later batch joins the open clock; the same decision again changes nothing.
    let mut later = vec![
        on_ticket(5, "2024-1", NOW + 60),
        on_ticket(1, "2024-1", NOW),
    ];
    s.record_decisions(&mut later).await.unwrap();
    let clocks = s.open_clocks("works").await.unwrap();
    assert_eq!(clocks.len(), 2);
    let uids: Vec<u32> = clocks[0].mails.iter().map(|m| m.uid).collect();
    assert_eq!((clocks[0].clock.started, uids), (NOW, vec![1, 2, 5]));

    // Once answered, the next mail on the ticket starts a new clock.
    s.update_clocks(
        "works",
        &[ClockChange::Stop {
            ticket: "2024-1".into(),
            started: NOW,
            at: NOW + 100,
            reason: StopReason::Answered,
        }],
    )
    .await
    .unwrap();
    s.record_decisions(&mut [on_ticket(6, "2024-1", NOW + 200)])
        .await
        .unwrap();
    let clocks = s.open_clocks("works").await.unwrap();
    assert_eq!(
        summary(&clocks),
        [("2024-2", NOW + 5, vec![3]), ("2024-1", NOW + 200, vec![6])]
    );
}

/// What a review reads is what the decisions wrote, column by column: texts with quotes,
/// backslashes, Hindi and emoji, no sender, no Message-ID, UIDVALIDITY above 2^31, an
/// overdue time; clocks in (started, ticket) order, their mails in (UIDVALIDITY, UID)
/// order, a clock without mail, another desk's clocks and stopped ones left out.
async fn open_clocks_read_back_every_column_as_written(db: Db) {
    let s = &db.store;
    let subject = "Re: \"भुगतान\" लंबित \\ C:\\GeM 🙏 <b>\u{7}";
    // The later UIDVALIDITY holds the lower UID: ordered by UID alone they would swap.
    let mut a = on_ticket(3, "2024-9", NOW);
    a.key.uidvalidity = 4_000_000_000;
    a.subject = subject.into();
    a.sender = None;
    a.message_id = None;
    let mut b = on_ticket(9, "2024-9", NOW + 1);
    b.key.uidvalidity = 7;
    let c = on_ticket(4, "2024-1", NOW);
    let mut other = on_ticket(5, "2024-9", NOW);
    other.key.desk = "elsewhere".into();
    let stopped = on_ticket(6, "2024-0", NOW - 10);
    s.record_decisions(&mut [a, b, c, other, stopped])
        .await
        .unwrap();
    s.update_clocks(
        "works",
        &[
            ClockChange::Overdue {
                ticket: "2024-9".into(),
                started: NOW,
                at: NOW + 7,
            },
            ClockChange::Stop {
                ticket: "2024-0".into(),
                started: NOW - 10,
                at: NOW,
                reason: StopReason::DoneFolder,
            },
        ],
    )
    .await
    .unwrap();
    let clocks = s.open_clocks("works").await.unwrap();
    assert_eq!(
        summary(&clocks),
        [("2024-1", NOW, vec![4]), ("2024-9", NOW, vec![9, 3])]
    );
    let nine = &clocks[1];
    assert_eq!(nine.clock.desk, "works");
    assert_eq!(nine.clock.subject, subject);
    assert_eq!(nine.clock.sender, None);
    assert_eq!(nine.clock.overdue_at, Some(NOW + 7));
    assert_eq!(nine.clock.due, NOW + 48 * 3600);
    let mails: Vec<(u32, u32, Option<&str>)> = nine
        .mails
        .iter()
        .map(|m| (m.uidvalidity, m.uid, m.message_id.as_deref()))
        .collect();
    assert_eq!(
        mails,
        [(7, 9, Some("<g9@example.in>")), (4_000_000_000, 3, None)]
    );
    let one = &clocks[0];
    assert_eq!(one.clock.sender.as_deref(), Some("user@example.in"));
    assert_eq!(one.clock.overdue_at, None);
    assert!(s.open_clocks("nobody").await.unwrap().is_empty());

    // A clock without a mail (no decision makes one; the review must not lose it) comes
    // back with none.
    sqlx::query(&format!(
        "INSERT INTO desk_clock (desk, ticket, started, due, subject, status) \
         VALUES ('works', '2024-0', {}, {}, 's', 'open')",
        NOW + 50,
        NOW + 60
    ))
    .execute(&s.pool)
    .await
    .unwrap();
    let clocks = s.open_clocks("works").await.unwrap();
    assert_eq!(
        summary(&clocks),
        [
            ("2024-1", NOW, vec![4]),
            ("2024-9", NOW, vec![9, 3]),
            ("2024-0", NOW + 50, vec![]),
        ]
    );
}

/// Issue #16: the review reads a desk's open clocks in pages (`deskclock::CLOCKS_PER_PAGE`)
/// so that its memory does not grow with them. Every clock comes once, whatever the page
/// size: clocks started in the same second on either side of a page's end, a clock with
/// several mails whole on one page, a clock stopped (as a page's review does) before the
/// next page is read; a full last page is followed by an empty one, which says it is the
/// last. On PostgreSQL the tickets are compared in an ICU collation, in which "2024-B"
/// comes after "2024-a" (in byte order, before): a next page started from the page's last
/// ticket in Rust's order would lose or repeat clocks.
async fn open_clocks_come_in_pages_each_clock_once(db: Db) {
    let s = &db.store;
    if !s.sqlite {
        sqlx::query(r#"ALTER TABLE desk_clock ALTER COLUMN ticket TYPE TEXT COLLATE "und-x-icu""#)
            .execute(&s.pool)
            .await
            .expect("PostgreSQL with ICU collations (Debian's has them)");
    }
    // Eleven clocks: seven started in the same second, tickets whose byte order is neither
    // their length order nor (upper and lower case) a collation's; one with three mails.
    let tickets = [
        "2024-10", "2024-9", "2024-a", "2024-B", "2024-11", "2024-b", "2024-3",
    ];
    let mut batch: Vec<NewDecision> = tickets
        .iter()
        .enumerate()
        .map(|(n, t)| on_ticket(n as u32 + 1, t, NOW))
        .collect();
    batch.extend((0..4).map(|n| on_ticket(20 + n, &format!("2025-{n}"), NOW + 1 + i64::from(n))));
    batch.push(on_ticket(30, "2024-9", NOW + 9));
    batch.push(on_ticket(31, "2024-9", NOW + 9));
    s.record_decisions(&mut batch).await.unwrap();
    // The database's own order of the clocks, which pages follow.
    let rows = sqlx::query(
        "SELECT ticket, started FROM desk_clock WHERE desk = 'works' ORDER BY started, ticket",
    )
    .fetch_all(&s.pool)
    .await
    .unwrap();
    let expected: Vec<(String, i64)> = rows
        .iter()
        .map(|r| (r.try_get("ticket").unwrap(), r.try_get("started").unwrap()))
        .collect();
    assert_eq!(expected.len(), 11);
    if !s.sqlite {
        let a = expected.iter().position(|(t, _)| t == "2024-a").unwrap();
        let upper_b = expected.iter().position(|(t, _)| t == "2024-B").unwrap();
        assert!(a < upper_b, "not byte order: {expected:?}");
    }
    // Each page as a set: within a page the clocks come in byte order.
    let set = |clocks: &[(String, i64)]| -> std::collections::BTreeSet<(String, i64)> {
        clocks.iter().cloned().collect()
    };
    let keys = |clocks: &[crate::store::clocks::OpenClock]| -> Vec<(String, i64)> {
        clocks
            .iter()
            .map(|c| (c.clock.ticket.clone(), c.clock.started))
            .collect()
    };
    for per_page in [1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 2_000] {
        let clocks = s.open_clocks_in_pages("works", per_page).await.unwrap();
        let got = keys(&clocks);
        assert_eq!(got.len(), expected.len(), "pages of {per_page}: {got:?}");
        assert_eq!(set(&got), set(&expected), "pages of {per_page}");
        let nine = clocks.iter().find(|c| c.clock.ticket == "2024-9").unwrap();
        let uids: Vec<u32> = nine.mails.iter().map(|m| m.uid).collect();
        assert_eq!(uids, [2, 30, 31], "pages of {per_page}");
    }

    // Pages of 4: the first ends inside the second NOW; a clock on it and one on the next
    // page are stopped before the next page is read.
    let (first, next) = s.open_clocks_page("works", None, 4).await.unwrap();
    assert_eq!(set(&keys(&first)), set(&expected[..4]));
    let next = next.expect("more pages");
    let stop = |ticket: &str, started: i64| ClockChange::Stop {
        ticket: ticket.into(),
        started,
        at: NOW + 100,
        reason: StopReason::Answered,
    };
    s.update_clocks(
        "works",
        &[stop(&expected[1].0, NOW), stop(&expected[5].0, NOW)],
    )
    .await
    .unwrap();
    let (second, next) = s.open_clocks_page("works", Some(&next), 4).await.unwrap();
    let want: Vec<(String, i64)> = [4, 6, 7, 8].iter().map(|&i| expected[i].clone()).collect();
    assert_eq!(set(&keys(&second)), set(&want));
    let (third, next) = s.open_clocks_page("works", next.as_ref(), 4).await.unwrap();
    assert_eq!(set(&keys(&third)), set(&expected[9..]));
    assert!(next.is_none(), "fewer than 4: the last page");

    // Exactly a page's worth: the next page is empty and the last.
    let (all, next) = s.open_clocks_page("works", None, 9).await.unwrap();
    assert_eq!(all.len(), 9);
    let (none, last) = s.open_clocks_page("works", next.as_ref(), 9).await.unwrap();
    assert!(none.is_empty() && last.is_none());
    assert!(
        s.open_clocks_page("nobody", None, 9)
            .await
            .unwrap()
            .0
            .is_empty()
    );
}

/// The review's search of the Sent and done folders knows every open clock's Message-IDs
/// (`Store::each_open_clock_message_id`), read a page at a time: each once, whatever the
/// page size; none of another desk's clock, of a stopped clock or of a mail without one.
async fn the_message_ids_of_open_clocks_come_once_each_in_pages(db: Db) {
    let s = &db.store;
    let mut batch: Vec<NewDecision> = (1..=5)
        .map(|n| on_ticket(n, &format!("2024-{n}"), NOW))
        .collect();
    batch.push(on_ticket(6, "2024-1", NOW + 1));
    let mut without = on_ticket(7, "2024-7", NOW + 2);
    without.message_id = None;
    batch.push(without);
    let mut other = on_ticket(8, "2024-1", NOW);
    other.key.desk = "elsewhere".into();
    batch.push(other);
    batch.push(on_ticket(9, "2024-0", NOW - 5));
    s.record_decisions(&mut batch).await.unwrap();
    s.update_clocks(
        "works",
        &[ClockChange::Stop {
            ticket: "2024-0".into(),
            started: NOW - 5,
            at: NOW,
            reason: StopReason::Sent,
        }],
    )
    .await
    .unwrap();
    let mut want: Vec<String> = [1, 2, 3, 4, 5, 6]
        .iter()
        .map(|n| format!("<g{n}@example.in>"))
        .collect();
    want.sort();
    for per_page in [1, 2, 5, 6, 7, 2_000] {
        let mut seen = Vec::new();
        s.each_open_clock_message_id("works", per_page, |id| seen.push(id.to_string()))
            .await
            .unwrap();
        seen.sort();
        assert_eq!(seen, want, "pages of {per_page}");
    }
    let mut none = 0;
    s.each_open_clock_message_id("nobody", 2, |_| none += 1)
        .await
        .unwrap();
    assert_eq!(none, 0);
}

/// Before a review marks a clock overdue it searches the Sent and done folders in full
/// (`deskclock::check`): whether one falls due is a clock open, not yet marked overdue,
/// whose due time has come (at its due second, as the review has it).
async fn a_clock_falls_due_when_one_is_due_and_not_yet_overdue(db: Db) {
    let s = &db.store;
    let due = NOW + 48 * 3600;
    assert!(
        !s.a_clock_falls_due("works", due).await.unwrap(),
        "no clock"
    );
    s.record_decisions(&mut [
        on_ticket(1, "2024-1", NOW),
        on_ticket(2, "2024-2", NOW + 10),
    ])
    .await
    .unwrap();
    assert!(!s.a_clock_falls_due("works", due - 1).await.unwrap());
    assert!(s.a_clock_falls_due("works", due).await.unwrap());
    assert!(!s.a_clock_falls_due("elsewhere", due).await.unwrap());
    s.update_clocks(
        "works",
        &[ClockChange::Overdue {
            ticket: "2024-1".into(),
            started: NOW,
            at: due,
        }],
    )
    .await
    .unwrap();
    assert!(
        !s.a_clock_falls_due("works", due + 9).await.unwrap(),
        "marked already"
    );
    assert!(s.a_clock_falls_due("works", due + 10).await.unwrap());
    s.update_clocks(
        "works",
        &[ClockChange::Stop {
            ticket: "2024-2".into(),
            started: NOW + 10,
            at: due,
            reason: StopReason::Answered,
        }],
    )
    .await
    .unwrap();
    assert!(
        !s.a_clock_falls_due("works", due + 10).await.unwrap(),
        "stopped"
    );
}
