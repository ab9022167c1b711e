//! `hermes_p2p._native`: the Hermes runtime for Python (built with maturin into an abi3 wheel).
//!
//! # Layout
//! - [`bridge`]: Rust futures as asyncio futures (own executor, `call_soon_threadsafe`,
//!   cancellation, interpreter exit).
//! - [`consensus`]: epoch status, finished epochs and equivocation evidence.
//! - [`firewall`]: denial counters; the ACL and subnet scope replaced at runtime.
//! - [`node`]: `NativeNode`, the `RuntimeHandle` as a class.
//! - [`data`]: the inbox, streams, gossip and delivery events.
//! - [`sync`]: the Sync Engine (tickets, downloads and their progress, transfers).
//! - [`values`]: plain result types.
//! - [`errors`]: the exception hierarchy.
//!
//! The idiomatic API (`async with Node.start(...)`, `async for`) is the pure-Python package
//! `hermes_p2p` around this module.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod bridge;
mod consensus;
mod data;
mod errors;
mod firewall;
mod node;
mod sync;
mod values;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<node::NativeNode>()?;
    m.add_class::<data::Inbox>()?;
    m.add_class::<data::Message>()?;
    m.add_class::<data::Incoming>()?;
    m.add_class::<data::IncomingStream>()?;
    m.add_class::<data::Writer>()?;
    m.add_class::<data::Gossip>()?;
    m.add_class::<data::GossipMessage>()?;
    m.add_class::<data::Events>()?;
    m.add_class::<consensus::ConsensusStatus>()?;
    m.add_class::<consensus::EpochOutcome>()?;
    m.add_class::<consensus::ConsensusEvents>()?;
    m.add_class::<consensus::Standing>()?;
    m.add_class::<consensus::EpochTrace>()?;
    m.add_class::<consensus::Equivocation>()?;
    m.add_class::<consensus::EvidenceEvents>()?;
    m.add_class::<firewall::FirewallStats>()?;
    m.add_class::<sync::Ticket>()?;
    m.add_class::<sync::Transfer>()?;
    m.add_class::<sync::Progress>()?;
    m.add_class::<sync::ProgressIter>()?;
    m.add_class::<sync::TransferInfo>()?;
    m.add_class::<values::Identity>()?;
    m.add_class::<values::Peer>()?;
    m.add_class::<values::Binding>()?;
    m.add_class::<values::Stats>()?;
    m.add_class::<values::OutboxEntry>()?;
    m.add_class::<values::StreamReport>()?;
    m.add_class::<values::DeliveryEvent>()?;
    m.add("MAX_READ", data::MAX_READ)?;
    m.add("DEFAULT_READ", data::DEFAULT_READ)?;
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    // Interpreter exit shuts live nodes down and stops the executor from entering Python.
    let hook = wrap_pyfunction!(bridge::at_exit, m)?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}
