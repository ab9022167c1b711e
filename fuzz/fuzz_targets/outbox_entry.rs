//! Arbitrary bytes into the outbox entry decoder (keys and values read back from sled): never
//! panics, and what decodes round-trips through the encoder.
#![no_main]

use hermes_proto::outbox::{decode_meta, encode_entry, store_key, ENTRY_HEADER_LEN, KEY_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.len().min(KEY_LEN);
    let (key, value) = data.split_at(split);
    let head = &value[..value.len().min(ENTRY_HEADER_LEN)];
    if let Ok(m) = decode_meta(key, head, value.len()) {
        assert_eq!(store_key(&m.to, m.seq).as_slice(), key);
        let payload = &value[ENTRY_HEADER_LEN..];
        assert_eq!(
            encode_entry(&m.id, m.netuid, m.created_at, m.expires_at, payload),
            value
        );
    }
});
