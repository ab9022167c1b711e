//! Arbitrary bytes into the stream decoders: control frames never panic and re-encode
//! canonically; a named `Open`'s name never opens under a key it was not sealed with, and any
//! name sanitizes to a single safe path component; chunk headers are bounded; chunk bodies under
//! a fixed key never panic the opener and never authenticate by accident.
#![no_main]

use hermes_proto::chunk::{
    decode_chunk_header, open_name, ChunkOpener, CHUNK_HEADER_LEN, MAX_CHUNK,
};
use hermes_proto::envelope::{Id128, SessionSecret, TAG_LEN};
use hermes_proto::filename::{sanitize, MAX_SAVED_NAME_LEN};
use hermes_proto::frame::{StreamControl, MAX_OPEN_NAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = StreamControl::decode(data) {
        assert_eq!(f.encode(), data, "stream control encoding is not canonical");
        if let StreamControl::Open { name: Some(n), .. } = &f {
            assert!(!n.is_empty() && n.len() <= MAX_OPEN_NAME);
            let secret = SessionSecret::from_bytes([2; 32]);
            assert!(
                open_name(&Id128([1; 16]), &secret, n).is_err(),
                "a forged name authenticated"
            );
        }
    }
    let _ = StreamControl::decode_body(data);
    if let Some(name) = sanitize(data) {
        assert!(!name.is_empty() && name.len() <= MAX_SAVED_NAME_LEN);
        assert!(!name.contains('/') && !name.contains('\\') && !name.contains(".."));
        assert!(!name.starts_with('.') && !name.chars().any(char::is_control));
    }
    if data.len() >= CHUNK_HEADER_LEN {
        let mut h = [0u8; CHUNK_HEADER_LEN];
        h.copy_from_slice(&data[..CHUNK_HEADER_LEN]);
        if let Ok((len, flags)) = decode_chunk_header(&h, MAX_CHUNK + TAG_LEN) {
            assert!(len <= MAX_CHUNK + TAG_LEN);
            let mut body = data[CHUNK_HEADER_LEN..].to_vec();
            let mut o = ChunkOpener::new(Id128([1; 16]), &SessionSecret::from_bytes([2; 32]))
                .expect("opener");
            assert!(
                o.open(flags, &mut body).is_err(),
                "a forged chunk authenticated"
            );
            assert!(o.finish().is_err());
        }
    }
});
