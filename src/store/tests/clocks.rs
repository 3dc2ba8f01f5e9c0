//! Store tests of the desks' clocks: started and joined with the decisions' batch (one
//! lookup per batch), read back per desk, a stopped clock not joined again.

use super::*;
use crate::store::NewClock;
use crate::store::clocks::{ClockChange, StopReason};

store_tests!(clocks_start_once_per_ticket_and_are_joined_within_and_across_batches);

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
