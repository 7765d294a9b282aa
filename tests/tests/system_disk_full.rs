//! System tier, disk full: the node's data partition (a small tmpfs the test mounts)
//! fills up. Writes fail with 507 and a clear message, reads keep working, nothing
//! acknowledged is lost, and writing resumes when space returns. `#[ignore]`d: run it
//! with `--include-ignored`, as root (mounting needs it; otherwise it fails).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use edgenode_tests::client::{Client, Transport};
use edgenode_tests::fixtures::{distinct_photo, sha256_hex};
use edgenode_tests::node::{Node, NodeOptions};
use edgenode_tests::steps::{ANONYMOUS, PASSWORD};
use serde_json::json;

const PARTITION_BYTES: u64 = 96 * 1024 * 1024;
const RESERVE_BYTES: u64 = 16 * 1024 * 1024;

/// A tmpfs mounted for the test, unmounted (lazily) when dropped.
struct SmallPartition {
    mount_point: PathBuf,
}

impl SmallPartition {
    fn mount() -> SmallPartition {
        let mount_point = std::env::temp_dir().join(format!("edgenode-disk-full-{}", std::process::id()));
        std::fs::create_dir_all(&mount_point).expect("creating the mount point");
        let size = format!("size={PARTITION_BYTES}");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "edgenode-test"])
            .arg(&mount_point)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a {PARTITION_BYTES}-byte tmpfs at {} failed", mount_point.display());
        SmallPartition { mount_point }
    }

    fn free_bytes(&self) -> u64 {
        let output = Command::new("df").args(["--output=avail", "-B1"]).arg(&self.mount_point).output().expect("df");
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines().nth(1).and_then(|line| line.trim().parse().ok()).unwrap_or_else(|| panic!("df said {text:?}"))
    }
}

impl Drop for SmallPartition {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount_point).status();
        let _ = std::fs::remove_dir(&self.mount_point);
    }
}

/// Fills the partition until `leave_bytes` are free.
fn fill(path: &Path, partition: &SmallPartition, leave_bytes: u64) {
    let mut file = std::fs::File::create(path).expect("creating the filler");
    let chunk = vec![0x5a_u8; 1024 * 1024];
    while partition.free_bytes() > leave_bytes + chunk.len() as u64 {
        file.write_all(&chunk).expect("filling the partition");
    }
    file.sync_all().expect("syncing the filler");
}

fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("running id");
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "0", "the disk-full test mounts a tmpfs: run it as root");
}

#[test]
#[ignore = "system tier: root (mounts a tmpfs)"]
fn a_full_data_partition_refuses_writes_with_507_and_keeps_everything() {
    require_root();
    let partition = SmallPartition::mount();
    let config = format!("[limits]\ndisk_free_bytes_min = {RESERVE_BYTES}\n");
    let node = Node::start(NodeOptions {
        name: "full".to_owned(),
        data_dir: Some(partition.mount_point.join("data")),
        ..NodeOptions::with_config(&config)
    });
    let client = Client::new(&node, Transport::Http2);
    let ada = client.claim_admin(&node, "ada");
    let media = client.upload_jpeg(&ada, &distinct_photo(3));
    let media_id = media["id"].as_str().expect("media id").to_owned();
    let post = client.create_post(&ada, "before the disk filled #harbour", &[&media_id], "public");
    let post_id = post["id"].as_str().expect("post id").to_owned();

    let filler = partition.mount_point.join("filler");
    fill(&filler, &partition, RESERVE_BYTES / 2);
    let free_when_full = partition.free_bytes();

    // Writes: 507 with a message that says what happened.
    let body = json!({"caption": "after", "media": [], "visibility": "public"});
    let (status, refused) = client.post_json("/api/v1/posts", Some(&ada.token), &body);
    assert_eq!(status, 507, "a post on a full disk: {refused}");
    assert_eq!(refused["error"]["code"], json!("insufficient_storage"), "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("full") && message.contains("reading still works"), "{message}");
    let photo = distinct_photo(4);
    let upload =
        client.put_bytes(&format!("/api/v1/media/{}", sha256_hex(&photo)), Some(&ada.token), "image/jpeg", photo);
    assert_eq!(upload.0, 507, "an upload on a full disk: {}", upload.1);
    let (status, _) = client.send_json("PUT", &format!("/api/v1/posts/{post_id}/like"), Some(&ada.token), &json!({}));
    assert_eq!(status, 507, "a like on a full disk");

    // Reads: everything acknowledged is there; signing in still works.
    let (status, read) = client.get_post(ANONYMOUS, &post_id);
    assert_eq!((status, read["media"][0]["id"].clone()), (200, json!(media_id)), "{read}");
    assert_eq!(client.fetch_media(ANONYMOUS, &media_id, "thumb").status, 200);
    assert_eq!(client.search_posts(ANONYMOUS, "%23harbour").len(), 1);
    let (status, session) = client.log_in("ada", PASSWORD);
    assert_eq!(status, 200, "logging in on a full disk: {session}");
    assert_eq!(client.get_json("/healthz", None).0, 200);

    // Space returns: writing resumes, nothing was lost.
    std::fs::remove_file(&filler).expect("removing the filler");
    let after = client.create_post(&ada, "after space returned", &[], "public");
    client.like(&ada, &post_id);
    let (status, read) = client.get_post(ANONYMOUS, &post_id);
    assert_eq!((status, read["like_count"].clone()), (200, json!(1)), "{read}");
    assert_eq!(client.user_posts(ANONYMOUS, "ada").len(), 2, "both posts, {}", after["id"]);
    println!(
        "disk full: {} bytes free of {PARTITION_BYTES} with a {RESERVE_BYTES}-byte reserve → post, upload, like 507; \
         reads, search, login 200; writes resumed after the filler went",
        free_when_full
    );
    drop(node);
}
