//! The web app: hand-written HTML, CSS and JavaScript embedded in the binary and
//! served at `/` and `/app/…` with exact content types, revalidation or year-long
//! caching, and a strict Content-Security-Policy so the page talks to no other host.
//!
//! Every URL the files use for one another ends in `?v=<build id>`, the build id
//! being a hash of all the files: a new binary means new URLs, so a browser may keep
//! a versioned file for a year and never run a stale one. Unversioned requests (and
//! the page itself and its service worker, whose URLs never change) revalidate with
//! a strong ETag. Nothing is compressed: the node has no compressor among its
//! dependencies, and the whole app is small (tests/web checks its gzip size).

use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::{header_value, Api, ApiError, ApiResult, Call};
use crate::store::hex;

/// Replaced by the build id in every text file, so the files name one another by
/// versioned URLs.
const BUILD_MARK: &str = "__BUILD__";

/// What the page may load and talk to: only this node. `blob:` images are photos the
/// app fetched with its token (or the user just picked); `data:` is for favicons
/// some browsers synthesize. Trusted Types: the app builds its DOM without HTML
/// strings, and its one script URL (the service worker) goes through the `edgenode`
/// policy.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; worker-src 'self'; \
media-src 'none'; object-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types edgenode";

const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// One file of the app as it lives in `node/web/`.
struct Source {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// The URL never changes (the page, the service worker): always revalidate.
    fixed_url: bool,
}

macro_rules! source {
    ($path:literal, $file:literal, $content_type:literal, $fixed_url:literal) => {
        Source {
            path: $path,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../../web/", $file)),
            fixed_url: $fixed_url,
        }
    };
}

/// Every file served, by URL path. Each `/app/…` path also has its line in the
/// route table (`routes.rs`); a unit test below keeps the two in step.
const SOURCES: &[Source] = &[
    source!("/", "index.html", "text/html; charset=utf-8", true),
    source!("/app/app.css", "app.css", "text/css; charset=utf-8", false),
    source!("/app/app.js", "app.js", "text/javascript; charset=utf-8", false),
    source!("/app/api.js", "api.js", "text/javascript; charset=utf-8", false),
    source!("/app/account.js", "account.js", "text/javascript; charset=utf-8", false),
    source!("/app/people.js", "people.js", "text/javascript; charset=utf-8", false),
    source!("/app/blurhash.js", "blurhash.js", "text/javascript; charset=utf-8", false),
    source!("/app/sw.js", "sw.js", "text/javascript; charset=utf-8", true),
    source!("/app/manifest.webmanifest", "manifest.webmanifest", "application/manifest+json", false),
    source!("/app/icon.svg", "icon.svg", "image/svg+xml", false),
];

/// A file ready to send: build id filled in, ETag computed.
struct WebFile {
    path: &'static str,
    content_type: &'static str,
    body: Bytes,
    etag: String,
    fixed_url: bool,
}

struct Build {
    id: String,
    files: Vec<WebFile>,
}

fn build() -> &'static Build {
    static BUILD: OnceLock<Build> = OnceLock::new();
    BUILD.get_or_init(|| {
        let mut hasher = Sha256::new();
        for source in SOURCES {
            hasher.update(source.path.as_bytes());
            hasher.update((source.bytes.len() as u64).to_le_bytes());
            hasher.update(source.bytes);
        }
        let id = hex(&hasher.finalize())[..16].to_owned();
        let files = SOURCES
            .iter()
            .map(|source| {
                let body = match std::str::from_utf8(source.bytes) {
                    Ok(text) if text.contains(BUILD_MARK) => Bytes::from(text.replace(BUILD_MARK, &id)),
                    _ => Bytes::from_static(source.bytes),
                };
                let etag = super::etag::of_bytes(&body);
                WebFile {
                    path: source.path,
                    content_type: source.content_type,
                    body,
                    etag,
                    fixed_url: source.fixed_url,
                }
            })
            .collect();
        Build { id, files }
    })
}

