//! The ticket registry (issue #17; SPEC 7 "ticket age"): where ticketgate learns when a CRM
//! ticket was created, for whom and in which state, and the facts rules see from it
//! (`registry`, `ticket_known`, `ticket_age_hours`, `ticket_state`, `requester_matches`).
//! The facts are a pure function of (the mail's ticket and senders, the registry's answer,
//! now, the calendar). [`Registry`] is the one source config.toml names, whichever it is;
//! the sources live in submodules: [`csv`] reads a helpdesk export, [`postgres`] runs a
//! query, [`http`] asks a JSON service, [`acknowledgements`] answers from the tickets
//! learned from the helpdesk's acknowledgement mails; [`config`] reads `[registry]`.
//!
//! Not here: which rules act on the facts (rules), when the shell asks (the batch's read).

pub mod acknowledgements;
pub mod config;
pub mod csv;
pub mod http;
pub mod postgres;
mod source;

use std::collections::HashMap;

use serde::Serialize;

use crate::worktime::Calendar;

pub use config::RegistryConfig;
pub use source::Registry;

/// What the registry holds about one ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRecord {
    /// When the helpdesk registered it (Unix seconds).
    pub created: i64,
    /// The requester's mail address, as the helpdesk recorded it.
    pub requester: Option<String>,
    /// The helpdesk's state (`Open`, `Resolved`, ...), as written in the source.
    pub state: Option<String>,
}

/// The registry's answer for one ticket number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Known(TicketRecord),
    /// The registry answered and does not have it.
    Unknown,
    /// The registry could not answer (file unreadable, server down); the reason, for logs.
    Unavailable(String),
}

/// Answers for a batch's ticket numbers, keyed by [`ticket_key`].
pub type Answers = HashMap<String, Lookup>;

/// The registry's state as rules see it (`registry = "unavailable"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryState {
    /// No registry configured, or the mail has no ticket: nothing was asked.
    Off,
    Known,
    Unknown,
    Unavailable,
}

