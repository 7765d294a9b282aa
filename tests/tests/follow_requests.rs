//! Locked accounts: Alice locks hers, so a follow is a request she answers. Until she
//! approves, a follower sees only her public posts, everywhere a followers-only post
//! could leak (by id, among her posts, in the feed, in search, through its photo).
//! Approving lets them in; rejecting or removing puts them out; unlocking approves
//! everyone who asked (and locking keeps the followers she had). She is told of each
//! request, and all of it holds on a sibling replica.

use std::time::Duration;

use edgenode_tests::checks::{expect_error, expect_seen, expect_status, expect_unseen};
use edgenode_tests::cluster::{converge, preloaded_siblings};
use edgenode_tests::steps::node_with_members;
use edgenode_tests::{Account, Client, Transport};
use serde_json::{json, Value};

/// Siblings agree within this, on loopback.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

/// Words of Alice's captions: a post kept from a viewer must not be found by any.
const SEARCH_WORDS: [&str; 2] = ["pier", "path"];

#[test]
fn a_locked_accounts_followers_wait_for_approval_over_every_transport() {
    for transport in [Transport::Http1, Transport::Http2, Transport::Http3] {
        locked_account_scenario(transport);
    }
}

fn locked_account_scenario(transport: Transport) {
    let (_node, client, alice, [bob, carol, dave]) = node_with_members(transport, "alice", ["bob", "carol", "dave"]);

    // Carol followed before Alice locked: locking keeps her.
    client.follow(&carol, "alice");
    let profile = set_locked(&client, &alice, true);
    assert_eq!(profile["locked"], json!(true), "{profile}");
    assert_eq!(follow(&client, &bob, "alice"), json!("requested"), "a follow of a locked account is a request");
    let seen_by_bob = client.profile_as(&bob, "alice");
    assert_eq!((&seen_by_bob["follow_status"], &seen_by_bob["followed_by_me"]), (&json!("requested"), &json!(true)));

    let public = client.share_photo(&alice, 11, "Morning at the #pier", "public");
    let for_followers = client.share_photo(&alice, 12, "Evening at the #pier with family", "followers");

    // Pending: Bob sees the public post only.
    expect_seen(&client, &bob, "alice", &public);
    expect_unseen(&client, &bob, "alice", &for_followers, &SEARCH_WORDS);
    expect_seen(&client, &carol, "alice", &for_followers);
    assert_eq!(request_handles(&client, &alice), vec!["bob"], "only Bob waits; Carol was kept");
    assert_eq!(client.profile_as(&carol, "alice")["follow_status"], json!("following"));
    assert_eq!(client.profile_as(&alice, "alice")["follower_count"], json!(1), "a request is not a follower yet");

    // Alice is told: Bob's request, Carol's follow.
    let notifications = client.notifications(&alice);
    let requests = kind_group(&notifications, "follow_request");
    assert_eq!(requests["actors"][0]["handle"], json!("bob"), "{requests}");
    assert_eq!(requests["post"], Value::Null);
    assert_eq!(kind_group(&notifications, "follow")["actors"][0]["handle"], json!("carol"));

    // Approved: Bob sees the followers post everywhere.
    answer(&client, &alice, "bob", true, 200);
    expect_seen(&client, &bob, "alice", &for_followers);
    assert!(request_handles(&client, &alice).is_empty(), "nobody waits any more");
    assert_eq!(client.profile_as(&bob, "alice")["follow_status"], json!("following"));
    assert_eq!(follow(&client, &bob, "alice"), json!("following"), "following again keeps the approval");
    expect_seen(&client, &bob, "alice", &for_followers);

    // Removed (the same answer as a rejection): out again, and he is not told so.
    answer(&client, &alice, "bob", false, 200);
    expect_unseen(&client, &bob, "alice", &for_followers, &SEARCH_WORDS);
    expect_seen(&client, &bob, "alice", &public);
    assert_eq!(client.profile_as(&bob, "alice")["follow_status"], json!("requested"));
    assert!(request_handles(&client, &alice).is_empty(), "an answered request is not listed");
    // Asking anew (unfollow, follow) is a new request.
    client.unfollow(&bob, "alice");
    std::thread::sleep(Duration::from_millis(5)); // a follow made in a later millisecond
    assert_eq!(follow(&client, &bob, "alice"), json!("requested"));
    assert_eq!(request_handles(&client, &alice), vec!["bob"]);

    // Rejecting a request.
    answer(&client, &alice, "bob", false, 200);
    expect_unseen(&client, &bob, "alice", &for_followers, &SEARCH_WORDS);
    // Nobody to answer: 404.
    answer(&client, &alice, "dave", true, 404);
    answer(&client, &alice, "nobody-here", true, 404);

    // Unlocking approves whoever asked, and locking again keeps them.
    client.unfollow(&bob, "alice");
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(follow(&client, &bob, "alice"), json!("requested"));
    assert_eq!(follow(&client, &dave, "alice"), json!("requested"));
    expect_unseen(&client, &dave, "alice", &for_followers, &SEARCH_WORDS);
    assert_eq!(request_handles(&client, &alice), vec!["bob", "dave"]);
    assert_eq!(set_locked(&client, &alice, false)["locked"], json!(false));
    expect_seen(&client, &bob, "alice", &for_followers);
    expect_seen(&client, &dave, "alice", &for_followers);
    set_locked(&client, &alice, true);
    expect_seen(&client, &bob, "alice", &for_followers);
    expect_seen(&client, &dave, "alice", &for_followers);
    expect_seen(&client, &carol, "alice", &for_followers);
    assert!(request_handles(&client, &alice).is_empty());
    assert_eq!(client.profile_as(&alice, "alice")["follower_count"], json!(3));
}

