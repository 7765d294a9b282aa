//! The HTTP API: one blocking `http::Request -> http::Response` service that every
//! transport (HTTPS over TCP, HTTP/3 over QUIC) adapts to. Routes live in one table
//! (`routes.rs`) that both dispatch and `/openapi.json` are made from. It reaches the
//! services only through its own traits (`ports.rs`).

mod accounts;
mod backup;
mod body;
mod etag;
mod export;
mod media;
mod media_cache;
mod notifications;
mod onboarding;
pub use onboarding::request_host;
pub mod metrics;
pub mod password;
pub mod ports;
mod quota;
mod remote;
mod routes;
mod safety;
pub(crate) mod shapes;
mod social;
pub mod throttle;
mod update;
mod web;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::coalesce::Coalescer;
use crate::config::Config;
use crate::core::model::{TokenScope, User};
use crate::media::{MediaError, Pipeline};
use crate::store::{MediaInfo, Store, StoreError};
pub use body::{
    prepare_spool_dir, BodyPlan, NoTicket, RequestBody, ResponseFile, SpooledBody, UploadTicket, UploadTickets,
};
use metrics::Metrics;
use throttle::LoginThrottle;

/// Where uploads are written while they arrive, under the data dir (same file system
/// as the media, so nothing is held whole in memory and nothing crosses devices).
pub const SPOOL_DIR: &str = "spool";

/// Uploads one user may send at once (a phone uploads a few photos in parallel).
pub const UPLOADS_PER_USER_IN_FLIGHT_MAX: usize = 4;

/// How a request reached us; transports put this in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http1,
    Http2,
    Http3,
}

/// Marks a request that came through the operator's metrics listener
/// (`metrics_listen`): it may read `/metrics` without credentials.
#[derive(Debug, Clone, Copy)]
pub struct MetricsListener;

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedInBy {
    /// A session from signing in (`POST /api/v1/sessions`).
    Session,
    /// A personal access token (`POST /api/v1/me/tokens`) of this scope.
    AccessToken(TokenScope),
}

/// Who a request's credentials name, as `Api::viewer` found them.
struct Viewer {
    user: Option<User>,
    /// The local control token (the CLI on this box).
    local_control: bool,
    signed_in_by: Option<SignedInBy>,
    /// SHA-256 of the bearer token, when it is a session's.
    session_token_hash: Option<[u8; 32]>,
}

/// The peer's socket address; transports put this in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The JSON error every failure is answered with: `{"error":{"code","message"}}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Bytes> {
    let body =
        shapes::ErrorAnswer { error: shapes::ErrorDetail { code: code.to_owned(), message: message.to_owned() } };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Bytes::from(serde_json::to_vec(&body).expect("the error shape serializes")))
        .expect("static response parts are valid")
}

/// A failed request: status, stable machine-readable code, and a message for people.
/// Logins and sign-ups allowed to wait for a password-hashing slot; past this the
/// node answers 503 rather than pile up threads (and 19 MiB each).
pub const PASSWORD_CHECKS_WAITING_MAX: usize = 64;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Headers the answer carries besides the JSON (`Allow`, `Retry-After`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), headers: Vec::new() }
    }
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }
    /// Adds `Retry-After` (whole seconds, at least 1).
    pub fn retry_after(self, wait: std::time::Duration) -> ApiError {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.with_header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
    }
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in first: send `Authorization: Bearer <token>` with a token from POST /api/v1/sessions",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    fn into_response(self) -> Response<Bytes> {
        let mut response = error_response(self.status, self.code, &self.message);
        response.headers_mut().extend(self.headers);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::HandleTaken => ApiError::new(StatusCode::CONFLICT, "handle_taken", "that handle is taken"),
            StoreError::BadInvite => {
                ApiError::forbidden_code("bad_invite", "the invite code is unknown, used or revoked")
            }
            StoreError::AlreadyClaimed => {
                ApiError::forbidden_code("bad_claim_code", "this node is already claimed; ask its admin for an invite")
            }
            error if error.is_disk_full() => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                format!("the node's storage is full ({error}); reading still works, and writing resumes once space is freed"),
            ),
            StoreError::UnknownMedia(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_media",
                format!("media {id} is not one of your uploads; upload it first with PUT /api/v1/media/{{sha256}}"),
            ),
            other => {
                tracing::error!(error = %other, "storage failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the node could not read or write its storage",
                )
            }
        }
    }
}

