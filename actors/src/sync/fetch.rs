//! The receiver's download engine: parallel, verified, resumable, in constant memory.
//!
//! [`Downloader::run`] pulls the chunks the journal does not yet list from a [`ChunkSource`],
//! with up to `parallelism` fetches in flight, each into one buffer of a fixed pool
//! (`parallelism × sealed chunk size` bytes whatever the payload size). For each fetched chunk,
//! in this order:
//!
//! 1. its BLAKE3 is compared with the manifest *before* anything is decrypted; a mismatch (a
//!    corrupt or truncated chunk from storage) is fetched again, up to `max_attempts` times, and
//!    never reaches the file; a transient source error or a fetch that stalls past
//!    `fetch_timeout` is retried the same way, after a doubling delay;
//! 2. it is opened in place and written with `pwrite` at its plaintext offset into
//!    `<dest>.partial`, whose blocks were reserved up front (`fallocate`), so a destination
//!    without room is reported before anything is fetched;
//! 3. it joins a batch of written chunks. When the batch holds `⌈parallelism / 2⌉` chunks, a
//!    helper thread makes the data durable (`fdatasync`) and only then rewrites the journal
//!    (`<dest>.partial.journal`, the proto [`Journal`]) in place with their bits set, and syncs
//!    it, while fetching and decrypting go on; at most one such flush runs at a time. Bits only
//!    go from 0 to 1 and the header never changes, so even a torn write leaves a journal
//!    claiming a subset of durable chunks: the journal never claims a chunk that is not durably
//!    in the file.
//!
//! After a `kill -9` the chunks that must be fetched again are those in flight (≤ parallelism)
//! plus the two unjournaled batches (the one syncing, the one filling): at most
//! `parallelism + 2 × ⌈parallelism / 2⌉`, i.e. `2 × parallelism` for an even parallelism. A
//! restart trusts the journal (after checking it names this transfer id, manifest root and
//! layout, and that the partial file has the payload's size) and re-hashes nothing.
//!
//! When every chunk is in, the manifest's root is checked once more against the expected root
//! (the journal and the hashes every chunk was checked against belong to the ticket's transfer),
//! the file is synced and atomically renamed to `dest`, the directory is synced, and the journal
//! is removed.
//!
//! Cancellation: through the `cancel` watch channel (the written batch is journaled first, so
//! nothing written is fetched again), or by dropping the future (the partial file and the last
//! journal stay; at most the unjournaled batch is fetched again). Either way a later run with
//! the same destination resumes. Errors (disk full, a chunk that stays corrupt, a source that
//! refuses) also keep the partial file and journal.
//!
//! The per-chunk work (hash, decrypt, write) runs inline on the task driving the fetches; only
//! the syncs, which wait on the disk, go to a helper thread.

use futures::stream::{FuturesUnordered, StreamExt};
use hermes_proto::sync::manifest::Hash;
use hermes_proto::sync::{ChunkCipher, ContentKey, Journal, Layout, Manifest};
use hermes_proto::Id128;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::watch;

/// Parallel fetches unless configured otherwise.
pub const DEFAULT_PARALLELISM: usize = 8;
/// Attempts per chunk (the first fetch included) unless configured otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// How long one chunk fetch may take unless configured otherwise: an 8 MiB chunk at 1 Mbit/s.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(90);
/// First wait before re-asking after a transient error unless configured otherwise.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// How long a download waits for another one to release its destination.
const LOCK_WAIT: Duration = Duration::from_secs(1);
/// Upper bound on parallelism: the buffer pool is `parallelism × chunk size`, at most 4 GiB at
/// 64 MiB chunks.
pub const MAX_PARALLELISM: usize = 64;

/// Why a source could not deliver a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ChunkSourceError {
    /// What went wrong, for the user.
    pub message: String,
    /// Whether asking again may help (a dropped connection, a 500), as opposed to a refusal
    /// (changed source, 403, expired ticket).
    pub retryable: bool,
}

