//! Sans-IO logic: the data model, the hybrid logical clock, text rules, replication,
//! fan-out, trust and the fleet update schedule.
//! Nothing here touches tokio, sockets, files, the wall clock or the OS RNG:
//! time and randomness are passed in, so it can be driven by a simulator.
//! (The test-only `sim.rs`, which runs the simulators over many seeds, reads its seed
//! range from the environment and times the runs; no simulated world sees either.)

pub mod fanout;
pub mod hlc;
pub mod model;
pub mod operator;
pub mod region;
pub mod replication;
pub mod search;
#[cfg(test)]
pub(crate) mod sim;
pub mod text;
pub mod trust;
pub mod update;
