//! Identical uploads arriving together are converted once: six phones (two owners)
//! send the same photo at the same moment; the node answers all six, creates the
//! media once (one 201 per owner, four 200), runs the pipeline once, and both owners
//! own it.

use std::sync::{Arc, Barrier};

use edgenode_tests::fixtures::{camera_jpeg, sha256_hex};
use edgenode_tests::{Client, Node, NodeOptions, Transport};

/// A metric, read as an admin (`/metrics` is for operators only).
fn metric(client: &Client, admin_token: &str, name: &str) -> f64 {
    let response = client.request("GET", "/metrics", Some(admin_token), &[], Vec::new());
    assert_eq!(response.status, 200);
    let text = String::from_utf8(response.body).expect("metrics are text");
    let line =
        text.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {text}"));
    line[name.len() + 1..].trim().parse().unwrap_or_else(|error| panic!("{line}: {error}"))
}

#[test]
fn identical_concurrent_uploads_are_converted_once() {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");
    let invite = client.create_invite(&alice);
    let bob = client.join(&invite, "bob");
    // Big enough that its conversion is still running when the others arrive.
    let photo =
        Arc::new(camera_jpeg(2400, 1800, 1, true, |x, y| [(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8]));
    let path = format!("/api/v1/media/{}", sha256_hex(&photo));

    let processed_before = metric(&client, &alice.token, "edgenode_media_processed_total");
    let barrier = Arc::new(Barrier::new(6));
    let uploads: Vec<_> = (0..6)
        .map(|index| {
            let (photo, path, barrier) = (photo.clone(), path.clone(), barrier.clone());
            let token = if index % 2 == 0 { alice.token.clone() } else { bob.token.clone() };
            let client = Client::new(&node, [Transport::Http1, Transport::Http2, Transport::Http3][index % 3]);
            std::thread::spawn(move || {
                barrier.wait();
                client.put_bytes(&path, Some(&token), "image/jpeg", photo.to_vec()).0
            })
        })
        .collect();
    let mut statuses: Vec<u16> = uploads.into_iter().map(|upload| upload.join().expect("upload thread")).collect();
    statuses.sort();
    // One 201 per owner (the answer must not tell bob that alice holds the bytes).
    assert_eq!(
        statuses,
        vec![200, 200, 200, 200, 201, 201],
        "each owner's first upload is new to them, the rest find it"
    );
    assert_eq!(
        metric(&client, &alice.token, "edgenode_media_processed_total") - processed_before,
        1.0,
        "the pipeline ran once"
    );
    assert!(
        metric(&client, &alice.token, "edgenode_media_coalesced_total") >= 1.0,
        "some uploads waited for the first"
    );

    let media_id = sha256_hex(&photo);
    for owner in [&alice, &bob] {
        let original =
            client.request("GET", &format!("/api/v1/media/{media_id}/original"), Some(&owner.token), &[], Vec::new());
        assert_eq!(original.status, 200, "{} fetches the original they uploaded", owner.handle);
    }
}
