//! Profiles: a person sets their display name, bio and avatar (a photo of theirs,
//! served as its own square derivative), and is shown by them wherever they appear:
//! their profile, their posts and comments, the feed and search. Limits and
//! ownership are enforced (nothing is written by a refused edit), nobody edits
//! another's profile, and a profile edit made through one sibling is served by the
//! other, avatar included (made there from the photo's copy), and survives kill -9.
//! A user of another node shows the profile that node gives.

use std::time::Duration;

use edgenode_tests::checks::{expect_error, expect_error_response, expect_jpeg_without_exif, expect_status, id_of};
use edgenode_tests::cluster::{converge, known_to_each_other, preloaded_siblings};
use edgenode_tests::fixtures::{camera_jpeg, hue_of_rows, sha256_hex, Hue, BLUE, RED};
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport, ANONYMOUS};
use serde_json::{json, Value};

/// Siblings agree within this, on loopback.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// docs/api.md: a display name is 1 to 50 characters after trimming, a bio at most 300.
const DISPLAY_NAME_CHARS_MAX: usize = 50;
const BIO_CHARS_MAX: usize = 300;

/// A photo as a phone held sideways stores it: 400×200 stored pixels, left half red,
/// right half blue, EXIF orientation 6. Upright it is 200×400, red on top, blue
/// below; its centred square is 200×200, red in its top half and blue in its bottom
/// half. `seed` changes one pixel's shade, so each seed is another photo (hash).
fn sideways_photo(seed: u8) -> Vec<u8> {
    camera_jpeg(400, 200, 6, true, move |x, y| match (x, y) {
        (0, 0) => [seed, seed, seed],
        (x, _) if x < 200 => RED,
        _ => BLUE,
    })
}

fn edit_profile(client: &Client, user: Option<&Account>, body: &Value) -> (u16, Value) {
    client.send_json("PATCH", "/api/v1/me/profile", user.map(|user| user.token.as_str()), body)
}

fn profile(client: &Client, handle: &str) -> Value {
    expect_status(&format!("GET profile of {handle}"), client.get_json(&format!("/api/v1/users/{handle}"), None), 200)
}

/// Panics unless `avatar` is the avatar object of `media_id`.
fn expect_avatar(what: &str, avatar: &Value, media_id: &str) {
    assert_eq!(avatar["id"], json!(media_id), "{what}: avatar {avatar}");
    assert_eq!(avatar["url"], json!(format!("/api/v1/media/{media_id}/avatar")), "{what}: avatar {avatar}");
}

/// Fetches the avatar derivative of `media_id` as `viewer` and checks it is the
/// centred square of `sideways_photo`: a 200×200 JPEG without EXIF, red above, blue
/// below. Returns its ETag.
fn expect_square_avatar(client: &Client, viewer: Option<&Account>, media_id: &str, what: &str) -> String {
    let response = client.fetch_media(viewer, media_id, "avatar");
    let image = expect_jpeg_without_exif(what, &response);
    assert_eq!(image.dimensions(), (200, 200), "{what}: the centred square, never upscaled");
    assert_eq!(hue_of_rows(&image, 0.05, 0.4), Hue::Red, "{what}: upright, the top of the square is red");
    assert_eq!(hue_of_rows(&image, 0.6, 0.95), Hue::Blue, "{what}: and its bottom blue");
    response.header("etag").unwrap_or_else(|| panic!("{what}: no ETag")).to_owned()
}

