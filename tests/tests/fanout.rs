//! Fan-out across the neighbourhood on loopback: three real nodes configured as
//! neighbours (not siblings). A user on node 1 follows users of nodes 2 and 3 as
//! `handle@<node id>` and sees their posts in order, followers-only ones included and
//! private ones never, with photos served by node 1; deletes and edits to private
//! leave the feed; posts made while node 1 was down arrive after it restarts (pull).
//! Prints the fan-out latency (post on node 2 → in the feed on node 1). And a user of
//! a sibling followed as `handle@<node id>`, whose posts arrive both replicated and
//! fanned out, is in the feed once per post, pages included.

use std::time::{Duration, Instant};

use edgenode_tests::checks::ids;
use edgenode_tests::client::{Client, Transport};
use edgenode_tests::cluster::{converge, known_to_each_other};
use edgenode_tests::fixtures::distinct_photo;
use edgenode_tests::node::Node;
use edgenode_tests::steps::{Account, ANONYMOUS};
use serde_json::{json, Value};

/// Every wait in this file is bounded by this.
const WITHIN: Duration = Duration::from_secs(30);
/// Fast probes and little jitter, so a loopback test runs in seconds.
const FANOUT_TOML: &str = "[fanout]\nprobe_interval_ms = 300\npull_jitter_ms = 500\ncall_timeout_ms = 1000\n";
/// Longer than `call_timeout_ms`: pushes to a stopped node have failed by then.
const PUSHES_FAILED_AFTER: Duration = Duration::from_millis(2_500);

/// Nodes that list each other under `[[peers.neighbours]]`.
fn neighbours<const N: usize>(names: [&str; N]) -> [Node; N] {
    known_to_each_other(names.map(|name| (name, FANOUT_TOML)), "peers.neighbours", "")
}

/// Nodes that list each other under `[[peers.siblings]]` (they replicate each
/// other's users and may call each other's fan-out services).
fn siblings<const N: usize>(names: [&str; N]) -> [Node; N] {
    known_to_each_other(names.map(|name| (name, FANOUT_TOML)), "peers.siblings", "")
}