impl RegistryState {
    /// The name rules and `classify --json` use.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryState::Off => "off",
            RegistryState::Known => "known",
            RegistryState::Unknown => "unknown",
            RegistryState::Unavailable => "unavailable",
        }
    }

    /// Parses a name of [`RegistryState::as_str`].
    pub fn parse(name: &str) -> Option<RegistryState> {
        [
            RegistryState::Off,
            RegistryState::Known,
            RegistryState::Unknown,
            RegistryState::Unavailable,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// The facts of one mail from the registry. Every field but `registry` is `None` when the
/// registry did not answer for a ticket it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TicketFacts {
    pub registry: RegistryState,
    /// The registry has the ticket (`None`: not asked or unavailable).
    pub ticket_known: Option<bool>,
    /// Whole hours since the ticket was created, on the rules' calendar (seed 000: a desk
    /// takes up a ticket only after 48 hours unresolved at the helpdesk).
    pub ticket_age_hours: Option<u64>,
    /// Younger than the matrix's hours at the helpdesk (`[matrix] helpdesk_hours`).
    pub ticket_too_young: Option<bool>,
    /// When the helpdesk registered it (Unix seconds), for templates.
    #[serde(skip)]
    pub ticket_created: Option<i64>,
    pub ticket_state: Option<String>,
    /// The sender (From or Reply-To) is the ticket's requester, or writes from the same
    /// organisation's domain (not a public mail provider's).
    pub requester_matches: Option<bool>,
}

impl TicketFacts {
    /// Nothing asked: no registry, or no ticket in the mail.
    pub const OFF: TicketFacts = TicketFacts {
        registry: RegistryState::Off,
        ticket_known: None,
        ticket_age_hours: None,
        ticket_too_young: None,
        ticket_created: None,
        ticket_state: None,
        requester_matches: None,
    };
}

/// The key a ticket number is stored and looked up under: trimmed, without inner white
/// space, upper case (`2024-1234567`, ` 2024-1234567 ` and `2024 - 1234567` are one).
pub fn ticket_key(number: &str) -> String {
    number
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

/// Public mail providers: two senders at the same one are not one organisation.
const PUBLIC_DOMAINS: [&str; 16] = [
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "yahoo.co.in",
    "ymail.com",
    "rediffmail.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "protonmail.com",
    "proton.me",
    "zohomail.in",
];

fn domain(address: &str) -> Option<String> {
    let (_, d) = address.trim().rsplit_once('@')?;
    let d = d.trim_end_matches('>').trim().to_ascii_lowercase();
    (!d.is_empty()).then_some(d)
}

/// Whether one of `senders` (From, Reply-To) is `requester`, or shares its organisation's
/// domain (not one of the public mail providers).
pub fn requester_matches(senders: &[&str], requester: &str) -> bool {
    let requester = requester.trim();
    if senders
        .iter()
        .any(|s| s.trim().eq_ignore_ascii_case(requester))
    {
        return true;
    }
    let Some(theirs) = domain(requester) else {
        return false;
    };
    if PUBLIC_DOMAINS.contains(&theirs.as_str()) {
        return false;
    }
    senders
        .iter()
        .filter_map(|s| domain(s))
        .any(|d| d == theirs)
}

/// The registry facts of a mail with ticket `number` (or none), sent by `senders`,
/// decided at `now` (Unix seconds), ages counted on `calendar`; a ticket is too young below
/// `helpdesk_hours`.
pub fn ticket_facts(
    number: Option<&str>,
    answers: Option<&Answers>,
    senders: &[&str],
    now: i64,
    (calendar, helpdesk_hours): (&Calendar, u64),
) -> TicketFacts {
    let (Some(number), Some(answers)) = (number, answers) else {
        return TicketFacts::OFF;
    };
    match answers.get(&ticket_key(number)) {
        None => TicketFacts::OFF,
        Some(Lookup::Unavailable(_)) => TicketFacts {
            registry: RegistryState::Unavailable,
            ..TicketFacts::OFF
        },
        Some(Lookup::Unknown) => TicketFacts {
            registry: RegistryState::Unknown,
            ticket_known: Some(false),
            ..TicketFacts::OFF
        },
        Some(Lookup::Known(t)) => TicketFacts {
            registry: RegistryState::Known,
            ticket_known: Some(true),
            ticket_age_hours: Some(
                u64::try_from(calendar.elapsed(t.created, now) / 3_600).unwrap_or(0),
            ),
            ticket_too_young: Some(
                calendar.elapsed(t.created, now)
                    < i64::try_from(helpdesk_hours.saturating_mul(3_600)).unwrap_or(i64::MAX),
            ),
            ticket_created: Some(t.created),
            ticket_state: t.state.clone(),
            requester_matches: t
                .requester
                .as_deref()
                .map(|r| requester_matches(senders, r)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> Answers {
        let mut a = Answers::new();
        a.insert(
            ticket_key("2024-1234567"),
            Lookup::Known(TicketRecord {
                created: 1_000_000,
                requester: Some("Meena.Iyer@rites.co.in".into()),
                state: Some("Open".into()),
            }),
        );
        a.insert(ticket_key("2024-7654321"), Lookup::Unknown);
        a.insert(
            ticket_key("2024-1111111"),
            Lookup::Unavailable("connection refused".into()),
        );
        a
    }

    #[test]
    fn a_known_ticket_has_its_age_state_and_requester() {
        let a = answers();
        let f = ticket_facts(
            Some(" 2024-1234567"),
            Some(&a),
            &["meena.iyer@rites.co.in"],
            1_000_000 + 47 * 3_600 + 3_599,
            (&Calendar::Plain, 48),
        );
        assert_eq!(f.registry, RegistryState::Known);
        assert_eq!(f.ticket_known, Some(true));
        assert_eq!(f.ticket_age_hours, Some(47), "whole hours, rounded down");
        assert_eq!(f.ticket_too_young, Some(true), "47:59:59 is below 48 hours");
        assert_eq!(f.ticket_created, Some(1_000_000));
        assert_eq!(f.ticket_state.as_deref(), Some("Open"));
        assert_eq!(f.requester_matches, Some(true));
    }

    #[test]
    fn unknown_unavailable_and_not_asked_are_told_apart() {
        let a = answers();
        let facts = |n: Option<&str>, a: Option<&Answers>| {
            ticket_facts(n, a, &["x@y.in"], 0, (&Calendar::Plain, 48))
        };
        let unknown = facts(Some("2024-7654321"), Some(&a));
        assert_eq!(
            (unknown.registry, unknown.ticket_known),
            (RegistryState::Unknown, Some(false))
        );
        let down = facts(Some("2024-1111111"), Some(&a));
        assert_eq!(
            (down.registry, down.ticket_known),
            (RegistryState::Unavailable, None)
        );
        assert_eq!(facts(None, Some(&a)), TicketFacts::OFF);
        assert_eq!(facts(Some("2024-1234567"), None), TicketFacts::OFF);
    }

    #[test]
    fn the_same_organisation_matches_a_public_provider_does_not() {
        assert!(requester_matches(
            &["Clerk@RITES.co.in"],
            "meena.iyer@rites.co.in"
        ));
        assert!(requester_matches(
            &["someone@else.in", "meena.iyer@rites.co.in"],
            "Meena.Iyer@rites.co.in"
        ));
        assert!(!requester_matches(&["a@gmail.com"], "b@gmail.com"));
        assert!(requester_matches(&["B@gmail.com"], "b@gmail.com"));
        assert!(!requester_matches(&["a@rites.co.in"], "b@ritesltd.co.in"));
        assert!(!requester_matches(&["a@rites.co.in"], "not an address"));
    }

    #[test]
    fn state_names_round_trip() {
        for s in ["off", "known", "unknown", "unavailable"] {
            assert_eq!(RegistryState::parse(s).map(RegistryState::as_str), Some(s));
        }
        assert_eq!(RegistryState::parse("down"), None);
    }
}
