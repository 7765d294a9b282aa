//! Every black-box test of the node, in one test binary: each module is the tests of one
//! capability (its first lines say which). Each test starts the real `edgenode` binary
//! (`edgenode_tests::node::edgenode_binary`) and talks to it as clients do.
//!
//! One binary, not one per file: each file as its own binary compiled and linked the
//! harness and the node's library again (~50 times; minutes of CI), and a binary with one
//! long test left the second test thread idle. Run one capability by its module path:
//!
//!     cargo test -p edgenode-tests --test black_box -- profiles::
//!     cargo test -p edgenode-tests --test black_box -- --include-ignored system_mdns::
//!
//! The system tier's tests are `#[ignore = "system tier: …"]`; `.ci/run` runs each tier
//! by its module path with `--include-ignored`.

// The network-namespace lab of the system tier (tests/system/), shared by its modules so
// that every lab in this process gets a distinct name.
mod abuse;
mod account_care;
mod account_deletion;
mod answer_shapes;
mod backup;
mod bad_input;
mod blocking;
mod bulk_upload;
mod coalescing;
mod colour;
mod data_dir;
mod downloads;
mod durability;
mod export_import;
mod fanout;
mod fault_power_cuts;
mod follow_requests;
mod front_door;
mod household;
mod image_bombs;
mod invite_cli;
mod invites;
#[path = "../system/lab.rs"]
mod lab;
#[path = "../system/siblings.rs"]
mod lab_siblings;
mod link;
mod location_privacy;
mod metrics;
mod notifications;
mod operator_cli;
mod profiles;
mod remote_avatars;
mod remote_people;
mod retire_sibling;
mod search;
mod siblings;
mod store_migration;
mod system_acme;
mod system_disk_full;
mod system_mdns;
mod system_neighbourhood;
mod system_replace_box;
mod system_replication;
mod trust;
mod update;
mod user_cli;
mod visibility;
mod write_answers;
