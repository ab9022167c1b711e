//! IdentityActor: the node's keys and its signed binding record.
//!
//! Owns the sr25519 hotkey, the libp2p transport keypair and the current X25519 prekey, and keeps a
//! fresh [`SignedBinding`] that ties them together.
//!
//! Accepts:
//! - [`GetIdentity`] → [`IdentityInfo`] (re-issues the binding when less than half its lifetime is left)
//! - [`Sign`] → 64-byte sr25519 signature (substrate context)
//! - [`VerifyBinding`] → the decoded binding if it is valid for the given connection
//! - `InjectPanic` (feature `fault-injection`) → panics inside the handler, to test supervision
//!
//! Emits nothing yet; the network layer will ask it to verify every peer's binding.
//!
//! State that must survive restarts (the prekey seed) lives in the `prekeys` sled tree; keys are
//! re-read from their files on restart.

pub mod keys;

use crate::storage::{Store, StoreError, TREE_PREKEYS};
use crate::supervise::{contain, Crashed};
use actix::prelude::*;
use hermes_proto::binding::MAX_LIFETIME_SECS;
use hermes_proto::{BindingError, BindingRecord, DecodeError, Hotkey, SignedBinding};
use hpke::Kem as _;
use keys::{HotkeyPair, HotkeySource, KeyError};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;
use zeroize::Zeroizing;

type PrekeyKem = hpke::kem::X25519HkdfSha256;

/// Mailbox capacity: identity requests come from local actors and the API, never straight from
/// the wire, so a small bound is enough and keeps a stuck caller from queueing without limit.
pub const MAILBOX: usize = 256;

/// Errors from the IdentityActor.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Keys could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Peer bytes were not a binding record.
    #[error("undecodable binding record: {0}")]
    Decode(#[from] DecodeError),
    /// A binding record failed verification.
    #[error(transparent)]
    Binding(#[from] BindingError),
    /// The actor panicked handling this request and is restarting.
    #[error(transparent)]
    Crashed(#[from] Crashed),
}

/// What the IdentityActor needs to start.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Bittensor hotkey file (ignored when `HERMES_HOTKEY_URI` is set).
    pub hotkey_file: Option<PathBuf>,
    /// Transport key path; generated there (ed25519) if missing and `generate_transport_key`.
    pub transport_key_file: PathBuf,
    /// Whether a missing transport key may be generated (false for a user-supplied path).
    pub generate_transport_key: bool,
    /// SS58 prefix used to print addresses.
    pub ss58_prefix: u16,
    /// Subnets this node serves (any order; stored sorted and deduplicated).
    pub netuids: Vec<u16>,
    /// Lifetime of each binding record.
    pub binding_ttl: Duration,
}

/// A public view of the node identity.
#[derive(Debug, Clone)]
pub struct IdentityInfo {
    /// SS58 address of the hotkey.
    pub ss58: String,
    /// The hotkey public key.
    pub hotkey: Hotkey,
    /// The libp2p peer id of the transport key.
    pub peer_id: PeerId,
    /// `"ed25519"` or `"rsa"`.
    pub transport_key_type: String,
    /// The current signed binding record.
    pub binding: SignedBinding,
    /// How many times the actor has been restarted by its supervisor.
    pub restarts: u32,
}

/// Keys loaded from disk.
#[derive(Debug)]
struct Keys {
    hotkey: HotkeyPair,
    transport: Keypair,
}

/// The IdentityActor.
#[derive(Debug)]
pub struct IdentityActor {
    cfg: IdentityConfig,
    source: HotkeySource,
    store: Store,
    keys: Keys,
    prekey_public: [u8; 32],
    binding: SignedBinding,
    restarts: u32,
}

impl IdentityActor {
    /// Loads keys, the prekey and issues a binding. Used at start and after each restart.
    ///
    /// # Errors
    /// [`IdentityError`] if any key or the database cannot be read.
    pub fn load(cfg: IdentityConfig, store: Store) -> Result<Self, IdentityError> {
        let (hotkey, source) = HotkeyPair::resolve(cfg.hotkey_file.as_deref())?;
        let transport = keys::load_or_create_transport_key(
            &cfg.transport_key_file,
            cfg.generate_transport_key,
        )?;
        let prekey_public = load_or_create_prekey(&store)?;
        let keys = Keys { hotkey, transport };
        let binding = issue_binding(&cfg, &keys, prekey_public)?;
        Ok(IdentityActor {
            cfg,
            source,
            store,
            keys,
            prekey_public,
            binding,
            restarts: 0,
        })
    }

    /// The libp2p transport keypair (for the network task).
    pub fn transport_keypair(&self) -> Keypair {
        self.keys.transport.clone()
    }

    fn info(&self) -> IdentityInfo {
        let hotkey = self.keys.hotkey.public();
        IdentityInfo {
            ss58: hotkey.to_ss58(self.cfg.ss58_prefix),
            hotkey,
            peer_id: self.keys.transport.public().to_peer_id(),
            transport_key_type: format!("{:?}", self.keys.transport.key_type()).to_lowercase(),
            binding: self.binding.clone(),
            restarts: self.restarts,
        }
    }

    fn refresh_binding_if_stale(&mut self) -> Result<(), IdentityError> {
        let now = crate::unix_now();
        let rec = &self.binding.record;
        let half = (rec.expires_at - rec.issued_at) / 2;
        if now >= rec.issued_at.saturating_add(half) || now < rec.issued_at {
            self.binding = issue_binding(&self.cfg, &self.keys, self.prekey_public)?;
        }
        Ok(())
    }

    fn reload(&mut self) -> Result<(), IdentityError> {
        let hotkey = HotkeyPair::reload(&self.source)?;
        let transport = keys::load_or_create_transport_key(
            &self.cfg.transport_key_file,
            self.cfg.generate_transport_key,
        )?;
        self.keys = Keys { hotkey, transport };
        self.prekey_public = load_or_create_prekey(&self.store)?;
        self.binding = issue_binding(&self.cfg, &self.keys, self.prekey_public)?;
        Ok(())
    }
}

fn issue_binding(
    cfg: &IdentityConfig,
    keys: &Keys,
    prekey: [u8; 32],
) -> Result<SignedBinding, IdentityError> {
    let issued_at = crate::unix_now();
    let ttl = cfg.binding_ttl.as_secs().clamp(60, MAX_LIFETIME_SECS);
    let mut netuids = cfg.netuids.clone();
    netuids.sort_unstable();
    netuids.dedup();
    let record = BindingRecord {
        hotkey: keys.hotkey.public(),
        ss58_prefix: cfg.ss58_prefix,
        peer_id: keys.transport.public().to_peer_id().to_bytes(),
        netuids,
        prekey,
        issued_at,
        expires_at: issued_at + ttl,
    };
    Ok(record.sign(keys.hotkey.pair())?)
}

/// Reads the current prekey seed from sled or creates one; returns the X25519 public key.
fn load_or_create_prekey(store: &Store) -> Result<[u8; 32], IdentityError> {
    use hpke::Serializable as _;
    let tree = store.tree(TREE_PREKEYS)?;
    let seed: Zeroizing<Vec<u8>> = match tree.get(b"current").map_err(|e| store.db_err(e))? {
        Some(v) if v.len() == 32 => Zeroizing::new(v.to_vec()),
        other => {
            if other.is_some() {
                tracing::warn!("stored prekey seed has the wrong length; replacing it");
            }
            let mut seed = Zeroizing::new(vec![0u8; 32]);
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            tree.insert(b"current", seed.as_slice())
                .map_err(|e| store.db_err(e))?;
            tree.flush().map_err(|e| store.db_err(e))?;
            seed
        }
    };
    let (_private, public) = PrekeyKem::derive_keypair(&seed);
    let mut out = [0u8; 32];
    out.copy_from_slice(&public.to_bytes());
    Ok(out)
}

impl Actor for IdentityActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

impl Supervised for IdentityActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.restarts += 1;
        if let Err(e) = self.reload() {
            // Keep the previous (valid) keys; the next request still works.
            tracing::error!(error = %e, "identity reload after restart failed; keeping loaded keys");
        }
        tracing::warn!(restarts = self.restarts, "IdentityActor restarted");
    }
}

