//! The steps a person takes with Edgenode (claim the node, invite a friend, upload,
//! post, follow, …), one request each, so tests read like stories. Each step checks
//! the success answer of docs/api.md and panics with the request and the node's
//! answer when it gets anything else.

use serde_json::{json, Value};

use crate::checks::{expect_status, id_field, id_of, text};
use crate::client::{Client, Response, Transport};
use crate::fixtures::{distinct_photo, sha256_hex};
use crate::node::{Node, NodeOptions};

/// A password every test account uses; long enough for any sane policy.
pub const PASSWORD: &str = "sunsets over the harbour 42";

/// A signed-in account.
#[derive(Debug, Clone)]
pub struct Account {
    pub handle: String,
    pub password: String,
    pub user_id: String,
    pub token: String,
}

/// Reads better than `None` at the call site: `client.get_post(ANONYMOUS, &id)`.
pub const ANONYMOUS: Option<&Account> = None;

fn token_of(viewer: Option<&Account>) -> Option<&str> {
    viewer.map(|account| account.token.as_str())
}

/// The `items` of a list answer `{items, next_cursor}`.
fn items_of(what: &str, list: Value) -> Vec<Value> {
    assert!(list.get("next_cursor").is_some(), "{what}: a list has `next_cursor` (a string or null): {list}");
    match list["items"].as_array() {
        Some(items) => items.clone(),
        None => panic!("{what}: expected {{items, next_cursor}}, got {list}"),
    }
}

/// A post and the photo it carries.
pub struct SharedPhoto {
    pub post_id: String,
    pub media_id: String,
}

/// A fresh node, a client over `transport`, its admin `admin_handle`, and one account
/// per handle in `member_handles`, each joined with an invite of the admin's.
pub fn node_with_members<const N: usize>(
    transport: Transport,
    admin_handle: &str,
    member_handles: [&str; N],
) -> (Node, Client, Account, [Account; N]) {
    let node = Node::start(NodeOptions::default());
    let client = Client::new(&node, transport);
    let admin = client.claim_admin(&node, admin_handle);
    let members = member_handles.map(|handle| client.join(&client.create_invite(&admin), handle));
    (node, client, admin, members)
}

impl Client {
    /// The first account: claims the node with its claim code and becomes admin.
    pub fn claim_admin(&self, node: &Node, handle: &str) -> Account {
        let what = format!("claiming the node as {handle}");
        let body = json!({ "handle": handle, "password": PASSWORD, "claim": node.claim_code() });
        let created = expect_status(&what, self.post_json("/api/v1/accounts", None, &body), 201);
        assert_eq!(created["admin"], json!(true), "{what}: the claiming account is admin: {created}");
        account_from(&what, handle, &created)
    }

    /// An admin creates an invite code.
    pub fn create_invite(&self, admin: &Account) -> String {
        let what = format!("{} creates an invite", admin.handle);
        let created = expect_status(&what, self.post_json("/api/v1/invites", Some(&admin.token), &json!({})), 201);
        text(&created, "code").to_owned()
    }

    /// A new account joins with an invite code.
    pub fn join(&self, invite: &str, handle: &str) -> Account {
        let what = format!("{handle} joins with an invite");
        let body = json!({ "handle": handle, "password": PASSWORD, "invite": invite });
        let created = expect_status(&what, self.post_json("/api/v1/accounts", None, &body), 201);
        assert_eq!(created["admin"], json!(false), "{what}: an invited account is not admin: {created}");
        account_from(&what, handle, &created)
    }

    /// Tries to log in; the answer is returned as is.
    pub fn log_in(&self, handle: &str, password: &str) -> (u16, Value) {
        self.post_json("/api/v1/sessions", None, &json!({ "handle": handle, "password": password }))
    }

