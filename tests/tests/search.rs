//! Fractal search on loopback: four real nodes, neighbours of each other (no
//! siblings), each with its region in its own config:
//!
//! ```text
//!   h  earth        aggregator (fed by g)
//!   g  earth/x      aggregator (fed by a and b)
//!   a  earth/x/a    home
//!   b  earth/x/b    home
//! ```
//!
//! A public post on b is found by a region search on a through g, and through h for
//! the wider region; a followers-only one never; a deleted post leaves both indexes;
//! with g stopped, h answers for earth/x (b feeds it directly meanwhile); with both
//! stopped the search says no aggregator is reachable; g back catches up.

use std::time::{Duration, Instant};

use edgenode_tests::client::{Client, Transport};
use edgenode_tests::cluster::known_to_each_other;
use edgenode_tests::node::Node;
use serde_json::{json, Value};

/// A post on b reaches an aggregator's index (on loopback, well under this).
const INDEXED_WITHIN: Duration = Duration::from_secs(30);

/// Nodes with a region and roles each, neighbours of every other.
fn neighbourhood<const N: usize>(specs: [(&str, &str, &str); N]) -> [Node; N] {
    with_regions(specs, "peers.neighbours")
}

/// Each `(name, region, roles)` listing every other under `[[table]]`.
fn with_regions<const N: usize>(specs: [(&str, &str, &str); N], table: &str) -> [Node; N] {
    let configs = specs.map(|(_, region, roles)| format!("region = \"{region}\"\nroles = {roles}\n"));
    let specs: [(&str, &str); N] = std::array::from_fn(|index| (specs[index].0, configs[index].as_str()));
    known_to_each_other(specs, table, "")
}

/// `GET /api/v1/search?q=WORD&scope=SCOPE` (the scope percent-encoded): (status, answer).
fn search(client: &Client, word: &str, scope: &str) -> (u16, Value) {
    client.get_json(&format!("/api/v1/search?q={word}&scope={}", scope.replace('/', "%2F")), None)
}

fn post_ids(answer: &Value) -> Vec<String> {
    answer["posts"]
        .as_array()
        .unwrap_or_else(|| panic!("an answer with posts: {answer}"))
        .iter()
        .filter_map(|post| post["id"].as_str().map(str::to_owned))
        .collect()
}

