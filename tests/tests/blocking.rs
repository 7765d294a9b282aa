//! Blocking, reporting and admins hiding a post. Alice blocks Bob: every attempt of
//! his to reach her fails (follow, like, comment, her followers posts and their
//! photos), follows between them end both ways, and his posts, comments, likes and
//! mentions leave what she sees; unblocking lets him follow again. Reports reach the
//! node's admins (and nobody else); a post an admin hides is gone for everyone but
//! its author and admins. A block and a hide made on one sibling hold on the other.

use std::time::Duration;

use edgenode_tests::checks::{
    expect_error, expect_media_hidden, expect_seen, expect_seen_by_id_and_list, expect_status, expect_unseen, id_of,
};
use edgenode_tests::cluster::{converge, preloaded_siblings};
use edgenode_tests::steps::node_with_members;
use edgenode_tests::{Account, Client, Transport};
use serde_json::{json, Value};

/// Siblings agree within this, on loopback.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

/// Words of the captions: a hidden post must not be found by any.
const SEARCH_WORDS: [&str; 3] = ["quay", "slipway", "path"];

#[test]
fn a_blocked_user_cannot_reach_the_blocker_over_every_transport() {
    for transport in [Transport::Http1, Transport::Http2, Transport::Http3] {
        blocking_scenario(transport);
    }
}

fn blocking_scenario(transport: Transport) {
    let (_node, client, alice, [bob, carol]) = node_with_members(transport, "alice", ["bob", "carol"]);

    client.follow(&bob, "alice");
    client.follow(&alice, "bob");
    let public = client.share_photo(&alice, 31, "Morning at the #quay", "public");
    let for_followers = client.share_photo(&alice, 32, "Supper at the #quay with family", "followers");
    let bobs_post = client.share_photo(&bob, 33, "Fishing off the #quay", "public");
    let carols_post = client.share_photo(&carol, 34, "Gulls over the #harbour", "public");
    expect_seen(&client, &bob, "alice", &for_followers);
    client.like(&bob, &public.post_id);
    client.comment(&bob, &carols_post.post_id, "Lovely gulls");
    assert!(has_actor(&client.notifications(&alice), "bob"), "before the block Alice hears of Bob's like");

    // Alice blocks Bob.
    assert_eq!(set_block(&client, &alice, "bob", true), json!(true));
    assert_eq!(set_block(&client, &alice, "bob", true), json!(true), "blocking again changes nothing");
    assert_eq!(blocked_handles(&client, &alice), vec!["bob"]);
    assert!(blocked_handles(&client, &bob).is_empty(), "a block has one direction");
    let alice_seen_by_bob = client.profile_as(&bob, "alice");
    assert_eq!(alice_seen_by_bob["followed_by_me"], json!(false), "his follow ended: {alice_seen_by_bob}");
    assert_eq!(client.profile_as(&alice, "bob")["followed_by_me"], json!(false), "hers ended too");

    // Every attempt of Bob's fails.
    let follow = client.put_json("/api/v1/users/alice/follow", Some(&bob.token), &json!({}));
    expect_error("Bob follows Alice", &follow, 403, "blocked");
    let like = client.put_json(&format!("/api/v1/posts/{}/like", public.post_id), Some(&bob.token), &json!({}));
    expect_error("Bob likes Alice's post", &like, 403, "blocked");
    let comment = client.post_json(
        &format!("/api/v1/posts/{}/comments", public.post_id),
        Some(&bob.token),
        &json!({"text": "hello?"}),
    );
    expect_error("Bob comments on Alice's post", &comment, 403, "blocked");
    expect_unseen(&client, &bob, "alice", &for_followers, &SEARCH_WORDS);
    let seen = expect_status("Bob opens Alice's public post", client.get_post(Some(&bob), &public.post_id), 200);
    assert_eq!(id_of(&seen), public.post_id, "public posts stay public");
    // His mention of her tells her nothing; his like and comment leave her view.
    client.create_post(&bob, "Hello @alice, look at the quay", &[], "public");
    let alice_notifications = client.notifications(&alice);
    assert!(!has_actor(&alice_notifications, "bob"), "nothing of Bob's: {alice_notifications:#?}");
    let unread =
        expect_status("Alice's unread count", client.get_json("/api/v1/notifications/unread", Some(&alice.token)), 200);
    assert_eq!(unread["count"], json!(0), "nothing of Bob's counts as unread");
    expect_unseen(&client, &alice, "bob", &bobs_post, &SEARCH_WORDS);
    let comments = client.comments(Some(&alice), &carols_post.post_id);
    assert!(comments.is_empty(), "Bob's comment is gone for Alice: {comments:?}");
    assert_eq!(client.comments(Some(&carol), &carols_post.post_id).len(), 1, "Carol still sees it");
    // Alice cannot follow him either while she blocks him.
    let follow = client.put_json("/api/v1/users/bob/follow", Some(&alice.token), &json!({}));
    expect_error("Alice follows Bob", &follow, 403, "blocked");
    let own = client.post_json("/api/v1/users/alice/block", Some(&alice.token), &json!({}));
    expect_error("Alice blocks herself", &own, 400, "cannot_block_self");

    // Unblocked: no follow comes back, but Bob may follow, like and comment again.
    assert_eq!(set_block(&client, &alice, "bob", false), json!(false));
    assert!(blocked_handles(&client, &alice).is_empty());
    expect_unseen(&client, &bob, "alice", &for_followers, &SEARCH_WORDS);
    client.follow(&bob, "alice");
    expect_seen(&client, &bob, "alice", &for_followers);
    client.like(&bob, &for_followers.post_id);
    client.comment(&bob, &for_followers.post_id, "Looks delicious");
    client.follow(&alice, "bob");
    expect_seen(&client, &alice, "bob", &bobs_post);
}