    /// Logs an existing account in (on this node: a replica too) and expects 200.
    pub fn sign_in(&self, handle: &str) -> Account {
        let what = format!("{handle} logs in");
        let answer = expect_status(&what, self.log_in(handle, PASSWORD), 200);
        Account {
            handle: handle.to_owned(),
            password: PASSWORD.to_owned(),
            user_id: id_field(&answer, "user_id"),
            token: text(&answer, "token").to_owned(),
        }
    }

    /// Uploads a JPEG under its SHA-256 and expects it to be new (201): the media object.
    pub fn upload_jpeg(&self, owner: &Account, jpeg: &[u8]) -> Value {
        let what = format!("{} uploads a {}-byte JPEG", owner.handle, jpeg.len());
        let path = format!("/api/v1/media/{}", sha256_hex(jpeg));
        expect_status(&what, self.put_bytes(&path, Some(&owner.token), "image/jpeg", jpeg.to_vec()), 201)
    }

    /// Publishes a post; returns it.
    pub fn create_post(&self, author: &Account, caption: &str, media_ids: &[&str], visibility: &str) -> Value {
        let what = format!("{} posts {caption:?} ({visibility})", author.handle);
        let body = json!({ "caption": caption, "media": media_ids, "visibility": visibility });
        expect_status(&what, self.post_json("/api/v1/posts", Some(&author.token), &body), 201)
    }

    pub fn get_post(&self, viewer: Option<&Account>, post_id: &str) -> (u16, Value) {
        self.get_json(&format!("/api/v1/posts/{post_id}"), token_of(viewer))
    }

    pub fn delete_post(&self, author: &Account, post_id: &str) {
        let what = format!("{} deletes post {post_id}", author.handle);
        let response =
            self.request("DELETE", &format!("/api/v1/posts/{post_id}"), Some(&author.token), &[], Vec::new());
        assert_eq!(response.status, 204, "{what}: expected 204, got {}: {}", response.status, response.body_text());
    }

    pub fn follow(&self, follower: &Account, handle: &str) {
        let what = format!("{} follows {handle}", follower.handle);
        let path = format!("/api/v1/users/{handle}/follow");
        let answer = expect_status(&what, self.put_json(&path, Some(&follower.token), &json!({})), 200);
        assert_eq!(answer["following"], json!(true), "{what}: {answer}");
    }

    pub fn unfollow(&self, follower: &Account, handle: &str) {
        let what = format!("{} unfollows {handle}", follower.handle);
        let path = format!("/api/v1/users/{handle}/follow");
        let answer = expect_status(&what, self.delete_json(&path, Some(&follower.token)), 200);
        assert_eq!(answer["following"], json!(false), "{what}: {answer}");
    }

    /// Likes a post; returns `{liked, like_count}`.
    pub fn like(&self, user: &Account, post_id: &str) -> Value {
        let what = format!("{} likes post {post_id}", user.handle);
        let path = format!("/api/v1/posts/{post_id}/like");
        expect_status(&what, self.put_json(&path, Some(&user.token), &json!({})), 200)
    }

    /// Comments on a post; returns the comment.
    pub fn comment(&self, user: &Account, post_id: &str, comment: &str) -> Value {
        let what = format!("{} comments on post {post_id}", user.handle);
        let path = format!("/api/v1/posts/{post_id}/comments");
        expect_status(&what, self.post_json(&path, Some(&user.token), &json!({ "text": comment })), 201)
    }

    pub fn comments(&self, viewer: Option<&Account>, post_id: &str) -> Vec<Value> {
        let what = format!("listing the comments of post {post_id}");
        let path = format!("/api/v1/posts/{post_id}/comments?limit=100");
        items_of(&what, expect_status(&what, self.get_json(&path, token_of(viewer)), 200))
    }

    /// The first page (up to 100) of a user's feed.
    pub fn feed(&self, viewer: &Account) -> Vec<Value> {
        let what = format!("{}'s feed", viewer.handle);
        items_of(&what, expect_status(&what, self.get_json("/api/v1/feed?limit=100", Some(&viewer.token)), 200))
    }

