//! Node info, health, metrics, accounts, sessions and invites.

use std::time::Instant;

use base64::Engine as _;
use http::{header, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{empty_response, header_value, json_response, ok_json, token_hash, Api, ApiError, ApiResult, Call};
use super::{password, ports};
use crate::core::text;
use crate::os;
use crate::store::Admission;

pub const PASSWORD_CHARS_MIN: usize = 8;
pub const PASSWORD_BYTES_MAX: usize = 1024;

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

pub fn metrics(api: &Api, _call: &mut Call<'_>) -> ApiResult {
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
        "peers": api.siblings.as_ref().map(|siblings| siblings.sibling_list()).unwrap_or_default(),
        "claimed": api.store.claimed_by()?.is_some(),
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
    check_password(&request.password)?;
    let admission = if let Some(claim) = &request.claim {
        let expected = api.claim_code.lock().expect("claim lock").clone();
        match expected {
            Some(code) if constant_time_eq(code.as_bytes(), claim.trim().as_bytes()) => Admission::Claim,
            _ => {
                return Err(ApiError::forbidden_code(
                    "bad_claim_code",
                    "the claim code is wrong or the node is already claimed",
                ))
            }
        }
    } else if let Some(invite) = &request.invite {
        Admission::Invite(invite.trim())
    } else if api.store.claimed_by()?.is_none() {
        return Err(ApiError::forbidden_code(
            "claim_required",
            "this node is not claimed yet: the first account needs the claim code (see `edgenode status`)",
        ));
    } else if api.open_registration {
        Admission::Open
    } else {
        return Err(ApiError::forbidden_code("invite_required", "registration needs an invite code from an admin"));
    };
    let password_hash = api.password_gate.hash(&request.password).ok_or_else(password_busy)?;
    let user = api.store.create_user(&handle, password_hash, admission)?;
    if matches!(admission, Admission::Claim) {
        *api.claim_code.lock().expect("claim lock") = None;
        if let Err(error) = std::fs::remove_file(&api.claim_code_file) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, "could not remove the claim code file");
            }
        }
        tracing::info!(handle = %user.handle, "node claimed; first admin created");
    }
    let token = api.start_session(&user.user_id)?;
    json_response(
        StatusCode::CREATED,
        &json!({"user_id": user.user_id, "handle": user.handle, "token": token, "admin": user.admin}),
    )
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < PASSWORD_CHARS_MIN || password.len() > PASSWORD_BYTES_MAX {
        return Err(ApiError::bad_request(
            "weak_password",
            format!("a password is {PASSWORD_CHARS_MIN} to {PASSWORD_BYTES_MAX} characters"),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    handle: String,
    password: String,
}

pub fn login(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let request: Credentials = call.json()?;
    let handle = request.handle.trim().to_lowercase();
    let keys = [Some(format!("handle:{handle}")), call.client_addr.map(|addr| format!("addr:{}", addr.ip()))];
    let keys: Vec<String> = keys.into_iter().flatten().collect();
    let now = Instant::now();
    let locked_for = {
        // Every key takes an attempt up front, so concurrent guesses count at once.
        let mut throttle = api.login_throttle.lock().expect("throttle lock");
        let mut begun = Vec::new();
        let mut locked_for = None;
        for key in &keys {
            match throttle.try_begin(key, now) {
                Ok(()) => begun.push(key),
                Err(wait) => {
                    locked_for = Some(wait);
                    break;
                }
            }
        }
        if locked_for.is_some() {
            begun.into_iter().for_each(|key| throttle.cancel(key));
        }
        locked_for
    };
    if let Some(wait) = locked_for {
        api.metrics.logins_throttled_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seconds = wait.as_secs().max(1);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed sign-ins; try again in {seconds} s"),
        )
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, header_value(&seconds.to_string()));
        return Ok(response);
    }
    let user = api.store.user_by_handle(&handle)?;
    let credential = match &user {
        Some(user) => api.store.credential(&user.user_id)?,
        None => None,
    };
    let hash = credential.as_ref().map_or(dummy_hash(), |credential| credential.password_hash.as_str());
    let checked = api.password_gate.matches(&request.password, hash);
    let mut throttle = api.login_throttle.lock().expect("throttle lock");
    let Some(matches) = checked else {
        keys.iter().for_each(|key| throttle.cancel(key));
        return Err(password_busy());
    };
    let succeeded = matches && credential.is_some() && user.is_some();
    keys.iter().for_each(|key| throttle.finish(key, Instant::now(), succeeded));
    drop(throttle);
    match user.filter(|_| succeeded) {
        Some(user) => {
            let token = api.start_session(&user.user_id)?;
            ok_json(json!({"token": token, "user_id": user.user_id}))
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

pub fn create_invite(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user = call.user()?;
    if !user.admin {
        return Err(ApiError::forbidden("only an admin can create invites"));
    }
    let invite = api.store.create_invite(&user.user_id)?;
    json_response(StatusCode::CREATED, &json!({"code": invite.code}))
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
