//! The application's ends of the data plane: the message inbox, the queue of incoming streams,
//! and the types that describe messages and streams.
//!
//! Each queue has one consumer at a time: [`RuntimeHandle::subscribe`](crate::RuntimeHandle::subscribe)
//! and [`RuntimeHandle::incoming_streams`](crate::RuntimeHandle::incoming_streams) hand it out, and
//! dropping it hands it back, so a later call gets it again with nothing lost. While nobody
//! consumes, messages wait in the inbox (and, once it is full, in the senders' outboxes: flow
//! control slows them down rather than dropping anything).

use futures::Stream;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

pub use hermes_actors::stream::bulk::{
    IncomingStream, StreamOptions, StreamReader, StreamReport, StreamWriter,
};
pub use hermes_actors::stream::{DeliveryEvent, Inbound, MessageStats, StreamError};
pub use hermes_proto::Id128 as MessageId;
pub use hermes_proto::RejectReason;

/// Called for each item the consumer takes out of a [`Taken`] queue (gives the sender's per-peer
/// budget back).
pub(crate) type OnTake<T> = Arc<dyn Fn(&T) + Send + Sync>;

/// An item the queue marks as it hands it out: an [`Inbound`] is acknowledged when dropped only
/// once the application received it, and is not handed out once the runtime has shut down, so
/// messages still queued then are delivered again after the restart rather than acknowledged
/// unread (or read without an acknowledgement that could still be recorded).
pub trait HandOver {
    /// Called as the item leaves the queue for the application; `false` withholds it.
    fn handed_over(&self) -> bool {
        true
    }
}

impl HandOver for Inbound {
    fn handed_over(&self) -> bool {
        Inbound::handed_over(self)
    }
}

impl HandOver for IncomingStream {}

/// A queue with one consumer at a time, returned to its slot when the consumer is dropped.
pub struct Taken<T> {
    rx: Option<mpsc::Receiver<T>>,
    slot: Arc<Mutex<Option<mpsc::Receiver<T>>>>,
    on_take: OnTake<T>,
}

impl<T> std::fmt::Debug for Taken<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Taken").finish_non_exhaustive()
    }
}

impl<T: HandOver> Taken<T> {
    pub(crate) fn take(
        slot: &Arc<Mutex<Option<mpsc::Receiver<T>>>>,
        on_take: &OnTake<T>,
    ) -> Option<Self> {
        let rx = slot.lock().ok()?.take()?;
        Some(Taken {
            rx: Some(rx),
            slot: slot.clone(),
            on_take: on_take.clone(),
        })
    }

    /// The next item; `None` once the runtime has shut down.
    pub async fn recv(&mut self) -> Option<T> {
        let rx = self.rx.as_mut()?;
        while let Some(item) = rx.recv().await {
            if let Some(item) = took(&self.on_take, item) {
                return Some(item);
            }
        }
        None
    }

    /// The next item if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let rx = self.rx.as_mut()?;
        while let Ok(item) = rx.try_recv() {
            if let Some(item) = took(&self.on_take, item) {
                return Some(item);
            }
        }
        None
    }
}

impl<T> Drop for Taken<T> {
    fn drop(&mut self) {
        if let (Some(rx), Ok(mut slot)) = (self.rx.take(), self.slot.lock()) {
            *slot = Some(rx);
        }
    }
}

impl<T: HandOver> Stream for Taken<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        let Some(rx) = this.rx.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match std::task::ready!(rx.poll_recv(cx)) {
                Some(item) => {
                    if let Some(item) = took(&this.on_take, item) {
                        return Poll::Ready(Some(item));
                    }
                }
                None => return Poll::Ready(None),
            }
        }
    }
}

/// Messages delivered to this node. Each is acknowledged to its sender when the application
/// drops it (or calls [`Inbound::ack`]); see `docs/SECURITY.md` for what that guarantees across
/// crashes.
pub type Inbox = Taken<Inbound>;

/// Streams opened to this node and accepted for the application.
pub type IncomingStreams = Taken<IncomingStream>;

/// How a message is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// How long the message is kept and retried (default: `messages.ttl`).
    pub ttl: Option<std::time::Duration>,
}

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Message id.
    pub id: MessageId,
    /// Recipient's SS58 address.
    pub to: String,
    /// Subnet.
    pub netuid: u16,
    /// Payload size.
    pub len: usize,
    /// When `send` accepted it (unix seconds).
    pub created_at: u64,
    /// When it expires (unix seconds).
    pub expires_at: u64,
    /// Why the last attempt to reach the recipient failed (unknown address, our connection
    /// refused, recipient offline…), if one did; `None` before the first attempt ends and once
    /// a connection is made.
    pub last_error: Option<String>,
}

/// An item has left the queue: its sender's per-peer budget is given back whether or not it is
/// handed to the application (a withheld one is gone from the queue all the same).
fn took<T: HandOver>(on_take: &OnTake<T>, item: T) -> Option<T> {
    on_take(&item);
    item.handed_over().then_some(item)
}
