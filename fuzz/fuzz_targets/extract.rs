//! Any bytes as a mail in a desk's mailbox: fact extraction, `classify`, and the redirect
//! the pipeline would compose from it (see src/lib.rs for what is checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ticketgate_fuzz::extract_and_redirect(ticketgate_fuzz::setup_here(), data);
});
