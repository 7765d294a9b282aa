//! Edgenode: one process that serves a neighbourhood photo-sharing service.
//!
//! Layers, from the inside out (see ARCHITECTURE.md):
//! `core` (sans-IO logic) ← `store` (redb + blob files) ← `media` (image pipeline)
//! ← `api` (one `http` service) ← `net` (HTTPS, HTTP/3, TLS identity, systemd).

pub mod api;
pub mod config;
pub mod core;
pub mod discovery;
pub mod fanout;
pub mod media;
pub mod net;
pub mod os;
pub mod search;
pub mod siblings;
pub mod store;