#[test]
fn reports_reach_admins_and_a_hidden_post_is_gone_for_others_over_every_transport() {
    for transport in [Transport::Http1, Transport::Http2, Transport::Http3] {
        report_and_hide_scenario(transport);
    }
}

fn report_and_hide_scenario(transport: Transport) {
    let (_node, client, alice, [bob, carol]) = node_with_members(transport, "alice", ["bob", "carol"]);
    client.follow(&bob, "carol");
    let post = client.share_photo(&carol, 41, "Nets drying on the #slipway", "public");
    expect_seen(&client, &bob, "carol", &post);

    // Bob reports it; only admins read reports.
    let empty = report(&client, &bob, &post.post_id, "   ");
    expect_error("an empty reason", &empty, 400, "invalid_report");
    let made = expect_status("Bob reports", report(&client, &bob, &post.post_id, "Spam, selling nets"), 201);
    let forbidden = client.get_json("/api/v1/admin/reports", Some(&bob.token));
    expect_error("Bob reads reports", &forbidden, 403, "forbidden");
    let listed = open_reports(&client, &alice);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["id"], made["id"]);
    assert_eq!(listed[0]["reason"], json!("Spam, selling nets"));
    assert_eq!(listed[0]["reporter"]["handle"], json!("bob"));
    assert_eq!(listed[0]["post_author"]["handle"], json!("carol"));
    assert_eq!(listed[0]["post"]["id"], json!(post.post_id));
    assert_eq!(listed[0]["hidden"], json!(false));

    // Alice hides it: gone for Bob and strangers, there for Carol and Alice.
    let refused = client.post_json(&format!("/api/v1/admin/posts/{}/hide", post.post_id), Some(&bob.token), &json!({}));
    expect_error("Bob hides a post", &refused, 403, "forbidden");
    set_hidden(&client, &alice, &post.post_id, true);
    expect_unseen(&client, &bob, "carol", &post, &SEARCH_WORDS);
    expect_error("a stranger opens it", &client.get_post(None, &post.post_id), 404, "not_found");
    expect_media_hidden("a stranger loads its photo", &client.fetch_media(None, &post.media_id, "thumb"));
    expect_seen_by_id_and_list(&client, &carol, "carol", &post);
    expect_seen_by_id_and_list(&client, &alice, "carol", &post);
    assert_eq!(open_reports(&client, &alice)[0]["hidden"], json!(true));

    // Resolved: out of the open list, kept in all.
    let resolved = expect_status(
        "Alice resolves the report",
        client.post_json(
            &format!("/api/v1/admin/reports/{}/resolve", text(&made, "id")),
            Some(&alice.token),
            &json!({}),
        ),
        200,
    );
    assert_eq!(resolved["resolved"]["by"]["handle"], json!("alice"), "{resolved}");
    assert!(open_reports(&client, &alice).is_empty());
    let all = expect_status("all reports", client.get_json("/api/v1/admin/reports?state=all", Some(&alice.token)), 200);
    assert_eq!(all["items"].as_array().map(Vec::len), Some(1), "{all}");

    // Unhidden: back for Bob.
    set_hidden(&client, &alice, &post.post_id, false);
    expect_seen(&client, &bob, "carol", &post);
}

