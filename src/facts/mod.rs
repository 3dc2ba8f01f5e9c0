//! Facts about one mail (SPEC 3), computed purely from the parsed message, the rules and the
//! state known before it (`Known`). No I/O here: the pipeline reads `Known` from the store.

pub mod automatic;
pub mod suggest;
pub mod ticket;

use crate::rules::TicketSource;

/// A CRM ticket number and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ticket {
    pub number: String,
    pub source: TicketSource,
    /// Name of the pattern that matched.
    pub pattern: String,
}