fn captions(items: &[Value]) -> Vec<String> {
    items.iter().map(|item| item["caption"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Polls `viewer`'s feed until `done` holds; returns the feed and how long it took.
fn feed_until(
    client: &Client,
    viewer: &Account,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, Duration) {
    let started = Instant::now();
    loop {
        let feed = client.feed(viewer);
        if done(&feed) {
            return (feed, started.elapsed());
        }
        assert!(started.elapsed() < WITHIN, "{what} within {WITHIN:?}; the feed is {:?}", captions(&feed));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A counter from the node's `/metrics`, read as an admin (it is for operators only).
fn metric(client: &Client, admin: &Account, name: &str) -> u64 {
    let response = client.request("GET", "/metrics", Some(&admin.token), &[], Vec::new());
    let text = String::from_utf8(response.body).expect("utf-8");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

fn post_id(post: &Value) -> String {
    post["id"].as_str().expect("a post id").to_owned()
}

#[test]
fn a_user_follows_users_of_other_nodes_and_sees_their_posts_in_order() {
    let [mut node1, node2, node3] = neighbours(["fanout-1", "fanout-2", "fanout-3"]);
    let mut at1 = Client::new(&node1, Transport::Http2);
    let (at2, at3) = (Client::new(&node2, Transport::Http2), Client::new(&node3, Transport::Http2));
    let alice = at1.claim_admin(&node1, "alice");
    let stranger = at1.join(&at1.create_invite(&alice), "stranger");
    let bob = at2.claim_admin(&node2, "bob");
    let carol = at3.claim_admin(&node3, "carol");
    let (bob_remote, carol_remote) = (format!("bob@{}", node2.node_id()), format!("carol@{}", node3.node_id()));

    let (status, profile) = at1.get_json(&format!("/api/v1/users/{bob_remote}"), Some(&alice.token));
    assert_eq!(status, 200, "node 1 resolves bob on node 2: {profile}");
    assert_eq!(profile["user_id"], json!(bob.user_id), "{profile}");
    assert_eq!(profile["handle"], json!(bob_remote), "{profile}");
    at2.create_post(&bob, "bob before alice followed", &[], "public");
    at1.follow(&alice, &bob_remote);
    at1.follow(&alice, &carol_remote);

    let photo = at2.upload_jpeg(&bob, &distinct_photo(7));
    let photo_id = photo["id"].as_str().expect("media id").to_owned();
    at2.create_post(&bob, "bob public with a photo", &[&photo_id], "public");
    at2.create_post(&bob, "bob for followers", &[], "followers");
    at2.create_post(&bob, "bob private", &[], "private");
    at3.create_post(&carol, "carol public", &[], "public");

    let expected = ["carol public", "bob for followers", "bob public with a photo", "bob before alice followed"];
    let (feed, took) = feed_until(&at1, &alice, "alice sees bob's and carol's posts", |feed| feed.len() >= 4);
    println!("first fan-out to node 1 within {} ms of the last post", took.as_millis());
    assert_eq!(captions(&feed), expected, "newest first, never the private post");
    let created: Vec<u64> = feed.iter().map(|item| item["created_at"].as_u64().expect("created_at")).collect();
    assert!(created.windows(2).all(|pair| pair[0] >= pair[1]), "newest first: {created:?}");
    assert_eq!(feed[0]["author"]["handle"], json!(carol_remote), "{}", feed[0]);
    assert_eq!(feed[2]["node"]["id"], json!(node2.node_id()), "{}", feed[2]);
    assert_eq!(feed[2]["media"][0]["id"], json!(photo_id), "{}", feed[2]);

    // The thumbnail from node 1, fetched from node 2 and cached: the same bytes.
    let from_node1 = at1.fetch_media(Some(&alice), &photo_id, "thumb");
    assert_eq!(from_node1.status, 200, "node 1 serves bob's thumb: {}", from_node1.body_text());
    let from_node2 = at2.fetch_media(ANONYMOUS, &photo_id, "thumb");
    assert_eq!(from_node2.status, 200);
    assert_eq!(from_node1.body, from_node2.body, "node 1 serves exactly node 2's thumb");
    assert_eq!(from_node1.header("etag"), from_node2.header("etag"));
    let again = at1.fetch_media(Some(&alice), &photo_id, "thumb");
    assert_eq!((again.status, again.body == from_node2.body), (200, true), "from node 1's cache");
    // Eight viewers at once ask node 1 for a display size it has not fetched yet:
    // one fetch from node 2, the others wait for it.
    let fetched_before = metric(&at1, &alice, "edgenode_fanout_media_fetched_total");
    let displays: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let fetches: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let client = Client::new(&node1, Transport::Http2);
                    let display = client.fetch_media(Some(&alice), &photo_id, "display");
                    assert_eq!(display.status, 200, "{}", display.body_text());
                    display.body
                })
            })
            .collect();
        fetches.into_iter().map(|fetch| fetch.join().expect("a display fetch")).collect()
    });
    let display_on_node2 = at2.fetch_media(ANONYMOUS, &photo_id, "display").body;
    assert!(displays.iter().all(|display| *display == display_on_node2), "and the display size");
    let fetched = metric(&at1, &alice, "edgenode_fanout_media_fetched_total") - fetched_before;
    assert_eq!(fetched, 1, "concurrent misses for one photo are fetched once");
    assert_eq!(at1.fetch_media(Some(&alice), &photo_id, "original").status, 404, "never the original");
    assert_eq!(at1.fetch_media(Some(&stranger), &photo_id, "thumb").status, 200, "a public post's photo");
    let (feed, _) = feed_until(&at1, &alice, "the remote photo is described in the feed", |feed| {
        feed.iter().any(|item| item["media"][0]["variants"]["thumb"]["width"].is_u64())
    });
    assert_eq!(feed[2]["media"][0]["blurhash"], photo["blurhash"], "{}", feed[2]);

    // A stranger on node 1 sees none of bob's followers-only posts, anywhere.
    let strangers_feed = at1.feed(&stranger);
    assert!(strangers_feed.is_empty(), "the stranger follows nobody: {:?}", captions(&strangers_feed));
    let seen = captions(&at1.user_posts(Some(&stranger), &bob_remote));
    assert!(!seen.iter().any(|caption| caption.contains("followers") || caption.contains("private")), "{seen:?}");
    let seen_by_alice = captions(&at1.user_posts(Some(&alice), &bob_remote));
    assert!(seen_by_alice.contains(&"bob for followers".to_owned()), "{seen_by_alice:?}");

    // Deleted and made private: gone from alice's feed.
    let bobs = at2.user_posts(Some(&bob), "bob");
    let id_of = |caption: &str| post_id(bobs.iter().find(|post| post["caption"] == json!(caption)).expect(caption));
    at2.delete_post(&bob, &id_of("bob public with a photo"));
    let (status, edited) = at2.send_json(
        "PATCH",
        &format!("/api/v1/posts/{}", id_of("bob for followers")),
        Some(&bob.token),
        &json!({"visibility": "private"}),
    );
    assert_eq!(status, 200, "bob makes a post private: {edited}");
    let (_, took) = feed_until(&at1, &alice, "the deleted and the private post leave alice's feed", |feed| {
        captions(feed) == ["carol public", "bob before alice followed"]
    });
    println!("delete and edit to private left node 1's feed within {} ms", took.as_millis());

    // Fan-out latency: a post on node 2 until it is in alice's feed on node 1.
    let mut latencies = Vec::new();
    for index in 0..7 {
        let caption = format!("bob latency {index}");
        let posted = Instant::now();
        at2.create_post(&bob, &caption, &[], "public");
        let (_, _) = feed_until(&at1, &alice, "a new post reaches alice", |feed| {
            feed.first().is_some_and(|item| item["caption"] == json!(caption))
        });
        latencies.push(posted.elapsed());
    }
    latencies.sort();
    println!(
        "fan-out latency node 2 → node 1 over {} posts: median {} ms, max {} ms",
        latencies.len(),
        latencies[latencies.len() / 2].as_millis(),
        latencies.last().expect("latencies").as_millis()
    );

    // Node 1 is down while bob posts twice; it catches up by pull when it returns.
    node1.terminate();
    at2.create_post(&bob, "bob while node 1 was down 1", &[], "public");
    at2.create_post(&bob, "bob while node 1 was down 2", &[], "followers");
    std::thread::sleep(PUSHES_FAILED_AFTER);
    node1.restart();
    let restarted = Instant::now();
    at1.reconnect_to(&node1);
    let (feed, _) = feed_until(&at1, &alice, "alice's feed catches up after node 1 restarts", |feed| {
        captions(feed)
            .starts_with(&["bob while node 1 was down 2".to_owned(), "bob while node 1 was down 1".to_owned()])
    });
    println!("node 1 caught up {} ms after it restarted", restarted.elapsed().as_millis());
    assert_eq!(
        metric(&at1, &alice, "edgenode_fanout_pushes_applied_total"),
        0,
        "caught up by pull, not by a late push"
    );
    assert!(metric(&at1, &alice, "edgenode_fanout_snapshots_applied_total") >= 1);
    assert!(!captions(&feed).iter().any(|caption| caption.contains("private")), "{:?}", captions(&feed));

    // Unfollowed: carol's posts leave alice's feed at once.
    at1.unfollow(&alice, &carol_remote);
    let feed = at1.feed(&alice);
    assert!(!captions(&feed).contains(&"carol public".to_owned()), "{:?}", captions(&feed));
    let (status, profile) = at1.get_json(&format!("/api/v1/users/{carol_remote}"), Some(&alice.token));
    assert_eq!((status, &profile["followed_by_me"]), (200, &json!(false)), "{profile}");
}

