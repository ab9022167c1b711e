//! Arbitrary bytes into the chain RPC backends' decoders: storage values of both chains, a
//! `state_queryStorageAt` answer, and runtime metadata checked against both chains' layouts
//! (with Hypertensor's constants read as the backend reads them).
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
            // The Hypertensor read also takes the constants it needs (`EpochLength`): the
            // same path as the backend's, which asks for both from one decoded blob.
            if let Ok(values) = metadata::check_and_read(
                rest,
                rpc::hypertensor::EXPECTED,
                rpc::hypertensor::CONSTANTS,
            ) {
                assert_eq!(values.len(), rpc::hypertensor::CONSTANTS.len());
            }
        }
    }
});
