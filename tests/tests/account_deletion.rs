//! Deleting an account, over HTTP/1.1, HTTP/2 and HTTP/3: a person deletes their own
//! (with their password, from a session), an admin deletes someone's, and on two
//! siblings the other replica converges. What must be gone everywhere: the posts
//! (feeds, search, the post itself), likes and comments on others' posts, follows of
//! and by the account (follower counts drop), the photos only they held (files off
//! every replica's disk), and any way to act as them. What must stay: photos another
//! user uploaded too, and the handle, reserved so nobody can pass for them.

use std::path::PathBuf;
use std::time::Duration;

use edgenode_tests::checks::{expect_error, expect_status, holds, id_of, text};
use edgenode_tests::cluster::{converge, preloaded_siblings};
use edgenode_tests::fixtures::{distinct_photo, sha256_hex};
use edgenode_tests::steps::PASSWORD;
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport};
use serde_json::{json, Value};

/// Replicas agree within this, on loopback, for the few records here.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

fn delete_me(client: &Client, token: &str, password: &str) -> (u16, Value) {
    client.send_json("DELETE", "/api/v1/me", Some(token), &json!({"password": password}))
}

fn profile(client: &Client, viewer: &Account, handle: &str) -> (u16, Value) {
    client.get_json(&format!("/api/v1/users/{handle}"), Some(&viewer.token))
}

/// The three files of a photo on a node's disk.
fn photo_files(node: &Node, media_id: &str) -> Vec<PathBuf> {
    let dir = node.data_dir().join("media").join(&media_id[..2]);
    ["original", "display", "thumb"].iter().map(|kind| dir.join(format!("{media_id}.{kind}"))).collect()
}

fn files_present(node: &Node, media_id: &str) -> usize {
    photo_files(node, media_id).iter().filter(|path| path.exists()).count()
}

#[test]
fn a_person_deletes_their_account_over_every_transport() {
    let node = Node::start(NodeOptions::default());
    let setup = Client::new(&node, Transport::Http1);
    let admin = setup.claim_admin(&node, "ada");
    for transport in Transport::ALL {
        let client = Client::new(&node, transport);
        let handle = format!("del_{}", format!("{transport:?}").to_lowercase());
        let person = client.join(&client.create_invite(&admin), &handle);
        let post = client.create_post(&person, "quayside lanterns tonight", &[], "public");
        let post_id = id_of(&post);

        // A personal access token cannot delete the account, even a write one.
        let made = client.post_json("/api/v1/me/tokens", Some(&person.token), &json!({"name": "s", "scope": "write"}));
        let token = text(&expect_status("a write token", made, 201), "token").to_owned();
        let by_token = delete_me(&client, &token, PASSWORD);
        expect_error(&format!("{transport:?}: a token deleting the account"), &by_token, 403, "session_required");
        expect_error(
            &format!("{transport:?}: a wrong password"),
            &delete_me(&client, &person.token, "not the password at all"),
            403,
            "wrong_password",
        );
        assert_eq!(client.get_post(Some(&admin), &post_id).0, 200, "{transport:?}: nothing deleted yet");

        let deleted = expect_status(
            &format!("{transport:?}: {handle} deletes their account"),
            delete_me(&client, &person.token, PASSWORD),
            200,
        );
        assert_eq!((deleted["deleted"].clone(), deleted["handle_reserved"].clone()), (json!(true), json!(true)));
        assert!(deleted["records_deleted"].as_u64().is_some_and(|count| count >= 3), "{deleted}");

        assert_eq!(client.get_post(Some(&admin), &post_id).0, 404, "{transport:?}: the post is gone");
        assert_eq!(profile(&client, &admin, &handle).0, 404, "{transport:?}: the profile is gone");
        expect_error(&format!("{transport:?}: sign-in"), &client.log_in(&handle, PASSWORD), 401, "bad_credentials");
        let session = client.get_json("/api/v1/feed", Some(&person.token));
        assert_eq!(session.0, 401, "{transport:?}: the old session: {session:?}");
        let token_use = client.get_json("/api/v1/feed", Some(&token));
        assert_eq!(token_use.0, 401, "{transport:?}: the old token: {token_use:?}");
        // The handle stays reserved: nobody can register it to pass for them.
        let again = json!({"handle": handle, "password": PASSWORD, "invite": client.create_invite(&admin)});
        expect_error(
            &format!("{transport:?}: registering the handle again"),
            &client.post_json("/api/v1/accounts", None, &again),
            409,
            "handle_taken",
        );
    }
    // The last admin cannot delete themselves, by either route.
    expect_error("the last admin", &delete_me(&setup, &admin.token, PASSWORD), 409, "last_admin");
    expect_error(
        "the last admin by the admin route",
        &setup.delete_json("/api/v1/admin/users/ada", Some(&admin.token)),
        409,
        "last_admin",
    );
    let plain = setup.join(&setup.create_invite(&admin), "plain");
    let refused = setup.delete_json("/api/v1/admin/users/ada", Some(&plain.token));
    assert_eq!(refused.0, 403, "a user who is no admin: {refused:?}");
    assert_eq!(setup.log_in("ada", PASSWORD).0, 200, "ada is still there");
}

