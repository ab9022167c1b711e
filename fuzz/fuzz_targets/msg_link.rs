//! Arbitrary frames into the receiving end of a message link (after a real session is opened):
//! the state machine never panics, and nothing forged is ever handed out as a message.
#![no_main]

use hermes_proto::envelope::{
    seal_session, Prekey, SessionHeader, SessionKind, SessionRequest, SessionSecret,
};
use hermes_proto::frame::MsgFrame;
use hermes_proto::hotkey::Hotkey;
use hermes_proto::msglink::{LinkReceiver, ReceiverStep};
use libfuzzer_sys::fuzz_target;
use sp_core::{sr25519, Pair as _};
use std::sync::OnceLock;

const NOW: u64 = 1_800_000_000;

/// One real session, set up once (signing and key agreement are slow under the sanitizer).
fn session() -> &'static (SessionHeader, [u8; 32], Hotkey, Hotkey) {
    static S: OnceLock<(SessionHeader, [u8; 32], Hotkey, Hotkey)> = OnceLock::new();
    S.get_or_init(|| {
        let alice = sr25519::Pair::from_seed(&[1; 32]);
        let bob = Hotkey::of(&sr25519::Pair::from_seed(&[2; 32]));
        let prekey = Prekey::from_seed(&[3; 32]);
        let mut rng = hpke::rand_core::UnwrapErr(getrandom::SysRng);
        let req = SessionRequest {
            kind: SessionKind::Messages,
            recipient: bob,
            prekey: prekey.public(),
            netuid: 0,
        };
        let (h, _) = seal_session(&alice, &req, NOW, &mut rng).expect("seal");
        let secret = *h.open(&prekey).expect("open").expose();
        (h, secret, bob, Hotkey::of(&alice))
    })
}

fuzz_target!(|data: &[u8]| {
    let (h, secret, bob, alice) = session();
    let mut rx = LinkReceiver::new(*bob, *alice, 600);
    rx.install(h, SessionSecret::from_bytes(*secret));
    // Split the input into frames by their own length prefixes.
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let end = 4usize.saturating_add(len).min(rest.len());
        if let Ok(f) = MsgFrame::decode(&rest[..end], 1 << 16) {
            if let ReceiverStep::Message { .. } = rx.on_frame(f, NOW) {
                panic!("a forged frame opened as a message");
            }
        }
        rest = &rest[end..];
    }
});
