//! Arbitrary bytes into the receiver's resume-journal decoder: it never panics, and a journal
//! that decodes re-encodes to the same bytes with consistent counts.
#![no_main]

use hermes_proto::sync::Journal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(j) = Journal::decode(data) {
        assert_eq!(j.encode(), data, "journal encoding is not canonical");
        assert_eq!(j.encoded_len(), data.len());
        let missing = j.missing().count() as u64;
        assert_eq!(missing + j.done_chunks(), j.layout().chunk_count());
        assert_eq!(j.is_complete(), missing == 0);
        assert!(j.done_bytes() <= j.layout().size());
    }
});
