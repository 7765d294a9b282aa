//! Posts, follows, likes, comments, feeds, profiles and search, with the visibility
//! rules of `core::model::may_view` applied on every read path.

use std::collections::BTreeMap;

use http::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::media::media_shape;
use super::ports::{self, SearchError};
use super::{empty_response, ok_json, shapes, Api, ApiError, ApiResult, Call};
use crate::core::model::{checked_bio, checked_display_name, may_view, Post, User, Visibility};
use crate::core::region::Scope;
use crate::core::search::{merge_posts, merge_users};
use crate::core::text;
use crate::store::blobs::is_sha256_hex;
use crate::store::{FollowStatus, ProfileEdit};

pub const CAPTION_CHARS_MAX: usize = 2_200;
pub const MEDIA_PER_POST_MAX: usize = 10;
pub const COMMENT_CHARS_MAX: usize = 1_000;
const QUERY_CHARS_MAX: usize = 200;

impl Api {
    fn may_view_post(&self, post: &Post, viewer: Option<&str>) -> Result<bool, ApiError> {
        let follows = match viewer {
            Some(viewer) if post.visibility == Visibility::Followers => self.store.follows(viewer, &post.author_id)?,
            _ => false,
        };
        Ok(may_view(post, viewer, follows) && self.moderation_allows(post, viewer)?)
    }

    /// The post if it exists and the caller may see it; 404 otherwise, so hidden
    /// posts are indistinguishable from missing ones.
    pub(super) fn visible_post(&self, post_id: &str, viewer: Option<&str>) -> Result<Post, ApiError> {
        match self.store.post(post_id)? {
            Some(post) if self.may_view_post(&post, viewer)? => Ok(post),
            _ => Err(ApiError::not_found("post")),
        }
    }

    pub(super) fn user_by_handle(&self, handle: &str) -> Result<User, ApiError> {
        // `handle@<this node's id>` names a local user.
        let handle = match super::remote::parse(handle) {
            Some((local, node)) if node == self.store.node_id() => local,
            _ => handle.to_owned(),
        };
        self.store.user_by_handle(&handle.to_lowercase())?.ok_or_else(|| ApiError::not_found("user"))
    }

    /// The post's photos as clients see them, and whether any of them is still on its
    /// way from a sibling (its owner record replicated here, its files not yet).
    fn post_media_json(&self, media_ids: &[String]) -> Result<PostMedia, ApiError> {
        let mut media = PostMedia { items: Vec::with_capacity(media_ids.len()), pending: false };
        for media_id in media_ids {
            match self.store.media(media_id)? {
                Some(info) => media.items.push(shapes::PostPhoto::Stored(media_shape(&info))),
                None => {
                    media.items.push(shapes::PostPhoto::NotHere(shapes::MediaReference {
                        id: media_id.clone(),
                        pending: Some(true),
                    }));
                    media.pending = true;
                }
            }
        }
        Ok(media)
    }

    /// Everything a post's answer holds besides the post itself, read from the store.
    fn post_context(&self, post: &Post, viewer: Option<&str>) -> Result<PostContext, ApiError> {
        let (like_count, liked_by_me) = self.store.likes(&post.post_id, viewer)?;
        Ok(PostContext {
            author: author(&post.author_id, self.store.user(&post.author_id)?.as_ref()),
            media: self.post_media_json(&post.media)?,
            like_count,
            comment_count: self.store.comment_count(&post.post_id)?,
            liked_by_me,
        })
    }

    /// The post as readers see it; `None` while a sibling's photos for it are still on
    /// their way (for reads a post counts as replicated only with its media).
    pub(super) fn post_json(&self, post: &Post, viewer: Option<&str>) -> Result<Option<Value>, ApiError> {
        // Lists (feed, profile, search) leave out hidden posts and blocked authors'.
        if !self.moderation_allows(post, viewer)? {
            return Ok(None);
        }
        let context = self.post_context(post, viewer)?;
        Ok((!context.media.pending).then(|| to_value(&written_post(post, context))))
    }

    fn post_list_json(&self, posts: &[Post], limit: usize, viewer: Option<&str>) -> ApiResult {
        let mut items = Vec::with_capacity(posts.len());
        for post in posts {
            items.extend(self.post_json(post, viewer)?);
        }
        let next_cursor = (posts.len() == limit).then(|| posts.last().map(|post| post.post_id.clone())).flatten();
        shapes::ok(&shapes::Page { items, next_cursor })
    }

