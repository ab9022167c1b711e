//! TCP transport whose listeners accept and refuse on a thread of their own.
//!
//! libp2p's TCP listener accepts on the network thread, the thread that also carries every
//! admitted peer's traffic, and each accepted socket costs about seven system calls there (accept,
//! socket options, reactor registration and deregistration, close) before [`super::filter`] could
//! refuse it: ~15 µs per refused connection, ~40 % of a core under a 29 k/s flood, taken straight
//! from admitted streams. Here each listening socket has a dedicated accept thread that blocks in
//! `accept`, asks the [`AddressGuard`] (per-IP rate limit and bans, counted as before) and resets a
//! refused socket on the spot (`SO_LINGER` 0, then close: three system calls, no reactor, no
//! `TIME_WAIT`). Only admitted sockets reach the network thread, through a bounded channel, as
//! ordinary `Incoming` events; the swarm then applies the gate and `handshake_timeout` exactly as
//! before.
//!
//! On Linux the accept thread runs at a lower scheduling priority (nice +10): when the host has a
//! spare core it refuses at full speed, and when the node is busy with admitted traffic the
//! scheduler gives the thread only a small share. A flood then fills the kernel's accept queue
//! and the excess is dropped by the kernel, which costs this process nothing; new honest
//! connections wait in the same queue (the price of protecting established peers during a flood).
//!
//! Dials go through libp2p's own TCP transport. They leave from an ephemeral port rather than the
//! listening one (libp2p's port reuse needs its own listener); peers learn our listen addresses
//! from identify, not from the source port.

use super::filter::AddressGuard;
use futures::future::{ready, Ready};
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::Transport;
use libp2p::multiaddr::Protocol;
use libp2p::tcp;
use libp2p::Multiaddr;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;

/// Kernel accept queue length, as libp2p-tcp uses.
const BACKLOG: i32 = 1024;

/// Admitted sockets waiting for the network thread. When it is full the accept thread blocks, so
/// further connections wait in the kernel's queue rather than in our memory.
const HANDOFF: usize = 64;

/// Nice value of the accept threads on Linux (see the module docs).
#[cfg(target_os = "linux")]
const ACCEPT_NICE: libc::c_int = 10;

/// What an accept thread hands to the transport.
enum Accepted {
    /// An admitted socket: (socket, local address, remote address).
    Conn(std::net::TcpStream, SocketAddr, SocketAddr),
    /// An accept error worth reporting (the listener keeps running).
    Error(io::Error),
}

/// The TCP transport: libp2p's for dialing, our own listeners.
pub struct TcpTransport {
    dialer: tcp::tokio::Transport,
    nodelay: bool,
    guard: Arc<AddressGuard>,
    listeners: Vec<Listener>,
    waker: Option<Waker>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport").finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// A transport whose incoming connections pass `guard` on the accept thread.
    pub fn new(nodelay: bool, guard: Arc<AddressGuard>) -> Self {
        TcpTransport {
            dialer: tcp::tokio::Transport::new(tcp::Config::default().nodelay(nodelay)),
            nodelay,
            guard,
            listeners: Vec::new(),
            waker: None,
        }
    }
}

