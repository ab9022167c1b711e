//! The control socket's `consensus` command: every subnet's [`ConsensusStatus`] as JSON, as
//! `hermes consensus status --json` prints it.

use crate::{ConsensusStatus, EpochOutcome, RuntimeHandle};
use hermes_proto::consensus::{Change, Removal};
use serde_json::{json, Value};

/// One epoch outcome as JSON (hotkeys as SS58 with `prefix`).
pub fn outcome_json(o: &EpochOutcome, prefix: u16) -> Value {
    let changes: Vec<Value> = o
        .changes
        .iter()
        .map(|c| match c {
            Change::Promoted { hotkey, from, to } => json!({
                "kind": "promoted", "hotkey": hotkey.to_ss58(prefix),
                "from": from.as_str(), "to": to.as_str(),
            }),
            Change::Punished {
                hotkey,
                penalties,
                reputation_ppm,
            } => json!({
                "kind": "punished", "hotkey": hotkey.to_ss58(prefix),
                "penalties": penalties, "reputation": f64::from(*reputation_ppm) / 1e6,
            }),
            Change::Removed { hotkey, reason } => json!({
                "kind": "removed", "hotkey": hotkey.to_ss58(prefix),
                "reason": match reason {
                    Removal::MaxPenalties => "max_penalties",
                    Removal::ReputationFloor => "reputation_floor",
                },
            }),
        })
        .collect();
    json!({
        "netuid": o.netuid,
        "epoch": o.epoch,
        "elected": o.elected.map(|h| h.to_ss58(prefix)),
        "proposal": o.proposal.map(hex::encode),
        "attestations": o.attestations,
        "validators": o.validators,
        "verdict": o.verdict.as_str(),
        "proposed": o.proposed,
        "attested": o.attested,
        "changes": changes,
    })
}

/// One subnet's status as JSON.
pub fn status_json(s: &ConsensusStatus, prefix: u16) -> Value {
    let this_epoch = |d: Option<(u64, [u8; 32])>| match (d, s.epoch) {
        (Some((e, _)), Some(now)) => e == now,
        _ => false,
    };
    json!({
        "netuid": s.netuid,
        "block": s.block,
        "epoch": s.epoch,
        "validator": s.validator,
        "class": s.standing.map_or("unregistered", |st| st.class.as_str()),
        "penalties": s.standing.map(|st| st.penalties),
        "reputation": s.standing.map(|st| f64::from(st.reputation_ppm) / 1e6),
        "elected": s.elected.map(|h| h.to_ss58(prefix)),
        "attestations": s.attestations.0,
        "validators": s.attestations.1,
        "proposed": this_epoch(s.duties.proposed),
        "attested": this_epoch(s.duties.attested),
        "last_proposed_epoch": s.duties.proposed.map(|(e, _)| e),
        "last_attested_epoch": s.duties.attested.map(|(e, _)| e),
        "last_outcome": s.last_outcome.as_ref().map(|o| outcome_json(o, prefix)),
        "last_error": s.last_error,
        "evidence": s.evidence,
        "bad_records": s
            .bad_records
            .iter()
            .map(|(r, n)| (r.as_str().to_string(), Value::from(n)))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// `{"consensus": [status…], "off": reason or null}`.
pub(crate) async fn answer(rt: &RuntimeHandle) -> Value {
    match rt.consensus_statuses().await {
        Ok(list) => json!({
            "consensus": list.iter().map(|s| status_json(s, rt.ss58_prefix())).collect::<Vec<_>>(),
            "off": rt.consensus_off(),
        }),
        Err(e) => super::error(e),
    }
}
