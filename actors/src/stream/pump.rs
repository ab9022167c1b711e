//! The network-thread half of a stream: tasks that move whole chunk frames between a substream
//! and the application's [`StreamWriter`](super::bulk::StreamWriter) /
//! [`StreamReader`](super::bulk::StreamReader).
//!
//! Why: the application's tasks run on its own threads, and a muxed substream hands data to its
//! connection in 16 KiB frames. Driving the substream from the application's thread woke the
//! network thread for each of them; the benchmark's profile showed a quarter of the CPU in
//! context switches. Here the substream is driven on the network thread, and only sealed chunks
//! (256 KiB by default) cross threads, through channels of [`QUEUE`] chunks, which keep the
//! backpressure (a full channel stops the writer; a reader that does not read stops the pump,
//! and flow control then stops the sender) and bound the memory to a few chunks per stream.
//! Encryption stays on the application's side, so it runs in parallel with the transport.

use super::wire;
use futures::channel::{mpsc, oneshot};
use futures::io::{ReadHalf, WriteHalf};
use futures::task::AtomicWaker;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use hermes_proto::chunk::{decode_chunk_header, CHUNK_HEADER_LEN, FLAG_FINAL};
use hermes_proto::frame::{StreamControl, MAX_CONTROL_FRAME};
use libp2p::Stream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Chunks queued between the application and the network thread, each way.
pub(crate) const QUEUE: usize = 4;
/// Buffers kept for reuse per stream (allocating a fresh 256 KiB buffer per chunk costs page
/// faults and zeroing).
const POOL: usize = 2 * QUEUE + 2;

/// Reusable chunk buffers.
#[derive(Debug, Default)]
pub(crate) struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    pub(crate) fn get(&self, capacity: usize) -> Vec<u8> {
        let mut v = self
            .0
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default();
        v.clear();
        v.reserve(capacity);
        v
    }

    pub(crate) fn put(&self, v: Vec<u8>) {
        if let Ok(mut p) = self.0.lock() {
            if p.len() < POOL {
                p.push(v);
            }
        }
    }
}

/// What the write pump shares with its writer.
#[derive(Debug, Default)]
pub(crate) struct WriteState {
    /// Frames written and flushed to the substream.
    pub(crate) written: AtomicU64,
    /// Wakes a writer waiting in `poll_flush`/`poll_close`.
    pub(crate) waker: AtomicWaker,
    /// Why the pump stopped early.
    pub(crate) error: Mutex<Option<String>>,
}

impl WriteState {
    fn fail(&self, e: String) {
        if let Ok(mut g) = self.error.lock() {
            g.get_or_insert(e);
        }
        self.waker.wake();
    }

    pub(crate) fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|g| g.clone())
    }
}

/// Writes sealed frames from the writer to the substream; after the final one, closes the write
/// side and reports the recipient's confirmation.
pub(crate) async fn write_pump(
    stream: Stream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    state: Arc<WriteState>,
    pool: Arc<Pool>,
    done: oneshot::Sender<Result<u64, String>>,
) {
    let (mut rd, mut wr): (ReadHalf<Stream>, WriteHalf<Stream>) = stream.split();
    let mut next = rx.next().await;
    let mut unflushed = 0u64;
    while let Some(frame) = next.take() {
        let last = frame
            .get(CHUNK_HEADER_LEN - 1)
            .is_some_and(|f| f & FLAG_FINAL != 0);
        if let Err(e) = wr.write_all(&frame).await {
            state.fail(e.to_string());
            let _ = done.send(Err(e.to_string()));
            return;
        }
        pool.put(frame);
        unflushed += 1;
        // Flush when nothing else is queued: a busy stream writes whole batches.
        next = rx.try_recv().ok();
        if next.is_none() || last {
            if let Err(e) = wr.flush().await {
                state.fail(e.to_string());
                let _ = done.send(Err(e.to_string()));
                return;
            }
            state.written.fetch_add(unflushed, Ordering::Release);
            unflushed = 0;
            state.waker.wake();
        }
        if last {
            let _ = wr.close().await;
            let answer = std::pin::pin!(wire::read_frame(&mut rd, MAX_CONTROL_FRAME));
            let mut done = done;
            // The writer stops waiting after its deadline (dropping its end of `done`): stop
            // waiting here too, and drop the substream.
            let answer = match futures::future::select(answer, done.cancellation()).await {
                futures::future::Either::Left((answer, _)) => answer,
                futures::future::Either::Right(_) => return,
            };
            let answer = match answer {
                Ok(Some(body)) => match StreamControl::decode_body(&body) {
                    Ok(StreamControl::Done { bytes }) => Ok(bytes),
                    _ => Err("unexpected answer to the end of a stream".to_string()),
                },
                Ok(None) => Err("the recipient closed the stream without confirming it".into()),
                Err(e) => Err(e.to_string()),
            };
            let _ = done.send(answer);
            return;
        }
        if next.is_none() {
            next = rx.next().await;
        }
    }
    // The writer was dropped before its final chunk: the substream is dropped too, and the
    // recipient sees a truncated stream.
}

