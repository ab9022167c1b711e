//! IdentityActor: the node's keys and its signed binding record.
//!
//! Owns the sr25519 hotkey, the libp2p transport keypair and the rotating X25519 prekeys, and keeps
//! a fresh [`SignedBinding`] that ties them together. It is the only place private prekeys live:
//! sessions are sealed and opened here, and only the derived session secret leaves.
//!
//! Accepts:
//! - [`GetIdentity`] → [`IdentityInfo`]
//! - [`Sign`] → 64-byte sr25519 signature under the application domain (`hermes/app/v1`)
//! - [`VerifyBinding`] → the decoded binding if it is valid for the given connection
//! - [`SealSession`] → a signed session header and its secret, sealed to a peer's prekey
//! - [`OpenSession`] → the secret of a (checked) session header, if its prekey is still held
//! - [`RotatePrekey`] → a new current prekey now (the previous one retired, or erased at once)
//! - [`AttachNetwork`] → where to push a re-issued binding
//! - `InjectPanic` (feature `fault-injection`) → panics inside the handler, to test supervision
//!
//! Emits [`Command::SetBinding`] to the network task whenever the binding is re-issued: at half
//! its lifetime, and on every prekey rotation (the binding names the current prekey). A timer
//! rotates prekeys every `prekey_rotation` and erases retired ones after `prekey_grace`.
//!
//! Prekeys live in their own file ([`prekeys`]); keys are re-read from their files on restart.

pub mod keys;
pub mod prekeys;

