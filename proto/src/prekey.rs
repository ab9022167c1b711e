//! Prekeys: the rotating X25519 keys that peers seal sessions to.
//!
//! A node has one *current* prekey (named in its binding record) and a few *retired* ones that
//! still open sessions sealed just before a rotation. Life of a prekey:
//!
//! 1. Created as current ([`PrekeyRing::rotate`]); the node re-signs its binding naming it.
//! 2. Retired when the next one is created; it still opens sessions for the grace period, which
//!    covers peers that have not yet seen the new binding.
//! 3. Erased when the grace period ends ([`PrekeyRing::erase_expired`]): its slot is overwritten
//!    with zeros. From then on no stored key opens a session that was sealed to it.
//!
//! # Storage: fixed slots, overwritten in place
//! The ring lives in a small file of [`SLOTS`] fixed-size slots rather than in the node's
//! log-structured database: a log keeps deleted values on disk until it compacts, which would
//! defeat erasure, while a slot can be overwritten where it lies. Each slot:
//!
//! ```text
//! u8    state: 0 empty, 1 current, 2 retired
//! [3]   zero
//! u32   id (increases with every rotation)
//! u64   created_at (unix seconds)
//! u64   retired_at (unix seconds; 0 while current)
//! [32]  seed (the X25519 pair is derived from it)
//! [4]   check: first 4 bytes of SHA-256 over the 56 bytes above
//! [4]   zero
//! ```
//! A slot whose check fails (a torn write) reads as empty: the key is lost, and peers recover
//! through a "stale prekey" refusal that carries the fresh binding.

use crate::codec::{DecodeError, Reader};
use crate::envelope::Prekey;
use std::fmt;
use zeroize::Zeroizing;

/// Number of slots: one current key plus up to seven retired ones.
pub const SLOTS: usize = 8;
/// Bytes per slot.
pub const SLOT_LEN: usize = 64;
/// Size of the prekey file.
pub const FILE_LEN: usize = SLOTS * SLOT_LEN;

const EMPTY: u8 = 0;
const CURRENT: u8 = 1;
const RETIRED: u8 = 2;

/// One stored prekey.
pub struct PrekeyEntry {
    /// Rotation number.
    pub id: u32,
    /// Creation time, unix seconds.
    pub created_at: u64,
    /// When it stopped being current; `None` for the current key.
    pub retired_at: Option<u64>,
    /// On the heap, so that moving an entry (or the ring, which is returned and stored by value)
    /// moves a pointer and leaves no copy of the seed behind in a stack frame.
    seed: Seed,
}

/// A seed that zeroizes its own heap memory when dropped.
type Seed = Box<Zeroizing<[u8; 32]>>;

/// A seed copied straight from `src` into zeroized heap memory (no intermediate copy).
fn seed_from(src: &[u8; 32]) -> Seed {
    let mut seed = Box::new(Zeroizing::new([0u8; 32]));
    seed.copy_from_slice(src);
    seed
}

impl fmt::Debug for PrekeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrekeyEntry")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl PrekeyEntry {
    /// The key pair (derived from the seed on each call: callers cache it).
    pub fn keypair(&self) -> Prekey {
        Prekey::from_seed(&self.seed)
    }

    /// Writes the slot into `s` (all 64 bytes), in place: the seed is copied only to where it
    /// is wanted, never through a temporary.
    fn encode_into(&self, s: &mut [u8; SLOT_LEN]) {
        s.fill(0);
        s[0] = if self.retired_at.is_some() {
            RETIRED
        } else {
            CURRENT
        };
        s[4..8].copy_from_slice(&self.id.to_le_bytes());
        s[8..16].copy_from_slice(&self.created_at.to_le_bytes());
        s[16..24].copy_from_slice(&self.retired_at.unwrap_or(0).to_le_bytes());
        s[24..56].copy_from_slice(&self.seed[..]);
        let check = checksum(&s[..56]);
        s[56..60].copy_from_slice(&check);
    }

    fn slot_write(&self, index: usize) -> SlotWrite {
        let mut w = SlotWrite::zero(index);
        self.encode_into(&mut w.bytes);
        w
    }
}

