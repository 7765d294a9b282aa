//! Node info, health, metrics, accounts, sessions and invites; account care (password
//! change, sessions, personal access tokens, reset codes) and the admin's users.
//!
//! Claim and invite codes are compared in one normalised form (`normalised_code`), so
//! a code typed in lower case, without its hyphen or with O for 0 still matches.

use std::time::Instant;

use base64::Engine as _;
use http::{header, Response, StatusCode};
use serde::Deserialize;

use super::throttle::Guess;
use super::{empty_response, shapes, token_hash, Api, ApiError, ApiResult, Call};
use super::{password, ports};
use crate::core::model::{AccessToken, Credential, ResetCode, TokenScope, User};
use crate::core::text;
use crate::os;
use crate::store::{AccountDeletion, Admission, CredentialUpdate, Store, StoreError, UserRow};

/// Fewest characters of a new password (accounts made before this rule, with 8, still
/// sign in: the rule applies where a password is set).
pub const PASSWORD_CHARS_MIN: usize = 10;
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// The zxcvbn score a new password needs: `Three` is about 10^10 guesses or more, what
/// zxcvbn calls safe against an offline attack on a slow hash (ours is Argon2id).
const PASSWORD_SCORE_MIN: zxcvbn::Score = zxcvbn::Score::Three;
/// The smallest side of an invite's QR code as rendered (the SVG scales; its
/// `viewBox` is kept).
const INVITE_QR_SIDE_PIXELS_MIN: u32 = 240;

/// A claim or invite code as compared: upper case, hyphens and white space dropped,
/// and Crockford's look-alikes read as the digit (I and L as 1, O as 0). New invite
/// codes use no I, L, O or U; claim codes are normalised on both sides, so one an
/// operator chose (`--claim-code`) matches however it was typed too.
fn normalised_code(code: &str) -> String {
    code.chars()
        .filter(|character| *character != '-' && !character.is_whitespace())
        .map(|character| match character.to_ascii_uppercase() {
            'I' | 'L' => '1',
            'O' => '0',
            upper => upper,
        })
        .collect()
}

/// An invite code as shown to people: `XXXXX-XXXXX` for a normalised short code;
/// any other code (one from before short codes) as stored.
fn shown_invite_code(code: &str) -> String {
    if code.len() != Store::INVITE_CODE_SYMBOLS || !code.is_ascii() {
        return code.to_owned();
    }
    let (first, second) = code.split_at(code.len() / 2);
    format!("{first}-{second}")
}

/// The web app's join screen with `code` filled in, on the address people use.
fn invite_link(base_url: &str, shown_code: &str) -> String {
    format!("{}/#/join?code={shown_code}", base_url.trim_end_matches('/'))
}

/// `link` as a QR code: an `<svg>` element to insert inline (no XML declaration),
/// dark modules on white. `None` when the link does not fit a QR code (only a
/// configured domain thousands of bytes long could make it so).
fn qr_svg(link: &str) -> Option<String> {
    let code = match qrcode::QrCode::new(link.as_bytes()) {
        Ok(code) => code,
        Err(error) => {
            tracing::warn!(%error, link_bytes = link.len(), "the invite link does not fit a QR code");
            return None;
        }
    };
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(INVITE_QR_SIDE_PIXELS_MIN, INVITE_QR_SIDE_PIXELS_MIN)
        .build();
    let element_start = svg.find("<svg").expect("the qrcode SVG renderer writes an <svg> element");
    Some(svg[element_start..].to_owned())
}

/// Whether `given` is the claim code `expected`, both normalised; in constant time
/// for codes of one length.
fn claim_code_matches(expected: &str, given: &str) -> bool {
    constant_time_eq(normalised_code(expected).as_bytes(), normalised_code(given).as_bytes())
}

fn already_claimed() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "already_claimed",
        "this node already has accounts (it was claimed, or holds its siblings' accounts), so it cannot be \
         claimed again: sign in, or ask an admin for an invite",
    )
}

fn password_busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "the node is checking many passwords right now; retry in a few seconds",
    )
}

/// A dummy hash to verify against when the handle is unknown, so a response's timing
/// does not reveal which handles exist.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| password::hash_with("not a real password", &mut Vec::new()))
}

pub fn healthz(_api: &Api, _call: &mut Call<'_>) -> ApiResult {
    shapes::ok(&shapes::Health { status: "ok" })
}

/// Admins, the local control token, or a request through the operator's metrics
/// listener (the transport marks it with `MetricsListener`); 403 for everyone else,
/// since counters tell an outsider how busy the node is and who is throttled.
pub fn metrics(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let through_metrics_listener = call.parts.extensions.get::<super::MetricsListener>().is_some();
    let admin = call.viewer.as_ref().is_some_and(|user| user.admin);
    if !(call.local_control || admin || through_metrics_listener) {
        return Err(ApiError::forbidden(
            "metrics are for the node's operator: send an admin's token or the control token \
             (`<data_dir>/control-token`), or scrape the metrics listener the operator configured",
        ));
    }
    let users = api.store.user_count()?;
    let format = super::metrics::Format::from_accept(call.parts.headers.get(header::ACCEPT));
    let body = api.metrics.render(users, api.pipeline.gate_stats(), format);
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, format.content_type())
        .body(body.into())
        .expect("static response parts are valid"))
}

pub fn node(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let operator = call.local_control || call.viewer.as_ref().is_some_and(|user| user.admin);
    shapes::ok(&shapes::NodeAbout {
        node_id: api.store.node_id().to_string(),
        name: api.node.name.clone(),
        version: crate::os::release_version(),
        region: api.node.region.clone(),
        roles: api.node.roles.clone(),
        pin: api.node.pin.clone(),
        addresses: api.node.addresses.clone(),
        base_url: api.node.base_url.clone(),
        peers: api.siblings.as_ref().map(|siblings| siblings.sibling_list()).unwrap_or_default(),
        claimed: api.store.claimed_or_has_accounts()?,
        open_registration: api.open_registration,
        uptime_seconds: api.started.elapsed().as_secs(),
        storage: operator.then(|| storage(api)),
        update: if operator { super::update::node_update_json(api) } else { None },
    })
}

/// Bytes the node stores, and free/total space of the file system holding the data dir.
fn storage(api: &Api) -> shapes::Storage {
    let (free_bytes, total_bytes) = match nix::sys::statvfs::statvfs(&api.data_dir) {
        // The statvfs field types are narrower on 32-bit targets (e.g. 32-bit Pi OS).
        #[allow(clippy::unnecessary_cast)]
        Ok(stats) => {
            let fragment_bytes = stats.fragment_size() as u64;
            (Some(stats.blocks_available() as u64 * fragment_bytes), Some(stats.blocks() as u64 * fragment_bytes))
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read free space of the data dir");
            (None, None)
        }
    };
    shapes::Storage { used_bytes: api.store.used_bytes(), free_bytes, total_bytes }
}

