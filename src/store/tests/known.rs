//! Store tests of the batch reads a plan depends on (`known`): they agree with the
//! single-mail reads, across query chunks of 200.

use std::collections::HashMap;

use super::*;

store_tests!(batch_reads_of_what_a_plan_depends_on);

async fn batch_reads_of_what_a_plan_depends_on(db: Db) {
    let s = &db.store;
    let with = |uid: u32, sender: &str, at: i64, redirected: bool| NewDecision {
        sender: Some(sender.into()),
        redirected,
        ..decision(key("works", 1, uid), &format!("g{uid}"), at)
    };
    let mut replied = with(3, "a@example.in", NOW - 50, false);
    replied.outbox = vec![reply("reply:g3", "works", "A@example.in", DAY)];
    s.record_decisions(&mut [
        with(1, "A@Example.in", NOW - 100, true),
        with(2, "user@example.in", NOW - 2 * DAY, true),
        replied,
        with(4, "b@example.in", NOW - 10, false),
        with(5, "a@example.in", NOW - 10, false),
    ])
    .await
    .unwrap();
    // 250 senders: two queries; the ones that count come last.
    let mut senders: Vec<String> = (0..247).map(|i| format!("x{i}@example.in")).collect();
    senders.extend(["user@example.in", "b@example.in", "a@example.in"].map(String::from));
    let answers = s.answers_since_all(&senders, NOW - DAY).await.unwrap();
    assert_eq!(answers, HashMap::from([("a@example.in".to_string(), 2)]));
    for sender in &senders {
        assert_eq!(
            answers.get(sender).copied().unwrap_or(0),
            s.answers_since(sender, NOW - DAY).await.unwrap(),
            "{sender}"
        );
    }
    let since_all = s.answers_since_all(&senders, NOW - 3 * DAY).await.unwrap();
    assert_eq!(since_all.get("user@example.in"), Some(&1));
    assert!(s.answers_since_all(&[], NOW).await.unwrap().is_empty());

    let last = s.last_replies(&senders).await.unwrap();
    assert_eq!(
        last,
        HashMap::from([(
            ("a@example.in".to_string(), "broadcast-advisory".to_string()),
            NOW - 50
        )])
    );
    assert!(
        s.replied_since("a@example.in", "broadcast-advisory", NOW - 51)
            .await
            .unwrap()
    );

    let uids: Vec<u32> = (1..=300).collect();
    let actions = s.journaled_actions("works", 1, &uids).await.unwrap();
    assert_eq!(actions.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    for (uid, list) in &actions {
        let journal = s.journal(&key("works", 1, *uid)).await.unwrap().unwrap();
        assert_eq!(list, &journal.actions);
    }
    assert_eq!(
        actions[&1],
        Ok(vec![
            Action::Tag("$NoTicket".into()),
            Action::File("Redirected".into())
        ])
    );
    // A damaged record: that mail's answer is the error, naming the record; others stand.
    sqlx::query(
        "UPDATE journal SET actions = '[{\"kind\":\"tag\",\"arg\":\"$NoTicket\"},{\"kind\":\"explode\"}]' \
         WHERE desk = 'works' AND uid = 1",
    )
    .execute(&s.pool)
    .await
    .unwrap();
    // Mails journaled before release 0.7 have journal_action rows: read in the same call,
    // damaged ones too.
    as_before_0_7(
        s,
        &key("works", 1, 4),
        &["tag:$Ticket", r#"{"kind":"seen"}"#],
    )
    .await;
    as_before_0_7(s, &key("works", 1, 5), &["seen", "explode:now"]).await;
    let actions = s.journaled_actions("works", 1, &uids).await.unwrap();
    let e = actions[&1].clone().unwrap_err();
    assert_eq!((e.key.uid, e.position), (1, 1));
    assert_eq!(e.record, "{\"kind\":\"explode\"}");
    assert!(actions[&2].is_ok());
    assert_eq!(
        actions[&4],
        Ok(vec![Action::Tag("$Ticket".into()), Action::MarkSeen])
    );
    let e = actions[&5].clone().unwrap_err();
    assert_eq!(
        (e.key.uid, e.position, e.record.as_str()),
        (5, 1, "explode:now")
    );
    for uid in [1, 2, 4, 5] {
        let journal = s.journal(&key("works", 1, uid)).await.unwrap().unwrap();
        assert_eq!(actions[&uid], journal.actions, "{uid}");
    }
    assert!(
        s.journaled_actions("works", 2, &uids)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.journaled_actions("other", 1, &[1])
            .await
            .unwrap()
            .is_empty()
    );
}
