//! Users of other nodes, addressed as `handle@<node id>` (16 hex digits): their
//! profile (asked of that node), follows (routed to their home by fan-out, `ports::Fanout`),
//! their cached posts, remote posts in feeds, and photos of remote posts (cached
//! here, fetched from the author's home on a miss). Every read applies `may_view`
//! through the fan-out core (followers-only posts only to local followers).

use bytes::Bytes;
use http::{header, Response, StatusCode};
use serde_json::Value;

use super::media::media_shape;
use super::ports::{Fanout, RemoteError};
use super::social::to_value;
use super::{header_value, shapes, Api, ApiError, ApiResult, Call};
use crate::core::fanout::{FeedEntry, RemoteUser};
use crate::core::model::NodeId;
use crate::store::BlobKind;

/// `handle@<node id>` split, when the node id is 16 hex digits.
pub(super) fn parse(text: &str) -> Option<(String, NodeId)> {
    let (handle, node) = text.rsplit_once('@')?;
    if handle.is_empty() || node.len() != 16 || !node.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    Some((handle.to_lowercase(), node.parse().ok()?))
}

fn unreachable(node: NodeId, error: &RemoteError) -> ApiError {
    match error {
        RemoteError::UnknownNode(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_node",
            format!("node {node} is not a neighbour of this node; add it under [[peers.neighbours]]"),
        ),
        error => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "node_unreachable",
            format!("node {node} did not answer ({error}); try again later"),
        ),
    }
}

impl Api {
    pub(super) fn fanout(&self) -> Result<&dyn Fanout, ApiError> {
        self.fanout.as_deref().ok_or_else(|| ApiError::unavailable("fan-out across nodes is not running on this node"))
    }

    /// `handle@<node id>` of a user of another node; `None` for local handles (and
    /// for this node's own id, which names a local user).
    pub(super) fn remote_handle(&self, text: &str) -> Option<(String, NodeId)> {
        parse(text).filter(|(_, node)| *node != self.store.node_id())
    }

    /// Hook: a post was created, edited or deleted through this API.
    pub(super) fn fanout_post_changed(&self, author_id: &str, post_id: &str) {
        if let Some(fanout) = &self.fanout {
            fanout.post_changed(author_id, post_id);
        }
    }

    /// The remote user: as last resolved if this node follows them (known without a
    /// call), else asked of `node`.
    pub(super) fn remote_user(&self, handle: &str, node: NodeId, fresh: bool) -> Result<RemoteUser, ApiError> {
        let fanout = self.fanout()?;
        if !fresh {
            if let Some(profile) = fanout.known_profile(handle, node) {
                return Ok(RemoteUser {
                    user_id: profile.user_id,
                    handle: profile.handle,
                    display_name: String::new(),
                    bio: String::new(),
                    created_at: 0,
                    home: profile.home,
                    avatar: profile.avatar,
                });
            }
        }
        fanout
            .resolve(handle, node)
            .map_err(|error| unreachable(node, &error))?
            .ok_or_else(|| ApiError::not_found("user"))
    }

    /// Remote posts of `viewer`'s feed older than `before` (a post id), newest first.
    pub(super) fn remote_feed_items(&self, viewer: &str, before: Option<&str>, limit: usize) -> Vec<(String, Value)> {
        let Some(fanout) = self.fanout.as_deref() else { return Vec::new() };
        fanout
            .feed_for(viewer, usize::MAX)
            .into_iter()
            .filter(|entry| before.is_none_or(|before| entry.post_id.as_str() < before))
            .take(limit)
            .filter_map(|entry| Some((entry.post_id.clone(), self.remote_post_json(fanout, &entry)?)))
            .collect()
    }

