//! Notifications: likes, comments, follows and @mentions of the caller, collapsed per
//! post and kind, with an unread count and a replicated read marker. Everything is
//! derived from replicated records (`store/notifications.rs`), so any replica of the
//! user answers alike.

use http::StatusCode;
use serde::Deserialize;

use super::{empty_response, shapes, Api, ApiError, ApiResult, Call};
use crate::store::{check_cursor, NotificationGroup};

/// `GET /api/v1/notifications?limit&cursor`.
pub fn list(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    let limit = call.limit()?;
    let cursor = call.query("cursor");
    if let Some(cursor) = &cursor {
        check_cursor(cursor).map_err(|error| ApiError::bad_request("bad_query", error.to_string()))?;
    }
    let page = api.store.notifications(&user_id, cursor.as_deref(), limit)?;
    let mut items = Vec::with_capacity(page.groups.len());
    for group in &page.groups {
        items.push(group_json(api, group)?);
    }
    shapes::ok(&shapes::Page { items, next_cursor: page.next_cursor })
}

/// One collapsed group as clients show it: "ada and 3 others liked your post".
fn group_json(api: &Api, group: &NotificationGroup) -> Result<shapes::NotificationGroup, ApiError> {
    let mut actors = Vec::with_capacity(group.actor_ids.len());
    for actor_id in &group.actor_ids {
        let user = api.store.user(actor_id)?;
        // A user this node does not hold (yet) keeps the answer's shape, as authors do.
        actors.push(shapes::Actor {
            user_id: actor_id.clone(),
            handle: user.as_ref().map(|user| user.handle.clone()).unwrap_or_default(),
            display_name: user.as_ref().map(|user| user.display_name.clone()).unwrap_or_default(),
            avatar: super::social::avatar(user.as_ref().and_then(|user| user.avatar.as_deref())),
        });
    }
    let post = match &group.post_id {
        Some(post_id) => {
            let first_photo = api.store.post(post_id)?.and_then(|post| post.media.first().cloned());
            let thumb = first_photo.map(|media_id| format!("/api/v1/media/{media_id}/thumb"));
            Some(shapes::NotifiedPost { id: post_id.clone(), thumb })
        }
        None => None,
    };
    Ok(shapes::NotificationGroup {
        kind: group.kind.name(),
        post,
        actors,
        actors_count: group.actors_count,
        latest_at: group.latest_at_ms,
        unread: group.unread,
    })
}

/// `GET /api/v1/notifications/unread`: cheap, for polling.
pub fn unread(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    let count = api.store.unread_notifications(&user_id)?;
    shapes::ok(&shapes::UnreadCount { count })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MarkRead {
    /// Milliseconds since the epoch; absent: now.
    up_to: Option<u64>,
}

/// `POST /api/v1/notifications/read {up_to?}`: an empty body marks everything read.
pub fn mark_read(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    let up_to = if call.body.is_empty() { None } else { call.json::<MarkRead>()?.up_to };
    api.store.mark_notifications_read(&user_id, up_to)?;
    empty_response(StatusCode::NO_CONTENT)
}
