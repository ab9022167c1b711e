//! Reading and writing length-prefixed frames on substreams.
//!
//! Lengths are checked against the caller's maximum before any buffer is allocated. An over-long
//! `Msg` frame is not an error on its own: its fixed prefix is read (so the receiver can refuse that
//! one message by session and counter) and the rest is discarded through a small buffer, so a
//! message larger than this node accepts costs no memory and does not break the substream.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hermes_proto::frame::{read_length, LEN_PREFIX, MSG_PREFIX_LEN};
use std::io;

/// What [`read_msg_frame`] found.
#[derive(Debug)]
pub(crate) enum ReadFrame {
    /// A frame body (everything after the length prefix).
    Body(Vec<u8>),
    /// A `Msg` frame over the limit, discarded; its prefix names the message.
    TooLarge([u8; MSG_PREFIX_LEN]),
    /// The remote closed the substream at a frame boundary.
    Eof,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Reads the length prefix, or `None` on a clean end of stream before any of it.
async fn read_prefix<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<[u8; LEN_PREFIX]>> {
    let mut p = [0u8; LEN_PREFIX];
    let mut got = 0;
    while got < LEN_PREFIX {
        let n = r.read(&mut p[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    Ok(Some(p))
}

/// Reads one frame of at most `max` bytes after its prefix.
///
/// # Errors
/// I/O errors, a truncated frame, or a frame over `max`.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    let Some(p) = read_prefix(r).await? else {
        return Ok(None);
    };
    let len = read_length(p, max).map_err(invalid)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Reads one message-protocol frame; see the module documentation for over-long frames.
///
/// # Errors
/// I/O errors, a truncated frame, or an over-long frame that is not a `Msg`.
pub(crate) async fn read_msg_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> io::Result<ReadFrame> {
    let Some(p) = read_prefix(r).await? else {
        return Ok(ReadFrame::Eof);
    };
    let len = match read_length(p, max) {
        Ok(len) => len,
        Err(e) => {
            let len = u32::from_le_bytes(p) as usize;
            if len < MSG_PREFIX_LEN {
                return Err(invalid(e));
            }
            let mut prefix = [0u8; MSG_PREFIX_LEN];
            r.read_exact(&mut prefix).await?;
            if hermes_proto::frame::parse_msg_prefix(&prefix).is_err() {
                return Err(invalid(e));
            }
            let mut rest = (len - MSG_PREFIX_LEN) as u64;
            let mut sink = [0u8; 16 * 1024];
            while rest > 0 {
                let want = rest.min(sink.len() as u64) as usize;
                r.read_exact(&mut sink[..want]).await?;
                rest -= want as u64;
            }
            return Ok(ReadFrame::TooLarge(prefix));
        }
    };
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(ReadFrame::Body(body))
}

/// Writes a complete frame (prefix included) and flushes.
///
/// # Errors
/// I/O errors.
pub(crate) async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_proto::frame::{msg_prefix, MsgFrame};
    use hermes_proto::Id128;

    #[test]
    fn oversized_messages_are_skipped_and_the_next_frame_still_reads() {
        futures::executor::block_on(async {
            let big = MsgFrame::Msg {
                session_id: Id128([1; 16]),
                counter: 4,
                ciphertext: vec![7; 100_000],
            }
            .encode();
            let small = MsgFrame::Ack(vec![Id128([2; 16])]).encode();
            let mut bytes = big.clone();
            bytes.extend_from_slice(&small);
            let mut r = futures::io::Cursor::new(bytes);
            match read_msg_frame(&mut r, 1000).await.unwrap() {
                ReadFrame::TooLarge(p) => {
                    assert_eq!(
                        hermes_proto::frame::parse_msg_prefix(&p).unwrap(),
                        (Id128([1; 16]), 4)
                    );
                }
                other => panic!("{other:?}"),
            }
            match read_msg_frame(&mut r, 1000).await.unwrap() {
                ReadFrame::Body(b) => {
                    assert_eq!(
                        MsgFrame::decode_body(b).unwrap(),
                        MsgFrame::Ack(vec![Id128([2; 16])])
                    )
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                read_msg_frame(&mut r, 1000).await.unwrap(),
                ReadFrame::Eof
            ));
            // An over-long control frame is an error, not a skip.
            let ack = MsgFrame::Ack(vec![Id128([2; 16]); 100]).encode();
            let mut r = futures::io::Cursor::new(ack);
            assert!(read_msg_frame(&mut r, 100).await.is_err());
            // Truncated mid-prefix.
            let mut r = futures::io::Cursor::new(vec![1u8, 0]);
            assert!(read_frame(&mut r, 100).await.is_err());
            let _ = msg_prefix(&Id128([0; 16]), 0, 0);
        });
    }
}
