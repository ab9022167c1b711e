//! Yamux over TCP with bounded memory per connection.
//!
//! `libp2p-yamux` offers no way to set yamux's per-connection receive window, which stays at its
//! 1 GiB default: bytes a peer may have this node buffer on one connection before flow control
//! stops it. This is the same muxer on the `yamux` crate directly, with the window and the
//! stream count bounded like our QUIC transport's ([`super::quic::QuicConfig`]). The wire
//! protocol (`/yamux/1.0.0`) is unchanged, so any libp2p peer still connects.

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Concurrent streams per connection, both directions together. An honest peer uses a few
/// protocol streams plus at most 32 served data-plane substreams each way (the stream layer's
/// per-peer cap); beyond this the connection is closed by yamux.
pub const MAX_STREAMS: usize = 128;
/// Receive window across all streams of a connection: yamux's minimum for [`MAX_STREAMS`]
/// (256 KiB each), 32 MiB instead of yamux's 1 GiB default. Streams still grow their own window
/// towards the link's bandwidth-delay product within it.
pub const CONNECTION_WINDOW: usize = MAX_STREAMS * 256 * 1024;
/// Inbound streams buffered while the swarm is not asking for them; further ones are dropped.
const MAX_BUFFERED_INBOUND: usize = 64;

/// The muxer upgrade: yamux with [`MAX_STREAMS`] and [`CONNECTION_WINDOW`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Config;

impl Config {
    fn yamux() -> yamux::Config {
        let mut c = yamux::Config::default();
        // Streams first: yamux checks window >= streams × 256 KiB on each call, and the
        // default window (1 GiB) allows the new stream count.
        c.set_max_num_streams(MAX_STREAMS);
        c.set_max_connection_receive_window(Some(CONNECTION_WINDOW));
        c
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;
    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/yamux/1.0.0")
    }
}

impl<C: AsyncRead + AsyncWrite + Send + Unpin + 'static> InboundConnectionUpgrade<C> for Config {
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = futures::future::Ready<Result<Muxer<C>, std::io::Error>>;
    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        futures::future::ready(Ok(Muxer::new(yamux::Connection::new(
            io,
            Self::yamux(),
            yamux::Mode::Server,
        ))))
    }
}

impl<C: AsyncRead + AsyncWrite + Send + Unpin + 'static> OutboundConnectionUpgrade<C> for Config {
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = futures::future::Ready<Result<Muxer<C>, std::io::Error>>;
    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        futures::future::ready(Ok(Muxer::new(yamux::Connection::new(
            io,
            Self::yamux(),
            yamux::Mode::Client,
        ))))
    }
}

/// A yamux connection as a libp2p [`StreamMuxer`].
#[derive(Debug)]
pub struct Muxer<C> {
    conn: yamux::Connection<C>,
    /// Inbound streams that arrived while the swarm polled for other progress.
    inbound: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
}

impl<C> Muxer<C> {
    fn new(conn: yamux::Connection<C>) -> Self {
        Muxer {
            conn,
            inbound: VecDeque::new(),
            inbound_waker: None,
        }
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> Muxer<C> {
    fn next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, MuxError>> {
        match self.conn.poll_next_inbound(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(r.map_err(MuxError)),
            Poll::Ready(None) => Poll::Ready(Err(MuxError(yamux::ConnectionError::Closed))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A yamux connection error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct MuxError(#[from] yamux::ConnectionError);

impl<C: AsyncRead + AsyncWrite + Unpin> StreamMuxer for Muxer<C> {
    type Substream = yamux::Stream;
    type Error = MuxError;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        if let Some(s) = self.inbound.pop_front() {
            return Poll::Ready(Ok(s));
        }
        if let Poll::Ready(r) = self.next_inbound(cx) {
            return Poll::Ready(r);
        }
        self.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.conn.poll_new_outbound(cx).map_err(MuxError)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.conn.poll_close(cx).map_err(MuxError)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        // Yamux makes progress (reads frames, sends window updates) only through this call.
        let s = match this.next_inbound(cx) {
            Poll::Ready(r) => r?,
            Poll::Pending => return Poll::Pending,
        };
        if this.inbound.len() < MAX_BUFFERED_INBOUND {
            this.inbound.push_back(s);
            if let Some(w) = this.inbound_waker.take() {
                w.wake();
            }
        } else {
            tracing::debug!("inbound yamux stream dropped: too many waiting");
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::muxing::StreamMuxerExt;
    use libp2p::tcp::tokio::TcpStream;

    #[test]
    fn the_window_is_bounded_like_quics() {
        // yamux panics if the window is below 256 KiB per stream: building it checks the pair.
        let _ = Config::yamux();
        const { assert!(CONNECTION_WINDOW <= 32 << 20) };
    }

    /// A peer that opens more than [`MAX_STREAMS`] streams (a raw yamux client with yamux's
    /// default limit of 512) gets its connection closed instead of having this node hold them.
    #[tokio::test]
    async fn a_peer_opening_too_many_streams_loses_its_connection() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let (c, s) = tokio::join!(tokio::net::TcpStream::connect(a), l.accept());
        let mut server = Config
            .upgrade_inbound(TcpStream(s.unwrap().0), "/yamux/1.0.0")
            .await
            .unwrap();
        let mut client = yamux::Connection::new(
            TcpStream(c.unwrap()),
            yamux::Config::default(),
            yamux::Mode::Client,
        );
        let client = tokio::spawn(async move {
            let mut streams = Vec::new();
            futures::future::poll_fn(|cx| loop {
                match client.poll_next_inbound(cx) {
                    Poll::Ready(Some(Ok(_))) => continue,
                    Poll::Ready(_) => return Poll::Ready(streams.len()),
                    Poll::Pending => {}
                }
                if streams.len() < 300 {
                    match client.poll_new_outbound(cx) {
                        Poll::Ready(Ok(mut st)) => {
                            let _ = Pin::new(&mut st).poll_write(cx, b"x");
                            streams.push(st);
                            continue;
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(streams.len()),
                        Poll::Pending => {}
                    }
                }
                return Poll::Pending;
            })
            .await
        });
        // This node accepts and holds every inbound stream until the connection fails.
        let held = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            let mut held = Vec::new();
            while let Ok(s) = futures::future::poll_fn(|cx| server.poll_inbound_unpin(cx)).await {
                held.push(s);
            }
            held.len()
        })
        .await
        .expect("the connection survived 300 streams");
        assert!(held <= MAX_STREAMS, "{held} streams held");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(20), client).await;
    }
}
