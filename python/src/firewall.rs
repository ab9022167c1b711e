//! The firewall from Python: its counters, and the ACL and subnet scope replaced at runtime.
//!
//! Arguments take the forms of the config file's `acl` and `subnets` sections (entries are
//! SS58 addresses or peer ids; a scope is a mode and its netuids) and are checked the same way,
//! with the offending argument and entry named, before anything reaches the node.

use crate::errors::Failure;
use hermes::config::AclEntry;
use hermes::proto::firewall::{Acl, Scope};
use pyo3::prelude::*;
use std::collections::{BTreeSet, HashMap};

/// Most netuids in a whitelist scope (as in the config's `subnets.netuids`).
const MAX_NETUIDS: usize = hermes::proto::binding::MAX_NETUIDS;

/// Denial counters per reason and a summary of the policy in force.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct FirewallStats {
    /// Connections and messages refused since start, per reason (`"unregistered"`,
    /// `"chain_stale"`, `"too_many_from_ip"`, ...).
    denied: HashMap<String, u64>,
    /// Registry entries known.
    registry_entries: usize,
    /// Whether the registry is stale (new peers refused as `chain_stale`).
    chain_stale: bool,
    /// The scope's mode: `"single"`, `"whitelist"` or `"open"`.
    scope_mode: String,
    /// The scope's netuids, ascending (empty when open).
    scope_netuids: Vec<u16>,
    /// ACL sizes: allow entries, deny entries.
    acl_entries: (usize, usize),
}

impl FirewallStats {
    pub(crate) fn new(s: &hermes::FirewallStats) -> Self {
        let (scope_mode, scope_netuids) = match &s.scope {
            Scope::Single(n) => ("single", vec![*n]),
            Scope::Whitelist(set) => ("whitelist", set.iter().copied().collect()),
            Scope::Open => ("open", Vec::new()),
        };
        FirewallStats {
            denied: s
                .denied
                .iter()
                .map(|(r, n)| (r.as_str().to_string(), *n))
                .collect(),
            registry_entries: s.registry_entries,
            chain_stale: s.chain_stale,
            scope_mode: scope_mode.into(),
            scope_netuids,
            acl_entries: s.acl_entries,
        }
    }
}

#[pymethods]
impl FirewallStats {
    fn __repr__(&self) -> String {
        format!(
            "FirewallStats(denied={}, registry_entries={}, chain_stale={}, scope={}{:?})",
            self.denied.values().sum::<u64>(),
            self.registry_entries,
            if self.chain_stale { "True" } else { "False" },
            self.scope_mode,
            self.scope_netuids
        )
    }
}

/// An ACL from allow and deny lists of SS58 addresses or peer ids.
///
/// # Errors
/// `InvalidArgument` naming the list and the index of an entry that is neither.
pub(crate) fn parse_acl(allow: &[String], deny: &[String]) -> Result<Acl, Failure> {
    let parse = |list: &str, entries: &[String]| -> Result<Vec<AclEntry>, Failure> {
        entries
            .iter()
            .enumerate()
            .map(|(i, s)| {
                AclEntry::parse(s)
                    .map_err(|e| Failure::invalid(format!("invalid argument: {list}[{i}]: {e}")))
            })
            .collect()
    };
    let config = hermes::config::AclConfig {
        allow: parse("allow", allow)?,
        deny: parse("deny", deny)?,
    };
    Ok(config.to_acl())
}

/// A subnet scope from a mode and its netuids, with the config's rules: `single` takes exactly
/// one netuid, `whitelist` one or more (no repeats), `open` none.
///
/// # Errors
/// `InvalidArgument` saying which rule the arguments break.
pub(crate) fn parse_scope(mode: &str, netuids: &[u16]) -> Result<Scope, Failure> {
    let bad = |m: String| Failure::invalid(format!("invalid argument: {m}"));
    if netuids.len() > MAX_NETUIDS {
        return Err(bad(format!(
            "netuids: {} entries; at most {MAX_NETUIDS}",
            netuids.len()
        )));
    }
    let set: BTreeSet<u16> = netuids.iter().copied().collect();
    if set.len() != netuids.len() {
        return Err(bad("netuids: a netuid is listed twice".into()));
    }
    match (mode, netuids) {
        ("single", [n]) => Ok(Scope::Single(*n)),
        ("single", _) => Err(bad(format!(
            "mode `single` needs exactly one netuid, got {}",
            netuids.len()
        ))),
        ("whitelist", []) => Err(bad("mode `whitelist` needs at least one netuid".into())),
        ("whitelist", _) => Ok(Scope::Whitelist(set)),
        ("open", []) => Ok(Scope::Open),
        ("open", _) => Err(bad("mode `open` takes no netuids".into())),
        (other, _) => Err(bad(format!(
            "mode `{other}`: expected one of single, whitelist, open"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_config_rules() {
        assert_eq!(parse_scope("single", &[3]).ok(), Some(Scope::Single(3)));
        assert_eq!(
            parse_scope("whitelist", &[5, 3]).ok(),
            Some(Scope::Whitelist([3, 5].into()))
        );
        assert_eq!(parse_scope("open", &[]).ok(), Some(Scope::Open));
        for (mode, netuids, says) in [
            ("single", &[][..], "exactly one netuid, got 0"),
            ("single", &[1, 2][..], "exactly one netuid, got 2"),
            ("whitelist", &[][..], "at least one netuid"),
            ("whitelist", &[4, 4][..], "listed twice"),
            ("open", &[1][..], "takes no netuids"),
            ("closed", &[][..], "mode `closed`"),
        ] {
            let e = parse_scope(mode, netuids).expect_err(mode);
            assert!(e.message().contains(says), "{mode}: {}", e.message());
        }
    }

    #[test]
    fn acl_entries_are_named_when_bad() {
        let ss58 = hermes::proto::Hotkey([7; 32]).to_ss58(42);
        let acl = parse_acl(std::slice::from_ref(&ss58), &[]).expect("valid");
        assert_eq!(acl.allow_ss58.len(), 1);
        let e = parse_acl(&[], &[ss58, "nope".into()]).expect_err("bad entry");
        assert!(
            e.message().contains("deny[1]") && e.message().contains("`nope`"),
            "{}",
            e.message()
        );
    }
}
