//! Edgenode: one process that serves a neighbourhood photo-sharing service.
//!
//! Layers, from the inside out (see ARCHITECTURE.md):
//! `core` (sans-IO logic) ← `store` (redb + blob files) and `link` (node-to-node
//! QUIC) ← `services` (replication, fan-out, search) ← `api` (one `http` service)
//! ← `http` (HTTPS, HTTP/3, systemd). `node` wires them together; `wiring` holds its
//! adapters (the API's ports implemented by the services).

pub mod api;
pub mod coalesce;
pub mod config;
pub mod core;
pub mod discovery;
pub mod exposition;
pub mod http;
pub mod identity;
pub mod link;
pub mod locking;
pub mod media;
pub mod node;
pub mod os;
pub mod services;
pub mod store;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod wiring;