/// `/ip4|ip6/…/tcp/PORT`, optionally followed by `/p2p/…`, as a socket address.
fn parse_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut it = addr.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Tcp(port) = it.next()? else {
        return None;
    };
    match it.next() {
        None | Some(Protocol::P2p(_)) if it.next().is_none() => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

fn to_multiaddr(sa: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(match sa.ip() {
            IpAddr::V4(ip) => Protocol::Ip4(ip),
            IpAddr::V6(ip) => Protocol::Ip6(ip),
        })
        .with(Protocol::Tcp(sa.port()))
}

/// A listening socket with the options libp2p-tcp sets, except `SO_REUSEPORT`: without it a
/// port already listened on fails to bind here, which is what [`super::listen`] relies on.
fn bind(sa: SocketAddr) -> io::Result<TcpListener> {
    let s = super::listen::tcp_socket(sa)?;
    s.bind(&sa.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Lowers the calling thread's scheduling priority (see the module docs). On Linux the nice
/// value is per thread, so this leaves the rest of the process alone.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread, no pointers involved.
    unsafe {
        let tid = libc::gettid();
        let who = libc::id_t::try_from(tid).unwrap_or(0);
        let _ = libc::setpriority(libc::PRIO_PROCESS, who, ACCEPT_NICE);
    }
}

/// Accept errors that mean "out of something": pause briefly instead of spinning.
fn is_resource_error(e: &io::Error) -> bool {
    #[cfg(unix)]
    if let Some(code) = e.raw_os_error() {
        return [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM].contains(&code);
    }
    let _ = e;
    false
}

/// The accept thread's loop: runs until `stop` is set or the transport drops its receiver.
fn accept_loop(
    listener: TcpListener,
    guard: Arc<AddressGuard>,
    nodelay: bool,
    tx: mpsc::Sender<Accepted>,
    stop: Arc<AtomicBool>,
) {
    lower_priority();
    let fallback_local = listener.local_addr().ok();
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((stream, remote)) => {
                if !guard.allow_ip(remote.ip()) {
                    // Reset rather than close: no FIN exchange, no TIME_WAIT left here.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    drop(stream);
                    continue;
                }
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if nodelay {
                    let _ = stream.set_nodelay(true);
                }
                let Some(local) = stream.local_addr().ok().or(fallback_local) else {
                    continue;
                };
                if tx
                    .blocking_send(Accepted::Conn(stream, local, remote))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => match e.kind() {
                // The peer gave up while queued, or a signal: nothing to report.
                io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => {}
                _ => {
                    let pause = is_resource_error(&e);
                    if tx.try_send(Accepted::Error(e)).is_err() && tx.is_closed() {
                        return;
                    }
                    // Out of descriptors or memory: give the node a moment to release some
                    // instead of spinning; other errors are also paused on, more briefly, in
                    // case they repeat.
                    std::thread::sleep(Duration::from_millis(if pause { 100 } else { 10 }));
                }
            },
        }
    }
}

struct Listener {
    id: ListenerId,
    local: SocketAddr,
    /// Interface watcher when bound to an unspecified address; otherwise the one address is
    /// reported once.
    interfaces: Option<if_watch::tokio::IfWatcher>,
    reported: bool,
    rx: mpsc::Receiver<Accepted>,
    /// A second handle on the listening socket, used to wake the accept thread when stopping.
    socket: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    closed: bool,
}

type Event = TransportEvent<Ready<Result<tcp::tokio::TcpStream, io::Error>>, io::Error>;

impl Listener {
    /// Stops the accept thread and waits for it, so that the port is free once this returns.
    fn shut(&mut self) {
        self.closed = true;
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        // Unblocks a `blocking_send` waiting for room.
        self.rx.close();
        // On Linux, shutting a listening socket down wakes a thread blocked in `accept`
        // (which returns EINVAL). Elsewhere, a connection to ourselves does it.
        let _ = socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Read);
        #[cfg(not(target_os = "linux"))]
        {
            let mut wake = self.local;
            if wake.ip().is_unspecified() {
                wake.set_ip(match wake.ip() {
                    IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let _ = std::net::TcpStream::connect_timeout(&wake, Duration::from_millis(200));
        }
        let _ = thread.join();
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let listener_id = self.id;
        if self.closed {
            return Poll::Ready(TransportEvent::ListenerClosed {
                listener_id,
                reason: Ok(()),
            });
        }
        match &mut self.interfaces {
            None if !self.reported => {
                self.reported = true;
                return Poll::Ready(TransportEvent::NewAddress {
                    listener_id,
                    listen_addr: to_multiaddr(self.local),
                });
            }
            None => {}
            Some(w) => {
                while let Poll::Ready(ev) = w.poll_if_event(cx) {
                    let (up, net) = match ev {
                        Ok(if_watch::IfEvent::Up(n)) => (true, n),
                        Ok(if_watch::IfEvent::Down(n)) => (false, n),
                        Err(error) => {
                            return Poll::Ready(TransportEvent::ListenerError {
                                listener_id,
                                error,
                            })
                        }
                    };
                    if net.addr().is_ipv4() != self.local.is_ipv4() {
                        continue;
                    }
                    let listen_addr = to_multiaddr(SocketAddr::new(net.addr(), self.local.port()));
                    return Poll::Ready(if up {
                        TransportEvent::NewAddress {
                            listener_id,
                            listen_addr,
                        }
                    } else {
                        TransportEvent::AddressExpired {
                            listener_id,
                            listen_addr,
                        }
                    });
                }
            }
        }
        loop {
            return match self.rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    self.closed = true;
                    Poll::Ready(TransportEvent::ListenerClosed {
                        listener_id,
                        reason: Ok(()),
                    })
                }
                Poll::Ready(Some(Accepted::Error(error))) => {
                    Poll::Ready(TransportEvent::ListenerError { listener_id, error })
                }
                Poll::Ready(Some(Accepted::Conn(stream, local, remote))) => {
                    // Registers the socket with this thread's reactor.
                    let stream = match tokio::net::TcpStream::from_std(stream) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot register an accepted socket");
                            continue;
                        }
                    };
                    Poll::Ready(TransportEvent::Incoming {
                        listener_id,
                        upgrade: ready(Ok(tcp::tokio::TcpStream(stream))),
                        local_addr: to_multiaddr(local),
                        send_back_addr: to_multiaddr(remote),
                    })
                }
            };
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shut();
    }
}

