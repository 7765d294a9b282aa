//! The household story, told once over each transport: Alice claims her new node,
//! invites Bob, posts a sideways phone photo of a sunset; Bob follows her, sees it
//! upright and stripped of its location, comments and likes; Alice deletes it and
//! it is gone everywhere. Along the way: health, metrics, Alt-Svc and OpenAPI.

use edgenode_tests::checks::{
    expect_error, expect_jpeg_without_exif, expect_one_of_errors, expect_status, holds, id_field, id_of, text,
    ORIGINAL_REFUSED,
};
use edgenode_tests::contract::{concrete_path, documented_routes, openapi_operations, template_covers, PathValues};
use edgenode_tests::fixtures::{
    distinct_photo, exif_gps_present, exif_orientation, hue_of_rows, looks_like_jpeg, sha256_hex,
    sideways_sunset_photo, Hue,
};
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport, ANONYMOUS};
use serde_json::{json, Value};

const CAPTION: &str = "Sunset at the #harbour with friends";

#[test]
fn household_over_http1() {
    household(Transport::Http1);
}

#[test]
fn household_over_http2() {
    household(Transport::Http2);
}

#[test]
fn household_over_http3() {
    household(Transport::Http3);
}

fn household(transport: Transport) {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, transport);

    the_node_is_healthy_and_says_who_it_is(&client, &node, false);

    // Alice claims the node she just plugged in, and invites Bob.
    let alice = client.claim_admin(&node, "alice");
    let invite = client.create_invite(&alice);
    let bob = client.join(&invite, "bob");
    the_node_is_healthy_and_says_who_it_is(&client, &node, true);

    // Alice uploads the sunset as her phone stored it: sideways, with GPS.
    let media = client.upload_jpeg(&alice, &sideways_sunset_photo());
    the_media_is_described_upright(&media);
    let media_id = id_of(&media);

    let post = client.create_post(&alice, CAPTION, &[&media_id], "public");
    the_post_is_as_written(&post, &alice, &media_id);
    let post_id = id_of(&post);

    // Bob follows Alice and finds the post in his feed.
    client.follow(&bob, "alice");
    let feed = client.feed(&bob);
    let in_feed = feed
        .iter()
        .find(|item| id_of(item) == post_id)
        .unwrap_or_else(|| panic!("Bob's feed shows Alice's post {post_id}: {feed:?}"));
    let blurhash = in_feed["media"][0]["blurhash"].as_str().unwrap_or_default();
    assert!(!blurhash.is_empty(), "the post in Bob's feed carries its media's blurhash: {in_feed}");

    // Bob sees the photo upright, small, and without any metadata.
    let thumb = client.fetch_media(Some(&bob), &media_id, "thumb");
    let thumb_image = expect_jpeg_without_exif("Bob fetches the thumb", &thumb);
    assert_eq!(thumb_image.dimensions(), (128, 256), "the thumb fits 256 px and is upright");
    red_above_blue("the thumb", &thumb_image);
    the_variant_is_cacheable(&client, &bob, &media_id, &thumb);

    let display = client.fetch_media(Some(&bob), &media_id, "display");
    let display_image = expect_jpeg_without_exif("Bob fetches the display variant", &display);
    assert_eq!(display_image.dimensions(), (200, 400), "display fits 1080 px, never upscaled, upright");
    red_above_blue("the display variant", &display_image);

    // Only Alice gets the original: her orientation tag kept, her location gone.
    let original = client.fetch_media(Some(&alice), &media_id, "original");
    assert_eq!(original.status, 200, "Alice fetches her original: {}", original.body_text());
    assert!(looks_like_jpeg(&original.body), "the original is still a JPEG");
    assert!(!exif_gps_present(&original.body), "the original served to its owner has no GPS");
    assert_eq!(exif_orientation(&original.body), Some(6), "the original keeps its orientation tag");
    let for_bob = client.fetch_media(Some(&bob), &media_id, "original");
    expect_one_of_errors("Bob asks for Alice's original", &for_bob, ORIGINAL_REFUSED);

    // Bob comments and likes; the post counts both.
    let comment = client.comment(&bob, &post_id, "Lovely colours!");
    assert_eq!(id_field(&comment, "post_id"), post_id, "the comment belongs to the post: {comment}");
    assert_eq!(comment["author"]["handle"], json!("bob"), "{comment}");
    assert_eq!(comment["text"], json!("Lovely colours!"), "{comment}");
    let liked = client.like(&bob, &post_id);
    assert_eq!((&liked["liked"], &liked["like_count"]), (&json!(true), &json!(1)), "Bob's like: {liked}");
    let seen_by_bob = expect_status("Bob opens the post", client.get_post(Some(&bob), &post_id), 200);
    assert_eq!(seen_by_bob["like_count"], json!(1), "{seen_by_bob}");
    assert_eq!(seen_by_bob["comment_count"], json!(1), "{seen_by_bob}");
    assert_eq!(seen_by_bob["liked_by_me"], json!(true), "{seen_by_bob}");
    assert!(holds(&client.comments(ANONYMOUS, &post_id), &id_of(&comment)), "the comment is listed");

    // Anyone can find the post by a caption word or by its tag.
    assert!(holds(&client.search_posts(ANONYMOUS, "sunset"), &post_id), "q=sunset finds the post");
    assert!(holds(&client.search_posts(Some(&bob), "%23harbour"), &post_id), "q=#harbour finds the post");

    // A curious neighbour walks every route the OpenAPI document lists.
    let carol = client.join(&client.create_invite(&alice), "carol");
    the_openapi_document_lists_every_documented_route(&client);
    every_openapi_route_is_routed(&client, &carol);
    the_admin_routes_answer_as_documented(&client, &alice);

    // Alice deletes the post: it is gone from the feed, from search, and by id.
    client.delete_post(&alice, &post_id);
    assert!(!holds(&client.feed(&bob), &post_id), "a deleted post leaves Bob's feed");
    assert!(!holds(&client.search_posts(ANONYMOUS, "sunset"), &post_id), "a deleted post leaves search");
    expect_error("Bob opens the deleted post", &client.get_post(Some(&bob), &post_id), 404, "not_found");
    expect_error("anyone opens the deleted post", &client.get_post(ANONYMOUS, &post_id), 404, "not_found");

    the_metrics_count_something(&client, &alice);
}