/// Polls a search until `done` holds for its answer (200 only); returns the answer
/// and how long it took.
fn search_until(
    client: &Client,
    word: &str,
    scope: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let started = Instant::now();
    let mut last = (0, Value::Null);
    while started.elapsed() < INDEXED_WITHIN {
        last = search(client, word, scope);
        if last.0 == 200 && done(&last.1) {
            return (last.1, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not within {INDEXED_WITHIN:?}; last answer {} {}", last.0, last.1);
}

#[test]
fn region_searches_go_through_aggregators_and_never_show_followers_only_posts() {
    let aggregator = r#"["home", "aggregator"]"#;
    let home = r#"["home"]"#;
    let [a, b, mut g, mut h] = neighbourhood([
        ("search-a", "earth/x/a", home),
        ("search-b", "earth/x/b", home),
        ("search-g", "earth/x", aggregator),
        ("search-h", "earth", aggregator),
    ]);
    let (at_a, at_b) = (Client::new(&a, Transport::Http2), Client::new(&b, Transport::Http2));
    let (_ada, bea) = (at_a.claim_admin(&a, "ada"), at_b.claim_admin(&b, "bea"));

    let public = at_b.create_post(&bea, "a zebrafinch on the balcony", &[], "public");
    let public_id = public["id"].as_str().expect("post id").to_owned();
    at_b.create_post(&bea, "a nightjar only my followers may know of", &[], "followers");

    // Through g, the aggregator of earth/x.
    let (found, took) =
        search_until(&at_a, "zebrafinch", "earth/x", "a search of earth/x on a finds b's public post", |answer| {
            post_ids(answer).contains(&public_id)
        });
    println!("earth/x on a found b's post {} ms after it was made (through g)", took.as_millis());
    assert_eq!(found["answered_by"], json!(g.node_id()), "g answers for earth/x: {found}");
    assert_eq!(found["scope"], json!("earth/x"), "{found}");
    let item = &found["posts"][0];
    assert_eq!(item["node"], json!({"id": b.node_id(), "region": "earth/x/b"}), "where it comes from: {item}");
    assert_eq!(item["author"]["handle"], json!("bea"), "{item}");
    assert_eq!(item["visibility"], json!("public"), "{item}");
    let (status, hidden) = search(&at_a, "nightjar", "earth/x");
    assert_eq!(
        (status, post_ids(&hidden)),
        (200, vec![]),
        "a followers-only post is never in a region search: {hidden}"
    );
    let (status, local) = search(&at_a, "zebrafinch", "node");
    assert_eq!((status, post_ids(&local)), (200, vec![]), "scope=node on a holds nothing of b's: {local}");
    assert_eq!(local["answered_by"], json!(a.node_id()), "{local}");
    let (status, elsewhere) = search(&at_a, "zebrafinch", "earth/x/a");
    assert_eq!((status, post_ids(&elsewhere)), (200, vec![]), "earth/x/a does not hold earth/x/b: {elsewhere}");
    let (status, users) = search(&at_a, "bea", "earth/x");
    assert_eq!(status, 200, "{users}");
    assert_eq!(users["users"][0]["handle"], json!("bea"), "profiles are found by handle too: {users}");
    let (status, wrong) = search(&at_a, "zebrafinch", "earth//x");
    assert_eq!((status, wrong["error"]["code"].clone()), (400, json!("unsupported_scope")), "{wrong}");

    // Through h, fed by g: the wider region.
    let (found, took) = search_until(
        &at_a,
        "zebrafinch",
        "earth",
        "a search of earth on a finds b's public post through h",
        |answer| post_ids(answer).contains(&public_id),
    );
    println!("earth on a found b's post {} ms later (through g and h)", took.as_millis());
    assert_eq!(found["answered_by"], json!(h.node_id()), "h answers for earth: {found}");
    assert_eq!(found["posts"][0]["node"]["id"], json!(b.node_id()), "the origin survives the second hop: {found}");
    assert_eq!(post_ids(&search(&at_a, "nightjar", "earth").1), Vec::<String>::new(), "not through h either");

    // A deleted post leaves both indexes.
    at_b.delete_post(&bea, &public_id);
    let (_, took) = search_until(&at_a, "zebrafinch", "earth/x", "the deleted post leaves g's index", |answer| {
        !post_ids(answer).contains(&public_id)
    });
    println!("the deleted post left earth/x {} ms after the delete", took.as_millis());
    search_until(&at_a, "zebrafinch", "earth", "the deleted post leaves h's index", |answer| {
        !post_ids(answer).contains(&public_id)
    });

    // g down: h covers earth/x too and answers; b feeds h directly meanwhile.
    g.terminate();
    let kingfisher = at_b.create_post(&bea, "a kingfisher by the canal", &[], "public");
    let kingfisher_id = kingfisher["id"].as_str().expect("post id").to_owned();
    let (found, took) =
        search_until(&at_a, "kingfisher", "earth/x", "with g down, h answers earth/x with b's new post", |answer| {
            post_ids(answer).contains(&kingfisher_id)
        });
    println!("with g down, earth/x on a found b's new post through h after {} ms", took.as_millis());
    assert_eq!(found["answered_by"], json!(h.node_id()), "{found}");

    // Both down: a clear error, soon.
    h.terminate();
    let asked = Instant::now();
    let (status, error) = search(&at_a, "kingfisher", "earth/x");
    println!("with g and h down, a answered {status} in {} ms: {error}", asked.elapsed().as_millis());
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["error"]["code"], json!("no_aggregator"), "{error}");
    let message = error["error"]["message"].as_str().expect("a message");
    assert!(message.starts_with("no aggregator for earth/x is reachable (tried: "), "{message}");
    assert!(message.contains(g.node_id()) && message.contains(h.node_id()), "it names whom it tried: {message}");
    assert!(asked.elapsed() < Duration::from_secs(15), "the error is not a long wait");
    let (status, _) = search(&at_a, "kingfisher", "node");
    assert_eq!(status, 200, "scope=node never needs an aggregator");

    // g back: it catches up with what b posted while it was down.
    g.restart();
    let (found, took) = search_until(
        &at_a,
        "kingfisher",
        "earth/x",
        "g, back, catches up with b's post made while it was down",
        |answer| answer["answered_by"] == json!(g.node_id()) && post_ids(answer).contains(&kingfisher_id),
    );
    println!("g restarted: caught up and answering {} ms later", took.as_millis());
    assert_eq!(found["posts"][0]["node"]["id"], json!(b.node_id()));
}

/// Two siblings (each keeps the other's users too): `scope=neighbourhood` merges
/// this node's and the sibling's answers without repeats, never with a followers-only
/// post, and a sibling that is down is named in `unreachable`.
#[test]
fn a_neighbourhood_search_asks_every_sibling() {
    let home = r#"["home"]"#;
    let [one, mut two] = with_regions([("hood-1", "earth/y", home), ("hood-2", "earth/y", home)], "peers.siblings");
    let (at_one, at_two) = (Client::new(&one, Transport::Http2), Client::new(&two, Transport::Http3));
    let bea = at_two.claim_admin(&two, "bea");
    let public = at_two.create_post(&bea, "an osprey over the lake", &[], "public");
    let public_id = public["id"].as_str().expect("post id").to_owned();
    at_two.create_post(&bea, "an osprey nest, for my followers", &[], "followers");

    let (found, took) =
        search_until(&at_one, "osprey", "neighbourhood", "one's neighbourhood search finds two's post", |answer| {
            !post_ids(answer).is_empty()
        });
    println!("neighbourhood search found the sibling's post after {} ms", took.as_millis());
    assert_eq!(found["answered_by"], json!(one.node_id()), "{found}");
    assert_eq!(found["scope"], json!("neighbourhood"), "{found}");
    assert_eq!(found["unreachable"], json!([]), "{found}");
    // Replication brings the post to one as well: still listed once.
    let (found, _) =
        search_until(&at_one, "osprey", "node", "the post replicates to one", |answer| !post_ids(answer).is_empty());
    assert_eq!(post_ids(&found), vec![public_id.clone()], "{found}");
    let (status, both) = search(&at_one, "osprey", "neighbourhood");
    assert_eq!((status, post_ids(&both)), (200, vec![public_id.clone()]), "once, and only the public one: {both}");
    assert!(both["posts"][0]["node"]["id"].is_string(), "items say which node answered them: {both}");
    let (_, users) = search(&at_one, "bea", "neighbourhood");
    assert_eq!(users["users"].as_array().map(Vec::len), Some(1), "bea once: {users}");

    two.terminate();
    let (status, partial) = search(&at_one, "osprey", "neighbourhood");
    assert_eq!(status, 200, "a partial answer is still an answer: {partial}");
    assert_eq!(partial["unreachable"], json!([two.node_id()]), "it says who did not answer: {partial}");
    assert_eq!(post_ids(&partial), vec![public_id], "{partial}");
}
