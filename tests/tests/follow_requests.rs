//! Locked accounts: Alice locks hers, so a follow is a request she answers. Until she
//! approves, a follower sees only her public posts, everywhere a followers-only post
//! could leak (by id, among her posts, in the feed, in search, through its photo).
//! Approving lets them in; rejecting or removing puts them out; unlocking approves
//! everyone who asked (and locking keeps the followers she had). She is told of each
//! request, and all of it holds on a sibling replica.

use std::time::Duration;

use edgenode_tests::checks::{expect_error, expect_media_hidden, expect_status, holds, id_of};
use edgenode_tests::cluster::{converge, preloaded_siblings};
use edgenode_tests::fixtures::distinct_photo;
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport};
use serde_json::{json, Value};

/// Siblings agree within this, on loopback.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

/// One of Alice's posts and the photo it carries.
struct Shared {
    post_id: String,
    media_id: String,
}

#[test]
fn a_locked_accounts_followers_wait_for_approval_over_every_transport() {
    for transport in [Transport::Http1, Transport::Http2, Transport::Http3] {
        locked_account_scenario(transport);
    }
}

fn locked_account_scenario(transport: Transport) {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, transport);
    let alice = client.claim_admin(&node, "alice");
    let [bob, carol, dave] = ["bob", "carol", "dave"].map(|handle| client.join(&client.create_invite(&alice), handle));

    // Carol followed before Alice locked: locking keeps her.
    client.follow(&carol, "alice");
    let profile = set_locked(&client, &alice, true);
    assert_eq!(profile["locked"], json!(true), "{profile}");
    assert_eq!(follow(&client, &bob, "alice"), json!("requested"), "a follow of a locked account is a request");
    let seen_by_bob = profile_as(&client, &bob, "alice");
    assert_eq!((&seen_by_bob["follow_status"], &seen_by_bob["followed_by_me"]), (&json!("requested"), &json!(true)));

    let public = share(&client, &alice, 11, "Morning at the #pier", "public");
    let for_followers = share(&client, &alice, 12, "Evening at the #pier with family", "followers");

    // Pending: Bob sees the public post only.
    sees(&client, &bob, &public);
    does_not_see(&client, &bob, &for_followers);
    sees(&client, &carol, &for_followers);
    assert_eq!(request_handles(&client, &alice), vec!["bob"], "only Bob waits; Carol was kept");
    assert_eq!(profile_as(&client, &carol, "alice")["follow_status"], json!("following"));
    assert_eq!(profile_as(&client, &alice, "alice")["follower_count"], json!(1), "a request is not a follower yet");

    // Alice is told: Bob's request, Carol's follow.
    let notifications = notifications(&client, &alice);
    let requests = kind_group(&notifications, "follow_request");
    assert_eq!(requests["actors"][0]["handle"], json!("bob"), "{requests}");
    assert_eq!(requests["post"], Value::Null);
    assert_eq!(kind_group(&notifications, "follow")["actors"][0]["handle"], json!("carol"));

    // Approved: Bob sees the followers post everywhere.
    answer(&client, &alice, "bob", true, 200);
    sees(&client, &bob, &for_followers);
    assert!(request_handles(&client, &alice).is_empty(), "nobody waits any more");
    assert_eq!(profile_as(&client, &bob, "alice")["follow_status"], json!("following"));
    assert_eq!(follow(&client, &bob, "alice"), json!("following"), "following again keeps the approval");
    sees(&client, &bob, &for_followers);

    // Removed (the same answer as a rejection): out again, and he is not told so.
    answer(&client, &alice, "bob", false, 200);
    does_not_see(&client, &bob, &for_followers);
    sees(&client, &bob, &public);
    assert_eq!(profile_as(&client, &bob, "alice")["follow_status"], json!("requested"));
    assert!(request_handles(&client, &alice).is_empty(), "an answered request is not listed");
    // Asking anew (unfollow, follow) is a new request.
    client.unfollow(&bob, "alice");
    std::thread::sleep(Duration::from_millis(5)); // a follow made in a later millisecond
    assert_eq!(follow(&client, &bob, "alice"), json!("requested"));
    assert_eq!(request_handles(&client, &alice), vec!["bob"]);

    // Rejecting a request.
    answer(&client, &alice, "bob", false, 200);
    does_not_see(&client, &bob, &for_followers);
    // Nobody to answer: 404.
    answer(&client, &alice, "dave", true, 404);
    answer(&client, &alice, "nobody-here", true, 404);

    // Unlocking approves whoever asked, and locking again keeps them.
    client.unfollow(&bob, "alice");
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(follow(&client, &bob, "alice"), json!("requested"));
    assert_eq!(follow(&client, &dave, "alice"), json!("requested"));
    does_not_see(&client, &dave, &for_followers);
    assert_eq!(request_handles(&client, &alice), vec!["bob", "dave"]);
    assert_eq!(set_locked(&client, &alice, false)["locked"], json!(false));
    sees(&client, &bob, &for_followers);
    sees(&client, &dave, &for_followers);
    set_locked(&client, &alice, true);
    sees(&client, &bob, &for_followers);
    sees(&client, &dave, &for_followers);
    sees(&client, &carol, &for_followers);
    assert!(request_handles(&client, &alice).is_empty());
    assert_eq!(profile_as(&client, &alice, "alice")["follower_count"], json!(3));
}

