//! Blocking, reporting and admins hiding a post: the routes, and the checks the
//! social routes call (`Api::refuse_if_blocked`, `Api::moderation_allows`). Blocks,
//! reports and hidden flags are replicated records (store/safety.rs), so every check
//! here holds on any replica that holds the blocker's (or the post author's) shard,
//! which is every node where their posts and profile can be reached at all.

use super::shapes::{self, BlockState, BlockedUser, Page, PostHidden, ReportFiled, ReportResolved, ReportRow};
use super::social::{author, checked_cursor};
use super::{Api, ApiError, ApiResult, Call};
use crate::core::model::{Post, Report, REPORT_REASON_CHARS_MAX};
use http::StatusCode;
use serde::Deserialize;

impl Api {
    /// 403 `blocked` when `owner` blocks `actor`: what a blocked user's follow, like
    /// or comment of the blocker's posts meets.
    pub(super) fn refuse_if_blocked(&self, owner_id: &str, actor_id: &str) -> Result<(), ApiError> {
        if self.store.blocks(owner_id, actor_id)? {
            return Err(blocked_error());
        }
        Ok(())
    }

    /// Whether moderation lets `viewer` see `post`, on top of `may_view`: a hidden
    /// post only its author and admins; nobody the posts of an author they block.
    pub(super) fn moderation_allows(&self, post: &Post, viewer: Option<&str>) -> Result<bool, ApiError> {
        Ok(self.store.post_shown_to(post, viewer)?)
    }

    /// Whether `viewer` blocks `author`, so a comment of theirs is left out.
    pub(super) fn viewer_blocks(&self, viewer: Option<&str>, author_id: &str) -> Result<bool, ApiError> {
        match viewer {
            Some(viewer) if viewer != author_id => Ok(self.store.blocks(viewer, author_id)?),
            _ => Ok(false),
        }
    }
}

fn blocked_error() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "blocked", "this user has blocked you, or you have blocked them")
}

/// The signed-in admin's user id; 403 for anyone else (reports name who resolved
/// them, so the control token, which is nobody, is not enough).
fn admin_id(call: &Call<'_>, what: &str) -> Result<String, ApiError> {
    let user = call.user()?;
    if !user.admin {
        return Err(ApiError::forbidden(format!("only an admin can {what}")));
    }
    Ok(user.user_id.clone())
}

// ----- blocks -----

fn set_block(api: &Api, call: &mut Call<'_>, blocking: bool) -> ApiResult {
    let blocker = call.user()?.user_id.clone();
    if let Some((handle, node)) = api.remote_handle(call.param(0)) {
        return set_remote_block(api, &blocker, &handle, node, blocking);
    }
    let blocked = api.user_by_handle(call.param(0))?;
    if blocked.user_id == blocker {
        return Err(ApiError::bad_request("cannot_block_self", "you cannot block yourself"));
    }
    api.store.set_block(&blocker, &blocked.user_id, blocking)?;
    shapes::ok(&BlockState { handle: blocked.handle, blocked: blocking })
}

/// Blocks (or unblocks) `handle@node`, a user of another node, known by the id their
/// node gave (a followed user or a follower is known here; anyone else is asked of
/// `node`). The blocker's follow of them ends (its subscription too); their follow
/// of the blocker lives on their node, so the fan-out here stops sending them
/// anything and their node is told (`Audience::Nothing`); unblocking lets their
/// follow give again what it would.
fn set_remote_block(
    api: &Api,
    blocker: &str,
    handle: &str,
    node: crate::core::model::NodeId,
    blocking: bool,
) -> ApiResult {
    let fanout = api.fanout()?;
    let user = api.remote_user(handle, node, false)?;
    let unavailable = |error: super::ports::RemoteError| match error {
        super::ports::RemoteError::Store(error) => ApiError::from(error),
        error => ApiError::unavailable(error.to_string()),
    };
    if fanout.profile(&user.user_id).is_none() {
        // So the list of blocks can name them.
        fanout.remember_profile(&user).map_err(unavailable)?;
    }
    if blocking && api.store.follow_status(blocker, &user.user_id)?.is_some() {
        let version = api.store.set_follow(blocker, &user.user_id, false)?;
        fanout.follow_remote(blocker, &user, version, false).map_err(unavailable)?;
    }
    api.store.set_block(blocker, &user.user_id, blocking)?;
    fanout.audience_changed(blocker);
    shapes::ok(&BlockState { handle: format!("{}@{}", user.handle, user.home), blocked: blocking })
}

/// `POST /api/v1/users/{handle}/block`: also ends the follows between you, both ways.
pub fn block(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_block(api, call, true)
}

/// `DELETE /api/v1/users/{handle}/block`: no follow comes back.
pub fn unblock(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_block(api, call, false)
}

/// `GET /api/v1/users/{handle}/block`: whether the caller blocks them.
pub fn block_status(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let viewer = call.user()?.user_id.clone();
    if let Some((handle, node)) = api.remote_handle(call.param(0)) {
        let user = api.remote_user(&handle, node, false)?;
        let blocked = api.store.blocks(&viewer, &user.user_id)?;
        return shapes::ok(&BlockState { handle: format!("{}@{}", user.handle, user.home), blocked });
    }
    let user = api.user_by_handle(call.param(0))?;
    let blocked = api.store.blocks(&viewer, &user.user_id)?;
    shapes::ok(&BlockState { handle: user.handle, blocked })
}

