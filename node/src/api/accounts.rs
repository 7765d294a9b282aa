//! Node info, health, metrics, accounts, sessions and invites.
//!
//! Claim and invite codes are compared in one normalised form (`normalised_code`), so
//! a code typed in lower case, without its hyphen or with O for 0 still matches.

use std::time::Instant;

use base64::Engine as _;
use http::{header, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::throttle::Guess;
use super::{empty_response, json_response, ok_json, token_hash, Api, ApiError, ApiResult, Call};
use super::{password, ports};
use crate::core::model::User;
use crate::core::text;
use crate::os;
use crate::store::{Admission, Store, StoreError};

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
    ok_json(json!({"status": "ok"}))
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
    let gate = api.pipeline.gate_stats();
    let mut body = api.metrics.render(users);
    body.push_str(&format!(
        "# TYPE edgenode_media_conversions_running gauge\nedgenode_media_conversions_running {}\n\
         # TYPE edgenode_media_conversions_waiting gauge\nedgenode_media_conversions_waiting {}\n\
         # TYPE edgenode_media_decoded_bytes_reserved gauge\nedgenode_media_decoded_bytes_reserved {}\n",
        gate.jobs_running, gate.jobs_waiting, gate.bytes_reserved
    ));
    if let Some(siblings) = &api.siblings {
        body.push_str(&siblings.metrics_text());
    }
    if let Some(fanout) = &api.fanout {
        body.push_str(&fanout.metrics_text());
    }
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(body.into())
        .expect("static response parts are valid"))
}

pub fn node(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let mut info = json!({
        "node_id": api.store.node_id().to_string(),
        "name": api.node.name,
        "version": env!("CARGO_PKG_VERSION"),
        "region": api.node.region,
        "roles": api.node.roles,
        "pin": api.node.pin,
        "addresses": api.node.addresses,
        "base_url": api.node.base_url,
        "peers": api.siblings.as_ref().map(|siblings| siblings.sibling_list()).unwrap_or_default(),
        "claimed": api.store.claimed_or_has_accounts()?,
        "open_registration": api.open_registration,
        "uptime_seconds": api.started.elapsed().as_secs(),
    });
    if call.local_control || call.viewer.as_ref().is_some_and(|user| user.admin) {
        info["storage"] = storage_json(api);
    }
    ok_json(info)
}

/// Bytes the node stores, and free/total space of the file system holding the data dir.
fn storage_json(api: &Api) -> serde_json::Value {
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
    json!({"used_bytes": api.store.used_bytes(), "free_bytes": free_bytes, "total_bytes": total_bytes})
}

/// Admins, or the local CLI with the control token.
pub fn nearby(api: &Api, call: &mut Call<'_>) -> ApiResult {
    if !call.local_control && !call.user()?.admin {
        return Err(ApiError::forbidden("only an admin can list nearby nodes"));
    }
    let items = api.nearby.as_ref().map(|nearby| nearby.nearby()).unwrap_or_default();
    ok_json(json!({"mdns": api.nearby.is_some(), "items": items}))
}

pub fn replication(api: &Api, call: &mut Call<'_>) -> ApiResult {
    if !call.local_control && !call.user()?.admin {
        return Err(ApiError::forbidden("only an admin can see replication state"));
    }
    match &api.siblings {
        Some(siblings) => ok_json(siblings.status()?),
        None => ok_json(json!({"replication": false})),
    }
}

fn siblings<'a>(api: &'a Api, call: &mut Call<'_>) -> Result<&'a dyn ports::Replication, ApiError> {
    if !call.local_control && !call.user()?.admin {
        return Err(ApiError::forbidden("only an admin can manage siblings"));
    }
    api.siblings.as_deref().ok_or_else(|| ApiError::unavailable("replication is not running on this node"))
}

pub fn peers(api: &Api, call: &mut Call<'_>) -> ApiResult {
    ok_json(json!({"items": siblings(api, call)?.peers()}))
}

pub fn pair(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let answer = siblings(api, call)?.start_pairing().map_err(|error| ApiError::unavailable(error.to_string()))?;
    ok_json(answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    address: String,
    code: String,
}

pub fn join(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let request: JoinRequest = call.json()?;
    let service = siblings(api, call)?;
    match service.join(request.address.trim(), request.code.trim()) {
        Ok(info) => ok_json(json!({"node_id": info.node_id.to_string(), "address": info.address, "pin": info.pin})),
        Err(error) => Err(ApiError::bad_request("pairing_failed", error.to_string())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
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
    let token = api.start_session(&user.user_id)?;
    // The device that made the account is a known device from its first sign-in on.
    let device = api
        .login_throttle
        .lock()
        .expect("throttle lock")
        .device_key(&api.data_dir)
        .issue(&user.user_id, os::random_bytes());
    json_response(
        StatusCode::CREATED,
        &json!({"user_id": user.user_id, "handle": user.handle, "token": token, "admin": user.admin, "device": device}),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    handle: String,
    password: String,
    /// The `device` token an earlier sign-in of this user on this device answered with.
    device: Option<String>,
}

/// 429 `too_many_attempts` with `Retry-After` and when to retry in the message.
fn too_many_attempts(api: &Api, what: &str, wait: std::time::Duration) -> ApiError {
    api.metrics.logins_throttled_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
            let token = api.start_session(&user.user_id)?;
            ok_json(json!({"token": token, "user_id": user.user_id, "device": device_token}))
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
    json_response(StatusCode::CREATED, &json!({"code": code, "link": link, "qr_svg": qr_svg}))
}

/// Open invites (not used, not revoked), newest first: `{items:[{code, created_at,
/// created_by:{user_id, handle}|null}]}`; `null` for one the control token made.
pub fn list_invites(api: &Api, call: &mut Call<'_>) -> ApiResult {
    invite_manager(call, "list invites")?;
    let mut items = Vec::new();
    for invite in api.store.open_invites()? {
        let created_by = if invite.created_by == Store::INVITE_BY_CONTROL_TOKEN {
            serde_json::Value::Null
        } else {
            let handle = api.store.user(&invite.created_by)?.map(|user| user.handle);
            json!({"user_id": invite.created_by, "handle": handle})
        };
        items.push(json!({
            "code": shown_invite_code(&invite.code),
            "created_at": invite.created_at,
            "created_by": created_by,
        }));
    }
    ok_json(json!({"items": items}))
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

impl Api {
    /// A new random bearer token for `user_id`; only its hash is stored.
    fn start_session(&self, user_id: &str) -> Result<String, ApiError> {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(os::random_bytes::<32>());
        self.store.create_session(&token_hash(&token), user_id)?;
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
    use serde_json::Value;

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
