//! `hermes run`, `peers` and `stats`: a running node and its control socket.

use crate::{block_on, outln};
use anyhow::{Context, Result};
use hermes::{Config, Runtime};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use std::path::Path;

pub(crate) fn run_node(config: &Path) -> Result<()> {
    serve(config, Banner::Stdout, |_, mut stop| async move {
        outln!("running; Ctrl-C to stop");
        stop.recv().await;
        Ok(())
    })
}

/// Where `serve` prints who the node is and where it listens: stdout for `run` (that is its
/// output), stderr for `listen` (whose stdout carries only what arrives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Banner {
    Stdout,
    Stderr,
}

impl Banner {
    pub(crate) fn line(self, line: std::fmt::Arguments<'_>) {
        match self {
            Banner::Stdout => {
                let _ = crate::out_line(line);
            }
            Banner::Stderr => eprintln!("{line}"),
        }
    }
}

/// Starts the node of `config`, prints who it is and where it listens, serves the control
/// socket, runs `body` (given Ctrl-C / SIGTERM) to completion and shuts the node down cleanly.
pub(crate) fn serve<F, Fut>(config: &Path, banner: Banner, body: F) -> Result<()>
where
    F: FnOnce(hermes::RuntimeHandle, StopSignals) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let cfg = Config::load(config)?;
    let data_dir = cfg.data_dir.clone();
    let wanted: Vec<Multiaddr> = cfg.listen.iter().map(|a| a.0.clone()).collect();
    block_on(async {
        // Catch Ctrl-C before the node starts: one that arrives during startup then stops the
        // node cleanly right after, instead of killing the process with its store unflushed.
        let stop = StopSignals::new()?;
        let rt = Runtime::builder(cfg).start().await?;
        let me = rt.identity().await?;
        banner.line(format_args!("ss58:    {}", me.ss58));
        banner.line(format_args!("peer_id: {}", me.peer_id));
        let addrs = all_listening(&rt, &wanted).await;
        for a in &addrs {
            banner.line(format_args!("listen:  {a}/p2p/{}", me.peer_id));
        }
        let sock = hermes::control::socket_path(&data_dir);
        let server = tokio::spawn(hermes::control::serve(rt.clone(), sock.clone()));
        banner.line(format_args!(
            "control: {} (try `hermes peers --config ...`)",
            sock.display()
        ));
        let result = body(rt.clone(), stop).await;
        eprintln!("shutting down");
        server.abort();
        let _ = std::fs::remove_file(&sock);
        rt.shutdown().await?;
        result
    })
}

