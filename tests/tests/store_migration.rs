//! A data dir written by an earlier edgenode opens with this one and loses nothing.
//!
//! `tests/fixtures/store-v2/` is the "version before", frozen: a household's data dir
//! (the database and its photos) written by edgenode at schema 2 on redb's v2 file
//! format, made by `write_the_store_fixture` below through the real binary and
//! committed as it came out, with a manifest of what was written. The tests copy it
//! to a temporary dir, open it with today's code (which moves the file to redb's v3
//! format and the schema forward) and read everything back, once through the `Store`
//! and once through the real binary over HTTP, and again after a restart.

use std::path::{Path, PathBuf};

use edgenode::store::Store;
use edgenode_tests::checks::{expect_jpeg_without_exif, expect_status, id_of, ids, text};
use edgenode_tests::fixtures::distinct_photo;
use edgenode_tests::steps::PASSWORD;
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport, ANONYMOUS};
use serde_json::{json, Value};

/// The frozen data dir and its manifest.
fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store-v2")
}

fn manifest() -> Value {
    let path = fixture_dir().join("manifest.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|error| panic!("parsing {}: {error}", path.display()))
}

/// A fresh copy of the fixture's data dir (the committed one is never opened).
fn copy_of_fixture(name: &str) -> PathBuf {
    let target = std::env::temp_dir().join(format!("edgenode-store-migration-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&target);
    copy_dir(&fixture_dir().join("data"), &target);
    target
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|error| panic!("creating {}: {error}", to.display()));
    let entries = std::fs::read_dir(from).unwrap_or_else(|error| panic!("reading {}: {error}", from.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|error| panic!("copying {}: {error}", entry.path().display()));
        }
    }
}

/// Whether the database file is on redb's v3 file format: `upgrade` says there was
/// nothing to do. On a v2 file it upgrades it, so call it on a copy.
fn is_redb_v3(database: &Path) -> bool {
    let mut db =
        redb::Database::open(database).unwrap_or_else(|error| panic!("opening {}: {error}", database.display()));
    !db.upgrade().expect("upgrade check")
}

fn string_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or_else(|| panic!("manifest: `{field}` is a string in {value}"))
}

fn user_id_of<'a>(manifest: &'a Value, handle: &str) -> &'a str {
    manifest["users"]
        .as_array()
        .expect("manifest users")
        .iter()
        .find(|user| user["handle"] == json!(handle))
        .map(|user| string_of(user, "user_id"))
        .unwrap_or_else(|| panic!("manifest: no user {handle}"))
}

/// Everything the manifest lists, read through the store.
fn expect_everything_in_store(store: &Store, manifest: &Value, when: &str) {
    for user in manifest["users"].as_array().expect("manifest users") {
        let handle = string_of(user, "handle");
        let found = store.user_by_handle(handle).unwrap().unwrap_or_else(|| panic!("{when}: user {handle} is gone"));
        assert_eq!(found.user_id, string_of(user, "user_id"), "{when}: {handle}'s id");
        assert_eq!(json!(found.admin), user["admin"], "{when}: {handle}'s admin flag");
        assert!(store.credential(&found.user_id).unwrap().is_some(), "{when}: {handle}'s password hash is kept");
    }
    for post in manifest["posts"].as_array().expect("manifest posts") {
        let post_id = string_of(post, "post_id");
        let found = store.post(post_id).unwrap().unwrap_or_else(|| panic!("{when}: post {post_id} is gone"));
        assert_eq!(found.caption, string_of(post, "caption"), "{when}: post {post_id}");
        assert_eq!(found.author_id, user_id_of(manifest, string_of(post, "author")), "{when}: post {post_id}");
        assert_eq!(json!(found.visibility), post["visibility"], "{when}: post {post_id}");
        assert_eq!(json!(found.media), post["media"], "{when}: post {post_id}");
        let (likes, _) = store.likes(post_id, None).unwrap();
        assert_eq!(json!(likes), post["like_count"], "{when}: likes of post {post_id}");
        let comments: Vec<String> =
            store.comments(post_id, None, 100).unwrap().into_iter().map(|comment| comment.text).collect();
        assert_eq!(json!(comments), post["comments"], "{when}: comments of post {post_id}");
    }
    let deleted = string_of(manifest, "deleted_post_id");
    assert!(store.post(deleted).unwrap().is_none(), "{when}: the deleted post stays deleted");
    for follow in manifest["follows"].as_array().expect("manifest follows") {
        let (follower, followee) = (follow[0].as_str().unwrap(), follow[1].as_str().unwrap());
        let follows = store.follows(user_id_of(manifest, follower), user_id_of(manifest, followee)).unwrap();
        assert!(follows, "{when}: {follower} follows {followee}");
    }
    for media in manifest["media"].as_array().expect("manifest media") {
        let media_id = string_of(media, "id");
        let found = store.media(media_id).unwrap().unwrap_or_else(|| panic!("{when}: media {media_id} is gone"));
        assert_eq!((json!(found.width), json!(found.height)), (media["width"].clone(), media["height"].clone()));
        let owner = user_id_of(manifest, string_of(media, "owner"));
        assert!(store.owns_media(media_id, owner).unwrap(), "{when}: media {media_id} keeps its owner");
    }
}

