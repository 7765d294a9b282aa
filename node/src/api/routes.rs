//! The route table: the one list that dispatch and `/openapi.json` are both made
//! from, so the document always matches what is served.

use http::{Method, StatusCode};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};

use super::{accounts, media, onboarding, safety, shapes, social, Api, ApiError, ApiResult, Call, SignedInBy};
use crate::core::model::TokenScope;

/// Who may call a route (documentation; handlers enforce it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Anyone,
    /// Anyone; a signed-in caller may see more.
    OptionalUser,
    User,
    /// A user signed in with a session: personal access tokens never manage
    /// credentials (password, sessions, tokens), so a leaked token cannot take over
    /// the account.
    Session,
    Admin,
    /// Admins, the local control token, or a request through the operator's metrics
    /// listener (`MetricsListener`); 403 for anyone else.
    Operator,
}

pub struct Route {
    pub method: Method,
    /// Path with `{name}` placeholders for one segment each.
    pub pattern: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Request body: `None`, `Some("json")` or `Some("image")`.
    pub body: Option<&'static str>,
    /// Every success status the handler answers with, the usual one first: what
    /// `/openapi.json` documents (the black-box tests check answers against it).
    pub success: &'static [StatusCode],
    /// What a success answer (other than 204) carries, documented in `/openapi.json`.
    pub answer: Answer,
    /// The JSON request body's shape (`Route::takes`); `None`: a plain object.
    pub request: Option<SchemaFn>,
    pub handler: fn(&Api, &mut Call<'_>) -> ApiResult,
}

/// A type's JSON Schema, its definitions added to the generator (a `$ref` for
/// named types): `SchemaGenerator::subschema_for::<T>`.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The body of a route's success answers.
#[derive(Clone, Copy)]
pub enum Answer {
    /// JSON of this shape (`Route::answers`).
    Json(SchemaFn),
    /// JSON whose shape is not written down yet: documented as any object.
    UntypedJson,
    /// Not JSON: bytes of this media type (`Route::answers_bytes`).
    Bytes(&'static str),
}

impl Route {
    /// The route's success answers are `T` as JSON.
    fn answers<T: JsonSchema>(self) -> Route {
        Route { answer: Answer::Json(SchemaGenerator::subschema_for::<T>), ..self }
    }

    /// The route's success answers are bytes of `media_type`, not JSON.
    fn answers_bytes(self, media_type: &'static str) -> Route {
        Route { answer: Answer::Bytes(media_type), ..self }
    }