#[test]
fn a_request_made_on_one_sibling_is_answered_on_the_other() {
    let [harbour, hill] = preloaded_siblings(["requests-harbour", "requests-hill"]);
    let (at_harbour, at_hill) = (Client::new(&harbour, Transport::Http2), Client::new(&hill, Transport::Http3));
    let alice = at_harbour.claim_admin(&harbour, "alice");
    let bob = at_harbour.join(&at_harbour.create_invite(&alice), "bob");
    set_locked(&at_harbour, &alice, true);
    let for_followers = share(&at_harbour, &alice, 21, "Hill path at dusk", "followers");
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);

    // Bob asks through hill; hill knows Alice is locked.
    let bob_on_hill = at_hill.sign_in("bob");
    assert_eq!(follow(&at_hill, &bob_on_hill, "alice"), json!("requested"));
    does_not_see(&at_hill, &bob_on_hill, &for_followers);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);

    // Harbour lists the request and tells Alice; Bob still sees nothing there.
    assert_eq!(request_handles(&at_harbour, &alice), vec!["bob"]);
    assert_eq!(kind_group(&notifications(&at_harbour, &alice), "follow_request")["actors"][0]["handle"], json!("bob"));
    does_not_see(&at_harbour, &bob, &for_followers);

    // Approved on harbour: Bob sees the post on hill.
    answer(&at_harbour, &alice, "bob", true, 200);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);
    sees(&at_hill, &bob_on_hill, &for_followers);
    let alice_on_hill = at_hill.sign_in("alice");
    assert!(request_handles(&at_hill, &alice_on_hill).is_empty(), "hill knows the answer");

    // Removed on hill: out on harbour too.
    answer(&at_hill, &alice_on_hill, "bob", false, 200);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);
    does_not_see(&at_harbour, &bob, &for_followers);
    does_not_see(&at_hill, &bob_on_hill, &for_followers);
}

/// `PATCH /api/v1/me/profile {locked}`; returns the profile.
fn set_locked(client: &Client, user: &Account, locked: bool) -> Value {
    let what = format!("{} sets locked={locked}", user.handle);
    expect_status(
        &what,
        client.send_json("PATCH", "/api/v1/me/profile", Some(&user.token), &json!({"locked": locked})),
        200,
    )
}

/// Follows `handle`; returns the follow's status.
fn follow(client: &Client, follower: &Account, handle: &str) -> Value {
    let what = format!("{} follows {handle}", follower.handle);
    let path = format!("/api/v1/users/{handle}/follow");
    let answer = expect_status(&what, client.put_json(&path, Some(&follower.token), &json!({})), 200);
    assert_eq!(answer["following"], json!(true), "{what}: {answer}");
    answer["status"].clone()
}

fn profile_as(client: &Client, viewer: &Account, handle: &str) -> Value {
    let what = format!("{handle}'s profile as seen by {}", viewer.handle);
    expect_status(&what, client.get_json(&format!("/api/v1/users/{handle}"), Some(&viewer.token)), 200)
}

