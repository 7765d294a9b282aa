//! An acknowledged write survives `kill -9`: Alice uploads and posts, and the
//! moment the node has acknowledged both, it is killed without warning. Started
//! again on the same data dir, it is the same node (same pin, same id) and has her
//! account, her post and her photo. An orderly stop afterwards loses nothing either.

use edgenode_tests::checks::{expect_jpeg_without_exif, expect_status, holds, id_of, text};
use edgenode_tests::fixtures::{decode, exif_gps_present, exif_orientation, sideways_sunset_photo};
use edgenode_tests::steps::PASSWORD;
use edgenode_tests::{Client, Node, NodeOptions, Transport, ANONYMOUS};
use serde_json::json;

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut node = Node::start(NodeOptions::default());
    let (pin_before, node_id_before) = (node.pin().to_owned(), node.node_id().to_owned());
    let mut client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");
    let media_id = id_of(&client.upload_jpeg(&alice, &sideways_sunset_photo()));
    let post_id = id_of(&client.create_post(&alice, "Before the storm #harbour", &[&media_id], "public"));

    node.kill_9();
    let ready = node.restart();
    assert_eq!(ready.pin, pin_before, "the node keeps its TLS identity (pin) across kill -9");
    assert_eq!(ready.node_id, node_id_before, "the node keeps its id across kill -9");
    client.reconnect_to(&node);

    let post = expect_status("anyone opens the post after restart", client.get_post(ANONYMOUS, &post_id), 200);
    assert_eq!(post["caption"], json!("Before the storm #harbour"), "{post}");
    assert_eq!(id_of(&post["media"][0]), media_id, "{post}");

    let thumb = client.fetch_media(ANONYMOUS, &media_id, "thumb");
    let thumb_image = expect_jpeg_without_exif("anyone loads the thumb after restart", &thumb);
    assert_eq!(thumb_image.dimensions(), (128, 256), "the thumb after restart");

    let session = expect_status("Alice logs in again after restart", client.log_in("alice", PASSWORD), 200);
    let token = text(&session, "token").to_owned();
    let original = client.request("GET", &format!("/api/v1/media/{media_id}/original"), Some(&token), &[], Vec::new());
    assert_eq!(original.status, 200, "Alice fetches her original after restart: {}", original.body_text());
    assert_eq!(decode(&original.body).dimensions(), (400, 200), "the original keeps its stored pixels");
    assert!(!exif_gps_present(&original.body), "the original has no GPS after restart either");
    assert_eq!(exif_orientation(&original.body), Some(6), "the original keeps its orientation tag");

    let alices_posts = client.user_posts(ANONYMOUS, "alice");
    assert!(holds(&alices_posts, &post_id), "the post is listed after restart");

    // An orderly stop (SIGTERM, as systemd sends) loses nothing either.
    node.terminate();
    let ready = node.restart();
    assert_eq!(ready.pin, pin_before, "the node keeps its pin across a clean stop");
    client.reconnect_to(&node);
    expect_status("anyone opens the post after a clean stop", client.get_post(ANONYMOUS, &post_id), 200);
}