    /// The route's JSON request body is `T`.
    fn takes<T: JsonSchema>(self) -> Route {
        Route { request: Some(SchemaGenerator::subschema_for::<T>), ..self }
    }
}

/// `route!(METHOD "/pattern", Access, body, handler, "summary")` for a route that
/// answers 200; `route!(METHOD "/pattern" => CREATED | OK, …)` names the success
/// statuses (`StatusCode` constants) of one that answers anything else. Its answer
/// is untyped JSON until `.answers::<T>()` (or `.answers_bytes(…)`) says otherwise.
macro_rules! route {
    ($method:ident $pattern:literal, $access:ident, $body:expr, $handler:path, $summary:literal) => {
        route!($method $pattern => OK, $access, $body, $handler, $summary)
    };
    ($method:ident $pattern:literal => $($success:ident)|+, $access:ident, $body:expr, $handler:path, $summary:literal) => {
        Route {
            method: Method::$method,
            pattern: $pattern,
            summary: $summary,
            access: Access::$access,
            body: $body,
            success: &[$(StatusCode::$success),+],
            answer: Answer::UntypedJson,
            request: None,
            handler: $handler,
        }
    };
}

const JSON: Option<&str> = Some("json");
pub(super) const IMAGE: Option<&str> = Some("image");
/// A tar archive, spooled like an upload (`POST /api/v1/me/import`).
pub(super) const ARCHIVE: Option<&str> = Some("archive");

pub fn table() -> &'static [Route] {
    static TABLE: std::sync::OnceLock<Vec<Route>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        vec![
            route!(GET "/healthz", Anyone, None, accounts::healthz, "Liveness: {\"status\":\"ok\"}").answers::<shapes::Health>(),
            route!(GET "/metrics", Operator, None, accounts::metrics,
                "Prometheus metrics: admins, the control token or the metrics listener; 403 for others").answers_bytes("text/plain"),
            route!(GET "/openapi.json", Anyone, None, openapi, "This document"),
            route!(GET "/onboarding", Anyone, None, onboarding::page,
                "Trusting this node's CA, per platform (HTML; also on the plain-HTTP onboarding listener); ?claim=CODE continues to the claim screen").answers_bytes("text/html"),
            route!(GET "/ca.crt", Anyone, None, onboarding::ca_der, "This node's certificate authority (DER)").answers_bytes("application/x-x509-ca-cert"),
            route!(GET "/ca.pem", Anyone, None, onboarding::ca_pem, "This node's CA and its siblings' CAs (PEM bundle)").answers_bytes("application/x-pem-file"),
            route!(GET "/ca.mobileconfig", Anyone, None, onboarding::ca_mobileconfig,
                "The CA bundle as an iOS/macOS configuration profile").answers_bytes("application/x-apple-aspen-config"),
            route!(GET "/.well-known/acme-challenge/{token}", Anyone, None, onboarding::acme_challenge,
                "ACME HTTP-01 answer while this node orders a certificate").answers_bytes("application/octet-stream"),
            route!(GET "/api/v1/node", Anyone, None, accounts::node,
                "Node id, name, version, region, roles, pin, addresses, base_url, peers, claimed (claimed or holding any account), open_registration").answers::<shapes::NodeAbout>(),
            route!(GET "/api/v1/node/replication", Admin, None, accounts::replication,
                "Replication state for operators: {node_id, records, tombstones, digest, media_missing, epoch, log_end, peers}").answers::<shapes::ReplicationAnswer>(),
            route!(GET "/api/v1/node/peers", Admin, None, accounts::peers,
                "Siblings with state, last contact, lag and trust: {items}").answers::<shapes::Items<shapes::Peer>>(),
            route!(POST "/api/v1/node/peers/pair", Admin, None, accounts::pair,
                "A one-time pairing code for `edgenode peer join` on the other node: {code, expires_in_seconds, peer_address, node_id, pin}").answers::<shapes::PairingCode>(),
            route!(POST "/api/v1/node/peers/join", Admin, JSON, accounts::join,
                "Pairs with the node at address using the code it showed: {node_id, address, pin}").answers::<shapes::Joined>().takes::<accounts::JoinRequest>(),
            route!(POST "/api/v1/node/peers/{node_id}/retire", Admin, None, accounts::retire_peer,
                "Retires a dead sibling (?force=true: even if connected): {node_id, pin, retired_at_ms, retired_by, already_retired, siblings_left}").answers::<shapes::PeerRetired>(),
            route!(POST "/api/v1/node/update/check", Admin, None, super::update::check,
                "Asks the update server now (`edgenode update check`): {outcome, version, running_version, rollout_percent, published_at}; 409 no_update_url, 502 update_failed, 501 updates_not_available").answers::<shapes::UpdateChecked>(),
            route!(POST "/api/v1/node/update/install", Admin, JSON, super::update::install,
                "Control token only (`edgenode update install`): installs one RAUC bundle (an absolute path on the node's machine, or an https:// URL) into the inactive slot: {installed}; 501 updates_not_available, 502 update_failed, 409 update_in_progress").answers::<shapes::UpdateInstalled>().takes::<super::update::InstallRequest>(),
            route!(GET "/api/v1/node/nearby", Admin, None, accounts::nearby,
                "Nodes seen nearby over mDNS (hints only: pins are checked, never trusted): {mdns, items}").answers::<shapes::Nearby>(),
            route!(POST "/api/v1/node/backups" => CREATED, Admin, None, super::backup::create,
                "Control token only (`edgenode backup`): snapshot the database as of one transaction into <data_dir>/<path>: {id, path, node_id, database_bytes, rows, records, tombstones, digest, media_items, media_bytes, version}; 409 while another is taken").answers::<shapes::BackupTaken>(),
            route!(DELETE "/api/v1/node/backups/{id}" => NO_CONTENT, Admin, None, super::backup::release,
                "Control token only: remove a snapshot once `edgenode backup` has copied it"),
            route!(POST "/api/v1/accounts" => CREATED, Anyone, JSON, accounts::create_account,
                "Create an account: {handle, password, claim?|invite?}; codes compare case-insensitively, hyphens and spaces ignored; 409 already_claimed when claiming a node that has accounts").answers::<shapes::AccountCreated>().takes::<accounts::NewAccount>(),
            route!(POST "/api/v1/sessions", Anyone, JSON, accounts::login,
                "Sign in: {handle, password, device?} -> {token, user_id, device}").answers::<shapes::SignedIn>().takes::<accounts::Credentials>(),
            route!(DELETE "/api/v1/sessions" => NO_CONTENT, Session, None, accounts::logout,
                "Sign out: revoke the session token used (access tokens are revoked with DELETE /api/v1/me/tokens/{id})"),
            route!(POST "/api/v1/password-reset", Anyone, JSON, accounts::password_reset,
                "Set a new password with a one-time code from an admin: {handle, code, new_password} -> {token, user_id}; every other session is signed out; throttled as sign-ins").answers::<shapes::PasswordReset>().takes::<accounts::PasswordReset>(),
            route!(PUT "/api/v1/me/password", Session, JSON, accounts::change_password,
                "Change your password: {current_password, new_password, sign_out_other_sessions?} -> {signed_out_other_sessions}").answers::<shapes::PasswordChanged>().takes::<accounts::PasswordChange>(),
            route!(DELETE "/api/v1/me", Session, JSON, accounts::delete_me,
                "Delete your account on every replica: {password} (a session, not a token); what DELETE /api/v1/admin/users/{handle} does; 403 wrong_password, 409 last_admin").answers::<shapes::AccountDeleted>().takes::<accounts::AccountDeletionRequest>(),
            route!(GET "/api/v1/me/sessions", Session, None, accounts::list_sessions,
                "Your sessions on this node: {items: [{session_id, created_at, last_seen_at, user_agent, current}]}").answers::<shapes::Items<shapes::Session>>(),
            route!(DELETE "/api/v1/me/sessions/{id}" => NO_CONTENT, Session, None, accounts::revoke_session,
                "Sign out one of your sessions on this node"),
            route!(POST "/api/v1/me/tokens" => CREATED, Session, JSON, accounts::create_token,
                "A personal access token: {name, scope: read|write} -> {token_id, name, scope, created_at, token} (token shown once)").answers::<shapes::AccessTokenCreated>().takes::<accounts::NewAccessToken>(),
            route!(GET "/api/v1/me/tokens", Session, None, accounts::list_tokens,
                "Your personal access tokens: {items: [{token_id, name, scope, created_at}]}").answers::<shapes::Items<shapes::AccessToken>>(),
            route!(DELETE "/api/v1/me/tokens/{id}" => NO_CONTENT, Session, None, accounts::revoke_token,
                "Revoke a personal access token"),
            route!(GET "/api/v1/admin/users", Admin, None, accounts::admin_list_users,
                "Users this node holds, by handle (admin or control token): {items: [{user_id, handle, display_name, admin, disabled, created_at, home, storage_bytes_used, last_seen_at}], next_cursor}").answers::<shapes::Page<shapes::UserRow>>(),
            route!(POST "/api/v1/admin/users" => CREATED, Admin, JSON, accounts::admin_add_user,
                "Add an account (admin or control token): {handle, password?} -> {user_id, handle, admin, reset_code?, reset_code_expires_at?}").answers::<shapes::UserAdded>().takes::<accounts::AddedUser>(),
            route!(POST "/api/v1/admin/users/{handle}/disable", Admin, None, accounts::admin_disable_user,
                "Disable an account on every replica: no sign-in, sessions signed out, tokens refused -> the user's row").answers::<shapes::UserRow>(),
            route!(POST "/api/v1/admin/users/{handle}/enable", Admin, None, accounts::admin_enable_user,
                "Enable a disabled account -> the user's row").answers::<shapes::UserRow>(),
            route!(DELETE "/api/v1/admin/users/{handle}", Admin, None, accounts::admin_delete_user,
                "Delete an account on every replica (admin or control token): posts, likes, comments, follows of and by it, photo ownerships tombstoned, photos nobody else owns removed from disk; the handle stays reserved; 409 last_admin -> {handle, user_id, deleted, records_deleted, follows_of_them_deleted, photos_removed, handle_reserved}").answers::<shapes::AccountDeleted>(),
            route!(POST "/api/v1/admin/users/{handle}/reset-code", Admin, None, accounts::admin_reset_code,
                "A one-time password-reset code, valid for a day: {handle, code, expires_at}").answers::<shapes::ResetCodeIssued>(),
            route!(POST "/api/v1/invites" => CREATED, Admin, None, accounts::create_invite,
                "Create a one-time invite code (admin or control token): {code: XXXXX-XXXXX (Crockford base32), link: <base_url>#/join?code=<code>, qr_svg: <svg> of link}").answers::<shapes::InviteCreated>(),
            route!(GET "/api/v1/invites", Admin, None, accounts::list_invites,
                "Open invites, newest first (admin or control token): {items: [{code, created_at, created_by: {user_id, handle}|null}]}").answers::<shapes::Items<shapes::Invite>>(),
            route!(DELETE "/api/v1/invites/{code}" => NO_CONTENT, Admin, None, accounts::revoke_invite,
                "Revoke an open invite (admin or control token); 404 when no open invite has the code"),
            route!(POST "/api/v1/media" => CREATED | OK, User, IMAGE, media::upload,
                "Upload an image; the node computes its SHA-256").answers::<shapes::Media>(),
            route!(PUT "/api/v1/media/{sha256}" => CREATED | OK, User, IMAGE, media::upload,
                "Upload an image under its SHA-256 (hex); 200 if already stored").answers::<shapes::Media>(),
            route!(GET "/api/v1/media/{id}/avatar", OptionalUser, None, media::avatar,
                "A profile photo's square derivative (256 px JPEG, centre crop, no metadata): anyone, while it is someone's avatar; its owner always; ?node={node id}: a user of another node's, fetched through this node and cached").answers_bytes("image/jpeg"),
            route!(GET "/api/v1/media/{id}/{variant}" => OK | PARTIAL_CONTENT, OptionalUser, None, media::download,
                "Image bytes: variant thumb (fits 256 px), display (fits 1080 px) or original (owner only)").answers_bytes("image/*"),
            route!(POST "/api/v1/posts" => CREATED, User, JSON, social::create_post,
                "Post: {caption, media: [id], visibility}").answers::<shapes::Post>().takes::<social::NewPost>(),
            route!(GET "/api/v1/posts/{id}", OptionalUser, None, social::get_post, "One post").answers::<shapes::Post>(),
            route!(DELETE "/api/v1/posts/{id}" => NO_CONTENT, User, None, social::delete_post,
                "Delete one of your posts"),
            route!(PATCH "/api/v1/posts/{id}", User, JSON, social::edit_post,
                "Edit one of your posts: {caption?, visibility?}").answers::<shapes::Post>().takes::<social::PostEdit>(),
            route!(PUT "/api/v1/posts/{id}/like", User, None, social::like,
                "Like a post; 403 blocked when its author blocks you").answers::<shapes::Liked>(),
            route!(POST "/api/v1/posts/{id}/report" => CREATED, User, JSON, safety::report_post,
                "Report a post to this node's admins: {reason} (1 to 500 characters) -> {id, post_id, reason, created_at}; 404 for a post you cannot see").answers::<shapes::ReportFiled>().takes::<safety::NewReport>(),
            route!(GET "/api/v1/admin/reports", Admin, None, safety::list_reports,
                "Reports of posts, newest first (admins): ?state=open|all&limit&cursor -> {items: [{id, reason, created_at, reporter, post_id, post_author, post|null, post_deleted, hidden, resolved: {by, at}|null}], next_cursor}").answers::<shapes::Page<shapes::ReportRow>>(),
            route!(POST "/api/v1/admin/reports/{id}/resolve", Admin, None, safety::resolve_report,
                "Close a report (admins); it stays listed under state=all: the report as listed").answers::<shapes::ReportRow>(),
            route!(POST "/api/v1/admin/posts/{id}/hide", Admin, None, safety::hide_post,
                "Hide a post (admins): nobody but its author and admins sees it (feeds, profile, search, single GET, photos), on every replica: {post_id, hidden}").answers::<shapes::PostHidden>(),
            route!(POST "/api/v1/admin/posts/{id}/unhide", Admin, None, safety::unhide_post,
                "Show a hidden post again (admins): {post_id, hidden}").answers::<shapes::PostHidden>(),
            route!(DELETE "/api/v1/posts/{id}/like", User, None, social::unlike, "Take back a like").answers::<shapes::Liked>(),
            route!(POST "/api/v1/posts/{id}/comments" => CREATED, User, JSON, social::add_comment,
                "Comment: {text}").answers::<shapes::Comment>().takes::<social::NewComment>(),
            route!(GET "/api/v1/posts/{id}/comments", OptionalUser, None, social::comments,
                "Comments, oldest first: {items, next_cursor}").answers::<shapes::Page<shapes::Comment>>(),
            route!(GET "/api/v1/me/export", User, None, super::export::export,
                "Download your data: a tar of your originals (media/<sha256>.<ext>) beside manifest.json, profile.json, posts.json, comments.json, likes.json and follows.json (docs/export.md); 503 while some of your photos are still being copied here").answers_bytes("application/x-tar"),
            route!(POST "/api/v1/me/import", User, ARCHIVE, super::export::import,
                "Import an export's archive (application/x-tar) into your account: checked whole first (manifest hashes, names, JSON, limits; 400/422 and nothing written), then photos through the upload pipeline and posts with their dates, captions and visibility; again skips what is there: {posts: {imported, skipped}, photos: {imported, skipped}, not_imported: {comments, likes, follows}}").answers::<shapes::Imported>(),
            route!(PATCH "/api/v1/me/profile", User, JSON, social::edit_profile,
                "Edit your profile: {display_name?, bio?, avatar?: media id|null, locked?: bool}; locking keeps your followers, unlocking approves every pending request; answers the profile as GET /api/v1/users/{handle}").answers::<shapes::Profile>().takes::<social::ProfileChange>(),
            route!(GET "/api/v1/me/follow-requests", User, None, social::follow_requests,
                "Follow requests waiting for your (locked) account's answer, users of other nodes as handle@node_id: {items: [{user_id, handle, display_name, since}], next_cursor}").answers::<shapes::Page<shapes::FollowRequest>>(),
            route!(POST "/api/v1/me/follow-requests/{handle}/approve", User, None, social::approve_follow_request,
                "Approve a follow request: the follower sees your followers posts; 404 when they do not follow you: {handle, approved}").answers::<shapes::FollowAnswered>(),
            route!(DELETE "/api/v1/me/follow-requests/{handle}", User, None, social::reject_follow_request,
                "Reject a follow request, or remove a follower: they see only your public posts until they follow again and you approve: {handle, approved}").answers::<shapes::FollowAnswered>(),
            route!(GET "/api/v1/me/blocks", User, None, safety::list_blocks,
                "Users you block, by user id: {items: [{user_id, handle, display_name, since}], next_cursor}").answers::<shapes::Page<shapes::BlockedUser>>(),
            route!(GET "/api/v1/users/{handle}/block", User, None, safety::block_status,
                "Whether you block the user: {handle, blocked}").answers::<shapes::BlockState>(),
            route!(POST "/api/v1/users/{handle}/block", User, None, safety::block,
                "Block a user: they cannot follow you, see your non-public posts, like or comment on your posts, or notify you (mentions included); their posts and comments leave your feed, lists and notifications; follows between you end both ways and do not come back on unblocking; handle@node_id blocks a user of another node: {handle, blocked}").answers::<shapes::BlockState>(),
            route!(DELETE "/api/v1/users/{handle}/block", User, None, safety::unblock,
                "Unblock a user (follows stay ended): {handle, blocked}").answers::<shapes::BlockState>(),
            route!(GET "/api/v1/users/{handle}", OptionalUser, None, social::get_user,
                "Profile, with the nodes that hold the user's data").answers::<shapes::AnyProfile>(),
            route!(GET "/api/v1/users/{handle}/posts", OptionalUser, None, social::user_posts,
                "A user's posts visible to the caller, newest first: {items, next_cursor}").answers::<shapes::Page<shapes::AnyPost>>(),
            route!(GET "/api/v1/users/{handle}/quota", User, None, super::quota::get_quota,
                "The user's quota (the user or an admin): {storage_bytes_used, storage_bytes_max, upload_bytes_per_hour_max}").answers::<shapes::Quota>(),
            route!(PUT "/api/v1/users/{handle}/quota", Admin, JSON, super::quota::set_quota,
                "Set a user's quota: {storage_bytes_max: n|null, upload_bytes_per_hour_max: n|null}; null is the node default").answers::<shapes::Quota>().takes::<super::quota::QuotaRequest>(),
            route!(PUT "/api/v1/users/{handle}/follow", User, None, social::follow,
                "Follow a user: {following, status: following|requested}; a locked account's follow is a request until it approves").answers::<shapes::Followed>(),
            route!(DELETE "/api/v1/users/{handle}/follow", User, None, social::unfollow, "Stop following a user").answers::<shapes::Followed>(),
            route!(GET "/api/v1/feed", User, None, social::feed,
                "Your and followed users' posts, newest first: {items, next_cursor}").answers::<shapes::Page<shapes::AnyPost>>(),
            route!(GET "/api/v1/search", OptionalUser, None, social::search,
                "Search public posts (words, #tags) and handles: {users, posts}").answers::<shapes::SearchAnswer>(),
            route!(GET "/api/v1/notifications", User, None, super::notifications::list,
                "Your notifications (likes, comments, follows, follow requests, @mentions), collapsed per post and kind, newest first: {items: [{kind, post: {id, thumb}|null, actors (3 newest), actors_count, latest_at, unread}], next_cursor}").answers::<shapes::Page<shapes::NotificationGroup>>(),
            route!(GET "/api/v1/notifications/unread", User, None, super::notifications::unread,
                "How many notification groups are unread: {count}").answers::<shapes::UnreadCount>(),
            route!(POST "/api/v1/notifications/read" => NO_CONTENT, User, JSON, super::notifications::mark_read,
                "Mark notifications read up to {up_to} (ms since the epoch; empty body or absent: now); the marker only moves forward").takes::<super::notifications::MarkRead>(),
            route!(GET "/", Anyone, None, super::web::index, "The web app: the page every screen starts from").answers_bytes("text/html"),
            route!(GET "/app/app.js", Anyone, None, super::web::asset, "Web app: screens and navigation").answers_bytes("text/javascript"),
            route!(GET "/app/api.js", Anyone, None, super::web::asset, "Web app: calls to this API, uploads with progress").answers_bytes("text/javascript"),
            route!(GET "/app/account.js", Anyone, None, super::web::asset,
                "Web app: account care (password, sessions, access tokens, reset codes) and the admin's users").answers_bytes("text/javascript"),
            route!(GET "/app/people.js", Anyone, None, super::web::asset,
                "Web app: editing your profile, notifications and their unread badge").answers_bytes("text/javascript"),
            route!(GET "/app/blurhash.js", Anyone, None, super::web::asset, "Web app: blurhash placeholders").answers_bytes("text/javascript"),
            route!(GET "/app/app.css", Anyone, None, super::web::asset, "Web app: style sheet").answers_bytes("text/css"),
            route!(GET "/app/sw.js", Anyone, None, super::web::asset, "Web app: service worker (caches the app shell only)").answers_bytes("text/javascript"),
            route!(GET "/app/manifest.webmanifest", Anyone, None, super::web::asset, "Web app: manifest for installing").answers_bytes("application/manifest+json"),
            route!(GET "/app/icon.svg", Anyone, None, super::web::asset, "Web app: icon").answers_bytes("image/svg+xml"),
        ]
    })
}