fn the_node_is_healthy_and_says_who_it_is(client: &Client, node: &Node, claimed: bool) {
    let health = client.request("GET", "/healthz", None, &[], Vec::new());
    assert_eq!((health.status, health.json()), (200, json!({ "status": "ok" })), "GET /healthz");
    if client.transport() != Transport::Http3 {
        let expected = format!("h3=\":{}\"", node.addr().port());
        let alt_svc = health.header("alt-svc").unwrap_or_default();
        assert!(alt_svc.contains(&expected), "Alt-Svc over TCP advertises {expected}, got {alt_svc:?}");
    }
    let about = expect_status("GET /api/v1/node", client.get_json("/api/v1/node", None), 200);
    assert_eq!(about["name"], json!(node.name()), "{about}");
    assert_eq!(about["pin"], json!(node.pin()), "the node shows the pin it serves: {about}");
    assert_eq!(about["node_id"], json!(node.node_id()), "{about}");
    assert_eq!(about["claimed"], json!(claimed), "{about}");
}

fn the_media_is_described_upright(media: &Value) {
    assert_eq!((&media["width"], &media["height"]), (&json!(200), &json!(400)), "upright size: {media}");
    assert!(!text(media, "blurhash").is_empty(), "media has a blurhash: {media}");
    assert_eq!(media["mime"], json!("image/jpeg"), "{media}");
    assert_eq!(media["variants"]["thumb"], json!({ "width": 128, "height": 256 }), "{media}");
    assert_eq!(media["variants"]["display"], json!({ "width": 200, "height": 400 }), "{media}");
}