#[test]
fn a_deleted_account_is_gone_from_every_replica_and_only_its_photos_leave_the_disk() {
    let [home, sibling] = preloaded_siblings(["deletion-home", "deletion-sibling"]);
    let at_home = Client::new(&home, Transport::Http2);
    let at_sibling = Client::new(&sibling, Transport::Http3);
    let nodes = [(&at_home, &home), (&at_sibling, &sibling)];
    let alice = at_home.claim_admin(&home, "alice");
    let bob = at_home.join(&at_home.create_invite(&alice), "bob");
    let carol = at_home.join(&at_home.create_invite(&alice), "carol");

    // Bob's own photo, and one carol uploaded too (the same bytes).
    let own_jpeg = distinct_photo(41);
    let shared_jpeg = distinct_photo(42);
    let own = sha256_hex(&own_jpeg);
    let shared = sha256_hex(&shared_jpeg);
    at_home.upload_jpeg(&bob, &own_jpeg);
    at_home.upload_jpeg(&bob, &shared_jpeg);
    at_home.upload_jpeg(&carol, &shared_jpeg);
    let bob_public = id_of(&at_home.create_post(&bob, "lighthouse lanterns at dusk", &[&own], "public"));
    let bob_shared = id_of(&at_home.create_post(&bob, "the shared harbour photo", &[&shared], "followers"));
    let carol_post = id_of(&at_home.create_post(&carol, "carol at the market", &[&shared], "public"));
    at_home.like(&bob, &carol_post);
    at_home.comment(&bob, &carol_post, "lovely light");
    at_home.comment(&alice, &carol_post, "agreed");
    at_home.follow(&bob, "carol");
    at_home.follow(&carol, "bob");
    at_home.follow(&alice, "bob");
    at_home.follow(&alice, "carol");
    converge(&nodes, CONVERGE_WITHIN);

    for (client, node) in nodes {
        let viewer = client.sign_in("carol");
        assert_eq!(files_present(node, &own), 3, "{}: bob's photo replicated", node.name());
        assert_eq!(files_present(node, &shared), 3, "{}: the shared photo replicated", node.name());
        assert!(holds(&client.feed(&viewer), &bob_public), "{}: bob's post in carol's feed", node.name());
        assert_eq!(profile(client, &viewer, "carol").1["follower_count"], json!(2), "{}", node.name());
    }

    expect_status("bob deletes his account at home", delete_me(&at_home, &bob.token, PASSWORD), 200);
    converge(&nodes, CONVERGE_WITHIN);

    for (client, node) in nodes {
        let name = node.name();
        let carol_here = client.sign_in("carol");
        let alice_here = client.sign_in("alice");
        for post_id in [&bob_public, &bob_shared] {
            assert_eq!(client.get_post(Some(&alice_here), post_id).0, 404, "{name}: bob's post {post_id}");
        }
        for viewer in [&carol_here, &alice_here] {
            let feed = client.feed(viewer);
            assert!(!holds(&feed, &bob_public) && !holds(&feed, &bob_shared), "{name}: {}'s feed", viewer.handle);
        }
        assert!(client.search_posts(Some(&alice_here), "lanterns").is_empty(), "{name}: search for bob's words");
        assert_eq!(profile(client, &alice_here, "bob").0, 404, "{name}: bob's profile");

        // His like and comment are gone from carol's post; alice's comment stays.
        let (status, post) = client.get_post(Some(&alice_here), &carol_post);
        assert_eq!(status, 200, "{name}: carol's post stays: {post}");
        assert_eq!((post["like_count"].clone(), post["comment_count"].clone()), (json!(0), json!(1)), "{name}");
        let comments = client.comments(Some(&alice_here), &carol_post);
        assert_eq!(comments.len(), 1, "{name}: {comments:?}");
        assert_eq!(comments[0]["text"], json!("agreed"), "{name}: {comments:?}");

        // Follows of and by bob are gone: the counts say so.
        let carol_profile = expect_status(&format!("{name}: carol"), profile(client, &alice_here, "carol"), 200);
        assert_eq!(carol_profile["follower_count"], json!(1), "{name}: only alice follows carol: {carol_profile}");
        assert_eq!(carol_profile["following_count"], json!(0), "{name}: carol followed bob: {carol_profile}");
        let alice_profile = expect_status(&format!("{name}: alice"), profile(client, &alice_here, "alice"), 200);
        assert_eq!(alice_profile["following_count"], json!(1), "{name}: alice follows carol only: {alice_profile}");

        // Bob's own photo is off this replica's disk and no longer served; the one
        // carol uploaded too stays.
        assert_eq!(files_present(node, &own), 0, "{name}: bob's own photo's files: {:?}", photo_files(node, &own));
        let gone = client.fetch_media(Some(&alice_here), &own, "thumb");
        assert_eq!(gone.status, 404, "{name}: bob's photo served");
        assert_eq!(files_present(node, &shared), 3, "{name}: the shared photo's files");
        assert_eq!(client.fetch_media(Some(&carol_here), &shared, "thumb").status, 200, "{name}: the shared photo");

        expect_error(&format!("{name}: bob signs in"), &client.log_in("bob", PASSWORD), 401, "bad_credentials");
    }
    let old_session = at_home.get_json("/api/v1/feed", Some(&bob.token));
    assert_eq!(old_session.0, 401, "bob's session: {old_session:?}");
    let again = json!({"handle": "bob", "password": PASSWORD, "invite": at_sibling.create_invite(&at_sibling.sign_in("alice"))});
    expect_error(
        "bob's handle on the sibling",
        &at_sibling.post_json("/api/v1/accounts", None, &again),
        409,
        "handle_taken",
    );

    // An admin deletes carol through the sibling; home follows, and the shared photo,
    // owned by nobody now, leaves both disks.
    let alice_there = at_sibling.sign_in("alice");
    let deleted = expect_status(
        "alice deletes carol on the sibling",
        at_sibling.delete_json("/api/v1/admin/users/carol", Some(&alice_there.token)),
        200,
    );
    assert_eq!(deleted["handle"], json!("carol"), "{deleted}");
    converge(&nodes, CONVERGE_WITHIN);
    for (client, node) in nodes {
        let alice_here = client.sign_in("alice");
        assert_eq!(client.get_post(Some(&alice_here), &carol_post).0, 404, "{}: carol's post", node.name());
        assert_eq!(files_present(node, &shared), 0, "{}: the photo nobody owns", node.name());
        let alice_profile = profile(client, &alice_here, "alice").1;
        assert_eq!(alice_profile["following_count"], json!(0), "{}: {alice_profile}", node.name());
    }
    let missing = at_home.delete_json("/api/v1/admin/users/carol", Some(&alice.token));
    assert_eq!(missing.0, 404, "deleting carol again: {missing:?}");
}
