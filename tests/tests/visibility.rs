//! Who sees what: Alice shares one photo with everyone, one with her followers and
//! one with nobody. Bob follows her, Carol does not, and a stranger is not signed
//! in. What a caller may not see does not exist for them (404), in every place it
//! could leak: by id, in listings, in search, in the feed and through its media.
//! When Bob unfollows, he loses access.

use edgenode_tests::checks::{
    expect_error, expect_media_hidden, expect_one_of_errors, expect_status, holds, id_of, ORIGINAL_REFUSED,
    ORIGINAL_REFUSED_ANONYMOUS,
};
use edgenode_tests::fixtures::distinct_photo;
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport, ANONYMOUS};

/// One of Alice's posts and the media it carries.
struct Shared {
    post_id: String,
    media_id: String,
}

#[test]
fn each_visibility_reaches_exactly_its_audience() {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");
    let bob = client.join(&client.create_invite(&alice), "bob");
    let carol = client.join(&client.create_invite(&alice), "carol");
    client.follow(&bob, "alice");

    // Each post carries its own photo, so a photo's audience is its post's audience.
    let public = share(&client, &alice, 1, "Morning at the #lighthouse", "public");
    let for_followers = share(&client, &alice, 2, "Evening at the #lighthouse with family", "followers");
    let private = share(&client, &alice, 3, "Note to self #lighthouse keys", "private");

    // Everyone sees the public post; search only ever finds public posts.
    for viewer in [Some(&alice), Some(&bob), Some(&carol), ANONYMOUS] {
        sees(&client, viewer, &public);
        let found = client.search_posts(viewer, "lighthouse");
        assert!(holds(&found, &public.post_id), "search for lighthouse finds the public post");
        assert!(!holds(&found, &for_followers.post_id), "search never finds a followers-only post");
        assert!(!holds(&found, &private.post_id), "search never finds a private post");
        let found_by_tag = client.search_posts(viewer, "%23lighthouse");
        assert!(holds(&found_by_tag, &public.post_id), "search for #lighthouse finds the public post");
        assert!(!holds(&found_by_tag, &for_followers.post_id), "tag search never finds a followers-only post");
        assert!(!holds(&found_by_tag, &private.post_id), "tag search never finds a private post");
    }

    // Followers-only: Alice and Bob, not Carol, not strangers.
    sees(&client, Some(&alice), &for_followers);
    sees(&client, Some(&bob), &for_followers);
    assert!(holds(&client.feed(&bob), &for_followers.post_id), "Bob's feed has the followers-only post");
    does_not_see(&client, Some(&carol), &for_followers);
    does_not_see(&client, ANONYMOUS, &for_followers);

    // Private: Alice only, even though Bob follows her.
    sees(&client, Some(&alice), &private);
    assert!(holds(&client.feed(&alice), &private.post_id), "Alice's feed has her own private post");
    does_not_see(&client, Some(&bob), &private);
    assert!(!holds(&client.feed(&bob), &private.post_id), "Bob's feed lacks Alice's private post");
    does_not_see(&client, Some(&carol), &private);
    does_not_see(&client, ANONYMOUS, &private);

    // Originals: Alice only, whatever the post's visibility.
    for shared in [&public, &for_followers, &private] {
        let original = client.fetch_media(Some(&alice), &shared.media_id, "original");
        assert_eq!(original.status, 200, "Alice fetches her original: {}", original.body_text());
        for viewer in [&bob, &carol] {
            let refused = client.fetch_media(Some(viewer), &shared.media_id, "original");
            expect_one_of_errors(&format!("{} asks for Alice's original", viewer.handle), &refused, ORIGINAL_REFUSED);
        }
        let refused = client.fetch_media(ANONYMOUS, &shared.media_id, "original");
        expect_one_of_errors("a stranger asks for Alice's original", &refused, ORIGINAL_REFUSED_ANONYMOUS);
    }

    // Bob unfollows: the followers-only post is gone for him, his feed included.
    client.unfollow(&bob, "alice");
    does_not_see(&client, Some(&bob), &for_followers);
    assert!(!holds(&client.feed(&bob), &for_followers.post_id), "unfollowing empties Bob's feed of it");
    sees(&client, Some(&bob), &public);
}

