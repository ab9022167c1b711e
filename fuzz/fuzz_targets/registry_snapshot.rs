//! Arbitrary text into the static-chain snapshot parser: errors, never panics, and every entry it
//! accepts satisfies the chain's peer-id rule.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(reg) =
            hermes_actors::chain::parse_snapshot(text, std::path::Path::new("fuzz.json"))
        {
            for e in reg.entries() {
                assert!(hermes_proto::validate_peer_id(e.peer_id.as_bytes()));
            }
        }
    }
});
