//! Store tests of the tickets learned from acknowledgements: an acknowledgement seen again
//! keeps the earliest creation time (and its requester), lookups span query chunks of 200,
//! the folder's progress is stored with its UIDVALIDITY and survives a reopen.

use super::*;

store_tests!(learned_tickets_and_progress);

fn learned(ticket: &str, created: i64, requester: Option<&str>) -> LearnedTicket {
    LearnedTicket {
        ticket: ticket.into(),
        created,
        requester: requester.map(str::to_string),
    }
}

async fn learned_tickets_and_progress(db: Db) {
    let s = &db.store;
    assert_eq!(s.ack_progress("INBOX").await.unwrap(), None);
    s.learn_tickets(
        "INBOX",
        (7, 3),
        &[
            learned("2026-0000001", NOW - DAY, Some("a@rites.co.in")),
            learned("2026-0000002", NOW - 2 * DAY, None),
            // The same ticket twice in one batch: the earlier one stays.
            learned("2026-0000001", NOW - 2 * DAY, Some("first@rites.co.in")),
            learned("2026-0000001", NOW, Some("late@rites.co.in")),
        ],
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(s.ack_progress("INBOX").await.unwrap(), Some((7, 3)));
    assert_eq!(s.ack_progress("Other").await.unwrap(), None);
    let many: Vec<String> = (0..450)
        .map(|i| format!("2026-{i:07}"))
        .chain(["2026-9999999".to_string()])
        .collect();
    let found = s.learned_tickets(&many).await.unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        found["2026-0000001"],
        learned("2026-0000001", NOW - 2 * DAY, Some("first@rites.co.in"))
    );
    assert_eq!(found["2026-0000002"].requester, None);

    // A later read: progress moves on, a new UIDVALIDITY replaces the old one.
    s.learn_tickets("INBOX", (8, 1), &[], NOW).await.unwrap();
    db.store.close().await;
    let again = db.reopen().await;
    assert_eq!(again.ack_progress("INBOX").await.unwrap(), Some((8, 1)));
    assert_eq!(
        again
            .learned_tickets(&["2026-0000002".into()])
            .await
            .unwrap()
            .len(),
        1
    );
}