/// `GET /api/v1/feed?limit=…&cursor=…` page by page; returns each page's items.
fn feed_pages(client: &Client, viewer: &Account, limit: usize) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/feed?limit={limit}&cursor={cursor}"),
            None => format!("/api/v1/feed?limit={limit}"),
        };
        let (status, page) = client.get_json(&path, Some(&viewer.token));
        assert_eq!(status, 200, "{path}: {page}");
        pages.push(page["items"].as_array().expect("items").clone());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return pages,
        }
        assert!(pages.len() <= 100, "the feed's cursor never ends: {pages:?}");
    }
}

#[test]
fn a_sibling_user_followed_by_remote_handle_is_in_the_feed_once_per_post() {
    let [node1, node2] = siblings(["fanout-sib-1", "fanout-sib-2"]);
    let (at1, at2) = (Client::new(&node1, Transport::Http2), Client::new(&node2, Transport::Http2));
    let alice = at1.claim_admin(&node1, "alice");
    // Node 2 holds alice once her account replicates: a claimed neighbourhood's
    // sibling is not claimed again (409). Bob joins there with alice's invite.
    converge(&[(&at1, &node1), (&at2, &node2)], WITHIN);
    let alice_on_2 = at2.sign_in("alice");
    let bob = at2.join(&at2.create_invite(&alice_on_2), "bob");
    let bob_remote = format!("bob@{}", node2.node_id());
    at1.follow(&alice, &bob_remote);
    let mut expected = Vec::new();
    for index in 0..3 {
        expected.push(post_id(&at2.create_post(&bob, &format!("bob {index}"), &[], "public")));
        expected.push(post_id(&at1.create_post(&alice, &format!("alice {index}"), &[], "public")));
    }
    let bobs_second = expected[2].clone();
    expected.sort_by(|a, b| b.cmp(a)); // newest first: ids begin with the creation time

    // Both ways here: bob's records replicated to node 1, his posts fanned out to it.
    converge(&[(&at1, &node1), (&at2, &node2)], WITHIN);
    let started = Instant::now();
    while at1.user_posts(Some(&alice), &bob_remote).len() < 3 {
        assert!(started.elapsed() < WITHIN, "bob's posts reach node 1's fan-out cache within {WITHIN:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, post) = at1.get_post(Some(&alice), &bobs_second);
    assert_eq!((status, &post["node"]), (200, &Value::Null), "and node 1's store holds bob's posts: {post}");

    // Alice likes one of bob's posts on node 1: the feed shows the stored copy.
    at1.like(&alice, &bobs_second);

    let feed = at1.feed(&alice);
    assert_eq!(ids(&feed), expected, "each post once, newest first: {:?}", captions(&feed));
    let liked_item = feed.iter().find(|item| item["id"] == json!(bobs_second)).expect("the liked post");
    assert_eq!((&liked_item["like_count"], &liked_item["liked_by_me"]), (&json!(1), &json!(true)), "{liked_item}");

    // Pages count posts, not copies: 6 posts in pages of 4 and 2, then no cursor.
    let pages = feed_pages(&at1, &alice, 4);
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [4, 2], "pages of 4: {pages:?}");
    let paged: Vec<String> = pages.iter().flat_map(|page| ids(page)).collect();
    assert_eq!(paged, expected, "paging through the feed gives each post once, in order");
    let pages = feed_pages(&at1, &alice, 3);
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 0], "a full last page has a cursor");
}

