//! `/hermes/identity/1`: the binding-record exchange on every new connection.
//!
//! 1. When a connection to a peer is established, each side sends a request carrying its own
//!    signed binding record.
//! 2. The receiver verifies it against the connection's authenticated peer id and the hotkey the
//!    chain registered for that peer id; if it verifies, it answers with its own record, otherwise
//!    it closes the connection without answering.
//! 3. The requester verifies the answer the same way.
//!
//! Frames are a `u32` little-endian length followed by the record, checked against
//! [`MAX_ENCODED_LEN`] before anything is allocated.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hermes_proto::binding::MAX_ENCODED_LEN;
use libp2p::request_response::Codec;
use libp2p::StreamProtocol;
use std::io;

/// Protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/hermes/identity/1");

/// Length-prefixed binding records in both directions.
#[derive(Debug, Clone, Default)]
pub struct BindingCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = usize::try_from(u32::from_le_bytes(len))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "length overflow"))?;
    if len > MAX_ENCODED_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("binding frame of {len} bytes exceeds {MAX_ENCODED_LEN}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_le_bytes()).await?;
    io.write_all(data).await?;
    io.close().await
}

impl Codec for BindingCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversize_is_refused() {
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            write_frame(&mut futures::io::Cursor::new(&mut buf), b"abc")
                .await
                .unwrap();
            assert_eq!(
                read_frame(&mut futures::io::Cursor::new(&buf))
                    .await
                    .unwrap(),
                b"abc"
            );
            let mut big = (u32::try_from(MAX_ENCODED_LEN).unwrap() + 1)
                .to_le_bytes()
                .to_vec();
            big.extend_from_slice(&[0; 8]);
            let e = read_frame(&mut futures::io::Cursor::new(&big))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            let e = read_frame(&mut futures::io::Cursor::new(&buf[..5]))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        });
    }
}