/// Admins, or the local CLI with the control token.
pub fn nearby(api: &Api, call: &mut Call<'_>) -> ApiResult {
    if !call.local_control && !call.user()?.admin {
        return Err(ApiError::forbidden("only an admin can list nearby nodes"));
    }
    let items = api.nearby.as_ref().map(|nearby| nearby.nearby()).unwrap_or_default();
    shapes::ok(&shapes::Nearby { mdns: api.nearby.is_some(), items })
}

pub fn replication(api: &Api, call: &mut Call<'_>) -> ApiResult {
    if !call.local_control && !call.user()?.admin {
        return Err(ApiError::forbidden("only an admin can see replication state"));
    }
    match &api.siblings {
        Some(siblings) => shapes::ok(&shapes::ReplicationAnswer::Running(siblings.status()?)),
        None => shapes::ok(&shapes::ReplicationAnswer::Off(shapes::ReplicationOff { replication: false })),
    }
}

fn siblings<'a>(api: &'a Api, call: &mut Call<'_>) -> Result<&'a dyn ports::Replication, ApiError> {
    if !call.local_control && !call.user()?.admin {
        return Err(ApiError::forbidden("only an admin can manage siblings"));
    }
    api.siblings.as_deref().ok_or_else(|| ApiError::unavailable("replication is not running on this node"))
}

pub fn peers(api: &Api, call: &mut Call<'_>) -> ApiResult {
    shapes::ok(&shapes::Items { items: siblings(api, call)?.peers() })
}

pub fn pair(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let answer = siblings(api, call)?.start_pairing().map_err(|error| ApiError::unavailable(error.to_string()))?;
    shapes::ok(&answer)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JoinRequest {
    address: String,
    code: String,
}

pub fn join(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let request: JoinRequest = call.json()?;
    let service = siblings(api, call)?;
    match service.join(request.address.trim(), request.code.trim()) {
        Ok(info) => {
            shapes::ok(&shapes::Joined { node_id: info.node_id.to_string(), address: info.address, pin: info.pin })
        }
        Err(error) => Err(ApiError::bad_request("pairing_failed", error.to_string())),
    }
}

/// `POST /api/v1/node/peers/{node_id}/retire[?force=true]`: a dead sibling retired.
pub fn retire_peer(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let service = siblings(api, call)?;
    let node_id: crate::core::model::NodeId = call.param(0).trim().parse().map_err(|_| {
        ApiError::bad_request("invalid_node_id", "a node id is 16 hexadecimal digits, as `edgenode peer list` shows")
    })?;
    let force = call.query("force").is_some_and(|value| value == "true" || value == "1");
    match service.retire(node_id, force) {
        Ok(answer) => shapes::ok(&answer),
        Err(refused) => Err(match refused.reason {
            ports::RetireRefusal::OwnNode => ApiError::bad_request("own_node", refused.message),
            ports::RetireRefusal::NotASibling => ApiError::new(StatusCode::NOT_FOUND, "not_a_sibling", refused.message),
            ports::RetireRefusal::Connected => {
                ApiError::new(StatusCode::CONFLICT, "sibling_connected", refused.message)
            }
            ports::RetireRefusal::Failed => ApiError::unavailable(refused.message),
        }),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAccount {
    handle: String,
    password: String,
    claim: Option<String>,
    invite: Option<String>,
}

pub fn create_account(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let request: NewAccount = call.json()?;
    let handle = request.handle.trim().to_lowercase();
    text::check_handle(&handle).map_err(|error| ApiError::bad_request("invalid_handle", error.to_string()))?;
    check_password(&request.password, &handle)?;
    let guess = match (&request.claim, &request.invite) {
        (Some(_), _) => Some(Guess::ClaimCode),
        (None, Some(_)) => Some(Guess::InviteCode),
        (None, None) => None,
    };
    let attempt = match guess {
        Some(guess) => {
            let begun = api.login_throttle.lock().expect("throttle lock").begin(
                guess,
                call.client_addr.map(|addr| addr.ip()),
                Instant::now(),
            );
            match begun {
                Ok(attempt) => Some(attempt),
                Err(wait) => return Err(too_many_attempts(api, "claim or invite codes", wait)),
            }
        }
        None => None,
    };
    let (created, code_was_right) = admit(api, &request, &handle);
    if let Some(attempt) = attempt {
        let mut throttle = api.login_throttle.lock().expect("throttle lock");
        match code_was_right {
            Some(right) => throttle.finish(attempt, Instant::now(), right),
            None => throttle.cancel(attempt),
        }
    }
    let user = created?;
    let token = api.start_session(&user.user_id, &user_agent(call))?;
    // The device that made the account is a known device from its first sign-in on.
    let device = api
        .login_throttle
        .lock()
        .expect("throttle lock")
        .device_key(&api.data_dir)
        .issue(&user.user_id, os::random_bytes());
    shapes::answer(
        StatusCode::CREATED,
        &shapes::AccountCreated { user_id: user.user_id, handle: user.handle, token, admin: user.admin, device },
    )
}

/// Admits and creates the account `request` asks for. Also says whether its claim or
/// invite code was judged right (`Some(true)`), wrong (`Some(false)`), or not judged
/// (`None`: no code, a claim of a node that has accounts, the handle is taken, the
/// node is busy).
fn admit(api: &Api, request: &NewAccount, handle: &str) -> (Result<User, ApiError>, Option<bool>) {
    let invite = request.invite.as_deref().map(normalised_code);
    let (admission, code_was_right) = if let Some(claim) = &request.claim {
        // A node with accounts has an owner, whatever its claim code (a sibling that
        // was never claimed keeps one): not judged, so no guess is counted.
        match api.store.claimed_or_has_accounts() {
            Err(error) => return (Err(error.into()), None),
            Ok(true) => return (Err(already_claimed()), None),
            Ok(false) => {}
        }
        let expected = api.claim_code.lock().expect("claim lock").clone();
        match expected {
            Some(code) if claim_code_matches(&code, claim) => (Admission::Claim, Some(true)),
            _ => {
                let wrong = ApiError::forbidden_code(
                    "bad_claim_code",
                    "the claim code is wrong or the node is already claimed",
                );
                return (Err(wrong), Some(false));
            }
        }
    } else if let Some(invite) = &invite {
        (Admission::Invite(invite), None)
    } else {
        match api.store.claimed_or_has_accounts() {
            Err(error) => return (Err(error.into()), None),
            Ok(false) => {
                let refused = ApiError::forbidden_code(
                    "claim_required",
                    "this node is not claimed yet: the first account needs the claim code (see `edgenode status`)",
                );
                return (Err(refused), None);
            }
            Ok(true) if api.open_registration => (Admission::Open, None),
            Ok(true) => {
                let refused =
                    ApiError::forbidden_code("invite_required", "registration needs an invite code from an admin");
                return (Err(refused), None);
            }
        }
    };
    let Some(password_hash) = api.password_gate.hash(&request.password) else {
        return (Err(password_busy()), None);
    };
    let user = match api.store.create_user(handle, password_hash, admission) {
        Ok(user) => user,
        Err(StoreError::BadInvite) => return (Err(StoreError::BadInvite.into()), Some(false)),
        // Accounts replicated here since the check above.
        Err(StoreError::AlreadyClaimed) => return (Err(already_claimed()), None),
        Err(error) => return (Err(error.into()), None),
    };
    if matches!(admission, Admission::Claim) {
        *api.claim_code.lock().expect("claim lock") = None;
        if let Err(error) = std::fs::remove_file(&api.claim_code_file) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, "could not remove the claim code file");
            }
        }
        tracing::info!(handle = %user.handle, "node claimed; first admin created");
    }
    let code_was_right = code_was_right.or(matches!(admission, Admission::Invite(_)).then_some(true));
    (Ok(user), code_was_right)
}

