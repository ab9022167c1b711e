//! Sync Engine formats: verified, resumable, credential-free transfers of large payloads.
//!
//! A transfer, end to end (the actor, stores and fetchers live in `actors/`; this module is the
//! pure part they share):
//!
//! 1. The sender picks a [`Layout`] (payload size, chunk size), a random transfer id and a random
//!    [`ContentKey`], seals every chunk ([`ChunkCipher`]) and hashes each sealed chunk into the
//!    [`Manifest`], whose root commits to all of it.
//! 2. The sealed chunks go where the receiver can pull them: the sender's own node, or one S3
//!    object uploaded by a [`PartPlan`].
//! 3. The sender issues a signed [`Ticket`] naming the receiver, the root, the locations and the
//!    content key sealed to the receiver's prekey; it travels as an end-to-end message or as a
//!    one-line string.
//! 4. The receiver verifies the ticket, unwraps the key, fetches the manifest and checks it
//!    against the root, then fetches chunks in parallel: each is checked against its manifest
//!    hash before it is opened, written at its offset, and recorded in the [`Journal`].
//!
//! Modules: [`layout`] (offsets), [`manifest`] (hashes and root), [`seal`] (chunk AEAD),
//! [`ticket`] (the signed access ticket and its string form), [`plan`] (S3 multipart parts),
//! [`journal`] (the receiver's resume state), [`wire`] (the `/hermes/sync/1` frames).

pub mod journal;
pub mod layout;
pub mod manifest;
pub mod plan;
pub mod seal;
pub mod ticket;
pub mod wire;

pub use journal::Journal;
pub use layout::{Layout, DEFAULT_CHUNK_SIZE};
pub use manifest::{Cipher, Manifest, ManifestError};
pub use plan::{Part, PartPlan, PlanError};
pub use seal::{ChunkCipher, ContentKey, SealError};
pub use ticket::{Location, Ticket, TicketBody, TicketError, TicketParseError, TicketRequest};

