//! A user takes their data from one node to another: Alice downloads her archive on
//! the node she has used (photos, captions, comments, likes, follows), and imports
//! it into a new account on a second node, which then shows the same captions, dates,
//! visibility and photo bytes. A second import adds nothing. Damaged archives (a
//! photo's byte changed, a manifest hash wrong, cut short, a `../x` entry) are refused
//! with a clear error and leave the account as it was.

use std::collections::BTreeMap;
use std::io::Read;

use edgenode_tests::checks::{expect_status, id_of, text};
use edgenode_tests::fixtures::{distinct_photo, exif_gps_present, sha256_hex};
use edgenode_tests::{Account, Client, Node, NodeOptions, Transport};
use serde_json::{json, Value};

/// Alice's posts: caption, photos (seeds of `distinct_photo`), visibility.
const POSTS: [(&str, &[u8], &str); 4] = [
    ("First light on the #harbour", &[11], "public"),
    ("Two boats, one evening", &[12, 13], "followers"),
    ("Just for me", &[14], "private"),
    ("No photo today, only words", &[], "public"),
];

#[test]
fn a_user_moves_their_posts_to_another_node() {
    let home = Node::start(NodeOptions::default());
    let over_h2 = Client::new(&home, Transport::Http2);
    let alice = over_h2.claim_admin(&home, "alice");
    let invite = over_h2.create_invite(&alice);
    let bob = over_h2.join(&invite, "bob");

    for (caption, seeds, visibility) in POSTS {
        let mut media_ids = Vec::new();
        for seed in seeds {
            media_ids.push(id_of(&over_h2.upload_jpeg(&alice, &distinct_photo(*seed))));
        }
        let media_ids: Vec<&str> = media_ids.iter().map(String::as_str).collect();
        over_h2.create_post(&alice, caption, &media_ids, visibility);
    }
    // Some life around them: Bob's post, which Alice follows, likes and answers.
    let bobs_post = id_of(&over_h2.create_post(&bob, "Hello from Bob", &[], "public"));
    over_h2.follow(&alice, "bob");
    over_h2.like(&alice, &bobs_post);
    over_h2.comment(&alice, &bobs_post, "Lovely!");
    let posts_at_home = own_posts(&over_h2, &alice);
    assert_eq!(posts_at_home.len(), POSTS.len());

    // The export, over HTTP/2, and once over HTTP/1.1.
    let archive = export(&over_h2, &alice);
    let files = the_archive_is_as_documented(&archive);
    the_data_files_hold_alices_data(&files, &posts_at_home, &bobs_post);
    let over_h1 = Client::new(&home, Transport::Http1);
    let again = export(&over_h1, &alice);
    assert_eq!(
        the_archive_is_as_documented(&again).keys().collect::<Vec<_>>(),
        files.keys().collect::<Vec<_>>(),
        "a second export over HTTP/1.1 holds the same files"
    );

    // A new account on another node.
    let away = Node::start(NodeOptions::default());
    let away_h2 = Client::new(&away, Transport::Http2);
    let carol = away_h2.claim_admin(&away, "carol");

    // Damaged archives are refused whole, and change nothing.
    for (damage, damaged, expected_status, expected_code, named) in damaged_archives(&archive) {
        let answer = import(&away_h2, &carol, damaged);
        let (status, body) = (answer.status, answer.json());
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (expected_status, Some(expected_code)),
            "importing an archive with {damage}: {body}"
        );
        assert!(
            message.contains(named.as_str()),
            "importing an archive with {damage}: the message names {named:?}: {message}"
        );
        assert_eq!(own_posts(&away_h2, &carol).len(), 0, "after the archive with {damage}: no post was written");
        assert_eq!(storage_used(&away_h2, &carol), 0, "after the archive with {damage}: no photo was kept");
    }

    // The real archive: every post with its photos, captions, dates and visibility.
    let summary =
        expect_status("importing the archive", status_and_json(import(&away_h2, &carol, archive.clone())), 200);
    assert_eq!(summary["posts"], json!({"imported": 4, "skipped": 0}), "{summary}");
    assert_eq!(summary["photos"], json!({"imported": 4, "skipped": 0}), "{summary}");
    assert_eq!(summary["not_imported"], json!({"comments": 1, "likes": 1, "follows": 1}), "{summary}");
    let posts_away = own_posts(&away_h2, &carol);
    the_posts_are_the_same((&over_h2, &alice), (&away_h2, &carol), &posts_at_home, &posts_away);
    assert!(storage_used(&away_h2, &carol) > 0, "the photos count against carol's quota");

    // Importing it again, over HTTP/3, adds nothing.
    let away_h3 = Client::new(&away, Transport::Http3);
    let second = expect_status("importing the archive again", status_and_json(import(&away_h3, &carol, archive)), 200);
    assert_eq!(second["posts"], json!({"imported": 0, "skipped": 4}), "{second}");
    assert_eq!(second["photos"], json!({"imported": 0, "skipped": 4}), "{second}");
    assert_eq!(own_posts(&away_h2, &carol).len(), POSTS.len(), "no post is there twice");
}

