//! Structured fuzzing: arbitrary well-formed records, signed by a fixed key, must round-trip and
//! verify, and must stop verifying when any single byte of the encoding changes.
#![no_main]

use hermes_proto::BindingRecord;
use libfuzzer_sys::fuzz_target;
use sp_core::Pair as _;

fuzz_target!(|input: (BindingRecord, u16)| {
    let (mut rec, flip) = input;
    let pair = sp_core::sr25519::Pair::from_seed(&[7u8; 32]);
    rec.hotkey = hermes_proto::Hotkey::of(&pair);
    let peer = rec.peer_id.clone();
    let now = rec.issued_at;
    let Ok(signed) = rec.sign(&pair) else { return };
    let bytes = signed.encode();
    let back = hermes_proto::SignedBinding::decode(&bytes).expect("own encoding decodes");
    assert_eq!(back, signed);
    back.verify(&peer, None, now)
        .expect("own signature verifies");
    let mut mutated = bytes.clone();
    let i = usize::from(flip) % mutated.len();
    mutated[i] ^= 0x01;
    if let Ok(m) = hermes_proto::SignedBinding::decode(&mutated) {
        assert!(
            m.verify(&peer, None, now).is_err(),
            "flipped byte {i} still verifies"
        );
    }
});