/// What a caller's way of signing in allows on `route`, decided here for every
/// route: a personal access token never manages credentials (`Access::Session`),
/// and a read token only reads (`GET`, `HEAD`); 403 otherwise.
pub fn check_signed_in_by(route: &Route, signed_in_by: Option<SignedInBy>) -> Result<(), ApiError> {
    let Some(SignedInBy::AccessToken(scope)) = signed_in_by else { return Ok(()) };
    if route.access == Access::Session {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "session_required",
            "access tokens cannot manage passwords, sessions or tokens: sign in with your password",
        ));
    }
    let reads = route.method == Method::GET || route.method == Method::HEAD;
    if scope == TokenScope::Read && !reads {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only_token",
            format!("this access token may only read; {} {} writes (make a write token)", route.method, route.pattern),
        ));
    }
    Ok(())
}

/// The route for a request and its path parameters; 404 or 405 otherwise.
pub fn find(method: &Method, path: &str) -> Result<(&'static Route, Vec<String>), ApiError> {
    let mut allowed: Vec<&str> = Vec::new();
    for route in table() {
        if let Some(params) = match_pattern(route.pattern, path) {
            if route.method == method {
                return Ok((route, params));
            }
            allowed.push(route.method.as_str());
            if route.method == Method::GET {
                allowed.push(Method::HEAD.as_str());
            }
        }
    }
    if !allowed.is_empty() {
        let allow = http::HeaderValue::from_str(&allowed.join(", ")).expect("method names are valid header text");
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}; allowed: {}", allowed.join(", ")),
        )
        .with_header(http::header::ALLOW, allow))
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {path}; see /openapi.json")))
    }
}

