//! Services between nodes: drivers of `core` state machines over `link` and `store`.
//! They never import `api` or `http`; the API reaches them through its own traits.

pub mod fanout;
pub mod media_fetch;
pub mod replication;
pub mod search;
pub mod sibling_web;
pub mod update;
