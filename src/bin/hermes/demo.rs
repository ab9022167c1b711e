//! `hermes demo`: a dev chain and three local nodes showing admission, a refusal, E2E messages,
//! a stream and a Sync Engine transfer.

use crate::data;
use crate::{block_on, outln};
use anyhow::{anyhow, Result};
use hermes::config::SubnetMode;
use hermes::{Config, HotkeyPair, Runtime};
use std::path::Path;

pub(crate) fn demo() -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("hermes-demo-{}", std::process::id()));
    let result = demo_in(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Polls `f` every 20 ms until it yields `Some`, for at most `secs` seconds.
pub(crate) async fn within<T, F, Fut>(secs: u64, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

/// The next item of a demo channel (`recv` future), waiting at most 20 s; `what` names it in the
/// error.
async fn next_within<T>(
    recv: impl std::future::Future<Output = Option<T>>,
    what: &str,
) -> Result<T> {
    tokio::time::timeout(std::time::Duration::from_secs(20), recv)
        .await
        .map_err(|_| anyhow!("{what} did not arrive within 20 s"))?
        .ok_or_else(|| anyhow!("the channel for {what} closed"))
}

/// A demo node: its name, address, subnets and config.
struct DemoNode {
    name: &'static str,
    ss58: String,
    cfg: Config,
}

fn demo_nodes(tmp: &Path) -> Result<Vec<DemoNode>> {
    use hermes::config::ChainKind;
    use hermes::proto::chain::{NodeClass, NodeEntry};
    let chain_dir = tmp.join("devchain");
    let chain = hermes_actors::chain::DevChain::new(&chain_dir);
    // Blocks advance only when the demo steps them, so its epoch runs when the demo is ready.
    chain.init(hermes_actors::chain::DevParams {
        blocks_per_epoch: DEMO_EPOCH_BLOCKS,
        block_time: None,
        ..Default::default()
    })?;
    let mut nodes = Vec::new();
    for (name, netuids) in [("alpha", vec![3]), ("beta", vec![3, 7]), ("gamma", vec![7])] {
        let dir = tmp.join(name);
        let (key, file) = HotkeyPair::generate();
        let hotkey = dir.join("hotkeys").join("default");
        file.write_new(&hotkey)?;
        let peer = hermes::transport_key(&dir.join("data").join("transport.key"))?
            .public()
            .to_peer_id();
        for n in &netuids {
            chain.register_sync(NodeEntry {
                netuid: *n,
                hotkey: key.public(),
                peer_id: peer.to_base58(),
                stake: 1_000,
                // alpha and beta validate subnet 3 (they run its epoch below); the rest are
                // newly registered.
                class: if *n == 3 {
                    NodeClass::Validator
                } else {
                    NodeClass::Registered
                },
            })?;
        }
        let mode = if netuids.len() == 1 {
            SubnetMode::Single
        } else {
            SubnetMode::Whitelist
        };
        let mut cfg = Config::default()
            .with_data_dir(dir.join("data"))
            .with_hotkey_file(&hotkey)
            .with_chain(ChainKind::Dev, &chain_dir)
            .with_subnets(mode, netuids)
            .with_listen(vec!["/ip4/127.0.0.1/tcp/0".parse()?])
            .with_log_level("warn");
        cfg.chain.poll_interval = hermes::config::HumanDuration(std::time::Duration::from_secs(5));
        // The demo steps the chain by hand: follow it closely.
        cfg.consensus.poll_interval =
            hermes::config::HumanDuration(std::time::Duration::from_millis(200));
        cfg.validate()?;
        nodes.push(DemoNode {
            name,
            ss58: key.public().to_ss58(42),
            cfg,
        });
    }
    Ok(nodes)
}

fn demo_in(tmp: &Path) -> Result<()> {
    use futures::AsyncReadExt as _;
    use hermes::proto::firewall::DenyReason;
    let mib: u64 = std::env::var("HERMES_DEMO_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    outln!("Hermes demo in {}", tmp.display());
    outln!("A dev chain and three nodes on loopback, registered with stake:");
    outln!("  alpha serves subnet 3, beta subnets 3 and 7, gamma subnet 7.\n");
    let nodes = demo_nodes(tmp)?;
    block_on(async {
        let mut rts = Vec::new();
        let mut boot = Vec::new();
        for n in &nodes {
            let t = std::time::Instant::now();
            let rt = Runtime::builder(n.cfg.clone().with_bootstrap(boot.clone()))
                .with_logging(std::env::var_os("RUST_LOG").is_some())
                .start()
                .await?;
            let addr = within(10, || async {
                rt.listen_addrs().await.ok()?.first().cloned()
            })
            .await
            .ok_or_else(|| anyhow!("{} did not start listening", n.name))?;
            outln!(
                "  {:<5} up in {:>4.0} ms  {}  {addr}",
                n.name,
                t.elapsed().as_secs_f64() * 1e3,
                n.ss58
            );
            // gamma dials both alpha and beta.
            boot.push(addr);
            rts.push(rt);
        }
        let (alpha, beta, gamma) = (&rts[0], &rts[1], &rts[2]);
        let (a, b, g) = (&nodes[0].ss58, &nodes[1].ss58, &nodes[2].ss58);
        let knows = |rt: &hermes::RuntimeHandle, who: &str| {
            let (rt, who) = (rt.clone(), who.to_string());
            async move {
                rt.peers()
                    .await
                    .ok()?
                    .iter()
                    .any(|p| p.ss58 == who)
                    .then_some(())
            }
        };

        outln!(
            "\nAdmission (firewall at connection time, then the wallet-signed binding exchange):"
        );
        within(20, || knows(alpha, b))
            .await
            .ok_or_else(|| anyhow!("alpha never admitted beta"))?;
        within(20, || knows(beta, g))
            .await
            .ok_or_else(|| anyhow!("beta never admitted gamma"))?;
        outln!("  alpha <-> beta   admitted (both in subnet 3)");
        outln!("  beta  <-> gamma  admitted (both in subnet 7)");
        // gamma dials alpha (its bootstrap), and alpha may dial gamma once beta tells it where
        // gamma is. Both ends check the other at connection time, so whichever end finishes the
        // handshake first refuses: wait on either side's counter, never on one of them.
        let out_of_scope = |rt: &hermes::RuntimeHandle| {
            let rt = rt.clone();
            async move {
                rt.firewall_stats()
                    .await
                    .map(|s| s.denied(DenyReason::OutOfScope))
                    .unwrap_or(0)
            }
        };
        let (by, refused) = within(20, || async {
            let (na, ng) = (out_of_scope(alpha).await, out_of_scope(gamma).await);
            if na > 0 {
                Some(("alpha", "gamma"))
            } else if ng > 0 {
                Some(("gamma", "alpha"))
            } else {
                None
            }
        })
        .await
        .ok_or_else(|| anyhow!("neither alpha nor gamma refused the other within 20 s"))?;
        outln!(
            "  {by:<5} refused {refused}: reason `out_of_scope` (alpha serves only subnet 3, gamma only 7), at connection time, before any substream;\n  every later dial between the two is refused as well (totals under Counters)"
        );

        outln!("\nEnd-to-end encrypted messages (HPKE session to the recipient's prekey, a fresh AES-256-GCM key per message):");
        let mut inbox = beta.subscribe()?;
        let mut events = alpha.delivery_events()?;
        let t = std::time::Instant::now();
        let id = alpha
            .send(b, 3, b"epoch 12: weights ready".to_vec())
            .await?;
        let m = next_within(inbox.recv(), "alpha's message to beta").await?;
        outln!(
            "  alpha -> beta  {:?} (id {id}) received in {:.1} ms",
            String::from_utf8_lossy(&m.bytes),
            t.elapsed().as_secs_f64() * 1e3
        );
        // Beta's application is done with it: only now does beta acknowledge it to alpha.
        m.ack();
        if data::delivered(&mut events, id, std::time::Duration::from_secs(20)).await {
            outln!("  alpha got beta's acknowledgement: delivered exactly once");
        }
        gamma
            .send(b, 7, b"gamma reporting on subnet 7".to_vec())
            .await?;
        let m = next_within(inbox.recv(), "gamma's message to beta").await?;
        outln!(
            "  gamma -> beta  {:?} from {}",
            String::from_utf8_lossy(&m.bytes),
            m.from
        );
        // RTT figure for orientation: a few ping-pongs through both applications.
        let mut back = alpha.subscribe()?;
        let mut samples = Vec::new();
        for _ in 0..200 {
            let t = std::time::Instant::now();
            alpha.send(b, 3, vec![0u8; 1024]).await?;
            let m = inbox.recv().await.ok_or_else(|| anyhow!("inbox closed"))?;
            beta.send(a, 3, m.bytes).await?;
            back.recv().await.ok_or_else(|| anyhow!("inbox closed"))?;
            samples.push(t.elapsed());
        }
        samples.sort();
        outln!(
            "  1 KiB round trip alpha -> beta -> alpha, 200 samples: median {:.0} µs",
            samples[samples.len() / 2].as_secs_f64() * 1e6
        );

        outln!("\nA {mib} MiB stream beta -> alpha (one HPKE session, then AES-256-GCM chunks; backpressure end to end):");
        let mut incoming = alpha.incoming_streams()?;
        let total = mib << 20;
        let sender = {
            let (beta, to) = (beta.clone(), a.clone());
            tokio::spawn(async move {
                let mut w = beta.open_stream(&to, 3).await?;
                let block = vec![0x5au8; 1 << 20];
                let mut sent = 0u64;
                while sent < total {
                    let k = (total - sent).min(block.len() as u64) as usize;
                    tokio::io::AsyncWriteExt::write_all(&mut w, &block[..k]).await?;
                    sent += k as u64;
                }
                Ok::<_, anyhow::Error>(w.finish().await?)
            })
        };
        let mut s = next_within(incoming.recv(), "beta's stream to alpha").await?;
        let t = std::time::Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let k = s.reader.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            got += k as u64;
        }
        let report = sender.await??;
        let secs = t.elapsed().as_secs_f64();
        outln!(
            "  alpha verified {got} bytes in {secs:.2} s: {:.0} MiB/s; beta got the confirmation after {:.2} s",
            got as f64 / (1024.0 * 1024.0) / secs,
            report.elapsed.as_secs_f64()
        );

        outln!("\nThe Sync Engine: a {mib} MiB file beta -> alpha (sealed and hashed once, served from the file itself, verified chunk by chunk):");
        let src = tmp.join("beta-checkpoint.bin");
        write_pattern(&src, total)?;
        let t = std::time::Instant::now();
        let ticket = beta
            .offer(&src, a, 3, hermes::sync::OfferOptions::default())
            .await?;
        outln!(
            "  beta offered it in {:.2} s: ticket {}… ({} characters, one line)",
            t.elapsed().as_secs_f64(),
            &ticket.to_string()[..40],
            ticket.to_string().len()
        );
        let m = next_within(back.recv(), "the ticket message").await?;
        let delivered = hermes::sync::ticket_in_message(&m.bytes)
            .ok_or_else(|| anyhow!("alpha's message is not a ticket"))?
            .map_err(|e| anyhow!("{e}"))?;
        m.ack();
        outln!("  alpha received the ticket as an end-to-end message");
        let stolen = gamma
            .fetch_ticket(delivered.clone(), tmp.join("gamma-copy.bin"))
            .await;
        outln!("  gamma presents a copy of it -> {}", verdict(&stolen));
        let dest = tmp.join("alpha-checkpoint.bin");
        let t = std::time::Instant::now();
        let transfer = alpha.fetch_ticket(delivered, &dest).await?;
        transfer.wait().await.map_err(|e| anyhow!("{e}"))?;
        let secs = t.elapsed().as_secs_f64();
        let same = same_content(&src, &dest)?;
        outln!(
            "  alpha downloaded and verified {total} bytes in {secs:.2} s: {:.0} MiB/s, 8 chunks in flight; byte-exact: {same}",
            total as f64 / (1024.0 * 1024.0) / secs
        );
        let revoked = beta.revoke(ticket.body.transfer_id).await?;
        outln!("  beta revoked the offer: {}", revoked.state);
        let _ = std::fs::remove_file(&src);
        let _ = std::fs::remove_file(&dest);

        epoch_in(&tmp.join("devchain"), &rts, &nodes).await?;

        outln!("\nCounters:");
        let sa = alpha.message_stats().await?;
        let sb = beta.message_stats().await?;
        outln!(
            "  beta:  {} messages received, {} duplicates suppressed, {} refused; alpha: {} stream bytes verified",
            sb.received,
            sb.duplicates,
            sb.rejected.iter().map(|(_, n)| n).sum::<u64>(),
            sa.stream_bytes.0
        );
        // Every dial between alpha and gamma is refused again (gamma retries its bootstrap,
        // alpha learns gamma's address through beta), so these totals exceed the one refusal
        // reported above; each side counts the connections its own firewall closed.
        outln!(
            "  connections refused as out_of_scope so far, counted by the refusing side: alpha {}, gamma {}",
            out_of_scope(alpha).await,
            out_of_scope(gamma).await
        );

        outln!("\nBinding records checked by hand:");
        let ia = alpha.identity().await?;
        let ib = beta.identity().await?;
        let stolen = alpha
            .verify_binding(ib.binding.encode(), ia.peer_id, None)
            .await;
        outln!(
            "  beta's record replayed over alpha's connection -> {}",
            verdict(&stolen)
        );
        let mut forged = ib.binding.clone();
        forged.record.netuids = vec![3, 99];
        let forged = alpha
            .verify_binding(forged.encode(), ib.peer_id, None)
            .await;
        outln!(
            "  beta's record with a subnet added               -> {}",
            verdict(&forged)
        );

        for rt in &rts {
            rt.shutdown().await?;
        }
        outln!("\nall nodes shut down cleanly");
        Ok::<_, anyhow::Error>(())
    })
}

/// Blocks per epoch of the demo's dev chain.
const DEMO_EPOCH_BLOCKS: u64 = 10;

/// One epoch of subnet 3, whose validators are alpha and beta: the chain elects one of them, it
/// proposes the epoch's scores through its application hook (here the default one), the other
/// checks and attests, and the next block past the epoch finalizes it.
async fn epoch_in(
    chain_dir: &Path,
    rts: &[hermes::RuntimeHandle],
    nodes: &[DemoNode],
) -> Result<()> {
    use hermes::proto::consensus::Change;
    const NET: u16 = 3;
    let dev = hermes_actors::chain::DevChain::new(chain_dir);
    let name = |k: &hermes::proto::Hotkey| {
        let ss58 = k.to_ss58(42);
        nodes
            .iter()
            .find(|n| n.ss58 == ss58)
            .map_or(ss58, |n| n.name.to_string())
    };
    outln!("\nEpoch consensus on subnet 3 (dev chain stepped by hand; alpha and beta are its validators):");
    let mut events: Vec<_> = rts[..2].iter().map(|rt| rt.consensus_events()).collect();
    // Subnet 7's epoch, as beta sees it: no validator there, but its queue moves on.
    let mut beta7 = rts[1].consensus_events();
    let t = std::time::Instant::now();
    let epoch = dev.step(DEMO_EPOCH_BLOCKS)?.epoch;
    let view = within(30, || async {
        let v = dev.epoch_sync(NET, Some(epoch)).ok()??;
        (v.round.tally().attestations >= 2).then_some(v)
    })
    .await
    .ok_or_else(|| {
        anyhow!("epoch {epoch}: the chain did not record both validators' work within 30 s")
    })?;
    let (p, _) = view
        .round
        .proposal()
        .ok_or_else(|| anyhow!("epoch {epoch}: no proposal"))?;
    let proposer = name(&p.proposal.proposer);
    let scored: Vec<String> = p.proposal.scores.iter().map(|s| name(&s.hotkey)).collect();
    let attesters: Vec<String> = view
        .round
        .attestations()
        .map(|a| name(&a.attestation.attester))
        .filter(|n| *n != proposer)
        .collect();
    outln!(
        "  epoch {epoch}: {proposer} elected; it proposed scores for {} (signed with its hotkey, gossiped, put in the DHT)",
        scored.join(" and ")
    );
    outln!(
        "  {} checked the data against its own view and attested: {}/{} on chain {:.0} ms after the epoch opened",
        attesters.join(", "),
        view.round.tally().attestations,
        view.round.tally().validators,
        t.elapsed().as_secs_f64() * 1e3
    );
    dev.step(DEMO_EPOCH_BLOCKS)?;
    let changes = |o: &hermes::EpochOutcome| -> Vec<String> {
        o.changes
            .iter()
            .map(|c| match c {
                Change::Promoted { hotkey, from, to } => {
                    format!("{} {from:?} -> {to:?}", name(hotkey))
                }
                Change::Punished {
                    hotkey, penalties, ..
                } => format!("{} penalized ({penalties})", name(hotkey)),
                Change::Removed { hotkey, reason } => {
                    format!("{} removed ({reason:?})", name(hotkey))
                }
            })
            .collect()
    };
    for (i, rx) in events.iter_mut().enumerate() {
        let o = outcome(rx, NET, epoch, nodes[i].name).await?;
        let changes = changes(&o);
        outln!(
            "  {:<5} sees epoch {epoch} finalized: {:?}, {}/{} attestations{}{}",
            nodes[i].name,
            o.verdict,
            o.attestations,
            o.validators,
            if o.proposed {
                ", its proposal"
            } else {
                ", it attested"
            },
            if changes.is_empty() {
                String::new()
            } else {
                format!("; {}", changes.join(", "))
            }
        );
    }
    let o = outcome(&mut beta7, 7, epoch, "beta").await?;
    outln!(
        "  subnet 7 has no validator yet ({:?}), but its newly registered nodes served their queue: {}",
        o.verdict,
        changes(&o).join(", ")
    );
    Ok(())
}

/// The next outcome of `netuid`'s `epoch` on `rx`, skipping others (30 s at most).
async fn outcome(
    rx: &mut tokio::sync::broadcast::Receiver<hermes::EpochOutcome>,
    netuid: u16,
    epoch: u64,
    who: &str,
) -> Result<hermes::EpochOutcome> {
    loop {
        let o = tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
            .await
            .map_err(|_| anyhow!("{who} reported no outcome of subnet {netuid}'s epoch {epoch}"))?
            .map_err(|e| anyhow!("{who}'s consensus events: {e}"))?;
        if o.netuid == netuid && o.epoch == epoch {
            return Ok(o);
        }
    }
}

/// Writes `len` bytes of a fixed pattern to `path`.
fn write_pattern(path: &Path, len: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
    let mut left = len;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        f.write_all(&block[..k])?;
        left -= k as u64;
    }
    f.flush()?;
    Ok(())
}

/// Whether two files hold the same bytes.
fn same_content(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

fn verdict<T>(r: &Result<T, hermes::Error>) -> String {
    match r {
        Ok(_) => "accepted".into(),
        Err(e) => format!("refused: {e}"),
    }
}