use crate::network::Command;
use crate::storage::{Store, StoreError};
use crate::supervise::{contain, Crashed};
use actix::prelude::*;
use hermes_proto::binding::MAX_LIFETIME_SECS;
use hermes_proto::envelope::{
    seal_session, EnvelopeError, SessionHeader, SessionReject, SessionRequest, SessionSecret,
};
use hermes_proto::sync::{ContentKey, Ticket, TicketError, TicketRequest};
use hermes_proto::{BindingError, BindingRecord, DecodeError, Hotkey, SignedBinding};
use keys::{HotkeyPair, HotkeySource, KeyError};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use prekeys::{PrekeyFile, PrekeyFileError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

/// The node's current binding, readable without a message (the stream layer hands it to peers
/// that used a stale prekey).
pub type SharedBinding = Arc<arc_swap::ArcSwap<SignedBinding>>;

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
    /// The prekey file could not be read or written.
    #[error(transparent)]
    Prekeys(#[from] PrekeyFileError),
    /// A session could not be sealed (the peer's prekey is unusable).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
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
    /// Directory of the prekey file (the data dir).
    pub prekey_dir: PathBuf,
    /// How often the prekey rotates.
    pub prekey_rotation: Duration,
    /// How long a retired prekey still opens sessions before it is erased.
    pub prekey_grace: Duration,
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
    /// Prekeys held (the current one and retired ones still in their grace period).
    pub prekeys: usize,
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
    prekeys: PrekeyFile,
    binding: SignedBinding,
    shared: SharedBinding,
    network: Option<mpsc::Sender<Command>>,
    /// A binding push that found the network queue full.
    shared_pending: bool,
    restarts: u32,
}

impl IdentityActor {
    /// Loads keys, the prekeys and issues a binding. Used at start and after each restart.
    ///
    /// # Errors
    /// [`IdentityError`] if any key or the database cannot be read.
    pub fn load(cfg: IdentityConfig, store: Store) -> Result<Self, IdentityError> {
        let (hotkey, source) = HotkeyPair::resolve(cfg.hotkey_file.as_deref())?;
        let transport = keys::load_or_create_transport_key(
            &cfg.transport_key_file,
            cfg.generate_transport_key,
        )?;
        let mut prekeys = PrekeyFile::open(&cfg.prekey_dir, &store, crate::unix_now())?;
        // A node that was down past its rotation period rotates before it advertises anything.
        prekeys.maintain(
            crate::unix_now(),
            cfg.prekey_rotation.as_secs().max(1),
            cfg.prekey_grace.as_secs(),
        )?;
        let keys = Keys { hotkey, transport };
        let binding = issue_binding(&cfg, &keys, prekeys.current_public())?;
        Ok(IdentityActor {
            cfg,
            source,
            store,
            keys,
            prekeys,
            shared: Arc::new(arc_swap::ArcSwap::from_pointee(binding.clone())),
            binding,
            network: None,
            shared_pending: false,
            restarts: 0,
        })
    }

    /// The libp2p transport keypair (for the network task).
    pub fn transport_keypair(&self) -> Keypair {
        self.keys.transport.clone()
    }

    /// The hotkey's signing pair, for the ConsensusActor, which signs proposals and attestations
    /// under their own domains ([`hermes_proto::consensus`]). It stays inside the node: no
    /// handle or message gives it out.
    pub fn hotkey_pair(&self) -> sp_core::sr25519::Pair {
        self.keys.hotkey.pair().clone()
    }

    /// The published binding (updated on every re-issue).
    pub fn shared_binding(&self) -> SharedBinding {
        self.shared.clone()
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
            prekeys: self.prekeys.len(),
        }
    }

    /// Replaces the binding and tells everyone who presents or reads it.
    fn set_binding(&mut self, binding: SignedBinding) {
        self.binding = binding.clone();
        self.shared.store(Arc::new(binding.clone()));
        if let Some(net) = &self.network {
            // A full queue means the network is busy; the next maintenance tick retries.
            if net.try_send(Command::SetBinding(binding)).is_err() {
                tracing::debug!("network queue full; binding push deferred");
                self.shared_pending = true;
            }
        }
    }

    fn reissue(&mut self) -> Result<(), IdentityError> {
        let b = issue_binding(&self.cfg, &self.keys, self.prekeys.current_public())?;
        self.set_binding(b);
        Ok(())
    }

    fn refresh_binding_if_stale(&mut self) -> Result<(), IdentityError> {
        let now = crate::unix_now();
        let rec = &self.binding.record;
        let half = (rec.expires_at - rec.issued_at) / 2;
        if now >= rec.issued_at.saturating_add(half)
            || now < rec.issued_at
            || rec.prekey != self.prekeys.current_public()
        {
            self.reissue()?;
        }
        Ok(())
    }

    /// The periodic work: rotate and erase prekeys when due, keep the binding fresh.
    fn maintain(&mut self) -> Result<(), IdentityError> {
        let rotated = self.prekeys.maintain(
            crate::unix_now(),
            self.cfg.prekey_rotation.as_secs().max(1),
            self.cfg.prekey_grace.as_secs(),
        )?;
        if rotated {
            tracing::info!(prekeys = self.prekeys.len(), "prekey rotated");
        }
        self.refresh_binding_if_stale()?;
        if std::mem::take(&mut self.shared_pending) {
            let b = self.binding.clone();
            self.set_binding(b);
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
        self.prekeys = PrekeyFile::open(&self.cfg.prekey_dir, &self.store, crate::unix_now())?;
        self.reissue()
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

/// How often the maintenance timer runs: often enough to rotate on time, at most every 30 s.
fn maintenance_interval(cfg: &IdentityConfig) -> Duration {
    let quarter = cfg
        .prekey_rotation
        .min(cfg.prekey_grace.max(Duration::from_secs(1)))
        / 4;
    quarter.clamp(Duration::from_millis(100), Duration::from_secs(30))
}

impl Actor for IdentityActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        ctx.run_interval(maintenance_interval(&self.cfg), |act, _| {
            if let Err(e) = act.maintain() {
                tracing::error!(error = %e, "identity maintenance failed; retrying at the next tick");
            }
        });
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

/// Sign bytes with the hotkey, under the application domain
/// ([`crate::identity::keys::HotkeyPair::sign_app`]).
#[derive(Debug, Message)]
#[rtype(result = "Result<[u8; 64], IdentityError>")]
pub struct Sign(pub Vec<u8>);

impl Handler<Sign> for IdentityActor {
    type Result = Result<[u8; 64], IdentityError>;
    fn handle(&mut self, msg: Sign, ctx: &mut Self::Context) -> Self::Result {
        Ok(contain::<Self, _>("IdentityActor", ctx, || {
            self.keys.hotkey.sign_app(&msg.0)
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

/// Seal a new session to a peer (HPKE to its prekey, header signed by the hotkey).
#[derive(Debug, Message)]
#[rtype(result = "Result<(SessionHeader, SessionSecret), IdentityError>")]
pub struct SealSession(pub SessionRequest);

impl Handler<SealSession> for IdentityActor {
    type Result = Result<(SessionHeader, SessionSecret), IdentityError>;
    fn handle(&mut self, msg: SealSession, ctx: &mut Self::Context) -> Self::Result {
        contain::<Self, _>("IdentityActor", ctx, || {
            let mut rng = hpke::rand_core::UnwrapErr(getrandom::SysRng);
            Ok(seal_session(
                self.keys.hotkey.pair(),
                &msg.0,
                crate::unix_now(),
                &mut rng,
            )?)
        })?
    }
}

/// Derive the secret of a session header that already passed [`SessionHeader::check`], with the
/// prekey it names.
#[derive(Debug, Message)]
#[rtype(result = "Result<SessionSecret, SessionReject>")]
pub struct OpenSession(pub SessionHeader);

impl Handler<OpenSession> for IdentityActor {
    type Result = Result<SessionSecret, SessionReject>;
    fn handle(&mut self, msg: OpenSession, ctx: &mut Self::Context) -> Self::Result {
        contain::<Self, _>("IdentityActor", ctx, || {
            match self.prekeys.find(&msg.0.prekey) {
                Some(key) => msg.0.open(key),
                None => Err(SessionReject::StalePrekey),
            }
        })
        .unwrap_or(Err(SessionReject::Undecryptable))
    }
}

/// Issue a Sync Engine ticket: seal `key` to the receiver's prekey and sign with the hotkey.
#[derive(Debug, Message)]
#[rtype(result = "Result<Ticket, TicketError>")]
pub struct IssueTicket {
    /// What the ticket states.
    pub request: TicketRequest,
    /// The transfer's content key.
    pub key: ContentKey,
}

impl Handler<IssueTicket> for IdentityActor {
    type Result = Result<Ticket, TicketError>;
    fn handle(&mut self, msg: IssueTicket, ctx: &mut Self::Context) -> Self::Result {
        contain::<Self, _>("IdentityActor", ctx, || {
            let mut rng = hpke::rand_core::UnwrapErr(getrandom::SysRng);
            Ticket::issue(
                self.keys.hotkey.pair(),
                msg.request,
                &msg.key,
                crate::unix_now(),
                &mut rng,
            )
        })
        .unwrap_or(Err(TicketError::Undecryptable))
    }
}

/// Unwrap a verified ticket's content key with the prekey it is sealed to.
#[derive(Debug, Message)]
#[rtype(result = "Result<ContentKey, TicketError>")]
pub struct OpenTicket(pub Box<Ticket>);

impl Handler<OpenTicket> for IdentityActor {
    type Result = Result<ContentKey, TicketError>;
    fn handle(&mut self, msg: OpenTicket, ctx: &mut Self::Context) -> Self::Result {
        contain::<Self, _>("IdentityActor", ctx, || {
            match self.prekeys.find(&msg.0.sealed_to()) {
                Some(key) => msg.0.open_key(key),
                None => Err(TicketError::StalePrekey),
            }
        })
        .unwrap_or(Err(TicketError::Undecryptable))
    }
}

/// Rotate the prekey now. With `erase_previous`, every retired prekey is erased at once
/// (what an operator does after a suspected key theft); otherwise they keep their grace period.
#[derive(Debug, Message)]
#[rtype(result = "Result<IdentityInfo, IdentityError>")]
pub struct RotatePrekey {
    /// Erase retired prekeys immediately.
    pub erase_previous: bool,
}

impl Handler<RotatePrekey> for IdentityActor {
    type Result = Result<IdentityInfo, IdentityError>;
    fn handle(&mut self, msg: RotatePrekey, ctx: &mut Self::Context) -> Self::Result {
        contain::<Self, _>("IdentityActor", ctx, || {
            let grace = self.cfg.prekey_grace.as_secs();
            self.prekeys.rotate(crate::unix_now(), grace)?;
            if msg.erase_previous {
                self.prekeys.erase_retired()?;
            }
            tracing::info!(
                erase_previous = msg.erase_previous,
                "prekey rotated on request"
            );
            self.reissue()?;
            Ok(self.info())
        })?
    }
}

/// Attach the network task's command queue, to which re-issued bindings are pushed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AttachNetwork(pub mpsc::Sender<Command>);

impl Handler<AttachNetwork> for IdentityActor {
    type Result = ();
    fn handle(&mut self, msg: AttachNetwork, _: &mut Self::Context) {
        self.network = Some(msg.0);
        // The network started with the binding of that moment; make sure it has the latest.
        let b = self.binding.clone();
        self.set_binding(b);
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
