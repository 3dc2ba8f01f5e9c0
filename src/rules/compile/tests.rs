//! Tests of what compiling derives from the rules beyond their sections: the retention
//! period of the state database. The sections' own checks are tested with their modules
//! (`matrix`, `phrases`) and through `ticketgate check` (tests/cli.rs, tests/badinput.rs).

use std::path::Path;

use crate::rules::{Deployment, compile::compile_str};

/// Rules with `settings` and one rule replying with `period` (no `reply_period_hours`
/// line when `None`).
fn rules(settings: &str, period: Option<u64>) -> String {
    let period = period.map_or(String::new(), |h| format!("reply_period_hours = {h}\n"));
    format!(
        "[settings]\n{settings}\n\n[[ticket_pattern]]\nname = \"t\"\nregex = '(?P<ticket>T-[0-9]+)'\n\n\
         [[rule]]\nname = \"advise\"\nwhen = {{ ticket = false }}\nactions = [\"reply:advice\"]\n{period}\n\
         [template.advice]\nsubject = \"s\"\nbody = \"b\"\n"
    )
}

fn retention_hours(text: &str) -> u64 {
    compile_str(Path::new("r.toml"), text, &Deployment::default())
        .unwrap()
        .retention_secs
        / 3600
}

/// The reply ledger remembers who got which reply for as long as the rule's period forbids
/// another: pruning it at `retention_days` must not forget a reply still within its
/// period, so retention is never shorter than the longest period, nor than the window the
/// sender answer limit counts in the journal.
#[test]
fn retention_is_at_least_the_longest_reply_period_and_the_answer_window() {
    assert_eq!(
        retention_hours(&rules("retention_days = 400", None)),
        400 * 24
    );
    // The default reply period (a week) of the replying rule.
    assert_eq!(retention_hours(&rules("retention_days = 1", None)), 168);
    assert_eq!(retention_hours(&rules("retention_days = 1", Some(72))), 72);
    assert_eq!(
        retention_hours(&rules("retention_days = 1\nreply_period_hours = 100", None)),
        100
    );
    assert_eq!(
        retention_hours(&rules(
            "retention_days = 1\nsender_answer_window_hours = 30",
            Some(2)
        )),
        30
    );
}