impl ChunkSourceError {
    /// A transient failure: the chunk is asked for again (bounded).
    pub fn unavailable(message: impl Into<String>) -> Self {
        ChunkSourceError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A definite refusal: the download stops.
    pub fn refused(message: impl Into<String>) -> Self {
        ChunkSourceError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// Where sealed chunks come from: the sender node over `/hermes/sync/1`, a presigned URL, or,
/// in tests, a [`super::LocalChunkSource`].
pub trait ChunkSource: Sync {
    /// Fills `buf` (exactly the chunk's sealed length) with sealed chunk `index`. The bytes are
    /// untrusted: the engine checks them against the manifest.
    fn fetch<'a>(
        &'a self,
        index: u64,
        buf: &'a mut [u8],
    ) -> impl Future<Output = Result<(), ChunkSourceError>> + Send + 'a;
}

/// Why a download stopped. The partial file and journal are kept in every case, for a resume.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The manifest does not hash to the expected root.
    #[error("manifest does not match the expected root")]
    RootMismatch,
    /// The options are out of range.
    #[error("invalid download option: {0}")]
    BadOptions(String),
    /// A chunk failed its hash check on every attempt: the stored copy is corrupt.
    #[error("chunk {index} was corrupt on all {attempts} attempts; the stored copy is damaged")]
    CorruptChunk {
        /// The chunk.
        index: u64,
        /// Attempts made.
        attempts: u32,
    },
    /// A chunk matched its hash but did not decrypt: the content key is not this transfer's.
    #[error("chunk {index} does not decrypt with this key (wrong key for the transfer)")]
    WrongKey {
        /// The chunk.
        index: u64,
    },
    /// The manifest could not be fetched.
    #[error("fetching the manifest: {0}")]
    Manifest(ChunkSourceError),
    /// The source failed for a chunk (refused, or failed on every attempt).
    #[error("fetching chunk {index}: {error}")]
    Source {
        /// The chunk.
        index: u64,
        /// The source's error.
        error: ChunkSourceError,
    },
    /// The destination's file system is full.
    #[error("disk full writing {path}; the partial download is kept, free space and resume")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// Another file-system error.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The fetch loop ended with chunks missing (a bug, reported rather than renamed into place).
    #[error("download ended with {missing} chunks missing")]
    Incomplete {
        /// Chunks not in the journal.
        missing: u64,
    },
    /// Another download is writing into the same destination.
    #[error("another download is already writing {path}")]
    Busy {
        /// The partial file.
        path: PathBuf,
    },
    /// Cancelled through the cancel channel; the download resumes on the next run.
    #[error("download cancelled; the partial file is kept for a resume")]
    Cancelled,
}

/// Tunables of one download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Fetches in flight (1..=[`MAX_PARALLELISM`]); also the journal batch size.
    pub parallelism: usize,
    /// Attempts per chunk before the download fails (≥ 1).
    pub max_attempts: u32,
    /// A fetch that has not completed after this long is abandoned and counts as a failed
    /// attempt, so a stalled source cannot hang the download.
    pub fetch_timeout: Duration,
    /// Wait before re-asking after a transient source error, doubled per attempt (capped at
    /// [`MAX_RETRY_DELAY`]). A chunk that failed its hash check is asked for again at once.
    pub retry_delay: Duration,
    /// Reserve the payload's blocks before the first fetch (`fallocate`), so a destination
    /// without room fails at once. Off: the partial file is sparse and a full disk surfaces at
    /// the write that hits it (copy-on-write or thin-provisioned file systems, where a
    /// reservation means little).
    pub preallocate: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            parallelism: DEFAULT_PARALLELISM,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            retry_delay: DEFAULT_RETRY_DELAY,
            preallocate: true,
        }
    }
}

/// A progress report, published after every written chunk.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Progress {
    /// Plaintext bytes in the partial file (journaled or about to be).
    pub done_bytes: u64,
    /// Payload size.
    pub total_bytes: u64,
    /// Bytes per second over this run (resumed bytes excluded).
    pub rate: f64,
    /// Estimated time left at that rate; `None` before the first chunk.
    pub eta: Option<Duration>,
    /// Whether the file is complete and renamed into place.
    pub finished: bool,
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DownloadSummary {
    /// Chunks already journaled when the run started (resumed, not fetched).
    pub resumed_chunks: u64,
    /// Chunk fetches made by this run, refetches included.
    pub fetches: u64,
    /// Fetches whose bytes failed the hash check.
    pub corrupt: u64,
}