impl From<MediaError> for ApiError {
    fn from(error: MediaError) -> ApiError {
        let message = error.to_string();
        match error {
            MediaError::Unsupported => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
            }
            MediaError::TooManyPixels { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "image_too_large", message)
            }
            MediaError::Undecodable(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "undecodable_image", message),
            MediaError::Unreadable(_) => {
                tracing::error!(%message, "upload unreadable");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the node could not read the upload back")
            }
        }
    }
}

impl ApiError {
    fn forbidden_code(code: &'static str, message: &str) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }
}

pub type ApiResult = Result<Response<Bytes>, ApiError>;

/// What `GET /api/v1/node` and user profiles say about this node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub region: String,
    pub roles: Vec<String>,
    pub pin: String,
    /// Addresses clients can reach this node at (`host:port`).
    pub addresses: Vec<String>,
    /// The address people use to reach this node: `https://<host_label>.local:<port>/`
    /// (`host_label` from `discovery::rules::host_label` of the node name), or the
    /// first ACME domain when one is configured; `:<port>` is left out for 443. Invite
    /// links start with it. Made by `NodeInfo::base_url`.
    pub base_url: String,
}

impl NodeInfo {
    /// `https://<host>[:<port>]/`: `host` is the first ACME domain when there is one,
    /// else `<host_label>.local`.
    pub fn base_url(host_label: &str, port: u16, acme_domain: Option<&str>) -> String {
        let host = match acme_domain {
            Some(domain) => domain.to_owned(),
            None => format!("{host_label}.local"),
        };
        match port {
            443 => format!("https://{host}/"),
            port => format!("https://{host}:{port}/"),
        }
    }
}

pub struct Api {
    pub metrics: Metrics,
    store: Arc<Store>,
    pipeline: Pipeline,
    node: NodeInfo,
    claim_code: Mutex<Option<String>>,
    /// Deleted when the node is claimed; `edgenode status` reads it.
    claim_code_file: std::path::PathBuf,
    data_dir: std::path::PathBuf,
    spool_dir: std::path::PathBuf,
    open_registration: bool,
    json_body_bytes_max: usize,
    upload_bytes_max: usize,
    /// Largest archive `POST /api/v1/me/import` takes; 0: import is off.
    import_bytes_max: u64,
    started: Instant,
    login_throttle: Mutex<LoginThrottle>,
    /// Per-user storage quotas and upload rates (`quota.rs`).
    quotas: quota::Quotas,
    /// Bounds Argon2id work (logins and new accounts) to the cores there are.
    password_gate: password::PasswordGate,
    /// Uploads being received, by user.
    upload_tickets: body::UploadTickets,
    uploads_in_flight_max: usize,
    /// Photos proved visible to anyone, answered without blocking.
    public_media: media_cache::PublicMediaCache,
    /// Uploads (and derivative rebuilds) in flight, by media id.
    media_work: Coalescer<String, Result<MediaInfo, ApiError>>,
    /// Conversions per user: all workers for a batch, one each when users compete.
    conversion_turns: media::ConversionTurns,
    /// Nodes seen over mDNS; `None` when discovery is off.
    nearby: Option<crate::discovery::NearbyHandle>,
    /// Sibling replication (state, pairing, where users' replicas are).
    siblings: Option<Arc<dyn ports::Replication>>,
    /// Searches wider than this node (`scope=neighbourhood|<region prefix>`).
    search: Option<Arc<dyn ports::Search>>,
    /// Fan-out across the neighbourhood (remote follows, feeds, photos); see `remote.rs`.
    fanout: Option<Arc<dyn ports::Fanout>>,
    /// Updates of this box (`update.rs`): status for admins, check and install.
    updates: Option<Arc<dyn ports::Updates>>,
    /// SHA-256 of the local control token in `<data_dir>/control-token`: whoever can
    /// read the data dir (the `edgenode` CLI on the box) may read admin node info.
    control_token_hash: [u8; 32],
    /// The node's CA and serving certificates (onboarding pages, ACME answers).
    tls: Option<Arc<crate::tls::ServingCertificates>>,
    /// Where HTTPS is served (links from the onboarding page).
    https_port: u16,
    /// A session unused this long is signed out (`sessions.idle_timeout_seconds`).
    session_idle_timeout_ms: u64,
}

