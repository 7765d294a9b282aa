//! Notifications: likes, comments, follows and @mentions notify the right user and
//! nobody else (never for one's own actions, never about a post the user may not
//! see), collapsed per post and kind, with an unread count and mark-as-read, over
//! HTTP/1.1, HTTP/2 and HTTP/3; pages hold every group once. Two siblings list the
//! same notifications and unread count after replication, whichever one the actions
//! and the mark-as-read went through, also after kill -9.

use std::time::Duration;

use edgenode_tests::checks::{expect_error, expect_status, id_of};
use edgenode_tests::cluster::{converge, preloaded_siblings};
use edgenode_tests::fixtures::distinct_photo;
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport};
use serde_json::{json, Value};

/// Siblings agree within this, on loopback.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// Read markers and events are in milliseconds: a step after a mark-as-read waits
/// this long so its event is later than the marker.
const PAST_THE_MARKER: Duration = Duration::from_millis(20);
/// Pages a listing may take before the test calls it endless.
const PAGES_MAX: usize = 50;

/// Every notification group of `user`, following `next_cursor` with `limit` per page.
fn all_notifications(client: &Client, user: &Account, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..PAGES_MAX {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/notifications?limit={limit}&cursor={cursor}"),
            None => format!("/api/v1/notifications?limit={limit}"),
        };
        let page =
            expect_status(&format!("{}'s notifications", user.handle), client.get_json(&path, Some(&user.token)), 200);
        let page_items = page["items"].as_array().unwrap_or_else(|| panic!("items: {page}"));
        assert!(page_items.len() <= limit, "a page holds at most `limit` groups: {page}");
        items.extend(page_items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
    panic!("{}'s notifications did not end within {PAGES_MAX} pages", user.handle);
}

fn unread(client: &Client, user: &Account) -> u64 {
    let answer = expect_status(
        &format!("{}'s unread count", user.handle),
        client.get_json("/api/v1/notifications/unread", Some(&user.token)),
        200,
    );
    answer["count"].as_u64().unwrap_or_else(|| panic!("count: {answer}"))
}

fn mark_read(client: &Client, user: &Account, body: &Value) {
    let response = client.request(
        "POST",
        "/api/v1/notifications/read",
        Some(&user.token),
        &[("content-type", "application/json")],
        serde_json::to_vec(body).expect("JSON"),
    );
    assert_eq!(response.status, 204, "{} marks read: {}", user.handle, response.body_text());
}

/// The group of `kind` about `post_id` (`None`: follows), if listed.
fn group<'a>(items: &'a [Value], kind: &str, post_id: Option<&str>) -> Option<&'a Value> {
    items.iter().find(|item| item["kind"] == json!(kind) && item["post"]["id"].as_str() == post_id)
}

fn expect_group<'a>(what: &str, items: &'a [Value], kind: &str, post_id: Option<&str>) -> &'a Value {
    group(items, kind, post_id).unwrap_or_else(|| panic!("{what}: no {kind} group for {post_id:?} in {items:#?}"))
}