/// `GET /`: the page every screen of the app starts from.
pub fn index(_api: &Api, call: &mut Call<'_>) -> ApiResult {
    serve(call, "/")
}

/// `GET /app/{file}`: scripts, style sheet, manifest, icon, service worker.
pub fn asset(_api: &Api, call: &mut Call<'_>) -> ApiResult {
    let path = call.parts.uri.path().to_owned();
    serve(call, &path)
}

fn serve(call: &Call<'_>, path: &str) -> ApiResult {
    let build = build();
    let file = build
        .files
        .iter()
        .find(|file| file.path == path)
        .ok_or_else(|| ApiError::not_found(&format!("web app file {path}")))?;
    let versioned = call.query("v").is_some_and(|version| version == build.id);
    let cache_control = if versioned && !file.fixed_url { CACHE_FOREVER } else { REVALIDATE };
    let not_modified = call.header(header::IF_NONE_MATCH).is_some_and(|tags| super::etag::matches(tags, &file.etag));
    let mut response = Response::builder()
        .status(if not_modified { StatusCode::NOT_MODIFIED } else { StatusCode::OK })
        .header(header::CONTENT_TYPE, file.content_type)
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::ETAG, header_value(&file.etag))
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header("cross-origin-opener-policy", "same-origin")
        .header("cross-origin-resource-policy", "same-origin")
        .header("permissions-policy", "geolocation=(), microphone=(), payment=(), usb=()");
    if path == "/app/sw.js" {
        // The worker lives under /app/ but must see navigations to `/` to serve the
        // page offline.
        response = response.header("service-worker-allowed", "/");
    }
    let body = if not_modified { Bytes::new() } else { file.body.clone() };
    Ok(response.body(body).expect("static response parts are valid"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{Method, Request};
    use serde_json::Value;

    use super::*;
    use crate::api::{routes, NodeInfo, RequestBody};
    use crate::config::Config;
    use crate::media::{MediaLimits, Pipeline};
    use crate::store::Store;

    /// A real `Api` on a fresh data dir, so requests go through the router.
    fn api(name: &str) -> (Api, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("edgenode-web-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config { data_dir: dir.clone(), ..Config::default() };
        let store = Arc::new(Store::open(&dir).expect("store opens"));
        let node = NodeInfo {
            name: "web-unit".into(),
            region: String::new(),
            roles: vec!["home".into()],
            pin: "sha256/test".into(),
            addresses: vec!["127.0.0.1:8443".into()],
            base_url: "https://web-unit.local:8443/".into(),
        };
        (Api::new(&config, store, Pipeline::new(MediaLimits::default()), node, None), dir)
    }

    fn get(api: &Api, uri: &str, headers: &[(&str, &str)]) -> Response<Bytes> {
        let mut request = Request::builder().method(Method::GET).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        api.handle(request.body(Bytes::new().into()).unwrap())
    }

    fn header<'a>(response: &'a Response<Bytes>, name: &str) -> &'a str {
        response.headers().get(name).map(|value| value.to_str().unwrap()).unwrap_or("")
    }

    #[test]
    fn every_file_has_its_content_type_and_the_strict_policy() {
        let (api, dir) = api("types");
        for (uri, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/app/app.css", "text/css; charset=utf-8"),
            ("/app/app.js", "text/javascript; charset=utf-8"),
            ("/app/api.js", "text/javascript; charset=utf-8"),
            ("/app/account.js", "text/javascript; charset=utf-8"),
            ("/app/people.js", "text/javascript; charset=utf-8"),
            ("/app/blurhash.js", "text/javascript; charset=utf-8"),
            ("/app/sw.js", "text/javascript; charset=utf-8"),
            ("/app/manifest.webmanifest", "application/manifest+json"),
            ("/app/icon.svg", "image/svg+xml"),
        ] {
            let response = get(&api, uri, &[]);
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            assert_eq!(header(&response, "content-type"), content_type, "{uri}");
            let policy = header(&response, "content-security-policy");
            for directive in
                ["default-src 'self'", "connect-src 'self'", "img-src 'self' blob: data:", "base-uri 'none'"]
            {
                assert!(policy.contains(directive), "{uri}: {directive} missing from {policy}");
            }
            assert_eq!(header(&response, "x-content-type-options"), "nosniff", "{uri}");
            assert!(!response.body().is_empty(), "{uri}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_page_revalidates_and_versioned_files_are_kept_for_a_year() {
        let (api, dir) = api("caching");
        let page = get(&api, "/", &[]);
        assert_eq!(header(&page, "cache-control"), "no-cache");
        let html = std::str::from_utf8(page.body()).unwrap();
        assert!(!html.contains(BUILD_MARK), "the build id is filled in");
        let versioned = format!("/app/app.js?v={}", build().id);
        assert!(html.contains(&versioned), "the page loads {versioned}: {html}");

        assert_eq!(header(&get(&api, &versioned, &[]), "cache-control"), CACHE_FOREVER);
        assert_eq!(header(&get(&api, "/app/app.js", &[]), "cache-control"), "no-cache");
        assert_eq!(header(&get(&api, "/app/app.js?v=stale", &[]), "cache-control"), "no-cache");
        let worker = get(&api, &format!("/app/sw.js?v={}", build().id), &[]);
        assert_eq!(header(&worker, "cache-control"), "no-cache", "a service worker must be able to update");
        assert_eq!(header(&worker, "service-worker-allowed"), "/");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_known_etag_is_answered_304_without_a_body() {
        let (api, dir) = api("etag");
        let first = get(&api, "/app/app.css", &[]);
        let etag = header(&first, "etag").to_owned();
        assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
        let again = get(&api, "/app/app.css", &[("if-none-match", &format!("W/\"other\", {etag}"))]);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(again.body().is_empty());
        assert_eq!(get(&api, "/app/app.css", &[("if-none-match", "\"other\"")]).status(), StatusCode::OK);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unknown_file_is_a_json_404() {
        let (api, dir) = api("unknown");
        for uri in ["/app/nope.js", "/app/", "/app/app.js/x", "/index.html"] {
            let response = get(&api, uri, &[]);
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(header(&response, "content-type"), "application/json", "{uri}");
            let body: Value = serde_json::from_slice(response.body()).unwrap();
            assert_eq!(body["error"]["code"], "not_found", "{uri}");
        }
        // The handler itself refuses a path it has no file for, whatever routed it.
        let request = Request::builder().uri("/app/nope.js").body(RequestBody::from(Bytes::new())).unwrap();
        let (parts, body) = request.into_parts();
        let call = Call {
            parts: &parts,
            body,
            params: Vec::new(),
            viewer: None,
            local_control: false,
            session_token_hash: None,
            client_addr: None,
        };
        let error = serve(&call, "/app/nope.js").unwrap_err();
        assert_eq!((error.status, error.code), (StatusCode::NOT_FOUND, "not_found"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_route_table_and_the_files_agree() {
        for file in &build().files {
            let (route, _) = routes::find(&Method::GET, file.path).unwrap_or_else(|_| panic!("{} unrouted", file.path));
            assert!(route.pattern == file.path, "{} routed to {}", file.path, route.pattern);
        }
        for route in routes::table().iter().filter(|route| route.pattern.starts_with("/app/")) {
            assert!(build().files.iter().any(|file| file.path == route.pattern), "{} has no file", route.pattern);
        }
    }

    #[test]
    fn every_app_url_in_the_files_is_served() {
        let build = build();
        for file in build.files.iter().filter(|file| !file.content_type.starts_with("image/")) {
            let text = std::str::from_utf8(&file.body).unwrap();
            for (index, _) in text.match_indices("/app/") {
                let name: String = text[index..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
                    .collect();
                if name.ends_with('/') {
                    continue; // a prefix test such as `startsWith('/app/')`
                }
                assert!(build.files.iter().any(|served| served.path == name), "{} names {name}", file.path);
            }
        }
    }
}
