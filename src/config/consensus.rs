//! `consensus` section: whether and how this node takes part in its subnets' epochs (election,
//! proposal, attestation) on a chain that has them.

use super::{Check, ConfigError, HumanDuration, SubnetMode};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Most outcomes `consensus.events_capacity` may hold.
pub const MAX_CONSENSUS_EVENTS: usize = 4096;

/// `consensus` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields enabled, poll_interval, netuids, events_capacity"
)]
pub struct ConsensusConfig {
    /// Take part in the epochs of each subnet in `netuids`, when the chain backend has epochs
    /// (the dev chain does, a static snapshot does not: the node then logs it once and runs
    /// without). Off: no ConsensusActor starts, nothing is signed.
    pub enabled: bool,
    /// How often the chain's head and the current epoch are read. Range 50ms..=10m.
    pub poll_interval: HumanDuration,
    /// Subnets to take part in; empty: every subnet of `subnets.netuids`. Each must be one of
    /// `subnets.netuids` unless `subnets.mode` is `open`.
    pub netuids: Vec<u16>,
    /// Epoch outcomes kept for a slow reader of `RuntimeHandle::consensus_events` before it
    /// misses the oldest. Range 1..=4096.
    pub events_capacity: usize,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            // On: a subnet pays nodes only in epochs that finalize, so a registered validator that
            // does not attest costs its subnet; a chain without epochs turns it off by itself.
            enabled: true,
            // 2s, as chain.poll_interval: a tenth of the dev chain's 20-second epoch, so the
            // elected node proposes and the others attest well within it; a real chain's epochs
            // are longer still.
            poll_interval: HumanDuration::secs(2),
            // Empty: the subnets the node serves are the ones it is registered in.
            netuids: Vec::new(),
            // 64: a reader that looks once a minute misses nothing at one epoch per second
            // across a few subnets, and an outcome is a few hundred bytes.
            events_capacity: 64,
        }
    }
}

impl ConsensusConfig {
    pub(super) fn validate(
        &self,
        check: &Check<'_>,
        subnets: &super::SubnetsConfig,
    ) -> Result<(), ConfigError> {
        check.duration(
            "consensus.poll_interval",
            self.poll_interval,
            Duration::from_millis(50),
            Duration::from_secs(600),
            "50ms..=10m",
        )?;
        check.count(
            "consensus.events_capacity",
            self.events_capacity,
            1,
            MAX_CONSENSUS_EVENTS,
            "1..=4096",
        )?;
        for (i, n) in self.netuids.iter().enumerate() {
            let field = format!("consensus.netuids[{i}]");
            if self.netuids[..i].contains(n) {
                return Err(check.err(field, format!("netuid {n} is listed twice")));
            }
            if subnets.mode != SubnetMode::Open && !subnets.netuids.contains(n) {
                return Err(check.err(
                    field,
                    format!(
                        "netuid {n} is not one of subnets.netuids {:?}: a node takes part in the \
                         consensus of the subnets it serves",
                        subnets.netuids
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The subnets whose epochs this node takes part in, given the subnets it serves.
    pub fn effective_netuids(&self, served: &[u16]) -> Vec<u16> {
        if self.netuids.is_empty() {
            served.to_vec()
        } else {
            self.netuids.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, SubnetMode};
    use std::path::Path;

    fn field_of(json: &str) -> Option<String> {
        let c = Config::parse(json, Path::new("c.json")).unwrap();
        let check = crate::config::Check {
            origin: Path::new("c.json"),
        };
        c.consensus
            .validate(&check, &c.subnets)
            .err()
            .and_then(|e| e.field().map(str::to_string))
    }

    #[test]
    fn consensus_section_is_checked() {
        let sub = r#""subnets": {"mode": "whitelist", "netuids": [3, 4]}"#;
        assert_eq!(
            field_of(&format!(r#"{{{sub}, "consensus": {{"netuids": [4]}}}}"#)),
            None
        );
        assert_eq!(
            field_of(&format!(r#"{{{sub}, "consensus": {{"netuids": [5]}}}}"#)).as_deref(),
            Some("consensus.netuids[0]")
        );
        assert_eq!(
            field_of(&format!(r#"{{{sub}, "consensus": {{"netuids": [3, 3]}}}}"#)).as_deref(),
            Some("consensus.netuids[1]")
        );
        assert_eq!(
            field_of(r#"{"consensus": {"poll_interval": "10ms"}}"#).as_deref(),
            Some("consensus.poll_interval")
        );
        assert_eq!(
            field_of(r#"{"consensus": {"events_capacity": 0}}"#).as_deref(),
            Some("consensus.events_capacity")
        );
        // Open mode: any subnet the node is registered in.
        assert_eq!(field_of(r#"{"consensus": {"netuids": [9]}}"#), None);
        let c = Config::default().with_subnets(SubnetMode::Whitelist, vec![3, 4]);
        assert_eq!(
            c.consensus.effective_netuids(&c.subnets.netuids),
            vec![3, 4]
        );
    }
}
