//! Suggesting the desk whose nature of issue fits a mail's text best. Stub: being written.

use crate::rules::DeskProfile;

/// The best-fitting desk's name, or `None` when no desk's phrases match.
pub fn suggest_desk(_subject: &str, _body: &str, _desks: &[DeskProfile]) -> Option<String> {
    None
}
