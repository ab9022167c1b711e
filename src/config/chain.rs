//! `chain` section: where the registry of subnet nodes comes from, and the start-up check that a
//! node is not about to refuse everyone because that registry is empty.

use super::values::one_of;
use super::{check_readable_file, Check, Config, ConfigError, HumanDuration, SubnetMode};
use hermes_actors::chain::rpc::transport::http_url;
use hermes_actors::chain::rpc::RpcKind;
use hermes_proto::chain::Registry;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Chain backend kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// The embedded development chain in `chain.path` (a directory).
    Dev,
    /// A read-only JSON snapshot in `chain.path` (a file).
    Static,
    /// A Bittensor subtensor node's JSON-RPC at `chain.url`.
    Subtensor,
    /// A Hypertensor node's JSON-RPC at `chain.url`.
    Hypertensor,
}

impl ChainKind {
    /// The RPC backend of this kind, `None` for the local ones.
    pub fn rpc(self) -> Option<RpcKind> {
        match self {
            ChainKind::Subtensor => Some(RpcKind::Subtensor),
            ChainKind::Hypertensor => Some(RpcKind::Hypertensor),
            ChainKind::Dev | ChainKind::Static => None,
        }
    }
}

impl<'de> Deserialize<'de> for ChainKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(
            d,
            &[
                ("dev", ChainKind::Dev),
                ("static", ChainKind::Static),
                ("subtensor", ChainKind::Subtensor),
                ("hypertensor", ChainKind::Hypertensor),
            ],
        )
    }
}

/// `chain` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields kind, path, url, poll_interval, max_staleness"
)]
pub struct ChainConfig {
    /// `dev`, `static`, `subtensor` or `hypertensor`.
    pub kind: ChainKind,
    /// Dev chain directory or snapshot file (`dev`, `static`).
    pub path: PathBuf,
    /// The chain node's JSON-RPC endpoint (`subtensor`, `hypertensor`): `ws://`, `wss://`,
    /// `http://` or `https://` (a Substrate node serves HTTP on its WebSocket port).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// How often the registry is re-read. Range 50ms..=10m.
    pub poll_interval: HumanDuration,
    /// How long the chain may fail to read before the last registry counts as stale and new
    /// peers are refused (`chain_stale`). Range `poll_interval`..=7d.
    pub max_staleness: HumanDuration,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            // The embedded dev chain: it works on a fresh machine with nothing else installed.
            kind: ChainKind::Dev,
            // Next to the config file (relative paths resolve against its directory), so a node
            // set up by `hermes init` finds its chain wherever it is started from.
            path: PathBuf::from("./devchain"),
            // Only the RPC kinds use it, and there is no endpoint that could be right for all.
            url: String::new(),
            // 2s: registrations show up quickly on a dev chain; a real chain's block time is
            // longer anyway.
            poll_interval: HumanDuration::secs(2),
            // 5m: rides out what usually makes a chain unreadable for a while (a chain node or
            // RPC endpoint restarting, a short partition, a dev chain held by a long command),
            // yet bounds how long a node deregistered, slashed or out of stake meanwhile can
            // still be admitted on the old registry to a few minutes, well under an epoch.
            max_staleness: HumanDuration::secs(300),
        }
    }
}