    /// The first page (up to 100) of a user's posts, as `viewer` may see them.
    pub fn user_posts(&self, viewer: Option<&Account>, handle: &str) -> Vec<Value> {
        let what = format!("{handle}'s posts as seen by {}", viewer_name(viewer));
        let path = format!("/api/v1/users/{handle}/posts?limit=100");
        items_of(&what, expect_status(&what, self.get_json(&path, token_of(viewer)), 200))
    }

    /// The posts a node-scope search finds; `query` is already percent-encoded.
    pub fn search_posts(&self, viewer: Option<&Account>, query: &str) -> Vec<Value> {
        let what = format!("searching q={query} as {}", viewer_name(viewer));
        let path = format!("/api/v1/search?q={query}&scope=node");
        let found = expect_status(&what, self.get_json(&path, token_of(viewer)), 200);
        assert!(found["users"].is_array(), "{what}: expected {{users, posts}}, got {found}");
        found["posts"].as_array().unwrap_or_else(|| panic!("{what}: expected {{users, posts}}, got {found}")).clone()
    }

    /// Uploads a distinct photo (from `photo_seed`) and posts it with `visibility`.
    pub fn share_photo(&self, author: &Account, photo_seed: u8, caption: &str, visibility: &str) -> SharedPhoto {
        let media_id = id_of(&self.upload_jpeg(author, &distinct_photo(photo_seed)));
        let post_id = id_of(&self.create_post(author, caption, &[&media_id], visibility));
        SharedPhoto { post_id, media_id }
    }

    /// `handle`'s profile as `viewer` sees it.
    pub fn profile_as(&self, viewer: &Account, handle: &str) -> Value {
        let what = format!("{handle}'s profile as seen by {}", viewer.handle);
        expect_status(&what, self.get_json(&format!("/api/v1/users/{handle}"), Some(&viewer.token)), 200)
    }

    /// The first 50 of `user`'s notification groups.
    pub fn notifications(&self, user: &Account) -> Vec<Value> {
        let what = format!("{}'s notifications", user.handle);
        let page = expect_status(&what, self.get_json("/api/v1/notifications?limit=50", Some(&user.token)), 200);
        page["items"].as_array().unwrap_or_else(|| panic!("{what}: {page}")).clone()
    }

    /// The `handle` of every item of the list at `path` (no query) as `user`, asked
    /// for one item per page so that paging is exercised too; `what` names the list.
    pub fn handles_one_per_page(&self, user: &Account, path: &str, what: &str) -> Vec<String> {
        const PAGES_MAX: usize = 20;
        let mut handles = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..PAGES_MAX {
            let page_path = match &cursor {
                Some(cursor) => format!("{path}?limit=1&cursor={cursor}"),
                None => format!("{path}?limit=1"),
            };
            let page =
                expect_status(&format!("{}'s {what}", user.handle), self.get_json(&page_path, Some(&user.token)), 200);
            let items = page["items"].as_array().unwrap_or_else(|| panic!("items: {page}"));
            handles.extend(items.iter().map(|item| item["handle"].as_str().unwrap_or_default().to_owned()));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return handles,
            }
        }
        panic!("{}'s {what} did not end within {PAGES_MAX} pages", user.handle);
    }

    /// Fetches one variant (`thumb`, `display`, `original`) of a media item.
    pub fn fetch_media(&self, viewer: Option<&Account>, media_id: &str, variant: &str) -> Response {
        self.request("GET", &format!("/api/v1/media/{media_id}/{variant}"), token_of(viewer), &[], Vec::new())
    }
}

fn viewer_name(viewer: Option<&Account>) -> &str {
    viewer.map_or("an anonymous caller", |account| account.handle.as_str())
}

fn account_from(what: &str, handle: &str, created: &Value) -> Account {
    assert_eq!(created["handle"], json!(handle), "{what}: {created}");
    Account {
        handle: handle.to_owned(),
        password: PASSWORD.to_owned(),
        user_id: id_field(created, "user_id"),
        token: text(created, "token").to_owned(),
    }
}