/// A new password for `handle`: `PASSWORD_CHARS_MIN` characters or more, at most
/// `PASSWORD_BYTES_MAX` bytes, and hard enough to guess by zxcvbn's estimate, with the
/// handle as a word a guesser knows (so `ada-ada-ada` is weak for ada). The refusal
/// is 400 `weak_password` with zxcvbn's warning and suggestions. zxcvbn reads only the
/// first 100 characters, so a check costs at most a few milliseconds.
fn check_password(password: &str, handle: &str) -> Result<(), ApiError> {
    let characters = password.chars().count();
    if characters < PASSWORD_CHARS_MIN || password.len() > PASSWORD_BYTES_MAX {
        return Err(ApiError::bad_request(
            "weak_password",
            format!(
                "a password needs at least {PASSWORD_CHARS_MIN} characters (and at most {PASSWORD_BYTES_MAX} \
                 bytes); this one has {characters}"
            ),
        ));
    }
    let estimate = zxcvbn::zxcvbn(password, &[handle]);
    if estimate.score() >= PASSWORD_SCORE_MIN {
        return Ok(());
    }
    let mut why = vec!["this password is too easy to guess.".to_owned()];
    if let Some(feedback) = estimate.feedback() {
        why.extend(feedback.warning().map(|warning| warning.to_string()));
        why.extend(feedback.suggestions().iter().map(ToString::to_string));
    }
    if why.len() == 1 {
        why.push("Use a few uncommon words, not your handle.".to_owned());
    }
    Err(ApiError::bad_request("weak_password", why.join(" ")))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Credentials {
    handle: String,
    password: String,
    /// The `device` token an earlier sign-in of this user on this device answered with.
    device: Option<String>,
}

/// 429 `too_many_attempts` with `Retry-After` and when to retry in the message.
fn too_many_attempts(api: &Api, what: &str, wait: std::time::Duration) -> ApiError {
    api.metrics.logins_throttled_total.inc();
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        format!("too many failed {what}; try again in {} s", seconds.max(1)),
    )
    .retry_after(wait)
}

pub fn login(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let request: Credentials = call.json()?;
    let handle = request.handle.trim().to_lowercase();
    let user = api.store.user_by_handle(&handle)?;
    let now = Instant::now();
    let (attempt, device) = {
        let mut throttle = api.login_throttle.lock().expect("throttle lock");
        // A device token counts only for the user it was issued to on this node.
        let device = match (&user, request.device.as_deref()) {
            (Some(user), Some(token)) => throttle.device_key(&api.data_dir).verify(&user.user_id, token),
            _ => None,
        };
        let guess = Guess::Password { handle: &handle, device: device.as_ref() };
        match throttle.begin(guess, call.client_addr.map(|addr| addr.ip()), now) {
            Ok(attempt) => (attempt, device),
            Err(wait) => return Err(too_many_attempts(api, "sign-ins", wait)),
        }
    };
    let credential = match &user {
        Some(user) => api.store.credential(&user.user_id)?,
        None => None,
    };
    let hash = credential.as_ref().map_or(dummy_hash(), |credential| credential.password_hash.as_str());
    let checked = api.password_gate.matches(&request.password, hash, device.is_some());
    let mut throttle = api.login_throttle.lock().expect("throttle lock");
    let Some(matches) = checked else {
        throttle.cancel(attempt);
        return Err(password_busy());
    };
    let succeeded = matches && credential.is_some() && user.is_some();
    throttle.finish(attempt, Instant::now(), succeeded);
    match user.filter(|_| succeeded) {
        Some(user) => {
            // A known device keeps its token (and its own failure count); a new one gets one.
            let device_token = match (device, request.device) {
                (Some(_), Some(token)) => token.trim().to_owned(),
                _ => throttle.device_key(&api.data_dir).issue(&user.user_id, os::random_bytes()),
            };
            drop(throttle);
            if credential.is_some_and(|credential| credential.disabled) {
                return Err(account_disabled());
            }
            let token = api.start_session(&user.user_id, &user_agent(call))?;
            shapes::ok(&shapes::SignedIn { token, user_id: user.user_id, device: device_token })
        }
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "bad_credentials", "wrong handle or password")),
    }
}

pub fn logout(api: &Api, call: &mut Call<'_>) -> ApiResult {
    call.user()?;
    let token = call
        .header(header::AUTHORIZATION)
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    api.store.delete_session(&token_hash(token))?;
    empty_response(StatusCode::NO_CONTENT)
}

/// Who manages invites: an admin (their user id), or the local control token (the
/// CLI on the box, `Store::INVITE_BY_CONTROL_TOKEN`); 403 for anyone else.
fn invite_manager<'a>(call: &'a Call<'_>, what: &str) -> Result<&'a str, ApiError> {
    if call.local_control {
        return Ok(Store::INVITE_BY_CONTROL_TOKEN);
    }
    let user = call.user()?;
    if !user.admin {
        return Err(ApiError::forbidden(format!("only an admin can {what}")));
    }
    Ok(&user.user_id)
}

pub fn create_invite(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let created_by = invite_manager(call, "create invites")?;
    let invite = api.store.create_invite(created_by)?;
    let code = shown_invite_code(&invite.code);
    let link = invite_link(&api.node.base_url, &code);
    let qr_svg = qr_svg(&link);
    shapes::answer(StatusCode::CREATED, &shapes::InviteCreated { code, link, qr_svg })
}

/// Open invites (not used, not revoked), newest first: `{items:[{code, created_at,
/// created_by:{user_id, handle}|null}]}`; `null` for one the control token made.
pub fn list_invites(api: &Api, call: &mut Call<'_>) -> ApiResult {
    invite_manager(call, "list invites")?;
    let mut items = Vec::new();
    for invite in api.store.open_invites()? {
        let created_by = if invite.created_by == Store::INVITE_BY_CONTROL_TOKEN {
            None
        } else {
            let handle = api.store.user(&invite.created_by)?.map(|user| user.handle);
            Some(shapes::InviteCreator { user_id: invite.created_by.clone(), handle })
        };
        items.push(shapes::Invite { code: shown_invite_code(&invite.code), created_at: invite.created_at, created_by });
    }
    shapes::ok(&shapes::Items { items })
}