fn the_post_is_as_written(post: &Value, author: &Account, media_id: &str) {
    assert_eq!(post["author"]["handle"], json!(author.handle), "{post}");
    assert_eq!(id_field(&post["author"], "user_id"), author.user_id, "{post}");
    assert_eq!(post["caption"], json!(CAPTION), "{post}");
    assert_eq!(post["visibility"], json!("public"), "{post}");
    assert_eq!(id_of(&post["media"][0]), media_id, "{post}");
    let tags: Vec<&str> = post["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("a post has tags: {post}"))
        .iter()
        .map(|tag| tag.as_str().unwrap_or_default().trim_start_matches('#'))
        .collect();
    assert_eq!(tags, ["harbour"], "the hashtag becomes the post's one tag: {post}");
    assert_eq!((&post["like_count"], &post["comment_count"]), (&json!(0), &json!(0)), "{post}");
}

fn red_above_blue(what: &str, image: &image::RgbImage) {
    assert_eq!(hue_of_rows(image, 0.0, 0.4), Hue::Red, "{what}: the top is red (the photo is upright)");
    assert_eq!(hue_of_rows(image, 0.6, 1.0), Hue::Blue, "{what}: the bottom is blue (the photo is upright)");
}

/// Strong ETag, immutable caching, conditional requests and ranges (docs/api.md).
fn the_variant_is_cacheable(client: &Client, viewer: &Account, media_id: &str, variant: &edgenode_tests::Response) {
    let etag = variant.header("etag").unwrap_or_else(|| panic!("the thumb has an ETag: {:?}", variant.headers));
    assert!(!etag.starts_with("W/"), "the ETag is strong: {etag}");
    assert_eq!(variant.header("cache-control"), Some("private, max-age=31536000, immutable"));
    assert_eq!(variant.header("accept-ranges"), Some("bytes"));

    let path = format!("/api/v1/media/{media_id}/thumb");
    let revalidated = client.request("GET", &path, Some(&viewer.token), &[("if-none-match", etag)], Vec::new());
    assert_eq!(revalidated.status, 304, "If-None-Match with the ETag: {}", revalidated.body_text());

    let ranged = client.request("GET", &path, Some(&viewer.token), &[("range", "bytes=0-9")], Vec::new());
    assert_eq!(ranged.status, 206, "Range bytes=0-9: {}", ranged.body_text());
    assert_eq!(ranged.body, variant.body[..10], "the range holds the first ten bytes");
    let expected_range = format!("bytes 0-9/{}", variant.body.len());
    assert_eq!(ranged.header("content-range"), Some(expected_range.as_str()));
}

fn the_openapi_document_lists_every_documented_route(client: &Client) {
    let (status, openapi) = client.get_json("/openapi.json", None);
    assert_eq!(status, 200, "GET /openapi.json: {openapi}");
    assert!(text(&openapi, "openapi").starts_with('3'), "an OpenAPI 3 document: {}", openapi["openapi"]);
    let operations = openapi_operations(&openapi);
    let missing: Vec<String> = documented_routes()
        .iter()
        .filter(|route| !operations.iter().any(|operation| template_covers(operation, route)))
        .map(ToString::to_string)
        .collect();
    assert!(missing.is_empty(), "/openapi.json lacks these routes of docs/api.md: {missing:#?}");
}

/// The success statuses `/openapi.json` documents for `method` on `template`.
fn documented_successes(openapi: &Value, method: &str, template: &str) -> Vec<u16> {
    let responses = &openapi["paths"][template][method.to_ascii_lowercase()]["responses"];
    let statuses = responses.as_object().map(|responses| responses.keys().filter_map(|status| status.parse().ok()));
    statuses.into_iter().flatten().filter(|status| (200..300).contains(status)).collect()
}

/// Why `status` (an answer to `method` on `template`) is not what `/openapi.json`
/// documents, if it is a success the document does not list.
fn undocumented_success(openapi: &Value, method: &str, template: &str, status: u16) -> Option<String> {
    let documented = documented_successes(openapi, method, template);
    ((200..300).contains(&status) && !documented.contains(&status))
        .then(|| format!("{method} {template} answered {status}; /openapi.json documents {documented:?}"))
}

/// Calls every operation of the OpenAPI document, with real ids, as `visitor` (who
/// owns the post and media used, so nothing of anyone else changes) and checks each
/// is routed: neither 404 nor 405, and a success is one the document lists for it.
/// Mutations run after reads, the visitor's own post is deleted last but one, and
/// signing out comes last.
fn every_openapi_route_is_routed(client: &Client, visitor: &Account) {
    let photo = distinct_photo(7);
    let media_id = id_of(&client.upload_jpeg(visitor, &photo));
    let post_id = id_of(&client.create_post(visitor, "Walking every route", &[&media_id], "public"));
    let values = PathValues { post_id, media_id, media_sha256: sha256_hex(&photo), handle: "alice".to_owned() };

    let (_, openapi) = client.get_json("/openapi.json", None);
    let mut calls: Vec<(String, String, String)> = openapi_operations(&openapi)
        .into_iter()
        .map(|operation| {
            let path = concrete_path(&operation.path, &values);
            (operation.method, operation.path, path)
        })
        .collect();
    let own_post = format!("/api/v1/posts/{}", values.post_id);
    calls.sort_by_key(|(method, _, path)| match method.as_str() {
        "GET" | "HEAD" | "OPTIONS" => 0,
        "DELETE" if path == "/api/v1/sessions" => 4,
        "DELETE" if *path == own_post => 3,
        "DELETE" => 2,
        _ => 1,
    });
    let mut unrouted = Vec::new();
    let mut undocumented = Vec::new();
    for (method, template, path) in &calls {
        let response = client.request(method, path, Some(&visitor.token), &[], Vec::new());
        undocumented.extend(undocumented_success(&openapi, method, template, response.status));
        // A routed handler may answer 404 for what it looks up (an ACME challenge not
        // pending); the router's own 404 says there is no route.
        let no_route = response.status == 404 && response.body_text().contains("no route for");
        if no_route || response.status == 405 {
            unrouted.push(format!("{method} {path} -> {} {}", response.status, response.body_text()));
        }
    }
    assert!(!calls.is_empty(), "/openapi.json lists no operations");
    assert!(unrouted.is_empty(), "routes listed in /openapi.json that the router does not serve: {unrouted:#?}");
    assert!(undocumented.is_empty(), "successes /openapi.json does not document: {undocumented:#?}");
}

/// The admin's own routes the visitor above is refused, each answered with a success
/// `/openapi.json` documents for it: pairing, siblings, nearby nodes, invites.
fn the_admin_routes_answer_as_documented(client: &Client, admin: &Account) {
    let (_, openapi) = client.get_json("/openapi.json", None);
    let created = client.request("POST", "/api/v1/invites", Some(&admin.token), &[], Vec::new());
    let code = text(&created.json(), "code").to_owned();
    let revoke = format!("/api/v1/invites/{code}");
    let mut answers = vec![("POST", "/api/v1/invites", created)];
    for (method, template, path) in [
        ("GET", "/api/v1/invites", "/api/v1/invites"),
        ("DELETE", "/api/v1/invites/{code}", revoke.as_str()),
        ("GET", "/api/v1/node/peers", "/api/v1/node/peers"),
        ("GET", "/api/v1/node/replication", "/api/v1/node/replication"),
        ("GET", "/api/v1/node/nearby", "/api/v1/node/nearby"),
        ("POST", "/api/v1/node/peers/pair", "/api/v1/node/peers/pair"),
    ] {
        answers.push((method, template, client.request(method, path, Some(&admin.token), &[], Vec::new())));
    }
    let mut wrong = Vec::new();
    for (method, template, response) in answers {
        if !(200..300).contains(&response.status) {
            wrong.push(format!("{method} {template} as the admin: {} {}", response.status, response.body_text()));
        }
        wrong.extend(undocumented_success(&openapi, method, template, response.status));
    }
    assert!(wrong.is_empty(), "admin routes not answered as /openapi.json documents: {wrong:#?}");
}

/// Read as the admin: `/metrics` is for operators only.
fn the_metrics_count_something(client: &Client, admin: &Account) {
    let metrics = client.request("GET", "/metrics", Some(&admin.token), &[], Vec::new());
    assert_eq!(metrics.status, 200, "GET /metrics: {}", metrics.body_text());
    let content_type = metrics.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "Prometheus text is text/plain, got {content_type:?}");
    let exposition = String::from_utf8_lossy(&metrics.body).into_owned();
    let counters: Vec<&str> =
        exposition.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let counted = counters.iter().any(|counter| {
        exposition.lines().any(|line| {
            // Prometheus names the sample like the family; OpenMetrics adds `_total`.
            let rest = line.strip_prefix(counter).map(|rest| rest.strip_prefix("_total").unwrap_or(rest));
            rest.is_some_and(|rest| rest.starts_with([' ', '{']) && sample_value(rest).is_some_and(|value| value > 0.0))
        })
    });
    assert!(counted, "after this much traffic /metrics has a counter above zero:\n{exposition}");
}

/// The value of a Prometheus sample line after its name: `{labels} 12` or ` 12`.
fn sample_value(after_name: &str) -> Option<f64> {
    let after_labels = match after_name.strip_prefix('{') {
        Some(labelled) => labelled.split_once('}')?.1,
        None => after_name,
    };
    after_labels.split_whitespace().next()?.parse().ok()
}
