//! Arbitrary text into the ticket string parser (with and without the right prefix): it never
//! panics, and a string that parses prints back to one that parses to the same ticket.
#![no_main]

use hermes_proto::sync::ticket::{Ticket, TICKET_PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for candidate in [text.to_string(), format!("{TICKET_PREFIX}{text}")] {
        if let Ok(t) = Ticket::parse(&candidate) {
            let printed = t.to_string();
            assert_eq!(Ticket::parse(&printed).as_ref(), Ok(&t));
        }
    }
});