/// One person's profile over one transport: edits, where it shows, what is refused.
fn profile_story(client: &Client, admin: &Account, handle: &str, seed: u8) {
    let person = client.join(&client.create_invite(admin), handle);
    let stranger = client.join(&client.create_invite(admin), &format!("{handle}_other"));
    let transport = format!("{:?}", client.transport());
    let what = |step: &str| format!("{transport}, {handle}: {step}");

    // A new profile: the handle as display name, no bio, no avatar.
    let fresh = profile(client, handle);
    assert_eq!((fresh["display_name"].as_str(), fresh["bio"].as_str()), (Some(handle), Some("")), "{fresh}");
    assert!(fresh.get("avatar").is_some_and(Value::is_null), "no avatar yet: {fresh}");

    // Name and bio; the name is trimmed, the bio keeps its line break.
    let bio = "Counts sunsets.\nMostly over the harbour.";
    let edited = expect_status(
        &what("setting name and bio"),
        edit_profile(client, Some(&person), &json!({"display_name": "  Ada Lovelace  ", "bio": bio})),
        200,
    );
    assert_eq!(edited["handle"], json!(handle), "the answer is the profile: {edited}");
    assert_eq!(edited["display_name"], json!("Ada Lovelace"), "trimmed: {edited}");
    assert_eq!(edited["bio"], json!(bio));
    assert!(edited["nodes"].is_array(), "as GET /api/v1/users/{{handle}} gives it: {edited}");
    assert_eq!(profile(client, handle)["display_name"], json!("Ada Lovelace"), "anyone sees the new name");

    // The avatar: a photo of theirs, served square to anyone.
    let photo = sideways_photo(seed);
    let media_id = id_of(&client.upload_jpeg(&person, &photo));
    let status = client.fetch_media(ANONYMOUS, &media_id, "avatar").status;
    assert_eq!(status, 404, "{}: an unposted photo that is no avatar is nobody else's to see", what("avatar before"));
    expect_square_avatar(client, Some(&person), &media_id, &what("its owner sees the avatar variant before"));
    let edited = expect_status(
        &what("setting the avatar"),
        edit_profile(client, Some(&person), &json!({"avatar": media_id.to_uppercase()})),
        200,
    );
    expect_avatar(&what("PATCH answer"), &edited["avatar"], &media_id);
    assert_eq!(edited["display_name"], json!("Ada Lovelace"), "fields left out are kept: {edited}");
    assert_eq!(edited["bio"], json!(bio), "fields left out are kept: {edited}");
    expect_avatar(&what("profile"), &profile(client, handle)["avatar"], &media_id);
    let etag = expect_square_avatar(client, ANONYMOUS, &media_id, &what("anyone fetches the avatar"));
    let again = client.request(
        "GET",
        &format!("/api/v1/media/{media_id}/avatar"),
        None,
        &[("if-none-match", etag.as_str())],
        Vec::new(),
    );
    assert_eq!(again.status, 304, "{}: a cached avatar is not sent again", what("If-None-Match"));
    // The original stays the owner's.
    assert_ne!(client.fetch_media(ANONYMOUS, &media_id, "original").status, 200, "{}", what("original"));

    // Shown where the person appears: their posts, comments, the feed, search.
    let post = client.create_post(&person, "Harbour at dusk", &[], "public");
    expect_author(&what("new post"), &post["author"], handle, &media_id);
    let (_, read) = client.get_post(ANONYMOUS, &id_of(&post));
    expect_author(&what("post read"), &read["author"], handle, &media_id);
    let comment = client.comment(&person, &id_of(&post), "the light!");
    expect_author(&what("new comment"), &comment["author"], handle, &media_id);
    let comments = client.comments(ANONYMOUS, &id_of(&post));
    expect_author(&what("comments"), &comments[0]["author"], handle, &media_id);
    let feed = client.feed(&person);
    expect_author(&what("feed"), &feed[0]["author"], handle, &media_id);
    let (status, found) = client.get_json(&format!("/api/v1/search?q={handle}&scope=node"), None);
    assert_eq!(status, 200, "{found}");
    let user = found["users"].as_array().and_then(|users| users.iter().find(|user| user["handle"] == json!(handle)));
    let user = user.unwrap_or_else(|| panic!("{}: search finds the user: {found}", what("search")));
    assert_eq!(user["display_name"], json!("Ada Lovelace"));
    expect_avatar(&what("search"), &user["avatar"], &media_id);

    // Refused edits answer why and write nothing.
    let refusals = [
        (json!({"display_name": "x".repeat(DISPLAY_NAME_CHARS_MAX + 1)}), 400, "invalid_profile"),
        (json!({"display_name": "   "}), 400, "invalid_profile"),
        (json!({"display_name": "Ada\nAdmin"}), 400, "invalid_profile"),
        (json!({"bio": "x".repeat(BIO_CHARS_MAX + 1)}), 400, "invalid_profile"),
        (json!({"avatar": "not-a-photo-id"}), 400, "bad_media_id"),
        // Bytes nobody uploaded (not a photo on this node).
        (json!({"avatar": sha256_hex(b"a text file, not a photo")}), 404, "unknown_media"),
        (json!({"handle": "someone_else"}), 400, "bad_json"),
    ];
    for (body, status, code) in &refusals {
        expect_error(&what(&format!("PATCH {body}")), &edit_profile(client, Some(&person), body), *status, code);
    }
    // Another user's photo is not theirs to wear.
    let strangers_photo = id_of(&client.upload_jpeg(&stranger, &sideways_photo(seed.wrapping_add(100))));
    expect_error(
        &what("someone else's photo as avatar"),
        &edit_profile(client, Some(&person), &json!({"avatar": strangers_photo})),
        404,
        "unknown_media",
    );
    assert_eq!(
        client.fetch_media(ANONYMOUS, &strangers_photo, "avatar").status,
        404,
        "{}: a refused edit made nothing public",
        what("stranger's photo")
    );
    let unchanged = profile(client, handle);
    assert_eq!(unchanged["display_name"], json!("Ada Lovelace"), "nothing written: {unchanged}");
    assert_eq!(unchanged["bio"], json!(bio), "nothing written: {unchanged}");
    expect_avatar(&what("after refusals"), &unchanged["avatar"], &media_id);

    // Nobody edits another's profile: signed out is 401, and another user's PATCH
    // changes their own profile only; there is no route to anyone else's.
    expect_error(
        &what("signed out"),
        &edit_profile(client, ANONYMOUS, &json!({"display_name": "Mallory"})),
        401,
        "unauthorized",
    );
    let (status, _) = edit_profile(client, Some(&stranger), &json!({"display_name": "Mallory"}));
    assert_eq!(status, 200);
    let (status, answer) = client.send_json(
        "PATCH",
        &format!("/api/v1/users/{handle}"),
        Some(&stranger.token),
        &json!({"display_name": "Mallory"}),
    );
    expect_error(&what("PATCH another's profile"), &(status, answer), 405, "method_not_allowed");
    assert_eq!(profile(client, handle)["display_name"], json!("Ada Lovelace"));
    assert_eq!(profile(client, &stranger.handle)["display_name"], json!("Mallory"));

    // Exactly 50 characters is a name; removing the avatar hides its square again.
    let longest = "é".repeat(DISPLAY_NAME_CHARS_MAX);
    let edited = expect_status(
        &what("longest name, no avatar"),
        edit_profile(client, Some(&person), &json!({"display_name": longest, "avatar": null})),
        200,
    );
    assert_eq!(edited["display_name"], json!(longest));
    assert!(edited["avatar"].is_null(), "removed: {edited}");
    expect_error_response(
        &what("a former avatar"),
        &client.fetch_media(ANONYMOUS, &media_id, "avatar"),
        404,
        "not_found",
    );
}

