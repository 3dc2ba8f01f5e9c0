//! Finding the CRM ticket number in a mail (SPEC 3). Stub: being written.

use mail_parser::Message;

use crate::facts::Ticket;
use crate::rules::{Limits, TicketPattern};

/// The ticket number of `msg`, by the precedence of [`crate::rules::TicketSource`].
pub fn find_ticket(
    _msg: &Message<'_>,
    _patterns: &[TicketPattern],
    _limits: &Limits,
) -> Option<Ticket> {
    None
}
