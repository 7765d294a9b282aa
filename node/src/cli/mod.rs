//! The `edgenode` commands other than `serve` (which is `edgenode::node::serve`):
//! each runs once, talks to the node on this data dir or to the network, and prints
//! what a person reads (aligned tables) or, with `--json`, what a script reads.

pub mod control;
pub mod discover;
pub mod peer;
pub mod status;
