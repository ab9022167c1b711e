//! Arbitrary bytes into the binding-record decoder: never panics, and whatever decodes re-encodes
//! to exactly the same bytes (one encoding per record); verification never panics either.
#![no_main]

use hermes_proto::SignedBinding;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = SignedBinding::decode(data) {
        assert_eq!(b.encode(), data, "decode/encode is not canonical");
        assert_eq!(b.encoded_len(), data.len());
        let peer = b.record.peer_id.clone();
        let _ = b.verify(&peer, None, b.record.issued_at);
    }
});
