//! Any sender name, Cc address, subject, body and original (NUL-separated) through
//! `compose`: no panic, no recipient or header that the spec did not ask for.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ticketgate_fuzz::compose_fields(data);
});