/// Applies byte edits (replace, insert, delete) at sampled positions, as a mutating fuzzer would.
#[cfg(test)]
pub(crate) fn mutate(bytes: &mut Vec<u8>, edits: &[(proptest::sample::Index, u8, u8)]) {
    for (at, value, op) in edits {
        match op % 3 {
            0 if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
            1 => {
                let i = at.index(bytes.len() + 1);
                bytes.insert(i, *value);
            }
            _ if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes.remove(i);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::layout::MIN_CHUNK_SIZE;
    use super::manifest::chunk_hash;
    use super::*;
    use crate::envelope::tests::{pair, prekey, TestRng, NOW};
    use crate::envelope::Id128;
    use crate::hotkey::Hotkey;

    /// The whole pure path of a transfer: sealed, hashed, ticketed, fetched out of order through a
    /// "store" that corrupts one chunk once, verified, opened, journaled, reassembled byte-exact.
    #[test]
    fn a_transfer_end_to_end_through_every_format() {
        let mut rng = TestRng(42);
        let payload: Vec<u8> = (0..(5 * MIN_CHUNK_SIZE as usize / 2))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let layout = Layout::new(payload.len() as u64, MIN_CHUNK_SIZE).unwrap();
        let transfer_id = Id128::random(&mut rng);
        let key = ContentKey::random(&mut rng);

        // Sender: seal into one object (as stored in S3 or served by the node), hash, ticket.
        let mut object = Vec::new();
        let mut hashes = Vec::new();
        let mut tx = ChunkCipher::new(transfer_id, layout, &key);
        for i in 0..layout.chunk_count() {
            let start = layout.plain_offset(i) as usize;
            let mut buf = payload[start..start + layout.plain_len(i) as usize].to_vec();
            buf.resize(layout.sealed_len(i) as usize, 0);
            tx.seal_in_place(i, &mut buf).unwrap();
            assert_eq!(object.len() as u64, layout.sealed_offset(i));
            hashes.push(chunk_hash(&buf));
            object.extend_from_slice(&buf);
        }
        let manifest = Manifest::new(layout, Cipher::Aes256Gcm, hashes).unwrap();
        let plan = PartPlan::new(layout).unwrap();
        assert_eq!(plan.part_count(), 1);
        let bob = Hotkey::of(&pair("//Bob"));
        let ticket = Ticket::issue(
            &pair("//Alice"),
            TicketRequest {
                transfer_id,
                receiver: bob,
                receiver_prekey: prekey(7).public(),
                netuid: 1,
                expires_at: NOW + 600,
                layout,
                cipher: Cipher::Aes256Gcm,
                root: manifest.root(),
                file_name: Some("weights.bin".into()),
                locations: vec![Location::Peer {
                    peer_id: vec![1; 38],
                    addrs: vec![],
                }],
            },
            &key,
            NOW,
            &mut rng,
        )
        .unwrap();
        let line = ticket.to_string();

        // Receiver: parse, verify, unwrap, check the manifest, then fetch chunks out of order.
        let t = Ticket::parse(&line).unwrap();
        t.verify(NOW + 1, &bob).unwrap();
        let k = t.open_key(&prekey(7)).unwrap();
        let b = &t.body;
        let m =
            Manifest::decode_verified(&manifest.encode(), &b.root, &b.layout, b.cipher).unwrap();
        let mut rx = ChunkCipher::new(b.transfer_id, b.layout, &k);
        let mut journal = Journal::new(b.transfer_id, b.root, b.layout);
        let mut out = vec![0u8; payload.len()];
        let mut buf = vec![0u8; b.layout.max_sealed_len()];
        let mut fetch = |i: u64, corrupt: bool, journal: &mut Journal| {
            if journal.is_done(i) {
                return;
            }
            let (off, len) = (
                b.layout.sealed_offset(i) as usize,
                b.layout.sealed_len(i) as usize,
            );
            let chunk = &mut buf[..len];
            chunk.copy_from_slice(&object[off..off + len]);
            if corrupt {
                chunk[100] ^= 1;
            }
            // A corrupt chunk is caught by its hash before any decryption, and never written.
            if !m.check_chunk(i, chunk) {
                return;
            }
            let n = rx.open_in_place(i, chunk).unwrap();
            let start = b.layout.plain_offset(i) as usize;
            out[start..start + n].copy_from_slice(&chunk[..n]);
            assert!(journal.mark_done(i));
        };
        for i in [2u64, 0, 1, 0, 2] {
            fetch(i, i == 1, &mut journal);
        }
        // "Restart": the journal survives its encoding, and only the refused chunk is missing.
        let mut journal = Journal::decode(&journal.encode()).unwrap();
        assert!(journal.is_for(&b.transfer_id, &b.root, &b.layout));
        let missing: Vec<u64> = journal.missing().collect();
        assert_eq!(missing, [1]);
        for i in missing {
            fetch(i, false, &mut journal);
        }
        assert!(journal.is_complete());
        assert_eq!(journal.done_bytes(), payload.len() as u64);
        assert_eq!(out, payload);
    }

    /// The embedded store's guard: a chunk re-sealed from a source that changed since the offer
    /// no longer matches the manifest, so it is refused before it is sent.
    #[test]
    fn a_changed_source_chunk_no_longer_matches_its_hash() {
        let layout = Layout::new(u64::from(MIN_CHUNK_SIZE) + 5, MIN_CHUNK_SIZE).unwrap();
        let key = ContentKey::from_bytes([9; 32]);
        let seal = |fill: u8, i: u64| {
            let mut c = ChunkCipher::new(Id128([1; 16]), layout, &key);
            let mut buf = vec![fill; layout.sealed_len(i) as usize];
            c.seal_in_place(i, &mut buf).unwrap();
            buf
        };
        let hashes = vec![chunk_hash(&seal(1, 0)), chunk_hash(&seal(1, 1))];
        let m = Manifest::new(layout, Cipher::Aes256Gcm, hashes).unwrap();
        // Unchanged: re-sealing gives the same bytes (deterministic), which may be sent.
        assert!(m.check_chunk(0, &seal(1, 0)));
        assert!(m.check_chunk(1, &seal(1, 1)));
        // Changed: refused.
        assert!(!m.check_chunk(0, &seal(2, 0)));
        assert!(!m.check_chunk(1, &seal(2, 1)));
    }
}