#[test]
fn a_request_made_on_one_sibling_is_answered_on_the_other() {
    let [harbour, hill] = preloaded_siblings(["requests-harbour", "requests-hill"]);
    let (at_harbour, at_hill) = (Client::new(&harbour, Transport::Http2), Client::new(&hill, Transport::Http3));
    let alice = at_harbour.claim_admin(&harbour, "alice");
    let bob = at_harbour.join(&at_harbour.create_invite(&alice), "bob");
    set_locked(&at_harbour, &alice, true);
    let for_followers = at_harbour.share_photo(&alice, 21, "Hill path at dusk", "followers");
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);

    // Bob asks through hill; hill knows Alice is locked.
    let bob_on_hill = at_hill.sign_in("bob");
    assert_eq!(follow(&at_hill, &bob_on_hill, "alice"), json!("requested"));
    expect_unseen(&at_hill, &bob_on_hill, "alice", &for_followers, &SEARCH_WORDS);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);

    // Harbour lists the request and tells Alice; Bob still sees nothing there.
    assert_eq!(request_handles(&at_harbour, &alice), vec!["bob"]);
    assert_eq!(kind_group(&at_harbour.notifications(&alice), "follow_request")["actors"][0]["handle"], json!("bob"));
    expect_unseen(&at_harbour, &bob, "alice", &for_followers, &SEARCH_WORDS);

    // Approved on harbour: Bob sees the post on hill.
    answer(&at_harbour, &alice, "bob", true, 200);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);
    expect_seen(&at_hill, &bob_on_hill, "alice", &for_followers);
    let alice_on_hill = at_hill.sign_in("alice");
    assert!(request_handles(&at_hill, &alice_on_hill).is_empty(), "hill knows the answer");

    // Removed on hill: out on harbour too.
    answer(&at_hill, &alice_on_hill, "bob", false, 200);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);
    expect_unseen(&at_harbour, &bob, "alice", &for_followers, &SEARCH_WORDS);
    expect_unseen(&at_hill, &bob_on_hill, "alice", &for_followers, &SEARCH_WORDS);
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

/// The handles of the follow requests waiting for `user`, following `next_cursor`
/// one request per page (so paging is exercised too).
fn request_handles(client: &Client, user: &Account) -> Vec<String> {
    let mut handles = client.handles_one_per_page(user, "/api/v1/me/follow-requests", "follow requests");
    handles.sort();
    handles
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

fn kind_group<'a>(items: &'a [Value], kind: &str) -> &'a Value {
    items.iter().find(|item| item["kind"] == json!(kind)).unwrap_or_else(|| panic!("no {kind} group in {items:#?}"))
}
