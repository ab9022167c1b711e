//! The Sync Engine's API on [`RuntimeHandle`]: offer a file to a node, fetch what a ticket
//! names, list and revoke transfers.
//!
//! ```no_run
//! # async fn demo(sender: hermes::RuntimeHandle, receiver: hermes::RuntimeHandle) -> Result<(), hermes::Error> {
//! use hermes::sync::OfferOptions;
//! let ss58 = receiver.identity().await?.ss58;
//! // The sender seals and hashes the file, serves it, and delivers the ticket as a message.
//! let ticket = sender.offer("weights.bin", &ss58, 1, OfferOptions::default()).await?;
//! // The receiver (given the ticket by message or by hand) downloads it, verified.
//! let transfer = receiver.fetch(&ticket.to_string(), "/data/weights.bin").await?;
//! transfer.wait().await.map_err(hermes::Error::Sync)?;
//! # Ok(()) }
//! ```

use crate::runtime::RuntimeHandle;
use crate::Error;
use hermes_actors::sync::{self as engine, SyncActor, SyncError};
use hermes_proto::Hotkey;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use engine::{Backend, Direction, Progress, State, TransferHandle as Transfer, TransferInfo};
pub use hermes_proto::sync::{Ticket, TicketError, TicketParseError};
pub use hermes_proto::Id128 as TransferId;

/// Options of [`RuntimeHandle::offer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferOptions {
    /// Where the chunks are stored (default: `sync.backend`).
    pub via: Option<Backend>,
    /// How long the ticket is valid (default: `sync.ticket_ttl`).
    pub ttl: Option<Duration>,
    /// Chunk size in bytes (default: `sync.chunk_size`).
    pub chunk_size: Option<u32>,
    /// The file name the receiver is told (default: the source's own name).
    pub file_name: Option<String>,
    /// Do not send the ticket to the receiver as a message (it is only returned).
    pub no_delivery: bool,
}

impl From<SyncError> for Error {
    fn from(e: SyncError) -> Self {
        Error::Sync(e.to_string())
    }
}

/// Whether a download into `dest` has left a partial file (it resumes when fetched again).
pub fn partial_exists(dest: &Path) -> bool {
    engine::fetch::partial_path(dest).exists()
}

/// Whether `bytes` (a message payload) is a ticket, parsed; messages that merely start like
/// one are reported as such so that a damaged ticket is not taken for text.
pub fn ticket_in_message(bytes: &[u8]) -> Option<Result<Ticket, TicketParseError>> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.trim_start()
        .starts_with("hermes-ticket")
        .then(|| Ticket::parse(text))
}

impl RuntimeHandle {
    fn sync_actor(&self) -> Result<&actix::Addr<SyncActor>, Error> {
        self.parts().sync.as_ref().ok_or_else(|| {
            Error::Invalid(
                "the Sync Engine is off for this runtime (sync.enabled is false, or networking is off)"
                    .into(),
            )
        })
    }

    /// Offers the file at `path` to the node of wallet address `to` on subnet `netuid`: seals
    /// and hashes it in one pass, serves it (from the file itself, nothing is copied) to that
    /// node only, and returns the signed ticket. Unless `opts.no_delivery`, the ticket is also
    /// sent to the receiver as an end-to-end message (its string form).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad address or option; [`Error::Sync`] when the file cannot be
    /// read, the receiver cannot be reached to learn its current key, or the records cannot be
    /// written.
    pub async fn offer(
        &self,
        path: impl AsRef<Path>,
        to: &str,
        netuid: u16,
        opts: OfferOptions,
    ) -> Result<Ticket, Error> {
        let (hotkey, _) = Hotkey::from_ss58(to).map_err(|e| Error::Invalid(e.to_string()))?;
        let actor = self.sync_actor()?;
        let ticket = Self::ask(
            actor,
            engine::Offer {
                path: path.as_ref().to_path_buf(),
                to: hotkey,
                netuid,
                ttl: opts.ttl,
                chunk_size: opts.chunk_size,
                file_name: opts.file_name,
                backend: opts.via.unwrap_or(self.default_backend()),
            },
        )
        .await??;
        if !opts.no_delivery {
            if let Err(e) = self.send(to, netuid, ticket.to_string().into_bytes()).await {
                tracing::warn!(error = %e, "the ticket could not be queued as a message; hand it over yourself");
            }
        }
        Ok(ticket)
    }

    /// Downloads what `ticket` (its string form) names into `dest`: verified chunk by chunk,
    /// in parallel, resumable (fetching the same ticket again, or restarting the node, resumes
    /// from the journal). Returns at once with the running [`Transfer`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a ticket that does not parse; [`Error::Sync`] for a ticket that is
    /// not valid for this node (expired, for another receiver, tampered, sealed to a prekey no
    /// longer held) or a destination that exists.
    pub async fn fetch(&self, ticket: &str, dest: impl AsRef<Path>) -> Result<Transfer, Error> {
        let ticket = Ticket::parse(ticket).map_err(|e| Error::Invalid(e.to_string()))?;
        self.fetch_ticket(ticket, dest).await
    }

    /// [`RuntimeHandle::fetch`] with a parsed ticket.
    ///
    /// # Errors
    /// As [`RuntimeHandle::fetch`].
    pub async fn fetch_ticket(
        &self,
        ticket: Ticket,
        dest: impl AsRef<Path>,
    ) -> Result<Transfer, Error> {
        let dest = absolute(dest.as_ref())?;
        Ok(Self::ask(
            self.sync_actor()?,
            engine::Fetch {
                ticket: Box::new(ticket),
                dest,
            },
        )
        .await??)
    }

    /// Every transfer this node offered or downloaded (kept in its database).
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn transfers(&self) -> Result<Vec<TransferInfo>, Error> {
        Self::ask(self.sync_actor()?, engine::List).await
    }

    /// The running download `id`, to follow or cancel.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, Error> {
        Self::ask(self.sync_actor()?, engine::Watch(id)).await
    }

    /// Revokes offer `id` (its chunks are refused from now on, also to a receiver halfway
    /// through), or cancels download `id` (its partial file is kept for a resume).
    ///
    /// # Errors
    /// [`Error::Sync`] when there is no such transfer.
    pub async fn revoke(&self, id: TransferId) -> Result<TransferInfo, Error> {
        Ok(Self::ask(self.sync_actor()?, engine::Revoke(id)).await??)
    }

    fn default_backend(&self) -> Backend {
        self.sync_backend()
    }
}

fn absolute(p: &Path) -> Result<PathBuf, Error> {
    if p.as_os_str().is_empty() {
        return Err(Error::Invalid("the destination path is empty".into()));
    }
    std::path::absolute(p).map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))
}