fn expect_author(what: &str, author: &Value, handle: &str, media_id: &str) {
    assert_eq!(author["handle"], json!(handle), "{what}: {author}");
    assert_eq!(author["display_name"], json!("Ada Lovelace"), "{what}: {author}");
    expect_avatar(what, &author["avatar"], media_id);
}

#[test]
fn profiles_are_edited_shown_everywhere_and_guarded_over_every_transport() {
    let node = Node::start(NodeOptions::default());
    let admin = Client::new(&node, Transport::Http2).claim_admin(&node, "admin");
    for (seed, transport) in [Transport::Http1, Transport::Http2, Transport::Http3].into_iter().enumerate() {
        let client = Client::new(&node, transport);
        profile_story(&client, &admin, &format!("ada{seed}"), seed as u8 + 1);
    }
}

/// Avatars are fetched beside every post of a feed, so after the first request one is
/// answered from the node's memory. That answer is the long way's (bytes, ETag, HEAD,
/// no ranges offered), and it ends with the avatar: a replaced avatar is nobody's to see
/// at once, over every transport.
#[test]
fn an_avatar_answered_from_memory_is_gone_once_replaced() {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let admin = client.claim_admin(&node, "admin");
    let ada = client.join(&client.create_invite(&admin), "ada");
    let first = id_of(&client.upload_jpeg(&ada, &sideways_photo(7)));
    expect_status("setting the avatar", edit_profile(&client, Some(&ada), &json!({"avatar": first})), 200);
    let path = format!("/api/v1/media/{first}/avatar");
    let mut etags = Vec::new();
    for transport in [Transport::Http1, Transport::Http2, Transport::Http3] {
        let client = Client::new(&node, transport);
        for round in 0..3 {
            let what = format!("{transport:?}, anonymous fetch {round}");
            etags.push(expect_square_avatar(&client, ANONYMOUS, &first, &what));
            let whole = client.request("GET", &path, None, &[], Vec::new());
            assert_eq!(whole.header("accept-ranges"), None, "{what}: the avatar route offers no ranges");
            assert_eq!(whole.header("cache-control"), Some("private, max-age=31536000, immutable"), "{what}");
            let head = client.request("HEAD", &path, None, &[], Vec::new());
            assert_eq!(head.status, 200, "{what}: HEAD");
            assert!(head.body.is_empty(), "{what}: HEAD has no body");
            assert_eq!(head.header("content-length"), Some(whole.body.len().to_string().as_str()), "{what}: HEAD");
        }
    }
    assert!(etags.windows(2).all(|pair| pair[0] == pair[1]), "one ETag from memory and from disk: {etags:?}");

    let second = id_of(&client.upload_jpeg(&ada, &sideways_photo(8)));
    expect_status("replacing the avatar", edit_profile(&client, Some(&ada), &json!({"avatar": second})), 200);
    for transport in [Transport::Http1, Transport::Http2, Transport::Http3] {
        let client = Client::new(&node, transport);
        let what = format!("{transport:?}: the replaced avatar");
        expect_error_response(&what, &client.fetch_media(ANONYMOUS, &first, "avatar"), 404, "not_found");
        expect_square_avatar(&client, ANONYMOUS, &second, &format!("{transport:?}: the new avatar"));
        expect_square_avatar(&client, Some(&ada), &first, &format!("{transport:?}: its owner still sees the old one"));
    }
}