/// Ask for the node's identity and current binding.
#[derive(Debug, Message)]
#[rtype(result = "Result<IdentityInfo, IdentityError>")]
pub struct GetIdentity;

impl Handler<GetIdentity> for IdentityActor {
    type Result = Result<IdentityInfo, IdentityError>;
    fn handle(&mut self, _: GetIdentity, ctx: &mut Self::Context) -> Self::Result {
        contain::<Self, _>("IdentityActor", ctx, || {
            self.refresh_binding_if_stale()?;
            Ok(self.info())
        })?
    }
}

/// Sign bytes with the hotkey.
#[derive(Debug, Message)]
#[rtype(result = "Result<[u8; 64], IdentityError>")]
pub struct Sign(pub Vec<u8>);

impl Handler<Sign> for IdentityActor {
    type Result = Result<[u8; 64], IdentityError>;
    fn handle(&mut self, msg: Sign, ctx: &mut Self::Context) -> Self::Result {
        Ok(contain::<Self, _>("IdentityActor", ctx, || {
            self.keys.hotkey.sign(&msg.0)
        })?)
    }
}

/// Verify a peer's binding record for a connection from `peer_id`.
#[derive(Debug, Message)]
#[rtype(result = "Result<SignedBinding, IdentityError>")]
pub struct VerifyBinding {
    /// The record as received.
    pub bytes: Vec<u8>,
    /// The peer id the transport authenticated.
    pub peer_id: PeerId,
    /// The hotkey the chain registered for this peer, if known.
    pub expected: Option<Hotkey>,
}

impl Handler<VerifyBinding> for IdentityActor {
    type Result = Result<SignedBinding, IdentityError>;
    fn handle(&mut self, msg: VerifyBinding, ctx: &mut Self::Context) -> Self::Result {
        contain::<Self, _>("IdentityActor", ctx, || {
            let binding = SignedBinding::decode(&msg.bytes)?;
            binding.verify(
                &msg.peer_id.to_bytes(),
                msg.expected.as_ref(),
                crate::unix_now(),
            )?;
            Ok(binding)
        })?
    }
}

/// Test hook: panic inside the handler so supervision can be observed.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Message)]
#[rtype(result = "Result<(), IdentityError>")]
pub struct InjectPanic;

#[cfg(feature = "fault-injection")]
impl Handler<InjectPanic> for IdentityActor {
    type Result = Result<(), IdentityError>;
    #[allow(clippy::panic)]
    fn handle(&mut self, _: InjectPanic, ctx: &mut Self::Context) -> Self::Result {
        contain::<Self, _>("IdentityActor", ctx, || panic!("injected fault"))?
    }
}
