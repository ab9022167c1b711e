//! `acl` section: global allow and deny lists of hotkeys (SS58) and peer ids.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// `acl` section: entries are SS58 addresses or peer ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields allow, deny"
)]
pub struct AclConfig {
    /// Always admitted (peer ids even when unregistered). When non-empty, only these are admitted.
    pub allow: Vec<AclEntry>,
    /// Always refused; wins over `allow`.
    pub deny: Vec<AclEntry>,
}

// Written out, not derived, so that the reason for each default sits next to it.
#[allow(clippy::derivable_impls)]
impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            // Empty: admission is decided by the chain registry, not by a hand-kept list.
            allow: Vec::new(),
            // Empty: nobody is refused beyond what the firewall's rules refuse.
            deny: Vec::new(),
        }
    }
}

/// An SS58 address or a peer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclEntry {
    /// A wallet hotkey.
    Ss58(hermes_proto::Hotkey, String),
    /// A libp2p peer id.
    Peer(libp2p::PeerId),
}

impl AclEntry {
    /// Parses an SS58 address or a peer id.
    ///
    /// # Errors
    /// A message saying what was expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Ok(p) = s.parse::<libp2p::PeerId>() {
            return Ok(AclEntry::Peer(p));
        }
        match hermes_proto::Hotkey::from_ss58(s) {
            Ok((k, _)) => Ok(AclEntry::Ss58(k, s.to_string())),
            Err(_) => Err(format!("`{s}` is neither an SS58 address nor a peer id")),
        }
    }
}

impl<'de> Deserialize<'de> for AclEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AclEntry::parse(&s).map_err(de::Error::custom)
    }
}
impl Serialize for AclEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AclEntry::Ss58(_, text) => s.serialize_str(text),
            AclEntry::Peer(p) => s.collect_str(p),
        }
    }
}

impl AclConfig {
    /// The ACL the firewall enforces.
    pub fn to_acl(&self) -> hermes_proto::firewall::Acl {
        let mut acl = hermes_proto::firewall::Acl::default();
        for e in &self.allow {
            match e {
                AclEntry::Ss58(k, _) => acl.allow_ss58.insert(*k),
                AclEntry::Peer(p) => acl.allow_peers.insert(p.to_base58()),
            };
        }
        for e in &self.deny {
            match e {
                AclEntry::Ss58(k, _) => acl.deny_ss58.insert(*k),
                AclEntry::Peer(p) => acl.deny_peers.insert(p.to_base58()),
            };
        }
        acl
    }
}