#[test]
fn a_block_and_a_hide_made_on_one_sibling_hold_on_the_other() {
    let [harbour, hill] = preloaded_siblings(["blocking-harbour", "blocking-hill"]);
    let (at_harbour, at_hill) = (Client::new(&harbour, Transport::Http2), Client::new(&hill, Transport::Http3));
    let alice = at_harbour.claim_admin(&harbour, "alice");
    let [bob, carol] = ["bob", "carol"].map(|handle| at_harbour.join(&at_harbour.create_invite(&alice), handle));
    at_harbour.follow(&bob, "alice");
    at_harbour.follow(&bob, "carol");
    let for_followers = at_harbour.share_photo(&alice, 51, "Hill #path at dusk", "followers");
    let public = at_harbour.share_photo(&alice, 52, "Hill #path at dawn", "public");
    let carols_post = at_harbour.share_photo(&carol, 53, "Sheep on the #path", "public");
    set_block(&at_harbour, &alice, "bob", true);
    let made = expect_status("Bob reports", report(&at_harbour, &bob, &carols_post.post_id, "Not my sheep"), 201);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);

    // On hill, the block made on harbour holds.
    let bob_on_hill = at_hill.sign_in("bob");
    expect_unseen(&at_hill, &bob_on_hill, "alice", &for_followers, &SEARCH_WORDS);
    let follow = at_hill.put_json("/api/v1/users/alice/follow", Some(&bob_on_hill.token), &json!({}));
    expect_error("Bob follows Alice through hill", &follow, 403, "blocked");
    let like =
        at_hill.put_json(&format!("/api/v1/posts/{}/like", public.post_id), Some(&bob_on_hill.token), &json!({}));
    expect_error("Bob likes Alice's post through hill", &like, 403, "blocked");

    // Alice reads the report on hill, and hides the post there.
    let alice_on_hill = at_hill.sign_in("alice");
    let listed = open_reports(&at_hill, &alice_on_hill);
    assert_eq!(listed.iter().map(|item| item["id"].clone()).collect::<Vec<_>>(), vec![made["id"].clone()]);
    set_hidden(&at_hill, &alice_on_hill, &carols_post.post_id, true);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);
    expect_unseen(&at_harbour, &bob, "carol", &carols_post, &SEARCH_WORDS);
    expect_seen_by_id_and_list(&at_harbour, &carol, "carol", &carols_post);

    // Unblocked on hill: Bob may follow again through harbour.
    set_block(&at_hill, &alice_on_hill, "bob", false);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);
    at_harbour.follow(&bob, "alice");
    expect_seen(&at_harbour, &bob, "alice", &for_followers);
}

/// `POST` (block) or `DELETE` (unblock) `/api/v1/users/{handle}/block`; returns `blocked`.
fn set_block(client: &Client, user: &Account, handle: &str, blocking: bool) -> Value {
    let what = format!("{} blocks {handle} ({blocking})", user.handle);
    let method = if blocking { "POST" } else { "DELETE" };
    let response = client.request(method, &format!("/api/v1/users/{handle}/block"), Some(&user.token), &[], Vec::new());
    let answer = expect_status(&what, (response.status, response.json()), 200);
    assert_eq!(answer["handle"], json!(handle), "{what}: {answer}");
    answer["blocked"].clone()
}

/// The handles `user` blocks, one per page (so paging is exercised too).
fn blocked_handles(client: &Client, user: &Account) -> Vec<String> {
    client.handles_one_per_page(user, "/api/v1/me/blocks", "blocks")
}

fn report(client: &Client, reporter: &Account, post_id: &str, reason: &str) -> (u16, Value) {
    client.post_json(&format!("/api/v1/posts/{post_id}/report"), Some(&reporter.token), &json!({"reason": reason}))
}

fn open_reports(client: &Client, admin: &Account) -> Vec<Value> {
    let what = format!("open reports as {}", admin.handle);
    let page = expect_status(&what, client.get_json("/api/v1/admin/reports", Some(&admin.token)), 200);
    page["items"].as_array().unwrap_or_else(|| panic!("{what}: {page}")).clone()
}

fn set_hidden(client: &Client, admin: &Account, post_id: &str, hidden: bool) {
    let action = if hidden { "hide" } else { "unhide" };
    let what = format!("{} {action}s {post_id}", admin.handle);
    let path = format!("/api/v1/admin/posts/{post_id}/{action}");
    let answer = expect_status(&what, client.post_json(&path, Some(&admin.token), &json!({})), 200);
    assert_eq!(answer["hidden"], json!(hidden), "{what}: {answer}");
}

fn has_actor(groups: &[Value], handle: &str) -> bool {
    groups.iter().any(|group| {
        group["actors"].as_array().is_some_and(|actors| actors.iter().any(|actor| actor["handle"] == json!(handle)))
    })
}

fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object[field].as_str().unwrap_or_else(|| panic!("{field} in {object}"))
}