fn match_pattern(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut pattern_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    let mut params = Vec::new();
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return Some(params),
            (Some(expected), Some(actual)) => {
                if expected.starts_with('{') {
                    if actual.is_empty() {
                        return None;
                    }
                    params.push(super::percent_decode(actual));
                } else if expected != actual {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

fn openapi(_api: &Api, _call: &mut Call<'_>) -> ApiResult {
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    super::ok_json(DOCUMENT.get_or_init(openapi_document).clone())
}

/// Where `$ref`s point: OpenAPI's own place for named schemas.
const SCHEMAS_PATH: &str = "/components/schemas";

/// The OpenAPI 3.1 document of the route table. Its schemas are JSON Schema 2020-12
/// (what OpenAPI 3.1 uses), generated from the types handlers serialize (answers, as
/// serialized) and deserialize (request bodies, as accepted), named under
/// `components/schemas`.
pub fn openapi_document() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|settings| {
        settings.definitions_path = SCHEMAS_PATH.into();
        settings.meta_schema = None;
    });
    let mut answers = settings.clone().for_serialize().into_generator();
    let mut requests = settings.for_deserialize().into_generator();
    let error_schema = answers.subschema_for::<super::shapes::ErrorAnswer>();
    let mut paths = Map::new();
    for route in table() {
        let parameters: Vec<Value> = route
            .pattern
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "summary": route.summary,
            "parameters": parameters,
            "responses": {
                "default": {"description": "Error: {\"error\":{\"code\",\"message\"}}",
                            "content": {"application/json": {"schema": error_schema}}}
            }
        });
        for status in route.success {
            let description = status.canonical_reason().unwrap_or("Success");
            let mut response = json!({"description": description});
            if *status != StatusCode::NO_CONTENT {
                response["content"] = match route.answer {
                    Answer::Json(schema) => json!({"application/json": {"schema": schema(&mut answers)}}),
                    Answer::UntypedJson => json!({"application/json": {"schema": {"type": "object"}}}),
                    Answer::Bytes(media_type) => {
                        json!({media_type: {"schema": {"type": "string", "format": "binary"}}})
                    }
                };
            }
            operation["responses"][status.as_str()] = response;
        }
        if matches!(route.access, Access::User | Access::Session | Access::Admin | Access::Operator) {
            operation["security"] = json!([{"bearer": []}]);
        }
        match route.body {
            Some("json") => {
                let schema = match route.request {
                    Some(schema) => schema(&mut requests).to_value(),
                    None => json!({"type": "object"}),
                };
                operation["requestBody"] =
                    json!({"required": true, "content": {"application/json": {"schema": schema}}})
            }
            Some("archive") => {
                operation["requestBody"] = json!({"required": true, "content": {
                    "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}})
            }
            Some(_) => {
                operation["requestBody"] = json!({"required": true, "content": {
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "image/webp": {"schema": {"type": "string", "format": "binary"}}}})
            }
            None => {}
        }
        let entry = paths.entry(route.pattern.to_owned()).or_insert_with(|| json!({}));
        entry[route.method.as_str().to_lowercase()] = operation;
    }
    let mut schemas = answers.take_definitions(true);
    for (name, schema) in requests.take_definitions(true) {
        // One name, one shape: a type both answered and accepted must read alike.
        let previous = schemas.insert(name.clone(), schema.clone());
        assert!(previous.is_none_or(|previous| previous == schema), "two shapes named {name}");
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Edgenode API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_capture_segments() {
        assert_eq!(
            match_pattern("/api/v1/media/{id}/{variant}", "/api/v1/media/ab/thumb"),
            Some(vec!["ab".into(), "thumb".into()])
        );
        assert_eq!(match_pattern("/api/v1/posts/{id}", "/api/v1/posts/"), None);
        assert_eq!(match_pattern("/api/v1/posts/{id}", "/api/v1/posts/x/y"), None);
    }

    #[test]
    fn unknown_routes_and_methods_are_told_apart() {
        assert_eq!(find(&Method::GET, "/nope").err().unwrap().status, StatusCode::NOT_FOUND);
        let not_allowed = find(&Method::PATCH, "/api/v1/feed").err().unwrap();
        assert_eq!(not_allowed.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(not_allowed.headers, vec![(http::header::ALLOW, http::HeaderValue::from_static("GET, HEAD"))]);
        assert!(find(&Method::DELETE, "/api/v1/posts/abc").is_ok());
    }

    #[test]
    fn the_document_gives_the_success_statuses_handlers_answer() {
        let document = openapi_document();
        let documented = |method: &str, pattern: &str| {
            let responses = document["paths"][pattern][method]["responses"].as_object().expect("responses");
            let mut statuses: Vec<&str> =
                responses.keys().map(String::as_str).filter(|status| *status != "default").collect();
            statuses.sort_unstable();
            statuses
        };
        // Pairing answers 200: it makes no resource a client could fetch.
        assert_eq!(documented("post", "/api/v1/node/peers/pair"), ["200"]);
        assert_eq!(documented("post", "/api/v1/node/peers/join"), ["200"]);
        assert_eq!(documented("post", "/api/v1/sessions"), ["200"]);
        assert_eq!(documented("post", "/api/v1/accounts"), ["201"]);
        assert_eq!(documented("delete", "/api/v1/invites/{code}"), ["204"]);
        assert_eq!(documented("put", "/api/v1/media/{sha256}"), ["200", "201"]);
        for route in table() {
            assert!(!route.success.is_empty(), "{} {} documents a success", route.method, route.pattern);
            assert!(route.success.iter().all(StatusCode::is_success), "{} {}", route.method, route.pattern);
        }
    }

    fn references_in(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                if let Some(Value::String(reference)) = object.get("$ref") {
                    found.push(reference.clone());
                }
                object.values().for_each(|value| references_in(value, found));
            }
            Value::Array(items) => items.iter().for_each(|value| references_in(value, found)),
            _ => {}
        }
    }

    #[test]
    fn answers_have_named_shapes_and_every_reference_resolves() {
        let document = openapi_document();
        assert_eq!(document["openapi"], json!("3.1.0"));
        let schemas = document["components"]["schemas"].as_object().expect("components/schemas");
        let mut references = Vec::new();
        references_in(&document, &mut references);
        assert!(references.len() > 40, "{references:?}");
        for reference in &references {
            let name = reference.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{reference}"));
            assert!(schemas.contains_key(name), "{reference} names no schema: {:?}", schemas.keys());
        }
        let post = &schemas["Post"];
        assert_eq!(post["properties"]["visibility"]["$ref"], json!("#/components/schemas/Visibility"));
        assert!(post["required"].as_array().unwrap().contains(&json!("media_pending")), "{post}");
        let login = &document["paths"]["/api/v1/sessions"]["post"]["responses"]["200"]["content"];
        assert_eq!(login["application/json"]["schema"]["$ref"], json!("#/components/schemas/SignedIn"));
        let join = &document["paths"]["/api/v1/node/peers/join"]["post"]["requestBody"]["content"];
        assert_eq!(join["application/json"]["schema"]["$ref"], json!("#/components/schemas/JoinRequest"));
        // A field the answer may leave out is not required.
        let added = &schemas["UserAdded"];
        assert!(!added["required"].as_array().unwrap().contains(&json!("reset_code")), "{added}");
        // Not-JSON answers say what they are.
        let photo = &document["paths"]["/api/v1/media/{id}/avatar"]["get"]["responses"]["200"]["content"];
        assert!(photo.get("image/jpeg").is_some(), "{photo}");
    }

    /// Issue 15: every JSON answer and JSON request body has a shape, so the
    /// black-box tests check answers against something. Exceptions name why.
    #[test]
    fn every_json_route_has_its_shapes() {
        // (method, pattern, why its answer stays a plain object)
        const UNTYPED_ANSWERS: &[(&str, &str, &str)] =
            &[("GET", "/openapi.json", "the OpenAPI document itself: its schema is the OpenAPI 3.1 specification's")];
        let mut missing = Vec::new();
        for route in table() {
            let answers_content = route.success.iter().any(|status| *status != StatusCode::NO_CONTENT);
            let excepted =
                UNTYPED_ANSWERS.iter().any(|(method, pattern, _)| route.method == *method && route.pattern == *pattern);
            if answers_content && matches!(route.answer, Answer::UntypedJson) && !excepted {
                missing.push(format!("{} {}: no answer shape (`.answers::<T>()`)", route.method, route.pattern));
            }
            if route.body == JSON && route.request.is_none() {
                missing.push(format!("{} {}: no request shape (`.takes::<T>()`)", route.method, route.pattern));
            }
        }
        for (method, pattern, _) in UNTYPED_ANSWERS {
            let route = table().iter().find(|route| route.method == *method && route.pattern == *pattern);
            assert!(
                route.is_some_and(|route| matches!(route.answer, Answer::UntypedJson)),
                "{method} {pattern} is excepted but gone or typed: drop the exception"
            );
        }
        assert!(missing.is_empty(), "routes without shapes:\n{}", missing.join("\n"));
    }

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let document = openapi_document();
        for route in table() {
            let operation = &document["paths"][route.pattern][route.method.as_str().to_lowercase()];
            assert!(operation.is_object(), "{} {} missing", route.method, route.pattern);
        }
    }
}