/// The handles of the follow requests waiting for `user`, following `next_cursor`
/// one request per page (so paging is exercised too).
fn request_handles(client: &Client, user: &Account) -> Vec<String> {
    const PAGES_MAX: usize = 20;
    let mut handles = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..PAGES_MAX {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/me/follow-requests?limit=1&cursor={cursor}"),
            None => "/api/v1/me/follow-requests?limit=1".to_owned(),
        };
        let page = expect_status(
            &format!("{}'s follow requests", user.handle),
            client.get_json(&path, Some(&user.token)),
            200,
        );
        let items = page["items"].as_array().unwrap_or_else(|| panic!("items: {page}"));
        handles.extend(items.iter().map(|item| item["handle"].as_str().unwrap_or_default().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                handles.sort();
                return handles;
            }
        }
    }
    panic!("{}'s follow requests did not end within {PAGES_MAX} pages", user.handle);
}

/// Approves (`POST …/approve`) or rejects (`DELETE`) `handle`'s follow of `user`.
fn answer(client: &Client, user: &Account, handle: &str, approved: bool, expected_status: u16) {
    let (method, path) = if approved {
        ("POST", format!("/api/v1/me/follow-requests/{handle}/approve"))
    } else {
        ("DELETE", format!("/api/v1/me/follow-requests/{handle}"))
    };
    let response = client.request(method, &path, Some(&user.token), &[], Vec::new());
    let what = format!("{} answers {handle} (approved: {approved})", user.handle);
    if expected_status == 404 {
        expect_error(&what, &(response.status, response.json()), 404, "not_found");
    } else {
        let body = expect_status(&what, (response.status, response.json()), expected_status);
        assert_eq!(body["approved"], json!(approved), "{what}: {body}");
    }
}

fn notifications(client: &Client, user: &Account) -> Vec<Value> {
    let what = format!("{}'s notifications", user.handle);
    let page = expect_status(&what, client.get_json("/api/v1/notifications?limit=50", Some(&user.token)), 200);
    page["items"].as_array().unwrap_or_else(|| panic!("{what}: {page}")).clone()
}

fn kind_group<'a>(items: &'a [Value], kind: &str) -> &'a Value {
    items.iter().find(|item| item["kind"] == json!(kind)).unwrap_or_else(|| panic!("no {kind} group in {items:#?}"))
}

/// Uploads a photo and posts it with `visibility`.
fn share(client: &Client, author: &Account, photo_seed: u8, caption: &str, visibility: &str) -> Shared {
    let media_id = id_of(&client.upload_jpeg(author, &distinct_photo(photo_seed)));
    let post_id = id_of(&client.create_post(author, caption, &[&media_id], visibility));
    Shared { post_id, media_id }
}

/// `viewer` opens the post, finds it among Alice's posts and in their feed, and
/// loads its photo.
fn sees(client: &Client, viewer: &Account, shared: &Shared) {
    let who = &viewer.handle;
    let post =
        expect_status(&format!("{who} opens {}", shared.post_id), client.get_post(Some(viewer), &shared.post_id), 200);
    assert_eq!(id_of(&post), shared.post_id);
    assert!(holds(&client.user_posts(Some(viewer), "alice"), &shared.post_id), "{who} finds it among Alice's posts");
    assert!(holds(&client.feed(viewer), &shared.post_id), "{who}'s feed holds it");
    let media = client.fetch_media(Some(viewer), &shared.media_id, "display");
    assert_eq!(media.status, 200, "{who} loads its photo: {}", media.body_text());
}

/// For `viewer` the post does not exist: by id, among Alice's posts, in the feed, in
/// search, and its photo.
fn does_not_see(client: &Client, viewer: &Account, shared: &Shared) {
    let who = &viewer.handle;
    expect_error(
        &format!("{who} opens {}", shared.post_id),
        &client.get_post(Some(viewer), &shared.post_id),
        404,
        "not_found",
    );
    assert!(!holds(&client.user_posts(Some(viewer), "alice"), &shared.post_id), "{who}: not among Alice's posts");
    assert!(!holds(&client.feed(viewer), &shared.post_id), "{who}: not in the feed");
    for query in ["pier", "path"] {
        assert!(!holds(&client.search_posts(Some(viewer), query), &shared.post_id), "{who}: not found by search");
    }
    for variant in ["thumb", "display"] {
        let media = client.fetch_media(Some(viewer), &shared.media_id, variant);
        expect_media_hidden(&format!("{who} loads the {variant} of {}", shared.post_id), &media);
    }
}
