//! `listen` and `bootstrap`: the network addresses of the config, written as multiaddr text.

use libp2p::Multiaddr;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A validated multiaddr, written as text in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr(pub Multiaddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Multiaddr>().map(Addr).map_err(|e| {
            de::Error::custom(format!(
                "invalid multiaddr `{s}` ({e}); expected e.g. `/ip4/0.0.0.0/tcp/4001` or `/ip4/127.0.0.1/udp/4001/quic-v1`"
            ))
        })
    }
}
impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}