fn actor_handles(group: &Value) -> Vec<String> {
    let actors = group["actors"].as_array().unwrap_or_else(|| panic!("actors: {group}"));
    actors.iter().map(|actor| actor["handle"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Waits so events of the next step are later, in ms, than those before.
fn tick() {
    std::thread::sleep(PAST_THE_MARKER);
}

/// One household's notifications over one transport.
fn notifications_story(client: &Client, admin: &Account, seed: u8) {
    let transport = format!("{:?}", client.transport());
    let what = |step: &str| format!("{transport}: {step}");
    let join = |name: &str| client.join(&client.create_invite(admin), &format!("{name}{seed}"));
    let [ada, bea, cy, dee, eve] = ["ada", "bea", "cy", "dee", "eve"].map(join);

    let photo = id_of(&client.upload_jpeg(&ada, &distinct_photo(seed)));
    let harbour = id_of(&client.create_post(&ada, "Harbour at dusk", &[&photo], "public"));
    assert_eq!(all_notifications(client, &ada, 20), Vec::<Value>::new(), "{}", what("nothing yet"));
    assert_eq!(unread(client, &ada), 0);

    // Four likes collapse into one group, the three latest named; ada's own like is no news.
    for liker in [&bea, &cy, &dee, &eve] {
        client.like(liker, &harbour);
        tick();
    }
    client.like(&ada, &harbour);
    // Two comments of bea's are one actor; ada's own comment is no news.
    client.comment(&bea, &harbour, "gorgeous");
    client.comment(&bea, &harbour, "again!");
    client.comment(&ada, &harbour, "thanks");
    tick();
    client.follow(&bea, &ada.handle);
    client.follow(&cy, &ada.handle);
    tick();
    // Mentions: a public post mentions ada; a private one and a followers-only one
    // (ada does not follow bea yet) are not hers to see; her mention of herself is no news.
    let mentioned = id_of(&client.create_post(&bea, &format!("Sailing with @{} today", ada.handle), &[], "public"));
    let private = id_of(&client.create_post(&bea, &format!("secret for @{}", ada.handle), &[], "private"));
    let for_followers = id_of(&client.create_post(&bea, &format!("(@{}) lunch?", ada.handle), &[], "followers"));
    client.create_post(&ada, &format!("I am @{}", ada.handle), &[], "public");
    // Someone else's mention is theirs: cy is mentioned, ada is not.
    let about_cy =
        id_of(&client.create_post(&dee, &format!("hi @{} and mail@{}", cy.handle, ada.handle), &[], "public"));

    let items = all_notifications(client, &ada, 20);
    let likes = expect_group(&what("likes"), &items, "like", Some(&harbour));
    assert_eq!(likes["actors_count"], json!(4), "{}: {likes}", what("four likers, ada not among them"));
    assert_eq!(actor_handles(likes), vec![eve.handle.clone(), dee.handle.clone(), cy.handle.clone()], "latest first");
    assert_eq!(likes["post"]["thumb"], json!(format!("/api/v1/media/{photo}/thumb")), "{likes}");
    assert_eq!(likes["actors"][0]["user_id"], json!(eve.user_id), "{likes}");
    let comments = expect_group(&what("comments"), &items, "comment", Some(&harbour));
    assert_eq!((comments["actors_count"].clone(), actor_handles(comments)), (json!(1), vec![bea.handle.clone()]));
    let follows = expect_group(&what("follows"), &items, "follow", None);
    assert!(follows["post"].is_null(), "{follows}");
    assert_eq!(actor_handles(follows), vec![cy.handle.clone(), bea.handle.clone()], "{}", what("follows"));
    let mention = expect_group(&what("mention"), &items, "mention", Some(&mentioned));
    assert_eq!(actor_handles(mention), vec![bea.handle.clone()]);
    assert_eq!(mention["post"]["thumb"], Value::Null, "a post without photos has no thumb: {mention}");
    assert_eq!(
        items.len(),
        4,
        "{}: nothing about private posts, own actions or others' mentions: {items:#?}",
        what("all")
    );
    assert!(items.iter().all(|item| item["unread"] == json!(true)), "{items:#?}");
    let latest: Vec<u64> = items.iter().map(|item| item["latest_at"].as_u64().expect("latest_at")).collect();
    assert!(latest.windows(2).all(|pair| pair[0] >= pair[1]), "{}: newest first: {latest:?}", what("order"));
    assert_eq!(items[0]["kind"], json!("mention"), "the mention is the newest: {items:#?}");
    assert_eq!(unread(client, &ada), 4, "{}", what("unread groups"));

    // Nobody else is notified of ada's news; cy is, of dee's mention.
    let of_cy = all_notifications(client, &cy, 20);
    assert_eq!(of_cy.len(), 1, "{}: {of_cy:#?}", what("cy's"));
    expect_group(&what("cy mentioned"), &of_cy, "mention", Some(&about_cy));
    assert_eq!(all_notifications(client, &eve, 20), Vec::<Value>::new(), "{}", what("eve has none"));
    assert_eq!(unread(client, &eve), 0);

    // ada follows bea: the followers-only post is now hers to see (the private one never).
    client.follow(&ada, &bea.handle);
    let items = all_notifications(client, &ada, 20);
    expect_group(&what("followers-only mention"), &items, "mention", Some(&for_followers));
    assert!(group(&items, "mention", Some(&private)).is_none(), "{}: {items:#?}", what("private"));
    let of_bea = all_notifications(client, &bea, 20);
    assert_eq!(of_bea.len(), 1, "{}: {of_bea:#?}", what("bea: ada's follow"));
    assert_eq!(actor_handles(expect_group(&what("bea"), &of_bea, "follow", None)), vec![ada.handle.clone()]);

    // Pages of one group each hold every group once, in the same order.
    assert_eq!(all_notifications(client, &ada, 1), items, "{}", what("pages of 1"));
    assert_eq!(all_notifications(client, &ada, 2), items, "{}", what("pages of 2"));

    // Mark as read, then a new comment: one group is unread again, with its new actor.
    assert_eq!(unread(client, &ada), 5);
    // An empty body marks everything read, as `{}` does.
    let response = client.request("POST", "/api/v1/notifications/read", Some(&ada.token), &[], Vec::new());
    assert_eq!(response.status, 204, "{}: {}", what("empty body"), response.body_text());
    assert_eq!(unread(client, &ada), 0, "{}", what("all read"));
    let items = all_notifications(client, &ada, 20);
    assert!(items.iter().all(|item| item["unread"] == json!(false)), "{items:#?}");
    tick();
    client.comment(&dee, &harbour, "lovely");
    assert_eq!(unread(client, &ada), 1, "{}", what("a new comment"));
    let items = all_notifications(client, &ada, 20);
    let comments = expect_group(&what("comments after"), &items, "comment", Some(&harbour));
    assert_eq!((comments["unread"].clone(), comments["actors_count"].clone()), (json!(true), json!(2)));
    assert_eq!(actor_handles(comments), vec![dee.handle.clone(), bea.handle.clone()]);
    assert_eq!(items[0], *comments, "the freshest group is first");
    // The marker only moves forward: an older up_to changes nothing.
    mark_read(client, &ada, &json!({"up_to": 1}));
    assert_eq!(unread(client, &ada), 1);

    // Taking back: an unlike leaves the group, a deleted post takes its groups along.
    let response =
        client.request("DELETE", &format!("/api/v1/posts/{harbour}/like"), Some(&eve.token), &[], Vec::new());
    assert_eq!(response.status, 200, "{}", response.body_text());
    let items = all_notifications(client, &ada, 20);
    let likes = expect_group(&what("after an unlike"), &items, "like", Some(&harbour));
    assert_eq!(actor_handles(likes), vec![dee.handle.clone(), cy.handle.clone(), bea.handle.clone()], "{likes}");
    client.unfollow(&cy, &ada.handle);
    let items = all_notifications(client, &ada, 20);
    assert_eq!(
        actor_handles(expect_group(&what("after an unfollow"), &items, "follow", None)),
        vec![bea.handle.clone()]
    );
    client.delete_post(&ada, &harbour);
    let items = all_notifications(client, &ada, 20);
    assert!(group(&items, "like", Some(&harbour)).is_none() && group(&items, "comment", Some(&harbour)).is_none());
    assert_eq!(items.len(), 3, "{}: follows and two mentions remain: {items:#?}", what("after deleting"));
    assert_eq!(unread(client, &ada), 0, "{}: the unread comment went with its post", what("unread"));

    // Refused: a cursor that is not one, a bad limit, no credentials.
    expect_error(
        &what("bad cursor"),
        &client.get_json("/api/v1/notifications?cursor=nonsense", Some(&ada.token)),
        400,
        "bad_query",
    );
    expect_error(
        &what("bad limit"),
        &client.get_json("/api/v1/notifications?limit=0", Some(&ada.token)),
        400,
        "bad_query",
    );
    for path in ["/api/v1/notifications", "/api/v1/notifications/unread"] {
        assert_eq!(client.get_json(path, None).0, 401, "{}: {path}", what("anonymous"));
    }
    assert_eq!(client.post_json("/api/v1/notifications/read", None, &json!({})).0, 401, "{}", what("anonymous read"));
}

#[test]
fn notifications_reach_the_right_user_collapsed_over_every_transport() {
    let node = Node::start(NodeOptions::default());
    let admin = Client::new(&node, Transport::Http2).claim_admin(&node, "admin");
    for (seed, transport) in [Transport::Http1, Transport::Http2, Transport::Http3].into_iter().enumerate() {
        notifications_story(&Client::new(&node, transport), &admin, seed as u8 + 1);
    }
}

#[test]
fn siblings_list_the_same_notifications_and_unread_count() {
    let [harbour, mut hill] = preloaded_siblings(["notify-harbour", "notify-hill"]);
    let (at_harbour, at_hill) = (Client::new(&harbour, Transport::Http2), Client::new(&hill, Transport::Http3));
    let ada = at_harbour.claim_admin(&harbour, "ada");
    let [bea, cy] = ["bea", "cyrus"].map(|handle| at_harbour.join(&at_harbour.create_invite(&ada), handle));
    let post = id_of(&at_harbour.create_post(&ada, "Harbour at dusk", &[], "public"));
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);

    // Actions through hill, about ada, whose post was written on harbour.
    let (bea_on_hill, cy_on_hill) = (at_hill.sign_in("bea"), at_hill.sign_in("cyrus"));
    at_hill.like(&bea_on_hill, &post);
    at_hill.comment(&cy_on_hill, &post, "lovely");
    at_hill.follow(&bea_on_hill, "ada");
    at_hill.create_post(&cy_on_hill, "with @ada at the harbour", &[], "public");
    at_harbour.like(&cy, &post);
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);

    let ada_on_hill = at_hill.sign_in("ada");
    let on_harbour = all_notifications(&at_harbour, &ada, 20);
    assert_eq!(on_harbour.len(), 4, "like, comment, follow, mention: {on_harbour:#?}");
    let likes = expect_group("harbour", &on_harbour, "like", Some(&post));
    assert_eq!(actor_handles(likes), vec![cy.handle.clone(), bea.handle.clone()], "{likes}");
    assert_eq!(all_notifications(&at_hill, &ada_on_hill, 20), on_harbour, "hill lists what harbour lists");
    assert_eq!((unread(&at_harbour, &ada), unread(&at_hill, &ada_on_hill)), (4, 4));

    // Read on hill: read on harbour too.
    mark_read(&at_hill, &ada_on_hill, &json!({}));
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);
    assert_eq!((unread(&at_harbour, &ada), unread(&at_hill, &ada_on_hill)), (0, 0), "the read marker replicated");

    // One more comment through harbour: one unread group on both.
    tick();
    at_harbour.comment(&bea, &post, "still lovely");
    converge(&[(&at_harbour, &harbour), (&at_hill, &hill)], CONVERGE_WITHIN);
    assert_eq!((unread(&at_harbour, &ada), unread(&at_hill, &ada_on_hill)), (1, 1));
    let on_harbour = all_notifications(&at_harbour, &ada, 20);
    assert_eq!(all_notifications(&at_hill, &ada_on_hill, 20), on_harbour);

    // Survives kill -9.
    hill.kill_9();
    hill.restart();
    let at_hill = Client::new(&hill, Transport::Http1);
    let ada_on_hill = at_hill.sign_in("ada");
    assert_eq!(all_notifications(&at_hill, &ada_on_hill, 20), on_harbour, "after kill -9");
    assert_eq!(unread(&at_hill, &ada_on_hill), 1);
}