fn checksum(bytes: &[u8]) -> [u8; 4] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut c = [0u8; 4];
    c.copy_from_slice(&d.as_ref()[..4]);
    c
}

/// The prekeys a node holds, by slot.
#[derive(Debug, Default)]
pub struct PrekeyRing {
    slots: [Option<PrekeyEntry>; SLOTS],
}

/// A slot whose bytes must be written back to the file. Its bytes hold a seed, so they live on
/// the heap and are zeroized when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotWrite {
    /// Slot index.
    pub index: usize,
    /// Its new contents (all zero for an erased slot).
    pub bytes: Box<Zeroizing<[u8; SLOT_LEN]>>,
}

impl SlotWrite {
    fn zero(index: usize) -> Self {
        SlotWrite {
            index,
            bytes: Box::new(Zeroizing::new([0u8; SLOT_LEN])),
        }
    }
}

impl fmt::Debug for SlotWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotWrite({})", self.index)
    }
}

/// What [`PrekeyRing::decode`] found besides the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeReport {
    /// Slots whose check failed and were read as empty.
    pub damaged: usize,
}

impl PrekeyRing {
    /// Reads a prekey file.
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] for a short file; [`DecodeError::Invalid`] for a wrong size,
    /// an unknown slot state, non-zero reserved bytes or more than one current key. A slot whose
    /// check fails is not an error: it is read as empty and counted in the report.
    pub fn decode(bytes: &[u8]) -> Result<(Self, DecodeReport), DecodeError> {
        if bytes.len() > FILE_LEN {
            return Err(DecodeError::invalid(
                "prekeys",
                format!("{} bytes; the file is {FILE_LEN}", bytes.len()),
            ));
        }
        let mut r = Reader::new(bytes);
        let mut ring = PrekeyRing::default();
        let mut report = DecodeReport::default();
        let mut currents = 0;
        for i in 0..SLOTS {
            // Borrowed from the caller's buffer: no copy of the seeds is made here.
            let raw = r.take(SLOT_LEN)?;
            let state = raw[0];
            if !matches!(state, EMPTY | CURRENT | RETIRED) {
                return Err(DecodeError::invalid(
                    "prekeys.state",
                    format!("slot {i} has unknown state {state}"),
                ));
            }
            if raw[1..4] != [0; 3] || raw[60..] != [0; 4] {
                return Err(DecodeError::invalid(
                    "prekeys.reserved",
                    format!("slot {i} has non-zero reserved bytes"),
                ));
            }
            if state == EMPTY {
                continue;
            }
            if checksum(&raw[..56]) != raw[56..60] {
                report.damaged += 1;
                continue;
            }
            let mut slot = Reader::new(&raw[4..56]);
            let id = u32::from_le_bytes(slot.array()?);
            let created_at = slot.u64()?;
            let retired = slot.u64()?;
            let seed = seed_from(
                <&[u8; 32]>::try_from(slot.take(32)?)
                    .map_err(|_| DecodeError::invalid("prekeys.seed", "short seed"))?,
            );
            if state == CURRENT {
                currents += 1;
                if retired != 0 {
                    return Err(DecodeError::invalid(
                        "prekeys.retired_at",
                        format!("slot {i} is current but has a retirement time"),
                    ));
                }
            }
            ring.slots[i] = Some(PrekeyEntry {
                id,
                created_at,
                retired_at: (state == RETIRED).then_some(retired),
                seed,
            });
        }
        if currents > 1 {
            return Err(DecodeError::invalid(
                "prekeys.state",
                format!("{currents} current prekeys; at most one"),
            ));
        }
        r.finish("prekeys")?;
        Ok((ring, report))
    }

    /// The whole file, zeroized when dropped (it holds the seeds).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        // Allocated at its final size, so it is never reallocated (which would leave a copy).
        let mut v = Zeroizing::new(vec![0u8; FILE_LEN]);
        for (s, out) in self.slots.iter().zip(v.chunks_exact_mut(SLOT_LEN)) {
            if let (Some(e), Ok(out)) = (s, <&mut [u8; SLOT_LEN]>::try_from(out)) {
                e.encode_into(out);
            }
        }
        v
    }

    /// The current prekey, if any.
    pub fn current(&self) -> Option<&PrekeyEntry> {
        self.slots.iter().flatten().find(|e| e.retired_at.is_none())
    }

    /// Every stored prekey, current first.
    pub fn entries(&self) -> Vec<&PrekeyEntry> {
        let mut v: Vec<&PrekeyEntry> = self.slots.iter().flatten().collect();
        v.sort_by_key(|e| (e.retired_at.is_some(), std::cmp::Reverse(e.id)));
        v
    }

    /// Makes `seed` the current prekey at `now`: the old current key is retired, and if every
    /// slot is taken the oldest retired key is erased early to make room.
    pub fn rotate(&mut self, seed: &[u8; 32], now: u64) -> Vec<SlotWrite> {
        let mut writes = Vec::new();
        let next_id = self
            .slots
            .iter()
            .flatten()
            .map(|e| e.id)
            .max()
            .map_or(1, |m| m.wrapping_add(1));
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(e) = slot.as_mut() {
                if e.retired_at.is_none() {
                    e.retired_at = Some(now);
                    writes.push(e.slot_write(i));
                }
            }
        }
        let free = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                // Every slot holds a key: the oldest retired one goes.
                let oldest = self
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        s.as_ref()
                            .map(|e| (e.retired_at.unwrap_or(u64::MAX), e.id, i))
                    })
                    .min()
                    .map_or(0, |(_, _, i)| i);
                self.slots[oldest] = None;
                oldest
            }
        };
        let entry = PrekeyEntry {
            id: next_id,
            created_at: now,
            retired_at: None,
            seed: seed_from(seed),
        };
        writes.retain(|w| w.index != free);
        writes.push(entry.slot_write(free));
        self.slots[free] = Some(entry);
        writes.sort_by_key(|w| w.index);
        writes
    }

    /// Erases every retired key whose grace period has ended at `now`.
    pub fn erase_expired(&mut self, now: u64, grace: u64) -> Vec<SlotWrite> {
        let mut writes = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let expired = slot
                .as_ref()
                .and_then(|e| e.retired_at)
                .is_some_and(|r| r.saturating_add(grace) <= now);
            if expired {
                *slot = None;
                writes.push(SlotWrite::zero(i));
            }
        }
        writes
    }

    /// Whether the current key is due for rotation (or there is none).
    pub fn rotation_due(&self, now: u64, period: u64) -> bool {
        self.current().is_none_or(|c| {
            c.created_at.saturating_add(period) <= now || c.created_at > now.saturating_add(period)
        })
    }

    /// The next time (unix seconds) at which [`PrekeyRing::rotation_due`] or
    /// [`PrekeyRing::erase_expired`] will have work, given `period` and `grace`.
    pub fn next_event(&self, period: u64, grace: u64) -> u64 {
        let rotate = self
            .current()
            .map_or(0, |c| c.created_at.saturating_add(period));
        let erase = self
            .slots
            .iter()
            .flatten()
            .filter_map(|e| e.retired_at.map(|r| r.saturating_add(grace)))
            .min()
            .unwrap_or(u64::MAX);
        rotate.min(erase)
    }

    /// Imports a seed kept by an older version (as the current key).
    pub fn import_current(&mut self, seed: &[u8; 32], created_at: u64) -> Vec<SlotWrite> {
        self.rotate(seed, created_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(file: &mut [u8], writes: &[SlotWrite]) {
        for w in writes {
            file[w.index * SLOT_LEN..(w.index + 1) * SLOT_LEN].copy_from_slice(&w.bytes[..]);
        }
    }

    #[test]
    fn rotation_retires_then_erases_and_the_file_agrees() {
        let mut ring = PrekeyRing::default();
        let mut file = vec![0u8; FILE_LEN];
        assert!(ring.rotation_due(100, 3600));
        apply(&mut file, &ring.rotate(&[1; 32], 100));
        let first = ring.current().unwrap().keypair().public();
        assert!(!ring.rotation_due(100 + 3599, 3600));
        assert!(ring.rotation_due(100 + 3600, 3600));
        apply(&mut file, &ring.rotate(&[2; 32], 3700));
        assert_eq!(ring.current().unwrap().id, 2);
        assert_eq!(ring.entries().len(), 2);
        assert_eq!(ring.entries()[1].retired_at, Some(3700));
        assert_eq!(ring.next_event(3600, 600), 3700 + 600);
        // The file decodes to the same ring.
        let (back, report) = PrekeyRing::decode(&file).unwrap();
        assert_eq!(report.damaged, 0);
        assert_eq!(back.encode(), ring.encode());
        assert_eq!(file, *ring.encode());
        // Grace not over: nothing erased. Over: the retired key is gone, its slot zeroed.
        assert!(ring.erase_expired(4299, 600).is_empty());
        let w = ring.erase_expired(4300, 600);
        assert_eq!(w.len(), 1);
        assert_eq!(**w[0].bytes, [0u8; SLOT_LEN]);
        apply(&mut file, &w);
        let (back, _) = PrekeyRing::decode(&file).unwrap();
        assert_eq!(back.entries().len(), 1);
        assert!(back.entries().iter().all(|e| e.keypair().public() != first));
        // No trace of the first seed remains in the file.
        assert!(!file.windows(32).any(|w| w == [1u8; 32]));
    }

    #[test]
    fn a_full_ring_erases_its_oldest_retired_key() {
        let mut ring = PrekeyRing::default();
        for i in 0..20u8 {
            ring.rotate(&[i; 32], u64::from(i) * 10);
            assert!(ring.entries().len() <= SLOTS);
            assert_eq!(ring.current().unwrap().created_at, u64::from(i) * 10);
        }
        let ids: Vec<u32> = ring.entries().iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![20, 19, 18, 17, 16, 15, 14, 13]);
    }

    #[test]
    fn damaged_and_invalid_files() {
        let mut ring = PrekeyRing::default();
        ring.rotate(&[1; 32], 5);
        ring.rotate(&[2; 32], 6);
        let file = ring.encode().to_vec();
        // A torn slot reads as empty.
        let mut torn = file.clone();
        torn[30] ^= 1;
        let (back, report) = PrekeyRing::decode(&torn).unwrap();
        assert_eq!(report.damaged, 1);
        assert_eq!(back.entries().len(), 1);
        // Structural errors name the field.
        let mut bad = file.clone();
        bad[0] = 9;
        assert!(matches!(
            PrekeyRing::decode(&bad),
            Err(DecodeError::Invalid {
                field: "prekeys.state",
                ..
            })
        ));
        // Slot 0 holds the retired key; make it a second current one (with a valid check, so
        // only the "one current key" rule can fail).
        let mut two = file.clone();
        two[0] = CURRENT;
        two[16..24].copy_from_slice(&[0; 8]);
        let c = checksum(&two[..56]);
        two[56..60].copy_from_slice(&c);
        assert!(matches!(
            PrekeyRing::decode(&two),
            Err(DecodeError::Invalid {
                field: "prekeys.state",
                ..
            })
        ));
        assert!(matches!(
            PrekeyRing::decode(&file[..100]),
            Err(DecodeError::Incomplete { .. })
        ));
        let mut long = file.clone();
        long.push(0);
        assert!(PrekeyRing::decode(&long).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = PrekeyRing::decode(&bytes);
        }

        #[test]
        fn encode_decode_round_trips(rotations in 1usize..30, grace in 0u64..50) {
            let mut ring = PrekeyRing::default();
            for i in 0..rotations {
                ring.rotate(&[i as u8; 32], i as u64 * 10);
                ring.erase_expired(i as u64 * 10, grace);
            }
            let (back, report) = PrekeyRing::decode(&ring.encode()).unwrap();
            prop_assert_eq!(report.damaged, 0);
            prop_assert_eq!(back.encode(), ring.encode());
            prop_assert!(ring.current().is_some());
        }
    }
}