    fn user_json(&self, user: &User, viewer: Option<&str>) -> Result<Value, ApiError> {
        Ok(to_value(&self.profile(user, viewer)?))
    }

    /// A local user as profiles and search show them, with this node as the one that
    /// holds their data (`profile_json` names the replicas when replication runs).
    fn profile(&self, user: &User, viewer: Option<&str>) -> Result<shapes::Profile, ApiError> {
        let follow_status = match viewer {
            Some(viewer) => self.store.follow_status(viewer, &user.user_id)?,
            None => None,
        };
        Ok(shapes::Profile {
            user_id: user.user_id.clone(),
            handle: user.handle.clone(),
            display_name: user.display_name.clone(),
            bio: user.bio.clone(),
            avatar: avatar(user.avatar.as_deref()),
            admin: user.admin,
            created_at: user.created_at,
            follower_count: self.store.follower_count(&user.user_id)?,
            following_count: self.store.followees(&user.user_id)?.len() as u64,
            locked: user.locked,
            // A live follow, approved or not (the button says "unfollow" or "cancel").
            followed_by_me: follow_status.is_some(),
            follow_status: follow_status_name(follow_status),
            // Without replication, this node alone holds every local user's data.
            nodes: vec![shapes::ProfileNode {
                id: self.store.node_id().to_string(),
                name: Some(self.node.name.clone()),
                addresses: self.node.addresses.clone(),
                peer_address: None,
                this_node: None,
            }],
        })
    }
}

/// A shape as a JSON value, for lists merged with other nodes' answers.
pub(super) fn to_value<T: serde::Serialize>(shape: &T) -> Value {
    serde_json::to_value(shape).expect("answer shapes serialize")
}

/// How a follower's follow stands, as they are told: a rejected request stays
/// "requested" to them (an account's answers are its own business).
fn follow_status_name(status: Option<FollowStatus>) -> Option<shapes::FollowStatus> {
    status.map(|status| match status {
        FollowStatus::Following => shapes::FollowStatus::Following,
        FollowStatus::Requested | FollowStatus::Rejected => shapes::FollowStatus::Requested,
    })
}

/// A post's photos as clients see them.
struct PostMedia {
    /// One per photo: the media object, or `{id, pending: true}` for a photo whose
    /// files have not arrived from the sibling it was uploaded through.
    items: Vec<shapes::PostPhoto>,
    pending: bool,
}

/// What a post's answer holds besides the post itself.
struct PostContext {
    author: shapes::Author,
    media: PostMedia,
    like_count: u64,
    comment_count: u64,
    liked_by_me: bool,
}

/// The post as clients see it. Pure, so the answer to a committed write cannot fail.
fn written_post(post: &Post, context: PostContext) -> shapes::Post {
    shapes::Post {
        id: post.post_id.clone(),
        author: context.author,
        caption: post.caption.clone(),
        media: context.media.items,
        media_pending: context.media.pending,
        visibility: post.visibility.into(),
        tags: post.tags.clone(),
        created_at: post.created_at,
        like_count: context.like_count,
        comment_count: context.comment_count,
        liked_by_me: context.liked_by_me,
    }
}

/// Who wrote a post or comment, as clients show them: `{user_id, handle,
/// display_name, avatar}`; empty handle and name for a user this node does not hold
/// (yet), so the answer still has its shape.
pub(super) fn author(user_id: &str, user: Option<&User>) -> shapes::Author {
    shapes::Author {
        user_id: user_id.to_owned(),
        handle: user.map(|user| user.handle.clone()).unwrap_or_default(),
        display_name: user.map(|user| user.display_name.clone()).unwrap_or_default(),
        avatar: avatar(user.and_then(|user| user.avatar.as_deref())),
    }
}

