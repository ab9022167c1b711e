//! Epoch arithmetic, the per-epoch seed and the election of one validator.
//!
//! Every node must be able to recompute who was elected, so the election is a pure function of
//! the epoch's seed and the validator set: the set is sorted by hotkey first (the order in which a
//! node happened to learn about validators never matters), then an index is drawn from a BLAKE3
//! output stream keyed by the seed, with rejection sampling so that no candidate is favoured by a
//! modulo bias.

use crate::hotkey::Hotkey;

/// An epoch's randomness.
pub type Seed = [u8; 32];

/// BLAKE3 key-derivation context of [`epoch_seed`].
pub const SEED_CONTEXT: &str = "hermes/consensus-seed/v1";
/// BLAKE3 key-derivation context of the election's random stream.
pub const ELECTION_CONTEXT: &str = "hermes/consensus-election/v1";

/// Blocks and epochs: epoch `e` is blocks `e * blocks_per_epoch ..= (e + 1) * blocks_per_epoch - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochSchedule {
    blocks_per_epoch: u64,
}

impl EpochSchedule {
    /// A schedule of `blocks_per_epoch` blocks per epoch; `None` for 0.
    pub fn new(blocks_per_epoch: u64) -> Option<Self> {
        (blocks_per_epoch > 0).then_some(EpochSchedule { blocks_per_epoch })
    }

    /// Blocks per epoch (never 0).
    pub fn blocks_per_epoch(&self) -> u64 {
        self.blocks_per_epoch
    }

    /// The epoch `block` belongs to.
    pub fn epoch_of(&self, block: u64) -> u64 {
        block / self.blocks_per_epoch
    }

    /// The first block of `epoch`; `None` past the end of `u64` blocks.
    pub fn first_block(&self, epoch: u64) -> Option<u64> {
        epoch.checked_mul(self.blocks_per_epoch)
    }

    /// `true` if `block` opens an epoch.
    pub fn is_epoch_start(&self, block: u64) -> bool {
        block.is_multiple_of(self.blocks_per_epoch)
    }

    /// Blocks from `block` (included) to the end of its epoch.
    pub fn blocks_left(&self, block: u64) -> u64 {
        self.blocks_per_epoch - block % self.blocks_per_epoch
    }
}

/// The seed of `epoch` in subnet `netuid`, from the hash of the block before the epoch's first
/// block (the dev chain's randomness; a real chain supplies its own seed instead).
pub fn epoch_seed(prev_block_hash: &[u8; 32], epoch: u64, netuid: u16) -> Seed {
    let mut h = blake3::Hasher::new_derive_key(SEED_CONTEXT);
    h.update(prev_block_hash);
    h.update(&epoch.to_le_bytes());
    h.update(&netuid.to_le_bytes());
    *h.finalize().as_bytes()
}

/// How the epoch's validator is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ElectionMode {
    /// Every Validator-class node equally likely: what the chain does.
    #[default]
    Uniform,
    /// Likelihood proportional to stake; uniform when every stake is 0.
    StakeWeighted,
}

impl ElectionMode {
    /// `uniform` or `stake`.
    pub fn as_str(self) -> &'static str {
        match self {
            ElectionMode::Uniform => "uniform",
            ElectionMode::StakeWeighted => "stake",
        }
    }

    /// Parses [`ElectionMode::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "uniform" => Some(ElectionMode::Uniform),
            "stake" => Some(ElectionMode::StakeWeighted),
            _ => None,
        }
    }
}

/// A Validator-class node as the election sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    /// Its hotkey.
    pub hotkey: Hotkey,
    /// Its stake (only [`ElectionMode::StakeWeighted`] reads it).
    pub stake: u128,
}

/// A deterministic random stream: BLAKE3's extendable output keyed by the seed.
struct Stream(blake3::OutputReader);

impl Stream {
    fn new(seed: &Seed) -> Self {
        let mut h = blake3::Hasher::new_derive_key(ELECTION_CONTEXT);
        h.update(seed);
        Stream(h.finalize_xof())
    }

