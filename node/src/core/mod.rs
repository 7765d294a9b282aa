//! Sans-IO logic: the data model, the hybrid logical clock, text rules, replication,
//! fan-out and trust.
//! Nothing here touches tokio, sockets, files, the wall clock or the OS RNG:
//! time and randomness are passed in, so it can be driven by a simulator.

pub mod fanout;
pub mod hlc;
pub mod model;
pub mod region;
pub mod replication;
pub mod search;
pub mod text;
pub mod trust;
