//! Arbitrary bytes into the consensus attestation decoder and the node's duty record: never
//! panics, and whatever decodes re-encodes to the same bytes.
#![no_main]

use hermes_proto::consensus::{Duties, SignedAttestation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = SignedAttestation::decode(data) {
        assert_eq!(a.encode(), data, "attestation encoding is not canonical");
        let _ = a.verify_signature();
    }
    if let Ok(d) = Duties::decode(data) {
        assert_eq!(d.encode(), data, "duties encoding is not canonical");
    }
});