/// One download: the verified manifest, key and destination, plus options and channels.
#[derive(Debug)]
pub struct Downloader {
    transfer_id: Id128,
    root: Hash,
    manifest: Manifest,
    key: ContentKey,
    dest: PathBuf,
    options: FetchOptions,
    progress: Option<watch::Sender<Progress>>,
    cancel: Option<watch::Receiver<bool>>,
}

/// `<dest>.partial`: the file chunks are written into.
pub fn partial_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".partial")
}

/// `<dest>.partial.journal`: the done-chunk bitmap.
pub fn journal_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".partial.journal")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FetchError + 'a {
    move |source| {
        if source.kind() == std::io::ErrorKind::StorageFull {
            FetchError::DiskFull {
                path: path.to_path_buf(),
            }
        } else {
            FetchError::Io {
                what,
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// The open partial file and its journal, with the batch of written, unjournaled chunks.
struct Partial {
    file: File,
    path: PathBuf,
    journal: Journal,
    journal_path: PathBuf,
    /// The journal file, open for in-place updates; `None` until it has been created.
    journal_file: Option<File>,
    batch: Vec<u64>,
    /// The batch being made durable on a helper thread, if any.
    syncing: Option<PendingSync>,
}

/// A batch flush running on its own thread, so fetching and decrypting continue while the disk
/// syncs.
struct PendingSync {
    thread: std::thread::JoinHandle<()>,
    done: tokio::sync::oneshot::Receiver<Result<(), FetchError>>,
}

impl Drop for Partial {
    /// A dropped download waits for its last flush, so the journal on disk is final and the
    /// file lock (shared by the helper's handle) is released when the drop returns.
    fn drop(&mut self) {
        if let Some(p) = self.syncing.take() {
            let _ = p.thread.join();
        }
    }
}

impl Partial {
    /// Resumes from a journal that names this transfer and a partial file of the right size,
    /// or starts afresh.
    async fn open(
        dest: &Path,
        transfer_id: Id128,
        root: Hash,
        layout: Layout,
        reserve: bool,
    ) -> Result<Self, FetchError> {
        let path = partial_path(dest);
        let journal_path = journal_path(dest);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        // Two downloads into one destination would interleave their writes and journals. The
        // lock is advisory and dies with the process, so a killed download never leaves it held.
        // It is waited for briefly: a download that was just dropped may still be closing its
        // handles, and a process forking at that moment holds copies of them until it execs.
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(FetchError::Busy { path: path.clone() })
                }
                Err(e) => return Err(io_err("locking", &path)(e.into())),
            }
        }
        let mut p = Partial {
            file,
            path,
            journal: Journal::new(transfer_id, root, layout),
            journal_path,
            journal_file: None,
            batch: Vec::new(),
            syncing: None,
        };
        if let Some((journal, journal_file)) = p.resumable(transfer_id, root, layout) {
            p.journal = journal;
            p.journal_file = Some(journal_file);
            return Ok(p);
        }
        // Fresh start: drop any stale journal first, so it can never describe the new file.
        match std::fs::remove_file(&p.journal_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err("removing stale journal", &p.journal_path)(e))
            }
            _ => {}
        }
        p.file.set_len(0).map_err(io_err("truncating", &p.path))?;
        if reserve {
            preallocate(&p.file, layout.size(), &p.path)?;
        } else {
            p.file
                .set_len(layout.size())
                .map_err(io_err("sizing", &p.path))?;
        }
        p.create_journal()?;
        Ok(p)
    }

    /// The journal on disk, if it names this transfer and the partial file has the payload's
    /// size; it is then trusted without re-hashing anything.
    fn resumable(&self, transfer_id: Id128, root: Hash, layout: Layout) -> Option<(Journal, File)> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.journal_path)
            .ok()?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut bytes).ok()?;
        let journal = Journal::decode(&bytes).ok()?;
        if !journal.is_for(&transfer_id, &root, &layout) {
            tracing::warn!(
                path = %self.journal_path.display(),
                "journal belongs to another transfer; starting afresh"
            );
            return None;
        }
        (self.file.metadata().ok()?.len() == layout.size()).then_some((journal, f))
    }

    /// Creates the journal whole (temporary file, sync, rename), so a crash never leaves a
    /// half-written one; later updates are made in place ([`Partial::flush`]).
    fn create_journal(&mut self) -> Result<(), FetchError> {
        let tmp = with_suffix(&self.journal_path, ".tmp");
        let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        f.write_all(&self.journal.encode())
            .map_err(io_err("writing", &tmp))?;
        f.sync_all().map_err(io_err("syncing", &tmp))?;
        std::fs::rename(&tmp, &self.journal_path)
            .map_err(io_err("renaming", &self.journal_path))?;
        self.journal_file = Some(f);
        Ok(())
    }

    /// Waits for the helper's flush, if one is running, and reports its outcome.
    async fn settle(&mut self) -> Result<(), FetchError> {
        // Left in place while waiting: if this future is dropped here, `Drop` still joins it.
        let Some(p) = self.syncing.as_mut() else {
            return Ok(());
        };
        let r = (&mut p.done).await;
        if let Some(p) = self.syncing.take() {
            let _ = p.thread.join();
        }
        r.unwrap_or_else(|_| {
            Err(FetchError::Io {
                what: "syncing",
                path: self.path.clone(),
                source: std::io::Error::other("flush thread ended without an answer"),
            })
        })
    }

    /// [`Partial::flush`] on a helper thread, after the previous one finished: at most one runs,
    /// so at most two batches are unjournaled at any time.
    async fn flush_in_background(&mut self) -> Result<(), FetchError> {
        self.settle().await?;
        let Some(journal_file) = &self.journal_file else {
            return self.flush();
        };
        if self.batch.is_empty() {
            return Ok(());
        }
        let data = self
            .file
            .try_clone()
            .map_err(io_err("duplicating the handle of", &self.path))?;
        let jf = journal_file
            .try_clone()
            .map_err(io_err("duplicating the handle of", &self.journal_path))?;
        // Marked in memory now (it only steers which chunk to fetch next); on disk only after
        // the data is durable, below.
        for i in self.batch.drain(..) {
            self.journal.mark_done(i);
        }
        let bytes = self.journal.encode();
        let (path, jpath) = (self.path.clone(), self.journal_path.clone());
        let (tx, done) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("hermes-sync-flush".into())
            .spawn(move || {
                let r = data
                    .sync_data()
                    .map_err(io_err("syncing", &path))
                    .and_then(|()| {
                        jf.write_all_at(&bytes, 0)
                            .map_err(io_err("writing", &jpath))
                    })
                    .and_then(|()| jf.sync_data().map_err(io_err("syncing", &jpath)));
                let _ = tx.send(r);
            })
            .map_err(io_err("starting a flush thread for", &self.path))?;
        self.syncing = Some(PendingSync { thread, done });
        Ok(())
    }

    /// Makes the written batch durable, then journals it: data before the journal that covers it.
    fn flush(&mut self) -> Result<(), FetchError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(io_err("syncing", &self.path))?;
        for i in self.batch.drain(..) {
            self.journal.mark_done(i);
        }
        // Rewritten in place: same length, same header, and bits only ever go from 0 to 1. A
        // write torn by a crash leaves each byte old or new, so the result claims a subset of
        // the new bits, all of which are durable by now. This saves creating and renaming a file
        // (two metadata commits) per batch.
        let Some(f) = &self.journal_file else {
            return self.create_journal();
        };
        f.write_all_at(&self.journal.encode(), 0)
            .map_err(io_err("writing", &self.journal_path))?;
        f.sync_data().map_err(io_err("syncing", &self.journal_path))
    }
}