/// A profile photo as clients see it: its media id and where its square derivative
/// (256 px JPEG) is served; `None` for none.
pub(super) fn avatar(media_id: Option<&str>) -> Option<shapes::Avatar> {
    media_id.map(|media_id| shapes::Avatar { id: media_id.to_owned(), url: format!("/api/v1/media/{media_id}/avatar") })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewPost {
    #[serde(default)]
    caption: String,
    #[serde(default)]
    media: Vec<String>,
    #[schemars(with = "super::shapes::Visibility")]
    visibility: Visibility,
}

pub fn create_post(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let author = call.user()?.clone();
    let request: NewPost = call.json()?;
    if request.caption.chars().count() > CAPTION_CHARS_MAX {
        return Err(ApiError::bad_request(
            "invalid_post",
            format!("a caption is at most {CAPTION_CHARS_MAX} characters"),
        ));
    }
    if request.media.is_empty() && request.caption.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_post", "a post needs a caption or at least one photo"));
    }
    if request.media.len() > MEDIA_PER_POST_MAX {
        return Err(ApiError::bad_request("invalid_post", format!("a post has at most {MEDIA_PER_POST_MAX} photos")));
    }
    let media: Vec<String> = request.media.iter().map(|id| id.to_ascii_lowercase()).collect();
    // Everything the answer needs is read before the write, so once the post is
    // committed nothing can turn its answer into an error (a client that retries
    // would post twice). Ownership of the photos is checked inside the write's
    // transaction: `unknown_media` writes nothing.
    let context = PostContext {
        author: self::author(&author.user_id, Some(&author)),
        media: api.post_media_json(&media)?,
        like_count: 0,
        comment_count: 0,
        liked_by_me: false,
    };
    let post = api.store.create_post(&author.user_id, request.caption, media, request.visibility)?;
    api.fanout_post_changed(&author.user_id, &post.post_id);
    shapes::answer(StatusCode::CREATED, &written_post(&post, context))
}

pub fn get_post(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let post = api.visible_post(call.param(0), call.viewer_id())?;
    ok_json(api.post_json(&post, call.viewer_id())?.ok_or_else(not_replicated_yet)?)
}