/// A session's last use is recorded at most this often (or every quarter of the
/// idle timeout, when that is shorter): a write transaction per request would cost
/// more than the request.
const SESSION_LAST_SEEN_INTERVAL_MS: u64 = 3_600_000;

impl Api {
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        pipeline: Pipeline,
        node: NodeInfo,
        claim_code: Option<String>,
    ) -> Api {
        Api {
            metrics: Metrics::default(),
            store,
            pipeline,
            node,
            claim_code: Mutex::new(claim_code),
            claim_code_file: config.data_dir.join("claim-code"),
            data_dir: config.data_dir.clone(),
            spool_dir: config.data_dir.join(SPOOL_DIR),
            open_registration: config.open_registration,
            json_body_bytes_max: config.limits.json_body_bytes_max,
            upload_bytes_max: config.limits.upload_bytes_max,
            import_bytes_max: config.limits.import_bytes_max,
            started: Instant::now(),
            login_throttle: Mutex::new(LoginThrottle::default()),
            quotas: quota::Quotas::new(&config.limits),
            password_gate: password::PasswordGate::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
                PASSWORD_CHECKS_WAITING_MAX,
            ),
            media_work: Coalescer::default(),
            conversion_turns: media::ConversionTurns::new(config.limits.media_workers),
            upload_tickets: body::UploadTickets::default(),
            uploads_in_flight_max: config.limits.uploads_in_flight_max,
            public_media: media_cache::PublicMediaCache::new(config.limits.public_media_cache_bytes),
            nearby: None,
            siblings: None,
            search: None,
            fanout: None,
            updates: None,
            control_token_hash: [0; 32],
            tls: None,
            https_port: config.listen.port(),
            session_idle_timeout_ms: config.sessions.idle_timeout_seconds.saturating_mul(1000),
        }
    }

    /// Answers `GET /api/v1/node/replication` and lists users' replicas from this.
    pub fn with_siblings(mut self, siblings: Arc<dyn ports::Replication>) -> Api {
        self.siblings = Some(siblings);
        self
    }

    /// Follows users of other nodes and shows their posts through this fan-out service.
    pub fn with_fanout(mut self, fanout: Arc<dyn ports::Fanout>) -> Api {
        self.fanout = Some(fanout);
        self
    }

    /// Answers searches of the neighbourhood and of regions through this service.
    pub fn with_search(mut self, search: Arc<dyn ports::Search>) -> Api {
        self.search = Some(search);
        self
    }

    /// Shows update state to admins and takes `edgenode update check|install` through this.
    pub fn with_updates(mut self, updates: Arc<dyn ports::Updates>) -> Api {
        self.updates = Some(updates);
        self
    }

    /// Serves trust onboarding (`onboarding.rs`) for this CA, with links to HTTPS on
    /// `https_port` (the bound one: `listen` may ask for port 0).
    pub fn with_tls(mut self, certificates: Arc<crate::tls::ServingCertificates>, https_port: u16) -> Api {
        self.tls = Some(certificates);
        self.https_port = https_port;
        self
    }

    /// Answers `GET /api/v1/node/nearby` from this discovery table.
    pub fn with_nearby(mut self, nearby: crate::discovery::NearbyHandle) -> Api {
        self.nearby = Some(nearby);
        self
    }

    /// Accepts `token` (from `<data_dir>/control-token`) as admin for node routes.
    pub fn with_control_token(mut self, token: &str) -> Api {
        self.control_token_hash = token_hash(token);
        self
    }

    /// How a transport reads this request's body, decided before reading any of it:
    /// unknown routes and methods, missing credentials and declared lengths over the
    /// limit are answered at once; uploads are spooled to a file; the rest is read into
    /// memory. Blocking (it may look up the session): call it from `spawn_blocking`.
    pub fn plan_body(&self, head: &http::request::Parts) -> BodyPlan {
        match self.try_plan_body(head) {
            Ok(plan) => plan,
            Err(error) => {
                self.metrics.record_unhandled(head, error.status);
                BodyPlan::Refuse(error.into_response())
            }
        }
    }

    fn try_plan_body(&self, head: &http::request::Parts) -> Result<BodyPlan, ApiError> {
        let (route, _) = routes::find(&head.method, head.uri.path())?;
        let is_archive = route.body == routes::ARCHIVE;
        let is_upload = route.body == routes::IMAGE || is_archive;
        let bytes_max = self.body_bytes_max(route)?;
        if declared_length(&head.headers).is_some_and(|length| length > bytes_max as u64) {
            return Err(body_too_large(bytes_max));
        }
        let mut user = None;
        if matches!(route.access, routes::Access::User | routes::Access::Session | routes::Access::Admin) {
            let viewer = self.viewer(&head.headers)?;
            if viewer.user.is_none() && !viewer.local_control {
                return Err(ApiError::unauthorized());
            }
            routes::check_signed_in_by(route, viewer.signed_in_by)?;
            user = viewer.user;
        }
        if !is_upload {
            return Ok(BodyPlan::Memory { bytes_max });
        }
        let user = user.ok_or_else(ApiError::unauthorized)?;
        // Quota and rate from the declared length, before a byte is stored (an
        // archive's photos are charged once it is checked: export::import).
        if !is_archive {
            self.admit_upload(&user, declared_length(&head.headers).unwrap_or(0))?;
        }
        let ticket = self
            .upload_tickets
            .take(&user.user_id, UPLOADS_PER_USER_IN_FLIGHT_MAX, self.uploads_in_flight_max)
            .map_err(|refused| match refused {
                NoTicket::UserBusy => ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_uploads",
                    format!(
                        "at most {UPLOADS_PER_USER_IN_FLIGHT_MAX} uploads at once per user; send the next when one finishes"
                    ),
                ),
                NoTicket::NodeBusy => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the node is receiving as many uploads as it can; retry in a few seconds",
                ),
            }
            .retry_after(std::time::Duration::from_secs(2)))?;
        Ok(BodyPlan::Spool { bytes_max: bytes_max as u64, dir: self.spool_dir.clone(), ticket })
    }

    /// Serves one request whose body the transport has already read, as
    /// `plan_body` said. Blocking: call it from `spawn_blocking`. `HEAD` is served as
    /// `GET` without the body.
    pub fn handle(&self, request: Request<RequestBody>) -> Response<Bytes> {
        let started = request.extensions().get::<metrics::RequestStarted>().map_or_else(Instant::now, |at| at.0);
        let transport = request.extensions().get::<Transport>().copied();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let mut route = metrics::ROUTE_UNMATCHED;
        let mut response = match self.dispatch(request, &mut route) {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        if method == Method::HEAD {
            // A streamed file's length is set already; it is not sent.
            if response.extensions_mut().remove::<ResponseFile>().is_none() {
                let length = response.body().len();
                response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
            *response.body_mut() = Bytes::new();
        }
        self.metrics.record_request(route, &method, transport, response.status(), started.elapsed());
        tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
        response
    }

    /// Finds the route and calls its handler; `route` is set to its pattern (the
    /// metrics' label) once found.
    fn dispatch(&self, request: Request<RequestBody>, route_label: &mut &'static str) -> ApiResult {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let method = if parts.method == Method::HEAD { Method::GET } else { parts.method.clone() };
        let (route, params) = routes::find(&method, path)?;
        *route_label = route.pattern;
        let bytes_max = self.body_bytes_max(route)?;
        if body.len() > bytes_max as u64 {
            return Err(body_too_large(bytes_max));
        }
        let viewer = self.viewer(&parts.headers)?;
        if route.access != routes::Access::Anyone {
            routes::check_signed_in_by(route, viewer.signed_in_by)?;
        }
        let client_addr = parts.extensions.get::<ClientAddr>().map(|addr| addr.0);
        let mut call = Call {
            parts: &parts,
            body,
            params,
            viewer: viewer.user,
            local_control: viewer.local_control,
            session_token_hash: viewer.session_token_hash,
            client_addr,
        };
        (route.handler)(self, &mut call)
    }

    /// The largest body `route` takes; 403 `import_disabled` for an archive when
    /// import is turned off.
    fn body_bytes_max(&self, route: &routes::Route) -> Result<usize, ApiError> {
        if route.body == routes::ARCHIVE {
            if self.import_bytes_max == 0 {
                return Err(ApiError::forbidden_code(
                    "import_disabled",
                    "import is turned off on this node (`limits.import_bytes_max` is 0); ask its operator",
                ));
            }
            return Ok(usize::try_from(self.import_bytes_max).unwrap_or(usize::MAX));
        }
        Ok(if route.body == routes::IMAGE { self.upload_bytes_max } else { self.json_body_bytes_max })
    }

    /// Who the request's bearer token names: a session's or a personal access
    /// token's user, or the local control token. A token that is present but unknown,
    /// revoked, signed out or idle too long is an error, so a client learns its
    /// session ended; a disabled account's is 403 `account_disabled`.
    fn viewer(&self, headers: &http::HeaderMap) -> Result<Viewer, ApiError> {
        let anonymous = Viewer { user: None, local_control: false, signed_in_by: None, session_token_hash: None };
        let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(anonymous) };
        let token =
            value.to_str().ok().and_then(|value| value.strip_prefix("Bearer ")).ok_or_else(ApiError::unauthorized)?;
        let hash = token_hash(token);
        if self.control_token_hash != [0; 32] && accounts::constant_time_eq(&hash, &self.control_token_hash) {
            return Ok(Viewer { local_control: true, ..anonymous });
        }
        if let Some(user_id) = accounts::access_token_user(token) {
            let (user, scope) = self.access_token_holder(user_id, &hash)?;
            return Ok(Viewer { user: Some(user), signed_in_by: Some(SignedInBy::AccessToken(scope)), ..anonymous });
        }
        let signed_in = self.store.signed_in(&hash)?.ok_or_else(ApiError::unauthorized)?;
        let credential = signed_in.credential.as_ref();
        if credential.is_some_and(|credential| credential.disabled) {
            return Err(accounts::account_disabled());
        }
        let now_ms = crate::os::now_ms();
        // A session from before last use was recorded counts from this use: not
        // idle yet, and its use is recorded now.
        let idle_ms = match signed_in.session.last_seen_recorded {
            true => now_ms.saturating_sub(signed_in.session.last_seen_ms),
            false => self.session_idle_timeout_ms,
        };
        let signed_out = credential.is_some_and(|credential| signed_in.session.epoch < credential.session_epoch);
        if signed_out || idle_ms > self.session_idle_timeout_ms {
            // Gone for good: its row goes too (a failure to remove it changes nothing).
            if let Err(error) = self.store.delete_session(&hash) {
                tracing::warn!(%error, "could not remove an ended session");
            }
            return Err(if signed_out { accounts::signed_out() } else { accounts::session_expired(self) });
        }
        let last_seen_interval_ms = SESSION_LAST_SEEN_INTERVAL_MS.min(self.session_idle_timeout_ms / 4);
        if idle_ms >= last_seen_interval_ms {
            self.store.touch_session(&hash, now_ms)?;
        }
        Ok(Viewer {
            user: Some(signed_in.user),
            signed_in_by: Some(SignedInBy::Session),
            session_token_hash: Some(hash),
            ..anonymous
        })
    }
}

