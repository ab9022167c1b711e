//! Arbitrary bytes into the Sync Engine ticket decoder: it never panics, every ticket that
//! decodes re-encodes to the same bytes, survives its string form, and verifying or opening it
//! never panics (a random ticket never verifies: its signature cannot be valid).
#![no_main]

use hermes_proto::envelope::Prekey;
use hermes_proto::sync::Ticket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Ticket::decode(data) {
        assert_eq!(t.encode(), data, "ticket encoding is not canonical");
        assert_eq!(t.encoded_len(), data.len());
        assert_eq!(Ticket::parse(&t.to_string()).as_ref(), Ok(&t));
        let _ = t.verify(t.body.issued_at, &t.body.receiver);
        let _ = t.open_key(&Prekey::from_seed(&[7; 32]));
    }
});