/// Uploads a photo and posts it with `visibility`.
fn share(client: &Client, author: &Account, photo_seed: u8, caption: &str, visibility: &str) -> Shared {
    let media_id = id_of(&client.upload_jpeg(author, &distinct_photo(photo_seed)));
    let post_id = id_of(&client.create_post(author, caption, &[&media_id], visibility));
    Shared { post_id, media_id }
}

fn name(viewer: Option<&Account>) -> &str {
    viewer.map_or("a stranger", |account| account.handle.as_str())
}

/// `viewer` can open the post, finds it among Alice's posts, and can load its photo.
fn sees(client: &Client, viewer: Option<&Account>, shared: &Shared) {
    let who = name(viewer);
    let post =
        expect_status(&format!("{who} opens post {}", shared.post_id), client.get_post(viewer, &shared.post_id), 200);
    assert_eq!(id_of(&post), shared.post_id);
    assert!(
        holds(&client.user_posts(viewer, "alice"), &shared.post_id),
        "{who} finds post {} among Alice's posts",
        shared.post_id
    );
    for variant in ["thumb", "display"] {
        let media = client.fetch_media(viewer, &shared.media_id, variant);
        assert_eq!(media.status, 200, "{who} loads the {variant} of post {}: {}", shared.post_id, media.body_text());
    }
}

/// For `viewer` the post does not exist: 404 by id, absent from Alice's posts, and
/// its photo 404 too.
fn does_not_see(client: &Client, viewer: Option<&Account>, shared: &Shared) {
    let who = name(viewer);
    let what = format!("{who} opens post {}", shared.post_id);
    expect_error(&what, &client.get_post(viewer, &shared.post_id), 404, "not_found");
    assert!(
        !holds(&client.user_posts(viewer, "alice"), &shared.post_id),
        "{who} does not find post {} among Alice's posts",
        shared.post_id
    );
    for variant in ["thumb", "display"] {
        let media = client.fetch_media(viewer, &shared.media_id, variant);
        expect_media_hidden(&format!("{who} loads the {variant} of post {}", shared.post_id), &media);
    }
}

/// Public photos are answered from memory once proved public; the proof must not
/// outlive the post's visibility: made private or deleted, the photo is gone for
/// strangers at once, on every transport.
#[test]
fn a_photo_served_from_memory_disappears_with_its_post() {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");
    let bob = client.join(&client.create_invite(&alice), "bob");
    let narrowed = share(&client, &alice, 4, "Harbour at dawn", "public");
    let deleted = share(&client, &alice, 5, "Harbour at dusk", "public");
    for transport in [Transport::Http1, Transport::Http2, Transport::Http3] {
        let client = Client::new(&node, transport);
        for _ in 0..3 {
            sees(&client, ANONYMOUS, &narrowed);
            sees(&client, ANONYMOUS, &deleted);
            sees(&client, Some(&bob), &narrowed);
        }
    }
    let (status, body) = client.send_json(
        "PATCH",
        &format!("/api/v1/posts/{}", narrowed.post_id),
        Some(&alice.token),
        &serde_json::json!({"visibility": "private"}),
    );
    assert_eq!(status, 200, "Alice makes her post private: {body}");
    client.delete_post(&alice, &deleted.post_id);
    for transport in [Transport::Http1, Transport::Http2, Transport::Http3] {
        let client = Client::new(&node, transport);
        does_not_see(&client, ANONYMOUS, &narrowed);
        does_not_see(&client, Some(&bob), &narrowed);
        for variant in ["thumb", "display"] {
            let media = client.fetch_media(ANONYMOUS, &deleted.media_id, variant);
            expect_media_hidden(&format!("a stranger loads the {variant} of a deleted post"), &media);
        }
    }
    sees(&client, Some(&alice), &narrowed);
}
