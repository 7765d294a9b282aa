//! The route table: the one list that dispatch and `/openapi.json` are both made
//! from, so the document always matches what is served.

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::{accounts, media, onboarding, social, Api, ApiError, ApiResult, Call};

/// Who may call a route (documentation; handlers enforce it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Anyone,
    /// Anyone; a signed-in caller may see more.
    OptionalUser,
    User,
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
    pub handler: fn(&Api, &mut Call<'_>) -> ApiResult,
}

/// `route!(METHOD "/pattern", Access, body, handler, "summary")` for a route that
/// answers 200; `route!(METHOD "/pattern" => CREATED | OK, …)` names the success
/// statuses (`StatusCode` constants) of one that answers anything else.
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
            handler: $handler,
        }
    };
}

const JSON: Option<&str> = Some("json");
pub(super) const IMAGE: Option<&str> = Some("image");

pub fn table() -> &'static [Route] {
    static TABLE: std::sync::OnceLock<Vec<Route>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        vec![
            route!(GET "/healthz", Anyone, None, accounts::healthz, "Liveness: {\"status\":\"ok\"}"),
            route!(GET "/metrics", Operator, None, accounts::metrics,
                "Prometheus metrics: admins, the control token or the metrics listener; 403 for others"),
            route!(GET "/openapi.json", Anyone, None, openapi, "This document"),
            route!(GET "/onboarding", Anyone, None, onboarding::page,
                "Trusting this node's CA, per platform (HTML; also on the plain-HTTP onboarding listener); ?claim=CODE continues to the claim screen"),
            route!(GET "/ca.crt", Anyone, None, onboarding::ca_der, "This node's certificate authority (DER)"),
            route!(GET "/ca.pem", Anyone, None, onboarding::ca_pem, "This node's CA and its siblings' CAs (PEM bundle)"),
            route!(GET "/ca.mobileconfig", Anyone, None, onboarding::ca_mobileconfig,
                "The CA bundle as an iOS/macOS configuration profile"),
            route!(GET "/.well-known/acme-challenge/{token}", Anyone, None, onboarding::acme_challenge,
                "ACME HTTP-01 answer while this node orders a certificate"),
            route!(GET "/api/v1/node", Anyone, None, accounts::node,
                "Node id, name, version, region, roles, pin, addresses, base_url, peers, claimed (claimed or holding any account), open_registration"),
            route!(GET "/api/v1/node/replication", Admin, None, accounts::replication,
                "Replication state for operators: {node_id, records, tombstones, digest, media_missing, epoch, log_end, peers}"),
            route!(GET "/api/v1/node/peers", Admin, None, accounts::peers,
                "Siblings with state, last contact, lag and trust: {items}"),
            route!(POST "/api/v1/node/peers/pair", Admin, None, accounts::pair,
                "A one-time pairing code for `edgenode peer join` on the other node: {code, expires_in_seconds, peer_address, node_id, pin}"),
            route!(POST "/api/v1/node/peers/join", Admin, Some("{address, code}"), accounts::join,
                "Pairs with the node at address using the code it showed: {node_id, address, pin}"),
            route!(GET "/api/v1/node/nearby", Admin, None, accounts::nearby,
                "Nodes seen nearby over mDNS (hints only: pins are checked, never trusted): {mdns, items}"),
            route!(POST "/api/v1/accounts" => CREATED, Anyone, JSON, accounts::create_account,
                "Create an account: {handle, password, claim?|invite?}; codes compare case-insensitively, hyphens and spaces ignored; 409 already_claimed when claiming a node that has accounts"),
            route!(POST "/api/v1/sessions", Anyone, JSON, accounts::login,
                "Sign in: {handle, password, device?} -> {token, user_id, device}"),
            route!(DELETE "/api/v1/sessions" => NO_CONTENT, User, None, accounts::logout,
                "Sign out: revoke the token used"),
            route!(POST "/api/v1/invites" => CREATED, Admin, None, accounts::create_invite,
                "Create a one-time invite code (admin or control token): {code: XXXXX-XXXXX (Crockford base32), link: <base_url>#/join?code=<code>, qr_svg: <svg> of link}"),
            route!(GET "/api/v1/invites", Admin, None, accounts::list_invites,
                "Open invites, newest first (admin or control token): {items: [{code, created_at, created_by: {user_id, handle}|null}]}"),
            route!(DELETE "/api/v1/invites/{code}" => NO_CONTENT, Admin, None, accounts::revoke_invite,
                "Revoke an open invite (admin or control token); 404 when no open invite has the code"),
            route!(POST "/api/v1/media" => CREATED | OK, User, IMAGE, media::upload,
                "Upload an image; the node computes its SHA-256"),
            route!(PUT "/api/v1/media/{sha256}" => CREATED | OK, User, IMAGE, media::upload,
                "Upload an image under its SHA-256 (hex); 200 if already stored"),
            route!(GET "/api/v1/media/{id}/{variant}" => OK | PARTIAL_CONTENT, OptionalUser, None, media::download,
                "Image bytes: variant thumb (fits 256 px), display (fits 1080 px) or original (owner only)"),
            route!(POST "/api/v1/posts" => CREATED, User, JSON, social::create_post,
                "Post: {caption, media: [id], visibility}"),
            route!(GET "/api/v1/posts/{id}", OptionalUser, None, social::get_post, "One post"),
            route!(DELETE "/api/v1/posts/{id}" => NO_CONTENT, User, None, social::delete_post,
                "Delete one of your posts"),
            route!(PATCH "/api/v1/posts/{id}", User, JSON, social::edit_post,
                "Edit one of your posts: {caption?, visibility?}"),
            route!(PUT "/api/v1/posts/{id}/like", User, None, social::like, "Like a post"),
            route!(DELETE "/api/v1/posts/{id}/like", User, None, social::unlike, "Take back a like"),
            route!(POST "/api/v1/posts/{id}/comments" => CREATED, User, JSON, social::add_comment,
                "Comment: {text}"),
            route!(GET "/api/v1/posts/{id}/comments", OptionalUser, None, social::comments,
                "Comments, oldest first: {items, next_cursor}"),
            route!(GET "/api/v1/users/{handle}", OptionalUser, None, social::get_user,
                "Profile, with the nodes that hold the user's data"),
            route!(GET "/api/v1/users/{handle}/posts", OptionalUser, None, social::user_posts,
                "A user's posts visible to the caller, newest first: {items, next_cursor}"),
            route!(GET "/api/v1/users/{handle}/quota", User, None, super::quota::get_quota,
                "The user's quota (the user or an admin): {storage_bytes_used, storage_bytes_max, upload_bytes_per_hour_max}"),
            route!(PUT "/api/v1/users/{handle}/quota", Admin, JSON, super::quota::set_quota,
                "Set a user's quota: {storage_bytes_max: n|null, upload_bytes_per_hour_max: n|null}; null is the node default"),
            route!(PUT "/api/v1/users/{handle}/follow", User, None, social::follow, "Follow a user"),
            route!(DELETE "/api/v1/users/{handle}/follow", User, None, social::unfollow, "Stop following a user"),
            route!(GET "/api/v1/feed", User, None, social::feed,
                "Your and followed users' posts, newest first: {items, next_cursor}"),
            route!(GET "/api/v1/search", OptionalUser, None, social::search,
                "Search public posts (words, #tags) and handles: {users, posts}"),
            route!(GET "/", Anyone, None, super::web::index, "The web app: the page every screen starts from"),
            route!(GET "/app/app.js", Anyone, None, super::web::asset, "Web app: screens and navigation"),
            route!(GET "/app/api.js", Anyone, None, super::web::asset, "Web app: calls to this API, uploads with progress"),
            route!(GET "/app/blurhash.js", Anyone, None, super::web::asset, "Web app: blurhash placeholders"),
            route!(GET "/app/app.css", Anyone, None, super::web::asset, "Web app: style sheet"),
            route!(GET "/app/sw.js", Anyone, None, super::web::asset, "Web app: service worker (caches the app shell only)"),
            route!(GET "/app/manifest.webmanifest", Anyone, None, super::web::asset, "Web app: manifest for installing"),
            route!(GET "/app/icon.svg", Anyone, None, super::web::asset, "Web app: icon"),
        ]
    })
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
    super::ok_json(openapi_document())
}

pub fn openapi_document() -> Value {
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
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        for status in route.success {
            let description = status.canonical_reason().unwrap_or("Success");
            operation["responses"][status.as_str()] = json!({"description": description});
        }
        if matches!(route.access, Access::User | Access::Admin | Access::Operator) {
            operation["security"] = json!([{"bearer": []}]);
        }
        match route.body {
            Some("json") => {
                operation["requestBody"] =
                    json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}})
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
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Edgenode API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}}}}}}
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

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let document = openapi_document();
        for route in table() {
            let operation = &document["paths"][route.pattern][route.method.as_str().to_lowercase()];
            assert!(operation.is_object(), "{} {} missing", route.method, route.pattern);
        }
    }
}