/// Revokes an open invite by its code (compared normalised, as at sign-up): 204, or
/// 404 when no open invite has it.
pub fn revoke_invite(api: &Api, call: &mut Call<'_>) -> ApiResult {
    invite_manager(call, "revoke invites")?;
    let code = call.param(0).to_owned();
    if api.store.revoke_invite(&normalised_code(&code))? {
        tracing::info!(code = %shown_invite_code(&normalised_code(&code)), "invite revoked");
        return empty_response(StatusCode::NO_CONTENT);
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no open invite {code}: it is unknown, used or revoked already (see GET /api/v1/invites)"),
    ))
}

// ----- account care: password, sessions, personal access tokens -----

/// Personal access tokens look like `ent_<user id>_<43 base64url characters>` (32
/// random bytes): the user id says whose credential holds the token's hash, so no
/// index of tokens is needed, and the length tells them from session tokens (43).
const ACCESS_TOKEN_PREFIX: &str = "ent_";
const ACCESS_TOKEN_SECRET_CHARS: usize = 43;
/// Personal access tokens one user may hold (they live in the user's one credential
/// record, which every replica holds).
pub const ACCESS_TOKENS_PER_USER_MAX: usize = 20;
const ACCESS_TOKEN_NAME_CHARS_MAX: usize = 64;
/// How long a password-reset code from an admin stays usable.
pub const RESET_CODE_LIFETIME_MS: u64 = 24 * 3600 * 1000;

/// The user id a personal access token names, if `token` has that shape.
pub(super) fn access_token_user(token: &str) -> Option<&str> {
    let (user_id, secret) = token.strip_prefix(ACCESS_TOKEN_PREFIX)?.split_once('_')?;
    let user_id_shaped = user_id.len() == 32 && user_id.bytes().all(|byte| byte.is_ascii_hexdigit());
    (user_id_shaped && secret.len() == ACCESS_TOKEN_SECRET_CHARS).then_some(user_id)
}

pub(super) fn account_disabled() -> ApiError {
    ApiError::forbidden_code(
        "account_disabled",
        "this account is disabled by an admin of the node: ask them to enable it",
    )
}

pub(super) fn signed_out() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this session was signed out (the password was changed or reset, or an admin disabled the account): sign in again",
    )
}

pub(super) fn session_expired(api: &Api) -> ApiError {
    let idle_seconds = api.session_idle_timeout_ms / 1000;
    let idle = match idle_seconds {
        seconds if seconds >= 86_400 => format!("{} days", seconds / 86_400),
        seconds if seconds >= 3_600 => format!("{} hours", seconds / 3_600),
        seconds => format!("{seconds} s"),
    };
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "session_expired",
        format!("this session ended after {idle} without use: sign in again"),
    )
}

fn sha256_hex(text: &str) -> String {
    crate::store::hex(&token_hash(text))
}

fn user_agent(call: &Call<'_>) -> String {
    call.header(header::USER_AGENT).unwrap_or_default().to_owned()
}

impl Api {
    /// The user and scope of a personal access token of `user_id` whose hash is
    /// `hash`: 401 when none is (revoked, or never made), 403 when the account is
    /// disabled.
    pub(super) fn access_token_holder(&self, user_id: &str, hash: &[u8; 32]) -> Result<(User, TokenScope), ApiError> {
        let revoked = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this access token was revoked or never existed: make a new one (POST /api/v1/me/tokens)",
            )
        };
        let (user, credential) = self.store.user_with_credential(user_id)?.ok_or_else(revoked)?;
        let credential = credential.ok_or_else(revoked)?;
        let hash_hex = crate::store::hex(hash);
        let token = credential
            .access_tokens
            .iter()
            .find(|token| constant_time_eq(token.token_sha256.as_bytes(), hash_hex.as_bytes()))
            .ok_or_else(revoked)?;
        if credential.disabled {
            return Err(account_disabled());
        }
        Ok((user, token.scope))
    }

    /// Begins a guess at `handle`'s password (or reset code), throttled as sign-ins are.
    fn begin_password_guess(&self, call: &Call<'_>, handle: &str) -> Result<super::throttle::Attempt, ApiError> {
        let guess = Guess::Password { handle, device: None };
        let begun = self.login_throttle.lock().expect("throttle lock").begin(
            guess,
            call.client_addr.map(|addr| addr.ip()),
            Instant::now(),
        );
        begun.map_err(|wait| too_many_attempts(self, "sign-ins", wait))
    }

    fn finish_password_guess(&self, attempt: super::throttle::Attempt, right: Option<bool>) {
        let mut throttle = self.login_throttle.lock().expect("throttle lock");
        match right {
            Some(right) => throttle.finish(attempt, Instant::now(), right),
            None => throttle.cancel(attempt),
        }
    }

    /// Stores a new one-time reset code for `user` (replacing any earlier one); the
    /// code as shown, once, and when it expires.
    fn issue_reset_code(&self, user: &User) -> Result<(String, u64), ApiError> {
        let code = Store::new_one_time_code();
        let expires_at_ms = os::now_ms() + RESET_CODE_LIFETIME_MS;
        let reset_code = ResetCode { code_sha256: sha256_hex(&code), expires_at_ms };
        self.store
            .update_credential(&user.user_id, None, |credential| {
                credential.reset_code = Some(reset_code);
                CredentialUpdate::Write(())
            })?
            .ok_or_else(credential_not_here)?;
        tracing::info!(handle = %user.handle, "password reset code issued");
        Ok((shown_invite_code(&code), expires_at_ms))
    }
}

/// A signed-in user's password typed again (to change it, or to delete the account):
/// a sign-in guess, throttled as one. 403 `wrong_password`; 409 while the credential
/// is still on its way from a sibling.
fn check_own_password(api: &Api, call: &Call<'_>, user: &User, password: &str) -> Result<(), ApiError> {
    let attempt = api.begin_password_guess(call, &user.handle)?;
    let credential = match api.store.credential(&user.user_id) {
        Ok(credential) => credential,
        Err(error) => {
            api.finish_password_guess(attempt, None);
            return Err(error.into());
        }
    };
    let hash = credential.as_ref().map_or(dummy_hash(), |credential| credential.password_hash.as_str());
    let Some(matches) = api.password_gate.matches(password, hash, false) else {
        api.finish_password_guess(attempt, None);
        return Err(password_busy());
    };
    api.finish_password_guess(attempt, Some(matches && credential.is_some()));
    if credential.is_none() {
        return Err(credential_not_here());
    }
    if !matches {
        return Err(ApiError::forbidden_code("wrong_password", "the password is wrong"));
    }
    Ok(())
}

fn credential_not_here() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_replicated_yet",
        "this node does not hold the account's credential yet (it is on its way from a sibling): retry shortly",
    )
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordChange {
    current_password: String,
    new_password: String,
    #[serde(default)]
    sign_out_other_sessions: bool,
}

