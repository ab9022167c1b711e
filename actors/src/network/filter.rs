//! Transport-level address filter: the first and cheapest admission check.
//!
//! Wraps a transport (TCP, QUIC) and looks at every accepted connection's source IP before the
//! swarm hears of it. A connection from a banned or over-rate IP is dropped on the spot — the
//! socket is closed, no upgrade runs, no swarm event or behaviour callback happens — which is what
//! keeps a connection flood from competing with admitted peers for the network thread.
//! Everything else passes to the swarm, where the [`super::gate::Gate`] applies the remaining
//! rules.

use super::gate::{ip_of, DenyCounters};
use hermes_proto::firewall::RateLimiter;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::Transport;
use libp2p::Multiaddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

/// Accepted connections inspected per `poll` before yielding, so a flood cannot monopolise the
/// swarm's thread inside one call.
const MAX_DROPS_PER_POLL: usize = 256;

/// State shared by the filters of every transport and by the network task (which records
/// identity failures that lead to bans).
#[derive(Debug)]
pub struct AddressGuard {
    limiter: Mutex<RateLimiter>,
    counters: Arc<DenyCounters>,
    epoch: Instant,
}

impl AddressGuard {
    /// A guard over `limiter`, counting into `counters`.
    pub fn new(limiter: RateLimiter, counters: Arc<DenyCounters>) -> Self {
        AddressGuard {
            limiter: Mutex::new(limiter),
            counters,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a connection from `addr` may proceed; counts a refusal.
    pub fn allow(&self, addr: &Multiaddr) -> bool {
        match ip_of(addr) {
            Some(ip) => self.allow_ip(ip),
            None => true,
        }
    }

    /// Whether a connection from `ip` may proceed; counts a refusal.
    pub fn allow_ip(&self, ip: std::net::IpAddr) -> bool {
        let now = self.now_ms();
        let verdict = match self.limiter.lock() {
            Ok(mut l) => l.check(ip, now),
            // A poisoned lock means a panic elsewhere; fail open rather than refusing everyone.
            Err(_) => Ok(()),
        };
        match verdict {
            Ok(()) => true,
            Err(reason) => {
                self.counters.inc(reason);
                tracing::trace!(%ip, %reason, "connection dropped at accept");
                false
            }
        }
    }

    /// Records a failed identity exchange from `ip`; returns whether the IP is now banned.
    pub fn record_failure(&self, ip: std::net::IpAddr, threshold: u32) -> bool {
        let now = self.now_ms();
        self.limiter
            .lock()
            .map(|mut l| l.record_failure(ip, threshold, now))
            .unwrap_or(false)
    }
}

/// How a refused connection is disposed of.
pub type RejectFn<U> = fn(U);

/// A transport whose incoming connections pass the [`AddressGuard`] first.
pub struct AddressFilter<T: Transport> {
    inner: T,
    guard: Arc<AddressGuard>,
    reject: RejectFn<T::ListenerUpgrade>,
}

impl<T: Transport> std::fmt::Debug for AddressFilter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressFilter").finish_non_exhaustive()
    }
}

impl<T: Transport> AddressFilter<T> {
    /// Wraps `inner`; refused connections are simply dropped.
    pub fn new(inner: T, guard: Arc<AddressGuard>) -> Self {
        AddressFilter {
            inner,
            guard,
            reject: drop,
        }
    }

    /// Wraps `inner`; refused connections are handed to `reject`.
    pub fn with_reject(
        inner: T,
        guard: Arc<AddressGuard>,
        reject: RejectFn<T::ListenerUpgrade>,
    ) -> Self {
        AddressFilter {
            inner,
            guard,
            reject,
        }
    }
}

/// Closes a refused TCP connection with a reset (`SO_LINGER` 0): no FIN exchange and no
/// `TIME_WAIT` state left on this side, which roughly halves the kernel work per refused
/// connection under a flood.
pub fn reset_tcp(
    upgrade: futures::future::Ready<Result<libp2p::tcp::tokio::TcpStream, std::io::Error>>,
) {
    if let Ok(stream) = upgrade.into_inner() {
        let _ = socket2::SockRef::from(&stream.0).set_linger(Some(std::time::Duration::ZERO));
    }
}

impl<T: Transport + Unpin> Transport for AddressFilter<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        for _ in 0..MAX_DROPS_PER_POLL {
            match Pin::new(&mut self.inner).poll(cx) {
                Poll::Ready(TransportEvent::Incoming {
                    send_back_addr,
                    upgrade,
                    listener_id,
                    local_addr,
                }) => {
                    if self.guard.allow(&send_back_addr) {
                        return Poll::Ready(TransportEvent::Incoming {
                            listener_id,
                            upgrade,
                            local_addr,
                            send_back_addr,
                        });
                    }
                    (self.reject)(upgrade);
                }
                other => return other,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
