//! Downloads as a phone makes them: a large original streams whole and intact over
//! every transport, ranges of it are exact, and `HEAD` says its length without the
//! bytes. (The node sends large files in chunks as the client takes them.)

use edgenode_tests::checks::id_of;
use edgenode_tests::fixtures::noisy_photo;
use edgenode_tests::{Client, Node, NodeOptions, Transport};

#[test]
fn a_large_original_streams_whole_ranged_and_headed_on_every_transport() {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");
    // Noise hardly compresses: several MB, many chunks.
    let photo = noisy_photo(7, 1600, 1200);
    assert!(photo.len() > 2 * 1024 * 1024, "the photo is {} bytes", photo.len());
    let media_id = id_of(&client.upload_jpeg(&alice, &photo));
    let path = format!("/api/v1/media/{media_id}/original");
    for transport in [Transport::Http1, Transport::Http2, Transport::Http3] {
        let client = Client::new(&node, transport);
        let whole = client.request("GET", &path, Some(&alice.token), &[], Vec::new());
        assert_eq!(whole.status, 200, "{transport:?}: {}", whole.body_text());
        assert_eq!(whole.body.len(), photo.len(), "{transport:?}: the whole original");
        assert!(whole.body == photo, "{transport:?}: the original's bytes are the upload's");
        assert_eq!(whole.header("content-length"), Some(photo.len().to_string().as_str()));

        let start = 1_000_000;
        let ranged =
            client.request("GET", &path, Some(&alice.token), &[("range", "bytes=1000000-1299999")], Vec::new());
        assert_eq!(ranged.status, 206, "{transport:?}: {}", ranged.body_text());
        assert!(ranged.body == photo[start..start + 300_000], "{transport:?}: the range's bytes");

        let headed = client.request("HEAD", &path, Some(&alice.token), &[], Vec::new());
        assert_eq!(headed.status, 200, "{transport:?}");
        assert!(headed.body.is_empty(), "{transport:?}: HEAD carries no body");
        assert_eq!(headed.header("content-length"), Some(photo.len().to_string().as_str()), "{transport:?}");
        assert_eq!(headed.header("x-content-type-options"), Some("nosniff"), "{transport:?}");

        let healthz = client.request("HEAD", "/healthz", None, &[], Vec::new());
        assert_eq!(healthz.status, 200, "{transport:?}: HEAD /healthz");
        assert!(healthz.body.is_empty(), "{transport:?}");
    }
}