/// `PUT /api/v1/me/password`: the current password (a sign-in guess, throttled as
/// one) and a new one; optionally every other session, on every node, is signed out.
pub fn change_password(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let request: PasswordChange = call.json()?;
    let user = call.user()?.clone();
    check_password(&request.new_password, &user.handle)?;
    check_own_password(api, call, &user, &request.current_password)?;
    let new_hash = api.password_gate.hash(&request.new_password).ok_or_else(password_busy)?;
    let sign_out = request.sign_out_other_sessions;
    let keep = call.session_token_hash;
    api.store
        .update_credential(&user.user_id, keep.as_ref().map(|hash| hash.as_slice()), |credential| {
            credential.password_hash = new_hash;
            credential.reset_code = None;
            if sign_out {
                credential.session_epoch += 1;
            }
            CredentialUpdate::Write(())
        })?
        .ok_or_else(credential_not_here)?;
    tracing::info!(handle = %user.handle, sign_out, "password changed");
    shapes::ok(&shapes::PasswordChanged { signed_out_other_sessions: sign_out })
}

/// `GET /api/v1/me/sessions`: the caller's live sessions on this node.
pub fn list_sessions(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user = call.user()?;
    let epoch = api.store.credential(&user.user_id)?.map_or(0, |credential| credential.session_epoch);
    let current = call.session_token_hash.map(|hash| Store::session_id(&hash));
    let now_ms = os::now_ms();
    let items: Vec<shapes::Session> = api
        .store
        .sessions_of(&user.user_id)?
        .into_iter()
        .filter(|session| {
            let idle_ms = now_ms.saturating_sub(session.last_seen_ms);
            session.epoch >= epoch && (!session.last_seen_recorded || idle_ms <= api.session_idle_timeout_ms)
        })
        .map(|session| shapes::Session {
            current: current.as_deref() == Some(session.session_id.as_str()),
            session_id: session.session_id,
            created_at: session.created_at_ms,
            last_seen_at: session.last_seen_ms,
            user_agent: session.user_agent,
        })
        .collect();
    shapes::ok(&shapes::Items { items })
}

/// `DELETE /api/v1/me/sessions/{id}`: signs that session out (204), 404 when the
/// caller has no such session on this node.
pub fn revoke_session(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    if api.store.delete_session_by_id(&user_id, call.param(0))? {
        return empty_response(StatusCode::NO_CONTENT);
    }
    Err(ApiError::not_found("session"))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAccessToken {
    name: String,
    #[schemars(with = "super::shapes::TokenScope")]
    scope: TokenScope,
}

fn access_token_shape(token: &AccessToken) -> shapes::AccessToken {
    shapes::AccessToken {
        token_id: token.token_id.clone(),
        name: token.name.clone(),
        scope: token.scope.into(),
        created_at: token.created_at,
    }
}

/// `POST /api/v1/me/tokens {name, scope}`: 201 with the token, shown this once.
pub fn create_token(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let request: NewAccessToken = call.json()?;
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > ACCESS_TOKEN_NAME_CHARS_MAX {
        return Err(ApiError::bad_request(
            "invalid_token_name",
            format!("a token's name is 1 to {ACCESS_TOKEN_NAME_CHARS_MAX} characters, e.g. \"backup script\""),
        ));
    }
    let user = call.user()?.clone();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(os::random_bytes::<32>());
    let token = format!("{ACCESS_TOKEN_PREFIX}{}_{secret}", user.user_id);
    let stored = AccessToken {
        token_id: crate::store::hex(&os::random_bytes::<8>()),
        name,
        scope: request.scope,
        token_sha256: sha256_hex(&token),
        created_at: os::now_ms(),
    };
    let made = stored.clone();
    let added = api
        .store
        .update_credential(&user.user_id, None, |credential| {
            if credential.access_tokens.len() >= ACCESS_TOKENS_PER_USER_MAX {
                return CredentialUpdate::Keep(false);
            }
            credential.access_tokens.push(made);
            CredentialUpdate::Write(true)
        })?
        .ok_or_else(credential_not_here)?;
    if !added {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_tokens",
            format!("you have {ACCESS_TOKENS_PER_USER_MAX} access tokens, the most one account may: revoke one first"),
        ));
    }
    shapes::answer(
        StatusCode::CREATED,
        &shapes::AccessTokenCreated { access_token: access_token_shape(&stored), token },
    )
}

/// `GET /api/v1/me/tokens`: the caller's personal access tokens (never the tokens).
pub fn list_tokens(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user = call.user()?;
    let credential = api.store.credential(&user.user_id)?;
    let tokens = credential.map(|credential| credential.access_tokens).unwrap_or_default();
    shapes::ok(&shapes::Items { items: tokens.iter().map(access_token_shape).collect() })
}

/// `DELETE /api/v1/me/tokens/{id}`: 204, and the token stops working on every
/// replica once this write reaches it; 404 when the caller has no such token.
pub fn revoke_token(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user_id = call.user()?.user_id.clone();
    let token_id = call.param(0).to_owned();
    let revoked = api
        .store
        .update_credential(&user_id, None, |credential| {
            let before = credential.access_tokens.len();
            credential.access_tokens.retain(|token| token.token_id != token_id);
            if credential.access_tokens.len() == before {
                CredentialUpdate::Keep(false)
            } else {
                CredentialUpdate::Write(true)
            }
        })?
        .unwrap_or(false);
    if revoked {
        return empty_response(StatusCode::NO_CONTENT);
    }
    Err(ApiError::not_found("access token"))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PasswordResetRequest")]
pub(super) struct PasswordReset {
    handle: String,
    code: String,
    new_password: String,
}

/// `POST /api/v1/password-reset {handle, code, new_password}`: the one-time code an
/// admin issued sets a new password, signs out every session on every node, and
/// signs this one in. Guesses are throttled as sign-ins are.
pub fn password_reset(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let request: PasswordReset = call.json()?;
    let handle = request.handle.trim().to_lowercase();
    check_password(&request.new_password, &handle)?;
    let attempt = api.begin_password_guess(call, &handle)?;
    let found = match api.store.user_by_handle(&handle) {
        Ok(Some(user)) => api.store.credential(&user.user_id).map(|credential| Some(user).zip(credential)),
        Ok(None) => Ok(None),
        Err(error) => Err(error),
    };
    let found = match found {
        Ok(found) => found,
        Err(error) => {
            api.finish_password_guess(attempt, None);
            return Err(error.into());
        }
    };
    let code_sha256 = sha256_hex(&normalised_code(&request.code));
    let now_ms = os::now_ms();
    let code_is_right = |credential: &Credential| {
        credential.reset_code.as_ref().is_some_and(|reset| {
            reset.expires_at_ms > now_ms && constant_time_eq(reset.code_sha256.as_bytes(), code_sha256.as_bytes())
        })
    };
    let right = found.as_ref().is_some_and(|(_, credential)| code_is_right(credential));
    api.finish_password_guess(attempt, Some(right));
    let wrong = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_reset_code",
            "wrong handle or reset code, or the code was used or has expired: ask an admin for a new one",
        )
    };
    let Some((user, credential)) = found.filter(|_| right) else { return Err(wrong()) };
    if credential.disabled {
        return Err(account_disabled());
    }
    let new_hash = api.password_gate.hash(&request.new_password).ok_or_else(password_busy)?;
    // Checked again in the write: the code is used once, however many try it at once.
    let used = api
        .store
        .update_credential(&user.user_id, None, |credential| {
            if !code_is_right(credential) {
                return CredentialUpdate::Keep(false);
            }
            credential.password_hash = new_hash;
            credential.reset_code = None;
            credential.session_epoch += 1;
            CredentialUpdate::Write(true)
        })?
        .unwrap_or(false);
    if !used {
        return Err(wrong());
    }
    tracing::info!(handle = %user.handle, "password reset with a code");
    let token = api.start_session(&user.user_id, &user_agent(call))?;
    shapes::ok(&shapes::PasswordReset { token, user_id: user.user_id })
}

