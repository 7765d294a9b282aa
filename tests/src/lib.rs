//! Black-box test harness for Edgenode: starts the real `edgenode` binary on
//! loopback and talks to it over HTTP/1.1, HTTP/2 and HTTP/3 as a phone would.
//!
//! - `node`: start, kill, restart one `edgenode serve` process on a temp data dir.
//! - `client`: a pinned-TLS client per transport, blocking, one request at a time.
//! - `fixtures`: camera-like JPEGs, a PNG bomb, hashes, colour and EXIF checks.
//! - `cases`: run many named cases on one node and report every failure together.
//! - `cluster`: several nodes that know each other as siblings or neighbours by config.
//! - `checks`: assertions on answers (status, error body, lists, media).
//! - `steps`: one helper per user action (claim, invite, upload, post, follow, …).
//! - `contract`: the route table of docs/api.md, matched against `/openapi.json`.
//! - `faults`: for the fault-injection tier: opt-in switch, seeded RNG, node memory.
//! - `attack`: the abuse tier's attackers, their tallies, a legitimate phone, a memory watch.
//!
//! The tests themselves live in `tests/tests/*.rs`, one story per file.

pub mod attack;
pub mod cases;
pub mod checks;
pub mod client;
pub mod cluster;
pub mod contract;
pub mod faults;
pub mod fixtures;
pub mod node;
pub mod steps;

pub use client::{Client, Response, Transport};
pub use node::{Node, NodeOptions};
pub use steps::{Account, ANONYMOUS};