impl Transport for TcpTransport {
    type Output = tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = Ready<Result<Self::Output, io::Error>>;
    type Dial = <tcp::tokio::Transport as Transport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let Some(sa) = parse_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let listener = bind(sa).map_err(TransportError::Other)?;
        let local = listener.local_addr().map_err(TransportError::Other)?;
        let socket = listener.try_clone().map_err(TransportError::Other)?;
        let interfaces = if local.ip().is_unspecified() {
            Some(if_watch::tokio::IfWatcher::new().map_err(TransportError::Other)?)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(HANDOFF);
        let stop = Arc::new(AtomicBool::new(false));
        let (guard, nodelay, stop2) = (self.guard.clone(), self.nodelay, stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("hermes-accept-{}", local.port()))
            .spawn(move || accept_loop(listener, guard, nodelay, tx, stop2))
            .map_err(TransportError::Other)?;
        self.listeners.push(Listener {
            id,
            local,
            interfaces,
            reported: false,
            rx,
            socket,
            stop,
            thread: Some(thread),
            closed: false,
        });
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(l) = self.listeners.iter_mut().find(|l| l.id == id) else {
            return false;
        };
        l.shut();
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.dialer.dial(addr, opts)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        for i in 0..this.listeners.len() {
            if let Poll::Ready(ev) = this.listeners[i].poll(cx) {
                if matches!(ev, TransportEvent::ListenerClosed { .. }) {
                    this.listeners.swap_remove(i);
                }
                return Poll::Ready(ev);
            }
        }
        this.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::gate::DenyCounters;
    use futures::{FutureExt, StreamExt};
    use hermes_proto::firewall::{DenyReason, Limits, RateLimiter};
    use std::io::{Read, Write};

    fn transport() -> (TcpTransport, Arc<AddressGuard>, Arc<DenyCounters>) {
        let counters = Arc::new(DenyCounters::default());
        let limiter = RateLimiter::new(Limits {
            max_connections: 64,
            max_per_ip: 8,
            rate_per_ip: 20,
            burst_per_ip: 40,
            ban_ms: 600_000,
        });
        let guard = Arc::new(AddressGuard::new(limiter, counters.clone()));
        (TcpTransport::new(true, guard.clone()), guard, counters)
    }

    #[test]
    fn parses_tcp_addresses_only() {
        let ok = |s: &str| parse_addr(&s.parse().unwrap());
        assert_eq!(
            ok("/ip4/127.0.0.1/tcp/7"),
            Some("127.0.0.1:7".parse().unwrap())
        );
        assert_eq!(ok("/ip6/::1/tcp/7"), Some("[::1]:7".parse().unwrap()));
        assert_eq!(ok("/ip4/127.0.0.1/udp/7/quic-v1"), None);
        assert_eq!(ok("/ip4/127.0.0.1/tcp/7/ws"), None);
        assert_eq!(ok("/dns4/example.com/tcp/7"), None);
    }

    /// An admitted socket arrives as `Incoming` and carries data; once its IP is banned, the
    /// next socket is reset and counted on the accept thread and never reaches the transport's
    /// events.
    #[tokio::test]
    async fn refused_sockets_are_reset_and_counted_admitted_ones_arrive() {
        let (mut t, guard, counters) = transport();
        t.listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let mut events = futures::stream::poll_fn(|cx| Pin::new(&mut t).poll(cx).map(Some));
        let sa = match events.next().await {
            Some(TransportEvent::NewAddress { listen_addr, .. }) => {
                parse_addr(&listen_addr).unwrap()
            }
            _ => panic!("expected the listen address first"),
        };
        assert_ne!(sa.port(), 0);

        let mut admitted = std::net::TcpStream::connect(sa).unwrap();
        admitted.write_all(b"hello").unwrap();
        let upgrade = match events.next().await {
            Some(TransportEvent::Incoming {
                upgrade,
                send_back_addr,
                ..
            }) => {
                assert_eq!(
                    parse_addr(&send_back_addr),
                    Some(admitted.local_addr().unwrap())
                );
                upgrade
            }
            _ => panic!("expected the admitted connection"),
        };
        let mut server = upgrade.await.unwrap();
        let mut buf = [0u8; 5];
        futures::AsyncReadExt::read_exact(&mut server, &mut buf)
            .await
            .unwrap();
        assert_eq!(&buf, b"hello");

        assert!(guard.record_failure(sa.ip(), 1), "the IP is now banned");
        let mut refused = std::net::TcpStream::connect(sa).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let err = refused.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(counters.get(DenyReason::Banned), 1);
        assert!(
            events.next().now_or_never().is_none(),
            "a refused socket must not reach the swarm"
        );
    }

    /// IPv6 listeners work alike, and a listener on an unspecified address reports one address
    /// per interface (here at least loopback) with the bound port.
    #[tokio::test]
    async fn ipv6_and_wildcard_listeners() {
        let (mut t, _, _) = transport();
        t.listen_on(ListenerId::next(), "/ip6/::1/tcp/0".parse().unwrap())
            .unwrap();
        t.listen_on(ListenerId::next(), "/ip4/0.0.0.0/tcp/0".parse().unwrap())
            .unwrap();
        let wildcard_port = t.listeners[1].local.port();
        let mut events = futures::stream::poll_fn(|cx| Pin::new(&mut t).poll(cx).map(Some));
        let (mut v6, mut loopback_v4) = (None, false);
        while v6.is_none() || !loopback_v4 {
            match events.next().await {
                Some(TransportEvent::NewAddress { listen_addr, .. }) => {
                    let sa = parse_addr(&listen_addr).unwrap();
                    if sa.is_ipv6() {
                        v6 = Some(sa);
                    } else if sa.ip().is_loopback() {
                        assert_eq!(sa.port(), wildcard_port);
                        loopback_v4 = true;
                    }
                }
                Some(TransportEvent::ListenerError { .. }) => {}
                _ => panic!("expected listen addresses"),
            }
        }
        let v6 = v6.unwrap();
        let client = std::net::TcpStream::connect(v6).unwrap();
        loop {
            match events.next().await {
                Some(TransportEvent::Incoming { send_back_addr, .. }) => {
                    assert_eq!(
                        parse_addr(&send_back_addr),
                        Some(client.local_addr().unwrap())
                    );
                    break;
                }
                Some(TransportEvent::NewAddress { .. } | TransportEvent::AddressExpired { .. }) => {
                }
                _ => panic!("expected the IPv6 connection"),
            }
        }
    }

    /// Removing the listener stops its thread and frees the port before `remove_listener`
    /// returns.
    #[tokio::test]
    async fn removing_a_listener_frees_its_port() {
        let (mut t, _, _) = transport();
        let id = ListenerId::next();
        t.listen_on(id, "/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let port = t.listeners[0].local.port();
        // While the listener runs, a plain bind of the port fails.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        assert!(t.remove_listener(id));
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