/// Reserves the payload's blocks, so a destination without room fails now, before anything is
/// fetched, rather than hours later. File systems that cannot (EOPNOTSUPP) get a sparse file of
/// the right size, and a full disk then surfaces at the write that hits it.
fn preallocate(file: &File, len: u64, path: &Path) -> Result<(), FetchError> {
    if len > 0 {
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::NOSPC) => {
                return Err(FetchError::DiskFull {
                    path: path.to_path_buf(),
                })
            }
            Err(rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(io_err("preallocating", path)(e.into())),
        }
    }
    file.set_len(len).map_err(io_err("sizing", path))
}

fn sync_dir(path: &Path) -> Result<(), FetchError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

/// The outcome of placing one fetched chunk.
enum Placed {
    /// Verified, decrypted and written: `n` plaintext bytes.
    Written(usize),
    /// The bytes do not match the manifest: nothing was decrypted or written.
    Corrupt,
    /// The bytes match the manifest but do not open: the key is not this transfer's.
    WrongKey,
    /// Writing into the partial file failed.
    WriteFailed(std::io::Error),
}

/// The per-chunk work of a download, run on the blocking pool.
struct ChunkWork {
    transfer_id: Id128,
    layout: Layout,
    manifest: Manifest,
    key: ContentKey,
    file: File,
}