/// One request as a handler sees it.
pub struct Call<'a> {
    parts: &'a http::request::Parts,
    body: RequestBody,
    params: Vec<String>,
    viewer: Option<User>,
    /// The caller holds the local control token (the CLI on this box).
    local_control: bool,
    /// SHA-256 of the caller's session token (not set for access tokens).
    session_token_hash: Option<[u8; 32]>,
    client_addr: Option<SocketAddr>,
}

impl Call<'_> {
    /// The signed-in user, or 401.
    fn user(&self) -> Result<&User, ApiError> {
        self.viewer.as_ref().ok_or_else(ApiError::unauthorized)
    }

    fn viewer_id(&self) -> Option<&str> {
        self.viewer.as_ref().map(|user| user.user_id.as_str())
    }

    fn param(&self, index: usize) -> &str {
        &self.params[index]
    }

    fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let RequestBody::Memory(body) = &self.body else {
            return Err(ApiError::bad_request("bad_json", "this route takes a JSON body"));
        };
        serde_json::from_slice(body).map_err(|error| {
            ApiError::bad_request("bad_json", format!("request body is not the expected JSON: {error}"))
        })
    }

    fn query(&self, name: &str) -> Option<String> {
        query_param(self.parts.uri.query().unwrap_or(""), name)
    }

    /// `limit` from the query: 1..=100, default 20.
    fn limit(&self) -> Result<usize, ApiError> {
        match self.query("limit") {
            None => Ok(20),
            Some(text) => match text.parse::<usize>() {
                Ok(limit @ 1..=100) => Ok(limit),
                _ => Err(ApiError::bad_request("bad_query", "`limit` must be a number from 1 to 100")),
            },
        }
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.parts.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// The `content-length` a request declares, if any.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn body_too_large(bytes_max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body exceeds the limit of {bytes_max} bytes for this endpoint"),
    )
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Finds `name` in a URL query string and percent-decodes its value.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' => match bytes.get(index + 1..index + 3) {
                Some(&[high, low]) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                    let digits = [high, low];
                    let text = std::str::from_utf8(&digits).expect("hex digits are ASCII");
                    decoded.push(u8::from_str_radix(text, 16).expect("checked hex digits"));
                    index += 2;
                }
                _ => decoded.push(b'%'),
            },
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> ApiResult {
    Ok(Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Bytes::from(value.to_string()))
        .expect("static response parts are valid"))
}

fn ok_json(value: serde_json::Value) -> ApiResult {
    json_response(StatusCode::OK, &value)
}

fn empty_response(status: StatusCode) -> ApiResult {
    Ok(Response::builder().status(status).body(Bytes::new()).expect("static response parts are valid"))
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("generated header values are visible ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_name_the_host_people_reach() {
        assert_eq!(NodeInfo::base_url("harbour-box", 8443, None), "https://harbour-box.local:8443/");
        assert_eq!(NodeInfo::base_url("harbour-box", 443, None), "https://harbour-box.local/");
        assert_eq!(NodeInfo::base_url("harbour-box", 443, Some("photos.example.net")), "https://photos.example.net/");
        assert_eq!(
            NodeInfo::base_url("harbour-box", 8443, Some("photos.example.net")),
            "https://photos.example.net:8443/"
        );
    }

    #[test]
    fn query_params_are_percent_decoded() {
        assert_eq!(query_param("q=%23harbour&limit=5", "q").as_deref(), Some("#harbour"));
        assert_eq!(query_param("q=sunset+sea", "q").as_deref(), Some("sunset sea"));
        assert_eq!(query_param("q=100%", "q").as_deref(), Some("100%"));
        assert_eq!(query_param("a=1", "q"), None);
    }
}
