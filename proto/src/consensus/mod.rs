//! The epoch consensus of a subnet, as one pure state machine shared by the dev chain and the
//! nodes, so that they cannot disagree.
//!
//! # An epoch, step by step
//! 1. [`election`]: blocks are grouped into epochs ([`EpochSchedule`]); each epoch has a seed
//!    every node can recompute ([`epoch_seed`]: the previous block's hash, the epoch and the
//!    subnet on the dev chain), from which one Validator-class node is elected, uniformly (what
//!    the chain does) or by stake.
//! 2. [`round`]: the elected validator signs a [`Proposal`] (scores of nodes of class Included or
//!    above, opaque args ≤ 4 KiB); every other validator that agrees signs an [`Attestation`] of
//!    its hash. A [`Round`] checks each record and counts; attestations / validators ≥ 0.66 (by
//!    node count) puts the epoch in consensus, 7/8 is the supermajority.
//! 3. [`rules`]: at the epoch's end, [`apply_epoch`] moves nodes between classes (Registered →
//!    Idle → Included → Validator) and punishes them under the penalty or the reputation model.
//! 4. [`duty`]: a node records what it signed before the record leaves it, so that it never signs
//!    two different records for one epoch, even across a restart.
//!
//! The signed records ([`record`]) are hand-written canonical encodings, signed with their own
//! domain tags, with strict decoders (fuzzed).

pub mod duty;
pub mod election;
pub mod record;
pub mod round;
pub mod rules;

#[cfg(test)]
mod sim;

pub use duty::{Decision, Duties};
pub use election::{elect, epoch_seed, Candidate, ElectionMode, EpochSchedule, Seed};
pub use record::{
    Attestation, Proposal, ProposalHash, RecordError, Score, SignedAttestation, SignedProposal,
    MAX_ARGS_LEN, MAX_SCORES,
};
pub use round::{Accepted, Outcome, Refusal, Round, RoundParams, Tally, Verdict};
pub use rules::{apply_epoch, Change, ClassRules, Removal, Standing, StandingModel};
