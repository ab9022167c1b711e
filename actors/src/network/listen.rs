//! Opening listen addresses with errors a user can act on.
//!
//! Two problems with libp2p's own listen path, both fixed here:
//!
//! 1. libp2p-tcp sets `SO_REUSEPORT` on every listening socket (so that dials can leave from the
//!    listening port). On Linux that lets a second process of the same user bind the same port
//!    without an error, and the kernel then splits incoming connections between the two nodes.
//!    [`check_tcp_free`] binds the address first *without* `SO_REUSEPORT`: any socket already
//!    listening there, with or without the option, makes that bind fail, so the second node stops
//!    at start-up naming the address. (Two nodes started in the same instant can both pass the
//!    check before either listens; a race of microseconds, not the everyday mistake of starting a
//!    node twice.) The accept-thread listener ([`super::accept`]) does not set the option, so its
//!    own bind fails too; the check stays for `firewall.accept_thread = false`. The QUIC transport ([`super::quic`]) never sets the option, so its bind fails
//!    on its own.
//! 2. `TransportError::Other` displays as an empty string, which hid the cause ("cannot listen on
//!    …: "). [`describe`] walks the error's sources and names the operating system's reason.

use libp2p::core::transport::TransportError;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, SocketAddr};

/// The TCP socket address of `addr` when it names a fixed port (`/ip4|ip6/…/tcp/N`, N ≠ 0).
fn fixed_tcp(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut it = addr.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    match it.next()? {
        Protocol::Tcp(port) if port != 0 => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// Fails when a socket already listens on the fixed TCP port of `addr` (see the module docs).
/// Addresses with port 0 or that are not TCP pass unchecked.
///
/// # Errors
/// The reason the port cannot be had, worded by [`io_reason`].
pub fn check_tcp_free(addr: &Multiaddr) -> Result<(), String> {
    let Some(sa) = fixed_tcp(addr) else {
        return Ok(());
    };
    let probe = || -> io::Result<()> {
        tcp_socket(sa)?.bind(&sa.into())
        // Dropped here: the port is free again for libp2p to bind a moment later.
    };
    probe().map_err(|e| io_reason(&e))
}

/// A TCP socket for `sa` with the options libp2p-tcp sets on a listener, except `SO_REUSEPORT`:
/// binding it fails on a port something already listens on.
pub(crate) fn tcp_socket(sa: SocketAddr) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(sa),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if sa.is_ipv6() {
        // As libp2p-tcp does, so that a bind conflicts with exactly what it would.
        s.set_only_v6(true)?;
    }
    // SO_REUSEADDR (as libp2p sets it) keeps a port in TIME_WAIT from a previous run usable; it
    // does not let the bind share a port with a socket that is listening.
    s.set_reuse_address(true)?;
    Ok(s)
}

/// Words an operating-system error met while binding a listen address.
pub fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            "address in use: another process (perhaps another Hermes node) already listens on this port".into()
        }
        io::ErrorKind::AddrNotAvailable => {
            "address not available: no interface of this host has that IP".into()
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied: ports below 1024 need privileges".into()
        }
        _ => e.to_string(),
    }
}

/// The cause of a failed `listen_on`, as one line.
pub fn describe(e: &TransportError<io::Error>) -> String {
    match e {
        TransportError::MultiaddrNotSupported(a) => {
            format!("unsupported address {a} (expected /ip4|ip6/…/tcp/PORT or /udp/PORT/quic-v1)")
        }
        TransportError::Other(e) => describe_io(e),
    }
}

/// Finds the operating system's error inside `e` (transports wrap it in several layers, some of
/// which display as nothing) and words it; otherwise joins the non-empty messages of the chain.
fn describe_io(e: &io::Error) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(cur) = next {
        if let Some(io) = cur.downcast_ref::<io::Error>() {
            if io.raw_os_error().is_some() {
                return io_reason(io);
            }
            // A custom io::Error's `source()` skips the error it wraps, so descend explicitly.
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        let m = cur.to_string();
        if !m.is_empty() && !messages.iter().any(|x| x.contains(&m)) {
            messages.push(m);
        }
        next = cur.source();
    }
    if messages.is_empty() {
        "unknown error".into()
    } else {
        messages.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_is_refused_and_port_zero_passes() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        let err = check_tcp_free(&addr).unwrap_err();
        assert!(err.starts_with("address in use"), "{err}");
        assert!(check_tcp_free(&"/ip4/127.0.0.1/tcp/0".parse().unwrap()).is_ok());
        assert!(check_tcp_free(&"/ip4/127.0.0.1/udp/1/quic-v1".parse().unwrap()).is_ok());
        drop(held);
        assert!(check_tcp_free(&addr).is_ok());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_wrapped_os_error_is_found() {
        // 98 is EADDRINUSE on Linux.
        let os = io::Error::from_raw_os_error(98);
        let wrapped = TransportError::Other(io::Error::other(os));
        let text = describe(&wrapped);
        assert!(text.starts_with("address in use"), "{text}");
    }
}