impl ChunkWork {
    /// Checks a fetched sealed chunk against its manifest hash, opens it in place and writes it
    /// at its plaintext offset (then hands it to the kernel's writeback).
    fn place(&self, index: u64, sealed: &mut [u8]) -> Placed {
        if !self.manifest.check_chunk(index, sealed) {
            return Placed::Corrupt;
        }
        // A cipher per chunk: deriving the epoch key is one HMAC, negligible next to a chunk,
        // and it keeps chunks free of shared mutable state so they can open in parallel.
        let Ok(n) =
            ChunkCipher::new(self.transfer_id, self.layout, &self.key).open_in_place(index, sealed)
        else {
            return Placed::WrongKey;
        };
        let offset = self.layout.plain_offset(index);
        if let Err(e) = self.file.write_all_at(&sealed[..n], offset) {
            return Placed::WriteFailed(e);
        }
        // Start writing the chunk back now (Linux initiates writeback of dirty pages on
        // DONTNEED), so the batch's fdatasync mostly waits for I/O already under way, and a
        // 100 GB download does not evict the node's page cache. Advisory: a file system that
        // ignores it only loses the head start.
        let _ = rustix::fs::fadvise(
            &self.file,
            offset,
            std::num::NonZeroU64::new(n as u64),
            rustix::fs::Advice::DontNeed,
        );
        Placed::Written(n)
    }
}

impl Downloader {
    /// A download of the transfer `transfer_id` whose manifest root is `root` (from the signed
    /// ticket) into `dest`.
    ///
    /// # Errors
    /// [`FetchError::RootMismatch`] when `manifest` is not the one `root` commits to.
    pub fn new(
        transfer_id: Id128,
        root: Hash,
        manifest: Manifest,
        key: ContentKey,
        dest: PathBuf,
    ) -> Result<Self, FetchError> {
        if manifest.root() != root {
            return Err(FetchError::RootMismatch);
        }
        Ok(Downloader {
            transfer_id,
            root,
            manifest,
            key,
            dest,
            options: FetchOptions::default(),
            progress: None,
            cancel: None,
        })
    }

    /// Sets the options.
    pub fn with_options(mut self, options: FetchOptions) -> Self {
        self.options = options;
        self
    }

    /// Publishes progress on `tx` (a watch channel: readers see the latest report).
    pub fn with_progress(mut self, tx: watch::Sender<Progress>) -> Self {
        self.progress = Some(tx);
        self
    }

    /// Stops the download (journaling what was written) once `rx` reads `true`.
    pub fn with_cancel(mut self, rx: watch::Receiver<bool>) -> Self {
        self.cancel = Some(rx);
        self
    }

    /// The destination path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Downloads every missing chunk from `source`, then renames the partial file to `dest`.
    ///
    /// # Errors
    /// [`FetchError`]; the partial file and journal are kept for a resume.
    pub async fn run<S: ChunkSource>(&self, source: &S) -> Result<DownloadSummary, FetchError> {
        let o = self.options;
        if !(1..=MAX_PARALLELISM).contains(&o.parallelism)
            || o.max_attempts == 0
            || o.fetch_timeout.is_zero()
        {
            return Err(FetchError::BadOptions(format!(
                "parallelism {} (1..={MAX_PARALLELISM}), max_attempts {} (≥ 1), fetch_timeout \
                 {:?} (> 0)",
                o.parallelism, o.max_attempts, o.fetch_timeout
            )));
        }
        let layout = *self.manifest.layout();
        let mut part = Partial::open(
            &self.dest,
            self.transfer_id,
            self.root,
            layout,
            self.options.preallocate,
        )
        .await?;
        let mut summary = DownloadSummary {
            resumed_chunks: part.journal.done_chunks(),
            ..Default::default()
        };
        let result = self.fetch_missing(source, &mut part, &mut summary).await;
        // Whatever happened, journal what is already written so it is not fetched again. On a
        // prior error this is best effort: the first error is the one reported.
        let settled = part.settle().await;
        let flushed = part.flush();
        result?;
        settled?;
        flushed?;
        self.finish(part)?;
        Ok(summary)
    }

