//! Arbitrary bytes into the Sync Engine manifest decoder: it never panics, never allocates past
//! its bound, and every manifest that decodes re-encodes to the same bytes and verifies against
//! its own root (and against no root of other bytes).
#![no_main]

use hermes_proto::sync::manifest::{root_of, Manifest, ManifestError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode(), data, "manifest encoding is not canonical");
        assert_eq!(m.encoded_len(), data.len());
        let root = root_of(data);
        assert_eq!(m.root(), root);
        let back = Manifest::decode_verified(data, &root, m.layout(), m.cipher())
            .expect("a manifest verifies against its own root");
        assert_eq!(back, m);
        let mut other = root;
        other[0] ^= 1;
        assert_eq!(
            Manifest::decode_verified(data, &other, m.layout(), m.cipher()),
            Err(ManifestError::RootMismatch)
        );
    }
});
