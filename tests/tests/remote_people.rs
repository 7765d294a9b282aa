//! People of other nodes, on two real neighbour nodes on loopback: Ada (node "near")
//! blocks Bob (node "far"), whose follow of her came by fan-out: Bob is sent nothing
//! of hers any more (Cat, beside him on far, still is), his posts leave her feed and
//! she cannot follow him; unblocking gives his follow back what it gave. Ada locks
//! her account: follows from far are requests she lists, approves and rejects with
//! the routes local requests use, and until she approves, far shows that follower
//! her public posts only. A post an admin hides after it was fanned out leaves far's
//! feeds (and comes back when unhidden). Feed items of far's users carry their
//! avatar, whose URL loads through near.

use std::time::{Duration, Instant};

use edgenode_tests::checks::{expect_error, expect_status, id_of};
use edgenode_tests::cluster::known_to_each_other;
use edgenode_tests::fixtures::{distinct_photo, sha256_hex};
use edgenode_tests::{Account, Client, Node, Transport};
use serde_json::{json, Value};

/// Every wait in this file is bounded by this.
const WITHIN: Duration = Duration::from_secs(30);
/// Fast probes and little jitter, so a loopback test runs in seconds.
const FANOUT_TOML: &str = "[fanout]\nprobe_interval_ms = 300\npull_jitter_ms = 500\ncall_timeout_ms = 1000\n";
/// How long a post that must not arrive is given to arrive anyway: several push and
/// pull rounds at the settings above.
const SETTLE: Duration = Duration::from_millis(2_500);

fn neighbours() -> [Node; 2] {
    known_to_each_other([("people-near", FANOUT_TOML), ("people-far", FANOUT_TOML)], "peers.neighbours", "")
}

