//! Arbitrary bytes into the `/hermes/sync/1` frame decoders: they never panic, and every request
//! or answer header that decodes re-encodes to the same bytes.
#![no_main]

use hermes_proto::sync::wire::{AnswerHead, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(&r.encode()[..], data, "request encoding is not canonical");
    }
    if let Ok(h) = AnswerHead::decode(data) {
        assert_eq!(&h.encode()[..], data, "answer header encoding is not canonical");
    }
});