/// An item from the read pump.
#[derive(Debug)]
pub(crate) enum Item {
    /// A chunk frame: flags and body.
    Chunk(u8, Vec<u8>),
    /// The substream ended (cleanly or not: the reader decides whether that was complete).
    End,
    /// A frame that does not decode.
    Malformed,
    /// An I/O error.
    Failed(String),
    /// Bytes after the final chunk (even fewer than a chunk header).
    Extended,
}

/// Reads chunk frames from the substream for the reader; after the end, writes the confirmation
/// the reader sends once it has verified everything.
pub(crate) async fn read_pump(
    stream: Stream,
    mut tx: mpsc::Sender<Item>,
    pool: Arc<Pool>,
    max_body: usize,
    confirm: oneshot::Receiver<u64>,
) {
    use futures::SinkExt;
    let (rd, mut wr) = stream.split();
    let mut rd = futures::io::BufReader::with_capacity(64 << 10, rd);
    let mut after_final = false;
    loop {
        let mut header = [0u8; CHUNK_HEADER_LEN];
        let mut got = 0;
        let item = loop {
            if after_final {
                // After the final chunk only the end of the substream may come: a single stray
                // byte extends the stream, whether or not a whole frame follows.
                break Some(match rd.read(&mut header[..1]).await {
                    Ok(0) => Item::End,
                    Ok(_) => Item::Extended,
                    Err(e) => Item::Failed(e.to_string()),
                });
            }
            match rd.read(&mut header[got..]).await {
                Ok(0) => break Some(Item::End),
                Ok(n) => {
                    got += n;
                    if got == CHUNK_HEADER_LEN {
                        break None;
                    }
                }
                Err(e) => break Some(Item::Failed(e.to_string())),
            }
        };
        let item = match item {
            Some(item) => item,
            None => match decode_chunk_header(&header, max_body) {
                Err(_) => Item::Malformed,
                Ok((len, flags)) => {
                    let mut body = pool.get(len);
                    body.resize(len, 0);
                    match rd.read_exact(&mut body).await {
                        Ok(()) => {
                            after_final = flags & FLAG_FINAL != 0;
                            Item::Chunk(flags, body)
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Item::End,
                        Err(e) => Item::Failed(e.to_string()),
                    }
                }
            },
        };
        let stop = !matches!(item, Item::Chunk(..));
        let end = matches!(item, Item::End);
        if tx.send(item).await.is_err() {
            // The reader is gone (done with an error, or dropped).
            return;
        }
        if stop {
            if end {
                if let Ok(bytes) = confirm.await {
                    let frame = StreamControl::Done { bytes }.encode();
                    let _ = wire::write_flush(&mut wr, &frame).await;
                    let _ = wr.close().await;
                }
            }
            return;
        }
    }
}