    fn next_u128(&mut self) -> u128 {
        let mut b = [0u8; 16];
        self.0.fill(&mut b);
        u128::from_le_bytes(b)
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias.
    fn below(&mut self, n: u128) -> u128 {
        // The largest multiple of n that fits; draws at or past it are thrown away.
        let limit = u128::MAX - u128::MAX % n;
        loop {
            let x = self.next_u128();
            if x < limit {
                return x % n;
            }
        }
    }
}

/// Draws the epoch's validator among `candidates` (any order, duplicates ignored); `None` when
/// there is none.
pub fn elect(seed: &Seed, mode: ElectionMode, candidates: &[Candidate]) -> Option<Hotkey> {
    let mut set: Vec<Candidate> = candidates.to_vec();
    set.sort_unstable_by_key(|a| a.hotkey);
    set.dedup_by(|a, b| a.hotkey == b.hotkey);
    let mut stream = Stream::new(seed);
    let uniform = |stream: &mut Stream, set: &[Candidate]| {
        let n = u128::try_from(set.len()).ok()?;
        let i = usize::try_from(stream.below(n)).ok()?;
        set.get(i).map(|c| c.hotkey)
    };
    if set.is_empty() {
        return None;
    }
    match mode {
        ElectionMode::Uniform => uniform(&mut stream, &set),
        ElectionMode::StakeWeighted => {
            // Scale stakes down so their sum cannot overflow: at most 2^16 candidates of < 2^112.
            let max = set.iter().map(|c| c.stake).max().unwrap_or(0);
            let shift = (128 - max.leading_zeros()).saturating_sub(112);
            let weights: Vec<u128> = set.iter().map(|c| c.stake >> shift).collect();
            let total = weights
                .iter()
                .try_fold(0u128, |acc, w| acc.checked_add(*w))
                .unwrap_or(0);
            if total == 0 {
                return uniform(&mut stream, &set);
            }
            let mut x = stream.below(total);
            for (c, w) in set.iter().zip(&weights) {
                if x < *w {
                    return Some(c.hotkey);
                }
                x -= w;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(b: u8, stake: u128) -> Candidate {
        Candidate {
            hotkey: Hotkey([b; 32]),
            stake,
        }
    }

    #[test]
    fn schedule_arithmetic() {
        assert!(EpochSchedule::new(0).is_none());
        let s = EpochSchedule::new(20).unwrap();
        assert_eq!(s.epoch_of(0), 0);
        assert_eq!(s.epoch_of(19), 0);
        assert_eq!(s.epoch_of(20), 1);
        assert_eq!(s.first_block(3), Some(60));
        assert_eq!(s.first_block(u64::MAX), None);
        assert!(s.is_epoch_start(40) && !s.is_epoch_start(41));
        assert_eq!(s.blocks_left(40), 20);
        assert_eq!(s.blocks_left(59), 1);
    }

    #[test]
    fn seeds_differ_by_epoch_subnet_and_block() {
        let a = epoch_seed(&[1; 32], 5, 1);
        assert_ne!(a, epoch_seed(&[1; 32], 6, 1));
        assert_ne!(a, epoch_seed(&[1; 32], 5, 2));
        assert_ne!(a, epoch_seed(&[2; 32], 5, 1));
        assert_eq!(a, epoch_seed(&[1; 32], 5, 1));
    }

    #[test]
    fn uniform_election_is_roughly_uniform() {
        let set: Vec<_> = (1..=4).map(|b| cand(b, 1)).collect();
        let mut counts = [0u32; 4];
        for e in 0..4000u64 {
            let w = elect(&epoch_seed(&[0; 32], e, 1), ElectionMode::Uniform, &set).unwrap();
            counts[usize::from(w.0[0] - 1)] += 1;
        }
        // 1000 expected each; 5 sigma is about 140.
        assert!(counts.iter().all(|c| (850..1150).contains(c)), "{counts:?}");
    }

    #[test]
    fn stake_weighted_follows_stake_and_ignores_zero_stake() {
        let set = [cand(1, 3_000), cand(2, 1_000), cand(3, 0)];
        let mut counts = [0u32; 3];
        for e in 0..4000u64 {
            let w = elect(
                &epoch_seed(&[0; 32], e, 1),
                ElectionMode::StakeWeighted,
                &set,
            )
            .unwrap();
            counts[usize::from(w.0[0] - 1)] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!((2850..3150).contains(&counts[0]), "{counts:?}");
        // All zero: uniform among them.
        let zero = [cand(1, 0), cand(2, 0)];
        assert!(elect(&[7; 32], ElectionMode::StakeWeighted, &zero).is_some());
        // Huge stakes do not overflow.
        let huge = [cand(1, u128::MAX), cand(2, u128::MAX)];
        assert!(elect(&[7; 32], ElectionMode::StakeWeighted, &huge).is_some());
        assert_eq!(elect(&[7; 32], ElectionMode::Uniform, &[]), None);
    }

    proptest! {
        /// Any order, any duplicates: the same winner, and always one of the candidates.
        #[test]
        fn election_ignores_order(
            seed in any::<[u8; 32]>(),
            keys in proptest::collection::btree_set(any::<u8>(), 1..20),
            weighted in any::<bool>(),
            rot in any::<prop::sample::Index>(),
        ) {
            let mode = if weighted { ElectionMode::StakeWeighted } else { ElectionMode::Uniform };
            let set: Vec<_> = keys.iter().map(|b| cand(*b, u128::from(*b) * 7)).collect();
            let winner = elect(&seed, mode, &set).unwrap();
            prop_assert!(keys.contains(&winner.0[0]));
            let mut shuffled = set.clone();
            shuffled.rotate_left(rot.index(set.len()));
            shuffled.reverse();
            shuffled.push(set[0]);
            prop_assert_eq!(elect(&seed, mode, &shuffled), Some(winner));
        }
    }
}
