//! Inbound connections whose transport handshake failed: counted, and logged without flooding.
//!
//! Such a connection passed the address checks and was accepted, then failed before noise/TLS
//! authenticated a peer: a port scanner, another protocol, a broken client, or someone holding
//! sockets open. The operator sees them in `hermes stats` as `reset` when the connection broke
//! mid-handshake (the remote reset it, or it ended inside a frame) and as `garbage` otherwise:
//! bytes that are not a valid handshake, or a connection closed without a byte (protocol
//! negotiation reports that as a failed negotiation, indistinguishable from a wrong one). Log
//! lines are
//! rate-limited: at most one at info per [`LOG_EVERY`], carrying how many were logged at debug
//! only since the previous one, so a flood of them cannot become a flood of log lines.

use super::gate::DenyCounters;
use hermes_proto::firewall::DenyReason;
use libp2p::core::transport::TransportError;
use libp2p::swarm::ListenError;
use libp2p::Multiaddr;
use std::io;
use std::time::{Duration, Instant};

/// Shortest interval between two info-level lines about failed handshakes.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts and logs failed inbound handshakes.
#[derive(Debug, Default)]
pub struct FailedHandshakes {
    last_logged: Option<Instant>,
    quiet: u64,
}

impl FailedHandshakes {
    /// Records an inbound connection error from `from`. Only transport (handshake) failures
    /// count: refusals by the gate are counted there, and aborted attempts are not the remote's
    /// doing.
    pub fn record(&mut self, counters: &DenyCounters, from: &Multiaddr, error: &ListenError) {
        let ListenError::Transport(TransportError::Other(e)) = error else {
            return;
        };
        let reason = classify(e);
        counters.inc(reason);
        let now = Instant::now();
        if self
            .last_logged
            .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
        {
            self.quiet += 1;
            tracing::debug!(%reason, %from, error = %e, "inbound handshake failed");
            return;
        }
        tracing::info!(
            %reason,
            %from,
            error = %e,
            since_last_line = self.quiet,
            "inbound handshake failed (further failures within 10 s are logged at debug; see `hermes stats`)"
        );
        self.last_logged = Some(now);
        self.quiet = 0;
    }
}

/// `reset` when an I/O error anywhere in the chain says the remote closed or reset the
/// connection; `garbage` otherwise.
fn classify(e: &io::Error) -> DenyReason {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ) {
                return DenyReason::Reset;
            }
            // A custom io::Error's `source()` skips the error it wraps: look at that first.
            if let Some(inner) = io.get_ref() {
                cur = Some(inner);
                continue;
            }
        }
        cur = err.source();
    }
    DenyReason::Garbage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("handshake failed")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn resets_are_found_however_deeply_wrapped() {
        let reset = io::Error::other(Wrapper(io::Error::from(io::ErrorKind::ConnectionReset)));
        assert_eq!(classify(&reset), DenyReason::Reset);
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(classify(&eof), DenyReason::Reset);
        let bad = io::Error::other(Wrapper(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a handshake",
        )));
        assert_eq!(classify(&bad), DenyReason::Garbage);
    }
}
