//! Avatars of people on other nodes, served through this node (phones talk to their
//! own node only): a remote profile's `avatar.url` loads the same square JPEG the
//! user's node serves, fetched over the link on the first request and kept in this
//! node's remote photo cache, so it still loads with that node stopped. A node id
//! that is not a neighbour is refused. Notification actors carry their avatar too.

use edgenode_tests::checks::{expect_error, expect_jpeg_without_exif, expect_status, id_of};
use edgenode_tests::cluster::known_to_each_other;
use edgenode_tests::fixtures::{camera_jpeg, sha256_hex, BLUE, RED};
use edgenode_tests::{Client, Node, NodeOptions, Transport};
use serde_json::{json, Value};

/// docs/api.md: the avatar is the centred square fitted into 256×256, never upscaled.
const AVATAR_SIDE: u32 = 256;

/// A 600×400 photo (its centred square, 400 px, is larger than an avatar), left half
/// red, right half blue; `seed` makes each one another photo.
fn landscape_photo(seed: u8) -> Vec<u8> {
    camera_jpeg(600, 400, 1, false, move |x, y| match (x, y) {
        (0, 0) => [seed, seed, seed],
        (x, _) if x < 300 => RED,
        _ => BLUE,
    })
}

fn set_avatar(client: &Client, token: &str, media_id: &str) {
    let answer = client.send_json("PATCH", "/api/v1/me/profile", Some(token), &json!({ "avatar": media_id }));
    expect_status("setting an avatar", answer, 200);
}

/// Fetches `url` (a path on `client`'s node) and expects a 256×256 JPEG; its bytes.
fn expect_avatar_jpeg(client: &Client, url: &str, what: &str) -> Vec<u8> {
    let response = client.request("GET", url, None, &[], Vec::new());
    let image = expect_jpeg_without_exif(what, &response);
    assert_eq!(image.dimensions(), (AVATAR_SIDE, AVATAR_SIDE), "{what}: the square fitted into 256×256");
    response.body
}

#[test]
fn a_remote_users_avatar_loads_through_this_node_and_stays_cached() {
    let [near, mut far] = known_to_each_other(
        [("avatar-near", "[fanout]\ncall_timeout_ms = 1000\n"), ("avatar-far", "[fanout]\ncall_timeout_ms = 1000\n")],
        "peers.neighbours",
        "",
    );
    let (at_near, at_far) = (Client::new(&near, Transport::Http2), Client::new(&far, Transport::Http3));
    let ada = at_near.claim_admin(&near, "ada");
    let bea = at_far.claim_admin(&far, "bea");
    let photo = id_of(&at_far.upload_jpeg(&bea, &landscape_photo(3)));
    set_avatar(&at_far, &bea.token, &photo);

    let bea_remote = format!("bea@{}", far.node_id());
    let remote = expect_status(
        "near resolves bea",
        at_near.get_json(&format!("/api/v1/users/{bea_remote}"), Some(&ada.token)),
        200,
    );
    let avatar: &Value = &remote["avatar"];
    assert_eq!(avatar["id"], json!(photo), "{remote}");
    let url = avatar["url"].as_str().unwrap_or_else(|| panic!("a remote avatar has a url: {remote}")).to_owned();
    assert!(url.starts_with('/'), "a path on near, never another node's address: {url}");

    // Near asks first: far makes the square for it, never having been asked itself.
    let through_near = expect_avatar_jpeg(&at_near, &url, "bea's avatar through near");
    let from_far = expect_avatar_jpeg(&at_far, &format!("/api/v1/media/{photo}/avatar"), "bea's avatar on far");
    assert_eq!(sha256_hex(&through_near), sha256_hex(&from_far), "near serves far's bytes");

    // Far stopped: near answers from its cache.
    far.terminate();
    let cached = expect_avatar_jpeg(&at_near, &url, "bea's avatar through near, far stopped");
    assert_eq!(sha256_hex(&cached), sha256_hex(&from_far), "the cached bytes");

    // A node id near does not know: refused, nothing fetched.
    let unknown =
        at_near.request("GET", &format!("/api/v1/media/{photo}/avatar?node=00000000000000aa"), None, &[], Vec::new());
    let body: Value = serde_json::from_slice(&unknown.body).unwrap_or(Value::Null);
    expect_error("an unknown node id", &(unknown.status, body), 404, "unknown_node");
    let bad = at_near.request("GET", &format!("/api/v1/media/{photo}/avatar?node=far"), None, &[], Vec::new());
    assert_eq!(bad.status, 400, "a node id must be 16 hex digits: {}", bad.body_text());
    // Another photo of far's, never fetched: far is down, so near cannot give it.
    let unseen = "ab".repeat(32);
    let down =
        at_near.request("GET", &format!("/api/v1/media/{unseen}/avatar?node={}", far.node_id()), None, &[], Vec::new());
    assert_eq!(down.status, 502, "far stopped and nothing cached: {}", down.body_text());
}

#[test]
fn notification_actors_carry_an_avatar_that_loads() {
    let near = Node::start(NodeOptions::default());
    let client = Client::new(&near, Transport::Http1);
    let ada = client.claim_admin(&near, "ada");
    let cy = client.join(&client.create_invite(&ada), "cyd");
    let dee = client.join(&client.create_invite(&ada), "dee");
    let cy_photo = id_of(&client.upload_jpeg(&cy, &landscape_photo(7)));
    set_avatar(&client, &cy.token, &cy_photo);
    let post = id_of(&client.create_post(&ada, "Harbour", &[], "public"));
    client.like(&dee, &post);
    std::thread::sleep(std::time::Duration::from_millis(5));
    client.like(&cy, &post);

    let page = expect_status("ada's notifications", client.get_json("/api/v1/notifications", Some(&ada.token)), 200);
    let likes = page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|item| item["kind"] == json!("like")))
        .unwrap_or_else(|| panic!("a like group: {page}"));
    let actor = |handle: &str| -> &Value {
        likes["actors"]
            .as_array()
            .and_then(|actors| actors.iter().find(|actor| actor["handle"] == json!(handle)))
            .unwrap_or_else(|| panic!("{handle} among the actors: {likes}"))
    };
    assert_eq!(actor("dee")["avatar"], Value::Null, "no avatar chosen: {likes}");
    let avatar = &actor("cyd")["avatar"];
    assert_eq!(avatar["id"], json!(cy_photo), "{likes}");
    let url = avatar["url"].as_str().unwrap_or_else(|| panic!("an avatar url: {likes}"));
    expect_avatar_jpeg(&client, url, "cyd's avatar from a notification");
}
