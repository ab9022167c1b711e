//! Reaching a node by its hotkey: the verified peer behind it, connecting first if needed. Used
//! by every data path (messages, streams, the Sync Engine).

use super::directory::PeerDirectory;
use super::{Command, PeerInfo, ReachFailure};
use hermes_proto::Hotkey;
use libp2p::PeerId;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Why a node could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReachError {
    /// The network task has stopped.
    #[error("the network has stopped")]
    Stopped,
    /// No verified connection within the timeout; the text says why, as far as this node can
    /// tell, and starts with the node's SS58 address.
    #[error("{0}")]
    Unreachable(String),
}

/// The verified peer behind `to`, connecting first if needed.
///
/// A node that has just started may not yet know where `to` is (its routing table fills as it
/// bootstraps), and `to` may be connecting to us at the same moment; so the connection attempt
/// is repeated every second until `timeout`, and a peer that shows up by itself is taken as soon
/// as its binding is verified.
///
/// # Errors
/// [`ReachError`]: the network stopped, or no verified connection within `timeout`.
pub async fn reach(
    net: &mpsc::Sender<Command>,
    dir: &PeerDirectory,
    to: &Hotkey,
    ss58_prefix: u16,
    timeout: Duration,
) -> Result<Arc<PeerInfo>, ReachError> {
    if let Some(p) = dir.by_hotkey(to) {
        return Ok(p);
    }
    let name = to.to_ss58(ss58_prefix);
    let deadline = Instant::now() + timeout;
    let mut peer = None;
    loop {
        let (tx, rx) = oneshot::channel();
        net.send(Command::Connect(*to, tx))
            .await
            .map_err(|_| ReachError::Stopped)?;
        let dial_error = match rx.await {
            Ok(Ok(p)) => {
                peer = Some(p);
                None
            }
            Ok(Err(e)) => Some(e),
            Err(_) => return Err(ReachError::Stopped),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = left.min(Duration::from_secs(1));
        if let Some(p) = dir.wait_for(wait, |d| d.by_hotkey(to)).await {
            return Ok(p);
        }
        if Instant::now() >= deadline {
            // What the network saw last (e.g. the remote closing our connection) is fresher
            // than the answer to the first connection request.
            let why = match (why_unreachable(net, to, peer).await, dial_error) {
                (Some(f), _) => f.to_string(),
                (None, Some(e)) => e,
                (None, None) => format!(
                    "recipient offline or not answering: no verified connection within {:.1}s",
                    timeout.as_secs_f64()
                ),
            };
            return Err(ReachError::Unreachable(format!("{name}: {why}")));
        }
    }
}

/// What the network task last saw when trying to reach `to`.
async fn why_unreachable(
    net: &mpsc::Sender<Command>,
    to: &Hotkey,
    peer: Option<PeerId>,
) -> Option<ReachFailure> {
    let (tx, rx) = oneshot::channel();
    net.send(Command::WhyUnreachable(*to, peer, tx))
        .await
        .ok()?;
    rx.await.ok().flatten()
}
