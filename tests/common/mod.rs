//! Helpers shared by the integration tests: real key files and configs in temp dirs.
#![allow(dead_code, unreachable_pub, missing_docs)]

use hermes::config::{ChainKind, SubnetMode};
use hermes::{Config, HotkeyPair};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A node directory with a freshly generated Bittensor hotkey file and a config.
pub struct NodeDir {
    pub dir: tempfile::TempDir,
    pub hotkey_file: PathBuf,
    pub ss58: String,
}

impl NodeDir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let hotkey_file = dir.path().join("wallet").join("hotkeys").join("default");
        let (key, file) = HotkeyPair::generate();
        file.write_new(&hotkey_file).expect("write hotkey");
        NodeDir {
            ss58: key.public().to_ss58(42),
            dir,
            hotkey_file,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config(&self) -> Config {
        Config::default()
            .with_data_dir(self.data_dir())
            .with_hotkey_file(&self.hotkey_file)
            .with_subnets(SubnetMode::Whitelist, vec![3, 42])
            .with_log_level("warn")
            .with_chain(ChainKind::Dev, self.dir.path().join("chain"))
            .with_listen(vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")])
    }

    /// Writes the config as JSON and returns its path.
    pub fn write_config(&self) -> PathBuf {
        let p = self.dir.path().join("hermes.json");
        std::fs::write(&p, self.config().to_pretty_json()).expect("write config");
        p
    }
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Number of threads in this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Number of open file descriptors in this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A dev chain in a temp dir shared by a test cluster.
pub struct DevChainDir {
    pub dir: tempfile::TempDir,
}

impl DevChainDir {
    pub fn new() -> Self {
        DevChainDir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("chain")
    }

    pub fn register(&self, netuid: u16, node: &NodeDir, stake: u128) {
        use hermes_actors::chain::DevChain;
        use hermes_proto::chain::{NodeClass, NodeEntry};
        let (hotkey, _) = hermes::proto::Hotkey::from_ss58(&node.ss58).expect("ss58");
        DevChain::new(self.path())
            .register_sync(NodeEntry {
                netuid,
                hotkey,
                peer_id: node.peer_id().to_base58(),
                stake,
                class: NodeClass::Registered,
            })
            .expect("register");
    }
}

impl NodeDir {
    /// The node's transport key (created now if needed), so its peer id is known before start.
    pub fn peer_id(&self) -> libp2p::PeerId {
        hermes::transport_key(&self.data_dir().join("transport.key"))
            .expect("transport key")
            .public()
            .to_peer_id()
    }

    /// The node's hotkey pair, to sign records by hand.
    pub fn hotkey(&self) -> HotkeyPair {
        HotkeyPair::load_bittensor_file(&self.hotkey_file).expect("hotkey")
    }

    /// A config for a cluster node: loopback, port 0, the shared dev chain, fast polling.
    pub fn cluster_config(&self, chain: &DevChainDir, netuids: Vec<u16>) -> Config {
        let mut c = self
            .config()
            .with_chain(hermes::config::ChainKind::Dev, chain.path())
            .with_subnets(SubnetMode::Whitelist, netuids);
        c.chain.poll_interval = hermes::config::HumanDuration(Duration::from_millis(100));
        c.firewall.min_stake = 100;
        c.firewall.max_conns_per_ip = 64;
        c.firewall.binding_timeout = hermes::config::HumanDuration(Duration::from_secs(5));
        c
    }
}

/// Polls an async condition until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Loopback TCP listen address on a free port.
pub const TCP: &str = "/ip4/127.0.0.1/tcp/0";

/// Starts a runtime.
pub async fn start(cfg: hermes::Config) -> hermes::RuntimeHandle {
    hermes::Runtime::builder(cfg).start().await.expect("start")
}

/// The node's first listen address, once bound.
pub async fn addr(rt: &hermes::RuntimeHandle) -> libp2p::Multiaddr {
    assert!(
        eventually(Duration::from_secs(20), || async {
            !rt.listen_addrs().await.unwrap().is_empty()
        })
        .await,
        "the node never listened"
    );
    rt.listen_addrs().await.unwrap()[0].clone()
}

/// The IP socket address of the node's first listen address (see [`addr`]): its TCP port, or
/// its UDP port for QUIC.
pub async fn listen_socket(rt: &hermes::RuntimeHandle) -> std::net::SocketAddr {
    use libp2p::multiaddr::Protocol;
    let a = addr(rt).await;
    let (mut ip, mut port) = (None, None);
    for p in a.iter() {
        match p {
            Protocol::Ip4(x) => ip = Some(x),
            Protocol::Tcp(x) | Protocol::Udp(x) => port = Some(x),
            _ => {}
        }
    }
    std::net::SocketAddr::from((ip.expect("ip4 listen address"), port.expect("port")))
}

/// Two nodes registered in subnet 3 of a fresh dev chain, both listening on `listen`, the second
/// bootstrapped to the first; `tweak` adjusts both configs. Returns the chain (keep it alive),
/// the two node directories and the two runtimes, first node first.
pub async fn linked_pair(
    listen: &str,
    tweak: impl Fn(&mut hermes::Config),
) -> (
    DevChainDir,
    NodeDir,
    NodeDir,
    hermes::RuntimeHandle,
    hermes::RuntimeHandle,
) {
    let chain = DevChainDir::new();
    let (na, nb) = (NodeDir::new(), NodeDir::new());
    chain.register(3, &na, 1_000);
    chain.register(3, &nb, 1_000);
    let cfg = |n: &NodeDir| {
        let mut c = n
            .cluster_config(&chain, vec![3])
            .with_listen(vec![listen.parse().expect("listen address")]);
        tweak(&mut c);
        c
    };
    let a = start(cfg(&na)).await;
    let boot = addr(&a).await;
    let b = start(cfg(&nb).with_bootstrap(vec![boot])).await;
    (chain, na, nb, a, b)
}

/// Waits until `rt` has verified the node of `ss58`.
pub async fn sees(rt: &hermes::RuntimeHandle, ss58: &str) -> bool {
    eventually(Duration::from_secs(20), || async {
        rt.peers().await.unwrap().iter().any(|p| p.ss58 == ss58)
    })
    .await
}

/// Reads one length-prefixed frame body from a raw substream.
pub async fn read_frame_body<R: futures::AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    use futures::AsyncReadExt;
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// The operating system's CSPRNG in the form the envelope functions take.
pub fn os_rng() -> impl hpke::rand_core::CryptoRng {
    hpke::rand_core::UnwrapErr(getrandom::SysRng)
}

/// How many connections or messages `rt`'s firewall has refused for `reason`.
pub async fn denied(
    rt: &hermes::RuntimeHandle,
    reason: hermes::proto::firewall::DenyReason,
) -> u64 {
    rt.firewall_stats().await.unwrap().denied(reason)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl NodeDir {
    /// An unsigned binding record under this node's hotkey for `peer` (its own peer id, or
    /// another's to forge one): subnet 3, valid for an hour from now.
    pub fn binding_record(&self, peer: libp2p::PeerId) -> hermes::proto::BindingRecord {
        let now = unix_now();
        hermes::proto::BindingRecord {
            hotkey: self.hotkey().public(),
            ss58_prefix: 42,
            peer_id: peer.to_bytes(),
            netuids: vec![3],
            prekey: [1; 32],
            issued_at: now,
            expires_at: now + 3600,
        }
    }

    /// [`NodeDir::binding_record`], signed by this node's hotkey.
    pub fn signed_binding(&self, peer: libp2p::PeerId) -> hermes::proto::SignedBinding {
        self.binding_record(peer)
            .sign(self.hotkey().pair())
            .expect("sign binding")
    }
}

impl DevChainDir {
    /// Registers `peer` (someone else's peer id) under the hotkey of `owner` in `netuid`, as a
    /// validator with a large stake.
    pub fn register_foreign(&self, netuid: u16, owner: &NodeDir, peer: libp2p::PeerId) {
        use hermes::proto::chain::{NodeClass, NodeEntry};
        hermes_actors::chain::DevChain::new(self.path())
            .register_sync(NodeEntry {
                netuid,
                hotkey: hermes::proto::Hotkey::from_ss58(&owner.ss58).unwrap().0,
                peer_id: peer.to_base58(),
                stake: 1_000_000,
                class: NodeClass::Validator,
            })
            .unwrap();
    }
}

/// Parts for hand-built libp2p peers that talk to Hermes nodes without being one.
pub mod raw_peer {
    use hermes_actors::network::identity_proto::{BindingCodec, PROTOCOL};
    use libp2p::identity::Keypair;
    use libp2p::{gossipsub, noise, request_response, tcp, yamux};
    use std::time::Duration;

    /// A TCP swarm for `key` running the behaviour `make` builds; idle connections are kept for
    /// a minute, longer than any test waits.
    pub fn swarm<B: libp2p::swarm::NetworkBehaviour>(
        key: Keypair,
        make: impl FnOnce(&Keypair) -> B,
    ) -> libp2p::Swarm<B> {
        libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(make)
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }

    /// Gossipsub in strict validation mode, its messages signed by `author`.
    pub fn gossipsub(author: Keypair) -> gossipsub::Behaviour {
        let cfg = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .build()
            .unwrap();
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(author), cfg).unwrap()
    }

    /// The reply channel of `ev` when it is a binding request from the other side.
    pub fn binding_request(
        ev: request_response::Event<Vec<u8>, Vec<u8>>,
    ) -> Option<request_response::ResponseChannel<Vec<u8>>> {
        match ev {
            request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            } => Some(channel),
            _ => None,
        }
    }

    /// The Hermes binding exchange, both asking and answering.
    pub fn binding_exchange() -> request_response::Behaviour<BindingCodec> {
        request_response::Behaviour::new(
            [(PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default(),
        )
    }
}