fn export(client: &Client, user: &Account) -> Vec<u8> {
    let response = client.request("GET", "/api/v1/me/export", Some(&user.token), &[], Vec::new());
    assert_eq!(response.status, 200, "GET /api/v1/me/export: {}", response.body_text());
    assert_eq!(response.header("content-type"), Some("application/x-tar"));
    let disposition = response.header("content-disposition").unwrap_or_default();
    assert!(
        disposition.starts_with("attachment; filename=\"edgenode-export-alice-") && disposition.ends_with(".tar\""),
        "the browser saves it under a name that says what it is: {disposition:?}"
    );
    response.body
}

fn import(client: &Client, user: &Account, archive: Vec<u8>) -> edgenode_tests::Response {
    client.request("POST", "/api/v1/me/import", Some(&user.token), &[("content-type", "application/x-tar")], archive)
}

fn status_and_json(response: edgenode_tests::Response) -> (u16, Value) {
    let json = response.json();
    (response.status, json)
}

fn own_posts(client: &Client, user: &Account) -> Vec<Value> {
    let path = format!("/api/v1/users/{}/posts?limit=100", user.handle);
    let list = expect_status("the user's own posts", client.get_json(&path, Some(&user.token)), 200);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn storage_used(client: &Client, user: &Account) -> u64 {
    let path = format!("/api/v1/users/{}/quota", user.handle);
    let quota = expect_status("the user's quota", client.get_json(&path, Some(&user.token)), 200);
    quota["storage_bytes_used"].as_u64().expect("storage_bytes_used")
}

/// Every entry of a tar: name → bytes. Panics unless it reads as a whole tar.
fn entries(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut reader = tar::Archive::new(archive);
    for entry in reader.entries().expect("a tar archive") {
        let mut entry = entry.expect("a whole tar entry");
        let name = entry.path().expect("a path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("the entry's bytes");
        files.insert(name, bytes);
    }
    files
}

/// The layout of docs/export.md: the JSON files and media/, every file but the
/// manifest listed in it with its SHA-256 and size.
fn the_archive_is_as_documented(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let files = entries(archive);
    for name in ["manifest.json", "profile.json", "posts.json", "comments.json", "likes.json", "follows.json"] {
        assert!(files.contains_key(name), "the archive has {name}: {:?}", files.keys().collect::<Vec<_>>());
    }
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest.json is JSON");
    assert_eq!(manifest["format"], 1);
    let listed = manifest["files"].as_array().expect("manifest files");
    assert_eq!(listed.len(), files.len() - 1, "the manifest lists every other file: {manifest}");
    for file in listed {
        let path = text(file, "path");
        let bytes = files.get(path).unwrap_or_else(|| panic!("{path} is listed and in the archive"));
        assert_eq!(text(file, "sha256"), sha256_hex(bytes), "{path}: the manifest's hash is the file's");
        assert_eq!(file["bytes"].as_u64(), Some(bytes.len() as u64), "{path}: the manifest's size is the file's");
    }
    files
}

fn the_data_files_hold_alices_data(files: &BTreeMap<String, Vec<u8>>, posts_at_home: &[Value], bobs_post: &str) {
    let json_of = |name: &str| -> Value { serde_json::from_slice(&files[name]).expect("JSON") };
    assert_eq!(json_of("profile.json")["user"]["handle"], "alice");
    let posts = json_of("posts.json");
    let exported = posts["posts"].as_array().expect("posts");
    assert_eq!(exported.len(), posts_at_home.len());
    for at_home in posts_at_home {
        let post = exported.iter().find(|post| post["id"] == at_home["id"]).expect("every post is exported");
        assert_eq!(post["caption"], at_home["caption"]);
        assert_eq!(post["created_at"], at_home["created_at"]);
        assert_eq!(post["visibility"], at_home["visibility"]);
        let photos = post["photos"].as_array().expect("photos");
        assert_eq!(photos.len(), at_home["media"].as_array().map_or(0, Vec::len));
        for photo in photos {
            assert!(files.contains_key(photo.as_str().expect("a path")), "{photo} is in the archive");
        }
    }
    let media: Vec<&String> = files.keys().filter(|name| name.starts_with("media/")).collect();
    assert_eq!(media.len(), 4, "every original, once: {media:?}");
    assert_eq!(json_of("comments.json")["comments"][0]["text"], "Lovely!");
    assert_eq!(json_of("likes.json")["likes"][0]["post_id"], bobs_post);
    assert_eq!(json_of("follows.json")["follows"][0]["handle"], "bob");
}

/// The imported posts (`away`, read by their new owner) against the originals
/// (`at_home`): captions, dates, visibility, and each photo's original bytes.
fn the_posts_are_the_same(
    (home, alice): (&Client, &Account),
    (client, owner): (&Client, &Account),
    at_home: &[Value],
    away: &[Value],
) {
    let captions = |posts: &[Value]| posts.iter().map(|post| post["caption"].clone()).collect::<Vec<_>>();
    assert_eq!(captions(away), captions(at_home), "the same posts, in the same order (newest first)");
    for (home_post, away_post) in at_home.iter().zip(away) {
        let caption = text(home_post, "caption");
        assert_eq!(away_post["created_at"], home_post["created_at"], "{caption}: its date is kept");
        assert_eq!(away_post["visibility"], home_post["visibility"], "{caption}: its visibility is kept");
        assert_eq!(away_post["tags"], home_post["tags"], "{caption}: its tags");
        assert_eq!(away_post["author"]["handle"], owner.handle.as_str());
        let home_media = home_post["media"].as_array().expect("media");
        let away_media = away_post["media"].as_array().expect("media");
        assert_eq!(away_media.len(), home_media.len(), "{caption}: every photo");
        for (home_photo, away_photo) in home_media.iter().zip(away_media) {
            let original = |client: &Client, user: &Account, photo: &Value| {
                let path = format!("/api/v1/media/{}/original", id_of(photo));
                let original = client.request("GET", &path, Some(&user.token), &[], Vec::new());
                assert_eq!(original.status, 200, "{caption}: {path}: {}", original.body_text());
                original.body
            };
            let away_bytes = original(client, owner, away_photo);
            let home_bytes = original(home, alice, home_photo);
            assert_eq!(sha256_hex(&away_bytes), sha256_hex(&home_bytes), "{caption}: the same photo bytes");
            assert!(!exif_gps_present(&away_bytes), "{caption}: still without its location");
        }
    }
}

/// The export with one kind of damage each: (what, archive, the status and error code
/// it must get, what its message must name).
fn damaged_archives(archive: &[u8]) -> Vec<(&'static str, Vec<u8>, u16, &'static str, String)> {
    let files = entries(archive);
    let photo_name = files.keys().find(|name| name.starts_with("media/")).expect("a photo").clone();

    // One byte of a photo changed, in place (the tar headers stay valid).
    let mut flipped = archive.to_vec();
    let position = {
        let mut reader = tar::Archive::new(archive);
        let mut entries = reader.entries().expect("a tar archive");
        let entry = entries
            .find_map(|entry| {
                let entry = entry.expect("an entry");
                (entry.path().expect("a path").to_string_lossy() == photo_name).then(|| entry.raw_file_position())
            })
            .expect("the photo's entry");
        entry as usize
    };
    flipped[position + 200] ^= 0x01;

    // A manifest whose hash of posts.json is wrong (the file itself untouched).
    let mut manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("JSON");
    for file in manifest["files"].as_array_mut().expect("files") {
        if file["path"] == "posts.json" {
            file["sha256"] = json!("0".repeat(64));
        }
    }
    let mut wrong_manifest = files.clone();
    wrong_manifest.insert("manifest.json".to_owned(), serde_json::to_vec(&manifest).expect("JSON"));

    // Cut in the middle of the photos.
    let truncated = archive[..archive.len() / 2].to_vec();

    // An entry that would land outside the folder it is unpacked into.
    let mut escaping = build(&files);
    escaping = with_raw_entry(escaping, "../x", b"outside");

    vec![
        ("one byte of a photo changed", flipped, 422, "archive_damaged", photo_name),
        ("a wrong hash in manifest.json", build(&wrong_manifest), 422, "archive_damaged", "posts.json".to_owned()),
        ("its second half cut off", truncated, 422, "archive_damaged", "truncated".to_owned()),
        ("an entry named ../x", escaping, 400, "bad_archive", "../x".to_owned()),
    ]
}

/// A tar of `files`, manifest first, as the node writes it.
fn build(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut names: Vec<&String> = files.keys().collect();
    names.sort_by_key(|name| (name.as_str() != "manifest.json", name.as_str()));
    for name in names {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).expect("a valid name");
        header.set_size(files[name].len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, files[name].as_slice()).expect("appending");
    }
    builder.into_inner().expect("a finished tar")
}

/// `archive` with one more regular file whose name is written as is (the tar crate
/// refuses `..` in names it is given, as an honest writer should).
fn with_raw_entry(archive: Vec<u8>, name: &str, bytes: &[u8]) -> Vec<u8> {
    // Drop the two zero blocks that end the archive, add the entry, end it again.
    let end = archive.len() - 1024;
    assert!(archive[end..].iter().all(|byte| *byte == 0), "a tar ends with two zero blocks");
    let mut out = archive[..end].to_vec();
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytes);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0; 1024]);
    out
}