    /// A cached remote post shaped like a local one, plus the node it came from.
    fn remote_post_json(&self, fanout: &dyn Fanout, entry: &FeedEntry) -> Option<Value> {
        let post = entry.post.as_ref()?;
        let profile = fanout.profile(&post.author_id);
        let handle = match &profile {
            Some(profile) => format!("{}@{}", profile.handle, profile.home),
            None => post.author_id.clone(),
        };
        // The feed cache keeps who a remote author is, not their profile: their plain
        // handle (every display name starts as it) until the profile is asked for.
        let display_name = profile.as_ref().map(|profile| profile.handle.clone()).unwrap_or_default();
        let media = post
            .media
            .iter()
            .map(|media_id| match fanout.cached_media_info(media_id) {
                Some(info) => shapes::PostPhoto::Stored(media_shape(&info)),
                None => shapes::PostPhoto::NotHere(shapes::MediaReference { id: media_id.clone(), pending: None }),
            })
            .collect();
        // Their avatar as last resolved, loaded through this node like a remote profile's.
        let avatar = profile.as_ref().and_then(|profile| {
            let media_id = profile.avatar.as_ref()?;
            Some(shapes::Avatar { id: media_id.clone(), url: avatar_url(media_id, profile.home) })
        });
        Some(to_value(&shapes::RemotePost {
            id: post.post_id.clone(),
            author: shapes::RemoteAuthor { user_id: post.author_id.clone(), handle, display_name, avatar },
            caption: post.caption.clone(),
            media,
            visibility: post.visibility.into(),
            tags: post.tags.clone(),
            created_at: post.created_at,
            like_count: 0,
            comment_count: 0,
            liked_by_me: false,
            node: shapes::NodeReference { id: profile.map(|profile| profile.home.to_string()) },
        }))
    }
}

/// `GET /api/v1/users/{handle}@{node id}`.
pub(super) fn get_user(api: &Api, call: &mut Call<'_>, handle: &str, node: NodeId) -> ApiResult {
    let user = api.remote_user(handle, node, true)?;
    if let Some(fanout) = api.fanout.as_deref().filter(|fanout| fanout.profile(&user.user_id).is_some()) {
        // A followed or blocked user: feed items show what their profile says now.
        if let Err(error) = fanout.remember_profile(&user) {
            tracing::warn!(%error, "cannot keep a remote user's profile");
        }
    }
    let followed_by_me =
        call.viewer_id().is_some_and(|viewer| api.fanout().is_ok_and(|f| f.follows(viewer, &user.user_id)));
    shapes::ok(&shapes::RemoteProfile {
        user_id: user.user_id.clone(),
        handle: format!("{}@{}", user.handle, user.home),
        display_name: user.display_name.clone(),
        bio: user.bio.clone(),
        // The photo is on their node; this node fetches and caches it (`avatar`).
        avatar: user.avatar.as_ref().map(|media_id| shapes::RemoteAvatar {
            id: media_id.clone(),
            url: Some(avatar_url(media_id, user.home)),
            node: user.home.to_string(),
        }),
        admin: false,
        created_at: user.created_at,
        followed_by_me,
        node: shapes::NodeReference { id: Some(user.home.to_string()) },
        nodes: vec![shapes::ProfileNode {
            id: user.home.to_string(),
            name: None,
            addresses: Vec::new(),
            peer_address: Some(None),
            this_node: Some(false),
        }],
    })
}

/// `PUT`/`DELETE /api/v1/users/{handle}@{node id}/follow`: the Follow record in the
/// follower's shard as for any user, then the subscription (durable before we answer).
pub(super) fn set_follow(api: &Api, call: &mut Call<'_>, handle: &str, node: NodeId, following: bool) -> ApiResult {
    let follower = call.user()?.user_id.clone();
    let fanout = api.fanout()?;
    // Following asks the node (the user must exist); unfollowing works offline.
    let user = api.remote_user(handle, node, following)?;
    if following {
        api.refuse_if_blocked(&follower, &user.user_id)?;
    }
    let version = api.store.set_follow(&follower, &user.user_id, following)?;
    fanout.follow_remote(&follower, &user, version, following).map_err(|error| match error {
        RemoteError::Refused(reason) => ApiError::bad_request("cannot_follow", reason),
        RemoteError::Store(error) => error.into(),
        error => ApiError::unavailable(error.to_string()),
    })?;
    shapes::ok(&shapes::Followed::Remote { following })
}