pub fn delete_post(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    let post = api.visible_post(call.param(0), Some(&user_id))?;
    if post.author_id != user_id {
        return Err(ApiError::forbidden("only its author can delete a post"));
    }
    api.store.delete_post(&post)?;
    api.fanout_post_changed(&post.author_id, &post.post_id);
    empty_response(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PostEdit {
    caption: Option<String>,
    #[schemars(with = "Option<super::shapes::Visibility>")]
    visibility: Option<Visibility>,
}

/// `PATCH /api/v1/posts/{id}` `{caption?, visibility?}`: the author edits a post.
pub fn edit_post(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    let edit: PostEdit = call.json()?;
    let mut post = api.visible_post(call.param(0), Some(&user_id))?;
    if post.author_id != user_id {
        return Err(ApiError::forbidden("only its author can edit a post"));
    }
    if let Some(caption) = edit.caption {
        if caption.chars().count() > CAPTION_CHARS_MAX {
            return Err(ApiError::bad_request(
                "invalid_post",
                format!("a caption is at most {CAPTION_CHARS_MAX} characters"),
            ));
        }
        if post.media.is_empty() && caption.trim().is_empty() {
            return Err(ApiError::bad_request("invalid_post", "a post needs a caption or at least one photo"));
        }
        post.caption = caption;
    }
    if let Some(visibility) = edit.visibility {
        post.visibility = visibility;
    }
    // As for a new post: read what the answer needs first; after the commit, only
    // in-memory work is left.
    let context = api.post_context(&post, Some(&user_id))?;
    let post = api.store.update_post(&post)?;
    api.fanout_post_changed(&post.author_id, &post.post_id);
    shapes::ok(&written_post(&post, context))
}

fn set_like(api: &Api, call: &mut Call<'_>, liked: bool) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    let post = api.visible_post(call.param(0), Some(&user_id))?;
    if liked {
        api.refuse_if_blocked(&post.author_id, &user_id)?;
    }
    api.store.set_like(&post.post_id, &user_id, liked)?;
    let (like_count, _) = api.store.likes(&post.post_id, None)?;
    shapes::ok(&shapes::Liked { liked, like_count })
}

pub fn like(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_like(api, call, true)
}

pub fn unlike(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_like(api, call, false)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewComment {
    text: String,
}

pub fn add_comment(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let author = call.user()?.clone();
    let request: NewComment = call.json()?;
    let text = request.text.trim();
    if text.is_empty() || text.chars().count() > COMMENT_CHARS_MAX {
        return Err(ApiError::bad_request(
            "invalid_comment",
            format!("a comment is 1 to {COMMENT_CHARS_MAX} characters"),
        ));
    }
    let post = api.visible_post(call.param(0), Some(&author.user_id))?;
    api.refuse_if_blocked(&post.author_id, &author.user_id)?;
    let comment = api.store.add_comment(&post.post_id, &author.user_id, text.to_owned())?;
    shapes::answer(
        StatusCode::CREATED,
        &shapes::Comment {
            id: comment.comment_id,
            post_id: comment.post_id,
            author: self::author(&author.user_id, Some(&author)),
            text: comment.text,
            created_at: comment.created_at,
        },
    )
}

/// Digits of a cursor: every paged list pages by an id from `time_ordered_id` (16 hex
/// digits of time, 16 of the node id).
const CURSOR_HEX_DIGITS: usize = 32;

/// The `cursor` query parameter, checked: 400 `bad_cursor` unless it is an id this
/// node's lists hand out as `next_cursor`, so a client with a broken cursor learns
/// it instead of silently getting the first page again or nothing.
fn cursor(call: &Call<'_>) -> Result<Option<String>, ApiError> {
    checked_cursor(call.query("cursor"))
}

pub(super) fn checked_cursor(cursor: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(cursor) = cursor else { return Ok(None) };
    let well_formed = cursor.len() == CURSOR_HEX_DIGITS
        && cursor.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !well_formed {
        return Err(ApiError::bad_request(
            "bad_cursor",
            "`cursor` must be the `next_cursor` of the previous page (32 lowercase hex digits); leave it out for the first page",
        ));
    }
    Ok(Some(cursor))
}

pub fn comments(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let post = api.visible_post(call.param(0), call.viewer_id())?;
    let limit = call.limit()?;
    let cursor = cursor(call)?;
    let comments = api.store.comments(&post.post_id, cursor.as_deref(), limit)?;
    let mut items = Vec::new();
    for comment in &comments {
        if api.viewer_blocks(call.viewer_id(), &comment.author_id)? {
            continue;
        }
        let user = api.store.user(&comment.author_id)?;
        items.push(shapes::Comment {
            id: comment.comment_id.clone(),
            post_id: comment.post_id.clone(),
            author: author(&comment.author_id, user.as_ref()),
            text: comment.text.clone(),
            created_at: comment.created_at,
        });
    }
    let next_cursor =
        (comments.len() == limit).then(|| comments.last().map(|comment| comment.comment_id.clone())).flatten();
    shapes::ok(&shapes::Page { items, next_cursor })
}

pub fn get_user(api: &Api, call: &mut Call<'_>) -> ApiResult {
    if let Some((handle, node)) = api.remote_handle(call.param(0)) {
        return super::remote::get_user(api, call, &handle, node);
    }
    let user = api.user_by_handle(call.param(0))?;
    shapes::ok(&profile_json(api, &user, call.viewer_id())?)
}

/// A local user's profile as `GET /api/v1/users/{handle}` gives it: `user_json`
/// with the nodes that hold their data.
fn profile_json(api: &Api, user: &User, viewer: Option<&str>) -> Result<shapes::Profile, ApiError> {
    let mut answer = api.profile(user, viewer)?;
    if let Some(siblings) = &api.siblings {
        answer.nodes = siblings
            .replicas_of(&user.user_id, user.home)
            .into_iter()
            .map(|ports::Replica { node_id, peer_address, this_node }| {
                let (name, addresses) = if this_node {
                    // A wildcard listen address tells a client nothing; it knows how it reached us.
                    let addresses: Vec<String> = api
                        .node
                        .addresses
                        .iter()
                        .filter(|address| {
                            address.parse::<std::net::SocketAddr>().is_ok_and(|a| !a.ip().is_unspecified())
                        })
                        .cloned()
                        .collect();
                    (Some(api.node.name.clone()), addresses)
                } else {
                    sibling_web_address(api, node_id, peer_address.as_deref())
                };
                shapes::ProfileNode {
                    id: node_id.to_string(),
                    name,
                    addresses,
                    peer_address: Some(peer_address),
                    this_node: Some(this_node),
                }
            })
            .collect();
    }
    Ok(answer)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProfileChange {
    display_name: Option<String>,
    bio: Option<String>,
    /// Absent: unchanged; `null`: removed; a media id: set.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    avatar: Option<Option<String>>,
    /// A locked account approves its followers (`/api/v1/me/follow-requests`).
    locked: Option<bool>,
}

/// A field that is present, `null` or not: `Some`, so that an absent field (serde's
/// `default`, `None`) differs from `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// `PATCH /api/v1/me/profile` `{display_name?, bio?, avatar?: media id | null}`: the
/// caller edits their profile (one replicated write of their User record); the answer
/// is the profile as `GET /api/v1/users/{handle}` gives it.
pub fn edit_profile(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    let change: ProfileChange = call.json()?;
    let invalid =
        |error: crate::core::model::InvalidProfile| ApiError::bad_request("invalid_profile", error.to_string());
    let avatar = match change.avatar {
        Some(Some(media_id)) => {
            let media_id = media_id.to_ascii_lowercase();
            if !is_sha256_hex(&media_id) {
                return Err(ApiError::bad_request(
                    "bad_media_id",
                    "`avatar` is the id of a photo you uploaded (64 hex digits, its SHA-256), or null for none",
                ));
            }
            Some(Some(media_id))
        }
        other => other,
    };
    // Whether the account was locked before, when the edit may change it.
    let was_locked = match change.locked {
        Some(_) => api.store.user(&user_id)?.map(|user| user.locked),
        None => None,
    };
    let edit = ProfileEdit {
        display_name: change.display_name.as_deref().map(checked_display_name).transpose().map_err(invalid)?,
        bio: change.bio.as_deref().map(checked_bio).transpose().map_err(invalid)?,
        avatar,
        locked: change.locked,
    };
    // The answer is read after the commit; PATCH is idempotent, so a client that
    // retries after a failed read writes the same profile again.
    let user = if edit == ProfileEdit::default() {
        api.store.user(&user_id)?
    } else {
        api.store.update_profile(&user_id, edit)?
    };
    let user = user.ok_or_else(|| ApiError::not_found("user"))?;
    if was_locked.is_some_and(|was_locked| was_locked != user.locked) {
        // Followers on other nodes: kept (or let in) as local ones are; from now on a
        // locked account's followers-only posts go only to those it approved.
        if let Some(fanout) = api.fanout.as_deref() {
            fanout.lock_changed(&user_id);
        }
    }
    shapes::ok(&profile_json(api, &user, Some(&user_id))?)
}

/// `GET /api/v1/me/follow-requests?limit&cursor`: follows of the caller's locked
/// account waiting for an answer, oldest follower id first: `{items: [{user_id,
/// handle, display_name, since}], next_cursor}`.
pub fn follow_requests(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    let limit = call.limit()?;
    let cursor = cursor(call)?;
    let requests = api.store.follow_requests(&user_id, cursor.as_deref(), limit)?;
    let mut items = Vec::with_capacity(requests.len());
    for request in &requests {
        let follower = api.store.user(&request.follower_id)?;
        items.push(shapes::FollowRequest {
            user_id: request.follower_id.clone(),
            handle: follower.as_ref().map(|user| user.handle.clone()).unwrap_or_default(),
            display_name: follower.as_ref().map(|user| user.display_name.clone()).unwrap_or_default(),
            since: request.since,
        });
    }
    // Users of other nodes whose follow fan-out brought here, as `handle@<node id>`
    // (their user id when their node is older than follow requests), in the same
    // user-id order and pages.
    if let Some(fanout) = api.fanout.as_deref() {
        let remote = fanout.follow_requests(&user_id).map_err(|error| ApiError::unavailable(error.to_string()))?;
        for request in remote {
            if cursor.as_deref().is_some_and(|after| request.user_id.as_str() <= after) {
                continue;
            }
            let handle = request.handle.unwrap_or_else(|| request.user_id.clone());
            items.push(shapes::FollowRequest {
                user_id: request.user_id,
                handle: format!("{handle}@{}", request.home),
                display_name: handle,
                since: request.since,
            });
        }
        items.sort_by(|left, right| left.user_id.cmp(&right.user_id));
        items.truncate(limit);
    }
    let next_cursor = (items.len() == limit).then(|| items.last().map(|item| item.user_id.clone())).flatten();
    shapes::ok(&shapes::Page { items, next_cursor })
}

/// The caller answers the follow of `{handle}`; 404 when that user does not follow
/// them. Rejecting also removes an approved follower.
fn answer_follow(api: &Api, call: &mut Call<'_>, approved: bool) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    if let Some((handle, node)) = api.remote_handle(call.param(0)) {
        // A user of another node: their follow came by fan-out, the answer goes back.
        let answered = api
            .fanout()?
            .answer_follow(&user_id, &handle, node, approved)
            .map_err(|error| ApiError::unavailable(error.to_string()))?
            .ok_or_else(|| ApiError::not_found("follow request"))?;
        let handle = answered.handle.unwrap_or(answered.user_id);
        return shapes::ok(&shapes::FollowAnswered { handle: format!("{handle}@{node}"), approved });
    }
    let follower = api.user_by_handle(call.param(0))?;
    if !api.store.answer_follow(&user_id, &follower.user_id, approved)? {
        return Err(ApiError::not_found("follow request"));
    }
    shapes::ok(&shapes::FollowAnswered { handle: follower.handle, approved })
}

/// `POST /api/v1/me/follow-requests/{handle}/approve`.
pub fn approve_follow_request(api: &Api, call: &mut Call<'_>) -> ApiResult {
    answer_follow(api, call, true)
}

/// `DELETE /api/v1/me/follow-requests/{handle}`: reject (or remove a follower).
pub fn reject_follow_request(api: &Api, call: &mut Call<'_>) -> ApiResult {
    answer_follow(api, call, false)
}

/// A sibling's name and HTTPS addresses, from the card it gave over the link
/// (`tls::SiblingCard`): its peer endpoint's host with its HTTPS port, then
/// `<name>.local`. Nothing until its card has arrived.
fn sibling_web_address(
    api: &Api,
    node_id: crate::core::model::NodeId,
    peer_address: Option<&str>,
) -> (Option<String>, Vec<String>) {
    let Some(card) = crate::tls::SiblingCard::read(&api.data_dir.join(crate::tls::SIBLING_WEB_DIR), node_id) else {
        return (None, Vec::new());
    };
    let mut addresses = Vec::new();
    let host = peer_address.and_then(|address| match address.parse::<std::net::SocketAddr>() {
        Ok(socket) if socket.ip().is_unspecified() => None,
        Ok(socket) => Some(std::net::SocketAddr::new(socket.ip(), card.https_port).to_string()),
        Err(_) => address.rsplit_once(':').map(|(host, _)| format!("{host}:{}", card.https_port)),
    });
    addresses.extend(host);
    addresses.push(format!("{}.local:{}", card.name, card.https_port));
    (Some(card.name), addresses)
}

pub fn user_posts(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let cursor = cursor(call)?;
    if let Some((handle, node)) = api.remote_handle(call.param(0)) {
        return super::remote::user_posts(api, call, &handle, node);
    }
    let author = api.user_by_handle(call.param(0))?;
    let limit = call.limit()?;
    let viewer = call.viewer_id();
    let follows = match viewer {
        Some(viewer) => api.store.follows(viewer, &author.user_id)?,
        None => false,
    };
    let posts =
        api.store.posts_by_author(&author.user_id, cursor.as_deref(), limit, |post| may_view(post, viewer, follows))?;
    api.post_list_json(&posts, limit, viewer)
}

fn set_follow(api: &Api, call: &mut Call<'_>, following: bool) -> ApiResult {
    if let Some((handle, node)) = api.remote_handle(call.param(0)) {
        return super::remote::set_follow(api, call, &handle, node, following);
    }
    let follower = call.user()?.user_id.clone();
    let followee = api.user_by_handle(call.param(0))?;
    if followee.user_id == follower {
        return Err(ApiError::bad_request("cannot_follow_self", "you cannot follow yourself"));
    }
    if following {
        api.refuse_if_blocked(&followee.user_id, &follower)?;
        api.refuse_if_blocked(&follower, &followee.user_id)?;
    }
    api.store.set_follow(&follower, &followee.user_id, following)?;
    let status = api.store.follow_status(&follower, &followee.user_id)?;
    shapes::ok(&shapes::Followed::Here { following, status: follow_status_name(status) })
}

pub fn follow(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_follow(api, call, true)
}

pub fn unfollow(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_follow(api, call, false)
}

/// The home feed: the newest posts of the caller and everyone they follow, merged.
pub fn feed(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let viewer = call.user()?.user_id.clone();
    let limit = call.limit()?;
    let cursor = cursor(call)?;
    let mut authors = api.store.followees(&viewer)?;
    authors.push(viewer.clone());
    let mut posts = Vec::new();
    for author in &authors {
        // A followed author's followers posts, unless their account is locked and has
        // not approved the viewer; private posts only for the viewer.
        let follows = author != &viewer && api.store.follows(&viewer, author)?;
        posts.extend(
            api.store
                .posts_by_author(author, cursor.as_deref(), limit, |post| may_view(post, Some(&viewer), follows))?,
        );
    }
    posts.sort_by(|a, b| b.post_id.cmp(&a.post_id));
    posts.truncate(limit);
    // Followed users of other nodes, from the fan-out cache. Post ids begin with
    // their creation timestamp, so id order is creation order on every node and one
    // cursor (a post id) pages through both.
    let remote = api.remote_feed_items(&viewer, cursor.as_deref(), limit);
    if remote.is_empty() {
        return api.post_list_json(&posts, limit, Some(&viewer));
    }
    // A post can arrive both ways: a user of a sibling followed as `handle@<node id>`
    // is replicated here and fanned out here. Where this node's store holds a post
    // (live, deleted, or not for this viewer), the store answers for it; a fanned-out
    // copy stands in only for a stored post whose photos are still on their way.
    let mut local = Vec::with_capacity(posts.len());
    for post in &posts {
        local.push((post.post_id.clone(), api.post_json(post, Some(&viewer))?));
    }
    let mut kept = Vec::with_capacity(remote.len());
    for (post_id, item) in remote {
        let in_page = posts.iter().any(|post| post.post_id == post_id);
        if in_page || api.store.post_record(&post_id)?.is_none() {
            kept.push((post_id, item));
        }
    }
    let (items, next_cursor) = merge_feed_page(local, kept, limit);
    shapes::ok(&shapes::Page { items, next_cursor })
}

/// One feed page from two sources, each newest first and at most `limit` long: the
/// store's posts (`None` for one not shown yet) and fanned-out copies. The page is
/// the newest `limit` distinct post ids, each once: the store's item, else the
/// fanned-out one. Its cursor is its last id when it is full, counted in ids, so a
/// post not shown still moves the cursor past it (as `post_list_json` does).
fn merge_feed_page(
    local: Vec<(String, Option<Value>)>,
    remote: Vec<(String, Value)>,
    limit: usize,
) -> (Vec<Value>, Option<String>) {
    /// One post id of the page: the store's item (if shown) and the fanned-out copy.
    #[derive(Default)]
    struct Copies {
        stored: Option<Value>,
        fanned_out: Option<Value>,
    }
    let mut by_id: BTreeMap<String, Copies> = BTreeMap::new();
    for (post_id, item) in local {
        by_id.entry(post_id).or_default().stored = item;
    }
    for (post_id, item) in remote {
        by_id.entry(post_id).or_default().fanned_out = Some(item);
    }
    let page: Vec<(String, Copies)> = by_id.into_iter().rev().take(limit).collect();
    let next_cursor = (page.len() == limit).then(|| page.last().map(|(post_id, _)| post_id.clone())).flatten();
    let items = page.into_iter().filter_map(|(_, copies)| copies.stored.or(copies.fanned_out)).collect();
    (items, next_cursor)
}

pub fn search(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let query = call.query("q").unwrap_or_default();
    let query = query.trim();
    if query.is_empty() || query.chars().count() > QUERY_CHARS_MAX {
        return Err(ApiError::bad_request("bad_query", format!("`q` must be 1 to {QUERY_CHARS_MAX} characters")));
    }
    let scope = Scope::parse(call.query("scope").as_deref())
        .map_err(|error| ApiError::bad_request("unsupported_scope", error.to_string()))?;
    let limit = call.limit()?;
    let service = match (&scope, &api.search) {
        (Scope::Node, _) => None,
        (_, Some(service)) => Some(service),
        (scope, None) => {
            return Err(ApiError::bad_request(
                "unsupported_scope",
                format!(
                    "scope `{}` needs the search service, which this node does not run; use scope=node",
                    scope.name()
                ),
            ))
        }
    };
    if let (Scope::Region(prefix), Some(service)) = (&scope, service) {
        // Public data only, from an aggregator (this node or the one it forwards to).
        return match service.search_region(query, prefix, limit) {
            Ok(answer) => ok_json(answer),
            Err(error @ SearchError::NoAggregator(_)) => {
                Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_aggregator", error.to_string()))
            }
            Err(SearchError::Store(error)) => Err(error.into()),
            Err(error @ SearchError::Unavailable(_)) => Err(ApiError::unavailable(error.to_string())),
        };
    }
    let terms = text::query_terms(query);
    let posts = api.store.search_posts(&terms, limit)?;
    let handle_prefix = text::handle_prefix(query);
    let users = if handle_prefix.is_empty() {
        Vec::new()
    } else {
        api.store.users_with_handle_prefix(&handle_prefix, limit)?
    };
    let viewer = call.viewer_id();
    let mut shown = Vec::with_capacity(posts.len());
    for post in &posts {
        shown.extend(api.post_json(post, viewer)?);
    }
    let posts = shown;
    let users = users.iter().map(|user| api.user_json(user, viewer)).collect::<Result<Vec<_>, _>>()?;
    let answered_by = api.store.node_id().to_string();
    let Some(service) = service else {
        return shapes::ok(&shapes::SearchAnswer { scope: "node", answered_by, users, posts, unreachable: None });
    };
    // The neighbourhood: this node's answer (its public posts only; search_posts
    // keeps to those) and each sibling's, items tagged with the node they came from.
    let this_node = service.this_node();
    let tag = |mut item: Value| {
        item["node"] = this_node.clone();
        item
    };
    let (mut users, mut posts): (Vec<Value>, Vec<Value>) =
        (users.into_iter().map(tag).collect(), posts.into_iter().map(tag).collect());
    let (answers, unreachable) = service.search_siblings(query, limit);
    for mut answer in answers {
        users.extend(answer["users"].as_array_mut().map(std::mem::take).unwrap_or_default());
        posts.extend(answer["posts"].as_array_mut().map(std::mem::take).unwrap_or_default());
    }
    shapes::ok(&shapes::SearchAnswer {
        scope: "neighbourhood",
        answered_by,
        users: merge_users(users, limit),
        posts: merge_posts(posts, limit),
        unreachable: Some(unreachable),
    })
}

fn not_replicated_yet() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_replicated_yet",
        "this post's photos are still on their way from a sibling node; try again shortly",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_ids_this_node_hands_out() {
        let id = crate::core::model::time_ordered_id(crate::core::model::Version {
            at: crate::core::hlc::Timestamp(0x0193_0000_0000_0001),
            origin: crate::core::model::NodeId(0xfeed),
        });
        assert_eq!(checked_cursor(Some(id.clone())).unwrap(), Some(id));
        assert_eq!(checked_cursor(None).unwrap(), None);
        for bad in ["", "zzz", "../etc", &"A".repeat(32), &"0".repeat(33)] {
            let error = checked_cursor(Some(bad.to_owned())).unwrap_err();
            assert_eq!((error.status, error.code), (StatusCode::BAD_REQUEST, "bad_cursor"), "{bad:?}");
        }
    }

    fn item(source: &str, post_id: &str) -> Value {
        serde_json::json!({"id": post_id, "from": source})
    }

    fn sources(items: &[Value]) -> Vec<String> {
        items
            .iter()
            .map(|item| format!("{}:{}", item["from"].as_str().unwrap(), item["id"].as_str().unwrap()))
            .collect()
    }

    #[test]
    fn a_feed_page_holds_each_post_once_and_counts_posts_not_copies() {
        let local = || {
            vec![
                ("5".to_owned(), Some(item("local", "5"))),
                ("3".to_owned(), None), // stored, its photos still on their way
                ("1".to_owned(), Some(item("local", "1"))),
            ]
        };
        let remote = || {
            vec![
                ("5".to_owned(), item("remote", "5")),
                ("4".to_owned(), item("remote", "4")),
                ("3".to_owned(), item("remote", "3")),
            ]
        };
        let (items, cursor) = merge_feed_page(local(), remote(), 3);
        assert_eq!(sources(&items), ["local:5", "remote:4", "remote:3"]);
        assert_eq!(cursor.as_deref(), Some("3"));
        let (items, cursor) = merge_feed_page(local(), remote(), 4);
        assert_eq!(sources(&items), ["local:5", "remote:4", "remote:3", "local:1"]);
        assert_eq!(cursor.as_deref(), Some("1"), "a full page has a cursor");
        let (items, cursor) = merge_feed_page(local(), remote(), 5);
        assert_eq!(items.len(), 4);
        assert_eq!(cursor, None, "4 distinct posts do not fill a page of 5");
        let (items, cursor) = merge_feed_page(vec![("2".to_owned(), None)], Vec::new(), 1);
        assert!(items.is_empty());
        assert_eq!(cursor.as_deref(), Some("2"), "a post not shown yet still moves the cursor past it");
    }
}
