//! The data dir is the owner's alone: an operator made it by hand (0755, with a 0644
//! file in it, as `mkdir` and an editor leave them under umask 022) and starts the node
//! from a shell whose umask is 022. Once the node has started and a photo is uploaded,
//! every directory in it is 0700 and every file 0600: what was there before is fixed at
//! start, with one warning, and what the node made since was made that way.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use edgenode_tests::fixtures::distinct_photo;
use edgenode_tests::node::edgenode_binary;
use edgenode_tests::{Client, Node, NodeOptions, Transport};

/// Entries of the data dir the check looks at before it gives up (a node with one
/// photo has a few dozen).
const ENTRIES_MAX: usize = 10_000;

#[test]
fn every_file_is_0600_and_every_dir_0700_whatever_the_umask_and_prior_modes() {
    let scratch = std::env::temp_dir().join(format!("edgenode-data-dir-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let data_dir = scratch.join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::write(data_dir.join("operator-notes.txt"), b"moved here from the old disk\n").unwrap();
    std::fs::create_dir(data_dir.join("media")).unwrap();
    set_mode(&data_dir, 0o755);
    set_mode(&data_dir.join("operator-notes.txt"), 0o644);
    set_mode(&data_dir.join("media"), 0o755);

    // The node runs under umask 022 through a shell, as from an operator's login.
    let wrapper = scratch.join("edgenode-with-umask-022");
    std::fs::write(&wrapper, format!("#!/bin/sh\numask 022\nexec '{}' \"$@\"\n", edgenode_binary().display())).unwrap();
    set_mode(&wrapper, 0o755);

    let node =
        Node::start(NodeOptions { data_dir: Some(data_dir.clone()), program: Some(wrapper), ..NodeOptions::default() });
    let client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");
    client.upload_jpeg(&alice, &distinct_photo(7));

    let entries = walk(&data_dir);
    assert!(
        entries.iter().any(|(path, _, _)| path.extension().is_some_and(|extension| extension == "thumb")),
        "the upload left its files in the data dir: {entries:#?}"
    );
    let wrong: Vec<String> = entries
        .iter()
        .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(path, is_dir, mode)| format!("{} ({}) {mode:04o}", path.display(), if *is_dir { "dir" } else { "file" }))
        .collect();
    assert!(
        wrong.is_empty(),
        "every dir 0700 and every file 0600 in the data dir; these are not:\n{}",
        wrong.join("\n")
    );

    let warnings: Vec<String> =
        node.stderr_text().lines().filter(|line| line.contains("owner-only")).map(str::to_owned).collect();
    assert_eq!(warnings.len(), 1, "one warning about the modes fixed at start: {warnings:#?}");
    assert!(
        warnings[0].contains("fixed=3"),
        "it says how many it fixed (the dir, media/ and the notes): {}",
        warnings[0]
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&scratch);
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every entry under `root` (itself included): path, whether a directory, permission
/// bits. Symbolic links are reported as they are, not followed.
fn walk(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut entries = Vec::new();
    let mut directories = vec![root.to_owned()];
    while let Some(directory) = directories.pop() {
        let metadata = std::fs::symlink_metadata(&directory).unwrap();
        entries.push((directory.clone(), true, metadata.permissions().mode() & 0o777));
        for entry in std::fs::read_dir(&directory).unwrap() {
            assert!(
                entries.len() + directories.len() < ENTRIES_MAX,
                "the data dir has more entries than a test node makes"
            );
            let entry = entry.unwrap();
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                directories.push(entry.path());
            } else {
                entries.push((entry.path(), false, metadata.permissions().mode() & 0o777));
            }
        }
    }
    entries
}