// ----- admin: users -----

/// An admin (their account) or the local control token (`None`); 403 for anyone else.
fn user_admin<'a>(call: &'a Call<'_>, what: &str) -> Result<Option<&'a User>, ApiError> {
    if call.local_control {
        return Ok(None);
    }
    let user = call.user()?;
    if !user.admin {
        return Err(ApiError::forbidden(format!("only an admin can {what}")));
    }
    Ok(Some(user))
}

fn user_row_json(api: &Api, row: &UserRow) -> Result<shapes::UserRow, ApiError> {
    let user = &row.user;
    Ok(shapes::UserRow {
        user_id: user.user_id.clone(),
        handle: user.handle.clone(),
        display_name: user.display_name.clone(),
        admin: user.admin,
        disabled: row.disabled,
        created_at: user.created_at,
        home: user.home.map(|home| home.to_string()),
        storage_bytes_used: api.store.user_storage_bytes(&user.user_id)?,
        last_seen_at: row.last_seen_ms,
    })
}

/// The user a `/api/v1/admin/users/{handle}/…` route names, as a list row.
fn named_user_row(api: &Api, call: &Call<'_>) -> Result<UserRow, ApiError> {
    let handle = call.param(0).trim().to_lowercase();
    let user = api.store.user_by_handle(&handle)?.ok_or_else(|| ApiError::not_found("user"))?;
    let credential = api.store.credential(&user.user_id)?;
    let last_seen_ms = api.store.sessions_of(&user.user_id)?.iter().map(|session| session.last_seen_ms).max();
    Ok(UserRow { disabled: credential.is_some_and(|credential| credential.disabled), user, last_seen_ms })
}

/// `GET /api/v1/admin/users?limit&cursor`: every user this node holds, by handle.
pub fn admin_list_users(api: &Api, call: &mut Call<'_>) -> ApiResult {
    user_admin(call, "list users")?;
    let limit = call.limit()?;
    let cursor = call.query("cursor").filter(|cursor| !cursor.is_empty());
    let (rows, next_cursor) = api.store.users_page(cursor.as_deref(), limit)?;
    let items = rows.iter().map(|row| user_row_json(api, row)).collect::<Result<Vec<_>, _>>()?;
    shapes::ok(&shapes::Page { items, next_cursor })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddedUser {
    handle: String,
    password: Option<String>,
}

/// `POST /api/v1/admin/users {handle, password?}`: an account made by an admin. With
/// no password, the answer carries a one-time reset code for the person to set
/// their own (`POST /api/v1/password-reset`), so the admin never knows it.
pub fn admin_add_user(api: &Api, call: &mut Call<'_>) -> ApiResult {
    user_admin(call, "add users")?;
    let request: AddedUser = call.json()?;
    let handle = request.handle.trim().to_lowercase();
    text::check_handle(&handle).map_err(|error| ApiError::bad_request("invalid_handle", error.to_string()))?;
    if let Some(password) = &request.password {
        check_password(password, &handle)?;
    }
    if !api.store.claimed_or_has_accounts()? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_claimed",
            "this node is not claimed yet: the first account claims it with the claim code (see `edgenode status`)",
        ));
    }
    // Without a password, one nobody knows: only the reset code opens the account.
    let unknown_password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(os::random_bytes::<32>());
    let password = request.password.as_deref().unwrap_or(&unknown_password);
    let password_hash = api.password_gate.hash(password).ok_or_else(password_busy)?;
    let user = api.store.create_user(&handle, password_hash, Admission::Open)?;
    tracing::info!(handle = %user.handle, "account added by an admin");
    let reset_code = match request.password {
        Some(_) => None,
        None => Some(api.issue_reset_code(&user)?),
    };
    shapes::answer(
        StatusCode::CREATED,
        &shapes::UserAdded {
            user_id: user.user_id,
            handle: user.handle,
            admin: user.admin,
            reset_code_expires_at: reset_code.as_ref().map(|(_, expires_at)| *expires_at),
            reset_code: reset_code.map(|(code, _)| code),
        },
    )
}

/// Sets `disabled` on the named user; disabling also signs out their sessions on
/// every node (enabling later does not bring them back).
fn set_disabled(api: &Api, call: &mut Call<'_>, disabled: bool) -> ApiResult {
    let caller = user_admin(call, if disabled { "disable users" } else { "enable users" })?;
    let mut row = named_user_row(api, call)?;
    if disabled && caller.is_some_and(|caller| caller.user_id == row.user.user_id) {
        return Err(ApiError::bad_request(
            "cannot_disable_self",
            "an admin cannot disable their own account (ask another admin, or use `edgenode user disable` on the box)",
        ));
    }
    api.store
        .update_credential(&row.user.user_id, None, |credential| {
            if credential.disabled == disabled {
                return CredentialUpdate::Keep(());
            }
            credential.disabled = disabled;
            if disabled {
                credential.session_epoch += 1;
            }
            CredentialUpdate::Write(())
        })?
        .ok_or_else(credential_not_here)?;
    tracing::info!(handle = %row.user.handle, disabled, "account disabled state set");
    row.disabled = disabled;
    shapes::ok(&user_row_json(api, &row)?)
}

pub fn admin_disable_user(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_disabled(api, call, true)
}

pub fn admin_enable_user(api: &Api, call: &mut Call<'_>) -> ApiResult {
    set_disabled(api, call, false)
}

