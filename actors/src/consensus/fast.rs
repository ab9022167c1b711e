//! Attesting a proposal heard in gossip at once, without reading the chain first.
//!
//! 1. The gossip judge has just taken the elected validator's proposal into its copy of the
//!    current round: the copy is the chain's round as the last poll read it, and the proposal
//!    passed the round's own checks on it (subnet, epoch, elected signer, signature, eligible
//!    scores), the same checks the poll runs before relaying a heard proposal.
//! 2. If this node is one of the round's validators, not the proposer, has not attested yet, its
//!    duties allow it and the application's hook agrees, it records the duty (flushed), signs,
//!    and publishes the attestation on the subnet's topic; its copy of the round counts it.
//! 3. The next timer poll submits the same statement to the chain (the duties answer `Resend`),
//!    without gossiping it again. Not a poll at once: a poll blocks the actor's mailbox while it
//!    reads the chain, and the attestations now arriving would wait behind it.
//!
//! A chain read on the attestation path would otherwise set the time to finalization: each
//! attester polled the chain (head and round) before signing, and a dev chain serves one
//! operation at a time.

use super::{gossip, ConsensusActor, NET_TIMEOUT};
use crate::network::Command;
use hermes_proto::consensus::{Attestation, Decision, SignedProposal};
use tokio::sync::oneshot;

impl ConsensusActor {
    /// Attests `sp`, just taken from gossip into the judge's copy of the round, when this node
    /// should; see the module header. Returns whether it signed (or re-sent) an attestation.
    pub(super) fn attest_heard(&mut self, sp: &SignedProposal) -> bool {
        let Some(net) = self.net.as_ref().map(|(c, _)| c.clone()) else {
            return false;
        };
        let Some(round) = self.judge.round() else {
            return false;
        };
        let epoch = sp.proposal.epoch;
        let Some((held, hash)) = round.proposal() else {
            return false;
        };
        if round.epoch() != epoch
            || self.status.epoch != Some(epoch)
            || held.hash() != sp.hash()
            || !round.is_validator(&self.me)
            || sp.proposal.proposer == self.me
            || round.has_attested(&self.me)
        {
            return false;
        }
        let decision = self.status.duties.may_attest(epoch, &hash);
        if decision == Decision::Refuse || !self.hook.check(&sp.proposal, &round.params().eligible)
        {
            return false;
        }
        if decision == Decision::Sign {
            let mut duties = self.status.duties;
            duties.record_attestation(epoch, hash);
            if let Err(e) = self.persist(&duties) {
                self.status.last_error = Some(e);
                return false;
            }
            self.status.duties = duties;
        }
        let att = Attestation {
            epoch,
            netuid: self.netuid,
            proposal: hash,
            attester: self.me,
        };
        let sa = match att.sign(&self.pair) {
            Ok(sa) => sa,
            Err(e) => {
                self.status.last_error = Some(e.to_string());
                return false;
            }
        };
        tracing::debug!(
            netuid = self.netuid,
            epoch,
            "attesting a proposal heard in gossip"
        );
        let bytes = gossip::attestation_payload(&sa);
        let len = bytes.len();
        let (tx, rx) = oneshot::channel();
        // `try_send`: a full network queue drops the publication; the poll then gossips it.
        match net.try_send(Command::Publish(self.netuid, bytes, tx)) {
            Ok(()) => {
                self.gossiped = Some((epoch, hash));
                self.traces.of(epoch).sent.add(len);
                actix::spawn(async move {
                    match tokio::time::timeout(NET_TIMEOUT, rx).await {
                        Ok(Ok(Ok(()))) => {}
                        _ => tracing::debug!("attestation not gossiped"),
                    }
                });
            }
            Err(e) => tracing::debug!(error = %e, "attestation not gossiped"),
        }
        self.judge.own(&sa);
        true
    }
}
