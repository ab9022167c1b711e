//! The sender's side of a transfer: a source file sealed on read.
//!
//! The embedded store keeps no sealed copy of the payload in the data directory. At offer time
//! [`SealedSource::offer`] makes one streaming pass over the file (read a chunk, seal it, hash
//! the sealed bytes) with a single chunk-sized buffer, so memory is one chunk plus 32 bytes of
//! manifest per chunk whatever the file size. Each later [`SealedSource::read_chunk`] reads the
//! chunk at its offset with `pread`, seals it in place into the caller's buffer, and compares
//! the hash of the sealed bytes with the manifest before handing them back.
//!
//! Why the hash check is mandatory: sealing is deterministic (the nonce is the chunk index), so
//! a chunk whose plaintext changed after the offer would be sealed again under the same key and
//! nonce. Sending both versions would break AES-GCM (the XOR of the two plaintexts leaks, and
//! the authentication key can be recovered). A changed chunk seals to other bytes, hence another
//! hash, and is refused; the caller's buffer is wiped so the refused ciphertext cannot be sent
//! by mistake. A cheap size/mtime check of the open file runs first and refuses a file that was
//! visibly modified, before any reading or sealing.

use super::fetch::{ChunkSource, ChunkSourceError};
use hermes_proto::sync::manifest::chunk_hash;
use hermes_proto::sync::{ChunkCipher, Cipher, ContentKey, Layout, Manifest};
use hermes_proto::{DecodeError, Id128};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use thiserror::Error;

/// Why a source file could not be offered or a chunk of it could not be served.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Opening, reading or stating the file failed.
    #[error("source file {path}: {source}")]
    Io {
        /// The source file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file's size does not fit a transfer layout (too large for the chunk size).
    #[error("source file {path}: {source}")]
    Layout {
        /// The source file.
        path: PathBuf,
        /// The layout rule that was broken.
        source: DecodeError,
    },
    /// The file changed after the offer (size, mtime, or the content of a chunk): the transfer
    /// cannot be served any more and must be offered again.
    #[error(
        "source file {path} changed after it was offered ({what}); nothing was sent, offer it \
         again"
    )]
    Changed {
        /// The source file.
        path: PathBuf,
        /// What was seen to change.
        what: String,
    },
    /// The index is past the last chunk, or the buffer is not the chunk's sealed length.
    #[error("bad chunk request: {0}")]
    BadRequest(String),
}

/// Size and modification time of the source when it was offered: the cheap first check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceStamp {
    /// File size in bytes.
    pub size: u64,
    /// Modification time.
    pub modified: SystemTime,
}

/// A source file offered for transfer: its manifest, and chunk reads sealed on the fly.
#[derive(Debug)]
pub struct SealedSource {
    path: PathBuf,
    file: File,
    transfer_id: Id128,
    key: ContentKey,
    manifest: Manifest,
    stamp: SourceStamp,
}

fn stamp_of(file: &File, path: &Path) -> Result<SourceStamp, SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(io)?;
    Ok(SourceStamp {
        size: meta.len(),
        modified: meta.modified().map_err(io)?,
    })
}