/// `POST /api/v1/admin/users/{handle}/reset-code`: a one-time code (replacing any
/// earlier one) for `POST /api/v1/password-reset`, valid for a day.
pub fn admin_reset_code(api: &Api, call: &mut Call<'_>) -> ApiResult {
    user_admin(call, "issue password reset codes")?;
    let row = named_user_row(api, call)?;
    let (code, expires_at) = api.issue_reset_code(&row.user)?;
    shapes::ok(&shapes::ResetCodeIssued { handle: row.user.handle, code, expires_at })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AccountDeletionRequest {
    password: String,
}

/// Deletes the account `user_id` (`handle`) on every replica (`Store::delete_account`)
/// and answers what went.
fn delete_user(api: &Api, user_id: &str, handle: &str) -> ApiResult {
    match api.store.delete_account(user_id)? {
        AccountDeletion::Deleted { records, follows_of_them, media_removed, posts } => {
            tracing::info!(handle = %handle, records, media_removed, "account deleted");
            // Followers on other nodes hold copies in their feed caches: each post's
            // deletion goes to them as any deleted post's does.
            for post_id in &posts {
                api.fanout_post_changed(user_id, post_id);
            }
            shapes::ok(&shapes::AccountDeleted {
                handle: handle.to_owned(),
                user_id: user_id.to_owned(),
                deleted: true,
                records_deleted: records,
                follows_of_them_deleted: follows_of_them,
                photos_removed: media_removed as u64,
                handle_reserved: true,
            })
        }
        AccountDeletion::NotHere => Err(ApiError::not_found("user")),
        AccountDeletion::LastAdmin => Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_admin",
            "this is the node's last admin, and a node keeps one: another admin must exist before this account goes",
        )),
    }
}

/// `DELETE /api/v1/me {password}`: the caller deletes their own account, after
/// signing in again with their password (a sign-in guess, throttled as one). Every
/// record of theirs is tombstoned on every replica; the handle stays reserved.
pub fn delete_me(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let request: AccountDeletionRequest = call.json()?;
    let user = call.user()?.clone();
    check_own_password(api, call, &user, &request.password)?;
    delete_user(api, &user.user_id, &user.handle)
}

/// `DELETE /api/v1/admin/users/{handle}`: an admin (or the control token) deletes an
/// account on every replica; the last admin cannot be deleted.
/// A deleted account's handle finishes its deletion: what a replica cut off by a
/// partition wrote for it meanwhile is deleted too (404 when nothing was left).
pub fn admin_delete_user(api: &Api, call: &mut Call<'_>) -> ApiResult {
    user_admin(call, "delete users")?;
    let handle = call.param(0).trim().to_lowercase();
    if let Some(user) = api.store.user_by_handle(&handle)? {
        return delete_user(api, &user.user_id, &user.handle);
    }
    let deleted = api.store.deleted_user_id_by_handle(&handle)?.ok_or_else(|| ApiError::not_found("user"))?;
    delete_user(api, &deleted, &handle)
}

impl Api {
    /// A new random bearer token for `user_id`; only its hash is stored.
    fn start_session(&self, user_id: &str, user_agent: &str) -> Result<String, ApiError> {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(os::random_bytes::<32>());
        self.store.create_session(&token_hash(&token), user_id, user_agent)?;
        Ok(token)
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Method, Request};
    use serde_json::{json, Value};

    use super::*;
    use crate::api::NodeInfo;
    use crate::config::Config;
    use crate::media::{MediaLimits, Pipeline};
    use crate::test_support::TempDir;

    const CLAIM_CODE: &str = "ABCD-EFGH-JKMN";

    /// A real `Api` over a fresh store, unclaimed, with `CLAIM_CODE`.
    fn api_in(dir: &TempDir) -> (Api, Arc<Store>) {
        let config = Config { data_dir: dir.path().to_owned(), ..Config::default() };
        let store = Arc::new(Store::open(dir.path()).expect("store opens"));
        let node = NodeInfo {
            name: "Harbour Box".into(),
            region: String::new(),
            roles: vec!["home".into()],
            pin: "sha256/test".into(),
            addresses: vec!["127.0.0.1:8443".into()],
            base_url: NodeInfo::base_url("harbour-box", 8443, None),
        };
        let api =
            Api::new(&config, store.clone(), Pipeline::new(MediaLimits::default()), node, Some(CLAIM_CODE.into()));
        (api, store)
    }

    fn send(api: &Api, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        send_as(api, None, method, uri, body)
    }

    /// As `send`, with `Authorization: Bearer <token>` when `token` is given.
    fn send_as(api: &Api, token: Option<&str>, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = api.handle(request.body(body.into()).unwrap());
        let answer = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (response.status(), answer)
    }

    /// `POST /api/v1/accounts` with `body`; the new account's token.
    fn create_account(api: &Api, body: Value) -> String {
        let (status, answer) = send(api, Method::POST, "/api/v1/accounts", Some(body));
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer["token"].as_str().expect("a token").to_owned()
    }

    fn weak_password_message(password: &str, handle: &str) -> String {
        let refused = check_password(password, handle).expect_err(password);
        assert_eq!((refused.status, refused.code), (StatusCode::BAD_REQUEST, "weak_password"), "{password}");
        refused.message
    }

    #[test]
    fn new_passwords_are_ten_characters_and_hard_to_guess() {
        for (password, handle) in [
            ("sunsets over the harbour 42", "ada"),
            ("a long password", "ada"),
            ("correct horse battery", "ada"),
            ("ada-lovelace-1815", "ada"),
            ("Tr0ub4dor&3", "ada"),
        ] {
            assert!(check_password(password, handle).is_ok(), "{password} is accepted");
        }
        assert!(weak_password_message("harbour 7", "ada").contains("at least 10 characters"));
        assert!(weak_password_message(&"x".repeat(PASSWORD_BYTES_MAX + 1), "ada").contains("1024 bytes"));
        let common = weak_password_message("password123", "ada");
        assert!(common.contains("too easy to guess") && common.contains("very common password"), "{common}");
        for password in ["qwertyuiop", "1234567890", "iloveyou123", "Password2024!", "aaaaaaaaaaaa"] {
            weak_password_message(password, "ada");
        }
        // The handle is a word every guesser knows.
        let handle_repeated = weak_password_message("ada-ada-ada", "ada");
        assert!(handle_repeated.contains("Avoid repeated words"), "{handle_repeated}");
        assert!(check_password("mrwhiskers42", "bob").is_ok(), "fine for bob");
        weak_password_message("mrwhiskers42", "mrwhiskers");
    }