    async fn fetch_missing<S: ChunkSource>(
        &self,
        source: &S,
        part: &mut Partial,
        summary: &mut DownloadSummary,
    ) -> Result<(), FetchError> {
        let layout = *self.manifest.layout();
        let parallelism = self.options.parallelism;
        // Two batches can be unjournaled at once (one syncing, one filling), plus the fetches in
        // flight: with half-size batches a crash costs at most about 2 × parallelism chunks.
        let batch = parallelism.div_ceil(2);
        // What the per-chunk work needs, shared with the blocking pool where it runs: a chunk's
        // hash check, decryption and write go to any free core instead of this task's thread
        // (which would otherwise cap the download at one core's worth of hashing, AES and
        // page-cache copying).
        let work = Arc::new(ChunkWork {
            transfer_id: self.transfer_id,
            layout,
            manifest: self.manifest.clone(),
            key: ContentKey::from_bytes(*self.key.expose()),
            file: part
                .file
                .try_clone()
                .map_err(io_err("opening", &part.path))?,
        });
        let mut pool: Vec<Vec<u8>> = (0..parallelism)
            .map(|_| vec![0u8; layout.max_sealed_len()])
            .collect();
        let mut attempts: HashMap<u64, u32> = HashMap::new();
        // Chunks to ask for again, each with the wait before asking.
        let mut retry: VecDeque<(u64, Duration)> = VecDeque::new();
        let mut next = 0u64;
        let mut in_flight = FuturesUnordered::new();
        let started = Instant::now();
        let resumed_bytes = part.journal.done_bytes();
        let mut done_bytes = resumed_bytes;
        let mut cancel = self.cancel.clone();
        loop {
            if cancel.as_ref().is_some_and(|c| *c.borrow()) {
                return Err(FetchError::Cancelled);
            }
            // Keep `parallelism` fetches in flight: retries first, then the next missing chunk.
            while in_flight.len() < parallelism {
                // The pool holds exactly the buffers not in flight, so this only stops the loop.
                let Some(mut buf) = pool.pop() else { break };
                let (index, delay) = match retry.pop_front() {
                    Some(r) => r,
                    None => {
                        while next < layout.chunk_count() && part.journal.is_done(next) {
                            next += 1;
                        }
                        if next == layout.chunk_count() {
                            pool.push(buf);
                            break;
                        }
                        next += 1;
                        (next - 1, Duration::ZERO)
                    }
                };
                let len = layout.sealed_len(index) as usize;
                summary.fetches += 1;
                let timeout = self.options.fetch_timeout;
                let work = work.clone();
                in_flight.push(async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let r = tokio::time::timeout(timeout, source.fetch(index, &mut buf[..len]))
                        .await
                        .unwrap_or_else(|_| {
                            Err(ChunkSourceError::unavailable(format!(
                                "no answer within {timeout:?}"
                            )))
                        });
                    match r {
                        Ok(()) => {
                            let max = work.layout.max_sealed_len();
                            let joined = tokio::task::spawn_blocking(move || {
                                let done = work.place(index, &mut buf[..len]);
                                (buf, done)
                            })
                            .await;
                            match joined {
                                Ok((buf, done)) => (index, buf, Ok(done)),
                                // The blocking task panicked: its buffer is gone; a fresh one
                                // keeps the pool whole and the chunk is asked for again.
                                Err(_) => (
                                    index,
                                    vec![0u8; max],
                                    Err(ChunkSourceError::unavailable("chunk processing failed")),
                                ),
                            }
                        }
                        Err(e) => (index, buf, Err(e)),
                    }
                });
            }
            // `Some(true)`: cancelled; `Some(false)`: the cancel handle was dropped, so nobody
            // can cancel any more; `None`: a fetch completed (or none is left).
            let (cancelled, completed) = match cancel.as_mut() {
                Some(c) => tokio::select! {
                    biased;
                    set = c.wait_for(|v| *v) => (Some(set.is_ok()), None),
                    d = in_flight.next() => (None, d),
                },
                None => (None, in_flight.next().await),
            };
            match cancelled {
                Some(true) => return Err(FetchError::Cancelled),
                Some(false) => {
                    cancel = None;
                    continue;
                }
                None => {}
            }
            let Some((index, buf, fetched)) = completed else {
                return Ok(());
            };
            let outcome = match fetched {
                Ok(Placed::Written(n)) => {
                    part.batch.push(index);
                    attempts.remove(&index);
                    done_bytes += n as u64;
                    None
                }
                Ok(Placed::Corrupt) => {
                    summary.corrupt += 1;
                    Some(Err(()))
                }
                Ok(Placed::WrongKey) => return Err(FetchError::WrongKey { index }),
                Ok(Placed::WriteFailed(e)) => return Err(io_err("writing", &part.path)(e)),
                Err(e) if e.retryable => Some(Ok(e)),
                Err(error) => return Err(FetchError::Source { index, error }),
            };
            pool.push(buf);
            if let Some(failure) = outcome {
                let a = attempts.entry(index).or_insert(1);
                if *a >= self.options.max_attempts {
                    return Err(match failure {
                        Err(()) => FetchError::CorruptChunk {
                            index,
                            attempts: *a,
                        },
                        Ok(error) => FetchError::Source { index, error },
                    });
                }
                let delay = match failure {
                    // Corrupt bytes: another read of the same store usually heals it.
                    Err(()) => Duration::ZERO,
                    Ok(_) => self
                        .options
                        .retry_delay
                        .saturating_mul(1 << (*a - 1).min(16))
                        .min(MAX_RETRY_DELAY),
                };
                *a += 1;
                retry.push_back((index, delay));
                continue;
            }
            if part.batch.len() >= batch {
                part.flush_in_background().await?;
            }
            self.report(done_bytes, resumed_bytes, started, false);
            // A source that is always ready (a local file, a fast loopback) would otherwise keep
            // this task busy for the whole payload and starve the arbiter it runs on; one yield
            // per chunk costs nothing next to a chunk's I/O.
            tokio::task::yield_now().await;
        }
    }

    fn report(&self, done: u64, resumed: u64, started: Instant, finished: bool) {
        let Some(tx) = &self.progress else { return };
        let total = self.manifest.layout().size();
        let secs = started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            (done - resumed) as f64 / secs
        } else {
            0.0
        };
        let eta = (rate > 0.0).then(|| Duration::from_secs_f64((total - done) as f64 / rate));
        tx.send_replace(Progress {
            done_bytes: done,
            total_bytes: total,
            rate,
            eta,
            finished,
        });
    }

    fn finish(&self, part: Partial) -> Result<(), FetchError> {
        // Every chunk was checked against a hash of this manifest, and the journal is bound to
        // this root: checking the root once more ties the whole file to the signed ticket.
        if !part.journal.is_complete() {
            return Err(FetchError::Incomplete {
                missing: part.journal.missing().count() as u64,
            });
        }
        if !part
            .journal
            .is_for(&self.transfer_id, &self.root, self.manifest.layout())
            || self.manifest.root() != self.root
        {
            return Err(FetchError::RootMismatch);
        }
        part.file
            .sync_all()
            .map_err(io_err("syncing", &part.path))?;
        std::fs::rename(&part.path, &self.dest).map_err(io_err("renaming", &part.path))?;
        sync_dir(&self.dest)?;
        match std::fs::remove_file(&part.journal_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err("removing", &part.journal_path)(e))
            }
            _ => {}
        }
        // Left behind only by a journal write that failed (e.g. on a full disk).
        let _ = std::fs::remove_file(with_suffix(&part.journal_path, ".tmp"));
        let size = self.manifest.layout().size();
        self.report(size, size, Instant::now(), true);
        Ok(())
    }
}