/// `GET /api/v1/me/blocks?limit&cursor`: `{items: [{user_id, handle, display_name,
/// since}], next_cursor}`, by user id.
pub fn list_blocks(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    let limit = call.limit()?;
    let cursor = checked_cursor(call.query("cursor"))?;
    let blocked = api.store.blocked_users(&user_id, cursor.as_deref(), limit)?;
    let mut items = Vec::with_capacity(blocked.len());
    for entry in &blocked {
        let (handle, display_name) = match api.store.user(&entry.user_id)? {
            Some(user) => (user.handle, user.display_name),
            // A user of another node: `handle@<node id>` as fan-out keeps them.
            None => match api.fanout.as_deref().and_then(|fanout| fanout.profile(&entry.user_id)) {
                Some(profile) => (format!("{}@{}", profile.handle, profile.home), profile.handle),
                None => Default::default(),
            },
        };
        items.push(BlockedUser { user_id: entry.user_id.clone(), handle, display_name, since: entry.since });
    }
    let next_cursor = (blocked.len() == limit).then(|| blocked.last().map(|entry| entry.user_id.clone())).flatten();
    shapes::ok(&Page { items, next_cursor })
}

// ----- reports -----

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewReport {
    /// 1 to 500 characters.
    reason: String,
}

/// `POST /api/v1/posts/{id}/report {reason}`: to the node's admins; 404 for a post
/// the caller cannot see.
pub fn report_post(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let reporter = call.user()?.user_id.clone();
    let request: NewReport = call.json()?;
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > REPORT_REASON_CHARS_MAX {
        return Err(ApiError::bad_request(
            "invalid_report",
            format!("a reason is 1 to {REPORT_REASON_CHARS_MAX} characters"),
        ));
    }
    let post = api.visible_post(call.param(0), Some(&reporter))?;
    let report = api.store.report_post(&reporter, &post, reason.to_owned())?;
    shapes::answer(
        StatusCode::CREATED,
        &ReportFiled {
            id: report.report_id,
            post_id: report.post_id,
            reason: report.reason,
            created_at: report.created_at,
        },
    )
}

fn report_row(api: &Api, report: &Report, admin: &str) -> Result<ReportRow, ApiError> {
    let post = api.store.post(&report.post_id)?;
    let post_json = match &post {
        Some(post) => api.post_json(post, Some(admin))?,
        None => None,
    };
    let hidden = match &post {
        Some(post) => api.store.post_moderation(post)?.is_some_and(|moderation| moderation.hidden),
        None => false,
    };
    let resolved = match &report.resolved {
        Some(resolution) => Some(ReportResolved {
            by: author(&resolution.by, api.store.user(&resolution.by)?.as_ref()),
            at: resolution.at,
        }),
        None => None,
    };
    Ok(ReportRow {
        id: report.report_id.clone(),
        reason: report.reason.clone(),
        created_at: report.created_at,
        reporter: author(&report.reporter_id, api.store.user(&report.reporter_id)?.as_ref()),
        post_id: report.post_id.clone(),
        post_author: author(&report.post_author_id, api.store.user(&report.post_author_id)?.as_ref()),
        post: post_json,
        post_deleted: post.is_none(),
        hidden,
        resolved,
    })
}

/// `GET /api/v1/admin/reports?limit&cursor&state=open|all`: newest first.
pub fn list_reports(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let admin = admin_id(call, "read reports")?;
    let limit = call.limit()?;
    let cursor = checked_cursor(call.query("cursor"))?;
    let open_only = match call.query("state").as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(_) => return Err(ApiError::bad_request("bad_query", "`state` is `open` (the default) or `all`")),
    };
    let reports = api.store.reports(cursor.as_deref(), limit, open_only)?;
    let items = reports.iter().map(|report| report_row(api, report, &admin)).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = (reports.len() == limit).then(|| reports.last().map(|report| report.report_id.clone())).flatten();
    shapes::ok(&Page { items, next_cursor })
}

/// `POST /api/v1/admin/reports/{id}/resolve`: closes it (it stays in `state=all`).
pub fn resolve_report(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let admin = admin_id(call, "resolve reports")?;
    let report_id =
        checked_cursor(Some(call.param(0).to_owned())).map_err(|_| ApiError::not_found("report"))?.unwrap_or_default();
    let report = api.store.resolve_report(&report_id, &admin)?.ok_or_else(|| ApiError::not_found("report"))?;
    shapes::ok(&report_row(api, &report, &admin)?)
}

// ----- admins hiding posts -----

fn set_hidden(api: &Api, call: &mut Call<'_>, hidden: bool) -> ApiResult {
    let admin = admin_id(call, if hidden { "hide posts" } else { "unhide posts" })?;
    let post = api.store.post(call.param(0))?.ok_or_else(|| ApiError::not_found("post"))?;
    api.store.set_post_hidden(&post, &admin, hidden)?;
    // Withdrawn from (or given back to) other nodes' feed caches, as an edit would be.
    api.fanout_post_changed(&post.author_id, &post.post_id);
    shapes::ok(&PostHidden { post_id: post.post_id, hidden })
}

/// `POST /api/v1/admin/posts/{id}/hide`: shown to nobody but its author and admins.
pub fn hide_post(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_hidden(api, call, true)
}

/// `POST /api/v1/admin/posts/{id}/unhide`.
pub fn unhide_post(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_hidden(api, call, false)
}