impl SealedSource {
    /// Offers `path`: one streaming pass that reads, seals and hashes every chunk into the
    /// manifest. `progress(done, total)` is called after each chunk with plaintext bytes.
    ///
    /// # Errors
    /// [`SourceError::Io`] when the file cannot be read; [`SourceError::Layout`] when its size
    /// does not fit `chunk_size`; [`SourceError::Changed`] when it changed during the pass.
    pub fn offer(
        path: &Path,
        transfer_id: Id128,
        key: ContentKey,
        chunk_size: u32,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Self, SourceError> {
        let io = |source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let stamp = stamp_of(&file, path)?;
        let layout = Layout::new(stamp.size, chunk_size).map_err(|source| SourceError::Layout {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cipher = ChunkCipher::new(transfer_id, layout, &key);
        let mut buf = vec![0u8; layout.max_sealed_len()];
        let count = usize::try_from(layout.chunk_count()).unwrap_or(0);
        let mut hashes = Vec::with_capacity(count);
        for i in 0..layout.chunk_count() {
            let chunk = &mut buf[..layout.sealed_len(i) as usize];
            let plain = layout.plain_len(i) as usize;
            read_exact_at(&file, path, &mut chunk[..plain], layout.plain_offset(i))?;
            cipher
                .seal_in_place(i, chunk)
                .map_err(|e| SourceError::BadRequest(e.to_string()))?;
            hashes.push(chunk_hash(chunk));
            progress(layout.plain_offset(i) + plain as u64, layout.size());
        }
        // A write during the pass may have landed in a chunk already hashed; the manifest would
        // then describe a file that never existed, so the offer is refused.
        if stamp_of(&file, path)? != stamp {
            return Err(SourceError::Changed {
                path: path.to_path_buf(),
                what: "modified while it was being offered".into(),
            });
        }
        let manifest = Manifest::new(layout, Cipher::Aes256Gcm, hashes).map_err(|source| {
            SourceError::Layout {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(SealedSource {
            path: path.to_path_buf(),
            file,
            transfer_id,
            key,
            manifest,
            stamp,
        })
    }

    /// Reopens a source offered earlier (after a restart), from the stored manifest and stamp.
    /// No chunk is re-hashed here: every read is checked against the manifest anyway.
    ///
    /// # Errors
    /// [`SourceError::Io`] when the file cannot be opened; [`SourceError::Changed`] when its
    /// size or mtime differs from `stamp`.
    pub fn reopen(
        path: &Path,
        transfer_id: Id128,
        key: ContentKey,
        manifest: Manifest,
        stamp: SourceStamp,
    ) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let s = SealedSource {
            path: path.to_path_buf(),
            file,
            transfer_id,
            key,
            manifest,
            stamp,
        };
        s.check_stamp()?;
        Ok(s)
    }

    /// The manifest built at offer time.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The transfer id chunks are sealed under.
    pub fn transfer_id(&self) -> Id128 {
        self.transfer_id
    }

    /// Size and mtime at offer time, to persist with the offer.
    pub fn stamp(&self) -> SourceStamp {
        self.stamp
    }

    fn check_stamp(&self) -> Result<(), SourceError> {
        let now = stamp_of(&self.file, &self.path)?;
        if now.size != self.stamp.size {
            return Err(self.changed(format!(
                "size {} bytes, offered at {}",
                now.size, self.stamp.size
            )));
        }
        if now.modified != self.stamp.modified {
            return Err(self.changed("modification time differs".into()));
        }
        Ok(())
    }

    fn changed(&self, what: String) -> SourceError {
        SourceError::Changed {
            path: self.path.clone(),
            what,
        }
    }

    /// Reads chunk `index` from the file and seals it into `buf`, which must be exactly the
    /// chunk's sealed length. On success `buf` holds the sealed chunk, identical to what the
    /// manifest hashed; on any error `buf` is zeroed, so refused bytes can never be sent.
    ///
    /// # Errors
    /// [`SourceError::Changed`] when the file's size or mtime changed, or the re-sealed chunk
    /// does not match its manifest hash; [`SourceError::BadRequest`] for a bad index or buffer;
    /// [`SourceError::Io`] when reading fails.
    pub fn read_chunk(&self, index: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let r = self.read_chunk_inner(index, buf);
        if r.is_err() {
            buf.fill(0);
        }
        r
    }

    fn read_chunk_inner(&self, index: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let layout = *self.manifest.layout();
        if !layout.contains(index) {
            return Err(SourceError::BadRequest(format!(
                "chunk {index} of {}",
                layout.chunk_count()
            )));
        }
        if buf.len() != layout.sealed_len(index) as usize {
            return Err(SourceError::BadRequest(format!(
                "buffer of {} bytes for a {}-byte chunk",
                buf.len(),
                layout.sealed_len(index)
            )));
        }
        self.check_stamp()?;
        let plain = layout.plain_len(index) as usize;
        read_exact_at(
            &self.file,
            &self.path,
            &mut buf[..plain],
            layout.plain_offset(index),
        )
        .map_err(|e| match e {
            // The file shrank between the stamp check and the read.
            SourceError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                self.changed("truncated".into())
            }
            e => e,
        })?;
        // A cipher per read: deriving the epoch key is one HMAC, negligible next to sealing a
        // chunk, and it keeps reads free of shared mutable state so they can run in parallel.
        ChunkCipher::new(self.transfer_id, layout, &self.key)
            .seal_in_place(index, buf)
            .map_err(|e| SourceError::BadRequest(e.to_string()))?;
        if !self.manifest.check_chunk(index, buf) {
            return Err(self.changed(format!("chunk {index} no longer matches its hash")));
        }
        Ok(())
    }
}

fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<(), SourceError> {
    file.read_exact_at(buf, offset)
        .map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A [`ChunkSource`] reading straight from a [`SealedSource`] in the same process: what the
/// embedded store's protocol handler does on the sender, without the network in between.
#[derive(Debug, Clone)]
pub struct LocalChunkSource(pub Arc<SealedSource>);

impl ChunkSource for LocalChunkSource {
    async fn fetch(&self, index: u64, buf: &mut [u8]) -> Result<(), ChunkSourceError> {
        self.0.read_chunk(index, buf).map_err(|e| match e {
            // A changed source or a bad request will not get better by asking again.
            SourceError::Changed { .. } | SourceError::BadRequest(_) => {
                ChunkSourceError::refused(e.to_string())
            }
            e => ChunkSourceError::unavailable(e.to_string()),
        })
    }
}
