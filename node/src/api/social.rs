//! Posts, follows, likes, comments, feeds, profiles and search, with the visibility
//! rules of `core::model::may_view` applied on every read path.

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::media::media_json;
use super::{empty_response, json_response, ok_json, Api, ApiError, ApiResult, Call};
use crate::core::model::{may_view, Post, User, Visibility};
use crate::core::region::Scope;
use crate::core::text;
use crate::services::search::SearchError;

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
        Ok(may_view(post, viewer, follows))
    }

    /// The post if it exists and the caller may see it; 404 otherwise, so hidden
    /// posts are indistinguishable from missing ones.
    fn visible_post(&self, post_id: &str, viewer: Option<&str>) -> Result<Post, ApiError> {
        match self.store.post(post_id)? {
            Some(post) if self.may_view_post(&post, viewer)? => Ok(post),
            _ => Err(ApiError::not_found("post")),
        }
    }

    fn user_by_handle(&self, handle: &str) -> Result<User, ApiError> {
        // `handle@<this node's id>` names a local user.
        let handle = match super::remote::parse(handle) {
            Some((local, node)) if node == self.store.node_id() => local,
            _ => handle.to_owned(),
        };
        self.store.user_by_handle(&handle.to_lowercase())?.ok_or_else(|| ApiError::not_found("user"))
    }

    /// The post as clients see it; `None` while a sibling's photos for it are still
    /// on their way (a post counts as replicated only with its media).
    fn post_json(&self, post: &Post, viewer: Option<&str>) -> Result<Option<Value>, ApiError> {
        let author_handle = self.store.user(&post.author_id)?.map(|user| user.handle).unwrap_or_default();
        let mut media = Vec::new();
        for media_id in &post.media {
            match self.store.media(media_id)? {
                Some(info) => media.push(media_json(&info)),
                None => return Ok(None),
            }
        }
        let (like_count, liked_by_me) = self.store.likes(&post.post_id, viewer)?;
        Ok(Some(json!({
            "id": post.post_id,
            "author": {"user_id": post.author_id, "handle": author_handle},
            "caption": post.caption,
            "media": media,
            "visibility": post.visibility,
            "tags": post.tags,
            "created_at": post.created_at,
            "like_count": like_count,
            "comment_count": self.store.comment_count(&post.post_id)?,
            "liked_by_me": liked_by_me,
        })))
    }

    fn post_list_json(&self, posts: &[Post], limit: usize, viewer: Option<&str>) -> ApiResult {
        let mut items = Vec::with_capacity(posts.len());
        for post in posts {
            items.extend(self.post_json(post, viewer)?);
        }
        let next_cursor = (posts.len() == limit).then(|| posts.last().map(|post| post.post_id.clone())).flatten();
        ok_json(json!({"items": items, "next_cursor": next_cursor}))
    }

    fn user_json(&self, user: &User, viewer: Option<&str>) -> Result<Value, ApiError> {
        let followed_by_me = match viewer {
            Some(viewer) => self.store.follows(viewer, &user.user_id)?,
            None => false,
        };
        Ok(json!({
            "user_id": user.user_id,
            "handle": user.handle,
            "display_name": user.display_name,
            "bio": user.bio,
            "admin": user.admin,
            "created_at": user.created_at,
            "follower_count": self.store.follower_count(&user.user_id)?,
            "following_count": self.store.followees(&user.user_id)?.len(),
            "followed_by_me": followed_by_me,
            // Until replication exists, this node alone holds every local user's data.
            "nodes": [{"id": self.store.node_id().to_string(), "name": self.node.name, "addresses": self.node.addresses}],
        }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPost {
    #[serde(default)]
    caption: String,
    #[serde(default)]
    media: Vec<String>,
    visibility: Visibility,
}

pub fn create_post(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let author = call.user()?.user_id.clone();
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
    let post = api.store.create_post(&author, request.caption, media, request.visibility)?;
    api.fanout_post_changed(&author, &post.post_id);
    json_response(StatusCode::CREATED, &api.post_json(&post, Some(&author))?.ok_or_else(not_replicated_yet)?)
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostEdit {
    caption: Option<String>,
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
    let post = api.store.update_post(&post)?;
    api.fanout_post_changed(&post.author_id, &post.post_id);
    ok_json(api.post_json(&post, Some(&user_id))?.ok_or_else(not_replicated_yet)?)
}

fn set_like(api: &Api, call: &mut Call<'_>, liked: bool) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    let post = api.visible_post(call.param(0), Some(&user_id))?;
    api.store.set_like(&post.post_id, &user_id, liked)?;
    let (like_count, _) = api.store.likes(&post.post_id, None)?;
    ok_json(json!({"liked": liked, "like_count": like_count}))
}

pub fn like(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_like(api, call, true)
}

pub fn unlike(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_like(api, call, false)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewComment {
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
    let comment = api.store.add_comment(&post.post_id, &author.user_id, text.to_owned())?;
    json_response(
        StatusCode::CREATED,
        &json!({
            "id": comment.comment_id,
            "post_id": comment.post_id,
            "author": {"user_id": author.user_id, "handle": author.handle},
            "text": comment.text,
            "created_at": comment.created_at,
        }),
    )
}

pub fn comments(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let post = api.visible_post(call.param(0), call.viewer_id())?;
    let limit = call.limit()?;
    let cursor = call.query("cursor");
    let comments = api.store.comments(&post.post_id, cursor.as_deref(), limit)?;
    let mut items = Vec::new();
    for comment in &comments {
        let handle = api.store.user(&comment.author_id)?.map(|user| user.handle).unwrap_or_default();
        items.push(json!({
            "id": comment.comment_id,
            "post_id": comment.post_id,
            "author": {"user_id": comment.author_id, "handle": handle},
            "text": comment.text,
            "created_at": comment.created_at,
        }));
    }
    let next_cursor =
        (comments.len() == limit).then(|| comments.last().map(|comment| comment.comment_id.clone())).flatten();
    ok_json(json!({"items": items, "next_cursor": next_cursor}))
}

pub fn get_user(api: &Api, call: &mut Call<'_>) -> ApiResult {
    if let Some((handle, node)) = api.remote_handle(call.param(0)) {
        return super::remote::get_user(api, call, &handle, node);
    }
    let user = api.user_by_handle(call.param(0))?;
    let mut answer = api.user_json(&user, call.viewer_id())?;
    if let Some(siblings) = &api.siblings {
        let nodes: Vec<serde_json::Value> = siblings
            .replicas_of(&user.user_id, user.home)
            .into_iter()
            .map(|(node_id, peer_address, this_node)| {
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
                    (None, Vec::new())
                };
                json!({"id": node_id.to_string(), "name": name, "addresses": addresses,
                       "peer_address": peer_address, "this_node": this_node})
            })
            .collect();
        answer["nodes"] = json!(nodes);
    }
    ok_json(answer)
}

pub fn user_posts(api: &Api, call: &mut Call<'_>) -> ApiResult {
    if let Some((handle, node)) = api.remote_handle(call.param(0)) {
        return super::remote::user_posts(api, call, &handle, node);
    }
    let author = api.user_by_handle(call.param(0))?;
    let limit = call.limit()?;
    let cursor = call.query("cursor");
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
    api.store.set_follow(&follower, &followee.user_id, following)?;
    ok_json(json!({"following": following}))
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
    let cursor = call.query("cursor");
    let mut authors = api.store.followees(&viewer)?;
    authors.push(viewer.clone());
    let mut posts = Vec::new();
    for author in &authors {
        // Every followed author passes the followers rule; private posts only for the viewer.
        let follows = author != &viewer;
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
    let mut items: Vec<(String, Value)> = Vec::with_capacity(posts.len() + remote.len());
    for post in &posts {
        items.extend(api.post_json(post, Some(&viewer))?.map(|item| (post.post_id.clone(), item)));
    }
    items.extend(remote);
    items.sort_by(|a, b| b.0.cmp(&a.0));
    items.truncate(limit);
    let next_cursor = (items.len() == limit).then(|| items.last().map(|(post_id, _)| post_id.clone())).flatten();
    let items: Vec<Value> = items.into_iter().map(|(_, item)| item).collect();
    ok_json(json!({"items": items, "next_cursor": next_cursor}))
}

pub fn search(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let query = call.query("q").unwrap_or_default();
    let query = query.trim();
    if query.is_empty() || query.chars().count() > QUERY_CHARS_MAX {
        return Err(ApiError::bad_request("bad_query", format!("`q` must be 1 to {QUERY_CHARS_MAX} characters")));
    }
    let scope = Scope::parse(call.query("scope").as_deref())
        .map_err(|reason| ApiError::bad_request("unsupported_scope", reason))?;
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
            Err(error @ SearchError::NoAggregator { .. }) => {
                Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_aggregator", error.to_string()))
            }
            Err(SearchError::Store(error)) => Err(error.into()),
            Err(error @ SearchError::Config(_)) => Err(ApiError::unavailable(error.to_string())),
        };
    }
    let terms = text::query_terms(query);
    let posts = api.store.search_posts(&terms, limit)?;
    let handle_prefix = crate::services::search::handle_prefix(query);
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
        return ok_json(json!({"scope": "node", "answered_by": answered_by, "users": users, "posts": posts}));
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
    ok_json(json!({
        "scope": "neighbourhood",
        "answered_by": answered_by,
        "users": crate::services::search::merge_users(users, limit),
        "posts": crate::services::search::merge_posts(posts, limit),
        "unreachable": unreachable,
    }))
}

fn not_replicated_yet() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_replicated_yet",
        "this post's photos are still on their way from a sibling node; try again shortly",
    )
}