/// `GET /api/v1/users/{handle}@{node id}/posts`: what this node has cached of them.
pub(super) fn user_posts(api: &Api, call: &mut Call<'_>, handle: &str, node: NodeId) -> ApiResult {
    let limit = call.limit()?;
    let cursor = call.query("cursor");
    let user = api.remote_user(handle, node, false)?;
    let fanout = api.fanout()?;
    // Nobody sees the posts of an author they block.
    if api.viewer_blocks(call.viewer_id(), &user.user_id)? {
        return shapes::ok(&shapes::Page::<Value> { items: Vec::new(), next_cursor: None });
    }
    let entries: Vec<FeedEntry> = fanout
        .posts_of(&user.user_id, call.viewer_id(), usize::MAX)
        .into_iter()
        .filter(|entry| cursor.as_deref().is_none_or(|before| entry.post_id.as_str() < before))
        .take(limit)
        .collect();
    let items: Vec<Value> = entries.iter().filter_map(|entry| api.remote_post_json(fanout, entry)).collect();
    let next_cursor = (entries.len() == limit).then(|| entries.last().map(|entry| entry.post_id.clone())).flatten();
    shapes::ok(&shapes::Page { items, next_cursor })
}

/// `GET /api/v1/media/{id}/{thumb|display}` for a photo this node does not hold: a
/// photo of a cached remote post the caller may see, from the cache or its author's
/// home. Range is not served for these (the whole file is, as RFC 9110 allows).
pub(super) fn download(api: &Api, call: &mut Call<'_>, media_id: &str, kind: BlobKind) -> ApiResult {
    let Some(fanout) = api.fanout.as_deref() else { return Err(ApiError::not_found("media")) };
    let found = fanout.remote_media(call.viewer_id(), media_id, kind).map_err(|error| {
        tracing::warn!(%error, media_id, "cannot fetch a remote photo");
        ApiError::new(StatusCode::BAD_GATEWAY, "node_unreachable", format!("the photo's node did not give it: {error}"))
    })?;
    let Some((info, bytes)) = found else { return Err(ApiError::not_found("media")) };
    let etag = super::etag::from_sha256_hex(&info.blob(kind).sha256);
    let builder = Response::builder()
        .header(header::ETAG, header_value(&etag))
        .header(header::CACHE_CONTROL, super::media::MEDIA_CACHE_CONTROL)
        .header(header::CONTENT_TYPE, "image/jpeg");
    if call.header(header::IF_NONE_MATCH).is_some_and(|tags| super::etag::matches(tags, &etag)) {
        return Ok(builder.status(StatusCode::NOT_MODIFIED).body(Bytes::new()).expect("valid response"));
    }
    Ok(builder.status(StatusCode::OK).body(Bytes::from(bytes)).expect("valid response"))
}

/// Where phones load the avatar of a user of `node` through this node.
pub(super) fn avatar_url(media_id: &str, node: NodeId) -> String {
    format!("/api/v1/media/{media_id}/avatar?node={node}")
}

/// `GET /api/v1/media/{id}/avatar?node={node id}`: the avatar derivative of a user of
/// another node, from this node's remote photo cache or fetched from `node` (a sibling
/// or configured neighbour). Avatars are public, so anyone may ask.
pub(super) fn avatar(api: &Api, call: &mut Call<'_>, media_id: &str, node: NodeId) -> ApiResult {
    let fanout = api.fanout()?;
    let found = fanout.remote_avatar(media_id, node).map_err(|error| {
        if !matches!(error, RemoteError::UnknownNode(_)) {
            tracing::warn!(%error, media_id, %node, "cannot fetch a remote avatar");
        }
        unreachable(node, &error)
    })?;
    let Some(bytes) = found else { return Err(ApiError::not_found("media")) };
    let etag = super::etag::of_bytes(&bytes);
    let builder = Response::builder()
        .header(header::ETAG, header_value(&etag))
        .header(header::CACHE_CONTROL, super::media::MEDIA_CACHE_CONTROL)
        .header(header::CONTENT_TYPE, "image/jpeg");
    if call.header(header::IF_NONE_MATCH).is_some_and(|tags| super::etag::matches(tags, &etag)) {
        return Ok(builder.status(StatusCode::NOT_MODIFIED).body(Bytes::new()).expect("valid response"));
    }
    Ok(builder.status(StatusCode::OK).body(Bytes::from(bytes)).expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_handles_name_a_node_by_its_16_hex_id() {
        assert_eq!(parse("Bob@00000000000000ff"), Some(("bob".to_owned(), NodeId(255))));
        assert_eq!(parse("bob"), None);
        assert_eq!(parse("bob@node"), None);
        assert_eq!(parse("@00000000000000ff"), None);
        assert_eq!(parse("bob@00000000000000fg"), None);
    }
}
