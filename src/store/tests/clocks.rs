//! Store tests of the desks' clocks: started and joined with the decisions' batch (one
//! lookup per batch), read back per desk, a stopped clock not joined again.

use super::*;
use crate::store::NewClock;
use crate::store::clocks::{ClockChange, StopReason};

store_tests!(
    clocks_start_once_per_ticket_and_are_joined_within_and_across_batches,
    open_clocks_read_back_every_column_as_written
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
