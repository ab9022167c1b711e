//! Arbitrary bytes into the message-protocol decoders: session headers, `/hermes/msg/1` frames
//! and message bodies never panic, and every frame that decodes re-encodes to the same bytes.
#![no_main]

use hermes_proto::envelope::{MessageBody, SessionHeader};
use hermes_proto::frame::MsgFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = SessionHeader::decode(data) {
        assert_eq!(h.encode(), data, "session header encoding is not canonical");
        let _ = h.check(&h.recipient, &h.sender, h.kind, h.created_at, 600);
    }
    if let Ok(f) = MsgFrame::decode(data, 1 << 20) {
        assert_eq!(f.encode(), data, "message frame encoding is not canonical");
    }
    let _ = MsgFrame::decode_body(data.to_vec());
    if let Ok(b) = MessageBody::decode(data.to_vec()) {
        assert_eq!(b.encode(), data);
    }
});