impl ChainConfig {
    pub(super) fn validate(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        check.duration(
            "chain.poll_interval",
            self.poll_interval,
            Duration::from_millis(50),
            Duration::from_secs(600),
            "50ms..=10m",
        )?;
        let week = Duration::from_secs(7 * 24 * 3600);
        check.duration(
            "chain.max_staleness",
            self.max_staleness,
            self.poll_interval.0.min(week),
            week,
            "at least chain.poll_interval, at most 7d",
        )?;
        if self.kind.rpc().is_some() {
            if self.url.is_empty() {
                return Err(check.err(
                    "chain.url",
                    "required with chain.kind subtensor or hypertensor: the chain node's RPC \
                     endpoint, e.g. ws://127.0.0.1:9944",
                ));
            }
            http_url(&self.url).map_err(|e| check.err("chain.url", e.to_string()))?;
        } else if self.kind == ChainKind::Static {
            check_readable_file(&self.path).map_err(|r| check.err("chain.path", r))?;
        } else if self.path.exists() && !self.path.is_dir() {
            return Err(check.err(
                "chain.path",
                format!(
                    "{} is not a directory (a dev chain is a directory)",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Why a node with this config and `registry` (what it read from the chain at start) would
    /// refuse every peer, if it would; `None` when the registry can admit someone.
    ///
    /// A dev chain directory that does not exist reads as an empty registry (the directory is
    /// created by the first registration), so without this check a mistyped or never-set
    /// `chain.path` only shows as every connection being refused. The runtime logs the returned
    /// text as a warning when it starts networking.
    pub fn registry_warning(&self, registry: &Registry) -> Option<String> {
        // With the firewall off the registry is never consulted.
        if !self.firewall.enabled {
            return None;
        }
        let path = self.chain.path.display();
        if registry.is_empty() {
            let (what, fix) = match self.chain.kind {
                ChainKind::Dev if !self.chain.path.exists() => (
                    format!("the dev chain directory {path} (chain.path) does not exist"),
                    format!(
                        "set chain.path to the dev chain directory the other nodes use (a relative \
                         path is resolved against the config file's directory), or register nodes \
                         with `hermes devchain register --chain {path}`"
                    ),
                ),
                ChainKind::Dev => (
                    format!("the dev chain {path} (chain.path) holds no registrations"),
                    format!("register nodes with `hermes devchain register --chain {path}`"),
                ),
                ChainKind::Static => (
                    format!("the chain snapshot {path} (chain.path) lists no nodes"),
                    "add the subnet's nodes to it".to_string(),
                ),
                ChainKind::Subtensor | ChainKind::Hypertensor => (
                    format!(
                        "the chain at {} (chain.url) lists no nodes in subnet(s) {:?} \
                         (subnets.netuids), or has not been read yet",
                        self.chain.url, self.subnets.netuids
                    ),
                    "check the subnet ids and that the endpoint serves the right chain \
                     (`hermes chain check`)"
                        .to_string(),
                ),
            };
            return Some(format!(
                "{what}: the registry is empty, so every peer is refused as unregistered (except \
                 peer ids listed in acl.allow); {fix}. Changes are picked up within \
                 chain.poll_interval ({})",
                humantime::format_duration(self.chain.poll_interval.0)
            ));
        }
        let netuids = &self.subnets.netuids;
        if self.subnets.mode == SubnetMode::Open
            || registry
                .entries()
                .iter()
                .any(|e| netuids.contains(&e.netuid))
        {
            return None;
        }
        let list: Vec<String> = netuids.iter().map(u16::to_string).collect();
        Some(format!(
            "the chain registry ({path}) has {} registration(s) but none in subnet(s) {} that this \
             node serves (subnets.netuids): every peer is refused as out of scope until nodes \
             register in one of them",
            registry.len(),
            list.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(chain: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let key = dir.path().join("hotkey");
        std::fs::write(&key, b"{}").map_err(|e| e.to_string())?;
        let text = format!(
            r#"{{"identity": {{"hotkey_file": {:?}}}, "chain": {chain}}}"#,
            key.display().to_string()
        );
        let c = Config::parse(&text, Path::new("x.json")).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn rpc_kinds_need_a_ws_or_http_url() {
        let c =
            parse(r#"{"kind": "subtensor", "url": "wss://entrypoint-finney.opentensor.ai:443"}"#)
                .unwrap();
        assert_eq!(c.chain.kind, super::ChainKind::Subtensor);
        let c = parse(r#"{"kind": "hypertensor", "url": "http://127.0.0.1:9944"}"#).unwrap();
        assert_eq!(c.chain.kind.rpc(), Some(super::RpcKind::Hypertensor));
        let e = parse(r#"{"kind": "subtensor"}"#).unwrap_err();
        assert!(e.contains("chain.url") && e.contains("required"), "{e}");
        let e = parse(r#"{"kind": "hypertensor", "url": "ftp://x"}"#).unwrap_err();
        assert!(e.contains("chain.url") && e.contains("scheme"), "{e}");
        let e = parse(r#"{"kind": "ethereum", "url": "ws://x"}"#).unwrap_err();
        assert!(e.contains("subtensor") && e.contains("hypertensor"), "{e}");
    }
}
