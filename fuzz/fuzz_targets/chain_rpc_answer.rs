//! Arbitrary bytes into the chain RPC backends' decoders: storage values of both chains, a
//! `state_queryStorageAt` answer, and runtime metadata checked against both chains' layouts.
//! Errors, never panics.
#![no_main]

use hermes_actors::chain::rpc::{self, metadata, RpcKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(l) = rpc::decode_listed(RpcKind::Subtensor, rest) {
                assert_eq!(l.account.len(), 32);
            }
        }
        1 => {
            if let Ok(l) = rpc::decode_listed(RpcKind::Hypertensor, rest) {
                assert_eq!(l.account.len(), 20);
            }
        }
        2 => {
            let _ = rpc::decode_stake(RpcKind::Subtensor, rest);
            let _ = rpc::decode_stake(RpcKind::Hypertensor, rest);
        }
        3 => {
            let _ = rpc::parse_changes(rest);
        }
        _ => {
            let _ = metadata::check(rest, rpc::subtensor::EXPECTED);
            let _ = metadata::check(rest, rpc::hypertensor::EXPECTED);
        }
    }
});
