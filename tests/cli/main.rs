//! The `hermes` binary's contract, exercised as a user would: real processes, real files.
//! One module per group of subcommands; `support` runs the binary and child nodes.

mod contracts;
mod devchain;
mod identity;
mod nodes;
mod support;