/// Until a locked author approves a follower on another node, that node is sent none
/// of the author's followers-only posts (not even ahead of time); public ones still
/// go. Approvals: remote_people.rs.
#[test]
fn a_locked_authors_followers_only_posts_go_to_no_other_node() {
    let [node1, node2] = neighbours(["locked-1", "locked-2"]);
    let (at1, at2) = (Client::new(&node1, Transport::Http2), Client::new(&node2, Transport::Http2));
    let alice = at1.claim_admin(&node1, "alice");
    let bob = at2.claim_admin(&node2, "bob");
    let (status, profile) = at2.send_json("PATCH", "/api/v1/me/profile", Some(&bob.token), &json!({"locked": true}));
    assert_eq!((status, &profile["locked"]), (200, &json!(true)), "{profile}");
    let bob_remote = format!("bob@{}", node2.node_id());
    at1.follow(&alice, &bob_remote);

    at2.create_post(&bob, "bob locked, for followers", &[], "followers");
    at2.create_post(&bob, "bob locked, in public", &[], "public");
    let (feed, _) = feed_until(&at1, &alice, "the public post reaches alice", |feed| !feed.is_empty());
    assert_eq!(captions(&feed), ["bob locked, in public"], "pushed in order: the followers post went first, or never");
    let seen = captions(&at1.user_posts(Some(&alice), &bob_remote));
    assert_eq!(seen, ["bob locked, in public"], "node 1 holds none of bob's followers-only posts");
    let own = captions(&at2.user_posts(Some(&bob), "bob"));
    assert_eq!(own.len(), 2, "bob's own node has both: {own:?}");
}
