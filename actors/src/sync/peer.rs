//! The receiver's side of `/hermes/sync/1`: a [`ChunkSource`] that asks the sender's node.
//!
//! Each parallel fetch takes a substream from a small pool (opening one when none is free), sends
//! its request, reads the answer into the caller's buffer and puts the substream back; a substream
//! that failed in any way is dropped, never reused. When the connection is gone, the next fetch
//! reaches the sender again by its hotkey (and the ticket's addresses) before opening a new
//! substream, so a transfer rides out a reconnect within the downloader's retry budget.

use super::fetch::{ChunkSource, ChunkSourceError};
use crate::network::directory::PeerDirectory;
use crate::network::reach::{reach, ReachError};
use crate::network::substream::{OpenError, Substreams, SYNC_PROTOCOL};
use crate::network::Command;
use futures::{AsyncReadExt, AsyncWriteExt};
use hermes_proto::sync::wire::{AnswerHead, Request, ANSWER_HEAD_LEN, MAX_REFUSAL_TEXT};
use hermes_proto::sync::Layout;
use hermes_proto::{Hotkey, Id128};
use libp2p::{Multiaddr, Stream};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a fetch waits to reach the sender again after its connection dropped.
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What a [`PeerSource`] needs from the network.
#[derive(Debug, Clone)]
pub struct PeerNet {
    /// The network's command queue (dials, connects).
    pub commands: mpsc::Sender<Command>,
    /// Verified peers.
    pub directory: std::sync::Arc<PeerDirectory>,
    /// Opens substreams.
    pub substreams: Substreams,
    /// SS58 prefix for messages.
    pub ss58_prefix: u16,
}

/// Chunks of one transfer from the sender's node.
#[derive(Debug)]
pub struct PeerSource {
    net: PeerNet,
    sender: Hotkey,
    addrs: Vec<Multiaddr>,
    transfer_id: Id128,
    layout: Layout,
    pool: Mutex<Vec<Stream>>,
}

impl PeerSource {
    /// A source for `transfer_id` served by the node of `sender`, dialled at `addrs` (the
    /// ticket's) when it is not connected.
    pub fn new(
        net: PeerNet,
        sender: Hotkey,
        addrs: Vec<Multiaddr>,
        transfer_id: Id128,
        layout: Layout,
    ) -> Self {
        PeerSource {
            net,
            sender,
            addrs,
            transfer_id,
            layout,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// Fetches the manifest (at most `max_len` bytes; the caller checks it against the root).
    ///
    /// # Errors
    /// [`ChunkSourceError`]: unreachable sender, refusal, or a transport failure.
    pub async fn fetch_manifest(&self, max_len: usize) -> Result<Vec<u8>, ChunkSourceError> {
        let mut s = self.substream().await?;
        let req = Request::Manifest {
            transfer_id: self.transfer_id,
        };
        let len = ask(&mut s, &req, max_len).await?;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.map_err(lost)?;
        self.give_back(s);
        Ok(body)
    }

    async fn substream(&self) -> Result<Stream, ChunkSourceError> {
        if let Some(s) = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(s);
        }
        let peer = match self.net.directory.by_hotkey(&self.sender) {
            Some(p) => p,
            None => {
                for a in &self.addrs {
                    let (tx, _rx) = oneshot::channel();
                    let _ = self.net.commands.try_send(Command::Dial(a.clone(), tx));
                }
                let n = &self.net;
                reach(
                    &n.commands,
                    &n.directory,
                    &self.sender,
                    n.ss58_prefix,
                    RECONNECT_TIMEOUT,
                )
                .await
                .map_err(|e| match e {
                    ReachError::Stopped => ChunkSourceError::refused("the node is stopping"),
                    ReachError::Unreachable(why) => {
                        ChunkSourceError::unavailable(format!("sender unreachable: {why}"))
                    }
                })?
            }
        };
        self.net
            .substreams
            .open(peer.peer_id, SYNC_PROTOCOL)
            .await
            .map_err(|e| match e {
                OpenError::Unsupported(_) => ChunkSourceError::refused(
                    "the sender's node does not serve transfers (its Sync Engine is off)",
                ),
                e => ChunkSourceError::unavailable(format!("opening a sync substream: {e}")),
            })
    }

    fn give_back(&self, s: Stream) {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }
}

fn lost(e: std::io::Error) -> ChunkSourceError {
    ChunkSourceError::unavailable(format!("sync substream failed: {e}"))
}

/// Sends `req` and reads the answer's header: the body length when it is served (at most
/// `max_len`), or the refusal.
async fn ask(s: &mut Stream, req: &Request, max_len: usize) -> Result<usize, ChunkSourceError> {
    s.write_all(&req.encode()).await.map_err(lost)?;
    s.flush().await.map_err(lost)?;
    let mut head = [0u8; ANSWER_HEAD_LEN];
    s.read_exact(&mut head).await.map_err(lost)?;
    let head = AnswerHead::decode(&head).map_err(|e| {
        ChunkSourceError::unavailable(format!("malformed answer from the sender: {e}"))
    })?;
    match head {
        AnswerHead::Ok { len } if len as usize <= max_len => Ok(len as usize),
        AnswerHead::Ok { len } => Err(ChunkSourceError::unavailable(format!(
            "the sender answered {len} bytes where at most {max_len} were expected"
        ))),
        AnswerHead::Refused { refusal, len } => {
            let mut text = vec![0u8; (len as usize).min(MAX_REFUSAL_TEXT)];
            s.read_exact(&mut text).await.map_err(lost)?;
            let said = String::from_utf8_lossy(&text);
            let message = if said.is_empty() {
                refusal.describe().to_string()
            } else {
                said.into_owned()
            };
            Err(if refusal.retryable() {
                ChunkSourceError::unavailable(message)
            } else {
                ChunkSourceError::refused(message)
            })
        }
    }
}

impl ChunkSource for PeerSource {
    async fn fetch(&self, index: u64, buf: &mut [u8]) -> Result<(), ChunkSourceError> {
        if !self.layout.contains(index) {
            return Err(ChunkSourceError::refused(format!(
                "chunk {index} is past the end"
            )));
        }
        let mut s = self.substream().await?;
        let req = Request::Chunk {
            transfer_id: self.transfer_id,
            index,
        };
        let len = ask(&mut s, &req, buf.len()).await?;
        if len != buf.len() {
            return Err(ChunkSourceError::unavailable(format!(
                "the sender answered {len} bytes for a {}-byte chunk",
                buf.len()
            )));
        }
        s.read_exact(buf).await.map_err(lost)?;
        self.give_back(s);
        Ok(())
    }
}
