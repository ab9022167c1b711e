//! `subnets` section: the subnets this node serves and how they scope admission.

use super::values::one_of;
use super::{Check, ConfigError, MAX_NETUIDS};
use serde::{Deserialize, Deserializer, Serialize};

/// How peers' subnets restrict who may connect (enforced by the firewall).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubnetMode {
    /// Exactly one subnet; peers must be registered in it.
    Single,
    /// Peers must be registered in at least one of the listed subnets.
    Whitelist,
    /// Relay for any registered peer, whatever its subnet.
    Open,
}

impl<'de> Deserialize<'de> for SubnetMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(
            d,
            &[
                ("single", SubnetMode::Single),
                ("whitelist", SubnetMode::Whitelist),
                ("open", SubnetMode::Open),
            ],
        )
    }
}

/// `subnets` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields mode, netuids"
)]
pub struct SubnetsConfig {
    /// Admission scope.
    pub mode: SubnetMode,
    /// Subnets this node serves (netuids, 0..=65535, no duplicates).
    pub netuids: Vec<u16>,
}

impl Default for SubnetsConfig {
    fn default() -> Self {
        SubnetsConfig {
            // Open: a fresh node talks to any registered peer, and needs no netuid to start.
            mode: SubnetMode::Open,
            // None: a node serves no subnet until told which; `open` needs none.
            netuids: Vec::new(),
        }
    }
}

impl SubnetsConfig {
    pub(super) fn validate(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        if self.netuids.len() > MAX_NETUIDS {
            return Err(check.err(
                "subnets.netuids",
                format!("{} entries; at most {MAX_NETUIDS}", self.netuids.len()),
            ));
        }
        for (i, n) in self.netuids.iter().enumerate() {
            if self.netuids[..i].contains(n) {
                return Err(check.err(
                    format!("subnets.netuids[{i}]"),
                    format!("netuid {n} is listed twice"),
                ));
            }
        }
        match (self.mode, self.netuids.len()) {
            (SubnetMode::Single, 1) | (SubnetMode::Open, _) => Ok(()),
            (SubnetMode::Whitelist, n) if n > 0 => Ok(()),
            (SubnetMode::Single, n) => Err(check.err(
                "subnets.netuids",
                format!("mode `single` needs exactly one netuid, got {n}"),
            )),
            (SubnetMode::Whitelist, _) => Err(check.err(
                "subnets.netuids",
                "mode `whitelist` needs at least one netuid",
            )),
        }
    }
}