fn captions(items: &[Value]) -> Vec<String> {
    items.iter().map(|item| item["caption"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Polls `viewer`'s feed until `done` holds on its captions; returns them.
fn feed_until(client: &Client, viewer: &Account, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let started = Instant::now();
    loop {
        let feed = captions(&client.feed(viewer));
        if done(&feed) {
            return feed;
        }
        assert!(started.elapsed() < WITHIN, "{what} within {WITHIN:?}; {}'s feed is {feed:?}", viewer.handle);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `viewer`'s feed after `SETTLE`, checked to hold none of `absent`.
fn feed_lacks(client: &Client, viewer: &Account, absent: &[&str], what: &str) -> Vec<String> {
    std::thread::sleep(SETTLE);
    let feed = captions(&client.feed(viewer));
    for caption in absent {
        assert!(
            !feed.iter().any(|seen| seen == caption),
            "{what}: {caption:?} is in {}'s feed {feed:?}",
            viewer.handle
        );
    }
    feed
}

fn has(feed: &[String], caption: &str) -> bool {
    feed.iter().any(|seen| seen == caption)
}

fn block(client: &Client, user: &Account, handle: &str, blocking: bool) -> Value {
    let path = format!("/api/v1/users/{handle}/block");
    let method = if blocking { "POST" } else { "DELETE" };
    let response = client.request(method, &path, Some(&user.token), &[], Vec::new());
    let what = format!("{} blocks {handle} ({blocking})", user.handle);
    let answer = expect_status(&what, (response.status, response.json()), 200);
    assert_eq!(answer, json!({"handle": handle, "blocked": blocking}), "{what}");
    answer
}

/// The handles of `user`'s follow requests, one request per page (paging checked too).
fn request_handles(client: &Client, user: &Account) -> Vec<String> {
    let mut handles = client.handles_one_per_page(user, "/api/v1/me/follow-requests", "follow requests");
    handles.sort();
    handles
}

fn requests_until(client: &Client, user: &Account, expected: &[String]) {
    let started = Instant::now();
    loop {
        let handles = request_handles(client, user);
        if handles == expected {
            return;
        }
        assert!(
            started.elapsed() < WITHIN,
            "{}'s requests become {expected:?} within {WITHIN:?}: {handles:?}",
            user.handle
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Approves (`POST …/approve`) or rejects (`DELETE`) `handle`'s follow of `user`.
fn answer(client: &Client, user: &Account, handle: &str, approved: bool) -> (u16, Value) {
    let (method, path) = if approved {
        ("POST", format!("/api/v1/me/follow-requests/{handle}/approve"))
    } else {
        ("DELETE", format!("/api/v1/me/follow-requests/{handle}"))
    };
    let response = client.request(method, &path, Some(&user.token), &[], Vec::new());
    (response.status, response.json())
}

#[test]
fn a_blocked_user_of_another_node_is_sent_nothing_until_unblocked() {
    let [near, far] = neighbours();
    let (at_near, at_far) = (Client::new(&near, Transport::Http2), Client::new(&far, Transport::Http3));
    let ada = at_near.claim_admin(&near, "ada");
    let bob = at_far.claim_admin(&far, "bob");
    let cat = at_far.join(&at_far.create_invite(&bob), "cat");
    let (ada_remote, bob_remote) = (format!("ada@{}", near.node_id()), format!("bob@{}", far.node_id()));

    at_far.follow(&bob, &ada_remote);
    at_far.follow(&cat, &ada_remote);
    at_near.follow(&ada, &bob_remote);
    at_near.create_post(&ada, "ada public one", &[], "public");
    at_near.create_post(&ada, "ada for followers one", &[], "followers");
    at_far.create_post(&bob, "bob before the block", &[], "public");
    let both = |feed: &[String]| has(feed, "ada public one") && has(feed, "ada for followers one");
    feed_until(&at_far, &bob, "bob sees ada's posts", both);
    feed_until(&at_far, &cat, "cat sees ada's posts", both);
    feed_until(&at_near, &ada, "ada sees bob's post", |feed| has(feed, "bob before the block"));

    block(&at_near, &ada, &bob_remote, true);
    let listed = expect_status("ada's blocks", at_near.get_json("/api/v1/me/blocks", Some(&ada.token)), 200);
    assert_eq!(listed["items"][0]["handle"], json!(bob_remote), "{listed}");
    assert_eq!(listed["items"][0]["user_id"], json!(bob.user_id), "the id bob's node gave him: {listed}");
    let status = at_near.get_json(&format!("/api/v1/users/{bob_remote}/block"), Some(&ada.token));
    assert_eq!(expect_status("ada's block of bob", status, 200)["blocked"], json!(true));

    // Bob's node is told: Ada's posts leave his feed, new ones never reach it; Cat,
    // on the same node, still gets everything.
    feed_until(&at_far, &bob, "ada's posts leave bob's feed", |feed| !feed.iter().any(|c| c.starts_with("ada")));
    at_near.create_post(&ada, "ada for followers two", &[], "followers");
    at_near.create_post(&ada, "ada public two", &[], "public");
    feed_until(&at_far, &cat, "cat gets ada's new posts", |feed| {
        has(feed, "ada for followers two") && has(feed, "ada public two")
    });
    let feed = feed_lacks(&at_far, &bob, &["ada for followers two", "ada public two"], "blocked");
    assert!(!feed.iter().any(|c| c.starts_with("ada")), "nothing of ada's for bob: {feed:?}");
    let seen = at_far.user_posts(Some(&bob), &ada_remote);
    assert!(!captions(&seen).iter().any(|c| c.contains("followers")), "bob sees none of her followers posts: {seen:?}");

    // Bob's posts leave Ada's feed and his page; she cannot follow him while she blocks him.
    at_far.create_post(&bob, "bob after the block", &[], "public");
    feed_lacks(&at_near, &ada, &["bob before the block", "bob after the block"], "ada blocks bob");
    assert!(at_near.user_posts(Some(&ada), &bob_remote).is_empty(), "bob's page as ada sees it");
    let refollow = at_near.put_json(&format!("/api/v1/users/{bob_remote}/follow"), Some(&ada.token), &json!({}));
    expect_error("ada follows bob while blocking him", &refollow, 403, "blocked");

    // Unblocked: Bob's follow gives what it gave; Ada's follow of him stays ended.
    block(&at_near, &ada, &bob_remote, false);
    feed_until(&at_far, &bob, "bob gets ada's posts again", |feed| {
        ["ada public one", "ada for followers one", "ada for followers two", "ada public two"]
            .iter()
            .all(|caption| has(feed, caption))
    });
    feed_lacks(&at_near, &ada, &["bob before the block", "bob after the block"], "the block ended ada's follow");
    let listed = expect_status("ada's blocks", at_near.get_json("/api/v1/me/blocks", Some(&ada.token)), 200);
    assert_eq!(listed["items"], json!([]), "{listed}");
}

#[test]
fn a_locked_account_approves_followers_of_another_node() {
    let [near, far] = neighbours();
    let (at_near, at_far) = (Client::new(&near, Transport::Http3), Client::new(&far, Transport::Http2));
    let ada = at_near.claim_admin(&near, "ada");
    let bob = at_far.claim_admin(&far, "bob");
    let cat = at_far.join(&at_far.create_invite(&bob), "cat");
    let dan = at_far.join(&at_far.create_invite(&bob), "dan");
    let far_id = far.node_id();
    let (ada_remote, bob_remote, cat_remote) =
        (format!("ada@{}", near.node_id()), format!("bob@{far_id}"), format!("cat@{far_id}"));
    // Dan followed before Ada locked: locking keeps him, as it keeps local followers.
    at_near.create_post(&ada, "ada before the lock", &[], "followers");
    at_far.follow(&dan, &ada_remote);
    feed_until(&at_far, &dan, "dan follows ada", |feed| has(feed, "ada before the lock"));
    let locked = at_near.send_json("PATCH", "/api/v1/me/profile", Some(&ada.token), &json!({"locked": true}));
    expect_status("ada locks her account", locked, 200);
    at_near.create_post(&ada, "ada in the open", &[], "public");
    at_near.create_post(&ada, "ada inner circle", &[], "followers");
    feed_until(&at_far, &dan, "dan, kept, sees her new followers post", |feed| has(feed, "ada inner circle"));

    at_far.follow(&bob, &ada_remote);
    at_far.follow(&cat, &ada_remote);
    requests_until(&at_near, &ada, &[bob_remote.clone(), cat_remote.clone()]);
    // Locking again changes nothing: they still wait.
    let again = at_near.send_json("PATCH", "/api/v1/me/profile", Some(&ada.token), &json!({"locked": true}));
    expect_status("ada locks her locked account", again, 200);
    assert_eq!(request_handles(&at_near, &ada), vec![bob_remote.clone(), cat_remote.clone()]);
    // Waiting: public posts only.
    feed_until(&at_far, &bob, "bob sees ada's public post", |feed| has(feed, "ada in the open"));
    feed_lacks(&at_far, &bob, &["ada inner circle", "ada before the lock"], "bob waits for ada's answer");

    let (status, approved) = answer(&at_near, &ada, &bob_remote, true);
    assert_eq!((status, &approved), (200, &json!({"handle": bob_remote, "approved": true})), "{approved}");
    feed_until(&at_far, &bob, "approved, bob sees ada's followers post", |feed| has(feed, "ada inner circle"));
    // Cat, on the node that now holds it, still waits and does not see it.
    feed_lacks(&at_far, &cat, &["ada inner circle"], "cat waits");
    assert!(has(&captions(&at_far.feed(&cat)), "ada in the open"), "cat sees the public post");
    assert_eq!(request_handles(&at_near, &ada), vec![cat_remote.clone()], "only cat waits");

    let (status, rejected) = answer(&at_near, &ada, &cat_remote, false);
    assert_eq!((status, &rejected["approved"]), (200, &json!(false)), "{rejected}");
    assert!(request_handles(&at_near, &ada).is_empty(), "nobody waits");
    at_near.create_post(&ada, "ada inner circle two", &[], "followers");
    feed_until(&at_far, &bob, "bob gets her new followers post", |feed| has(feed, "ada inner circle two"));
    feed_lacks(&at_far, &cat, &["ada inner circle", "ada inner circle two"], "cat was rejected");

    // Removing an approved follower (the rejection route) takes her followers posts back.
    let (status, _) = answer(&at_near, &ada, &bob_remote, false);
    assert_eq!(status, 200);
    feed_until(&at_far, &bob, "removed, bob loses her followers posts", |feed| {
        has(feed, "ada in the open") && !feed.iter().any(|caption| caption.starts_with("ada inner circle"))
    });
    let stranger = format!("nobody@{far_id}");
    let unknown = answer(&at_near, &ada, &stranger, true);
    expect_error("approving someone who does not follow", &unknown, 404, "not_found");
}

#[test]
fn a_post_hidden_after_it_was_fanned_out_leaves_the_other_nodes_feed() {
    let [near, far] = neighbours();
    let (at_near, at_far) = (Client::new(&near, Transport::Http1), Client::new(&far, Transport::Http2));
    let ada = at_near.claim_admin(&near, "ada");
    let bob = at_far.claim_admin(&far, "bob");
    at_far.follow(&bob, &format!("ada@{}", near.node_id()));
    let shore = id_of(&at_near.create_post(&ada, "ada at the shore", &[], "public"));
    at_near.create_post(&ada, "ada at the harbour", &[], "public");
    let both = |feed: &[String]| has(feed, "ada at the shore") && has(feed, "ada at the harbour");
    feed_until(&at_far, &bob, "bob sees ada's posts", both);

    let hide = |action: &str| {
        let path = format!("/api/v1/admin/posts/{shore}/{action}");
        expect_status(&format!("ada {action}s her post"), at_near.post_json(&path, Some(&ada.token), &json!({})), 200)
    };
    hide("hide");
    let feed = feed_until(&at_far, &bob, "the hidden post leaves far", |feed| !has(feed, "ada at the shore"));
    assert!(has(&feed, "ada at the harbour"), "the other post stays: {feed:?}");
    hide("unhide");
    feed_until(&at_far, &bob, "unhidden, it comes back", both);
}

#[test]
fn feed_items_of_another_nodes_users_carry_an_avatar_that_loads_here() {
    let [near, far] = neighbours();
    let (at_near, at_far) = (Client::new(&near, Transport::Http2), Client::new(&far, Transport::Http1));
    let ada = at_near.claim_admin(&near, "ada");
    let bob = at_far.claim_admin(&far, "bob");
    let cat = at_far.join(&at_far.create_invite(&bob), "cat");
    let photo = id_of(&at_far.upload_jpeg(&bob, &distinct_photo(21)));
    let set = at_far.send_json("PATCH", "/api/v1/me/profile", Some(&bob.token), &json!({ "avatar": photo }));
    expect_status("bob sets an avatar", set, 200);
    at_near.follow(&ada, &format!("bob@{}", far.node_id()));
    at_near.follow(&ada, &format!("cat@{}", far.node_id()));
    at_far.create_post(&bob, "bob with a face", &[], "public");
    at_far.create_post(&cat, "cat without one", &[], "public");
    feed_until(&at_near, &ada, "ada sees both", |feed| has(feed, "bob with a face") && has(feed, "cat without one"));

    let feed = at_near.feed(&ada);
    let item = |caption: &str| feed.iter().find(|item| item["caption"] == json!(caption)).expect("in the feed").clone();
    assert_eq!(item("cat without one")["author"]["avatar"], Value::Null, "cat has no avatar");
    let avatar = item("bob with a face")["author"]["avatar"].clone();
    assert_eq!(avatar["id"], json!(photo), "{avatar}");
    let url = avatar["url"].as_str().unwrap_or_else(|| panic!("a url: {avatar}")).to_owned();
    assert_eq!(url, format!("/api/v1/media/{photo}/avatar?node={}", far.node_id()), "the remote profiles' shape");
    let through_near = at_near.request("GET", &url, Some(&ada.token), &[], Vec::new());
    assert_eq!(through_near.status, 200, "{}", through_near.body_text());
    let on_far = at_far.request("GET", &format!("/api/v1/media/{photo}/avatar"), None, &[], Vec::new());
    assert_eq!(on_far.status, 200, "{}", on_far.body_text());
    assert_eq!(sha256_hex(&through_near.body), sha256_hex(&on_far.body), "near serves bob's avatar bytes");
}