#[test]
fn a_database_written_before_the_v3_format_opens_and_keeps_everything() {
    let manifest = manifest();
    let dir = copy_of_fixture("store");
    let database = dir.join("edgenode.redb");
    {
        // The fixture is what it claims to be: a v2 file (checked on a copy of the
        // copy, as the check upgrades it).
        let probe = dir.with_extension("probe.redb");
        std::fs::copy(&database, &probe).unwrap();
        assert!(!is_redb_v3(&probe), "the fixture is on redb's v2 file format, or this test tests nothing");
        std::fs::remove_file(&probe).unwrap();
    }

    let store = Store::open(&dir).expect("a database of the version before opens");
    expect_everything_in_store(&store, &manifest, "after the upgrade");
    let (records, tombstones, digest) = store.replication_digest().unwrap();
    assert!(
        records > tombstones && tombstones > 0,
        "replicated records and the deleted post's tombstone: {records}, {tombstones}"
    );
    drop(store);
    assert!(is_redb_v3(&database), "the first open moved the file to redb's v3 format");

    let store = Store::open(&dir).expect("the upgraded database opens again");
    expect_everything_in_store(&store, &manifest, "after a restart");
    assert_eq!(store.replication_digest().unwrap(), (records, tombstones, digest), "the same records after a restart");
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The posts of the manifest that `viewer` may see, newest first (ids grow with time).
fn visible_post_ids(manifest: &Value, author: &str, viewer: Option<&str>) -> Vec<String> {
    let follows = |follower: &str| {
        manifest["follows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|pair| pair[0] == json!(follower) && pair[1] == json!(author))
    };
    let mut visible: Vec<String> = manifest["posts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|post| post["author"] == json!(author))
        .filter(|post| match (string_of(post, "visibility"), viewer) {
            ("public", _) => true,
            ("followers", Some(viewer)) => viewer == author || follows(viewer),
            (_, Some(viewer)) => viewer == author,
            (_, None) => false,
        })
        .map(|post| string_of(post, "post_id").to_owned())
        .collect();
    visible.sort();
    visible.reverse();
    visible
}

fn expect_everything_over_http(client: &Client, manifest: &Value, when: &str) {
    let accounts: Vec<Account> =
        manifest["users"].as_array().unwrap().iter().map(|user| client.sign_in(string_of(user, "handle"))).collect();
    for author in ["alice", "bob"] {
        let anonymous = ids(&client.user_posts(ANONYMOUS, author));
        assert_eq!(anonymous, visible_post_ids(manifest, author, None), "{when}: {author}'s posts, anonymous");
        for viewer in &accounts {
            let seen = ids(&client.user_posts(Some(viewer), author));
            let expected = visible_post_ids(manifest, author, Some(&viewer.handle));
            assert_eq!(seen, expected, "{when}: {author}'s posts as {}", viewer.handle);
        }
    }
    let alice = accounts.iter().find(|account| account.handle == "alice").expect("alice signs in");
    for post in manifest["posts"].as_array().unwrap() {
        let post_id = string_of(post, "post_id");
        let what = format!("{when}: alice opens post {post_id}");
        let (status, answer) = client.get_post(Some(alice), post_id);
        if string_of(post, "visibility") == "private" && string_of(post, "author") != "alice" {
            assert_eq!(status, 404, "{what}: {answer}");
            continue;
        }
        let answer = expect_status(&what, (status, answer), 200);
        assert_eq!(answer["caption"], post["caption"], "{what}: {answer}");
        assert_eq!(answer["like_count"], post["like_count"], "{what}: {answer}");
        let media: Vec<String> = answer["media"].as_array().unwrap().iter().map(id_of).collect();
        assert_eq!(json!(media), post["media"], "{what}: {answer}");
        let comments: Vec<Value> =
            client.comments(Some(alice), post_id).iter().map(|comment| json!(text(comment, "text"))).collect();
        assert_eq!(json!(comments), post["comments"], "{what}: comments");
    }
    let (status, _) = client.get_post(Some(alice), string_of(manifest, "deleted_post_id"));
    assert_eq!(status, 404, "{when}: the deleted post stays deleted");
    for media in manifest["media"].as_array().unwrap() {
        let thumb = client.fetch_media(ANONYMOUS, string_of(media, "id"), "thumb");
        expect_jpeg_without_exif(&format!("{when}: the thumb of a public photo"), &thumb);
    }
}

#[test]
fn the_binary_serves_a_data_dir_written_before_the_v3_format() {
    let manifest = manifest();
    let dir = copy_of_fixture("binary");
    let mut node = Node::start(NodeOptions { data_dir: Some(dir.clone()), ..NodeOptions::default() });
    let mut client = Client::new(&node, Transport::Http2);
    expect_everything_over_http(&client, &manifest, "first start on the old data dir");

    node.terminate();
    assert!(is_redb_v3(&dir.join("edgenode.redb")), "the node moved its database to redb's v3 format");
    node.restart();
    client.reconnect_to(&node);
    expect_everything_over_http(&client, &manifest, "after a restart");
    // And it still takes writes.
    let bob = client.sign_in("bob");
    let post_id = id_of(&client.create_post(&bob, "Still here #harbour", &[], "public"));
    expect_status("anyone opens the new post", client.get_post(ANONYMOUS, &post_id), 200);
}

/// Writes `tests/fixtures/store-v2/` with the binary under test: run it once with the
/// edgenode whose data you want to freeze (`EDGENODE_BIN=…`), on a checkout without
/// that dir, and commit what it wrote. It refuses to overwrite a fixture.
#[test]
#[ignore = "generator: writes tests/fixtures/store-v2 with the binary under test; run by hand"]
fn write_the_store_fixture() {
    let fixture = fixture_dir();
    assert!(
        !fixture.exists(),
        "{} exists: it is the frozen \"version before\"; remove it first to rewrite it",
        fixture.display()
    );
    let mut node = Node::start(NodeOptions::default());
    let client = Client::new(&node, Transport::Http2);
    let alice = client.claim_admin(&node, "alice");
    let bob = client.join(&client.create_invite(&alice), "bob");
    let carol = client.join(&client.create_invite(&alice), "carol");
    let dawn = client.upload_jpeg(&alice, &distinct_photo(1));
    let kites = client.upload_jpeg(&bob, &distinct_photo(2));

    let mut posts = Vec::new();
    let mut post = |author: &Account, caption: &str, media: &[&Value], visibility: &str| -> String {
        let media_ids: Vec<String> = media.iter().map(|media| id_of(media)).collect();
        let media_refs: Vec<&str> = media_ids.iter().map(String::as_str).collect();
        let post_id = id_of(&client.create_post(author, caption, &media_refs, visibility));
        posts.push(json!({
            "post_id": post_id, "author": author.handle, "caption": caption,
            "visibility": visibility, "media": media_ids, "like_count": 0, "comments": [],
        }));
        post_id
    };
    let harbour = post(&alice, "Harbour at dawn #harbour", &[&dawn], "public");
    post(&alice, "Family only: the new boat", &[], "followers");
    post(&alice, "Note to self: fix the mast", &[], "private");
    let sky = post(&bob, "Kites over the dunes #sky", &[&kites], "public");
    post(&bob, "Only for friends", &[], "followers");
    let deleted = post(&alice, "Posted by mistake", &[], "public");
    posts.pop();
    client.delete_post(&alice, &deleted);

    client.follow(&bob, "alice");
    client.follow(&carol, "alice");
    client.follow(&alice, "bob");
    let mut likes = std::collections::BTreeMap::new();
    for (liker, post_id) in [(&bob, &harbour), (&carol, &harbour), (&alice, &sky)] {
        let answer = client.like(liker, post_id);
        likes.insert(post_id.clone(), answer["like_count"].clone());
    }
    let comments = [(&bob, &harbour, "Lovely light"), (&carol, &harbour, "Where is this?"), (&alice, &sky, "Windy!")];
    for (author, post_id, comment) in comments {
        client.comment(author, post_id, comment);
    }
    for post in &mut posts {
        let post_id = post["post_id"].as_str().unwrap().to_owned();
        if let Some(count) = likes.get(&post_id) {
            post["like_count"] = count.clone();
        }
        post["comments"] =
            json!(comments.iter().filter(|(_, id, _)| **id == post_id).map(|(_, _, text)| *text).collect::<Vec<_>>());
    }
    let media_entry = |media: &Value, owner: &Account| json!({ "id": id_of(media), "owner": owner.handle, "width": media["width"], "height": media["height"] });
    let user_entry = |account: &Account, admin: bool| json!({ "handle": account.handle, "user_id": account.user_id, "admin": admin });
    let manifest = json!({
        "written_by": format!("{} (edgenode-tests {})", edgenode_tests::node::edgenode_binary().display(), env!("CARGO_PKG_VERSION")),
        "password": PASSWORD,
        "users": [user_entry(&alice, true), user_entry(&bob, false), user_entry(&carol, false)],
        "posts": posts,
        "deleted_post_id": deleted,
        "follows": [["bob", "alice"], ["carol", "alice"], ["alice", "bob"]],
        "media": [media_entry(&dawn, &alice), media_entry(&kites, &bob)],
    });
    node.terminate();

    // Only what is the user's data: the database and the photos. The node's key, CA
    // and tokens are made afresh by whoever starts on a copy.
    copy_dir(&node.data_dir().join("media"), &fixture.join("data/media"));
    std::fs::copy(node.data_dir().join("edgenode.redb"), fixture.join("data/edgenode.redb")).unwrap();
    let text = serde_json::to_string_pretty(&manifest).unwrap() + "\n";
    std::fs::write(fixture.join("manifest.json"), text).unwrap();
}
