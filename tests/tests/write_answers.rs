//! A write answers with what happened. Two siblings: photos are uploaded through one
//! and posts that carry them are made at once through the other, while the photo's
//! owner record has replicated there and its files are still on their way. A post
//! that was written is acknowledged (201, saying its photos are still coming); a
//! post that was not written is answered with an error and does not exist. So a
//! client that retries what failed never makes a duplicate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgenode_tests::checks::id_of;
use edgenode_tests::client::{Client, Transport};
use edgenode_tests::cluster::{converge, preloaded_siblings};
use edgenode_tests::fixtures::noisy_photo;
use edgenode_tests::steps::Account;
use serde_json::{json, Value};

/// Siblings agree within this, on loopback.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// A post is acknowledged within this of its photo's upload (once its owner record
/// replicated; until then the node refuses the photo as unknown).
const ACKNOWLEDGED_WITHIN: Duration = Duration::from_secs(10);
/// Photos uploaded: at least the minimum, and more (up to the maximum) until a post
/// was made while its photo's files were still on their way.
const ROUNDS_MIN: u8 = 3;
const ROUNDS_MAX: u8 = 12;
/// Large enough that copying its files to the sibling takes a moment.
const PHOTO_SIZE: (u32, u32) = (1600, 1200);
/// Failed answers quoted in a failure message.
const FAILURES_SHOWN_MAX: usize = 5;

/// What one client saw: the captions the node acknowledged, by post id, every
/// successful answer, and every answer that was not a success.
#[derive(Default)]
struct Outcomes {
    acknowledged: BTreeMap<String, String>,
    successes: Vec<Value>,
    failures: Vec<String>,
    /// Successes that said the post's photos were still coming.
    pending_answers: usize,
}

impl Outcomes {
    /// How many answers were not a success, and the first few.
    fn failures_summary(&self) -> String {
        let shown: Vec<&String> = self.failures.iter().take(FAILURES_SHOWN_MAX).collect();
        format!("{} answers were not a success, first {shown:#?}", self.failures.len())
    }

    fn succeeded(&mut self, post: Value) {
        self.pending_answers += usize::from(post["media_pending"] == json!(true));
        self.acknowledged.insert(id_of(&post), post["caption"].as_str().expect("a caption").to_owned());
        self.successes.push(post);
    }
}

/// Posts `caption` with `media_id` through `client` until the node acknowledges it,
/// as a client that retries failures would; returns the acknowledged post.
fn post_until_acknowledged(
    client: &Client,
    author: &Account,
    caption: &str,
    media_id: &str,
    outcomes: &mut Outcomes,
) -> Value {
    let body = json!({"caption": caption, "media": [media_id], "visibility": "public"});
    let started = Instant::now();
    loop {
        let (status, answer) = client.post_json("/api/v1/posts", Some(&author.token), &body);
        if status == 201 {
            outcomes.succeeded(answer.clone());
            return answer;
        }
        // Refused as unknown until the photo's owner record has replicated here.
        if !(status == 404 && answer["error"]["code"] == json!("unknown_media")) {
            outcomes.failures.push(format!("POST {caption:?}: {status} {answer}"));
        }
        assert!(
            started.elapsed() < ACKNOWLEDGED_WITHIN,
            "{caption:?} was not acknowledged within {ACKNOWLEDGED_WITHIN:?}; last answer {status} {answer}"
        );
    }
}

/// The captions of `author`'s posts as a node lists them, by post id.
fn listed_captions(client: &Client, author: &Account) -> BTreeMap<String, String> {
    client
        .user_posts(Some(author), &author.handle)
        .iter()
        .map(|post| (id_of(post), post["caption"].as_str().expect("a caption").to_owned()))
        .collect()
}

#[test]
fn posts_through_a_sibling_with_a_photo_still_on_its_way_are_acknowledged_once_and_failures_write_nothing() {
    let [upload_node, post_node] = preloaded_siblings(["answers-upload", "answers-post"]);
    let (at_upload, at_post) = (Client::new(&upload_node, Transport::Http2), Client::new(&post_node, Transport::Http2));
    let ada = at_upload.claim_admin(&upload_node, "ada");
    converge(&[(&at_upload, &upload_node), (&at_post, &post_node)], CONVERGE_WITHIN);
    let ada_there = at_post.sign_in("ada");

    let mut outcomes = Outcomes::default();
    let mut pending_post = None;
    let mut rounds = 0;
    while rounds < ROUNDS_MIN || (outcomes.pending_answers == 0 && rounds < ROUNDS_MAX) {
        let (width, height) = PHOTO_SIZE;
        let media_id = id_of(&at_upload.upload_jpeg(&ada, &noisy_photo(rounds, width, height)));
        let caption = format!("round {rounds}");
        let pending_before = outcomes.pending_answers;
        let post = post_until_acknowledged(&at_post, &ada_there, &caption, &media_id, &mut outcomes);
        // And an edit at once, likely while the photo is still on its way too.
        let edited = format!("{caption}, edited");
        let path = format!("/api/v1/posts/{}", id_of(&post));
        let (status, answer) = at_post.send_json("PATCH", &path, Some(&ada_there.token), &json!({"caption": edited}));
        if status == 200 {
            outcomes.succeeded(answer);
        } else {
            outcomes.failures.push(format!("PATCH {caption:?}: {status} {answer}"));
        }
        if outcomes.pending_answers > pending_before {
            pending_post.get_or_insert_with(|| id_of(&post));
        }
        rounds += 1;
    }
    println!(
        "{rounds} photos, {} answers said the photos were still coming, {} other failures",
        outcomes.pending_answers,
        outcomes.failures.len()
    );

    let took = converge(&[(&at_upload, &upload_node), (&at_post, &post_node)], CONVERGE_WITHIN);
    println!("siblings converged {} ms after the last write", took.as_millis());
    for (client, author, node) in [(&at_upload, &ada, "upload node"), (&at_post, &ada_there, "post node")] {
        assert_eq!(
            listed_captions(client, author),
            outcomes.acknowledged,
            "on the {node}, ada's posts are exactly the acknowledged ones with the acknowledged captions; {}",
            outcomes.failures_summary()
        );
    }
    assert_eq!(outcomes.acknowledged.len(), usize::from(rounds), "one post per photo");
    assert!(outcomes.failures.is_empty(), "no write failed here: {}", outcomes.failures_summary());

    // Each success says whether the post's photo is here yet, and which.
    for post in &outcomes.successes {
        let pending = post["media_pending"].as_bool().unwrap_or_else(|| panic!("no media_pending: {post}"));
        assert_eq!(post["media"][0]["pending"].as_bool().unwrap_or(false), pending, "{post}");
        assert!(post["media"][0]["id"].is_string(), "{post}");
    }

    // The window was exercised: some write was acknowledged while its photo was still
    // on its way, and that post has its photo now.
    let pending_post = pending_post.unwrap_or_else(|| {
        panic!("no post was made while its photo's files were on their way, in {rounds} tries; make the photos larger")
    });
    let (status, post) = at_post.get_post(Some(&ada_there), &pending_post);
    assert_eq!(status, 200, "{post}");
    assert_eq!(post["media_pending"], json!(false), "{post}");
    assert!(post["media"][0]["variants"]["thumb"]["width"].is_u64(), "the photo arrived: {post}");
}
