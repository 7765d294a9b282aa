//! Assertions on the node's answers: statuses, the error body of docs/api.md, lists,
//! and media responses. Each panics with what was asked and what came back.

use serde_json::Value;

use crate::client::{Client, Response};
use crate::fixtures::{contains_exif, decode, looks_like_jpeg};
use crate::steps::{Account, SharedPhoto};

/// Panics unless `answer` has status `expected`; returns its JSON body.
pub fn expect_status(what: &str, answer: (u16, Value), expected: u16) -> Value {
    let (status, body) = answer;
    assert_eq!(status, expected, "{what}: expected {expected}, got {status}: {body}");
    body
}

/// Panics unless the answer is `expected_status` with the error body of docs/api.md:
/// `{"error":{"code":"<code>","message":"<non-empty>"}}`.
pub fn expect_error(what: &str, answer: &(u16, Value), expected_status: u16, code: &str) {
    let (status, body) = answer;
    assert_eq!(
        (*status, body["error"]["code"].as_str()),
        (expected_status, Some(code)),
        "{what}: expected {expected_status} with error code {code:?}, got {status}: {body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.trim().is_empty(), "{what}: the error has no message: {body}");
}

/// Like `expect_error`, for a raw response; also checks the body is labelled JSON.
pub fn expect_error_response(what: &str, response: &Response, expected_status: u16, code: &str) {
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: error answered with content-type {content_type:?}, not application/json \
         (status {}, body {})",
        response.status,
        response.body_text()
    );
    let body = serde_json::from_slice(&response.body).unwrap_or_else(|error| {
        panic!("{what}: error body is not JSON ({error}): {} {}", response.status, response.body_text())
    });
    expect_error(what, &(response.status, body), expected_status, code);
}

/// An identifier field (`id`, `user_id`, …) as text, whether the node sends ids as
/// strings or numbers; panics naming the field and the object when it is missing.
pub fn id_field(object: &Value, field: &str) -> String {
    match &object[field] {
        Value::String(id) => id.clone(),
        Value::Number(id) => id.to_string(),
        _ => panic!("no id field {field:?} in {object}"),
    }
}

/// The `id` of an object (a post, a media item, a comment).
pub fn id_of(object: &Value) -> String {
    id_field(object, "id")
}

/// The `id` of each item of a list.
pub fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(id_of).collect()
}

/// True when a list of posts (or anything with an `id`) holds `id`.
pub fn holds(items: &[Value], id: &str) -> bool {
    ids(items).iter().any(|item_id| item_id == id)
}

/// A string field; panics naming the field and the object when it is missing.
pub fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object[field].as_str().unwrap_or_else(|| panic!("no string field {field:?} in {object}"))
}

/// Panics unless a media answer is 200 with a JPEG that carries no EXIF at all;
/// returns the decoded image.
pub fn expect_jpeg_without_exif(what: &str, response: &Response) -> image::RgbImage {
    assert_eq!(response.status, 200, "{what}: expected 200, got {}: {}", response.status, response.body_text());
    assert_eq!(response.header("content-type"), Some("image/jpeg"), "{what}: content-type");
    assert!(looks_like_jpeg(&response.body), "{what}: the bytes are not a JPEG");
    assert!(!contains_exif(&response.body), "{what}: the JPEG still carries an EXIF block");
    decode(&response.body)
}

/// Panics unless a media variant is hidden the way docs/api.md hides what a caller
/// may not see: 404 `not_found`, as if it did not exist.
pub fn expect_media_hidden(what: &str, response: &Response) {
    expect_error_response(what, response, 404, "not_found");
}

/// How an `original` may be refused to a signed-in user who does not own it: the
/// 404 `not_found` of docs/api.md, or 403 `forbidden` (allowed by the test brief).
pub const ORIGINAL_REFUSED: &[(u16, &str)] = &[(404, "not_found"), (403, "forbidden")];

/// How an `original` may be refused to an anonymous caller: as above, or 401
/// `unauthorized` since only a signed-in owner may have it.
pub const ORIGINAL_REFUSED_ANONYMOUS: &[(u16, &str)] = &[(404, "not_found"), (403, "forbidden"), (401, "unauthorized")];

/// Panics unless the answer is one of the `allowed` (status, error code) pairs, with
/// the error body of docs/api.md.
pub fn expect_one_of_errors(what: &str, response: &Response, allowed: &[(u16, &str)]) {
    match allowed.iter().find(|(status, _)| *status == response.status) {
        Some((status, code)) => expect_error_response(what, response, *status, code),
        None => panic!("{what}: expected one of {allowed:?}, got {}: {}", response.status, response.body_text()),
    }
}

/// `viewer` opens the post and finds it among `author`'s posts.
pub fn expect_seen_by_id_and_list(client: &Client, viewer: &Account, author: &str, shared: &SharedPhoto) {
    let who = &viewer.handle;
    let post =
        expect_status(&format!("{who} opens {}", shared.post_id), client.get_post(Some(viewer), &shared.post_id), 200);
    assert_eq!(id_of(&post), shared.post_id);
    assert!(holds(&client.user_posts(Some(viewer), author), &shared.post_id), "{who} finds it among {author}'s posts");
}

/// `viewer` opens the post, finds it among `author`'s posts and in their feed, and
/// loads its photo.
pub fn expect_seen(client: &Client, viewer: &Account, author: &str, shared: &SharedPhoto) {
    expect_seen_by_id_and_list(client, viewer, author, shared);
    let who = &viewer.handle;
    assert!(holds(&client.feed(viewer), &shared.post_id), "{who}'s feed holds it");
    let media = client.fetch_media(Some(viewer), &shared.media_id, "display");
    assert_eq!(media.status, 200, "{who} loads its photo: {}", media.body_text());
}

/// For `viewer` the post does not exist: by id, among `author`'s posts, in the feed,
/// in a search for any of `search_words`, and its photo.
pub fn expect_unseen(client: &Client, viewer: &Account, author: &str, shared: &SharedPhoto, search_words: &[&str]) {
    let who = &viewer.handle;
    expect_error(
        &format!("{who} opens {}", shared.post_id),
        &client.get_post(Some(viewer), &shared.post_id),
        404,
        "not_found",
    );
    assert!(!holds(&client.user_posts(Some(viewer), author), &shared.post_id), "{who}: not among {author}'s posts");
    assert!(!holds(&client.feed(viewer), &shared.post_id), "{who}: not in the feed");
    for query in search_words {
        assert!(!holds(&client.search_posts(Some(viewer), query), &shared.post_id), "{who}: not found by search");
    }
    for variant in ["thumb", "display"] {
        let media = client.fetch_media(Some(viewer), &shared.media_id, variant);
        expect_media_hidden(&format!("{who} loads the {variant} of {}", shared.post_id), &media);
    }
}