/// The node's listen addresses once every configured listener is up: a listener on a specific
/// address has bound it, and one on 0.0.0.0 (or ::) has reported each local interface address of
/// its family. Transports report addresses one by one as they bind and as interfaces are
/// enumerated; printing the first ones seen would show a timing-dependent subset. Waits at most
/// 5 s, then returns what is bound and names what is missing on stderr.
async fn all_listening(rt: &hermes::RuntimeHandle, wanted: &[Multiaddr]) -> Vec<Multiaddr> {
    let interfaces: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
        .map(|v| v.iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let bound = rt.listen_addrs().await.unwrap_or_default();
        let not_yet = missing(wanted, &bound, &interfaces);
        if not_yet.is_empty() {
            return bound;
        }
        if std::time::Instant::now() >= end {
            for m in not_yet {
                eprintln!("warning: not listening on {m} yet");
            }
            return bound;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The listen addresses (as configured, or with the interface address filled in) that `bound`
/// does not cover yet.
fn missing(
    wanted: &[Multiaddr],
    bound: &[Multiaddr],
    interfaces: &[std::net::IpAddr],
) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    for w in wanted {
        let Some(ip) = ip_of(w) else {
            // Not an IP listener (e.g. /dns): any bound address of the same transport will do.
            if !bound.iter().any(|b| same_transport(w, b)) {
                out.push(w.clone());
            }
            continue;
        };
        let expected: Vec<std::net::IpAddr> = if ip.is_unspecified() {
            interfaces
                .iter()
                .copied()
                .filter(|i| i.is_ipv4() == ip.is_ipv4())
                .collect()
        } else {
            vec![ip]
        };
        // With no interface of that family known, one bound address is all we can ask for.
        if expected.is_empty() && !bound.iter().any(|b| same_transport(w, b)) {
            out.push(w.clone());
        }
        for e in expected {
            if !bound
                .iter()
                .any(|b| ip_of(b) == Some(e) && same_transport(w, b))
            {
                out.push(with_ip(w, e));
            }
        }
    }
    out
}

fn ip_of(a: &Multiaddr) -> Option<std::net::IpAddr> {
    a.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

fn with_ip(a: &Multiaddr, ip: std::net::IpAddr) -> Multiaddr {
    a.iter()
        .map(|p| match (p, ip) {
            (Protocol::Ip4(_) | Protocol::Ip6(_), std::net::IpAddr::V4(v4)) => Protocol::Ip4(v4),
            (Protocol::Ip4(_) | Protocol::Ip6(_), std::net::IpAddr::V6(v6)) => Protocol::Ip6(v6),
            (p, _) => p,
        })
        .collect()
}

/// Same transport stack after the IP (tcp, or udp/quic-v1), and the same port unless the
/// configured one is 0 (any free port).
fn same_transport(wanted: &Multiaddr, bound: &Multiaddr) -> bool {
    let rest = |a: &Multiaddr| -> Vec<Protocol<'static>> {
        a.iter()
            .filter(|p| {
                !matches!(
                    p,
                    Protocol::Ip4(_)
                        | Protocol::Ip6(_)
                        | Protocol::Dns(_)
                        | Protocol::Dns4(_)
                        | Protocol::Dns6(_)
                        | Protocol::P2p(_)
                )
            })
            .map(|p| p.acquire())
            .collect()
    };
    let (w, b) = (rest(wanted), rest(bound));
    w.len() == b.len()
        && w.iter().zip(&b).all(|(w, b)| match (w, b) {
            (Protocol::Tcp(0), Protocol::Tcp(_)) | (Protocol::Udp(0), Protocol::Udp(_)) => true,
            _ => w == b,
        })
}

/// Ctrl-C (SIGINT) and SIGTERM, registered when created: a signal that arrives before `recv` is
/// awaited is kept, not lost.
pub(crate) struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot catch Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        })
    }

    /// Waits for the first of Ctrl-C and SIGTERM.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Asks the running node of `config` for `what` over its control socket. With `json` the answer
/// is printed as it came (pretty JSON) and `None` returned; otherwise it is returned for the
/// caller to print as text.
fn query(config: &Path, what: &str, json: bool) -> Result<Option<serde_json::Value>> {
    let cfg = Config::load(config)?;
    let path = hermes::control::socket_path(&cfg.data_dir);
    let v = block_on(hermes::control::request(&path, what))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(None);
    }
    Ok(Some(v))
}

pub(crate) fn peers(config: &Path, json: bool) -> Result<()> {
    let Some(v) = query(config, "peers", json)? else {
        return Ok(());
    };
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        outln!("no verified peers");
    }
    for p in peers {
        outln!(
            "{}  {}  netuids {}  {}",
            p["ss58"].as_str().unwrap_or("?"),
            p["peer_id"].as_str().unwrap_or("?"),
            p["netuids"],
            p["addresses"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub(crate) fn stats(config: &Path, json: bool) -> Result<()> {
    let Some(v) = query(config, "stats", json)? else {
        return Ok(());
    };
    // Only the reasons that occurred: the JSON lists every reason, most of them 0.
    let nonzero = |m: &serde_json::Value| -> String {
        let parts: Vec<String> = m
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect()
            })
            .unwrap_or_default();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    };
    let m = &v["messages"];
    outln!("connections refused:  {}", nonzero(&v["denied"]));
    outln!("registry entries:     {}", v["registry_entries"]);
    outln!(
        "messages:             sent {}, delivered {}, received {}, duplicates suppressed {}",
        m["sent"],
        m["delivered"],
        m["received"],
        m["duplicates"]
    );
    outln!("messages refused:     {}", nonzero(&m["rejected"]));
    outln!(
        "outbox:               {} message(s), {} bytes",
        m["outbox"],
        m["outbox_bytes"]
    );
    outln!(
        "sessions:             {} in, {} out",
        m["sessions_in"],
        m["sessions_out"]
    );
    outln!(
        "streams:              {} in, {} out",
        m["streams_in"],
        m["streams_out"]
    );
    Ok(())
}