    #[test]
    fn a_weak_password_creates_nothing_and_keeps_the_claim_code() {
        let dir = TempDir::new("api-weak-password");
        let (api, store) = api_in(&dir);
        let weak = json!({"handle": "ada", "password": "password123", "claim": CLAIM_CODE});
        let (status, answer) = send(&api, Method::POST, "/api/v1/accounts", Some(weak));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], json!("weak_password"), "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("very common password"), "{answer}");
        assert_eq!(store.user_count().unwrap(), 0);
        create_account(&api, json!({"handle": "ada", "password": "harbour lights at dusk", "claim": CLAIM_CODE}));
    }

    #[test]
    fn admins_and_the_control_token_list_and_revoke_invites() {
        let dir = TempDir::new("api-invites");
        let (api, _store) = api_in(&dir);
        let api = api.with_control_token("control-secret");
        let password = "harbour lights at dusk";
        let admin = create_account(&api, json!({"handle": "ada", "password": password, "claim": CLAIM_CODE}));
        let (status, made) = send_as(&api, Some(&admin), Method::POST, "/api/v1/invites", None);
        assert_eq!(status, StatusCode::CREATED, "{made}");
        let (status, by_cli) = send_as(&api, Some("control-secret"), Method::POST, "/api/v1/invites", None);
        assert_eq!(status, StatusCode::CREATED, "the CLI on the box makes invites: {by_cli}");

        let (status, listed) = send_as(&api, Some("control-secret"), Method::GET, "/api/v1/invites", None);
        assert_eq!(status, StatusCode::OK, "{listed}");
        let items = listed["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{listed}");
        let made_by_ada = items.iter().find(|item| item["code"] == made["code"]).expect("ada's invite is listed");
        assert_eq!(made_by_ada["created_by"]["handle"], json!("ada"), "{listed}");
        assert!(made_by_ada["created_at"].as_u64().is_some_and(|at| at > 0), "{listed}");
        let made_by_cli = items.iter().find(|item| item["code"] == by_cli["code"]).expect("the CLI's is listed");
        assert_eq!(made_by_cli["created_by"], Value::Null, "{listed}");

        // A user who is not an admin may do neither.
        let bob = create_account(&api, json!({"handle": "bob", "password": password, "invite": made["code"]}));
        assert_eq!(send_as(&api, Some(&bob), Method::GET, "/api/v1/invites", None).0, StatusCode::FORBIDDEN);
        let cli_code = by_cli["code"].as_str().unwrap().to_owned();
        let revoke_uri = format!("/api/v1/invites/{}", cli_code.to_lowercase());
        assert_eq!(send_as(&api, Some(&bob), Method::DELETE, &revoke_uri, None).0, StatusCode::FORBIDDEN);
        assert_eq!(send(&api, Method::GET, "/api/v1/invites", None).0, StatusCode::UNAUTHORIZED);

        // A used invite is no longer open; a revoked one admits nobody.
        let (_, listed) = send_as(&api, Some(&admin), Method::GET, "/api/v1/invites", None);
        assert_eq!(listed["items"].as_array().unwrap().len(), 1, "ada's invite was used: {listed}");
        let (status, answer) = send_as(&api, Some(&admin), Method::DELETE, &revoke_uri, None);
        assert_eq!(status, StatusCode::NO_CONTENT, "a code typed in lower case revokes: {answer}");
        let (status, answer) = send_as(&api, Some(&admin), Method::DELETE, &revoke_uri, None);
        assert_eq!((status, &answer["error"]["code"]), (StatusCode::NOT_FOUND, &json!("not_found")), "{answer}");
        let made_uri = format!("/api/v1/invites/{}", made["code"].as_str().unwrap());
        assert_eq!(send_as(&api, Some(&admin), Method::DELETE, &made_uri, None).0, StatusCode::NOT_FOUND, "used");
        let (_, listed) = send_as(&api, Some(&admin), Method::GET, "/api/v1/invites", None);
        assert_eq!(listed["items"], json!([]), "{listed}");
        let join = json!({"handle": "cyd", "password": password, "invite": cli_code});
        let (status, answer) = send(&api, Method::POST, "/api/v1/accounts", Some(join));
        assert_eq!((status, &answer["error"]["code"]), (StatusCode::FORBIDDEN, &json!("bad_invite")), "{answer}");
    }

    #[test]
    fn codes_compare_without_case_hyphens_spaces_or_look_alikes() {
        assert_eq!(normalised_code("7k3qz-m9x2a"), "7K3QZM9X2A");
        assert_eq!(normalised_code(" 7K3QZ M9X2A\n"), "7K3QZM9X2A");
        assert_eq!(normalised_code("oIl-OiL"), "011011");
        // An invite from before short codes: hex has no look-alikes, only the case changes.
        assert_eq!(normalised_code("0a1b2c3d4e5f60718293"), "0A1B2C3D4E5F60718293");
        assert!(claim_code_matches(CLAIM_CODE, "abcd efgh jkmn"));
        assert!(claim_code_matches(CLAIM_CODE, "ABCDEFGHJKMN"));
        assert!(!claim_code_matches(CLAIM_CODE, "ABCD-EFGH-JKMP"));
        assert!(claim_code_matches("claim-7319-harbour", "CLAIM 7319 HARBOUR"), "an operator's own code");
    }

    #[test]
    fn invite_codes_are_shown_in_two_groups_of_five() {
        assert_eq!(shown_invite_code("7K3QZM9X2A"), "7K3QZ-M9X2A");
        assert_eq!(normalised_code(&shown_invite_code("7K3QZM9X2A")), "7K3QZM9X2A");
        assert_eq!(shown_invite_code("0a1b2c3d4e5f60718293"), "0a1b2c3d4e5f60718293", "old codes as made");
    }

    #[test]
    fn invite_links_open_the_join_screen_with_a_qr_code() {
        let link = invite_link("https://harbour-box.local:8443/", "7K3QZ-M9X2A");
        assert_eq!(link, "https://harbour-box.local:8443/#/join?code=7K3QZ-M9X2A");
        let svg = qr_svg(&link).expect("a link fits a QR code");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "an element to insert inline: {svg}");
        assert!(svg.contains("viewBox"), "scales to any size: {svg}");
        assert_eq!(qr_svg(&"x".repeat(8_000)), None, "too long for any QR code");
    }

    #[test]
    fn a_node_holding_a_siblings_accounts_is_claimed_and_cannot_be_claimed() {
        let dir = TempDir::new("api-populated");
        let (api, store) = api_in(&dir);
        let (status, info) = send(&api, Method::GET, "/api/v1/node", None);
        assert_eq!(status, StatusCode::OK, "{info}");
        assert_eq!(info["claimed"], json!(false), "{info}");
        assert_eq!(info["base_url"], json!("https://harbour-box.local:8443/"), "{info}");

        // As replication brings a sibling's account: nobody claimed this node.
        store.create_user("ada", "h".into(), Admission::Open).unwrap();
        assert_eq!(store.claimed_by().unwrap(), None);
        let (_, info) = send(&api, Method::GET, "/api/v1/node", None);
        assert_eq!(info["claimed"], json!(true), "a sibling of a claimed neighbourhood: {info}");

        let claim = json!({"handle": "eve", "password": "a long enough password", "claim": CLAIM_CODE});
        let (status, answer) = send(&api, Method::POST, "/api/v1/accounts", Some(claim));
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(answer["error"]["code"], json!("already_claimed"), "{answer}");
        let no_code = json!({"handle": "eve", "password": "a long enough password"});
        let (status, answer) = send(&api, Method::POST, "/api/v1/accounts", Some(no_code));
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(answer["error"]["code"], json!("invite_required"), "not `claim_required`: {answer}");
        assert_eq!(store.user_count().unwrap(), 1);
    }
}