#[test]
fn a_profile_edit_through_one_sibling_is_served_by_the_other() {
    let [harbour, mut hill] = preloaded_siblings(["profile-harbour", "profile-hill"]);
    let (at_harbour, at_hill) = (Client::new(&harbour, Transport::Http2), Client::new(&hill, Transport::Http3));
    let ada = at_harbour.claim_admin(&harbour, "ada");
    let photo = id_of(&at_harbour.upload_jpeg(&ada, &sideways_photo(7)));
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);

    // Edited on hill, with the photo uploaded on harbour (its owner record and files
    // replicated to hill): served by harbour, which makes the square from its copy.
    let ada_on_hill = at_hill.sign_in("ada");
    let edited = expect_status(
        "editing on hill",
        edit_profile(&at_hill, Some(&ada_on_hill), &json!({"display_name": "Ada of the Hill", "avatar": photo})),
        200,
    );
    expect_avatar("hill's answer", &edited["avatar"], &photo);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);
    let on_harbour = profile(&at_harbour, "ada");
    assert_eq!(on_harbour["display_name"], json!("Ada of the Hill"), "replicated: {on_harbour}");
    expect_avatar("harbour's profile", &on_harbour["avatar"], &photo);
    let from_harbour = expect_square_avatar(&at_harbour, ANONYMOUS, &photo, "harbour serves the avatar");
    let from_hill = expect_square_avatar(&at_hill, ANONYMOUS, &photo, "hill serves the avatar");
    assert_eq!(from_harbour, from_hill, "both replicas make the same square (same ETag)");

    // And back: a bio written on harbour reaches hill, the name kept.
    let bio = "Two nodes, one profile.";
    expect_status("editing on harbour", edit_profile(&at_harbour, Some(&ada), &json!({"bio": bio})), 200);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);
    let on_hill = profile(&at_hill, "ada");
    assert_eq!((on_hill["display_name"].as_str(), on_hill["bio"].as_str()), (Some("Ada of the Hill"), Some(bio)));
    expect_avatar("hill's profile", &on_hill["avatar"], &photo);

    // Written is written: a node killed mid-flight still has the profile.
    hill.kill_9();
    hill.restart();
    let at_hill = Client::new(&hill, Transport::Http1);
    let after_kill = profile(&at_hill, "ada");
    assert_eq!((after_kill["display_name"].as_str(), after_kill["bio"].as_str()), (Some("Ada of the Hill"), Some(bio)));
    expect_avatar("hill after kill -9", &after_kill["avatar"], &photo);
    expect_square_avatar(&at_hill, ANONYMOUS, &photo, "hill after kill -9 serves the avatar");
}

#[test]
fn a_user_of_another_node_shows_the_profile_their_node_gives() {
    let [near, far] = known_to_each_other(
        [("profile-near", "[fanout]\ncall_timeout_ms = 1000\n"), ("profile-far", "[fanout]\ncall_timeout_ms = 1000\n")],
        "peers.neighbours",
        "",
    );
    let (at_near, at_far) = (Client::new(&near, Transport::Http2), Client::new(&far, Transport::Http3));
    let ada = at_near.claim_admin(&near, "ada");
    let bea = at_far.claim_admin(&far, "bea");
    let photo = id_of(&at_far.upload_jpeg(&bea, &sideways_photo(9)));
    let bio = "Lives two hills over.";
    expect_status(
        "bea edits her profile on her node",
        edit_profile(&at_far, Some(&bea), &json!({"display_name": "Bea from Far", "bio": bio, "avatar": photo})),
        200,
    );

    let bea_remote = format!("bea@{}", far.node_id());
    let (status, remote) = at_near.get_json(&format!("/api/v1/users/{bea_remote}"), Some(&ada.token));
    assert_eq!(status, 200, "near resolves bea on far: {remote}");
    assert_eq!(remote["handle"], json!(bea_remote), "{remote}");
    assert_eq!(remote["display_name"], json!("Bea from Far"), "as her node gives it: {remote}");
    assert_eq!(remote["bio"], json!(bio), "{remote}");
    assert_eq!(remote["avatar"]["id"], json!(photo), "{remote}");
    assert_eq!(remote["avatar"]["node"], json!(far.node_id()), "where the photo is: {remote}");
    // Her node serves the square to anyone.
    expect_square_avatar(&at_far, ANONYMOUS, &photo, "far serves bea's avatar");
}
