//! Arbitrary bytes into the stream decoders: control frames never panic and re-encode
//! canonically; chunk headers are bounded; chunk bodies under a fixed key never panic the opener
//! and never authenticate by accident.
#![no_main]

use hermes_proto::chunk::{decode_chunk_header, ChunkOpener, CHUNK_HEADER_LEN, MAX_CHUNK};
use hermes_proto::envelope::{Id128, SessionSecret, TAG_LEN};
use hermes_proto::frame::StreamControl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = StreamControl::decode(data) {
        assert_eq!(f.encode(), data, "stream control encoding is not canonical");
    }
    let _ = StreamControl::decode_body(data);
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
